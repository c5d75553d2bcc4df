//! Fuzz target: `verify_headers` (and the relaxed `verify_request`) plus the body check must
//! never panic, whatever the request.
//!
//! Input format (so seeds stay readable and editable): fields separated by `\n`, in order
//!
//! ```text
//! method \n target \n Host \n Signature-Input \n Signature \n Content-Digest \n Content-Type \n Content-Length \n body...
//! ```
//!
//! `target` is the request target (origin-form `/path?query`, or absolute-form). An empty
//! header field means the header is absent; a `\r` inside a header field splits it into
//! several field lines (HTTP forbids CR in a value, so nothing is lost). Everything after the
//! eighth `\n` is the body, fed to the body checker in two chunks. Missing trailing fields
//! are empty.
//!
//! The key is fixed: the seed `[0x5a; 32]` (the one `examples/fuzz_seeds.rs` signs the seed
//! corpus with), and every `keyid` resolves to it, so valid seeds get all the way through.

#![no_main]

use ed25519_dalek::{SigningKey, VerifyingKey};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use peergate_signature::{
    verify_headers, verify_request, Coverage, HostRule, Policy, ReplayCache, RequestView,
};

/// "Now" for the checks (unix seconds); the seed corpus is signed at this time.
const NOW: u64 = 1_732_400_000;
/// Seed of the Ed25519 key every keyid resolves to.
const KEY_SEED: [u8; 32] = [0x5a; 32];

const HEADERS: [&str; 5] = [
    "host",
    "signature-input",
    "signature",
    "content-digest",
    "content-type",
];

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(9, |&b| b == b'\n');
    let mut next = || parts.next().unwrap_or_default();
    let method = next();
    let target = next();
    let fields: Vec<&[u8]> = (0..HEADERS.len() + 1).map(|_| next()).collect();
    let body = next();

    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in HEADERS.iter().chain(["content-length"].iter()).zip(&fields) {
        if value.is_empty() {
            continue;
        }
        for line in value.split(|&b| b == b'\r') {
            if let Ok(v) = HeaderValue::from_bytes(line) {
                headers.append(HeaderName::from_static(name), v);
            }
        }
    }
    let req = RequestView::new(&method, &uri, &headers, "https");

    let key: VerifyingKey = SigningKey::from_bytes(&KEY_SEED).verifying_key();
    let lookup = |_: &str| Some(&key);
    let hosts = vec![HostRule::parse("example.com").expect("a valid host rule")];

    // What the proxy runs.
    let policy = Policy {
        hosts: hosts.clone(),
        ..Policy::default()
    };
    let replay = ReplayCache::new(8);
    if let Ok(v) = verify_headers(&req, &policy, lookup, &replay, NOW) {
        check_body(&v, body);
        // The same nonce again is a replay.
        assert!(verify_headers(&req, &policy, lookup, &replay, NOW).is_err());
    }

    // Relaxed: any label, no nonce, no required coverage; reaches the base for more inputs.
    let relaxed = Policy {
        hosts,
        require_nonce: false,
        tag: None,
        ..Policy::default()
    };
    let replay = ReplayCache::new(8);
    if let Ok(v) = verify_request(&req, &relaxed, Coverage::NONE, lookup, &replay, NOW) {
        check_body(&v, body);
    }
});

fn check_body(v: &peergate_signature::Verified, body: &[u8]) {
    let mut check = v.body_checker();
    let (a, b) = body.split_at(body.len() / 2);
    check.update(a);
    let _ = check.refused();
    check.update(b);
    let _ = check.refused();
    let _ = check.finish();
}
