//! Interoperability with a second independent RFC 9421 implementation, the Rust crates
//! `httpsig` 0.0.26 (signature base, parameters, Ed25519 with `ed25519-compact`) and
//! `httpsig-hyper` 0.0.26 (components and `Content-Digest` derived from an `http::Request`).
//! The Python package of `interop_python.rs` is the other one.
//!
//! * theirs → ours: requests httpsig signs as peergate's policy demands (`@method @authority
//!   @path @query`, with a body `content-digest content-type content-length`; `created`,
//!   `expires`, `nonce`, `alg`, `keyid` = RFC 7638 thumbprint, `tag="peergate"`) pass
//!   [`verify_headers`], over the same base byte for byte; tampered ones are refused with the
//!   reason the proxy would give. What httpsig's own verification ignores (`alg`, `created`,
//!   a missing nonce, a replay) the policy refuses.
//! * ours → theirs: httpsig rebuilds `@signature-params` in its fixed order `created expires
//!   nonce alg keyid tag` (and drops parameters it does not know), where [`Signer`] writes
//!   `created expires nonce keyid alg tag`. So httpsig refuses every [`Signer`] signature: not
//!   over the components, which it reads byte for byte as we do, but over the params line it
//!   writes itself. The checks are therefore on the base: its component lines equal ours, and
//!   with the `Signature-Input` as received the signature verifies with its Ed25519 key. Signed
//!   by the same engine with the parameters in its order, httpsig verifies the whole request.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use http::Request;
use httpsig::prelude::message_component::HttpMessageComponentId;
use httpsig::prelude::{
    AlgorithmName, HttpSignatureParams, PublicKey, SecretKey, VerifyingKey as _,
};
use httpsig_hyper::{
    ContentDigestType, HyperSigError, MessageSignatureReq as _, MessageSignatureReqSync as _,
    RequestContentDigest as _,
};
use peergate_signature::{
    base::signature_base, content_digest, sign_message, verify_headers, DigestAlgorithm, HostRule,
    MessageView, Policy, Reason, Refusal, ReplayCache, RequestView, SignatureFields,
    SignatureParams, Signer, Verified,
};
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------------------------------------
// Keys, requests, helpers.

const HOST: &str = "alice.example.org";
const LIFETIME: u64 = 60;
const PARAMS_LINE: &str = "\n\"@signature-params\": ";

/// One Ed25519 key, held by each side in its own library.
struct Keys {
    theirs: SecretKey,
    public: PublicKey,
    ours: SigningKey,
    verifying: VerifyingKey,
    key_id: String,
}

fn keys() -> Keys {
    let seed: [u8; 32] = rand::random();
    let ours = SigningKey::from_bytes(&seed);
    let verifying = ours.verifying_key();
    Keys {
        theirs: SecretKey::from_bytes(&AlgorithmName::Ed25519, &seed).unwrap(),
        public: PublicKey::from_bytes(&AlgorithmName::Ed25519, verifying.as_bytes()).unwrap(),
        key_id: thumbprint(verifying.as_bytes()),
        ours,
        verifying,
    }
}

/// The key id peers sign with (README, "Names"): the RFC 7638 JWK thumbprint, as the main
/// crate's `src/identity.rs` computes it. httpsig's own `key_id()` is another hash (base64 SHA-256
/// of the raw key), so the tests set `keyid` themselves.
fn thumbprint(public: &[u8; 32]) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(jwk))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// httpsig-hyper's `Content-Digest` API is async only; over an in-memory body its futures
/// complete on the first poll, so no runtime is needed.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a future over an in-memory body was pending"),
    }
}

/// A GET with a query: `@query` must carry it, percent-encoding and all.
fn get() -> Request<String> {
    Request::get(format!("https://{HOST}/api/items?page=2&q=a%20b&empty="))
        .header("host", HOST)
        .body(String::new())
        .unwrap()
}

/// A POST with a JSON body to a non-default port, which `@authority` must keep.
fn post() -> Request<String> {
    let body = r#"{"kind":"note","text":"héllo, wörld","n":[1,2,3]}"#.to_owned();
    Request::post(format!("https://{HOST}:8443/api/items?limit=10"))
        .header("host", format!("{HOST}:8443"))
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .body(body)
        .unwrap()
}

fn view(req: &Request<String>) -> RequestView<'_> {
    RequestView::new(req.method(), req.uri(), req.headers(), "https")
}

fn header(req: &Request<String>, name: &str) -> String {
    req.headers()[name].to_str().unwrap().to_owned()
}

/// The components peergate's policy requires ([`verify_headers`], `Coverage::REQUIRED`), in
/// the order [`Signer`] covers them, for httpsig.
fn required_components(with_body: bool) -> Vec<HttpMessageComponentId> {
    let mut names = vec!["@method", "@authority", "@path", "@query"];
    if with_body {
        names.extend(["content-digest", "content-type", "content-length"]);
    }
    names
        .into_iter()
        .map(|n| HttpMessageComponentId::try_from(n).unwrap())
        .collect()
}

/// The parameters the proxy's policy wants, set through httpsig (which orders them itself).
fn their_params(keys: &Keys, with_body: bool, now: u64) -> HttpSignatureParams {
    let mut params = HttpSignatureParams::try_new(&required_components(with_body)).unwrap();
    params
        .set_created(now)
        .set_expires(now + LIFETIME)
        .set_random_nonce()
        .set_alg(&AlgorithmName::Ed25519)
        .set_keyid(&keys.key_id)
        .set_tag("peergate");
    params
}

/// `req` with the `Content-Digest` httpsig-hyper computes, its body kept as a `String` (the
/// boxed body httpsig-hyper returns is not `Sync`, which its signing wants).
fn with_their_digest(req: Request<String>, kind: ContentDigestType) -> Request<String> {
    let body = req.body().clone();
    let (parts, _) = ready(req.set_content_digest(&kind))
        .expect("httpsig-hyper computes a Content-Digest")
        .into_parts();
    Request::from_parts(parts, body)
}

/// `req` signed by httpsig-hyper with `params`, under httpsig's default label (`sig`).
fn sign_theirs(
    keys: &Keys,
    mut req: Request<String>,
    params: &HttpSignatureParams,
) -> Request<String> {
    req.set_message_signature_sync(params, &keys.theirs, None)
        .expect("httpsig signs");
    req
}

/// The proxy's policy: our host on any port, tag `peergate`, nonce required, 300 s max age.
fn policy() -> Policy {
    Policy {
        hosts: vec![HostRule::parse(HOST).unwrap()],
        ..Policy::default()
    }
}

/// The proxy's whole check, headers then body, with the allowlist holding one key.
fn verify_here(
    keys: &Keys,
    req: &Request<String>,
    body: &[u8],
    replay: &ReplayCache,
    now: u64,
) -> Result<Verified, Refusal> {
    let v = verify_headers(
        &view(req),
        &policy(),
        |id: &str| (id == keys.key_id).then_some(&keys.verifying),
        replay,
        now,
    )?;
    let mut check = v.body_checker();
    check.update(body);
    check.finish()?;
    Ok(v)
}

fn accepted(r: Result<Verified, Refusal>, what: &str) -> Verified {
    r.unwrap_or_else(|r| panic!("{what}: refused here: {} ({})", r.reason, r.detail))
}

fn refused(r: Result<Verified, Refusal>, what: &str) -> Refusal {
    match r {
        Ok(v) => panic!("{what}: accepted here: {v:?}"),
        Err(r) => r,
    }
}

/// Our signature base for the (one) signature of `req`.
fn our_base(req: &Request<String>) -> String {
    let fields = SignatureFields::from_headers(req.headers())
        .unwrap_or_else(|e| panic!("the signature fields do not parse here: {e}"));
    let entry = fields
        .select(None)
        .unwrap_or_else(|e| panic!("no one signature here: {e}"));
    let components = entry
        .components()
        .unwrap_or_else(|e| panic!("the covered components do not parse here: {e}"));
    let params = entry
        .signature_params_value()
        .unwrap_or_else(|e| panic!("no @signature-params here: {e}"));
    let base = signature_base(MessageView::Request(&view(req)), components, &params, &[])
        .unwrap_or_else(|e| panic!("no signature base here: {e}"));
    String::from_utf8(base).expect("a base of text fields is text")
}

/// What httpsig-hyper reads from the signature `label` of `req`: the base it rebuilds, the
/// `Signature-Input` member it rebuilds, and the signature bytes.
fn their_reading(req: &Request<String>, label: &str) -> (String, String, Vec<u8>) {
    let signatures = req
        .extract_signatures()
        .unwrap_or_else(|e| panic!("httpsig cannot read the signature fields: {e}"));
    let Some((base, headers)) = signatures.get(label) else {
        panic!("httpsig built no base for {label}: {:?}", req.headers());
    };
    (
        base.to_string(),
        headers.signature_input_header_value(),
        STANDARD
            .decode(headers.signature().to_string())
            .expect("httpsig writes the signature in base64"),
    )
}

fn httpsig_verifies(keys: &Keys, req: &Request<String>) -> Result<String, HyperSigError> {
    req.verify_message_signature_sync(&keys.public, Some(&keys.key_id))
}

// ---------------------------------------------------------------------------------------------
// theirs → ours

/// The request httpsig signs is one the proxy accepts, and the base it signed is the one
/// verified here: a component read differently on either side would break both.
#[test]
fn httpsig_signed_requests_pass_the_proxys_policy() {
    let keys = keys();
    let now = unix_now();
    let cases = [
        (get(), None),
        (post(), Some(ContentDigestType::Sha256)),
        (post(), Some(ContentDigestType::Sha512)),
    ];
    for (unsigned, digest) in cases {
        let with_body = digest.is_some();
        let unsigned = match digest {
            Some(kind) => with_their_digest(unsigned, kind),
            None => unsigned,
        };
        let params = their_params(&keys, with_body, now);
        let req = sign_theirs(&keys, unsigned, &params);
        let what = format!("{} {}", req.method(), req.uri());
        // httpsig's order, not ours (`keyid` before `alg`): the base is rebuilt as received.
        let input = header(&req, "signature-input");
        let their_order = format!(r#";alg="ed25519";keyid="{}";tag="peergate""#, keys.key_id);
        assert!(input.contains(&their_order), "{what}: {input}");
        let (their_base, _, _) = their_reading(&req, "sig");
        assert_eq!(our_base(&req), their_base, "{what}: another base here");

        let v = accepted(
            verify_here(
                &keys,
                &req,
                req.body().as_bytes(),
                &ReplayCache::new(64),
                now,
            ),
            &what,
        );
        assert_eq!(v.label, "sig", "{what}");
        assert_eq!(v.key_id, keys.key_id, "{what}");
        assert_eq!(v.created, now, "{what}");
        assert_eq!(v.expires, Some(now + LIFETIME), "{what}");
        assert_eq!(v.nonce, params.nonce, "{what}");
        assert_eq!(v.tag.as_deref(), Some("peergate"), "{what}");
        assert_eq!(v.covers_digest, with_body, "{what}");
    }
}

/// One byte changed anywhere the signature covers is refused, each with the reason the proxy
/// answers with: the body against the signed digest, everything else against the signature.
#[test]
fn httpsig_signed_and_tampered_is_refused_with_the_specific_reason() {
    let keys = keys();
    let now = unix_now();
    let unsigned = with_their_digest(post(), ContentDigestType::Sha256);
    let params = their_params(&keys, true, now);
    let req = sign_theirs(&keys, unsigned, &params);
    let body = req.body().as_bytes().to_vec();
    let verify = |req: &Request<String>, body: &[u8]| {
        verify_here(&keys, req, body, &ReplayCache::new(64), now)
    };
    accepted(verify(&req, &body), "untouched");

    // A body byte: the signed Content-Digest no longer matches.
    let mut other_body = body.clone();
    other_body[10] ^= 0x01;
    let r = refused(verify(&req, &other_body), "a body byte changed");
    assert_eq!(r.reason, Reason::DigestMismatch, "{}", r.detail);

    // The Content-Digest recomputed (by httpsig-hyper) for that body: the signature breaks.
    let other = String::from_utf8(other_body.clone()).unwrap();
    let redigested = with_their_digest(req.clone().map(|_| other), ContentDigestType::Sha256);
    assert_ne!(
        header(&redigested, "content-digest"),
        header(&req, "content-digest")
    );
    let r = refused(verify(&redigested, &other_body), "Content-Digest redone");
    assert_eq!(r.reason, Reason::BadSignature, "{}", r.detail);

    // A byte of a covered field, of the path, of the query.
    let mut content_type = req.clone();
    content_type.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/jsoo"),
    );
    let mut path = req.clone();
    *path.uri_mut() = format!("https://{HOST}:8443/api/itens?limit=10")
        .parse()
        .unwrap();
    let mut query = req.clone();
    *query.uri_mut() = format!("https://{HOST}:8443/api/items?limit=11")
        .parse()
        .unwrap();
    for (tampered, what) in [
        (&content_type, "content-type"),
        (&path, "@path"),
        (&query, "@query"),
    ] {
        let r = refused(verify(tampered, &body), what);
        assert_eq!(r.reason, Reason::BadSignature, "{what}: {}", r.detail);
    }

    // A byte of the signature.
    let (_, _, mut signature) = their_reading(&req, "sig");
    signature[5] ^= 0x01;
    let mut resigned = req.clone();
    resigned.headers_mut().insert(
        "signature",
        format!("sig=:{}:", STANDARD.encode(&signature))
            .parse()
            .unwrap(),
    );
    let r = refused(verify(&resigned, &body), "a signature byte changed");
    assert_eq!(r.reason, Reason::BadSignature, "{}", r.detail);
}

/// httpsig's verification checks `expires`, the `keyid` it is given and the signature, nothing
/// else: it accepts a signature that states another `alg`, one created an hour ago or an hour
/// ahead, one without a nonce, and the same one twice. The proxy's policy refuses each.
#[test]
fn what_httpsig_accepts_and_the_policy_refuses() {
    let keys = keys();
    let now = unix_now();
    let mut other_alg = their_params(&keys, false, now);
    other_alg.alg = Some("hmac-sha256".to_owned());
    let mut old = their_params(&keys, false, now);
    old.created = Some(now - 3600);
    old.expires = None;
    let mut ahead = their_params(&keys, false, now);
    ahead.created = Some(now + 3600);
    ahead.expires = Some(now + 3600 + LIFETIME);
    let mut no_nonce = their_params(&keys, false, now);
    no_nonce.nonce = None;
    for (params, reason, what) in [
        (other_alg, Reason::UnsupportedAlg, "alg hmac-sha256"),
        (old, Reason::Expired, "created an hour ago"),
        (ahead, Reason::NotYetValid, "created an hour ahead"),
        (no_nonce, Reason::Replayed, "no nonce"),
    ] {
        let req = sign_theirs(&keys, get(), &params);
        assert!(
            httpsig_verifies(&keys, &req).is_ok(),
            "{what}: httpsig refused its own signature"
        );
        let r = refused(
            verify_here(&keys, &req, b"", &ReplayCache::new(64), now),
            what,
        );
        assert_eq!(r.reason, reason, "{what}: {}", r.detail);
    }

    let req = sign_theirs(&keys, get(), &their_params(&keys, false, now));
    let replay = ReplayCache::new(64);
    accepted(verify_here(&keys, &req, b"", &replay, now), "first time");
    assert!(httpsig_verifies(&keys, &req).is_ok());
    let r = refused(verify_here(&keys, &req, b"", &replay, now), "second time");
    assert_eq!(r.reason, Reason::Replayed, "{}", r.detail);
}

// ---------------------------------------------------------------------------------------------
// ours → theirs

/// `req` signed by our [`Signer`] now.
fn sign_ours(keys: &Keys, mut req: Request<String>, now: u64) -> Request<String> {
    let signer = Signer::new(
        keys.ours.clone(),
        keys.key_id.clone(),
        Duration::from_secs(LIFETIME),
    );
    let body = Some(req.body().as_bytes()).filter(|b| !b.is_empty());
    let fields = signer
        .sign(&view(&req), body, now, &Signer::nonce())
        .unwrap_or_else(|e| panic!("our Signer failed: {e}"));
    fields.apply(req.headers_mut());
    req
}

/// httpsig rebuilds [`Signer`]'s params line in its own order, with `alg` and `keyid` the
/// other way round, and so refuses; everything else it reads as we do. Its component lines
/// followed by the params line as received are our base byte for byte, and our signature
/// (AWS-LC) verifies over that base with its Ed25519 (`ed25519-compact`), not over its own.
/// Its `Content-Digest` check agrees with the digest we sent.
#[test]
fn signer_signatures_verify_in_httpsig_over_the_base_as_received() {
    let keys = keys();
    let now = unix_now();
    for unsigned in [get(), post()] {
        let req = sign_ours(&keys, unsigned, now);
        let what = format!("{} {}", req.method(), req.uri());
        let received = header(&req, "signature-input");
        let ours_order = format!(r#";keyid="{}";alg="ed25519";tag="peergate""#, keys.key_id);
        let their_order = format!(r#";alg="ed25519";keyid="{}";tag="peergate""#, keys.key_id);
        assert!(received.contains(&ours_order), "{what}: {received}");

        let (their_base, rebuilt, signature) = their_reading(&req, "peer");
        assert_eq!(
            rebuilt,
            received.replace(&ours_order, &their_order),
            "{what}: httpsig rebuilt more than the order of alg and keyid"
        );
        assert!(
            matches!(
                httpsig_verifies(&keys, &req),
                Err(HyperSigError::InvalidSignature(_))
            ),
            "{what}: httpsig verified a params line in an order it does not write"
        );

        let Some((their_lines, their_params)) = their_base.rsplit_once(PARAMS_LINE) else {
            panic!("{what}: no @signature-params line in httpsig's base: {their_base}");
        };
        assert_eq!(Some(their_params), rebuilt.strip_prefix("peer="), "{what}");
        let received_params = received.strip_prefix("peer=").unwrap_or_default();
        let as_received = format!("{their_lines}{PARAMS_LINE}{received_params}");
        assert_eq!(
            as_received,
            our_base(&req),
            "{what}: httpsig's component lines differ from ours"
        );
        assert!(
            keys.public
                .verify(as_received.as_bytes(), &signature)
                .is_ok(),
            "{what}: our signature does not verify over our base with httpsig's Ed25519"
        );
        assert!(
            keys.public
                .verify(their_base.as_bytes(), &signature)
                .is_err(),
            "{what}: our signature verifies over httpsig's reordered base"
        );

        if req.headers().contains_key("content-digest") {
            assert!(
                ready(req.clone().verify_content_digest()).is_ok(),
                "{what}: httpsig-hyper refused our Content-Digest"
            );
            let mut other = req.clone();
            other.body_mut().replace_range(0..1, "["); // One byte.
            assert!(
                ready(other.verify_content_digest()).is_err(),
                "{what}: httpsig-hyper accepted our Content-Digest for another body"
            );
        }
    }
}

/// With the parameters in httpsig's order, what the engine signs (base, Ed25519) verifies in
/// httpsig end to end, and its base equals ours byte for byte; the request still passes the
/// proxy's policy. Sent as PUT, httpsig refuses it too.
#[test]
fn engine_signatures_in_httpsigs_order_verify_in_httpsig() {
    let keys = keys();
    let now = unix_now();
    for mut req in [get(), post()] {
        let what = format!("{} {}", req.method(), req.uri());
        let has_body = !req.body().is_empty();
        if has_body {
            let digest = content_digest(DigestAlgorithm::Sha256, req.body().as_bytes());
            req.headers_mut()
                .insert("content-digest", digest.parse().unwrap());
        }
        let mut params = SignatureParams::new();
        params.push_integer("created", now).unwrap();
        params.push_integer("expires", now + LIFETIME).unwrap();
        params.push_string("nonce", &Signer::nonce()).unwrap();
        params.push_string("alg", "ed25519").unwrap();
        params.push_string("keyid", &keys.key_id).unwrap();
        params.push_string("tag", "peergate").unwrap();
        let signed = sign_message(
            &keys.ours,
            MessageView::Request(&view(&req)),
            "peer",
            &Signer::components_for(&view(&req), has_body),
            &params,
            &[],
        )
        .unwrap_or_else(|e| panic!("{what}: the engine failed to sign: {e}"));
        req.headers_mut()
            .insert("signature-input", signed.signature_input.parse().unwrap());
        req.headers_mut()
            .insert("signature", signed.signature_field.parse().unwrap());

        match httpsig_verifies(&keys, &req) {
            Ok(label) => assert_eq!(label, "peer", "{what}"),
            Err(e) => panic!("{what}: httpsig refused: {e}"),
        }
        let (their_base, rebuilt, _) = their_reading(&req, "peer");
        assert_eq!(rebuilt, signed.signature_input, "{what}");
        assert_eq!(their_base.as_bytes(), &signed.base[..], "{what}");
        accepted(
            verify_here(
                &keys,
                &req,
                req.body().as_bytes(),
                &ReplayCache::new(64),
                now,
            ),
            &what,
        );

        let mut put = req.clone();
        *put.method_mut() = http::Method::PUT;
        assert!(
            httpsig_verifies(&keys, &put).is_err(),
            "{what}: httpsig verified it as PUT"
        );
    }
}
