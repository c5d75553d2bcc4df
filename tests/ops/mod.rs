//! What the operations tests (reload, shutdown, metrics) share: peers' keys, signed requests
//! (signed as tests/inbound.rs signs them), a gateway directory with a config and a peers file,
//! an in-process gateway, and the admin listener over HTTP.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use peergate::config;
use peergate::identity::{Identity, PublicIdentity};
use peergate::server::{Gateway, Running};
use peergate_signature::{RequestView, Signer};

use crate::support::*;

pub const HOST: &str = "alice.test";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A peer's keys, as the test signs with them.
#[derive(Clone)]
pub struct Key {
    pub name: String,
    pub signing: SigningKey,
    pub public: PublicIdentity,
}

impl Key {
    pub fn new(name: &str) -> Key {
        let identity = Identity::generate();
        Key {
            name: name.to_string(),
            signing: identity.signing_key().clone(),
            public: identity.public().clone(),
        }
    }

    pub fn key_id(&self) -> &str {
        self.public.key_id()
    }

    pub fn short_id(&self) -> &str {
        self.public.short_id()
    }

    /// Its allowlist entry.
    pub fn entry(&self) -> String {
        format!(
            "  - name: {}\n    public_key: \"{}\"\n",
            self.name,
            self.public.spki_base64()
        )
    }
}

/// A peers file listing `keys`.
pub fn peers_yaml(keys: &[&Key]) -> String {
    let mut text = String::from("peers:\n");
    for key in keys {
        text.push_str(&key.entry());
    }
    text
}

/// A GET signed by `key` the way peergate's outbound side signs, for `authority`.
pub fn signed_get(authority: &str, key: &Key, target: &str) -> RawRequest {
    signed(authority, key, Method::GET, target, None)
}

/// A POST of `body` (with its `Content-Length` and a signed `Content-Digest`), signed as
/// [`signed_get`] signs; the body is not added to the request, so that a test can send it,
/// or part of it, itself.
pub fn signed_post_head(authority: &str, key: &Key, target: &str, body: &[u8]) -> RawRequest {
    signed(authority, key, Method::POST, target, Some(body))
}

fn signed(
    authority: &str,
    key: &Key,
    method: Method,
    target: &str,
    body: Option<&[u8]>,
) -> RawRequest {
    let uri: Uri = target.parse().unwrap();
    let mut map = HeaderMap::new();
    map.insert(
        http::header::HOST,
        HeaderValue::from_str(authority).unwrap(),
    );
    if let Some(body) = body {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let signer = Signer::new(
        key.signing.clone(),
        key.key_id().to_string(),
        Duration::from_secs(60),
    );
    let view = RequestView::new(&method, &uri, &map, "https");
    let sig = signer.sign(&view, body, now(), &Signer::nonce()).unwrap();
    sig.apply(&mut map);
    let mut req = RawRequest::new(method.as_str(), target);
    for (k, v) in &map {
        req = req.header(k.as_str(), v.as_bytes());
    }
    req
}

pub fn header(name: &str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).unwrap()
}

/// A gateway's files and ports: `peergate.yaml` (plain HTTP inbound, peers in `peers.yaml`)
/// in a temporary directory.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub peers: PathBuf,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

impl Setup {
    /// `extra` is appended to the config file (more sections).
    pub fn new(app: SocketAddr, peers: &[&Key], extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        peergate::identity::write_new_key(&dir.path().join("alice.pem"), false).unwrap();
        let [inbound, outbound, admin] =
            [free_port(), free_port(), free_port()].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        // `threads: 2`: tests start many gateways at once, and `auto` would give each one
        // thread per CPU.
        let text = format!(
            r#"identity: {{ key_file: alice.pem, name: Alice, hosts: ["{HOST}"] }}
listen: {{ inbound: "{inbound}", outbound: "{outbound}", admin: "{admin}", threads: 2 }}
app: {{ upstream: "{app}", timeout: 5s, connect_timeout: 2s }}
peers_file: peers.yaml
{extra}
"#
        );
        let config = dir.path().join("peergate.yaml");
        let peers_path = dir.path().join("peers.yaml");
        std::fs::write(&config, text).unwrap();
        std::fs::write(&peers_path, peers_yaml(peers)).unwrap();
        Setup {
            dir,
            config,
            peers: peers_path,
            inbound,
            outbound,
            admin,
        }
    }

    pub fn authority(&self) -> String {
        format!("{HOST}:{}", self.inbound.port())
    }

    /// Starts the gateway in this process.
    pub fn start(&self) -> Running {
        let loaded = config::load(&self.config).unwrap_or_else(|e| panic!("{e}"));
        let running = Gateway::build(&loaded).unwrap().spawn();
        // Not a probe connection: under `listen.max_connections` it would race the test's own
        // connections for their places (see `wait_bound`).
        wait_bound(self.inbound);
        wait_listening(self.admin);
        running
    }

    pub async fn get(&self, key: &Key, target: &str) -> RawResponse {
        self.get_result(key, target)
            .await
            .expect("the gateway answers")
    }

    pub async fn get_result(&self, key: &Key, target: &str) -> std::io::Result<RawResponse> {
        raw_request(
            self.inbound,
            None,
            &signed_get(&self.authority(), key, target).to_bytes(),
        )
        .await
    }

    /// An admin endpoint over HTTP.
    pub async fn admin(&self, path: &str) -> RawResponse {
        admin_get(self.admin, path).await
    }
}

pub async fn admin_get(admin: SocketAddr, path: &str) -> RawResponse {
    let req = RawRequest::new("GET", path)
        .header("Host", admin.to_string())
        .header("Connection", "close");
    raw_request(admin, None, &req.to_bytes())
        .await
        .expect("the admin listener answers")
}

/// The value of one series in a Prometheus text exposition (`name{labels}` exactly as
/// rendered, labels sorted by name), if present.
pub fn series(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name_and_labels)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Replaces `path`'s content the way an editor that saves atomically does: a temporary file
/// in the same directory, renamed over the old one.
pub fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `check` every 25 ms until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, start.elapsed());
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A `tls:` section for [`Setup::new`]'s `extra`: the inbound listener serves a certificate
/// for `localhost` issued by `ca`, its files written in `dir`.
pub fn tls_section(ca: &TestCa, dir: &Path) -> String {
    let (cert, key, _) = ca.issue(&["localhost"]).write_files(dir);
    format!(
        "tls: {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
        cert.display(),
        key.display()
    )
}

/// The binary in front of `app`, its inbound listener serving TLS with a certificate from a CA
/// of its own; returned once both proxy listeners accept connections.
pub struct TlsBinary {
    pub ca: TestCa,
    pub setup: Setup,
    pub binary: Binary,
    _certs: tempfile::TempDir,
}

impl TlsBinary {
    pub fn run(app: SocketAddr) -> TlsBinary {
        let certs = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let extra = tls_section(&ca, certs.path());
        let setup = Setup::new(app, &[&Key::new("Bob")], &extra);
        let binary = Binary::run(&setup);
        wait_listening(setup.outbound);
        wait_listening(setup.inbound);
        TlsBinary {
            ca,
            setup,
            binary,
            _certs: certs,
        }
    }
}

/// `peergate run -c <config>` as a child process, its output in a log file; killed if the
/// test ends before it exits.
pub struct Binary {
    pub child: std::process::Child,
    log: PathBuf,
}

impl Binary {
    pub fn run(setup: &Setup) -> Binary {
        let log = setup.dir.path().join("peergate.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_peergate"))
            .args(["run", "-c"])
            .arg(&setup.config)
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Binary { child, log }
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
