//! Ed25519 signing for about half of what ed25519-dalek's signing costs.
//!
//! Every request peergate sends to a peer is signed, and signing was the largest single cost
//! of the outbound hop (benches/HISTORY.md, change 28): ed25519-dalek takes about 18 µs, most of
//! it the constant-time multiplication of the base point. AWS-LC signs with s2n-bignum's
//! formally verified assembly in about 9 µs on the same machine. Ed25519 signatures are
//! deterministic (RFC 8032 §5.1.6): one key and one message give the same 64 bytes whichever
//! library computes them, so the choice changes the cost and never the output; the tests
//! compare both libraries' signatures byte for byte.
//!
//! ed25519-dalek stays the key's owner: it derives the public key, and verification stays
//! with [`crate::ed25519`] (AWS-LC's verification is slower than dalek's AVX-512 IFMA backend
//! and not strict). When AWS-LC cannot take the key, or a signing call fails, dalek signs, so
//! the fast path can only ever make signing cheaper, never fail it.
//!
//! AWS-LC holds its own copy of the seed; it is wiped when the last clone of the pair is
//! dropped (AWS-LC clears every allocation it frees), as dalek's `SigningKey` wipes its own.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt;

use aws_lc_rs::signature::Ed25519KeyPair;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// A signing key, with AWS-LC's copy of it for the signatures made per request.
#[derive(Clone)]
pub struct KeyPair {
    key: SigningKey,
    /// `None` when AWS-LC refused the key or derived another public key from it.
    fast: Option<Ed25519KeyPair>,
}

impl KeyPair {
    /// Wraps `key`; AWS-LC gets the seed and must derive the same public key as dalek, or it
    /// is not used.
    pub fn new(key: SigningKey) -> Self {
        let public = key.verifying_key();
        let fast = Ed25519KeyPair::from_seed_and_public_key(key.as_bytes(), public.as_bytes()).ok();
        KeyPair { key, fast }
    }

    /// The key as ed25519-dalek holds it.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Whether signatures come from AWS-LC (for tests and diagnostics).
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// The Ed25519 signature of `message` (RFC 8032, deterministic).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.fast
            .as_ref()
            .and_then(|fast| fast.try_sign(message).ok())
            .and_then(|sig| <[u8; 64]>::try_from(sig.as_ref()).ok())
            .unwrap_or_else(|| self.key.sign(message).to_bytes())
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.verifying_key())
            .field("fast", &self.is_fast())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 8032 §7.1, TEST 3: the key, the message and the signature the RFC gives.
    #[test]
    fn signs_the_rfc_8032_vector() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let seed: [u8; 32] =
            hex("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7")
                .try_into()
                .unwrap();
        let pair = KeyPair::new(SigningKey::from_bytes(&seed));
        assert!(pair.is_fast());
        assert_eq!(
            pair.verifying_key().as_bytes().to_vec(),
            hex("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025")
        );
        assert_eq!(
            pair.sign(&hex("af82")).to_vec(),
            hex(concat!(
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac",
                "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
            ))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// AWS-LC and dalek give the same bytes for any key and message, and the signature
        /// verifies strictly.
        #[test]
        fn both_libraries_sign_alike(seed in any::<[u8; 32]>(), message in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let pair = KeyPair::new(SigningKey::from_bytes(&seed));
            prop_assert!(pair.is_fast());
            let ours = pair.sign(&message);
            prop_assert_eq!(ours, pair.signing_key().sign(&message).to_bytes());
            let sig = ed25519_dalek::Signature::from_bytes(&ours);
            prop_assert!(crate::ed25519::verify(&pair.verifying_key(), &message, &sig));
        }
    }

    /// Without AWS-LC's copy, dalek signs, and the bytes are the same.
    #[test]
    fn dalek_signs_when_aws_lc_cannot() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let fast = KeyPair::new(key.clone());
        let slow = KeyPair { key, fast: None };
        assert!(!slow.is_fast());
        assert_eq!(fast.sign(b"abc"), slow.sign(b"abc"));
    }
}
