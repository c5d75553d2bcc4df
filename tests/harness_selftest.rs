//! Tests of the integration-test harness itself (tests/support), without the gateway: the echo
//! app records exactly, the clients send exactly and parse correctly, and TLS (HTTP/1.1 and
//! HTTP/2) works end to end through a small test-only TLS terminator.

mod support;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::CertificateError;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

const WAIT: Duration = Duration::from_secs(5);

fn get(target: &str) -> Vec<u8> {
    RawRequest::new("GET", target)
        .header("Host", "app.test")
        .to_bytes()
}

#[test]
fn builder_writes_exact_bytes() {
    let plain = RawRequest::new("POST", "/api/x?y=1")
        .header("Host", "alice.test")
        .header("X_Peer_Id", "evil")
        .header("x-dup", "1")
        .header("X-Dup", "2")
        .body("hello")
        .content_length()
        .to_bytes();
    assert_eq!(
        plain,
        b"POST /api/x?y=1 HTTP/1.1\r\nHost: alice.test\r\nX_Peer_Id: evil\r\nx-dup: 1\r\n\
          X-Dup: 2\r\nContent-Length: 5\r\n\r\nhello"
    );

    let no_length = RawRequest::new("GET", "/").body("xy").to_bytes();
    assert_eq!(no_length, b"GET / HTTP/1.1\r\n\r\nxy");

    let chunked = RawRequest::new("PUT", "/u")
        .header("Host", "h")
        .body("abcdefgh")
        .chunked()
        .to_bytes();
    assert_eq!(
        chunked,
        b"PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n3\r\ndef\r\n2\r\ngh\r\n0\r\n\r\n"
    );

    let empty_chunked = RawRequest::new("POST", "/").chunked().to_bytes();
    assert_eq!(
        empty_chunked,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );

    let folded = RawRequest::new("GET", "/")
        .version("HTTP/1.0")
        .header("X-Long", "a\r\n b")
        .to_bytes();
    assert_eq!(folded, b"GET / HTTP/1.0\r\nX-Long: a\r\n b\r\n\r\n");
}

#[tokio::test]
async fn echo_records_chunked_post_with_duplicate_headers_exactly() {
    let app = EchoApp::start();
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let request = RawRequest::new("POST", "/api/x?y=1&z=%2F")
        .header("Host", "app.test")
        .header("X-Dup", "first")
        .header("content-type", "application/octet-stream")
        .header("x-dup", "second")
        .header("X-DUP", "third, with comma")
        .body(&body)
        .chunked_in(4);
    let resp = raw_request(app.addr(), None, &request.to_bytes())
        .await
        .unwrap();

    assert_eq!(resp.status, 200);
    assert_eq!(resp.version, "HTTP/1.1");
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    assert_eq!(resp.header("X-ECHO"), Some("1"));
    let json = resp.json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["path"], "/api/x?y=1&z=%2F");
    assert_eq!(json["body_len"], 5000);

    let recorded = app.wait_for(1, WAIT).await;
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/api/x?y=1&z=%2F");
    assert_eq!(r.path(), "/api/x");
    assert_eq!(r.query(), Some("y=1&z=%2F"));
    assert_eq!(r.version, "HTTP/1.1");
    assert!(r.chunked);
    assert_eq!(r.body, body);
    let expected: Vec<(String, String)> = [
        ("Host", "app.test"),
        ("X-Dup", "first"),
        ("content-type", "application/octet-stream"),
        ("x-dup", "second"),
        ("X-DUP", "third, with comma"),
        ("Transfer-Encoding", "chunked"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(r.headers, expected);
    assert_eq!(
        r.headers_all("x-dup"),
        ["first", "second", "third, with comma"]
    );
    assert_eq!(r.header("HOST"), Some("app.test"));
    assert!(r.trailers.is_empty());
}

#[tokio::test]
async fn echo_keeps_raw_head_target_and_odd_headers() {
    let app = EchoApp::start();
    let request = RawRequest::new("PATCH", "/api/%2e%2e/admin?a=%20b")
        .header("Host", "app.test")
        .header("X_Peer_Id", "underscore")
        .header("X-Folded", "one\r\n two")
        .header("X-Empty", "")
        .body(b"{\"k\":1}")
        .content_length();
    let bytes = request.to_bytes();
    let resp = raw_request(app.addr(), None, &bytes).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/api/%2e%2e/admin?a=%20b");

    let r = app.last().expect("recorded");
    assert_eq!(r.target, "/api/%2e%2e/admin?a=%20b");
    assert!(!r.chunked);
    assert_eq!(r.body_str(), "{\"k\":1}");
    assert_eq!(r.header("x_peer_id"), Some("underscore"));
    assert_eq!(r.header("X-Peer-Id"), None);
    assert_eq!(r.header("x-folded"), Some("one two"));
    assert_eq!(r.header("x-empty"), Some(""));
    assert_eq!(r.header("content-length"), Some("7"));
    let head_len = bytes.len() - 7;
    assert_eq!(r.raw_head, &bytes[..head_len]);
}

#[tokio::test]
async fn echo_keeps_alive_for_two_requests_on_one_connection() {
    let app = EchoApp::start();
    let mut conn = RawConn::connect(app.addr(), None).await.unwrap();
    let first = conn.request(&get("/one")).await.unwrap();
    assert_eq!(first.json()["path"], "/one");
    assert_eq!(first.header("connection"), None);
    let second = conn
        .request(
            &RawRequest::new("POST", "/two")
                .header("Host", "app.test")
                .body("abc")
                .content_length()
                .to_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(second.json()["body_len"], 3);

    // HEAD: a content-length but no body, and the connection stays usable.
    let head = conn
        .request(
            &RawRequest::new("HEAD", "/three")
                .header("Host", "app.test")
                .to_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    // `Connection: close` is honoured: answered with `connection: close`, then closed.
    let last = conn
        .request(
            &RawRequest::new("GET", "/four")
                .header("Host", "app.test")
                .header("Connection", "close")
                .to_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(last.header("connection"), Some("close"));
    let after = conn.read_response(false).await.unwrap_err();
    assert_eq!(after.kind(), io::ErrorKind::UnexpectedEof);

    let recorded = app.wait_for(4, WAIT).await;
    let targets: Vec<&str> = recorded.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/one", "/two", "/three", "/four"]);
    assert!(recorded.iter().all(|r| r.conn == recorded[0].conn));
    assert_eq!(app.connections(), 1);

    // Pipelined: two requests written at once, two answers in order.
    let mut conn = RawConn::connect(app.addr(), None).await.unwrap();
    let mut both = get("/p1");
    both.extend_from_slice(&get("/p2"));
    conn.send(&both).await.unwrap();
    assert_eq!(
        conn.read_response(false).await.unwrap().json()["path"],
        "/p1"
    );
    assert_eq!(
        conn.read_response(false).await.unwrap().json()["path"],
        "/p2"
    );
    assert_eq!(app.connections(), 2);
}

#[tokio::test]
async fn wait_for_sees_concurrent_requests_and_clear_resets() {
    let app = EchoApp::start();
    let addr = app.addr();
    let sender = tokio::spawn(async move {
        for i in 0..3 {
            raw_request(addr, None, &get(&format!("/n{i}")))
                .await
                .unwrap();
        }
    });
    let recorded = app.wait_for(3, WAIT).await;
    assert_eq!(recorded.len(), 3);
    sender.await.unwrap();
    assert_eq!(app.count(), 3);
    app.clear();
    assert_eq!(app.count(), 0);
    assert!(app.requests().is_empty());
    raw_request(addr, None, &get("/again")).await.unwrap();
    assert_eq!(app.wait_for(1, WAIT).await[0].target, "/again");
}

#[tokio::test]
#[should_panic(expected = "waited")]
async fn wait_for_fails_the_test_when_requests_do_not_come() {
    let app = EchoApp::start();
    app.wait_for(1, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn slow_app_records_on_arrival_and_answers_after_the_delay() {
    let delay = Duration::from_millis(400);
    let app = EchoApp::start_with(Handler::Delay(delay));
    let addr = app.addr();
    let started = Instant::now();
    let pending = tokio::spawn(async move { raw_request(addr, None, &get("/slow")).await });
    app.wait_for(1, WAIT).await;
    assert!(!pending.is_finished(), "answered before the delay");
    let resp = pending.await.unwrap().unwrap();
    assert!(started.elapsed() >= delay);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/slow");

    // A client that gives up first gets a timeout, not a hang.
    let mut conn = RawConn::connect(addr, None).await.unwrap();
    conn.set_timeout(Duration::from_millis(50));
    let err = conn.request(&get("/too-slow")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn closing_app_records_the_request_then_closes_without_answer() {
    let app = EchoApp::start_with(Handler::CloseWithoutAnswer);
    let body = vec![b'z'; 70_000];
    let request = RawRequest::new("POST", "/gone")
        .header("Host", "app.test")
        .body(&body)
        .content_length();
    let err = raw_request(app.addr(), None, &request.to_bytes())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    let recorded = app.wait_for(1, WAIT).await;
    assert_eq!(recorded[0].body, body);
}

#[tokio::test]
async fn custom_handler_answers_what_it_returns() {
    let app = EchoApp::start_with(Handler::custom(|req| {
        Reply::new(503)
            .header("Retry-After", "1")
            .header("X-Seen", &req.method)
            .header("x-seen", "twice")
            .body("busy")
    }));
    let resp = raw_request(app.addr(), None, &get("/c")).await.unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.reason, "Service Unavailable");
    assert_eq!(resp.headers_all("x-seen"), ["GET", "twice"]);
    assert_eq!(resp.header("content-length"), Some("4"));
    assert_eq!(resp.text(), "busy");
}

#[tokio::test]
async fn dead_addr_refuses_and_free_port_is_bindable() {
    let err = raw_request(dead_addr(), None, &get("/")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("free port can be bound");
}

/// A one-connection server that reads the request head, writes `answer`, then either closes or
/// holds the connection open (without reading more) until the test ends.
async fn canned_server(answer: &'static [u8], close: bool) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            head.push(byte[0]);
        }
        stream.write_all(answer).await.unwrap();
        if close {
            stream.shutdown().await.unwrap();
        } else {
            std::future::pending::<()>().await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn client_parses_chunked_close_delimited_and_interim_responses() {
    let (addr, task) = canned_server(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
          Set-Cookie: a=1\r\nset-cookie: b=2\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia \r\n\
          0\r\nX-Trailer: t\r\n\r\n",
        false,
    )
    .await;
    let resp = raw_request(addr, None, &get("/")).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.reason, "OK");
    assert_eq!(resp.interim, [(100, Vec::new())]);
    assert_eq!(resp.text(), "Wikipedia ");
    assert_eq!(resp.headers_all("SET-COOKIE"), ["a=1", "b=2"]);
    assert_eq!(resp.trailers, [("X-Trailer".to_string(), "t".to_string())]);
    task.abort();

    let (addr, task) = canned_server(
        b"HTTP/1.0 502 Bad Gateway\r\ncontent-type: application/problem+json\r\n\r\n{\"status\":502}",
        true,
    )
    .await;
    let resp = raw_request(addr, None, &get("/")).await.unwrap();
    assert_eq!(resp.version, "HTTP/1.0");
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["status"], 502);
    task.await.unwrap();

    let (addr, task) =
        canned_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true).await;
    let err = raw_request(addr, None, &get("/")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    task.await.unwrap();
}

#[tokio::test]
async fn client_returns_an_early_answer_while_the_upload_is_unread() {
    // The server answers 413 after the head and never reads the 8 MiB body: the client must
    // return the answer rather than block writing.
    let (addr, task) = canned_server(
        b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        false,
    )
    .await;
    let request = RawRequest::new("POST", "/upload")
        .header("Host", "app.test")
        .body(vec![0u8; 8 * 1024 * 1024])
        .content_length();
    let resp = raw_request(addr, None, &request.to_bytes()).await.unwrap();
    assert_eq!(resp.status, 413);
    task.abort();
}

#[tokio::test]
async fn silent_server_times_out_instead_of_hanging() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conn = RawConn::connect(addr, None).await.unwrap();
    conn.set_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let err = conn.request(&get("/")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(listener);
}

/// A test-only TLS terminator in front of a plain HTTP/1.1 backend: HTTP/1.1 connections are
/// spliced byte for byte; HTTP/2 connections (ALPN `h2`) are served by hyper and each request
/// is forwarded as an HTTP/1.1 request built with `RawRequest`.
async fn tls_front(cert: &IssuedCert, alpn: &[&[u8]], backend: SocketAddr) -> SocketAddr {
    let acceptor = TlsAcceptor::from(cert.server_config(alpn));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let service = hyper::service::service_fn(move |req| forward(req, backend));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                } else if let Ok(mut plain) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    addr
}

async fn forward(
    req: hyper::Request<Incoming>,
    backend: SocketAddr,
) -> io::Result<hyper::Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut raw = RawRequest::new(parts.method.as_str(), target);
    if let Some(authority) = parts.uri.authority() {
        raw = raw.header("Host", authority.as_str());
    }
    for (name, value) in &parts.headers {
        if name != hyper::header::CONTENT_LENGTH {
            raw = raw.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = raw_request(backend, None, &raw.body(&body).content_length().to_bytes()).await?;
    let mut resp = hyper::Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        if !name.eq_ignore_ascii_case("connection") {
            resp = resp.header(name.as_str(), value.as_str());
        }
    }
    resp.body(Full::new(Bytes::from(answer.body)))
        .map_err(io::Error::other)
}

#[tokio::test]
async fn tls_http1_round_trip_with_sni() {
    let ca = TestCa::new();
    let cert = ca.issue(&["alice.test"]);
    let app = EchoApp::start();
    let front = tls_front(&cert, &[b"http/1.1"], app.addr()).await;

    let request = RawRequest::new("POST", "/api/tls?q=1")
        .header("Host", "alice.test")
        .header("X-Dup", "1")
        .header("X-Dup", "2")
        .body("over tls")
        .chunked();
    let tls = Some((ca.client_config(&[b"http/1.1"]), "alice.test"));
    let resp = raw_request(front, tls, &request.to_bytes()).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/api/tls?q=1");
    assert_eq!(resp.json()["body_len"], 8);

    let r = app.wait_for(1, WAIT).await.remove(0);
    assert_eq!(r.headers_all("x-dup"), ["1", "2"]);
    assert_eq!(r.body_str(), "over tls");

    // The certificate also carries 127.0.0.1 as an IP SAN; ALPN is reported.
    let conn = RawConn::connect(front, Some((ca.client_config(&[b"http/1.1"]), "127.0.0.1")))
        .await
        .unwrap();
    assert_eq!(conn.alpn(), Some(&b"http/1.1"[..]));

    // A name the certificate does not carry is refused.
    let err = raw_request(front, Some((ca.client_config(&[]), "bob.test")), &get("/"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err}"
    );
}

#[tokio::test]
async fn h2_round_trip_with_alpn() {
    let ca = TestCa::new();
    let cert = ca.issue(&["alice.test", "localhost"]);
    let app = EchoApp::start();
    let front = tls_front(&cert, &[b"h2", b"http/1.1"], app.addr()).await;

    // The config offers no ALPN: h2_request offers h2 itself.
    let resp = h2_request(
        front,
        ca.client_config(&[]),
        "alice.test",
        "POST",
        "/api/h2?x=%41",
        &[
            ("content-type", "text/plain"),
            ("X-Multi", "a"),
            ("x-multi", "b"),
        ],
        b"h2 body",
    )
    .await
    .unwrap();
    assert_eq!(resp.version, "HTTP/2");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-echo"), Some("1"));
    assert_eq!(resp.json()["path"], "/api/h2?x=%41");
    assert_eq!(resp.json()["body_len"], 7);

    let r = app.wait_for(1, WAIT).await.remove(0);
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("host"), Some("alice.test"));
    assert_eq!(r.headers_all("x-multi"), ["a", "b"]);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.body_str(), "h2 body");

    // An absolute URI chooses :authority (here with a port).
    let resp = h2_request(
        front,
        ca.client_config(&[b"h2"]),
        "alice.test",
        "GET",
        "https://alice.test:8443/p",
        &[],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        app.wait_for(2, WAIT).await[1].header("host"),
        Some("alice.test:8443")
    );
}

#[tokio::test]
async fn h2_request_fails_when_the_server_does_not_select_h2() {
    let ca = TestCa::new();
    let cert = ca.issue(&["alice.test"]);
    let app = EchoApp::start();
    let front = tls_front(&cert, &[b"http/1.1"], app.addr()).await;
    let err = h2_request(
        front,
        ca.client_config(&[b"h2", b"http/1.1"]),
        "alice.test",
        "GET",
        "/",
        &[],
        b"",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("ALPN"), "{err}");
    assert_eq!(app.count(), 0);
}

fn unknown_issuer() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_the_handshake() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let cert = ca.issue(&["alice.test"]);
    let app = EchoApp::start();
    let front = tls_front(&cert, &[b"h2", b"http/1.1"], app.addr()).await;

    let err = raw_request(
        front,
        Some((other.client_config(&[]), "alice.test")),
        &get("/"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert_eq!(rustls_error(&err), Some(&unknown_issuer()), "{err}");

    let err = h2_request(
        front,
        other.client_config(&[b"h2"]),
        "alice.test",
        "GET",
        "/",
        &[],
        b"",
    )
    .await
    .unwrap_err();
    assert_eq!(rustls_error(&err), Some(&unknown_issuer()), "{err}");
    assert_eq!(app.count(), 0);

    // The right CA still works on the same terminator.
    let ok = raw_request(
        front,
        Some((ca.client_config(&[]), "alice.test")),
        &get("/ok"),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
}

#[test]
fn write_files_writes_pem_the_gateway_can_load() {
    let ca = TestCa::new();
    let cert = ca.issue(&["alice.test"]);
    assert_eq!(cert.names, ["alice.test", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, ca_path) = cert.write_files(&dir.path().join("tls"));

    let cert_pem = std::fs::read(&cert_path).unwrap();
    let key_pem = std::fs::read_to_string(&key_path).unwrap();
    let ca_pem = std::fs::read(&ca_path).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");

    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chain, std::slice::from_ref(&cert.cert_der));
    let roots: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&ca_pem)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(roots, std::slice::from_ref(ca.ca_der()));
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));

    // The files make a working server config (the key matches the certificate).
    rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let _: Arc<rustls::ClientConfig> = ca.client_config(&[b"h2"]);
}
