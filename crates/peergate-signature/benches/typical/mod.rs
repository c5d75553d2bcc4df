//! The typical signed request the engine's benchmarks measure, shared by the criterion benches
//! (`signature.rs`) and the instruction count (`examples/verify_count.rs`), so that both
//! measure the same request.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use peergate_signature::{HostRule, Policy, RequestView, Signer};

/// Pinned "now" (unix seconds): every pooled signature is created at `NOW` and checked at
/// `NOW`, so none goes stale however long the bench runs.
pub const NOW: u64 = 1_732_400_000;
/// Distinct pre-signed requests the verify benches cycle through.
pub const POOL: usize = 1024;
/// Body size of the typical request.
pub const BODY_LEN: usize = 1024;
/// Replay cache size for `verify_pipeline_1k`: 16 shards of 4096, the layout of a mid-sized
/// production cache, so an insert lands in a sparse table as it does in service. Only
/// [`POOL`] entries ever go into one cache, far from `Full` in any shard.
pub const REPLAY_CAPACITY: usize = 1 << 16;
pub const KEY_ID: &str = "bench-key";
pub const HOST: &str = "alice.example.org";

/// An owned request, the parts a [`RequestView`] borrows.
#[derive(Clone)]
pub struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Req {
    pub fn view(&self) -> RequestView<'_> {
        RequestView::new(&self.method, &self.uri, &self.headers, "https")
    }
}

/// A JSON document of exactly [`BODY_LEN`] bytes, different for every `i`.
pub fn json_body(i: usize) -> Vec<u8> {
    let head = format!(r#"{{"id":{i},"kind":"note","tags":["a","b"],"text":""#);
    let tail = r#""}"#;
    let mut body = head.into_bytes();
    let fill = BODY_LEN - body.len() - tail.len();
    body.extend((0..fill).map(|k| b'a' + (k % 26) as u8));
    body.extend_from_slice(tail.as_bytes());
    assert_eq!(body.len(), BODY_LEN);
    body
}

/// A typical peer-to-peer POST, unsigned.
pub fn typical_post(i: usize) -> Req {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", HOST.to_owned()),
        ("content-type", "application/json".to_owned()),
        ("content-length", BODY_LEN.to_string()),
        ("user-agent", "bench/1.0".to_owned()),
        ("accept", "application/json".to_owned()),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::try_from(value).unwrap(),
        );
    }
    Req {
        method: Method::POST,
        uri: "/api/items?limit=10&sort=desc".parse().unwrap(),
        headers,
        body: json_body(i),
    }
}

pub fn signer() -> Signer {
    Signer::new(
        SigningKey::from_bytes(&[9u8; 32]),
        KEY_ID.to_owned(),
        Duration::from_secs(60),
    )
}

/// [`POOL`] signed requests, nonce `n-<i>` each.
pub fn signed_pool(signer: &Signer) -> Vec<Req> {
    (0..POOL)
        .map(|i| {
            let mut r = typical_post(i);
            signer
                .sign(&r.view(), Some(&r.body), NOW, &format!("n-{i}"))
                .unwrap()
                .apply(&mut r.headers);
            r
        })
        .collect()
}

pub fn policy() -> Policy {
    Policy {
        hosts: vec![HostRule::parse(HOST).unwrap()],
        ..Policy::default()
    }
}
