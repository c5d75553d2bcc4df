//! Refusal codes: the one list of reasons peergate gives for turning a request away.
//!
//! The codes are part of the public interface (DESIGN.md): they appear in the `reason` member
//! of `application/problem+json` answers and as the `reason` label of
//! `peergate_rejections_total`. Keeping them in one enum means a metric label can never be a
//! free-form string taken from a request, and every refusal maps to exactly one HTTP status.

use std::fmt;

/// Why a request was refused.
///
/// Every variant has a stable `snake_case` [`code`](Reason::code), an HTTP
/// [`status`](Reason::status) and a short human [`title`](Reason::title) for problem+json.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No `Signature` / `Signature-Input` on a request that needs one.
    MissingSignature,
    /// The signature fields are present but unparsable, or their labels do not match.
    MalformedSignature,
    /// `keyid` is absent or names no key of an allowlisted peer.
    UnknownKey,
    /// `alg` is present and is not `ed25519`.
    UnsupportedAlg,
    /// The signature does not cover what the policy requires (method, target, content-digest).
    MissingComponent,
    /// `created` is older than `max_age`, or `expires` has passed.
    Expired,
    /// `created` lies further in the future than the allowed clock skew.
    NotYetValid,
    /// The nonce was already seen within the freshness window.
    Replayed,
    /// `@authority` is not one of our `identity.hosts`: the request was signed for another host.
    WrongAuthority,
    /// The body does not match its `Content-Digest`, or the digest field is unusable.
    DigestMismatch,
    /// The Ed25519 signature does not verify.
    BadSignature,
    /// The peer is known, but the route or the peer's own rules do not allow this request.
    Forbidden,
    /// The body exceeds `signatures.max_body`.
    BodyTooLarge,
    /// The replay cache is full of live nonces; refusing is safer than forgetting one.
    ReplayCacheFull,
}

impl Reason {
    /// Every reason, in declaration order (for pre-registering metric label values, docs, tests).
    pub const ALL: [Reason; 14] = [
        Reason::MissingSignature,
        Reason::MalformedSignature,
        Reason::UnknownKey,
        Reason::UnsupportedAlg,
        Reason::MissingComponent,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Replayed,
        Reason::WrongAuthority,
        Reason::DigestMismatch,
        Reason::BadSignature,
        Reason::Forbidden,
        Reason::BodyTooLarge,
        Reason::ReplayCacheFull,
    ];

    /// The stable machine-readable code, e.g. `"missing_signature"`.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::MissingSignature => "missing_signature",
            Reason::MalformedSignature => "malformed_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::UnsupportedAlg => "unsupported_alg",
            Reason::MissingComponent => "missing_component",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Replayed => "replayed",
            Reason::WrongAuthority => "wrong_authority",
            Reason::DigestMismatch => "digest_mismatch",
            Reason::BadSignature => "bad_signature",
            Reason::Forbidden => "forbidden",
            Reason::BodyTooLarge => "body_too_large",
            Reason::ReplayCacheFull => "replay_cache_full",
        }
    }

    /// The HTTP status to answer with: 401 for anything about the signature (the client can fix
    /// it by signing properly), 403 when the signer is known but not allowed, 413 for an
    /// oversized body, 503 when the replay cache cannot take another nonce (a temporary
    /// condition on our side, worth a retry).
    pub fn status(&self) -> u16 {
        match self {
            Reason::Forbidden => 403,
            Reason::BodyTooLarge => 413,
            Reason::ReplayCacheFull => 503,
            Reason::MissingSignature
            | Reason::MalformedSignature
            | Reason::UnknownKey
            | Reason::UnsupportedAlg
            | Reason::MissingComponent
            | Reason::Expired
            | Reason::NotYetValid
            | Reason::Replayed
            | Reason::WrongAuthority
            | Reason::DigestMismatch
            | Reason::BadSignature => 401,
        }
    }

    /// A short human title for the problem+json `title` member. It is the same for every
    /// occurrence of the reason (RFC 9457 §3.1.3); specifics go into the detail.
    pub fn title(&self) -> &'static str {
        match self {
            Reason::MissingSignature => "Signature required",
            Reason::MalformedSignature => "Malformed signature",
            Reason::UnknownKey => "Unknown signing key",
            Reason::UnsupportedAlg => "Unsupported signature algorithm",
            Reason::MissingComponent => "Signature component missing",
            Reason::Expired => "Signature expired",
            Reason::NotYetValid => "Signature not yet valid",
            Reason::Replayed => "Replayed request",
            Reason::WrongAuthority => "Signed for another host",
            Reason::DigestMismatch => "Content digest mismatch",
            Reason::BadSignature => "Invalid signature",
            Reason::Forbidden => "Forbidden",
            Reason::BodyTooLarge => "Request body too large",
            Reason::ReplayCacheFull => "Replay cache full",
        }
    }

    /// The reason with the given [`code`](Reason::code), if any.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Reason {
    /// Writes the code, so a `Reason` can be used directly as a metric label value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refusal: the reason code plus a detail sentence a person can act on (the problem+json
/// `detail`). The detail must never echo secrets; it may name what was wrong in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which refusal this is; decides status, title and metric label.
    pub reason: Reason,
    /// What exactly was wrong, in words the sender can act on.
    pub detail: String,
}

impl Refusal {
    /// A refusal for `reason` with the given detail.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }

    /// Shortcut for `self.reason.status()`.
    pub fn status(&self) -> u16 {
        self.reason.status()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{} ({})", self.reason.title(), self.reason.code())
        } else {
            write!(
                f,
                "{} ({}): {}",
                self.reason.title(),
                self.reason.code(),
                self.detail
            )
        }
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case_and_round_trip() {
        let mut seen = HashSet::new();
        for r in Reason::ALL {
            let code = r.code();
            assert!(seen.insert(code), "duplicate code {code}");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code} is not snake_case"
            );
            assert_eq!(Reason::from_code(code), Some(r));
            assert_eq!(r.to_string(), code);
            assert!(!r.title().is_empty());
        }
        assert_eq!(seen.len(), 14);
        assert_eq!(Reason::from_code("nope"), None);
    }

    #[test]
    fn codes_match_the_design_list() {
        let codes: Vec<&str> = Reason::ALL.iter().map(Reason::code).collect();
        assert_eq!(
            codes,
            [
                "missing_signature",
                "malformed_signature",
                "unknown_key",
                "unsupported_alg",
                "missing_component",
                "expired",
                "not_yet_valid",
                "replayed",
                "wrong_authority",
                "digest_mismatch",
                "bad_signature",
                "forbidden",
                "body_too_large",
                "replay_cache_full",
            ]
        );
    }

    #[test]
    fn statuses() {
        for r in Reason::ALL {
            let expected = match r {
                Reason::Forbidden => 403,
                Reason::BodyTooLarge => 413,
                Reason::ReplayCacheFull => 503,
                _ => 401,
            };
            assert_eq!(r.status(), expected, "{r}");
        }
    }

    #[test]
    fn refusal_display_and_error() {
        let r = Refusal::new(Reason::UnknownKey, "keyid \"abc\" is not in the peer list");
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.to_string(),
            "Unknown signing key (unknown_key): keyid \"abc\" is not in the peer list"
        );
        let e: Box<dyn std::error::Error> = Box::new(r);
        assert!(e.to_string().contains("unknown_key"));
        assert_eq!(
            Refusal::new(Reason::Forbidden, "").to_string(),
            "Forbidden (forbidden)"
        );
    }
}
