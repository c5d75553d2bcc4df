//! Writes the seed corpus of the `verify_headers` fuzz target (`fuzz/`): requests signed by
//! [`Signer`] with the fuzz target's fixed key, in its line format (see
//! `fuzz/fuzz_targets/verify_headers.rs`).
//!
//! `cargo run -p peergate-signature --example fuzz_seeds -- crates/peergate-signature/fuzz/seeds/verify_headers`

use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use http::{HeaderMap, HeaderValue, Method, Uri};
use peergate_signature::{RequestView, Signer};

/// Must match `NOW` and `KEY_SEED` in the fuzz target.
const NOW: u64 = 1_732_400_000;
const KEY_SEED: [u8; 32] = [0x5a; 32];

/// The RFC 9421 B.2.6 request and signature (another key: exercises the refusal path).
const B26: &[u8] = b"POST\n/foo?param=Value&Pet=dog\nexample.com\n\
sig-b26=(\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"\n\
sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:\n\
sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n\
application/json\n18\n{\"hello\": \"world\"}";

fn field(headers: &HeaderMap, name: &str) -> Vec<u8> {
    let lines: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
    lines.join(&b'\r')
}

/// Signs `method target` for `host` (with `body`, if any) and encodes it for the fuzz target.
fn seed(
    signer: &Signer,
    method: &str,
    target: &str,
    host: &str,
    body: &[u8],
    nonce: &str,
) -> Vec<u8> {
    let method: Method = method.parse().unwrap();
    let uri: Uri = target.parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_str(host).unwrap());
    if !body.is_empty() {
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-length", HeaderValue::from(body.len()));
    }
    let view = RequestView::new(&method, &uri, &headers, "https");
    let signed = signer.sign(&view, Some(body), NOW, nonce).unwrap();
    signed.apply(&mut headers);

    let mut out = Vec::new();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(target.as_bytes());
    for name in [
        "host",
        "signature-input",
        "signature",
        "content-digest",
        "content-type",
        "content-length",
    ] {
        out.push(b'\n');
        out.extend(field(&headers, name));
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "crates/peergate-signature/fuzz/seeds/verify_headers".to_owned()),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let signer = Signer::new(
        SigningKey::from_bytes(&KEY_SEED),
        "fuzz-key".to_owned(),
        Duration::from_secs(60),
    );
    let json = br#"{"id":1,"text":"hello, peer","tags":["a","b"]}"#;

    let mut two_signatures = seed(&signer, "GET", "/api/items", "example.com", b"", "seed-5");
    // A second, foreign signature in extra field lines: exercises the choice by tag.
    let foreign_input = b"\rpyhms=(\"@method\" \"@authority\" \"@target-uri\");created=1732400000;keyid=\"other\";alg=\"ed25519\"";
    let foreign_sig = b"\rpyhms=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==:";
    two_signatures = insert_after_line(&two_signatures, 3, foreign_input);
    two_signatures = insert_after_line(&two_signatures, 4, foreign_sig);

    let seeds: [(&str, Vec<u8>); 5] = [
        (
            "get",
            seed(&signer, "GET", "/api/items", "example.com", b"", "seed-1"),
        ),
        (
            "post-json",
            seed(
                &signer,
                "POST",
                "/api/items?limit=10",
                "example.com",
                json,
                "seed-2",
            ),
        ),
        (
            "query-port",
            seed(
                &signer,
                "GET",
                "/search?q=a%20b&x=1&x=2",
                "example.com:8443",
                b"",
                "seed-3",
            ),
        ),
        ("rfc-b26", B26.to_vec()),
        ("two-signatures", two_signatures),
    ];
    for (name, bytes) in seeds {
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).unwrap();
        println!("wrote {}", path.display());
    }
}

/// Appends `extra` to the end of line `n` (0-based) of `seed`.
fn insert_after_line(seed: &[u8], n: usize, extra: &[u8]) -> Vec<u8> {
    let mut pos = 0;
    for _ in 0..=n {
        pos += seed[pos..].iter().position(|&b| b == b'\n').unwrap() + 1;
    }
    let end = pos - 1;
    let mut out = seed[..end].to_vec();
    out.extend_from_slice(extra);
    out.extend_from_slice(&seed[end..]);
    out
}
