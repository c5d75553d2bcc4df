//! Every kind of bad configuration is refused with the file, line and column of the value at
//! fault, and a message that names what is wrong.

use std::fs;
use std::path::{Path, PathBuf};

use peergate::config::{self, Access, ConfigError};

/// RFC 9421's test key, as our own identity.
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";
const BOB: &str = "MCowBQYDK2VwAyEAdY32uFUJ8Srv+Aqzc+7DCkhitAMAFN7usLv8M1KN4wM=";
const CAROL: &str = "MCowBQYDK2VwAyEAHM9zcYTHhtwnAiAk/3Uwezx0wPElEqLdA/gYdI0BZIA=";
/// Two different keys whose short IDs are both `sfvk63` (found by
/// `cargo run --release --example find_short_id_collision`).
const CLASH_A: &str = "ngqH4zhGD9_slL5j1W8f5bQJrGuoKuEp9kq50QVqFvA";
const CLASH_B: &str = "hdHp_f17AT0K3abOUJz5CKZ_GbJNOvQ00tsnbCKfetc";

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        let dir = Dir(tempfile::tempdir().unwrap());
        dir.write("id.pem", KEY_PEM);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path("id.pem"), fs::Permissions::from_mode(0o600)).unwrap();
        }
        dir
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, text).unwrap();
        p
    }
}

fn minimal(extra: &str) -> String {
    format!(
        "identity:\n  key_file: id.pem\n  hosts: [\"alice.example.org\"]\napp:\n  upstream: \"127.0.0.1:3000\"\n{extra}"
    )
}

/// A key and a self-signed certificate for alice.example.org, for the `tls:` files.
fn self_signed() -> (rcgen::KeyPair, rcgen::Certificate) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["alice.example.org".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (key, cert)
}

fn load_err(dir: &Dir, text: &str) -> ConfigError {
    let path = dir.write("peergate.yaml", text);
    match config::load(&path) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_err(err: &ConfigError, file: &Path, line: usize, column: usize, needle: &str) {
    assert_eq!(err.file, file, "{err}");
    assert_eq!(err.position, Some((line, column)), "{err}");
    assert!(
        err.message.contains(needle),
        "expected {needle:?} in: {err}"
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}:{line}:{column}: ", file.display())),
        "{shown}"
    );
}

#[test]
fn minimal_config_loads_with_defaults() {
    let dir = Dir::new();
    let path = dir.write("peergate.yaml", &minimal(""));
    let loaded = config::load(&path).unwrap();
    let c = &loaded.config;
    assert_eq!(c.listen.inbound.to_string(), "0.0.0.0:8443");
    assert_eq!(c.listen.outbound.to_string(), "127.0.0.1:8480");
    assert_eq!(c.listen.admin.to_string(), "127.0.0.1:9464");
    assert_eq!(c.listen.threads, config::Threads::Auto);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(c.listen.threads.count(), cpus);
    assert_eq!(c.listen.idle_timeout.to_string(), "75s");
    assert_eq!(c.listen.max_connections, 4096);
    assert_eq!(c.signatures.replay_cache_size, 1_000_000);
    assert_eq!(c.signatures.lifetime.to_string(), "1m");
    assert_eq!(c.signatures.max_age.to_string(), "5m");
    assert_eq!(c.signatures.clock_skew.to_string(), "30s");
    assert!(c.signatures.require_nonce);
    assert_eq!(c.signatures.max_body.0, 16 << 20);
    assert_eq!(c.identity_headers.id.0.as_str(), "x-peer-id");
    assert_eq!(c.identity.scheme.as_str(), "https");
    assert_eq!(c.identity.display_name(), "alice.example.org");
    assert_eq!(c.routes.len(), 1);
    assert_eq!(
        config::routes::access_for(&c.routes, "/anything"),
        Access::Peers
    );
    assert!(c.peers.0.is_empty());
    assert_eq!(c.identity.key_file.identity.public().short_id(), "1tkrc7");
}

#[test]
fn the_shipped_example_config_passes() {
    let loaded = config::load(Path::new("config/peergate.yaml")).unwrap();
    assert_eq!(loaded.config.peers.0.len(), 2);
}

#[test]
fn unknown_key_names_the_key_line_and_column() {
    let dir = Dir::new();
    let err = load_err(&dir, &minimal("signatures:\n  max_agee: 300s\n"));
    assert_err(
        &err,
        &dir.path("peergate.yaml"),
        7,
        3,
        "unknown field `max_agee`",
    );
    let err = load_err(&dir, &minimal("listn:\n  inbound: \"0.0.0.0:8443\"\n"));
    assert_err(
        &err,
        &dir.path("peergate.yaml"),
        6,
        1,
        "unknown field `listn`",
    );
}

#[test]
fn bad_address() {
    let dir = Dir::new();
    let err = load_err(&dir, &minimal("listen:\n  inbound: \"0.0.0.0:84430\"\n"));
    assert_err(
        &err,
        &dir.path("peergate.yaml"),
        7,
        12,
        "not an address to listen on",
    );
    let text = "identity:\n  key_file: id.pem\n  hosts: [\"alice.example.org\"]\napp:\n  upstream: \"localhost\"\n";
    let err = load_err(&dir, text);
    assert_err(&err, &dir.path("peergate.yaml"), 5, 13, "has no port");
}

#[test]
fn listen_threads_is_auto_or_a_count() {
    let dir = Dir::new();
    for (value, threads) in [("3", 3), ("\"8\"", 8), ("1024", 1024)] {
        let path = dir.write(
            "peergate.yaml",
            &minimal(&format!("listen:\n  threads: {value}\n")),
        );
        let c = config::load(&path).unwrap().config;
        assert_eq!(c.listen.threads, config::Threads::Count(threads), "{value}");
        assert_eq!(c.listen.threads.count(), threads);
    }
    let path = dir.write("peergate.yaml", &minimal("listen:\n  threads: auto\n"));
    let c = config::load(&path).unwrap().config;
    assert_eq!(c.listen.threads, config::Threads::Auto);
    assert!(c.listen.threads.count() >= 1);

    for (value, needle) in [
        (
            "0",
            "0 threads: expected \"auto\" or a number from 1 to 1024",
        ),
        ("-2", "-2 threads"),
        ("1025", "1025 threads"),
        ("99999999999999999999", "expected \"auto\" or a number"),
        ("four", "\"four\": expected \"auto\""),
        ("2.5", "floating point"),
        ("[2]", "sequence"),
    ] {
        let err = load_err(&dir, &minimal(&format!("listen:\n  threads: {value}\n")));
        assert_err(&err, &dir.path("peergate.yaml"), 7, 12, needle);
    }
}

#[test]
fn listen_idle_timeout_must_be_a_second_or_more() {
    let dir = Dir::new();
    let path = dir.write(
        "peergate.yaml",
        &minimal("listen:\n  idle_timeout: 1500ms\n"),
    );
    let c = config::load(&path).unwrap().config;
    // Pingora counts whole seconds: a fraction rounds up.
    assert_eq!(c.listen.idle_timeout.whole_seconds(), 2);
    for short in ["0s", "999ms"] {
        let err = load_err(
            &dir,
            &minimal(&format!("listen:\n  idle_timeout: {short}\n")),
        );
        assert_err(
            &err,
            &dir.path("peergate.yaml"),
            7,
            17,
            &format!("listen.idle_timeout {short} is too short; use at least 1s"),
        );
    }
}

/// A count that is not a whole number says so in words (serde's own message says "usize").
#[test]
fn a_count_that_is_not_a_whole_number_says_so() {
    let dir = Dir::new();
    for (value, needle) in [
        ("-1", "-1 is below zero; expected a whole number, e.g. 4096"),
        (
            "many",
            "invalid type: string \"many\", expected a whole number, e.g. 4096",
        ),
        ("1.5", "expected a whole number, e.g. 4096"),
        (
            "99999999999999999999",
            "99999999999999999999 is too large a number",
        ),
    ] {
        for (setting, column) in [
            ("listen: { max_connections: ", 28),
            ("signatures: { replay_cache_size: ", 34),
        ] {
            let err = load_err(&dir, &minimal(&format!("{setting}{value} }}\n")));
            assert_err(&err, &dir.path("peergate.yaml"), 6, column, needle);
            assert!(!err.to_string().contains("usize"), "{err}");
        }
    }
}

/// Checks made once the whole file is read (a floor, one setting against another) point at the
/// value too, in block and in flow style.
#[test]
fn checks_after_reading_name_the_line_and_column() {
    let dir = Dir::new();
    let file = dir.path("peergate.yaml");
    for (extra, line, column, needle) in [
        (
            "listen:\n  inbound: \"0.0.0.0:8443\"\n  outbound: \"10.0.0.5:8480\"\n",
            8,
            13,
            "listen.outbound 10.0.0.5:8480 is not a loopback address",
        ),
        (
            "reload: { poll_interval: 50ms }\n",
            6,
            26,
            "reload.poll_interval 50ms is too short",
        ),
        (
            "signatures:\n  max_age: 300s\n  replay_cache_size: 0\n",
            8,
            22,
            "signatures.replay_cache_size must be at least 1",
        ),
        (
            "outbound: { timeout: 0s }\n",
            6,
            22,
            "outbound.timeout 0s is too short",
        ),
        (
            "listen: { threads: 2, max_connections: 0 }\n",
            6,
            40,
            "listen.max_connections must be at least 1",
        ),
        (
            "signatures: { max_body: 32MiB, max_buffered: 16MiB }\n",
            6,
            46,
            "signatures.max_buffered (16MiB) is smaller than signatures.max_body (32MiB)",
        ),
        (
            // max_buffered left at its default: the error is at max_body.
            "signatures: { max_body: 300MiB }\n",
            6,
            25,
            "signatures.max_buffered (256MiB) is smaller than signatures.max_body (300MiB)",
        ),
        (
            "signatures: { lifetime: 0s }\n",
            6,
            25,
            "signatures.lifetime 0s is too short",
        ),
    ] {
        let err = load_err(&dir, &minimal(extra));
        assert_err(&err, &file, line, column, needle);
    }
    // With remote clients allowed, the same address loads.
    let path = dir.write(
        "peergate.yaml",
        &minimal(
            "listen: { outbound: \"10.0.0.5:8480\" }\noutbound: { allow_remote_clients: true }\n",
        ),
    );
    assert!(config::load(&path).is_ok());
}

/// A section of the wrong shape (a list or a number where a mapping belongs) says what belongs
/// there in the words of this README, never the name of a Rust type.
/// Two traps of YAML itself, each said in words that lead to the fix: a tab (YAML indents with
/// spaces only; the scanner's own words named the position twice and not the tab), and
/// `yes` for a boolean (YAML 1.2 reads it as a string).
#[test]
fn a_tab_and_a_yes_say_what_to_write() {
    let dir = Dir::new();
    let file = dir.path("peergate.yaml");
    let err = load_err(&dir, &minimal("signatures:\n\trequire_nonce: true\n"));
    assert_err(&err, &file, 7, 1, "(a tab: YAML indents with spaces only)");
    assert!(!err.message.contains(" at line "), "{err}");
    let err = load_err(&dir, &minimal("signatures:\n  require_nonce: yes\n"));
    assert_err(
        &err,
        &file,
        7,
        18,
        "expected a boolean; write true or false",
    );
}

#[test]
fn a_section_of_the_wrong_shape_says_what_belongs_there() {
    let dir = Dir::new();
    let file = dir.path("peergate.yaml");
    let cases = [
        (
            "identity: [1, 2]\n",
            1,
            11,
            "expected a mapping with key_file, hosts",
        ),
        (
            "- identity\n",
            1,
            1,
            "expected a mapping of peergate settings",
        ),
    ];
    for (text, line, column, needle) in cases {
        let err = load_err(&dir, text);
        assert_err(&err, &file, line, column, needle);
        assert!(!err.message.contains("struct"), "{err}");
    }
    for (extra, line, column, needle) in [
        (
            "listen: 5\n",
            6,
            9,
            "expected a mapping with inbound, outbound",
        ),
        (
            "identity_headers: 3\n",
            6,
            19,
            "expected a mapping with id, name, key_id",
        ),
        (
            "peers: [1]\n",
            6,
            9,
            "expected a peer: a mapping with name, public_key",
        ),
        (
            "routes: [x]\n",
            6,
            10,
            "expected a route: a mapping with path and access",
        ),
    ] {
        let err = load_err(&dir, &minimal(extra));
        assert_err(&err, &file, line, column, needle);
        assert!(!err.message.contains("struct"), "{err}");
    }
    let peers_file = dir.write("peers.yaml", "[]\n");
    let err = load_err(&dir, &minimal("peers_file: peers.yaml\n"));
    assert_err(
        &err,
        &peers_file,
        1,
        1,
        "expected a mapping with a peers: list",
    );
    assert!(!err.message.contains("struct"), "{err}");
}

#[test]
fn bad_duration_and_size() {
    let dir = Dir::new();
    let err = load_err(&dir, &minimal("signatures:\n  lifetime: 60\n"));
    assert_err(&err, &dir.path("peergate.yaml"), 7, 13, "no unit");
    let err = load_err(&dir, &minimal("signatures:\n  max_age: 5 fortnights\n"));
    assert_err(&err, &dir.path("peergate.yaml"), 7, 12, "unknown unit");
    let err = load_err(&dir, &minimal("signatures:\n  max_body: 16MB\n"));
    assert_err(&err, &dir.path("peergate.yaml"), 7, 13, "16MiB");
}

#[test]
fn peer_key_that_does_not_parse() {
    let dir = Dir::new();
    let err = load_err(
        &dir,
        &minimal("peers:\n  - name: Bob\n    public_key: \"not a key\"\n"),
    );
    assert_err(&err, &dir.path("peergate.yaml"), 8, 17, "not base64");
}

#[test]
fn weak_key_is_refused() {
    let dir = Dir::new();
    // The identity point: small order, signatures under it can be forged.
    let err = load_err(
        &dir,
        &minimal("peers:\n  - name: Bob\n    public_key: \"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n"),
    );
    assert_err(&err, &dir.path("peergate.yaml"), 8, 17, "weak");
}

#[test]
fn two_peers_with_one_key() {
    let dir = Dir::new();
    let peers = format!(
        "peers:\n  - name: Bob\n    public_key: \"{BOB}\"\n  - name: Bobby\n    public_key: \"{BOB}\"\n"
    );
    let err = load_err(&dir, &minimal(&peers));
    assert_err(
        &err,
        &dir.path("peergate.yaml"),
        10,
        17,
        "already used by peers[0]",
    );
}

#[test]
fn two_peers_with_one_short_id() {
    let dir = Dir::new();
    let peers = format!(
        "peers:\n  - name: A\n    public_key: \"{CLASH_A}\"\n  - name: B\n    public_key: \"{CLASH_B}\"\n"
    );
    let err = load_err(&dir, &minimal(&peers));
    assert_err(&err, &dir.path("peergate.yaml"), 10, 17, "short ID sfvk63");
}

#[test]
fn duplicates_are_found_across_the_config_and_the_peers_file() {
    let dir = Dir::new();
    let peers_file = dir.write(
        "peers.yaml",
        &format!("peers:\n  - name: Carol\n    public_key: \"{CAROL}\"\n  - name: bob\n    public_key: \"{BOB}\"\n"),
    );
    let inline =
        format!("peers_file: peers.yaml\npeers:\n  - name: Bob\n    public_key: \"{BOB}\"\n");
    let err = load_err(&dir, &minimal(&inline));
    // The first duplicate met in the peers file is the name "bob" (names ignore case).
    assert_err(&err, &peers_file, 4, 11, "already used by peers[0]");
    assert!(err.message.contains("peergate.yaml"), "{err}");
}

#[test]
fn a_repeated_key_is_named_where_it_repeats() {
    let dir = Dir::new();
    // serde_yaml places this error at the start of the mapping holding both keys (7:3 here).
    let err = load_err(
        &dir,
        &minimal("listen:\n  inbound: \"0.0.0.0:8443\"\n  admin: \"127.0.0.1:9090\"\n  inbound: \"0.0.0.0:9443\"\n"),
    );
    assert_err(
        &err,
        &dir.path("peergate.yaml"),
        9,
        3,
        "listen: duplicate field `inbound`",
    );
    let err = load_err(&dir, &minimal("app:\n  upstream: \"127.0.0.1:3001\"\n"));
    assert_err(
        &err,
        &dir.path("peergate.yaml"),
        6,
        1,
        "duplicate field `app`",
    );

    let peers_file = dir.write(
        "peers.yaml",
        &format!("peers:\n  - name: Carol\n    public_key: \"{CAROL}\"\n  - name: bob\n    public_key: \"{BOB}\"\n    url: https://bob.example.org\n    name: robert\n"),
    );
    let err = load_err(&dir, &minimal("peers_file: peers.yaml\n"));
    assert_err(&err, &peers_file, 7, 5, "peers[1]: duplicate field `name`");
}

/// The inbound listener's certificate and key are read with the configuration, so `check`
/// finds what would stop the listener (Pingora used to read them only on its own thread, and
/// panic there while the rest of the process went on running).
#[test]
fn tls_files_that_do_not_load_are_named_with_their_line() {
    let dir = Dir::new();
    let (key, cert) = self_signed();
    let other = rcgen::KeyPair::generate().unwrap();
    dir.write("cert.pem", &cert.pem());
    dir.write("key.pem", &key.serialize_pem());
    dir.write("other-key.pem", &other.serialize_pem());
    dir.write("empty.pem", "");
    let tls =
        |cert: &str, key: &str| minimal(&format!("tls:\n  cert_file: {cert}\n  key_file: {key}\n"));
    let file = dir.path("peergate.yaml");

    let good = dir.write("peergate.yaml", &tls("cert.pem", "key.pem"));
    let loaded = config::load(&good).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.config.tls.unwrap().cert.is_some());

    let err = load_err(&dir, &tls("empty.pem", "key.pem"));
    assert_err(&err, &file, 7, 14, "tls.cert_file: ");
    assert!(err.message.contains("holds no certificate"), "{err}");
    let err = load_err(&dir, &tls("key.pem", "key.pem"));
    assert_err(&err, &file, 7, 14, "holds no certificate");
    let err = load_err(&dir, &tls("cert.pem", "empty.pem"));
    assert_err(&err, &file, 8, 13, "tls.key_file: ");
    assert!(err.message.contains("holds no private key"), "{err}");
    let err = load_err(&dir, &tls("cert.pem", "other-key.pem"));
    assert_err(
        &err,
        &file,
        8,
        13,
        "is not the private key of the certificate in",
    );
}

/// `tls.peer_ca_file` may hold only certificates, and at least one: Pingora reads it when the
/// outbound listener starts and panicked on a private key or a certificate request beside the
/// CA certificate, and a file without a certificate made every call to a peer fail.
#[test]
fn a_peer_ca_file_without_only_certificates_is_named_with_its_line() {
    let dir = Dir::new();
    let (key, cert) = self_signed();
    let csr = rcgen::CertificateParams::new(vec!["bob.example.org".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    dir.write("cert.pem", &cert.pem());
    dir.write("key.pem", &key.serialize_pem());
    dir.write("ca.pem", &cert.pem());
    dir.write(
        "ca-and-key.pem",
        &format!("{}{}", cert.pem(), key.serialize_pem()),
    );
    dir.write("csr.pem", &csr);
    dir.write("empty.pem", "");
    dir.write("garbage.pem", "not a certificate at all\n");
    let tls = |ca: &str| {
        minimal(&format!(
            "tls:\n  cert_file: cert.pem\n  key_file: key.pem\n  peer_ca_file: {ca}\n"
        ))
    };
    let file = dir.path("peergate.yaml");

    let good = dir.write("peergate.yaml", &tls("ca.pem"));
    config::load(&good).unwrap_or_else(|e| panic!("{e}"));
    for (ca, needle) in [
        ("ca-and-key.pem", "holds a private key"),
        ("key.pem", "holds a private key"),
        ("csr.pem", "holds a certificate request"),
        ("empty.pem", "holds no certificate"),
        ("garbage.pem", "holds no certificate"),
    ] {
        let err = load_err(&dir, &tls(ca));
        assert_err(&err, &file, 9, 17, needle);
        assert!(err.message.starts_with("tls.peer_ca_file: "), "{err}");
    }
}

/// `tls:` may hold only `peer_ca_file` (TLS ended in front of peergate, peers on a private CA):
/// the inbound listener speaks plain HTTP. `cert_file` and `key_file` go together.
#[test]
fn tls_with_only_a_peer_ca_file_leaves_the_inbound_listener_plain() {
    let dir = Dir::new();
    let (_, cert) = self_signed();
    dir.write("ca.pem", &cert.pem());
    dir.write("cert.pem", &cert.pem());
    let file = dir.path("peergate.yaml");
    let ok = dir.write("peergate.yaml", &minimal("tls:\n  peer_ca_file: ca.pem\n"));
    let loaded = config::load(&ok).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.config.inbound_tls().is_none());
    assert_eq!(
        loaded.config.peer_ca_file(),
        Some(dir.path("ca.pem").as_path())
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("speaks plain HTTP")),
        "{:?}",
        loaded.warnings
    );

    let err = load_err(&dir, &minimal("tls:\n  cert_file: cert.pem\n"));
    assert_err(
        &err,
        &file,
        7,
        3,
        "tls.cert_file is given without tls.key_file",
    );
    let err = load_err(&dir, &minimal("tls: {}\n"));
    assert_err(&err, &file, 6, 6, "tls: is empty");
}

/// A route with the same path as an earlier one never applies (the first match decides): the
/// configuration loads, with a warning that names both.
#[test]
fn a_route_shadowed_by_an_earlier_same_path_is_warned_about() {
    let dir = Dir::new();
    let path = dir.write(
        "peergate.yaml",
        &minimal(
            "routes:\n  - { path: \"/api/*\", access: peers }\n  - { path: \"/x\", access: public }\n  - { path: \"/api/*\", access: public }\n",
        ),
    );
    let loaded = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let warning = loaded
        .warnings
        .iter()
        .find(|w| w.contains("never applies"))
        .unwrap_or_else(|| panic!("{:?}", loaded.warnings));
    assert!(
        warning.contains("routes[2] (/api/* public)") && warning.contains("routes[0]"),
        "{warning}"
    );
}

/// Our own key on the allowlist is warned about, whichever way the peers are read (as a list
/// for `check`, into the served table for `run`), naming the peer; other peers are not.
#[test]
fn our_own_key_listed_as_a_peer_is_warned_about() {
    const OWN: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
    let dir = Dir::new();
    dir.write(
        "peers.yaml",
        &format!(
            "peers:\n  - {{ name: bob, public_key: \"{BOB}\" }}\n  - {{ name: mirror, public_keys: [\"{CAROL}\", \"{OWN}\"] }}\n"
        ),
    );
    let path = dir.write("peergate.yaml", &minimal("peers_file: peers.yaml\n"));
    let own_key_warnings = |warnings: &[String]| -> Vec<String> {
        warnings
            .iter()
            .filter(|w| w.contains("own key"))
            .cloned()
            .collect()
    };
    let listed = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let served = config::load_serving(&path, None).unwrap_or_else(|e| panic!("{e}"));
    for warnings in [&listed.warnings, &served.warnings] {
        let found = own_key_warnings(warnings);
        assert_eq!(found.len(), 1, "{warnings:?}");
        assert_eq!(
            found[0],
            "peer \"mirror\" has this installation's own key \
             (poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U): requests signed with \
             identity.key_file are accepted as coming from \"mirror\"; list the other side's \
             key (`peergate id` prints it there)"
        );
    }

    dir.write(
        "peers.yaml",
        &format!("peers:\n  - {{ name: bob, public_key: \"{BOB}\" }}\n"),
    );
    let listed = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let served = config::load_serving(&path, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        own_key_warnings(&listed.warnings).is_empty(),
        "{:?}",
        listed.warnings
    );
    assert!(
        own_key_warnings(&served.warnings).is_empty(),
        "{:?}",
        served.warnings
    );
}

/// A peer reached over plain http is warned about with the file it is written in: the
/// warnings are logged under the configuration file's name, and `peer add` writes peers to the
/// peers file, where the operator must look. Both ways of reading the peers are held to it.
#[test]
fn a_plain_http_peer_is_warned_about_in_the_file_that_lists_it() {
    let dir = Dir::new();
    let peers = dir.write(
        "peers.yaml",
        &format!(
            "peers:\n  - {{ name: bob, public_key: \"{BOB}\", url: \"http://bob.test:8443\" }}\n"
        ),
    );
    let path = dir.write(
        "peergate.yaml",
        &minimal(&format!(
            "peers_file: peers.yaml\npeers:\n  - {{ name: carol, public_key: \"{CAROL}\", url: \"http://carol.test\" }}\n"
        )),
    );
    let listed = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let served = config::load_serving(&path, None).unwrap_or_else(|e| panic!("{e}"));
    for warnings in [&listed.warnings, &served.warnings] {
        let plain: Vec<_> = warnings
            .iter()
            .filter(|w| w.contains("plain http"))
            .collect();
        assert_eq!(
            plain,
            [
                "peer \"carol\" is reached over plain http (http://carol.test): requests to it \
                 are signed but not encrypted"
                    .to_string(),
                format!(
                    "peer \"bob\" (in {}) is reached over plain http (http://bob.test:8443): \
                     requests to it are signed but not encrypted",
                    peers.display()
                ),
            ]
            .iter()
            .collect::<Vec<_>>(),
            "{warnings:?}"
        );
    }
}

/// Two listeners that cannot both be bound are refused when the file is read (equal addresses
/// made Pingora abort the process at start).
#[test]
fn listeners_on_one_address_are_refused() {
    let dir = Dir::new();
    let file = dir.path("peergate.yaml");
    let err = load_err(
        &dir,
        &minimal("listen:\n  inbound: \"127.0.0.1:8443\"\n  outbound: \"127.0.0.1:8443\"\n"),
    );
    assert_err(
        &err,
        &file,
        8,
        13,
        "listen.outbound 127.0.0.1:8443 overlaps listen.inbound",
    );
    // The wildcard address covers every other address on its port.
    let err = load_err(
        &dir,
        &minimal("listen:\n  inbound: \"0.0.0.0:9000\"\n  admin: \"127.0.0.1:9000\"\n"),
    );
    assert_err(
        &err,
        &file,
        8,
        10,
        "listen.admin 127.0.0.1:9000 overlaps listen.inbound",
    );
    // Against a default (admin is 127.0.0.1:9464): named at the setting that is written.
    let err = load_err(&dir, &minimal("listen:\n  outbound: \"127.0.0.1:9464\"\n"));
    assert_err(
        &err,
        &file,
        7,
        13,
        "listen.admin 127.0.0.1:9464 overlaps listen.outbound",
    );
    // Two specific addresses may share a port.
    let ok = dir.write(
        "peergate.yaml",
        &minimal("listen:\n  inbound: \"127.0.0.2:8480\"\n"),
    );
    config::load(&ok).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn route_pattern_that_does_not_parse() {
    let dir = Dir::new();
    let err = load_err(
        &dir,
        &minimal("routes:\n  - { path: \"/api/*/x\", access: peers }\n"),
    );
    assert_err(&err, &dir.path("peergate.yaml"), 7, 13, "trailing /*");
    let err = load_err(
        &dir,
        &minimal("routes:\n  - { path: \"/x\", access: everyone }\n"),
    );
    assert_err(
        &err,
        &dir.path("peergate.yaml"),
        7,
        27,
        "unknown variant `everyone`",
    );
}

#[test]
fn empty_hosts() {
    let dir = Dir::new();
    let text = "identity:\n  key_file: id.pem\n  hosts: []\napp:\n  upstream: \"127.0.0.1:3000\"\n";
    let err = load_err(&dir, text);
    assert_err(&err, &dir.path("peergate.yaml"), 3, 10, "list is empty");
    let text = "identity:\n  key_file: id.pem\n  hosts:\napp:\n  upstream: \"127.0.0.1:3000\"\n";
    let err = load_err(&dir, text);
    assert!(err.message.contains("list is empty"), "{err}");
}

#[test]
fn missing_required_keys_are_named() {
    let dir = Dir::new();
    let err = load_err(
        &dir,
        "identity:\n  key_file: id.pem\napp:\n  upstream: \"127.0.0.1:3000\"\n",
    );
    assert!(err.message.contains("missing field `hosts`"), "{err}");
    assert!(err.position.is_some(), "{err}");
    let err = load_err(
        &dir,
        "identity:\n  key_file: id.pem\n  hosts: [a.example]\n",
    );
    assert!(err.message.contains("missing field `app`"), "{err}");
}

#[test]
fn key_file_problems_point_at_key_file() {
    let dir = Dir::new();
    let text = "identity:\n  key_file: nope.pem\n  hosts: [a.example]\napp:\n  upstream: \"127.0.0.1:3000\"\n";
    let err = load_err(&dir, text);
    assert_err(&err, &dir.path("peergate.yaml"), 2, 13, "peergate keygen");
    dir.write(
        "pub.pem",
        &format!("-----BEGIN PUBLIC KEY-----\n{BOB}\n-----END PUBLIC KEY-----\n"),
    );
    let text = text.replace("nope.pem", "pub.pem");
    let err = load_err(&dir, &text);
    assert_err(&err, &dir.path("peergate.yaml"), 2, 13, "public key");
}

#[test]
fn peer_without_key_and_bad_url_and_bad_method() {
    let dir = Dir::new();
    let err = load_err(
        &dir,
        &minimal("peers:\n  - name: Bob\n    url: https://bob.example.org\n"),
    );
    assert!(err.message.contains("no public_key"), "{err}");
    let err = load_err(
        &dir,
        &minimal(&format!(
            "peers:\n  - name: Bob\n    public_key: \"{BOB}\"\n    url: ftp://bob\n"
        )),
    );
    assert_err(&err, &dir.path("peergate.yaml"), 9, 10, "https://");
    let err = load_err(
        &dir,
        &minimal(&format!(
            "peers:\n  - name: Bob\n    public_key: \"{BOB}\"\n    allow: {{ methods: [\"GET POST\"] }}\n"
        )),
    );
    assert_err(
        &err,
        &dir.path("peergate.yaml"),
        9,
        24,
        "not an HTTP method",
    );
}

#[test]
fn identity_headers_must_be_distinct_and_not_reserved() {
    let dir = Dir::new();
    let err = load_err(
        &dir,
        &minimal("identity_headers:\n  id: X_Peer\n  name: x-peer\n"),
    );
    assert_err(
        &err,
        &dir.path("peergate.yaml"),
        7,
        3,
        "three different headers; id (x_peer) and name (x-peer) are one header, as case, `-`, \
         `_` and other punctuation do not tell headers apart",
    );
    let err = load_err(&dir, &minimal("identity_headers:\n  id: Content-Length\n"));
    assert_err(&err, &dir.path("peergate.yaml"), 7, 7, "relies on");
}

#[test]
fn renamed_identity_headers_and_inline_peers_load() {
    let dir = Dir::new();
    let text = minimal(&format!(
        "identity_headers: {{ id: X-Ptl-Client-Id, name: X-Ptl-Client-Name }}\npeers:\n  - name: Bob\n    public_keys: [\"{BOB}\", \"{CAROL}\"]\n    allow: {{ methods: [get], paths: [\"/api/*\"] }}\n"
    ));
    let path = dir.write("peergate.yaml", &text);
    let loaded = config::load(&path).unwrap();
    let c = loaded.config;
    assert_eq!(c.identity_headers.id.0.as_str(), "x-ptl-client-id");
    assert_eq!(c.identity_headers.key_id.0.as_str(), "x-peer-key-id");
    let bob = &c.peers.0[0];
    assert_eq!(bob.keys().count(), 2);
    assert!(bob.allow.permits(&http::Method::GET, "/api/x"));
    assert!(!bob.allow.permits(&http::Method::POST, "/api/x"));
    assert!(!bob.allow.permits(&http::Method::GET, "/admin"));
}

#[test]
fn empty_and_unreadable_files() {
    let dir = Dir::new();
    let err = load_err(&dir, "   \n");
    assert!(err.message.contains("empty"), "{err}");
    let err = config::load(&dir.path("missing.yaml")).unwrap_err();
    assert!(err.message.contains("cannot read"), "{err}");
    let err = load_err(&dir, "identity: [unclosed\n");
    assert!(err.position.is_some(), "{err}");
}

/// A device given where a file belongs is refused at once, not read: `/dev/zero` as the key or
/// as the configuration used to fill memory until the process was killed.
#[test]
fn devices_in_place_of_files_are_refused_without_reading_them() {
    let dir = Dir::new();
    let err = config::load(Path::new("/dev/zero")).unwrap_err();
    assert!(err.message.contains("not a regular file"), "{err}");

    #[cfg(unix)]
    std::os::unix::fs::symlink("/dev/zero", dir.path("zero.pem")).unwrap();
    let path = dir.write(
        "peergate.yaml",
        "identity:\n  key_file: zero.pem\n  hosts: [\"alice.example.org\"]\napp:\n  upstream: \"127.0.0.1:3000\"\n",
    );
    let err = config::load(&path).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");

    let path = dir.write("peergate.yaml", &minimal("peers_file: /dev/zero\n"));
    assert!(config::load(&path).is_err());
}

/// A byte order mark at the start of a file (some Windows editors write one) is not content.
#[test]
fn a_byte_order_mark_is_not_content() {
    let dir = Dir::new();
    dir.write("id.pem", &format!("\u{feff}{KEY_PEM}"));
    dir.write(
        "peers.yaml",
        &format!("\u{feff}peers:\n  - name: Bob\n    public_key: \"{BOB}\"\n"),
    );
    let path = dir.write(
        "peergate.yaml",
        &format!("\u{feff}{}", minimal("peers_file: peers.yaml\n")),
    );
    let loaded = config::load(&path).unwrap();
    assert_eq!(loaded.config.peers.0.len(), 1);
}
