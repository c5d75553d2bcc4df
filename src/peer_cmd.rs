//! `peergate peer add | list | remove`: onboarding peers without hand-editing YAML.
//!
//! `add` fetches the peer's identity document (`/.well-known/peergate`) over verified TLS,
//! checks that it is self-consistent (the key id, peer ID and short ID it states are the ones
//! its public key gives: a document that lies about them has been tampered with), shows the
//! handles for the person to compare out of band, and on confirmation appends the entry to the
//! allowlist. The TLS check says the document came from the host in the URL; only the
//! out-of-band comparison says the host is who the person thinks it is.
//!
//! Every change is made on the text (comments and layout survive, see [`crate::peers_text`]),
//! written to a temporary file beside the real one, flushed to disk, loaded with the full
//! configuration validation, checked to change exactly the one entry meant, and only then
//! renamed over the real file: a running gateway that reloads the file sees the old list or the
//! new one, never half of one, and an edit that does not load never lands.

use std::fs;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::cli::CliError;
use crate::config::{self, Loaded, PeerUrl};
use crate::identity::PublicIdentity;
use crate::peers_text::{self, NewEntry};
use crate::public_identity::IDENTITY_PATH;

/// How long to wait for each connection attempt (and the TLS handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the peer may take to answer, from request to the last byte of the body.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest identity document accepted (a profile is at most 256 KiB, JSON-escaped).
const MAX_DOCUMENT: usize = 2 << 20;

/// What `peer add` was asked to do.
#[derive(Debug)]
pub struct AddArgs {
    pub url: String,
    pub name: Option<String>,
    pub yes: bool,
    pub config: PathBuf,
    pub ca_file: Option<PathBuf>,
}

/// A peer's identity as its document states it, checked for consistency.
#[derive(Debug, Clone)]
pub struct RemotePeer {
    pub public: PublicIdentity,
    /// The name the peer gives itself, if it is usable as an allowlist name.
    pub name: Option<String>,
    /// The hosts its requests must be signed for (its `identity.hosts`), as it states them;
    /// empty when it states none.
    pub hosts: Vec<String>,
}

fn failed(msg: impl Into<String>) -> CliError {
    CliError::Failed(msg.into())
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Checks an identity document: the public key parses (and is not a weak key), and the key
/// id, peer ID and short ID it states are the ones that key gives. Any mismatch means the
/// document was altered, or was never made by peergate; either way it is not trusted.
pub fn check_identity_document(doc: &serde_json::Value) -> Result<RemotePeer, String> {
    let field = |name: &str| -> Result<&str, String> {
        doc.get(name).and_then(|v| v.as_str()).ok_or_else(|| {
            format!("the identity document has no \"{name}\"; is this a peergate instance?")
        })
    };
    if let Some(alg) = doc.get("alg").and_then(|v| v.as_str()) {
        if !alg.eq_ignore_ascii_case("ed25519") {
            return Err(format!(
                "the identity document's key is {alg:?}; peergate peers use ed25519"
            ));
        }
    }
    let public = PublicIdentity::parse(field("public_key")?)
        .map_err(|e| format!("the identity document's public_key is unusable: {e}"))?;
    let stated_key_id = field("key_id")?;
    if stated_key_id != public.key_id() {
        return Err(format!(
            "the identity document is inconsistent (tampered?): it states key id {stated_key_id:?} but its public key has key id {}; refusing it",
            public.key_id()
        ));
    }
    let stated_peer_id = field("peer_id")?;
    if stated_peer_id != public.peer_id() {
        return Err(format!(
            "the identity document is inconsistent (tampered?): its peer_id is not the one its public key gives ({}…); refusing it",
            public.short_id()
        ));
    }
    let stated_short_id = field("short_id")?;
    if stated_short_id != public.short_id() {
        return Err(format!(
            "the identity document is inconsistent (tampered?): it states short ID {stated_short_id:?} but its public key has short ID {}; refusing it",
            public.short_id()
        ));
    }
    let name = doc
        .get("name")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|n| check_name(n).is_ok())
        .map(str::to_string);
    let hosts = doc
        .get("hosts")
        .and_then(|v| v.as_array())
        .map(|hosts| {
            hosts
                .iter()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(RemotePeer {
        public,
        name,
        hosts,
    })
}

/// The rules of an allowlist name (see `config::peers`), checked before anything is written.
pub fn check_name(name: &str) -> Result<(), String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a peer's name may not be empty".into());
    }
    if name.chars().count() > 128 {
        return Err("a peer's name is at most 128 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || c == '/' || is_invisible(c))
    {
        return Err(format!("a peer's name may not contain {c:?}"));
    }
    Ok(())
}

/// Characters that change how the text around them looks, or where a YAML reader counts a
/// line, without showing themselves: line and paragraph separators (libyaml counts them as line
/// breaks, which would shift every later error position in the peers file), bidirectional
/// overrides and isolates, zero-width characters, the BOM. A name from a peer's identity
/// document with one of them could pass for another peer's name.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
    )
}

/// The TLS client of a fetch, and where its trust roots came from: a certificate it refuses
/// is reported against those roots, so that the fix named is the one that applies.
pub struct Trust {
    config: Arc<ClientConfig>,
    /// The CA file and the option or setting that named it; `None`: the system's roots.
    ca_file: Option<(&'static str, PathBuf)>,
}

/// The trust roots for fetching: `--ca-file`, else the configuration's `tls.peer_ca_file`,
/// else the system's; `ca_file` is the file with the name of what gave it.
fn client_config(ca_file: Option<(&'static str, PathBuf)>) -> Result<Trust, String> {
    let roots = match &ca_file {
        Some((_, path)) => crate::tls_cert::read_ca_roots(path)?,
        None => {
            let mut roots = RootCertStore::empty();
            let certs = rustls_native_certs::load_native_certs()
                .map_err(|e| format!("cannot read the system's trust roots: {e}"))?;
            roots.add_parsable_certificates(certs);
            if roots.is_empty() {
                return Err(
                    "the system has no trust roots (install ca-certificates), or pass --ca-file PEM"
                        .into(),
                );
            }
            roots
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Trust {
        config: Arc::new(config),
        ca_file,
    })
}

/// A fetched response.
#[derive(Debug)]
pub struct Fetched {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// `GET <url><path>` over HTTP/1.1, over TLS verified against `tls` for `https` URLs. Names
/// are resolved without blocking; each connection attempt and the whole exchange are bounded.
pub async fn fetch(url: &PeerUrl, path: &str, tls: &Trust) -> Result<Fetched, String> {
    let authority = url.authority();
    let addrs: Vec<SocketAddr> = match url.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, url.port)],
        Err(_) => tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((url.host.as_str(), url.port)),
        )
        .await
        .map_err(|_| format!("resolving {} timed out", url.host))?
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect(),
    };
    let mut last_error = format!("{} resolves to no address", url.host);
    let mut tcp = None;
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                tcp = Some(stream);
                break;
            }
            Ok(Err(e)) => last_error = format!("cannot connect to {authority} ({addr}): {e}"),
            Err(_) => {
                last_error = format!(
                    "connecting to {authority} ({addr}) timed out after {}s",
                    CONNECT_TIMEOUT.as_secs()
                )
            }
        }
    }
    let tcp = tcp.ok_or(last_error)?;
    let target = format!("{}{path}", url.base_path);
    if !url.https {
        return exchange(tcp, &authority, &target).await;
    }
    let server_name = ServerName::try_from(url.host.clone())
        .map_err(|_| format!("{} cannot be used as a TLS server name", url.host))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, tcp))
        .await
        .map_err(|_| format!("the TLS handshake with {authority} timed out"))?
        .map_err(|e| tls_error(url, &e, tls.ca_file.as_ref()))?;
    exchange(stream, &authority, &target).await
}

/// A TLS failure in words that say what to do, naming the trust roots that were used.
fn tls_error(
    url: &PeerUrl,
    e: &std::io::Error,
    ca_file: Option<&(&'static str, PathBuf)>,
) -> String {
    let host = &url.host;
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(why)) => {
            let (roots, fix) = match ca_file {
                None => (
                    "the system's trust roots".to_string(),
                    format!("If {host} uses a private CA, pass its certificate with --ca-file CA.pem (or set tls.peer_ca_file in the configuration)"),
                ),
                Some((given, path)) => (
                    format!("{given} {}", path.display()),
                    format!("If {host}'s certificate comes from another CA, pass that CA's certificate with --ca-file CA.pem"),
                ),
            };
            format!(
                "the TLS certificate of {host} could not be verified ({why:?}) against {roots}. {fix}; otherwise check the URL: someone may be answering in {host}'s place"
            )
        }
        Some(rustls::Error::InvalidMessage(_)) => format!(
            "TLS with {host} failed: {}; what answered at {} does not speak TLS: if it listens in plain HTTP, the URL is http://{}",
            e, url.authority(), url.authority()
        ),
        Some(other) => format!("TLS with {host} failed: {other}"),
        None => format!("TLS with {host} failed: {e}"),
    }
}

async fn exchange<S>(io: S, authority: &str, target: &str) -> Result<Fetched, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let work = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| format!("HTTP with {authority} failed: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(target)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("peergate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request for {target}: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{authority} did not answer: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {authority} failed: {e}"))?
            .to_bytes();
        driver.abort();
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(RESPONSE_TIMEOUT, work)
        .await
        .map_err(|_| {
            format!(
                "{authority} did not answer within {}s",
                RESPONSE_TIMEOUT.as_secs()
            )
        })?
}

/// Fetches and checks a peer's identity document.
pub fn fetch_identity(url: &PeerUrl, tls: &Trust) -> Result<RemotePeer, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
    let fetched = runtime.block_on(fetch(url, IDENTITY_PATH, tls))?;
    let where_ = format!("{url}{IDENTITY_PATH}");
    if fetched.status != http::StatusCode::OK {
        return Err(format!(
            "{where_} answered {}; is {url} a peergate instance (and the URL its inbound listener)?",
            fetched.status
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(&fetched.body)
        .map_err(|e| format!("{where_} is not a JSON identity document: {e}"))?;
    check_identity_document(&doc)
}

/// Asks on the terminal; without one, the person must say `--yes` explicitly, once they have
/// done `before` (what the question would have had them check).
fn confirm(question: &str, before: &str) -> Result<bool, CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(usage(format!(
            "cannot ask for confirmation: standard input is not a terminal; once you have \
             {before}, run again with --yes"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| failed(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// The file that holds the list to edit: the peers file, or the configuration itself when its
/// peers are inline.
fn list_file(loaded: &Loaded) -> (PathBuf, bool) {
    match &loaded.config.peers_file {
        Some(file) => (file.0.clone(), true),
        None => (loaded.path.clone(), false),
    }
}

/// The key ids of every peer, in order.
fn key_ids(loaded: &Loaded) -> Vec<String> {
    loaded
        .config
        .peers
        .0
        .iter()
        .map(|p| p.primary.key_id().to_string())
        .collect()
}

pub fn add(args: &AddArgs) -> Result<(), CliError> {
    let started = Started::if_needed(&args.config);
    let loaded = load(&args.config)?;
    let url = PeerUrl::parse(&args.url).map_err(usage)?;
    if let Some(name) = &args.name {
        check_name(name).map_err(|e| usage(format!("--name: {e}")))?;
    }
    let ca_file = match &args.ca_file {
        Some(path) => Some(("--ca-file", path.clone())),
        None => loaded
            .config
            .peer_ca_file()
            .map(|path| ("tls.peer_ca_file", path.to_path_buf())),
    };
    // A CA file that cannot be used is bad input (--ca-file or tls.peer_ca_file); the system's
    // roots failing to load is a failure.
    let given = ca_file.is_some();
    let tls = client_config(ca_file).map_err(|e| match given {
        true => usage(e),
        false => failed(e),
    })?;
    let remote = fetch_identity(&url, &tls).map_err(failed)?;
    let public = &remote.public;

    let peers = &loaded.config.peers.0;
    if let Some(p) = peers
        .iter()
        .find(|p| p.keys().any(|k| k.key_id() == public.key_id()))
    {
        return Err(usage(format!(
            "this key is already on the allowlist, as {:?} ({}); nothing changed",
            p.name,
            p.short_id()
        )));
    }
    if let Some(p) = peers
        .iter()
        .find(|p| p.keys().any(|k| k.short_id() == public.short_id()))
    {
        return Err(usage(format!(
            "peer {:?} already has the short ID {}; two peers with one short ID cannot be told apart, so this one cannot be added",
            p.name,
            public.short_id()
        )));
    }
    let name = match (&args.name, &remote.name) {
        (Some(n), _) => n.trim().to_string(),
        (None, Some(n)) => n.clone(),
        (None, None) => url.host.clone(),
    };
    if let Some(p) = peers
        .iter()
        .find(|p| p.name.to_lowercase() == name.to_lowercase())
    {
        return Err(usage(format!(
            "the name {name:?} is already used by the peer {} on the allowlist; choose another with --name",
            p.short_id()
        )));
    }

    if !url.https {
        eprintln!("warning: {url} is plain http: the document was not protected in transit, so comparing the key id matters all the more");
    }
    if let Some(hosts) = unreachable_by(&url, &remote.hosts) {
        eprintln!(
            "warning: {name} accepts requests signed for {hosts} only (its identity.hosts); calls through {url} are signed for {}, and it will refuse them (401 wrong_authority). Add it by one of those names, or have {name} list this one",
            url.authority()
        );
    }
    println!("peer at {url}");
    println!("  name      {name}");
    println!("  short ID  {}", public.short_id());
    println!("  key id    {}", public.key_id());
    println!(
        "\nCompare the short ID and key id with what `peergate id` prints on {name}'s side, over a channel you trust (in person, by phone), before you confirm."
    );
    if !args.yes
        && !confirm(
            &format!("Add {name} to the allowlist?"),
            "compared the key id",
        )?
    {
        return Err(failed("not added; nothing changed"));
    }

    let entry = NewEntry {
        name: name.clone(),
        public_key: public.spki_base64(),
        url: Some(url.to_string()),
    };
    let (file, separate) = list_file(&loaded);
    let mut expected = key_ids(&loaded);
    expected.push(public.key_id().to_string());
    rewrite(&loaded, &file, separate, &expected, |text| {
        peers_text::append(text, &entry)
    })?;
    let new_file = started.map(Started::keep).is_some();
    println!(
        "added {name} ({}) to {}{}",
        public.short_id(),
        file.display(),
        if new_file { " (a new file)" } else { "" }
    );
    if url.https {
        if let Some(ca) = &args.ca_file {
            let trusted = loaded.config.peer_ca_file();
            if !trusted.is_some_and(|t| holds_pem(t, ca)) {
                let roots = trusted.map_or("the system's roots".to_string(), |t| {
                    format!("tls.peer_ca_file ({})", t.display())
                });
                eprintln!(
                    "note: --ca-file {} was trusted for this fetch only; calls to {name} check its certificate against {roots}. If {name}'s certificate comes from that CA, set tls.peer_ca_file to it (a file may hold several CAs), or calls will fail (502 upstream_unreachable)",
                    ca.display()
                );
            }
        }
    }
    Ok(())
}

/// Whether the trust roots in `trusted` include what `ca` holds: the same file, or one whose
/// text contains `ca`'s (a copy, or a bundle it was added to), so that calls to the peer will
/// trust what the fetch trusted.
fn holds_pem(trusted: &Path, ca: &Path) -> bool {
    if fs::canonicalize(trusted)
        .ok()
        .is_some_and(|t| fs::canonicalize(ca).ok() == Some(t))
    {
        return true;
    }
    match (fs::read_to_string(trusted), fs::read_to_string(ca)) {
        (Ok(trusted), Ok(ca)) => !ca.trim().is_empty() && trusted.contains(ca.trim()),
        _ => false,
    }
}

/// The hosts a peer states, written out, when none of them is `url`'s: requests signed for
/// `url`'s authority would be refused there. `None` when one matches, or when it states none
/// (an older peergate) or none that parses.
fn unreachable_by(url: &PeerUrl, hosts: &[String]) -> Option<String> {
    let rules: Vec<_> = hosts
        .iter()
        .filter_map(|h| peergate_signature::HostRule::parse(h).ok())
        .collect();
    if rules.is_empty() {
        return None;
    }
    let authority = peergate_signature::Authority::parse(&url.authority()).ok()?;
    if rules.iter().any(|r| r.matches(&authority, url.scheme())) {
        return None;
    }
    Some(
        rules
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The peers file `peer add` starts when the configuration names one that does not exist yet,
/// or one with nothing in it: the first peer then needs no file written by hand. Dropped
/// without [`Started::keep`] (the peer was not added), it puts things back: the new file
/// removed, the empty one emptied again.
struct Started {
    path: PathBuf,
    /// What the file held before (`None`: there was no file).
    before: Option<Vec<u8>>,
    kept: bool,
}

/// What a started peers file holds before its first peer is appended.
const STARTED_PEERS_FILE: &str = "# The peers this installation trusts; `peergate peer add` and `peer remove` edit it.\npeers: []\n";

impl Started {
    /// Starts the peers file `config` names, when there is none or it is empty; `None` when
    /// there is nothing to start, or it cannot be (the load then says what is wrong).
    fn if_needed(config: &Path) -> Option<Started> {
        let text = crate::files::read_to_string(config, crate::files::MAX_CONFIG_FILE).ok()?;
        let value: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        let written = PathBuf::from(value.get("peers_file")?.as_str()?);
        let path = if written.is_absolute() {
            written
        } else {
            // Where the configuration's loader resolves it (`config::context`).
            crate::files::directory_of(config).join(written)
        };
        let before = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Ok(meta) if meta.is_file() && meta.len() <= 4096 => {
                let bytes = fs::read(&path).ok()?;
                if !bytes.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                Some(bytes)
            }
            _ => return None,
        };
        // Once the file is ours (made here, or the empty one about to be written), dropping
        // `started` puts things back, a write that failed halfway too; a file someone else
        // made meanwhile is never touched (`create_new`).
        let started = match before {
            None => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .ok()?;
                let started = Started {
                    path,
                    before: None,
                    kept: false,
                };
                file.write_all(STARTED_PEERS_FILE.as_bytes()).ok()?;
                started
            }
            Some(bytes) => {
                let started = Started {
                    path,
                    before: Some(bytes),
                    kept: false,
                };
                fs::write(&started.path, STARTED_PEERS_FILE).ok()?;
                started
            }
        };
        Some(started)
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let _ = match &self.before {
            None => fs::remove_file(&self.path),
            Some(bytes) => fs::write(&self.path, bytes),
        };
    }
}

pub fn list(config_path: &Path) -> Result<(), CliError> {
    let loaded = load(config_path)?;
    print!("{}", peer_table(&loaded));
    Ok(())
}

/// The table `peer list` prints.
pub fn peer_table(loaded: &Loaded) -> String {
    let peers = &loaded.config.peers.0;
    if peers.is_empty() {
        return "no peers yet; add one with `peergate peer add URL`\n".to_string();
    }
    let rows: Vec<[String; 4]> = peers
        .iter()
        .map(|p| {
            [
                p.short_id().to_string(),
                p.name.clone(),
                p.url.as_ref().map_or("-".into(), ToString::to_string),
                p.primary.key_id().to_string(),
            ]
        })
        .collect();
    let header = ["SHORT ID", "NAME", "URL", "KEY ID"];
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 3 {
                out.push_str(cell);
            } else {
                let pad = w.saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    out
}

pub fn remove(config_path: &Path, handle: &str, yes: bool) -> Result<(), CliError> {
    let loaded = load(config_path)?;
    let wanted = handle.trim();
    // Names and short IDs match whatever their case, as on the outbound listener; a key id is
    // base64url, where case is part of the value.
    let folded = wanted.to_lowercase();
    let mut matching = loaded.config.peers.0.iter().filter(|p| {
        p.name.to_lowercase() == folded
            || p.short_id() == folded
            || p.keys().any(|k| k.key_id() == wanted)
    });
    let peer = matching.next().ok_or_else(|| {
        usage(format!(
            "no peer is named {wanted:?} or has that short ID; `peergate peer list -c {}` shows them",
            config_path.display()
        ))
    })?;
    // A handle that is one peer's name and another's key id must not pick either by file order:
    // the peer left trusted would be the one the person meant to remove.
    if let Some(other) = matching.next() {
        return Err(usage(format!(
            "{wanted:?} names more than one peer ({} and {}); remove by short ID",
            peer.short_id(),
            other.short_id()
        )));
    }
    let key_id = peer.primary.key_id().to_string();
    let short_id = peer.short_id().to_string();
    let name = peer.name.clone();
    // The peer may be in the peers file or inline in the configuration: edit where it is.
    let mut places = Vec::new();
    if let Some(file) = &loaded.config.peers_file {
        places.push((file.0.clone(), true));
    }
    places.push((loaded.path.clone(), false));
    let mut found = None;
    for (file, separate) in places {
        let text = read_text(&file)?;
        let items = peers_text::items(&text).unwrap_or_default();
        if items
            .iter()
            .any(|i| i.keys.first().is_some_and(|k| k.key_id() == key_id))
        {
            found = Some((file, separate));
            break;
        }
    }
    let (file, separate) = found.ok_or_else(|| {
        failed(format!(
            "peer {name:?} is on the allowlist but its entry could not be found in the text; remove it by hand"
        ))
    })?;
    println!(
        "remove {name} ({short_id}, key id {key_id}) from {}",
        file.display()
    );
    if !yes
        && !confirm(
            &format!("Remove {name} from the allowlist?"),
            "checked that it is the peer to remove",
        )?
    {
        return Err(failed("not removed; nothing changed"));
    }
    let expected: Vec<String> = key_ids(&loaded)
        .into_iter()
        .filter(|k| *k != key_id)
        .collect();
    rewrite(
        &loaded,
        &file,
        separate,
        &expected,
        |text| match peers_text::remove(text, &short_id)? {
            Some((new, _)) => Ok(new),
            None => Err(format!("the entry of {name:?} is no longer in the file")),
        },
    )?;
    println!("removed {name} ({short_id}) from {}", file.display());
    Ok(())
}

/// Loads the configuration; its warnings are about running the gateway, not about editing
/// the allowlist, so they are not repeated here.
fn load(path: &Path) -> Result<Loaded, CliError> {
    Ok(config::load(path)?)
}

fn read_text(path: &Path) -> Result<String, CliError> {
    crate::files::read_to_string(path, crate::files::MAX_CONFIG_FILE)
        .map_err(|e| failed(format!("{}: {e}", path.display())))
}

/// Edits `file` through `edit`, validates the result as the configuration it belongs to
/// (`separate`: `file` is the peers file; else it is the configuration itself) and checks that
/// the peer list becomes exactly `expected` (key ids in order) before replacing the file.
fn rewrite(
    loaded: &Loaded,
    file: &Path,
    separate: bool,
    expected: &[String],
    edit: impl FnOnce(&str) -> Result<String, String>,
) -> Result<(), CliError> {
    // Write next to the real file when the path is a symlink, so the rename replaces the
    // file, not the link.
    let target = fs::canonicalize(file).map_err(|e| failed(format!("{}: {e}", file.display())))?;
    let original = read_text(&target)?;
    let edited = edit(&original).map_err(|e| failed(format!("{}: {e}", file.display())))?;
    let tmp = temp_path(&target);
    let result = write_synced(&tmp, &edited, &target)
        .and_then(|()| validate(loaded, file, &tmp, separate, expected))
        .and_then(|()| {
            // Someone (or something) may have changed the file while we were at it: never
            // overwrite a change we did not see.
            if read_text(&target)? != original {
                return Err(failed(format!(
                    "{} changed while it was being edited; nothing changed, run the command again",
                    file.display()
                )));
            }
            fs::rename(&tmp, &target).map_err(|e| failed(format!("{}: {e}", target.display())))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if let Some(dir) = target.parent() {
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn temp_path(target: &Path) -> PathBuf {
    let dir = crate::files::directory_of(target);
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("peers.yaml");
    dir.join(format!(".{name}.peergate-{}.tmp", std::process::id()))
}

fn write_synced(tmp: &Path, text: &str, like: &Path) -> Result<(), CliError> {
    let io = |e: std::io::Error| failed(format!("{}: {e}", tmp.display()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io)?;
    if let Ok(meta) = fs::metadata(like) {
        keep_owner(&f, &meta, like)?;
        // Keep the file's mode (a peers file may be deliberately private).
        let _ = f.set_permissions(meta.permissions());
    }
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Gives the new copy the owner and group of the file it replaces. A peers file is often
/// root's and readable by the service's group (`root:peergate 0640`); edited with `sudo`, a
/// copy owned by `root:root` would leave the service unable to read its own allowlist at the
/// next reload or restart. When that cannot be done (not root, not the owner), nothing changes.
#[cfg(unix)]
fn keep_owner(copy: &fs::File, original: &fs::Metadata, path: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = (original.uid(), original.gid());
    let mine = copy
        .metadata()
        .map_err(|e| failed(format!("{}: {e}", path.display())))?;
    if mine.uid() == uid && mine.gid() == gid {
        return Ok(());
    }
    std::os::unix::fs::fchown(copy, Some(uid), Some(gid)).map_err(|e| {
        failed(format!(
            "cannot give the edited copy the owner and group of {} (uid {uid}, gid {gid}): {e}; \
             nothing changed. Run the command as the file's owner or as root",
            path.display()
        ))
    })
}

#[cfg(not(unix))]
fn keep_owner(_: &fs::File, _: &fs::Metadata, _: &Path) -> Result<(), CliError> {
    Ok(())
}

fn validate(
    loaded: &Loaded,
    file: &Path,
    tmp: &Path,
    separate: bool,
    expected: &[String],
) -> Result<(), CliError> {
    let result = if separate {
        config::load_with_peers_file(&loaded.path, tmp)
    } else {
        config::load(tmp)
    };
    let reloaded = result.map_err(|mut e| {
        if e.file == tmp {
            e.file = file.to_path_buf();
        }
        // Messages that quote a file (an entry "of peers[0] in <file>") name the one the person
        // knows, not the temporary copy that is already gone.
        e.message = e
            .message
            .replace(&tmp.display().to_string(), &file.display().to_string());
        failed(format!(
            "the edited file would not load, so nothing changed: {e}"
        ))
    })?;
    let got = key_ids(&reloaded);
    if got != expected {
        return Err(failed(format!(
            "editing {} would not have changed exactly the one entry meant (the peers list is written in a way peergate does not follow); nothing changed, edit it by hand",
            file.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_for(public: &PublicIdentity) -> serde_json::Value {
        serde_json::json!({
            "peer_id": public.peer_id(),
            "short_id": public.short_id(),
            "key_id": public.key_id(),
            "public_key": public.spki_base64(),
            "alg": "ed25519",
            "name": "Bob",
        })
    }

    #[test]
    fn consistent_documents_pass_and_tampered_ones_fail() {
        let bob = crate::identity::Identity::generate();
        let eve = crate::identity::Identity::generate();
        let good = doc_for(bob.public());
        let peer = check_identity_document(&good).unwrap();
        assert_eq!(peer.public.key_id(), bob.public().key_id());
        assert_eq!(peer.name.as_deref(), Some("Bob"));

        let mut bad = good.clone();
        bad["public_key"] = eve.public().spki_base64().into();
        let err = check_identity_document(&bad).unwrap_err();
        assert!(err.contains("tampered"), "{err}");

        let mut bad = good.clone();
        bad["short_id"] = "zzzzzz".into();
        assert!(check_identity_document(&bad)
            .unwrap_err()
            .contains("short ID"));

        let mut bad = good.clone();
        bad["peer_id"] = eve.public().peer_id().into();
        assert!(check_identity_document(&bad)
            .unwrap_err()
            .contains("peer_id"));

        let mut bad = good.clone();
        bad.as_object_mut().unwrap().remove("key_id");
        assert!(check_identity_document(&bad)
            .unwrap_err()
            .contains("key_id"));

        let mut odd_name = good.clone();
        odd_name["name"] = "a/b".into();
        assert_eq!(check_identity_document(&odd_name).unwrap().name, None);
        for invisible in ["Eve\u{2028}x", "Bob\u{202e}", "B\u{200b}ob", "\u{feff}Bob"] {
            odd_name["name"] = invisible.into();
            assert_eq!(
                check_identity_document(&odd_name).unwrap().name,
                None,
                "{invisible:?}"
            );
        }

        // What a peer states is echoed escaped: no terminal control sequence gets through.
        let mut bad = good;
        bad["key_id"] = "\u{1b}[2K\rpeer added\n".into();
        let err = check_identity_document(&bad).unwrap_err();
        assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err:?}");
        assert!(err.contains("\\u{1b}"), "{err:?}");
    }

    #[test]
    fn names_written_to_the_peers_file_keep_line_counting_intact() {
        let quoted = crate::peers_text::quote("Eve\u{2028}\u{2029}\u{85}x");
        assert_eq!(quoted, "\"Eve\\u2028\\u2029\\u0085x\"");
        let back: String = serde_yaml::from_str(&quoted).unwrap();
        assert_eq!(back, "Eve\u{2028}\u{2029}\u{85}x");
    }
}
