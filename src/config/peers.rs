//! The allowlist entries: who our peers are, their keys, where to reach them, what they may do.
//!
//! A peers file can list 100 000 peers; [`read_file`] loads such a file in parallel (see
//! [`fast`]), with exactly the outcome of reading it whole, which it falls back to whenever the
//! file is not of the plain shape the fast path understands, or does not validate.

use std::fmt;
use std::path::Path;

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
            let key = context::parse_key(s).map_err(|e| e.to_string())?;
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

/// Reads the peers file at `path`: through [`fast::parse`] when it can, else (and for every
/// error, so that errors read exactly the same) as one YAML document, like the config file.
/// It must be the last file a load reads: the fast path checks its entries against the peers
/// read before it, but does not record its own for files read after.
pub(super) fn read_file(
    path: &Path,
    scope: &context::LoadScope,
) -> Result<PeersFile, super::ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| super::ConfigError::plain(path, format!("cannot read: {e}")))?;
    if text.trim().is_empty() {
        return Err(super::ConfigError::plain(path, "the file is empty"));
    }
    scope.reading(path);
    if let Some(peers) = fast::parse(&text) {
        return Ok(PeersFile { peers });
    }
    serde_yaml::from_str(&text).map_err(|e| super::ConfigError::from_yaml(path, &e))
}

/// Loading a large peers file on all cores.
///
/// Reading a file of 100 000 peers as one YAML document takes seconds and hundreds of MiB:
/// serde_yaml holds every event of the document in memory before deserializing, and each key
/// is parsed (an Ed25519 point decompression, the weak-key check, a SHA-256 and a SHA-512) one
/// after the other. When the file has the plain shape people and `peergate peer add` write
/// (`peers:` then a block list, one item per `- ` at one indentation), its items are cut apart
/// as text, and slices of whole items are deserialized on several threads, with the same
/// `Deserialize` code and so the same checks per entry. The checks across entries (one key,
/// one short ID, one name per peer; no name equal to a short ID), which the one-document path
/// makes through [`context`] as it goes, are made afterwards over the whole list, against the
/// peers read before too.
///
/// Whatever this path does not understand or does not accept makes [`parse`] return `None`,
/// and the file is then read as one document, which gives the very answer it always gave: the
/// same peers, or the same error at the same line and column. Cutting never changes what an
/// item means: a line at the items' indentation that starts with `- ` cannot be inside an
/// item (block scalars and continuation lines are indented further), and a cut that did fall
/// inside something (a quoted string, a flow list) leaves a slice that does not parse, which
/// falls back. An alias to an anchor in another slice does not parse either.
pub(super) mod fast {
    use std::ops::Range;

    use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};

    use super::{context, Peer, PeerList};

    /// Files with fewer items are read whole: there is nothing to gain.
    const MIN_ITEMS: usize = 512;
    /// Items per slice handed to a thread.
    const SLICE: usize = 256;
    /// Most threads used.
    const MAX_THREADS: usize = 8;

    /// The peers of `text`, or `None` to read it as one document.
    pub fn parse(text: &str) -> Option<PeerList> {
        let items = item_spans(text)?;
        if items.len() < MIN_ITEMS {
            return None;
        }
        let slices: Vec<(&str, usize)> = items
            .chunks(SLICE)
            .filter_map(|c| Some((text.get(c.first()?.start..c.last()?.end)?, c.len())))
            .collect();
        let known = context::known_keys();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS)
            .min(slices.len());
        // Slices go to threads round-robin; results come back in file order.
        let parsed: Vec<Option<Vec<Vec<Peer>>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let mine: Vec<(&str, usize)> =
                        slices.iter().skip(t).step_by(threads).copied().collect();
                    // Worker threads have no load scope: `context`'s cross-entry checks are
                    // no-ops there, and are made below instead.
                    let known = known.clone();
                    scope.spawn(move || {
                        let _reuse = context::ReuseKeys::install(known);
                        mine.into_iter()
                            .map(|(slice, n)| {
                                let de = serde_yaml::Deserializer::from_str(slice);
                                Items(n).deserialize(de).ok()
                            })
                            .collect::<Option<Vec<_>>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().ok().flatten())
                .collect()
        });
        let mut per_thread: Vec<std::vec::IntoIter<Vec<Peer>>> = parsed
            .into_iter()
            .map(|p| p.map(Vec::into_iter))
            .collect::<Option<_>>()?;
        let mut peers = Vec::with_capacity(items.len());
        for i in 0..slices.len() {
            peers.append(&mut per_thread.get_mut(i % threads)?.next()?);
        }
        if peers.len() != items.len() || !unique(&peers) {
            return None;
        }
        Some(PeerList(peers))
    }

    /// A slice's list of peers, its `Vec` allocated once for the items it is known to hold.
    struct Items(usize);

    impl<'de> DeserializeSeed<'de> for Items {
        type Value = Vec<Peer>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Peer>, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Items {
        type Value = Vec<Peer>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of peers")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Peer>, A::Error> {
            let mut peers = Vec::with_capacity(self.0);
            while let Some(peer) = seq.next_element()? {
                peers.push(peer);
            }
            Ok(peers)
        }
    }

    /// Where each item of the top-level `peers:` block list starts and ends, or `None` when
    /// the file is not that simple: only `peers:` at the top level, a block list under it,
    /// spaces for indentation, `\n` line ends, nothing but comments outside the items.
    pub fn item_spans(text: &str) -> Option<Vec<Range<usize>>> {
        if text.contains(['\t', '\r', '\u{feff}']) {
            return None;
        }
        let mut spans = Vec::new();
        let mut header = false;
        let mut indent: Option<usize> = None;
        let mut start: Option<usize> = None;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let at = offset;
            offset += line.len();
            let content = line.trim_end_matches('\n');
            let body = content.trim_start_matches(' ');
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            if !header {
                let rest = content.strip_prefix("peers:")?;
                let rest = rest.trim_start_matches(' ');
                if !(rest.is_empty() || rest.starts_with('#')) || content.len() != body.len() {
                    return None;
                }
                header = true;
                continue;
            }
            let depth = content.len() - body.len();
            let item = body == "-" || body.starts_with("- ");
            match indent {
                None if item => indent = Some(depth),
                None => return None,
                Some(k) if depth > k => continue,
                Some(k) if depth == k && item => {}
                Some(_) => return None,
            }
            if let Some(s) = start.replace(at) {
                spans.push(s..at);
            }
        }
        if let Some(s) = start {
            spans.push(s..text.len());
        }
        header.then_some(spans)
    }

    /// Whether the peers pass the checks across entries that [`context`] makes when a file is
    /// read as one document: no key (by key id) and no short ID twice, no name twice
    /// (case-insensitively), no name equal to a short ID, among them and against the peers
    /// read before.
    fn unique(peers: &[Peer]) -> bool {
        let mut key_ids: Vec<&str> = Vec::with_capacity(peers.len());
        let mut short_ids: Vec<&str> = Vec::with_capacity(peers.len());
        let mut names: Vec<String> = Vec::with_capacity(peers.len());
        for peer in peers {
            for key in peer.keys() {
                key_ids.push(key.key_id());
                short_ids.push(key.short_id());
            }
            names.push(peer.name.to_lowercase());
        }
        if key_ids.iter().any(|k| context::key_claimed(k))
            || short_ids
                .iter()
                .any(|s| context::short_id_claimed(s) || context::name_claimed(s))
            || names
                .iter()
                .any(|n| context::name_claimed(n) || context::short_id_claimed(n))
        {
            return false;
        }
        key_ids.sort_unstable();
        short_ids.sort_unstable();
        names.sort_unstable();
        let distinct = |v: &[&str]| v.windows(2).all(|w| w.first() != w.get(1));
        if !distinct(&key_ids) || !distinct(&short_ids) {
            return false;
        }
        if names.windows(2).any(|w| w.first() == w.get(1)) {
            return false;
        }
        // No name equal to a short ID: both lists are sorted, walk them together.
        let (mut i, mut j) = (0, 0);
        while let (Some(s), Some(n)) = (short_ids.get(i), names.get(j)) {
            match (*s).cmp(n.as_str()) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::identity::PublicIdentity;

    /// A public key from a seed, with its short ID.
    fn key(seed: u64) -> PublicIdentity {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        PublicIdentity::new(ed25519_dalek::SigningKey::from_bytes(&bytes).verifying_key())
    }

    /// `n` peers, named `p<i>`, with distinct short IDs, as `peer add` writes them.
    fn big_file(n: usize) -> String {
        let mut text = String::from("# the allowlist\npeers:\n");
        let mut seen = std::collections::HashSet::new();
        let mut seed = 0;
        for i in 0..n {
            let k = loop {
                seed += 1;
                let k = key(seed);
                if seen.insert(k.short_id().to_string()) {
                    break k;
                }
            };
            text.push_str(&format!(
                "  - name: p{i}\n    public_key: \"{}\"\n    url: https://p{i}.example.org:8443/base\n",
                k.spki_base64()
            ));
            if i % 100 == 7 {
                text.push_str("    allow: { methods: [GET, POST], paths: [\"/api/*\"] }\n\n  # a comment between items\n");
            }
        }
        text
    }

    fn read(text: &str) -> Result<Vec<Peer>, super::super::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.yaml");
        std::fs::write(&path, text).unwrap();
        let scope = context::LoadScope::begin();
        read_file(&path, &scope).map(|f| f.peers.0)
    }

    /// The same file read as one document, the way every file was read before the fast path.
    fn read_whole(text: &str) -> Result<Vec<Peer>, String> {
        let scope = context::LoadScope::begin();
        scope.reading(Path::new("peers.yaml"));
        serde_yaml::from_str::<PeersFile>(text)
            .map(|f| f.peers.0)
            .map_err(|e| e.to_string())
    }

    fn summary(peers: &[Peer]) -> Vec<String> {
        peers
            .iter()
            .map(|p| {
                let keys: Vec<&str> = p.keys().map(|k| k.key_id()).collect();
                format!("{} {keys:?} {:?} {:?}", p.name, p.url, p.allow)
            })
            .collect()
    }

    #[test]
    fn a_large_plain_file_takes_the_fast_path_with_the_same_result() {
        let text = big_file(1500);
        assert!(
            fast::parse(&text).is_some(),
            "the fast path should take this file"
        );
        let fast = read(&text).unwrap();
        let whole = read_whole(&text).unwrap();
        assert_eq!(fast.len(), 1500);
        assert_eq!(summary(&fast), summary(&whole));
    }

    #[test]
    fn item_spans_accept_only_the_plain_shape() {
        let spans = fast::item_spans("peers:\n- name: a\n  url: x\n# c\n- name: b\n").unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(
            fast::item_spans("# x\npeers: # the list\n  - a: 1\n")
                .unwrap()
                .len(),
            1
        );
        for odd in [
            "peers: []\n",
            "peers:\n  - a: 1\nother: 2\n",
            "---\npeers:\n  - a: 1\n",
            "peers:\n  - a: 1\n ...\n",
            "peers:\n\t- a: 1\n",
            "peers:\r\n  - a: 1\r\n",
            "\u{feff}peers:\n  - a: 1\n",
            "peers:\n    - a: 1\n  - b: 2\n",
            "peers:\n  - a: 1\n  b: 2\n",
            "\"peers\":\n  - a: 1\n",
            "peers:\n  foo: 1\n",
        ] {
            assert!(fast::item_spans(odd).is_none(), "{odd:?}");
        }
    }

    #[test]
    fn what_the_fast_path_refuses_reads_as_one_document_with_its_usual_error() {
        let base = big_file(1200);
        let dup_name = base.replace("name: p1100\n", "name: P3\n");
        let dup_key = {
            let k = key(1).spki_base64();
            let mut lines: Vec<String> = base.lines().map(String::from).collect();
            let at = lines
                .iter()
                .rposition(|l| l.contains("public_key"))
                .unwrap();
            lines[at] = format!("    public_key: \"{k}\"");
            lines.join("\n") + "\n"
        };
        let short_as_name = base.replace("name: p900\n", &format!("name: {}\n", key(1).short_id()));
        let bad_key = base.replace(
            "name: p1000\n",
            "name: p1000\n    public_keys: [\"AAAA\"]\n",
        );
        let unknown_field = base.replace("name: p999\n", "name: p999\n    colour: blue\n");
        for (what, text) in [
            ("duplicate name", dup_name),
            ("duplicate key", dup_key),
            ("name equal to a short ID", short_as_name),
            ("bad key", bad_key),
            ("unknown field", unknown_field),
        ] {
            assert!(
                fast::parse(&text).is_none(),
                "{what}: the fast path must refuse"
            );
            let err = read(&text).unwrap_err();
            let whole = read_whole(&text).unwrap_err();
            let dir = err.file.parent().unwrap().display().to_string() + "/";
            let message = err.message.replace(&dir, "");
            assert!(whole.contains(&message), "{what}: {err} vs {whole}");
            assert!(err.position.is_some(), "{what}: {err}");
        }
    }

    #[test]
    fn conflicts_with_peers_read_before_are_found() {
        let text = big_file(700);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.yaml");
        std::fs::write(&path, &text).unwrap();
        let scope = context::LoadScope::begin();
        // An inline peer (read from the config file first) with p650's name.
        context::claim_name("P650").unwrap();
        let err = read_file(&path, &scope).unwrap_err();
        assert!(err.message.contains("already used by"), "{err}");
    }

    #[test]
    fn anchors_across_items_fall_back_and_still_load() {
        let text = big_file(1500)
            .replacen(
                "    url: https://p0.example.org:8443/base\n",
                "    url: https://p0.example.org:8443/base\n    allow: &rules { methods: [GET] }\n",
                1,
            )
            .replacen(
                "    url: https://p1400.example.org:8443/base\n",
                "    url: https://p1400.example.org:8443/base\n    allow: *rules\n",
                1,
            );
        assert!(fast::parse(&text).is_none());
        let peers = read(&text).unwrap();
        assert_eq!(summary(&peers), summary(&read_whole(&text).unwrap()));
        assert_eq!(peers[1400].allow.methods.len(), 1);
    }

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
