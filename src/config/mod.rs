//! The YAML configuration of DESIGN.md: read, checked and reported with file, line and column.
//!
//! Loading is all-or-nothing: [`load`] returns a complete, validated [`Config`] or the first
//! error, so a running instance can try a reload and keep what it has when the new files are bad.

mod context;
mod locate;
pub mod peers;
pub mod routes;
pub mod units;
pub mod values;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use crate::allowlist::{PeerTable, PeerTableBuilder, PeersSource};
pub use context::KnownKeys;
pub use peers::{url_host_key, Allow, Peer, PeerList, PeerSink, PeerUrl};
pub use routes::{Access, PathPattern, Route};
pub use units::{ByteSize, HumanDuration};
pub use values::{
    ExistingFile, HostName, HostPort, IdentityHeaderName, KeyFile, ListenAddr, PeersFilePath,
    Scheme, Threads,
};

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of peergate settings (identity, listen, tls, app, peers_file, ...)"
)]
pub struct Config {
    pub identity: IdentitySection,
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub tls: Option<Tls>,
    pub app: App,
    #[serde(default)]
    pub outbound: Outbound,
    #[serde(default)]
    pub signatures: Signatures,
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    #[serde(default = "routes::default_routes")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub peers_file: Option<PeersFilePath>,
    /// Inline peers, then (after load) those of `peers_file`; empty after [`load_serving`].
    #[serde(default)]
    pub peers: PeerList,
    /// After [`load_serving`]: all the peers, in the form a gateway serves them from, or why
    /// they cannot be served (which building the snapshot reports, as it does for `peers`).
    #[serde(skip)]
    pub peer_table: Option<Result<Arc<PeerTable>, String>>,
    #[serde(default)]
    pub reload: Reload,
    #[serde(default)]
    pub shutdown: Shutdown,
}

impl Config {
    /// How many peers were loaded, in whichever form.
    pub fn peer_count(&self) -> usize {
        match &self.peer_table {
            Some(Ok(table)) => table.len(),
            _ => self.peers.0.len(),
        }
    }

    /// The `tls:` section when it puts TLS on the inbound listener (it has `cert_file` and
    /// `key_file`; one with only `peer_ca_file` leaves the listener plain HTTP).
    pub fn inbound_tls(&self) -> Option<&Tls> {
        self.tls.as_ref().filter(|t| t.cert_file.is_some())
    }

    /// `tls.peer_ca_file`: the roots peers' certificates are checked against, if not the
    /// system's.
    pub fn peer_ca_file(&self) -> Option<&Path> {
        self.tls
            .as_ref()
            .and_then(|t| t.peer_ca_file.as_ref())
            .map(|f| f.0.as_path())
    }
}

/// How the running gateway notices edited files. File events (the directories of the config
/// and peers files are watched) and SIGHUP trigger a reload at once; the poll is the safety net
/// for filesystems that send no events (some network and container mounts).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with poll_interval"
)]
pub struct Reload {
    /// How often the config and peers files are re-read and compared with what was last loaded.
    pub poll_interval: HumanDuration,
}

impl Default for Reload {
    fn default() -> Self {
        Reload {
            poll_interval: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// What SIGTERM does: the listeners close at once (new connections are refused), requests in
/// flight get `grace_period` to finish and the process exits as soon as they have; whatever is
/// still running then is given `timeout` to stop before the process exits anyway. The defaults
/// add up to 30 s, Kubernetes' default `terminationGracePeriodSeconds`, after which it kills.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with grace_period and timeout"
)]
pub struct Shutdown {
    /// Longest time requests in flight get to finish after SIGTERM (whole seconds, rounded up).
    pub grace_period: HumanDuration,
    /// After the grace period, how long the runtimes get to stop (whole seconds, rounded up).
    pub timeout: HumanDuration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            grace_period: HumanDuration(Duration::from_secs(25)),
            timeout: HumanDuration(Duration::from_secs(5)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with key_file, hosts and optionally name, scheme, profile, profile_path"
)]
pub struct IdentitySection {
    pub key_file: KeyFile,
    /// Shown to peers; defaults to the first of `hosts`.
    #[serde(default)]
    pub name: Option<String>,
    pub hosts: NonEmpty<HostName>,
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default)]
    pub profile: Option<ExistingFile>,
    /// Where the public welcome page is served (default `/.well-known/peergate/profile`; `/`
    /// puts it at the root, in front of the app's own `/`).
    #[serde(default)]
    pub profile_path: ProfilePath,
}

/// `identity.profile_path`: one exact, normalized absolute path (no `/*` prefix pattern, since
/// the page is one resource) that does not shadow the two other public documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfilePath(pub String);

impl ProfilePath {
    pub const DEFAULT: &'static str = "/.well-known/peergate/profile";

    pub fn parse(text: &str) -> Result<Self, String> {
        let pattern = PathPattern::parse(text.trim())?;
        let path = pattern.as_str();
        if path.contains('*') {
            return Err(format!(
                "identity.profile_path {path:?} must be one exact path such as \"/\" or \"/about\", not a pattern"
            ));
        }
        if matches!(
            path,
            crate::public_identity::IDENTITY_PATH | crate::public_identity::DIRECTORY_PATH
        ) {
            return Err(format!(
                "identity.profile_path {path:?} is where peergate serves its identity document; pick another path"
            ));
        }
        Ok(ProfilePath(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ProfilePath {
    fn default() -> Self {
        ProfilePath(Self::DEFAULT.to_string())
    }
}

impl<'de> Deserialize<'de> for ProfilePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        values::parse_str(d, "an absolute path such as \"/\"", ProfilePath::parse)
    }
}

impl IdentitySection {
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) if !name.trim().is_empty() => name.trim().to_string(),
            _ => self
                .hosts
                .0
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with inbound, outbound, admin, threads, idle_timeout, max_connections"
)]
pub struct Listen {
    pub inbound: ListenAddr,
    pub outbound: ListenAddr,
    pub admin: ListenAddr,
    /// Threads of the inbound listener, and as many again for the outbound one.
    pub threads: Threads,
    /// How long a client connection to the inbound or outbound listener gets to bring a whole
    /// request head, from opening or from the previous answer (`client_idle`); for HTTP/2, how
    /// long it may have no request.
    pub idle_timeout: HumanDuration,
    /// The most client connections the inbound listener serves at once, and as many again for
    /// the outbound one (`connection_cap`).
    #[serde(deserialize_with = "values::count")]
    pub max_connections: usize,
}

/// `listen.max_connections` when not set: at the 40–50 KiB an open client connection holds,
/// about 200 MiB per listener at the ceiling; nginx's default is 512 per worker process.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl Default for Listen {
    fn default() -> Self {
        let addr = |ip: [u8; 4], port| ListenAddr(std::net::SocketAddr::from((ip, port)));
        Listen {
            inbound: addr([0, 0, 0, 0], 8443),
            outbound: addr([127, 0, 0, 1], 8480),
            admin: addr([127, 0, 0, 1], 9464),
            threads: Threads::Auto,
            // Above the 60 s that peergate (and most clients) keep an idle upstream connection,
            // so a client never reuses a connection just as this side closes it; nginx's 75 s.
            idle_timeout: HumanDuration(Duration::from_secs(75)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with cert_file and key_file, peer_ca_file, or all three"
)]
pub struct Tls {
    /// The inbound listener's certificate chain and its key: both or neither. Without them the
    /// inbound listener speaks plain HTTP (TLS ends in front of peergate) and the section
    /// holds only `peer_ca_file`, which a deployment whose peers use a private CA still needs.
    #[serde(default)]
    pub cert_file: Option<ExistingFile>,
    #[serde(default)]
    pub key_file: Option<ExistingFile>,
    #[serde(default)]
    pub peer_ca_file: Option<ExistingFile>,
    /// `cert_file` and `key_file` as read and checked at load time (see [`crate::tls_cert`]).
    #[serde(skip)]
    pub cert: Option<crate::tls_cert::ServerCert>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with upstream and optionally connect_timeout, timeout"
)]
pub struct App {
    pub upstream: HostPort,
    /// How long to wait for a connection to the app (then 504).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// How long the app may take to answer, and to send each piece of its answer (then 504).
    #[serde(default = "default_app_timeout")]
    pub timeout: HumanDuration,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_app_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// How the outbound side treats the app and reaches peers.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with connect_timeout, timeout, allow_remote_clients"
)]
pub struct Outbound {
    /// How long to wait for a connection (and TLS handshake) to a peer; then 504.
    pub connect_timeout: HumanDuration,
    /// How long a peer may take to answer, and to send each piece of its answer; then 504.
    pub timeout: HumanDuration,
    /// Lets `listen.outbound` be a non-loopback address. Anything that can reach the outbound
    /// listener speaks as this identity, so this must be asked for explicitly.
    pub allow_remote_clients: bool,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            timeout: HumanDuration(Duration::from_secs(60)),
            allow_remote_clients: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with lifetime, max_age, clock_skew, require_nonce, max_body, max_buffered, replay_cache_size"
)]
pub struct Signatures {
    pub lifetime: HumanDuration,
    pub max_age: HumanDuration,
    pub clock_skew: HumanDuration,
    pub require_nonce: bool,
    pub max_body: ByteSize,
    /// Most request-body bytes held at once, all requests on both listeners together: bodies
    /// are read whole before they are forwarded, so without a bound a peer (or the app) sending
    /// many large ones at once could take all the memory there is.
    pub max_buffered: ByteSize,
    /// Most (key id, nonce) pairs remembered at once; past it new signatures are refused
    /// (503 `replay_cache_full`) rather than old nonces forgotten.
    #[serde(deserialize_with = "values::count")]
    pub replay_cache_size: usize,
}

impl Default for Signatures {
    fn default() -> Self {
        Signatures {
            lifetime: HumanDuration(Duration::from_secs(60)),
            max_age: HumanDuration(Duration::from_secs(300)),
            clock_skew: HumanDuration(Duration::from_secs(30)),
            require_nonce: true,
            max_body: ByteSize(16 << 20),
            max_buffered: ByteSize(256 << 20),
            replay_cache_size: 1_000_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, try_from = "RawIdentityHeaders")]
pub struct IdentityHeaders {
    pub id: IdentityHeaderName,
    pub name: IdentityHeaderName,
    pub key_id: IdentityHeaderName,
}

impl IdentityHeaders {
    pub fn all(&self) -> [&IdentityHeaderName; 3] {
        [&self.id, &self.name, &self.key_id]
    }
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        let name = |s: &'static str| IdentityHeaderName(http::HeaderName::from_static(s));
        IdentityHeaders {
            id: name("x-peer-id"),
            name: name("x-peer-name"),
            key_id: name("x-peer-key-id"),
        }
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with id, name, key_id (header names)"
)]
struct RawIdentityHeaders {
    #[serde(default)]
    id: Option<IdentityHeaderName>,
    #[serde(default)]
    name: Option<IdentityHeaderName>,
    #[serde(default)]
    key_id: Option<IdentityHeaderName>,
}

impl TryFrom<RawIdentityHeaders> for IdentityHeaders {
    type Error = String;
    fn try_from(raw: RawIdentityHeaders) -> Result<Self, String> {
        let d = IdentityHeaders::default();
        let h = IdentityHeaders {
            id: raw.id.unwrap_or(d.id),
            name: raw.name.unwrap_or(d.name),
            key_id: raw.key_id.unwrap_or(d.key_id),
        };
        let named = [("id", &h.id), ("name", &h.name), ("key_id", &h.key_id)];
        for (n, (x, hx)) in named.iter().enumerate() {
            for (y, hy) in named.iter().skip(n + 1) {
                if hx.folded() == hy.folded() {
                    return Err(format!(
                        "identity_headers: id, name and key_id must be three different \
                         headers; {x} ({}) and {y} ({}) are one header, as case, `-`, `_` and \
                         other punctuation do not tell headers apart (a CGI bridge reads them \
                         all as one)",
                        hx.0.as_str(),
                        hy.0.as_str()
                    ));
                }
            }
        }
        Ok(h)
    }
}

/// A list that must have at least one element.
#[derive(Debug, Clone)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NonEmpty<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list with at least one entry")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<NonEmpty<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                if items.is_empty() {
                    return Err(de::Error::custom(
                        "the list is empty; it needs at least one entry",
                    ));
                }
                Ok(NonEmpty(items))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NonEmpty<T>, E> {
                Err(E::custom("the list is empty; it needs at least one entry"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A configuration problem, located as precisely as the YAML allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column of the offending value, when known.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.file.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn from_yaml(file: &Path, text: &str, err: &serde_yaml::Error) -> Self {
        let mut position = err.location().map(|l| (l.line(), l.column()));
        let mut message = err.to_string();
        if let Some((line, column)) = position {
            // The position leads the line already; the YAML scanner also puts it mid-message.
            message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
            let at = text
                .lines()
                .nth(line.saturating_sub(1))
                .and_then(|l| l.chars().nth(column.saturating_sub(1)));
            if at == Some('\t') {
                message.push_str(" (a tab: YAML indents with spaces only)");
            }
        }
        if message.contains("expected a boolean") {
            message.push_str("; write true or false");
        }
        if message.contains("duplicate field `") {
            position = locate::duplicate_key_position(text, &message).or(position);
        }
        // An error raised while converting a whole top-level section (`identity_headers`: its
        // three names must differ) comes with the start of the document; the message names
        // the section, so point at it instead.
        if position == Some((1, 1)) {
            if let Some((section, _)) = message.split_once(": ") {
                position = locate::value_position(text, &[section]).or(position);
            }
        }
        ConfigError {
            file: file.to_path_buf(),
            position,
            message,
        }
    }

    /// An error about the setting at `key` (map keys from the top), found after the file was
    /// read: located by reading the file again (see [`locate`]); without a position if the
    /// setting cannot be found there.
    fn at_setting(file: &Path, key: &[&str], message: impl Into<String>) -> Self {
        let position = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| locate::value_position(&text, key));
        ConfigError {
            file: file.to_path_buf(),
            position,
            message: message.into(),
        }
    }

    fn plain(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: None,
            message: message.into(),
        }
    }
}

/// A loaded configuration plus what the operator should hear about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    pub warnings: Vec<String>,
    /// Why `tls.cert_file` / `tls.key_file` did not load, for a reload only
    /// ([`load_reloading`]): everything else was loaded, and `tls.cert` is `None`.
    pub tls_error: Option<ConfigError>,
    /// The configuration file's text as it was read, for a later reload to read the other
    /// files with while an edit of this one does not validate ([`load_reloading_with`]).
    pub text: String,
    /// Each file the load read, with the digest of what it read (see [`crate::files::Recording`]).
    pub reads: Vec<crate::files::FileRead>,
}

/// The configuration file's text, or why it cannot be read.
fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    let text = crate::files::read_to_string(path, crate::files::MAX_CONFIG_FILE)
        .map_err(|e| ConfigError::plain(path, format!("cannot read: {e}")))?;
    if text.trim().is_empty() {
        return Err(ConfigError::plain(path, "the file is empty"));
    }
    Ok(text)
}

fn parse_text<T: for<'de> Deserialize<'de>>(
    path: &Path,
    text: &str,
    scope: &context::LoadScope,
) -> Result<T, ConfigError> {
    scope.reading(path);
    serde_yaml::from_str(text).map_err(|e| ConfigError::from_yaml(path, text, &e))
}

/// Reads and validates the configuration at `path` and the peers file it names.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_inner(path, None, None, Collect::List, TlsPair::Required)
}

/// Like [`load`], for a gateway (`peergate run` and its reloads): the peers go into the table
/// requests are served from ([`Config::peer_table`]) as they are read, and `peers` stays
/// empty, so that a large allowlist is never in memory both as parsed entries and in that
/// form. Keys the running gateway already has (`known`, by key id) are not checked again when
/// their bytes are unchanged, which makes reloading a large allowlist about twice as fast.
/// Everything else is read and checked as by [`load`].
pub fn load_serving(path: &Path, known: Option<KnownKeys>) -> Result<Loaded, ConfigError> {
    let _reuse = context::ReuseKeys::install(known);
    load_inner(
        path,
        None,
        None,
        Collect::Table { in_force: None },
        TlsPair::Required,
    )
}

/// Like [`load_serving`], for a reload: a certificate or key that does not load does not fail
/// the load but is reported in [`Loaded::tls_error`], so that a broken renewal never holds
/// back the rest of a change (a peer taken off the allowlist above all). The listener keeps
/// the pair it serves.
///
/// `in_force` is the table the gateway serves: when the peers file still holds the bytes it was
/// read from, and no inline peers come before them, the load serves that table again (see
/// [`PeersSource`]).
pub fn load_reloading(
    path: &Path,
    known: Option<KnownKeys>,
    in_force: Option<Arc<PeerTable>>,
) -> Result<Loaded, ConfigError> {
    let _reuse = context::ReuseKeys::install(known);
    load_inner(
        path,
        None,
        None,
        Collect::Table { in_force },
        TlsPair::Separate,
    )
}

/// Like [`load_reloading`], with `text` (the last version of the configuration file that
/// loaded) taken as the file's contents: the files it names (the peers file above all) are
/// read again while an edit of the configuration file does not validate, so that taking a peer
/// off the allowlist does not wait on an unrelated typo.
pub fn load_reloading_with(
    path: &Path,
    text: &str,
    known: Option<KnownKeys>,
    in_force: Option<Arc<PeerTable>>,
) -> Result<Loaded, ConfigError> {
    let _reuse = context::ReuseKeys::install(known);
    load_inner(
        path,
        Some(text),
        None,
        Collect::Table { in_force },
        TlsPair::Separate,
    )
}

/// Like [`load`], but reads the peers list from `candidate` instead of the configured
/// `peers_file`: `peergate peer add` / `remove` validate an edited copy this way before it
/// replaces the real file, so an edit that does not load never lands. Errors in the candidate
/// are reported against the real peers file's name, which is what the person knows.
pub fn load_with_peers_file(path: &Path, candidate: &Path) -> Result<Loaded, ConfigError> {
    load_inner(
        path,
        None,
        Some(candidate),
        Collect::List,
        TlsPair::Required,
    )
}

/// What a certificate or key that does not load does to a load.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TlsPair {
    /// Fails it (`check`, start, `peer add`).
    Required,
    /// Is reported beside it ([`Loaded::tls_error`]; a reload).
    Separate,
}

/// Where a load puts the peers.
enum Collect {
    /// In `Config::peers`, to be looked at.
    List,
    /// In `Config::peer_table`, to be served; `in_force` is the table served now, if any.
    Table { in_force: Option<Arc<PeerTable>> },
}

/// The table a gateway's load fills, and the warnings about its peers: they are not kept as
/// a list to look at afterwards.
struct TableSink<'a> {
    table: PeerTableBuilder,
    warnings: Vec<String>,
    /// The peers file the pushed peers come from.
    file: Option<&'a Path>,
}

impl TableSink<'_> {
    /// A peer written in the configuration file itself.
    fn add_ref(&mut self, peer: &Peer) {
        self.warnings.extend(peer_warning(peer, None));
        self.table.add_ref(peer);
    }
}

impl PeerSink for TableSink<'_> {
    fn push(&mut self, peer: Peer) {
        self.warnings.extend(peer_warning(&peer, self.file));
        self.table.push(peer);
    }

    fn reserve(&mut self, peers: usize) {
        self.table.reserve(peers);
    }
}

/// Refuses a duration setting below `min`: "`key` `value` is too short; `advice`".
fn at_least(
    path: &Path,
    key: &[&str],
    value: &HumanDuration,
    min: Duration,
    advice: &str,
) -> Result<(), ConfigError> {
    if value.0 < min {
        return Err(ConfigError::at_setting(
            path,
            key,
            format!("{} {value} is too short; {advice}", key.join(".")),
        ));
    }
    Ok(())
}

/// The warnings are logged under the configuration file's name; a peer of the peers file
/// (`from`) says where it is, so that the fix is looked for in the right file.
fn peer_warning(peer: &Peer, from: Option<&Path>) -> Option<String> {
    plain_http_warning(&peer.name, peer.url.as_ref()?, from)
}

fn plain_http_warning(name: &str, url: &PeerUrl, from: Option<&Path>) -> Option<String> {
    (!url.https).then(|| {
        let of = from.map_or(String::new(), |f| format!(" (in {})", f.display()));
        format!(
            "peer {name:?}{of} is reached over plain http ({url}): requests to it are signed but not encrypted"
        )
    })
}

/// `in_force`, when `file` still holds the bytes it was read from. The file is hashed as it is
/// read, never held whole; the read is recorded like any other (the reloader compares with it).
fn unchanged_table(file: &Path, in_force: Arc<PeerTable>) -> Option<Arc<PeerTable>> {
    let source = in_force.source().filter(|s| s.file == file)?;
    let digest = crate::files::digest(file, crate::files::MAX_CONFIG_FILE).ok()?;
    (digest == source.digest).then_some(in_force)
}

/// Reads the peers file (or the `candidate` standing in for it) into sinks made by `fresh`.
fn read_peers<S: PeerSink>(
    file: &PeersFilePath,
    candidate: Option<&Path>,
    scope: &context::LoadScope,
    fresh: impl Fn() -> S,
) -> Result<S, ConfigError> {
    let read_from = candidate.unwrap_or(&file.0);
    peers::read_file(read_from, scope, fresh).map_err(|mut e| {
        if e.file == read_from {
            e.file = file.0.clone();
        }
        e
    })
}

fn load_inner(
    path: &Path,
    text: Option<&str>,
    peers_candidate: Option<&Path>,
    collect: Collect,
    tls_pair: TlsPair,
) -> Result<Loaded, ConfigError> {
    let scope = context::LoadScope::begin();
    let recording = crate::files::Recording::begin();
    let text = match text {
        Some(text) => text.to_owned(),
        None => read_config_text(path)?,
    };
    let mut config: Config = parse_text(path, &text, &scope)?;
    let peer_warnings = match collect {
        Collect::List => {
            let inline = config.peers.0.len();
            if let Some(file) = &config.peers_file {
                let from_file = read_peers(file, peers_candidate, &scope, Vec::new)?;
                if config.peers.0.is_empty() {
                    // Moved, not copied: a peers file can hold 100 000 entries.
                    config.peers.0 = from_file;
                } else {
                    config.peers.0.extend(from_file);
                }
            }
            let file = config.peers_file.as_ref().map(|f| f.0.as_path());
            let (written_here, from_file) = config.peers.0.split_at(inline);
            let here = written_here.iter().filter_map(|p| peer_warning(p, None));
            here.chain(from_file.iter().filter_map(|p| peer_warning(p, file)))
                .collect()
        }
        Collect::Table { in_force } => {
            // Inline peers come first, in every table the peers file is read into.
            let inline = std::mem::take(&mut config.peers.0);
            let unchanged = match (&config.peers_file, in_force) {
                (Some(file), Some(table)) if inline.is_empty() => unchanged_table(&file.0, table),
                _ => None,
            };
            let file = config.peers_file.as_ref().map(|f| f.0.as_path());
            let fresh = || {
                let mut sink = TableSink {
                    table: PeerTableBuilder::default(),
                    warnings: Vec::new(),
                    file,
                };
                for peer in &inline {
                    sink.add_ref(peer);
                }
                sink
            };
            if let Some(table) = unchanged {
                let warnings = table
                    .urls()
                    .filter_map(|(name, url)| plain_http_warning(name, &url, file))
                    .collect();
                config.peer_table = Some(Ok(table));
                warnings
            } else {
                let sink = match &config.peers_file {
                    Some(file) => read_peers(file, peers_candidate, &scope, fresh)?,
                    None => fresh(),
                };
                let source = match &config.peers_file {
                    Some(file) if inline.is_empty() => {
                        crate::files::last_recorded(&file.0).map(|digest| PeersSource {
                            file: file.0.clone(),
                            digest,
                        })
                    }
                    _ => None,
                };
                config.peer_table = Some(sink.table.finish().map(|table| match source {
                    Some(source) => Arc::new(table.read_from(source)),
                    None => Arc::new(table),
                }));
                sink.warnings
            }
        }
    };
    drop(scope);
    if !config.listen.outbound.0.ip().is_loopback() && !config.outbound.allow_remote_clients {
        return Err(ConfigError::at_setting(
            path,
            &["listen", "outbound"],
            format!(
                "listen.outbound {} is not a loopback address: anything that can reach it speaks as this identity. \
Use 127.0.0.1, or set outbound.allow_remote_clients: true if the network in front of it is trusted",
                config.listen.outbound
            ),
        ));
    }
    // Each listener needs an address of its own: two on one port, where one of them is the
    // wildcard address or both are the same, cannot both be bound (Pingora aborted the process
    // when the inbound and outbound addresses were equal).
    let listeners = [
        ("inbound", config.listen.inbound.0),
        ("outbound", config.listen.outbound.0),
        ("admin", config.listen.admin.0),
    ];
    for (i, (name, addr)) in listeners.iter().enumerate() {
        for (earlier, other) in &listeners[..i] {
            let overlap = addr.port() == other.port()
                && (addr.ip() == other.ip()
                    || addr.ip().is_unspecified()
                    || other.ip().is_unspecified());
            if overlap && addr.port() != 0 {
                let message = format!(
                    "listen.{name} {addr} overlaps listen.{earlier} {other}: each listener needs a port of its own (or, on one port, two different specific addresses)"
                );
                // At whichever of the two is written in the file (the other may be a default).
                let mut err = ConfigError::at_setting(path, &["listen", name], message.clone());
                if err.position.is_none() {
                    err = ConfigError::at_setting(path, &["listen", earlier], message);
                }
                return Err(err);
            }
        }
    }
    // Floors under durations. 0 is no timeout at all to the proxy library, and a signature of
    // lifetime 0 is expired when it is made: neither is what anyone writing `0s` meant.
    let ms = Duration::from_millis;
    let floors = [
        (
            ["reload", "poll_interval"],
            &config.reload.poll_interval,
            ms(100),
            "each check looks at the files again, so use at least 100ms (5s is the default)",
        ),
        (
            ["listen", "idle_timeout"],
            &config.listen.idle_timeout,
            ms(1000),
            "use at least 1s (75s is the default)",
        ),
        (
            ["app", "connect_timeout"],
            &config.app.connect_timeout,
            ms(1),
            "use a real duration",
        ),
        (
            ["app", "timeout"],
            &config.app.timeout,
            ms(1),
            "use a real duration",
        ),
        (
            ["outbound", "connect_timeout"],
            &config.outbound.connect_timeout,
            ms(1),
            "use a real duration",
        ),
        (
            ["outbound", "timeout"],
            &config.outbound.timeout,
            ms(1),
            "use a real duration",
        ),
        (
            ["signatures", "lifetime"],
            &config.signatures.lifetime,
            ms(1000),
            "use at least 1s",
        ),
        (
            ["signatures", "max_age"],
            &config.signatures.max_age,
            ms(1000),
            "use at least 1s",
        ),
    ];
    for (key, value, min, advice) in floors {
        at_least(path, &key, value, min, advice)?;
    }
    if let Some(tls) = &config.tls {
        let detail = match (&tls.cert_file, &tls.key_file, &tls.peer_ca_file) {
            (Some(_), None, _) => Some(
                "tls.cert_file is given without tls.key_file: the inbound listener needs both \
                 (without them it speaks plain HTTP, and tls: holds only peer_ca_file)",
            ),
            (None, Some(_), _) => Some(
                "tls.key_file is given without tls.cert_file: the inbound listener needs both \
                 (without them it speaks plain HTTP, and tls: holds only peer_ca_file)",
            ),
            (None, None, None) => Some(
                "tls: is empty; give cert_file and key_file (TLS on the inbound listener), \
                 peer_ca_file (trust roots for peers' certificates), or all three",
            ),
            _ => None,
        };
        if let Some(detail) = detail {
            return Err(ConfigError::at_setting(path, &["tls"], detail));
        }
    }
    let mut tls_error = None;
    if let Some(tls) = config.tls.as_mut() {
        if let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) {
            match crate::tls_cert::load(&cert_file.0, &key_file.0) {
                Ok(cert) => tls.cert = Some(cert),
                Err((which, message)) => {
                    let err = ConfigError::at_setting(
                        path,
                        &["tls", which.setting()],
                        format!("tls.{}: {message}", which.setting()),
                    );
                    match tls_pair {
                        TlsPair::Required => return Err(err),
                        TlsPair::Separate => tls_error = Some(err),
                    }
                }
            }
        }
    }
    if let Some(ca) = config.peer_ca_file() {
        if let Err(message) = crate::tls_cert::check_ca_file(ca) {
            return Err(ConfigError::at_setting(
                path,
                &["tls", "peer_ca_file"],
                format!("tls.peer_ca_file: {message}"),
            ));
        }
    }
    if config.signatures.max_buffered.0 < config.signatures.max_body.0 {
        let message = format!(
            "signatures.max_buffered ({}) is smaller than signatures.max_body ({}): a body \
             that large could never be held; raise max_buffered or lower max_body",
            config.signatures.max_buffered, config.signatures.max_body
        );
        let at = ConfigError::at_setting(path, &["signatures", "max_buffered"], message.clone());
        // At max_body when max_buffered is the default (not written in the file).
        return Err(match at.position {
            Some(_) => at,
            None => ConfigError::at_setting(path, &["signatures", "max_body"], message),
        });
    }
    if config.listen.max_connections == 0 {
        return Err(ConfigError::at_setting(
            path,
            &["listen", "max_connections"],
            format!(
                "listen.max_connections must be at least 1 (it is how many client connections \
                 each proxy listener serves at once; {DEFAULT_MAX_CONNECTIONS} is the default)"
            ),
        ));
    }
    if config.signatures.replay_cache_size == 0 {
        return Err(ConfigError::at_setting(
            path,
            &["signatures", "replay_cache_size"],
            "signatures.replay_cache_size must be at least 1 (it bounds how many nonces are remembered)",
        ));
    }

    let mut warnings = config.identity.key_file.warnings.clone();
    warnings.extend(peer_warnings);
    // Our own key on the allowlist lets anything signed with it in as that peer: requests this
    // installation sends, looped back. Usually a key pasted into the wrong file.
    let own = config.identity.key_file.identity.public().key_id();
    let listed_as = match &config.peer_table {
        Some(Ok(table)) => table.name_of_key(own).map(str::to_string),
        _ => config
            .peers
            .0
            .iter()
            .find(|p| p.keys().any(|k| k.key_id() == own))
            .map(|p| p.name.clone()),
    };
    if let Some(name) = listed_as {
        warnings.push(format!(
            "peer {name:?} has this installation's own key ({own}): requests signed with \
             identity.key_file are accepted as coming from {name:?}; list the other side's key \
             (`peergate id` prints it there)"
        ));
    }
    // The first route that matches wins: a second one with the same path never applies, which
    // its author did not mean (least of all when the two give different access).
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(first) = config
            .routes
            .iter()
            .take(i)
            .position(|r| r.path.as_str() == route.path.as_str())
        {
            warnings.push(format!(
                "routes[{i}] ({} {}) never applies: routes[{first}] has the same path and comes \
                 first (the first route that matches a path decides)",
                route.path,
                route.access.as_str()
            ));
        }
    }
    if config.inbound_tls().is_none() && config.identity.scheme == Scheme::Https {
        warnings.push(format!(
            "no tls.cert_file and tls.key_file, so the inbound listener {} speaks plain HTTP; that is right only when TLS ends in front of peergate",
            config.listen.inbound
        ));
    }
    if config.signatures.lifetime > config.signatures.max_age {
        warnings.push(format!(
            "signatures.lifetime ({}) is longer than signatures.max_age ({}): peers with our defaults refuse signatures older than their max_age anyway",
            config.signatures.lifetime, config.signatures.max_age
        ));
    }
    Ok(Loaded {
        config,
        path: path.to_path_buf(),
        warnings,
        tls_error,
        text,
        reads: recording.finish(),
    })
}
