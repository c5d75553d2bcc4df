//! Signing requests the way peergate does (label `peer`, DESIGN.md "Wire format"), and a
//! general [`sign_message`] for any covered components and parameters.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::RngCore as _;
use sfv::{key_ref, KeyRef, RefBareItem};

use crate::base::{serialize_components, signature_base};
use crate::components::{
    push_params, ComponentError, ComponentId, Derived, FieldOverride, MessageView, RequestView,
};
use crate::digest::{content_digest, DigestAlgorithm};
use crate::input::{
    sf_integer, sf_string, signature_input_member, signature_member, signature_params_value,
    InputError, SignatureParams, SIGNATURE, SIGNATURE_INPUT,
};
use crate::keypair::KeyPair;

/// The label peergate signs with.
pub const LABEL: &str = "peer";
/// The `tag` peergate signs with, and looks for by default.
pub const TAG: &str = "peergate";
/// The `alg` value peergate writes.
pub const ALG: &str = "ed25519";
/// The parameter names [`Signer::sign`] writes, checked at compile time.
const CREATED: &KeyRef = key_ref("created");
const EXPIRES: &KeyRef = key_ref("expires");
const NONCE: &KeyRef = key_ref("nonce");
const KEYID: &KeyRef = key_ref("keyid");
const ALG_KEY: &KeyRef = key_ref("alg");
const TAG_KEY: &KeyRef = key_ref("tag");
/// Random bytes in a nonce from [`Signer::nonce`] (128 bits).
pub const NONCE_BYTES: usize = 16;

/// Field name of `Content-Digest`.
pub const CONTENT_DIGEST: &str = "content-digest";
/// [`CONTENT_DIGEST`] as a [`HeaderName`], looked up without parsing the name each time.
pub(crate) static CONTENT_DIGEST_NAME: HeaderName = HeaderName::from_static(CONTENT_DIGEST);

/// Why a message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// A covered component is missing or cannot be signed (e.g. no Host header).
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// A label or parameter does not fit the structured-field syntax.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A field value could not be turned into an HTTP header value.
    #[error("cannot build the {0} header value")]
    HeaderValue(&'static str),
}

/// The header fields to set on a signed request (each replaces any field of that name).
#[derive(Debug, Clone)]
pub struct SignatureHeaders {
    /// `Content-Digest`, when the body was signed.
    pub content_digest: Option<HeaderValue>,
    /// `Signature-Input`.
    pub signature_input: HeaderValue,
    /// `Signature`.
    pub signature: HeaderValue,
}

impl SignatureHeaders {
    /// Sets the fields on `headers`, replacing earlier `Signature-Input`, `Signature` and (when
    /// the body was signed) `Content-Digest` fields.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(cd) = &self.content_digest {
            headers.insert(HeaderName::from_static(CONTENT_DIGEST), cd.clone());
        }
        headers.insert(
            HeaderName::from_static(SIGNATURE_INPUT),
            self.signature_input.clone(),
        );
        headers.insert(HeaderName::from_static(SIGNATURE), self.signature.clone());
    }
}

/// The result of [`sign_message`]: everything a caller or a test may want to look at.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The label.
    pub label: String,
    /// The signature base that was signed.
    pub base: Vec<u8>,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
    /// The `Signature-Input` member (`label=(...);params`).
    pub signature_input: String,
    /// The `Signature` member (`label=:base64:`).
    pub signature_field: String,
}

/// Signs a signature base with Ed25519 (RFC 8032, deterministic).
pub fn sign_base(key: &SigningKey, base: &[u8]) -> [u8; 64] {
    key.sign(base).to_bytes()
}

/// Signs `msg` over `components` with `params`, under `label`.
///
/// `overrides` replaces header fields of `msg` while the base is built (the signer's new
/// `Content-Digest`). Errors when a component is missing or listed twice, or the label or a
/// parameter does not fit the structured-field syntax.
pub fn sign_message(
    key: &SigningKey,
    msg: MessageView<'_>,
    label: &str,
    components: &[ComponentId],
    params: &SignatureParams,
    overrides: &[FieldOverride<'_>],
) -> Result<Signed, SignError> {
    let params_value = signature_params_value(components, params);
    sign_params_value(
        |base| sign_base(key, base),
        msg,
        label,
        components,
        params_value,
        overrides,
    )
}

/// [`sign_message`] with the `@signature-params` value already serialized.
fn sign_params_value(
    sign: impl FnOnce(&[u8]) -> [u8; 64],
    msg: MessageView<'_>,
    label: &str,
    components: &[ComponentId],
    params_value: String,
    overrides: &[FieldOverride<'_>],
) -> Result<Signed, SignError> {
    let signature_input = signature_input_member(label, &params_value)?;
    let base = signature_base(msg, components, &params_value, overrides)?;
    let signature = sign(&base);
    let signature_field = signature_member(label, &signature)?;
    Ok(Signed {
        label: label.to_owned(),
        base,
        signature,
        signature_input,
        signature_field,
    })
}

/// Signs outgoing requests as peergate does.
#[derive(Clone)]
pub struct Signer {
    key: KeyPair,
    key_id: String,
    lifetime: Duration,
    digest: DigestAlgorithm,
    /// What [`Signer::components_for`] returns, made once for each of its seven outcomes (see
    /// [`Shape`]): building identifiers allocates and validates, on every signed request.
    shapes: [Vec<ComponentId>; 7],
    /// The parameters after `nonce`, serialized once: `;keyid="…";alg="ed25519";tag="peergate"`
    /// (or why the key id cannot be written).
    fixed_params: Result<String, InputError>,
}

/// Which of the covered lists a request takes: no body, or a body with or without
/// `Content-Type` and `Content-Length`; [`Shape::ALL`] is the order of [`Signer::shapes`].
#[derive(Clone, Copy)]
struct Shape {
    body: bool,
    content_type: TypeCover,
    content_length: bool,
}

/// How a body's `Content-Type` is covered: not at all (the request has none), as its text, or,
/// when its value holds bytes outside ASCII, which no signature base may hold (RFC 9421 §2.5),
/// as a Byte Sequence (`"content-type";bs`, §2.1.3), which the base writes in base64.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TypeCover {
    Absent,
    Text,
    Bytes,
}

impl Shape {
    const ALL: [Shape; 7] = [
        Shape::new(false, TypeCover::Absent, false),
        Shape::new(true, TypeCover::Absent, false),
        Shape::new(true, TypeCover::Text, false),
        Shape::new(true, TypeCover::Absent, true),
        Shape::new(true, TypeCover::Text, true),
        Shape::new(true, TypeCover::Bytes, false),
        Shape::new(true, TypeCover::Bytes, true),
    ];

    const fn new(body: bool, content_type: TypeCover, content_length: bool) -> Shape {
        Shape {
            body,
            content_type,
            content_length,
        }
    }

    fn of(req: &RequestView<'_>, has_body: bool) -> Shape {
        let types = req.headers.get_all(CONTENT_TYPE);
        let content_type = if !has_body || !req.headers.contains_key(CONTENT_TYPE) {
            TypeCover::Absent
        } else if types.iter().any(|v| !v.as_bytes().is_ascii()) {
            TypeCover::Bytes
        } else {
            TypeCover::Text
        };
        Shape {
            body: has_body,
            content_type,
            content_length: has_body && req.headers.contains_key(CONTENT_LENGTH),
        }
    }

    /// This shape's list among `shapes`, made from [`Shape::ALL`] in its order.
    fn pick(self, shapes: &[Vec<ComponentId>; 7]) -> &[ComponentId] {
        let [bodiless, digest_only, with_type, with_length, with_both, with_bytes, with_both_bytes] =
            shapes;
        match (self.body, self.content_type, self.content_length) {
            (false, _, _) => bodiless,
            (true, TypeCover::Absent, false) => digest_only,
            (true, TypeCover::Text, false) => with_type,
            (true, TypeCover::Absent, true) => with_length,
            (true, TypeCover::Text, true) => with_both,
            (true, TypeCover::Bytes, false) => with_bytes,
            (true, TypeCover::Bytes, true) => with_both_bytes,
        }
    }

    fn components(self) -> Vec<ComponentId> {
        let mut out: Vec<ComponentId> = [
            Derived::Method,
            Derived::Authority,
            Derived::Path,
            Derived::Query,
        ]
        .into_iter()
        .filter_map(|d| ComponentId::derived(d).ok())
        .collect();
        if self.body {
            out.extend(ComponentId::new(CONTENT_DIGEST).ok());
            match self.content_type {
                TypeCover::Absent => {}
                TypeCover::Text => out.extend(ComponentId::new(CONTENT_TYPE.as_str()).ok()),
                TypeCover::Bytes => out.extend(ComponentId::parse(r#""content-type";bs"#).ok()),
            }
            if self.content_length {
                out.extend(ComponentId::new(CONTENT_LENGTH.as_str()).ok());
            }
        }
        out
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with `key`, announced as `key_id`; signatures expire `lifetime` after creation.
    pub fn new(key: SigningKey, key_id: String, lifetime: Duration) -> Self {
        let fixed_params = [(KEYID, key_id.as_str()), (ALG_KEY, ALG), (TAG_KEY, TAG)]
            .into_iter()
            .map(|(k, v)| Ok((k, RefBareItem::String(sf_string(k.as_str(), v)?))))
            .collect::<Result<Vec<_>, InputError>>()
            .map(|params| {
                let mut out = String::with_capacity(key_id.len() + 40);
                push_params(&mut out, params);
                out
            });
        Signer {
            key: KeyPair::new(key),
            key_id,
            lifetime,
            digest: DigestAlgorithm::Sha256,
            shapes: Shape::ALL.map(Shape::components),
            fixed_params,
        }
    }

    /// The key id written as `keyid`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half of the key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The signature lifetime (`expires - created`).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A fresh random nonce: 128 bits from the thread-local CSPRNG, base64url without padding.
    pub fn nonce() -> String {
        let mut bytes = [0u8; NONCE_BYTES];
        rand::thread_rng().fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The components peergate covers for this request: `@method @authority @path @query`, and
    /// with a non-empty body `content-digest`, plus `content-type` and `content-length` when
    /// the request has them (`"content-type";bs` for a value with bytes outside ASCII).
    pub fn components_for(req: &RequestView<'_>, has_body: bool) -> Vec<ComponentId> {
        Shape::of(req, has_body).components()
    }

    /// The parameters peergate writes, in this order: `created`, `expires`, `nonce`, `keyid`,
    /// `alg="ed25519"`, `tag="peergate"`.
    pub fn params_for(&self, now: u64, nonce: &str) -> Result<SignatureParams, InputError> {
        let mut p = SignatureParams::new();
        p.push_integer("created", now)?;
        p.push_integer("expires", now.saturating_add(self.lifetime.as_secs()))?;
        p.push_string("nonce", nonce)?;
        p.push_string("keyid", &self.key_id)?;
        p.push_string("alg", ALG)?;
        p.push_string("tag", TAG)?;
        Ok(p)
    }

    /// Signs `req` (label `peer`) at time `now` (unix seconds) with `nonce`.
    ///
    /// With a non-empty `body`, a `Content-Digest` (sha-256) is computed and covered; the base
    /// is built as if it were already in the headers, whatever `Content-Digest` the request
    /// carried before. Set the returned fields with [`SignatureHeaders::apply`].
    pub fn sign(
        &self,
        req: &RequestView<'_>,
        body: Option<&[u8]>,
        now: u64,
        nonce: &str,
    ) -> Result<SignatureHeaders, SignError> {
        let body = body.filter(|b| !b.is_empty());
        let digest = body.map(|b| content_digest(self.digest, b));
        let shape = Shape::of(req, digest.is_some());
        let components = shape.pick(&self.shapes);
        // What `params_for` gives, serialized straight into the value: this runs per request.
        let expires = now.saturating_add(self.lifetime.as_secs());
        let dynamic = [
            (CREATED, RefBareItem::Integer(sf_integer("created", now)?)),
            (
                EXPIRES,
                RefBareItem::Integer(sf_integer("expires", expires)?),
            ),
            (NONCE, RefBareItem::String(sf_string("nonce", nonce)?)),
        ];
        let fixed = self.fixed_params.as_ref().map_err(Clone::clone)?;
        let mut params_value = serialize_components(components, dynamic);
        params_value.push_str(fixed);
        let overrides = digest_override(digest.as_deref());
        let signed = sign_params_value(
            |base| self.key.sign(base),
            MessageView::Request(req),
            LABEL,
            components,
            params_value,
            &overrides,
        )?;
        let content_digest = match digest {
            Some(d) => Some(
                HeaderValue::try_from(d).map_err(|_| SignError::HeaderValue("Content-Digest"))?,
            ),
            None => None,
        };
        Ok(SignatureHeaders {
            content_digest,
            signature_input: HeaderValue::try_from(signed.signature_input)
                .map_err(|_| SignError::HeaderValue("Signature-Input"))?,
            signature: HeaderValue::try_from(signed.signature_field)
                .map_err(|_| SignError::HeaderValue("Signature"))?,
        })
    }
}

/// The signer's new `Content-Digest`, if any, as the field the base reads instead of the
/// request's own.
fn digest_override(digest: Option<&str>) -> Vec<FieldOverride<'_>> {
    digest
        .map(|d| FieldOverride {
            name: CONTENT_DIGEST,
            value: d.as_bytes(),
        })
        .into_iter()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `Signer::sign` serializes its parameters and reuses its covered lists; what it writes
    /// must be what the general path writes from `components_for` and `params_for`.
    #[test]
    fn sign_matches_the_general_path() {
        use http::{Method, Uri};
        let signer = Signer::new(
            SigningKey::from_bytes(&[7u8; 32]),
            "key-1".to_owned(),
            Duration::from_secs(60),
        );
        let uri: Uri = "/a/b?x=1".parse().unwrap();
        let latin1: &[u8] = b"text/plain; name=caf\xe9";
        let fields: [&[(&str, &[u8])]; 6] = [
            &[],
            &[("content-type", b"text/plain")],
            &[("content-length", b"5")],
            &[("content-type", b"text/plain"), ("content-length", b"5")],
            &[("content-type", latin1)],
            &[("content-type", latin1), ("content-length", b"5")],
        ];
        for extra in fields {
            for body in [None, Some(&b"hello"[..])] {
                for nonce in ["n1", r#"a "quoted" \ one"#] {
                    let mut headers = HeaderMap::new();
                    headers.insert("host", HeaderValue::from_static("example.org"));
                    for (k, v) in extra {
                        headers.insert(*k, HeaderValue::from_bytes(v).unwrap());
                    }
                    let req = RequestView::new(&Method::POST, &uri, &headers, "https");
                    let fast = signer.sign(&req, body, 1_700_000_000, nonce).unwrap();

                    let digest = body.map(|b| content_digest(DigestAlgorithm::Sha256, b));
                    let overrides = digest_override(digest.as_deref());
                    let general = sign_message(
                        signer.key.signing_key(),
                        MessageView::Request(&req),
                        LABEL,
                        &Signer::components_for(&req, body.is_some()),
                        &signer.params_for(1_700_000_000, nonce).unwrap(),
                        &overrides,
                    )
                    .unwrap();
                    assert_eq!(fast.signature_input, general.signature_input.as_str());
                    assert_eq!(fast.signature, general.signature_field.as_str());
                    let input = fast.signature_input.to_str().unwrap();
                    let bytes = extra.iter().any(|(_, v)| !v.is_ascii());
                    assert_eq!(
                        input.contains(r#""content-type";bs"#),
                        bytes && body.is_some(),
                        "{input}"
                    );
                }
            }
        }
        // Each shape's list is the one `pick` finds for it.
        let shapes = Shape::ALL.map(Shape::components);
        for shape in Shape::ALL {
            assert_eq!(shape.pick(&shapes), shape.components().as_slice());
        }
        // A key id that cannot be written fails as the general path fails.
        let bad = Signer::new(
            SigningKey::from_bytes(&[7u8; 32]),
            "café".to_owned(),
            Duration::from_secs(60),
        );
        let headers = HeaderMap::new();
        let req = RequestView::new(&Method::GET, &uri, &headers, "https");
        let err = bad.sign(&req, None, 1, "n").unwrap_err();
        assert_eq!(
            err,
            SignError::Input(bad.params_for(1, "n").unwrap_err()),
            "{err}"
        );
    }

    #[test]
    fn nonce_is_128_bit_base64url() {
        let a = Signer::nonce();
        let b = Signer::nonce();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), NONCE_BYTES);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
