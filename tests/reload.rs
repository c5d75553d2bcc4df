//! Hot reload end to end: a running gateway whose peers file is rewritten in place, replaced by
//! rename, swapped by a Kubernetes-style `..data` symlink flip, broken, and reloaded on SIGHUP,
//! with real signed requests before, during and after; and what the reloader reads to notice
//! changes, watched from outside with inotify.

mod ops;
mod support;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::AccessKind;
use notify::{EventKind, RecursiveMode, Watcher};

use ops::*;
use peergate::config;
use peergate::server::{Gateway, Running};
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

/// Counts the times a file is opened, by anyone (inotify `IN_OPEN`): the reloader reading it
/// to look for a change shows here. The tests' own writes open it too, once each (notify does
/// not report the closes of files opened read-only, which would tell the two apart).
struct Opens {
    count: Arc<AtomicUsize>,
    _watcher: notify::RecommendedWatcher,
}

impl Opens {
    fn of(file: &Path) -> Opens {
        let count = Arc::new(AtomicUsize::new(0));
        let (seen, target) = (count.clone(), file.to_path_buf());
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    if matches!(event.kind, EventKind::Access(AccessKind::Open(_)))
                        && event.paths.contains(&target)
                    {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .unwrap();
        // The directory, not the file: a rename over the file would leave a watch on the old
        // inode.
        watcher
            .watch(file.parent().unwrap(), RecursiveMode::NonRecursive)
            .unwrap();
        Opens {
            count,
            _watcher: watcher,
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Past this, the metadata recorded when the reloader reads a file vouches for the content
/// (the reloader distrusts metadata of files changed up to 2 s before it read them).
const SETTLED: Duration = Duration::from_secs(3);

fn mtime_secs(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().mtime()
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

/// A peer taken off the allowlist is refused from the next request on, even while the
/// configuration file holds an unrelated edit that does not validate (found by an audit: the
/// removal waited until the typo was fixed). The broken file changes nothing; its last version
/// that loaded stays in force, the peers file is read with it, and the reload counts as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_removed_while_the_config_file_has_a_typo_is_refused() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, carol) = (Key::new("Bob"), Key::new("Carol"));
    let setup = Arc::new(Setup::new(app.addr(), &[&bob, &carol], ""));
    let running = setup.start();
    assert_eq!(setup.get(&bob, "/api/x").await.status, 200);

    let good = std::fs::read_to_string(&setup.config).unwrap();
    let failures = reloads(&running, "failure");
    std::fs::write(
        &setup.config,
        format!("{good}reload: {{ poll_intervall: 5s }}\n"),
    )
    .unwrap();
    eventually(
        RELOAD_LIMIT,
        "the typo's reload is counted as failed",
        || async { (reloads(&running, "failure") > failures).then_some(()) },
    )
    .await;
    assert_eq!(setup.get(&bob, "/api/x").await.status, 200);

    std::fs::write(&setup.peers, peers_yaml(&[&carol])).unwrap();
    eventually(RELOAD_LIMIT, "Bob refused", || async {
        let resp = setup.get(&bob, "/api/x").await;
        (resp.status == 401).then_some(())
    })
    .await;
    assert_eq!(setup.get(&carol, "/api/x").await.status, 200);
    assert_eq!(metric(&running, "peergate_peers"), 1.0);
    assert_eq!(reloads(&running, "success"), 0.0, "the typo is still there");
    let applied = peergate::reload::reload_now(running.shared(), &setup.config)
        .expect("the peers file is applied");
    let err = applied
        .config_error
        .expect("the config file's error is reported");
    assert!(err.to_string().contains("poll_intervall"), "{err}");

    // A broken peers file on top changes nothing either.
    std::fs::write(&setup.peers, "peers: [\n").unwrap();
    let err = peergate::reload::reload_now(running.shared(), &setup.config)
        .expect_err("nothing valid to apply");
    let message = err.to_string();
    assert!(message.contains("poll_intervall"), "{message}");
    assert!(
        message.contains("peers.yaml:"),
        "both errors named: {message}"
    );
    assert_eq!(setup.get(&carol, "/api/x").await.status, 200);

    // Fixed, both files load whole again.
    std::fs::write(&setup.peers, peers_yaml(&[&carol, &bob])).unwrap();
    std::fs::write(&setup.config, &good).unwrap();
    eventually(RELOAD_LIMIT, "Bob back", || async {
        (setup.get(&bob, "/api/x").await.status == 200).then_some(())
    })
    .await;
    assert!(reloads(&running, "success") >= 1.0);
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

    // A new listen port, thread count and replay cache size (restart) with a new route and
    // peer (live).
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace(
            &format!("inbound: \"{}\"", setup.inbound),
            &format!("inbound: \"127.0.0.1:{}\"", free_port()),
        )
        .replace("threads: 2", "threads: 7, idle_timeout: 30s")
        .replace(
            "routes:\n",
            "signatures: { replay_cache_size: 5000 }\nroutes:\n  - { path: \"/public/*\", access: public }\n",
        );
    // Set at start; a reload with changes that wait for a restart leaves it (the configuration
    // in force is not yet the one on disk).
    let loaded_at = metric(
        &running,
        "peergate_config_last_reload_success_timestamp_seconds",
    );
    assert!(loaded_at > 0.0);
    running.shared().metrics.config_last_reload_success.set(1.0);
    let pending = "peergate_config_restart_pending";
    assert_eq!(
        series(&running.shared().metrics.render(), pending),
        Some(0.0)
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
        vec![
            "listen.inbound",
            "listen.threads",
            "listen.idle_timeout",
            "signatures.replay_cache_size"
        ]
    );
    assert_eq!(applied.peers, 2);
    // The old port still serves, with the new route and the new peer.
    let resp = raw_request(setup.inbound, None, &unsigned.to_bytes())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(setup.get(&dave, "/api/x").await.status, 200);
    assert_eq!(reloads(&running, "success"), 1.0);
    assert_eq!(
        metric(
            &running,
            "peergate_config_last_reload_success_timestamp_seconds"
        ),
        1.0
    );
    // What waits is seen without the log: counted in a metric, named by /readyz, which stays
    // ready (the configuration in force serves).
    assert_eq!(metric(&running, pending), 4.0);
    let ready = setup.admin("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(
        ready.text().contains("config: ok: changed settings wait for a restart: listen.inbound, listen.threads, listen.idle_timeout, signatures.replay_cache_size\n"),
        "{}",
        ready.text()
    );

    // The file at start, read again: nothing waits any more.
    let applied = peergate::reload::reload_now(running.shared(), &setup.config).expect("applied");
    assert!(
        applied.restart_needed.is_empty(),
        "{:?}",
        applied.restart_needed
    );
    assert_eq!(metric(&running, pending), 0.0);
    let ready = setup.admin("/readyz").await;
    assert!(
        ready
            .text()
            .contains("config: ok: no changed setting waits for a restart\n"),
        "{}",
        ready.text()
    );
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
    // Info lines reach the log file within `logger::GATHER` (2 ms), not at once.
    eventually(RELOAD_LIMIT, "the reload is in the log", || async {
        binary.log().contains("SIGHUP: reloading").then_some(())
    })
    .await;
}

/// An edit made after the start read the files and before they were watched is applied. The
/// reloader took the edited file it found then as the one in force, and the peer edited in
/// stayed refused until the file's next change (the binary's admin listener answers before
/// the reloader starts, so a deployment that edits once peergate answers could hit this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_while_the_gateway_starts_is_applied() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, dave) = (Key::new("Bob"), Key::new("Dave"));
    let setup = Setup::new(app.addr(), &[&bob], "");
    let loaded = config::load(&setup.config).unwrap();
    std::fs::write(&setup.peers, peers_yaml(&[&dave])).unwrap();
    let running = Gateway::build(&loaded).unwrap().spawn();
    wait_bound(setup.inbound);
    wait_swapped(&setup, &bob, &dave, "the edit made while starting applied").await;
    assert_eq!(reloads(&running, "success"), 1.0);
}

/// A start reads a profile page too (after the load, as it builds the pages): what it read is
/// what the reloader's first look compares with, so a start with nothing edited reloads
/// nothing. Without it, every start with a profile reloaded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_reloads_nothing_when_nothing_was_edited() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, dave) = (Key::new("Bob"), Key::new("Dave"));
    let setup = Setup::new(app.addr(), &[&bob], "reload: { poll_interval: 1h }");
    std::fs::write(setup.dir.path().join("profile.md"), "# Alice\n").unwrap();
    let config = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        config.replace("name: Alice,", "name: Alice, profile: profile.md,"),
    )
    .unwrap();
    let running = setup.start();
    // The first look comes before any event is handled: once this edit is in force, it has
    // been made, and one reload (the edit's) is all there was.
    std::fs::write(&setup.peers, peers_yaml(&[&dave])).unwrap();
    wait_swapped(&setup, &bob, &dave, "the edit applied").await;
    assert_eq!(reloads(&running, "success"), 1.0);
    assert_eq!(reloads(&running, "failure"), 0.0);
}

/// A peers file that an edit of the configuration names, refused because that file does not
/// parse, is watched from then on: fixing it applies the edit without another touch of the
/// configuration (nor a SIGHUP, nor a poll: the poll here is an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_the_file_a_refused_edit_named_applies_the_edit() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, dave) = (Key::new("Bob"), Key::new("Dave"));
    let setup = Setup::new(app.addr(), &[&bob], "reload: { poll_interval: 1h }");
    let running = setup.start();
    let other = setup.dir.path().join("other").join("peers.yaml");
    std::fs::create_dir(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "peers:\n  - nmae: Dave\n").unwrap();
    let config = std::fs::read_to_string(&setup.config).unwrap();
    write_by_rename(
        &setup.config,
        &config.replace("peers_file: peers.yaml", "peers_file: other/peers.yaml"),
    );
    eventually(RELOAD_LIMIT, "the edit refused", || async {
        (reloads(&running, "failure") == 1.0).then_some(())
    })
    .await;
    assert_eq!(setup.get(&bob, "/api/x").await.status, 200);
    std::fs::write(&other, peers_yaml(&[&dave])).unwrap();
    wait_swapped(&setup, &bob, &dave, "the fixed file applied").await;
}

/// A symlink met on the way to the peers file, in a directory of its own
/// (`data/current -> v1`, the file `data/current/peers.yaml`): flipping it is seen at once,
/// not at the next poll, and so is an edit of the file it now leads to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_flipped_in_a_directory_of_its_own_is_seen() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, carol, dave) = (Key::new("Bob"), Key::new("Carol"), Key::new("Dave"));
    let setup = Setup::new(app.addr(), &[&bob], "reload: { poll_interval: 1h }");
    let data = setup.dir.path().join("data");
    for (version, key) in [("v1", &bob), ("v2", &carol)] {
        std::fs::create_dir_all(data.join(version)).unwrap();
        std::fs::write(data.join(version).join("peers.yaml"), peers_yaml(&[key])).unwrap();
    }
    std::os::unix::fs::symlink("v1", data.join("current")).unwrap();
    let config = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        config.replace(
            "peers_file: peers.yaml",
            "peers_file: data/current/peers.yaml",
        ),
    )
    .unwrap();
    let _running = setup.start();
    assert_eq!(setup.get(&bob, "/api/x").await.status, 200);
    std::os::unix::fs::symlink("v2", data.join("current.tmp")).unwrap();
    std::fs::rename(data.join("current.tmp"), data.join("current")).unwrap();
    wait_swapped(&setup, &bob, &carol, "the flip seen").await;
    std::fs::write(data.join("v2").join("peers.yaml"), peers_yaml(&[&dave])).unwrap();
    wait_swapped(&setup, &carol, &dave, "the new target's edit seen").await;
}

/// The reload's log line names the peers it added and removed, so that an operator sees what
/// an edit did (and which peer it took away by mistake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_line_names_the_peers_added_and_removed() {
    let app = EchoApp::start();
    let (bob, carol, dave) = (Key::new("Bob"), Key::new("Carol"), Key::new("Dave"));
    let setup = Setup::new(app.addr(), &[&bob, &carol], "");
    let binary = Binary::run(&setup);
    wait_listening(setup.admin);
    std::fs::write(&setup.peers, peers_yaml(&[&carol, &dave])).unwrap();
    let expected = format!(
        "2 peers on the allowlist; peers added 1: Dave ({}); removed 1: Bob ({})",
        dave.short_id(),
        bob.short_id()
    );
    eventually(RELOAD_LIMIT, "the reload is in the log", || async {
        binary.log().contains(&expected).then_some(())
    })
    .await;
    // A rename changes no peer.
    std::fs::write(
        &setup.peers,
        peers_yaml(&[&carol, &dave]).replace("name: Carol", "name: Caroline"),
    )
    .unwrap();
    eventually(RELOAD_LIMIT, "the second reload is in the log", || async {
        binary
            .log()
            .contains("2 peers on the allowlist; no peer added or removed")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_beside_the_config_do_not_make_the_reloader_read_the_peers_file() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, dave) = (Key::new("Bob"), Key::new("Dave"));
    // A periodic check every 100 ms (the shortest allowed) as well as the watcher.
    let setup = Setup::new(app.addr(), &[&bob], "reload: { poll_interval: 100ms }");
    let running = setup.start();
    tokio::time::sleep(SETTLED).await;
    let opens = Opens::of(&setup.peers);

    // A log file and scratch files in the config directory, written for 1.5 s: thousands of
    // events about other files, and some fifteen periodic checks.
    let dir = setup.dir.path();
    let mut log = std::fs::File::create(dir.join("app.log")).unwrap();
    let started = Instant::now();
    let mut written = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        writeln!(log, "request {written} served").unwrap();
        std::fs::write(dir.join(format!("scratch-{}.tmp", written % 50)), "x").unwrap();
        std::fs::rename(
            dir.join(format!("scratch-{}.tmp", written % 50)),
            dir.join(format!("scratch-{}.json", written % 50)),
        )
        .unwrap();
        written += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Past the reloader's settling time, with a few more periodic checks.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(written > 100, "only {written} rounds of writes");
    assert_eq!(
        opens.count(),
        0,
        "the peers file was read while only other files changed ({written} rounds of writes)"
    );
    assert_eq!(
        reloads(&running, "success") + reloads(&running, "failure"),
        0.0
    );

    // A real change is still read, and put in force (and the count above can see reads: this
    // write's own open, and the reloader's).
    std::fs::write(&setup.peers, peers_yaml(&[&dave])).unwrap();
    wait_swapped(&setup, &bob, &dave, "a change after the noise").await;
    assert!(opens.count() >= 2, "the reloader's reads are visible");
    assert_eq!(reloads(&running, "success"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_length_rewrites_saves_by_rename_and_touches_are_told_apart_by_content() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let (bob, dan, carol) = (Key::new("Bob"), Key::new("Dan"), Key::new("Carol"));
    // No periodic check: the file events alone must lead to each reload.
    let setup = Setup::new(app.addr(), &[&bob], "reload: { poll_interval: 1h }");
    let running = setup.start();
    let opens = Opens::of(&setup.peers);
    let (with_bob, with_dan) = (peers_yaml(&[&bob]), peers_yaml(&[&dan]));
    assert_eq!(with_bob.len(), with_dan.len());
    let inode = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    };
    let first_inode = inode(&setup.peers);

    // (a) Rewritten in place with content of the same length, twice, early in one second so
    // that both writes most likely share it (only the nanoseconds tell their times apart).
    while SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_millis()
        > 50
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::write(&setup.peers, &with_dan).unwrap();
    let first_second = mtime_secs(&setup.peers);
    eventually(
        RELOAD_LIMIT,
        "the first same-length write is in force",
        || async { (reloads(&running, "success") == 1.0).then_some(()) },
    )
    .await;
    assert_eq!(setup.get(&dan, "/api/x").await.status, 200, "Dan is in");
    std::fs::write(&setup.peers, &with_bob).unwrap();
    let same_second = mtime_secs(&setup.peers) == first_second;
    wait_swapped(&setup, &dan, &bob, "same length again: Dan out, Bob in").await;
    eprintln!("the two same-length writes were in the same second: {same_second}");
    assert_eq!(inode(&setup.peers), first_inode, "written in place");
    assert_eq!(reloads(&running, "success"), 2.0);

    // (b) Touched, and rewritten with the same content: each is read (the metadata changed)
    // and neither reloads (the content did not).
    for (i, touch) in ["touch", "same content"].iter().enumerate() {
        // One more for the test's own open of the file.
        let read_before = opens.count() + 1;
        if i == 0 {
            std::fs::File::options()
                .write(true)
                .open(&setup.peers)
                .unwrap()
                .set_modified(SystemTime::now())
                .unwrap();
        } else {
            std::fs::write(&setup.peers, &with_bob).unwrap();
        }
        eventually(
            RELOAD_LIMIT,
            &format!("the {touch} is looked at"),
            || async { (opens.count() > read_before).then_some(()) },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(reloads(&running, "success"), 2.0, "{touch}: no reload");
        assert_eq!(setup.get(&bob, "/api/x").await.status, 200);
    }

    // (c) Saved the way editors do: a temporary file, renamed onto the peers file.
    write_by_rename(&setup.peers, &peers_yaml(&[&carol]));
    wait_swapped(
        &setup,
        &bob,
        &carol,
        "rename onto the file: Bob out, Carol in",
    )
    .await;
    assert_eq!(reloads(&running, "success"), 3.0);
    assert_eq!(reloads(&running, "failure"), 0.0);
}

/// A nonce is remembered for the `max_age` in force when it was accepted. A reload that
/// raises `max_age` must not let a signature accepted under the shorter one, whose nonce is
/// forgotten, be accepted a second time under the longer one (an audit's finding: the same
/// bytes were accepted again 13 s later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_max_age_by_reload_reopens_no_replay() {
    let _signals = SIGNALS.read().await;
    let app = EchoApp::start();
    let bob = Key::new("Bob");
    let setup = Setup::new(
        app.addr(),
        &[&bob],
        "reload: { poll_interval: 1h }\nsignatures: { max_age: 3s }\n",
    );
    let running = setup.start();
    let captured = signed_get(&setup.authority(), &bob, "/api/transfer").to_bytes();
    let send = |bytes: Vec<u8>| async move {
        raw_request(setup.inbound, None, &bytes)
            .await
            .expect("the gateway answers")
    };
    assert_eq!(send(captured.clone()).await.status, 200);
    let again = send(captured.clone()).await;
    assert_problem(&again, 401, "replayed");

    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("max_age: 3s", "max_age: 300s");
    write_by_rename(&setup.config, &text);
    peergate::reload::reload_now(running.shared(), &setup.config).expect("applied");
    // Past the 3 s its nonce was remembered for, and well within the new 300 s.
    tokio::time::sleep(Duration::from_millis(4_200)).await;
    let replayed = send(captured).await;
    assert_problem(&replayed, 401, "replayed");
    assert!(
        replayed.text().contains("max_age was raised"),
        "{}",
        replayed.text()
    );
    // A signature made now gets the new age.
    assert_eq!(setup.get(&bob, "/api/transfer").await.status, 200);
    assert_eq!(app.count(), 2);
}
