//! Strict Ed25519 verification for the price of a plain one.
//!
//! ed25519-dalek's `verify_strict` accepts a signature `(R, s)` over `M` under key `A` when `s`
//! is canonical, `R` and `A` are not of small order, and `[s]B - [k]A` (with
//! `k = SHA-512(R || A || M)`) encodes to exactly the bytes of `R`. To learn `R`'s order it
//! decompresses `R`: a square root, about 5 µs, a fifth of the whole check on a CPU with
//! AVX-512 IFMA. That decompression is not needed. When the encodings are equal, `R` is the
//! canonical encoding of a point, and the canonical encodings of the eight points of small
//! order are eight known byte strings. So [`verify`] is dalek's plain `verify` (canonical `s`,
//! equal encodings) plus two cheap checks: the key is not weak (three doublings), and `R` is
//! none of those eight (byte comparisons).
//! It accepts exactly the signatures `verify_strict` accepts; the tests build signatures that
//! plain verification accepts and strict verification refuses, each way there is.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// The canonical encodings of the eight points of order dividing 8
/// (`curve25519_dalek::constants::EIGHT_TORSION`, compressed; a test checks them against it).
const SMALL_ORDER_ENCODINGS: [[u8; 32]; 8] = [
    // the identity, (0, 1)
    [
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ],
    // order 2, (0, -1)
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // order 4, (±sqrt(-1), 0)
    [0x00; 32],
    [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x80,
    ],
    // order 8
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0xfa,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x85,
    ],
];

/// Whether `signature` is a valid Ed25519 signature of `message` under `key`, by the rules of
/// ed25519-dalek's `verify_strict` (see the module documentation).
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    !SMALL_ORDER_ENCODINGS.contains(signature.r_bytes())
        && !key.is_weak()
        && key.verify(message, signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::{EdwardsPoint, Scalar};
    use ed25519_dalek::{Signer, SigningKey};
    use sha2::{Digest, Sha512};

    /// The answer of both checks, which must agree.
    fn both(key: &VerifyingKey, message: &[u8], signature: &Signature) -> (bool, bool) {
        let ours = verify(key, message, signature);
        let strict = key.verify_strict(message, signature).is_ok();
        assert_eq!(ours, strict, "disagreement on {signature:?} under {key:?}");
        (ours, key.verify(message, signature).is_ok())
    }

    /// `k = SHA-512(R || A || M)` reduced, as Ed25519 defines it.
    fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
        let mut h = Sha512::new();
        h.update(r);
        h.update(a);
        h.update(message);
        let mut wide = [0u8; 64];
        wide.copy_from_slice(&h.finalize());
        Scalar::from_bytes_mod_order_wide(&wide)
    }

    fn signature(r: &[u8; 32], s: &Scalar) -> Signature {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(r);
        bytes[32..].copy_from_slice(s.as_bytes());
        Signature::from_bytes(&bytes)
    }

    fn key(point: &EdwardsPoint) -> VerifyingKey {
        VerifyingKey::from_bytes(&point.compress().to_bytes()).unwrap()
    }

    #[test]
    fn the_small_order_encodings_are_the_eight_torsion_points() {
        let mut from_dalek: Vec<[u8; 32]> = EIGHT_TORSION
            .iter()
            .map(|p| p.compress().to_bytes())
            .collect();
        let mut ours = SMALL_ORDER_ENCODINGS.to_vec();
        from_dalek.sort();
        ours.sort();
        assert_eq!(ours, from_dalek);
    }

    #[test]
    fn agrees_with_verify_strict_on_honest_and_altered_signatures() {
        for i in 0u8..64 {
            let signer = SigningKey::from_bytes(&[i; 32]);
            let key = signer.verifying_key();
            let message = vec![i; usize::from(i) * 7];
            let good = signer.sign(&message);
            assert_eq!(both(&key, &message, &good), (true, true));

            let mut other = message.clone();
            other.push(1);
            assert_eq!(both(&key, &other, &good), (false, false));

            // A flipped bit in R, then in s.
            for byte in [usize::from(i) % 32, 32 + usize::from(i) % 32] {
                let mut bytes = good.to_bytes();
                bytes[byte] ^= 1 << (i % 8);
                assert!(!both(&key, &message, &Signature::from_bytes(&bytes)).0);
            }

            // s + ℓ: the same signature with a non-canonical s.
            let s = Scalar::from_canonical_bytes(good.s_bytes().to_owned()).unwrap();
            let mut wide = [0u8; 32];
            let l = Scalar::ZERO - Scalar::ONE; // ℓ - 1
            let mut carry = 1u16;
            for (out, (a, b)) in wide.iter_mut().zip(s.as_bytes().iter().zip(l.as_bytes())) {
                let sum = u16::from(*a) + u16::from(*b) + carry;
                *out = sum as u8;
                carry = sum >> 8;
            }
            let mut bytes = good.to_bytes();
            bytes[32..].copy_from_slice(&wide);
            assert_eq!(
                both(&key, &message, &Signature::from_bytes(&bytes)),
                (false, false)
            );
        }
    }

    /// A key with a torsion part (not weak) and a signature whose `R` is of small order: plain
    /// verification accepts it, strict verification refuses it.
    #[test]
    fn refuses_a_small_order_r_that_plain_verification_accepts() {
        let a = Scalar::from_bytes_mod_order([9; 32]);
        let mut found = 0;
        for t in EIGHT_TORSION.iter().skip(1) {
            let point = ED25519_BASEPOINT_POINT * a + t;
            let key = key(&point);
            assert!(!key.is_weak());
            for r_point in EIGHT_TORSION.iter() {
                let r = r_point.compress().to_bytes();
                for n in 0u32..64 {
                    let message = n.to_le_bytes();
                    let k = challenge(&r, key.as_bytes(), &message);
                    // [s]B - [k]A = [s - k·a]B - [k]T = -[k]T when s = k·a.
                    if (-(t * k)).compress().to_bytes() != r {
                        continue;
                    }
                    let sig = signature(&r, &(k * a));
                    assert_eq!(both(&key, &message, &sig), (false, true));
                    found += 1;
                }
            }
        }
        assert!(found > 20, "only {found} cases");
    }

    /// A weak key (a point of small order) and an ordinary-looking `R`: plain verification
    /// accepts, strict verification refuses.
    #[test]
    fn refuses_a_weak_key_that_plain_verification_accepts() {
        let mut found = 0;
        for t in EIGHT_TORSION.iter() {
            let key = key(t);
            assert!(key.is_weak());
            for shift in EIGHT_TORSION.iter() {
                for n in 1u8..32 {
                    let rho = Scalar::from_bytes_mod_order([n; 32]);
                    let r_point = ED25519_BASEPOINT_POINT * rho + shift;
                    let r = r_point.compress().to_bytes();
                    let message = [n, 1, 2, 3];
                    let k = challenge(&r, key.as_bytes(), &message);
                    // [s]B - [k]T = R when s = ρ and [k]T = -shift.
                    if t * k != -shift {
                        continue;
                    }
                    let sig = signature(&r, &rho);
                    assert_eq!(both(&key, &message, &sig), (false, true));
                    found += 1;
                }
            }
        }
        assert!(found > 20, "only {found} cases");
    }

    /// Every small-order `R` with `s = 0` under a weak key, where both rules of strictness
    /// apply at once; and each small-order `R` under an ordinary key, which nothing accepts.
    #[test]
    fn agrees_on_every_small_order_r() {
        let ordinary = SigningKey::from_bytes(&[3; 32]).verifying_key();
        for r_point in EIGHT_TORSION.iter() {
            let r = r_point.compress().to_bytes();
            for s in [Scalar::ZERO, Scalar::ONE] {
                let sig = signature(&r, &s);
                assert!(!both(&ordinary, b"m", &sig).0);
                for t in EIGHT_TORSION.iter() {
                    assert!(!both(&key(t), b"m", &sig).0);
                }
            }
        }
    }
}
