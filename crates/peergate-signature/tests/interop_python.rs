//! Interoperability with an independent RFC 9421 implementation, the PyPI package
//! `http-message-signatures` (pyauth), driven through `tests/interop/httpsig_interop.py` (JSON
//! on stdin and stdout; see `tests/interop/README.md`).
//!
//! * ours → theirs: requests signed by [`Signer`] verify in the package, and it rebuilds the
//!   same signature base byte for byte; tampered ones are refused by it.
//! * theirs → ours: requests signed by the package (its defaults, its label and parameter
//!   order) verify in [`verify_headers`]; tampered ones are refused.
//! * RFC 9421 B.2.6: the package's `Signature` equals ours (and the RFC's) byte for byte.
//!
//! Needs `python3` with the pinned packages of `tests/interop/requirements.txt`. When they are
//! not importable, the test installs them with pip into `CARGO_TARGET_TMPDIR/pydeps` and uses
//! them through `PYTHONPATH`. Without python3 or pip, or when the install fails, the tests
//! fail (they never skip) and say how to install.

mod common;
#[path = "../../../tests/support/python.rs"]
mod python;

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, KeypairBytes};
use ed25519_dalek::{SigningKey, VerifyingKey};
use peergate_signature::{
    base::signature_base, sign_message, verify_headers, ComponentId, HostRule, MessageView, Policy,
    Reason, Refusal, ReplayCache, SignatureFields, SignatureParams, Signer, Verified,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The Python side.

/// What the harness said: signed / verified (`ok`), or refused (`error`).
struct Answer {
    ok: bool,
    doc: Value,
}

impl Answer {
    fn expect_ok(self, what: &str) -> Value {
        assert!(
            self.ok,
            "{what}: the Python package refused: {}",
            self.doc["error"]
        );
        self.doc
    }

    fn expect_refused(self, what: &str) -> String {
        assert!(
            !self.ok,
            "{what}: the Python package accepted it: {}",
            self.doc
        );
        self.doc["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// Runs `httpsig_interop.py <command>` with `input` on stdin.
fn run_harness(command: &str, input: &Value) -> Answer {
    let mut cmd = python::python();
    cmd.arg(python::interop_dir().join("httpsig_interop.py"))
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the interop harness");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("harness {command}: output is not JSON ({e}): {stdout}\nstderr: {stderr}")
    });
    match out.status.code() {
        Some(0) => Answer { ok: true, doc },
        Some(1) => Answer { ok: false, doc },
        _ => panic!(
            "harness {command} failed ({}): {doc}\nstderr: {stderr}\ninput: {input}",
            out.status
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Keys, requests, helpers.

const KEY_ID: &str = "interop-ed25519";

struct Keys {
    signing: SigningKey,
    private_pem: String,
    public_pem: String,
}

fn keys() -> Keys {
    let signing = SigningKey::from_bytes(&rand::random());
    // PKCS#8 v1 (RFC 8410 without the optional public key). `SigningKey::to_pkcs8_pem` writes
    // v2 (OneAsymmetricKey with `[1] publicKey`), which Python's `cryptography` 48 and
    // OpenSSL 3.0 refuse to load ("ASN.1 parsing error: extra data").
    let private_pem = KeypairBytes {
        secret_key: signing.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .unwrap()
    .to_string();
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    Keys {
        signing,
        private_pem,
        public_pem,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JSON document of exactly 1 KiB.
fn json_1k() -> Vec<u8> {
    let head = br#"{"kind":"note","text":""#;
    let tail = br#""}"#;
    let mut body = head.to_vec();
    body.extend((0..1024 - head.len() - tail.len()).map(|k| b'a' + (k % 26) as u8));
    body.extend_from_slice(tail);
    assert_eq!(body.len(), 1024);
    body
}

fn header_pairs(req: &Req) -> Vec<[String; 2]> {
    req.headers
        .iter()
        .map(|(n, v)| [n.as_str().to_owned(), v.to_str().unwrap().to_owned()])
        .collect()
}

fn url(req: &Req) -> String {
    let host = req.headers["host"].to_str().unwrap();
    format!("{}://{host}{}", req.scheme, req.uri)
}

/// An unsigned request with `Host` (and, with a body, `Content-Type` / `Content-Length`).
fn request(method: &str, target: &str, host: &str, body: Option<&[u8]>) -> Req {
    let mut req = Req::new(method, target).header("host", host);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .header("content-length", &b.len().to_string());
    }
    req
}

/// `req` signed by our [`Signer`] now, with a fresh nonce.
fn sign_ours(keys: &Keys, mut req: Req, body: Option<&[u8]>) -> Req {
    let signer = Signer::new(
        keys.signing.clone(),
        KEY_ID.to_owned(),
        Duration::from_secs(60),
    );
    signer
        .sign(&req.view(), body, unix_now(), &Signer::nonce())
        .unwrap()
        .apply(&mut req.headers);
    req
}

/// Our signature base for the (one) signature of `req`.
fn our_base(req: &Req) -> String {
    let fields = SignatureFields::from_headers(&req.headers).unwrap();
    let entry = fields.select(None).unwrap();
    let base = signature_base(
        MessageView::Request(&req.view()),
        entry.components().unwrap(),
        &entry.signature_params_value().unwrap(),
        &[],
    )
    .unwrap();
    String::from_utf8(base).unwrap()
}

/// Asks the package to verify `req` (as sent to `url`) with `body`.
fn python_verify(keys: &Keys, method: &str, url: &str, req: &Req, body: Option<&[u8]>) -> Answer {
    let mut input = json!({
        "public_key_pem": keys.public_pem,
        "key_id": KEY_ID,
        "method": method,
        "url": url,
        "headers": header_pairs(req),
        "max_age": 300,
        "tag": "peergate",
    });
    if let Some(b) = body {
        input["body_b64"] = json!(STANDARD.encode(b));
    }
    run_harness("verify", &input)
}

/// ours → theirs, must verify: checks the package's base equals ours and, with a body, that
/// it checked the covered digest.
fn ours_verify_in_python(keys: &Keys, req: &Req, body: Option<&[u8]>) {
    let out = python_verify(keys, req.method.as_str(), &url(req), req, body).expect_ok("ours");
    assert_eq!(out["label"], "peer");
    assert_eq!(out["params"]["keyid"], KEY_ID);
    assert_eq!(
        out["signature_base"].as_str().unwrap(),
        our_base(req),
        "the package rebuilt another signature base"
    );
    assert_eq!(out["digest_verified"], json!(body.is_some()));
    let covered: Vec<&str> = out["covered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(&covered[..4], ["@method", "@authority", "@path", "@query"]);
    assert_eq!(covered.contains(&"content-digest"), body.is_some());
}

/// Asks the package to sign `method url` with `headers` (and `body`); `extra` adds harness
/// options (`covered`, `expires`, `tag`, ...). Returns the request as it must be sent.
fn sign_theirs(
    keys: &Keys,
    req: &Req,
    body: Option<&[u8]>,
    now: u64,
    nonce: &str,
    extra: Value,
) -> (Req, Value) {
    let mut input = json!({
        "private_key_pem": keys.private_pem,
        "key_id": KEY_ID,
        "method": req.method.as_str(),
        "url": url(req),
        "headers": header_pairs(req),
        "created": now,
        "nonce": nonce,
    });
    if let Some(b) = body {
        input["body_b64"] = json!(STANDARD.encode(b));
    }
    for (k, v) in extra.as_object().unwrap() {
        input[k] = v.clone();
    }
    let out = run_harness("sign", &input).expect_ok("the package signing");
    let mut signed = Req::new(req.method.as_str(), &req.uri.to_string());
    signed.scheme = req.scheme.clone();
    for pair in out["headers"].as_array().unwrap() {
        signed.add(
            pair[0].as_str().unwrap(),
            pair[1].as_str().unwrap().as_bytes(),
        );
    }
    (signed, out)
}

fn policy_for(host: &str, tag: Option<&str>) -> Policy {
    Policy {
        hosts: vec![HostRule::parse(host).unwrap()],
        tag: tag.map(str::to_owned),
        ..Policy::default()
    }
}

/// theirs → ours: the proxy's whole check, headers then body.
fn verify_here(
    keys: &Keys,
    req: &Req,
    body: Option<&[u8]>,
    policy: &Policy,
    now: u64,
) -> Result<Verified, Refusal> {
    let vk: VerifyingKey = keys.signing.verifying_key();
    let replay = ReplayCache::new(64);
    let v = verify_headers(
        &req.view(),
        policy,
        |id: &str| (id == KEY_ID).then_some(&vk),
        &replay,
        now,
    )?;
    let mut check = v.body_checker();
    if let Some(b) = body {
        check.update(b);
    }
    check.finish()?;
    Ok(v)
}

fn signature_input(req: &Req) -> String {
    req.headers["signature-input"].to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// ours → theirs

#[test]
fn ours_get_without_body_verifies_in_python() {
    let keys = keys();
    let req = sign_ours(
        &keys,
        request("GET", "/api/items", "alice.example.org", None),
        None,
    );
    ours_verify_in_python(&keys, &req, None);
}

#[test]
fn ours_post_json_1k_verifies_in_python() {
    let keys = keys();
    let body = json_1k();
    let req = sign_ours(
        &keys,
        request("POST", "/api/items", "alice.example.org", Some(&body)),
        Some(&body),
    );
    ours_verify_in_python(&keys, &req, Some(&body));
}

#[test]
fn ours_query_string_verifies_in_python() {
    let keys = keys();
    let req = sign_ours(
        &keys,
        request(
            "GET",
            "/search?q=a%20b&lang=en&x=1&x=2&empty=",
            "alice.example.org",
            None,
        ),
        None,
    );
    ours_verify_in_python(&keys, &req, None);
}

#[test]
fn ours_non_default_port_verifies_in_python() {
    let keys = keys();
    let body = json_1k();
    let req = sign_ours(
        &keys,
        request(
            "PUT",
            "/api/items/7?v=2",
            "alice.example.org:8443",
            Some(&body),
        ),
        Some(&body),
    );
    assert!(our_base(&req).contains("\"@authority\": alice.example.org:8443\n"));
    ours_verify_in_python(&keys, &req, Some(&body));
}

#[test]
fn ours_with_method_changed_is_refused_by_python() {
    let keys = keys();
    let body = json_1k();
    let req = sign_ours(
        &keys,
        request("POST", "/api/items", "alice.example.org", Some(&body)),
        Some(&body),
    );
    let error = python_verify(&keys, "PUT", &url(&req), &req, Some(&body))
        .expect_refused("ours, sent as PUT");
    assert!(error.contains("InvalidSignature"), "{error}");
}

#[test]
fn ours_with_body_byte_changed_is_refused_by_python() {
    let keys = keys();
    let body = json_1k();
    let req = sign_ours(
        &keys,
        request("POST", "/api/items", "alice.example.org", Some(&body)),
        Some(&body),
    );
    let mut tampered = body.clone();
    tampered[100] ^= 0x01;
    let error = python_verify(&keys, "POST", &url(&req), &req, Some(&tampered))
        .expect_refused("ours, one body byte changed");
    assert!(error.to_lowercase().contains("digest"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// theirs → ours

#[test]
fn theirs_defaults_without_body_verify_here() {
    let keys = keys();
    let now = unix_now();
    let unsigned = request("GET", "/api/items?page=2", "alice.example.org", None);
    let (req, _) = sign_theirs(&keys, &unsigned, None, now, "py-nonce-1", json!({}));
    let input = signature_input(&req);
    assert!(
        input.starts_with(r#"pyhms=("@method" "@authority" "@target-uri");created="#),
        "{input}"
    );
    assert!(input.contains(r#"alg="ed25519""#), "{input}");
    let v = verify_here(
        &keys,
        &req,
        None,
        &policy_for("alice.example.org", None),
        now,
    )
    .unwrap();
    assert_eq!(v.label, "pyhms");
    assert_eq!(v.key_id, KEY_ID);
    assert_eq!(v.nonce.as_deref(), Some("py-nonce-1"));
    assert!(!v.covers_digest);
}

/// RFC 9421 §4.3: the package's signature (untagged, as it signs by default) and a proxy's
/// after it, by a key not on the allowlist and covering the first: the package's is checked,
/// under peergate's own policy (which looks for `tag="peergate"` first).
#[test]
fn theirs_beside_a_proxys_signature_verifies_here() {
    let keys = keys();
    let now = unix_now();
    let unsigned = request("GET", "/api/items?page=3", "alice.example.org", None);
    let (mut req, _) = sign_theirs(&keys, &unsigned, None, now, "py-nonce-43", json!({}));
    req.add(
        "signature-input",
        format!(
            r#"proxy=("@authority" "signature";key="pyhms");created={now};keyid="proxy-key";alg="ed25519""#
        )
        .as_bytes(),
    );
    req.add(
        "signature",
        format!("proxy=:{}:", STANDARD.encode([9u8; 64])).as_bytes(),
    );
    let v = verify_here(
        &keys,
        &req,
        None,
        &policy_for("alice.example.org", Some("peergate")),
        now,
    )
    .unwrap();
    assert_eq!(v.label, "pyhms");
    assert_eq!(v.key_id, KEY_ID);
}

#[test]
fn theirs_defaults_with_body_verify_here() {
    let keys = keys();
    let now = unix_now();
    let body = json_1k();
    let unsigned = request("POST", "/api/items", "alice.example.org", Some(&body));
    let (req, out) = sign_theirs(&keys, &unsigned, Some(&body), now, "py-nonce-2", json!({}));
    let input = signature_input(&req);
    assert!(
        input.starts_with(r#"pyhms=("@method" "@authority" "@target-uri" "content-digest");"#),
        "{input}"
    );
    assert!(req.headers["content-digest"]
        .to_str()
        .unwrap()
        .starts_with("sha-256=:"));
    let v = verify_here(
        &keys,
        &req,
        Some(&body),
        &policy_for("alice.example.org", None),
        now,
    )
    .unwrap();
    assert!(v.covers_digest);
    // The base the package signed is the one we verified.
    assert_eq!(out["signature_base"].as_str().unwrap(), our_base(&req));
}

/// The package writes its parameters in its own fixed order, `created keyid alg expires nonce
/// tag` (it cannot be told otherwise); ours is `created expires nonce keyid alg tag`. The
/// signature verifies only if `@signature-params` is rebuilt exactly as received.
#[test]
fn theirs_parameter_order_differs_from_ours_and_verifies_here() {
    let keys = keys();
    let now = unix_now();
    let body = json_1k();
    let unsigned = request(
        "POST",
        "/api/items?limit=10",
        "alice.example.org:8443",
        Some(&body),
    );
    let (req, out) = sign_theirs(
        &keys,
        &unsigned,
        Some(&body),
        now,
        "py-nonce-3",
        json!({
            "covered": ["@method", "@authority", "@path", "@query", "content-digest",
                        "content-type", "content-length"],
            "expires": now + 60,
            "tag": "peergate",
            "label": "peer",
        }),
    );
    let input = signature_input(&req);
    let pos = |p: &str| input.find(p).unwrap_or_else(|| panic!("no {p} in {input}"));
    assert!(
        pos(";keyid=") < pos(";expires=") && pos(";keyid=") < pos(";nonce="),
        "the package's order has keyid before expires and nonce: {input}"
    );
    assert_eq!(
        out["signature_params"].as_str(),
        input.strip_prefix("peer=")
    );
    let ours = Signer::new(
        keys.signing.clone(),
        KEY_ID.to_owned(),
        Duration::from_secs(60),
    );
    let our_order: Vec<String> = ours
        .params_for(now, "n")
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str().to_owned())
        .collect();
    assert_eq!(
        our_order,
        ["created", "expires", "nonce", "keyid", "alg", "tag"]
    );

    // The proxy's own policy: tag peergate, nonce required, host with any port.
    let v = verify_here(
        &keys,
        &req,
        Some(&body),
        &policy_for("alice.example.org", Some("peergate")),
        now,
    )
    .unwrap();
    assert_eq!(v.label, "peer");
    assert_eq!(v.expires, Some(now + 60));
    assert_eq!(v.tag.as_deref(), Some("peergate"));
}

/// `@target-uri` with the Host as sent (upper case, the default port) and `@query-param` over
/// bytes that are not UTF-8: the package signs them as RFC 9421 gives them (the target as
/// received; U+FFFD), and so must the base here be built.
#[test]
fn theirs_target_uri_and_query_param_as_the_rfc_gives_them_verify_here() {
    let keys = keys();
    let now = unix_now();
    let unsigned = request(
        "GET",
        "/api/x?r=%FF&s=%C3%28&t=ok",
        "Alice.Example.org:443",
        None,
    );
    let (req, out) = sign_theirs(
        &keys,
        &unsigned,
        None,
        now,
        "py-nonce-rfc",
        json!({
            "covered": ["@method", "@target-uri", "\"@query-param\";name=\"r\"",
                        "\"@query-param\";name=\"s\""],
        }),
    );
    let base = out["signature_base"].as_str().unwrap();
    assert!(
        base.contains("\"@target-uri\": https://Alice.Example.org:443/api/x?r=%FF&s=%C3%28&t=ok\n"),
        "{base}"
    );
    assert!(
        base.contains("\"@query-param\";name=\"r\": %EF%BF%BD\n"),
        "{base}"
    );
    assert!(
        base.contains("\"@query-param\";name=\"s\": %EF%BF%BD%28\n"),
        "{base}"
    );
    assert_eq!(our_base(&req), base);
    verify_here(
        &keys,
        &req,
        None,
        &policy_for("alice.example.org", None),
        now,
    )
    .unwrap();
}

/// `;sf` on fields whose structured type is a List, with a member repeated: the package
/// serializes them as Lists (RFC 9421 §2.1.1, RFC 8941 §3.1 keeps repeated members); read as a
/// Dictionary, `gzip, br, gzip` would lose its second `gzip` (found by an interop sweep).
#[test]
fn theirs_sf_on_a_list_with_a_repeated_member_verifies_here() {
    let keys = keys();
    let now = unix_now();
    let unsigned = request("GET", "/api/x", "alice.example.org", None)
        .header("accept-encoding", "gzip, br, gzip")
        .header("vary", "accept, accept")
        .header("accept-language", "en, fr;q=0.5, en");
    let (req, out) = sign_theirs(
        &keys,
        &unsigned,
        None,
        now,
        "py-nonce-sf-list",
        json!({
            "covered": ["@method", "@authority", "@path", "@query",
                        "\"accept-encoding\";sf", "\"vary\";sf", "\"accept-language\";sf"],
        }),
    );
    let base = out["signature_base"].as_str().unwrap();
    assert!(
        base.contains("\"accept-encoding\";sf: gzip, br, gzip\n"),
        "{base}"
    );
    assert_eq!(our_base(&req), base);
    verify_here(
        &keys,
        &req,
        None,
        &policy_for("alice.example.org", None),
        now,
    )
    .unwrap();
}

/// A `Cookie` the package signed as one field, received in two (an HTTP/2 client may split it
/// into crumbs, RFC 9113 §8.2.3): the crumbs are that one field joined with `"; "`, as the app
/// receives it, so the signature verifies (found by an interop sweep over HTTP/2 with curl).
#[test]
fn theirs_cookie_received_in_crumbs_verifies_here() {
    let keys = keys();
    let now = unix_now();
    let unsigned = request("GET", "/api/x", "alice.example.org", None).header("cookie", "a=1; b=2");
    let (signed, out) = sign_theirs(
        &keys,
        &unsigned,
        None,
        now,
        "py-nonce-cookie",
        json!({ "covered": ["@method", "@authority", "@path", "@query", "cookie"] }),
    );
    let base = out["signature_base"].as_str().unwrap();
    assert!(base.contains("\"cookie\": a=1; b=2\n"), "{base}");
    let mut crumbs = Req::new("GET", "/api/x");
    crumbs.scheme = signed.scheme.clone();
    for (name, value) in signed.headers.iter() {
        if name == "cookie" {
            crumbs.add("cookie", b"a=1");
            crumbs.add("cookie", b"b=2");
        } else {
            crumbs.add(name.as_str(), value.as_bytes());
        }
    }
    assert_eq!(our_base(&crumbs), base);
    let policy = policy_for("alice.example.org", None);
    verify_here(&keys, &crumbs, None, &policy, now).unwrap();
}

#[test]
fn theirs_tampered_is_refused_here() {
    let keys = keys();
    let now = unix_now();
    let body = json_1k();
    let policy = policy_for("alice.example.org", None);
    let unsigned = request("POST", "/api/items", "alice.example.org", Some(&body));
    let (req, _) = sign_theirs(&keys, &unsigned, Some(&body), now, "py-nonce-4", json!({}));
    verify_here(&keys, &req, Some(&body), &policy, now).unwrap();

    // One body byte changed: the signed Content-Digest no longer matches.
    let mut tampered_body = body.clone();
    tampered_body[10] ^= 0x20;
    let r = verify_here(&keys, &req, Some(&tampered_body), &policy, now).unwrap_err();
    assert_eq!(r.reason, Reason::DigestMismatch, "{r:?}");

    // The Content-Digest replaced to match the changed body: the signature breaks.
    let mut redigested = req.clone();
    redigested.set(
        "content-digest",
        &peergate_signature::content_digest(
            peergate_signature::DigestAlgorithm::Sha256,
            &tampered_body,
        ),
    );
    let r = verify_here(&keys, &redigested, Some(&tampered_body), &policy, now).unwrap_err();
    assert_eq!(r.reason, Reason::BadSignature, "{r:?}");

    // Another method or path: the signature breaks.
    let mut put = req.clone();
    put.method = http::Method::PUT;
    let r = verify_here(&keys, &put, Some(&body), &policy, now).unwrap_err();
    assert_eq!(r.reason, Reason::BadSignature, "{r:?}");
    let mut other_path = req.clone();
    other_path.uri = "/api/items/1".parse().unwrap();
    let r = verify_here(&keys, &other_path, Some(&body), &policy, now).unwrap_err();
    assert_eq!(r.reason, Reason::BadSignature, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// RFC 9421 B.2.6

/// B.1.4 `test-key-ed25519`, as the RFC gives it.
const RFC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n\
-----END PRIVATE KEY-----\n";

#[test]
fn rfc_b26_signed_by_python_equals_ours_byte_for_byte() {
    let req = rfc_test_request();
    let input = json!({
        "private_key_pem": RFC_PRIVATE_PEM,
        "key_id": "test-key-ed25519",
        "method": "POST",
        "url": "https://example.com/foo?param=Value&Pet=dog",
        "headers": header_pairs(&req),
        "covered": ["date", "@method", "@path", "@authority", "content-type", "content-length"],
        "created": B26_CREATED,
        "label": "sig-b26",
        "include_alg": false,
    });
    let out = run_harness("sign", &input).expect_ok("B.2.6 signed by the package");
    let added: Vec<(String, String)> = out["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_ascii_lowercase(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let field = |name: &str| {
        added
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the package added no {name}: {added:?}"))
    };

    let components: Vec<ComponentId> = [
        "\"date\"",
        "\"@method\"",
        "\"@path\"",
        "\"@authority\"",
        "\"content-type\"",
        "\"content-length\"",
    ]
    .into_iter()
    .map(|c| ComponentId::parse(c).unwrap())
    .collect();
    let mut params = SignatureParams::new();
    params.push_integer("created", B26_CREATED).unwrap();
    params.push_string("keyid", "test-key-ed25519").unwrap();
    let ours = sign_message(
        &rfc_signing_key(),
        MessageView::Request(&req.view()),
        "sig-b26",
        &components,
        &params,
        &[],
    )
    .unwrap();

    assert_eq!(field("signature"), ours.signature_field);
    assert_eq!(field("signature"), B26_SIGNATURE);
    assert_eq!(field("signature-input"), ours.signature_input);
    assert_eq!(field("signature-input"), B26_INPUT);
    assert_eq!(
        out["signature_base"].as_str().unwrap().as_bytes(),
        &ours.base[..]
    );
}
