//! The typed values of the configuration (addresses, host names, header names, files, the
//! identity key). Each one is checked while serde visits it, so a bad value is reported at its
//! own line and column.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::context;
use crate::identity::{self, Identity};

/// Deserializes a string through `parse`; the error lands on the string's own position.
pub(crate) fn parse_str<'de, D, T, F>(
    d: D,
    expecting: &'static str,
    parse: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct V<T, F>(F, &'static str, PhantomData<T>);
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for V<T, F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.0)(s).map_err(E::custom)
        }
    }
    d.deserialize_str(V(parse, expecting, PhantomData))
}

/// A socket address to listen on: an IP and a port (`0.0.0.0:8443`, `[::1]:9464`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an address to listen on, e.g. \"127.0.0.1:8480\"", |s| {
            s.trim().parse().map(ListenAddr).map_err(|_| {
                format!("{s:?} is not an address to listen on; expected IP:port, e.g. \"0.0.0.0:8443\" or \"[::]:8443\"")
            })
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many threads each proxy listener (inbound, outbound) runs: `auto`, or a count.
///
/// A proxy that stays on two threads leaves the rest of a larger machine idle while requests
/// queue, so `auto` follows the CPUs the process may use, as nginx's `worker_processes auto`
/// and Envoy's `--concurrency` do. Each listener gets that many, so either one alone can use
/// every core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threads {
    #[default]
    Auto,
    Count(usize),
}

/// A typo such as `threads: 8000` would start thousands of threads per listener.
pub const MAX_THREADS: usize = 1024;

impl Threads {
    /// The number to start: for `auto`, the CPUs this process may run on (its affinity mask and
    /// cgroup CPU quota, as `std::thread::available_parallelism` reads them), or 2 when that
    /// cannot be read.
    pub fn count(self) -> usize {
        match self {
            Threads::Count(n) => n,
            Threads::Auto => std::thread::available_parallelism()
                .map(|n| n.get().min(MAX_THREADS))
                .unwrap_or(2),
        }
    }
}

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn count<E: de::Error>(n: i128) -> Result<Threads, E> {
            match usize::try_from(n) {
                Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(Threads::Count(n)),
                _ => Err(E::custom(format!(
                    "{n} threads: expected \"auto\" or a number from 1 to {MAX_THREADS}"
                ))),
            }
        }
        impl Visitor<'_> for V {
            type Value = Threads;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "\"auto\" or a number of threads from 1 to {MAX_THREADS}")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Threads, E> {
                count(i128::from(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Threads, E> {
                count(i128::from(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Threads, E> {
                let s = s.trim();
                if s == "auto" {
                    return Ok(Threads::Auto);
                }
                match s.parse::<i128>() {
                    Ok(n) => count(n),
                    Err(_) => Err(E::custom(format!(
                        "{s:?}: expected \"auto\" or a number of threads from 1 to {MAX_THREADS}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Threads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threads::Auto => f.write_str("auto"),
            Threads::Count(n) => write!(f, "{n}"),
        }
    }
}

/// A number of things (`listen.max_connections`, `signatures.replay_cache_size`), for
/// `#[serde(deserialize_with)]`: a whole number. serde's own error for anything else names a
/// Rust type ("expected usize"), which says nothing to someone writing YAML.
pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number, e.g. 4096")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<usize, E> {
            usize::try_from(n).map_err(|_| E::custom(format!("{n} is too large a number")))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<usize, E> {
            match u64::try_from(n) {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(format!(
                    "{n} is below zero; expected a whole number, e.g. 4096"
                ))),
            }
        }
        fn visit_u128<E: de::Error>(self, n: u128) -> Result<usize, E> {
            Err(E::custom(format!("{n} is too large a number")))
        }
        fn visit_i128<E: de::Error>(self, n: i128) -> Result<usize, E> {
            match u128::try_from(n) {
                Ok(n) => self.visit_u128(n),
                Err(_) => Err(E::custom(format!(
                    "{n} is below zero; expected a whole number, e.g. 4096"
                ))),
            }
        }
    }
    d.deserialize_any(V)
}

/// `host:port`, where host is a DNS name or an IP (IPv6 in brackets). Resolved at run time,
/// asynchronously, never at load.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (host, port) = split_host_port(s).ok_or_else(|| {
            format!("{s:?} is not host:port; expected e.g. \"127.0.0.1:3000\" or \"app:3000\"")
        })?;
        let port = port.ok_or_else(|| {
            format!("{s:?} has no port; expected host:port, e.g. \"127.0.0.1:3000\"")
        })?;
        Ok(HostPort { host, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "host:port", HostPort::parse)
    }
}

/// One of the names peers use for us: a host with an optional port. Without a port it matches
/// that host on any port; with one, only that port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostName {
    pub host: String,
    pub port: Option<u16>,
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => f.write_str(&host),
        }
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a host name, optionally with :port", |s| {
            let (host, port) = split_host_port(s.trim()).ok_or_else(|| {
                format!("{s:?} is not a host name; expected e.g. \"alice.example.org\" or \"alice.example.org:8443\"")
            })?;
            Ok(HostName { host, port })
        })
    }
}

/// Splits `host[:port]`, lowercasing the host; `None` when the host is not a DNS name, an IPv4
/// address or an IPv6 address (in brackets when a port follows), or the port is not 1-65535.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let port_of = |p: &str| -> Option<u16> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok().filter(|&port| port != 0)
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(port_of(p.strip_prefix(':')?)?),
        };
        return Some((v6.to_ascii_lowercase(), port));
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((s.to_ascii_lowercase(), None));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(port_of(p)?)),
        None => (s, None),
    };
    // A name or an IPv4 address: dot-separated labels of letters, digits and '-'. Anything with
    // a ':' left in it (a URL, an IPv6 address with a port but no brackets) is not a host.
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    valid.then(|| (host.to_ascii_lowercase(), port))
}

/// The scheme peers use to reach us, for `@scheme` and `@target-uri`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Https,
    Http,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// A file named in the config, resolved against the directory of the file that names it, and
/// checked to exist so a typo is caught by `peergate check`, not at the first request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingFile(pub PathBuf);

impl<'de> Deserialize<'de> for ExistingFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a file path", |s| {
            existing_file(s, None).map(ExistingFile)
        })
    }
}

/// `peers_file`: an [`ExistingFile`] whose absence says how a first allowlist is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeersFilePath(pub PathBuf);

/// What a missing peers file's error adds: someone setting up their first installation has
/// no peers to list yet.
const NO_PEERS_FILE_YET: &str = "to start an allowlist with no peers yet, write `peers: []` in \
     it, or let `peergate peer add URL` start it with a first peer";

impl<'de> Deserialize<'de> for PeersFilePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a file path", |s| {
            existing_file(s, Some(NO_PEERS_FILE_YET)).map(PeersFilePath)
        })
    }
}

/// `written` resolved (see [`ExistingFile`]), when it names a regular file; else why not, and
/// `if_missing` when nothing is there.
fn existing_file(written: &str, if_missing: Option<&str>) -> Result<PathBuf, String> {
    let path = context::resolve_path(written);
    let refused = match std::fs::metadata(&path) {
        // Opened too: a file the service user may not read is said at this setting's line.
        Ok(meta) if meta.is_file() => match crate::files::open_regular(&path) {
            Ok(_) => return Ok(path),
            Err(e) => format!("cannot read {}: {e}", path.display()),
        },
        Ok(_) => format!("{} is not a regular file", path.display()),
        Err(e) => match if_missing {
            // Neither `peers: []` nor `peer add` can start a file there.
            _ if e.kind() == std::io::ErrorKind::NotFound && !parent_exists(&path) => format!(
                "cannot read {}: the directory {} does not exist",
                path.display(),
                crate::files::directory_of(&path).display()
            ),
            Some(hint) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("cannot read {}: {e}; {hint}", path.display())
            }
            _ => format!("cannot read {}: {e}", path.display()),
        },
    };
    crate::files::tried(&path);
    Err(refused)
}

fn parent_exists(path: &std::path::Path) -> bool {
    crate::files::directory_of(path).is_dir()
}

/// `identity.key_file`: loaded while it is read, so a bad key is reported at this line.
#[derive(Clone)]
pub struct KeyFile {
    pub path: PathBuf,
    pub identity: Arc<Identity>,
    pub warnings: Vec<String>,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("path", &self.path)
            .field("identity", self.identity.public())
            .finish()
    }
}

impl<'de> Deserialize<'de> for KeyFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "the path of a PKCS#8 PEM Ed25519 key", |s| {
            let path = context::resolve_path(s);
            match identity::load_key(&path) {
                Ok(loaded) => Ok(KeyFile {
                    path,
                    identity: Arc::new(loaded.identity),
                    warnings: loaded.warnings,
                }),
                Err(identity::IdentityError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Err(format!(
                        "{} does not exist; create it with `peergate keygen -o {}`",
                        path.display(),
                        path.display()
                    ))
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// An HTTP header name for the identity headers; refuses names that would let the identity
/// header clobber framing, routing or the signature itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaderName(pub http::HeaderName);

const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "signature",
    "signature-input",
    "content-digest",
    "accept-signature",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "x-forwarded-proto",
    // Read by the proxy (100-continue) or set by it.
    "expect",
    "proxy-authorization",
    // The forwarding fields only the proxy may set (`app_request.rs`): an identity header by
    // such a name would give frameworks the caller's ID as a host or address.
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    // Method overrides (`method_override.rs`): the app would read the caller's ID as a method.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

impl IdentityHeaderName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let name = http::HeaderName::from_bytes(s.trim().as_bytes())
            .map_err(|_| format!("{s:?} is not a valid HTTP header name"))?;
        // Compared folded (`_` = `-`), as the identity headers are stripped: `Content_Length`
        // would otherwise pass here and then strip every request's `Content-Length`.
        let folded = name.as_str().replace('_', "-");
        if RESERVED_HEADERS.contains(&folded.as_str()) {
            return Err(format!(
                "{s:?} is a header the proxy itself relies on; pick another name for an identity header"
            ));
        }
        Ok(IdentityHeaderName(name))
    }

    /// The form in which two header names are "the same" for stripping: lowercase, and every
    /// byte that is not a letter or digit a `-` ([`fold_byte`](Self::fold_byte)).
    pub fn folded(&self) -> String {
        self.0
            .as_str()
            .bytes()
            .map(|b| char::from(Self::fold_byte(b)))
            .collect()
    }

    /// One byte of a header name as [`folded`](Self::folded) has it.
    pub fn fold_byte(b: u8) -> u8 {
        if b.is_ascii_alphanumeric() {
            b.to_ascii_lowercase()
        } else {
            b'-'
        }
    }
}

impl<'de> Deserialize<'de> for IdentityHeaderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an HTTP header name", IdentityHeaderName::parse)
    }
}

/// An HTTP method token, uppercased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodName(pub http::Method);

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an HTTP method such as GET or POST", |s| {
            let upper = s.trim().to_ascii_uppercase();
            if upper.is_empty() || !upper.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
                return Err(format!("{s:?} is not an HTTP method"));
            }
            http::Method::from_bytes(upper.as_bytes())
                .map(MethodName)
                .map_err(|_| format!("{s:?} is not an HTTP method"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(
            split_host_port("Alice.Example.org"),
            Some(("alice.example.org".into(), None))
        );
        assert_eq!(
            split_host_port("alice.example.org:8443"),
            Some(("alice.example.org".into(), Some(8443)))
        );
        assert_eq!(
            split_host_port("[::1]:8443"),
            Some(("::1".into(), Some(8443)))
        );
        assert_eq!(
            split_host_port("127.0.0.1"),
            Some(("127.0.0.1".into(), None))
        );
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a b",
            "a:99999",
            "a:",
            "[::1",
            "[zz]:1",
            "https://x",
            "https://alice.example.org:8443",
            "http://127.0.0.1:33000",
            "not a host:1:2",
            "::1:8443x",
            "a:+80",
            "a:0",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
        // A bare IPv6 address is a host without a port; with a port it needs brackets.
        assert_eq!(split_host_port("::1"), Some(("::1".into(), None)));
        assert_eq!(split_host_port("[FE80::1]"), Some(("fe80::1".into(), None)));
    }

    #[test]
    fn header_names() {
        assert!(IdentityHeaderName::parse("X-Ptl-Client-Id").is_ok());
        assert!(IdentityHeaderName::parse("Host")
            .unwrap_err()
            .contains("relies on"));
        for look_alike in [
            "Content_Length",
            "signature_input",
            "X_Forwarded_For",
            "HOST",
            "Expect",
            "X-Forwarded-Host",
            "x_real_ip",
            "X-HTTP-Method-Override",
        ] {
            assert!(
                IdentityHeaderName::parse(look_alike)
                    .unwrap_err()
                    .contains("relies on"),
                "{look_alike}"
            );
        }
        assert!(IdentityHeaderName::parse("X Peer")
            .unwrap_err()
            .contains("not a valid"));
        assert_eq!(
            IdentityHeaderName::parse("X_Peer_Id").unwrap().folded(),
            "x-peer-id"
        );
    }
}
