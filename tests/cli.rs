//! The command line as a person uses it: the real binary, real files.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn peergate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peergate"))
        .args(args)
        .output()
        .expect("run peergate")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keygen_then_id_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let key_s = key.to_str().unwrap();
    let out = peergate(&["keygen", "-o", key_s]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let keygen_key_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key id"))
        .map(|s| s.trim().to_string())
        .expect("keygen prints the key id");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key must be readable by its owner only");
    }
    assert!(fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));

    let out = peergate(&["id", "-k", key_s]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.is_empty(),
        "a 0600 key loads without warnings: {stderr}"
    );
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|s| s.split_whitespace().next().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("id prints {name}: {stdout}"))
    };
    assert_eq!(field("key id"), keygen_key_id);
    let peer_id = field("peer ID");
    assert_eq!(peer_id.len(), 103);
    assert_eq!(field("short ID"), peer_id[..6]);
    // What a peer pastes must parse back to the same identity.
    let spki = field("public key");
    let parsed = peergate::identity::PublicIdentity::parse(&spki).unwrap();
    assert_eq!(parsed.key_id(), keygen_key_id);
    assert!(stdout.contains("-----BEGIN PUBLIC KEY-----"));
    assert!(stdout.contains(&format!("public_key: \"{spki}\"")));
}

#[test]
fn keygen_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let key_s = key.to_str().unwrap();
    assert!(peergate(&["keygen", "-o", key_s]).status.success());
    let before = fs::read(&key).unwrap();
    let out = peergate(&["keygen", "-o", key_s]);
    assert_eq!(out.status.code(), Some(2), "a bad argument");
    assert!(text(&out).1.contains("--force"), "{}", text(&out).1);
    assert_eq!(fs::read(&key).unwrap(), before, "the old key is untouched");
    assert!(peergate(&["keygen", "-o", key_s, "--force"])
        .status
        .success());
    assert_ne!(fs::read(&key).unwrap(), before);
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    // --force replaces a key file, nothing else: a symbolic link would stop being one (the key
    // it points to left as it was), a FIFO or a device would become a file.
    let link = dir.path().join("link.pem");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let kept = fs::read(&key).unwrap();
    for (target, what) in [
        (&link, "a symbolic link"),
        (&fifo, "a device, FIFO or socket"),
        (&dir.path().to_path_buf(), "a directory"),
    ] {
        let out = peergate(&["keygen", "-o", target.to_str().unwrap(), "--force"]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(what) && stderr.contains("not a key file"),
            "{stderr}"
        );
    }
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!fs::symlink_metadata(&fifo).unwrap().file_type().is_file());
    assert_eq!(fs::read(&key).unwrap(), kept);
    fs::remove_file(&link).unwrap();
    fs::remove_file(&fifo).unwrap();

    // A directory that does not exist yet is named as what is missing (it was "k.pem: No such
    // file or directory", the file being made).
    let missing = dir.path().join("etc/peergate");
    let key = missing.join("identity.pem");
    let out = peergate(&["keygen", "-o", key.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the directory {} does not exist",
            missing.display()
        )) && stderr.contains("mkdir -p"),
        "{stderr}"
    );
    assert!(!missing.exists());
}

#[test]
fn id_warns_about_a_readable_key_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let key_s = key.to_str().unwrap();
    assert!(peergate(&["keygen", "-o", key_s]).status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let out = peergate(&["id", "-k", key_s]);
        assert!(out.status.success());
        assert!(text(&out).1.contains("chmod 600"), "{}", text(&out).1);
    }
    let cases = [
        ("missing.pem", None, "No such file"),
        ("garbage.pem", Some("hello"), "no PEM block"),
        (
            "rsa.pem",
            Some("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"),
            "RSA PRIVATE KEY",
        ),
        (
            "p256.pem",
            // A PKCS#8 P-256 key: right format, wrong key type.
            Some("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\nOF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n-----END PRIVATE KEY-----\n"),
            "not an Ed25519 key",
        ),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        if let Some(content) = content {
            fs::write(&path, content).unwrap();
        }
        let out = peergate(&["id", "-k", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}: bad input");
        let stderr = text(&out).1;
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(stderr.contains(name), "the error names the file: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Not a file at all, or far too large for a key: bad input too, at once (a FIFO used to
    // make `id` wait for a writer forever).
    let big = dir.path().join("big.pem");
    fs::write(&big, vec![b'A'; 2 << 20]).unwrap();
    let fifo = dir.path().join("fifo.pem");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for path in [dir.path(), Path::new("/dev/null"), &big, &fifo] {
        let out = peergate(&["id", "-k", path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            path.display(),
            text(&out).1
        );
    }
    let out = peergate(&["check", "-c", fifo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
}

#[test]
fn check_passes_on_the_example_config() {
    let out = peergate(&["check", "-c", "config/peergate.yaml"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for expected in [
        "OK",
        "1tkrc7",
        "inbound",
        "outbound",
        "admin",
        "/public/*",
        "Bob",
        "Carol's NAS",
        "allow GET,POST /api/*",
        "clients    at most 4096 connections on each of inbound and outbound",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn check_reports_a_typo_with_key_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let example = fs::read_to_string("config/peergate.yaml").unwrap();
    let broken = example.replacen("  clock_skew: 30s", "  clock_skwe: 30s", 1);
    let line = broken
        .lines()
        .position(|l| l.contains("clock_skwe"))
        .unwrap()
        + 1;
    let cfg = dir.path().join("peergate.yaml");
    fs::write(&cfg, broken).unwrap();
    for f in ["example-identity.pem", "peers.yaml"] {
        fs::copy(Path::new("config").join(f), dir.path().join(f)).unwrap();
    }
    let out = peergate(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out).1;
    let expected = format!(
        "{}:{line}:3: signatures: unknown field `clock_skwe`",
        cfg.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in {stderr}"
    );
}

#[test]
fn run_without_a_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_peergate"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out).1;
    assert!(stderr.contains("peergate.yaml: cannot read"), "{stderr}");
}

#[test]
fn help_lists_the_verbs() {
    let out = peergate(&["--help"]);
    let stdout = text(&out).0;
    for verb in ["run", "keygen", "id", "check"] {
        assert!(stdout.contains(verb), "{stdout}");
    }
}

/// Kills the child when the test ends, passed or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `listen.threads` is what the running process starts: that many runtime threads for each
/// proxy listener and one for the admin listener (counted by thread name in `/proc`).
#[cfg(target_os = "linux")]
#[test]
fn run_starts_listen_threads_for_each_proxy_listener() {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    assert!(peergate(&["keygen", "-o", key.to_str().unwrap()])
        .status
        .success());
    let (inbound, outbound, admin) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("peergate.yaml");
    fs::write(
        &cfg,
        format!(
            "identity: {{ key_file: k.pem, hosts: [localhost] }}\n\
             listen: {{ inbound: \"127.0.0.1:{inbound}\", outbound: \"127.0.0.1:{outbound}\", admin: \"127.0.0.1:{admin}\", threads: 3 }}\n\
             app: {{ upstream: \"127.0.0.1:9\" }}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let out = fs::File::create(&log).unwrap();
    let child = Child(
        Command::new(env!("CARGO_BIN_EXE_peergate"))
            .args(["run", "-c", cfg.to_str().unwrap()])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", outbound)).is_err()
    {
        assert!(
            Instant::now() < deadline,
            "peergate did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Linux keeps 15 bytes of a thread's name. A thread started from a runtime thread carries
    // that thread's name until it sets its own (Pingora starts its timer thread from the first
    // one that times a read), so the names are read again until they settle.
    let expected = [
        ("peergate inboun", 3),
        ("peergate outbou", 3),
        ("peergate-admin", 1),
    ];
    loop {
        let mut threads: HashMap<String, usize> = HashMap::new();
        for task in fs::read_dir(format!("/proc/{}/task", child.0.id())).unwrap() {
            let Ok(comm) = fs::read_to_string(task.unwrap().path().join("comm")) else {
                continue; // a thread that ended meanwhile
            };
            *threads.entry(comm.trim().to_string()).or_default() += 1;
        }
        if expected
            .iter()
            .all(|(name, count)| threads.get(*name) == Some(count))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{threads:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The start line says it too (log lines are written by a thread of their own, soon after).
    loop {
        let text = fs::read_to_string(&log).unwrap();
        if text.contains(&format!(
            ", outbound 127.0.0.1:{outbound}, admin 127.0.0.1:{admin}, "
        )) && text.contains("3 threads per proxy listener")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no start line in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A listener address that is taken, or TLS files that do not load, stop `run` at once with the
/// setting named. Pingora would retry a taken address every second, or panic on its listener
/// thread over the TLS files, while the process ran on without that listener.
#[test]
fn run_refuses_to_start_without_every_listener() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    assert!(peergate(&["keygen", "-o", key.to_str().unwrap()])
        .status
        .success());
    fs::write(dir.path().join("empty.pem"), "").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let cfg = dir.path().join("peergate.yaml");
    let run = |inbound: u16, tls: &str| {
        let (outbound, admin) = (free_port(), free_port());
        fs::write(
            &cfg,
            format!(
                "identity: {{ key_file: k.pem, hosts: [localhost] }}\n\
                 listen: {{ inbound: \"127.0.0.1:{inbound}\", outbound: \"127.0.0.1:{outbound}\", admin: \"127.0.0.1:{admin}\" }}\n\
                 app: {{ upstream: \"127.0.0.1:9\" }}\n{tls}"
            ),
        )
        .unwrap();
        let mut child = Child(
            Command::new(env!("CARGO_BIN_EXE_peergate"))
                .args(["run", "-c", cfg.to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "peergate run did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status.code(), stderr)
    };

    let (code, stderr) = run(taken_port, "");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "listen.inbound: cannot listen on 127.0.0.1:{taken_port}"
        )) && stderr.contains("another process listens there")
            && stderr.contains("or set listen.inbound to a free address"),
        "{stderr}"
    );

    let (code, stderr) = run(
        free_port(),
        "tls: { cert_file: empty.pem, key_file: k.pem }\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("peergate.yaml:4:19: tls.cert_file: ")
            && stderr.contains("holds no certificate"),
        "{stderr}"
    );
    drop(taken);
}

/// `id -c` prints the `url` the identity document advertises: the first host's own port when it
/// names one (the port peers use, behind a Service or a load balancer), else the inbound
/// listener's, and no port when that is the scheme's default (it used to write `:443`).
#[test]
fn id_with_a_config_prints_the_url_the_identity_document_advertises() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    assert!(peergate(&["keygen", "-o", key.to_str().unwrap()])
        .status
        .success());
    let cfg = dir.path().join("peergate.yaml");
    for (hosts, inbound, url) in [
        ("[\"alice.test:443\"]", 8443, "https://alice.test\n"),
        ("[\"alice.test\"]", 8443, "https://alice.test:8443\n"),
        ("[\"alice.test\"]", 443, "https://alice.test\n"),
        (
            "[\"alice.test:8080\", \"localhost\"]",
            443,
            "https://alice.test:8080\n",
        ),
    ] {
        fs::write(
            &cfg,
            format!(
                "identity: {{ key_file: k.pem, hosts: {hosts} }}\n\
                 listen: {{ inbound: \"127.0.0.1:{inbound}\", outbound: \"127.0.0.1:1\", admin: \"127.0.0.1:2\" }}\n\
                 app: {{ upstream: \"127.0.0.1:9\" }}\n"
            ),
        )
        .unwrap();
        let out = peergate(&["id", "-c", cfg.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains(&format!("url: {url}")), "{hosts}: {stdout}");
    }
}

/// `peergate` typed where there is no `peergate.yaml` says how to go on.
#[test]
fn a_missing_configuration_points_the_way() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&[][..], &["check"][..], &["peer", "list"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_peergate"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("peergate.yaml: cannot read: ")
                && stderr.contains("-c FILE")
                && stderr.contains("peergate demo"),
            "{args:?}: {stderr}"
        );
    }
}
