//! The outbound gateway: the listener the local app talks to, in plain HTTP, to reach its peers.
//! peergate signs each request with this installation's key and sends it to the peer over
//! HTTPS. It is never an open proxy: a host or name that is not on the allowlist is refused
//! before any connection is made.
//!
//! What the app may send:
//! - `GET /peers`: the peer directory (JSON);
//! - `ANY /peers/<short ID or name>/<rest>?<query>`: to that peer's URL + `/<rest>?<query>`;
//! - absolute-form `ANY http://<peer host>/<rest>` (the app has `HTTP_PROXY` pointing here).
//!
//! Everything is answered in `request_filter`: the body is read whole (the signature covers its
//! digest), then [`crate::forward`] sends the signed request and relays the answer, with the
//! called peer's identity headers added.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use peergate_signature::RequestView;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::ALPN;
use pingora::{Error, ErrorType};

use crate::allowlist::{Peer, ShortId, Snapshot};
use crate::body::{self, BodyError, Held};
use crate::config::{HostPort, PeerUrl};
use crate::forward::{classify, ForwardError, Forwarder, IDLE_TIMEOUT};
use crate::metrics::{Direction, Metrics, UpstreamErrorKind};
use crate::peer_location::AppSide;
use crate::problem::{Code, Problem};
use crate::record::Record;
use crate::request_cap::RequestCap;
use crate::state::Shared;

/// Timeouts for peers, fixed at start.
#[derive(Clone, Copy, Debug)]
pub struct PeerTimeouts {
    pub connect: Duration,
    pub response: Duration,
}

pub struct Outbound {
    shared: Arc<Shared>,
    forwarder: Forwarder,
    timeouts: PeerTimeouts,
    /// `listen.idle_timeout`, whole seconds (see `client_idle`).
    idle_seconds: u64,
    /// The listener serves this machine only (`outbound.allow_remote_clients: false`): see
    /// [`crate::local_app`].
    loopback_only: bool,
    /// The listener's own address, where no peer's `Location` may send the app (see
    /// [`crate::peer_location`]). Fixed at start, as the listener is.
    listener: SocketAddr,
    requests: Arc<RequestCap>,
}

pub struct OutboundCtx {
    record: Record,
    /// The peer called, once known.
    peer: Option<ShortId>,
    /// Counts the request as in flight on its HTTP/2 connection until the answer is done.
    in_flight: crate::client_idle::InFlight,
}

impl Drop for OutboundCtx {
    fn drop(&mut self) {
        self.record
            .unfinished(self.peer.as_ref().map(ShortId::as_str));
    }
}

/// The peer an app's request goes to, taken out of the snapshot for the call.
struct Called {
    short_id: ShortId,
    name: String,
    url: PeerUrl,
    id_header: HeaderValue,
    name_header: HeaderValue,
}

/// How errors name the peer (`peer <short id> (<name>)`), written only when there is one:
/// formatting it for every request cost 0.6 % of the outbound side's CPU (benches/HISTORY.md,
/// change 29).
impl fmt::Display for Called {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} ({})", self.short_id, self.name)
    }
}

/// Where the app's request goes.
// Built once per request, on the stack, and moved once: boxing the large variant would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
enum Target {
    Directory,
    Peer {
        peer: Called,
        /// Path and query on the peer, its URL's base path included.
        path_and_query: String,
        /// How the app reached the peer, for the `Location` of its answers (see
        /// [`crate::peer_location`]).
        app: AppSide,
    },
}

/// What the app's path is relative to.
#[derive(Clone, Copy)]
enum Under<'a> {
    /// `/peers/<peer>/<rest>`: `<rest>` goes under the peer URL's base path; `prefix` is
    /// `/peers/<peer>` as the app wrote it.
    BasePath { prefix: &'a str },
    /// An absolute-form URL (`url`, as the app wrote it): the app wrote the whole path, base
    /// path and all.
    Host { url: &'a str },
}

/// Request fields never passed from the app to a peer: hop-by-hop and proxy fields, and
/// everything peergate sets itself.
const DROPPED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "transfer-encoding",
    "content-length",
    "signature",
    "signature-input",
    "content-digest",
];

/// Fields the signed head gets beyond the app's: `Host`, `Content-Length`, `Content-Digest`,
/// `Signature-Input` and `Signature`.
const ADDED: usize = 5;

impl Outbound {
    /// `ca_file`: trust roots for peers' certificates (`tls.peer_ca_file`); system roots
    /// without it.
    pub fn new(
        shared: Arc<Shared>,
        timeouts: PeerTimeouts,
        ca_file: Option<String>,
        idle_seconds: u64,
        loopback_only: bool,
        listener: SocketAddr,
        max_requests: usize,
    ) -> Self {
        let options = pingora::connectors::ConnectorOptions {
            ca_file,
            ..pingora::connectors::ConnectorOptions::new(128)
        };
        let stopping = shared.lifecycle.stopping();
        Outbound {
            shared,
            forwarder: Forwarder::new(
                Some(options),
                IDLE_TIMEOUT,
                crate::forward::Interims::Drop,
                stopping,
            ),
            timeouts,
            idle_seconds,
            loopback_only,
            listener,
            requests: RequestCap::new(max_requests),
        }
    }

    /// `called` is set as soon as the peer is known, so that a refusal after that point (the
    /// peer has no URL, the path is ambiguous) is counted and logged under that peer, as the
    /// inbound side names a caller it refuses as forbidden.
    fn route(
        snap: &Snapshot,
        req: &RequestHeader,
        loopback_only: bool,
        called: &mut Option<ShortId>,
    ) -> Result<Target, Problem> {
        if req.method == http::Method::CONNECT {
            return Err(Problem::new(
                405,
                Code::ConnectNotSupported,
                "CONNECT is not supported",
                "send plain http:// URLs through peergate (HTTP_PROXY, not HTTPS_PROXY): it adds TLS and the signature itself",
            ));
        }
        let raw = req.raw_path();
        let absolute = raw.len() >= 7
            && (raw
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"http://"))
                || raw
                    .get(..8)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"https://")));
        crate::local_app::check(
            &req.headers,
            absolute,
            loopback_only,
            crate::local_app::Listener::Outbound,
        )?;
        if absolute {
            let uri = http::Uri::try_from(raw).map_err(|_| {
                Problem::new(
                    400,
                    Code::BadRequest,
                    "Bad request",
                    "the request target is not a valid URL",
                )
            })?;
            let host = uri.host().unwrap_or_default();
            let peer = snap
                .peer_by_host(host, uri.port_u16(), uri.path())
                .map_err(|why| Problem::new(404, Code::UnknownPeer, "Unknown peer", why))?
                .ok_or_else(|| {
                    Problem::new(
                        403,
                        Code::NotAPeer,
                        "Not a peer",
                        format!("{host} is not the host of a peer on the allowlist; peergate only reaches its peers, it is not an open proxy"),
                    )
                })?;
            // The app wrote the whole URL, the peer's base path included if it has one: sent
            // as written (DESIGN.md: `http://<peer host>/<rest>` → `https://<peer host>/<rest>`).
            let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
            let url = std::str::from_utf8(raw).unwrap_or_default();
            *called = Some(peer.short_id());
            return Self::on_peer(peer, pq, Under::Host { url });
        }

        let path = req.uri.path();
        if path == "/peers" || path == "/peers/" {
            if req.method == http::Method::GET || req.method == http::Method::HEAD {
                return Ok(Target::Directory);
            }
            return Err(Problem::get_or_head_only(format!(
                "the peer directory answers GET and HEAD, not {}",
                req.method
            )));
        }
        let Some(rest) = path.strip_prefix("/peers/") else {
            return Err(Problem::new(
                404,
                Code::NoRoute,
                "Not found",
                "the outbound listener serves GET /peers, ANY /peers/<short ID or name>/<path>, and absolute-form requests from apps that use it as their HTTP proxy",
            ));
        };
        // `/peers/bob` is the peer's URL itself, `/peers/bob/` that URL with a slash added.
        let (handle, tail) = match rest.split_once('/') {
            Some((handle, tail)) => (handle, Some(tail)),
            None => (rest, None),
        };
        let prefix = path.get(.."/peers/".len() + handle.len()).unwrap_or(path);
        let handle = percent_encoding::percent_decode_str(handle)
            .decode_utf8()
            .map_err(|_| {
                Problem::new(
                    404,
                    Code::UnknownPeer,
                    "Unknown peer",
                    "the peer name is not UTF-8",
                )
            })?;
        let peer = snap.peer_by_handle(&handle).ok_or_else(|| {
            Problem::new(
                404,
                Code::UnknownPeer,
                "Unknown peer",
                format!("no peer on the allowlist has the short ID or name {handle:?}; GET /peers lists them"),
            )
        })?;
        let path = tail.map(|t| format!("/{t}")).unwrap_or_default();
        let pq = match req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        *called = Some(peer.short_id());
        Self::on_peer(peer, &pq, Under::BasePath { prefix })
    }

    fn on_peer(peer: Peer<'_>, pq: &str, under: Under<'_>) -> Result<Target, Problem> {
        let pq = crate::request_path::encode_for_uri(pq);
        let path = pq.split_once('?').map_or(&*pq, |(path, _)| path);
        if crate::request_path::has_dot_segment(path) {
            return Err(Problem::new(
                400,
                Code::BadPath,
                "Ambiguous path",
                format!(
                    "the path {path:?} has a . or .. segment (counting %2e for a dot, %2f, %5c \
                     and \\ as a separator and ; as the end of a segment), which could take the \
                     request out of the peer's base path; resolve it before sending"
                ),
            ));
        }
        let Some(url) = peer.url() else {
            return Err(Problem::new(
                404,
                Code::PeerHasNoUrl,
                "Peer has no URL",
                format!(
                    "peer {} ({}) has no url on the allowlist, so it cannot be called",
                    peer.short_id(),
                    peer.name()
                ),
            ));
        };
        let base = match under {
            Under::BasePath { .. } => url.base_path.as_str(),
            Under::Host { .. } => "",
        };
        // A target is never empty: without a base path, the peer's URL itself is `/`.
        let slash = if base.is_empty() && !pq.starts_with('/') {
            "/"
        } else {
            ""
        };
        if base.is_empty() && crate::request_path::starts_with_two_separators(&pq) {
            return Err(Problem::new(
                400,
                Code::BadPath,
                "Ambiguous path",
                format!(
                    "the path {path:?} starts with two separators (counting %2f, %5c and \\ \
                     as one), which some servers read as a host name (a network-path \
                     reference); send it with one /"
                ),
            ));
        }
        Ok(Target::Peer {
            path_and_query: format!("{slash}{base}{pq}"),
            app: match under {
                Under::BasePath { prefix } => AppSide::Path {
                    prefix: prefix.to_string(),
                },
                Under::Host { url } => AppSide::Proxy {
                    url: url.to_string(),
                },
            },
            peer: Called {
                short_id: peer.short_id(),
                name: peer.name().to_string(),
                url,
                id_header: peer.id_header(),
                name_header: peer.name_header(),
            },
        })
    }

    fn directory(snap: &Snapshot) -> Bytes {
        let peers: Vec<serde_json::Value> = snap
            .peers()
            .map(|p| {
                serde_json::json!({
                    "id": p.peer_id(),
                    "short_id": p.short_id().as_str(),
                    "key_id": p.key_id(),
                    "name": p.name(),
                    "url": p.url().as_ref().map(ToString::to_string),
                })
            })
            .collect();
        Bytes::from(serde_json::Value::Array(peers).to_string())
    }

    /// The signed head sent to the peer: the app's fields minus what peergate owns, `Host` of
    /// the peer, and the signature over it all.
    fn signed_request(
        snap: &Snapshot,
        app_req: &RequestHeader,
        url: &PeerUrl,
        path_and_query: &str,
        body: &[u8],
    ) -> pingora::Result<RequestHeader> {
        // Sized up front: a head that grows while it is filled is copied at each doubling.
        let mut req = RequestHeader::build(
            app_req.method.clone(),
            path_and_query.as_bytes(),
            Some(app_req.headers.len() + ADDED),
        )?;
        // What the app's `Connection` names was for its connection to peergate (RFC 9110
        // §7.6.1). Its common `keep-alive` and `close` name no field to drop (`Keep-Alive` is
        // dropped anyway), and are left out so that the list stays empty, unallocated.
        let nominated: Vec<&[u8]> = crate::app_request::connection_tokens(&app_req.headers)
            .filter(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"))
            .collect();
        for (name, value) in app_req.headers.iter() {
            let name_str = name.as_str();
            if DROPPED.contains(&name_str)
                || snap.identity_headers.matches(name_str)
                || nominated
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(name_str.as_bytes()))
            {
                continue;
            }
            req.append_header(name.clone(), value.clone())?;
        }
        req.insert_header(http::header::HOST, url.authority())?;
        if !body.is_empty() {
            req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        }
        Self::sign(snap, &mut req, url, body)?;
        Ok(req)
    }

    /// Signs `req` now with a fresh nonce, replacing any signature it carries: also before a
    /// retry, whose first attempt the peer may have seen (and whose nonce it then refuses).
    fn sign(
        snap: &Snapshot,
        req: &mut RequestHeader,
        url: &PeerUrl,
        body: &[u8],
    ) -> pingora::Result<()> {
        let now = crate::clock::unix_now();
        let view = RequestView::new(&req.method, &req.uri, &req.headers, url.scheme());
        let nonce = peergate_signature::Signer::nonce();
        let signature = snap
            .signer
            .sign(&view, Some(body), now, &nonce)
            .map_err(|e| {
                Error::explain(
                    ErrorType::InternalError,
                    format!("cannot sign the request: {e}"),
                )
            })?;
        if let Some(digest) = signature.content_digest {
            req.insert_header("content-digest", digest)?;
        }
        req.insert_header("signature-input", signature.signature_input)?;
        req.insert_header("signature", signature.signature)?;
        Ok(())
    }

    async fn peer_connection(&self, url: &PeerUrl) -> pingora::Result<HttpPeer> {
        let addr = self
            .shared
            .resolver
            .resolve(&HostPort {
                host: url.host.clone(),
                port: url.port,
            })
            .await?;
        // SNI is the peer's host name: it selects the certificate and turns verification on.
        let mut http_peer = HttpPeer::new(addr, url.https, url.host.clone());
        http_peer.options.connection_timeout = Some(self.timeouts.connect);
        http_peer.options.total_connection_timeout = Some(self.timeouts.connect);
        http_peer.options.read_timeout = Some(self.timeouts.response);
        http_peer.options.write_timeout = Some(self.timeouts.response);
        http_peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        http_peer.options.alpn = ALPN::H1;
        Ok(http_peer)
    }

    async fn call(
        &self,
        session: &mut Session,
        ctx: &mut OutboundCtx,
        snap: &Snapshot,
        peer: Called,
        pq: String,
        app: AppSide,
    ) -> pingora::Result<()> {
        let what: &(dyn fmt::Display + Sync) = &peer;
        let framing = match body::framing(session.req_header()) {
            Ok(framing) => framing,
            Err(problem) => {
                ctx.record.refuse(session, &problem, None).await;
                return Ok(());
            }
        };
        // Given back once the body is sent (see `Forwarder::forward`) or refused.
        let held = Held::new(&self.shared.bodies, snap.max_buffered);
        let body = match body::read_whole(session, framing, snap.max_body, held, |_| Ok(())).await {
            Ok(body) => body,
            Err(BodyError::Refused(problem)) => {
                ctx.record.refuse(session, &problem, None).await;
                return Ok(());
            }
            Err(BodyError::Client(e)) => {
                log::debug!("outbound: the app went away while sending: {e}");
                session.set_keepalive(None);
                return Ok(());
            }
        };
        let result = match self.peer_connection(&peer.url).await {
            Err(e) => {
                let (kind, problem) = classify(&e, what);
                Err(ForwardError::Upstream { kind, problem })
            }
            Ok(http_peer) => {
                let names = &snap.identity_headers;
                let edit = |resp: &mut ResponseHeader| {
                    let spoofed: Vec<http::HeaderName> = resp
                        .headers
                        .keys()
                        .filter(|n| names.matches(n.as_str()))
                        .cloned()
                        .collect();
                    for name in spoofed {
                        resp.remove_header(&name);
                    }
                    resp.insert_header(names.id.clone(), peer.id_header.clone())?;
                    resp.insert_header(names.name.clone(), peer.name_header.clone())?;
                    relocate(resp, snap, &peer.url, &pq, &app, self.listener)?;
                    rescope_cookies(resp, &peer.url, &pq, &app)?;
                    note_signature_refused(resp, &self.shared.metrics, what);
                    Ok(())
                };
                // Signed afresh for every attempt: a retry carries a new nonce. The closure owns
                // its copy of the body, so that `forward` can let both go once they are sent.
                let signed_body = body.bytes.clone();
                let (url, pq) = (&peer.url, &pq);
                let build = move |app_req: &RequestHeader| {
                    Self::signed_request(snap, app_req, url, pq, &signed_body).map_err(|e| {
                        let (kind, problem) = classify(&e, what);
                        ForwardError::Upstream { kind, problem }
                    })
                };
                self.forwarder
                    .forward(session, &http_peer, what, body, build, edit)
                    .await
            }
        };
        ctx.record
            .forwarded(session, &self.shared.metrics, result)
            .await
    }
}

/// Counts and logs a peer's answer that did not take this installation's signature: a 401 that
/// asks for one (RFC 9421 §5.1). The app gets the answer as it is, which is all a count of
/// outcomes would see.
fn note_signature_refused(resp: &ResponseHeader, metrics: &Metrics, what: &dyn fmt::Display) {
    if resp.status != http::StatusCode::UNAUTHORIZED
        || !resp.headers.contains_key("accept-signature")
    {
        return;
    }
    metrics.upstream_error(Direction::Outbound, UpstreamErrorKind::SignatureRefused);
    crate::record::warn_failure(
        Direction::Outbound,
        &format!(
            "{what} refused this installation's signature (401 with Accept-Signature; its \
             reason is in the answer the app got): is this installation's key on its \
             allowlist, are the two clocks in step, and is the host of its URL one of its \
             identity.hosts?"
        ),
    );
}

/// Rewrites the `Location` of a peer's answer for the app that called it (see
/// [`crate::peer_location`]). One that is not UTF-8, or two, are removed: a client might read
/// either as a path on the app's own listener.
fn relocate(
    resp: &mut ResponseHeader,
    snap: &Snapshot,
    url: &PeerUrl,
    pq: &str,
    app: &AppSide,
    listener: SocketAddr,
) -> pingora::Result<()> {
    use crate::peer_location::{rewrite, Rewrite};
    // Where the app would go with `to` through this listener as its HTTP proxy: to a peer
    // other than `url`'s, or to several (which the listener would refuse), is elsewhere. Told
    // by the peer's URL, as the proxy route tells peers apart.
    let another_peer = |to: &url::Url| match snap.peer_by_host(
        to.host_str().unwrap_or_default(),
        to.port(),
        to.path(),
    ) {
        Ok(Some(found)) => found.url().as_ref() != Some(url),
        Ok(None) => false,
        Err(_) => true,
    };
    let mut locations = resp.headers.get_all(http::header::LOCATION).iter();
    let rewrite = match (locations.next(), locations.next()) {
        (None, _) => return Ok(()),
        (Some(location), None) => match std::str::from_utf8(location.as_bytes()) {
            Ok(location) => rewrite(location, url, pq, app, listener, another_peer),
            Err(_) => Rewrite::Remove,
        },
        (Some(_), Some(_)) => Rewrite::Remove,
    };
    match rewrite {
        Rewrite::Keep => {}
        Rewrite::Replace(location) => {
            resp.insert_header(http::header::LOCATION, location)?;
        }
        Rewrite::Remove => {
            resp.remove_header(&http::header::LOCATION);
        }
    }
    Ok(())
}

/// Scopes each `Set-Cookie` of a peer's answer to that peer, in path mode, where every peer
/// shares the listener's origin (see [`crate::peer_cookie`]).
fn rescope_cookies(
    resp: &mut ResponseHeader,
    url: &PeerUrl,
    pq: &str,
    app: &AppSide,
) -> pingora::Result<()> {
    let AppSide::Path { prefix } = app else {
        return Ok(());
    };
    // RFC 2965's cookies, which RFC 6265 retired but Java's `CookieManager` still keeps: not
    // scoped, so not passed on.
    resp.remove_header("set-cookie2");
    if !resp.headers.contains_key(http::header::SET_COOKIE) {
        return Ok(());
    }
    let scoped: Vec<Vec<u8>> = resp
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|value| crate::peer_cookie::rescope(value.as_bytes(), url, pq, prefix))
        .collect();
    resp.remove_header(&http::header::SET_COOKIE);
    for value in scoped {
        // Built from a valid value plus a path of the request's: valid too, but never trusted.
        let value = http::HeaderValue::from_bytes(&value).map_err(|e| {
            pingora::Error::because(
                pingora::ErrorType::InvalidHTTPHeader,
                "a peer's Set-Cookie scoped to it is not a valid field value",
                e,
            )
        })?;
        resp.append_header(http::header::SET_COOKIE, value)?;
    }
    Ok(())
}

#[async_trait]
impl ProxyHttp for Outbound {
    type CTX = OutboundCtx;

    /// No downstream modules. Pingora's default installs its response-compression module
    /// (at level 0, so it never compresses), which still builds a context for every request
    /// and inspects its `Accept-Encoding` and the answer's headers; peergate never compresses.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> OutboundCtx {
        OutboundCtx {
            record: Record::new(Direction::Outbound, self.forwarder.stopping_handle()),
            peer: None,
            in_flight: Default::default(),
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut OutboundCtx,
    ) -> pingora::Result<bool> {
        ctx.record.begin(session.req_header());
        ctx.in_flight = crate::client_idle::head_received(session);
        crate::client_idle::limit(session, self.idle_seconds);
        if !ctx.record.admit(session, &self.requests).await {
            return Ok(true);
        }
        let snap = self.shared.snapshot();
        match Self::route(
            &snap,
            session.req_header(),
            self.loopback_only,
            &mut ctx.peer,
        ) {
            Err(problem) => ctx.record.refuse(session, &problem, None).await,
            Ok(Target::Directory) => {
                let body = Self::directory(&snap);
                let mut resp = ResponseHeader::build(200, Some(3))?;
                resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
                resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
                let head = session.req_header().method == http::Method::HEAD;
                ctx.record.close_if_stopping(session);
                session.write_response_header(Box::new(resp), head).await?;
                session
                    .write_response_body((!head).then_some(body), true)
                    .await?;
                ctx.record.answered(200);
            }
            Ok(Target::Peer {
                peer,
                path_and_query,
                app,
            }) => {
                self.call(session, ctx, &snap, peer, path_and_query, app)
                    .await?;
            }
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut OutboundCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        // Every request is answered in request_filter.
        Err(Error::explain(
            ErrorType::InternalError,
            "outbound requests are forwarded by peergate itself",
        ))
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &OutboundCtx, error: &Error) -> bool {
        crate::record::pingora_error_told(Direction::Outbound, error)
    }

    /// Runs last for every request Pingora began, refused, failed or answered (not for one
    /// cancelled: see `Record::unfinished`).
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut OutboundCtx) {
        let peer = ctx.peer.as_ref().map(ShortId::as_str);
        let ended = ctx.record.finish(session, &self.shared.metrics, peer);
        crate::client_idle::answer_finished(ended, std::mem::take(&mut ctx.in_flight));
    }
}
