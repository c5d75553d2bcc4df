//! `peergate peer add | list | remove` as a person uses them: the real binary against real
//! running instances over TLS (test CA via --ca-file), editing real files.

mod instance;
mod support;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use instance::{Instance, Options};
use peergate::identity::Identity;
use support::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn peergate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peergate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run peergate")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Alice's configuration (not running: only its files matter here), with a peers file that
/// a person wrote, comments and all.
struct Alice {
    dir: tempfile::TempDir,
    config: PathBuf,
    peers: PathBuf,
    carol: Identity,
}

fn peers_text(carol: &Identity) -> String {
    format!(
        r#"# Alice's allowlist. Edited by hand and by `peergate peer add`.

peers:
  # Carol runs the family NAS.
  - name: "Carol's NAS"
    public_key: "{}"   # from Carol, compared by phone
    url: https://nas.carol.example.net
    # She may only read.
    allow: {{ methods: [GET] }}

# Keep this comment at the end.
"#,
        carol.public().spki_base64()
    )
}

impl Alice {
    fn new() -> Alice {
        let dir = tempfile::tempdir().unwrap();
        peergate::identity::write_new_key(&dir.path().join("alice.pem"), false).unwrap();
        let carol = Identity::generate();
        let peers = dir.path().join("peers.yaml");
        fs::write(&peers, peers_text(&carol)).unwrap();
        let config = dir.path().join("peergate.yaml");
        fs::write(
            &config,
            "# Alice's gateway\nidentity:\n  key_file: alice.pem\n  name: Alice\n  hosts: [alice.test]\napp:\n  upstream: \"127.0.0.1:3000\"\npeers_file: peers.yaml  # the allowlist\n",
        )
        .unwrap();
        Alice {
            dir,
            config,
            peers,
            carol,
        }
    }

    fn c(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn peers_text(&self) -> String {
        fs::read_to_string(&self.peers).unwrap()
    }
}

fn ca(instance: &Instance) -> &str {
    instance.ca_path.to_str().unwrap()
}

/// `peergate peer add <peer> --yes -c <alice's config> --ca-file <the peer's CA>`.
fn add_with_yes(alice: &Alice, peer: &Instance) -> Output {
    add_trusting(alice, peer, ca(peer))
}

/// `peergate peer add <peer> --yes -c <alice's config> --ca-file <ca_file>`.
fn add_trusting(alice: &Alice, peer: &Instance, ca_file: &str) -> Output {
    peergate(&[
        "peer",
        "add",
        &peer.url(),
        "--yes",
        "-c",
        alice.c(),
        "--ca-file",
        ca_file,
    ])
}

#[test]
fn add_fetches_checks_and_appends_keeping_the_rest_of_the_file() {
    let alice = Alice::new();
    let bob = Instance::start(Options {
        name: "Bob Example".into(),
        host: "bob.test".into(),
        profile: Some("I am Bob.".into()),
        ..Options::default()
    });
    let before = alice.peers_text();
    let url = bob.url();
    let out = peergate(&[
        "peer",
        "add",
        &url,
        "--yes",
        "-c",
        alice.c(),
        "--ca-file",
        ca(&bob),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(bob.public.short_id()), "{stdout}");
    assert!(stdout.contains(bob.public.key_id()), "{stdout}");
    assert!(stdout.contains("Bob Example"), "{stdout}");

    let after = alice.peers_text();
    // Everything that was there is still there, byte for byte, comments included; the new
    // item comes after Carol's and before the closing comment.
    let (head, tail) = before.split_at(before.find("\n# Keep this comment").unwrap());
    assert!(after.starts_with(head), "{after}");
    assert!(after.ends_with(tail), "{after}");
    let added = &after[head.len()..after.len() - tail.len()];
    assert_eq!(
        added,
        format!(
            "  - name: \"Bob Example\"\n    public_key: \"{}\"\n    url: \"{url}\"\n",
            bob.public.spki_base64()
        )
    );
    // It loads, and Bob is on the list with his key, name and URL.
    let loaded = peergate::config::load(&alice.config).unwrap();
    let peers = &loaded.config.peers.0;
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[1].name, "Bob Example");
    assert_eq!(peers[1].primary.key_id(), bob.public.key_id());
    assert_eq!(peers[1].url.as_ref().unwrap().to_string(), url);
    // No temp file left behind.
    let leftovers: Vec<_> = fs::read_dir(alice.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // `peer list` shows both.
    let out = peergate(&["peer", "list", "-c", alice.c()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("SHORT ID"), "{stdout}");
    for col in ["NAME", "URL", "KEY ID"] {
        assert!(lines[0].contains(col), "{stdout}");
    }
    assert!(
        lines[1].starts_with(alice.carol.public().short_id()),
        "{stdout}"
    );
    assert!(lines[1].contains("Carol's NAS") && lines[1].contains("https://nas.carol.example.net"));
    assert!(lines[2].starts_with(bob.public.short_id()), "{stdout}");
    assert!(lines[2].contains(&url) && lines[2].ends_with(bob.public.key_id()));

    // The same key again is refused, and nothing changes.
    let out = peergate(&[
        "peer",
        "add",
        &url,
        "--yes",
        "-c",
        alice.c(),
        "--ca-file",
        ca(&bob),
    ]);
    let (_, stderr) = text(&out);
    // Bad input (the URL names a peer already listed), as `peer remove` of an unknown peer is.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already on the allowlist"), "{stderr}");
    assert_eq!(alice.peers_text(), after);
}

#[test]
fn name_override_and_inline_peers() {
    let dir = tempfile::tempdir().unwrap();
    peergate::identity::write_new_key(&dir.path().join("alice.pem"), false).unwrap();
    let config = dir.path().join("peergate.yaml");
    let original = "identity:\n  key_file: alice.pem\n  hosts: [alice.test]\n\napp:\n  upstream: \"127.0.0.1:3000\"   # the app\n\n# no peers yet\npeers: []\n\nsignatures:\n  max_age: 120s\n";
    fs::write(&config, original).unwrap();
    let dave = Instance::start(Options {
        name: "Dave".into(),
        host: "dave.test".into(),
        ..Options::default()
    });
    let c = config.to_str().unwrap();
    let out = peergate(&[
        "peer",
        "add",
        &dave.url(),
        "--name",
        "Dave's server",
        "-y",
        "-c",
        c,
        "--ca-file",
        ca(&dave),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let after = fs::read_to_string(&config).unwrap();
    assert!(after.starts_with("identity:\n  key_file: alice.pem\n  hosts: [alice.test]\n\napp:\n  upstream: \"127.0.0.1:3000\"   # the app\n\n# no peers yet\npeers:\n  - name: \"Dave's server\"\n"), "{after}");
    assert!(
        after.ends_with("\n\nsignatures:\n  max_age: 120s\n"),
        "{after}"
    );
    let loaded = peergate::config::load(&config).unwrap();
    assert_eq!(loaded.config.peers.0[0].name, "Dave's server");
    assert_eq!(loaded.config.signatures.max_age.0.as_secs(), 120);

    // And removed again, by name, case-insensitively.
    let out = peergate(&["peer", "remove", "dave's SERVER", "--yes", "-c", c]);
    assert!(out.status.success(), "{}", text(&out).1);
    let loaded = peergate::config::load(&config).unwrap();
    assert!(loaded.config.peers.0.is_empty());
}

/// An edit that would not load is refused with the error about the real peers file, not about
/// the temporary copy it was checked in (which is gone by then); the file is unchanged.
#[test]
fn a_refused_add_names_the_real_file() {
    let alice = Alice::new();
    // Bob calls himself by Carol's short ID, which a name may not be.
    let bob = Instance::start(Options {
        name: alice.carol.public().short_id().to_string(),
        host: "bob.test".into(),
        ..Options::default()
    });
    let before = alice.peers_text();
    let out = add_with_yes(&alice, &bob);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("short ID"), "{stderr}");
    assert!(
        !stderr.contains(".peergate-"),
        "the temporary copy: {stderr}"
    );
    assert!(
        stderr.contains(&alice.peers.display().to_string()),
        "{stderr}"
    );
    assert_eq!(alice.peers_text(), before);
}

/// A handle that is one peer's name and another peer's key id is refused, not resolved by file
/// order (which would leave the peer meant to be removed trusted).
#[test]
fn remove_refuses_a_handle_that_names_two_peers() {
    let alice = Alice::new();
    let bob = Identity::generate();
    let carol_key_id = alice.carol.public().key_id().to_string();
    let mut text = alice.peers_text();
    text = text.replace(
        "\n# Keep this comment at the end.\n",
        &format!(
            "  - name: \"{carol_key_id}\"\n    public_key: \"{}\"\n\n# Keep this comment at the end.\n",
            bob.public().spki_base64()
        ),
    );
    fs::write(&alice.peers, &text).unwrap();
    assert!(peergate::config::load(&alice.config).is_ok());
    // After `--`: a key id is base64url, and one in 64 starts with `-` (which clap would take
    // for an option; it says to use `--`).
    let out = peergate(&[
        "peer",
        "remove",
        "--yes",
        "-c",
        alice.c(),
        "--",
        &carol_key_id,
    ]);
    let (_, stderr) = self::text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("more than one peer"), "{stderr}");
    assert_eq!(alice.peers_text(), text, "nothing removed");
    // By short ID it is unambiguous.
    let out = peergate(&[
        "peer",
        "remove",
        alice.carol.public().short_id(),
        "--yes",
        "-c",
        alice.c(),
    ]);
    assert!(out.status.success(), "{}", self::text(&out).1);
    assert!(!alice
        .peers_text()
        .contains(&alice.carol.public().spki_base64()));
}

#[test]
fn remove_by_short_id_and_by_name_and_unknown_peers() {
    let alice = Alice::new();
    let bob = Instance::start(Options {
        name: "Bob".into(),
        host: "bob.test".into(),
        ..Options::default()
    });
    let out = add_with_yes(&alice, &bob);
    assert!(out.status.success(), "{}", text(&out).1);
    let with_bob = alice.peers_text();

    let out = peergate(&["peer", "remove", "nobody", "--yes", "-c", alice.c()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no peer is named \"nobody\""), "{stderr}");
    assert!(stderr.contains("peer list"), "{stderr}");
    assert_eq!(alice.peers_text(), with_bob);

    // Without a terminal and without --yes, nothing is removed (and there is no key id to
    // compare, as there is when adding).
    let out = peergate(&["peer", "remove", "bob", "-c", alice.c()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(
        stderr.contains("checked that it is the peer to remove") && !stderr.contains("key id"),
        "{stderr}"
    );
    assert_eq!(alice.peers_text(), with_bob);

    // A short ID typed in capitals finds its peer, as on the outbound listener.
    let out = peergate(&[
        "peer",
        "remove",
        &bob.public.short_id().to_uppercase(),
        "--yes",
        "-c",
        alice.c(),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        alice.peers_text(),
        peers_text(&alice.carol),
        "back to the original"
    );

    let out = peergate(&["peer", "remove", "Carol's NAS", "--yes", "-c", alice.c()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let left = alice.peers_text();
    assert_eq!(
        left,
        "# Alice's allowlist. Edited by hand and by `peergate peer add`.\n\npeers:\n  # Carol runs the family NAS.\n\n# Keep this comment at the end.\n"
    );
    let loaded = peergate::config::load(&alice.config).unwrap();
    assert!(loaded.config.peers.0.is_empty());

    let out = peergate(&["peer", "list", "-c", alice.c()]);
    assert!(text(&out).0.contains("no peers yet"), "{}", text(&out).0);
}

/// `--ca-file` is held to the rule the gateway holds `tls.peer_ca_file` to: a file with a
/// private key beside the CA certificate is refused as bad input (it was read for its
/// certificate alone, and then the running gateway refused the same file), and so is one
/// with no certificate.
#[test]
fn a_ca_file_the_gateway_would_refuse_is_refused() {
    let alice = Alice::new();
    let bob = Instance::start(Options {
        host: "bob.test".into(),
        ..Options::default()
    });
    let before = alice.peers_text();
    let with_key = alice.dir.path().join("ca-and-key.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    fs::write(
        &with_key,
        format!(
            "{}{}",
            fs::read_to_string(&bob.ca_path).unwrap(),
            key.serialize_pem()
        ),
    )
    .unwrap();
    let empty = alice.dir.path().join("empty.pem");
    fs::write(&empty, "").unwrap();
    for (file, says) in [
        (&with_key, "holds a private key"),
        (&empty, "holds no certificate"),
    ] {
        let out = add_trusting(&alice, &bob, file.to_str().unwrap());
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
        assert_eq!(alice.peers_text(), before);
    }
}

#[test]
fn tls_verification_failure_says_what_to_do() {
    let alice = Alice::new();
    let bob = Instance::start(Options {
        host: "bob.test".into(),
        ..Options::default()
    });
    let before = alice.peers_text();
    // `peer add URL --yes -c alice [more]` fails (exit 1), saying `says`; nothing changes.
    let refused = |url: &str, more: &[&str], says: &str| -> String {
        let out = peergate(&[&["peer", "add", url, "--yes", "-c", alice.c()], more].concat());
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{says:?} in {stderr}");
        assert_eq!(alice.peers_text(), before);
        stderr
    };
    // Another CA than the one that issued Bob's certificate.
    let other = TestCa::new();
    let other_ca = alice.dir.path().join("other-ca.pem");
    fs::write(&other_ca, other.ca_pem()).unwrap();
    refused(
        &bob.url(),
        &["--ca-file", other_ca.to_str().unwrap()],
        &format!(
            "certificate of 127.0.0.1 could not be verified (UnknownIssuer) against --ca-file {}. \
             If 127.0.0.1's certificate comes from another CA, pass that CA's certificate with \
             --ca-file CA.pem",
            other_ca.display()
        ),
    );

    // The wrong CA in the configuration: the message names it, and does not suggest setting
    // what is set.
    let config = fs::read_to_string(&alice.config).unwrap();
    fs::write(
        &alice.config,
        format!("{config}tls:\n  peer_ca_file: other-ca.pem\n"),
    )
    .unwrap();
    let stderr = refused(
        &bob.url(),
        &[],
        &format!(
            "could not be verified (UnknownIssuer) against tls.peer_ca_file {}.",
            other_ca.display()
        ),
    );
    assert!(!stderr.contains("or set tls.peer_ca_file"), "{stderr}");
    fs::write(&alice.config, config).unwrap();

    // https:// to a listener that speaks plain HTTP: the URL to use instead.
    let plain = Instance::start(Options {
        host: "carol.test".into(),
        tls: false,
        ..Options::default()
    });
    let authority = plain.url().replace("http://", "");
    refused(
        &format!("https://{authority}"),
        &[],
        &format!("does not speak TLS: if it listens in plain HTTP, the URL is http://{authority}"),
    );

    // Nothing listening: a clear connection error.
    let dead = support::dead_addr();
    refused(
        &format!("https://{dead}"),
        &[],
        &format!("cannot connect to {dead}"),
    );
}

/// A TLS server that answers every request with `body` as JSON: a peer that lies.
fn fake_peer(dir: &Path, body: String) -> (SocketAddr, PathBuf) {
    let ca = TestCa::new();
    let cert = ca.issue(&["fake.test"]);
    let ca_path = dir.join("fake-ca.pem");
    fs::write(&ca_path, ca.ca_pem()).unwrap();
    let config = cert.server_config(&[b"http/1.1"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    (addr, ca_path)
}

#[test]
fn tampered_identity_documents_are_refused() {
    let alice = Alice::new();
    let before = alice.peers_text();
    let mallory = Identity::generate();
    let bob = Identity::generate();
    let doc = |public_key: String, key_id: &str, short_id: &str, peer_id: &str| {
        serde_json::json!({
            "peer_id": peer_id,
            "short_id": short_id,
            "key_id": key_id,
            "public_key": public_key,
            "alg": "ed25519",
            "name": "Bob",
        })
        .to_string()
    };
    let m = mallory.public();
    let b = bob.public();
    let cases = [
        // Bob's handles, Mallory's key: what an attacker in the middle would serve.
        (
            doc(m.spki_base64(), b.key_id(), b.short_id(), &b.peer_id()),
            "states key id",
        ),
        (
            doc(m.spki_base64(), m.key_id(), b.short_id(), &m.peer_id()),
            "states short ID",
        ),
        (
            doc(m.spki_base64(), m.key_id(), m.short_id(), &b.peer_id()),
            "peer_id",
        ),
        ("{\"hello\":1}".to_string(), "no \"public_key\""),
        ("not json".to_string(), "not a JSON identity document"),
    ];
    for (body, why) in cases {
        let (addr, ca_path) = fake_peer(alice.dir.path(), body);
        let out = peergate(&[
            "peer",
            "add",
            &format!("https://{addr}"),
            "--yes",
            "-c",
            alice.c(),
            "--ca-file",
            ca_path.to_str().unwrap(),
        ]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{why}: {stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert_eq!(alice.peers_text(), before, "{why}");
    }
}

#[test]
fn an_edit_that_would_not_load_never_lands() {
    let alice = Alice::new();
    let bob = Instance::start(Options {
        name: "Carol's NAS".into(),
        host: "bob.test".into(),
        ..Options::default()
    });
    let before = alice.peers_text();
    // The name Bob gives himself is taken: refused before anything is written.
    let out = add_with_yes(&alice, &bob);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--name"), "{stderr}");
    assert_eq!(alice.peers_text(), before);

    // A name that is another peer's short ID passes the text edit but not the configuration's
    // validation: the edited copy is loaded first, so the real file never sees it.
    let carol_short = alice.carol.public().short_id().to_string();
    let out = peergate(&[
        "peer",
        "add",
        &bob.url(),
        "--name",
        &carol_short,
        "--yes",
        "-c",
        alice.c(),
        "--ca-file",
        ca(&bob),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("would not load"), "{stderr}");
    assert!(stderr.contains("peers.yaml:"), "{stderr}");
    assert!(stderr.contains("short ID"), "{stderr}");
    assert_eq!(alice.peers_text(), before);
    let leftovers = fs::read_dir(alice.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0);

    // A list written in flow style is not edited: peergate does not guess.
    let flow = format!(
        "peers: [ {{ name: Carol, public_key: \"{}\" }} ]\n",
        alice.carol.public().spki_base64()
    );
    fs::write(&alice.peers, &flow).unwrap();
    let out = peergate(&[
        "peer",
        "add",
        &bob.url(),
        "--name",
        "Bob",
        "--yes",
        "-c",
        alice.c(),
        "--ca-file",
        ca(&bob),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("block list"), "{stderr}");
    assert!(stderr.contains("peers.yaml"), "{stderr}");
    assert_eq!(fs::read_to_string(&alice.peers).unwrap(), flow);

    // An empty flow list is fine: it becomes a block list.
    fs::write(&alice.peers, "peers: [ ]  # none yet\n").unwrap();
    let out = peergate(&[
        "peer",
        "add",
        &bob.url(),
        "--name",
        "Bob",
        "--yes",
        "-c",
        alice.c(),
        "--ca-file",
        ca(&bob),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(fs::read_to_string(&alice.peers)
        .unwrap()
        .starts_with("peers: # none yet\n  - name: \"Bob\"\n"));
}

/// An edit keeps the peers file's owner, group and mode: a `root:peergate 0640` file edited
/// with `sudo` must stay readable by the service (it became `root:root`). Run as root (as CI
/// runs), the file is handed to another owner and group first; otherwise the caller's own are
/// kept, which is all an unprivileged user can do.
#[cfg(unix)]
#[test]
fn an_edit_keeps_the_owner_group_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let alice = Alice::new();
    let root = fs::metadata(&alice.peers).unwrap().uid() == 0;
    if root {
        std::os::unix::fs::chown(&alice.peers, Some(65534), Some(65533)).unwrap();
    }
    fs::set_permissions(&alice.peers, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::metadata(&alice.peers).unwrap();

    let out = peergate(&["peer", "remove", "Carol's NAS", "--yes", "-c", alice.c()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(!alice.peers_text().contains("Carol's NAS"));
    let after = fs::metadata(&alice.peers).unwrap();
    assert_ne!(
        after.ino(),
        before.ino(),
        "the file was replaced, not edited in place"
    );
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    assert_eq!(after.permissions().mode() & 0o7777, 0o640);
    if root {
        assert_eq!((after.uid(), after.gid()), (65534, 65533));
    }
}

/// A first installation has no peers file yet: `check` says how to start one, and `peer add`
/// starts it with the first peer. Declined, it leaves things as they were: no file, or the
/// empty one. It warns when the URL given is not one of the peer's `identity.hosts` (every
/// call would be refused `wrong_authority`), and that `--ca-file` served the fetch only; both
/// were traps a newcomer audit fell into.
#[test]
fn a_first_peer_starts_the_peers_file_and_add_says_what_calls_will_meet() {
    let alice = Alice::new();
    fs::remove_file(&alice.peers).unwrap();
    let out = peergate(&["check", "-c", alice.c()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("peers.yaml"), "{stderr}");
    assert!(stderr.contains("peers: []"), "{stderr}");
    assert!(stderr.contains("peergate peer add URL"), "{stderr}");
    // In a directory that does not exist, neither `peers: []` nor `peer add` can start it: the
    // error says what is missing instead of pointing at them.
    let config = fs::read_to_string(alice.c()).unwrap();
    fs::write(
        alice.c(),
        config.replace("peers_file: peers.yaml", "peers_file: sub/peers.yaml"),
    )
    .unwrap();
    let out = peergate(&["check", "-c", alice.c()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sub does not exist") && !stderr.contains("peer add"),
        "{stderr}"
    );
    fs::write(alice.c(), config).unwrap();

    let bob = Instance::start(Options {
        name: "Bob".into(),
        host: "bob.test".into(),
        ..Options::default()
    });
    // Declined (no terminal to ask on, no --yes): no file is left behind, and an empty one
    // stays empty.
    let declined = || {
        peergate(&[
            "peer",
            "add",
            &bob.url(),
            "-c",
            alice.c(),
            "--ca-file",
            ca(&bob),
        ])
    };
    let out = declined();
    assert!(!out.status.success(), "{}", text(&out).1);
    assert!(
        !alice.peers.exists(),
        "a declined add left {}",
        alice.peers_text()
    );
    fs::write(&alice.peers, "\n").unwrap();
    let out = declined();
    assert!(!out.status.success(), "{}", text(&out).1);
    assert_eq!(alice.peers_text(), "\n");
    fs::remove_file(&alice.peers).unwrap();

    let out = add_with_yes(&alice, &bob);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(a new file)"), "{stdout}");
    // By address, where Bob signs for bob.test only.
    assert!(stderr.contains("wrong_authority"), "{stderr}");
    assert!(stderr.contains("bob.test"), "{stderr}");
    assert!(stderr.contains("--ca-file"), "{stderr}");
    assert!(stderr.contains("tls.peer_ca_file"), "{stderr}");
    let loaded = peergate::config::load(&alice.config).unwrap();
    let peers = &loaded.config.peers.0;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].primary.key_id(), bob.public.key_id());

    // A URL by one of the peer's hosts, with its CA already trusted: nothing to warn about.
    let carol = Instance::start(Options {
        name: "Carol".into(),
        host: "127.0.0.1".into(),
        ..Options::default()
    });
    let config = fs::read_to_string(&alice.config).unwrap();
    fs::write(
        &alice.config,
        format!("{config}tls: {{ peer_ca_file: {} }}\n", ca(&carol)),
    )
    .unwrap();
    let out = add_with_yes(&alice, &carol);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("(a new file)"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(!stderr.contains("note:"), "{stderr}");
}

/// `--ca-file` is trusted for the fetch only: the note says so unless the configuration's
/// `tls.peer_ca_file` already holds that CA (the same file, a copy, or a bundle with it in),
/// for then calls to the peer will trust it too.
#[test]
fn the_ca_file_note_is_given_only_when_calls_would_not_trust_that_ca() {
    let bob = Instance::start(Options {
        host: "bob.test".into(),
        ..Options::default()
    });
    let note = "was trusted for this fetch only";
    let alice = Alice::new();
    let out = add_with_yes(&alice, &bob);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains(note), "{stderr}");
    assert!(stderr.contains("the system's roots"), "{stderr}");

    // A bundle elsewhere that holds the CA among others.
    let alice = Alice::new();
    let bundle = alice.dir.path().join("bundle.pem");
    let other = TestCa::new().ca_pem().to_string();
    fs::write(
        &bundle,
        format!("{other}{}", fs::read_to_string(ca(&bob)).unwrap()),
    )
    .unwrap();
    let text_before = fs::read_to_string(&alice.config).unwrap();
    fs::write(
        &alice.config,
        format!("{text_before}tls:\n  peer_ca_file: {}\n", bundle.display()),
    )
    .unwrap();
    let out = add_with_yes(&alice, &bob);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains(note), "{stderr}");
}
