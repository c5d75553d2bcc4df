//! Properties: what peergate signs, peergate verifies, for random methods, paths, queries,
//! headers and bodies; and any change to a covered component, a signature parameter, or a
//! digest-covered body makes verification fail.

mod common;

use std::time::Duration;

use common::Req;
use ed25519_dalek::{SigningKey, VerifyingKey};
use peergate_signature::{
    verify_headers, HostRule, Policy, Refusal, ReplayCache, Signer, Verified,
};
use proptest::prelude::*;

const NOW: u64 = 1_732_400_000;
const KEY_ID: &str = "prop-key";

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    host: String,
    path: String,
    query: Option<String>,
    extra: Vec<(String, String)>,
    content_type: Option<String>,
    body: Vec<u8>,
    seed: [u8; 32],
}

impl Case {
    fn request(&self) -> Req {
        let target = match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        };
        let mut req = Req::new(self.method, &target).header("host", &self.host);
        for (n, v) in &self.extra {
            req.add(n, v.as_bytes());
        }
        if !self.body.is_empty() {
            if let Some(ct) = &self.content_type {
                req.set("content-type", ct);
            }
            req.set("content-length", &self.body.len().to_string());
        }
        req
    }

    fn signer(&self) -> Signer {
        Signer::new(
            SigningKey::from_bytes(&self.seed),
            KEY_ID.to_owned(),
            Duration::from_secs(60),
        )
    }

    fn signed(&self) -> Req {
        let mut req = self.request();
        let body = (!self.body.is_empty()).then_some(self.body.as_slice());
        let h = self
            .signer()
            .sign(&req.view(), body, NOW, &Signer::nonce())
            .unwrap();
        h.apply(&mut req.headers);
        req
    }

    fn policy(&self) -> Policy {
        Policy {
            hosts: vec![HostRule::parse(&self.host).unwrap()],
            ..Policy::default()
        }
    }

    /// Headers, then body, like the proxy does.
    fn verify(&self, req: &Req, body: &[u8]) -> Result<Verified, Refusal> {
        let vk = self.signer().verifying_key();
        let lookup = |id: &str| -> Option<&VerifyingKey> { (id == KEY_ID).then_some(&vk) };
        let v = verify_headers(
            &req.view(),
            &self.policy(),
            lookup,
            &ReplayCache::new(16),
            NOW,
        )?;
        let mut check = v.body_checker();
        for chunk in body.chunks(7) {
            check.update(chunk);
        }
        check.finish()?;
        Ok(v)
    }
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
}

fn case() -> impl Strategy<Value = Case> {
    (
        method(),
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,2}(:[1-9][0-9]{0,3})?",
        prop::collection::vec("[A-Za-z0-9._~%-]{0,8}", 0..4),
        prop::option::of("[A-Za-z0-9=&+%._~-]{0,24}"),
        prop::collection::vec(("x-[a-z]{1,8}", "[ -~]{0,24}"), 0..4),
        prop::option::of("[a-z]{1,8}/[a-z+.-]{1,12}"),
        prop::collection::vec(any::<u8>(), 0..600),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(method, host, segs, query, extra, content_type, body, seed)| Case {
                method,
                host,
                path: format!("/{}", segs.join("/")),
                query,
                extra,
                content_type,
                body,
                seed,
            },
        )
}

#[derive(Debug, Clone)]
enum Mutation {
    Method,
    Path,
    Query,
    Created,
    Nonce,
    Keyid,
    AddParam,
    DropParam,
    Body(usize, u8),
    ContentType,
    ContentLength,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Method),
        Just(Mutation::Path),
        Just(Mutation::Query),
        Just(Mutation::Created),
        Just(Mutation::Nonce),
        Just(Mutation::Keyid),
        Just(Mutation::AddParam),
        Just(Mutation::DropParam),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Body(i, x)),
        Just(Mutation::ContentType),
        Just(Mutation::ContentLength),
    ]
}

fn signature_input(req: &Req) -> String {
    req.headers
        .get("signature-input")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// Applies `m` to a signed request and its body (a changed host is
/// `another_accepted_host_fails_on_the_signature`). Returns false when the mutation does not
/// apply to this case (e.g. no body to change).
fn mutate(case: &Case, req: &mut Req, body: &mut [u8], m: &Mutation) -> bool {
    match m {
        Mutation::Method => {
            req.method = if req.method == http::Method::GET {
                http::Method::HEAD
            } else {
                http::Method::GET
            }
        }
        Mutation::Path => {
            let target = match req.uri.query() {
                Some(q) => format!("{}z?{q}", req.uri.path()),
                None => format!("{}z", req.uri.path()),
            };
            req.uri = target.parse().unwrap();
        }
        Mutation::Query => {
            let target = match req.uri.query() {
                Some(q) => format!("{}?{q}z", req.uri.path()),
                None => format!("{}?z", req.uri.path()),
            };
            req.uri = target.parse().unwrap();
        }
        Mutation::Created => {
            let si = signature_input(req)
                .replace(&format!("created={NOW}"), &format!("created={}", NOW - 1));
            req.set("signature-input", &si);
        }
        Mutation::Nonce => {
            let si = signature_input(req).replace("nonce=\"", "nonce=\"A");
            req.set("signature-input", &si);
        }
        Mutation::Keyid => {
            let si = signature_input(req).replace("keyid=\"", "keyid=\"x");
            req.set("signature-input", &si);
        }
        Mutation::AddParam => {
            let si = signature_input(req);
            req.set("signature-input", &format!("{si};x=1"));
        }
        Mutation::DropParam => {
            let si = signature_input(req).replace(";alg=\"ed25519\"", "");
            req.set("signature-input", &si);
        }
        Mutation::Body(i, x) => {
            if body.is_empty() {
                return false;
            }
            let i = i % body.len();
            body[i] ^= x;
        }
        Mutation::ContentType => {
            if case.body.is_empty() || case.content_type.is_none() {
                return false;
            }
            req.set("content-type", "text/evil");
        }
        Mutation::ContentLength => {
            if case.body.is_empty() {
                return false;
            }
            req.set("content-length", &(case.body.len() + 1).to_string());
        }
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn sign_then_verify_round_trips(case in case()) {
        let req = case.signed();
        let v = case.verify(&req, &case.body);
        prop_assert!(v.is_ok(), "refused: {:?}", v.err());
        let v = v.unwrap();
        prop_assert_eq!(v.covers_digest, !case.body.is_empty());
        prop_assert_eq!(v.key_id.as_str(), KEY_ID);
    }

    #[test]
    fn any_change_to_covered_data_fails(case in case(), m in mutation()) {
        let mut req = case.signed();
        let mut body = case.body.clone();
        if mutate(&case, &mut req, &mut body, &m) {
            let r = case.verify(&req, &body);
            prop_assert!(r.is_err(), "{:?} still verified", m);
        }
    }

    #[test]
    fn another_accepted_host_fails_on_the_signature(case in case()) {
        let mut req = case.signed();
        req.set("host", "other.example");
        let vk = case.signer().verifying_key();
        let lookup = |id: &str| -> Option<&VerifyingKey> { (id == KEY_ID).then_some(&vk) };
        let mut policy = case.policy();
        policy.hosts.push(HostRule::parse("other.example").unwrap());
        let r = verify_headers(&req.view(), &policy, lookup, &ReplayCache::new(4), NOW);
        prop_assert_eq!(r.unwrap_err().reason, peergate_signature::Reason::BadSignature);
    }

    #[test]
    fn uncovered_headers_do_not_matter(case in case(), v in "[ -~]{0,16}") {
        let mut req = case.signed();
        req.add("x-added-later", v.as_bytes());
        prop_assert!(case.verify(&req, &case.body).is_ok());
    }
}
