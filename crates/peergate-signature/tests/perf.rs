//! The verify budget: the whole pipeline (headers, replay cache, 1 KiB body digest) within
//! 1.2x one raw Ed25519 `verify_strict`. Timing depends on the machine and its load, so this
//! is ignored by default; run it in release:
//! `cargo test -p peergate-signature --release --test perf -- --ignored --nocapture`.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::Req;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use peergate_signature::{
    base::signature_base, verify_headers, HostRule, MessageView, Policy, ReplayCache,
    SignatureFields, Signer,
};

const NOW: u64 = 1_732_400_000;
const REQUESTS: usize = 4000;
const ROUNDS: usize = 5;

#[test]
#[ignore = "timing; run in release with --ignored"]
fn pipeline_within_budget() {
    let sk = SigningKey::from_bytes(&[9u8; 32]);
    let vk: VerifyingKey = sk.verifying_key();
    let body = vec![b'a'; 1024];
    let signer = Signer::new(sk, "bench-key".into(), Duration::from_secs(60));
    let template = Req::new("POST", "/api/items?limit=10")
        .header("host", "alice.example.org")
        .header("content-type", "application/json")
        .header("content-length", "1024")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*");
    // Every request has its own nonce, so each passes the replay cache once: signed up front,
    // one batch per round.
    let batches: Vec<Vec<Req>> = (0..ROUNDS)
        .map(|_| {
            (0..REQUESTS)
                .map(|_| {
                    let mut r = template.clone();
                    signer
                        .sign(&r.view(), Some(&body), NOW, &Signer::nonce())
                        .unwrap()
                        .apply(&mut r.headers);
                    r
                })
                .collect()
        })
        .collect();

    // The raw operation the budget is relative to: verify_strict over each request's own
    // base and signature (one fixed signature would flatter it: the variable-time scalar
    // multiplication branches on the signature, and a repeated one is perfectly predicted).
    let raw_inputs: Vec<Vec<(Vec<u8>, Signature)>> = batches
        .iter()
        .map(|batch| {
            batch
                .iter()
                .map(|r| {
                    let fields = SignatureFields::from_headers(&r.headers).unwrap();
                    let entry = fields.select(None).unwrap();
                    let base = signature_base(
                        MessageView::Request(&r.view()),
                        entry.components().unwrap(),
                        &entry.signature_params_value().unwrap(),
                        &[],
                    )
                    .unwrap();
                    let sig: Signature = entry.ed25519_signature().unwrap();
                    vk.verify_strict(&base, &sig).unwrap();
                    (base, sig)
                })
                .collect()
        })
        .collect();

    let policy = Policy {
        hosts: vec![HostRule::parse("alice.example.org").unwrap()],
        ..Policy::default()
    };
    // Sharded caches report Full when one shard is: leave room.
    let replay = ReplayCache::new(2 * ROUNDS * REQUESTS);
    let lookup = |id: &str| (id == "bench-key").then_some(&vk);

    let mut raw = Duration::MAX;
    let mut full = Duration::MAX;
    for (batch, raw_batch) in batches.iter().zip(&raw_inputs) {
        let t = Instant::now();
        for (base, sig) in raw_batch {
            vk.verify_strict(black_box(base), black_box(sig)).unwrap();
        }
        raw = raw.min(t.elapsed() / REQUESTS as u32);

        let t = Instant::now();
        for req in batch {
            let v = verify_headers(black_box(&req.view()), &policy, lookup, &replay, NOW).unwrap();
            let mut check = v.body_checker();
            check.update(black_box(&body));
            check.finish().unwrap();
        }
        full = full.min(t.elapsed() / REQUESTS as u32);
    }
    let ratio = full.as_secs_f64() / raw.as_secs_f64();
    println!("raw verify_strict {raw:?}; full pipeline {full:?}; ratio {ratio:.3}");
    assert!(ratio <= 1.2, "pipeline {full:?} is {ratio:.2}x raw {raw:?}");
}
