//! `peergate demo`: the whole job on one machine, from nothing.
//!
//! Two installations (alice and bob), each with its own Ed25519 identity, a TLS certificate from
//! a throwaway CA, an allowlist naming the other, and a small sample app behind it. alice's app
//! calls bob's app through alice's outbound listener; the demo prints what bob's app received
//! and what came back, then keeps everything running with `curl` lines to try by hand, until
//! Ctrl-C. Everything lives in a temporary directory that is removed at the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::config;
use crate::identity::{self, PublicIdentity};
use crate::server::{Gateway, Running};

/// Ports the demo prefers, so the README's lines usually work as written; taken ones are
/// replaced by free ones (and the printed lines say which).
const ALICE_PORTS: [u16; 4] = [18443, 18480, 19464, 13000];
const BOB_PORTS: [u16; 4] = [28443, 28480, 29464, 23000];

struct Ports {
    inbound: u16,
    outbound: u16,
    admin: u16,
    app: u16,
}

struct Portal {
    name: &'static str,
    public: PublicIdentity,
    ports: Ports,
    app: SampleApp,
    gateway: Option<Running>,
}

pub fn run(once: bool) -> Result<(), String> {
    let dir = private_temp_dir()?;
    let result = run_in(&dir, once);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, once: bool) -> Result<(), String> {
    println!("peergate demo: two installations on this machine, each in front of its own app.\n");
    let ca = DemoCa::new()?;
    let ca_file = dir.join("demo-ca.pem");
    write(&ca_file, &ca.cert_pem)?;

    let mut alice = prepare("alice", dir, &ca, ALICE_PORTS)?;
    let mut bob = prepare("bob", dir, &ca, BOB_PORTS)?;
    let (alice_key, bob_key) = (alice.public.clone(), bob.public.clone());
    let alice_url = format!("https://127.0.0.1:{}", alice.ports.inbound);
    let bob_url = format!("https://127.0.0.1:{}", bob.ports.inbound);
    start(&mut alice, dir, &ca_file, "bob", &bob_key, &bob_url)?;
    start(&mut bob, dir, &ca_file, "alice", &alice_key, &alice_url)?;

    for p in [&alice, &bob] {
        println!(
            "  {:<5}  short ID {}  inbound https://127.0.0.1:{}  outbound http://127.0.0.1:{}  admin http://127.0.0.1:{}  app 127.0.0.1:{}",
            p.name, p.public.short_id(), p.ports.inbound, p.ports.outbound, p.ports.admin, p.ports.app
        );
    }

    let body = br#"{"message":"hello from alice's app"}"#;
    let target = "/peers/bob/hello?from=alice";
    println!("\n1. alice's app sends, in plain HTTP to alice's outbound listener:");
    println!(
        "     POST http://127.0.0.1:{}{target}",
        alice.ports.outbound
    );
    println!("     {}", String::from_utf8_lossy(body));
    let answer = http_request(
        SocketAddr::from(([127, 0, 0, 1], alice.ports.outbound)),
        "POST",
        target,
        &[("Content-Type", "application/json")],
        body,
    )?;
    let seen = bob
        .app
        .last()
        .ok_or("bob's app received nothing: the signed call did not get through")?;

    println!("\n2. alice's peergate signed it with alice's key (RFC 9421, Ed25519) and sent it to bob over HTTPS:");
    for name in ["signature-input", "signature", "content-digest"] {
        if let Some(v) = seen.header(name) {
            // Whole: the parameters at the end (keyid, alg, tag) are what a reader looks for.
            println!("     {name}: {v}");
        }
    }
    println!(
        "\n3. bob's peergate verified the signature against bob's allowlist; bob's app received:"
    );
    println!("     {} {}", seen.method, seen.target);
    for name in ["x-peer-id", "x-peer-name", "x-peer-key-id"] {
        println!("     {name}: {}", seen.header(name).unwrap_or("(missing!)"));
    }
    println!("   bob's app never saw a key: it reads who is calling from those headers.");

    println!(
        "\n4. bob's app answered; alice's app got back (status {}):",
        answer.status
    );
    for name in ["x-peer-id", "x-peer-name"] {
        println!(
            "     {name}: {}",
            answer.header(name).unwrap_or("(missing!)")
        );
    }
    println!("     {}", String::from_utf8_lossy(&answer.body));

    let ok = answer.status == 200
        && seen.header("x-peer-id") == Some(alice.public.short_id())
        && answer.header("x-peer-id") == Some(bob.public.short_id());
    if !ok {
        stop(&mut [alice, bob]);
        return Err("the signed exchange did not complete as expected (see above)".into());
    }

    println!("\nThe signed exchange worked.");
    if once {
        stop(&mut [alice, bob]);
        return Ok(());
    }

    let (ao, bi, ba) = (alice.ports.outbound, bob.ports.inbound, bob.ports.admin);
    let ca = ca_file.display();
    println!(
        r#"
Try it yourself while the demo runs (Ctrl-C stops it):

  # alice's app calls bob's app through alice's outbound listener (by name or short ID):
  curl -s http://127.0.0.1:{ao}/peers/bob/hello
  curl -s http://127.0.0.1:{ao}/peers/{bob_id}/hello
  # ... or as an HTTP proxy, the way an app with HTTP_PROXY=http://127.0.0.1:{ao} does:
  curl -s -x http://127.0.0.1:{ao} http://127.0.0.1:{bi}/hello
  # alice's peer directory:
  curl -s http://127.0.0.1:{ao}/peers
  # an unsigned request straight to bob is refused (401, application/problem+json):
  curl -s --cacert {ca} https://127.0.0.1:{bi}/hello
  # ... however it claims to be alice (bob's app never sees the claim):
  curl -s --cacert {ca} -H 'X-Peer-Id: {alice_id}' https://127.0.0.1:{bi}/hello
  # an app cannot call as someone else: bob's app answers that its caller is alice,
  # peergate dropped the forged X-Peer-Id and X-Peer-Name on the way:
  curl -s -H 'X-Peer-Id: somebody-else' -H 'X-Peer-Name: mallory' http://127.0.0.1:{ao}/peers/bob/hello
  # bob's metrics:
  curl -s http://127.0.0.1:{ba}/metrics | grep '^peergate_'
"#,
        bob_id = bob.public.short_id(),
        alice_id = alice.public.short_id(),
    );
    let _ = std::io::stdout().flush();
    wait_for_interrupt()?;
    println!("\nstopping the demo...");
    stop(&mut [alice, bob]);
    Ok(())
}

fn prepare(
    name: &'static str,
    dir: &Path,
    ca: &DemoCa,
    preferred: [u16; 4],
) -> Result<Portal, String> {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
    let identity =
        identity::write_new_key(&home.join("identity.pem"), true).map_err(|e| e.to_string())?;
    let (cert, key) = ca.issue()?;
    write(&home.join("tls-cert.pem"), &cert)?;
    write(&home.join("tls-key.pem"), &key)?;
    let [inbound, outbound, admin, app] = preferred.map(port_or_free);
    let app = SampleApp::start(name, app)?;
    Ok(Portal {
        name,
        public: identity.public().clone(),
        ports: Ports {
            inbound,
            outbound,
            admin,
            app: app.port,
        },
        app,
        gateway: None,
    })
}

fn start(
    p: &mut Portal,
    dir: &Path,
    ca_file: &Path,
    peer: &str,
    peer_key: &PublicIdentity,
    peer_url: &str,
) -> Result<(), String> {
    let home = dir.join(p.name);
    // Two threads per listener are plenty for a demo; `auto` would start two portals' worth of
    // one thread per CPU in this one process.
    let text = format!(
        r#"identity: {{ key_file: identity.pem, name: {name}, hosts: ["127.0.0.1", "localhost"] }}
listen: {{ inbound: "127.0.0.1:{inbound}", outbound: "127.0.0.1:{outbound}", admin: "127.0.0.1:{admin}", threads: 2 }}
tls: {{ cert_file: tls-cert.pem, key_file: tls-key.pem, peer_ca_file: {ca} }}
app: {{ upstream: "127.0.0.1:{app}" }}
peers:
  - name: {peer}
    public_key: "{key}"
    url: {peer_url}
"#,
        name = p.name,
        inbound = p.ports.inbound,
        outbound = p.ports.outbound,
        admin = p.ports.admin,
        ca = ca_file.display(),
        app = p.ports.app,
        key = peer_key.spki_base64(),
    );
    let path = home.join("peergate.yaml");
    write(&path, &text)?;
    let loaded = config::load(&path).map_err(|e| e.to_string())?;
    let gateway = Gateway::build(&loaded)?.spawn();
    for port in [p.ports.inbound, p.ports.outbound, p.ports.admin] {
        wait_listening(port)?;
    }
    p.gateway = Some(gateway);
    Ok(())
}

/// Stops both gateways at once: nothing is in flight when a person presses Ctrl-C on the
/// demo, so there is nothing for a grace period to wait for.
fn stop(portals: &mut [Portal]) {
    for p in portals {
        if let Some(g) = p.gateway.take() {
            g.stop(false);
        }
    }
}

fn wait_for_interrupt() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
            // Ctrl-\ too: the demo's files are removed however a terminal stops it.
            let mut quit = signal(SignalKind::quit()).map_err(|e| e.to_string())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
                _ = term.recv() => Ok(()),
                _ = quit.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.map_err(|e| e.to_string())
        }
    })
}

fn port_or_free(preferred: u16) -> u16 {
    if TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return preferred;
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(preferred)
}

fn wait_listening(port: u16) -> Result<(), String> {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("nothing started listening on 127.0.0.1:{port}"))
}

/// A new directory of the demo's own under the temporary directory, readable by this user only
/// (it holds the two identity keys and the TLS keys). Created, never reused: a directory by that
/// name that someone else made first is skipped, not written into.
fn private_temp_dir() -> Result<PathBuf, String> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    let base = std::env::temp_dir();
    let mut last = None;
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "peergate-demo-{}-{:x}",
            std::process::id(),
            nanos ^ attempt
        ));
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "cannot create a directory of its own in {}: {}",
        base.display(),
        last.map_or_else(String::new, |e| e.to_string())
    ))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A throwaway CA for the demo's TLS listeners; each side trusts it for the other.
struct DemoCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl DemoCa {
    fn new() -> Result<DemoCa, String> {
        let err = |e: rcgen::Error| format!("demo CA: {e}");
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "peergate demo CA (throwaway)");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(DemoCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A certificate for 127.0.0.1 and localhost: (cert PEM, PKCS#8 key PEM).
    fn issue(&self) -> Result<(String, String), String> {
        let err = |e: rcgen::Error| format!("demo certificate: {e}");
        let key = KeyPair::generate().map_err(err)?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// One HTTP exchange as the demo saw it.
#[derive(Clone, Debug)]
struct Exchange {
    method: String,
    target: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 message as read off the wire: start line, fields, body.
struct Message {
    start_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 message head and a Content-Length body (the demo's own traffic only).
fn read_message(stream: &mut TcpStream) -> Result<Message, String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 64 * 1024 {
            return Err("message head too large".into());
        }
        match stream.read(&mut byte) {
            Ok(0) => return Err("connection closed before the end of the head".into()),
            Ok(_) => buf.extend_from_slice(&byte),
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(16 << 20)];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(Message {
        start_line: first,
        headers,
        body,
    })
}

fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Exchange, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| e.to_string())?;
    let Message {
        start_line: status_line,
        headers,
        body,
    } = read_message(&mut stream)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    Ok(Exchange {
        method: method.into(),
        target: target.into(),
        status,
        headers,
        body,
    })
}

/// The sample app behind each peergate: answers JSON saying who called, as the identity
/// headers told it, and remembers what it received so the demo can show it.
struct SampleApp {
    port: u16,
    seen: Arc<Mutex<Vec<Exchange>>>,
}

impl SampleApp {
    fn start(owner: &'static str, preferred: u16) -> Result<SampleApp, String> {
        let listener = TcpListener::bind(("127.0.0.1", preferred))
            .or_else(|_| TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("sample app: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::Builder::new()
            .name(format!("{owner}-app"))
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let record = record.clone();
                    std::thread::spawn(move || serve(owner, stream, &record));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(SampleApp { port, seen })
    }

    fn last(&self) -> Option<Exchange> {
        self.seen.lock().ok().and_then(|s| s.last().cloned())
    }
}

fn serve(owner: &str, mut stream: TcpStream, record: &Mutex<Vec<Exchange>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    while let Ok(Message {
        start_line: request_line,
        headers,
        body,
    }) = read_message(&mut stream)
    {
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let exchange = Exchange {
            method,
            target,
            status: 0,
            headers,
            body,
        };
        let who = match exchange.header("x-peer-id") {
            Some(id) => serde_json::json!({
                "short_id": id,
                "name": exchange.header("x-peer-name"),
                "key_id": exchange.header("x-peer-key-id"),
            }),
            None => serde_json::Value::Null,
        };
        let answer = serde_json::json!({
            "app": format!("{owner}'s app"),
            "you_asked_for": format!("{} {}", exchange.method, exchange.target),
            "caller": who,
            "body_bytes": exchange.body.len(),
        })
        .to_string();
        if let Ok(mut seen) = record.lock() {
            seen.push(exchange);
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
