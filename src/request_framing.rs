//! Where each HTTP/1 request on a client connection ends, read off the bytes as they arrive, so
//! that a chunked body Pingora would read leniently is refused instead.
//!
//! Pingora reads a chunk-size line with `httparse`, which takes any byte but CR inside a chunk
//! extension (a bare LF, a control byte, an unclosed quote) and a line with no size at all as
//! the last chunk. A proxy in front of peergate that ends the line at that LF, or reads the
//! quote to its close, finds other chunks than peergate does, and so another end of the
//! request: bytes it forwarded as one request's body, peergate reads as a request of its own,
//! past whatever rules the front proxy applies (request smuggling, RFC 9112 §11.2). RFC 9112
//! §7.1 gives chunk lines a grammar, and clients send nothing else, so [`RequestFraming`]
//! follows a connection's requests as Pingora frames them (a head ends at its first empty
//! line; `Transfer-Encoding` means chunks, or Pingora refuses the head; otherwise
//! `Content-Length`, or no body) and holds each chunk line, the CRLF after each chunk's data
//! and each trailer line to that grammar. The first byte that breaks it is where the
//! connection's reads stop: Pingora gets the bytes before it, then a read error carrying the
//! [`Refusal`], which the proxy answers 400 (`body::read_whole`, `Inbound::fail_to_proxy`).
//!
//! Heads are Pingora's to judge: here only where one ends and the fields that frame its body
//! are read. After a head whose `Content-Length` Pingora refuses, nothing more is passed on.
//! HTTP/2 frames bodies itself; this runs on HTTP/1 connections only
//! (`unreadable_head::Watched`).

use std::fmt;
use std::io;

/// The longest chunk-size line taken, extensions included: far past any a client sends, and
/// a bound on what a line may hide.
const MAX_CHUNK_LINE: usize = 4096;
/// The most of a `Content-Length` line kept to read its value (Pingora's own limit is the
/// head's, 1 MiB); a longer one ends what is read, as an unreadable value does.
const MAX_LENGTH_LINE: usize = 1024;
/// The largest request head read, from the first byte to the empty line that ends it, as
/// Envoy's default (60 KiB) and above nginx's (four 8 KiB buffers). Pingora's own limit is
/// 1 MiB, held in memory as it comes: a few hundred connections that each sent most of a
/// megabyte of fields and never ended the head held hundreds of megabytes without a
/// signature, past the memory the example deployments give the sidecar.
pub const MAX_HEAD: usize = 64 * 1024;

/// What broke a request's framing: each names the rule, for the 400 that refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An LF not right after a CR in a chunk line or the trailer section.
    BareLf,
    /// A CR not followed by LF there.
    BareCr,
    /// A chunk line that does not begin with 1 to 16 hex digits.
    ChunkSize,
    /// A chunk extension that is not `;name` or `;name=value` (RFC 9112 §7.1.1).
    ChunkExtension,
    /// A chunk line longer than [`MAX_CHUNK_LINE`].
    ChunkLineTooLong,
    /// A chunk's data not followed by CRLF.
    ChunkDataEnd,
    /// A head whose `Content-Length` is not one number (Pingora refuses the head).
    ContentLength,
    /// A head longer than [`MAX_HEAD`].
    HeadTooLarge,
}

impl Refusal {
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::BareLf => {
                "a chunk line or trailer field holds an LF without a CR before it (RFC 9112 \
                 §7.1 ends each with CRLF)"
            }
            Refusal::BareCr => "a chunk line or trailer field holds a CR without an LF after it",
            Refusal::ChunkSize => "a chunk line does not begin with its size in 1 to 16 hex digits",
            Refusal::ChunkExtension => {
                "a chunk extension is not `;name` or `;name=value`, with a token or a quoted \
                 string for value (RFC 9112 §7.1.1)"
            }
            Refusal::ChunkLineTooLong => "a chunk line is longer than 4096 bytes",
            Refusal::ChunkDataEnd => "a chunk's data is not followed by CRLF",
            Refusal::ContentLength => "the Content-Length is not one number",
            Refusal::HeadTooLarge => {
                "the request head is larger than 64 KiB (its request line and header fields \
                 together); the connection is closed"
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for Refusal {}

impl From<Refusal> for io::Error {
    fn from(refusal: Refusal) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, refusal)
    }
}

/// The [`Refusal`] a Pingora error was caused by, if a read stopped here failed it: the cause
/// of the innermost Pingora error in its chain ([`crate::forward::chain`]).
pub fn refusal_in(e: &pingora::Error) -> Option<Refusal> {
    crate::forward::chain(e)
        .last()?
        .cause
        .as_deref()?
        .downcast_ref::<io::Error>()?
        .get_ref()?
        .downcast_ref::<Refusal>()
        .copied()
}

/// One HTTP/1 client connection's requests, followed byte by byte (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct RequestFraming {
    state: State,
}

#[derive(Debug)]
enum State {
    Head(Head),
    /// Body bytes left, framed by `Content-Length`.
    Length(u64),
    Chunk(ChunkLine),
    /// Data bytes left in the current chunk.
    ChunkData(u64),
    /// The CR, then the LF, after a chunk's data.
    ChunkDataCr,
    ChunkDataLf,
    /// The trailer section, after the last chunk: bytes of the current line, and whether
    /// the last was a CR.
    Trailer {
        line: usize,
        cr: bool,
    },
    Stopped(Refusal),
}

impl Default for State {
    fn default() -> Self {
        State::Head(Head::default())
    }
}

impl RequestFraming {
    pub fn new() -> Self {
        Self::default()
    }

    /// Why reads stopped, once they have.
    pub fn stopped(&self) -> Option<Refusal> {
        match self.state {
            State::Stopped(refusal) => Some(refusal),
            _ => None,
        }
    }

    /// Follows `bytes`, the next the client sent. At the first byte that breaks the framing,
    /// returns its index in `bytes` and why; every later call refuses at once.
    pub fn read(&mut self, bytes: &[u8]) -> Result<(), (usize, Refusal)> {
        let mut at = 0;
        while let Some(rest) = bytes.get(at..).filter(|rest| !rest.is_empty()) {
            match self.step(rest) {
                Ok(used) => at += used,
                Err((offset, refusal)) => {
                    self.state = State::Stopped(refusal);
                    return Err((at + offset, refusal));
                }
            }
        }
        match self.state {
            State::Stopped(refusal) => Err((at, refusal)),
            _ => Ok(()),
        }
    }

    /// Takes what it can of `bytes` (at least one) in the current state; returns how many,
    /// or where the framing broke.
    fn step(&mut self, bytes: &[u8]) -> Result<usize, (usize, Refusal)> {
        match &mut self.state {
            State::Head(head) => {
                let room = MAX_HEAD.saturating_sub(head.size);
                if room == 0 {
                    return Err((0, Refusal::HeadTooLarge));
                }
                match head.read(bytes.get(..room).unwrap_or(bytes)) {
                    (used, None) => {
                        head.size += used;
                        Ok(used)
                    }
                    (used, Some(end)) => {
                        self.state = end;
                        Ok(used)
                    }
                }
            }
            State::Length(left) | State::ChunkData(left) => {
                let take = bytes
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= take as u64;
                if *left == 0 {
                    self.state = match self.state {
                        State::Length(_) => State::Head(Head::default()),
                        _ => State::ChunkDataCr,
                    };
                }
                Ok(take)
            }
            State::Chunk(line) => {
                for (i, &b) in bytes.iter().enumerate() {
                    match line.byte(b) {
                        Ok(None) => {}
                        Ok(Some(0)) => {
                            self.state = State::Trailer { line: 0, cr: false };
                            return Ok(i + 1);
                        }
                        Ok(Some(size)) => {
                            self.state = State::ChunkData(size);
                            return Ok(i + 1);
                        }
                        Err(refusal) => return Err((i, refusal)),
                    }
                }
                Ok(bytes.len())
            }
            State::ChunkDataCr | State::ChunkDataLf => {
                let (expected, next) = match self.state {
                    State::ChunkDataCr => (b'\r', State::ChunkDataLf),
                    _ => (b'\n', State::Chunk(ChunkLine::default())),
                };
                if bytes.first() != Some(&expected) {
                    return Err((0, Refusal::ChunkDataEnd));
                }
                self.state = next;
                Ok(1)
            }
            State::Trailer { line, cr } => {
                for (i, &b) in bytes.iter().enumerate() {
                    match b {
                        b'\r' if *cr => return Err((i, Refusal::BareCr)),
                        b'\r' => *cr = true,
                        b'\n' if !*cr => return Err((i, Refusal::BareLf)),
                        b'\n' if *line == 0 => {
                            self.state = State::Head(Head::default());
                            return Ok(i + 1);
                        }
                        b'\n' => (*line, *cr) = (0, false),
                        _ if *cr => return Err((i, Refusal::BareCr)),
                        _ => *line += 1,
                    }
                }
                Ok(bytes.len())
            }
            State::Stopped(refusal) => Err((0, *refusal)),
        }
    }
}

/// A request head as it comes: where it ends, and whether `Transfer-Encoding` or
/// `Content-Length` frame its body. Lines end at LF, with or without a CR before it, and
/// empty lines before the request line are skipped, as `httparse` reads them.
#[derive(Debug, Default)]
struct Head {
    /// Bytes of the head read so far.
    size: usize,
    request_line_seen: bool,
    /// Bytes of the current line so far, and whether the last was a CR.
    line: usize,
    cr: bool,
    /// The current line, kept while it may be one of the framing fields.
    field: Field,
    kept: Vec<u8>,
    chunked: bool,
    length: Length,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Field {
    /// What came of the line so far may still name one of the two fields.
    #[default]
    Maybe,
    ContentLength,
    Other,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Length {
    #[default]
    None,
    Is(u64),
    Unreadable,
}

impl Head {
    /// Reads `bytes` up to the end of the head; returns how many it took and, at the end, the
    /// state the body starts in.
    fn read(&mut self, bytes: &[u8]) -> (usize, Option<State>) {
        let Some(lf) = memchr::memchr(b'\n', bytes) else {
            self.take(bytes);
            return (bytes.len(), None);
        };
        self.take(bytes.get(..lf).unwrap_or_default());
        (lf + 1, self.end_line())
    }

    /// Takes part of a line (no LF in it).
    fn take(&mut self, part: &[u8]) {
        let Some(&last) = part.last() else {
            return;
        };
        self.line += part.len();
        self.cr = last == b'\r';
        if !self.request_line_seen || self.field == Field::Other {
            return;
        }
        let mut rest = part;
        if self.field == Field::Maybe {
            // Most lines are told apart by their first byte, without copying anything.
            if self.kept.is_empty() && !matches!(part.first(), Some(b'c' | b'C' | b't' | b'T')) {
                self.field = Field::Other;
                return;
            }
            // The name decides within its own length: only that much is copied to look.
            let look = TRANSFER_ENCODING.len().saturating_sub(self.kept.len());
            let (name, after) = part.split_at(part.len().min(look));
            self.kept.extend_from_slice(name);
            self.field = name_of(&self.kept);
            if self.field != Field::ContentLength {
                if transfer_encoding(&self.kept) {
                    self.chunked = true;
                }
                if self.field == Field::Other {
                    self.kept.clear();
                }
                return;
            }
            rest = after;
        }
        let room = MAX_LENGTH_LINE.saturating_sub(self.kept.len());
        let (fits, over) = rest.split_at(rest.len().min(room));
        self.kept.extend_from_slice(fits);
        if !over.is_empty() {
            self.length = Length::Unreadable;
            self.field = Field::Other;
            self.kept.clear();
        }
    }

    /// At an LF: the head goes on, or ends with the state its body starts in.
    fn end_line(&mut self) -> Option<State> {
        let empty = self.line == usize::from(self.cr);
        let field = std::mem::take(&mut self.field);
        let mut kept = std::mem::take(&mut self.kept);
        (self.line, self.cr) = (0, false);
        if !empty {
            if !self.request_line_seen {
                self.request_line_seen = true;
            } else if field == Field::ContentLength {
                if kept.last() == Some(&b'\r') {
                    kept.pop();
                }
                let value = kept.splitn(2, |&b| b == b':').nth(1).unwrap_or_default();
                self.length = add_length(std::mem::take(&mut self.length), value);
            }
            kept.clear();
            self.kept = kept;
            return None;
        }
        if !self.request_line_seen {
            return None;
        }
        Some(if self.chunked {
            State::Chunk(ChunkLine::default())
        } else {
            match self.length {
                Length::None | Length::Is(0) => State::Head(Head::default()),
                Length::Is(n) => State::Length(n),
                Length::Unreadable => State::Stopped(Refusal::ContentLength),
            }
        })
    }
}

const CONTENT_LENGTH: &[u8] = b"content-length:";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding:";

/// Which framing field a line that begins with `kept` is, as far as it shows: `Maybe` while
/// it is still the start of one, `Other` once it cannot be `Content-Length` (a
/// `Transfer-Encoding` line is `Other` too: its value does not matter, see
/// [`transfer_encoding`]).
fn name_of(kept: &[u8]) -> Field {
    let starts = |name: &[u8]| {
        let n = kept.len().min(name.len());
        match (kept.get(..n), name.get(..n)) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    };
    if kept.len() >= CONTENT_LENGTH.len() && starts(CONTENT_LENGTH) {
        Field::ContentLength
    } else if starts(CONTENT_LENGTH) || (starts(TRANSFER_ENCODING) && !transfer_encoding(kept)) {
        Field::Maybe
    } else {
        Field::Other
    }
}

/// Whether a line begins with the `Transfer-Encoding` field's name and colon: Pingora frames
/// the body by chunks whatever its value, or refuses the head.
fn transfer_encoding(line: &[u8]) -> bool {
    line.get(..TRANSFER_ENCODING.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(TRANSFER_ENCODING))
}

/// Adds one `Content-Length` line's value to what came before, as Pingora reconciles them:
/// comma-separated decimal numbers, all one value, else unreadable.
fn add_length(so_far: Length, value: &[u8]) -> Length {
    if value
        .iter()
        .any(|&b| b != b'\t' && !(0x20..0x7f).contains(&b))
    {
        return Length::Unreadable;
    }
    let mut length = so_far;
    for token in value.split(|&b| b == b',') {
        let digits = token.trim_ascii();
        let parsed = (!digits.is_empty())
            .then(|| {
                digits.iter().try_fold(0u64, |n, &d| {
                    let digit = d.is_ascii_digit().then(|| u64::from(d - b'0'))?;
                    n.checked_mul(10)?.checked_add(digit)
                })
            })
            .flatten();
        length = match (length, parsed) {
            (Length::Unreadable, _) | (_, None) => return Length::Unreadable,
            (Length::None, Some(n)) => Length::Is(n),
            (Length::Is(m), Some(n)) if m == n => Length::Is(n),
            (Length::Is(_), Some(_)) => return Length::Unreadable,
        };
    }
    length
}

/// A chunk-size line (RFC 9112 §7.1): `1*HEXDIG` (at most 16, as `httparse` reads them), then
/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, then CRLF. Whitespace
/// after the size or a value, before the CRLF, is let through, as `httparse` and others take
/// it: it moves no line end.
#[derive(Debug, Default)]
struct ChunkLine {
    at: LineAt,
    digits: u8,
    size: u64,
    len: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum LineAt {
    #[default]
    Size,
    /// After the size or an extension's value, and any whitespace after it.
    Between,
    /// After `;` and any whitespace.
    BeforeName,
    Name,
    /// Whitespace after a name.
    AfterName,
    /// After `=` and any whitespace.
    BeforeValue,
    Token,
    Quoted,
    /// After a backslash in a quoted string.
    QuotedPair,
    Cr,
}

impl ChunkLine {
    /// Takes one byte; at the end of the line, returns the chunk's size.
    fn byte(&mut self, b: u8) -> Result<Option<u64>, Refusal> {
        use LineAt::*;
        self.len += 1;
        if self.len > MAX_CHUNK_LINE {
            return Err(Refusal::ChunkLineTooLong);
        }
        let space = b == b' ' || b == b'\t';
        self.at = match (self.at, b) {
            (Cr, b'\n') => return Ok(Some(self.size)),
            (Cr, _) => return Err(Refusal::BareCr),
            (_, b'\n') => return Err(Refusal::BareLf),
            (Size, _) if b.is_ascii_hexdigit() => {
                self.digits += 1;
                if self.digits > 16 {
                    return Err(Refusal::ChunkSize);
                }
                self.size = self.size << 4 | u64::from(hex_value(b));
                Size
            }
            (Size, _) if self.digits == 0 || !(space || b == b';' || b == b'\r') => {
                return Err(Refusal::ChunkSize)
            }
            (Quoted, b'"') => Between,
            (Quoted, b'\\') => QuotedPair,
            (Quoted, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => Quoted,
            (QuotedPair, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => Quoted,
            (Quoted | QuotedPair, _) => return Err(Refusal::ChunkExtension),
            (Size | Between | Name | AfterName | Token, b'\r') => Cr,
            (Size | Between | Token, _) if space => Between,
            (Name | AfterName, _) if space => AfterName,
            (BeforeName | BeforeValue, _) if space => self.at,
            (Size | Between | Name | AfterName | Token, b';') => BeforeName,
            (Name | AfterName, b'=') => BeforeValue,
            (BeforeName | Name, _) if is_tchar(b) => Name,
            (BeforeValue | Token, _) if is_tchar(b) => Token,
            (BeforeValue, b'"') => Quoted,
            _ => return Err(Refusal::ChunkExtension),
        };
        Ok(None)
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b.wrapping_sub(b'A').wrapping_add(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows `stream` whole, then split at every place, then a byte at a time: the outcome
    /// and the index refused (counted from the stream's start) are the same every way.
    fn follow(stream: &[u8]) -> Result<(), (usize, Refusal)> {
        let whole = RequestFraming::new().read(stream);
        let in_pieces = |pieces: &mut dyn Iterator<Item = &[u8]>| {
            let mut framing = RequestFraming::new();
            let mut offset = 0;
            for piece in pieces {
                if let Err((at, refusal)) = framing.read(piece) {
                    return Err((offset + at, refusal));
                }
                offset += piece.len();
            }
            Ok(())
        };
        for split in 0..=stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(
                in_pieces(&mut [a, b].into_iter()),
                whole,
                "split at {split}"
            );
        }
        assert_eq!(in_pieces(&mut stream.chunks(1)), whole, "byte by byte");
        whole
    }

    const CHUNKED_HEAD: &[u8] =
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn chunked(body: &[u8]) -> Vec<u8> {
        cat(&[CHUNKED_HEAD, body])
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// A head of exactly [`MAX_HEAD`] bytes passes, one byte more is refused at that byte,
    /// however the bytes come; each head on a connection has the whole allowance.
    #[test]
    fn a_head_past_64_kib_is_refused_at_its_first_byte_over() {
        let start = b"GET / HTTP/1.1\r\nHost: a\r\n".as_slice();
        let head = |total: usize| {
            let pad = total - start.len() - "X-Pad: \r\n\r\n".len();
            cat(&[start, b"X-Pad: ", &vec![b'a'; pad], b"\r\n\r\n"])
        };
        let next = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
        let follow_some = |stream: &[u8]| {
            let whole = RequestFraming::new().read(stream);
            for split in [1, 1000, MAX_HEAD - 1, MAX_HEAD, MAX_HEAD + 1] {
                let (a, b) = stream.split_at(split.min(stream.len()));
                let mut framing = RequestFraming::new();
                let pieces = framing
                    .read(a)
                    .and_then(|()| framing.read(b).map_err(|(at, r)| (a.len() + at, r)));
                assert_eq!(pieces, whole, "split at {split}");
            }
            whole
        };
        assert_eq!(follow_some(&cat(&[&head(MAX_HEAD), next])), Ok(()));
        assert_eq!(
            follow_some(&cat(&[&head(MAX_HEAD), &head(MAX_HEAD), next])),
            Ok(()),
            "the second head is counted from its own start"
        );
        assert_eq!(
            follow_some(&cat(&[&head(MAX_HEAD + 1), next])),
            Err((MAX_HEAD, Refusal::HeadTooLarge))
        );
        // Empty lines before the request line are part of what is held.
        assert_eq!(
            follow_some(&cat(&[b"\r\n", &head(MAX_HEAD)])),
            Err((MAX_HEAD, Refusal::HeadTooLarge))
        );
    }

    #[test]
    fn requests_framed_as_pingora_frames_them_pass() {
        let next = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
        for stream in [
            cat(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", next]),
            // A body framed by its length is not read for chunks, whatever it holds.
            cat(&[
                b"POST / HTTP/1.1\r\nContent-Length: 7\r\n\r\n2;\nxx\r\n",
                next,
            ]),
            cat(&[
                b"POST / HTTP/1.1\r\ncontent-LENGTH: 5, 5\r\nContent-Length:5\r\n\r\nhello",
                next,
            ]),
            cat(&[
                CHUNKED_HEAD,
                b"5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
                next,
            ]),
            // Extensions as RFC 9112 §7.1.1 has them, whitespace where it is let through,
            // upper-case digits, leading zeros, trailer fields.
            chunked(
                b"5;a=b;c=\"x y\\\"z\" ; d\t= e\r\nhello\r\n00A \r\n0123456789\r\n\
                  0;last\r\nTrailer-One: 1\r\nTrailer-Two: 2\r\n\r\n",
            ),
            // Heads with LF alone, and empty lines before the request line, as httparse takes
            // them; a chunked body still needs CRLF.
            cat(&[
                b"\r\n\nPOST / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 3\n\n",
                b"3\r\nabc\r\n0\r\n\r\n",
                next,
            ]),
            // Look-alike names frame nothing.
            cat(&[
                b"GET / HTTP/1.1\r\nX-Content-Length: 5\r\nContent-Lengthy: 3\r\n",
                b"Transfer-Encodings: chunked\r\n\r\n",
                next,
            ]),
        ] {
            assert_eq!(follow(&stream), Ok(()), "{}", stream.escape_ascii());
        }
    }

    #[test]
    fn a_chunk_line_another_parser_could_end_elsewhere_is_refused() {
        use Refusal::*;
        let cases: &[(&[u8], Refusal, &[u8])] = &[
            // The smuggling shape: httparse reads `\nxx` as the extension, a proxy that ends
            // lines at LF reads `xx` as data.
            (b"2;\nxx\r\n50\r\n0\r\n\r\n", BareLf, b"\n"),
            (b"5\nhello\r\n", BareLf, b"\n"),
            (b"5;a\x01b\r\nhello\r\n", ChunkExtension, b"\x01"),
            (b"5;a=\"x\r\nhello\r\n", ChunkExtension, b"\r"),
            (b"5;a=\"x\\\r\n", ChunkExtension, b"\r"),
            (b"5;\r\nhello\r\n", ChunkExtension, b"\r"),
            (b"5;=b\r\n", ChunkExtension, b"="),
            (b"5;a=\r\n", ChunkExtension, b"\r"),
            (b"5;a b\r\n", ChunkExtension, b"b"),
            (b"5 5\r\n", ChunkExtension, b"5\r"),
            (b"5\rhello", BareCr, b"h"),
            // No size: httparse reads these as the last chunk.
            (b"\r\n", ChunkSize, b"\r"),
            (b";a\r\n", ChunkSize, b";"),
            (b" 5\r\n", ChunkSize, b" "),
            (b"5x\r\n", ChunkSize, b"x"),
            (b"00000000000000005\r\n", ChunkSize, b"5\r"),
            (b"5\r\nhelloXX", ChunkDataEnd, b"XX"),
            (b"5\r\nhello\rX", ChunkDataEnd, b"X"),
            (b"0\r\nTrailer: x\n\r\n", BareLf, b"\n\r\n"),
            (b"0\r\nTrailer: x\rY\r\n", BareCr, b"Y"),
        ];
        for (body, refusal, from) in cases {
            let stream = chunked(body);
            let at = CHUNKED_HEAD.len()
                + body
                    .windows(from.len())
                    .position(|w| w == *from)
                    .expect("the case names where it is refused");
            assert_eq!(
                follow(&stream),
                Err((at, *refusal)),
                "{}",
                body.escape_ascii()
            );
        }
    }

    #[test]
    fn a_long_chunk_line_is_refused() {
        let long = cat(&[b"5;", &[b'a'; MAX_CHUNK_LINE - 4], b"\r\n"]);
        assert_eq!(RequestFraming::new().read(&chunked(&long)), Ok(()));
        let longer = cat(&[b"5;", &[b'a'; MAX_CHUNK_LINE - 3], b"\r\n"]);
        assert_eq!(
            RequestFraming::new().read(&chunked(&longer)),
            Err((
                CHUNKED_HEAD.len() + MAX_CHUNK_LINE,
                Refusal::ChunkLineTooLong
            ))
        );
    }

    /// Pingora refuses such a head: nothing after it is passed on.
    #[test]
    fn after_a_content_length_pingora_refuses_nothing_is_read() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5,\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            let stream = cat(&[head, b"hello"]);
            assert_eq!(
                follow(&stream),
                Err((head.len(), Refusal::ContentLength)),
                "{}",
                head.escape_ascii()
            );
        }
        // Past what is kept of the line, too.
        let padded = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}5\r\n\r\n",
            "0".repeat(MAX_LENGTH_LINE)
        );
        let stream = cat(&[padded.as_bytes(), b"hello"]);
        assert_eq!(
            RequestFraming::new().read(&stream),
            Err((padded.len(), Refusal::ContentLength))
        );
        // With Transfer-Encoding, the length is not read (Pingora drops it).
        let both = chunked(b"0\r\n\r\n");
        let both = cat(&[&both[..18], b"Content-Length: x\r\n", &both[18..]]);
        assert_eq!(follow(&both), Ok(()));
    }

    #[test]
    fn once_refused_every_read_is() {
        let mut framing = RequestFraming::new();
        assert!(framing.read(&chunked(b"\r\n")).is_err());
        assert_eq!(framing.stopped(), Some(Refusal::ChunkSize));
        assert_eq!(
            framing.read(b"GET / HTTP/1.1\r\n\r\n"),
            Err((0, Refusal::ChunkSize))
        );
        assert_eq!(framing.read(b""), Err((0, Refusal::ChunkSize)));
    }

    /// The refusal survives the way Pingora wraps a failed read.
    #[test]
    fn the_refusal_is_found_in_pingoras_error() {
        let read = pingora::Error::because(
            pingora::ErrorType::ReadError,
            "when reading body",
            io::Error::from(Refusal::BareLf),
        );
        assert_eq!(refusal_in(&read), Some(Refusal::BareLf));
        let outer = pingora::Error::because(pingora::ErrorType::HTTPStatus(400), "outer", read);
        assert_eq!(refusal_in(&outer), Some(Refusal::BareLf));
        let other = pingora::Error::because(
            pingora::ErrorType::ReadError,
            "when reading body",
            io::Error::from(io::ErrorKind::ConnectionReset),
        );
        assert_eq!(refusal_in(&other), None);
    }

    proptest::proptest! {
        /// Every chunk line taken here ends, and has the size, where httparse (Pingora's
        /// parser) says: no line end is moved, only lines are refused.
        #[test]
        fn a_line_taken_is_read_alike_by_httparse(
            line in proptest::collection::vec(proptest::sample::select(
                b"0123456789abcdefABCDEF;=\" \t\\\r\nxz!\x01\x7f\x80".to_vec()
            ), 0..24)
        ) {
            let mut chunk = ChunkLine::default();
            let mut taken = None;
            for (i, &b) in line.iter().enumerate() {
                match chunk.byte(b) {
                    Ok(None) => continue,
                    Ok(Some(size)) => taken = Some((i + 1, size)),
                    Err(_) => {}
                }
                break;
            }
            if let Some((end, size)) = taken {
                let theirs = httparse::parse_chunk_size(&line);
                proptest::prop_assert_eq!(
                    theirs, Ok(httparse::Status::Complete((end, size))), "{}", line.escape_ascii()
                );
            }
        }
    }
}
