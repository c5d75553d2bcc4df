//! Sends a request whose body peergate has already read, and streams the answer back.
//!
//! Pingora's proxy path sends the request head upstream before the first body byte is seen,
//! and can replay at most 64 KiB of a body it has read. peergate must check a body (up to
//! `signatures.max_body`) against its Content-Digest before anything reaches the upstream, and
//! the outbound side must hash the body before it can sign the head. So every signed request
//! takes this path, body or not: the head and the whole body are sent over HTTP/1.1 on a
//! connection kept in [`crate::pool`] (opened by Pingora's transport connector when none is
//! idle), and the response is relayed chunk by chunk.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as Http1Session;
use pingora::proxy::Session;
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorType, RetryType};

use crate::body::HeldBody;
use crate::metrics::UpstreamErrorKind;
use crate::pool::Pool;
use crate::problem::{Code, Problem};
use crate::resolve::RESOLVE_ERROR;

/// How a forward ended when it did not end well.
#[derive(Debug)]
pub enum ForwardError {
    /// Nothing was sent downstream yet: answer with this problem (502/504).
    Upstream {
        kind: UpstreamErrorKind,
        problem: Problem,
    },
    /// The response had started, or the client went away: the connection is cut.
    Aborted {
        kind: Option<UpstreamErrorKind>,
        detail: String,
    },
}

/// Maps a Pingora error on the way to an upstream to the metric kind and the status a client
/// should see: 504 when the upstream was too slow, 502 otherwise.
pub fn classify(e: &Error, what: &(dyn fmt::Display + Sync)) -> (UpstreamErrorKind, Problem) {
    use ErrorType::*;
    let no_socket = no_socket(e);
    let (kind, status) = match e.etype() {
        t if *t == RESOLVE_ERROR => (UpstreamErrorKind::Resolve, 502),
        InternalError if no_socket => (UpstreamErrorKind::Connect, 502),
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            (UpstreamErrorKind::Timeout, 504)
        }
        TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup => {
            (UpstreamErrorKind::Tls, 502)
        }
        ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError => {
            (UpstreamErrorKind::Connect, 502)
        }
        _ => (UpstreamErrorKind::Protocol, 502),
    };
    let detail = match kind {
        UpstreamErrorKind::Timeout => {
            format!("{what} did not answer in time ({})", error_text(e))
        }
        UpstreamErrorKind::Tls => {
            let text = error_text(e);
            let hint = tls_hint(&text);
            format!("the TLS handshake with {what} failed: {text}{hint}")
        }
        UpstreamErrorKind::Connect if no_socket => {
            let cause = e.root_cause();
            let code = cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error);
            let hint = match code {
                Some(libc::EMFILE) => "; peergate is at its open-files limit",
                Some(libc::ENFILE) => "; the system is at its open-files limit",
                _ => "",
            };
            format!("peergate could not open a connection to {what}: {cause}{hint}")
        }
        UpstreamErrorKind::Connect => format!("{what} cannot be reached: {}", error_text(e)),
        UpstreamErrorKind::Resolve => {
            // The context names the host; the cause says what the resolver answered.
            let context = e
                .context
                .as_ref()
                .map_or("cannot resolve its name", |c| c.as_str());
            match &e.cause {
                Some(cause) => format!("{what}: {context} ({cause})"),
                None => format!("{what}: {context}"),
            }
        }
        _ => format!("{what} broke off the exchange: {}", error_text(e)),
    };
    let problem = if status == 504 {
        Problem::new(504, Code::UpstreamTimeout, "Upstream timed out", detail)
    } else {
        Problem::new(502, Code::UpstreamUnreachable, "Upstream failed", detail)
    };
    (kind, problem)
}

/// Whether connecting failed before anything went out: Pingora could not create a socket or
/// find it a local address, which it reports as an internal error. The open-files limit under
/// a flood of client connections, or no local port left; the upstream may be fine.
fn no_socket(e: &Error) -> bool {
    e.etype() == &ErrorType::InternalError
        && e.cause
            .as_ref()
            .and_then(|c| c.downcast_ref::<Box<Error>>())
            .is_some_and(|c| matches!(c.etype(), ErrorType::SocketError | ErrorType::BindError))
}

/// The most of an error's text a detail or log line carries: Pingora's explanation of an answer
/// head it cannot parse quotes the upstream's bytes, up to 4 KiB of them.
const MAX_ERROR_TEXT: usize = 400;

/// What to do about a failed TLS handshake with a peer, from rustls's words for it: the fixes
/// are in this installation's configuration or the peer's URL, which the connector's error
/// does not name.
fn tls_hint(text: &str) -> &'static str {
    if text.contains("UnknownIssuer") {
        "; the peer's certificate is not signed by a CA this installation trusts: set \
         tls.peer_ca_file to the CA that issued it (or add it to that file; a restart applies \
         it), or give the peer a certificate the system roots trust"
    } else if text.contains("NotValidForName") {
        "; the peer's certificate does not name the host of its URL: check the peer's url on \
         the allowlist against the names its certificate holds"
    } else if text.contains("Expired") || text.contains("NotValidYet") {
        "; the peer's certificate is outside its validity period: check its renewal, and this \
         machine's clock"
    } else if text.contains("InvalidContentType") || text.contains("CorruptMessage") {
        "; what answered does not speak TLS: if the peer listens in plain HTTP there, its url \
         on the allowlist starts with http://"
    } else {
        ""
    }
}

/// The error type, then every explanation down the chain, each once:
/// `ConnectRefused: Fail to connect to 127.0.0.1:3000: Connection refused (os error 111)`.
/// (Pingora's own rendering repeats the type at every level of the chain.) At most
/// [`MAX_ERROR_TEXT`] bytes, then `...`.
pub fn error_text(e: &Error) -> String {
    let text = full_error_text(e);
    let cut = within(&text, MAX_ERROR_TEXT);
    if cut.len() < text.len() {
        format!("{cut}...")
    } else {
        text
    }
}

/// The longest start of `s` of at most `max` bytes that ends on a character boundary: error
/// texts that may quote what a client or an upstream sent are bounded with it.
pub fn within(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn full_error_text(e: &Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut push = |part: String| {
        if !part.is_empty() && parts.last() != Some(&part) {
            parts.push(part);
        }
    };
    let mut innermost = e;
    for err in chain(e) {
        if let Some(context) = &err.context {
            push(context.as_str().trim().to_string());
        }
        innermost = err;
    }
    // What the innermost Pingora error wraps: the system's own words, `Connection refused`.
    if let Some(cause) = innermost.cause.as_deref() {
        push(cause.to_string().trim().to_string());
    }
    let etype = e.etype().as_str();
    if parts.is_empty() {
        etype.to_string()
    } else {
        format!("{etype}: {}", parts.join(": "))
    }
}

/// `e` and the Pingora errors that caused it, outermost first.
pub fn chain(e: &Error) -> impl Iterator<Item = &Error> {
    std::iter::successors(Some(e), |err| err.cause.as_deref().and_then(as_pingora))
}

/// A cause in an error chain as a Pingora error: Pingora chains them boxed or not.
fn as_pingora<'e>(cause: &'e (dyn std::error::Error + Send + Sync + 'static)) -> Option<&'e Error> {
    cause
        .downcast_ref::<Error>()
        .or_else(|| cause.downcast_ref::<Box<Error>>().map(|b| &**b))
}

/// How recently a kept app connection must have been used to carry a request that cannot be
/// retried (POST, PATCH): well under the idle timeouts app servers close connections at
/// (2 s to 5 s in common ones).
pub const UNSAFE_REUSE_WITHIN: Duration = Duration::from_secs(1);

/// The most idle connections kept per upstream. Under a steady load the number of requests
/// in flight swings, and every connection closed at a dip is opened again at the next rise: to
/// a peer that is a TLS handshake on both gateways (benches/HISTORY.md, change 30, for what 128
/// cost). The list never holds more than were once in use at the same time, and
/// [`IDLE_TIMEOUT`] closes them after the load is gone.
const MOST_IDLE_PER_UPSTREAM: usize = 1024;

/// Idle connections kept per upstream under an open-files limit of `limit`: an eighth of it, so
/// that where the limit is small (1 024, the usual soft default when the hard limit is no
/// higher) kept connections leave descriptors for clients; between 16 and
/// [`MOST_IDLE_PER_UPSTREAM`].
pub fn idle_per_upstream(limit: Option<u64>) -> usize {
    let eighth = limit.map_or(MOST_IDLE_PER_UPSTREAM, |n| {
        usize::try_from(n / 8).unwrap_or(MOST_IDLE_PER_UPSTREAM)
    });
    eighth.clamp(16, MOST_IDLE_PER_UPSTREAM)
}

/// How long an idle upstream connection is kept (Pingora's proxy path too, for the inbound
/// side's public routes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Forwarder {
    /// Set once a graceful shutdown has begun: answers written then close their connection.
    stopping: crate::lifecycle::Stopping,
    connector: TransportConnector,
    pool: Arc<Pool>,
    /// How recently a kept connection must have been used to carry a request that cannot be
    /// retried (see [`UNSAFE_REUSE_WITHIN`]).
    unsafe_reuse_within: Duration,
    interims: Interims,
}

/// What becomes of an upstream's interim answers (`103`, `102`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Interims {
    /// Relayed to the client as they come (RFC 9110 §15.2), as on public routes: the inbound
    /// side, where they are the app's own.
    Relay,
    /// Read and dropped: the outbound side, where they are a peer's and the client is the app.
    /// Common HTTP clients (Python's `http.client`, so `requests` and urllib3) take a `103` for
    /// the final answer and leave the real one in the connection, where it answered the app's
    /// next request, to another peer maybe: with pipelining served in order, every later
    /// answer on the connection went one request late (found by a review). nginx does not
    /// pass them on either unless told to (`early_hints`).
    Drop,
}

impl Forwarder {
    /// `unsafe_reuse_within`: [`UNSAFE_REUSE_WITHIN`] for an upstream whose idle timeout is
    /// not known (the app), where a new connection costs little; [`IDLE_TIMEOUT`] for peers,
    /// whose listeners keep idle connections longer than that by default
    /// (`listen.idle_timeout`, 75 s; a peer that sets it lower, or a load balancer in front
    /// of it, can still close one under a request) and where a new connection costs a TLS
    /// handshake across the network.
    pub fn new(
        options: Option<ConnectorOptions>,
        unsafe_reuse_within: Duration,
        interims: Interims,
        stopping: crate::lifecycle::Stopping,
    ) -> Self {
        Forwarder {
            stopping,
            connector: TransportConnector::new(options),
            pool: Pool::new(idle_per_upstream(crate::fd_limit::soft()), IDLE_TIMEOUT),
            unsafe_reuse_within,
            interims,
        }
    }

    /// The handle on whether a graceful shutdown has begun, for a request's
    /// [`crate::record::Record`].
    pub fn stopping_handle(&self) -> crate::lifecycle::Stopping {
        self.stopping.clone()
    }

    /// Sends the head `build` makes from the client's, with `body`, to `peer`, lets
    /// `edit_response` adjust each head of the answer (relayed interim ones too), and relays
    /// the answer to `session`. Returns the status the client got. The body with its share of
    /// `signatures.max_buffered`, and `build` (which may hold a copy of it), are let go as soon
    /// as the answer's head is in, when no retry can need them: an answer relayed for minutes
    /// (a download, a stream, a slow client) does not keep a body held that was sent long
    /// before.
    ///
    /// `build` runs once per attempt: a retry sends a head made afresh (the outbound side's
    /// carries a new signature and nonce, since the peer may have recorded the first
    /// attempt's), so no copy of the head is kept for a retry that almost never happens.
    pub async fn forward(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        what: &(dyn fmt::Display + Sync),
        body: HeldBody,
        mut build: impl FnMut(&RequestHeader) -> Result<RequestHeader, ForwardError>,
        mut edit_response: impl FnMut(&mut ResponseHeader) -> pingora::Result<()>,
    ) -> Result<u16, ForwardError> {
        let upstream_failed = |e: Box<Error>| upstream_failure(&e, what);
        let client_left = |e: Box<Error>| client_left_early(&e, what);
        let key = peer.reuse_hash();
        let mut retried = false;
        let (mut up, mut resp, head_request) = loop {
            let mut req = build(session.req_header())?;
            frame(&mut req, &body.bytes).map_err(upstream_failed)?;
            let head_request = req.method == http::Method::HEAD;
            let idempotent = req.method.is_idempotent();
            // A retry always opens a new connection. A request that cannot be retried takes
            // only a connection used recently enough: one idle for longer may be being closed
            // by the upstream's own idle timeout just as the request goes out, a 502.
            let pooled = match (retried, idempotent) {
                (true, _) => None,
                (false, true) => self.pool.take(key),
                (false, false) => self.pool.take_fresh(key, self.unsafe_reuse_within),
            };
            let reused = pooled.is_some();
            let stream = match pooled {
                Some(stream) => stream,
                // Boxed: the connect-and-handshake future is 8 KiB, and held inline it made
                // every request's future that much larger (allocated, and copied when boxed,
                // for each request), though most requests take a kept connection.
                None => Box::pin(self.connector.new_stream(peer))
                    .await
                    .map_err(upstream_failed)?,
            };
            let exchanged = exchange(stream, peer, req, &body.bytes);
            match unless_client_leaves(session, exchanged)
                .await
                .map_err(client_left)?
            {
                Ok((mut reading, mut head)) => {
                    if head.status.is_informational() {
                        // Boxed: held inline, the relaying made every request's future larger
                        // (copied when boxed, for each request), though few answers have one.
                        let relayed = relay_interims(
                            session,
                            &mut reading,
                            head,
                            self.interims,
                            what,
                            &mut edit_response,
                        );
                        head = Box::pin(relayed).await?;
                    }
                    break (reading.session, head, head_request);
                }
                Err(mut e) => {
                    // Pingora's rule, as its proxy path applies it: an error that says the
                    // upstream closed a kept connection before answering (an idle connection
                    // it timed out as the request went out) is retried once on a new
                    // connection, for idempotent methods only (RFC 9110 9.2.2), as nginx does.
                    e.retry.decide_reuse(reused);
                    if reused && idempotent && e.retry() {
                        log::debug!("{what} closed a kept connection ({e}); retrying on a new one");
                        retried = true;
                        continue;
                    }
                    return Err(upstream_failed(e));
                }
            }
        };
        drop((body, build));
        edit_response(&mut resp).map_err(upstream_failed)?;
        let status = resp.status.as_u16();
        let no_body = bodiless(resp.status, head_request) || up.response_done();
        if !no_body {
            frame_for_client(session, &mut resp).map_err(upstream_failed)?;
        }
        if self.stopping.now() {
            session.set_keepalive(None);
        }

        let client_gone = |e: Box<Error>| client_gone(&e);
        session
            .write_response_header(Box::new(resp), no_body)
            .await
            .map_err(client_gone)?;
        if no_body {
            session
                .write_response_body(None, true)
                .await
                .map_err(client_gone)?;
        } else {
            loop {
                // Watched, as for the head: an answer whose next piece is slow to come (a
                // peer's with a `Content-Length`, which Pingora sends on only in full packets
                // or at its end) would otherwise write nothing, and see nothing of a client
                // that left, until it ends or times out.
                let read = unless_client_leaves(session, up.read_response_body())
                    .await
                    .map_err(client_gone)?;
                match read {
                    Ok(Some(chunk)) => {
                        let done = up.response_done();
                        session
                            .write_response_body(Some(chunk), done)
                            .await
                            .map_err(client_gone)?;
                        if done {
                            break;
                        }
                    }
                    Ok(None) => {
                        session
                            .write_response_body(None, true)
                            .await
                            .map_err(client_gone)?;
                        break;
                    }
                    Err(e) => {
                        // The head has gone out: `Record::forwarded` cuts the connection.
                        let (kind, _) = classify(&e, what);
                        return Err(ForwardError::Aborted {
                            kind: Some(kind),
                            detail: format!("{what} broke off its answer: {e}"),
                        });
                    }
                }
            }
        }
        if let HttpSession::H1(mut up) = up {
            up.respect_keepalive();
            if let Some(stream) = up.reuse().await {
                self.pool.put(key, stream);
            }
        }
        Ok(status)
    }
}

/// How long an upstream may take to answer before the client's connection is watched for its
/// leaving: a request answered sooner (nearly all) never pays the read that watching costs.
const WATCH_CLIENT_AFTER: Duration = Duration::from_millis(100);

/// Runs `exchange` (the request to the upstream, up to its answer's head), unless the client
/// goes away first: closes its connection, or resets its HTTP/2 stream. Then the exchange is
/// dropped with its upstream connection, so the app or the peer sees its client leave rather
/// than working for no one while peergate holds the connection, the body and the client's
/// place under `listen.max_connections` until the answer or its timeout (nginx does the same
/// by default, `proxy_ignore_client_abort off`). The error says how the client left.
///
/// Bytes from the client meanwhile (a pipelined next request) are not a leaving: Pingora keeps
/// them for the next request, served once this answer is relayed (`client_idle::limit`); a
/// client that closes after them is not seen leaving until then.
async fn unless_client_leaves<T>(
    session: &mut Session,
    exchange: impl std::future::Future<Output = T>,
) -> Result<T, Box<Error>> {
    tokio::pin!(exchange);
    if let Ok(done) = pingora::time::timeout(WATCH_CLIENT_AFTER, &mut exchange).await {
        return Ok(done);
    }
    // Boxed: held inline, the watch (Pingora's read future) made every request's future that
    // much larger (allocated, and copied when boxed, for each request) though few get here.
    Box::pin(watch_client(session, exchange)).await
}

/// [`unless_client_leaves`] once the upstream is slow.
async fn watch_client<T>(
    session: &mut Session,
    mut exchange: std::pin::Pin<&mut impl std::future::Future<Output = T>>,
) -> Result<T, Box<Error>> {
    tokio::select! {
        biased;
        done = &mut exchange => Ok(done),
        left = session.downstream_session.read_body_or_idle(true) => match left {
            Err(e) if matches!(
                e.etype,
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::H2Error
            ) => Err(e),
            _ => {
                session.set_keepalive(None);
                Ok(exchange.await)
            }
        },
    }
}

/// Relays `head`, an interim answer, and those after it to the client as they come (RFC 9110
/// §15.2), or drops them (`interims`), and returns the final one. Once one came, the upstream
/// has the request: whatever happens next is not retried.
async fn relay_interims(
    session: &mut Session,
    reading: &mut Reading,
    mut head: ResponseHeader,
    interims: Interims,
    what: &(dyn fmt::Display + Sync),
    edit_response: &mut impl FnMut(&mut ResponseHeader) -> pingora::Result<()>,
) -> Result<ResponseHeader, ForwardError> {
    let upstream_failed = |e: Box<Error>| upstream_failure(&e, what);
    while head.status.is_informational() {
        if interims == Interims::Relay {
            edit_response(&mut head).map_err(upstream_failed)?;
            relay_interim(session, head)
                .await
                .map_err(|e| client_gone(&e))?;
        }
        head = unless_client_leaves(session, reading.next_head())
            .await
            .map_err(|e| client_left_early(&e, what))?
            .map_err(upstream_failed)?;
    }
    Ok(head)
}

/// The upstream `what` failed before its answer began: a 502 or 504 for the client.
fn upstream_failure(e: &Error, what: &(dyn fmt::Display + Sync)) -> ForwardError {
    let (kind, problem) = classify(e, what);
    ForwardError::Upstream { kind, problem }
}

/// The client went away while its answer (or an interim one) was being written.
fn client_gone(e: &Error) -> ForwardError {
    ForwardError::Aborted {
        kind: None,
        detail: format!("the client went away: {e}"),
    }
}

/// The client left while `what` had yet to answer.
fn client_left_early(e: &Error, what: &(dyn fmt::Display + Sync)) -> ForwardError {
    ForwardError::Aborted {
        kind: None,
        detail: format!("the client went away before {what} answered; given up: {e}"),
    }
}

/// Writes an interim answer to the client, unless it cannot know one: an HTTP/1.0 client
/// (RFC 9110 §15.2). Pingora's HTTP/2 server drops it (its `h2` crate sends one head per
/// stream).
async fn relay_interim(session: &mut Session, head: ResponseHeader) -> pingora::Result<()> {
    if session.req_header().version == http::Version::HTTP_10 {
        return Ok(());
    }
    // Pingora writes a head with no time limit (its write timeout, `listen.idle_timeout`,
    // covers bodies): a client that read nothing while the upstream sent interim answers held
    // the request, and its body's share of `max_buffered`, for ever once the socket's buffers
    // were full (found by a review).
    let limit = match session.as_downstream() {
        pingora::protocols::http::ServerSession::H1(h1) => h1.get_write_timeout(),
        _ => None,
    };
    let write = session.write_response_header(Box::new(head), false);
    match limit {
        Some(limit) => match tokio::time::timeout(limit, write).await {
            Ok(written) => written,
            Err(_) => Error::e_explain(
                ErrorType::WriteTimedout,
                format!("the client took none of an interim answer for {limit:?}"),
            ),
        },
        None => write.await,
    }
}

/// An upstream session reading answer heads, against one deadline for all of them.
struct Reading {
    session: HttpSession,
    head_request: bool,
    /// When the final head must be in: the read timeout bounds each read, and the heads as a
    /// whole get as long, or an upstream sending them a byte at a time (or endless 1xx
    /// answers) would hold the request, and its body's share of `max_buffered`, for as long
    /// as it liked.
    deadline: Option<(std::time::Instant, Duration)>,
}

impl Reading {
    /// Reads the next answer head worth relaying. A `100 Continue` is not: peergate sends the
    /// upstream no `Expect` (the whole body goes with the head), and answered the client's
    /// own `Expect` before reading its body, so the client has had its 100 already.
    async fn next_head(&mut self) -> pingora::Result<ResponseHeader> {
        loop {
            let mut head = self.read_head().await?;
            if head.status != http::StatusCode::CONTINUE {
                prepare_answer(&mut head, self.head_request)?;
                return Ok(head);
            }
        }
    }

    /// Reads one answer head within what is left of the deadline.
    async fn read_head(&mut self) -> pingora::Result<ResponseHeader> {
        let up = &mut self.session;
        let head = async {
            up.read_response_header().await?;
            up.response_header()
                .cloned()
                .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response header"))
        };
        let Some((deadline, limit)) = self.deadline else {
            return head.await;
        };
        let timed_out = || {
            Error::explain(
                ErrorType::ReadTimedout,
                format!("no whole answer head within {} s", limit.as_secs_f32()),
            )
        };
        // Checked first: the timeout polls the read before its timer, so an upstream whose
        // next head is always ready (a flood of 1xx answers) would never meet it.
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err(timed_out());
        }
        pingora::time::timeout(deadline.saturating_duration_since(now), head)
            .await
            .map_err(|_| timed_out())?
    }
}

/// Sends the head and body on `stream` and reads the answer's first head (an interim one, or
/// the final one); 101 is never asked for.
async fn exchange(
    stream: pingora::protocols::Stream,
    peer: &HttpPeer,
    req: RequestHeader,
    body: &Bytes,
) -> pingora::Result<(Reading, ResponseHeader)> {
    let mut up: HttpSession = HttpSession::H1(Http1Session::new_with_options(stream, peer));
    // Pooled sessions do not carry the peer's timeouts; a slow upstream must become a 504.
    up.set_read_timeout(peer.options.read_timeout);
    up.set_write_timeout(peer.options.write_timeout);
    // A request that could not be written whole was not acted on: like a kept connection
    // closed before the answer (which Pingora marks so), worth one retry when reused.
    let unsent = |mut e: Box<Error>| {
        e.retry = RetryType::ReusedOnly;
        e
    };
    let head_request = req.method == http::Method::HEAD;
    up.write_request_header(Box::new(req))
        .await
        .map_err(unsent)?;
    if !body.is_empty() {
        up.write_request_body(body.clone(), true)
            .await
            .map_err(unsent)?;
    }
    up.finish_request_body().await.map_err(unsent)?;
    let mut reading = Reading {
        session: up,
        head_request,
        deadline: peer
            .options
            .read_timeout
            .map(|limit| (std::time::Instant::now() + limit, limit)),
    };
    let head = reading.next_head().await?;
    Ok((reading, head))
}

/// Frames an answer with a body that ends only when its upstream connection closes (neither a
/// length nor chunks). Relayed so, it would reach an HTTP/1 client the same way, and a cut one
/// (the upstream resetting, or closing TLS without `close_notify`) would read as whole. Chunked,
/// a cut shows: the last chunk never comes, as the connection is cut instead of the session
/// finished. An HTTP/1.0 client knows no chunks, so the close is all it has, and the connection
/// is not kept. Over HTTP/2 the end of the stream frames it, and a cut resets the stream.
pub fn frame_for_client(session: &mut Session, resp: &mut ResponseHeader) -> pingora::Result<()> {
    let framed = resp.headers.contains_key(http::header::CONTENT_LENGTH)
        || resp.headers.contains_key(http::header::TRANSFER_ENCODING);
    if framed {
        return Ok(());
    }
    match session.req_header().version {
        http::Version::HTTP_11 => resp.insert_header(http::header::TRANSFER_ENCODING, "chunked"),
        http::Version::HTTP_2 => Ok(()),
        _ => {
            session.set_keepalive(None);
            Ok(())
        }
    }
}

/// Readies an upstream's answer for the client, here and on the routes Pingora proxies itself
/// (`inbound.rs`): a 101 is refused, as peergate never asks for an upgrade (`Upgrade` is not
/// forwarded), so it is an upstream that does not speak HTTP as asked, and what follows it is
/// not an answer; so is a transfer coding other than `chunked` alone on an answer with a body,
/// which would be lost on the way (over HTTP/2 always; nginx refuses such an answer too; to a
/// HEAD request, or in a 204 or 304, it only says what would have been sent, RFC 9112 §6.1);
/// otherwise the hop-by-hop fields go.
pub fn prepare_answer(resp: &mut ResponseHeader, head_request: bool) -> pingora::Result<()> {
    let no_body = bodiless(resp.status, head_request);
    let refused = if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        Some("it switched protocols (101) without being asked to".to_string())
    } else if no_body {
        None
    } else {
        crate::body::codings_besides_chunked(&resp.headers).map(|listed| {
            format!(
                "it answered with Transfer-Encoding {listed:?}; only chunked alone can be \
                 relayed without losing the coding"
            )
        })
    };
    let refused = refused.or_else(|| one_length(resp, no_body).err());
    if let Some(why) = refused {
        let mut e = Error::explain(ErrorType::InvalidHTTPHeader, why);
        e.as_up();
        return Err(e);
    }
    strip_hop_by_hop(resp);
    // The answer goes on in peergate's own HTTP version (RFC 9110 §2.5), not the upstream's:
    // an `HTTP/1.0` status line would tell the client to expect no chunks and no keep-alive.
    resp.set_version(http::Version::HTTP_11);
    Ok(())
}

/// Whether an answer has no body whatever its fields say: one to a HEAD request, a 1xx, a 204
/// or a 304 (RFC 9110 §6.4.1). A 1xx framed as chunked (which RFC 9112 §6.1 forbids) made
/// clients that take a 103 as final, such as Python's `http.client`, read the real answer's
/// status line as a chunk.
pub fn bodiless(status: http::StatusCode, head_request: bool) -> bool {
    head_request
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
}

/// Leaves an answer at most one `Content-Length`, as RFC 9110 §8.6 and RFC 9112 §6.3 ask of a
/// recipient that passes it on: several equal values (`5, 5`, or two fields) become one, which
/// clients that refuse a list can read (Node.js does); a length beside `Transfer-Encoding` goes
/// (the coding frames the body); a 204 carries none (§8.6), nor does a 1xx. Different values
/// are an error.
fn one_length(resp: &mut ResponseHeader, bodiless: bool) -> Result<(), String> {
    let name = http::header::CONTENT_LENGTH;
    let chunked = resp.headers.contains_key(http::header::TRANSFER_ENCODING);
    if resp.status.is_informational() {
        // No body, no framing (RFC 9112 §6.1, RFC 9110 §8.6): a client that takes a 103 as
        // final would read the real answer by these fields.
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        resp.remove_header(&name);
        return Ok(());
    }
    if (chunked && !bodiless) || resp.status == http::StatusCode::NO_CONTENT {
        resp.remove_header(&name);
        return Ok(());
    }
    let fields = resp.headers.get_all(&name).iter().count();
    let listed = resp
        .headers
        .get(&name)
        .is_some_and(|v| v.as_bytes().contains(&b','));
    if fields > 1 || listed {
        return collapse_lengths(resp);
    }
    Ok(())
}

/// [`one_length`] for a length listed more than once.
fn collapse_lengths(resp: &mut ResponseHeader) -> Result<(), String> {
    let name = http::header::CONTENT_LENGTH;
    let mut values = resp
        .headers
        .get_all(&name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|v| v.trim_ascii());
    let first = values.next().unwrap_or_default();
    let valid = !first.is_empty() && first.iter().all(u8::is_ascii_digit);
    if !valid || values.any(|v| v != first) {
        return Err(format!(
            "it answered with Content-Length {:?}, which is not one length",
            lengths_text(resp)
        ));
    }
    let one = http::HeaderValue::from_bytes(first).map_err(|e| e.to_string())?;
    resp.insert_header(name, one).map_err(|e| e.to_string())
}

/// An answer's `Content-Length` fields as they came, joined, for an error's detail.
fn lengths_text(resp: &ResponseHeader) -> String {
    let joined: Vec<String> = resp
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    within(&joined.join(", "), 100).to_string()
}

/// Removes from an answer the fields that were for the connection it came on (RFC 9110
/// §7.6.1): the hop-by-hop ones and what its `Connection` names, but never what frames the
/// body; and `Proxy-Authenticate`, which is for the next client only (§11.7.1): to an app
/// using peergate as its HTTP proxy it would read as peergate asking for credentials.
/// Pingora writes the client's own `Connection`.
fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    let framing = |name: &http::HeaderName| {
        *name == http::header::CONTENT_LENGTH || *name == http::header::TRANSFER_ENCODING
    };
    // On every answer: no allocation unless there is something to remove.
    let doomed: Vec<http::HeaderName> = resp
        .headers
        .keys()
        .filter(|name| {
            crate::app_request::HOP_BY_HOP.contains(&name.as_str())
                || *name == http::header::PROXY_AUTHENTICATE
        })
        .cloned()
        .chain(
            crate::app_request::connection_tokens(&resp.headers)
                .filter_map(|t| http::HeaderName::from_bytes(t).ok())
                .filter(|name| !framing(name)),
        )
        .collect();
    for name in doomed {
        resp.remove_header(&name);
    }
}

/// Frames the head for a body peergate holds whole: `Content-Length`, never chunked, and never
/// a 100-continue for the upstream (the client got its 100 from us already); then HTTP/1.1.
fn frame(req: &mut RequestHeader, body: &Bytes) -> pingora::Result<()> {
    req.remove_header(&http::header::TRANSFER_ENCODING);
    req.remove_header(&http::header::EXPECT);
    if body.is_empty() && !method_expects_body(&req.method) {
        req.remove_header(&http::header::CONTENT_LENGTH);
    } else {
        req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    }
    to_http1(req)
}

/// Rewrites a head that arrived over HTTP/2 (or in absolute form) for an HTTP/1.1 upstream:
/// version 1.1, origin-form target, and the authority moved into `Host`.
fn to_http1(req: &mut RequestHeader) -> pingora::Result<()> {
    req.set_version(http::Version::HTTP_11);
    if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_string()) {
        let origin = req
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());
        let uri = http::Uri::try_from(origin)
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "request target", e))?;
        req.set_uri(uri);
        req.insert_header(http::header::HOST, authority)?;
    }
    Ok(())
}

fn method_expects_body(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pingora reports a socket it could not create as an internal error whose cause is the
    /// socket error: out of descriptors, the upstream was never tried.
    #[test]
    fn a_socket_that_cannot_be_opened_is_a_connect_failure_that_says_why() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let socket = Error::because(ErrorType::SocketError, "failed to create socket", emfile);
        let e = Error::because(ErrorType::InternalError, "Fail to connect to peer", socket);
        let (kind, problem) = classify(&e, &"Bob");
        assert_eq!(kind, UpstreamErrorKind::Connect);
        assert_eq!(
            (problem.status, problem.reason),
            (502, "upstream_unreachable")
        );
        assert!(
            problem
                .detail
                .starts_with("peergate could not open a connection to Bob: ")
                && problem
                    .detail
                    .ends_with("peergate is at its open-files limit"),
            "{}",
            problem.detail
        );

        // Any other internal error stays what it was.
        let other = Error::explain(ErrorType::InternalError, "something else");
        assert_eq!(classify(&other, &"Bob").0, UpstreamErrorKind::Protocol);
    }

    /// What the operator's log and the outbound app read: each explanation once, the type not
    /// repeated at every level as Pingora's own rendering does.
    #[test]
    fn an_error_chain_reads_as_one_line() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let inner = Error::because(
            ErrorType::ConnectRefused,
            "Fail to connect to 127.0.0.1:3000",
            refused,
        );
        let e = Error::because(ErrorType::ConnectRefused, "", inner);
        let (_, problem) = classify(&e, &"the app at 127.0.0.1:3000");
        assert_eq!(
            problem.detail,
            "the app at 127.0.0.1:3000 cannot be reached: ConnectRefused: Fail to connect to \
             127.0.0.1:3000: Connection refused (os error 111)"
        );
        let bare = Error::new(ErrorType::ReadError);
        assert_eq!(error_text(&bare), "ReadError");
        // An unparsable answer head is quoted by Pingora; the text stays short.
        let long = Error::explain(
            ErrorType::InvalidHTTPHeader,
            format!("buf: {}", "é".repeat(3000)),
        );
        let text = error_text(&long);
        assert!(text.len() <= MAX_ERROR_TEXT + 3, "{}", text.len());
        assert!(text.starts_with("InvalidHTTPHeader: buf: é") && text.ends_with("..."));
        assert_eq!(within("éé", 3), "é");
        assert_eq!(within("éé", 10), "éé");
        assert_eq!(within("é", 1), "");
    }

    #[test]
    fn kept_connections_follow_the_open_files_limit() {
        // The common soft default keeps what peergate kept before it followed the limit.
        assert_eq!(idle_per_upstream(Some(1024)), 128);
        assert_eq!(idle_per_upstream(Some(4096)), 512);
        assert_eq!(idle_per_upstream(Some(8192)), 1024);
        assert_eq!(idle_per_upstream(Some(1 << 20)), 1024);
        assert_eq!(idle_per_upstream(Some(64)), 16);
        assert_eq!(idle_per_upstream(Some(0)), 16);
        assert_eq!(idle_per_upstream(None), 1024);
    }
}
