//! Reading a request body whole, within `signatures.max_body`, for the two sides that must see
//! all of it before sending anything upstream (inbound: the digest check; outbound: signing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use peergate_signature::Reason;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;

use crate::problem::{Code, Problem};
use crate::request_cap::RequestCap;

/// Why a body was not read: a problem to answer with, or the client connection failing.
pub enum BodyError {
    Refused(Problem),
    Client(Box<pingora::Error>),
}

impl From<Problem> for BodyError {
    fn from(p: Problem) -> Self {
        BodyError::Refused(p)
    }
}

/// The request-body bytes held at once by every request on both listeners, bounded by
/// `signatures.max_buffered`. Each body is read whole before anything is forwarded (checked
/// against its digest inbound, signed outbound), so without this a peer, or the app, sending
/// many large bodies at once would make peergate hold them all.
#[derive(Default)]
pub struct BodyBudget {
    held: AtomicU64,
}

#[cfg(test)]
impl BodyBudget {
    fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// One request's share of the [`BodyBudget`]: given back when dropped, which is once the
/// request has been forwarded or refused.
pub struct Held {
    budget: Arc<BodyBudget>,
    /// `signatures.max_buffered` of the configuration the request started with.
    limit: u64,
    bytes: u64,
}

impl Held {
    pub fn new(budget: &Arc<BodyBudget>, limit: u64) -> Held {
        Held {
            budget: budget.clone(),
            limit,
            bytes: 0,
        }
    }

    /// Counts the body up to `total` bytes in all (nothing when as much is counted already).
    fn grow_to(&mut self, total: u64) -> Result<(), Problem> {
        match total.checked_sub(self.bytes) {
            Some(more) if more > 0 => self.grow(more),
            _ => Ok(()),
        }
    }

    /// Counts `more` bytes against the budget, or refuses (503 `overloaded`) when that would
    /// pass the limit: the body waits for nothing, it is refused at once and its client may
    /// try again shortly.
    fn grow(&mut self, more: u64) -> Result<(), Problem> {
        let held = &self.budget.held;
        let mut now = held.load(Ordering::Relaxed);
        loop {
            let next = now
                .checked_add(more)
                .filter(|&n| n <= self.limit)
                .ok_or_else(|| overloaded(self.limit))?;
            match held.compare_exchange_weak(now, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => now = actual,
            }
        }
        self.bytes = self.bytes.saturating_add(more);
        Ok(())
    }
}

/// A body read whole with its share of the budget: dropping it lets both go.
pub struct HeldBody {
    pub bytes: Bytes,
    _held: Held,
}

impl HeldBody {
    fn new(bytes: Bytes, held: Held) -> HeldBody {
        HeldBody { bytes, _held: held }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

fn overloaded(limit: u64) -> Problem {
    Problem::new(
        503,
        Code::Overloaded,
        "Too many request bodies at once",
        format!(
            "peergate holds at most {} of request bodies at once (signatures.max_buffered) \
             and this one would pass that; send it again shortly",
            crate::config::ByteSize(limit)
        ),
    )
}

pub fn too_large(max: u64) -> Problem {
    Problem::from_reason(
        Reason::BodyTooLarge,
        format!(
            "the body is larger than this peergate accepts ({}, its signatures.max_body); send less",
            crate::config::ByteSize(max)
        ),
    )
}

/// The `Transfer-Encoding` of a request or an answer as listed (its fields joined), unless it is
/// none or `chunked` alone: the only framing peergate can pass on without losing something, as
/// a body is taken out of its chunks and sent on with a length or in new chunks (or as HTTP/2
/// data), so a `gzip` or any other coding before `chunked` would be dropped and the reader
/// would take coded bytes for the content.
pub fn codings_besides_chunked(headers: &http::HeaderMap) -> Option<String> {
    let fields = headers.get_all(http::header::TRANSFER_ENCODING);
    let mut codings = fields
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    let first = codings.next()?;
    if first.eq_ignore_ascii_case(b"chunked") && codings.next().is_none() {
        return None;
    }
    let listed: Vec<String> = fields
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    Some(listed.join(", "))
}

/// How a request's body is framed, once it is known to be a framing peergate can forward as it
/// came: only [`framing`] makes one, so [`read_whole`] takes the checked framing instead of
/// checking the head a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    declared: Option<u64>,
}

impl Framing {
    /// The Content-Length the client declared (none for a chunked body).
    pub fn declared(self) -> Option<u64> {
        self.declared
    }
}

/// The request's [`Framing`]: a malformed or conflicting length is refused, and so is a
/// transfer coding other than `chunked` alone ([`codings_besides_chunked`]; RFC 9112 §6.1: such
/// a request is refused).
pub fn framing(req: &RequestHeader) -> Result<Framing, Problem> {
    if let Some(listed) = codings_besides_chunked(&req.headers) {
        return Err(Problem::new(
            400,
            Code::BadRequest,
            "Bad request",
            format!(
                "Transfer-Encoding {listed:?}: peergate forwards only chunked alone; send the body \
                 with Content-Length or chunked, uncoded (Content-Encoding is fine)"
            ),
        ));
    }
    // Past the check above, a Transfer-Encoding can only be `chunked` alone.
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let mut found: Option<u64> = None;
    for value in req.headers.get_all(http::header::CONTENT_LENGTH) {
        let n = value
            .to_str()
            .ok()
            .map(str::trim)
            // 1*DIGIT (RFC 9110 §8.6): `parse` would also take a sign.
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                Problem::new(
                    400,
                    Code::BadRequest,
                    "Bad request",
                    "Content-Length must be a single number (RFC 9110 §8.6)",
                )
            })?;
        if found.is_some_and(|f| f != n) {
            return Err(Problem::new(
                400,
                Code::BadRequest,
                "Bad request",
                "conflicting Content-Length fields",
            ));
        }
        found = Some(n);
    }
    // A chunked body is framed by its chunks, whatever length is declared beside them (Pingora
    // drops such a length over HTTP/1.1; HTTP/2 has no chunks): no length to count it by.
    Ok(Framing {
        declared: found.filter(|_| !chunked),
    })
}

/// How long a body may send nothing before it is refused. Pingora times out each HTTP/1 read
/// after 60 s itself, but not an HTTP/2 stream's: a stream that stopped mid-body held its
/// buffer, and kept its connection from ever being idle, for as long as the client liked.
const BODY_STALL: Duration = Duration::from_secs(60);

/// The refusals a declared length decides before any of the body is read: past `limit` (413
/// `body_too_large`), or past the budget (503 `overloaded`; else the length is counted in
/// `held`, and [`read_whole`] does not count it again). The inbound side asks this before the
/// request's nonce is recorded, so that a sender told to send less, or to try again shortly,
/// can send the same signed request again; a chunked body's length shows only as it comes.
pub fn admit_declared(framing: Framing, limit: u64, held: &mut Held) -> Result<(), Problem> {
    match framing.declared {
        Some(n) if n > limit => Err(too_large(limit)),
        Some(n) => held.grow_to(n),
        None => Ok(()),
    }
}

/// Waits for the end of an HTTP/2 request that declares `content-length: 0` but has not ended
/// its stream. Pingora takes such a body for empty and never reads it, so DATA the client sent
/// after the head was dropped, and the request answered as if it were well formed; RFC 9113
/// §8.1.1 makes a length that differs from the DATA a malformed request, a stream error. Read
/// here, that DATA makes `h2` reset the stream (`PROTOCOL_ERROR`), as it does for any length the
/// DATA passes, and nothing is forwarded. A stream ended with its head, the usual case, reads
/// as ended at once. Nothing to do over HTTP/1.1: there the length alone says where the
/// request ends.
pub async fn end_declared_empty(session: &mut Session, framing: Framing) -> Result<(), BodyError> {
    if framing.declared != Some(0) || !session.is_http2() || session.body_bytes_read() > 0 {
        return Ok(());
    }
    loop {
        match tokio::time::timeout(BODY_STALL, session.read_request_body()).await {
            Err(_) => return Err(BodyError::Refused(stalled())),
            Ok(Ok(None)) => return Ok(()),
            // An empty DATA frame (some clients end a stream with one).
            Ok(Ok(Some(chunk))) if chunk.is_empty() => continue,
            // `h2` resets the stream before handing over DATA past the declared length; kept
            // for a stream that got here anyway.
            Ok(Ok(Some(_))) => return Err(BodyError::Refused(data_past_zero())),
            // The stream is reset already; the refusal is for the log and the metrics.
            Ok(Err(e)) if reset_for_its_length(&e) => {
                return Err(BodyError::Refused(data_past_zero()))
            }
            Ok(Err(e)) => return Err(client(e)),
        }
    }
}

/// Whether `e` is `h2`'s own reset of the stream (`PROTOCOL_ERROR`), which it makes when DATA
/// passes the declared length: the client did not leave, its request was malformed.
fn reset_for_its_length(e: &pingora::Error) -> bool {
    e.root_cause()
        .downcast_ref::<h2::Error>()
        .is_some_and(|h2| h2.is_library() && h2.reason() == Some(h2::Reason::PROTOCOL_ERROR))
}

fn data_past_zero() -> Problem {
    Problem::new(
        400,
        Code::BadRequest,
        "Bad request",
        "the request declares content-length: 0 and sends DATA (RFC 9113 §8.1.1)",
    )
}

fn stalled() -> Problem {
    Problem::new(
        400,
        Code::BadRequest,
        "Bad request",
        format!(
            "the request body stalled: no data for {} s",
            BODY_STALL.as_secs()
        ),
    )
}

/// Reads the whole body of a request whose `framing` was checked (refusing past `limit` bytes,
/// by the declared length before reading when there is one), handing every chunk to `inspect` as it arrives, and counting it in
/// `held`: a declared length whole before anything is read (so a refusal comes before the
/// client sends the body), a chunked body as it comes. The body comes back with that share,
/// which a refusal gives back at once. A client waiting for `100 Continue` gets it first: by
/// then the request head has been accepted.
pub async fn read_whole(
    session: &mut Session,
    framing: Framing,
    limit: u64,
    mut held: Held,
    mut inspect: impl FnMut(&[u8]) -> Result<(), Problem>,
) -> Result<HeldBody, BodyError> {
    let declared = framing.declared;
    admit_declared(framing, limit, &mut held)?;
    end_declared_empty(session, framing).await?;
    if session.is_body_empty() {
        return Ok(HeldBody::new(Bytes::new(), held));
    }
    if expects_continue(session.req_header()) {
        let mut cont = ResponseHeader::build(100, Some(0)).map_err(BodyError::Client)?;
        cont.set_reason_phrase(Some("Continue"))
            .map_err(BodyError::Client)?;
        // Pingora turns keep-alive off for an answer head written before the body is read, a
        // 100 too; but this body is read whole next, and a refusal partway closes the
        // connection itself (`Record::refuse`). Kept, a client sending `Expect` (curl does for
        // bodies over 1 MiB) need not open a connection per request.
        let kept = session.get_keepalive();
        session
            .write_response_header(Box::new(cont), false)
            .await
            .map_err(client)?;
        session.set_keepalive(kept);
    }
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    let capacity = declared
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(max);
    let mut body = BytesMut::with_capacity(capacity);
    loop {
        let read = tokio::time::timeout(BODY_STALL, session.read_request_body()).await;
        let Ok(read) = read else {
            return Err(BodyError::Refused(stalled()));
        };
        let chunk = match read {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                // Where this body ends is not known (a chunk that does not parse, a connection
                // cut mid-body), so nothing after it on the connection can be read as a request
                // (RFC 9112 §6.3): Pingora counts a body whose chunks failed to parse as done,
                // and a connection kept after the refusal read the bytes the client sent as
                // the body's next chunk as a request of their own.
                session.set_keepalive(None);
                return Err(malformed_or_client(e));
            }
        };
        if body.len().saturating_add(chunk.len()) > max {
            return Err(too_large(limit).into());
        }
        if declared.is_none() {
            held.grow(u64::try_from(chunk.len()).unwrap_or(u64::MAX))?;
        }
        inspect(&chunk)?;
        body.extend_from_slice(&chunk);
    }
    Ok(HeldBody::new(body.freeze(), held))
}

/// How much of a refused request's body [`discard_after_refusal`] reads (over HTTP/2, and over
/// HTTP/1.1), for how long in all, how long it waits for each piece, and for how many requests
/// at once in the process.
const DISCARD_LIMIT: u64 = 1 << 20;
const DISCARD_LIMIT_H1: u64 = 64 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(2);
const DISCARD_IDLE: Duration = Duration::from_millis(200);
const DISCARDING_AT_ONCE: usize = 256;
static DISCARDING: LazyLock<Arc<RequestCap>> =
    LazyLock::new(|| RequestCap::new(DISCARDING_AT_ONCE));

/// Whether a refusal is followed by [`discard_after_refusal`].
///
/// Over HTTP/1.1 the connection is closed after a refusal with the body unread
/// (`Record::refuse`), and closed so, with bytes still coming in, the kernel resets it: the
/// client, still sending, gets a broken pipe and loses the answer that was already on its
/// way. peergate's own outbound side was such a client, and a peer's 401 or 413 for a body
/// of some hundred kilobytes reached the calling app as a 502 "broke off the exchange". So the
/// body is read to its end first (as nginx's lingering close does), within bounds; a refusal
/// for size or load (413, 503) too, as nothing of it is held.
///
/// Over HTTP/2 a stream whose body is left unread is reset once the answer is written
/// (`RST_STREAM` with `NO_ERROR`, RFC 9113 §8.1), which is correct, but clients still sending
/// (curl 7.88, Debian 12's) then report a framing error and drop the answer: an unsigned POST
/// of a few hundred kilobytes showed no problem document at all. Read to its end, the stream
/// closes as any other. Left to the reset that stops them there: a body announced as larger
/// than [`DISCARD_LIMIT`], and a refusal for size or load (413, 503).
///
/// Never read: a body the client sends only after a `100 Continue` it was not given, and a
/// CONNECT's (a tunnel has no end).
pub fn discards(session: &mut Session, status: u16) -> bool {
    if session.is_body_done() {
        return false;
    }
    let h2 = session.is_http2();
    let req = session.req_header();
    // `read_whole` sends `100 Continue` before it reads: once anything was read, the client
    // was told to send.
    let unasked = expects_continue(req) && session.body_bytes_read() == 0;
    if unasked || req.method == http::Method::CONNECT {
        return false;
    }
    if !h2 {
        return true;
    }
    let declared = framing(req).ok().and_then(Framing::declared);
    !(matches!(status, 413 | 503) || declared.is_some_and(|n| n > DISCARD_LIMIT))
}

/// Reads what is left of a refused request's body and drops it (see [`discards`]): up to
/// [`DISCARD_LIMIT`] bytes ([`DISCARD_LIMIT_H1`] over HTTP/1.1), for [`DISCARD_TIME`] in all and
/// [`DISCARD_IDLE`] between pieces, for at most [`DISCARDING_AT_ONCE`] requests at once. The
/// request has given back its place under the listener's request ceiling by then, so these
/// bounds are what keep clients that send bodies slowly, or not at all, from holding anything
/// long. Past them the connection or stream is cut as before.
pub async fn discard_after_refusal(session: &mut Session) {
    let Ok(_place) = DISCARDING.admit() else {
        return;
    };
    let limit = if session.is_http2() {
        DISCARD_LIMIT
    } else {
        DISCARD_LIMIT_H1
    };
    let mut read: u64 = 0;
    let discard = async {
        // Past the limit, at a read error or a pause, the stream is left to its reset.
        while let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(DISCARD_IDLE, session.read_request_body()).await
        {
            read = read.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            if read > limit {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, discard).await;
}

/// A chunked body that does not parse is the client's mistake, not its leaving: answered 400,
/// naming what was wrong, and the connection closed after it (`Record::refuse`).
fn malformed_or_client(e: Box<pingora::Error>) -> BodyError {
    match malformed_framing(&e) {
        Some(problem) => BodyError::Refused(problem),
        None => client(e),
    }
}

/// The 400 for a chunked body whose framing broke, found by Pingora or, stricter, by
/// [`crate::request_framing`]; `None` for any other failure.
pub fn malformed_framing(e: &pingora::Error) -> Option<Problem> {
    let what = match crate::request_framing::refusal_in(e) {
        Some(refusal) => refusal.detail().to_string(),
        None if matches!(e.etype().as_str(), "InvalidChunk" | "InvalidTrailerEnd") => {
            crate::forward::error_text(e)
        }
        None => return None,
    };
    Some(Problem::new(
        400,
        Code::BadRequest,
        "Bad request",
        format!("the request body's chunked framing is malformed: {what}"),
    ))
}

/// A failure of the client's connection while its body is read (a reset, a connection closed
/// early), tagged as the client's. Pingora logs the error of a
/// request that fails this way, and the log throttles its lines about clients by that tag, as
/// any allowlisted peer, or the app on the outbound side, can cause one per request.
fn client(e: Box<pingora::Error>) -> BodyError {
    BodyError::Client(e.into_down())
}

/// Whether the client waits for a `100 Continue` before it sends the body. Not an HTTP/1.0
/// client's `Expect`, which RFC 9110 §10.1.1 says to ignore: such a client cannot know a `1xx`
/// and would take the `100` for its answer, out of step on a kept connection.
fn expects_continue(req: &RequestHeader) -> bool {
    req.version >= http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Expect: 100-continue` is waited on from HTTP/1.1 clients only (RFC 9110 §10.1.1).
    #[test]
    fn an_http10_clients_expect_is_ignored() {
        let head = |version, expect: &str| {
            let mut req = RequestHeader::build("POST", b"/x", None).unwrap();
            req.set_version(version);
            req.insert_header("expect", expect).unwrap();
            req
        };
        assert!(expects_continue(&head(
            http::Version::HTTP_11,
            "100-continue"
        )));
        assert!(expects_continue(&head(
            http::Version::HTTP_11,
            "100-Continue"
        )));
        assert!(!expects_continue(&head(
            http::Version::HTTP_10,
            "100-continue"
        )));
        assert!(!expects_continue(&head(
            http::Version::HTTP_11,
            "100-continue, x"
        )));
    }

    #[test]
    fn only_chunked_alone_is_a_framing_to_pass_on() {
        let listed = |fields: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for f in fields {
                headers.append(
                    http::header::TRANSFER_ENCODING,
                    http::HeaderValue::from_str(f).unwrap(),
                );
            }
            codings_besides_chunked(&headers)
        };
        for alone in [&[][..], &["chunked"], &["Chunked"], &[" chunked "]] {
            assert_eq!(listed(alone), None, "{alone:?}");
        }
        assert_eq!(listed(&["gzip, chunked"]).as_deref(), Some("gzip, chunked"));
        assert_eq!(
            listed(&["gzip", "chunked"]).as_deref(),
            Some("gzip, chunked")
        );
        assert_eq!(
            listed(&["chunked, chunked"]).as_deref(),
            Some("chunked, chunked")
        );
        assert_eq!(listed(&["chunked", ""]).as_deref(), Some("chunked, "));
        assert_eq!(listed(&[""]).as_deref(), Some(""));
    }

    /// A chunked body is counted by its chunks, whatever length is declared beside it.
    #[test]
    fn a_chunked_body_declares_no_length() {
        let mut req = RequestHeader::build("POST", b"/x", None).unwrap();
        req.insert_header("content-length", "5").unwrap();
        assert_eq!(framing(&req).map(Framing::declared), Ok(Some(5)));
        req.insert_header("transfer-encoding", "chunked").unwrap();
        assert_eq!(framing(&req).map(Framing::declared), Ok(None));
    }

    /// Shares add up to the limit and no further, a refused share takes nothing, and a dropped
    /// one gives back exactly what it took.
    #[test]
    fn the_budget_counts_shares_and_gets_them_back() {
        let budget = Arc::new(BodyBudget::default());
        let mut a = Held::new(&budget, 100);
        let mut b = Held::new(&budget, 100);
        assert!(a.grow(60).is_ok());
        assert!(a.grow(10).is_ok());
        let refused = b.grow(31).unwrap_err();
        assert_eq!((refused.status, refused.reason), (503, "overloaded"));
        assert_eq!(budget.held(), 70);
        assert!(b.grow(30).is_ok());
        assert_eq!(budget.held(), 100);
        assert!(b.grow(u64::MAX).is_err(), "no overflow past the limit");
        drop(a);
        assert_eq!(budget.held(), 30);
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
