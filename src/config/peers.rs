//! The allowlist entries: who our peers are, their keys, where to reach them, what they may do.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::context;
use super::routes::PathPattern;
use super::values::{parse_str, MethodName};
use crate::identity::PublicIdentity;

#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawPeer")]
pub struct Peer {
    pub name: String,
    /// The first key listed: the peer's own, whose short ID is the peer's.
    pub primary: PublicIdentity,
    /// Further keys accepted for this peer, e.g. while it rotates keys.
    pub other_keys: Vec<PublicIdentity>,
    pub url: Option<PeerUrl>,
    pub allow: Allow,
}

impl Peer {
    pub fn keys(&self) -> impl Iterator<Item = &PublicIdentity> {
        std::iter::once(&self.primary).chain(&self.other_keys)
    }

    pub fn short_id(&self) -> &str {
        self.primary.short_id()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: PeerName,
    #[serde(default)]
    public_key: Option<PeerKey>,
    #[serde(default)]
    public_keys: Vec<PeerKey>,
    #[serde(default)]
    url: Option<PeerUrl>,
    #[serde(default)]
    allow: Allow,
}

impl TryFrom<RawPeer> for Peer {
    type Error = String;
    fn try_from(raw: RawPeer) -> Result<Self, String> {
        let mut keys = raw
            .public_key
            .into_iter()
            .chain(raw.public_keys)
            .map(|k| k.0);
        let primary = keys.next().ok_or_else(|| {
            format!(
                "peer {:?} has no public_key; paste the key `peergate id` prints on their side",
                raw.name.0
            )
        })?;
        Ok(Peer {
            name: raw.name.0,
            primary,
            other_keys: keys.collect(),
            url: raw.url,
            allow: raw.allow,
        })
    }
}

struct PeerName(String);

impl<'de> Deserialize<'de> for PeerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "the peer's name", |s| {
            let name = s.trim();
            if name.is_empty() {
                return Err("a peer's name may not be empty".into());
            }
            if name.chars().count() > 128 {
                return Err("a peer's name is at most 128 characters".into());
            }
            if let Some(c) = name.chars().find(|c| c.is_control() || *c == '/') {
                return Err(format!(
                    "a peer's name may not contain {c:?} (apps address peers as /peers/<name>/…)"
                ));
            }
            context::claim_name(name)?;
            Ok(PeerName(name.to_string()))
        })
    }
}

struct PeerKey(PublicIdentity);

impl<'de> Deserialize<'de> for PeerKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an Ed25519 public key", |s| {
            let key = PublicIdentity::parse(s).map_err(|e| e.to_string())?;
            context::claim_key(key.key_id(), key.short_id())?;
            Ok(PeerKey(key))
        })
    }
}

/// Where a peer's inbound listener is. The host is resolved asynchronously at call time.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without trailing slash ("" for none).
    pub base_path: String,
}

impl PeerUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.trim().parse().map_err(|_| {
            format!("{s:?} is not a URL; expected e.g. \"https://bob.example.org:8443\"")
        })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "{s:?}: a peer URL starts with https:// (or http:// on a trusted network)"
                ))
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{s:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if uri.query().is_some() {
            return Err(format!("{s:?}: a peer URL may not have a query"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!("{s:?}: a peer URL may not carry credentials"));
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(PeerUrl {
            https,
            host,
            port,
            base_path,
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// host[:port] as it goes into Host / `@authority` (default port left out).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme(),
            self.authority(),
            self.base_path
        )
    }
}

impl fmt::Debug for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for PeerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "the peer's URL", PeerUrl::parse)
    }
}

/// Narrows what a peer may do; empty lists mean "no narrowing".
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    #[serde(default)]
    pub methods: Vec<MethodName>,
    #[serde(default)]
    pub paths: Vec<PathPattern>,
}

impl Allow {
    pub fn permits(&self, method: &http::Method, normalized_path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.0 == method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(normalized_path)))
    }
}

/// A list of peers; tells the load context which entry is being read, for duplicate messages.
#[derive(Clone, Debug, Default)]
pub struct PeerList(pub Vec<Peer>);

impl<'de> Deserialize<'de> for PeerList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PeerList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of peers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PeerList, A::Error> {
                let mut peers = Vec::new();
                loop {
                    context::enter_peer(peers.len());
                    match seq.next_element::<Peer>()? {
                        Some(peer) => peers.push(peer),
                        None => return Ok(PeerList(peers)),
                    }
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<PeerList, E> {
                Ok(PeerList::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// The peers file: `peers:` and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersFile {
    #[serde(default)]
    pub peers: PeerList,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls() {
        let u = PeerUrl::parse("https://Bob.Example.org:8443/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("bob.example.org", 8443, "")
        );
        assert_eq!(u.authority(), "bob.example.org:8443");
        assert_eq!(
            PeerUrl::parse("https://bob.example.org")
                .unwrap()
                .authority(),
            "bob.example.org"
        );
        assert_eq!(
            PeerUrl::parse("https://bob.example.org/portal/")
                .unwrap()
                .base_path,
            "/portal"
        );
        assert!(PeerUrl::parse("ftp://x").unwrap_err().contains("https://"));
        assert!(PeerUrl::parse("https://u:p@x")
            .unwrap_err()
            .contains("credentials"));
        assert!(PeerUrl::parse("https://x/?a=b")
            .unwrap_err()
            .contains("query"));
    }
}
