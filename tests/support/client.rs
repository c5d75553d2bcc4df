//! Clients that talk to a gateway on loopback: exact-bytes HTTP/1.1 (plain or TLS) and HTTP/2
//! over TLS with ALPN `h2`.
//!
//! Every network operation is bounded by [`NET_TIMEOUT`] (or a connection's own timeout), so a
//! gateway that hangs fails the test with a `TimedOut` error instead of hanging it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The bound on each network operation (connect, TLS handshake, one request/response exchange).
pub const NET_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response head accepted.
const MAX_HEAD: usize = 1024 * 1024;

/// A parsed HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawResponse {
    /// `HTTP/1.1`, `HTTP/1.0`, or `HTTP/2` for [`h2_request`].
    pub version: String,
    pub status: u16,
    /// The reason phrase (empty for HTTP/2).
    pub reason: String,
    /// Header fields in order, every copy; names as sent (HTTP/2 names are lowercase).
    pub headers: Vec<(String, String)>,
    /// Trailer fields of a chunked (or HTTP/2) response.
    pub trailers: Vec<(String, String)>,
    /// The body after removing the transfer coding.
    pub body: Vec<u8>,
    /// The interim (1xx) answers before this one, in order: status and fields.
    pub interim: Vec<(u16, Vec<(String, String)>)>,
}

impl RawResponse {
    /// The statuses of the interim answers before this one, in order.
    pub fn interim_statuses(&self) -> Vec<u16> {
        self.interim.iter().map(|(status, _)| *status).collect()
    }

    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::first_header(&self.headers, name)
    }

    /// Every value of header `name` (compared case-insensitively), in order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        super::all_headers(&self.headers, name)
    }

    /// The body parsed as JSON; panics (failing the test) with the status and body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body: {}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Builds an HTTP/1.1 request as exact bytes: the request line and the headers are written
/// exactly as given (order, case, duplicates, and any byte in a value, so a value containing
/// `"\r\n "` produces an obsolete line folding). Nothing is added unless asked for.
#[derive(Clone, Debug)]
pub struct RawRequest {
    method: String,
    target: Vec<u8>,
    version: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    content_length: bool,
    chunks: Option<usize>,
}

impl RawRequest {
    /// `method` and `target` go on the request line as given (`/api/x?y=1`,
    /// `/api/%2e%2e/admin`, `http://bob.test/x`, `*`, ...), with version `HTTP/1.1`.
    pub fn new(method: &str, target: impl AsRef<[u8]>) -> RawRequest {
        RawRequest {
            method: method.to_string(),
            target: target.as_ref().to_vec(),
            version: "HTTP/1.1".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            content_length: false,
            chunks: None,
        }
    }

    /// Replaces the version on the request line (e.g. `HTTP/1.0`).
    pub fn version(mut self, version: &str) -> RawRequest {
        self.version = version.to_string();
        self
    }

    /// Appends `name: value` as one header line, bytes exactly as given.
    pub fn header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> RawRequest {
        self.headers
            .push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }

    /// Puts `name: value` before every header line added so far.
    pub fn header_first(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> RawRequest {
        self.headers
            .insert(0, (name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }

    /// Appends several header lines, in order.
    pub fn headers<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        mut self,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> RawRequest {
        for (n, v) in headers {
            self = self.header(n, v);
        }
        self
    }

    /// Sets the body bytes. They are sent as they are: no framing header is added unless
    /// [`content_length`](Self::content_length) or [`chunked`](Self::chunked) is called.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> RawRequest {
        self.body = body.as_ref().to_vec();
        self
    }

    /// Adds `Content-Length: <body length>` after the other headers.
    pub fn content_length(mut self) -> RawRequest {
        self.content_length = true;
        self
    }

    /// Adds `Transfer-Encoding: chunked` after the other headers (and after Content-Length, if
    /// both are asked for) and sends the body in three chunks of near-equal size (fewer if the
    /// body is shorter than three bytes), then the last chunk.
    pub fn chunked(self) -> RawRequest {
        self.chunked_in(3)
    }

    /// Like [`chunked`](Self::chunked), with the body split into `n` (at least 1) chunks.
    pub fn chunked_in(mut self, n: usize) -> RawRequest {
        self.chunks = Some(n.max(1));
        self
    }

    /// The request as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.push(b' ');
        out.extend_from_slice(self.version.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if self.content_length {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        match self.chunks {
            None => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&self.body);
            }
            Some(n) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                if !self.body.is_empty() {
                    let size = self.body.len().div_ceil(n);
                    for chunk in self.body.chunks(size) {
                        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        out.extend_from_slice(chunk);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        out
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One HTTP/1.1 connection (plain or TLS) for sending exact bytes and reading responses, e.g.
/// several requests over one keep-alive connection.
pub struct RawConn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    alpn: Option<Vec<u8>>,
    timeout: Duration,
}

impl RawConn {
    /// Connects to `addr`; with `tls`, does a TLS handshake using that client config and
    /// server name (SNI, and the name the certificate must carry; an IP address is verified
    /// against IP SANs and sends no SNI). The config's ALPN list is offered as it is.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<(Arc<ClientConfig>, &str)>,
    ) -> io::Result<RawConn> {
        let tcp = connect_tcp(addr).await?;
        let (io, alpn): (Box<dyn Io>, _) = match tls {
            None => (Box::new(tcp), None),
            Some((config, name)) => {
                let tls = tls_handshake(tcp, config, name).await?;
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                (Box::new(tls), alpn)
            }
        };
        Ok(RawConn {
            io,
            buf: Vec::new(),
            alpn,
            timeout: NET_TIMEOUT,
        })
    }

    /// The ALPN protocol the TLS handshake settled on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// Sets the bound on each later operation on this connection (default [`NET_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Waits up to `wait` for the server to close this connection (a read that ends or
    /// fails): how long it took, or an error if the connection was still open, or sent bytes.
    pub async fn closed_within(&mut self, wait: Duration) -> io::Result<Duration> {
        let started = std::time::Instant::now();
        let mut byte = [0u8; 1];
        match tokio::time::timeout(wait, self.io.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Ok(started.elapsed()),
            Ok(Ok(_)) => Err(io::Error::other("the server sent bytes instead of closing")),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the connection was still open after {wait:?}"),
            )),
        }
    }

    /// Like [`Self::closed_within`], reading past what the server sends first (an HTTP/2
    /// server's SETTINGS, or a GOAWAY before it closes).
    pub async fn closed_within_reading(&mut self, wait: Duration) -> io::Result<Duration> {
        let started = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        let io = &mut self.io;
        let closed = tokio::time::timeout(wait, async {
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        match closed {
            Ok(()) => Ok(started.elapsed()),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the connection was still open after {wait:?}"),
            )),
        }
    }

    /// Everything the server sends until it ends the connection (a TLS connection closed
    /// without `close_notify` counts as ended), up to the connection's timeout.
    pub async fn read_until_closed(&mut self) -> io::Result<Vec<u8>> {
        let mut got = std::mem::take(&mut self.buf);
        let io = &mut self.io;
        bounded(self.timeout, "read until closed", async {
            let mut chunk = [0u8; 4096];
            loop {
                match io.read(&mut chunk).await {
                    Ok(0) => return Ok(got),
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(got),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
    }

    /// Writes `bytes` (and flushes).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let io = &mut self.io;
        bounded(self.timeout, "write", async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
    }

    /// Reads one response (interim 1xx responses other than 101 kept in its `interim`). `head_request`
    /// says the request was HEAD, so the response has no body whatever its headers say.
    pub async fn read_response(&mut self, head_request: bool) -> io::Result<RawResponse> {
        bounded(
            self.timeout,
            "read response",
            read_response(&mut self.io, &mut self.buf, head_request),
        )
        .await
    }

    /// Sends `bytes` and reads one response. Writing and reading run together, so an answer
    /// the server sends before it has read the whole request (a 413, a 401 for an unsigned
    /// upload, ...) is returned even if the server stops reading or resets the connection.
    /// A request starting with `HEAD ` expects a response without body.
    pub async fn request(&mut self, bytes: &[u8]) -> io::Result<RawResponse> {
        let head_request = bytes.starts_with(b"HEAD ");
        let (mut rd, mut wr) = tokio::io::split(&mut self.io);
        let buf = &mut self.buf;
        let exchange = async move {
            let write = async {
                wr.write_all(bytes).await?;
                wr.flush().await
            };
            let read = read_response(&mut rd, buf, head_request);
            tokio::pin!(write, read);
            let mut write_result = None;
            loop {
                tokio::select! {
                    w = &mut write, if write_result.is_none() => write_result = Some(w),
                    r = &mut read => {
                        return match (r, write_result) {
                            (Ok(resp), _) => Ok(resp),
                            // The read failed after the write did: the write error is the cause.
                            (Err(_), Some(Err(w))) => Err(w),
                            (Err(r), _) => Err(r),
                        };
                    }
                }
            }
        };
        bounded(self.timeout, "request", exchange).await
    }
}

/// Connects to `addr` (plain, or TLS with the given client config and server name), sends
/// `bytes` exactly, reads one response and closes the connection.
pub async fn raw_request(
    addr: SocketAddr,
    tls: Option<(Arc<ClientConfig>, &str)>,
    bytes: &[u8],
) -> io::Result<RawResponse> {
    RawConn::connect(addr, tls).await?.request(bytes).await
}

/// Sends one request over HTTP/2 (TLS with ALPN `h2`; `h2` is offered even if `config` does
/// not list it, and the call fails unless the server selects it).
///
/// `uri` is either a path with optional query (`/api/x?y=1`; the request then goes to
/// `https://<server_name>/api/x?y=1`, so `:authority` is `server_name` without a port) or an
/// absolute URI used as is (to choose `:authority`, e.g. `https://alice.test:8443/x`).
/// `headers` are added in order (names are lowercased, as HTTP/2 requires). hyper adds
/// `content-length` when it is missing and the body is not empty, or the method is not
/// GET/HEAD/DELETE/CONNECT/OPTIONS/TRACE.
pub async fn h2_request(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<RawResponse> {
    let request = h2_build(server_name, method, uri, headers, body)?;
    bounded(NET_TIMEOUT, "HTTP/2 exchange", async move {
        let (mut sender, connection) = h2_connect(addr, config, server_name).await?;
        let driver = tokio::spawn(connection);
        let result = h2_send(&mut sender, request).await;
        drop(sender);
        driver.abort();
        result
    })
    .await
}

/// Sends a GET for each of `uris` at once, as streams of one new HTTP/2 connection, and
/// returns each answer (or why it failed) in the order of `uris`.
pub async fn h2_gets_at_once(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    uris: &[&str],
) -> io::Result<Vec<io::Result<RawResponse>>> {
    let requests = uris
        .iter()
        .map(|uri| h2_build(server_name, "GET", uri, &[], b""))
        .collect::<io::Result<Vec<_>>>()?;
    bounded(NET_TIMEOUT, "HTTP/2 exchanges", async move {
        let (sender, connection) = h2_connect(addr, config, server_name).await?;
        let driver = tokio::spawn(connection);
        let streams: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let mut sender = sender.clone();
                tokio::spawn(async move { h2_send(&mut sender, request).await })
            })
            .collect();
        let mut answers = Vec::new();
        for stream in streams {
            answers.push(stream.await.map_err(io::Error::other)?);
        }
        drop(sender);
        driver.abort();
        Ok(answers)
    })
    .await
}

/// Sends a GET with `headers` on a new HTTP/2 connection that gives each stream a receive
/// window of `window` bytes, takes the answer's head, and reads its body only after `wait`:
/// a client that stops reading. The body, or the error it ended with (a reset stream).
pub async fn h2_get_read_late(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    uri: &str,
    headers: &[(&str, &str)],
    window: u32,
    wait: Duration,
) -> io::Result<(u16, io::Result<Vec<u8>>)> {
    let request = h2_build(server_name, "GET", uri, headers, b"")?;
    let (mut sender, driver) = h2_open(addr, config, server_name, Some(window)).await?;
    let response = bounded(NET_TIMEOUT, "HTTP/2 answer head", async {
        sender.send_request(request).await.map_err(io::Error::other)
    })
    .await?;
    tokio::time::sleep(wait).await;
    let (parts, body) = response.into_parts();
    let body = bounded(NET_TIMEOUT, "HTTP/2 answer body", async {
        body.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(io::Error::other)
    })
    .await;
    drop(sender);
    driver.abort();
    Ok((parts.status.as_u16(), body))
}

/// Sends a GET on a new HTTP/2 connection and gives it up after `after` (hyper then resets
/// the stream), keeping the connection open a moment longer so that the reset goes out.
pub async fn h2_get_given_up(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    uri: &str,
    after: Duration,
) -> io::Result<()> {
    let request = h2_build(server_name, "GET", uri, &[], b"")?;
    let (mut sender, driver) = h2_open(addr, config, server_name, None).await?;
    let answered = tokio::time::timeout(after, sender.send_request(request)).await;
    if let Ok(answer) = answered {
        let answer = answer.map_err(io::Error::other)?;
        return Err(io::Error::other(format!(
            "answered ({}) before it was given up",
            answer.status()
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(sender);
    driver.abort();
    Ok(())
}

/// Sends one request on a new HTTP/2 connection, reads the answer, then keeps the connection
/// open and idle: the answer and how long the server took to close it, or an error if it was
/// still open after `wait`.
pub async fn h2_request_then_idle(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    uri: &str,
    wait: Duration,
) -> io::Result<(RawResponse, Duration)> {
    let request = h2_build(server_name, "GET", uri, &[], b"")?;
    let (mut sender, mut driver) = h2_open(addr, config, server_name, None).await?;
    let response = bounded(
        NET_TIMEOUT,
        "HTTP/2 exchange",
        h2_send(&mut sender, request),
    )
    .await?;
    let idle = std::time::Instant::now();
    // The sender stays alive: dropping it would make the client close the connection itself.
    let closed = tokio::time::timeout(wait, &mut driver).await;
    drop(sender);
    driver.abort();
    match closed {
        Ok(_) => Ok((response, idle.elapsed())),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the HTTP/2 connection was still open after {wait:?} idle"),
        )),
    }
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// [`h2_connect_with`] within [`NET_TIMEOUT`], its connection driven by a task of its own
/// (abort it to drop the connection).
async fn h2_open(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    window: Option<u32>,
) -> io::Result<(H2Sender, tokio::task::JoinHandle<hyper::Result<()>>)> {
    let (sender, connection) = bounded(
        NET_TIMEOUT,
        "HTTP/2 handshake",
        h2_connect_with(addr, config, server_name, window),
    )
    .await?;
    Ok((sender, tokio::spawn(connection)))
}

fn h2_build(
    server_name: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<hyper::Request<Full<Bytes>>> {
    let uri = if uri.starts_with('/') {
        format!("https://{server_name}{uri}")
    } else {
        uri.to_string()
    };
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(invalid_input)?;
    for (name, value) in headers {
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(invalid_input)?;
        let value = hyper::header::HeaderValue::from_str(value).map_err(invalid_input)?;
        request.headers_mut().append(name, value);
    }
    Ok(request)
}

/// A POST over a new HTTP/2 connection whose `body_len`-byte body (`Content-Length` declared)
/// goes out after the head in 16 KiB pieces, as flow control lets them. Returns the answer, and
/// the reason of a `RST_STREAM` that came before the whole body had gone out: hyper's client
/// takes a reset with `NO_ERROR` after a whole answer in silence, where curl 7.88 fails the
/// request.
pub async fn h2_post_streamed(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    uri: &str,
    body_len: usize,
) -> io::Result<(RawResponse, Option<h2::Reason>)> {
    use std::task::Poll;
    bounded(NET_TIMEOUT, "HTTP/2 streamed POST", async move {
        let (client, driver) = h2_raw(addr, config, server_name).await?;
        let mut client = client.ready().await.map_err(io::Error::other)?;
        let request = hyper::Request::post(format!("https://{server_name}{uri}"))
            .header("content-length", body_len.to_string())
            .body(())
            .map_err(invalid_input)?;
        let (response, mut send) = client
            .send_request(request, body_len == 0)
            .map_err(io::Error::other)?;
        let mut left = body_len;
        let mut reset = None;
        while left > 0 {
            send.reserve_capacity(left.min(16 * 1024));
            let capacity = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = send.poll_reset(cx) {
                    return Poll::Ready(Err(r.ok()));
                }
                match send.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(n))) => Poll::Ready(Ok(n)),
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Err(e.reason())),
                    Poll::Ready(None) => Poll::Ready(Err(None)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match capacity {
                Ok(0) => continue,
                Ok(n) => {
                    let n = n.min(left);
                    left -= n;
                    send.send_data(Bytes::from(vec![b'x'; n]), left == 0)
                        .map_err(io::Error::other)?;
                }
                Err(reason) => {
                    reset = Some(reason.unwrap_or(h2::Reason::CANCEL));
                    break;
                }
            }
        }
        let response = response.await.map_err(io::Error::other)?;
        let (parts, mut body) = response.into_parts();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(io::Error::other)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        drop(client);
        driver.abort();
        Ok((h2_response(&parts, Vec::new(), bytes), reset))
    })
    .await
}

/// An HTTP/2 connection through the `h2` crate, and the task that drives it.
pub type H2Raw = (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
);

/// A new HTTP/2 connection through the `h2` crate itself (hyper's client hides resets), and
/// the task that drives it (abort it to close the connection).
pub async fn h2_raw(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> io::Result<H2Raw> {
    h2_raw_built(addr, config, server_name, h2::client::Builder::new()).await
}

/// [`h2_raw`] for a client that takes no answer's body: every stream's flow-control window is
/// zero (`SETTINGS_INITIAL_WINDOW_SIZE` 0), so only heads can reach it.
pub async fn h2_raw_zero_window(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> io::Result<H2Raw> {
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    h2_raw_built(addr, config, server_name, builder).await
}

async fn h2_raw_built(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    builder: h2::client::Builder,
) -> io::Result<H2Raw> {
    let tls = h2_tls(addr, config, server_name).await?;
    let (client, connection) = bounded(NET_TIMEOUT, "HTTP/2 handshake", async {
        builder.handshake(tls).await.map_err(io::Error::other)
    })
    .await?;
    Ok((client, tokio::spawn(connection)))
}

/// An HTTP/2 connection whose client has stopped reading: never polled again, it answers no
/// PING and takes no frame, but stays open until dropped.
pub type DeafH2 = (
    h2::client::SendRequest<Bytes>,
    std::pin::Pin<
        Box<h2::client::Connection<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
    >,
);

/// One GET on a new HTTP/2 connection (the `h2` crate), its whole answer read, after which the
/// client stops reading, as a suspended process or a path gone dark would: the answer's status
/// and the connection, left open.
pub async fn h2_get_then_deaf(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    uri: &str,
) -> io::Result<(u16, DeafH2)> {
    let tls = h2_tls(addr, config, server_name).await?;
    let (mut client, connection) = bounded(NET_TIMEOUT, "HTTP/2 handshake", async {
        h2::client::handshake(tls).await.map_err(io::Error::other)
    })
    .await?;
    let mut connection = Box::pin(connection);
    let request = hyper::Request::get(format!("https://{server_name}{uri}"))
        .body(())
        .map_err(invalid_input)?;
    let (response, _) = client
        .send_request(request, true)
        .map_err(io::Error::other)?;
    let exchange = async {
        let response = response.await.map_err(io::Error::other)?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(io::Error::other)?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        Ok::<u16, io::Error>(status)
    };
    // The connection is driven only until the answer is in.
    let status = bounded(NET_TIMEOUT, "HTTP/2 exchange", async {
        tokio::select! {
            status = exchange => status,
            ended = &mut connection => Err(io::Error::other(format!(
                "the connection ended before the answer: {ended:?}"
            ))),
        }
    })
    .await?;
    Ok((status, (client, connection)))
}

/// A TLS connection to `addr` that settled on ALPN h2.
async fn h2_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = if config.alpn_protocols.iter().any(|p| p == b"h2") {
        config
    } else {
        let mut c = (*config).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    };
    let tcp = connect_tcp(addr).await?;
    let tls = tls_handshake(tcp, config, server_name).await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() != Some(b"h2") {
        return Err(io::Error::other(format!(
            "server did not select ALPN h2 (selected: {:?})",
            alpn.map(|p| String::from_utf8_lossy(&p).into_owned())
        )));
    }
    Ok(tls)
}

/// A TLS connection that settled on ALPN h2, and hyper's client over it (the connection future
/// must be driven for the sender to work).
async fn h2_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> io::Result<(
    H2Sender,
    impl std::future::Future<Output = hyper::Result<()>> + Send + 'static,
)> {
    h2_connect_with(addr, config, server_name, None).await
}

/// [`h2_connect`], with each stream's receive window `window` bytes when given.
async fn h2_connect_with(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    window: Option<u32>,
) -> io::Result<(
    H2Sender,
    impl std::future::Future<Output = hyper::Result<()>> + Send + 'static,
)> {
    let tls = h2_tls(addr, config, server_name).await?;
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(window) = window {
        builder.initial_stream_window_size(window);
    }
    builder
        .handshake(TokioIo::new(tls))
        .await
        .map_err(io::Error::other)
}

async fn h2_send(
    sender: &mut H2Sender,
    request: hyper::Request<Full<Bytes>>,
) -> io::Result<RawResponse> {
    let response = sender
        .send_request(request)
        .await
        .map_err(io::Error::other)?;
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(io::Error::other)?;
    let trailers = collected.trailers().map(header_pairs).unwrap_or_default();
    Ok(h2_response(&parts, trailers, collected.to_bytes().to_vec()))
}

/// An HTTP/2 answer as a [`RawResponse`] (no reason phrase in HTTP/2).
fn h2_response(
    parts: &hyper::http::response::Parts,
    trailers: Vec<(String, String)>,
    body: Vec<u8>,
) -> RawResponse {
    RawResponse {
        version: "HTTP/2".to_string(),
        status: parts.status.as_u16(),
        reason: String::new(),
        headers: header_pairs(&parts.headers),
        trailers,
        body,
        interim: Vec::new(),
    }
}

/// The rustls error behind a failed TLS connection, e.g.
/// `rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)`.
pub fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

fn header_pairs(map: &hyper::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn invalid_input(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: no result within {limit:?}"),
        )),
    }
}

async fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let tcp = bounded(NET_TIMEOUT, "connect", TcpStream::connect(addr)).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn tls_handshake(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_string()).map_err(invalid_input)?;
    bounded(
        NET_TIMEOUT,
        "TLS handshake",
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
}

/// Reads one final response from `r`, keeping bytes past it in `buf`.
async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> io::Result<RawResponse> {
    let mut interim = Vec::new();
    loop {
        let head = read_head(r, buf).await?;
        let text = &head[..head.len() - 4];
        let mut lines = text
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/"))
            .ok_or_else(|| bad_data(format!("malformed status line: {status_line:?}")))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let headers = parse_fields(lines)?;
        if (100..200).contains(&status) && status != 101 {
            interim.push((status, headers));
            continue;
        }
        let mut resp = RawResponse {
            version,
            status,
            reason,
            headers,
            trailers: Vec::new(),
            body: Vec::new(),
            interim,
        };
        if head_request || status == 204 || status == 304 || status == 101 {
            return Ok(resp);
        }
        let chunked = resp
            .headers_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|c| c.trim().eq_ignore_ascii_case("chunked"));
        if chunked {
            read_chunked(r, buf, &mut resp).await?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| bad_data(format!("bad content-length {len:?}")))?;
            while buf.len() < len {
                if read_more(r, buf).await? == 0 {
                    return Err(eof(format!(
                        "connection closed after {} of {len} body bytes",
                        buf.len()
                    )));
                }
            }
            resp.body = buf.drain(..len).collect();
        } else {
            // Delimited by the end of the connection. A TLS peer that closes without
            // close_notify still ends the body.
            loop {
                match read_more(r, buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            resp.body = std::mem::take(buf);
        }
        return Ok(resp);
    }
}

async fn read_head<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut searched = 0;
    loop {
        if let Some(pos) = find(&buf[searched..], b"\r\n\r\n") {
            let end = searched + pos + 4;
            return Ok(buf.drain(..end).collect());
        }
        searched = buf.len().saturating_sub(3);
        if buf.len() > MAX_HEAD {
            return Err(bad_data("response head too large".to_string()));
        }
        if read_more(r, buf).await? == 0 {
            return Err(eof(if buf.is_empty() {
                "connection closed before any response byte".to_string()
            } else {
                format!(
                    "connection closed inside the response head: {:?}",
                    String::from_utf8_lossy(buf)
                )
            }));
        }
    }
}

async fn read_chunked<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    resp: &mut RawResponse,
) -> io::Result<()> {
    loop {
        let line = read_line(r, buf).await?;
        let size = String::from_utf8_lossy(&line);
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| bad_data(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            let mut lines = Vec::new();
            loop {
                let line = read_line(r, buf).await?;
                if line.is_empty() {
                    break;
                }
                lines.push(line);
            }
            resp.trailers = parse_fields(lines.iter().map(Vec::as_slice))?;
            return Ok(());
        }
        while buf.len() < size + 2 {
            if read_more(r, buf).await? == 0 {
                return Err(eof("connection closed inside a chunk".to_string()));
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(bad_data("chunk data not followed by CRLF".to_string()));
        }
        resp.body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

async fn read_line<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    loop {
        if let Some(pos) = find(buf, b"\r\n") {
            let line = buf[..pos].to_vec();
            buf.drain(..pos + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err(bad_data("line too long".to_string()));
        }
        if read_more(r, buf).await? == 0 {
            return Err(eof("connection closed inside a chunked body".to_string()));
        }
    }
}

fn parse_fields<'a>(lines: impl Iterator<Item = &'a [u8]>) -> io::Result<Vec<(String, String)>> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        let text = String::from_utf8_lossy(line);
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            let (_, value) = fields
                .last_mut()
                .ok_or_else(|| bad_data("folded line without a field".to_string()))?;
            value.push(' ');
            value.push_str(text.trim());
            continue;
        }
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| bad_data(format!("malformed header line {text:?}")))?;
        fields.push((name.to_string(), value.trim().to_string()));
    }
    Ok(fields)
}

async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = r.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn eof(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg)
}

/// Whether the peer closes `conn` within `limit`: a read sees the end, or fails.
pub async fn closed_within(conn: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, conn.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}
