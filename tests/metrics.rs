//! The admin listener over real HTTP: every DESIGN.md metric with the counts of the traffic
//! sent, label sets that do not grow with what clients send, and the health endpoints.
//!
//! Mostly the inbound direction: the outbound side's counts are checked in its own tests.

mod ops;
mod support;

use std::sync::Arc;
use std::time::Duration;

use ops::*;
use support::*;

#[track_caller]
fn assert_series(metrics: &str, name_and_labels: &str, expected: f64) {
    assert_eq!(
        series(metrics, name_and_labels),
        Some(expected),
        "{name_and_labels}\n{metrics}"
    );
}

/// Scrapes `/metrics` until `name_and_labels` reaches `value`: a request is counted when its
/// log line is written, just after the client has its answer.
async fn scrape_when(setup: &Setup, name_and_labels: &str, value: f64) -> String {
    let (m, _) = eventually(Duration::from_secs(2), name_and_labels, || async {
        let m = setup.admin("/metrics").await.text();
        (series(&m, name_and_labels) == Some(value)).then_some(m)
    })
    .await;
    m
}

/// Every sample line (one per series).
fn series_count(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_design_is_served_with_the_counts_of_the_traffic() {
    let app = EchoApp::start();
    let (bob, carol, stranger) = (Key::new("Bob"), Key::new("Carol"), Key::new("Stranger"));
    let setup = Setup::new(app.addr(), &[&bob, &carol], "");
    let running = setup.start();

    for i in 0..3 {
        assert_eq!(setup.get(&bob, &format!("/api/{i}")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(setup.get(&stranger, "/api/x").await.status, 401);
    }
    let unsigned = RawRequest::new("GET", "/api/x").header("Host", setup.authority());
    let resp = raw_request(setup.inbound, None, &unsigned.to_bytes())
        .await
        .unwrap();
    assert_eq!(resp.status, 401);

    let scrape = setup.admin("/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = scrape_when(
        &setup,
        "peergate_request_duration_seconds_count{direction=\"inbound\"}",
        6.0,
    )
    .await;
    let b = bob.short_id();
    assert_series(
        &m,
        &format!("peergate_requests_total{{direction=\"inbound\",outcome=\"ok\",peer=\"{b}\"}}"),
        3.0,
    );
    assert_series(
        &m,
        "peergate_requests_total{direction=\"inbound\",outcome=\"refused\",peer=\"unknown\"}",
        3.0,
    );
    assert_series(
        &m,
        "peergate_rejections_total{direction=\"inbound\",reason=\"unknown_key\"}",
        2.0,
    );
    assert_series(
        &m,
        "peergate_rejections_total{direction=\"inbound\",reason=\"missing_signature\"}",
        1.0,
    );
    assert!(
        m.contains("# TYPE peergate_request_duration_seconds histogram"),
        "{m}"
    );
    assert_series(
        &m,
        "peergate_request_duration_seconds_count{direction=\"inbound\"}",
        6.0,
    );
    assert_series(
        &m,
        "peergate_request_duration_seconds_bucket{direction=\"inbound\",le=\"+Inf\"}",
        6.0,
    );
    assert!(series(
        &m,
        "peergate_request_duration_seconds_sum{direction=\"inbound\"}"
    )
    .is_some());
    assert_series(&m, "peergate_peers", 2.0);
    // Bob's three nonces; refused signatures leave none.
    assert_series(&m, "peergate_replay_cache_entries", 3.0);
    assert_series(&m, "peergate_config_reloads_total{result=\"success\"}", 0.0);
    assert_series(&m, "peergate_config_reloads_total{result=\"failure\"}", 0.0);
    let loaded_at = series(&m, "peergate_config_last_reload_success_timestamp_seconds").unwrap();
    assert!((loaded_at - now() as f64).abs() < 60.0, "{loaded_at}");
    assert_series(
        &m,
        &format!(
            "peergate_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );

    // A reload is counted and moves the timestamp; the peers gauge follows the allowlist.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&setup.peers, peers_yaml(&[&bob])).unwrap();
    let (m, _) = eventually(Duration::from_secs(2), "reload counted", || async {
        let m = setup.admin("/metrics").await.text();
        (series(&m, "peergate_config_reloads_total{result=\"success\"}") == Some(1.0)).then_some(m)
    })
    .await;
    assert_series(&m, "peergate_peers", 1.0);
    let reloaded_at = series(&m, "peergate_config_last_reload_success_timestamp_seconds").unwrap();
    assert!(reloaded_at > loaded_at, "{reloaded_at} > {loaded_at}");
    std::fs::write(&setup.peers, "peers: [ broken\n").unwrap();
    eventually(Duration::from_secs(2), "failure counted", || async {
        let m = setup.admin("/metrics").await.text();
        (series(&m, "peergate_config_reloads_total{result=\"failure\"}") == Some(1.0)).then_some(())
    })
    .await;
    drop(running);

    // Upstream errors, from a gateway whose app is down.
    let dead = Setup::new(dead_addr(), &[&bob], "");
    let _dead_running = dead.start();
    assert_eq!(dead.get(&bob, "/api/x").await.status, 502);
    let m = scrape_when(
        &dead,
        "peergate_request_duration_seconds_count{direction=\"inbound\"}",
        1.0,
    )
    .await;
    assert_series(
        &m,
        "peergate_upstream_errors_total{direction=\"inbound\",kind=\"connect\"}",
        1.0,
    );
    assert_series(
        &m,
        &format!("peergate_requests_total{{direction=\"inbound\",outcome=\"error\",peer=\"{b}\"}}"),
        1.0,
    );
}

/// The refusal codes of README's two tables (the inbound listener's, then the outbound
/// listener's): each `| status | `code` [/ `code`] | when |` row of a 4xx or a 503, which
/// are refusals; a 500, 502 or 504 is a failure, counted elsewhere.
fn readme_refusal_codes() -> [std::collections::BTreeSet<String>; 2] {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut tables: Vec<std::collections::BTreeSet<String>> = Vec::new();
    let mut in_table = false;
    for line in readme.lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        let status = cells.first().and_then(|c| c.strip_prefix("| "));
        let Some(status) = status.filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        else {
            in_table = false;
            continue;
        };
        if !in_table {
            tables.push(Default::default());
            in_table = true;
        }
        if status.starts_with('4') || status == "503" {
            for code in cells[1].split(" / ") {
                let code = code.trim_matches('`');
                tables.last_mut().unwrap().insert(code.to_string());
            }
        }
    }
    assert_eq!(
        tables.len(),
        2,
        "README has the inbound and the outbound tables"
    );
    let outbound = tables.pop().unwrap();
    [tables.pop().unwrap(), outbound]
}

/// An alert on a refusal's first event after a restart (`increase()` ignores the value a
/// series appears with) needs its series there from the start: every code either listener
/// gives, as README's tables list them, and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_code_of_the_readme_has_its_series_from_the_start() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(app.addr(), &[&bob], "");
    let _running = setup.start();
    let m = setup.admin("/metrics").await.text();
    let [inbound, outbound] = readme_refusal_codes();
    assert!(
        inbound.contains("digest_mismatch") && inbound.contains("bad_path"),
        "{inbound:?}"
    );
    assert!(outbound.contains("peer_has_no_url"), "{outbound:?}");
    for (direction, codes) in [("inbound", &inbound), ("outbound", &outbound)] {
        let prefix = format!("peergate_rejections_total{{direction=\"{direction}\",reason=\"");
        let served: std::collections::BTreeSet<String> = m
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|rest| {
                let (code, value) = rest.split_once("\"} ").unwrap();
                assert_eq!(value, "0", "{direction} {code}");
                code.to_string()
            })
            .collect();
        assert_eq!(
            &served, codes,
            "{direction}: the series served, then README's codes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_gauge_counts_nonces_still_remembered_not_expired_ones() {
    // A nonce is remembered until `created + max_age`: with `max_age: 1s` the nonces of these
    // requests (created this second) block replays for at most two seconds.
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(
        app.addr(),
        &[&bob],
        "signatures: { max_age: 1s, lifetime: 1s }",
    );
    let _running = setup.start();
    let sent = now();
    for i in 0..3 {
        assert_eq!(setup.get(&bob, &format!("/api/{i}")).await.status, 200);
    }
    if now() <= sent + 1 {
        let m = setup.admin("/metrics").await.text();
        assert_series(&m, "peergate_replay_cache_entries", 3.0);
    }
    // Nothing new comes in, so nothing makes the cache look for room: only the scrape's sweep
    // can drop them.
    while now() <= sent + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = setup.admin("/metrics").await.text();
    assert_series(&m, "peergate_replay_cache_entries", 0.0);
    // And a new request is counted again.
    assert_eq!(setup.get(&bob, "/api/again").await.status, 200);
    let m = setup.admin("/metrics").await.text();
    assert_series(&m, "peergate_replay_cache_entries", 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn series_do_not_grow_with_paths_hosts_or_key_ids() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Arc::new(Setup::new(app.addr(), &[&bob], ""));
    let _running = setup.start();

    // Request i: Bob on a path of its own, and an unknown key on a path and Host of its own.
    let send = |range: std::ops::Range<usize>| {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let (setup, bob) = (setup.clone(), bob.clone());
                let range = range.clone();
                tokio::spawn(async move {
                    for i in range.filter(|i| i % 8 == t) {
                        let resp = setup.get(&bob, &format!("/api/item/{i}?q={i}")).await;
                        assert_eq!(resp.status, 200);
                        let stranger = Key::new("Stranger");
                        let host = format!("h{i}.example:{}", setup.inbound.port());
                        let req = signed_get(&host, &stranger, &format!("/api/other/{i}"));
                        let resp = raw_request(setup.inbound, None, &req.to_bytes())
                            .await
                            .unwrap();
                        assert_eq!(resp.status, 401);
                    }
                })
            })
            .collect();
        async move {
            for task in tasks {
                task.await.unwrap();
            }
        }
    };
    let logged = "peergate_request_duration_seconds_count{direction=\"inbound\"}";
    send(0..10).await;
    let after_10 = scrape_when(&setup, logged, 20.0).await;
    send(10..1000).await;
    let after_1000 = scrape_when(&setup, logged, 2000.0).await;

    assert_eq!(
        series_count(&after_10),
        series_count(&after_1000),
        "after 10:\n{after_10}\nafter 1000:\n{after_1000}"
    );
    let b = bob.short_id();
    assert_series(
        &after_1000,
        &format!("peergate_requests_total{{direction=\"inbound\",outcome=\"ok\",peer=\"{b}\"}}"),
        1000.0,
    );
    assert_series(
        &after_1000,
        "peergate_requests_total{direction=\"inbound\",outcome=\"refused\",peer=\"unknown\"}",
        1000.0,
    );
    for leak in ["/api/", "h5.example", "q=", bob.key_id()] {
        assert!(
            !after_1000.contains(leak),
            "{leak} in the metrics:\n{after_1000}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_liveness_and_readyz_checks_listeners_identity_allowlist_and_app() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(app.addr(), &[&bob], "");
    let running = setup.start();

    let health = setup.admin("/healthz").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let ready = setup.admin("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let body = ready.text();
    assert!(body.starts_with("ready\n"), "{body}");
    for check in [
        "listeners: ok",
        "identity: ok",
        "allowlist: ok: 1 peer\n",
        "app: ok",
    ] {
        assert!(body.contains(check), "{check}: {body}");
    }
    assert!(
        body.contains(&format!("inbound {}", setup.inbound)),
        "{body}"
    );

    // The app goes away: not ready, and the body says why; liveness is unaffected.
    drop(app);
    let (body, _) = eventually(Duration::from_secs(3), "/readyz 503", || async {
        let r = setup.admin("/readyz").await;
        (r.status == 503).then(|| r.text())
    })
    .await;
    assert!(body.starts_with("not ready: app\n"), "{body}");
    assert!(body.contains("app: FAILED: cannot connect to"), "{body}");
    assert!(body.contains("listeners: ok"), "{body}");
    assert_eq!(setup.admin("/healthz").await.status, 200);
    drop(running);

    // A gateway configured with a dead app address is never ready.
    let dead = Setup::new(dead_addr(), &[&bob], "");
    let _dead_running = dead.start();
    let r = dead.admin("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("app: FAILED"), "{}", r.text());
}

/// On loopback the metrics name every peer and its traffic: a web page whose name is rebound
/// to 127.0.0.1 must not read them, nor a page on another site; Prometheus and probes, which
/// send neither, still do. Anything else is a problem+json 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_this_machine_not_web_pages() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(app.addr(), &[&bob], "");
    let _running = setup.start();
    let get = |headers: &[(&str, String)]| {
        let mut req = RawRequest::new("GET", "/metrics").header("Connection", "close");
        for (name, value) in headers {
            req = req.header(name, value.clone());
        }
        let admin = setup.admin;
        async move { raw_request(admin, None, &req.to_bytes()).await.unwrap() }
    };
    let port = setup.admin.port();
    for host in [
        setup.admin.to_string(),
        format!("localhost:{port}"),
        "localhost".to_string(),
    ] {
        let r = get(&[("Host", host.clone())]).await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    let r = get(&[("Host", format!("rebind.attacker.example:{port}"))]).await;
    assert_problem(&r, 403, "foreign_host");
    assert!(r.text().contains("admin listener"), "{}", r.text());
    assert!(
        !r.text().contains("peergate_requests_total"),
        "{}",
        r.text()
    );
    let r = get(&[
        ("Host", setup.admin.to_string()),
        ("Sec-Fetch-Site", "cross-site".to_string()),
    ])
    .await;
    assert_problem(&r, 403, "cross_origin");
    let r = get(&[
        ("Host", setup.admin.to_string()),
        ("Origin", "https://evil.example".to_string()),
    ])
    .await;
    assert_problem(&r, 403, "cross_origin");
    assert_problem(&setup.admin("/nothing").await, 404, "no_route");
    // GET and HEAD only: a POST is a 405 naming them, not the metrics.
    for path in ["/metrics", "/healthz"] {
        let post = RawRequest::new("POST", path)
            .header("Host", setup.admin.to_string())
            .header("Content-Length", "0");
        let r = raw_request(setup.admin, None, &post.to_bytes())
            .await
            .unwrap();
        assert_problem(&r, 405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{path}");
    }
    let head = RawRequest::new("HEAD", "/metrics").header("Host", setup.admin.to_string());
    let r = raw_request(setup.admin, None, &head.to_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

/// A proxy listener that cannot start is not left for `/readyz` to find: the process stops at
/// once, so a supervisor sees it fail. (It used to run on
/// without that listener, `/healthz` answering 200; `/readyz` turning 503 as the listeners
/// close is checked in tests/shutdown.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_start_stops_the_process() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    // Another process (this test) holds the outbound port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let setup = Setup::new(app.addr(), &[&bob], "");
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        &format!("outbound: \"{}\"", setup.outbound),
        &format!("outbound: \"{}\"", squatter.local_addr().unwrap()),
    );
    std::fs::write(&setup.config, text).unwrap();
    let mut binary = Binary::run(&setup);
    let status = binary
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| {
            panic!(
                "still running without its outbound listener\n{}",
                binary.log()
            )
        });
    assert_eq!(status.code(), Some(1), "{}", binary.log());
    assert!(
        binary.log().contains(&format!(
            "listen.outbound: cannot listen on {}",
            squatter.local_addr().unwrap()
        )),
        "{}",
        binary.log()
    );
}

/// At the open-files limit (a flood of client connections), the admin listener still answers
/// `/healthz` with the descriptor it holds in reserve, so a liveness probe does not kill a
/// process that is working; afterwards it takes a new reserve.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_at_the_open_files_limit() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(app.addr(), &[&bob], "");
    let binary = Binary::run(&setup);
    // Both: the proxy listener binds on a thread of its own, and must hold its descriptor
    // before the limit is counted (it was refused once on a busy machine).
    wait_listening(setup.admin);
    wait_listening(setup.inbound);
    assert_eq!(setup.admin("/healthz").await.status, 200);
    let pid = binary.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let limit = libc::rlimit {
        rlim_cur: open + 2,
        rlim_max: open + 2,
    };
    // SAFETY: prlimit reads `limit`, which lives for the call; the old value is not asked for.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    // More client connections than descriptors left: the proxy listener takes what there is.
    let mut flood = Vec::new();
    for _ in 0..16 {
        flood.push(tokio::net::TcpStream::connect(setup.inbound).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = tokio::time::timeout(Duration::from_secs(5), setup.admin("/healthz"))
        .await
        .unwrap_or_else(|_| panic!("no answer at the open-files limit\n{}", binary.log()));
    assert_eq!(probe.status, 200);
    drop(flood);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(setup.admin("/healthz").await.status, 200);
    assert!(
        binary.log().contains("using the one held in reserve"),
        "{}",
        binary.log()
    );
}

/// The admin listener serves at most `admin::MAX_CONNECTIONS` connections at once: past it,
/// the one idle longest is closed to make room, so connections opened and left idle neither
/// pile up to the open-files limit nor keep a probe out. (Before, it had no ceiling.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_closes_its_idlest_connection_at_its_ceiling() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(app.addr(), &[&bob], "");
    let _running = setup.start();
    let max = peergate::admin::MAX_CONNECTIONS;
    let extra = 3;
    let mut idle = Vec::new();
    for _ in 0..max + extra {
        idle.push(tokio::net::TcpStream::connect(setup.admin).await.unwrap());
        // Each idle from a later millisecond than the one before.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (i, conn) in idle.iter_mut().enumerate() {
        if i < extra {
            assert!(
                closed_within(conn, Duration::from_secs(5)).await,
                "connection {i} is still open"
            );
        } else {
            assert!(
                !closed_within(conn, Duration::from_millis(20)).await,
                "connection {i} was closed"
            );
        }
    }
    // A probe gets in, in place of the idlest one left.
    assert_eq!(setup.admin("/healthz").await.status, 200);
    assert!(
        closed_within(&mut idle[extra], Duration::from_secs(5)).await,
        "the idlest connection stayed"
    );
    assert!(!closed_within(&mut idle[extra + 1], Duration::from_millis(20)).await);
}

/// `listen.max_connections`, on each proxy listener: at the ceiling the connection that has
/// waited longest for a request head is closed to make room for the new one, and the metrics
/// show the connections served.
#[tokio::test]
async fn a_listener_at_max_connections_closes_the_connection_idle_longest() {
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = with_max_connections(Setup::new(app.addr(), &[&bob], ""), 2);
    let _gateway = setup.start();
    wait_bound(setup.outbound);
    let inbound_request = || signed_get(&setup.authority(), &bob, "/x").to_bytes();
    let outbound_request = || {
        RawRequest::new("GET", "/peers/nobody/x")
            .header("Host", setup.outbound.to_string())
            .to_bytes()
    };
    for (direction, addr, request, status) in [
        (
            "inbound",
            setup.inbound,
            &inbound_request as &dyn Fn() -> Vec<u8>,
            200,
        ),
        ("outbound", setup.outbound, &outbound_request, 404),
    ] {
        let open = format!("peergate_client_connections{{direction=\"{direction}\"}}");
        let refused =
            format!("peergate_client_connections_refused_total{{direction=\"{direction}\"}}");
        let mut first = RawConn::connect(addr, None).await.unwrap();
        assert_eq!(first.request(&request()).await.unwrap().status, status);
        let mut second = RawConn::connect(addr, None).await.unwrap();
        assert_eq!(second.request(&request()).await.unwrap().status, status);
        assert_series(&setup.admin("/metrics").await.text(), &open, 2.0);

        // Both wait for their next request; the first has waited longer, and goes.
        let mut third = RawConn::connect(addr, None).await.unwrap();
        assert_eq!(third.request(&request()).await.unwrap().status, status);
        first
            .closed_within(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{direction}: the connection idle longest stayed: {e}"));
        assert_eq!(second.request(&request()).await.unwrap().status, status);
        let metrics = setup.admin("/metrics").await.text();
        assert_series(&metrics, &open, 2.0);
        assert_series(&metrics, &refused, 0.0);
        drop((second, third));
        scrape_when(&setup, &open, 0.0).await;
    }
}

/// At the ceiling with a request in flight on every connection, a new connection is closed
/// unanswered; the requests in flight are answered, and a new connection is served again once
/// one of them is done.
#[tokio::test]
async fn a_listener_with_every_connection_busy_closes_new_ones() {
    let app = EchoApp::start_with(Handler::Delay(Duration::from_millis(2500)));
    let bob = Key::new("Bob");
    let setup = with_max_connections(Setup::new(app.addr(), &[&bob], ""), 2);
    let _gateway = setup.start();
    let request = || signed_get(&setup.authority(), &bob, "/slow").to_bytes();
    let open = "peergate_client_connections{direction=\"inbound\"}";
    let refused = "peergate_client_connections_refused_total{direction=\"inbound\"}";
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut conn = RawConn::connect(setup.inbound, None).await.unwrap();
        conn.send(&request()).await.unwrap();
        busy.push(conn);
    }
    eventually(
        Duration::from_secs(2),
        "both requests at the app",
        || async { (app.count() == 2).then_some(()) },
    )
    .await;
    let mut third = RawConn::connect(setup.inbound, None).await.unwrap();
    third
        .closed_within(Duration::from_secs(1))
        .await
        .expect("a third connection was served while both were busy");
    let metrics = setup.admin("/metrics").await.text();
    assert_series(&metrics, refused, 1.0);
    assert_series(&metrics, open, 2.0);
    for conn in &mut busy {
        assert_eq!(conn.read_response(false).await.unwrap().status, 200);
    }
    // Both wait for a request now: a new connection makes room.
    let mut fourth = RawConn::connect(setup.inbound, None).await.unwrap();
    assert_eq!(fourth.request(&request()).await.unwrap().status, 200);
    assert_eq!(app.count(), 3);
}

/// `setup` with `listen.max_connections: n`.
fn with_max_connections(setup: Setup, n: usize) -> Setup {
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        "threads: 2 }",
        &format!("threads: 2, max_connections: {n} }}"),
    );
    std::fs::write(&setup.config, text).unwrap();
    setup
}
