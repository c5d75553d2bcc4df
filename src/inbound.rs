//! The inbound gateway: the listener peers reach. Every request is routed, verified and
//! authorized before anything of it reaches the app; the app gets it with the identity headers
//! of the verified peer and nothing that merely looks like them.
//!
//! Pingora phases used, in the order they run for one request:
//! - `request_filter`: route, verify the signature, authorize, read and digest-check the body.
//!   Refusals are answered here. A verified request is also forwarded from here, body or not
//!   (see [`crate::forward`]), and never reaches the later phases.
//! - `upstream_peer`: the app's address, resolved without blocking (public routes only: their
//!   bodies are streamed to the app by Pingora, never read whole).
//! - `upstream_request_filter`: strip look-alike identity and hop-by-hop headers, set ours.
//! - `fail_to_connect` / `fail_to_proxy`: an unreachable or slow app becomes 502 / 504.
//! - `logging`: one log line and the metrics, for every request however it ended.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use peergate_signature::{
    body_announced, verify_headers_authorized, Authority, Reason, Refusal, RequestView,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};

use crate::allowlist::{Caller, Snapshot};
use crate::app_request;
use crate::body::{self, BodyError, Held, HeldBody};
use crate::clock::unix_now;
use crate::config::routes::access_for;
use crate::config::{Access, HostPort};
use crate::forward::{
    bodiless, chain, classify, error_text, frame_for_client, prepare_answer, within, ForwardError,
    Forwarder, IDLE_TIMEOUT,
};
use crate::method_override;
use crate::metrics::{Direction, UpstreamErrorKind};
use crate::problem::{Code, Problem};
use crate::record::Record;
use crate::request_cap::RequestCap;
use crate::request_path;
use crate::state::Shared;

/// The app as the operator's log names it: with its address. Callers are told only "the app"
/// (`record.rs`, `app_failure_for_callers`); formatted only when a failure is described.
struct TheApp<'a>(&'a HostPort);

impl std::fmt::Display for TheApp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the app at {}", self.0)
    }
}

/// Timeouts for the app, fixed at start.
#[derive(Clone, Copy, Debug)]
pub struct AppTimeouts {
    pub connect: Duration,
    pub response: Duration,
}

pub struct Inbound {
    shared: Arc<Shared>,
    forwarder: Forwarder,
    timeouts: AppTimeouts,
    /// `https` when this listener ends TLS; else `None`, and `X-Forwarded-Proto` is
    /// `identity.scheme` (see [`Inbound::proto`]).
    proto: Option<&'static str>,
    /// `listen.idle_timeout`, whole seconds (see `client_idle`).
    idle_seconds: u64,
    requests: Arc<RequestCap>,
    /// The part of `requests` public routes may hold ([`RequestCap::public_share`]).
    public_requests: Arc<RequestCap>,
}

impl Inbound {
    /// `X-Forwarded-Proto` for the app: `https` on a TLS listener; on a plain one the scheme
    /// peers use to reach this installation (`identity.scheme`), which is `https` when TLS
    /// ends in front of peergate: the app builds its links with it. Never a client's field.
    fn proto(&self, snap: &Snapshot) -> &'static str {
        self.proto.unwrap_or(snap.scheme)
    }
}

/// What one request went through, for the log line and the metrics.
pub struct InboundCtx {
    record: Record,
    /// The configuration the request started with; it keeps it to the end.
    snapshot: Option<Arc<Snapshot>>,
    caller: Option<Caller>,
    /// Counts the request as in flight on its HTTP/2 connection until the answer is done.
    in_flight: crate::client_idle::InFlight,
    /// A public route's place in the public share of the request ceiling, held to the end.
    public_slot: Option<crate::request_cap::Slot>,
}

impl Drop for InboundCtx {
    fn drop(&mut self) {
        let caller = self.caller.as_ref().map(|c| c.short_id.as_str());
        self.record.unfinished(caller);
    }
}

/// Where an admitted request goes next.
enum Admission {
    /// A public route: Pingora proxies it, body streamed.
    Proxy,
    /// A verified request and its body (maybe empty), already read: peergate forwards it
    /// itself, on connections of its own pool (see [`crate::pool`]). The body's share of
    /// `signatures.max_buffered` is held until it has been sent (see [`Forwarder::forward`]).
    Forward(HeldBody),
}

impl Inbound {
    /// `max_requests`: at most this many requests in flight at once (see `request_cap`).
    pub fn new(
        shared: Arc<Shared>,
        timeouts: AppTimeouts,
        tls: bool,
        idle_seconds: u64,
        max_requests: usize,
    ) -> Self {
        let stopping = shared.lifecycle.stopping();
        Inbound {
            shared,
            forwarder: Forwarder::new(
                None,
                crate::forward::UNSAFE_REUSE_WITHIN,
                crate::forward::Interims::Relay,
                stopping,
            ),
            timeouts,
            proto: tls.then_some("https"),
            idle_seconds,
            requests: RequestCap::new(max_requests),
            public_requests: RequestCap::public_share(max_requests),
        }
    }

    /// Routes, verifies and authorizes the request, and reads its body when it has one.
    /// `Ok(Err(problem))` is a refusal to answer; `Err` a failure of the client connection.
    async fn admit(
        &self,
        session: &mut Session,
        snap: &Snapshot,
        ctx: &mut InboundCtx,
    ) -> pingora::Result<Result<Admission, Problem>> {
        let req = session.req_header();
        // The app gets the raw target bytes; they must be exactly what is routed and verified.
        let parsed = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        if req.raw_path() != parsed.as_bytes() {
            return Ok(Err(Problem::new(
                400,
                Code::BadPath,
                "Ambiguous path",
                "the request target must be in origin form (/path?query) and valid UTF-8",
            )));
        }
        let path = match request_path::normalize(req.uri.path()) {
            Ok(path) => path,
            Err(e) => {
                return Ok(Err(Problem::new(
                    400,
                    Code::BadPath,
                    "Ambiguous path",
                    e.to_string(),
                )))
            }
        };
        if let Some(name) = app_request::protected_nomination(req) {
            return Ok(Err(Problem::new(
                400,
                Code::BadRequest,
                "Bad request",
                format!("the Connection header names {name:?}, a field the app must receive"),
            )));
        }
        // Pingora forwards a list such as `Content-Length: 5, 5` as it came on the routes it
        // proxies, and drops a transfer coding listed before `chunked`; an app may read the
        // body another way than Pingora framed it. Refused on every route, as it is for signed
        // requests.
        let framing = match body::framing(req) {
            Ok(framing) => framing,
            Err(problem) => return Ok(Err(problem)),
        };
        if access_for(&snap.routes, &path) == Access::Public {
            // Pingora proxies the body; one declared empty over HTTP/2 it would not read.
            return match body::end_declared_empty(session, framing).await {
                Ok(()) => Ok(Ok(Admission::Proxy)),
                Err(BodyError::Refused(problem)) => Ok(Err(problem)),
                Err(BodyError::Client(e)) => Err(e),
            };
        }

        let view = RequestView::new(&req.method, &req.uri, &req.headers, snap.scheme);
        // The key found for the signature, so that its peer is not looked up a second time.
        let found = Cell::new(None);
        let lookup = |k: &str| {
            let (key, verifying) = snap.find_key(k)?;
            found.set(Some(key));
            Some(verifying)
        };
        // The peer's own rules are checked once the signature verified and before its nonce
        // is recorded: a request refused here takes no room in the shared replay cache.
        let mut admitted = None;
        // The body's share of `max_buffered`, taken for a declared length before the nonce is
        // recorded; a refusal then (413, 503) leaves the signed request good to send again.
        let mut held = Held::new(&self.shared.bodies, snap.max_buffered);
        let mut refused_body = None;
        // The caller when its rules narrow its methods, for a `_method` in the body.
        let mut narrowed = None;
        let authorize = |key_id: &str| {
            // caller_of also checks that the key was found by the id whose signature verified.
            let caller = found.get().and_then(|key| snap.caller_of(&key, key_id));
            let Some((caller, peer)) = caller else {
                return Err(Refusal::new(
                    Reason::UnknownKey,
                    "the signing key left the allowlist",
                ));
            };
            let allow = peer.allow();
            let who = || format!("peer {} ({})", peer.short_id(), peer.name());
            let mut refusal = (!allow.permits(&req.method, &path)).then(|| {
                Refusal::new(
                    Reason::Forbidden,
                    format!("{} may not {} {path}", who(), req.method),
                )
            });
            if allow.narrows_methods() {
                narrowed = Some(peer);
                if refusal.is_none() {
                    // The method the app will act on, when a field names another one.
                    refusal = method_override::fields(&req.headers).find_map(|(field, asked)| {
                        let permitted = http::Method::from_bytes(&asked)
                            .is_ok_and(|method| allow.permits(&method, &path));
                        let asked = String::from_utf8_lossy(asked.get(..32).unwrap_or(&asked));
                        (!permitted).then(|| {
                            Refusal::new(
                                Reason::Forbidden,
                                format!(
                                    "{} may not {} {path}, as its {field} field asks",
                                    who(),
                                    asked.escape_debug()
                                ),
                            )
                        })
                    });
                }
                let query = req.uri.query().unwrap_or_default();
                if refusal.is_none() && method_override::names_method(query.as_bytes()) {
                    refusal = Some(Refusal::new(
                        Reason::Forbidden,
                        format!(
                            "{} may not send a _method query parameter to {path}: Laravel and \
                             Symfony take it as the method to act on, and this peer's methods \
                             are limited",
                            who()
                        ),
                    ));
                }
            }
            admitted = Some(caller);
            if let Some(refusal) = refusal {
                return Err(refusal);
            }
            body::admit_declared(framing, snap.max_body, &mut held).map_err(|problem| {
                // Answered with `problem`; the refusal only stops the nonce being recorded.
                let refusal = Refusal::new(Reason::BodyTooLarge, problem.detail.clone());
                refused_body = Some(problem);
                refusal
            })
        };
        let verified = verify_headers_authorized(
            &view,
            &snap.policy,
            lookup,
            authorize,
            &self.shared.replay,
            unix_now(),
        );
        // A forbidden request names its caller too (logs, metrics), as an accepted one does; a
        // replayed one does not: whoever sent it, the signature is only someone's old one.
        let named = match &verified {
            Ok(_) => true,
            Err(refusal) => refusal.reason == Reason::Forbidden || refused_body.is_some(),
        };
        if named {
            ctx.caller = admitted;
        }
        let verified = match verified {
            Ok(v) => v,
            Err(refusal) => {
                return Ok(Err(
                    refused_body.unwrap_or_else(|| Problem::refusal(&refusal))
                ))
            }
        };

        let mut check = verified.body_checker();
        let body = match body::read_whole(session, framing, snap.max_body, held, |chunk| {
            check.update(chunk);
            check
                .refused()
                .map_or(Ok(()), |r| Err(Problem::refusal(&r)))
        })
        .await
        {
            Ok(body) => body,
            Err(BodyError::Refused(problem)) => return Ok(Err(problem)),
            Err(BodyError::Client(e)) => return Err(e),
        };
        if let Err(refusal) = check.finish() {
            return Ok(Err(Problem::refusal(&refusal)));
        }
        if let Some(peer) = narrowed {
            // As for the fields and the query above; the nonce is recorded by now.
            let req = session.req_header();
            if let Some(why) = method_override::body_override(&req.headers, &body.bytes) {
                return Ok(Err(Problem::from_reason(
                    Reason::Forbidden,
                    format!(
                        "peer {} ({}) may not {} this to {path}: {why}, and this peer's \
                         methods are limited",
                        peer.short_id(),
                        peer.name(),
                        req.method,
                    ),
                )));
            }
        }
        Ok(Ok(Admission::Forward(body)))
    }

    async fn forward_verified(
        &self,
        session: &mut Session,
        ctx: &mut InboundCtx,
        snap: &Snapshot,
        body: HeldBody,
    ) -> pingora::Result<()> {
        let app = TheApp(&snap.upstream);
        let result = match self.app_peer(&snap.upstream).await {
            Err(e) => {
                let (kind, problem) = classify(&e, &app);
                Err(ForwardError::Upstream { kind, problem })
            }
            Ok(peer) => {
                let ip = client_ip(session);
                let caller = ctx.caller.as_ref();
                let build = |incoming: &RequestHeader| {
                    let mut req = incoming.clone();
                    app_request::prepare(
                        &mut req,
                        &snap.identity_headers,
                        caller,
                        ip,
                        self.proto(snap),
                    )
                    .map_err(|e| ForwardError::Upstream {
                        kind: UpstreamErrorKind::Protocol,
                        problem: Problem::new(
                            500,
                            Code::InternalError,
                            "Internal error",
                            e.to_string(),
                        ),
                    })?;
                    Ok(req)
                };
                self.forwarder
                    .forward(session, &peer, &app, body, build, |_| Ok(()))
                    .await
            }
        };
        ctx.record
            .forwarded(session, &self.shared.metrics, result)
            .await
    }

    async fn app_peer(&self, upstream: &HostPort) -> pingora::Result<HttpPeer> {
        let addr = self.shared.resolver.resolve(upstream).await?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.total_connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(self.timeouts.response);
        peer.options.write_timeout = Some(self.timeouts.response);
        peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        Ok(peer)
    }
}

/// RFC 9112 §3.2: a server answers 400 to an HTTP/1.1 request without `Host`, to any request
/// with more than one `Host` line, and to one whose `Host` is not a host and port, on every
/// route: the app would otherwise get a request whose host it cannot tell, or two, or a host
/// such as `evil.example/x` in `Host` and `X-Forwarded-Host` to build its links from. HTTP/1.0
/// predates `Host`, and HTTP/2 names the host in `:authority`. A `Host` that contradicts the
/// target's authority (absolute form, HTTP/2) Pingora refuses before this runs.
fn host_problem(req: &RequestHeader) -> Option<Problem> {
    // RFC 3986 allows `,` in a host name, DNS does not, and the app would read
    // `X-Forwarded-Host: a,b` as a list of two hosts: refused in `Host` and in HTTP/2's
    // `:authority` alike.
    const NO_COMMA: &str = "a host name has no ','";
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let detail = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => "the request has more than one Host field; send one".to_string(),
        (None, _) if req.version == http::Version::HTTP_11 => {
            "an HTTP/1.1 request must carry a Host field (RFC 9112 section 3.2)".to_string()
        }
        (None, _) => match req
            .uri
            .authority()
            .map(|a| (a.as_str(), Authority::parse(a.as_str())))
        {
            Some((_, Err(e))) => format!("the request's target does not name a host: {e}"),
            Some((text, Ok(_))) if text.contains(',') => {
                format!("the request's target does not name a host: {NO_COMMA}")
            }
            _ => return None,
        },
        (Some(host), None) => match host.to_str().map(|text| (text, Authority::parse(text))) {
            Err(_) => "the Host field is not visible ASCII".to_string(),
            Ok((_, Err(e))) => format!("the Host field is not a host and port: {e}"),
            Ok((text, Ok(_))) if text.contains(',') => {
                format!("the Host field is not a host and port: {NO_COMMA}")
            }
            Ok(_) => return None,
        },
    };
    Some(Problem::new(400, Code::BadRequest, "Bad request", detail))
}

/// What was wrong with a client's request, for a problem's detail: the error type with the
/// innermost explanation Pingora gave (`InvalidHTTPHeader (too many Connection header
/// nominations)`). Only the innermost: the outer contexts name the app's address, which a
/// client has no business seeing.
fn client_error_text(e: &Error) -> String {
    let innermost = chain(e)
        .skip(1)
        .filter_map(|inner| inner.context.as_ref().map(|c| c.as_str()))
        .filter(|context| !context.is_empty())
        .last();
    match innermost {
        Some(why) => {
            // Bounded: a context may quote what the client sent.
            format!("{} ({})", e.etype().as_str(), within(why, 200))
        }
        None => e.etype().as_str().to_string(),
    }
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Inbound {
    type CTX = InboundCtx;

    /// No downstream modules. Pingora's default installs its response-compression module
    /// (at level 0, so it never compresses), which still builds a context for every request
    /// and inspects its `Accept-Encoding` and the answer's headers; peergate never compresses.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> InboundCtx {
        InboundCtx {
            record: Record::new(Direction::Inbound, self.forwarder.stopping_handle()),
            snapshot: None,
            caller: None,
            in_flight: Default::default(),
            public_slot: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut InboundCtx,
    ) -> pingora::Result<bool> {
        ctx.record.begin(session.req_header());
        ctx.in_flight = crate::client_idle::head_received(session);
        crate::client_idle::limit(session, self.idle_seconds);
        if !ctx.record.admit(session, &self.requests).await {
            return Ok(true);
        }
        let snap = self.shared.snapshot();
        ctx.snapshot = Some(snap.clone());
        if session.req_header().method == http::Method::CONNECT {
            // Pingora is told to let CONNECT through (see `server.rs`) so that it is refused
            // here, as a problem document that is logged and counted, instead of with its bare
            // 405. Nothing is tunnelled: the connection closes after the answer.
            let problem = Problem::new(
                405,
                Code::ConnectNotSupported,
                "CONNECT is not supported",
                "the inbound listener relays HTTP requests to the app; it opens no tunnels",
            );
            ctx.record.refuse(session, &problem, None).await;
            return Ok(true);
        }
        if let Some(problem) = host_problem(session.req_header()) {
            ctx.record.refuse(session, &problem, None).await;
            return Ok(true);
        }
        // peergate's own public documents: answered here, unsigned, whatever the routes say.
        let public = {
            let req = session.req_header();
            let view = RequestView::new(&req.method, &req.uri, &req.headers, snap.scheme);
            snap.public_pages.answer_request(&view, unix_now())
        };
        match public {
            Some(Ok(answer)) => {
                ctx.record.answered(answer.status);
                ctx.record.close_if_stopping(session);
                let (place, limit) = ctx.record.answering(crate::record::PAGE_WRITE);
                let sent = tokio::time::timeout(limit, answer.send(session)).await;
                drop(place);
                if let Err(e) = ctx.record.written(session, sent, "a public page") {
                    log::debug!("inbound: {}: {e}", session.req_header().uri);
                }
                return Ok(true);
            }
            Some(Err(problem)) => {
                ctx.record.refuse(session, &problem, None).await;
                return Ok(true);
            }
            None => {}
        }
        match self.admit(session, &snap, ctx).await? {
            Ok(Admission::Proxy) => {
                match self.public_requests.admit() {
                    Ok(slot) => ctx.public_slot = Some(slot),
                    Err(problem) => {
                        ctx.record.refuse(session, &problem, None).await;
                        return Ok(true);
                    }
                }
                // An HTTP/1.0 client is sent no interim answers (RFC 9110 §15.2: it cannot
                // know them); Pingora relays the app's 103s and 102s to any HTTP/1 client.
                if session.req_header().version == http::Version::HTTP_10 {
                    session.as_downstream_mut().set_ignore_info_resp(true);
                }
                Ok(false)
            }
            Ok(Admission::Forward(body)) => {
                self.forward_verified(session, ctx, &snap, body).await?;
                Ok(true)
            }
            Err(problem) => {
                // What to sign, for this request: content-digest only when it has a body.
                let accept = if body_announced(&session.req_header().headers) {
                    &snap.accept_signature
                } else {
                    &snap.accept_signature_without_body
                };
                ctx.record.refuse(session, &problem, Some(accept)).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut InboundCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let snap = ctx
            .snapshot
            .clone()
            .unwrap_or_else(|| self.shared.snapshot());
        self.app_peer(&snap.upstream)
            .await
            .map(Box::new)
            .map_err(|mut e| {
                e.esource = ErrorSource::Upstream;
                e
            })
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut InboundCtx,
    ) -> pingora::Result<()> {
        let snap = ctx
            .snapshot
            .clone()
            .unwrap_or_else(|| self.shared.snapshot());
        // The length Pingora frames the body by, once and plainly: the client's may have come
        // as two equal fields or as `005` (`body::framing` refused the rest), and an app could
        // read those otherwise. (Signed requests get a head built afresh.)
        if let Ok(Some(n)) = body::framing(upstream_request).map(body::Framing::declared) {
            upstream_request.insert_header(http::header::CONTENT_LENGTH, n.to_string())?;
        }
        app_request::prepare(
            upstream_request,
            &snap.identity_headers,
            ctx.caller.as_ref(),
            client_ip(session),
            self.proto(&snap),
        )
    }

    /// On answers Pingora proxies itself (public routes), what `forward` does on the others:
    /// the app's hop-by-hop fields go, and a 101 nobody asked for (`Upgrade` never reaches the
    /// app) is a failure of the app.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut InboundCtx,
    ) -> pingora::Result<()> {
        let head_request = session.req_header().method == http::Method::HEAD;
        prepare_answer(upstream_response, head_request)?;
        ctx.record.close_if_stopping(session);
        if bodiless(upstream_response.status, head_request) {
            return Ok(());
        }
        frame_for_client(session, upstream_response)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut InboundCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // The app is one address: trying it again at once will not help.
        e.set_retry(false);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut InboundCtx,
    ) -> FailToProxy {
        // Pingora closes the connection after this hook (`can_reuse_downstream: false` below),
        // so the answer written here says so (`Connection: close`), not keep-alive.
        session.set_keepalive(None);
        let from_upstream = matches!(e.esource(), ErrorSource::Upstream);
        let snap = ctx
            .snapshot
            .clone()
            .unwrap_or_else(|| self.shared.snapshot());
        let app = TheApp(&snap.upstream);
        // Once an answer has started, nothing more can be said on this connection: it is cut.
        let answer_started = crate::record::answer_written(session).is_some();
        if answer_started && from_upstream {
            let (kind, _) = classify(e, &app);
            let broke = ForwardError::Aborted {
                kind: Some(kind),
                detail: format!("{app} broke off its answer: {}", error_text(e)),
            };
            // The session is given up after this hook (`can_reuse_downstream: false`): the
            // error it returns for that is not needed.
            let _ = ctx
                .record
                .forwarded(session, &self.shared.metrics, Err(broke))
                .await;
        }
        if !from_upstream || answer_started {
            // The client broke the exchange (or stopped reading the answer), or the answer was
            // cut: there is no one to answer, or no way to. Over HTTP/2 a client that resets
            // its stream or closes its connection while the app works is an `H2Error`
            // ("Client closed H2"); a malformed HTTP/2 request never gets this far.
            let malformed = crate::body::malformed_framing(e).filter(|_| !answer_started);
            let code = match e.etype() {
                _ if answer_started => 0,
                _ if malformed.is_some() => 400,
                ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::WriteTimedout
                | ErrorType::ConnectionClosed
                | ErrorType::H2Error => 0,
                _ => 400,
            };
            if code > 0 {
                let problem = malformed.unwrap_or_else(|| {
                    Problem::new(
                        400,
                        Code::BadRequest,
                        "Bad request",
                        format!("the request could not be read: {}", client_error_text(e)),
                    )
                });
                ctx.record.refuse(session, &problem, None).await;
            } else if !from_upstream {
                ctx.record.client_left();
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        let (kind, problem) = classify(e, &app);
        ctx.record
            .upstream_failed(session, &self.shared.metrics, kind, &problem)
            .await;
        FailToProxy {
            error_code: problem.status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &InboundCtx, error: &Error) -> bool {
        crate::record::pingora_error_told(Direction::Inbound, error)
    }

    /// Runs last for every request Pingora began, refused, failed or answered (not for one
    /// cancelled: see `Record::unfinished`).
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut InboundCtx) {
        let peer = ctx.caller.as_ref().map(|c| c.short_id.as_str());
        let ended = ctx.record.finish(session, &self.shared.metrics, peer);
        crate::client_idle::answer_finished(ended, std::mem::take(&mut ctx.in_flight));
    }
}
