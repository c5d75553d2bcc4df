//! Hot reload end to end: a running gateway whose peers file is rewritten in place, replaced by
//! rename, swapped by a Kubernetes-style `..data` symlink flip, broken, and reloaded on SIGHUP,
//! with real signed requests before, during and after.

mod ops;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ops::*;
use peergate::server::Running;
use support::*;

/// SIGHUP goes to the whole test process, so every gateway in it reloads. Tests hold this for
/// reading; the in-process SIGHUP test holds it for writing, so it runs alone.
static SIGNALS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Within this a file change must be in force (the reloader settles 200 ms after the last
/// file event).
const RELOAD_LIMIT: Duration = Duration::from_secs(2);

fn metric(running: &Running, series_name: &str) -> f64 {
    series(&running.shared().metrics.render(), series_name).unwrap_or(0.0)
}

fn reloads(running: &Running, result: &str) -> f64 {
    metric(
        running,
        &format!("peergate_config_reloads_total{{result=\"{result}\"}}"),
    )
}

/// Waits until `gone` is refused as an unknown key and `admitted` is accepted.
async fn wait_swapped(setup: &Setup, gone: &Key, admitted: &Key, what: &str) -> Duration {
    let (_, took) = eventually(RELOAD_LIMIT, what, || async {
        let refused = setup.get(gone, "/api/x").await;
        let accepted = setup.get(admitted, "/api/x").await;
        let gone_refused = refused.status == 401 && refused.json()["reason"] == "unknown_key";
        (gone_refused && accepted.status == 200).then_some(())
    })
    .await;
    took
}

/// Sends signed requests from `key` one after another until `stop`, from `tasks` clients at
/// once; returns (sent, every answer that was not a 200).
fn keep_sending(
    setup: &Arc<Setup>,
    key: &Key,
    tasks: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    (0..tasks)
        .map(|t| {
            let (setup, key, stop) = (setup.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sent = 0;
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let resp = raw_request(
                        setup.inbound,
                        None,
                        &signed_get(&setup.authority(), &key, &format!("/api/steady/{t}/{sent}"))
                            .to_bytes(),
                    )
                    .await;
                    sent += 1;
                    match resp {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                        Err(e) => failures.push(format!("no answer: {e}")),
                    }
                }
                (sent, failures)
            })
        })
        .collect()
}

async fn collect(handles: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>) -> usize {
    let mut total = 0;
    for handle in handles {
        let (sent, failures) = handle.await.unwrap();
        assert!(
            failures.is_empty(),
            "a peer that stayed on the allowlist was refused during reloads: {failures:?}"
        );
        total += sent;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_removed_and_added_take_effect_at_once_and_no_steady_request_fails() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, carol, dave, erin) = (
        Key::new("Bob"),
        Key::new("Carol"),
        Key::new("Dave"),
        Key::new("Erin"),
    );
    let setup = Arc::new(Setup::new(app.addr(), &[&bob, &carol], ""));
    let running = setup.start();
    assert_eq!(setup.get(&bob, "/api/x").await.status, 200);
    let refused = setup.get(&dave, "/api/x").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["reason"], "unknown_key");

    // Carol stays on the allowlist through every change below.
    let stop = Arc::new(AtomicBool::new(false));
    let steady = keep_sending(&setup, &carol, 3, &stop);

    // (a) Rewritten in place (truncate and write, as `echo > file` does).
    std::fs::write(&setup.peers, peers_yaml(&[&carol, &dave])).unwrap();
    let took = wait_swapped(&setup, &bob, &dave, "in-place rewrite: Bob out, Dave in").await;
    eprintln!("in-place rewrite in force after {took:?}");
    assert_eq!(metric(&running, "peergate_peers"), 2.0);

    // (b) Written to a temporary file and renamed over the old one, as editors save.
    write_by_rename(&setup.peers, &peers_yaml(&[&erin, &carol]));
    let took = wait_swapped(&setup, &dave, &erin, "rename over: Dave out, Erin in").await;
    eprintln!("rename in force after {took:?}");

    // And once more each way, so the steady client sees several swaps.
    std::fs::write(&setup.peers, peers_yaml(&[&carol, &bob])).unwrap();
    wait_swapped(&setup, &erin, &bob, "in-place rewrite: Erin out, Bob in").await;
    write_by_rename(&setup.peers, &peers_yaml(&[&dave, &carol]));
    wait_swapped(&setup, &bob, &dave, "rename over: Bob out, Dave in").await;

    // (d) Nothing Carol sent failed while all that happened.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = collect(steady).await;
    assert!(sent >= 20, "the steady client sent only {sent} requests");
    assert!(reloads(&running, "success") >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_peers_file_keeps_the_running_allowlist() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, carol, dave) = (Key::new("Bob"), Key::new("Carol"), Key::new("Dave"));
    let setup = Arc::new(Setup::new(app.addr(), &[&bob, &carol], ""));
    let running = setup.start();
    let stop = Arc::new(AtomicBool::new(false));
    let steady = keep_sending(&setup, &carol, 2, &stop);

    let broken = [
        // Not YAML at all (an unclosed flow sequence).
        format!(
            "peers:\n  - name: Dave\n    public_key: [\"{}\"\n",
            dave.public.spki_base64()
        ),
        // A key that does not parse.
        "peers:\n  - name: Dave\n    public_key: \"bm90IGEga2V5\"\n".to_string(),
        // A typo in a field name.
        format!(
            "peers:\n  - name: Dave\n    publik_key: \"{}\"\n",
            dave.public.spki_base64()
        ),
    ];
    for (i, text) in broken.iter().enumerate() {
        let failures = reloads(&running, "failure");
        std::fs::write(&setup.peers, text).unwrap();
        eventually(RELOAD_LIMIT, "the failed reload is counted", || async {
            (reloads(&running, "failure") > failures).then_some(())
        })
        .await;
        assert_eq!(
            setup.get(&bob, "/api/x").await.status,
            200,
            "case {i}: Bob still in"
        );
        let dave_resp = setup.get(&dave, "/api/x").await;
        assert_eq!(dave_resp.status, 401, "case {i}: Dave not in");

        // The error names the file, line and column (what the log line says).
        let err = peergate::reload::reload_now(running.shared(), &setup.config)
            .expect_err("the broken file is refused");
        let message = err.to_string();
        let located = format!("{}:", setup.peers.display());
        assert!(
            message.starts_with(&located)
                && message[located.len()..]
                    .split(':')
                    .take(2)
                    .all(|n| n.parse::<u32>().is_ok()),
            "case {i}: {message}"
        );
    }
    assert_eq!(reloads(&running, "success"), 0.0);
    assert!(reloads(&running, "failure") >= 6.0);
    assert!(
        running
            .shared()
            .metrics
            .render()
            .contains("peergate_peers 2"),
        "the gauge still shows the allowlist in force"
    );

    // Fixing the file puts the new allowlist in force.
    std::fs::write(&setup.peers, peers_yaml(&[&carol, &dave])).unwrap();
    wait_swapped(&setup, &bob, &dave, "the fixed file").await;
    assert_eq!(reloads(&running, "success"), 1.0);

    stop.store(true, Ordering::SeqCst);
    collect(steady).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_symlink_flip_is_seen() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, carol) = (Key::new("Bob"), Key::new("Carol"));
    let setup = Setup::new(app.addr(), &[&bob], "");
    // The layout kubelet makes: peers.yaml -> ..data/peers.yaml, ..data -> ..v1.
    let dir = setup.dir.path();
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/peers.yaml"), peers_yaml(&[&bob])).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::fs::remove_file(&setup.peers).unwrap();
    std::os::unix::fs::symlink("..data/peers.yaml", &setup.peers).unwrap();
    let running = setup.start();
    assert_eq!(setup.get(&bob, "/api/x").await.status, 200);

    // An update: a new directory, a new ..data link renamed over the old one, the old
    // directory removed.
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/peers.yaml"), peers_yaml(&[&carol])).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    let took = wait_swapped(&setup, &bob, &carol, "symlink flip").await;
    eprintln!("symlink flip in force after {took:?}");
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_with_the_allowlist_it_started_with() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start_with(Handler::Delay(Duration::from_millis(1500)));
    let (bob, carol) = (Key::new("Bob"), Key::new("Carol"));
    let setup = Arc::new(Setup::new(app.addr(), &[&bob, &carol], ""));
    let running = setup.start();

    let in_flight = {
        let (setup, bob) = (setup.clone(), bob.clone());
        tokio::spawn(async move { setup.get(&bob, "/api/slow").await })
    };
    app.wait_for(1, Duration::from_secs(5)).await;
    std::fs::write(&setup.peers, peers_yaml(&[&carol])).unwrap();
    eventually(RELOAD_LIMIT, "the reload", || async {
        (reloads(&running, "success") == 1.0).then_some(())
    })
    .await;
    let refused = setup.get(&bob, "/api/x").await;
    assert_eq!(
        refused.status, 401,
        "Bob is refused from the next request on"
    );
    assert!(
        !in_flight.is_finished(),
        "the slow request is still in flight"
    );
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = app.requests();
    assert_eq!(seen.len(), 1, "the refused requests never reached the app");
    assert_eq!(seen[0].header("x-peer-id"), Some(bob.short_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_named_and_the_rest_is_applied() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, dave) = (Key::new("Bob"), Key::new("Dave"));
    let setup = Setup::new(
        app.addr(),
        &[&bob],
        "reload: { poll_interval: 1h }\nroutes:\n  - { path: \"/*\", access: peers }\n",
    );
    let running = setup.start();
    let unsigned = RawRequest::new("GET", "/public/page").header("Host", setup.authority());
    let resp = raw_request(setup.inbound, None, &unsigned.to_bytes())
        .await
        .unwrap();
    assert_eq!(resp.status, 401);

    // A new listen port and replay cache size (restart) with a new route and peer (live).
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace(
            &format!("inbound: \"{}\"", setup.inbound),
            &format!("inbound: \"127.0.0.1:{}\"", free_port()),
        )
        .replace(
            "routes:\n",
            "signatures: { replay_cache_size: 5000 }\nroutes:\n  - { path: \"/public/*\", access: public }\n",
        );
    let applied = {
        // Written where the watcher does not look, so this reload is the only one.
        let elsewhere = tempfile::tempdir().unwrap();
        let moved = elsewhere.path().join("peergate.yaml");
        std::fs::write(
            &moved,
            text.replace(
                "alice.pem",
                &setup.dir.path().join("alice.pem").display().to_string(),
            )
            .replace(
                "peers.yaml",
                &elsewhere.path().join("peers.yaml").display().to_string(),
            ),
        )
        .unwrap();
        std::fs::write(
            elsewhere.path().join("peers.yaml"),
            peers_yaml(&[&bob, &dave]),
        )
        .unwrap();
        peergate::reload::reload_now(running.shared(), &moved).expect("applied")
    };
    assert_eq!(
        applied.restart_needed,
        vec!["listen.inbound", "signatures.replay_cache_size"]
    );
    assert_eq!(applied.peers, 2);
    // The old port still serves, with the new route and the new peer.
    let resp = raw_request(setup.inbound, None, &unsigned.to_bytes())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(setup.get(&dave, "/api/x").await.status, 200);
    assert_eq!(reloads(&running, "success"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_makes_each_gateway_in_the_process_reload_its_own_config() {
    // Alone in the process: the signal reaches every gateway of every test.
    let _signals = SIGNALS.write().await;
    let app = EchoApp::start();
    let (bob, carol, dave) = (Key::new("Bob"), Key::new("Carol"), Key::new("Dave"));
    // No periodic check during the test: only the signal can cause a reload.
    let quiet = "reload: { poll_interval: 1h }";
    let one = Setup::new(app.addr(), &[&bob], quiet);
    let two = Setup::new(app.addr(), &[&carol], quiet);
    let (g1, g2) = (one.start(), two.start());
    assert_eq!(reloads(&g1, "success"), 0.0);

    let before = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(RELOAD_LIMIT, "both gateways reloaded", || async {
        (reloads(&g1, "success") == 1.0 && reloads(&g2, "success") == 1.0).then_some(())
    })
    .await;
    eprintln!("SIGHUP reloads done after {:?}", before.elapsed());
    // Each read its own files.
    assert_eq!(one.get(&bob, "/api/x").await.status, 200);
    assert_eq!(one.get(&carol, "/api/x").await.status, 401);
    assert_eq!(two.get(&carol, "/api/x").await.status, 200);
    assert_eq!(two.get(&dave, "/api/x").await.status, 401);
    assert_eq!(reloads(&g1, "failure") + reloads(&g2, "failure"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_binary() {
    let app = EchoApp::start();
    let (bob, dave) = (Key::new("Bob"), Key::new("Dave"));
    let setup = Setup::new(app.addr(), &[&bob], "reload: { poll_interval: 1h }");
    let binary = Binary::run(&setup);
    wait_listening(setup.admin);
    let success = |m: &str| series(m, "peergate_config_reloads_total{result=\"success\"}");
    assert_eq!(success(&setup.admin("/metrics").await.text()), Some(0.0));

    binary.signal("HUP");
    eventually(RELOAD_LIMIT, "the binary reloaded on SIGHUP", || async {
        let m = setup.admin("/metrics").await.text();
        (success(&m) == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(setup.get(&bob, "/api/x").await.status, 200);
    assert_eq!(setup.get(&dave, "/api/x").await.status, 401);
    let log = binary.log();
    assert!(log.contains("SIGHUP: reloading"), "{log}");
}
