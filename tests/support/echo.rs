//! A real HTTP/1.1 app on loopback that records every request exactly as it arrived.
//!
//! The server is hand-rolled on tokio (no hyper) so that it can keep what a library would
//! normalize away: header names keep their case, headers keep their order and every duplicate,
//! the request-target is kept byte for byte, and `raw_head` holds the request line and header
//! block exactly as received. Bodies framed by Content-Length or chunked transfer coding are
//! decoded; connections are persistent (HTTP/1.1 keep-alive) unless the request says otherwise.
//!
//! Each `EchoApp` runs on its own thread with its own tokio runtime, so it works the same from
//! `#[test]` and `#[tokio::test]` (any flavor), and keeps answering while a test's runtime is
//! busy. Dropping the `EchoApp` stops it.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Largest request head (request line and headers) the app accepts; larger gets 431.
const MAX_HEAD: usize = 1024 * 1024;

/// One request as the app received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// Which connection it came on: 0 for the first connection the app accepted, then 1, ...
    pub conn: u64,
    /// The method, exactly as sent.
    pub method: String,
    /// The request-target exactly as on the request line (origin-form path and query, or
    /// absolute-form, `*`, ...); no percent-decoding, no normalization. Converted lossily if not
    /// UTF-8: `raw_head` has the exact bytes.
    pub target: String,
    /// The HTTP version from the request line, e.g. `HTTP/1.1`.
    pub version: String,
    /// Header fields in arrival order, every copy, names in their original case, values with
    /// surrounding whitespace removed. An obsolete line folding is unfolded into one space
    /// (`raw_head` shows the fold).
    pub headers: Vec<(String, String)>,
    /// Trailer fields of a chunked body, in arrival order.
    pub trailers: Vec<(String, String)>,
    /// The body after removing the transfer coding.
    pub body: Vec<u8>,
    /// Whether the body came with chunked transfer coding.
    pub chunked: bool,
    /// The request line and header block exactly as received, including the final CRLF CRLF.
    pub raw_head: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::first_header(&self.headers, name)
    }

    /// Every value of header `name` (compared case-insensitively), in arrival order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        super::all_headers(&self.headers, name)
    }

    /// Whether any header's name equals `name` case-insensitively.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The target up to (not including) the first `?`.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The part of the target after the first `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The body as text (lossy UTF-8).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What an [`EchoApp`] answers.
#[derive(Clone, Default)]
pub enum Handler {
    /// `200`, `content-type: application/json`, `x-echo: 1`, body
    /// `{"ok":true,"path":"<target>","body_len":N}` where `<target>` is the raw request-target
    /// (path and query) and `N` the decoded body length.
    #[default]
    Echo,
    /// The echo answer, sent only after this delay (the request is recorded on arrival, before
    /// the delay). For gateway timeout (504) tests.
    Delay(Duration),
    /// Reads and records the whole request, then closes the connection without a byte of
    /// answer. For bad-gateway (502) tests. (A proxy may retry on such a connection, so the app
    /// can record more than one copy.)
    CloseWithoutAnswer,
    /// Answers whatever the function returns for the recorded request.
    Custom(Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>),
}

impl Handler {
    /// A [`Handler::Custom`] from a closure.
    pub fn custom(f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Handler {
        Handler::Custom(Arc::new(f))
    }
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handler::Echo => f.write_str("Echo"),
            Handler::Delay(d) => write!(f, "Delay({d:?})"),
            Handler::CloseWithoutAnswer => f.write_str("CloseWithoutAnswer"),
            Handler::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// An answer for [`Handler::Custom`]. The app adds `content-length` unless `headers` has a
/// `content-length` or `transfer-encoding` (then the body is written as given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with `status`, no headers and no body.
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (kept in order, duplicates allowed).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// The default echo answer for `req`.
    pub fn echo(req: &Recorded) -> Reply {
        let body = format!(
            r#"{{"ok":true,"path":{},"body_len":{}}}"#,
            serde_json::to_string(&req.target).expect("string to JSON"),
            req.body.len()
        );
        Reply::new(200)
            .header("content-type", "application/json")
            .header("x-echo", "1")
            .body(body)
    }
}

struct State {
    requests: Mutex<Vec<Recorded>>,
    count: watch::Sender<usize>,
    connections: AtomicU64,
    handler: Handler,
}

impl State {
    fn record(&self, req: Recorded) {
        let mut requests = self.requests.lock().unwrap();
        requests.push(req);
        self.count.send_replace(requests.len());
    }
}

/// A running echo app; see the module documentation.
pub struct EchoApp {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl EchoApp {
    /// Starts an app answering with [`Handler::Echo`] on 127.0.0.1 and a free port. It accepts
    /// connections as soon as this returns.
    pub fn start() -> EchoApp {
        EchoApp::start_with(Handler::Echo)
    }

    /// Starts an app that answers with `handler`.
    pub fn start_with(handler: Handler) -> EchoApp {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind echo app");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("echo app address");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            connections: AtomicU64::new(0),
            handler,
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread_state = state.clone();
        std::thread::Builder::new()
            .name(format!("echo-app-{}", addr.port()))
            .spawn(move || serve_thread(listener, thread_state, shutdown_rx))
            .expect("spawn echo app thread");
        EchoApp {
            addr,
            state,
            shutdown: Some(shutdown_tx),
        }
    }

    /// Where the app listens (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request recorded so far (since the last [`clear`](Self::clear)), in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The last request recorded, if any.
    pub fn last(&self) -> Option<Recorded> {
        self.state.requests.lock().unwrap().last().cloned()
    }

    /// How many requests have been recorded.
    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Forgets the recorded requests (the connection counter keeps counting).
    pub fn clear(&self) {
        let mut requests = self.state.requests.lock().unwrap();
        requests.clear();
        self.state.count.send_replace(0);
    }

    /// How many connections the app has accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests are recorded and returns them all; panics (failing
    /// the test) if that takes longer than `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let mut rx = self.state.count.subscribe();
        // Drop the watch guard at once: `record` takes the value lock while holding the list.
        let arrived = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        );
        match arrived {
            true => self.requests(),
            false => panic!(
                "echo app {}: waited {timeout:?} for {n} request(s), got {}: {:#?}",
                self.addr,
                self.count(),
                self.requests()
            ),
        }
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl fmt::Debug for EchoApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoApp")
            .field("addr", &self.addr)
            .field("handler", &self.state.handler)
            .field("count", &self.count())
            .finish()
    }
}

/// A TCP port on 127.0.0.1 that is free now and was not handed out before in this process.
pub fn free_port() -> u16 {
    // A port picked by binding port 0 comes from the kernel's ephemeral range (32768-60999 on
    // Linux) and is released before the gateway binds it: meanwhile another test may draw the
    // same one, the second gateway's bind fails, and its readiness probe answers from the other
    // test's listener. So ports come from 10000-17999 instead, below the ephemeral range and
    // below the demo's fixed ports, each handed out at most once per process (a counter), with
    // a per-process starting point so concurrent test processes rarely meet; a port something
    // else holds is skipped.
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 8_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 50) * (SPAN / 50);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if StdTcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port left in {FIRST}-{}", FIRST + SPAN - 1);
}

/// Waits until something accepts connections on `addr` (a gateway just spawned), up to 10 s.
pub fn wait_listening(addr: SocketAddr) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {addr}");
}

/// Waits until this process listens on `addr`'s port, without connecting to it: a probe
/// connection takes a place under a TLS listener's `listen.max_connections` until its
/// handshake fails, and when the listener's accept loop starts only after the socket is bound,
/// it is accepted beside the connections a test opens next and races them for their places.
/// Where the kernel's tables cannot be read, falls back to [`wait_listening`].
pub fn wait_bound(addr: SocketAddr) {
    for _ in 0..400 {
        match peergate::lifecycle::owns_listening_socket(addr.port()) {
            Ok(true) => return,
            Ok(false) => std::thread::sleep(Duration::from_millis(25)),
            Err(_) => return wait_listening(addr),
        }
    }
    panic!("nothing listens on {addr}");
}

/// An address on 127.0.0.1 where nothing listens (connections are refused).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn serve_thread(listener: StdTcpListener, state: Arc<State>, shutdown: oneshot::Receiver<()>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("echo app runtime");
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("echo app listener");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let conn = state.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve_conn(stream, conn, state.clone()));
                }
            }
        }
    });
    rt.shutdown_background();
}

/// Why a connection stops being served.
enum Stop {
    /// The peer closed or the connection broke: just drop it.
    Closed,
    /// The request was malformed: answer this status, then close.
    Bad(u16, &'static str),
}

impl From<io::Error> for Stop {
    fn from(_: io::Error) -> Stop {
        Stop::Closed
    }
}

async fn serve_conn(mut stream: TcpStream, conn: u64, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        match serve_one(&mut stream, &mut buf, conn, &state).await {
            Ok(true) => continue,
            Ok(false) | Err(Stop::Closed) => break,
            Err(Stop::Bad(status, why)) => {
                let reply = Reply::new(status)
                    .header("content-type", "text/plain")
                    .body(why);
                let _ = write_reply(&mut stream, &reply, true, false).await;
                break;
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Serves one request; `Ok(true)` when the connection stays open for another.
async fn serve_one(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    conn: u64,
    state: &State,
) -> Result<bool, Stop> {
    // RFC 9112 2.2: ignore empty lines before the request line.
    loop {
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if !buf.is_empty() && buf.as_slice() != b"\r" {
            break;
        }
        if read_more(stream, buf).await? == 0 {
            return Err(Stop::Closed);
        }
    }
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(Stop::Bad(431, "request head too large"));
        }
        if read_more(stream, buf).await? == 0 {
            return Err(Stop::Closed);
        }
    };
    let raw_head: Vec<u8> = buf.drain(..head_end).collect();
    let text = &raw_head[..head_end - 4];
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(Stop::Bad(400, "malformed request line"));
    };
    if method.is_empty() || target.is_empty() || !version.starts_with(b"HTTP/1.") {
        return Err(Stop::Bad(400, "malformed request line"));
    }
    let headers = parse_fields(lines).ok_or(Stop::Bad(400, "malformed header field"))?;
    let version = lossy(version);

    let (chunked, length) = framing(&headers)?;
    if (chunked || length > 0) && has_token(&headers, "expect", "100-continue") {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let mut trailers = Vec::new();
    let body = if chunked {
        read_chunked(stream, buf, &mut trailers).await?
    } else {
        read_exact_buf(stream, buf, length).await?
    };

    let keep_alive = if version == "HTTP/1.0" {
        has_token(&headers, "connection", "keep-alive")
    } else {
        !has_token(&headers, "connection", "close")
    };
    let is_head = method == b"HEAD";
    let req = Recorded {
        conn,
        method: lossy(method),
        target: lossy(target),
        version,
        headers,
        trailers,
        body,
        chunked,
        raw_head,
    };
    let reply = match &state.handler {
        Handler::Custom(f) => f(&req),
        Handler::Echo | Handler::Delay(_) | Handler::CloseWithoutAnswer => Reply::echo(&req),
    };
    let handler = state.handler.clone();
    state.record(req);
    match handler {
        Handler::CloseWithoutAnswer => return Ok(false),
        Handler::Delay(d) => tokio::time::sleep(d).await,
        Handler::Echo | Handler::Custom(_) => {}
    }
    write_reply(stream, &reply, !keep_alive, is_head).await?;
    // A reply that says `Connection: close` ends the connection, whatever the request asked.
    let closes = reply
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
    Ok(keep_alive && !closes)
}

/// Parses header (or trailer) lines; `None` if one is malformed.
fn parse_fields<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<Vec<(String, String)>> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            // Obsolete line folding: a continuation of the previous field's value.
            let (_, value) = fields.last_mut()?;
            let more = lossy(trim(line));
            if !more.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(&more);
            }
            continue;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return None;
        }
        fields.push((lossy(name), lossy(trim(&line[colon + 1..]))));
    }
    Some(fields)
}

/// Decides the body framing (RFC 9112 6.3): `(chunked, content_length)`.
fn framing(headers: &[(String, String)]) -> Result<(bool, usize), Stop> {
    let codings: Vec<String> = values(headers, "transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    if !codings.is_empty() {
        return if codings.last().map(String::as_str) == Some("chunked") {
            Ok((true, 0))
        } else {
            Err(Stop::Bad(400, "transfer coding without final chunked"))
        };
    }
    let mut length = None;
    for v in values(headers, "content-length").flat_map(|v| v.split(',')) {
        let v = v.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Stop::Bad(400, "invalid content-length"));
        }
        let n: usize = v
            .parse()
            .map_err(|_| Stop::Bad(400, "invalid content-length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(Stop::Bad(400, "conflicting content-length"));
        }
        length = Some(n);
    }
    Ok((false, length.unwrap_or(0)))
}

fn values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    values(headers, name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    trailers: &mut Vec<(String, String)>,
) -> Result<Vec<u8>, Stop> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(trim(size))
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or(Stop::Bad(400, "invalid chunk size"))?;
        if size == 0 {
            let mut lines = Vec::new();
            loop {
                let line = read_line(stream, buf).await?;
                if line.is_empty() {
                    break;
                }
                lines.push(line);
            }
            *trailers = parse_fields(lines.iter().map(Vec::as_slice))
                .ok_or(Stop::Bad(400, "malformed trailer field"))?;
            return Ok(body);
        }
        body.extend_from_slice(&read_exact_buf(stream, buf, size).await?);
        if read_line(stream, buf).await?.is_empty() {
            continue;
        }
        return Err(Stop::Bad(400, "chunk data not followed by CRLF"));
    }
}

/// Reads one CRLF-terminated line (without the CRLF).
async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, Stop> {
    loop {
        if let Some(pos) = find(buf, b"\r\n") {
            let line = buf[..pos].to_vec();
            buf.drain(..pos + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err(Stop::Bad(400, "line too long"));
        }
        if read_more(stream, buf).await? == 0 {
            return Err(Stop::Closed);
        }
    }
}

async fn read_exact_buf(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
) -> Result<Vec<u8>, Stop> {
    while buf.len() < n {
        if read_more(stream, buf).await? == 0 {
            return Err(Stop::Closed);
        }
    }
    Ok(buf.drain(..n).collect())
}

async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = r.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn write_reply(
    stream: &mut TcpStream,
    reply: &Reply,
    close: bool,
    head_request: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status)).into_bytes();
    let framed = reply.headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    for (name, value) in &reply.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !framed && !(100..200).contains(&reply.status) && reply.status != 204 {
        out.extend_from_slice(format!("content-length: {}\r\n", reply.body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(&reply.body);
    }
    stream.write_all(&out).await?;
    stream.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
