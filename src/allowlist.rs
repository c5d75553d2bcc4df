//! The allowlist and inbound policy as one immutable snapshot, built from a loaded
//! configuration. Requests read a snapshot; a reload builds a new one and swaps it in whole, so a
//! request never sees half of an old allowlist and half of a new one.

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use http::HeaderValue;
use peergate_signature::{HostRule, Policy, Signer};

use crate::config::{self, Allow, Config, HostPort, PeerUrl, Route};

/// A peer as the gateways need it per request: every header value precomputed.
#[derive(Debug)]
pub struct PeerEntry {
    pub name: String,
    pub short_id: String,
    pub peer_id: String,
    /// The key id of the peer's own (first) key.
    pub key_id: String,
    pub url: Option<PeerUrl>,
    pub allow: Allow,
    /// `X-Peer-Id` value.
    pub id_header: HeaderValue,
    /// `X-Peer-Name` value: percent-encoded UTF-8 where the name is not plain ASCII.
    pub name_header: HeaderValue,
}

struct KeyEntry {
    key: VerifyingKey,
    peer: Arc<PeerEntry>,
    key_id_header: HeaderValue,
}

/// The identity header names, and the folded forms used to strip look-alikes.
#[derive(Debug, Clone)]
pub struct IdentityHeaderNames {
    pub id: http::HeaderName,
    pub name: http::HeaderName,
    pub key_id: http::HeaderName,
    folded: [String; 3],
}

impl IdentityHeaderNames {
    /// Whether `name` is one of the identity headers, case-insensitively, `_` = `-`.
    pub fn matches(&self, name: &str) -> bool {
        let len = name.len();
        self.folded.iter().any(|f| {
            f.len() == len
                && f.bytes().zip(name.bytes()).all(|(a, b)| {
                    let b = match b.to_ascii_lowercase() {
                        b'_' => b'-',
                        other => other,
                    };
                    a == b
                })
        })
    }
}

/// Everything request handling needs that comes from the configuration.
pub struct Snapshot {
    peers: Vec<Arc<PeerEntry>>,
    by_key_id: HashMap<String, KeyEntry>,
    by_short_id: HashMap<String, Arc<PeerEntry>>,
    by_name: HashMap<String, Arc<PeerEntry>>,
    pub routes: Vec<Route>,
    pub policy: Policy,
    pub scheme: &'static str,
    pub identity_headers: IdentityHeaderNames,
    pub max_body: u64,
    pub upstream: HostPort,
    pub accept_signature: HeaderValue,
    /// The unsigned public documents (identity, key directory, welcome page) of this config.
    pub public_pages: crate::public_identity::PublicPages,
    /// Signs the app's requests to peers with this installation's key.
    pub signer: Signer,
}

/// A verified caller: the peer and the exact key that signed.
#[derive(Clone)]
pub struct Caller {
    pub peer: Arc<PeerEntry>,
    pub key_id_header: HeaderValue,
}

impl Snapshot {
    pub fn build(config: &Config) -> Result<Snapshot, String> {
        // Sized up front: an allowlist of 100 000 peers would otherwise rehash each map
        // about 17 times while it is built.
        let n = config.peers.0.len();
        let keys: usize = config.peers.0.iter().map(|p| 1 + p.other_keys.len()).sum();
        let mut peers = Vec::with_capacity(n);
        let mut by_key_id = HashMap::with_capacity(keys);
        let mut by_short_id = HashMap::with_capacity(keys);
        let mut by_name = HashMap::with_capacity(n);
        for peer in &config.peers.0 {
            let entry = Arc::new(PeerEntry {
                name: peer.name.clone(),
                short_id: peer.short_id().to_string(),
                peer_id: peer.primary.peer_id().to_string(),
                key_id: peer.primary.key_id().to_string(),
                url: peer.url.clone(),
                allow: peer.allow.clone(),
                id_header: header_value(peer.short_id())?,
                name_header: header_value(&encode_name(&peer.name))?,
            });
            for key in peer.keys() {
                by_key_id.insert(
                    key.key_id().to_string(),
                    KeyEntry {
                        key: *key.verifying_key(),
                        peer: entry.clone(),
                        key_id_header: header_value(key.key_id())?,
                    },
                );
                by_short_id.insert(key.short_id().to_string(), entry.clone());
            }
            by_name.insert(peer.name.to_lowercase(), entry.clone());
            peers.push(entry);
        }
        let hosts = config
            .identity
            .hosts
            .0
            .iter()
            .map(|h| {
                HostRule::parse(&h.to_string()).map_err(|e| format!("identity.hosts {h}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let s = &config.signatures;
        let policy = Policy {
            max_age: s.max_age.0,
            clock_skew: s.clock_skew.0,
            require_nonce: s.require_nonce,
            hosts,
            tag: Some("peergate".to_string()),
        };
        let accept_signature = header_value(&policy.accept_signature())?;
        let h = &config.identity_headers;
        let identity_headers = IdentityHeaderNames {
            id: h.id.0.clone(),
            name: h.name.0.clone(),
            key_id: h.key_id.0.clone(),
            folded: h.all().map(config::IdentityHeaderName::folded),
        };
        Ok(Snapshot {
            peers,
            by_key_id,
            by_short_id,
            by_name,
            routes: config.routes.clone(),
            policy,
            scheme: config.identity.scheme.as_str(),
            identity_headers,
            max_body: s.max_body.0,
            upstream: config.app.upstream.clone(),
            accept_signature,
            public_pages: crate::public_identity::PublicPages::new(config)?,
            signer: Signer::new(
                config.identity.key_file.identity.signing_key().clone(),
                config
                    .identity
                    .key_file
                    .identity
                    .public()
                    .key_id()
                    .to_string(),
                s.lifetime.0,
            ),
        })
    }

    pub fn peers(&self) -> &[Arc<PeerEntry>] {
        &self.peers
    }

    /// The verifying key for a `keyid`: the full key id, never a short ID or a name.
    pub fn key(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.by_key_id.get(key_id).map(|e| &e.key)
    }

    pub fn caller(&self, key_id: &str) -> Option<Caller> {
        self.by_key_id.get(key_id).map(|e| Caller {
            peer: e.peer.clone(),
            key_id_header: e.key_id_header.clone(),
        })
    }

    /// The peer whose URL has this host (and this port, when one is given), for apps that use
    /// peergate as their HTTP proxy. `Err` when the host alone names several peers.
    pub fn peer_by_host(
        &self,
        host: &str,
        port: Option<u16>,
    ) -> Result<Option<&Arc<PeerEntry>>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut found = self.peers.iter().filter(|p| {
            p.url.as_ref().is_some_and(|u| {
                u.host.eq_ignore_ascii_case(host) && port.is_none_or(|port| port == u.port)
            })
        });
        let first = found.next();
        if first.is_some() && found.next().is_some() {
            return Err(format!(
                "several peers are reached at {host}; give the port of the one you mean"
            ));
        }
        Ok(first)
    }

    /// A peer by short ID or name, for apps addressing peers (`/peers/<short ID or name>/`).
    pub fn peer_by_handle(&self, handle: &str) -> Option<&Arc<PeerEntry>> {
        self.by_short_id
            .get(handle)
            .or_else(|| self.by_name.get(&handle.to_lowercase()))
    }
}

fn header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|_| format!("{s:?} cannot be sent as a header value"))
}

/// Percent-encodes a peer name for a header: plain printable ASCII stays as it is, everything
/// else (and `%` itself) is encoded as UTF-8 bytes, so the app can decode it unambiguously.
pub fn encode_name(name: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let encoded: String = percent_encoding::utf8_percent_encode(name, KEEP).collect();
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_only_where_needed() {
        assert_eq!(encode_name("Bob"), "Bob");
        assert_eq!(encode_name("Carol's NAS"), "Carol's NAS");
        assert_eq!(encode_name("Zoë"), "Zo%C3%AB");
        assert_eq!(encode_name("100%"), "100%25");
    }

    #[test]
    fn identity_header_names_fold_case_and_underscores() {
        let names = IdentityHeaderNames {
            id: http::HeaderName::from_static("x-peer-id"),
            name: http::HeaderName::from_static("x-peer-name"),
            key_id: http::HeaderName::from_static("x-peer-key-id"),
            folded: [
                "x-peer-id".into(),
                "x-peer-name".into(),
                "x-peer-key-id".into(),
            ],
        };
        for spoof in [
            "x-peer-id",
            "X-Peer-Id",
            "X_PEER_ID",
            "x_peer-Key_id",
            "X-PEER-NAME",
        ] {
            assert!(names.matches(spoof), "{spoof}");
        }
        for other in ["x-peer-idx", "x-peer", "x-peer-id-", "host"] {
            assert!(!names.matches(other), "{other}");
        }
    }
}
