//! RFC 9421 B.2.6 "Signing a Request Using ed25519", from /work/shared/conformance: the base
//! byte for byte, the signature byte for byte, verification, and the negative variants
//! N1..N10 each refused for the right reason.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use ed25519_dalek::VerifyingKey;
use peergate_signature::{
    base::signature_base, input::signature_params_value, sign_message, verify_request,
    verify_signature, ComponentId, Coverage, MessageView, Policy, Reason, Refusal, ReplayCache,
    SignatureFields, SignatureParams, Verified,
};
use sha2::{Digest, Sha256};

const NOW: u64 = B26_CREATED + 10;

const B26_BASE: &str = "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\
\"@method\": POST\n\
\"@path\": /foo\n\
\"@authority\": example.com\n\
\"content-type\": application/json\n\
\"content-length\": 18\n\
\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"";

fn b26_components() -> Vec<ComponentId> {
    [
        "date",
        "@method",
        "@path",
        "@authority",
        "content-type",
        "content-length",
    ]
    .into_iter()
    .map(|n| ComponentId::new(n).unwrap())
    .collect()
}

fn b26_params() -> SignatureParams {
    let mut p = SignatureParams::new();
    p.push_integer("created", B26_CREATED).unwrap();
    p.push_string("keyid", "test-key-ed25519").unwrap();
    p
}

fn verify_with(req: &Req, policy: &Policy, coverage: Coverage) -> Result<Verified, Refusal> {
    let key = rfc_verifying_key();
    let replay = ReplayCache::new(16);
    let lookup = |id: &str| -> Option<&VerifyingKey> { (id == "test-key-ed25519").then_some(&key) };
    verify_request(&req.view(), policy, coverage, lookup, &replay, NOW)
}

fn reason(req: &Req, policy: &Policy) -> Reason {
    match verify_with(req, policy, Coverage::NONE) {
        Ok(v) => panic!("verified, expected a refusal: {v:?}"),
        Err(r) => r.reason,
    }
}

#[test]
fn key_pair_matches_the_rfc() {
    assert_eq!(rfc_signing_key().verifying_key(), rfc_verifying_key());
}

#[test]
fn base_is_byte_exact() {
    let req = rfc_test_request();
    let components = b26_components();
    let params_value = signature_params_value(&components, &b26_params());
    let base = signature_base(
        MessageView::Request(&req.view()),
        &components,
        &params_value,
        &[],
    )
    .unwrap();
    assert_eq!(String::from_utf8(base.clone()).unwrap(), B26_BASE);
    assert_eq!(base.len(), 284);
    assert_eq!(
        format!("{:x}", Sha256::digest(&base)),
        "e6402577f54303accfda63dfbde1a7b8c5e5e6f3f7898637b7d78dc07ee1896a"
    );
}

#[test]
fn base_from_the_received_fields_is_byte_exact() {
    let req = rfc_b26_request();
    let fields = SignatureFields::from_headers(&req.headers).unwrap();
    let entry = fields.select(Some("peergate")).unwrap();
    assert_eq!(entry.label(), "sig-b26");
    let components = entry.components().unwrap();
    let base = signature_base(
        MessageView::Request(&req.view()),
        components,
        &entry.signature_params_value().unwrap(),
        &[],
    )
    .unwrap();
    assert_eq!(base, B26_BASE.as_bytes());
}

#[test]
fn signing_reproduces_the_rfc_signature() {
    let req = rfc_test_request();
    let signed = sign_message(
        &rfc_signing_key(),
        MessageView::Request(&req.view()),
        "sig-b26",
        &b26_components(),
        &b26_params(),
        &[],
    )
    .unwrap();
    assert_eq!(signed.base, B26_BASE.as_bytes());
    assert_eq!(signed.signature_input, B26_INPUT);
    assert_eq!(signed.signature_field, B26_SIGNATURE);
    assert_eq!(
        STANDARD.encode(signed.signature),
        "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
    );
}

#[test]
fn rfc_signature_verifies() {
    let req = rfc_b26_request();
    let v = verify_with(&req, &rfc_policy(&["example.com"]), Coverage::NONE).unwrap();
    assert_eq!(v.key_id, "test-key-ed25519");
    assert_eq!(v.label, "sig-b26");
    assert_eq!(v.created, B26_CREATED);
    assert_eq!(v.expires, None);
    assert_eq!(v.nonce, None);
    assert!(!v.covers_digest);
    // The low-level check (no policy) agrees.
    let fields = SignatureFields::from_headers(&req.headers).unwrap();
    let entry = fields.select(None).unwrap();
    verify_signature(
        MessageView::Request(&req.view()),
        entry,
        &rfc_verifying_key(),
    )
    .unwrap();
}

#[test]
fn rfc_signature_fails_peergate_coverage_rules() {
    // B.2.6 covers neither @query (nor @target-uri) nor content-digest: the proxy refuses it.
    let req = rfc_b26_request();
    let r = verify_with(&req, &rfc_policy(&["example.com"]), Coverage::REQUIRED).unwrap_err();
    assert_eq!(r.reason, Reason::MissingComponent);
    assert!(r.detail.contains("@query"), "{}", r.detail);
}

#[test]
fn rfc_signature_is_too_old_without_pinned_time() {
    let req = rfc_b26_request();
    let key = rfc_verifying_key();
    let replay = ReplayCache::new(4);
    let r = verify_request(
        &req.view(),
        &rfc_policy(&["example.com"]),
        Coverage::NONE,
        |_| Some(&key),
        &replay,
        1_732_400_000,
    )
    .unwrap_err();
    assert_eq!(r.reason, Reason::Expired);
}

#[test]
fn n1_other_host() {
    let mut req = rfc_b26_request();
    req.set("host", "example.org");
    assert_eq!(
        reason(&req, &rfc_policy(&["example.com"])),
        Reason::WrongAuthority
    );
    assert_eq!(
        reason(&req, &rfc_policy(&["example.com", "example.org"])),
        Reason::BadSignature
    );
}

#[test]
fn n2_other_method() {
    let mut req = rfc_b26_request();
    req.method = http::Method::PUT;
    assert_eq!(
        reason(&req, &rfc_policy(&["example.com"])),
        Reason::BadSignature
    );
}

#[test]
fn n3_other_path() {
    let mut req = rfc_b26_request();
    req.uri = "/foo/?param=Value&Pet=dog".parse().unwrap();
    assert_eq!(
        reason(&req, &rfc_policy(&["example.com"])),
        Reason::BadSignature
    );
}

#[test]
fn n4_other_content_length() {
    let mut req = rfc_b26_request();
    req.set("content-length", "19");
    assert_eq!(
        reason(&req, &rfc_policy(&["example.com"])),
        Reason::BadSignature
    );
}

#[test]
fn n5_params_swapped() {
    let mut req = rfc_b26_request();
    req.set(
        "signature-input",
        r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");keyid="test-key-ed25519";created=1618884473"#,
    );
    assert_eq!(
        reason(&req, &rfc_policy(&["example.com"])),
        Reason::BadSignature
    );
}

#[test]
fn n6_alg_hmac() {
    let mut req = rfc_b26_request();
    req.set(
        "signature-input",
        &format!("{B26_INPUT};alg=\"hmac-sha256\""),
    );
    assert_eq!(
        reason(&req, &rfc_policy(&["example.com"])),
        Reason::UnsupportedAlg
    );

    // Freshly signed with the Ed25519 key but claiming hmac-sha256: still refused.
    let plain = rfc_test_request();
    let mut params = b26_params();
    params.push_string("alg", "hmac-sha256").unwrap();
    let signed = sign_message(
        &rfc_signing_key(),
        MessageView::Request(&plain.view()),
        "sig-b26",
        &b26_components(),
        &params,
        &[],
    )
    .unwrap();
    let req = plain
        .header("signature-input", &signed.signature_input)
        .header("signature", &signed.signature_field);
    assert_eq!(
        reason(&req, &rfc_policy(&["example.com"])),
        Reason::UnsupportedAlg
    );
}

#[test]
fn n7_label_mismatch() {
    let mut req = rfc_b26_request();
    req.set("signature", &B26_SIGNATURE.replace("sig-b26", "sig1"));
    let r = verify_with(&req, &rfc_policy(&["example.com"]), Coverage::NONE).unwrap_err();
    assert_eq!(r.reason, Reason::MalformedSignature);
    assert!(r.detail.contains("sig-b26"), "{}", r.detail);
}

#[test]
fn n8_covered_field_removed() {
    let mut req = rfc_b26_request();
    req.headers.remove("date");
    let r = verify_with(&req, &rfc_policy(&["example.com"]), Coverage::NONE).unwrap_err();
    assert_eq!(r.reason, Reason::MissingComponent);
    assert!(r.detail.contains("date"), "{}", r.detail);
}

#[test]
fn n9_second_date_line() {
    let mut req = rfc_b26_request();
    req.add("date", b"Wed, 21 Apr 2021 00:00:00 GMT");
    assert_eq!(
        reason(&req, &rfc_policy(&["example.com"])),
        Reason::BadSignature
    );
}

#[test]
fn n10_body_not_covered() {
    let req = rfc_b26_request();
    let body_rule = Coverage {
        method_and_target: false,
        digest_with_body: true,
    };
    // As a policy refusal: the request announces a body the signature does not bind.
    let r = verify_with(&req, &rfc_policy(&["example.com"]), body_rule).unwrap_err();
    assert_eq!(r.reason, Reason::MissingComponent);
    assert!(r.detail.contains("content-digest"), "{}", r.detail);

    // Even with no coverage rule, the body check refuses a body no digest was signed for.
    let v = verify_with(&req, &rfc_policy(&["example.com"]), Coverage::NONE).unwrap();
    let mut check = v.body_checker();
    check.update(br#"{"hello": "WORLD"}"#);
    assert_eq!(
        check.refused().map(|r| r.reason),
        Some(Reason::MissingComponent)
    );
    assert_eq!(check.finish().unwrap_err().reason, Reason::MissingComponent);
    // And an empty body passes that check.
    assert!(v.body_checker().finish().is_ok());
}
