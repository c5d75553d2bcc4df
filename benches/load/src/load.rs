//! The load generator.
//!
//! - **Closed loop** (no `--rate`): `--connections` keep-alive connections each send a request,
//!   wait for the answer, send the next. Measures peak requests/s.
//! - **Constant rate** (`--rate R`, wrk2-style): request *i* is due at `t0 + i/R`, spread over
//!   the connections. Latency counts from when the request was due, so a stalled answer
//!   delays (and is charged to) every request queued behind it: no coordinated omission. When
//!   a connection is on time it sleeps until the due time, and the timer's own lateness (up to
//!   ~1 ms in tokio) is not charged: latency then counts from the actual send.
//! - **Signing** (`--sign KEY.pem`): every request carries its own RFC 9421 signature made
//!   with peergate's engine (`peergate_signature::Signer`, the code peergate's outbound side
//!   uses), a fresh nonce each. Signatures are made before the run (`--presign N`, default
//!   250 000, or rate x duration; in parallel, not measured) and, if the run outlasts them,
//!   inline (counted in `inline_signed`). They expire 60 s after they were made (plus
//!   `--created-ahead`), so from 5 s before that on every request is signed inline: a run over
//!   a minute long sent expired signatures and counted the gateway's 401s.
//!   `--created-ahead S` dates the signatures S seconds ahead (within the verifier's
//!   `clock_skew`, 30 s by default): a verifier remembers each nonce until `created` + 60 s,
//!   so the nonces of a presigned run are then still held at the end of the next one, as a
//!   gateway serving that rate without pause holds a whole window of them.
//!   `--sign-once` sends one signed request over and over: the same bytes on the wire, for a
//!   proxy that does not verify.
//!
//! Warm-up (`--warmup`) runs first and is not recorded. With `--pids`, the CPU time (utime +
//! stime, all threads) of those processes during the measured window is reported too.
//!
//! Output: one line of `key=value` pairs. `--timeline FILE` also writes each measured request's
//! start and latency (µs), to see when the slow ones happened.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use peergate_signature::{RequestView, Signer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::Args;

struct Target {
    https: bool,
    connect: SocketAddr,
    /// Host header and `@authority`.
    authority: String,
    path_and_query: String,
    sni: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("bad url {url:?}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url}: http:// or https://")),
    };
    let host = uri.host().ok_or("url without host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connect: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|_| format!("{url}: use an IP address"))?;
    Ok(Target {
        https,
        connect,
        authority: uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
        path_and_query: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
        sni: host,
    })
}

/// The bytes of one request, signed or not.
/// How long the signatures the load generator makes are valid (`expires` - `created`).
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(60);

struct RequestMaker {
    method: http::Method,
    target: String,
    authority: String,
    scheme: &'static str,
    body: Bytes,
    signer: Option<Signer>,
    /// Seconds added to `created` (`--created-ahead`).
    created_ahead: u64,
}

impl RequestMaker {
    fn make(&self) -> Result<Bytes, String> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\n",
            self.method, self.target, self.authority
        );
        if !self.body.is_empty() {
            head.push_str(&format!(
                "content-type: application/octet-stream\r\ncontent-length: {}\r\n",
                self.body.len()
            ));
        }
        if let Some(signer) = &self.signer {
            let uri: http::Uri = self.target.parse().map_err(|_| "bad target")?;
            let mut headers = http::HeaderMap::new();
            let value = |s: &str| http::HeaderValue::from_str(s).map_err(|e| e.to_string());
            headers.insert(http::header::HOST, value(&self.authority)?);
            if !self.body.is_empty() {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    value("application/octet-stream")?,
                );
                headers.insert(
                    http::header::CONTENT_LENGTH,
                    value(&self.body.len().to_string())?,
                );
            }
            let view = RequestView::new(&self.method, &uri, &headers, self.scheme);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + self.created_ahead;
            let signed = signer
                .sign(&view, Some(&self.body), now, &Signer::nonce())
                .map_err(|e| e.to_string())?;
            let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
            if let Some(cd) = &signed.content_digest {
                head.push_str(&format!("content-digest: {}\r\n", text(cd)));
            }
            head.push_str(&format!(
                "signature-input: {}\r\nsignature: {}\r\n",
                text(&signed.signature_input),
                text(&signed.signature)
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        Ok(Bytes::from(bytes))
    }
}

/// Where requests come from: one fixed request, or a pool of pre-signed ones.
struct Source {
    maker: RequestMaker,
    fixed: Option<Bytes>,
    pool: Vec<Bytes>,
    /// Until when the presigned `pool` is still valid (see the module documentation).
    pool_valid_until: Instant,
    next: AtomicUsize,
    inline: AtomicU64,
}

impl Source {
    fn get(&self) -> Result<Bytes, String> {
        if let Some(b) = &self.fixed {
            return Ok(b.clone());
        }
        if Instant::now() < self.pool_valid_until {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if let Some(b) = self.pool.get(i) {
                return Ok(b.clone());
            }
        }
        self.inline.fetch_add(1, Ordering::Relaxed);
        self.maker.make()
    }
}

fn presign(maker: &RequestMaker, n: usize) -> Result<Vec<Bytes>, String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let count = per.min(n.saturating_sub(t * per));
                s.spawn(move || {
                    (0..count)
                        .map(|_| maker.make())
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            out.extend(h.join().map_err(|_| "signing thread panicked")??);
        }
        Ok(out)
    })
}

fn signing_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::gen::signing_key_from_pem(&text).ok_or_else(|| format!("{}: not a key", path.display()))
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn total_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| cpu_ticks(*p)).sum()
}

struct Shared {
    source: Source,
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
    measure_from: Instant,
    end: Instant,
    rate: Option<f64>,
    connections: usize,
    errors: AtomicU64,
    non2xx: AtomicU64,
}

pub fn main(args: &Args) -> Result<(), String> {
    let target = parse_url(args.req("url")?)?;
    let connections: usize = args.num("connections", 32)?;
    let duration = Duration::from_secs_f64(args.num("duration", 10.0)?);
    let warmup = Duration::from_secs_f64(args.num("warmup", 2.0)?);
    let rate: Option<f64> = match args.get("rate") {
        Some(r) => Some(r.parse().map_err(|_| "--rate wants a number")?),
        None => None,
    };
    let threads: usize = args.num("threads", 1)?;
    let body_len: usize = args.num("body", 0)?;
    let method: http::Method = args
        .get("method")
        .unwrap_or(if body_len > 0 { "POST" } else { "GET" })
        .parse()
        .map_err(|_| "bad --method")?;
    let pids: Vec<u32> = args
        .get("pids")
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad pid {s}")))
        .collect::<Result<_, _>>()?;

    let signer = match args.get("sign") {
        Some(path) => {
            let key = signing_key(Path::new(path))?;
            let key_id = crate::gen::key_id(&key.verifying_key());
            Some(Signer::new(key, key_id, SIGNATURE_LIFETIME))
        }
        None => None,
    };
    let signing = signer.is_some();
    let maker = RequestMaker {
        method,
        target: target.path_and_query.clone(),
        authority: target.authority.clone(),
        scheme: if target.https { "https" } else { "http" },
        body: Bytes::from(vec![b'x'; body_len]),
        signer,
        created_ahead: args.num("created-ahead", 0)?,
    };
    let sign_once = args.flag("sign-once");
    let presign_started = Instant::now();
    let (fixed, pool) = if !signing || sign_once {
        (Some(maker.make()?), Vec::new())
    } else {
        let total = duration + warmup;
        let default = match rate {
            Some(r) => (r * total.as_secs_f64() * 1.05) as usize + 1000,
            None => 250_000,
        };
        let n: usize = args.num("presign", default)?;
        (None, presign(&maker, n)?)
    };
    let presign_secs = presign_started.elapsed().as_secs_f64();
    // The first presigned request was made at `presign_started`, dated `created_ahead` later.
    let pool_valid_until =
        presign_started + SIGNATURE_LIFETIME + Duration::from_secs(maker.created_ahead)
            - Duration::from_secs(5);
    let source = Source {
        maker,
        fixed,
        pool,
        pool_valid_until,
        next: AtomicUsize::new(0),
        inline: AtomicU64::new(0),
    };

    let tls = if target.https {
        let mut roots = rustls::RootCertStore::empty();
        let ca = args.req("ca")?;
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
            roots
                .add(cert.map_err(|e| format!("{ca}: {e}"))?)
                .map_err(|e| format!("{ca}: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
    } else {
        None
    };

    let runtime = crate::runtime(threads)?;

    let start = Instant::now() + Duration::from_millis(50);
    let shared = Arc::new(Shared {
        source,
        target,
        tls,
        measure_from: start + warmup,
        end: start + warmup + duration,
        rate,
        connections,
        errors: AtomicU64::new(0),
        non2xx: AtomicU64::new(0),
    });

    let (latencies, cpu, self_cpu) = runtime.block_on(async {
        let sampler = {
            let shared = shared.clone();
            let pids = pids.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(shared.measure_from.into()).await;
                let before = total_ticks(&pids);
                let self_before = cpu_ticks(std::process::id()).unwrap_or(0);
                tokio::time::sleep_until(shared.end.into()).await;
                let after = total_ticks(&pids);
                let self_after = cpu_ticks(std::process::id()).unwrap_or(0);
                (after - before, self_after - self_before)
            })
        };
        let tasks: Vec<_> = (0..connections)
            .map(|k| {
                let shared = shared.clone();
                tokio::spawn(async move { connection_loop(&shared, k, start).await })
            })
            .collect();
        let mut all: Vec<(u32, u32)> = Vec::new();
        for t in tasks {
            if let Ok(mut l) = t.await {
                all.append(&mut l);
            }
        }
        let (cpu, self_cpu) = sampler.await.unwrap_or((0, 0));
        (all, cpu, self_cpu)
    });

    if let Some(path) = args.get("timeline") {
        write_timeline(Path::new(path), &latencies)?;
    }
    let mut lat: Vec<u32> = latencies.iter().map(|&(_, l)| l).collect();
    lat.sort_unstable();
    let q = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        u64::from(lat[i])
    };
    let secs = duration.as_secs_f64();
    let ticks_per_sec = 100.0; // USER_HZ; checked by run.sh with getconf CLK_TCK
    println!(
        "requests={} rps={:.1} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} errors={} non2xx={} cpu_ticks={} cpu_ms_per_1k={:.2} client_cpu_ticks={} inline_signed={} presign_s={:.1}",
        lat.len(),
        lat.len() as f64 / secs,
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        lat.last().copied().unwrap_or(0),
        shared.errors.load(Ordering::Relaxed),
        shared.non2xx.load(Ordering::Relaxed),
        cpu,
        if lat.is_empty() {
            0.0
        } else {
            cpu as f64 / ticks_per_sec * 1000.0 / (lat.len() as f64 / 1000.0)
        },
        self_cpu,
        shared.source.inline.load(Ordering::Relaxed),
        presign_secs,
    );
    Ok(())
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(shared: &Shared) -> Result<Box<dyn Stream>, String> {
    let tcp = TcpStream::connect(shared.target.connect)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    match &shared.tls {
        None => Ok(Box::new(tcp)),
        Some(tls) => {
            let name =
                ServerName::try_from(shared.target.sni.clone()).map_err(|e| e.to_string())?;
            let s = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
            Ok(Box::new(s))
        }
    }
}

/// `--timeline FILE`: one line per measured request, `<start µs> <latency µs>`, sorted by start
/// (µs from the start of the measured window), to see whether slow answers come together.
fn write_timeline(path: &Path, requests: &[(u32, u32)]) -> Result<(), String> {
    let mut sorted = requests.to_vec();
    sorted.sort_unstable();
    let mut text = String::with_capacity(sorted.len() * 16);
    for (at, latency) in sorted {
        text.push_str(&format!("{at} {latency}\n"));
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// One connection's requests; returns (start, latency) in µs of those in the measured window,
/// the start counted from the beginning of the window.
async fn connection_loop(shared: &Shared, k: usize, start: Instant) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut stream: Option<Box<dyn Stream>> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut j: u64 = 0;
    tokio::time::sleep_until(start.into()).await;
    loop {
        // When is this request due, and when does its latency start counting?
        let begin = match shared.rate {
            None => Instant::now(),
            Some(rate) => {
                let index = k as u64 + j * shared.connections as u64;
                j += 1;
                let due = start + Duration::from_secs_f64(index as f64 / rate);
                if due >= shared.end {
                    break;
                }
                let now = Instant::now();
                if now < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                }
            }
        };
        if begin >= shared.end {
            break;
        }
        if stream.is_none() {
            match connect(shared).await {
                Ok(s) => {
                    stream = Some(s);
                    buf.clear();
                }
                Err(e) => {
                    if shared.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("pgbench load: connect: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let request = match shared.source.get() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pgbench load: cannot make a request: {e}");
                break;
            }
        };
        let result = exchange(s, &request, &mut buf).await;
        let done = Instant::now();
        match result {
            Ok((status, keep)) => {
                if !(200..300).contains(&status)
                    && shared.non2xx.fetch_add(1, Ordering::Relaxed) < 3
                {
                    eprintln!("pgbench load: status {status}");
                }
                if begin >= shared.measure_from {
                    let us = done.duration_since(begin).as_micros();
                    let at = begin.duration_since(shared.measure_from).as_micros();
                    out.push((
                        u32::try_from(at).unwrap_or(u32::MAX),
                        u32::try_from(us).unwrap_or(u32::MAX),
                    ));
                }
                if !keep {
                    stream = None;
                }
            }
            Err(e) => {
                if shared.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("pgbench load: {e}");
                }
                stream = None;
            }
        }
    }
    out
}

/// Sends one request and reads its response. Returns the status and whether the
/// connection may be reused.
async fn exchange(
    s: &mut Box<dyn Stream>,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, bool), String> {
    s.write_all(request).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    loop {
        if let Some((status, keep, consumed)) = parse_response(buf)? {
            buf.drain(..consumed);
            return Ok((status, keep));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let n = s.read_buf(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
    }
}

/// A complete response at the start of `buf`: (status, keep-alive, bytes it spans).
fn parse_response(buf: &[u8]) -> Result<Option<(u16, bool, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut keep = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep = !h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let rest = &buf[head..];
    if chunked {
        let mut pos = 0;
        loop {
            match httparse::parse_chunk_size(&rest[pos..]).map_err(|_| "bad chunk size")? {
                httparse::Status::Partial => return Ok(None),
                httparse::Status::Complete((n, size)) => {
                    pos += n;
                    let size = usize::try_from(size).map_err(|_| "chunk too large")?;
                    if size == 0 {
                        // No trailers from any server here: the final CRLF follows.
                        if rest.len() < pos + 2 {
                            return Ok(None);
                        }
                        return Ok(Some((status, keep, head + pos + 2)));
                    }
                    if rest.len() < pos + size + 2 {
                        return Ok(None);
                    }
                    pos += size + 2;
                }
            }
        }
    }
    let length = length.unwrap_or(0);
    if rest.len() < length {
        return Ok(None);
    }
    Ok(Some((status, keep, head + length)))
}
