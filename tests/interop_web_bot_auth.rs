//! Interoperability through the running binary with a third RFC 9421 implementation none of us
//! wrote: Cloudflare's `web-bot-auth` crate (its own signature base, its own structured-field
//! parser and serializer, `sfv` 0.13, and ed25519-dalek 2). Unlike `httpsig`, it rebuilds the
//! `@signature-params` line from the parameters in the order it received them, so it checks
//! peergate's signatures whole, params line included. The PyPI package is the other
//! implementation checked through the proxy (`tests/outbound.rs`, `crates/peergate-signature`).
//!
//! web-bot-auth signs the component values its caller gives it and, verifying, asks its caller
//! for them; here they are read off the request as it is on the wire, by this file's own code,
//! not by peergate's engine.
//!
//! * ours → theirs: what alice's outbound listener sends a peer (a recording app standing in
//!   for it) verifies in web-bot-auth, with the key id it computes itself (RFC 7638).
//! * theirs → ours: requests web-bot-auth signs (its parameter order, `keyid nonce tag alg
//!   created expires`, its label) reach the app with the signer's identity; one byte changed
//!   after signing is refused.

mod ops;
mod support;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use indexmap::IndexMap;
use sha2::{Digest as _, Sha256};
use web_bot_auth::components::{
    CoveredComponent, DerivedComponent, HTTPField, HTTPFieldParametersSet,
};
use web_bot_auth::keyring::{Algorithm, KeyRing, Thumbprintable};
use web_bot_auth::message_signatures::{
    MessageSigner, MessageVerifier, SignedMessage, UnsignedMessage,
};

use ops::*;
use support::*;

/// A request as one side of the wire sees it: method, request-target, fields in order.
#[derive(Clone, Debug)]
struct Wire {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The scheme `@target-uri` and `@scheme` stand for (peergate's `identity.scheme`).
    scheme: &'static str,
}

impl Wire {
    fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn authority(&self) -> String {
        self.values("host")
            .first()
            .map(|h| h.to_ascii_lowercase())
            .unwrap_or_default()
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> String {
        match self.target.split_once('?') {
            Some((_, q)) => format!("?{q}"),
            None => "?".into(),
        }
    }

    /// A derived component's value (RFC 9421 §2.2), or nothing for one this file does not read.
    fn derived(&self, component: &DerivedComponent) -> Vec<String> {
        let value = match component {
            DerivedComponent::Method { req: false } => self.method.clone(),
            DerivedComponent::Authority { req: false } => self.authority(),
            DerivedComponent::Path { req: false } => self.path().to_owned(),
            DerivedComponent::Query { req: false } => self.query(),
            DerivedComponent::Scheme { req: false } => self.scheme.to_owned(),
            DerivedComponent::TargetUri { req: false } => {
                format!("{}://{}{}", self.scheme, self.authority(), self.target)
            }
            _ => return Vec::new(),
        };
        vec![value]
    }
}

/// Verifying: web-bot-auth asks for each covered component (and for the signature fields).
impl SignedMessage for Wire {
    fn lookup_component(&self, name: &CoveredComponent) -> Vec<String> {
        match name {
            CoveredComponent::HTTP(HTTPField { name, parameters }) if parameters.0.is_empty() => {
                self.values(name)
            }
            CoveredComponent::HTTP(_) => Vec::new(),
            CoveredComponent::Derived(d) => self.derived(d),
        }
    }
}

/// Signing: the components `covered` names, with their values read off the request; the
/// fields web-bot-auth writes are added under `label`.
struct ToSign {
    wire: Wire,
    covered: Vec<CoveredComponent>,
    label: &'static str,
}

impl UnsignedMessage for ToSign {
    fn fetch_components_to_cover(&self) -> IndexMap<CoveredComponent, String> {
        self.covered
            .iter()
            .map(|c| {
                let values = self.wire.lookup_component(c);
                assert_eq!(values.len(), 1, "{c:?}: {values:?}");
                (c.clone(), values.concat())
            })
            .collect()
    }

    fn register_header_contents(&mut self, signature_input: String, signature_header: String) {
        let label = self.label;
        self.wire.headers.push((
            "Signature-Input".into(),
            format!("{label}={signature_input}"),
        ));
        self.wire
            .headers
            .push(("Signature".into(), format!("{label}={signature_header}")));
    }
}

fn derived(d: DerivedComponent) -> CoveredComponent {
    CoveredComponent::Derived(d)
}

fn field(name: &str) -> CoveredComponent {
    CoveredComponent::HTTP(HTTPField {
        name: name.into(),
        parameters: HTTPFieldParametersSet(Vec::new()),
    })
}

/// The key id web-bot-auth computes for `raw` (the RFC 7638 JWK thumbprint).
fn their_key_id(raw: &[u8; 32]) -> String {
    Thumbprintable::OKP {
        crv: "Ed25519".into(),
        x: URL_SAFE_NO_PAD.encode(raw),
    }
    .b64_thumbprint()
}

fn sha256_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Signs `wire` with web-bot-auth: `covered`, a fresh nonce, `keyid` as web-bot-auth computes
/// it for `key`, 60 s of lifetime.
fn sign_theirs(key: &Key, wire: Wire, covered: Vec<CoveredComponent>) -> Wire {
    let signer = MessageSigner {
        keyid: their_key_id(key.public.raw()),
        nonce: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
        tag: "web-bot-auth".into(),
    };
    let mut message = ToSign {
        wire,
        covered,
        label: "sig1",
    };
    signer
        .generate_signature_headers_content(
            &mut message,
            Duration::from_secs(60),
            Algorithm::Ed25519,
            &key.signing.to_bytes(),
        )
        .expect("web-bot-auth signs");
    message.wire
}

fn to_raw(wire: &Wire) -> RawRequest {
    let mut req = RawRequest::new(&wire.method, wire.target.as_str());
    for (name, value) in &wire.headers {
        req = req.header(name, value);
    }
    if wire.body.is_empty() {
        req
    } else {
        req.body(&wire.body)
    }
}

/// peergate's key id and web-bot-auth's for the same key are one string: a peer using either
/// names the other's key the same way.
#[test]
fn key_ids_are_the_thumbprint_web_bot_auth_computes() {
    for _ in 0..8 {
        let id = peergate::identity::Identity::generate();
        assert_eq!(id.public().key_id(), their_key_id(id.public().raw()));
    }
}

/// What alice signs for a peer verifies in web-bot-auth, the request read as the peer received
/// it: a GET with a query, a POST with a body (its `Content-Digest` checked here too), and a
/// target with bytes alice percent-encodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_alice_signs_verifies_in_web_bot_auth() {
    let peer = EchoApp::start();
    let app = EchoApp::start();
    let setup = Setup::new(app.addr(), &[], "");
    let bob = Key::new("Bob");
    std::fs::write(
        &setup.peers,
        format!("peers:\n{}    url: http://{}\n", bob.entry(), peer.addr()),
    )
    .unwrap();
    let alice = peergate::identity::load_key(&setup.dir.path().join("alice.pem"))
        .unwrap()
        .identity;
    let mut keyring = KeyRing::default();
    let alice_raw = *alice.public().raw();
    assert!(keyring.import_raw(
        their_key_id(&alice_raw),
        Algorithm::Ed25519,
        alice_raw.to_vec()
    ));
    let _binary = Binary::run(&setup);
    wait_listening(setup.outbound);

    let body = pattern(3000);
    let calls: [(&str, &str, &[u8]); 3] = [
        ("GET", "/peers/Bob/api/check?a=1&b=two&empty=", b""),
        ("POST", "/peers/Bob/api/items?limit=10", &body),
        ("GET", "/peers/Bob/api/caf%C3%A9/100%25?q=O'Brien", b""),
    ];
    for (i, (method, target, body)) in calls.into_iter().enumerate() {
        let mut req = RawRequest::new(method, target).header("Host", setup.outbound.to_string());
        if !body.is_empty() {
            req = req
                .header("Content-Type", "application/json")
                .body(body)
                .content_length();
        }
        let resp = raw_request(setup.outbound, None, &req.to_bytes())
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{method} {target}: {}", resp.text());
        let recorded = peer
            .requests()
            .into_iter()
            .nth(i)
            .expect("the peer got the request");
        let wire = Wire {
            method: recorded.method.clone(),
            target: recorded.target.clone(),
            headers: recorded.headers.clone(),
            body: recorded.body.clone(),
            scheme: "http",
        };
        let verifier = MessageVerifier::parse(&wire, |(label, _)| label.as_str() == "peer")
            .unwrap_or_else(|e| panic!("{method} {target}: web-bot-auth cannot read it: {e:?}"));
        let params = verifier.parsed.base.parameters.details.clone();
        assert_eq!(params.keyid.as_deref(), Some(alice.public().key_id()));
        assert_eq!(params.algorithm, Some(Algorithm::Ed25519));
        assert_eq!(params.tag.as_deref(), Some("peergate"));
        let (created, expires) = (params.created.unwrap(), params.expires.unwrap());
        assert!(created > 0 && expires > created, "{params:?}");
        assert!(params.nonce.is_some_and(|n| !n.is_empty()), "a nonce");
        let covered: Vec<CoveredComponent> =
            verifier.parsed.base.components.keys().cloned().collect();
        for must in [
            derived(DerivedComponent::Method { req: false }),
            derived(DerivedComponent::Authority { req: false }),
            derived(DerivedComponent::Path { req: false }),
            derived(DerivedComponent::Query { req: false }),
        ] {
            assert!(covered.contains(&must), "{must:?} in {covered:?}");
        }
        verifier
            .verify(&keyring, None)
            .unwrap_or_else(|e| panic!("{method} {target}: web-bot-auth refused it: {e:?}"));
        if !body.is_empty() {
            assert!(covered.contains(&field("content-digest")), "{covered:?}");
            assert_eq!(wire.values("content-digest"), [sha256_digest(body)]);
            assert_eq!(wire.body, body);
        }
    }
}

/// What web-bot-auth signs reaches the app with the signer's identity: the components
/// peergate's policy wants, or `@target-uri` in place of `@authority @path @query`; a body
/// covered with its digest. One byte changed after signing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_web_bot_auth_signs_is_accepted_by_bobs_inbound_listener() {
    let app = EchoApp::start();
    let carol = Key::new("Carol");
    let setup = Setup::new(app.addr(), &[&carol], "");
    let _binary = Binary::run(&setup);
    wait_listening(setup.inbound);

    let authority = setup.authority();
    let method = derived(DerivedComponent::Method { req: false });
    let whole_target = vec![
        method.clone(),
        derived(DerivedComponent::Authority { req: false }),
        derived(DerivedComponent::Path { req: false }),
        derived(DerivedComponent::Query { req: false }),
    ];
    let body = pattern(2000);
    let get = Wire {
        method: "GET".into(),
        target: "/api/items?page=2&q=a%20b".into(),
        headers: vec![("Host".into(), authority.clone())],
        body: Vec::new(),
        scheme: "https",
    };
    let post = Wire {
        method: "POST".into(),
        target: "/api/items".into(),
        headers: vec![
            ("Host".into(), authority.clone()),
            ("Content-Type".into(), "application/json".into()),
            ("Content-Length".into(), body.len().to_string()),
            ("Content-Digest".into(), sha256_digest(&body)),
        ],
        body: body.clone(),
        scheme: "https",
    };
    let mut with_body = whole_target.clone();
    with_body.extend(["content-digest", "content-type", "content-length"].map(field));
    let signed = [
        sign_theirs(&carol, get.clone(), whole_target.clone()),
        sign_theirs(
            &carol,
            get.clone(),
            vec![
                method.clone(),
                derived(DerivedComponent::TargetUri { req: false }),
            ],
        ),
        sign_theirs(&carol, post.clone(), with_body.clone()),
    ];
    for (i, wire) in signed.iter().enumerate() {
        let resp = raw_request(setup.inbound, None, &to_raw(wire).to_bytes())
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{wire:?}: {}", resp.text());
        let seen = app.requests().into_iter().nth(i).expect("the app got it");
        let peer_id = seen
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-peer-id"))
            .map(|(_, v)| v.as_str());
        assert_eq!(peer_id, Some(carol.short_id()), "{:?}", seen.headers);
        assert_eq!(seen.body, wire.body);
    }

    // Signed, then changed: a query byte (covered by `@query`), and a body byte (caught by the
    // digest the signature covers).
    let mut changed_query = sign_theirs(&carol, get, whole_target);
    changed_query.target = changed_query.target.replace("page=2", "page=3");
    let mut changed_body = sign_theirs(&carol, post, with_body);
    if let Some(b) = changed_body.body.first_mut() {
        *b ^= 1;
    }
    for (wire, reason) in [
        (changed_query, "bad_signature"),
        (changed_body, "digest_mismatch"),
    ] {
        let resp = raw_request(setup.inbound, None, &to_raw(&wire).to_bytes())
            .await
            .unwrap();
        assert_problem(&resp, 401, reason);
    }
    assert_eq!(app.requests().len(), 3, "a changed request reached the app");
}
