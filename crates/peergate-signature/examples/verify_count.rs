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

use ed25519_dalek::{Signature, VerifyingKey};
use peergate_signature::base::signature_base;
use peergate_signature::{verify_headers, MessageView, Policy, ReplayCache, SignatureFields};

#[path = "../benches/typical/mod.rs"]
mod typical;

use typical::{policy, signed_pool, signer, Req, KEY_ID, NOW, REPLAY_CAPACITY};

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
    let signer = signer();
    let vk = signer.verifying_key();
    let pool = signed_pool(&signer);
    let ok = match which.as_str() {
        "pipeline" => {
            // Sized like the criterion bench's cache: sparse, as in service.
            let replay = ReplayCache::new(REPLAY_CAPACITY);
            pipeline(&pool, &policy(), &vk, &replay)
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
    if ok != pool.len() {
        eprintln!("verify_count: {ok} of {} verified", pool.len());
        return ExitCode::FAILURE;
    }
    println!("verified {ok} requests");
    ExitCode::SUCCESS
}
