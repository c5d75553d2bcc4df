//! The signature engine's cost in instructions: runs the whole verify pipeline, or the one raw
//! strict Ed25519 verification alone, over a pool of signed requests, so that valgrind's
//! callgrind can count each. Counts of instructions do not move with the machine's other
//! tenants the way criterion's timings (`benches/engine-ratio.sh`) do.
//!
//! `benches/engine-instructions.sh` runs both under callgrind and prints the ratio. By hand:
//!
//! ```sh
//! valgrind --tool=callgrind --toggle-collect='verify_count::pipeline' \
//!   target/release/examples/verify_count pipeline
//! ```
//!
//! `pipeline`: [`verify_headers`] (parse `Signature-Input` / `Signature`, policy checks, build
//! the base, strict verification, replay-cache insert) and the Content-Digest check of the
//! request's 1 KiB body, as the criterion bench `verify_pipeline_1k` does. `raw`:
//! [`peergate_signature::ed25519::verify`] of each request's base and signature, as
//! `raw_ed25519_verify` does.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Duration;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use peergate_signature::base::signature_base;
use peergate_signature::{
    verify_headers, HostRule, MessageView, Policy, ReplayCache, RequestView, SignatureFields,
    Signer,
};

/// Pinned "now" (unix seconds), as in the criterion benches.
const NOW: u64 = 1_732_400_000;
/// Requests verified; each is signed with its own nonce. The script divides by this.
const POOL: usize = 1000;
const BODY_LEN: usize = 1024;
const KEY_ID: &str = "bench-key";
const HOST: &str = "alice.example.org";

struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Req {
    fn view(&self) -> RequestView<'_> {
        RequestView::new(&self.method, &self.uri, &self.headers, "https")
    }
}

/// The criterion benches' typical POST: five fields, a query, a 1 KiB JSON body.
fn typical_post(i: usize) -> Req {
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
            HeaderValue::try_from(value).expect("a valid field value"),
        );
    }
    let mut body = format!(r#"{{"id":{i},"text":""#).into_bytes();
    body.resize(BODY_LEN - 2, b'a');
    body.extend_from_slice(b"\"}");
    Req {
        method: Method::POST,
        uri: "/api/items?limit=10&sort=desc"
            .parse()
            .expect("a valid target"),
        headers,
        body,
    }
}

/// Every request through the whole pipeline. Never inlined, so that callgrind can count it
/// alone.
#[inline(never)]
fn pipeline(pool: &[Req], policy: &Policy, vk: &VerifyingKey, replay: &ReplayCache) -> usize {
    let lookup = |id: &str| (id == KEY_ID).then_some(vk);
    let mut ok = 0;
    for r in pool {
        let verified = verify_headers(black_box(&r.view()), policy, lookup, replay, NOW)
            .expect("every pooled request verifies");
        let mut check = verified.body_checker();
        check.update(black_box(&r.body));
        check
            .finish()
            .expect("every pooled body matches its digest");
        ok += 1;
    }
    ok
}

/// The one strict verification of each request's base, alone.
#[inline(never)]
fn raw(bases: &[(Vec<u8>, Signature)], vk: &VerifyingKey) -> usize {
    bases
        .iter()
        .filter(|(base, sig)| peergate_signature::ed25519::verify(vk, black_box(base), sig))
        .count()
}

fn main() -> ExitCode {
    let which = std::env::args().nth(1).unwrap_or_default();
    let signer = Signer::new(
        SigningKey::from_bytes(&[9u8; 32]),
        KEY_ID.to_owned(),
        Duration::from_secs(60),
    );
    let vk = signer.verifying_key();
    let pool: Vec<Req> = (0..POOL)
        .map(|i| {
            let mut r = typical_post(i);
            signer
                .sign(&r.view(), Some(&r.body), NOW, &format!("n-{i}"))
                .expect("the typical request signs")
                .apply(&mut r.headers);
            r
        })
        .collect();
    let ok = match which.as_str() {
        "pipeline" => {
            let policy = Policy {
                hosts: vec![HostRule::parse(HOST).expect("a valid host rule")],
                ..Policy::default()
            };
            // Sized like the criterion bench's cache: sparse, as in service.
            let replay = ReplayCache::new(1 << 16);
            pipeline(&pool, &policy, &vk, &replay)
        }
        "raw" => {
            let bases: Vec<(Vec<u8>, Signature)> = pool
                .iter()
                .map(|r| {
                    let view = r.view();
                    let fields = SignatureFields::from_headers(view.headers).expect("fields");
                    let entry = fields.select(None).expect("one signature");
                    let params = entry.signature_params_value().expect("parameters");
                    let components = entry.components().expect("components");
                    let base =
                        signature_base(MessageView::Request(&view), components, &params, &[])
                            .expect("a base");
                    (base, entry.ed25519_signature().expect("64 bytes"))
                })
                .collect();
            raw(&bases, &vk)
        }
        _ => {
            eprintln!("usage: verify_count pipeline|raw");
            return ExitCode::from(2);
        }
    };
    if ok != POOL {
        eprintln!("verify_count: {ok} of {POOL} verified");
        return ExitCode::FAILURE;
    }
    println!("verified {POOL} requests");
    ExitCode::SUCCESS
}
