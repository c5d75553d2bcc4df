//! What one request went through, on either listener: refused by policy, failed upstream, or
//! answered; and the one place that turns that into the client's answer, the metrics and the
//! log line, so the inbound and outbound sides report the same way.

use std::fmt;
use std::time::{Duration, Instant};

use http::HeaderValue;
use pingora::proxy::Session;

use crate::forward::ForwardError;
use crate::metrics::{Direction, Metrics, Outcome, UpstreamErrorKind, UNKNOWN_PEER};
use crate::problem::Problem;
use crate::throttle::Throttle;

pub struct Record {
    start: Instant,
    direction: Direction,
    refused: Option<&'static str>,
    upstream_error: Option<UpstreamErrorKind>,
    /// Status peergate sent itself (refusals, failures, its own answers, buffered forwards);
    /// `None` when Pingora's proxy path answered.
    status: Option<u16>,
    /// The client left before its whole answer was written (the status may have gone out).
    client_left: bool,
    /// The method and target, kept from the head for the line of a request that is cancelled
    /// before [`Record::finish`]: at the end of a shutdown's grace period the runtimes drop
    /// what is still running, and Pingora's logging phase never comes. The target's bytes are
    /// shared, not copied.
    head: Option<(http::Method, http::Uri)>,
    finished: bool,
    /// Whether a graceful shutdown has begun: peergate's own answers then say
    /// `Connection: close`, as forwarded ones do (see [`crate::lifecycle::Stopping`]).
    stopping: crate::lifecycle::Stopping,
    /// The request's place under its listener's request ceiling: held until the record is
    /// dropped with the request's context, or given back when peergate answers it itself
    /// ([`Record::answering`]).
    slot: Option<crate::request_cap::Slot>,
    /// When a refusal was written, if the request went on to have its body dropped
    /// ([`crate::body::discard_after_refusal`]): its line and latency end there.
    refused_at: Option<Instant>,
}

/// Answers of peergate's own being written at once, in the whole process (see
/// [`Record::answering`]): each is a few hundred bytes and a request's state, so this many is a
/// few MiB at most.
const OWN_ANSWERS_AT_ONCE: usize = 256;
static OWN_ANSWERS: std::sync::LazyLock<std::sync::Arc<crate::request_cap::RequestCap>> =
    std::sync::LazyLock::new(|| crate::request_cap::RequestCap::new(OWN_ANSWERS_AT_ONCE));
/// How long a refusal may take to go out: a few hundred bytes, gone at once to any client that
/// reads.
const REFUSAL_WRITE: Duration = Duration::from_secs(5);
/// How long one of peergate's public pages may take to go out: up to a few hundred KiB (the
/// profile), which a slow link takes seconds to carry.
pub const PAGE_WRITE: Duration = Duration::from_secs(60);

impl Record {
    pub fn new(direction: Direction, stopping: crate::lifecycle::Stopping) -> Self {
        Record {
            start: Instant::now(),
            direction,
            refused: None,
            upstream_error: None,
            status: None,
            client_left: false,
            head: None,
            finished: false,
            stopping,
            slot: None,
            refused_at: None,
        }
    }

    /// Keeps the request's method and target for [`Record::unfinished`].
    pub fn begin(&mut self, req: &pingora::http::RequestHeader) {
        self.head = Some((req.method.clone(), req.uri.clone()));
    }

    /// Logs a request dropped before [`Record::finish`] (its context is dropped with it): cut
    /// at the end of a shutdown's grace period, the one way a request Pingora began ends
    /// without its logging phase. Not counted in the metrics: the process is exiting.
    pub fn unfinished(&self, peer: Option<&str>) {
        if self.finished {
            return;
        }
        let Some((method, uri)) = &self.head else {
            return;
        };
        let target = uri.path_and_query().map_or("", |pq| pq.as_str());
        log::info!(
            "{}",
            RequestLine {
                direction: self.direction,
                head: Some((method, target.as_bytes())),
                peer,
                outcome: Outcome::Aborted,
                reason: Some("cancelled"),
                status: self.status.unwrap_or(0),
                duration: Some(self.start.elapsed()),
            }
        );
    }

    /// Takes the request's place under its listener's request ceiling, or refuses the request
    /// (503 `overloaded`): `false` when it was refused.
    pub async fn admit(
        &mut self,
        session: &mut Session,
        cap: &std::sync::Arc<crate::request_cap::RequestCap>,
    ) -> bool {
        match cap.admit() {
            Ok(slot) => {
                self.slot = Some(slot);
                true
            }
            Err(problem) => {
                self.refuse(session, &problem, None).await;
                false
            }
        }
    }

    pub fn answered(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// Called before peergate writes an answer of its own: during a shutdown the answer then
    /// closes its connection.
    pub fn close_if_stopping(&self, session: &mut Session) {
        if self.stopping.now() {
            session.set_keepalive(None);
        }
    }

    /// The client closed, reset or stalled its connection before its whole answer was written
    /// (the status may have gone out): the request is `aborted`, not `ok`.
    pub fn client_left(&mut self) {
        self.client_left = true;
    }

    /// Answers with `problem` as a refusal of peergate's policy.
    pub async fn refuse(
        &mut self,
        session: &mut Session,
        problem: &Problem,
        accept_signature: Option<&HeaderValue>,
    ) {
        self.refused = Some(problem.reason);
        self.status = Some(problem.status);
        self.close_if_stopping(session);
        if !session.is_body_done() || session.req_header().method == http::Method::CONNECT {
            // Over HTTP/1.1 the rest of the body may not be read whole (it is read and dropped
            // after the answer, within bounds: `discard_after_refusal`), so the connection
            // cannot carry another request; over HTTP/2 this does nothing.
            session.set_keepalive(None);
        }
        let (place, limit) = self.answering(REFUSAL_WRITE);
        let sent = tokio::time::timeout(limit, problem.send(session, accept_signature)).await;
        drop(place);
        if let Err(e) = self.written(session, sent, "the refusal") {
            log::debug!("{}: {e}", self.direction.as_str());
            return;
        }
        if crate::body::discards(session, problem.status) {
            // Answered: the request no longer counts under the ceiling while its body is
            // dropped (bounded in `body::discard_after_refusal`).
            self.refused_at = Some(Instant::now());
            self.slot = None;
            crate::body::discard_after_refusal(session).await;
        }
    }

    /// Before peergate writes an answer of its own (a refusal, one of its public pages): the
    /// request gives back its place under the listener's request ceiling, which guards the
    /// app, the peers and the bodies' buffers, none of which this answer holds, and takes one
    /// of [`OWN_ANSWERS`] instead for at most `limit`, the time limit it returns. Past that
    /// many, the answer is written only if it goes out at once. A client that takes
    /// none of its answers (an HTTP/2 window left at zero) held each request's place until
    /// `listen.idle_timeout`: 45 connections of unsigned requests filled the ceiling, and every
    /// peer was refused `overloaded` (found by an audit).
    pub fn answering(&mut self, limit: Duration) -> (Option<crate::request_cap::Slot>, Duration) {
        self.slot = None;
        match OWN_ANSWERS.admit() {
            Ok(place) => (Some(place), limit),
            Err(_) => (None, Duration::ZERO),
        }
    }

    /// What writing an answer of peergate's own within [`Record::answering`]'s limit came to:
    /// one the client did not take in time leaves the connection to be closed, and the request
    /// `aborted`.
    pub fn written(
        &mut self,
        session: &mut Session,
        sent: Result<pingora::Result<()>, tokio::time::error::Elapsed>,
        what: &str,
    ) -> Result<(), String> {
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("could not send {what}: {e}")),
            Err(_) => {
                session.set_keepalive(None);
                self.client_left = true;
                Err(format!("the client did not take {what} in time; given up"))
            }
        }
    }

    /// Answers a failure to reach the upstream (the app, or a peer) with `problem` (502/504).
    pub async fn upstream_failed(
        &mut self,
        session: &mut Session,
        metrics: &Metrics,
        kind: UpstreamErrorKind,
        problem: &Problem,
    ) {
        metrics.upstream_error(self.direction, kind);
        self.upstream_error = Some(kind);
        self.status = Some(problem.status);
        self.close_if_stopping(session);
        let shown = match self.direction {
            Direction::Inbound => app_failure_for_callers(kind, problem),
            Direction::Outbound => {
                // The app gets the detail; the operator, who does not see the app's 502s,
                // gets it too, throttled: a peer down fails every call to it.
                warn_failure(Direction::Outbound, &problem.detail);
                None
            }
        };
        if let Err(e) = shown.as_ref().unwrap_or(problem).send(session, None).await {
            log::debug!(
                "{}: could not send the failure: {e}",
                self.direction.as_str()
            );
        }
    }

    /// Records how a forward ended, answering or cutting the connection as it requires. `Err`
    /// for a forward that was cut: the request filter returns it, so that Pingora drops the
    /// session instead of finishing it (see [`cut`]).
    pub async fn forwarded(
        &mut self,
        session: &mut Session,
        metrics: &Metrics,
        result: Result<u16, ForwardError>,
    ) -> pingora::Result<()> {
        match result {
            Ok(status) => self.status = Some(status),
            Err(ForwardError::Upstream { kind, problem }) => {
                self.upstream_failed(session, metrics, kind, &problem).await;
            }
            Err(ForwardError::Aborted { kind, detail }) => {
                match kind {
                    Some(kind) => {
                        // The app's failure, which anyone on a public route can make happen
                        // again and again, or a peer's, which every request of our app to it
                        // repeats: throttled as the app's other failures.
                        warn_failure(self.direction, &detail);
                        metrics.upstream_error(self.direction, kind);
                        self.upstream_error = Some(kind);
                    }
                    // The client's doing, which any peer (or the app) can repeat on every
                    // request; the request's line says `outcome=aborted`.
                    None => {
                        log::debug!("{}: {detail}", self.direction.as_str());
                        self.client_left = true;
                    }
                }
                session.set_keepalive(None);
                return Err(cut());
            }
        }
        Ok(())
    }

    /// Counts the request and writes its log line. `peer` is a short ID from the allowlist
    /// (the caller inbound, the peer called outbound) or `None`. Returns the instant it took as
    /// the end of the answer, from which the connection's next head deadline runs.
    pub fn finish(&mut self, session: &Session, metrics: &Metrics, peer: Option<&str>) -> Instant {
        self.finished = true;
        let now = Instant::now();
        let elapsed = self
            .refused_at
            .unwrap_or(now)
            .saturating_duration_since(self.start);
        let status = self
            .status
            .or_else(|| answer_written(session).map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let outcome = if self.refused.is_some() {
            Outcome::Refused
        } else if self.upstream_error.is_some() {
            Outcome::Error
        } else if status == 0 || self.client_left {
            Outcome::Aborted
        } else {
            Outcome::Ok
        };
        metrics.request(
            self.direction,
            peer.unwrap_or(UNKNOWN_PEER),
            outcome,
            self.refused,
            Some(elapsed),
        );
        let req = session.req_header();
        log::info!(
            "{}",
            RequestLine {
                direction: self.direction,
                head: Some((&req.method, req.raw_path())),
                peer,
                outcome,
                reason: self
                    .refused
                    .or(self.upstream_error.map(UpstreamErrorKind::as_str)),
                status,
                duration: Some(elapsed),
            }
        );
        now
    }
}

/// The head of the answer written to the client, if one was: not an interim answer (a 103),
/// which Pingora keeps as the response written, though a 502 or 504 can still follow it and a
/// client that leaves after it got no answer.
pub fn answer_written(session: &Session) -> Option<&pingora::http::ResponseHeader> {
    session
        .response_written()
        .filter(|r| !r.status.is_informational())
}

/// What a request filter returns for a forward that was cut ([`Record::forwarded`]). The
/// answer may have begun, and the client can only learn that it is cut from how the connection
/// ends: closed (HTTP/1.1) or its stream reset (HTTP/2). Returned as the filter's error, it
/// makes Pingora drop the session, which does exactly that, where after `Ok` Pingora would
/// finish the session: write a chunked body's last chunk or end the HTTP/2 stream, making the
/// cut answer look whole, and wait without a time limit for a client that reads nothing more
/// to take those bytes. Told as the client's side closing, with no answer to write.
fn cut() -> Box<pingora::Error> {
    let mut e = pingora::Error::explain(
        pingora::ErrorType::ConnectionClosed,
        "peergate cut the exchange (the request's line says why)",
    );
    e.esource = pingora::ErrorSource::Downstream;
    e
}

/// For [`pingora::proxy::ProxyHttp::suppress_error_log`]: Pingora logs every request that
/// failed at ERROR ("Fail to proxy", "Fail to filter request"), one line per request. When the
/// client closed, reset or stalled its connection, that is the client's doing, which any peer
/// or the app can repeat on every request, and the request's own line says `outcome=aborted`.
/// When the upstream failed, the request's line says `outcome=error` and peergate's own warning
/// names the failure at most once a second (`warn_failure`), where Pingora's lines would
/// flood the log at the rate anyone sends requests to a public route of a failing app. Either
/// way Pingora's line goes to `debug`, and ERROR keeps meaning something an operator must look
/// at; its other errors (internal ones) are still logged at ERROR.
pub fn pingora_error_told(direction: Direction, error: &pingora::Error) -> bool {
    let side = match error.esource() {
        pingora::ErrorSource::Downstream => "the client's side",
        pingora::ErrorSource::Upstream => "the upstream",
        _ => return false,
    };
    log::debug!("{}: {side} failed: {error}", direction.as_str());
    true
}

/// Counts and logs a request whose head Pingora could not read ([`crate::unreadable_head`]):
/// its method, target and caller are not known, and no start to time it from (a kept
/// connection may idle before the bytes come), so the line shows `-` for them.
pub fn unreadable_head(direction: Direction, metrics: &Metrics) {
    let reason = "bad_request";
    metrics.request(
        direction,
        UNKNOWN_PEER,
        Outcome::Refused,
        Some(reason),
        None,
    );
    log::info!(
        "{}",
        RequestLine {
            direction,
            head: None,
            peer: None,
            outcome: Outcome::Refused,
            reason: Some(reason),
            status: 400,
            duration: None,
        }
    );
}

/// A request's log line, in the one format README's "Logs" describes, however the request
/// ended. `-` stands for what is not known.
struct RequestLine<'a> {
    direction: Direction,
    /// The method and the target as received; `None` when the head could not be read.
    head: Option<(&'a http::Method, &'a [u8])>,
    peer: Option<&'a str>,
    outcome: Outcome,
    reason: Option<&'a str>,
    /// `0` when no answer was sent.
    status: u16,
    duration: Option<Duration>,
}

impl fmt::Display for RequestLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.direction.as_str())?;
        match self.head {
            Some((method, target)) => write!(f, " {} {}", MethodName(method), Target(target))?,
            None => f.write_str(" - -")?,
        }
        write!(
            f,
            " peer={} outcome={} reason={} status={} duration_ms=",
            self.peer.unwrap_or("-"),
            self.outcome.as_str(),
            self.reason.unwrap_or("-"),
            self.status
        )?;
        match self.duration {
            Some(duration) => write!(f, "{}", Millis(duration)),
            None => f.write_str("-"),
        }
    }
}

/// The request target as the log line shows it: its first 200 characters (invalid UTF-8
/// replaced), quoted and escaped as Rust's `Debug` does, so that a control character or a
/// quote cannot forge a line or a field; written straight into the line.
struct Target<'a>(&'a [u8]);

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = String::from_utf8_lossy(self.0);
        let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
        write!(f, "{:?}", text.get(..end).unwrap_or(&text))
    }
}

/// The method as the log line shows it: its first 32 characters, then `...`. A method is a
/// token (no space, quote or control character can be in it), but of any length: anyone could
/// otherwise write a line of a megabyte, which log collectors split into several.
struct MethodName<'a>(&'a http::Method);

impl fmt::Display for MethodName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 32;
        let name = self.0.as_str();
        match name.get(..SHOWN) {
            Some(start) if name.len() > SHOWN => write!(f, "{start}..."),
            _ => f.write_str(name),
        }
    }
}

/// A duration in milliseconds with three decimals (to the microsecond, rounded), written with
/// integers rather than float formatting with a precision, which showed in profiles of the
/// request path.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_nanos().saturating_add(500) / 1000;
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// The app's failures (inbound) and peers' (outbound), each logged at most once a second:
/// with the app down, every request fails the same way, and a line each would bury the rest
/// of the log; a peer that breaks off every answer would put a line in it for each request our
/// app sends it.
static APP_FAILURES: Throttle = Throttle::new();
static PEER_FAILURES: Throttle = Throttle::new();

pub fn warn_failure(direction: Direction, detail: &str) {
    let (throttle, whose) = match direction {
        Direction::Inbound => (&APP_FAILURES, "app"),
        Direction::Outbound => (&PEER_FAILURES, "peer"),
    };
    let side = direction.as_str();
    match throttle.admit_now() {
        Some(0) => log::warn!("{side}: {detail}"),
        Some(n) => log::warn!("{side}: {detail} ({n} more {whose} failures since the last line)"),
        None => {}
    }
}

/// What a caller of the inbound listener is told when the app failed: the kind of failure,
/// not the app's address or the connector's own words. Those are for the operator (logged
/// here); the caller is another installation, or on a public route anyone at all. `None`
/// keeps `problem` (a failure that is not the app's, such as an internal error).
fn app_failure_for_callers(kind: UpstreamErrorKind, problem: &Problem) -> Option<Problem> {
    let detail = match (problem.reason, kind) {
        ("upstream_timeout", _) => "the app behind this peergate did not answer in time",
        ("upstream_unreachable", UpstreamErrorKind::Protocol) => {
            "the app behind this peergate broke off the exchange or did not answer in HTTP"
        }
        ("upstream_unreachable", _) => "the app behind this peergate cannot be reached",
        _ => return None,
    };
    warn_failure(Direction::Inbound, &problem.detail);
    Some(Problem {
        detail: detail.to_string(),
        ..problem.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the log line used to write for a target: a `String` of its first 200 characters,
    /// formatted with `Debug`.
    fn collected(raw: &[u8]) -> String {
        let target: String = String::from_utf8_lossy(raw).chars().take(200).collect();
        format!("{target:?}")
    }

    #[test]
    fn targets_are_quoted_escaped_and_cut_at_200_characters() {
        let long = "/é".repeat(150);
        for raw in [
            &b"/hello?x=1"[..],
            b"/a\"b\\c",
            b"/line\nbreak\r\x1b[31m",
            b"/bad\xff\xfeutf8",
            long.as_bytes(),
            b"",
        ] {
            assert_eq!(Target(raw).to_string(), collected(raw), "{raw:?}");
        }
        assert_eq!(Target(b"/a\"\n").to_string(), r#""/a\"\n""#);
        assert_eq!(Target(long.as_bytes()).to_string().chars().count(), 202);
    }

    /// The three ways a request's line is written (finished, cut at shutdown, head unreadable)
    /// share README's field order, and `-` for what is not known.
    #[test]
    fn request_lines_have_one_format() {
        let get = http::Method::GET;
        let line = |head, peer, outcome, reason, status, duration| {
            RequestLine {
                direction: Direction::Inbound,
                head,
                peer,
                outcome,
                reason,
                status,
                duration,
            }
            .to_string()
        };
        assert_eq!(
            line(
                Some((
                    &get,
                    &b"/a b
"[..]
                )),
                Some("k4c5bqca"),
                Outcome::Ok,
                None,
                200,
                Some(Duration::from_micros(1500))
            ),
            r#"inbound GET "/a b\n" peer=k4c5bqca outcome=ok reason=- status=200 duration_ms=1.500"#
        );
        assert_eq!(
            line(
                Some((&get, &b"/x"[..])),
                None,
                Outcome::Aborted,
                Some("cancelled"),
                0,
                Some(Duration::ZERO)
            ),
            r#"inbound GET "/x" peer=- outcome=aborted reason=cancelled status=0 duration_ms=0.000"#
        );
        let long = http::Method::from_bytes("Y".repeat(100_000).as_bytes()).unwrap();
        assert_eq!(
            line(Some((&long, &b"/"[..])), None, Outcome::Refused, Some("missing_signature"), 401, None),
            format!(
                "inbound {}... \"/\" peer=- outcome=refused reason=missing_signature status=401 duration_ms=-",
                "Y".repeat(32)
            )
        );
        assert_eq!(
            line(None, None, Outcome::Refused, Some("bad_request"), 400, None),
            "inbound - - peer=- outcome=refused reason=bad_request status=400 duration_ms=-"
        );
    }

    #[test]
    fn durations_are_milliseconds_to_the_microsecond() {
        for (nanos, text) in [
            (0, "0.000"),
            (1_203_600, "1.204"),
            (1_203_400, "1.203"),
            (999_700, "1.000"),
            (42, "0.000"),
            (12_000_000_000, "12000.000"),
        ] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(Millis(d).to_string(), text);
            assert_eq!(
                text,
                format!("{:.3}", d.as_secs_f64() * 1000.0),
                "as before"
            );
        }
    }
}
