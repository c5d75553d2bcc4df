//! No input panics: every parser of message data returns an error instead. Random bytes go
//! into every field the verifier reads, and near-valid `Signature-Input` values built from a
//! pool of identifiers and parameters drive the verifier down to base building.

mod common;

use common::Req;
use ed25519_dalek::{SigningKey, VerifyingKey};
use http::{HeaderName, HeaderValue, Method, Uri};
use peergate_signature::{
    verify_request, Authority, ComponentId, Coverage, DigestVerifier, HostRule, Policy,
    ReplayCache, SignatureFields,
};
use proptest::prelude::*;

const NOW: u64 = 1_732_400_000;

fn verify_any(req: &Req, coverage: Coverage) {
    let vk: VerifyingKey = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
    let policy = Policy {
        hosts: vec![HostRule::parse("example.com").unwrap()],
        require_nonce: false,
        ..Policy::default()
    };
    let replay = ReplayCache::new(4);
    // Every key id is "known", so the verifier goes as deep as the input allows.
    if let Ok(v) = verify_request(&req.view(), &policy, coverage, |_| Some(&vk), &replay, NOW) {
        let mut b = v.body_checker();
        b.update(b"body");
        let _ = b.refused();
        let _ = b.finish();
    }
}

const IDENTIFIERS: &[&str] = &[
    r#""@method""#,
    r#""@authority""#,
    r#""@path""#,
    r#""@query""#,
    r#""@target-uri""#,
    r#""@request-target""#,
    r#""@scheme""#,
    r#""@status""#,
    r#""@query-param";name="a""#,
    r#""@query-param";name="%zz%""#,
    r#""@query-param""#,
    r#""@signature-params""#,
    r#""@unknown""#,
    r#""host""#,
    r#""content-digest""#,
    r#""content-type""#,
    r#""content-length""#,
    r#""x-a""#,
    r#""x-a";sf"#,
    r#""x-a";bs"#,
    r#""x-a";key="k""#,
    r#""x-a";key="k";bs"#,
    r#""x-a";req"#,
    r#""x-a";tr"#,
    r#""X-A""#,
    r#""""#,
    "token",
    "1",
    ":AAAA:",
    "?1",
];

const PARAMS: &[&str] = &[
    ";created=1732400000",
    ";created=-5",
    ";created=\"x\"",
    ";created=99999999999999",
    ";expires=1732400060",
    ";expires=1",
    ";expires=1.5",
    ";nonce=\"n\"",
    ";nonce=1",
    ";keyid=\"k\"",
    ";keyid=k",
    ";alg=\"ed25519\"",
    ";alg=\"hmac-sha256\"",
    ";tag=\"peergate\"",
    ";tag=?0",
    ";x",
];

fn signature_input() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(IDENTIFIERS), 0..7),
        prop::collection::vec(prop::sample::select(PARAMS), 0..7),
        prop::sample::select(vec!["sig", "peer", "a-b", "*x"]),
    )
        .prop_map(|(ids, params, label)| format!("{label}=({}){}", ids.join(" "), params.concat()))
}

fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_field_bytes(
        si in prop::collection::vec(any::<u8>(), 0..120),
        sig in prop::collection::vec(any::<u8>(), 0..120),
        host in prop::collection::vec(any::<u8>(), 0..40),
        cd in prop::collection::vec(any::<u8>(), 0..80),
        cl in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut req = Req::new("POST", "/x?y=1");
        for (name, value) in [
            ("signature-input", &si),
            ("signature", &sig),
            ("host", &host),
            ("content-digest", &cd),
            ("content-length", &cl),
        ] {
            if let Some(v) = header_value(value) {
                req.headers.insert(HeaderName::from_static(name), v);
            }
        }
        verify_any(&req, Coverage::REQUIRED);
        verify_any(&req, Coverage::NONE);
        let _ = SignatureFields::parse(&si, &sig);
        let _ = DigestVerifier::from_field(&String::from_utf8_lossy(&cd));
        let _ = Authority::parse(&String::from_utf8_lossy(&host));
    }

    #[test]
    fn near_valid_signature_input(
        si in signature_input(),
        sig_len in prop::sample::select(vec![0usize, 1, 63, 64, 65, 200]),
        target in "/[a-z%+=&?/]{0,16}",
        method in prop::sample::select(vec!["GET", "POST", "CONNECT", "OPTIONS"]),
        xa in prop::collection::vec(any::<u8>(), 0..24),
        label_same in any::<bool>(),
    ) {
        let label = si.split('=').next().unwrap_or("sig").to_owned();
        let sig_label = if label_same { label } else { "other".to_owned() };
        let sig = format!(
            "{sig_label}=:{}:",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![7u8; sig_len])
        );
        let Ok(uri) = target.parse::<Uri>() else { return Ok(()); };
        let mut req = Req::new("GET", "/");
        req.method = Method::from_bytes(method.as_bytes()).unwrap();
        req.uri = uri;
        req.set("host", "example.com");
        req.set("signature-input", &si);
        req.set("signature", &sig);
        if let Some(v) = header_value(&xa) {
            req.headers.insert(HeaderName::from_static("x-a"), v);
        }
        verify_any(&req, Coverage::NONE);
        verify_any(&req, Coverage::REQUIRED);
    }

    #[test]
    fn component_identifiers_from_any_text(text in "\\PC{0,40}") {
        if let Ok(id) = ComponentId::parse(&text) {
            // What parses serializes to something that parses to the same component.
            let again = ComponentId::parse(id.as_serialized()).unwrap();
            prop_assert!(again.same_component(&id));
        }
    }

    #[test]
    fn authorities_from_any_text(text in "\\PC{0,40}") {
        if let Ok(a) = Authority::parse(&text) {
            let round = Authority::parse(&a.to_component("https")).unwrap();
            prop_assert_eq!(round.host, a.host);
        }
    }
}
