//! Graceful shutdown of the real binary: SIGTERM closes the listeners, lets the requests in
//! flight finish, and exits 0 as soon as they have, within the configured grace period.

mod ops;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ops::*;
use support::*;

/// Long enough that an exit before it proves peergate did not sleep through it.
const GRACE: &str = "shutdown: { grace_period: 10s, timeout: 2s }";

async fn ready(setup: &Setup, binary: &mut Binary) {
    wait_listening(setup.admin);
    let (_, _) = eventually(Duration::from_secs(5), "/readyz 200", || async {
        (setup.admin("/readyz").await.status == 200).then_some(())
    })
    .await;
    assert!(
        binary.child.try_wait().unwrap().is_none(),
        "{}",
        binary.log()
    );
}

/// Sends SIGTERM and waits up to `limit` for the exit, which must be 0; returns how long it took.
async fn terminate(binary: &mut Binary, limit: Duration) -> Duration {
    let sigterm = Instant::now();
    binary.signal("TERM");
    let status = binary
        .wait_exit(limit)
        .await
        .unwrap_or_else(|| panic!("still running {limit:?} after SIGTERM\n{}", binary.log()));
    assert_eq!(status.code(), Some(0), "{}", binary.log());
    sigterm.elapsed()
}

/// A setup whose peers file is long enough that starting takes a while (its keys are all
/// checked), and `peergate run` started on it.
fn slow_start() -> (Arc<Setup>, Binary, EchoApp) {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Arc::new(Setup::new(app.addr(), &[&bob], GRACE));
    let mut text = peers_yaml(&[&bob]);
    let mut seen = std::collections::HashSet::new();
    seen.insert(bob.public.short_id().to_string());
    while seen.len() < 3000 {
        let id = peergate::identity::Identity::generate();
        let public = id.public();
        if seen.insert(public.short_id().to_string()) {
            text.push_str(&format!(
                "  - name: \"p{}\"\n    public_key: \"{}\"\n",
                seen.len(),
                public.spki_base64()
            ));
        }
    }
    std::fs::write(&setup.peers, text).unwrap();
    let binary = Binary::run(&setup);
    (setup, binary, app)
}

/// Whether `pid` catches `signal` (its bit in `SigCgt` of /proc/<pid>/status).
fn catches(pid: u32, signal: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// A SIGHUP while `peergate run` still reads its files (`systemctl reload` right after
/// `start`) is held and acted on once the reloader runs, and a SIGTERM then stops it
/// gracefully with status 0; before, either ended the process (status 129 and 143; found by
/// an audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_while_starting_are_held() {
    for (signal, number) in [("HUP", libc::SIGHUP), ("TERM", libc::SIGTERM)] {
        let (setup, mut binary, _app) = slow_start();
        let pid = binary.child.id();
        let started = Instant::now();
        while !catches(pid, number) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "SIG{signal} never caught\n{}",
                binary.log()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        binary.signal(signal);
        if signal == "HUP" {
            ready(&setup, &mut binary).await;
            let log = binary.log();
            assert!(log.contains("SIGHUP while starting: reloading"), "{log}");
            terminate(&mut binary, Duration::from_secs(5)).await;
        } else {
            let status = binary
                .wait_exit(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("still running after SIGTERM\n{}", binary.log()));
            assert_eq!(status.code(), Some(0), "{}", binary.log());
            let log = binary.log();
            assert!(log.contains("came while starting"), "{log}");
        }
        eprintln!(
            "SIG{signal} held; caught {:?} after the start",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0() {
    let app = EchoApp::start_with(Handler::Delay(Duration::from_secs(1)));
    let bob = Key::new("Bob");
    let setup = Arc::new(Setup::new(app.addr(), &[&bob], GRACE));
    let mut binary = Binary::run(&setup);
    ready(&setup, &mut binary).await;

    let done = Arc::new(AtomicUsize::new(0));
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let (setup, bob, done) = (setup.clone(), bob.clone(), done.clone());
            tokio::spawn(async move {
                let resp = raw_request(
                    setup.inbound,
                    None,
                    &signed_get(&setup.authority(), &bob, &format!("/api/slow/{i}")).to_bytes(),
                )
                .await;
                if matches!(&resp, Ok(r) if r.status == 200) {
                    done.fetch_add(1, Ordering::SeqCst);
                }
                resp
            })
        })
        .collect();
    // All 20 have reached the app, which answers each a second after it arrived.
    app.wait_for(20, Duration::from_secs(5)).await;
    let sigterm = Instant::now();
    binary.signal("TERM");

    // New connections are refused while the 20 are still being answered.
    let (_, refused_after) = eventually(Duration::from_secs(2), "connections refused", || async {
        match tokio::net::TcpStream::connect(setup.inbound).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        done.load(Ordering::SeqCst) < 20,
        "the listener closed only after every request had been answered ({refused_after:?})"
    );
    // While it drains, the admin listener still answers: alive, not ready. (A liveness probe
    // refused during the drain would get the process killed in the middle of it.)
    let health = setup.admin("/healthz").await;
    assert_eq!(health.status, 200, "{}", binary.log());
    let ready = setup.admin("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("listeners"), "{}", ready.text());
    assert!(ready.text().contains("shutting down"), "{}", ready.text());

    for (i, request) in requests.into_iter().enumerate() {
        let resp = request
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("request {i} was cut: {e}\n{}", binary.log()));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        // The connection closes after this answer; a client told it would be kept would send
        // its next request into the close (RFC 9112 §9.6).
        assert_eq!(
            resp.header("connection"),
            Some("close"),
            "request {i}: {:?}",
            resp.headers
        );
    }
    let status = binary
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM\n{}", binary.log()));
    let took = sigterm.elapsed();
    assert_eq!(status.code(), Some(0), "{}", binary.log());
    assert!(
        took < Duration::from_secs(4),
        "exited {took:?} after SIGTERM: it should leave once the last request is done, not sleep the 10 s grace period"
    );
    eprintln!("connections refused {refused_after:?} after SIGTERM, exit after {took:?}");
    assert!(
        binary.log().contains("every request finished"),
        "{}",
        binary.log()
    );
}

/// SIGQUIT stops peergate as SIGTERM does (nginx's graceful stop): the request in flight is
/// answered and the process exits 0 once it is. Pingora's own handling of SIGQUIT, a graceful
/// upgrade, would hand the listening sockets to whoever listens on
/// `/tmp/pingora_upgrade.sock`, and retry for seconds when no one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_stops_gracefully_and_hands_no_socket_over() {
    let app = EchoApp::start_with(Handler::Delay(Duration::from_secs(1)));
    let bob = Key::new("Bob");
    let setup = Arc::new(Setup::new(app.addr(), &[&bob], GRACE));
    let mut binary = Binary::run(&setup);
    ready(&setup, &mut binary).await;
    let request = {
        let setup = setup.clone();
        let req = signed_get(&setup.authority(), &bob, "/api/slow").to_bytes();
        tokio::spawn(async move { raw_request(setup.inbound, None, &req).await })
    };
    app.wait_for(1, Duration::from_secs(5)).await;
    let sigquit = Instant::now();
    binary.signal("QUIT");
    let resp = request
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let status = binary
        .wait_exit(Duration::from_secs(8))
        .await
        .unwrap_or_else(|| panic!("still running 8 s after SIGQUIT\n{}", binary.log()));
    assert_eq!(status.code(), Some(0), "{}", binary.log());
    let took = sigquit.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "exited {took:?} after SIGQUIT"
    );
    let log = binary.log();
    assert!(log.contains("every request finished"), "{log}");
    assert!(!log.contains("sending socks"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_idle_exits_at_once_and_closes_idle_keep_alive_connections() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(app.addr(), &[&bob], GRACE);
    let mut binary = Binary::run(&setup);
    ready(&setup, &mut binary).await;

    let mut idle = RawConn::connect(setup.inbound, None).await.unwrap();
    let resp = idle
        .request(&signed_get(&setup.authority(), &bob, "/api/x").to_bytes())
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_ne!(resp.header("connection"), Some("close"));

    let took = terminate(&mut binary, Duration::from_secs(3)).await;
    eprintln!("idle exit after {took:?}");
    // The kept-alive connection was closed, not left hanging.
    idle.set_timeout(Duration::from_secs(2));
    assert!(idle.read_response(false).await.is_err());
}

/// `peergate run` with `shutdown` settings in front of an app that takes `delay` to answer
/// (peergate waits up to 30 s for it, longer than the grace periods here), and a signed request
/// the app has received and not yet answered.
async fn with_a_request_at_the_app(
    delay: Duration,
    shutdown: &str,
) -> (
    EchoApp,
    Arc<Setup>,
    Binary,
    tokio::task::JoinHandle<std::io::Result<RawResponse>>,
) {
    let app = EchoApp::start_with(Handler::Delay(delay));
    let bob = Key::new("Bob");
    let setup = Arc::new(Setup::new(app.addr(), &[&bob], shutdown));
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, text.replace("timeout: 5s", "timeout: 30s")).unwrap();
    let mut binary = Binary::run(&setup);
    ready(&setup, &mut binary).await;
    let stuck = {
        let setup = setup.clone();
        tokio::spawn(async move { setup.get_result(&bob, "/api/stuck").await })
    };
    app.wait_for(1, Duration::from_secs(5)).await;
    (app, setup, binary, stuck)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_grace_period_is_cut_and_the_process_still_exits_0() {
    let (_app, _setup, mut binary, stuck) = with_a_request_at_the_app(
        Duration::from_secs(8),
        "shutdown: { grace_period: 1s, timeout: 1s }",
    )
    .await;
    let took = terminate(&mut binary, Duration::from_secs(6)).await;
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "grace 1 s + timeout 1 s, exit after {took:?}"
    );
    // Cut: the connection closes, or, when the upstream side is cancelled first, the client
    // gets the 502 of a broken upstream. Never the app's answer.
    match stuck.await.unwrap() {
        Err(_) => {}
        Ok(resp) if resp.status == 502 => {}
        Ok(resp) => panic!(
            "the stuck request was answered: {} {}\n{}",
            resp.status,
            resp.text(),
            binary.log()
        ),
    }
    let log = binary.log();
    assert!(log.contains("still open after the grace period"), "{log}");
    // The cut request has its line, as every request does.
    assert!(
        log.lines()
            .any(|l| l.contains("inbound GET \"/api/stuck\" peer=")
                && l.contains("outcome=aborted reason=cancelled")),
        "{log}"
    );
}

/// A connection opened that has sent nothing yet is dropped as soon as a shutdown begins, as
/// Pingora drops one waiting for its next request, not kept through the drain: its first bytes
/// are awaited by peergate itself (`unreadable_head`), which watches for the shutdown too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_with_no_request_yet_are_dropped_when_a_drain_begins() {
    let (_app, setup, mut binary, stuck) = with_a_request_at_the_app(
        Duration::from_secs(6),
        "shutdown: { grace_period: 20s, timeout: 2s }",
    )
    .await;
    let mut silent = [
        RawConn::connect(setup.inbound, None).await.unwrap(),
        RawConn::connect(setup.outbound, None).await.unwrap(),
    ];
    binary.signal("TERM");
    for conn in &mut silent {
        conn.closed_within(Duration::from_secs(2)).await.unwrap();
    }
    assert!(
        binary.child.try_wait().unwrap().is_none(),
        "{}",
        binary.log()
    );
    // The drain goes on for the request in flight, which is answered, and then it exits.
    assert_eq!(stuck.await.unwrap().unwrap().status, 200);
    let status = binary.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", binary.log());
}

/// Ctrl-C after a SIGTERM (a `kill` in one terminal, Ctrl-C on `peergate run` in another) stops
/// at once, as Ctrl-C alone does, rather than waiting out the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_drain_stops_at_once() {
    let (_app, setup, mut binary, stuck) = with_a_request_at_the_app(
        Duration::from_secs(20),
        "shutdown: { grace_period: 20s, timeout: 2s }",
    )
    .await;
    binary.signal("TERM");
    eventually(Duration::from_secs(5), "/readyz 503", || async {
        (setup.admin("/readyz").await.status == 503).then_some(())
    })
    .await;
    assert!(
        binary.child.try_wait().unwrap().is_none(),
        "{}",
        binary.log()
    );
    let interrupt = Instant::now();
    binary.signal("INT");
    let status = binary
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("still draining 5 s after SIGINT\n{}", binary.log()));
    assert_eq!(status.code(), Some(0), "{}", binary.log());
    assert!(interrupt.elapsed() < Duration::from_secs(5));
    assert!(
        binary.log().contains("SIGINT during the graceful shutdown"),
        "{}",
        binary.log()
    );
    match stuck.await.unwrap() {
        Ok(resp) if resp.status != 502 => panic!("answered: {}", resp.status),
        _ => {}
    }
}

/// HTTP/2 connections that finished TLS but never sent their preface do not hold a graceful
/// shutdown for its whole grace period (Pingora's HTTP/2 handshake watches no shutdown): the
/// process exits at once, as with idle HTTP/1.1 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_without_a_preface_do_not_hold_a_shutdown() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let extra = format!("{}{GRACE}", tls_section(&ca, certs.path()));
    let setup = Setup::new(app.addr(), &[&bob], &extra);
    let mut binary = Binary::run(&setup);
    ready(&setup, &mut binary).await;

    let mut silent = Vec::new();
    for _ in 0..5 {
        let conn = RawConn::connect(
            setup.inbound,
            Some((ca.client_config(&[b"h2"]), "localhost")),
        )
        .await
        .unwrap();
        assert_eq!(conn.alpn(), Some(&b"h2"[..]));
        silent.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = terminate(&mut binary, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM with 5 silent HTTP/2 connections (grace period 10 s)"
    );
}

/// Answers peergate writes itself say `Connection: close` during a drain too, as forwarded
/// ones do: a refusal decided after SIGTERM (here a body that does not match its digest,
/// whose last bytes come after the signal) on a connection the client expects to keep would
/// otherwise send its next request into the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_answers_during_a_drain_close_their_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(app.addr(), &[&bob], GRACE);
    let mut binary = Binary::run(&setup);
    ready(&setup, &mut binary).await;

    let signed_for = vec![b'a'; 1000];
    let head = signed_post_head(&setup.authority(), &bob, "/api/upload", &signed_for).to_bytes();
    let mut conn = tokio::net::TcpStream::connect(setup.inbound).await.unwrap();
    conn.write_all(&head).await.unwrap();
    conn.write_all(&[b'b'; 500]).await.unwrap();
    // Time for the head to be verified and the body's first part read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sigterm = Instant::now();
    binary.signal("TERM");
    // The listeners are closed once the drain has begun.
    eventually(Duration::from_secs(2), "connections refused", || async {
        tokio::net::TcpStream::connect(setup.inbound)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    conn.write_all(&[b'b'; 500]).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut got))
        .await
        .expect("the refusal and the close within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("digest_mismatch"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(
        app.requests().is_empty(),
        "the refused body reached the app"
    );
    let status = binary
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM\n{}", binary.log()));
    assert_eq!(status.code(), Some(0), "{}", binary.log());
    assert!(sigterm.elapsed() < Duration::from_secs(8));
}

/// `peergate run` in front of `app` with a TLS inbound listener (HTTP/2 offered), a public
/// route `/public/*` and [`GRACE`]; the directory of its certificates lives as long as it.
async fn over_tls(app: EchoApp) -> (EchoApp, Setup, TestCa, tempfile::TempDir, Binary) {
    let bob = Key::new("Bob");
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let extra = format!(
        "{}{GRACE}\nroutes: [{{ path: \"/public/*\", access: public }}]\n",
        tls_section(&ca, certs.path())
    );
    let setup = Setup::new(app.addr(), &[&bob], &extra);
    let mut binary = Binary::run(&setup);
    ready(&setup, &mut binary).await;
    (app, setup, ca, certs, binary)
}

/// An HTTP/2 connection with no request in flight does not hold a graceful shutdown, even when
/// its client has stopped reading. Pingora's graceful close sends a GOAWAY and a PING and waits
/// for the PING's answer for as long as the grace period lasts: anyone who got one answer
/// could make every shutdown take the whole grace period (found by an audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_client_that_stopped_reading_does_not_hold_a_shutdown() {
    let (_app, setup, ca, _certs, mut binary) = over_tls(EchoApp::start()).await;
    let (status, _deaf) = h2_get_then_deaf(
        setup.inbound,
        ca.client_config(&[b"h2"]),
        "localhost",
        "/public/once",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    // GRACE is 10 s; the connection gets the two seconds any GOAWAY is given.
    let took = terminate(&mut binary, Duration::from_secs(9)).await;
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
}

/// Requests in flight on HTTP/2 connections at SIGTERM are answered, and each has its log
/// line before the process exits. Pingora runs each stream as a task of its own, and a
/// connection ends once its streams' last frames are sent, before those tasks have written
/// their log lines: counting connections alone, the drain could exit between the two (seen
/// once by an audit, a finished request with no log line). The window is narrow: this test
/// caught it about once in fifteen runs without the change; with a 200 ms sleep put before
/// the inbound log line, every run without the change lost lines and every run with it passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_requests_in_flight_at_sigterm_are_answered_and_logged() {
    const CONNECTIONS: usize = 4;
    const STREAMS: usize = 10;
    let (app, setup, ca, _certs, mut binary) =
        over_tls(EchoApp::start_with(Handler::Delay(Duration::from_secs(1)))).await;

    let connections: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (addr, client) = (setup.inbound, ca.client_config(&[b"h2"]));
            tokio::spawn(async move {
                let uris: Vec<String> = (0..STREAMS)
                    .map(|s| format!("/public/drain/{c}-{s}"))
                    .collect();
                let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
                h2_gets_at_once(addr, client, "localhost", &uris).await
            })
        })
        .collect();
    app.wait_for(CONNECTIONS * STREAMS, Duration::from_secs(5))
        .await;
    let took = terminate(&mut binary, Duration::from_secs(8)).await;
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
    for connection in connections {
        for answer in connection.await.unwrap().unwrap() {
            let answer = answer.unwrap_or_else(|e| panic!("cut: {e}\n{}", binary.log()));
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
    }
    let log = binary.log();
    for c in 0..CONNECTIONS {
        for s in 0..STREAMS {
            let line = format!(" GET \"/public/drain/{c}-{s}\" ");
            assert!(log.contains(&line), "no log line for{line}\n{log}");
        }
    }
}
