//! The inbound gateway end to end: the real service on loopback over real TLS, in front of an
//! echo app that records exactly what reached it, with real signed requests.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use peergate::config;
use peergate::identity::{Identity, PublicIdentity};
use peergate::server::{Gateway, Running};
use peergate_signature::{
    sign_message, ComponentId, FieldOverride, MessageView, RequestView, SignatureParams, Signer,
};
use rustls::ClientConfig;
use support::*;

const HOST: &str = "alice.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A peer's keys, as the test signs with them.
struct Key {
    signing: SigningKey,
    public: PublicIdentity,
}

impl Key {
    fn new() -> Key {
        let identity = Identity::generate();
        Key {
            signing: identity.signing_key().clone(),
            public: identity.public().clone(),
        }
    }
    fn key_id(&self) -> &str {
        self.public.key_id()
    }
}

struct Options {
    app: Handler,
    app_addr: Option<SocketAddr>,
    extra: String,
    /// More entries for the `listen:` map, e.g. `idle_timeout: 1s`.
    listen: String,
    /// More names in `identity.hosts`, after `alice.test`.
    hosts: &'static [&'static str],
    /// The `routes:` entries.
    routes: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            app: Handler::Echo,
            app_addr: None,
            extra: String::new(),
            listen: String::new(),
            hosts: &[],
            routes:
                "  - { path: \"/public/*\", access: public }\n  - { path: \"/*\", access: peers }\n",
        }
    }
}

/// Alice's gateway in front of an echo app, with Bob (no limits) and Carol (GET /api/* only)
/// on the allowlist.
struct Fixture {
    _dir: tempfile::TempDir,
    app: EchoApp,
    gateway: Option<Running>,
    addr: SocketAddr,
    outbound: SocketAddr,
    client: Arc<ClientConfig>,
    bob: Key,
    carol: Key,
}

impl Fixture {
    fn start() -> Fixture {
        Fixture::with(Options::default())
    }

    /// In front of the app at `app` (one a test serves itself), otherwise as [`Fixture::start`].
    fn in_front_of(app: SocketAddr) -> Fixture {
        Fixture::with(Options {
            app_addr: Some(app),
            ..Options::default()
        })
    }

    fn with(options: Options) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let cert = ca.issue(&[HOST]);
        let (cert_path, key_path, _ca_path) = cert.write_files(dir.path());
        let alice = dir.path().join("alice.pem");
        peergate::identity::write_new_key(&alice, false).unwrap();
        let app = EchoApp::start_with(options.app);
        let app_addr = options.app_addr.unwrap_or(app.addr());
        let (bob, carol) = (Key::new(), Key::new());
        let (port, out) = (free_port(), free_port());
        let text = format!(
            r#"
identity: {{ key_file: alice.pem, name: Alice, hosts: ["{HOST}"{hosts}] }}
listen: {{ inbound: "127.0.0.1:{port}", outbound: "127.0.0.1:{out}", admin: "127.0.0.1:{admin}", threads: 2, {listen} }}
tls: {{ cert_file: {cert}, key_file: {key} }}
app: {{ upstream: "{app_addr}", timeout: 2s, connect_timeout: 2s }}
routes:
{routes}peers:
  - name: Bob
    public_key: "{bob}"
  - name: "Carol Zoë"
    public_key: "{carol}"
    allow: {{ methods: [GET], paths: ["/api/*"] }}
{extra}
"#,
            admin = free_port(),
            cert = cert_path.display(),
            key = key_path.display(),
            bob = bob.public.spki_base64(),
            carol = carol.public.spki_base64(),
            extra = options.extra,
            listen = options.listen,
            routes = options.routes,
            hosts = options
                .hosts
                .iter()
                .map(|h| format!(", \"{h}\""))
                .collect::<String>(),
        );
        let path = dir.path().join("peergate.yaml");
        std::fs::write(&path, text).unwrap();
        let loaded = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::build(&loaded).unwrap().spawn();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_bound(addr);
        Fixture {
            _dir: dir,
            app,
            gateway: Some(gateway),
            addr,
            outbound: SocketAddr::from(([127, 0, 0, 1], out)),
            client: ca.client_config(&[b"http/1.1"]),
            bob,
            carol,
        }
    }

    fn authority(&self) -> String {
        format!("{HOST}:{}", self.addr.port())
    }

    async fn send(&self, req: RawRequest) -> RawResponse {
        raw_request(
            self.addr,
            Some((self.client.clone(), HOST)),
            &req.to_bytes(),
        )
        .await
        .expect("the gateway answers")
    }

    /// Sends over a connection that reads the answer while still writing (early refusals of
    /// big bodies).
    async fn send_streaming(&self, req: RawRequest) -> RawResponse {
        self.send_bytes(req.to_bytes()).await
    }

    async fn send_bytes(&self, bytes: Vec<u8>) -> RawResponse {
        let mut conn = self.connect().await;
        conn.request(&bytes).await.expect("the gateway answers")
    }

    /// A new HTTP/1.1 connection to the inbound listener, over TLS.
    async fn connect(&self) -> RawConn {
        RawConn::connect(self.addr, Some((self.client.clone(), HOST)))
            .await
            .unwrap()
    }

    /// A request signed the way peergate's outbound side signs it.
    fn signed(
        &self,
        key: &Key,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawRequest {
        let authority = self.authority();
        signed_for(&authority, key, method, target, headers, body)
    }

    fn running(&self) -> &Running {
        self.gateway.as_ref().unwrap()
    }

    fn metrics(&self) -> String {
        self.running().shared().metrics.render()
    }

    /// The metrics once they contain every one of `needles`: requests are counted in
    /// Pingora's logging phase, after the answer has gone out, so the last one may lag.
    fn metrics_eventually(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics();
            if needles.iter().all(|n| m.contains(n)) || std::time::Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.stop(false);
        }
    }
}

fn header_map(authority: &str, headers: &[(&str, &str)], body: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(
        http::header::HOST,
        HeaderValue::from_str(authority).unwrap(),
    );
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    if !body.is_empty() && !map.contains_key(http::header::CONTENT_TYPE) {
        map.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    if !body.is_empty() || !headers.is_empty() && map.contains_key(http::header::CONTENT_LENGTH) {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    map
}

fn to_raw(method: &str, target: &str, headers: &HeaderMap, body: &[u8]) -> RawRequest {
    let mut req = RawRequest::new(method, target);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_bytes());
    }
    req.body(body)
}

fn signed_for(
    authority: &str,
    key: &Key,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawRequest {
    let m: Method = method.parse().unwrap();
    let uri: Uri = target.parse().unwrap();
    let mut map = header_map(authority, headers, body);
    let signer = Signer::new(
        key.signing.clone(),
        key.key_id().to_string(),
        Duration::from_secs(60),
    );
    let view = RequestView::new(&m, &uri, &map, "https");
    let sig = signer
        .sign(&view, Some(body), now(), &Signer::nonce())
        .unwrap();
    sig.apply(&mut map);
    to_raw(method, target, &map, body)
}

/// A signed POST whose body is sent in `chunks` chunks, without a Content-Length (so none is
/// signed either).
fn signed_chunked(f: &Fixture, key: &Key, target: &str, body: &[u8], chunks: usize) -> RawRequest {
    let uri: Uri = target.parse().unwrap();
    let mut map = header_map(&f.authority(), &[], body);
    map.remove(http::header::CONTENT_LENGTH);
    let signer = Signer::new(
        key.signing.clone(),
        key.key_id().to_string(),
        Duration::from_secs(60),
    );
    let sig = signer
        .sign(
            &RequestView::new(&Method::POST, &uri, &map, "https"),
            Some(body),
            now(),
            &Signer::nonce(),
        )
        .unwrap();
    sig.apply(&mut map);
    to_raw("POST", target, &map, body).chunked_in(chunks)
}

/// The head of [`signed_chunked`]'s request for `body`, for a test to follow with chunks of its
/// own.
fn signed_chunked_head(f: &Fixture, key: &Key, target: &str, body: &[u8]) -> Vec<u8> {
    let mut signed = signed_chunked(f, key, target, body, 1).to_bytes();
    let end = signed
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(signed.len(), |i| i + 4);
    signed.truncate(end);
    signed
}

/// A signature with any components and parameters, for crafted refusals.
struct Craft<'a> {
    key: &'a Key,
    method: &'a str,
    target: &'a str,
    authority: String,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
    components: Vec<&'a str>,
    params: Vec<(&'a str, Param)>,
}

enum Param {
    Int(u64),
    Str(String),
}

impl<'a> Craft<'a> {
    fn new(f: &Fixture, key: &'a Key, method: &'a str, target: &'a str) -> Craft<'a> {
        Craft {
            key,
            method,
            target,
            authority: f.authority(),
            headers: vec![],
            body: b"",
            components: vec!["@method", "@authority", "@path", "@query"],
            params: vec![
                ("created", Param::Int(now())),
                ("nonce", Param::Str(Signer::nonce())),
                ("keyid", Param::Str(key.key_id().to_string())),
            ],
        }
    }

    fn param(mut self, name: &'a str, value: Param) -> Self {
        self.params.retain(|(n, _)| *n != name);
        self.params.push((name, value));
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.params.retain(|(n, _)| *n != name);
        self
    }

    fn build(self) -> RawRequest {
        let m: Method = self.method.parse().unwrap();
        let uri: Uri = self.target.parse().unwrap();
        let mut map = header_map(&self.authority, &self.headers, self.body);
        if self.components.contains(&"content-digest") {
            let d = peergate_signature::content_digest(
                peergate_signature::DigestAlgorithm::Sha256,
                self.body,
            );
            map.insert("content-digest", HeaderValue::from_str(&d).unwrap());
        }
        let components: Vec<ComponentId> = self
            .components
            .iter()
            .map(|c| ComponentId::parse(&format!("\"{c}\"")).unwrap())
            .collect();
        let mut params = SignatureParams::new();
        for (name, value) in &self.params {
            match value {
                Param::Int(n) => params.push_integer(name, *n).unwrap(),
                Param::Str(s) => params.push_string(name, s).unwrap(),
            }
        }
        let view = RequestView::new(&m, &uri, &map, "https");
        let overrides: [FieldOverride<'_>; 0] = [];
        let signed = sign_message(
            &self.key.signing,
            MessageView::Request(&view),
            "sig1",
            &components,
            &params,
            &overrides,
        )
        .unwrap();
        map.insert(
            "signature-input",
            HeaderValue::from_str(&signed.signature_input).unwrap(),
        );
        map.insert(
            "signature",
            HeaderValue::from_str(&signed.signature_field).unwrap(),
        );
        to_raw(self.method, self.target, &map, self.body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_reach_the_app_intact_with_the_identity_headers() {
    let f = Fixture::start();
    let get = f.signed(
        &f.bob,
        "GET",
        "/api/items?sort=asc&q=caf%C3%A9",
        &[("accept", "application/json")],
        b"",
    );
    let resp = f.send(get).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-echo"), Some("1"));
    let seen = f.app.last().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/api/items?sort=asc&q=caf%C3%A9");
    assert_eq!(seen.header("x-peer-id"), Some(f.bob.public.short_id()));
    assert_eq!(seen.header("x-peer-name"), Some("Bob"));
    assert_eq!(seen.header("x-peer-key-id"), Some(f.bob.key_id()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(f.authority().as_str())
    );
    assert!(seen.body.is_empty());

    for len in [0, 1024, 64 * 1024 - 1, 64 * 1024 + 1, 1 << 20, 16 << 20] {
        f.app.clear();
        let body = pattern(len);
        let post = f.signed(
            &f.bob,
            "POST",
            "/api/upload?len=1",
            &[("content-type", "application/octet-stream")],
            &body,
        );
        let resp = f.send_streaming(post).await;
        assert_eq!(resp.status, 200, "{len} bytes: {}", resp.text());
        assert_eq!(
            resp.json()["body_len"],
            len,
            "the app answered about the whole body"
        );
        let seen = f.app.requests();
        assert_eq!(
            seen.len(),
            1,
            "{len} bytes: exactly one request reached the app"
        );
        let seen = &seen[0];
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.body.len(), len);
        assert!(seen.body == body, "{len} bytes: the body arrived intact");
        assert_eq!(seen.header("x-peer-id"), Some(f.bob.public.short_id()));
        assert_eq!(seen.header("x-peer-name"), Some("Bob"));
        assert_eq!(seen.header("x-peer-key-id"), Some(f.bob.key_id()));
        if len > 0 {
            assert!(seen.header("content-digest").is_some());
            assert_eq!(
                seen.header("content-length"),
                Some(len.to_string().as_str())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_and_100_continue_work() {
    let f = Fixture::start();
    let body = pattern(100_000);
    let req = signed_chunked(&f, &f.bob, "/api/chunked", &body, 3).header("Expect", "100-continue");
    let mut conn = f.connect().await;
    let resp = conn.request(&req.to_bytes()).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let statuses = resp.interim_statuses();
    assert_eq!(statuses, [100]);
    let seen = f.app.last().unwrap();
    assert!(seen.body == body);
    assert!(
        seen.header("expect").is_none(),
        "the 100-continue was answered by peergate"
    );
    // The connection is kept: Pingora took the 100, written before the body was read, as an
    // early answer and closed the connection after the real one (found by an audit).
    assert_eq!(
        resp.header("connection"),
        Some("keep-alive"),
        "{:?}",
        resp.headers
    );
    let again = f.signed(&f.bob, "GET", "/api/again", &[], b"");
    assert_eq!(conn.request(&again.to_bytes()).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_carries_several_signed_requests() {
    let f = Fixture::start();
    let mut conn = f.connect().await;
    for i in 0..3 {
        let body = pattern(10 + i);
        let req = f.signed(&f.bob, "POST", &format!("/api/{i}"), &[], &body);
        let resp = conn.request(&req.to_bytes()).await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        let get = f.signed(&f.bob, "GET", &format!("/api/{i}"), &[], b"");
        assert_eq!(conn.request(&get.to_bytes()).await.unwrap().status, 200);
    }
    let seen = f.app.requests();
    assert_eq!(seen.len(), 6);
    // peergate keeps its connection to the app too: one for all six.
    assert!(
        seen.iter().all(|r| r.conn == seen[0].conn),
        "connections to the app: {:?}",
        seen.iter().map(|r| r.conn).collect::<Vec<_>>()
    );
}

/// A connection opened ahead of its first request (a load balancer's or a browser's spare one)
/// gets `listen.idle_timeout` to bring it, above 60 s too: Pingora gave each read of a first
/// head 60 s, so the connection was closed at 60 s under the default 75 s. Over TLS on the
/// inbound listener and plain on the outbound one. (A minute long, in parallel with the rest.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_request_may_come_up_to_the_idle_timeout_after_opening() {
    let f = Fixture::with(Options {
        listen: "idle_timeout: 75s".into(),
        ..Options::default()
    });
    let mut inbound = f.connect().await;
    let mut outbound = RawConn::connect(f.outbound, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(62)).await;
    let get = f.signed(&f.bob, "GET", "/api/late", &[], b"");
    let resp = inbound.request(&get.to_bytes()).await;
    assert_eq!(resp.map(|r| r.status).ok(), Some(200), "inbound");
    let directory = RawRequest::new("GET", "/peers/").header("Host", "localhost");
    let resp = outbound.request(&directory.to_bytes()).await;
    assert_eq!(resp.map(|r| r.status).ok(), Some(200), "outbound");
}

/// A client connection with no request in flight is closed after `listen.idle_timeout`, over
/// HTTP/1.1 and HTTP/2 (left to itself, Pingora keeps both open for ever once a request has
/// been read), while one that keeps sending requests stays open past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_are_closed() {
    let f = Fixture::with(Options {
        listen: "idle_timeout: 1s".into(),
        ..Options::default()
    });
    let mut conn = f.connect().await;
    // In use for 2.5 s, a request every 0.5 s: one connection throughout.
    for i in 0..5 {
        let get = f.signed(&f.bob, "GET", &format!("/api/{i}"), &[], b"");
        assert_eq!(conn.request(&get.to_bytes()).await.unwrap().status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen = f.app.requests();
    assert_eq!(seen.len(), 5);
    // Then idle: closed, where before it stayed open however long the client waited.
    conn.closed_within(Duration::from_secs(10)).await.unwrap();
    // A refusal keeps the connection too, and the same timeout closes it.
    let mut conn = f.connect().await;
    let unsigned = RawRequest::new("GET", "/api/x").header("Host", f.authority());
    assert_eq!(
        conn.request(&unsigned.to_bytes()).await.unwrap().status,
        401
    );
    conn.closed_within(Duration::from_secs(10)).await.unwrap();

    let (resp, _) = h2_request_then_idle(
        f.addr,
        f.client.clone(),
        HOST,
        "/public/x",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());

    // HTTP/2 with no connection preface at all (TLS done, ALPN h2, then silence): the
    // handshake is timed too.
    let mut h2 = (*f.client).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let mut conn = RawConn::connect(f.addr, Some((Arc::new(h2), HOST)))
        .await
        .unwrap();
    assert_eq!(conn.alpn(), Some(&b"h2"[..]));
    conn.closed_within_reading(Duration::from_secs(10))
        .await
        .unwrap();

    // A TCP connection that never starts its TLS handshake (before, Pingora gave it 60 s).
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "a connection with no TLS handshake stayed open"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));

    // The outbound listener, where the app is the client, the same.
    let mut conn = RawConn::connect(f.outbound, None).await.unwrap();
    let directory = RawRequest::new("GET", "/peers/").header("Host", "localhost");
    assert_eq!(
        conn.request(&directory.to_bytes()).await.unwrap().status,
        200
    );
    conn.closed_within(Duration::from_secs(10)).await.unwrap();

    // A head sent a line every 250 ms never pauses for a whole second, but is not complete
    // within one either: cut, on a new connection and on a kept one, inbound and outbound.
    for (addr, tls) in [(f.addr, Some((f.client.clone(), HOST))), (f.outbound, None)] {
        for kept in [false, true] {
            let mut conn = RawConn::connect(addr, tls.clone()).await.unwrap();
            if kept {
                let first = RawRequest::new("GET", "/peers/").header("Host", f.authority());
                conn.request(&first.to_bytes()).await.unwrap();
            }
            conn.send(b"GET /api/x HTTP/1.1\r\n").await.unwrap();
            let started = Instant::now();
            let cut = loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if conn.send(b"x-slow: 1\r\n").await.is_err() {
                    break true;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    break false;
                }
            };
            assert!(
                cut,
                "a dribbled head kept the connection (kept: {kept}, {addr})"
            );
        }
    }
}

/// An idle HTTP/2 connection is told to go away (GOAWAY) before it is closed, as at a
/// shutdown, so that a client knows not to send on it: Pingora's own HTTP/2 idle timeout
/// dropped the connection without a word, and a request sent just then failed rather than
/// going on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_get_a_goaway() {
    let f = Fixture::with(Options {
        listen: "idle_timeout: 1s".into(),
        ..Options::default()
    });
    let (client, driver) = h2_raw(f.addr, f.client.clone(), HOST).await.unwrap();
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("https://{HOST}/public/x"))
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(req, true).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(answer.status(), 200);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the idle connection was closed")
        .unwrap();
    let idle_for = started.elapsed();
    assert!(idle_for >= Duration::from_millis(800), "{idle_for:?}");
    let refused = client.ready().await.expect_err("the connection is gone");
    assert!(
        refused.is_go_away() && refused.is_remote(),
        "closed without a GOAWAY: {refused:?} (the connection: {ended:?})"
    );
}

/// Connections still in their TLS handshake hold places under `listen.max_connections` from
/// the moment they are accepted (before, only connections whose handshake was done counted,
/// and connections that never sent a ClientHello were bounded by nothing but the open-files
/// limit), and the one that opened first is closed to make room for a client that uses its
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_their_tls_handshake_hold_places_and_make_room() {
    let f = Fixture::with(Options {
        listen: "max_connections: 2".into(),
        ..Options::default()
    });
    let mut first = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let open = "peergate_client_connections{direction=\"inbound\"} 2\n";
    let m = f.metrics_eventually(&[open]);
    assert!(m.contains(open), "{m}");

    // A client that completes its handshake and sends a request: the first silent connection
    // gives way to it.
    let mut conn = f.connect().await;
    let get = f.signed(&f.bob, "GET", "/api/ok", &[], b"");
    assert_eq!(conn.request(&get.to_bytes()).await.unwrap().status, 200);
    assert!(
        closed_within(&mut first, Duration::from_secs(5)).await,
        "the connection in its handshake longest stayed"
    );
    let refused = "peergate_client_connections_refused_total{direction=\"inbound\"} 0\n";
    let m = f.metrics_eventually(&[open, refused]);
    assert!(m.contains(open) && m.contains(refused), "{m}");
    drop(second);
}

/// A flood of new connections that send nothing gets none of them refused: each takes the place
/// of one that has waited longer. Before, a place made for one connection could be taken by
/// another accepted a moment later on the other thread, and now and then a new connection was
/// closed unanswered while every open one was idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_refuses_none() {
    const FLOOD: usize = 1000;
    let f = Fixture::with(Options {
        listen: "max_connections: 4".into(),
        ..Options::default()
    });
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        flood.push(tokio::net::TcpStream::connect(f.addr).await.unwrap());
    }
    // Every one is accepted and either closed or kept, the last ones kept.
    let mut kept = Vec::new();
    for (n, conn) in flood.iter_mut().enumerate().rev() {
        let wait = Duration::from_millis(if kept.len() < 4 { 500 } else { 5000 });
        if !closed_within(conn, wait).await {
            kept.push(n);
        }
    }
    assert_eq!(kept.len(), 4, "kept open: {kept:?}");
    let open = "peergate_client_connections{direction=\"inbound\"} 4\n";
    let refused = "peergate_client_connections_refused_total{direction=\"inbound\"} 0\n";
    let m = f.metrics_eventually(&[open, refused]);
    assert!(m.contains(open) && m.contains(refused), "{m}");
}

/// An HTTP/2 connection with no request in flight makes room under `listen.max_connections`
/// like an idle HTTP/1 one, and one with a request in flight does not. Before, HTTP/2
/// connections were never closed to make room: two of them, answered once and left open, kept
/// every new client out until the idle timeout (75 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_make_room_and_busy_ones_stay() {
    let f = Fixture::with(Options {
        listen: "max_connections: 2".into(),
        app: Handler::Delay(Duration::from_millis(1500)),
        ..Options::default()
    });
    // Answered once (1.5 s), then idle.
    let idle = tokio::spawn(h2_request_then_idle(
        f.addr,
        f.client.clone(),
        HOST,
        "/public/idle",
        Duration::from_secs(20),
    ));
    f.app.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1700)).await;
    // A request in flight on the other (1.5 s at the app); then it stays open too.
    let busy = tokio::spawn(h2_request_then_idle(
        f.addr,
        f.client.clone(),
        HOST,
        "/public/busy",
        Duration::from_secs(4),
    ));
    f.app.wait_for(2, Duration::from_secs(10)).await;

    let mut conn = f.connect().await;
    let get = f.signed(&f.bob, "GET", "/api/new", &[], b"");
    assert_eq!(conn.request(&get.to_bytes()).await.unwrap().status, 200);

    let (answer, idle_for) = tokio::time::timeout(Duration::from_secs(5), idle)
        .await
        .expect("the idle HTTP/2 connection was not closed to make room")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200);
    assert!(idle_for < Duration::from_secs(10), "{idle_for:?}");
    // The busy one got its answer and was still open seconds later.
    let still_open = busy.await.unwrap().unwrap_err();
    assert!(
        still_open.to_string().contains("still open after"),
        "{still_open}"
    );
    // Every place given back once, none refused.
    drop(conn);
    let open = "peergate_client_connections{direction=\"inbound\"} 0\n";
    let refused = "peergate_client_connections_refused_total{direction=\"inbound\"} 0\n";
    let m = f.metrics_eventually(&[open, refused]);
    assert!(m.contains(open) && m.contains(refused), "{m}");
}

/// `listen.max_connections` bounds requests too: one HTTP/2 connection carries up to 100 at
/// once, so under the connection ceiling alone a few connections could hold thousands of
/// requests, each with a connection to the app (found by an audit: 210 connections held 15 000
/// at the app). Past the ceiling a request gets a 503 `overloaded` at once and the app never
/// sees it; places come back as requests finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_held_to_the_ceiling_over_http2() {
    // Public requests may hold half of the ceiling (`public_requests_leave_room_for_peers`).
    let f = Fixture::with(Options {
        listen: "max_connections: 6".into(),
        app: Handler::Delay(Duration::from_millis(1500)),
        ..Options::default()
    });
    let uris: Vec<String> = (0..8).map(|i| format!("/public/slow/{i}")).collect();
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    let answers = h2_gets_at_once(f.addr, f.client.clone(), HOST, &uris)
        .await
        .unwrap();
    assert_public_share_held(&answers, 3);
    assert_eq!(f.app.count(), 3, "refused requests reached the app");
    // Places come back: the next ones are served.
    let answers = h2_gets_at_once(f.addr, f.client.clone(), HOST, &uris[..3])
        .await
        .unwrap();
    for answer in answers {
        assert_eq!(answer.unwrap().status, 200);
    }
    let refused = "peergate_rejections_total{direction=\"inbound\",reason=\"overloaded\"} 5\n";
    let m = f.metrics_eventually(&[refused]);
    assert!(m.contains(refused), "{m}");
}

/// `share` of the public requests `answers` answer were served, and the others refused as past
/// the public routes' share of the request ceiling.
fn assert_public_share_held(answers: &[std::io::Result<RawResponse>], share: usize) {
    let statuses: Vec<u16> = answers
        .iter()
        .map(|a| a.as_ref().map_or(0, |r| r.status))
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        share,
        "{statuses:?}"
    );
    let detail = format!("at most {share} requests at once on its public routes");
    for answer in answers.iter().flatten().filter(|a| a.status != 200) {
        assert_problem(answer, 503, "overloaded");
        assert!(answer.text().contains(&detail), "{}", answer.text());
    }
}

/// Requests on public routes hold at most half of the request ceiling, so that however many an
/// unsigned client keeps in flight (an app that answers slowly, a body trickled in, answers it
/// does not read), a peer's signed requests find the other half. Before, three HTTP/2
/// connections of public requests held a listener's whole ceiling and every peer got 503
/// `overloaded` for as long as they stayed (found by an audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_requests_leave_room_for_peers() {
    let f = Fixture::with(Options {
        listen: "max_connections: 4".into(),
        app: Handler::Delay(Duration::from_millis(1500)),
        ..Options::default()
    });
    let (addr, client) = (f.addr, f.client.clone());
    let flood = tokio::spawn(async move {
        let uris: Vec<String> = (0..8).map(|i| format!("/public/slow/{i}")).collect();
        let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
        h2_gets_at_once(addr, client, HOST, &uris).await.unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.app.count() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.app.count(), 2, "the public share is half of 4");
    // While the public half is held, two peers' requests at once are served.
    let (a, b) = tokio::join!(
        f.send(f.signed(&f.bob, "GET", "/api/one", &[], b"")),
        f.send(f.signed(&f.bob, "GET", "/api/two", &[], b"")),
    );
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{} {}",
        a.text(),
        b.text()
    );
    let answers = flood.await.unwrap();
    assert_public_share_held(&answers, 2);
    assert_eq!(f.app.count(), 4);
}

/// Requests peergate refuses give back their place under the request ceiling: a client that
/// takes none of its answers (HTTP/2 windows at zero) held one per refused request until
/// `listen.idle_timeout`, so a few connections of unsigned requests filled the ceiling and
/// every peer was refused `overloaded` (found by an audit: 45 connections, no key). The
/// refusals it does not take are given up after a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_a_client_does_not_take_leave_room_for_peers() {
    let f = Fixture::with(Options {
        listen: "max_connections: 20".into(),
        ..Options::default()
    });
    let (mut client, driver) = h2_raw_zero_window(f.addr, f.client.clone(), HOST)
        .await
        .unwrap();
    let mut streams = Vec::new();
    for i in 0..60 {
        let req = http::Request::get(format!("https://{HOST}/api/unsigned/{i}"))
            .body(())
            .unwrap();
        client = client.ready().await.unwrap();
        let (answer, _) = client.send_request(req, true).unwrap();
        streams.push(answer);
    }
    // Every refusal's head comes (heads are not flow-controlled); no body can.
    for answer in streams.iter_mut() {
        let head = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("a refusal's head within 10 s")
            .unwrap();
        assert_eq!(head.status(), 401);
    }
    for _ in 0..3 {
        let resp = f
            .send(f.signed(&f.bob, "GET", "/api/after", &[], b""))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert_eq!(f.app.count(), 3, "a refused request reached the app");
    let refused =
        "peergate_rejections_total{direction=\"inbound\",reason=\"missing_signature\"} 60\n";
    let m = f.metrics_eventually(&[refused]);
    assert!(m.contains(refused), "{m}");
    let none = "peergate_rejections_total{direction=\"inbound\",reason=\"overloaded\"} 0\n";
    assert!(m.contains(none), "{m}");
    drop(client);
    driver.abort();
}

/// An app's answer framed by its chunks, `len` bytes of `x`.
fn chunked_reply(len: usize) -> Reply {
    let mut body = format!("{len:x}\r\n").into_bytes();
    body.extend(std::iter::repeat_n(b'x', len));
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    Reply::new(200)
        .header("transfer-encoding", "chunked")
        .body(body)
}

/// An HTTP/2 client that stops reading its answer is cut off after `listen.idle_timeout`, and
/// it must be able to tell: its stream is reset. Found by an audit: after the cut, Pingora
/// finished the stream (an empty DATA frame with END_STREAM), so a client that read on later
/// had 100 bytes of a 5 000-byte answer with no length, ended as if whole, and the request was
/// logged and counted `ok`. On a signed route and on a public one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_stops_reading_gets_its_stream_reset() {
    let f = Fixture::with(Options {
        listen: "idle_timeout: 1s".into(),
        app: Handler::custom(|_| chunked_reply(5000)),
        ..Options::default()
    });
    let signed = h2_signed_headers(&f.bob, "GET", "/api/big", b"");
    for (uri, headers) in [("/api/big", borrowed(&signed)), ("/public/big", Vec::new())] {
        let (status, body) = h2_get_read_late(
            f.addr,
            f.client.clone(),
            HOST,
            uri,
            &headers,
            100,
            Duration::from_secs(3),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{uri}");
        match body {
            Err(_) => {}
            Ok(body) => panic!("{uri}: {} bytes of 5000, ended as if whole", body.len()),
        }
    }
    let peer = f.bob.public.short_id();
    let signed_aborted = format!(
        "peergate_requests_total{{direction=\"inbound\",outcome=\"aborted\",peer=\"{peer}\"}} 1\n"
    );
    let public_aborted =
        "peergate_requests_total{direction=\"inbound\",outcome=\"aborted\",peer=\"unknown\"} 1\n";
    let m = f.metrics_eventually(&[&signed_aborted, public_aborted]);
    assert!(
        m.contains(&signed_aborted) && m.contains(public_aborted),
        "{m}"
    );
}

/// An HTTP/1.1 client over TLS that stops reading a large answer is cut off after
/// `listen.idle_timeout`, and its connection and its places are given back: a review found that
/// closing such a connection gracefully (TLS `close_notify`, after what is still buffered) waits
/// without a time limit for a client that reads nothing, so a few such clients could hold every
/// place of the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_stops_reading_is_cut_and_its_place_given_back() {
    let f = Fixture::with(Options {
        listen: "idle_timeout: 1s".into(),
        app: Handler::custom(|_| Reply::new(200).body(vec![b'x'; 48 << 20])),
        ..Options::default()
    });
    let mut conn = f.connect().await;
    let get = f.signed(&f.bob, "GET", "/api/large", &[], b"");
    conn.send(&get.to_bytes()).await.unwrap();
    // Reads nothing, and keeps the connection open.
    let peer = f.bob.public.short_id();
    let aborted = format!(
        "peergate_requests_total{{direction=\"inbound\",outcome=\"aborted\",peer=\"{peer}\"}} 1\n"
    );
    let open = "peergate_client_connections{direction=\"inbound\"} 0\n";
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = f.metrics();
        if (m.contains(&aborted) && m.contains(open)) || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(m.contains(&aborted) && m.contains(open), "{m}");
    drop(conn);
}

/// A client that resets its HTTP/2 stream while the app works on a public route has left: the
/// request is `aborted`, as over HTTP/1.1 and on signed routes, not refused as a bad request
/// (it was counted in `peergate_rejections_total{reason="bad_request"}`, found by an audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_leaving_a_public_request_is_aborted_not_refused() {
    let f = Fixture::with(Options {
        app: Handler::Delay(Duration::from_millis(1500)),
        ..Options::default()
    });
    h2_get_given_up(
        f.addr,
        f.client.clone(),
        HOST,
        "/public/slow",
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    let aborted =
        "peergate_requests_total{direction=\"inbound\",outcome=\"aborted\",peer=\"unknown\"} 1\n";
    let m = f.metrics_eventually(&[aborted]);
    assert!(m.contains(aborted), "{m}");
    assert!(
        !m.lines().any(|l| l.starts_with(
            "peergate_rejections_total{direction=\"inbound\",reason=\"bad_request\"}"
        ) && !l.ends_with(" 0")),
        "{m}"
    );
}

/// A request in flight on an HTTP/2 connection when a graceful shutdown begins is answered,
/// and the connection is closed right after it (GOAWAY), not left open to the end of the grace
/// period: the shutdown reaches Pingora's HTTP/2 loop through the connection's own signal,
/// which `client_idle` also raises to make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_in_flight_are_answered_through_a_graceful_shutdown() {
    let mut f = Fixture::with(Options {
        app: Handler::Delay(Duration::from_millis(1500)),
        extra: "shutdown: { grace_period: 6s, timeout: 1s }".into(),
        ..Options::default()
    });
    let request = tokio::spawn(h2_request_then_idle(
        f.addr,
        f.client.clone(),
        HOST,
        "/public/slow",
        Duration::from_secs(15),
    ));
    f.app.wait_for(1, Duration::from_secs(10)).await;
    let gateway = f.gateway.take().unwrap();
    let stopped = tokio::task::spawn_blocking(move || gateway.stop(true));
    let (resp, open_after) = request.await.unwrap().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.version, "HTTP/2");
    assert!(
        open_after < Duration::from_secs(2),
        "the drained connection stayed open {open_after:?} after its answer"
    );
    stopped.await.unwrap();
}

/// A client that stops reading the answer is cut off after `listen.idle_timeout` without
/// progress, on a signed route and on a public one: before, nothing timed the write, and the
/// client held its connection, the request and the app connection behind it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BIG: usize = 64 << 20;
    let f = Fixture::with(Options {
        app: Handler::custom(|_| Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: vec![b'x'; BIG],
        }),
        listen: "idle_timeout: 1s".into(),
        ..Options::default()
    });
    let public = RawRequest::new("GET", "/public/big").header("Host", f.authority());
    for req in [f.signed(&f.bob, "GET", "/api/big", &[], b""), public] {
        let tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(f.client.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(&req.to_bytes()).await.unwrap();
        // Reads nothing for a while: the answer fills the socket buffers and stalls.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "still open after {got} bytes");
        assert!(got < BIG, "the whole answer came ({got} bytes)");
    }
    // Not a refusal: the answer had started (a problem document cannot follow a 200 head).
    let metrics = f.metrics();
    assert!(!metrics.contains("outcome=\"refused\""), "{metrics}");
    let none = "peergate_rejections_total{direction=\"inbound\",reason=\"bad_request\"} 0\n";
    assert!(metrics.contains(none), "{metrics}");
}

/// Bodies are held whole until verified and sent, so together they are bounded
/// (`signatures.max_buffered`): past it a body is refused at once (503 `overloaded`) rather
/// than held, and its room comes back as soon as the body holding it has been sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_held_at_once_are_bounded() {
    let f = Fixture::with(Options {
        extra: "signatures: { max_body: 64KiB, max_buffered: 100KiB }".into(),
        ..Options::default()
    });
    // A 60 KiB upload that stops short: its declared length is held while it waits.
    let mut slow = f.connect().await;
    let first = f.signed(&f.bob, "POST", "/api/slow", &[], &pattern(60 << 10));
    let bytes = first.to_bytes();
    let (head, rest) = bytes.split_at(bytes.len() - 1000);
    slow.send(head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 60 KiB more by its length, or 50 KiB in chunks: either would pass 100 KiB.
    let declared = f
        .signed(&f.bob, "POST", "/api/other", &[], &pattern(60 << 10))
        .to_bytes();
    let resp = f.send_bytes(declared.clone()).await;
    assert_problem(&resp, 503, "overloaded");
    assert!(resp.text().contains("max_buffered"), "{}", resp.text());
    let chunked = signed_chunked(&f, &f.bob, "/api/chunks", &pattern(50 << 10), 10).to_bytes();
    assert_problem(&f.send_bytes(chunked.clone()).await, 503, "overloaded");
    // A request without a body holds nothing.
    assert_eq!(
        f.send(f.signed(&f.bob, "GET", "/api/x", &[], b""))
            .await
            .status,
        200
    );

    // The slow upload ends and is sent: its room is free again.
    slow.send(rest).await.unwrap();
    let resp = slow.read_response(false).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Refused on its declared length before its nonce was recorded, the very same signed
    // request is good to send again ("send it again shortly", the refusal says).
    let resp = f.send_bytes(declared).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // A chunked body shows its length only as it comes, after the nonce was recorded.
    assert_problem(&f.send_bytes(chunked).await, 401, "replayed");
    let seen: Vec<String> = f.app.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(seen, ["/api/x", "/api/slow", "/api/other"], "{seen:?}");
    let m = f.metrics_eventually(&["reason=\"overloaded\"} 2"]);
    assert!(m.contains("reason=\"overloaded\"} 2"), "{m}");
}

/// A body refused on its declared length (413) is refused before its nonce is recorded: sent
/// again, it is refused as too large again, not as a replay, and the app sees neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_by_its_length_does_not_use_up_the_nonce() {
    let f = Fixture::with(Options {
        extra: "signatures: { max_body: 1KiB }".into(),
        ..Options::default()
    });
    let big = f
        .signed(&f.bob, "POST", "/api/x", &[], &pattern(1025))
        .to_bytes();
    for _ in 0..2 {
        let resp = f.send_bytes(big.clone()).await;
        assert_problem(&resp, 413, "body_too_large");
        assert!(resp.text().contains("1KiB"), "{}", resp.text());
    }
    assert_eq!(f.app.count(), 0);
    let m = f.metrics_eventually(&["reason=\"body_too_large\"} 2"]);
    assert!(
        m.contains("peergate_rejections_total{direction=\"inbound\",reason=\"replayed\"} 0"),
        "{m}"
    );
}

/// A body's share of `signatures.max_buffered` comes back once the body has been sent and its
/// answer has begun, not when the answer ends: a download or a stream relayed for minutes must
/// not keep the room of a body sent long before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bodys_room_comes_back_once_it_is_sent_not_when_its_answer_ends() {
    use tokio::io::AsyncWriteExt;
    let (app_addr, _) = raw_app(|mut stream| async move {
        let Some(head) = read_request_head(&mut stream).await else {
            return;
        };
        let slow = String::from_utf8_lossy(&head).contains(" /api/stream ");
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab";
        if stream.write_all(head).await.is_err() {
            return;
        }
        if slow {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let _ = stream.write_all(b"cd").await;
    })
    .await;
    let f = Fixture::with(Options {
        app_addr: Some(app_addr),
        extra: "signatures: { max_body: 64KiB, max_buffered: 100KiB }".into(),
        ..Options::default()
    });
    let streamed = f.signed(&f.bob, "POST", "/api/stream", &[], &pattern(60 << 10));
    let other = f.signed(&f.bob, "POST", "/api/other", &[], &pattern(60 << 10));
    let (streamed, other) = tokio::join!(f.send(streamed), async {
        // While the first answer is still coming.
        tokio::time::sleep(Duration::from_millis(500)).await;
        f.send(other).await
    });
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(other.text(), "abcd");
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    assert_eq!(streamed.text(), "abcd");
}

/// A request in flight is not timed by `listen.idle_timeout`: an app slower than it, a body
/// slower than it, over HTTP/1.1 and HTTP/2, and the connection still serves afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_outlast_the_idle_timeout() {
    let f = Fixture::with(Options {
        app: Handler::Delay(Duration::from_millis(1500)),
        listen: "idle_timeout: 1s".into(),
        ..Options::default()
    });
    let mut conn = f.connect().await;
    for i in 0..2 {
        let get = f.signed(&f.bob, "GET", &format!("/api/{i}"), &[], b"");
        let resp = conn.request(&get.to_bytes()).await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    // The body comes in two pieces 1.5 s apart.
    let body = pattern(1000);
    let bytes = f.signed(&f.bob, "POST", "/api/up", &[], &body).to_bytes();
    let (first, rest) = bytes.split_at(bytes.len() - 500);
    conn.send(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.send(rest).await.unwrap();
    let resp = conn.read_response(false).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(f.app.requests().len(), 3);

    let resp = h2_request(
        f.addr,
        f.client.clone(),
        HOST,
        "GET",
        "/public/slow",
        &[],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
}

/// A client's forwarding fields would reach the app as peergate's word, and frameworks build
/// links from them (and route on the original-path ones): gone on every route, signed or not,
/// over HTTP/1.1 and HTTP/2, with `X-Forwarded-Host` set from the host the request was for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_forwarding_fields_never_reach_the_app() {
    let f = Fixture::start();
    let spoofed: &[(&str, &str)] = &[
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=1.2.3.4;host=evil.example;proto=http"),
        ("X-Forwarded-Port", "80"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Real-IP", "1.2.3.4"),
        ("x_forwarded_host", "evil.example"),
        ("x_forwarded_for", "1.2.3.4"),
        ("X_Forwarded_Proto", "http"),
        ("X.Forwarded.Port", "80"),
        ("x~real~ip", "1.2.3.4"),
        ("X-Client-IP", "1.2.3.4"),
        ("True-Client-IP", "1.2.3.4"),
        ("CF-Connecting-IP", "1.2.3.4"),
        ("Fastly-Client-IP", "1.2.3.4"),
        ("X-Cluster-Client-IP", "1.2.3.4"),
        ("X-Forwarded-Scheme", "http"),
        ("X-Forwarded-Ssl", "off"),
        ("X-Original-URL", "/admin/secret"),
        ("X-Rewrite-URL", "/admin/secret"),
        ("X-Original-URI", "/admin/secret"),
        ("X-Envoy-Original-Path", "/admin/secret"),
        ("x_original_url", "/admin/secret"),
    ];
    let check = |what: &str, host: &str| {
        let seen = f.app.last().unwrap();
        assert_eq!(seen.header("x-forwarded-host"), Some(host), "{what}");
        for name in [
            "forwarded",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-real-ip",
            "x_forwarded_host",
            "x_forwarded_for",
            "x_forwarded_proto",
            "x.forwarded.port",
            "x~real~ip",
            "x-client-ip",
            "true-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "x-cluster-client-ip",
            "x-forwarded-scheme",
            "x-forwarded-ssl",
            "x-original-url",
            "x-rewrite-url",
            "x-original-uri",
            "x-envoy-original-path",
            "x_original_url",
        ] {
            assert_eq!(seen.header(name), None, "{what}: {name}");
        }
        assert_eq!(seen.headers_all("x-forwarded-host").len(), 1, "{what}");
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"), "{what}");
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "{what}");
    };
    let signed = f.signed(&f.bob, "GET", "/api/x", spoofed, b"");
    assert_eq!(f.send(signed).await.status, 200);
    check("signed", &f.authority());
    let public = RawRequest::new("GET", "/public/x")
        .header("Host", f.authority())
        .headers(spoofed.iter().copied());
    assert_eq!(f.send(public).await.status, 200);
    check("public", &f.authority());
    let resp = h2_request(
        f.addr,
        f.client.clone(),
        HOST,
        "GET",
        "/public/h2",
        &spoofed[..5],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    // The HTTP/2 client asks for the host without a port, in `:authority`.
    check("HTTP/2", HOST);
}

/// On a plain-HTTP listener, `X-Forwarded-Proto` is the scheme peers use to reach us
/// (`identity.scheme`): `https` when TLS ends in front of peergate, so the app's links are
/// right; never what the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_tls_front_the_app_hears_https() {
    for (scheme, expected) in [("https", "https"), ("http", "http")] {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("alice.pem");
        peergate::identity::write_new_key(&key, false).unwrap();
        let app = EchoApp::start_with(Handler::Echo);
        let port = free_port();
        let text = format!(
            "identity: {{ key_file: alice.pem, hosts: [\"{HOST}\"], scheme: {scheme} }}\n\
             listen: {{ inbound: \"127.0.0.1:{port}\", outbound: \"127.0.0.1:{}\", admin: \"127.0.0.1:{}\", threads: 1 }}\n\
             app: {{ upstream: \"{}\" }}\n\
             routes: [{{ path: \"/public/*\", access: public }}]\n",
            free_port(),
            free_port(),
            app.addr()
        );
        let path = dir.path().join("peergate.yaml");
        std::fs::write(&path, text).unwrap();
        let loaded = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::build(&loaded).unwrap().spawn();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_bound(addr);
        let req = RawRequest::new("GET", "/public/x")
            .header("Host", HOST)
            .header("X-Forwarded-Proto", "gopher");
        let resp = raw_request(addr, None, &req.to_bytes()).await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        let seen = app.last().unwrap();
        assert_eq!(
            seen.headers_all("x-forwarded-proto"),
            [expected],
            "scheme {scheme}"
        );
        gateway.stop(false);
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or any request with two, is answered 400
/// on every route (a public one, peergate's own documents, a signed one) and never reaches the
/// app. HTTP/1.0 predates `Host` and needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_exactly_one_host_are_refused_on_every_route() {
    let f = Fixture::start();
    for target in ["/public/x", "/.well-known/peergate", "/api/x"] {
        let none = RawRequest::new("GET", target);
        assert_problem(&f.send(none).await, 400, "bad_request");
        let two = RawRequest::new("GET", target)
            .header("Host", f.authority())
            .header("Host", f.authority());
        assert_problem(&f.send(two).await, 400, "bad_request");
    }
    let signed_with_two = f
        .signed(&f.bob, "GET", "/api/x", &[], b"")
        .header("Host", f.authority());
    assert_problem(&f.send(signed_with_two).await, 400, "bad_request");
    assert!(f.app.requests().is_empty(), "{:?}", f.app.requests());

    let old = RawRequest::new("GET", "/public/x").version("HTTP/1.0");
    assert_eq!(f.send(old).await.status, 200);
    assert_eq!(f.app.requests().len(), 1);
    let signed = f.signed(&f.bob, "GET", "/api/x", &[], b"");
    assert_eq!(f.send(signed).await.status, 200);
}

/// RFC 9112 §3.2: a `Host` that is not a host and port is answered 400 on every route, so an
/// app never builds a link from `evil.example/x`. Over HTTP/2 a `Host` beside `:authority` must
/// name the same host (RFC 9113 §8.3.1), or the app would see one host and the signature cover
/// another: Pingora refuses that one itself, and this guards that it still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_that_are_not_a_host_and_port_are_refused_on_every_route() {
    let f = Fixture::start();
    for target in ["/public/x", "/.well-known/peergate", "/api/x"] {
        for host in [
            "a b",
            "evil.example/x",
            "bob.test:99999",
            "bob.test:x",
            "",
            "evil.example,bob.test",
            "[.]",
        ] {
            let resp = f
                .send(RawRequest::new("GET", target).header("Host", host))
                .await;
            assert_problem(&resp, 400, "bad_request");
            assert!(
                resp.text()
                    .contains("the Host field is not a host and port"),
                "{host:?}: {}",
                resp.text()
            );
        }
        // Pingora refuses user information in `Host` itself, with its own detail.
        let userinfo = RawRequest::new("GET", target).header("Host", "user@bob.test");
        assert_problem(&f.send(userinfo).await, 400, "bad_request");
    }
    assert!(f.app.requests().is_empty(), "{:?}", f.app.requests());

    let h2 = |headers: Vec<(String, String)>, target: &'static str| {
        let client = f.client.clone();
        let addr = f.addr;
        async move {
            h2_request(addr, client, HOST, "GET", target, &borrowed(&headers), b"")
                .await
                .unwrap()
        }
    };
    let elsewhere = vec![("host".to_string(), "evil.example".to_string())];
    // Pingora answers this one itself, with a bare 400, before peergate sees the request.
    assert_eq!(h2(elsewhere, "/public/x").await.status, 400);
    let mut signed = h2_signed_headers(&f.bob, "GET", "/api/h2", b"");
    signed.push(("host".to_string(), "evil.example".to_string()));
    assert_eq!(h2(signed, "/api/h2").await.status, 400);
    assert!(f.app.requests().is_empty(), "{:?}", f.app.requests());

    // HTTP/2's `:authority` is the host the app gets (`Host`, `X-Forwarded-Host`): a `,` is
    // refused there as in `Host`.
    for target in [
        "https://evil.example,bob.test/public/x",
        "https://a,b/api/h2",
    ] {
        let resp = h2(Vec::new(), target).await;
        assert_problem(&resp, 400, "bad_request");
        assert!(resp.text().contains("has no ','"), "{}", resp.text());
    }
    assert!(f.app.requests().is_empty(), "{:?}", f.app.requests());

    // A Host that repeats `:authority` passes; so does one in other letters over HTTP/1.1.
    let same = vec![("host".to_string(), HOST.to_string())];
    let resp = h2(same, "/public/x").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = f
        .send(RawRequest::new("GET", "/public/x").header("Host", "Bob.Test:8443"))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(f.app.requests().len(), 2);
}

/// An app that breaks off its answer after the head: the peer must be able to tell the body is
/// incomplete, so a chunked answer ends with the connection, without the last chunk that
/// finishing the session normally would write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_app_breaks_off_reaches_the_peer_visibly_cut() {
    let f = Fixture::with(Options {
        app: Handler::custom(|_| {
            Reply::new(200)
                .header("transfer-encoding", "chunked")
                .header("connection", "close")
                .body("A\r\n0123456789\r\n")
        }),
        ..Options::default()
    });
    let mut conn = f.connect().await;
    conn.send(&f.signed(&f.bob, "GET", "/api/cut", &[], b"").to_bytes())
        .await
        .unwrap();
    let got = conn.read_until_closed().await.unwrap();
    assert_visibly_cut_chunked("/api/cut", &got, "0123456789");
}

/// An answer the app ends by closing its connection (neither a length nor chunks) reaches an
/// HTTP/1.1 client chunked, on a signed route and on a public one (Pingora's own proxy path):
/// whole, with its last chunk; cut by a reset, without it. Relayed as it came, the cut answer
/// ended with the connection and read as whole (found by an audit on the outbound side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_ended_by_the_apps_close_is_chunked_so_a_cut_shows() {
    use tokio::io::AsyncWriteExt;
    let (app_addr, _) = raw_app(|mut stream| async move {
        let Some(head) = read_request_head(&mut stream).await else {
            return;
        };
        let reset = String::from_utf8_lossy(&head).contains("-reset ");
        let answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0123456789";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        let _ = stream.flush().await;
        if reset {
            // Closed with a reset, as a crashing app's connection is. (Deprecated for blocking
            // on drop, which a zero linger does not.)
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            // Time for peergate to read what was sent: a reset discards what is still unread.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    let f = Fixture::in_front_of(app_addr);
    // Signed under /api/, unsigned under /public/.
    let request = |target: &str| {
        if target.starts_with("/api/") {
            f.signed(&f.bob, "GET", target, &[], b"")
        } else {
            RawRequest::new("GET", target).header("Host", HOST)
        }
    };
    for target in ["/api/whole", "/public/whole"] {
        let resp = f.send(request(target)).await;
        assert_eq!(resp.status, 200, "{target}: {}", resp.text());
        assert_eq!(
            resp.header("transfer-encoding"),
            Some("chunked"),
            "{target}"
        );
        assert_eq!(resp.body, b"0123456789", "{target}");
    }
    for target in ["/api/cut-reset", "/public/cut-reset"] {
        let mut conn = f.connect().await;
        conn.send(&request(target).to_bytes()).await.unwrap();
        let got = conn.read_until_closed().await.unwrap_or_default();
        assert_visibly_cut_chunked(target, &got, "0123456789");
    }
}

/// Signature fields built to cost the gateway much work before their signature is found bad
/// (before the engine's limits, one such request head took seconds): hundreds of labels, one
/// large field covered once per dictionary key. Each is refused at once as
/// malformed, and nothing reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_fields_that_multiply_work_are_refused() {
    let f = Fixture::start();
    let garbage = format!("{}==", "A".repeat(86));
    let crafted = |input: String, signature: String, extra: &[(&str, String)]| {
        let mut req = RawRequest::new("GET", "/api/x")
            .header("Host", f.authority())
            .header("Signature-Input", input)
            .header("Signature", signature);
        for (name, value) in extra {
            req = req.header(*name, value.as_str());
        }
        req
    };
    let params = format!(
        "created={};nonce=\"{}\";keyid=\"{}\"",
        now(),
        Signer::nonce(),
        f.bob.key_id()
    );

    // 500 labels (their signatures about 50 KB: a head over 64 KiB is refused before it is
    // parsed, see `an_unreadable_head_gets_a_problem_document`).
    let labels: Vec<String> = (0..500).map(|i| format!("s{i}=(\"@method\")")).collect();
    let sigs: Vec<String> = (0..500).map(|i| format!("s{i}=:{garbage}:")).collect();
    let resp = f
        .send(crafted(labels.join(", "), sigs.join(", "), &[]))
        .await;
    assert_problem(&resp, 401, "malformed_signature");
    assert!(
        resp.text().contains("more than 16 signatures"),
        "{}",
        resp.text()
    );

    // A 6 KB dictionary field covered 60 times, once per member: 360 KB to parse.
    let members: Vec<String> = (0..500).map(|i| format!("k{i:05}=1")).collect();
    let keys: Vec<String> = (0..60).map(|i| format!("\"x\";key=\"k{i:05}\"")).collect();
    let input = format!(
        "sig1=(\"@method\" \"@authority\" \"@path\" \"@query\" {});{params}",
        keys.join(" ")
    );
    let resp = f
        .send(crafted(
            input,
            format!("sig1=:{garbage}:"),
            &[("x", members.join(", "))],
        ))
        .await;
    assert_problem(&resp, 401, "malformed_signature");
    assert!(resp.text().contains("at most 65536"), "{}", resp.text());
    assert_eq!(f.app.count(), 0);
}

/// A request Pingora refuses while proxying a public route (here: ten or more headers named
/// in `Connection`) gets a problem document that says why, and never the app's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pingora_refuses_on_a_public_route_says_why() {
    let f = Fixture::start();
    let req = RawRequest::new("GET", "/public/page")
        .header("Host", f.authority())
        .header("Connection", "a, b, c, d, e, f, g, h, i, j");
    let resp = f.send(req).await;
    assert_problem(&resp, 400, "bad_request");
    let detail = resp.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("Connection"), "{detail}");
    assert!(!detail.contains(&f.app.addr().to_string()), "{detail}");
    assert_eq!(f.app.count(), 0);
}

/// A `Content-Length` list (`5, 5`) or a value that is not a number is refused on public routes
/// too: Pingora would forward it as it came, and an app may frame the body differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_list_is_refused_on_public_routes_too() {
    let f = Fixture::start();
    // (A sign or two different lengths, `+5` or `5, 6`, never get this far: Pingora's parser
    // refuses them with its bare 400. A list of equal lengths it accepts.)
    for value in ["5, 5", "5,5"] {
        let public = RawRequest::new("POST", "/public/form")
            .header("Host", f.authority())
            .header("Content-Length", value)
            .body(b"hello");
        let resp = f.send(public).await;
        assert_problem(&resp, 400, "bad_request");
        assert!(resp.text().contains("Content-Length"), "{}", resp.text());
    }
    assert_eq!(f.app.count(), 0);
}

/// A transfer coding other than `chunked` alone (`gzip, chunked`) cannot be forwarded as it
/// came: the body is decoded from chunks and sent with its length, so the app would get gzip
/// bytes with nothing saying so. Refused on every route (RFC 9112 §6.1), chunked alone works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_other_than_chunked_is_refused() {
    let f = Fixture::start();
    let chunked = b"5\r\nhello\r\n0\r\n\r\n";
    for coding in [
        "gzip, chunked",
        "deflate,chunked",
        "chunked, chunked",
        "x-custom, chunked",
    ] {
        let public = RawRequest::new("POST", "/public/form")
            .header("Host", f.authority())
            .header("Transfer-Encoding", coding)
            .body(chunked);
        let resp = f.send(public).await;
        assert_problem(&resp, 400, "bad_request");
        assert!(resp.text().contains("Transfer-Encoding"), "{}", resp.text());
        let signed = f
            .signed(
                &f.bob,
                "POST",
                "/api/x",
                &[("Transfer-Encoding", coding)],
                b"",
            )
            .body(chunked);
        assert_problem(&f.send(signed).await, 400, "bad_request");
    }
    assert_eq!(f.app.count(), 0);
    let plain = RawRequest::new("POST", "/public/form")
        .header("Host", f.authority())
        .header("Transfer-Encoding", "Chunked")
        .body(chunked);
    assert_eq!(f.send(plain).await.status, 200);
    assert_eq!(f.app.last().unwrap().body, b"hello");
}

/// `Connection` may nominate hop-by-hop fields, not the ones the app must receive: a signed
/// request that names `Host` would otherwise reach the app without the authority that was
/// verified. Refused on every route, before anything is forwarded; other nominations are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_nominate_the_fields_the_app_must_receive() {
    let f = Fixture::start();
    for name in [
        "host",
        "Content-Length",
        "signature-input",
        "X-Forwarded-For",
        ":authority",
    ] {
        let nominating = ("Connection", format!("keep-alive, {name}"));
        let signed = f.signed(
            &f.bob,
            "POST",
            "/api/x",
            &[(nominating.0, nominating.1.as_str())],
            b"hello",
        );
        let resp = f.send(signed).await;
        assert_problem(&resp, 400, "bad_request");
        let detail = resp.json()["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(name), "{detail}");
        let public = RawRequest::new("GET", "/public/page")
            .header("Host", f.authority())
            .header(nominating.0, &nominating.1);
        assert_problem(&f.send(public).await, 400, "bad_request");
    }
    assert_eq!(f.app.count(), 0);

    // Nominating an ordinary field still works: it is removed, and the request goes through.
    let signed = f.signed(
        &f.bob,
        "GET",
        "/api/x",
        &[("Connection", "x-hop"), ("X-Hop", "1"), ("X-Kept", "1")],
        b"",
    );
    assert_eq!(f.send(signed).await.status, 200);
    let seen = f.app.last().unwrap();
    assert_eq!(seen.header("x-hop"), None);
    assert_eq!(seen.header("x-kept"), Some("1"));
    assert_eq!(seen.header("host"), Some(f.authority().as_str()));
}

/// An app that is not the echo app: a plain TCP listener that hands each connection it
/// accepts to `serve`, and counts them.
async fn raw_app<F, Fut>(serve: F) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (counter, serve) = (accepted.clone(), Arc::new(serve));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (addr, accepted)
}

/// What the app says about its own connection stays between it and peergate, on public and
/// signed routes alike; and a 101 it was never asked for (peergate does not forward `Upgrade`)
/// is a 502, not a tunnel or an interim answer to skip. So is an answer with a transfer coding
/// other than `chunked` alone: its `gzip` would be lost (over HTTP/2 always), and the caller
/// would take gzip bytes for the content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_hop_by_hop_fields_stay_behind_and_an_unasked_101_is_a_502() {
    use tokio::io::AsyncWriteExt;

    let (app_addr, _) = raw_app(|mut stream| async move {
        while let Some(head) = read_request_head(&mut stream).await {
            let head = String::from_utf8_lossy(&head).into_owned();
            let answer: &[u8] =
                if head.contains(" /public/upgrade ") || head.contains(" /api/upgrade ") {
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\n\r\n"
                } else if head.contains(" /public/coded-head ") {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                } else if head.contains(" /public/coded-304 ") {
                    b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                } else if head.contains(" /public/coded ") || head.contains(" /api/coded ") {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                      2\r\nzz\r\n0\r\n\r\n"
                } else if head.contains(" /public/chunked ") || head.contains(" /api/chunked ") {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n\
                      2\r\nok\r\n0\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\n\
                      Keep-Alive: timeout=5\r\nUpgrade: h2c\r\n\
                      Proxy-Authenticate: Basic realm=\"x\"\r\n\
                      X-End-To-End: kept\r\nContent-Length: 2\r\n\r\nok"
                };
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let f = Fixture::in_front_of(app_addr);
    let public = |path: &str| RawRequest::new("GET", path).header("Host", f.authority());
    for resp in [
        f.send(public("/public/x")).await,
        f.send(f.signed(&f.bob, "GET", "/api/x", &[], b"")).await,
    ] {
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("x-end-to-end"), Some("kept"));
        for gone in ["x-hop", "keep-alive", "upgrade", "proxy-authenticate"] {
            assert_eq!(resp.header(gone), None, "{gone} reached the caller");
        }
    }
    for resp in [
        f.send(public("/public/upgrade")).await,
        f.send(f.signed(&f.bob, "GET", "/api/upgrade", &[], b""))
            .await,
        f.send(public("/public/coded")).await,
        f.send(f.signed(&f.bob, "GET", "/api/coded", &[], b""))
            .await,
    ] {
        assert_problem(&resp, 502, "upstream_unreachable");
    }
    // Without a body, such a coding only says what would have been sent (RFC 9112 §6.1).
    let head = RawRequest::new("HEAD", "/public/coded-head").header("Host", f.authority());
    assert_eq!(f.send(head).await.status, 200);
    assert_eq!(f.send(public("/public/coded-304")).await.status, 304);
    for resp in [
        f.send(public("/public/chunked")).await,
        f.send(f.signed(&f.bob, "GET", "/api/chunked", &[], b""))
            .await,
    ] {
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.body, b"ok");
    }
}

/// Interim answers from the app reach a peer on signed routes too (RFC 9110 §15.2: a proxy
/// forwards them), without the app's hop-by-hop or framing fields: a `103 Early Hints` and a
/// `102 Processing`, in order, before the final answer. They were skipped. A `100 Continue` is
/// not relayed (peergate answered the client's `Expect` itself and sent the app no `Expect`),
/// an HTTP/1.0 client gets none (it cannot know them), and over HTTP/2 (where Pingora sends one
/// head per stream) the final answer still comes whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_routes_relay_the_apps_interim_answers() {
    use tokio::io::AsyncWriteExt;

    let (app_addr, _) = raw_app(|mut stream| async move {
        while read_request_head(&mut stream).await.is_some() {
            let answer: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
                HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\
                Connection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 7\r\n\r\n\
                HTTP/1.1 102 Processing\r\n\r\n\
                HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let f = Fixture::in_front_of(app_addr);

    let resp = f
        .send(f.signed(&f.bob, "GET", "/api/early", &[], b""))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"hello");
    let statuses = resp.interim_statuses();
    assert_eq!(statuses, [103, 102], "{:?}", resp.interim);
    let early = &resp.interim[0].1;
    let field = |name: &str| first_header(early, name);
    assert_eq!(field("link"), Some("</x.css>; rel=preload"), "{early:?}");
    for gone in ["x-hop", "content-length", "transfer-encoding"] {
        assert_eq!(field(gone), None, "{gone} in the 103: {early:?}");
    }

    // A client that asked for a 100 gets one, from peergate, before it sends the body.
    let body = pattern(1000);
    let post = f.signed(
        &f.bob,
        "POST",
        "/api/early",
        &[("Expect", "100-continue")],
        &body,
    );
    let resp = f.send_streaming(post).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let statuses = resp.interim_statuses();
    assert_eq!(statuses, [100, 103, 102], "{:?}", resp.interim);

    let old = f
        .signed(&f.bob, "GET", "/api/early", &[], b"")
        .version("HTTP/1.0");
    let resp = f.send(old).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.interim.is_empty(), "{:?}", resp.interim);
    assert_eq!(resp.body, b"hello");

    let headers = h2_signed_headers(&f.bob, "GET", "/api/early", b"");
    let resp = h2_request(
        f.addr,
        f.client.clone(),
        HOST,
        "GET",
        "/api/early",
        &borrowed(&headers),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"hello");
}

/// A client that reads nothing while the app sends interim answers is cut off once it has
/// taken none of them for `listen.idle_timeout`, as for any answer it stops reading, and the
/// app's connection is closed. Pingora writes a head with no time limit: once the socket
/// buffers were full, the request (its app connection, its body's share of `max_buffered`)
/// was held for ever (found by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_none_of_the_interim_answers_is_cut_off() {
    use tokio::io::AsyncWriteExt;

    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let (app_addr, _) = raw_app(move |mut stream| {
        let closed = closed_tx.clone();
        async move {
            if read_request_head(&mut stream).await.is_some() {
                let early = format!(
                    "HTTP/1.1 103 Early Hints\r\nLink: <{}>\r\n\r\n",
                    "x".repeat(8000)
                );
                let started = Instant::now();
                while stream.write_all(early.as_bytes()).await.is_ok() {}
                let _ = closed.send(started.elapsed());
            }
        }
    })
    .await;
    let f = Fixture::with(Options {
        app_addr: Some(app_addr),
        listen: "idle_timeout: 1s".into(),
        ..Options::default()
    });
    let mut conn = f.connect().await;
    let get = f.signed(&f.bob, "GET", "/api/early", &[], b"");
    conn.send(&get.to_bytes()).await.unwrap();
    let mut closed_rx = closed_rx;
    let took = tokio::time::timeout(Duration::from_secs(15), closed_rx.recv())
        .await
        .expect("the app's connection still open 15 s on (listen.idle_timeout is 1 s)")
        .unwrap();
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    drop(conn);
}

/// An app that fails after an interim answer: the 103 is not the answer, so the caller still
/// gets a 502 after it, on public and signed routes alike. On a public route the connection was
/// cut instead, as if the answer had begun (found by an audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_failing_after_an_interim_answer_still_gets_a_502() {
    use tokio::io::AsyncWriteExt;

    let (app_addr, _) = raw_app(|mut stream| async move {
        if read_request_head(&mut stream).await.is_some() {
            let early = b"HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\n";
            let _ = stream.write_all(early).await;
            let _ = stream.flush().await;
        }
    })
    .await;
    let f = Fixture::in_front_of(app_addr);
    let public = RawRequest::new("GET", "/public/x").header("Host", f.authority());
    for resp in [
        f.send(public).await,
        f.send(f.signed(&f.bob, "GET", "/api/x", &[], b"")).await,
    ] {
        assert_problem(&resp, 502, "upstream_unreachable");
        let statuses = resp.interim_statuses();
        assert_eq!(statuses, [103], "{:?}", resp.interim);
    }
}

/// HTTP/1.1 pipelining (RFC 9112 §9.3.2): a request sent before the answer to the one before
/// it is answered after that answer, in order, on the same connection, on public and signed
/// routes alike. On a public route the first request was answered with a 400 (`bad_request`,
/// "Sent data after end of body") though the app had acted on it, and the second was lost
/// (found by an audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let f = Fixture::with(Options {
        // Long enough for the second request to arrive while the first is at the app, and for
        // the signed forward to watch its client (after 100 ms).
        app: Handler::Delay(Duration::from_millis(300)),
        ..Options::default()
    });
    let public = |path: &str| RawRequest::new("GET", path).header("Host", f.authority());
    let pairs = [
        (public("/public/one"), public("/public/two")),
        (
            RawRequest::new("POST", "/public/one")
                .header("Host", f.authority())
                .body(b"hello"),
            public("/public/two"),
        ),
        (
            f.signed(&f.bob, "GET", "/api/one", &[], b""),
            f.signed(&f.bob, "POST", "/api/two", &[], b"hello"),
        ),
        (
            public("/public/one"),
            f.signed(&f.bob, "GET", "/api/two", &[], b""),
        ),
    ];
    for (first, second) in pairs {
        f.app.clear();
        let mut conn = f.connect().await;
        conn.send(&first.to_bytes()).await.unwrap();
        f.app.wait_for(1, Duration::from_secs(5)).await;
        conn.send(&second.to_bytes()).await.unwrap();
        let one = conn.read_response(false).await.unwrap();
        let two = conn.read_response(false).await.unwrap();
        let paths: Vec<String> = f.app.requests().iter().map(|r| r.target.clone()).collect();
        assert_eq!(one.status, 200, "{paths:?}: {}", one.text());
        assert!(one.text().contains("/one"), "{}", one.text());
        assert_eq!(two.status, 200, "{paths:?}: {}", two.text());
        assert!(two.text().contains("/two"), "{}", two.text());
        assert_eq!(paths.len(), 2, "{paths:?}");
    }
}

/// An app that closes idle connections soon after answering (a short keep-alive timeout) must
/// not cost a request: peergate finds its kept connection closed and opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_closing_idle_connections_loses_no_request() {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;

    let (app_addr, accepted) = raw_app(|mut stream| async move {
        if read_request_head(&mut stream).await.is_none() {
            return;
        }
        // A keep-alive answer, then the connection is closed while idle.
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    })
    .await;
    let f = Fixture::in_front_of(app_addr);
    for i in 0..6 {
        let (method, body): (&str, &[u8]) = if i % 2 == 0 {
            ("GET", b"")
        } else {
            ("POST", b"data")
        };
        let req = f.signed(&f.bob, method, &format!("/api/{i}"), &[], body);
        let resp = f.send(req).await;
        assert_eq!(resp.status, 200, "{method} {i}: {}", resp.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each request found the previous connection closed.
    assert_eq!(accepted.load(Ordering::SeqCst), 6);
}

/// Connections to the app that were in use at the same time are kept for the next burst:
/// the swings of a steady load do not close connections only to open them again. 200 requests
/// in flight at once (the app answers a burst once all of it is in), twice; the app sees 200
/// connections, not 200 plus those closed between (272 when 128 were kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_of_a_burst_are_kept_for_the_next() {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;

    const BURST: usize = 200;
    // Kept connections follow the open-files limit (an eighth of it): raised as `peergate run`
    // raises it, a soft limit of 1 024 would keep 128.
    peergate::fd_limit::raise();
    let kept = peergate::forward::idle_per_upstream(peergate::fd_limit::soft());
    if kept < BURST {
        eprintln!(
            "skipped: this machine's open-files limit ({:?}) keeps {kept} idle connections per \
             upstream, fewer than the burst of {BURST}",
            peergate::fd_limit::soft()
        );
        return;
    }
    // Requests the app has received; each is answered once its whole burst is in.
    let (received, _) = tokio::sync::watch::channel(0usize);
    let received = Arc::new(received);
    let (app_addr, accepted) = raw_app(move |mut stream| {
        let received = received.clone();
        async move {
            while read_request_head(&mut stream).await.is_some() {
                let mut seen = 0;
                received.send_modify(|n| {
                    seen = *n;
                    *n += 1;
                });
                let burst_end = (seen / BURST + 1) * BURST;
                let mut watch = received.subscribe();
                let whole = watch.wait_for(|n| *n >= burst_end);
                // At most 1.5 s: the fixture's app.timeout is 2 s.
                let _ = tokio::time::timeout(Duration::from_millis(1500), whole).await;
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let f = Fixture::in_front_of(app_addr);
    for burst in 0..2 {
        let requests: Vec<_> = (0..BURST)
            .map(|i| {
                let req = f.signed(&f.bob, "GET", &format!("/api/{burst}/{i}"), &[], b"");
                let (addr, client) = (f.addr, f.client.clone());
                tokio::spawn(async move {
                    raw_request(addr, Some((client, HOST)), &req.to_bytes())
                        .await
                        .map(|answer| answer.status)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap(), Ok(200), "burst {burst}");
        }
        if burst == 0 {
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                BURST,
                "the first burst did not reach the app together"
            );
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), BURST);
}

/// An app that closes a kept connection as the next request arrives (its idle timeout firing
/// just then): the request was never answered, so peergate sends it again on a new connection
/// when that is safe (idempotent methods) and answers 502 when it is not, never sending a POST
/// twice; and a POST takes a kept connection only if it was used within the last second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_closed_under_a_request_is_retried_when_idempotent() {
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;
    use tokio::io::AsyncWriteExt;

    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let (app_addr, accepted) = raw_app(move |mut stream| {
        let log = log.clone();
        async move {
            // Answers the first request of each connection; reads the second and closes.
            for answered in [true, false] {
                let Some(head) = read_request_head(&mut stream).await else {
                    return;
                };
                let line = String::from_utf8_lossy(&head);
                let line = line.lines().next().unwrap_or_default().to_string();
                log.lock().unwrap().push(line);
                if !answered {
                    return;
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let f = Fixture::in_front_of(app_addr);
    let get = |i: usize| f.signed(&f.bob, "GET", &format!("/api/get{i}"), &[], b"");
    assert_eq!(f.send(get(1)).await.status, 200);
    // On the kept connection, which the app closes under it: sent again on a new one.
    let resp = f.send(get(2)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // The same for a POST: not sent again.
    let post = f.signed(&f.bob, "POST", "/api/post", &[], b"data");
    let resp = f.send(post).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.json()["reason"], "upstream_unreachable");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A POST after a second of quiet goes out on a new connection: the kept one may be the
    // one the app's idle timeout is closing (it was sent on the kept one, and got a 502).
    assert_eq!(f.send(get(3)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let post = f.signed(&f.bob, "POST", "/api/post2", &[], b"data");
    let resp = f.send(post).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "GET /api/get1 HTTP/1.1",
            "GET /api/get2 HTTP/1.1",
            "GET /api/get2 HTTP/1.1",
            "POST /api/post HTTP/1.1",
            "GET /api/get3 HTTP/1.1",
            "POST /api/post2 HTTP/1.1",
        ]
    );
}

/// The fields of a request to `https://{HOST}{path}` signed by `key`, for [`h2_request`].
fn h2_signed_headers(key: &Key, method: &str, path: &str, body: &[u8]) -> Vec<(String, String)> {
    let m: Method = method.parse().unwrap();
    let uri: Uri = format!("https://{HOST}{path}").parse().unwrap();
    let mut map = HeaderMap::new();
    if !body.is_empty() {
        map.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let signer = Signer::new(
        key.signing.clone(),
        key.key_id().to_string(),
        Duration::from_secs(60),
    );
    let sig = signer
        .sign(
            &RequestView::new(&m, &uri, &map, "https"),
            Some(body),
            now(),
            &Signer::nonce(),
        )
        .unwrap();
    sig.apply(&mut map);
    map.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

/// `(name, value)` pairs as [`h2_request`] takes them.
fn borrowed(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// An HTTP/2 request that declares `content-length: 0` and then sends DATA is malformed (RFC
/// 9113 §8.1.1): its stream is reset and the app gets nothing, on a signed route and a public
/// one. Pingora took such a body for empty without reading it, and the request reached the app
/// as if it were well formed, the DATA dropped (audit 8c, F4). A stream the client ends with an
/// empty DATA frame instead is a request like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_data_after_a_declared_empty_body_resets_the_stream() {
    let f = Fixture::start();
    let (client, driver) = h2_raw(f.addr, f.client.clone(), HOST).await.unwrap();
    let mut client = client.ready().await.unwrap();
    for (method, route) in [("GET", "/api/h2"), ("POST", "/public/h2")] {
        for (data, last) in [(&b"sneaky"[..], "sneaky"), (b"", "ended")] {
            let path = format!("{route}/{last}");
            let mut req = http::Request::builder()
                .method(method)
                .uri(format!("https://{HOST}{path}"))
                .header("content-length", "0");
            if route.starts_with("/api/") {
                for (name, value) in h2_signed_headers(&f.bob, method, &path, b"") {
                    req = req.header(name, value);
                }
            }
            let (answer, mut send) = client.send_request(req.body(()).unwrap(), false).unwrap();
            send.send_data(bytes::Bytes::from_static(data), true)
                .unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(5), answer)
                .await
                .expect("an answer or a reset");
            if data.is_empty() {
                assert_eq!(answer.unwrap().status(), 200, "{method} {path}");
            } else {
                let reset = answer.expect_err("a malformed request was answered");
                assert_eq!(
                    reset.reason(),
                    Some(h2::Reason::PROTOCOL_ERROR),
                    "{method} {path}: {reset:?}"
                );
            }
        }
    }
    // A request forwarded in spite of its reset would be on its way by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached: Vec<String> = f
        .app
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(reached, ["GET /api/h2/ended", "POST /public/h2/ended"]);
    // Counted as refused, not as clients that left.
    let refused = "peergate_rejections_total{direction=\"inbound\",reason=\"bad_request\"} 2\n";
    let m = f.metrics_eventually(&[refused]);
    assert!(m.contains(refused), "{m}");
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_from_peers() {
    let f = Fixture::start();
    let ca_client = f.client.clone();
    let body = pattern(70_000);
    for (method, body) in [("GET", Vec::new()), ("POST", body)] {
        f.app.clear();
        let headers = h2_signed_headers(&f.bob, method, "/api/h2", &body);
        let headers = borrowed(&headers);
        let resp = h2_request(
            f.addr,
            ca_client.clone(),
            HOST,
            method,
            "/api/h2",
            &headers,
            &body,
        )
        .await
        .unwrap();
        assert_eq!(resp.version, "HTTP/2");
        assert_eq!(resp.status, 200, "{method}: {}", resp.text());
        let seen = f.app.last().unwrap();
        assert_eq!(seen.header("x-peer-id"), Some(f.bob.public.short_id()));
        assert!(seen.body == body);
    }
}

/// A request carrying the signer's signature and another one (a proxy's or a CDN's, RFC 9421
/// §4.3; most libraries sign untagged) is checked by the signature whose `keyid` is on the
/// allowlist; with none there, or two, it is refused and the app sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_several_untagged_signatures_the_allowlisted_one_is_checked() {
    let f = Fixture::start();
    let stranger = Key::new();
    let proxy_sig = |keyid: &str| {
        (
            format!(
                r#"proxy=("@authority" "signature";key="sig1");created={};keyid="{keyid}""#,
                now()
            ),
            format!("proxy=:{}:", "A".repeat(86) + "=="),
        )
    };
    let with_proxy = |key: &Key, proxy_keyid: &str, proxy_first: bool| {
        let signed = Craft::new(&f, key, "GET", "/api/multi").build();
        let (input, sig) = proxy_sig(proxy_keyid);
        if proxy_first {
            // Field lines of one name are one list, in order: the proxy's member comes first.
            signed
                .header_first("signature", &sig)
                .header_first("signature-input", &input)
        } else {
            signed
                .header("signature-input", &input)
                .header("signature", &sig)
        }
    };

    for proxy_first in [false, true] {
        f.app.clear();
        let resp = f.send(with_proxy(&f.bob, "cdn-key", proxy_first)).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let seen = f.app.last().unwrap();
        assert_eq!(seen.header("x-peer-id"), Some(f.bob.public.short_id()));
        assert_eq!(seen.header("x-peer-key-id"), Some(f.bob.key_id()));
    }

    f.app.clear();
    let resp = f.send(with_proxy(&stranger, "cdn-key", false)).await;
    assert_problem(&resp, 401, "unknown_key");
    assert!(resp.text().contains("2 signatures"), "{}", resp.text());
    // What to sign next time: no content-digest for a request without a body.
    let accept = resp.header("accept-signature").unwrap();
    assert!(!accept.contains("content-digest"), "{accept}");
    let post = RawRequest::new("POST", "/api/multi")
        .header("Host", f.authority())
        .body("{}")
        .content_length();
    let resp = f.send(post).await;
    assert_problem(&resp, 401, "missing_signature");
    let accept = resp.header("accept-signature").unwrap();
    assert!(accept.contains("\"content-digest\""), "{accept}");
    let resp = f.send(with_proxy(&f.bob, f.carol.key_id(), false)).await;
    assert_problem(&resp, 401, "malformed_signature");
    assert!(
        resp.text().contains("more than one keyid"),
        "{}",
        resp.text()
    );
    assert!(
        f.app.requests().is_empty(),
        "a refused request reached the app"
    );
}

/// A member of `Signature-Input` or `Signature` that does not parse as a signature at all,
/// beside the signer's, is not ours to check and does not spoil the request (RFC 9421's
/// "Multiple Signature Confusion"); alone, it is refused and names what is wrong. The whole
/// request was refused for it (found by an interop audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_signature_beside_the_signers_is_ignored() {
    let f = Fixture::start();
    let junk = [
        (r#"junk="x""#, "junk=:AA==:"),
        (r#"junk=(1 2)"#, "junk=:AA==:"),
        (r#"junk=("@method")"#, "junk=abc"),
    ];
    for (input, sig) in junk {
        for first in [false, true] {
            f.app.clear();
            let signed = Craft::new(&f, &f.bob, "GET", "/api/junk").build();
            let req = if first {
                signed
                    .header_first("signature", sig)
                    .header_first("signature-input", input)
            } else {
                signed
                    .header("signature-input", input)
                    .header("signature", sig)
            };
            let resp = f.send(req).await;
            assert_eq!(resp.status, 200, "{input} / {sig}: {}", resp.text());
            let seen = f.app.last().unwrap();
            assert_eq!(seen.header("x-peer-id"), Some(f.bob.public.short_id()));
        }
    }
    f.app.clear();
    for (input, sig, why) in [
        (r#"sig1="x""#, "sig1=:AA==:", "is not an inner list"),
        (
            r#"sig1=("@method");keyid="k""#,
            "sig1=abc",
            "is not a byte sequence",
        ),
    ] {
        let req = RawRequest::new("GET", "/api/junk")
            .header("Host", f.authority())
            .header("Signature-Input", input)
            .header("Signature", sig);
        let resp = f.send(req).await;
        assert_problem(&resp, 401, "malformed_signature");
        assert!(resp.text().contains(why), "{}", resp.text());
    }
    assert!(
        f.app.requests().is_empty(),
        "a refused request reached the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_code_with_a_real_request_and_nothing_reaches_the_app() {
    let f = Fixture::start();
    let stranger = Key::new();
    let auth = f.authority();
    let ok_get = || f.signed(&f.bob, "GET", "/api/x", &[], b"");

    let mut cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "no signature",
            RawRequest::new("GET", "/api/x")
                .header("Host", &auth)
                .to_bytes(),
            401,
            "missing_signature",
        ),
        (
            "garbage Signature-Input",
            RawRequest::new("GET", "/api/x")
                .header("Host", &auth)
                .header("Signature-Input", "peer=(\"@method\";created=1")
                .header("Signature", "peer=:AAAA:")
                .to_bytes(),
            401,
            "malformed_signature",
        ),
        (
            "labels do not match",
            {
                let raw = String::from_utf8(ok_get().to_bytes()).unwrap();
                let raw = raw
                    .replace("Signature: peer=", "Signature: other=")
                    .replace("signature: peer=", "signature: other=");
                raw.into_bytes()
            },
            401,
            "malformed_signature",
        ),
        (
            "stranger's key",
            f.signed(&stranger, "GET", "/api/x", &[], b"").to_bytes(),
            401,
            "unknown_key",
        ),
        (
            "no keyid",
            Craft::new(&f, &f.bob, "GET", "/api/x")
                .without("keyid")
                .build()
                .to_bytes(),
            401,
            "unknown_key",
        ),
        (
            "short ID as keyid",
            Craft::new(&f, &f.bob, "GET", "/api/x")
                .param("keyid", Param::Str(f.bob.public.short_id().into()))
                .build()
                .to_bytes(),
            401,
            "unknown_key",
        ),
        (
            "alg rsa",
            Craft::new(&f, &f.bob, "GET", "/api/x")
                .param("alg", Param::Str("rsa-pss-sha512".into()))
                .build()
                .to_bytes(),
            401,
            "unsupported_alg",
        ),
        (
            "authority not covered",
            Craft {
                components: vec!["@method", "@path", "@query"],
                ..Craft::new(&f, &f.bob, "GET", "/api/x")
            }
            .build()
            .to_bytes(),
            401,
            "missing_component",
        ),
        (
            "body without content-digest",
            Craft {
                body: b"hello",
                ..Craft::new(&f, &f.bob, "POST", "/api/x")
            }
            .build()
            .to_bytes(),
            401,
            "missing_component",
        ),
        (
            "too old",
            Craft::new(&f, &f.bob, "GET", "/api/x")
                .param("created", Param::Int(now() - 3600))
                .build()
                .to_bytes(),
            401,
            "expired",
        ),
        (
            "expires passed",
            Craft::new(&f, &f.bob, "GET", "/api/x")
                .param("expires", Param::Int(now() - 5))
                .build()
                .to_bytes(),
            401,
            "expired",
        ),
        (
            "from the future",
            Craft::new(&f, &f.bob, "GET", "/api/x")
                .param("created", Param::Int(now() + 3600))
                .build()
                .to_bytes(),
            401,
            "not_yet_valid",
        ),
        (
            "no nonce",
            Craft::new(&f, &f.bob, "GET", "/api/x")
                .without("nonce")
                .build()
                .to_bytes(),
            401,
            "replayed",
        ),
        (
            "signed for another host",
            signed_for("mallory.test", &f.bob, "GET", "/api/x", &[], b"").to_bytes(),
            401,
            "wrong_authority",
        ),
        (
            "body swapped",
            {
                let good = f.signed(&f.bob, "POST", "/api/x", &[], b"pay 10 coins");
                let raw = String::from_utf8(good.to_bytes())
                    .unwrap()
                    .replace("pay 10 coins", "pay 99 coins");
                raw.into_bytes()
            },
            401,
            "digest_mismatch",
        ),
        (
            "signature flipped",
            {
                let raw = String::from_utf8(ok_get().to_bytes()).unwrap();
                let start = raw.to_ascii_lowercase().find("signature: peer=:").unwrap()
                    + "signature: peer=:".len();
                let mut bytes = raw.into_bytes();
                bytes[start + 3] = if bytes[start + 3] == b'A' { b'B' } else { b'A' };
                bytes
            },
            401,
            "bad_signature",
        ),
        (
            "method changed",
            {
                let raw = String::from_utf8(ok_get().to_bytes())
                    .unwrap()
                    .replacen("GET ", "DELETE ", 1);
                raw.into_bytes()
            },
            401,
            "bad_signature",
        ),
        (
            "carol may only GET",
            f.signed(&f.carol, "POST", "/api/x", &[], b"data")
                .to_bytes(),
            403,
            "forbidden",
        ),
        (
            "carol may only /api",
            f.signed(&f.carol, "GET", "/admin", &[], b"").to_bytes(),
            403,
            "forbidden",
        ),
        (
            "carol may only GET, not DELETE named by a method-override field",
            f.signed(
                &f.carol,
                "GET",
                "/api/x",
                &[("X-HTTP-Method-Override", "DELETE")],
                b"",
            )
            .to_bytes(),
            403,
            "forbidden",
        ),
        (
            "path trick",
            f.signed(&f.carol, "GET", "/api/../admin", &[], b"")
                .to_bytes(),
            400,
            "bad_path",
        ),
    ];
    // 16 MiB + 1: refused on its Content-Length, before the body is read.
    let big = pattern((16 << 20) + 1);
    cases.push((
        "over max_body",
        f.signed(&f.bob, "POST", "/api/x", &[], &big).to_bytes(),
        413,
        "body_too_large",
    ));

    for (what, req, status, reason) in cases {
        let resp = f.send_bytes(req).await;
        assert_problem(&resp, status, reason);
        assert_eq!(f.app.count(), 0, "{what}: the app saw a refused request");
        println!("{what}: {status} {reason} ok");
    }
    let metrics = f.metrics_eventually(&["reason=\"body_too_large\"}"]);
    for reason in [
        "missing_signature",
        "malformed_signature",
        "unknown_key",
        "unsupported_alg",
        "missing_component",
        "expired",
        "not_yet_valid",
        "replayed",
        "wrong_authority",
        "digest_mismatch",
        "bad_signature",
        "forbidden",
        "body_too_large",
    ] {
        assert!(
            metrics.contains(&format!(
                "peergate_rejections_total{{direction=\"inbound\",reason=\"{reason}\"}}"
            )),
            "{reason} counted:\n{metrics}"
        );
    }
}

/// Rails, Laravel, Symfony and Express's `method-override` act on the method such a field
/// names: a peer narrowed to GET must not DELETE through one, under any of its names or cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_override_field_is_held_to_the_peers_allowed_methods() {
    let f = Fixture::start();
    for (field, value) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("x-http-method", "delete"),
        ("X-Method-Override", " PUT "),
        ("x_http_method_override", "DELETE"),
        ("X.HTTP.Method.Override", "DELETE"),
        ("X-HTTP-Method-Override", "GET, DELETE"),
    ] {
        let req = f.signed(&f.carol, "POST", "/api/x", &[(field, value)], b"");
        // POST itself is refused for Carol; GET carrying the field is the bypass to close.
        let req_get = f.signed(&f.carol, "GET", "/api/x", &[(field, value)], b"");
        assert_problem(&f.send(req).await, 403, "forbidden");
        let resp = f.send(req_get).await;
        assert_problem(&resp, 403, "forbidden");
        let lower = field.to_ascii_lowercase();
        assert!(resp.text().contains(&lower), "{field}: {}", resp.text());
        assert_eq!(f.app.count(), 0, "{field}: {value} reached the app");
    }
    // A `_method` query parameter (Laravel, Symfony), however it is spelled.
    for target in [
        "/api/x?_method=DELETE",
        "/api/x?a=1&%5Fmethod=put",
        "/api/x?_method=+patch+",
        "/api/x?a=1&.method=DELETE",
        "/api/x?%5B_method%5D=DELETE",
        "/api/x?_method=get",
    ] {
        let resp = f.send(f.signed(&f.carol, "GET", target, &[], b"")).await;
        assert_problem(&resp, 403, "forbidden");
        assert!(
            resp.text().contains("_method query parameter"),
            "{}",
            resp.text()
        );
    }
    assert_eq!(f.app.count(), 0);
    // A field naming a method Carol may use is passed on; Bob, with no narrowing, may send any.
    let resp = f
        .send(f.signed(
            &f.carol,
            "GET",
            "/api/x",
            &[("X-HTTP-Method-Override", "get")],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = f
        .send(f.signed(
            &f.bob,
            "POST",
            "/api/x",
            &[("X-HTTP-Method-Override", "DELETE")],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = f
        .send(f.signed(
            &f.carol,
            "GET",
            "/api/x?payment_method=get&_methodx=DELETE",
            &[],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(f.app.count(), 3);
}

/// A peer narrowed by `allow.methods` may not send a `_method` in a body at all: Rails,
/// Laravel, Symfony and Express read it as the method to act on, each spelling its name its own
/// way, so every disguise an audit found is refused (a space after `&`, brackets, `.method`,
/// escapes, any content type), and so is a coded body, which peergate cannot read. Not only in
/// a POST's body: Express can be told to read it from any method's. Checked once the body is
/// read. Words that only contain it pass, and so do peers with all methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_parameter_in_the_body_is_refused_to_a_narrowed_peer() {
    type Headers<'a> = [(&'a str, &'a str)];
    let dave = Key::new();
    let f = Fixture::with(Options {
        extra: format!(
            "  - name: Dave\n    public_key: \"{}\"\n    allow: {{ methods: [GET, POST], paths: [\"/api/*\"] }}\n",
            dave.public.spki_base64()
        ),
        ..Options::default()
    });
    let post = |key: &Key, headers: &[(&str, &str)], body: &[u8]| {
        f.signed(key, "POST", "/api/x", headers, body)
    };
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let multipart = |name: &str| {
        format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhi\r\n\
             --XyZ\r\ncontent-disposition: form-data;\r\n name={name}\r\n\r\nDELETE\r\n--XyZ--\r\n"
        )
    };
    let multipart_type = [("Content-Type", "multipart/form-data; boundary=XyZ")];
    let json = [("Content-Type", "application/json")];
    let refused: Vec<(&Headers, Vec<u8>)> = vec![
        (&form, b"a=1&_method=DELETE".to_vec()),
        (&form, b"a=1& _method=DELETE".to_vec()),
        (&form, b"%5B_method%5D=DELETE".to_vec()),
        (&form, b".method=DELETE".to_vec()),
        (&form, b"_method=post".to_vec()),
        (
            &[("Content-Type", "application/x-www-form-urlencoded,")],
            b"_method=DELETE".to_vec(),
        ),
        (
            &[("Content-Type", "text/plain")],
            b"_method=DELETE".to_vec(),
        ),
        (&multipart_type, multipart("\"_method\"").into_bytes()),
        // RFC 2047 encoded words, which commons-fileupload and Tomcat decode in a field name.
        (
            &multipart_type,
            multipart("\"=?UTF-8?B?X21ldGhvZA==?=\"").into_bytes(),
        ),
        (
            &multipart_type,
            multipart("\"=?UTF-8?Q?=5Fmethod?=\"").into_bytes(),
        ),
        (&json, br#"{"a":1,"\u005fmethod":"delete"}"#.to_vec()),
        (&json, br#"{"x":{"_method":"DELETE"}}"#.to_vec()),
    ];
    for (headers, body) in &refused {
        let resp = f.send(post(&dave, headers, body)).await;
        assert_problem(&resp, 403, "forbidden");
        assert!(
            resp.text().contains("_method parameter"),
            "{:?}: {}",
            String::from_utf8_lossy(body),
            resp.text()
        );
    }
    let coded = post(&dave, &[("Content-Encoding", "gzip")], b"\x1f\x8b\x08\x00");
    let resp = f.send(coded).await;
    assert_problem(&resp, 403, "forbidden");
    assert!(resp.text().contains("coded"), "{}", resp.text());
    // A GET, which Dave may send, with a body naming another method, plain or coded.
    let get =
        |headers: &[(&str, &str)], body: &[u8]| f.signed(&dave, "GET", "/api/x", headers, body);
    let resp = f.send(get(&form, b"_method=DELETE")).await;
    assert_problem(&resp, 403, "forbidden");
    assert!(
        resp.text().contains("may not GET this") && resp.text().contains("_method parameter"),
        "{}",
        resp.text()
    );
    let resp = f
        .send(get(&[("Content-Encoding", "gzip")], b"\x1f\x8b\x08\x00"))
        .await;
    assert_problem(&resp, 403, "forbidden");
    assert_eq!(f.app.count(), 0);
    // Names that only contain the word, and Bob, whose methods are not narrowed, pass.
    let passed: Vec<(&Key, &Headers, Vec<u8>)> = vec![
        (&dave, &form, b"payment_method=card&methods=2".to_vec()),
        (
            &dave,
            &multipart_type,
            multipart("\"methods\"").into_bytes(),
        ),
        (
            &dave,
            &json,
            br#"{"payment_method":"card","method":"x"}"#.to_vec(),
        ),
        (&f.bob, &form, b"_method=DELETE".to_vec()),
    ];
    for (key, headers, body) in &passed {
        let resp = f.send(post(key, headers, body)).await;
        assert_eq!(
            resp.status,
            200,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            resp.text()
        );
    }
    assert_eq!(f.app.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_is_refused_the_second_time() {
    let f = Fixture::start();
    let req = f.signed(&f.bob, "POST", "/api/transfer", &[], b"{\"amount\":10}");
    let first = f.send(req.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = f.send(req).await;
    assert_problem(&second, 401, "replayed");
    assert_eq!(f.app.count(), 1, "the replay never reached the app");
}

/// Nonces are remembered in memory only: a signature made before the gateway started may have
/// been accepted by the process before it, so it is refused (`replayed`), and one made since
/// passes. Before, a request seen once could be sent again after a restart for as long as its
/// signature lived (found by an audit: accepted, refused, restarted, accepted again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_made_before_the_gateway_started_is_refused() {
    let f = Fixture::start();
    let before = Craft::new(&f, &f.bob, "POST", "/api/transfer")
        .param("created", Param::Int(now() - 30))
        .build();
    let resp = f.send(before).await;
    assert_problem(&resp, 401, "replayed");
    assert!(
        resp.text().contains("before this gateway started"),
        "{}",
        resp.text()
    );
    let since = f.signed(&f.bob, "POST", "/api/transfer", &[], b"");
    assert_eq!(f.send(since).await.status, 200);
    assert_eq!(f.app.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_cache_refuses_when_full() {
    let f = Fixture::with(Options {
        extra: "signatures: { replay_cache_size: 1 }".into(),
        ..Options::default()
    });
    assert_eq!(
        f.send(f.signed(&f.bob, "GET", "/api/1", &[], b""))
            .await
            .status,
        200
    );
    let resp = f.send(f.signed(&f.bob, "GET", "/api/2", &[], b"")).await;
    assert_problem(&resp, 503, "replay_cache_full");
    assert_eq!(f.app.count(), 1);
}

/// The replay cache is shared by every key: requests a peer's own rules refuse must take no
/// room in it, or a peer narrowed to a few paths could fill it with refused requests and have
/// every other peer refused as `replay_cache_full` (found by an audit: 3000 forbidden requests
/// locked everyone out of a 3000-entry cache for five minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_requests_take_no_room_in_the_replay_cache() {
    let f = Fixture::with(Options {
        extra: "signatures: { replay_cache_size: 2 }".into(),
        ..Options::default()
    });
    // carol may only GET /api/*.
    for i in 0..5 {
        let resp = f
            .send(f.signed(&f.carol, "DELETE", &format!("/admin/{i}"), &[], b""))
            .await;
        assert_problem(&resp, 403, "forbidden");
    }
    let metrics = f.metrics();
    assert!(
        metrics.contains("\npeergate_replay_cache_entries 0\n"),
        "{metrics}"
    );
    assert_eq!(
        f.send(f.signed(&f.bob, "GET", "/api/1", &[], b""))
            .await
            .status,
        200
    );
    // What was refused was not recorded: the same signed request, once allowed, still counts
    // as new; an accepted one is recorded as before.
    let request = f.signed(&f.carol, "GET", "/api/2", &[], b"");
    assert_eq!(f.send(request.clone()).await.status, 200);
    assert_problem(&f.send(request).await, 401, "replayed");
    assert_eq!(f.app.count(), 2);
    // A forbidden request is counted as its peer's; a replay as nobody's (anyone can resend
    // someone's old signature).
    let forbidden = format!(
        "peergate_requests_total{{direction=\"inbound\",outcome=\"refused\",peer=\"{}\"}} 5",
        f.carol.public.short_id()
    );
    let replayed =
        "peergate_requests_total{direction=\"inbound\",outcome=\"refused\",peer=\"unknown\"} 1";
    let m = f.metrics_eventually(&[&forbidden, replayed]);
    assert!(m.contains(&forbidden) && m.contains(replayed), "{m}");
}

/// With `identity_headers` renamed (Portal's names), the default names are stripped too: an
/// app moved to the new names, or something beside it, may still read `X-Peer-Id`, and they
/// reached it as the client sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_identity_headers_strip_the_default_names_too() {
    let f = Fixture::with(Options {
        extra: "identity_headers: { id: X-Ptl-Client-Id, name: X-Ptl-Client-Name, key_id: X-Ptl-Client-Key }\n".into(),
        ..Options::default()
    });
    let spoofs: &[(&str, &str)] = &[
        ("X-Peer-Id", "evil1"),
        ("x_peer_name", "Mallory"),
        ("X-Peer-Key-Id", "evil-key"),
        ("X-Ptl-Client-Id", "evil2"),
        ("x_ptl_client_name", "Mallory"),
    ];
    let identity = |seen: &support::echo::Recorded| -> Vec<(String, String)> {
        seen.headers
            .iter()
            .filter(|(n, _)| {
                let n = n.to_ascii_lowercase().replace('_', "-");
                n.starts_with("x-peer-") || n.starts_with("x-ptl-")
            })
            .cloned()
            .collect()
    };
    let mut req = RawRequest::new("GET", "/public/page").header("Host", f.authority());
    for (k, v) in spoofs {
        req = req.header(k, v);
    }
    assert_eq!(f.send(req).await.status, 200);
    assert_eq!(identity(&f.app.last().unwrap()), vec![]);

    let resp = f
        .send(f.signed(&f.bob, "GET", "/api/me", spoofs, b""))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        identity(&f.app.last().unwrap()),
        vec![
            (
                "x-ptl-client-id".to_string(),
                f.bob.public.short_id().to_string()
            ),
            ("x-ptl-client-name".to_string(), "Bob".to_string()),
            ("x-ptl-client-key".to_string(), f.bob.key_id().to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_app() {
    let f = Fixture::start();
    let spoofs: &[(&str, &str)] = &[
        ("X-Peer-Id", "evil1"),
        ("x-peer-id", "evil2"),
        ("X_Peer_Id", "evil3"),
        ("X-PEER-NAME", "Mallory"),
        ("x_peer_key_id", "evil-key"),
        ("X-Peer-Id", "evil4"),
        // CGI bridges read any punctuation there as `_` (`HTTP_X_PEER_ID`).
        ("X.Peer.Id", "evil5"),
        ("x~peer~name", "evil6"),
    ];
    let folded = |name: &str| {
        name.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b.to_ascii_lowercase())
                } else {
                    '-'
                }
            })
            .collect::<String>()
    };
    // Public route, unsigned.
    let mut req = RawRequest::new("GET", "/public/page").header("Host", f.authority());
    for (k, v) in spoofs {
        req = req.header(k, v);
    }
    let resp = f.send(req).await;
    assert_eq!(resp.status, 200);
    let seen = f.app.last().unwrap();
    for (name, _) in &seen.headers {
        assert!(
            !folded(name).starts_with("x-peer-"),
            "spoofed {name} reached the app on a public route"
        );
    }

    // Public route, signed by Bob: still no identity (public routes do not verify).
    f.app.clear();
    let resp = f
        .send(f.signed(&f.bob, "GET", "/public/page", spoofs, b""))
        .await;
    assert_eq!(resp.status, 200);
    let seen = f.app.last().unwrap();
    assert!(seen
        .headers
        .iter()
        .all(|(n, _)| !folded(n).starts_with("x-peer-")));

    // Peer route, signed by Bob, with the spoofs covered by nothing: exactly Bob's identity.
    f.app.clear();
    let resp = f
        .send(f.signed(&f.bob, "GET", "/api/me", spoofs, b""))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = f.app.last().unwrap();
    assert_eq!(seen.headers_all("x-peer-id"), vec![f.bob.public.short_id()]);
    assert_eq!(seen.headers_all("x-peer-name"), vec!["Bob"]);
    assert_eq!(seen.headers_all("x-peer-key-id"), vec![f.bob.key_id()]);
    assert!(
        seen.headers
            .iter()
            .all(|(n, _)| !n.contains(['_', '.', '~'])),
        "no look-alike survives"
    );

    // Peer route, unsigned: refused, nothing reaches the app.
    f.app.clear();
    let mut req = RawRequest::new("GET", "/api/me").header("Host", f.authority());
    for (k, v) in spoofs {
        req = req.header(k, v);
    }
    assert_problem(&f.send(req).await, 401, "missing_signature");
    assert_eq!(f.app.count(), 0);

    // Carol's non-ASCII name is percent-encoded.
    let resp = f.send(f.signed(&f.carol, "GET", "/api/me", &[], b"")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        f.app.last().unwrap().header("x-peer-name"),
        Some("Carol Zo%C3%AB")
    );
}

/// RFC 9113 §8.2.3: Cookie fields an HTTP/2 client split are joined with "; " for the
/// HTTP/1.1 app, which would otherwise read only the first line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_http2_cookies_reach_the_app_as_one_line() {
    let f = Fixture::start();
    let resp = h2_request(
        f.addr,
        f.client.clone(),
        HOST,
        "GET",
        "/public/page",
        &[("cookie", "a=1"), ("cookie", "b=2")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = f.app.last().unwrap();
    let cookies: Vec<&(String, String)> =
        seen.headers.iter().filter(|(n, _)| n == "cookie").collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(seen.header("cookie"), Some("a=1; b=2"));
}

/// A client that leaves in the middle of its body got no answer: counted once, as `aborted`,
/// not as `ok`, and nothing reached the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_body_is_counted_as_aborted() {
    let f = Fixture::start();
    let body = vec![b'x'; 100];
    let mut bytes = f
        .signed(&f.bob, "POST", "/api/upload", &[], &body)
        .to_bytes();
    bytes.truncate(bytes.len() - 90);
    let mut conn = f.connect().await;
    conn.send(&bytes).await.unwrap();
    drop(conn);
    let needle = format!(
        "peergate_requests_total{{direction=\"inbound\",outcome=\"aborted\",peer=\"{}\"}} 1",
        f.bob.public.short_id()
    );
    let m = f.metrics_eventually(&[&needle]);
    assert!(m.contains(&needle), "{m}");
    assert!(!m.contains("outcome=\"ok\""), "{m}");
    assert_eq!(f.app.count(), 0);
}

/// A client that waits gets its answer however long the app takes (within `app.timeout`); one
/// that goes away while the app is still working on its signed request is noticed at once:
/// peergate gives the request up (closing its connection to the app, which sees its
/// client leave) and counts it as aborted, over HTTP/1.1 and over HTTP/2. Before, it waited
/// for the app's answer (or its timeout), holding the app connection and the client's place
/// under `listen.max_connections`, and found out only when writing the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_answer_is_noticed_at_once() {
    let f = Fixture::with(Options {
        app: Handler::Delay(Duration::from_millis(1800)),
        ..Options::default()
    });
    let aborted = |n: usize| {
        format!(
            "peergate_requests_total{{direction=\"inbound\",outcome=\"aborted\",peer=\"{}\"}} {n}",
            f.bob.public.short_id()
        )
    };

    // A client that waits gets its answer, over both protocols: an HTTP/2 request's end of
    // stream, or an HTTP/1.1 client that sends nothing more, is no leaving.
    let mut conn = f.connect().await;
    let get = f.signed(&f.bob, "GET", "/api/waits", &[], b"");
    assert_eq!(conn.request(&get.to_bytes()).await.unwrap().status, 200);
    let body = pattern(1000);
    let headers = h2_signed_headers(&f.bob, "POST", "/api/waits", &body);
    let headers = borrowed(&headers);
    let resp = h2_request(
        f.addr,
        f.client.clone(),
        HOST,
        "POST",
        "/api/waits",
        &headers,
        &body,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    f.app.clear();

    let get = f.signed(&f.bob, "GET", "/api/slow/1", &[], b"");
    conn.send(&get.to_bytes()).await.unwrap();
    f.app.wait_for(1, Duration::from_secs(10)).await;
    let left = Instant::now();
    drop(conn);
    let m = f.metrics_eventually(&[&aborted(1)]);
    assert!(m.contains(&aborted(1)), "{m}");
    assert!(
        left.elapsed() < Duration::from_millis(1200),
        "noticed {:?} after the client left, when the app answered",
        left.elapsed()
    );

    let headers = h2_signed_headers(&f.bob, "GET", "/api/slow/2", b"");
    let request = tokio::spawn({
        let client = f.client.clone();
        let addr = f.addr;
        async move {
            let headers = borrowed(&headers);
            h2_request(addr, client, HOST, "GET", "/api/slow/2", &headers, b"").await
        }
    });
    f.app.wait_for(2, Duration::from_secs(10)).await;
    let left = Instant::now();
    request.abort();
    let m = f.metrics_eventually(&[&aborted(2)]);
    assert!(m.contains(&aborted(2)), "{m}");
    assert!(
        left.elapsed() < Duration::from_millis(1200),
        "HTTP/2: noticed {:?} after the client left",
        left.elapsed()
    );
    let waited = format!(
        "peergate_requests_total{{direction=\"inbound\",outcome=\"ok\",peer=\"{}\"}} 2\n",
        f.bob.public.short_id()
    );
    assert!(m.contains(&waited), "{m}");
}

/// Requests pipelined in one write are answered in order, each once, on both listeners; the
/// second used to be dropped with the connection (see also
/// `pipelined_requests_are_answered_in_order`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pipelined_in_one_write_are_answered_in_order() {
    let f = Fixture::start();
    let mut conn = f.connect().await;
    let mut bytes = f.signed(&f.bob, "GET", "/api/first", &[], b"").to_bytes();
    bytes.extend_from_slice(&f.signed(&f.bob, "GET", "/api/second", &[], b"").to_bytes());
    let first = conn.request(&bytes).await.unwrap();
    let second = conn.read_response(false).await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().contains("/api/first"), "{}", first.text());
    assert_eq!(second.status, 200, "{}", second.text());
    assert!(second.text().contains("/api/second"), "{}", second.text());
    let seen: Vec<String> = f.app.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(seen, ["/api/first", "/api/second"]);

    // The outbound listener's own directory, twice in one write.
    let mut conn = RawConn::connect(f.outbound, None).await.unwrap();
    let directory = RawRequest::new("GET", "/peers/").header("Host", "localhost");
    let mut bytes = directory.to_bytes();
    bytes.extend_from_slice(&directory.to_bytes());
    assert_eq!(conn.request(&bytes).await.unwrap().status, 200);
    assert_eq!(conn.read_response(false).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_as_a_problem_and_nothing_is_tunnelled() {
    let f = Fixture::start();
    let mut conn = f.connect().await;
    // What a tunnel would carry follows the CONNECT at once: it must reach nobody.
    let connect = RawRequest::new("CONNECT", f.authority()).header("Host", f.authority());
    let mut bytes = connect.to_bytes();
    bytes.extend_from_slice(
        &RawRequest::new("GET", "/public/tunnelled")
            .header("Host", f.authority())
            .to_bytes(),
    );
    let resp = conn.request(&bytes).await.unwrap();
    assert_problem(&resp, 405, "connect_not_supported");
    assert!(resp.header("accept-signature").is_none());
    conn.closed_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(f.app.count(), 0, "nothing reached the app");
    let m = f.metrics_eventually(&[
        "peergate_rejections_total{direction=\"inbound\",reason=\"connect_not_supported\"} 1",
    ]);
    assert!(
        m.contains(
            "peergate_rejections_total{direction=\"inbound\",reason=\"connect_not_supported\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_cannot_reach_what_the_route_or_allow_forbids() {
    let f = Fixture::start();
    // Carol may GET /api/* only. Each trick aims at /admin.
    for target in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2E/admin",
        "/api/.%2e/admin",
        "/api/..%2fadmin",
        "/api%2f..%2fadmin",
        "/api/..%5cadmin",
        "/api//../admin",
        "//admin",
        "/api/./../admin",
        "/api/%252e%252e/admin",
    ] {
        let resp = f.send(f.signed(&f.carol, "GET", target, &[], b"")).await;
        assert!(
            resp.status == 400 || resp.status == 403,
            "{target}: {} {}",
            resp.status,
            resp.text()
        );
        assert_eq!(f.app.count(), 0, "{target} reached the app");
    }
    // A public route is no way around a peers route either.
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/..%2fadmin",
        // Servlet containers cut a segment at `;`: to them these are /admin and /api/x.
        "/public/..;/admin",
        "/public/..%3B/admin",
        "/public/.;/../api/x",
    ] {
        let req = RawRequest::new("GET", target).header("Host", f.authority());
        let resp = f.send(req).await;
        assert_problem(&resp, 400, "bad_path");
        assert_eq!(f.app.count(), 0, "{target} reached the app");
    }
    // An unreserved character sent encoded: `/api/*` to the pattern, something else to an
    // app that routes on the raw path.
    for target in [
        "/%61pi/x",
        "/api/%78",
        "/%70ublic/x",
        "/api/a%2Db",
        "/api/a%5fb",
    ] {
        let resp = f.send(f.signed(&f.carol, "GET", target, &[], b"")).await;
        assert_problem(&resp, 400, "bad_path");
        assert!(resp.text().contains("needs no encoding"), "{}", resp.text());
        assert_eq!(f.app.count(), 0, "{target} reached the app");
    }
    // Nor is a path parameter a way out of a peer's `allow` rule.
    for target in ["/api/..;/admin", "/api;x/../admin", "/api/x;y"] {
        let resp = f.send(f.signed(&f.carol, "GET", target, &[], b"")).await;
        assert_problem(&resp, 400, "bad_path");
        assert_eq!(f.app.count(), 0, "{target} reached the app");
    }
    // Absolute-form and non-UTF-8 targets: what Pingora forwards would not be what was checked.
    let absolute = signed_for(
        &f.authority(),
        &f.carol,
        "GET",
        &format!("https://{}/api/ok", f.authority()),
        &[],
        b"",
    );
    assert_problem(&f.send(absolute).await, 400, "bad_path");
    let raw = RawRequest::new("GET", b"/api/\xff/ok".as_slice())
        .header("Host", f.authority())
        .to_bytes();
    // Pingora's HTTP/1 parser refuses a non-UTF-8 target itself, before any of peergate's
    // phases run (`an_unreadable_head_gets_a_problem_document`); the app never sees it.
    assert_problem(&f.send_bytes(raw).await, 400, "bad_request");
    assert_eq!(f.app.count(), 0);
    // And what Carol may do still works.
    assert_eq!(
        f.send(f.signed(&f.carol, "GET", "/api/ok", &[], b""))
            .await
            .status,
        200
    );
}

/// A head that Pingora's HTTP/1 parser refuses never reaches peergate's phases, yet the
/// client gets a problem document as for any refusal (not Pingora's bare 400), the refusal is
/// counted, and the connection is closed. Also on a kept connection, after a good request. An
/// answer to a request that was read, the app's own bodyless 400 among them, passes untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_head_gets_a_problem_document() {
    let f = Fixture::with(Options {
        app: Handler::custom(|r| {
            if r.target.starts_with("/public/bad") {
                Reply::new(400)
                    .header("Cache-Control", "private, no-store")
                    .header("Content-Length", "0")
            } else {
                Reply::new(200).body("ok")
            }
        }),
        ..Options::default()
    });
    let host = format!("Host: {}\r\n", f.authority());
    let unreadable: [Vec<u8>; 6] = [
        format!("GET /public/a`b HTTP/1.1\r\n{host}\r\n").into(),
        format!("GET https://elsewhere.test/public/x HTTP/1.1\r\n{host}\r\n").into(),
        format!(
            "GET /public/x HTTP/1.1\r\nHost: user@{}\r\n\r\n",
            f.authority()
        )
        .into(),
        [
            b"GET /public/\xff HTTP/1.1\r\n".as_slice(),
            host.as_bytes(),
            b"\r\n",
        ]
        .concat(),
        format!("POST /public/x HTTP/1.1\r\n{host}Content-Length: +5\r\n\r\nhello").into(),
        format!("GET /public/x HTTP/1.1\r\n{host}Bad Field: 1\r\n\r\n").into(),
    ];
    for raw in &unreadable {
        let mut conn = f.connect().await;
        let resp = conn.request(raw).await.expect("an answer");
        assert_problem(&resp, 400, "bad_request");
        assert!(resp.text().contains("could not be read"), "{}", resp.text());
        assert_eq!(resp.header("connection"), Some("close"));
        conn.closed_within(Duration::from_secs(5)).await.unwrap();
    }
    // A head over 64 KiB is refused as it comes, in its own words (Pingora would hold up to
    // 1 MiB of it per connection); one just under passes.
    let big = format!(
        "GET /public/x HTTP/1.1\r\n{host}X-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let mut conn = f.connect().await;
    let resp = conn.request(big.as_bytes()).await.expect("an answer");
    assert_problem(&resp, 400, "bad_request");
    assert!(
        resp.text()
            .contains("the request head is larger than 64 KiB"),
        "{}",
        resp.text()
    );
    assert_eq!(resp.header("connection"), Some("close"));
    conn.closed_within(Duration::from_secs(5)).await.unwrap();
    let fits = RawRequest::new("GET", "/public/fits")
        .header("Host", f.authority())
        .header("X-Big", "a".repeat(60 * 1024));
    assert_eq!(f.send(fits).await.status, 200);
    // A kept connection: a request that is read, then one that is not.
    let mut conn = f.connect().await;
    let good = RawRequest::new("GET", "/public/fine").header("Host", f.authority());
    assert_eq!(conn.request(&good.to_bytes()).await.unwrap().status, 200);
    let resp = conn.request(&unreadable[0]).await.unwrap();
    assert_problem(&resp, 400, "bad_request");
    // The app's own 400, without a body, is the app's.
    let apps = RawRequest::new("GET", "/public/bad").header("Host", f.authority());
    let resp = f.send(apps).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("content-length"), Some("0"));
    assert_ne!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    // And peergate's own 400 keeps its own words.
    let listed = RawRequest::new("POST", "/public/form")
        .header("Host", f.authority())
        .header("Content-Length", "5, 5")
        .body(b"hello");
    let resp = f.send(listed).await;
    assert_problem(&resp, 400, "bad_request");
    assert!(resp.text().contains("Content-Length"), "{}", resp.text());
    assert_eq!(f.app.count(), 3);
    let m = f.metrics_eventually(&[
        "peergate_rejections_total{direction=\"inbound\",reason=\"bad_request\"} 9",
    ]);
    assert!(
        m.contains("peergate_rejections_total{direction=\"inbound\",reason=\"bad_request\"} 9"),
        "{m}"
    );
}

/// The caller learns what kind of failure it was, never the app's address or the connector's
/// own words (on a public route the caller is anyone); the operator's log has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_down_gives_502_and_a_slow_app_504() {
    let dead = dead_addr();
    let f = Fixture::in_front_of(dead);
    let public = RawRequest::new("GET", "/public/page").header("Host", f.authority());
    for req in [
        f.signed(&f.bob, "GET", "/api/x", &[], &[]),
        f.signed(&f.bob, "POST", "/api/x", &[], &pattern(2000)),
        public,
    ] {
        let resp = tokio::time::timeout(Duration::from_secs(8), f.send(req))
            .await
            .expect("502 comes quickly, no hang");
        assert_problem(&resp, 502, "upstream_unreachable");
        assert_eq!(
            resp.json()["detail"],
            "the app behind this peergate cannot be reached"
        );
        let text = resp.text();
        for internal in [dead.to_string(), "ConnectRefused".to_owned()] {
            assert!(!text.contains(&internal), "{text}");
        }
    }
    assert!(
        f.metrics()
            .contains("peergate_upstream_errors_total{direction=\"inbound\",kind=\"connect\"} 3"),
        "{}",
        f.metrics()
    );

    let slow = Fixture::with(Options {
        app: Handler::Delay(Duration::from_secs(4)),
        ..Options::default()
    });
    for (method, body) in [("GET", Vec::new()), ("POST", pattern(2000))] {
        let resp = slow
            .send(slow.signed(&slow.bob, method, "/api/slow", &[], &body))
            .await;
        assert_problem(&resp, 504, "upstream_timeout");
        assert_eq!(
            resp.json()["detail"],
            "the app behind this peergate did not answer in time"
        );
    }
    assert!(
        slow.metrics().contains("kind=\"timeout\"} 2"),
        "{}",
        slow.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_peer_without_unbounded_labels() {
    let f = Fixture::start();
    for i in 0..20 {
        let resp = f
            .send(f.signed(&f.bob, "GET", &format!("/api/item/{i}"), &[], b""))
            .await;
        assert_eq!(resp.status, 200);
        let stranger = Key::new();
        assert_eq!(
            f.send(f.signed(&stranger, "GET", &format!("/api/item/{i}"), &[], b""))
                .await
                .status,
            401
        );
    }
    let bob = f.bob.public.short_id();
    let ok_line = format!(
        "peergate_requests_total{{direction=\"inbound\",outcome=\"ok\",peer=\"{bob}\"}} 20"
    );
    let m = f.metrics_eventually(&[
        &ok_line,
        "peergate_requests_total{direction=\"inbound\",outcome=\"refused\",peer=\"unknown\"} 20",
        "peergate_rejections_total{direction=\"inbound\",reason=\"unknown_key\"} 20",
    ]);
    assert!(
        m.contains(&format!(
            "peergate_requests_total{{direction=\"inbound\",outcome=\"ok\",peer=\"{bob}\"}} 20"
        )),
        "{m}"
    );
    assert!(m.contains("peergate_requests_total{direction=\"inbound\",outcome=\"refused\",peer=\"unknown\"} 20"), "{m}");
    assert!(
        m.contains("peergate_rejections_total{direction=\"inbound\",reason=\"unknown_key\"} 20"),
        "{m}"
    );
    assert!(!m.contains("/api/item"), "no path in labels");
    assert!(m.contains("peergate_peers 2"), "{m}");
}

/// A peers-only prefix under a public catch-all holds for every spelling that some app
/// framework routes to it: letters outside ASCII that case-map to ASCII ones (Java's
/// `equalsIgnoreCase` takes `ſ` for `s` and `ı` for `i`), and a format suffix (Rails serves
/// `/admin.json` with the `/admin` action). Each was public, and reached the app unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_prefix_holds_for_every_spelling_an_app_routes_to_it() {
    let f = Fixture::with(Options {
        routes: "  - { path: \"/admin/*\", access: peers }\n  - { path: \"/skip/*\", access: peers }\n  - { path: \"/kit\", access: peers }\n  - { path: \"/*\", access: public }\n",
        ..Options::default()
    });
    for path in [
        "/admin/x",
        "/Admin/x",
        "/adm%C4%B1n/x", // ı
        "/ADM%C4%B0N/x", // İ
        "/%C5%BFkip/x",  // ſ
        "/%E2%84%AAit",  // the Kelvin sign
        "/admin.json",
        "/Admin.html/",
        "/admin.",
        "/kit.tar.gz",
        "/%C5%BFkip.xml",
    ] {
        let req = RawRequest::new("GET", path).header("Host", f.authority());
        assert_problem(&f.send(req).await, 401, "missing_signature");
        assert_eq!(f.app.count(), 0, "{path} reached the app");
    }
    // What no such reading makes a protected path stays public.
    for path in [
        "/about",
        "/administrator.json",
        "/.env",
        "/kits",
        "/kit/x",
        "/x/admin.json",
    ] {
        let req = RawRequest::new("GET", path).header("Host", f.authority());
        assert_eq!(f.send(req).await.status, 200, "{path}");
    }
    assert_eq!(f.app.count(), 6);
}

/// An unsigned POST over HTTP/2 is refused as soon as its head is read. Its stream was then
/// reset (`NO_ERROR`, RFC 9113 §8.1) while the client was still sending the body, and curl
/// 7.88 (Debian 12's) fails such a request with "Stream error in the HTTP/2 framing layer" and
/// shows no answer at all. A body up to 1 MiB is now read and dropped after the refusal, so the
/// stream ends as any other; a larger one is still cut by the reset, which is what stops it.
/// Nothing of either reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_http2_uploads_are_read_to_their_end_not_reset() {
    let f = Fixture::start();
    let (resp, reset) = h2_post_streamed(f.addr, f.client.clone(), HOST, "/api/upload", 600_000)
        .await
        .unwrap();
    assert_problem(&resp, 401, "missing_signature");
    assert_eq!(reset, None, "the stream was reset before the body was sent");

    let (resp, reset) = h2_post_streamed(
        f.addr,
        f.client.clone(),
        HOST,
        "/api/upload",
        3 * 1024 * 1024,
    )
    .await
    .unwrap();
    assert_problem(&resp, 401, "missing_signature");
    assert_eq!(reset, Some(h2::Reason::NO_ERROR));
    assert!(f.app.requests().is_empty());
}

/// A signed chunked body whose chunk size does not parse (20 hex digits, past Pingora's 16) is
/// refused 400, and nothing after it on the connection is read: where the body ends is not
/// known. The connection was kept after the refusal, and a request the client sent later as the
/// body's next bytes reached the app as a request of its own, which a front proxy that reads
/// the size (any number of digits is `1*HEXDIG`) would have taken for body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_closes_the_connection_so_nothing_after_it_is_a_request() {
    let f = Fixture::start();
    for bad_chunk in [&b"00000000000000000034\r\n"[..], b"zz\r\n", b"5\r\nhelloXX"] {
        let head = signed_chunked_head(&f, &f.bob, "/api/upload", b"hello");
        let mut conn = f.connect().await;
        conn.send(&head).await.unwrap();
        conn.send(bad_chunk).await.unwrap();
        let resp = conn.read_response(false).await.unwrap();
        assert_problem(&resp, 400, "bad_request");
        assert!(resp.text().contains("chunked framing"), "{}", resp.text());
        assert_eq!(
            resp.header("connection"),
            Some("close"),
            "{bad_chunk:?}: {:?}",
            resp.headers
        );
        // Sent after the answer, as the body's next bytes: never read as a request. (The
        // server may have closed already: a failed write, or a reset, is the point.)
        let smuggled = RawRequest::new("GET", "/public/SMUG").header("Host", f.authority());
        let _ = conn.send(&smuggled.to_bytes()).await;
        let more = conn.read_until_closed().await.unwrap_or_default();
        assert!(
            more.is_empty(),
            "{bad_chunk:?}: a second answer: {}",
            String::from_utf8_lossy(&more)
        );
    }
    assert!(
        f.app.requests().is_empty(),
        "reached the app: {:?}",
        f.app
            .requests()
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    );
    // On a public route the body streams to the app; its bad chunk ends the exchange, and
    // the answer says the connection closes, as it does.
    let public = RawRequest::new("POST", "/public/form")
        .header("Host", f.authority())
        .header("Transfer-Encoding", "chunked")
        .body(b"zz\r\nhello\r\n0\r\n\r\n");
    let resp = f.send(public).await;
    assert_problem(&resp, 400, "bad_request");
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "{:?}",
        resp.headers
    );
}

/// A chunk line another parser could end elsewhere is refused 400 (RFC 9112 §7.1), on signed
/// and public routes: Pingora's parser takes any byte but CR in a chunk extension, so with a
/// bare LF in one a front proxy that ends lines at LF, and peergate, found different chunks.
/// The public-route stream below is such a smuggle: the front proxy sees one request whose
/// body holds `GET /public/SMUG`; Pingora alone read the body as `50` and the rest as a
/// request of its own, which reached the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_line_another_parser_could_end_elsewhere_is_refused() {
    let f = Fixture::start();
    let smuggled = RawRequest::new("GET", "/public/SMUG")
        .header("Host", f.authority())
        .to_bytes();
    // After `2;\nxx\r\n`: to the front proxy a chunk of this many bytes, to Pingora the
    // 2 data bytes of the chunk it read, then its last chunk and the smuggled request.
    let tail = [b"0\r\n\r\n".as_slice(), &smuggled].concat();
    let smuggle = [
        format!("2;\nxx\r\n{:02x}\r\n", tail.len()).as_bytes(),
        &tail,
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    let public = RawRequest::new("POST", "/public/form")
        .header("Host", f.authority())
        .header("Transfer-Encoding", "chunked")
        .to_bytes();
    let mut conn = f.connect().await;
    conn.send(&[public, smuggle].concat()).await.unwrap();
    let resp = conn.read_response(false).await.unwrap();
    assert_problem(&resp, 400, "bad_request");
    assert!(
        resp.text().contains("an LF without a CR"),
        "{}",
        resp.text()
    );
    assert_eq!(resp.header("connection"), Some("close"));
    let more = conn.read_until_closed().await.unwrap_or_default();
    assert!(more.is_empty(), "{}", String::from_utf8_lossy(&more));

    // On a signed route, each shape is refused before anything reaches the app.
    for (bad, says) in [
        (&b"2;\nxx\r\n0\r\n\r\n"[..], "an LF without a CR"),
        (b"5;a\x01b\r\nhello\r\n0\r\n\r\n", "chunk extension"),
        (b"5;a=\"x\r\nhello\r\n0\r\n\r\n", "chunk extension"),
        (b"5;a b\r\nhello\r\n0\r\n\r\n", "chunk extension"),
        // httparse reads a line without a size as the last chunk.
        (b"\r\n\r\n", "hex digits"),
        (b";x\r\n\r\n", "hex digits"),
        (b"5\r\nhello\r\n0\r\nTrailer: x\n\r\n", "an LF without a CR"),
    ] {
        let head = signed_chunked_head(&f, &f.bob, "/api/upload", b"hello");
        let resp = f.send_bytes([head.as_slice(), bad].concat()).await;
        assert_problem(&resp, 400, "bad_request");
        let detail = resp.json()["detail"].as_str().unwrap().to_string();
        assert!(
            detail.contains("chunked framing") && detail.contains(says),
            "{}: {detail}",
            bad.escape_ascii()
        );
    }
    let reached: Vec<String> = f.app.requests().iter().map(|r| r.target.clone()).collect();
    assert!(
        !reached
            .iter()
            .any(|t| t.contains("SMUG") || t.contains("upload")),
        "reached the app: {reached:?}"
    );
    // Extensions as RFC 9112 has them still pass, on both kinds of route.
    let body = b"5;name=value;q=\"a \\\"b\" ; flag\r\nhello\r\n0;last\r\nTrailer: x\r\n\r\n";
    let head = signed_chunked_head(&f, &f.bob, "/api/upload", b"hello");
    let resp = f.send_bytes([head.as_slice(), body].concat()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let public = RawRequest::new("POST", "/public/form")
        .header("Host", f.authority())
        .header("Transfer-Encoding", "chunked")
        .body(body);
    assert_eq!(f.send(public).await.status, 200);
    assert_eq!(f.app.last().unwrap().body, b"hello");
}

/// An interim answer (103 Early Hints) from the app on a public route reaches the client
/// without framing fields: it has no body (RFC 9112 §6.1 forbids `Transfer-Encoding` on a 1xx).
/// It was sent `Transfer-Encoding: chunked`, and a client that takes a 103 as final (Python's
/// `http.client`) read the real answer's status line as a chunk. An HTTP/1.0 client gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_answers_carry_no_framing_and_skip_http10_clients() {
    use tokio::io::AsyncWriteExt;
    let (app_addr, _) = raw_app(|mut stream| async move {
        if read_request_head(&mut stream).await.is_none() {
            return;
        }
        let _ = stream
            .write_all(
                // Framing fields on a 1xx (which has no body) are the app's mistake.
                b"HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\
                  Content-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            )
            .await;
    })
    .await;
    let f = Fixture::in_front_of(app_addr);
    let mut conn = f.connect().await;
    let get = RawRequest::new("GET", "/public/page")
        .header("Host", f.authority())
        .header("Connection", "close");
    conn.send(&get.to_bytes()).await.unwrap();
    let got = conn.read_until_closed().await.unwrap();
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let (early, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(early.starts_with("http/1.1 103"), "{text}");
    assert!(early.contains("link: </x.css>; rel=preload"), "{text}");
    assert!(!early.contains("transfer-encoding"), "{text}");
    assert!(!early.contains("content-length"), "{text}");
    assert!(rest.starts_with("http/1.1 200"), "{text}");
    assert!(rest.ends_with("\r\n\r\nhello"), "{text}");

    // An HTTP/1.0 client is sent no interim answer at all (RFC 9110 §15.2).
    let mut conn = f.connect().await;
    let old = RawRequest::new("GET", "/public/page")
        .version("HTTP/1.0")
        .header("Host", f.authority());
    conn.send(&old.to_bytes()).await.unwrap();
    let got = conn.read_until_closed().await.unwrap();
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(!text.contains("103"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
}

/// On a public route Pingora forwards the client's head as it came: two equal `Content-Length`
/// fields reached the app as two, and `005` as `005`, which apps may read otherwise than
/// Pingora framed the body. The app gets one plain length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_send_the_app_one_plain_content_length() {
    let f = Fixture::start();
    for lengths in [&["5", "5"][..], &["005"]] {
        let mut post = RawRequest::new("POST", "/public/form").header("Host", f.authority());
        for value in lengths {
            post = post.header("Content-Length", value);
        }
        let resp = f.send(post.body(b"hello")).await;
        assert_eq!(resp.status, 200, "{lengths:?}: {}", resp.text());
    }
    let seen = f.app.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.headers_all("content-length"), ["5"], "{:?}", r.headers);
        assert_eq!(r.body, b"hello");
    }
}

/// A refused HTTP/2 request gives its place under the listener's request ceiling back once
/// its refusal is written, though its body may then be read and dropped: streams that announce
/// a body and send none (no key needed) held their places for the 2 s the discard allows, and
/// a few connections of them locked every peer out with 503 `overloaded`. (Found reviewing the
/// discard.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_http2_streams_waiting_to_send_hold_no_place() {
    let f = Fixture::with(Options {
        listen: "max_connections: 4".into(),
        ..Options::default()
    });
    let (client, driver) = h2_raw(f.addr, f.client.clone(), HOST).await.unwrap();
    let mut client = client.ready().await.unwrap();
    let mut held = Vec::new();
    for i in 0..4 {
        let req = http::Request::post(format!("https://{HOST}/api/upload/{i}"))
            .header("content-length", "1000")
            .body(())
            .unwrap();
        let (answer, send) = client.send_request(req, false).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .expect("refused at once")
            .unwrap();
        assert_eq!(answer.status(), 401);
        // The body is never sent; the stream stays open from the client's side.
        held.push((answer, send));
    }
    let resp = f
        .send(RawRequest::new("GET", "/public/x").header("Host", f.authority()))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    drop(held);
    driver.abort();
}

/// RFC 9421's own examples of how components are written into the signature base (its §2.1,
/// §2.1.1–3, §2.2 and §2.2.8, as `conformance/rfc9421-ed25519.md` §4 copies them), each sent
/// to the real listener signed by the RFC's test key over exactly the lines the RFC gives: what
/// the listener hands the engine must rebuild those lines, byte for byte, or the signature
/// fails. Other implementations build their bases from the same text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rfcs_own_component_examples_verify_through_the_listener() {
    /// B.1.4 `test-key-ed25519`: the seed, and the public key as SPKI.
    const SEED: &str = "9f8362f87a484a954e6e740c5b4c0e84229139a20aa8ab56ff66586f6a7d29c5";
    const SPKI: &str = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";
    const KEY_ID: &str = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";
    let f = Fixture::with(Options {
        hosts: &["www.example.com"],
        // Goes on the end of the fixture's `peers:` list.
        extra: format!("  - {{ name: RFC, public_key: \"{SPKI}\" }}\n"),
        ..Options::default()
    });
    let seed: Vec<u8> = (0..SEED.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&SEED[i..i + 2], 16).unwrap())
        .collect();
    let key = SigningKey::from_bytes(&seed.try_into().unwrap());

    // Signs `lines` (component identifier, value) as the RFC writes them, and sends `target`
    // with `fields` and `body`.
    let send = |method: &str,
                target: &str,
                fields: &[(&str, &str)],
                lines: &[(&str, &str)],
                body: &[u8]| {
        let components: Vec<&str> = lines.iter().map(|(c, _)| *c).collect();
        let params = format!(
            "({});created={};keyid=\"{KEY_ID}\";nonce=\"{}\"",
            components.join(" "),
            now(),
            Signer::nonce()
        );
        let mut base = String::new();
        for (component, value) in lines {
            base.push_str(&format!("{component}: {value}\n"));
        }
        base.push_str(&format!("\"@signature-params\": {params}"));
        let signature = ed25519_dalek::Signer::sign(&key, base.as_bytes());
        let signature = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            signature.to_bytes(),
        );
        let mut req = RawRequest::new(method, target);
        for (name, value) in fields {
            req = req.header(name, value);
        }
        req.header("Signature-Input", format!("rfc={params}"))
            .header("Signature", format!("rfc=:{signature}:"))
            .body(body)
    };
    let target = [
        ("\"@method\"", "GET"),
        ("\"@authority\"", "www.example.com"),
        ("\"@path\"", "/"),
        ("\"@query\"", "?"),
    ];
    let with_target =
        |lines: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
            target.iter().chain(lines).copied().collect()
        };
    // §2.1 (obsolete line folding aside: the HTTP parser refuses it, as RFC 9112 allows).
    let fields_21 = [
        ("Host", "www.example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:56 GMT"),
        ("X-OWS-Header", "  Leading and trailing whitespace.  "),
        ("Cache-Control", "max-age=60"),
        ("Cache-Control", "   must-revalidate"),
        ("Example-Dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
        ("X-Empty-Header", ""),
    ];
    let fields_22 = [
        ("Host", "www.example.com"),
        ("Example-Dict", " a=1, b=2;x=1;y=2, c=(a   b    c), d"),
        ("Example-Header", "value, with, lots"),
        ("Example-Header", "of, commas"),
    ];
    let one_line = [
        ("Host", "www.example.com"),
        ("Example-Header", "value, with, lots, of, commas"),
    ];
    let query_1 = "/parameters?var=this%20is%20a%20big%0Amultiline%20value&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something";
    let query_2 = "/path?param=value&foo=bar&baz=batman&qux=";
    // RFC 9530 `sha-256` of the body `x`.
    let digest = "sha-256=:LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE=:";
    let host = [("Host", "www.example.com")];
    // (field or component, value) pairs.
    type Pairs = Vec<(&'static str, &'static str)>;
    let cases: Vec<(&str, &str, Pairs, Pairs, &[u8])> = vec![
        (
            "GET",
            "/",
            fields_21.to_vec(),
            with_target(&[
                ("\"host\"", "www.example.com"),
                ("\"date\"", "Tue, 20 Apr 2021 02:07:56 GMT"),
                ("\"x-ows-header\"", "Leading and trailing whitespace."),
                ("\"cache-control\"", "max-age=60, must-revalidate"),
                ("\"example-dict\"", "a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
                ("\"x-empty-header\"", ""),
            ]),
            b"",
        ),
        (
            "GET",
            "/",
            fields_21.to_vec(),
            with_target(&[("\"example-dict\";sf", "a=1, b=2;x=1;y=2, c=(a b c)")]),
            b"",
        ),
        (
            "GET",
            "/",
            fields_22.to_vec(),
            with_target(&[
                ("\"example-dict\";key=\"a\"", "1"),
                ("\"example-dict\";key=\"d\"", "?1"),
                ("\"example-dict\";key=\"b\"", "2;x=1;y=2"),
                ("\"example-dict\";key=\"c\"", "(a b c)"),
                (
                    "\"example-header\";bs",
                    ":dmFsdWUsIHdpdGgsIGxvdHM=:, :b2YsIGNvbW1hcw==:",
                ),
            ]),
            b"",
        ),
        (
            "GET",
            "/",
            one_line.to_vec(),
            with_target(&[(
                "\"example-header\";bs",
                ":dmFsdWUsIHdpdGgsIGxvdHMsIG9mLCBjb21tYXM=:",
            )]),
            b"",
        ),
        (
            "GET",
            query_1,
            host.to_vec(),
            vec![
                ("\"@method\"", "GET"),
                ("\"@authority\"", "www.example.com"),
                ("\"@path\"", "/parameters"),
                ("\"@query\"", &query_1[11..]),
                (
                    "\"@query-param\";name=\"var\"",
                    "this%20is%20a%20big%0Amultiline%20value",
                ),
                ("\"@query-param\";name=\"bar\"", "with%20plus%20whitespace"),
                (
                    "\"@query-param\";name=\"fa%C3%A7ade%22%3A%20\"",
                    "something",
                ),
            ],
            b"",
        ),
        (
            "GET",
            query_2,
            host.to_vec(),
            vec![
                ("\"@method\"", "GET"),
                (
                    "\"@target-uri\"",
                    "https://www.example.com/path?param=value&foo=bar&baz=batman&qux=",
                ),
                ("\"@query-param\";name=\"baz\"", "batman"),
                ("\"@query-param\";name=\"qux\"", ""),
                ("\"@query-param\";name=\"param\"", "value"),
            ],
            b"",
        ),
        // §2.2's derived components, over HTTPS (`identity.scheme`'s default), with a body
        // (`x`) and its digest.
        (
            "POST",
            "/path?param=value",
            vec![
                ("Host", "www.example.com"),
                ("Content-Digest", digest),
                ("Content-Length", "1"),
            ],
            vec![
                ("\"@method\"", "POST"),
                (
                    "\"@target-uri\"",
                    "https://www.example.com/path?param=value",
                ),
                ("\"@authority\"", "www.example.com"),
                ("\"@scheme\"", "https"),
                ("\"@request-target\"", "/path?param=value"),
                ("\"@path\"", "/path"),
                ("\"@query\"", "?param=value"),
                ("\"content-digest\"", digest),
            ],
            b"x",
        ),
    ];
    for (method, target, fields, lines, body) in &cases {
        f.app.clear();
        let resp = f.send(send(method, target, fields, lines, body)).await;
        let what = lines.last().unwrap().0;
        assert_eq!(resp.status, 200, "{target} {what}: {}", resp.text());
        let seen = f.app.last().expect("the app got it");
        assert_eq!(seen.header("x-peer-key-id"), Some(KEY_ID), "{what}");
        assert_eq!(seen.header("x-peer-name"), Some("RFC"), "{what}");
    }
    // The same lines signed over a base one byte off (a value the RFC would write otherwise)
    // fail: the check above can.
    let (method, target, fields, mut lines, body) = cases.into_iter().next().unwrap();
    if let Some(line) = lines.iter_mut().find(|(c, _)| *c == "\"x-ows-header\"") {
        line.1 = "  Leading and trailing whitespace.  ";
    }
    let resp = f.send(send(method, target, &fields, &lines, body)).await;
    assert_problem(&resp, 401, "bad_signature");
}
