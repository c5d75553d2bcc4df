//! A request head that Pingora cannot read gets a problem document, as every other refusal does.
//!
//! Pingora's HTTP/1 session reads the head before any of the proxy's phases run. A head it
//! cannot parse, or whose authority it finds inconsistent, it answers with a bare `400 Bad
//! Request` (no body, nothing said) and closes the connection: peergate never sees that request,
//! so it could neither say what was wrong nor count it. [`Watch`] puts [`Watched`] between each
//! HTTP/1 client connection and Pingora's session. A write is that 400 exactly when it begins
//! with a 400 status line while no head is in, that is, none has reached the proxy's phases
//! since the connection opened or the last answer was done
//! ([`crate::client_idle::awaiting_head`]): an answer's head is written before the answer is
//! done, and only Pingora's own refusal writes one before the proxy's phases see the request.
//! That write is replaced by a 400 `bad_request` problem document, and the refusal is counted
//! and logged as the others are. An answer to a request that was read (the app's own 400 among
//! them) is never touched.
//!
//! [`Watched`] also reads what comes in through [`RequestFraming`], which stops a connection's
//! reads at a chunked body Pingora would read leniently (see `request_framing`).
//!
//! And it reads a connection's first bytes before Pingora's session does: Pingora gives each
//! read of a connection's first head 60 s, whatever `listen.idle_timeout` says, so a client
//! that opened a connection ahead of its first request (a load balancer's or a browser's spare
//! one) was cut at 60 s under the default 75 s. Awaited here, they are under the connection's
//! own deadline (`client_idle`, whose [`crate::client_idle::Guarded`] runs this inside it),
//! and Pingora's session is handed them when they have come.
//!
//! HTTP/2 connections are left alone: there a refused head is a stream error, not bytes that
//! could be replaced, and bodies come in frames, not chunks.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Direction;
use crate::problem::{Code, Problem};
use crate::request_framing::{Refusal, RequestFraming};
use crate::state::Shared;

/// What the client is told. Pingora does not say which rule the head broke, so this names them.
const DETAIL: &str = "the request head could not be read as HTTP/1.1 (RFC 9112): a request \
     line or header field that does not parse, a head with more than 256 fields, \
     a Content-Length that is not one number, a target that is not UTF-8, two Host fields, or \
     an absolute-form target or userinfo that contradicts the Host field; the connection is \
     closed";

/// The most of a connection's first bytes read before Pingora's session is handed them (it
/// reads the rest): held by every connection that has sent nothing yet, so kept small.
const FIRST_READ: usize = 1024;

/// The longest a closing connection waits for the problem document to go out.
const DRAIN_AT_CLOSE: Duration = Duration::from_secs(5);

/// A proxy whose HTTP/1 connections go through [`Watched`].
pub struct Watch<A> {
    inner: Arc<A>,
    report: Arc<Report>,
}

impl<A> Watch<A> {
    pub fn new(inner: A, direction: Direction, shared: Arc<Shared>) -> Self {
        Watch {
            inner: Arc::new(inner),
            report: Arc::new(Report { direction, shared }),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Watch<A> {
    /// Runs once per connection (Pingora serves its requests in turn inside).
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if session.selected_alpn_proto() == Some(ALPN::H2) {
            return self.inner.process_new(session, shutdown).await;
        }
        let mut watched = Box::new(Watched {
            inner: session,
            replacement: None,
            report: self.report.clone(),
            framing: RequestFraming::new(),
            first: Bytes::new(),
        });
        if !*shutdown.borrow() {
            let mut first = bytes::BytesMut::with_capacity(FIRST_READ);
            let read = tokio::select! {
                biased;
                read = tokio::io::AsyncReadExt::read_buf(&mut watched, &mut first) => read,
                // As Pingora drops a connection still waiting for its request at a shutdown.
                () = crate::client_idle::shutdown_started(shutdown) => return None,
            };
            match read {
                // Closed before a byte came: nothing to serve, as Pingora would have found.
                Ok(0) => return None,
                Ok(_) => watched.first = first.freeze(),
                // Pingora's own read meets the refusal again (`RequestFraming` keeps it), and
                // answers or closes as it does for one found later.
                Err(_) => {}
            }
        }
        self.inner.process_new(watched, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Where a replaced answer is counted and logged.
struct Report {
    direction: Direction,
    shared: Arc<Shared>,
}

/// A client connection whose writes of a 400 status line are looked at (see the module
/// documentation); everything passes straight through to the connection inside otherwise.
pub struct Watched {
    inner: Stream,
    /// The problem document written instead of Pingora's answer, and how much of it is out.
    /// Once set, whatever Pingora writes on this connection is dropped: it closes it anyway.
    replacement: Option<(Bytes, usize)>,
    report: Arc<Report>,
    /// Where the requests read so far end; reads stop where it refuses.
    framing: RequestFraming,
    /// The connection's first bytes, read by [`Watch`] (already through `framing`), that
    /// Pingora's session has not yet read.
    first: Bytes,
}

impl Watched {
    /// Starts the replacement if `buf` is Pingora's 400 (see the module documentation).
    fn look_at(&mut self, buf: &[u8]) {
        if !is_status_400(buf) || !crate::client_idle::awaiting_head() {
            return;
        }
        self.replace(DETAIL);
    }

    /// Counts the refused head and makes `detail`'s problem document what this connection
    /// writes from now on.
    fn replace(&mut self, detail: &str) {
        let report = &self.report;
        crate::record::unreadable_head(report.direction, &report.shared.metrics);
        self.replacement = Some((problem_response(detail), 0));
    }

    /// Fails a read that `refusal` stopped. A head over [`crate::request_framing::MAX_HEAD`]
    /// is answered first (Pingora, whose read then fails, answers nothing and closes): the
    /// problem document goes out before the read error is returned, and Pingora's writes are
    /// dropped from then on, as after a replaced answer.
    fn fail_read(&mut self, cx: &mut Context<'_>, refusal: Refusal) -> Poll<io::Result<()>> {
        if refusal != Refusal::HeadTooLarge {
            return Poll::Ready(Err(refusal.into()));
        }
        if self.replacement.is_none() {
            if !crate::client_idle::awaiting_head() {
                // A pipelined head, read while the answer before it is written: that answer
                // is not cut for this one's.
                return Poll::Ready(Err(refusal.into()));
            }
            self.replace(refusal.detail());
        }
        // A client that does not read it waits as one that sends no head: until
        // `listen.idle_timeout`, or until its place is needed.
        if let Ok(()) = ready!(self.poll_drain(cx)) {
            let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        }
        Poll::Ready(Err(refusal.into()))
    }

    /// Writes what is left of the replacement (nothing to do without one).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Watched {
            inner, replacement, ..
        } = self;
        let Some((bytes, sent)) = replacement else {
            return Poll::Ready(Ok(()));
        };
        while let Some(rest) = bytes.get(*sent..).filter(|rest| !rest.is_empty()) {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// Whether `buf` begins with an HTTP/1 status line of 400.
fn is_status_400(buf: &[u8]) -> bool {
    buf.starts_with(b"HTTP/1.") && buf.get(8..13) == Some(b" 400 ".as_slice())
}

/// The whole answer, head and problem document, as it goes on the wire.
fn problem_response(detail: &str) -> Bytes {
    let problem = Problem::new(400, Code::BadRequest, "Bad request", detail);
    let body = problem.body();
    let mut out = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

impl fmt::Debug for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.first.is_empty() {
            let n = this.first.len().min(buf.remaining());
            buf.put_slice(&this.first.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if let Some(refusal) = this.framing.stopped() {
            return this.fail_read(cx, refusal);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let read = buf.filled().get(before..).unwrap_or_default();
        if let Err((at, refusal)) = this.framing.read(read) {
            if at == 0 {
                buf.set_filled(before);
                return this.fail_read(cx, refusal);
            }
            // The bytes before the one refused are the client's; the next read fails.
            buf.set_filled(before + at);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none() {
            this.look_at(buf);
        }
        if this.replacement.is_some() {
            ready!(this.poll_drain(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        if self.replacement.is_some() || is_status_400(first) {
            // Through `poll_write`, which looks at it.
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        if self.replacement.is_some() {
            // Pingora closes the connection right after its answer: the document goes first.
            let drained = tokio::time::timeout(DRAIN_AT_CLOSE, async {
                std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
                std::future::poll_fn(|cx| Pin::new(&mut self.inner).poll_flush(cx)).await
            })
            .await;
            if !matches!(drained, Ok(Ok(()))) {
                log::debug!("could not send the problem document for an unreadable head");
            }
        }
        self.inner.shutdown().await;
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Watched {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Watched {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_400_status_line_is_looked_at() {
        assert!(is_status_400(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(is_status_400(b"HTTP/1.0 400 Bad Request\r\n"));
        for other in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"HTTP/1.1 4000 x\r\n",
            b"HTTP/1.1 40",
            b"",
            b"\0\0\0\x04",
            b"HTTP/2 400 \r\n",
        ] {
            assert!(!is_status_400(other), "{other:?}");
        }
    }

    #[test]
    fn the_replacement_is_a_whole_problem_answer() {
        let bytes = problem_response(DETAIL);
        let text = std::str::from_utf8(&bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("connection: close"));
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(doc["reason"], "bad_request");
        assert_eq!(doc["status"], 400);
    }
}
