//! What the running binary writes to its log when clients misbehave: a line for what an
//! operator can act on, not one per connection a scanner opens.

mod ops;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use ops::{eventually, signed_post_head, Binary, Key, Setup, TlsBinary};
use support::{wait_listening, EchoApp};

/// A port scanner, or a load balancer's TCP health check, opens connections to the TLS
/// listener and closes them without a handshake. The binary writes at most one line a second
/// about failed handshakes, and the next one says how many were left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tls_handshakes_are_logged_once_a_second_with_a_count() {
    let app = EchoApp::start();
    let TlsBinary { setup, binary, .. } = TlsBinary::run(app.addr());

    for _ in 0..50 {
        drop(std::net::TcpStream::connect(setup.inbound).unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    drop(std::net::TcpStream::connect(setup.inbound).unwrap());
    let (log, _) = eventually(Duration::from_secs(10), "a line with the count", || async {
        let log = binary.log();
        log.lines()
            .any(|l| l.contains("TLS handshake") && l.contains("more since the last line)"))
            .then_some(log)
    })
    .await;
    let lines = log.lines().filter(|l| l.contains("handshake")).count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} handshake lines for 52 failed handshakes:\n{log}"
    );
}

/// A client that sends a signed request's head and cuts its body off with a reset made Pingora
/// log an error for the request ("Fail to filter request: ... ReadError"). Any allowlisted peer,
/// or the app on the outbound side, can do that for every request, and it is the client's
/// doing: each such request has its own line, `outcome=aborted`, and nothing at ERROR or WARN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_cut_off_by_a_reset_are_logged_as_aborted_requests_not_errors() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(app.addr(), &[&bob], "");
    let binary = Binary::run(&setup);
    wait_listening(setup.inbound);
    let body = vec![b'x'; 4000];
    let head = || signed_post_head(&setup.authority(), &bob, "/upload", &body).to_bytes();
    for _ in 0..30 {
        cut_off(setup.inbound, &head(), &body[..100]).await;
    }
    let aborted = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains(&format!(
                    "inbound POST \"/upload\" peer={} outcome=aborted",
                    bob.short_id()
                ))
            })
            .count()
    };
    let (log, _) = eventually(Duration::from_secs(10), "30 request lines", || async {
        let log = binary.log();
        (aborted(&log) == 30).then_some(log)
    })
    .await;
    assert!(
        !log.lines()
            .any(|l| l.contains(" ERROR ") || l.contains(" WARN ")),
        "{log}"
    );
    assert!(app.requests().is_empty(), "a cut-off body reached the app");
}

/// With the app down, every request to a public route fails the same way, and anyone can send
/// them: Pingora logged an ERROR line for each ("Fail to proxy: Upstream ..."), 1 177 lines in
/// two seconds in an audit. Each request has its own line (`outcome=error`), and the failure is
/// told once a second, with a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_app_behind_a_public_route_is_told_once_a_second() {
    let down = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let setup = Setup::new(
        down,
        &[],
        "routes:\n  - { path: \"/public/*\", access: public }\n  - { path: \"/*\", access: peers }",
    );
    let binary = Binary::run(&setup);
    wait_listening(setup.inbound);
    for i in 0..40 {
        let req = support::RawRequest::new("GET", format!("/public/{i}"))
            .header("Host", setup.authority());
        let resp = support::raw_request(setup.inbound, None, &req.to_bytes())
            .await
            .unwrap();
        assert_eq!(resp.status, 502, "{}", resp.text());
    }
    let (log, _) = eventually(Duration::from_secs(10), "40 request lines", || async {
        let log = binary.log();
        (log.lines().filter(|l| l.contains("outcome=error")).count() == 40).then_some(log)
    })
    .await;
    assert!(!log.lines().any(|l| l.contains(" ERROR ")), "{log}");
    let warnings = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert!((1..=3).contains(&warnings), "{warnings} warnings:\n{log}");
}

/// Sends `head` and `part` of the body it announces, then resets the connection.
async fn cut_off(addr: SocketAddr, head: &[u8], part: &[u8]) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head).await.unwrap();
    conn.write_all(part).await.unwrap();
    // Time for the gateway to verify the head and wait for the rest of the body.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A reset, not a close.
    conn.set_zero_linger().unwrap();
}

/// A peer that breaks off every answer (a head announcing 20 bytes, then 10 and a close) made
/// a warning for each request the app sent it. Each request has its own line; the failure is
/// told once a second, with a count, as the app's failures are on the inbound side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_breaking_off_its_answers_is_told_once_a_second() {
    let (setup, binary, _app) = alice_calling_a_plain_peer(|mut conn| async move {
        if support::read_request_head(&mut conn).await.is_some() {
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789")
                .await;
            let _ = conn.shutdown().await;
        }
    })
    .await;
    for i in 0..30 {
        let req = support::RawRequest::new("GET", format!("/peers/bob/{i}"))
            .header("Host", setup.outbound.to_string());
        // The connection is cut: the answer is a short body, or an error.
        let _ = support::raw_request(setup.outbound, None, &req.to_bytes()).await;
    }
    let (log, _) = eventually(Duration::from_secs(10), "30 request lines", || async {
        let log = binary.log();
        (log.lines()
            .filter(|l| l.contains("outbound GET \"/peers/bob/") && l.contains("outcome=error"))
            .count()
            == 30)
            .then_some(log)
    })
    .await;
    assert!(!log.lines().any(|l| l.contains(" ERROR ")), "{log}");
    let warnings = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert!((1..=3).contains(&warnings), "{warnings} warnings:\n{log}");
}

/// A peer that cannot be reached fails every call the app makes to it, and the app gets a 502
/// saying so; the operator, who does not see those, is told in the log, once a second with a
/// count. A peer that does not speak TLS where its URL says `https://` is told apart, with
/// what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_be_reached_is_told_once_a_second() {
    let (setup, binary, _app) = alice_calling_a_plain_peer(|_| async {}).await;
    let dead = support::dead_addr();
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut conn, _)) = plain.accept().await {
            let _ = conn
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let (carol, dave) = (Key::new("Carol"), Key::new("Dave"));
    let text = std::fs::read_to_string(&setup.peers).unwrap();
    ops::write_by_rename(
        &setup.peers,
        &format!(
            "{text}{}    url: http://{dead}\n{}    url: https://{plain_addr}\n",
            carol.entry(),
            dave.entry()
        ),
    );
    let call = |peer: &'static str, i: usize| {
        let req = support::RawRequest::new("GET", format!("/peers/{peer}/{i}"))
            .header("Host", setup.outbound.to_string());
        let addr = setup.outbound;
        async move {
            support::raw_request(addr, None, &req.to_bytes())
                .await
                .unwrap()
        }
    };
    eventually(
        Duration::from_secs(10),
        "Carol on the allowlist",
        || async { (call("carol", 0).await.status == 502).then_some(()) },
    )
    .await;
    for i in 1..30 {
        support::assert_problem(&call("carol", i).await, 502, "upstream_unreachable");
    }
    let resp = call("dave", 0).await;
    support::assert_problem(&resp, 502, "upstream_unreachable");
    assert!(
        resp.text().contains("does not speak TLS"),
        "{}",
        resp.text()
    );
    let (log, _) = eventually(Duration::from_secs(10), "the request lines", || async {
        let log = binary.log();
        (log.lines()
            .filter(|l| l.contains("outbound GET \"/peers/") && l.contains("outcome=error"))
            .count()
            >= 31)
            .then_some(log)
    })
    .await;
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warnings.iter().any(|l| l.contains("cannot be reached")),
        "{log}"
    );
    assert!(warnings.len() <= 4, "{} warnings:\n{log}", warnings.len());
    assert!(!log.lines().any(|l| l.contains(" ERROR ")), "{log}");
}

/// A client that leaves after an interim answer (the app's 103, on a signed route) got no
/// answer: its line says `status=0`, as for any request that got none. It said `status=103`
/// (found by an audit): Pingora counts an interim head as the response written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_after_an_interim_answer_is_logged_with_no_status() {
    use tokio::io::AsyncReadExt;

    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = app.accept().await {
            tokio::spawn(async move {
                if support::read_request_head(&mut conn).await.is_some() {
                    let _ = conn.write_all(b"HTTP/1.1 103 Early Hints\r\n\r\n").await;
                    // Then nothing, until peergate lets the connection go.
                    let _ = conn.read(&mut [0u8; 64]).await;
                }
            });
        }
    });
    let bob = Key::new("Bob");
    let setup = Setup::new(app_addr, &[&bob], "");
    let binary = Binary::run(&setup);
    wait_listening(setup.inbound);
    let mut conn = tokio::net::TcpStream::connect(setup.inbound).await.unwrap();
    let req = ops::signed_get(&setup.authority(), &bob, "/api/early");
    conn.write_all(&req.to_bytes()).await.unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        support::read_request_head(&mut conn),
    )
    .await
    .expect("the 103 within 10 s")
    .expect("closed before the 103");
    assert!(got.starts_with(b"HTTP/1.1 103"), "{got:?}");
    drop(conn);
    let (line, _) = eventually(Duration::from_secs(10), "the request's line", || async {
        binary
            .log()
            .lines()
            .find(|l| l.contains("inbound GET \"/api/early\""))
            .map(str::to_string)
    })
    .await;
    assert!(line.contains("outcome=aborted"), "{line}");
    assert!(line.contains(" status=0 "), "{line}");
}

/// A running gateway (the binary) whose one peer, Bob, is a plain-HTTP listener handing each
/// connection to `serve`. The echo app is returned to be kept alive.
async fn alice_calling_a_plain_peer<F, Fut>(serve: F) -> (Setup, Binary, EchoApp)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((conn, _)) = peer.accept().await {
            tokio::spawn(serve(conn));
        }
    });
    let app = EchoApp::start();
    let setup = Setup::new(app.addr(), &[], "");
    let bob = Key::new("Bob");
    std::fs::write(
        &setup.peers,
        format!("peers:\n{}    url: http://{peer_addr}\n", bob.entry()),
    )
    .unwrap();
    let binary = Binary::run(&setup);
    wait_listening(setup.outbound);
    (setup, binary, app)
}
