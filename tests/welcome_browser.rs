//! The welcome page in a real browser: headless Chromium loads it from a running instance,
//! and the test checks the rendered DOM, takes screenshots at phone and desktop sizes, and
//! scans Chromium's log for console messages (script errors, CSP violations, failed loads).
//!
//! Chromium is required: CI installs the Debian package `chromium` (see `.ci/run`). Without it
//! this test fails rather than skips, so a missing browser is never mistaken for a pass. Set
//! `PEERGATE_CHROMIUM` to use another binary.

mod instance;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use instance::{Instance, Options};

const PAGE: &str = "/.well-known/peergate/profile";

const PROFILE: &str = r#"# Hi, I'm Alice

I run a small server at home: a photo album for the family, a shared calendar, and a
notebook I sync between my laptop and phone. Friends who run **peergate** can reach them
directly, every request signed.

## What you can do here

- Look at the family album (if I've added you as a peer)
- Send me a note through the notebook app
- Ask for an invite: [alice@example.org](mailto:alice@example.org)

> Keys are compared in person or by phone, never just by email.

| service  | path       |
| -------- | ---------- |
| album    | `/album`   |
| notebook | `/notes`   |

More about me on [my website](https://alice.example.org).
"#;

/// A profile that tries every trick: whatever survives sanitizing would show up as a CSP
/// violation or a script error in the console.
const HOSTILE: &str = r#"# Totally normal

<script>console.error("script ran")</script>

<img src=x onerror="console.error('onerror ran')">

<img src="http://insecure.example/x.png">

[click](javascript:console.error('link'))

<a href="JaVaScRiPt:console.error('link2')">sneaky</a>

<div onmouseover="console.error('hover')" style="background:url(http://x.example/y)">styled</div>

<iframe src="https://evil.example"></iframe>
<object data="x.swf"></object>
<form action="https://evil.example"><input name=q></form>
"#;

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("PEERGATE_CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty());
        if let Some(path) = found {
            return PathBuf::from(path);
        }
    }
    panic!(
        "headless Chromium is needed for this test and was not found: install it (Debian: apt-get install -y chromium), or set PEERGATE_CHROMIUM"
    );
}

struct Run {
    stdout: String,
    stderr: String,
}

/// Runs Chromium headless with the flags this workplace needs and a fresh profile directory,
/// bounded in time.
fn run_chromium(args: &[String]) -> Run {
    let profile = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match child.try_wait().unwrap() {
            Some(status) => {
                let run = Run {
                    stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
                    stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                };
                assert!(
                    status.success(),
                    "chromium failed ({status}):\n{}",
                    run.stderr
                );
                return run;
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium did not finish within 90 s:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Console messages in Chromium's log (`--enable-logging=stderr`): `...:CONSOLE:...] "msg"`.
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

fn dump_dom(url: &str) -> Run {
    run_chromium(&["--dump-dom".to_string(), url.to_string()])
}

fn screenshot(url: &str, path: &Path, width: u32, height: u32, dark: bool) {
    let _ = std::fs::remove_file(path);
    let mut args = vec![
        format!("--screenshot={}", path.display()),
        format!("--window-size={width},{height}"),
    ];
    if dark {
        args.push("--force-dark-mode".into());
        args.push("--blink-settings=preferredColorScheme=0".into());
    }
    args.push(url.to_string());
    let run = run_chromium(&args);
    let png = std::fs::read(path)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}\n{}", path.display(), run.stderr));
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        path.display()
    );
    assert!(
        png.len() > 5_000,
        "{} is suspiciously small",
        path.display()
    );
    let console = console_lines(&run.stderr);
    assert!(console.is_empty(), "console output: {console:#?}");
}

/// Text content of an HTML fragment: tags dropped, the few entities we use decoded.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn console_logging_is_seen() {
    // The control for the checks below: a page that does log must be caught, or "no console
    // output" would prove nothing.
    let run = dump_dom("data:text/html,<script>console.error('peergate-probe')</script>");
    let console = console_lines(&run.stderr);
    assert!(
        console.iter().any(|l| l.contains("peergate-probe")),
        "chromium's console log is not visible; stderr:\n{}",
        run.stderr
    );
}

#[test]
fn welcome_page_renders_in_a_browser() {
    let alice = Instance::start(Options {
        name: "Alice Example".into(),
        host: "127.0.0.1".into(),
        tls: false,
        profile: Some(PROFILE.into()),
        ..Options::default()
    });
    let url = format!("{}{PAGE}", alice.url());
    let run = dump_dom(&url);
    let dom = &run.stdout;
    let text = text_of(dom);
    for expected in [
        "Alice Example",
        alice.public.short_id(),
        alice.public.key_id(),
        "Hi, I'm Alice",
        "What you can do here",
        "Look at the family album",
        "Keys are compared in person",
        "notebook /notes",
        "my website",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} not in the page text:\n{text}"
        );
    }
    assert!(
        dom.contains("<title>Alice Example · peergate</title>"),
        "{dom}"
    );
    assert!(!dom.to_ascii_lowercase().contains("<script"), "{dom}");
    let console = console_lines(&run.stderr);
    assert!(console.is_empty(), "console output: {console:#?}");

    let dir = screenshot_dir();
    screenshot(
        &url,
        &dir.join("welcome-phone-390x844.png"),
        390,
        844,
        false,
    );
    screenshot(
        &url,
        &dir.join("welcome-desktop-1280x800.png"),
        1280,
        800,
        false,
    );
    screenshot(
        &url,
        &dir.join("welcome-phone-dark-390x844.png"),
        390,
        844,
        true,
    );
    // The whole page, for a person to look at (the Connect card is below the fold).
    screenshot(
        &url,
        &dir.join("welcome-phone-full-390x1700.png"),
        390,
        1700,
        false,
    );
    screenshot(
        &url,
        &dir.join("welcome-desktop-full-1280x1400.png"),
        1280,
        1400,
        false,
    );
    eprintln!("screenshots in {}", dir.display());

    // Nothing of this reached the app.
    assert_eq!(alice.app.count(), 0);
}

#[test]
fn without_a_profile_the_page_still_introduces_its_owner() {
    let bob = Instance::start(Options {
        name: "Bob".into(),
        host: "127.0.0.1".into(),
        tls: false,
        profile_path: Some("/".into()),
        ..Options::default()
    });
    let url = format!("{}/", bob.url());
    let run = dump_dom(&url);
    let text = text_of(&run.stdout);
    assert!(text.contains("Bob"), "{text}");
    assert!(text.contains(bob.public.short_id()), "{text}");
    assert!(text.contains("has not written a profile yet"), "{text}");
    assert!(console_lines(&run.stderr).is_empty(), "{}", run.stderr);
    screenshot(
        &url,
        &screenshot_dir().join("welcome-empty-390x844.png"),
        390,
        844,
        false,
    );
}

#[test]
fn hostile_profile_runs_nothing_in_the_browser() {
    let eve = Instance::start(Options {
        name: "Eve".into(),
        host: "127.0.0.1".into(),
        tls: false,
        profile: Some(HOSTILE.into()),
        ..Options::default()
    });
    let url = format!("{}{PAGE}", eve.url());
    let run = dump_dom(&url);
    let dom = run.stdout.to_ascii_lowercase();
    for bad in [
        "<script",
        "onerror",
        "onmouseover",
        "javascript:",
        "<iframe",
        "<object",
        "<form",
        "<input",
        "http://insecure",
        "style=\"background",
    ] {
        assert!(!dom.contains(bad), "{bad} in the DOM:\n{}", run.stdout);
    }
    assert!(text_of(&run.stdout).contains("Totally normal"));
    let console = console_lines(&run.stderr);
    assert!(console.is_empty(), "console output: {console:#?}");
}
