//! `crypto`: the per-request cost nothing can remove, on this machine: one Ed25519 signature
//! (outbound, as peergate does it: `peergate_signature::KeyPair`, AWS-LC; and as
//! ed25519-dalek does it), one strict Ed25519 verification (inbound, as peergate does it:
//! `peergate_signature::ed25519::verify`, and as ed25519-dalek's `verify_strict` does it),
//! SHA-256 of a 1 KiB body; and the cost of decompressing a public key, which a snapshot that
//! kept only compressed keys would pay.

use std::hint::black_box;
use std::time::Instant;

use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest, Sha256};

use crate::args::Args;

pub fn main(args: &Args) -> Result<(), String> {
    let n: usize = args.num("n", 20_000)?;
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public = key.verifying_key();
    // Distinct messages, as in service (dalek's verification is variable-time).
    let messages: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("\"@method\": GET\n\"@authority\": 127.0.0.1\n\"@path\": /hello\n\"@query\": ?\n\"@signature-params\": (\"@method\" \"@authority\" \"@path\" \"@query\");created=1732400000;expires=1732400060;nonce=\"{i:022}\";keyid=\"poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U\";alg=\"ed25519\";tag=\"peergate\"").into_bytes())
        .collect();
    let signatures: Vec<_> = messages.iter().map(|m| key.sign(m)).collect();

    let pair = peergate_signature::KeyPair::new(key.clone());
    let t = Instant::now();
    for i in 0..n {
        black_box(pair.sign(black_box(&messages[i % 1024])));
    }
    let sign_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    let t = Instant::now();
    for i in 0..n {
        black_box(key.sign(black_box(&messages[i % 1024])));
    }
    let sign_dalek_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    let t = Instant::now();
    for i in 0..n {
        let ok = peergate_signature::ed25519::verify(
            &public,
            black_box(&messages[i % 1024]),
            &signatures[i % 1024],
        );
        if !black_box(ok) {
            return Err("a signature did not verify".into());
        }
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    let t = Instant::now();
    for i in 0..n {
        let ok = public.verify_strict(black_box(&messages[i % 1024]), &signatures[i % 1024]);
        black_box(ok).map_err(|e| e.to_string())?;
    }
    let verify_strict_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    let body = vec![b'x'; 1024];
    let t = Instant::now();
    for _ in 0..n {
        black_box(Sha256::digest(black_box(&body)));
    }
    let sha_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    // What keeping only the 32 compressed bytes of a peer's key would add to a request.
    let raw: Vec<[u8; 32]> = (0..1024u32)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SigningKey::from_bytes(&seed).verifying_key().to_bytes()
        })
        .collect();
    let t = Instant::now();
    for i in 0..n {
        let key = ed25519_dalek::VerifyingKey::from_bytes(black_box(&raw[i % 1024]));
        black_box(key).map_err(|e| e.to_string())?;
    }
    let decompress_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("ed25519_sign_us={sign_us:.1} ed25519_sign_dalek_us={sign_dalek_us:.1} ed25519_verify_us={verify_us:.1} ed25519_verify_strict_us={verify_strict_us:.1} sha256_1k_us={sha_us:.2} ed25519_decompress_us={decompress_us:.1}");
    Ok(())
}
