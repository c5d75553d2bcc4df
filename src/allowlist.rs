//! The allowlist and inbound policy as one immutable snapshot, built from a loaded
//! configuration. Requests read a snapshot; a reload builds a new one and swaps it in whole, so a
//! request never sees half of an old allowlist and half of a new one.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

use ed25519_dalek::VerifyingKey;
use hashbrown::HashTable;
use http::HeaderValue;
use peergate_signature::{HostRule, Policy, Signer};

use crate::config::{self, Allow, Config, HostPort, PeerUrl, Route};
use crate::identity::{key_id_of_raw, PublicIdentity, KEY_ID_LEN, SHORT_ID_LEN};

/// Where a string lives in [`Snapshot::text`].
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

/// A peer, compactly: an allowlist of 100 000 peers has to fit in a few tens of MiB beside the
/// proxy, so strings live in one arena, empty rules take no room, and header values are made
/// per request (a few hundred nanoseconds beside a 40 µs signature check).
struct PeerRec {
    name: Span,
    url: Option<UrlRec>,
    allow: Option<Box<Allow>>,
    /// Index in [`Snapshot::keys`] of the peer's own (first) key, whose short ID is the peer's.
    primary: u32,
}

#[derive(Clone, Copy)]
struct UrlRec {
    host: Span,
    base_path: Span,
    port: u16,
    https: bool,
}

/// A key, in 44 bytes. Its key id (43 characters of SHA-256) is computed again when a lookup
/// finds a candidate instead of being kept: a fraction of a microsecond beside the 40 µs of a
/// signature check, and 4.2 MiB less for 100 000 peers, while serving and again while a reload
/// builds the next table beside the running one.
struct KeyRec {
    /// The key's 32 bytes, as written.
    raw: [u8; 32],
    short_id: [u8; SHORT_ID_LEN],
    /// Index in [`Snapshot::peers`].
    peer: u32,
}

// The size the comment above promises (100 000 keys: 4.2 MiB).
const _: () = assert!(std::mem::size_of::<KeyRec>() == 44);

impl KeyRec {
    fn key_id(&self) -> [u8; KEY_ID_LEN] {
        key_id_of_raw(&self.raw)
    }

    fn short_id(&self) -> &str {
        // Characters of the peer ID alphabet: ASCII.
        std::str::from_utf8(&self.short_id).unwrap_or_default()
    }

    /// The whole identity, with its key id; for listings.
    fn identity(&self) -> PublicIdentity {
        PublicIdentity::of_valid_raw(self.raw)
    }
}

/// A key id as the `str` that lookups hash: what [`key_id_of_raw`] gives is base64url, ASCII.
fn key_id_str(id: &[u8; KEY_ID_LEN]) -> &str {
    std::str::from_utf8(id).unwrap_or_default()
}

/// The identity header names, and the folded forms used to strip look-alikes.
#[derive(Debug, Clone)]
pub struct IdentityHeaderNames {
    pub id: http::HeaderName,
    pub name: http::HeaderName,
    pub key_id: http::HeaderName,
    /// The three names, folded; and the default three, when they were renamed.
    folded: Vec<String>,
}

impl IdentityHeaderNames {
    /// Whether `name` is one of the identity headers, case-insensitively, with every byte that
    /// is not a letter or digit taken for `-`: frameworks and CGI bridges read `X_Peer_Id`, and
    /// some (lighttpd's, older Apache's) `X.Peer.Id` or `X~Peer~Id`, as `HTTP_X_PEER_ID`. The
    /// default names count too when `identity_headers` renames them: an app moved to other names
    /// (or one beside it, or a middleware) may still read `X-Peer-Id`, and no client may set it.
    pub fn matches(&self, name: &str) -> bool {
        let len = name.len();
        self.folded.iter().any(|f| {
            f.len() == len
                && f.bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a == config::IdentityHeaderName::fold_byte(b))
        })
    }
}

/// The peers of an allowlist with their indexes: the part of a [`Snapshot`] that grows with the
/// allowlist. A gateway's load builds it while it reads the peers file (see
/// [`config::load_serving`]), so that a large allowlist is never held both as parsed entries
/// and in this form; the snapshot then shares it with the loaded configuration.
pub struct PeerTable {
    /// Names, URL hosts and base paths of all peers, back to back.
    text: String,
    peers: Vec<PeerRec>,
    keys: Vec<KeyRec>,
    /// Indexes into `keys`, by key id: the only lookup that authorizes.
    by_key_id: HashTable<u32>,
    /// Indexes into `keys`, by short ID: a handle apps use, never an authorization key.
    by_short_id: HashTable<u32>,
    /// Indexes into `peers`, by name folded to lower case.
    by_name: HashTable<u32>,
    /// Indexes into `peers`, by URL host: apps using peergate as their HTTP proxy name the
    /// peer by host (several peers may share one, on different ports).
    by_host: HashTable<u32>,
    hasher: RandomState,
    /// The peers file this table was read from, when it holds every peer of the table.
    source: Option<PeersSource>,
}

/// A peers file as a table was read from it: its path and the SHA-256 of the bytes read. The
/// same bytes make the same table, so a reload that finds them again serves the table in force
/// instead of building a second one beside it (the peers of a large allowlist would be held
/// twice for the reload, and parsed again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeersSource {
    pub file: std::path::PathBuf,
    pub digest: crate::files::FileDigest,
}

impl std::fmt::Debug for PeerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTable")
            .field("peers", &self.peers.len())
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Collects peers for a [`PeerTable`], in order; the indexes are built by [`finish`](Self::finish).
/// Takes peers one by one, so that a load can hand each over as soon as it is read and drop it.
#[derive(Default)]
pub struct PeerTableBuilder {
    text: String,
    peers: Vec<PeerRec>,
    keys: Vec<KeyRec>,
    /// Every key offered, stored or not: the count the "too many" message gives.
    key_count: usize,
    /// The first peer that cannot be served, reported by `finish` (a load that reads the peers
    /// into a table succeeds, and building the snapshot fails, as it did from parsed peers).
    problem: Option<Problem>,
}

enum Problem {
    TooMany,
    Refused(String),
}

impl PeerTableBuilder {
    /// Room for `peers` peers with `keys` keys and `text` bytes of names and URLs, so that the
    /// vectors of a large allowlist are not regrown (and copied) while they fill.
    pub fn with_capacity(peers: usize, keys: usize, text: usize) -> Self {
        PeerTableBuilder {
            text: String::with_capacity(text),
            peers: Vec::with_capacity(peers),
            keys: Vec::with_capacity(keys),
            ..Self::default()
        }
    }

    /// Adds a peer; `allow` is its rules, when the caller can give them up rather than have
    /// them copied.
    fn add(&mut self, peer: &config::Peer, allow: Option<Allow>) {
        let index = self.index(self.peers.len());
        let primary = self.index(self.keys.len());
        for key in peer.keys() {
            self.key_count += 1;
            // Checked now so that header values made per request cannot fail later.
            if let Err(e) = header_value(key.key_id()) {
                self.refuse(Problem::Refused(e));
            }
            self.keys.push(KeyRec {
                raw: *key.raw(),
                short_id: key.short_id_bytes(),
                peer: index,
            });
        }
        if let Err(e) = header_value(&encode_name(&peer.name)) {
            self.refuse(Problem::Refused(e));
        }
        let url = peer.url.as_ref().map(|u| UrlRec {
            host: self.push_text(&u.host),
            base_path: self.push_text(&u.base_path),
            port: u.port,
            https: u.https,
        });
        let name = self.push_text(&peer.name);
        let allow = allow.unwrap_or_else(|| peer.allow.clone());
        self.peers.push(PeerRec {
            name,
            url,
            allow: (!allow.methods.is_empty() || !allow.paths.is_empty()).then(|| Box::new(allow)),
            primary,
        });
    }

    /// Adds a peer the caller keeps.
    pub fn add_ref(&mut self, peer: &config::Peer) {
        self.add(peer, None);
    }

    fn refuse(&mut self, problem: Problem) {
        self.problem.get_or_insert(problem);
    }

    fn index(&mut self, i: usize) -> u32 {
        u32::try_from(i).unwrap_or_else(|_| {
            self.refuse(Problem::TooMany);
            u32::MAX
        })
    }

    fn push_text(&mut self, s: &str) -> Span {
        let span = match (u32::try_from(self.text.len()), u32::try_from(s.len())) {
            (Ok(start), Ok(len)) => Span { start, len },
            _ => {
                self.refuse(Problem::TooMany);
                return Span { start: 0, len: 0 };
            }
        };
        self.text.push_str(s);
        span
    }

    /// The table with its indexes, or why these peers cannot be served.
    pub fn finish(self) -> Result<PeerTable, String> {
        let too_many = format!(
            "{} keys are more than an allowlist can hold",
            self.key_count
        );
        if u32::try_from(self.key_count).is_err() {
            return Err(too_many);
        }
        match self.problem {
            Some(Problem::TooMany) => return Err(too_many),
            Some(Problem::Refused(e)) => return Err(e),
            None => {}
        }
        let PeerTableBuilder {
            text, peers, keys, ..
        } = self;
        let hasher = RandomState::new();
        // Sized up front: no rehashing or regrowth while a 100 000-peer allowlist is indexed.
        let mut by_key_id = HashTable::with_capacity(keys.len());
        let mut by_short_id = HashTable::with_capacity(keys.len());
        let key_id_hash = |k: &KeyRec| hasher.hash_one(key_id_str(&k.key_id()));
        let short_id_hash = |k: &KeyRec| hasher.hash_one(k.short_id());
        for (i, key) in (0u32..).zip(&keys) {
            by_key_id.insert_unique(key_id_hash(key), i, |&j| rehash(&keys, j, key_id_hash));
            by_short_id.insert_unique(short_id_hash(key), i, |&j| rehash(&keys, j, short_id_hash));
        }
        let mut by_name = HashTable::with_capacity(peers.len());
        for (i, peer) in (0u32..).zip(&peers) {
            let folded = span_text(&text, peer.name).to_lowercase();
            by_name.insert_unique(hasher.hash_one(&folded), i, |&j| {
                let name = peers
                    .get(j as usize)
                    .map_or("", |p| span_text(&text, p.name));
                hasher.hash_one(name.to_lowercase())
            });
        }
        let mut by_host = HashTable::with_capacity(peers.len());
        for (i, peer) in (0u32..).zip(&peers) {
            if let Some(url) = peer.url {
                let host = span_text(&text, url.host);
                by_host.insert_unique(hasher.hash_one(host), i, |&j| {
                    let host = peers
                        .get(j as usize)
                        .and_then(|p| p.url)
                        .map_or("", |u| span_text(&text, u.host));
                    hasher.hash_one(host)
                });
            }
        }
        Ok(PeerTable {
            text,
            peers,
            keys,
            by_key_id,
            by_short_id,
            by_name,
            by_host,
            hasher,
            source: None,
        })
    }
}

impl config::PeerSink for PeerTableBuilder {
    fn push(&mut self, mut peer: config::Peer) {
        let allow = std::mem::take(&mut peer.allow);
        self.add(&peer, Some(allow));
    }

    fn reserve(&mut self, peers: usize) {
        self.peers.reserve(peers);
        // At least one key per peer.
        self.keys.reserve(peers);
    }
}

impl PeerTable {
    /// The table, recorded as holding exactly the peers of `source`.
    pub fn read_from(self, source: PeersSource) -> PeerTable {
        PeerTable {
            source: Some(source),
            ..self
        }
    }

    /// The peers file this table holds exactly, if it was read from one alone.
    pub fn source(&self) -> Option<&PeersSource> {
        self.source.as_ref()
    }

    /// Each peer's URL, for what a load warns about them.
    pub fn urls(&self) -> impl Iterator<Item = (&str, PeerUrl)> {
        self.peers.iter().filter_map(move |rec| {
            let peer = Peer { table: self, rec };
            Some((peer.name(), peer.url()?))
        })
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn text(&self, span: Span) -> &str {
        span_text(&self.text, span)
    }

    /// The name of the peer that has the key with this key id.
    pub fn name_of_key(&self, key_id: &str) -> Option<&str> {
        let (_, rec) = self.key_rec(key_id)?;
        Some(self.peer(rec.peer)?.name())
    }

    fn peer(&self, index: u32) -> Option<Peer<'_>> {
        self.peers
            .get(index as usize)
            .map(|rec| Peer { table: self, rec })
    }

    /// The key with this key id, and its index (which names its slot in the key cache).
    fn key_rec(&self, key_id: &str) -> Option<(u32, &KeyRec)> {
        if key_id.len() != KEY_ID_LEN {
            return None;
        }
        let found = *self.by_key_id.find(self.hasher.hash_one(key_id), |&i| {
            self.keys
                .get(i as usize)
                .is_some_and(|k| k.key_id() == key_id.as_bytes())
        })?;
        Some((found, self.keys.get(found as usize)?))
    }
}

/// A key [`Snapshot::find_key`] found by its full key id: its place in the snapshot it came
/// from, and the id it was found by.
#[derive(Clone, Copy, Debug)]
pub struct FoundKey {
    index: u32,
    key_id: [u8; KEY_ID_LEN],
}

/// Everything request handling needs that comes from the configuration.
pub struct Snapshot {
    /// Shared with the configuration it was built from, when that was loaded for a gateway.
    table: Arc<PeerTable>,
    decompressed: KeyCache,
    pub routes: Vec<Route>,
    pub policy: Policy,
    pub scheme: &'static str,
    pub identity_headers: IdentityHeaderNames,
    pub max_body: u64,
    /// `signatures.max_buffered`: read per request, so a reload changes it at once.
    pub max_buffered: u64,
    pub upstream: HostPort,
    pub accept_signature: HeaderValue,
    /// `accept_signature` for a request without a body (no `content-digest`).
    pub accept_signature_without_body: HeaderValue,
    /// The unsigned public documents (identity, key directory, welcome page) of this config.
    pub public_pages: crate::public_identity::PublicPages,
    /// Signs the app's requests to peers with this installation's key.
    pub signer: Signer,
}

/// A verified caller: the peer and the exact key that signed, with the identity header values
/// the app gets.
#[derive(Clone)]
pub struct Caller {
    pub short_id: ShortId,
    pub id_header: HeaderValue,
    pub name_header: HeaderValue,
    pub key_id_header: HeaderValue,
}

/// A short ID, by value: small enough to keep in a request's context for its log line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortId([u8; crate::identity::SHORT_ID_LEN]);

impl ShortId {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for ShortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// See [`Snapshot::changes_since`].
#[derive(Debug)]
pub struct PeerChanges {
    pub added: Listed,
    pub removed: Listed,
    /// The table in force was kept: its peers file holds the bytes it was read from.
    pub kept: bool,
}

/// How many peers, and the first few of them as `name (short ID)`.
#[derive(Debug)]
pub struct Listed {
    pub count: usize,
    pub first: Vec<String>,
}

impl Listed {
    /// Named in a log line; the rest are counted.
    const NAMED: usize = 5;

    fn peers_not_in(these: &Snapshot, other: &Snapshot) -> Listed {
        // The first 8 bytes of each key stand for it: keys are random, and a miscount here
        // would only leave a peer out of a log line.
        let fingerprint = |peer: &Peer<'_>| {
            peer.primary().map(|k| {
                let [a, b, c, d, e, f, g, h, ..] = k.raw;
                u64::from_le_bytes([a, b, c, d, e, f, g, h])
            })
        };
        let mut known: Vec<u64> = other.peers().filter_map(|p| fingerprint(&p)).collect();
        known.sort_unstable();
        let mut listed = Listed {
            count: 0,
            first: Vec::new(),
        };
        for peer in these.peers() {
            if fingerprint(&peer).is_some_and(|f| known.binary_search(&f).is_err()) {
                listed.count += 1;
                if listed.first.len() < Self::NAMED {
                    listed
                        .first
                        .push(format!("{} ({})", peer.name(), peer.short_id()));
                }
            }
        }
        listed
    }
}

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.count)?;
        if !self.first.is_empty() {
            write!(f, ": {}", self.first.join(", "))?;
        }
        if self.count > self.first.len() {
            write!(f, " and {} more", self.count - self.first.len())?;
        }
        Ok(())
    }
}

impl std::fmt::Display for PeerChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kept {
            return f.write_str("no peer added or removed (the peers file is unchanged)");
        }
        if self.added.count == 0 && self.removed.count == 0 {
            return f.write_str("no peer added or removed");
        }
        write!(f, "peers added {}; removed {}", self.added, self.removed)
    }
}

/// A peer of a snapshot, as the gateways read it.
#[derive(Clone, Copy)]
pub struct Peer<'a> {
    table: &'a PeerTable,
    rec: &'a PeerRec,
}

impl<'a> Peer<'a> {
    pub fn name(&self) -> &'a str {
        self.table.text(self.rec.name)
    }

    fn primary(&self) -> Option<&'a KeyRec> {
        self.table.keys.get(self.rec.primary as usize)
    }

    pub fn short_id(&self) -> ShortId {
        ShortId(self.primary().map_or([0u8; SHORT_ID_LEN], |k| k.short_id))
    }

    /// The key id of the peer's own (first) key, computed (SHA-256).
    pub fn key_id(&self) -> String {
        self.primary()
            .map(|k| key_id_str(&k.key_id()).to_string())
            .unwrap_or_default()
    }

    /// The full peer ID, computed (SHA-512): for listings, not for every request.
    pub fn peer_id(&self) -> String {
        self.primary()
            .map(|k| k.identity().peer_id())
            .unwrap_or_default()
    }

    pub fn url_host(&self) -> Option<(&'a str, u16)> {
        self.rec.url.map(|u| (self.table.text(u.host), u.port))
    }

    pub fn url(&self) -> Option<PeerUrl> {
        self.rec.url.map(|u| PeerUrl {
            https: u.https,
            host: self.table.text(u.host).to_string(),
            port: u.port,
            base_path: self.table.text(u.base_path).to_string(),
        })
    }

    pub fn allow(&self) -> &'a Allow {
        static ANYTHING: Allow = Allow {
            methods: Vec::new(),
            paths: Vec::new(),
        };
        self.rec.allow.as_deref().unwrap_or(&ANYTHING)
    }

    /// `X-Peer-Id` value: the short ID.
    pub fn id_header(&self) -> HeaderValue {
        header_value(self.short_id().as_str()).unwrap_or(HeaderValue::from_static(""))
    }

    /// `X-Peer-Name` value: percent-encoded UTF-8 where the name is not plain ASCII.
    pub fn name_header(&self) -> HeaderValue {
        header_value(&encode_name(self.name())).unwrap_or(HeaderValue::from_static(""))
    }
}

impl Snapshot {
    pub fn build(config: &Config) -> Result<Snapshot, String> {
        let table = match &config.peer_table {
            Some(table) => table.clone()?,
            None => {
                let list = &config.peers.0;
                let keys = list.iter().map(|p| 1 + p.other_keys.len()).sum();
                let text = list
                    .iter()
                    .map(|p| {
                        p.name.len()
                            + p.url
                                .as_ref()
                                .map_or(0, |u| u.host.len() + u.base_path.len())
                    })
                    .sum();
                let mut builder = PeerTableBuilder::with_capacity(list.len(), keys, text);
                for peer in list {
                    builder.add_ref(peer);
                }
                Arc::new(builder.finish()?)
            }
        };
        let decompressed = KeyCache::new(table.keys.len());

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
        let accept_signature_without_body = header_value(&policy.accept_signature_without_body())?;
        let h = &config.identity_headers;
        let identity_headers = IdentityHeaderNames {
            id: h.id.0.clone(),
            name: h.name.0.clone(),
            key_id: h.key_id.0.clone(),
            folded: {
                let mut folded: Vec<String> = h
                    .all()
                    .into_iter()
                    .map(config::IdentityHeaderName::folded)
                    .collect();
                for default in config::IdentityHeaders::default().all() {
                    let default = default.folded();
                    if !folded.contains(&default) {
                        folded.push(default);
                    }
                }
                folded
            },
        };
        Ok(Snapshot {
            table,
            decompressed,
            routes: config.routes.clone(),
            policy,
            scheme: config.identity.scheme.as_str(),
            identity_headers,
            max_body: s.max_body.0,
            max_buffered: s.max_buffered.0,
            upstream: config.app.upstream.clone(),
            accept_signature,
            accept_signature_without_body,
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

    pub fn peer_count(&self) -> usize {
        self.table.len()
    }

    /// The peers this snapshot serves, for a reload to keep when they have not changed.
    pub fn peer_table(&self) -> Arc<PeerTable> {
        self.table.clone()
    }

    pub fn peers(&self) -> impl Iterator<Item = Peer<'_>> {
        let table = &*self.table;
        table.peers.iter().map(move |rec| Peer { table, rec })
    }

    /// The peers this snapshot has and `before` had not, and those `before` had and this has
    /// not, told apart by their own key: a peer renamed or given another URL is in both. For
    /// the reload's log line; 8 bytes per peer while it runs.
    pub fn changes_since(&self, before: &Snapshot) -> PeerChanges {
        if Arc::ptr_eq(&self.table, &before.table) {
            let none = || Listed {
                count: 0,
                first: Vec::new(),
            };
            return PeerChanges {
                added: none(),
                removed: none(),
                kept: true,
            };
        }
        PeerChanges {
            added: Listed::peers_not_in(self, before),
            removed: Listed::peers_not_in(before, self),
            kept: false,
        }
    }

    /// The verifying key for a `keyid`: the full key id, never a short ID or a name.
    pub fn key(&self, key_id: &str) -> Option<VerifyingKey> {
        self.find_key(key_id).map(|(_, key)| key)
    }

    /// [`key`](Self::key), with a handle that finds the key's peer again without a second
    /// lookup (which costs a hash probe and a SHA-256 of the candidate's key id).
    pub fn find_key(&self, key_id: &str) -> Option<(FoundKey, VerifyingKey)> {
        let (found, rec) = self.locate(key_id)?;
        let key = self.decompressed.get(found.index, &rec.raw)?;
        Some((found, key))
    }

    /// The handle and record of the key with this key id, without decompressing the key.
    fn locate(&self, key_id: &str) -> Option<(FoundKey, &KeyRec)> {
        let (index, rec) = self.table.key_rec(key_id)?;
        let mut id = [0u8; KEY_ID_LEN];
        // key_rec matched a key id of exactly this length.
        id.copy_from_slice(key_id.as_bytes().get(..KEY_ID_LEN)?);
        Some((FoundKey { index, key_id: id }, rec))
    }

    /// The 32 bytes of the key with this key id, for a reload to skip checking it again.
    pub fn key_bytes(&self, key_id: &str) -> Option<[u8; 32]> {
        self.table.key_rec(key_id).map(|(_, k)| k.raw)
    }

    pub fn caller(&self, key_id: &str) -> Option<(Caller, Peer<'_>)> {
        let (found, _) = self.locate(key_id)?;
        self.caller_of(&found, key_id)
    }

    /// The caller whose key [`find_key`](Self::find_key) found, if `key_id` is the id it was
    /// found by (the one whose signature verified); `None` otherwise.
    pub fn caller_of(&self, found: &FoundKey, key_id: &str) -> Option<(Caller, Peer<'_>)> {
        if found.key_id.as_slice() != key_id.as_bytes() {
            return None;
        }
        let key = self.table.keys.get(found.index as usize)?;
        let peer = self.table.peer(key.peer)?;
        let caller = Caller {
            short_id: peer.short_id(),
            id_header: peer.id_header(),
            name_header: peer.name_header(),
            // The stored key's id: the lookup matched it byte for byte.
            key_id_header: header_value(key_id).ok()?,
        };
        Some((caller, peer))
    }

    /// The peer whose URL has this host (and this port, when one is given), for apps that use
    /// peergate as their HTTP proxy. Peers that share a host are told apart by the base path
    /// of their URLs, which the app writes in the URL (`path`): the longest that `path` starts
    /// with, at a segment boundary. `Err` when that leaves several, or none of several.
    pub fn peer_by_host(
        &self,
        host: &str,
        port: Option<u16>,
        path: &str,
    ) -> Result<Option<Peer<'_>>, String> {
        let table = &*self.table;
        // Peer URL hosts are stored in this form.
        let host = crate::config::url_host_key(host);
        let matching = || {
            table
                .by_host
                .iter_hash(table.hasher.hash_one(&*host))
                .filter_map(|&i| table.peer(i))
                .filter(|p| {
                    p.url_host()
                        .is_some_and(|(h, p)| h == host && port.is_none_or(|port| port == p))
                })
        };
        let mut found = matching();
        let Some(first) = found.next() else {
            return Ok(None);
        };
        if found.next().is_none() {
            return Ok(Some(first));
        }
        // Several: rare, so the rest may allocate. Paths compare in their equivalent forms
        // (RFC 3986 6.2.2): `/%61lice/x` is under `/alice`, as the peer will read it.
        let path = crate::request_path::equivalent_form(path);
        let base_of = |p: &Peer<'_>| {
            crate::request_path::equivalent_form(p.rec.url.map_or("", |u| table.text(u.base_path)))
                .into_owned()
        };
        let under = |base: &str| {
            path.strip_prefix(base)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
        };
        let candidates: Vec<(Peer<'_>, usize)> = matching()
            .filter_map(|p| {
                let base = base_of(&p);
                under(&base).then_some((p, base.len()))
            })
            .collect();
        let longest = candidates.iter().map(|&(_, len)| len).max();
        let chosen: Vec<Peer<'_>> = candidates
            .into_iter()
            .filter(|&(_, len)| Some(len) == longest)
            .map(|(p, _)| p)
            .collect();
        let one_port = {
            let mut ports = matching().filter_map(|p| p.url_host().map(|(_, port)| port));
            let first = ports.next();
            ports.all(|p| Some(p) == first)
        };
        let advice = if one_port {
            "call the one you mean by name: /peers/<name>/…"
        } else {
            "give the port of the one you mean, or call it by name: /peers/<name>/…"
        };
        match chosen.as_slice() {
            [one] => Ok(Some(*one)),
            [] => Err(format!(
                "several peers are reached at {host}, and the path {path:?} is under none of \
                 their URLs' base paths; {advice}"
            )),
            _ => Err(format!(
                "several peers are reached at {host} with the same base path; {advice}"
            )),
        }
    }

    /// A peer by short ID or name, for apps addressing peers (`/peers/<short ID or name>/`).
    pub fn peer_by_handle(&self, handle: &str) -> Option<Peer<'_>> {
        let table = &*self.table;
        // Short IDs are lower case; a person may type one in capitals, as names match.
        let folded = handle.to_lowercase();
        let by_short = table
            .by_short_id
            .find(table.hasher.hash_one(folded.as_str()), |&i| {
                table
                    .keys
                    .get(i as usize)
                    .is_some_and(|k| k.short_id() == folded)
            })
            .and_then(|&i| table.keys.get(i as usize))
            .and_then(|k| table.peer(k.peer));
        if by_short.is_some() {
            return by_short;
        }
        let found = table.by_name.find(table.hasher.hash_one(&folded), |&i| {
            table
                .peers
                .get(i as usize)
                .is_some_and(|p| table.text(p.name).to_lowercase() == folded)
        })?;
        table.peer(*found)
    }
}

fn span_text(text: &str, span: Span) -> &str {
    let start = span.start as usize;
    text.get(start..start + span.len as usize)
        .unwrap_or_default()
}

/// The hash of an entry already in a table, for when the table grows (it is sized up front,
/// so this is not expected to run).
fn rehash(keys: &[KeyRec], index: u32, hash: impl Fn(&KeyRec) -> u64) -> u64 {
    keys.get(index as usize).map_or(0, hash)
}

/// Decompressed keys of the peers that call. A curve point takes 192 bytes and 4 µs to
/// decompress; keeping one for each of 100 000 peers would cost 19 MiB for keys that mostly
/// never sign a request, and decompressing on every request 4 µs each. A slot per key up to
/// [`KeyCache::MAX_SLOTS`], shared beyond that: with a small allowlist every key stays
/// decompressed after its first request.
struct KeyCache {
    slots: Box<[RwLock<Slot>]>,
}

/// The key index a slot holds the decompressed key of, if any.
type Slot = Option<(u32, VerifyingKey)>;

impl KeyCache {
    const MAX_SLOTS: usize = 4096;

    fn new(keys: usize) -> Self {
        let slots = keys.clamp(1, Self::MAX_SLOTS);
        KeyCache {
            slots: (0..slots).map(|_| RwLock::new(None)).collect(),
        }
    }

    fn get(&self, index: u32, raw: &[u8; 32]) -> Option<VerifyingKey> {
        let slot = self.slots.get(index as usize % self.slots.len().max(1))?;
        if let Ok(held) = slot.read() {
            if let Some((i, key)) = *held {
                if i == index {
                    return Some(key);
                }
            }
        }
        let key = VerifyingKey::from_bytes(raw).ok()?;
        if let Ok(mut held) = slot.write() {
            *held = Some((index, key));
        }
        Some(key)
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

/// "1 peer", "2 peers": how logs and `/readyz` count the allowlist.
pub fn peers_counted(n: usize) -> String {
    if n == 1 {
        "1 peer".to_string()
    } else {
        format!("{n} peers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::identity::Identity;

    /// A snapshot of a configuration with `n` generated peers (`p0`, `p1`, …), the first with a
    /// second key, the second with a non-ASCII name and rules; returns the peers' keys too.
    fn snapshot(n: usize, extra: &str) -> (Snapshot, Vec<Identity>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("me.pem"),
            Identity::generate().to_pkcs8_pem().unwrap(),
        )
        .unwrap();
        let ids = Identity::generate_distinct(n + 1);
        let mut peers = String::from("peers:\n");
        for (i, id) in ids.iter().take(n).enumerate() {
            let name = if i == 1 {
                "Zoë's NAS".to_string()
            } else {
                format!("p{i}")
            };
            peers.push_str(&format!(
                "  - name: \"{name}\"\n    public_keys: [\"{}\"{}]\n    url: https://p{i}.example.org:{}/base\n",
                id.public().spki_base64(),
                if i == 0 {
                    format!(", \"{}\"", ids[n].public().spki_base64())
                } else {
                    String::new()
                },
                8000 + i
            ));
            if i == 1 {
                peers.push_str("    allow: { methods: [GET], paths: [\"/api/*\"] }\n");
            }
        }
        peers.push_str(extra);
        std::fs::write(dir.path().join("peers.yaml"), peers).unwrap();
        std::fs::write(
            dir.path().join("peergate.yaml"),
            "identity: { key_file: me.pem, hosts: [me.example.org] }\napp: { upstream: \"127.0.0.1:9\" }\npeers_file: peers.yaml\n",
        )
        .unwrap();
        let loaded = config::load(&dir.path().join("peergate.yaml")).unwrap();
        (Snapshot::build(&loaded.config).unwrap(), ids)
    }

    /// A gateway's load puts the peers straight into the table, through the parallel path for
    /// a large file; it must serve exactly what a load into a list serves once built.
    #[test]
    fn a_gateway_load_serves_what_a_listing_load_lists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("me.pem"),
            Identity::generate().to_pkcs8_pem().unwrap(),
        )
        .unwrap();
        let ids = Identity::generate_distinct(700);
        let spki = |i: usize| ids[i].public().spki_base64();
        let mut peers = String::from("peers:\n");
        for i in 1..600 {
            let name = if i % 7 == 0 {
                format!("Zoë {i}")
            } else {
                format!("p{i}")
            };
            peers.push_str(&format!(
                "  - name: {name}\n    public_key: \"{}\"\n",
                spki(i)
            ));
            match i % 5 {
                0 => peers.push_str(&format!("    url: http://p{i}.example.org:8{i:03}/base\n")),
                1 => peers.push_str(&format!("    url: https://shared.example.org:9{i:03}\n")),
                2 => {}
                _ => peers.push_str(&format!("    url: https://p{i}.example.org\n")),
            }
            if i % 11 == 0 {
                peers.push_str("    allow: { methods: [GET], paths: [\"/api/*\"] }\n");
            }
            if i % 13 == 0 {
                peers.push_str(&format!("    public_keys: [\"{}\"]\n", spki(600 + i / 13)));
            }
        }
        std::fs::write(dir.path().join("peers.yaml"), peers).unwrap();
        let path = dir.path().join("peergate.yaml");
        std::fs::write(
            &path,
            format!(
                "identity: {{ key_file: me.pem, hosts: [me.example.org] }}\napp: {{ upstream: \"127.0.0.1:9\" }}\npeers_file: peers.yaml\npeers:\n  - name: inline\n    public_key: \"{}\"\n    url: http://inline.example.org\n",
                spki(0)
            ),
        )
        .unwrap();

        let listed = config::load(&path).unwrap();
        let served = config::load_serving(&path, None).unwrap();
        assert!(served.config.peers.0.is_empty());
        assert_eq!(served.config.peer_count(), 600);
        assert_eq!(listed.config.peer_count(), 600);
        assert_eq!(served.warnings, listed.warnings);
        let plain_http = served
            .warnings
            .iter()
            .filter(|w| w.contains("plain http"))
            .count();
        assert_eq!(plain_http, 1 + 599 / 5);
        let (a, b) = (
            Snapshot::build(&listed.config).unwrap(),
            Snapshot::build(&served.config).unwrap(),
        );
        let table = served.config.peer_table.as_ref().unwrap().as_ref().unwrap();
        assert!(
            Arc::ptr_eq(&b.table, table),
            "the snapshot shares the table"
        );
        let view = |s: &Snapshot| -> Vec<String> {
            s.peers()
                .map(|p| {
                    format!(
                        "{} {} {} {:?} {:?}",
                        p.name(),
                        p.short_id(),
                        p.key_id(),
                        p.url(),
                        p.allow()
                    )
                })
                .collect()
        };
        assert_eq!(view(&a), view(&b));
        assert_eq!(view(&b).len(), 600);
        for id in &ids {
            let public = id.public();
            let caller = |s: &Snapshot| {
                s.caller(public.key_id())
                    .map(|(c, p)| (c.name_header, p.name().to_string()))
            };
            assert_eq!(caller(&a), caller(&b));
            let handle = |s: &Snapshot| {
                s.peer_by_handle(public.short_id())
                    .map(|p| p.name().to_string())
            };
            assert_eq!(handle(&a), handle(&b));
        }
        assert!(b.peer_by_handle("ZOË 7").is_some());
        assert_eq!(
            b.peer_by_host("shared.example.org", Some(9001), "/")
                .unwrap()
                .unwrap()
                .name(),
            "p1"
        );
        assert!(b.peer_by_host("shared.example.org", None, "/").is_err());
    }

    /// In proxy mode the app writes the peer's host itself; an IPv6 address is the same
    /// address however it is spelled, in the peers file or in the app's URL.
    #[test]
    fn an_ipv6_peer_is_found_by_any_spelling_of_its_address() {
        let six = Identity::generate();
        let extra = format!(
            "  - name: six\n    public_key: \"{}\"\n    url: http://[0:0:0:0:0:0:0:1]:18794/v6\n",
            six.public().spki_base64()
        );
        let (snap, _) = snapshot(2, &extra);
        for host in ["[::1]", "::1", "[0:0:0:0:0:0:0:1]", "[0000::0001]"] {
            let found = snap.peer_by_host(host, Some(18794), "/v6/x").unwrap();
            assert_eq!(
                found.map(|p| p.name().to_string()).as_deref(),
                Some("six"),
                "{host}"
            );
        }
        assert!(snap
            .peer_by_host("[::2]", Some(18794), "/v6/x")
            .unwrap()
            .is_none());
        // Sent as the canonical text.
        let url = snap.peer_by_handle("six").unwrap().url().unwrap();
        assert_eq!(url.authority(), "[::1]:18794");
        assert_eq!(config::url_host_key("Bob.Example"), "bob.example");
        assert_eq!(
            config::url_host_key("[::FFFF:127.0.0.1]"),
            "::ffff:127.0.0.1"
        );
    }

    #[test]
    fn keys_are_found_by_full_key_id_only() {
        let (snap, ids) = snapshot(3, "");
        for (i, id) in ids.iter().enumerate() {
            let public = id.public();
            let key = snap.key(public.key_id()).unwrap();
            assert_eq!(key.as_bytes(), public.raw(), "key {i}");
            // Asked again: the same key, now from the cache.
            assert_eq!(snap.key(public.key_id()).unwrap(), key);
            assert_eq!(snap.key_bytes(public.key_id()), Some(*public.raw()));
            // Neither a short ID, a name, nor a prefix of the key id authorizes.
            assert!(snap.key(public.short_id()).is_none());
            assert!(snap.key(&public.key_id()[..42]).is_none());
        }
        assert!(snap.key("p0").is_none());
        assert!(snap.key("").is_none());
    }

    #[test]
    fn a_found_key_names_its_caller_only_for_the_id_it_was_found_by() {
        let (snap, ids) = snapshot(3, "");
        let (a, b) = (ids[1].public().key_id(), ids[2].public().key_id());
        let (found, key) = snap.find_key(a).unwrap();
        assert_eq!(Some(key), snap.key(a));
        let (caller, peer) = snap.caller_of(&found, a).unwrap();
        let (expected, expected_peer) = snap.caller(a).unwrap();
        assert_eq!(caller.short_id.as_str(), expected.short_id.as_str());
        assert_eq!(caller.key_id_header, expected.key_id_header);
        assert_eq!(peer.name(), expected_peer.name());
        // Another key's id, even one on the allowlist, gets nothing from this handle.
        assert!(snap.caller_of(&found, b).is_none());
        assert!(snap.caller_of(&found, &a[..42]).is_none());
        assert!(snap.find_key(&a[..42]).is_none());
    }

    #[test]
    fn a_second_key_calls_as_its_peer() {
        let (snap, ids) = snapshot(3, "");
        let (caller, peer) = snap.caller(ids[3].public().key_id()).unwrap();
        assert_eq!(peer.name(), "p0");
        assert_eq!(caller.short_id.as_str(), ids[0].public().short_id());
        assert_eq!(caller.id_header, ids[0].public().short_id());
        assert_eq!(caller.key_id_header, ids[3].public().key_id());
        assert_eq!(caller.name_header, "p0");
        // Its own short ID is a handle for the same peer.
        let by_second = snap.peer_by_handle(ids[3].public().short_id()).unwrap();
        assert_eq!(by_second.name(), "p0");
        assert_eq!(by_second.key_id(), ids[0].public().key_id());
    }

    #[test]
    fn peers_keep_their_names_urls_and_rules() {
        let (snap, ids) = snapshot(3, "");
        assert_eq!(snap.peer_count(), 3);
        let zoe = snap.peer_by_handle("zoË's nas").unwrap();
        assert_eq!(zoe.name(), "Zoë's NAS");
        assert_eq!(zoe.short_id().as_str(), ids[1].public().short_id());
        assert_eq!(zoe.peer_id(), ids[1].public().peer_id());
        assert_eq!(zoe.name_header(), "Zo%C3%AB's NAS");
        let url = zoe.url().unwrap();
        assert_eq!(url.to_string(), "https://p1.example.org:8001/base");
        assert_eq!(zoe.url_host(), Some(("p1.example.org", 8001)));
        assert!(zoe.allow().permits(&http::Method::GET, "/api/x"));
        assert!(!zoe.allow().permits(&http::Method::POST, "/api/x"));
        assert!(!zoe.allow().permits(&http::Method::GET, "/other"));
        let p2 = snap.peer_by_handle(ids[2].public().short_id()).unwrap();
        assert!(p2.allow().permits(&http::Method::DELETE, "/anything"));
        // A short ID typed in capitals finds its peer, as a name does.
        let shouted = ids[2].public().short_id().to_uppercase();
        assert_eq!(snap.peer_by_handle(&shouted).unwrap().name(), "p2");
        assert_eq!(
            snap.peer_by_host("P2.example.org", None, "/")
                .unwrap()
                .unwrap()
                .name(),
            "p2"
        );
        assert!(snap
            .peer_by_host("p2.example.org", Some(1), "/")
            .unwrap()
            .is_none());
        assert!(snap.peer_by_handle("nobody").is_none());
        assert!(snap
            .peer_by_handle(&ids[2].public().key_id()[..6])
            .is_none());
        let names: Vec<&str> = snap.peers().map(|p| p.name()).collect();
        assert_eq!(names, ["p0", "Zoë's NAS", "p2"]);
    }

    #[test]
    fn a_host_shared_by_two_peers_needs_the_port() {
        let (twin, triplet) = (Identity::generate(), Identity::generate());
        let extra = format!(
            "  - name: twin\n    public_key: \"{}\"\n    url: https://P2.Example.org:9999\n  - name: triplet\n    public_key: \"{}\"\n    url: https://p2.example.org:7777/base\n",
            twin.public().spki_base64(),
            triplet.public().spki_base64()
        );
        let (snap, _) = snapshot(3, &extra);
        // p2 is at https://p2.example.org:8002/base, triplet at port 7777 with the same base
        // path, twin at 9999 without one.
        let name = |port, path| {
            snap.peer_by_host("[P2.example.ORG]", port, path)
                .map(|p| p.map(|p| p.name().to_string()))
        };
        let err = name(None, "/base/x").err().unwrap();
        assert!(
            err.contains("same base path") && err.contains("give the port"),
            "{err}"
        );
        assert_eq!(name(Some(8002), "/base/x").unwrap().as_deref(), Some("p2"));
        assert_eq!(
            name(Some(7777), "/base/x").unwrap().as_deref(),
            Some("triplet")
        );
        assert_eq!(
            name(Some(9999), "/base/x").unwrap().as_deref(),
            Some("twin")
        );
        // Only twin's URL has `/x` under it.
        assert_eq!(name(None, "/x").unwrap().as_deref(), Some("twin"));
        assert_eq!(name(Some(1), "/x").unwrap(), None);
        assert_eq!(
            snap.peer_by_host("p0.example.org", None, "/")
                .unwrap()
                .unwrap()
                .name(),
            "p0"
        );
    }

    /// Two installations behind one reverse proxy, at one host and port, told apart by the
    /// base paths of their URLs.
    #[test]
    fn peers_on_one_host_and_port_are_told_apart_by_base_path() {
        let (a, b, c, d) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let entry = |name: &str, id: &Identity, url: &str| {
            format!(
                "  - name: {name}\n    public_key: \"{}\"\n    url: {url}\n",
                id.public().spki_base64()
            )
        };
        let extra = [
            entry("alice", &a, "https://hub.example.org/alice"),
            entry("alicia", &b, "https://hub.example.org/alice/ia"),
            entry("root", &c, "https://hub.example.org"),
        ]
        .concat();
        let (snap, _) = snapshot(1, &extra);
        let at = |path: &str| {
            snap.peer_by_host("hub.example.org", Some(443), path)
                .map(|p| p.map(|p| p.name().to_string()))
        };
        assert_eq!(at("/alice/x").unwrap().as_deref(), Some("alice"));
        assert_eq!(at("/alice").unwrap().as_deref(), Some("alice"));
        assert_eq!(at("/alice?q=1").unwrap().as_deref(), Some("alice"));
        assert_eq!(at("/alice/ia/x").unwrap().as_deref(), Some("alicia"));
        // Escaped unreserved characters are the same path to the peer.
        assert_eq!(at("/%61lice/x").unwrap().as_deref(), Some("alice"));
        assert_eq!(at("/alice/%69a").unwrap().as_deref(), Some("alicia"));
        assert_eq!(at("/alice%2Fia").unwrap().as_deref(), Some("root"));
        // A segment boundary: `/aliceX` is not under `/alice`.
        assert_eq!(at("/aliceX").unwrap().as_deref(), Some("root"));
        assert_eq!(at("/other").unwrap().as_deref(), Some("root"));

        // Two peers with one URL: the app must name the one it means.
        let extra = [
            entry("one", &a, "https://hub.example.org/same"),
            entry("two", &d, "https://hub.example.org/same/"),
        ]
        .concat();
        let (snap, _) = snapshot(1, &extra);
        let err = snap
            .peer_by_host("hub.example.org", None, "/same/x")
            .err()
            .unwrap();
        assert!(
            err.contains("same base path") && err.contains("by name"),
            "{err}"
        );
        assert!(!err.contains("port"), "{err}");
        let err = snap
            .peer_by_host("hub.example.org", None, "/x")
            .err()
            .unwrap();
        assert!(err.contains("under none"), "{err}");
    }

    #[test]
    fn keys_sharing_a_cache_slot_stay_apart() {
        // More keys than slots: key i and key i + MAX_SLOTS share a slot.
        let n = KeyCache::MAX_SLOTS + 2;
        let cache = KeyCache::new(n);
        let raws: Vec<[u8; 32]> = (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                ed25519_dalek::SigningKey::from_bytes(&seed)
                    .verifying_key()
                    .to_bytes()
            })
            .collect();
        for round in 0..2 {
            for (i, raw) in [0, KeyCache::MAX_SLOTS, 1, KeyCache::MAX_SLOTS + 1, 0]
                .into_iter()
                .map(|i| (i, &raws[i]))
            {
                let key = cache.get(i as u32, raw).unwrap();
                assert_eq!(key.as_bytes(), raw, "round {round}, key {i}");
            }
        }
        // Bytes that are not a point give no key, and do not take the slot.
        let bad = (0u8..=255)
            .map(|b| {
                let mut raw = [0u8; 32];
                raw[0] = b;
                raw
            })
            .find(|raw| VerifyingKey::from_bytes(raw).is_err())
            .unwrap();
        assert!(cache.get(7, &bad).is_none());
        assert_eq!(cache.get(7, &raws[7]).unwrap().as_bytes(), &raws[7]);
    }

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
            folded: vec![
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
            "X.Peer.Id",
            "x~peer~name",
            "x!peer#key$id",
        ] {
            assert!(names.matches(spoof), "{spoof}");
        }
        for other in [
            "x-peer-idx",
            "x-peer",
            "x-peer-id-",
            "x-peer-id.",
            "xpeerid",
            "host",
        ] {
            assert!(!names.matches(other), "{other}");
        }
    }
}
