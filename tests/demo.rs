//! `peergate demo` as a newcomer runs it: the real binary prints a verified exchange, then its
//! curl lines work exactly as printed, and Ctrl-C stops it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn field<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"))
}

/// The short IDs the demo printed for alice and bob.
fn short_ids(out: &str) -> (String, String) {
    let id = |who: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(who) && l.contains("short ID"))
            .and_then(|l| l.split("short ID").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no short ID for {who} in:\n{out}"))
            .to_string()
    };
    (id("alice"), id("bob"))
}

#[test]
fn the_demo_shows_a_verified_exchange_and_its_curl_lines_work() {
    // Once: the exchange, then exit 0.
    let out = Command::new(env!("CARGO_BIN_EXE_peergate"))
        .args(["demo", "--once"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (alice, bob) = short_ids(&stdout);
    assert_eq!(
        field(&stdout, "x-peer-id:"),
        alice,
        "bob's app saw alice's short ID"
    );
    assert_eq!(field(&stdout, "x-peer-name:"), "alice");
    assert!(
        stdout.contains(&format!("x-peer-id: {bob}")),
        "alice's app got bob's identity back"
    );
    assert!(stdout.contains(
        "signature-input: peer=(\"@method\" \"@authority\" \"@path\" \"@query\" \"content-digest\""
    ));
    // Shown whole, as the README shows it: the key id and tag are at the end of the line.
    let input = field(&stdout, "signature-input:");
    let key_id = field(&stdout, "x-peer-key-id:");
    assert!(
        input.ends_with(&format!(
            ";keyid=\"{key_id}\";alg=\"ed25519\";tag=\"peergate\""
        )),
        "{input}"
    );
    assert!(stdout.contains("The signed exchange worked."));

    // Staying up: run every printed curl line as printed, then Ctrl-C.
    assert!(
        Command::new("curl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test runs the demo's curl lines, so it needs curl (apt-get install -y curl)"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_peergate"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed.contains("/metrics | grep") {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo did not print its curl lines:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
    }
    let (alice, bob) = short_ids(&printed);
    let curls: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(curls.len(), 8, "{printed}");
    for line in &curls {
        let out = Command::new("sh").args(["-c", line]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{line} failed: {text}");
        if line.contains("/metrics") {
            assert!(
                text.contains("peergate_requests_total{direction=\"inbound\""),
                "{line}: {text}"
            );
        } else if line.contains("--cacert") {
            assert!(
                text.contains("\"reason\":\"missing_signature\""),
                "{line}: {text}"
            );
        } else if line.ends_with("/peers") {
            assert!(
                text.contains(&format!("\"short_id\":\"{bob}\"")),
                "{line}: {text}"
            );
        } else {
            assert!(
                text.contains(&format!("\"short_id\":\"{alice}\"")),
                "{line}: bob's app saw alice: {text}"
            );
            assert!(
                !text.contains("somebody-else") && !text.contains("mallory"),
                "{line}: a forged identity reached bob's app: {text}"
            );
        }
    }

    // The demo's files, both installations' keys among them, are in a directory of its own
    // that only this user can enter; Ctrl-C removes it.
    let ca = curls
        .iter()
        .find_map(|l| l.split_whitespace().skip_while(|w| *w != "--cacert").nth(1))
        .expect("a curl line with --cacert");
    let demo_dir = std::path::Path::new(ca).parent().unwrap().to_path_buf();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&demo_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{}: mode {mode:o}", demo_dir.display());
    }

    let interrupted = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the demo exits 0 on Ctrl-C: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!demo_dir.exists(), "{} was left behind", demo_dir.display());
}
