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
#[serde(
    deny_unknown_fields,
    expecting = "a peer: a mapping with name, public_key (or public_keys) and optionally url, allow"
)]
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

/// A URL's host as peer URLs are stored and looked up by: without the brackets of an IPv6
/// literal, in lower case, and an IPv6 address in its one canonical text (RFC 5952), so that an
/// app writing `[0:0:0:0:0:0:0:1]` in proxy mode finds the peer at `[::1]`.
pub fn url_host_key(host: &str) -> std::borrow::Cow<'_, str> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.contains(':') {
        if let Ok(v6) = bare.parse::<std::net::Ipv6Addr>() {
            return v6.to_string().into();
        }
    }
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        bare.to_ascii_lowercase().into()
    } else {
        bare.into()
    }
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
            .ok_or_else(|| format!("{s:?} has no host"))?;
        let host = url_host_key(host).into_owned();
        if uri.query().is_some() {
            return Err(format!("{s:?}: a peer URL may not have a query"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!("{s:?}: a peer URL may not carry credentials"));
        }
        // http::Uri gives no port both without one and for one past 65535 (or with a sign):
        // read it from the authority text, so that `:99999` is an error, not the default port.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let port_text = authority
            .rfind(':')
            .and_then(|i| authority.get(i + 1..))
            .filter(|p| !p.contains(']'));
        let port = match port_text {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err(format!("{s:?}: the port must be a number from 1 to 65535")),
            },
        };
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
#[serde(deny_unknown_fields, expecting = "a mapping with methods and paths")]
pub struct Allow {
    #[serde(default)]
    pub methods: Vec<MethodName>,
    #[serde(default)]
    pub paths: Vec<PathPattern>,
}

impl Allow {
    /// Whether the peer may use only some methods.
    pub fn narrows_methods(&self) -> bool {
        !self.methods.is_empty()
    }

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
#[serde(deny_unknown_fields, expecting = "a mapping with a peers: list")]
pub struct PeersFile {
    #[serde(default)]
    pub peers: PeerList,
}

/// Where a load puts the peers of a peers file, in file order: a list, or the compact table a
/// gateway serves from (`allowlist::PeerTableBuilder`), so that a gateway never holds a large
/// allowlist both as parsed entries and in its own form.
pub trait PeerSink {
    fn push(&mut self, peer: Peer);
    /// Room for `peers` more: the count is known before the first arrives.
    fn reserve(&mut self, peers: usize);
}

impl PeerSink for Vec<Peer> {
    fn push(&mut self, peer: Peer) {
        Vec::push(self, peer);
    }

    fn reserve(&mut self, peers: usize) {
        Vec::reserve(self, peers);
    }
}

/// Reads the peers file at `path` into a sink made by `fresh`: through [`fast`] when it can,
/// else (and for every error, so that errors read exactly the same) as one YAML document, like
/// the config file. A sink the fast path filled and then gave up on is dropped for a fresh one.
/// It must be the last file a load reads: the fast path checks its entries against the peers
/// read before it, but does not record its own for files read after.
pub(super) fn read_file<S: PeerSink>(
    path: &Path,
    scope: &context::LoadScope,
    fresh: impl Fn() -> S,
) -> Result<S, super::ConfigError> {
    let cannot_read =
        |e: std::io::Error| super::ConfigError::plain(path, format!("cannot read: {e}"));
    let mut announced = false;
    // The fast reader never reports an error of its own: reading the file whole tells what is
    // wrong, exactly as it always did.
    let begin = || {
        scope.reading(path);
        announced = true;
        fresh()
    };
    let read = crate::files::open_regular(path).and_then(|f| {
        let len = f.metadata().ok().map(|m| m.len());
        if len.is_some_and(|len| len > crate::files::MAX_CONFIG_FILE) {
            return Err(crate::files::too_large(crate::files::MAX_CONFIG_FILE));
        }
        let (hashing, hashed) = crate::files::Hashing::new(f);
        let read = fast::read(std::io::BufReader::new(hashing), len, begin);
        if matches!(read, Ok(fast::Read::Done(_) | fast::Read::Whole(_))) {
            hashed.record(path);
        }
        read
    });
    let text = match read {
        Ok(fast::Read::Done(sink)) => return Ok(sink),
        Ok(fast::Read::Whole(text)) => text,
        // Given up on: each slice was freed as soon as it was parsed, so the file is read again
        // (should it have changed meanwhile, the answer is about the new file, whole). An error
        // is reported by reading the file whole.
        Ok(fast::Read::Abandoned) | Err(_) => {
            crate::files::read_to_string(path, crate::files::MAX_CONFIG_FILE)
                .map_err(cannot_read)?
        }
    };
    if text.trim().is_empty() {
        return Err(super::ConfigError::plain(
            path,
            "the file is empty; a peers file with no peers yet holds `peers: []`",
        ));
    }
    if !announced {
        scope.reading(path);
    }
    let file: PeersFile =
        serde_yaml::from_str(&text).map_err(|e| super::ConfigError::from_yaml(path, &text, &e))?;
    drop(text);
    let mut sink = fresh();
    sink.reserve(file.peers.0.len());
    for peer in file.peers.0 {
        sink.push(peer);
    }
    Ok(sink)
}

/// Loading a large peers file on all cores, without holding it whole.
///
/// Reading a file of 100 000 peers as one YAML document takes seconds and hundreds of MiB:
/// serde_yaml holds every event of the document in memory before deserializing, and each key
/// is parsed (an Ed25519 point decompression, the weak-key check, a SHA-256 and a SHA-512) one
/// after the other. When the file has the plain shape people and `peergate peer add` write
/// (`peers:` then a block list, one item per `- ` at one indentation), [`read`] cuts it into
/// slices of whole items as it reads, and [`parse`] deserializes the slices on several
/// threads, with the same `Deserialize` code and so the same checks per entry, handing the
/// peers on in file order as they come. Reading, parsing and filling the sink go on at the
/// same time, a few slices apart: a slice's text is freed once it is parsed and its peers once
/// the sink has them, so the file's text (14 MiB for 100 000 peers) is never in memory whole,
/// and what a load adds at its peak is about the size of what the sink makes. The checks
/// across entries (one key, one short ID, one name per peer; no name equal to a short ID),
/// which the one-document path makes through [`context`] as it goes, are made as the peers
/// arrive against the peers read before, and at the end among the file's own.
///
/// Whatever this path does not understand or does not accept sends the file to be read as one
/// document, which gives the very answer it always gave: the same peers, or the same error at
/// the same line and column. Cutting never changes what an item means: a line at the items'
/// indentation that starts with `- ` cannot be inside an item (block scalars and continuation
/// lines are indented further), and a cut that did fall inside something (a quoted string, a
/// flow list) leaves a slice that does not parse, which falls back. An alias to an anchor in
/// another slice does not parse either.
pub(super) mod fast {
    use std::hash::{BuildHasher, RandomState};
    use std::io::{self, BufRead};
    use std::sync::mpsc::{self, Receiver};

    use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};

    use super::{context, Peer, PeerSink};

    /// Files with fewer items are read whole: there is nothing to gain.
    const MIN_ITEMS: usize = 512;
    /// Items per slice handed to a thread.
    const SLICE: usize = 256;
    /// Most threads used.
    const MAX_THREADS: usize = 8;
    /// The most peers a sink is reserved for up front. A larger file grows the sink as its
    /// peers come; a length that promises more than the file holds (a sparse or a growing file)
    /// must not reserve memory that is never used, nor ask for more than can be allocated.
    pub const MAX_RESERVE: usize = 1_000_000;
    /// Slices taken between two [`release_freed`](crate::memory::release_freed) calls, some
    /// 8 000 peers and a megabyte of text. The allocator hands freed memory back to the system
    /// only a second later, so the text of the slices parsed would otherwise stay resident
    /// while what the sink makes of their peers grows: 15 MiB more at the peak, for 100 000
    /// peers. A call costs under a millisecond.
    const COLLECT_EVERY: usize = 32;

    /// How [`read`] ended.
    #[derive(Debug)]
    pub enum Read<S> {
        /// Every peer of the file is in the sink.
        Done(S),
        /// Not of the plain shape, or too few items to be worth it, as soon as that showed:
        /// the whole text, read once all the same, and no sink made.
        Whole(String),
        /// Taken, then given up on (a line further down not of the plain shape or not UTF-8, a
        /// slice that does not parse, a conflict between entries, an I/O error): the sink was
        /// dropped, and the file must be read again as one document for the exact answer.
        Abandoned,
    }

    /// Whole items of the peers list, as text.
    #[derive(Debug)]
    pub struct Slice {
        text: String,
        items: usize,
    }

    #[cfg(test)]
    impl Slice {
        pub fn text(&self) -> &str {
            &self.text
        }

        pub fn items(&self) -> usize {
            self.items
        }
    }

    impl Slice {
        /// The slice's peers, or `None` when it does not parse or holds another number of
        /// items than were cut into it.
        fn parse(&self) -> Option<Vec<Peer>> {
            let de = serde_yaml::Deserializer::from_str(&self.text);
            Items(self.items)
                .deserialize(de)
                .ok()
                .filter(|peers| peers.len() == self.items)
        }
    }

    /// Cuts the lines of a peers file into slices of [`SLICE`] items, each its own allocation so
    /// that it can be freed once parsed, checking the plain shape ([`Shape`]) as it goes.
    #[derive(Default)]
    pub struct Cutter {
        shape: Shape,
        /// What comes before the first item (the `peers:` line, comments).
        before: String,
        /// Full slices not handed on yet.
        full: Vec<Slice>,
        /// The slice being read, copied out at its exact size when full.
        current: String,
        in_current: usize,
        items: usize,
        /// Bytes taken, for the estimate of how many items the file holds.
        bytes: u64,
    }

    impl Cutter {
        /// Takes one line (with its `\n`, if any); `false`, and nothing taken, when it is not
        /// UTF-8 or not of the plain shape.
        pub fn feed(&mut self, line: &[u8]) -> bool {
            let Some((text, kind)) = std::str::from_utf8(line)
                .ok()
                .and_then(|text| Some((text, self.shape.line(text)?)))
            else {
                return false;
            };
            self.bytes += line.len() as u64;
            match kind {
                Line::Outside => self.before.push_str(text),
                Line::Item => {
                    if self.in_current == SLICE {
                        self.close_current();
                    }
                    self.items += 1;
                    self.in_current += 1;
                    self.current.push_str(text);
                }
                Line::Inside => self.current.push_str(text),
            }
            true
        }

        fn close_current(&mut self) {
            if self.in_current > 0 {
                self.full.push(Slice {
                    text: self.current.as_str().into(),
                    items: self.in_current,
                });
                self.current.clear();
                self.in_current = 0;
            }
        }

        /// The end of the file: the last slice is full too.
        pub fn finish(&mut self) {
            self.close_current();
        }

        /// The slices full so far, to hand on.
        pub fn take_full(&mut self) -> std::vec::Drain<'_, Slice> {
            self.full.drain(..)
        }

        /// Whether this is a plain peers file with enough items for the fast path, so far.
        fn worth_it(&self) -> bool {
            self.shape.header && self.items >= MIN_ITEMS
        }

        /// How many items a file of `len` bytes holds, judging by the lines taken so far; a
        /// little more, so that a sink reserved for it rarely grows; at most [`MAX_RESERVE`].
        pub fn estimate(&self, len: Option<u64>) -> usize {
            let taken = self.items as u64;
            let estimate = match len {
                Some(len) if self.bytes > 0 && len > self.bytes => {
                    (len as u128 * taken as u128 / self.bytes as u128) as u64
                }
                _ => taken,
            };
            usize::try_from(estimate.saturating_add(estimate / 64))
                .unwrap_or(usize::MAX)
                .min(MAX_RESERVE)
        }

        /// Everything taken so far, as text.
        fn into_text(self) -> String {
            let mut text = self.before;
            for slice in self.full {
                text.push_str(&slice.text);
            }
            text.push_str(&self.current);
            text
        }
    }

    /// Reads a peers file of `len` bytes (when known) line by line. A file not of the plain shape,
    /// or with fewer than [`MIN_ITEMS`] items, comes back as [`Read::Whole`] as soon as that is
    /// clear. Otherwise `begin` makes the sink once the first [`MIN_ITEMS`] items have been read,
    /// and the rest of the file is read, cut and parsed at the same time ([`parse`]), so that its
    /// text is never in memory whole. `Err` for an I/O error or text that is not UTF-8 before
    /// that point (the caller then reads the file whole, which reports it).
    pub fn read<R, S>(
        mut reader: R,
        len: Option<u64>,
        begin: impl FnOnce() -> S,
    ) -> io::Result<Read<S>>
    where
        R: BufRead + Send,
        S: PeerSink,
    {
        let mut cutter = Cutter::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                cutter.finish();
                if !cutter.worth_it() {
                    return Ok(Read::Whole(cutter.into_text()));
                }
                break;
            }
            if !cutter.feed(&line) {
                let mut whole = cutter.into_text().into_bytes();
                whole.extend_from_slice(&line);
                reader.read_to_end(&mut whole)?;
                return String::from_utf8(whole)
                    .map(Read::Whole)
                    .map_err(|_| io::ErrorKind::InvalidData.into());
            }
            if cutter.worth_it() {
                break;
            }
        }
        let estimate = cutter.estimate(len);
        let mut sink = begin();
        sink.reserve(estimate);
        // The rest of the file is cut on a thread of its own, so that this one can take the
        // peers in order as they come (the sink and the load scope's checks are on this thread).
        let rest = move |hand_on: &mut dyn FnMut(Slice) -> bool| -> bool {
            loop {
                if !cutter.take_full().all(&mut *hand_on) {
                    return false;
                }
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) if cutter.feed(&line) => {}
                    _ => return false,
                }
            }
            cutter.finish();
            cutter.take_full().all(hand_on)
        };
        Ok(if parse(rest, estimate, &mut sink) {
            Read::Done(sink)
        } else {
            Read::Abandoned
        })
    }

    /// Where a line of a plain peers file belongs.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Line {
        /// Before the first item: the `peers:` line, blank lines and comments.
        Outside,
        /// The first line of an item (`- ` at the items' indentation).
        Item,
        /// Within the current item, or a blank line or comment after it.
        Inside,
    }

    /// The plain shape: only `peers:` at the top level, a block list under it, spaces for
    /// indentation, `\n` line ends, nothing but comments outside the items, and only
    /// characters YAML takes as they are ([`plain_chars`]). A file of another shape is read
    /// whole, as one document, which gives its errors.
    #[derive(Default)]
    struct Shape {
        header: bool,
        indent: Option<usize>,
    }

    impl Shape {
        /// Where `line` (with its `\n`, if any) belongs, or `None` when the file is not of the
        /// plain shape.
        fn line(&mut self, line: &str) -> Option<Line> {
            let content = line.strip_suffix('\n').unwrap_or(line);
            if !plain_chars(content) {
                return None;
            }
            let body = content.trim_start_matches(' ');
            let after_items = if self.indent.is_some() {
                Line::Inside
            } else {
                Line::Outside
            };
            if body.is_empty() || body.starts_with('#') {
                return Some(after_items);
            }
            if !self.header {
                let rest = content.strip_prefix("peers:")?;
                // `peers:#x` is one plain scalar to YAML, not the key `peers`.
                if !(rest.is_empty() || rest.starts_with(' ')) {
                    return None;
                }
                let rest = rest.trim_start_matches(' ');
                if !(rest.is_empty() || rest.starts_with('#')) || content.len() != body.len() {
                    return None;
                }
                self.header = true;
                return Some(Line::Outside);
            }
            let depth = content.len() - body.len();
            let item = body == "-" || body.starts_with("- ");
            match self.indent {
                None if item => {
                    self.indent = Some(depth);
                    Some(Line::Item)
                }
                None => None,
                Some(k) if depth > k => Some(Line::Inside),
                Some(k) if depth == k && item => Some(Line::Item),
                Some(_) => None,
            }
        }
    }

    /// Whether a line (without its `\n`) holds only characters the YAML parser takes as they
    /// are, anywhere in the file: printable ones (YAML 1.1 §5.1), no tab (indentation must be
    /// spaces), no byte order mark, and none it takes as a line end (`\r`, NEL, LS, PS). The
    /// fast path does not parse the lines before the first item (comments, the header), and a
    /// line end the parser sees where this reader sees none made `  # x<LS>...` a comment here
    /// and a document end to the parser: a slice that ended with it loaded on its own where the
    /// whole file is two documents (found writing the fuzz target in `fuzz/`). A control
    /// character in a comment, which the parser refuses, was not seen at all.
    fn plain_chars(line: &str) -> bool {
        if line.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return true;
        }
        line.chars().all(|c| {
            matches!(c, ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
                && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
        })
    }

    /// The number of items of a plain-shaped text, or `None`: the shape check alone, for tests.
    #[cfg(test)]
    pub fn item_count(text: &str) -> Option<usize> {
        let mut shape = Shape::default();
        let mut items = 0;
        for line in text.split_inclusive('\n') {
            if shape.line(line)? == Line::Item {
                items += 1;
            }
        }
        shape.header.then_some(items)
    }

    /// Parses the slices `cut` hands on (it returns whether it read the whole file, all of it of
    /// the plain shape) on several threads, and pushes their peers into `sink` in file order,
    /// for about `items` peers. `false` (the sink then holds some of them) to have the file read
    /// as one document.
    ///
    /// Slice `i` goes to thread `i % threads` through a channel with room for one, and its
    /// peers come back through another: the memory in flight is a few slices per thread,
    /// whatever the size of the file. No wait can close a cycle: the slice this thread waits
    /// for was cut before any the cutting thread may be stuck on, and the thread parsing it has
    /// handed over everything before it.
    fn parse<S: PeerSink>(
        cut: impl FnOnce(&mut dyn FnMut(Slice) -> bool) -> bool + Send,
        items: usize,
        sink: &mut S,
    ) -> bool {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS);
        let known = context::known_keys();
        std::thread::scope(|scope| {
            let mut inputs = Vec::with_capacity(threads);
            let mut receivers = Vec::with_capacity(threads);
            let mut workers = Vec::with_capacity(threads);
            for _ in 0..threads {
                let (input, slices) = mpsc::sync_channel::<Slice>(1);
                let (results, receiver) = mpsc::sync_channel(1);
                // Worker threads have no load scope: `context`'s cross-entry checks are no-ops
                // there, and are made as the peers arrive instead.
                let known = known.clone();
                let worker = std::thread::Builder::new().spawn_scoped(scope, move || {
                    let _reuse = context::ReuseKeys::install(known);
                    for slice in slices {
                        let peers = slice.parse();
                        // Its text is not needed any more (see `COLLECT_EVERY`).
                        drop(slice);
                        let failed = peers.is_none();
                        if results.send(peers).is_err() || failed {
                            return;
                        }
                    }
                });
                // No thread to be had: the one-document path (the workers started end as
                // their inputs close).
                let Ok(worker) = worker else { return false };
                workers.push(worker);
                inputs.push(input);
                receivers.push(receiver);
            }
            let cutting = std::thread::Builder::new().spawn_scoped(scope, move || {
                let mut next = 0usize;
                let mut hand_on = |slice: Slice| {
                    let to = inputs.get(next % threads);
                    next += 1;
                    to.is_some_and(|to| to.send(slice).is_ok())
                };
                cut(&mut hand_on)
            });
            let Ok(cutting) = cutting else { return false };
            let taken = take_in_order(&receivers, items, sink);
            // Threads still parsing stop at their next result, and the cutting at its next slice.
            drop(receivers);
            let whole_file = cutting.join().unwrap_or(false);
            workers.into_iter().fold(taken && whole_file, |ok, worker| {
                worker.join().is_ok() && ok
            })
        })
    }

    /// Slice `i` comes from thread `i % threads`, until the thread of the first slice that was
    /// never cut has nothing more: pushes the peers of all slices into the sink in file order,
    /// checking them against each other and the peers read before.
    fn take_in_order<S: PeerSink>(
        receivers: &[Receiver<Option<Vec<Peer>>>],
        items: usize,
        sink: &mut S,
    ) -> bool {
        let mut claims = Claims::with_capacity(items);
        for i in 0usize.. {
            let Some(receiver) = i
                .checked_rem(receivers.len())
                .and_then(|t| receivers.get(t))
            else {
                return false;
            };
            let peers = match receiver.recv() {
                Ok(Some(peers)) => peers,
                Ok(None) => return false,
                // Closed: every slice cut has been taken.
                Err(_) => break,
            };
            if i % COLLECT_EVERY == COLLECT_EVERY - 1 {
                crate::memory::release_freed();
            }
            for peer in peers {
                if !claims.add(&peer) {
                    return false;
                }
                sink.push(peer);
            }
        }
        claims.distinct()
    }

    /// The checks across entries that [`context`] makes when a file is read as one document:
    /// no key (by key id) and no short ID twice, no name twice (case-insensitively), no name
    /// equal to a short ID, among the file's peers and against the peers read before.
    ///
    /// Against the peers read before the check is exact. Among the file's own it compares
    /// 64-bit hashes, so that it needs 24 bytes per peer and not the strings: equal strings
    /// always collide, so no conflict gets through, and two different strings that happen to
    /// collide only send the file down the one-document path, which answers exactly.
    struct Claims {
        hasher: RandomState,
        key_ids: Vec<u64>,
        short_ids: Vec<u64>,
        names: Vec<u64>,
    }

    impl Claims {
        fn with_capacity(peers: usize) -> Self {
            Claims {
                hasher: RandomState::new(),
                key_ids: Vec::with_capacity(peers),
                short_ids: Vec::with_capacity(peers),
                names: Vec::with_capacity(peers),
            }
        }

        /// Records the peer's keys and name; `false` when one is taken by a peer read before.
        fn add(&mut self, peer: &Peer) -> bool {
            for key in peer.keys() {
                let (key_id, short_id) = (key.key_id(), key.short_id());
                if context::key_claimed(key_id)
                    || context::short_id_claimed(short_id)
                    || context::name_claimed(short_id)
                {
                    return false;
                }
                self.key_ids.push(self.hasher.hash_one(key_id));
                self.short_ids.push(self.hasher.hash_one(short_id));
            }
            let folded = peer.name.to_lowercase();
            if context::name_claimed(&folded) || context::short_id_claimed(&folded) {
                return false;
            }
            self.names.push(self.hasher.hash_one(folded.as_str()));
            true
        }

        /// Whether no two of the peers recorded conflict.
        fn distinct(mut self) -> bool {
            for list in [&mut self.key_ids, &mut self.short_ids, &mut self.names] {
                list.sort_unstable();
                if list.windows(2).any(|w| w.first() == w.get(1)) {
                    return false;
                }
            }
            // No name equal to a short ID: both lists are sorted, walk them together.
            let (mut i, mut j) = (0, 0);
            while let (Some(s), Some(n)) = (self.short_ids.get(i), self.names.get(j)) {
                match s.cmp(n) {
                    std::cmp::Ordering::Less => i += 1,
                    std::cmp::Ordering::Greater => j += 1,
                    std::cmp::Ordering::Equal => return false,
                }
            }
            true
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;

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
        read_into(text, Vec::new)
    }

    /// Reads `text` from a file the way a load reads a peers file, into sinks made by `fresh`.
    /// Errors name the file `peers.yaml`, wherever it was.
    fn read_into<S: PeerSink>(
        text: &str,
        fresh: impl Fn() -> S,
    ) -> Result<S, super::super::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.yaml");
        std::fs::write(&path, text).unwrap();
        let scope = context::LoadScope::begin();
        read_file(&path, &scope, fresh).map_err(|mut e| {
            let dir = dir.path().display().to_string() + "/";
            e.message = e.message.replace(&dir, "");
            e.file = PathBuf::from("peers.yaml");
            e
        })
    }

    /// The peers of `text` when the fast path takes it, without a load scope (as in a file
    /// read with no peers before it).
    fn fast_path(text: &str) -> Option<Vec<Peer>> {
        match fast::read(text.as_bytes(), Some(text.len() as u64), Vec::new).ok()? {
            fast::Read::Done(peers) => Some(peers),
            fast::Read::Whole(_) | fast::Read::Abandoned => None,
        }
    }

    /// The slices a whole plain-shaped `text` is cut into.
    fn slices_of(text: &str) -> Vec<fast::Slice> {
        let mut cutter = fast::Cutter::default();
        for line in text.split_inclusive('\n') {
            assert!(
                cutter.feed(line.as_bytes()),
                "not of the plain shape: {line:?}"
            );
        }
        cutter.finish();
        cutter.take_full().collect()
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
        let taken = fast_path(&text).expect("the fast path should take this file");
        let fast = read(&text).unwrap();
        let whole = read_whole(&text).unwrap();
        assert_eq!(fast.len(), 1500);
        assert_eq!(summary(&fast), summary(&whole));
        assert_eq!(summary(&taken), summary(&whole));
    }

    #[test]
    fn slices_hold_whole_items_and_all_of_the_list() {
        let text = big_file(1500);
        let slices = slices_of(&text);
        assert_eq!(slices.len(), 6);
        assert!(slices.iter().all(|s| s.text().starts_with("  - name: p")));
        assert_eq!(slices.iter().map(fast::Slice::items).sum::<usize>(), 1500);
        let list: String = slices.iter().map(fast::Slice::text).collect();
        assert_eq!(
            format!("# the allowlist\npeers:\n{list}"),
            text,
            "everything after the header, in order"
        );
    }

    #[test]
    fn a_file_the_fast_path_does_not_take_is_read_whole_with_the_same_answer() {
        let big = big_file(1500);
        let middle = big.len() / 2;
        let line = middle + big[middle..].find("\n  - name").unwrap() + 1;
        let with = |insert: &str| format!("{}{insert}{}", &big[..line], &big[line..]);
        // Clear before the first MIN_ITEMS items: handed back whole, unchanged, no sink made.
        for (what, text) in [
            ("few items", big_file(20)),
            ("no peers: header", big.replace("peers:\n", "people:\n")),
            (
                "a tab at the start",
                big.replacen("url: https", "url:\thttps", 1),
            ),
            ("empty", String::new()),
        ] {
            let read = fast::read(text.as_bytes(), None, || -> Vec<Peer> {
                panic!("{what}: no sink is made")
            });
            match read.unwrap() {
                fast::Read::Whole(whole) => assert!(whole == text, "{what}: text changed"),
                other => panic!("{what}: {other:?}"),
            }
        }
        // Clear only further down: taken, then given up on.
        for (what, text) in [
            (
                "a tab half-way",
                with("  - name: tabbed\n    url:\thttps://x\n"),
            ),
            ("a CRLF half-way", with("  # a comment\r\n")),
            ("a second document", format!("{big}---\npeers: []\n")),
            (
                "a document end after a line separator",
                with("  # a comment\u{2028}...\n"),
            ),
        ] {
            match fast::read(text.as_bytes(), None, Vec::new).unwrap() {
                fast::Read::Abandoned => {}
                other => panic!("{what}: {other:?}"),
            }
        }
        // Either way, a load gives the answer of reading the file as one document.
        for (what, text) in [
            ("few items", big_file(20)),
            ("a CRLF half-way", with("  # a comment\r\n")),
        ] {
            let peers = read(&text).unwrap();
            assert_eq!(
                summary(&peers),
                summary(&read_whole(&text).unwrap()),
                "{what}"
            );
        }
        for (what, text) in [
            (
                "a tab half-way",
                with("  - name: tabbed\n    url:\thttps://x\n"),
            ),
            ("a second document", format!("{big}---\npeers: []\n")),
            (
                "a document end after a line separator",
                with("  # a comment\u{2028}...\n"),
            ),
            (
                "a control character in a comment before the list",
                big_file(600).replacen("# the allowlist", "# the allow\u{7f}list", 1),
            ),
            (
                "`peers:#x`, a scalar, not the key",
                big_file(600).replacen("peers:\n", "peers:#x\n", 1),
            ),
            (
                // Where a slice ends: each slice alone was one whole document, and loaded.
                "a document end after a line separator at a slice's end",
                big_file(600).replacen(
                    "  - name: p256\n",
                    "  # the last line of a slice\u{2028}...\n  - name: p256\n",
                    1,
                ),
            ),
        ] {
            let err = read(&text).unwrap_err();
            let whole = read_whole(&text).unwrap_err();
            assert!(whole.contains(&err.message), "{what}: {err} vs {whole}");
        }
        // Not UTF-8: before the first MIN_ITEMS items, the reader's error; further down, given up
        // on. A load reports the error of reading the file whole, as before.
        let mut early = big
            .replacen("name: p1\n", "name: p\u{e9}\n", 1)
            .into_bytes();
        let mut late = with("  # \u{e9}\n").into_bytes();
        for bytes in [&mut early, &mut late] {
            let at = bytes.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
            bytes[at] = 0xff;
        }
        assert_eq!(
            fast::read(&early[..], None, Vec::new).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        assert!(matches!(
            fast::read(&late[..], None, Vec::new),
            Ok(fast::Read::Abandoned)
        ));
        for bytes in [early, late] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("peers.yaml");
            std::fs::write(&path, &bytes).unwrap();
            let scope = context::LoadScope::begin();
            let err = read_file(&path, &scope, Vec::new).unwrap_err();
            let expected = std::fs::read_to_string(&path).unwrap_err();
            assert_eq!(err.message, format!("cannot read: {expected}"));
        }
    }

    #[test]
    fn the_estimate_follows_the_file_and_stays_bounded() {
        let text = big_file(1500);
        let mut cutter = fast::Cutter::default();
        let mut lines = text.split_inclusive('\n');
        for line in lines.by_ref().take(text.lines().count() / 3) {
            assert!(cutter.feed(line.as_bytes()));
        }
        // A third of the file read: about three times the items seen, and a little more.
        let estimate = cutter.estimate(Some(text.len() as u64));
        assert!((1500..1600).contains(&estimate), "{estimate}");
        // No length, or one shorter than what was read: the items seen.
        assert_eq!(cutter.estimate(None), cutter.estimate(Some(1)));
        // A length far beyond anything real (a sparse file) reserves no more than the bound.
        assert_eq!(cutter.estimate(Some(u64::MAX)), fast::MAX_RESERVE);
    }

    /// A reader that, once `gate` bytes are read, waits (once, up to 30 s) until `opened` is set.
    struct Gated<'a> {
        data: &'a [u8],
        gate: Option<usize>,
        opened: &'a std::sync::atomic::AtomicBool,
        waited_out: &'a std::sync::atomic::AtomicBool,
    }

    impl std::io::Read for Gated<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            use std::sync::atomic::Ordering;
            if self.gate == Some(0) {
                self.gate = None;
                let start = std::time::Instant::now();
                while !self.opened.load(Ordering::SeqCst) {
                    if start.elapsed() > std::time::Duration::from_secs(30) {
                        self.waited_out.store(true, Ordering::SeqCst);
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            let n = buf
                .len()
                .min(self.data.len())
                .min(self.gate.unwrap_or(usize::MAX));
            let (now, rest) = self.data.split_at(n);
            buf[..n].copy_from_slice(now);
            self.data = rest;
            self.gate = self.gate.map(|g| g - n);
            Ok(n)
        }
    }

    /// A sink that says when its first peer arrives.
    struct Signalling<'a> {
        peers: Vec<Peer>,
        opened: &'a std::sync::atomic::AtomicBool,
    }

    impl PeerSink for Signalling<'_> {
        fn push(&mut self, peer: Peer) {
            self.opened.store(true, std::sync::atomic::Ordering::SeqCst);
            self.peers.push(peer);
        }

        fn reserve(&mut self, peers: usize) {
            self.peers.reserve(peers);
        }
    }

    #[test]
    fn peers_arrive_while_the_rest_of_the_file_is_still_unread() {
        use std::sync::atomic::{AtomicBool, Ordering};
        // The reader stops two thirds in until the sink has its first peer: a reader that read
        // the whole file before parsing would wait out its 30 s.
        let text = big_file(1500);
        let (opened, waited_out) = (AtomicBool::new(false), AtomicBool::new(false));
        let reader = Gated {
            data: text.as_bytes(),
            gate: Some(text.len() * 2 / 3),
            opened: &opened,
            waited_out: &waited_out,
        };
        let read = fast::read(
            std::io::BufReader::with_capacity(4096, reader),
            Some(text.len() as u64),
            || Signalling {
                peers: Vec::new(),
                opened: &opened,
            },
        );
        let fast::Read::Done(sink) = read.unwrap() else {
            panic!("the fast path should take this file");
        };
        assert!(
            !waited_out.load(Ordering::SeqCst),
            "no peer arrived before the gate"
        );
        assert_eq!(summary(&sink.peers), summary(&read_whole(&text).unwrap()));
    }

    #[test]
    fn the_fast_path_accepts_only_the_plain_shape() {
        assert_eq!(
            fast::item_count("peers:\n- name: a\n  url: x\n# c\n- name: b\n"),
            Some(2)
        );
        assert_eq!(
            fast::item_count("# x\npeers: # the list\n  - a: 1\n"),
            Some(1)
        );
        for odd in [
            "peers: []\n",
            "peers:\n  - a: 1\nother: 2\n",
            "---\npeers:\n  - a: 1\n",
            "peers:\n  - a: 1\n ...\n",
            "peers:\n\t- a: 1\n",
            "peers:\r\n  - a: 1\r\n",
            "\u{feff}peers:\n  - a: 1\n",
            "peers:\n  - a: 1 # x\u{2028}...\n",
            "peers:\n  - a: 1\n  # x\u{85}...\n",
            "peers:\n  - a: 1\n  # x\u{2029}...\n",
            "# the allow\u{7f}list\npeers:\n  - a: 1\n",
            "peers: # x\u{1}\n  - a: 1\n",
            "# \u{fffe}\npeers:\n  - a: 1\n",
            "# \u{9f}\npeers:\n  - a: 1\n",
            "peers:#x\n  - a: 1\n",
            "peers:\n    - a: 1\n  - b: 2\n",
            "peers:\n  - a: 1\n  b: 2\n",
            "\"peers\":\n  - a: 1\n",
            "peers:\n  foo: 1\n",
        ] {
            assert!(fast::item_count(odd).is_none(), "{odd:?}");
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
                fast_path(&text).is_none(),
                "{what}: the fast path must refuse"
            );
            let err = read(&text).unwrap_err();
            let whole = read_whole(&text).unwrap_err();
            // A gateway's load, which reads the peers into its table, fails the same way.
            let into_table = read_into(&text, crate::allowlist::PeerTableBuilder::default)
                .map(|_| ())
                .unwrap_err();
            assert_eq!(into_table, err, "{what}");
            assert!(whole.contains(&err.message), "{what}: {err} vs {whole}");
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
        let err = read_file(&path, &scope, Vec::new).unwrap_err();
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
        assert!(fast_path(&text).is_none());
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
        // A port past 65535 is an error, not the default port (http::Uri's port_u16 is None).
        for bad in [
            "https://x:99999",
            "https://x:65536/",
            "https://x:0",
            "http://x:+80",
        ] {
            let err = PeerUrl::parse(bad).err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains("1 to 65535")),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(PeerUrl::parse("https://x:65535").unwrap().port, 65535);
    }
}
