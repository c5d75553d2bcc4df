//! The public, unsigned resources of the inbound listener, on a running gateway over TLS:
//! the identity document, the signed HTTP Message Signatures Directory, and the welcome page.

mod instance;
mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use instance::{Instance, Options};
use peergate::identity::PublicIdentity;
use peergate::public_identity::{
    DIRECTORY_MEDIA_TYPE, DIRECTORY_PATH, DIRECTORY_TAG, IDENTITY_PATH, PAGE_CSP,
};
use peergate_signature::{
    verify_signature, MessageView, RequestView, ResponseView, SignatureFields,
};
use sha2::{Digest, Sha256};
use support::*;

const PAGE: &str = "/.well-known/peergate/profile";

const EVIL_PROFILE: &str = r#"# Hello from Alice

I run a **small** server. Reach me at [my site](https://alice.example.org) or [mail](mailto:alice@example.org).

<script>alert(1)</script>

<img src=x onerror=alert(1)>

[click me](javascript:alert(1))

<a href="JaVaScRiPt:alert(2)">sneaky</a>

<a href="  javascript:alert(3)">spaced</a>

<div onclick="alert(4)" style="position:fixed">overlay</div>

<iframe src="https://evil.example"></iframe>

| day | what |
| --- | ---- |
| Mon | code |
"#;

fn start_with(profile: Option<&str>, profile_path: Option<&str>) -> Instance {
    Instance::start(Options {
        profile: profile.map(str::to_string),
        profile_path: profile_path.map(str::to_string),
        ..Options::default()
    })
}

fn header_map(resp: &RawResponse) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &resp.headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[tokio::test]
async fn identity_document_states_the_key_in_every_form() {
    let alice = start_with(Some("Hi, I am *Alice*."), None);
    let resp = alice.request("GET", IDENTITY_PATH).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let doc = resp.json();
    let public = &alice.public;
    assert_eq!(doc["key_id"], public.key_id());
    assert_eq!(doc["peer_id"], public.peer_id());
    assert_eq!(doc["short_id"], public.short_id());
    assert_eq!(doc["public_key"], public.spki_base64());
    assert_eq!(doc["alg"], "ed25519");
    assert_eq!(doc["name"], "Alice");
    assert_eq!(doc["profile"], "Hi, I am *Alice*.");
    assert_eq!(doc["scheme"], "https");
    assert_eq!(doc["hosts"][0], "alice.test");
    // What a peer pastes into its allowlist gives back the same identity.
    let parsed = PublicIdentity::parse(doc["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(parsed.key_id(), public.key_id());
    // Answered by peergate, not the app, and without a signature although every route is
    // `peers`.
    assert_eq!(alice.app.count(), 0);

    let bare = start_with(None, None);
    let doc = bare.request("GET", IDENTITY_PATH).await.json();
    assert!(doc["profile"].is_null(), "{doc}");
}

#[tokio::test]
async fn directory_is_a_signed_jwks_whose_kid_is_the_thumbprint() {
    let alice = start_with(None, None);
    let resp = alice.request("GET", DIRECTORY_PATH).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some(DIRECTORY_MEDIA_TYPE));
    let doc = resp.json();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["kid"], alice.public.key_id());
    // RFC 7638: the thumbprint of the JWK as served is its kid.
    let x = jwk["x"].as_str().unwrap();
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    assert_eq!(jwk["kid"], thumbprint.as_str());
    assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap().len(), 32);

    // Content-Digest matches the body.
    let digest = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&resp.body))
    );
    assert_eq!(resp.header("content-digest"), Some(digest.as_str()));

    // The response signature (draft: "@authority";req, tag) verifies with the key served.
    let input = resp.header("signature-input").expect("a signed directory");
    assert!(input.contains("\"@authority\";req"), "{input}");
    assert!(input.contains("\"content-digest\""), "{input}");
    assert!(
        input.contains(&format!("tag=\"{DIRECTORY_TAG}\"")),
        "{input}"
    );
    assert!(
        input.contains(&format!("keyid=\"{}\"", alice.public.key_id())),
        "{input}"
    );
    let headers = header_map(&resp);
    let fields = SignatureFields::from_headers(&headers).unwrap();
    let entry = fields.select(Some(DIRECTORY_TAG)).unwrap();
    let mut req_headers = HeaderMap::new();
    req_headers.insert("host", alice.authority().parse().unwrap());
    let uri: Uri = DIRECTORY_PATH.parse().unwrap();
    let request = RequestView::new(&Method::GET, &uri, &req_headers, "https");
    let response = ResponseView {
        status: StatusCode::OK,
        headers: &headers,
        request: Some(&request),
    };
    let key = PublicIdentity::parse(x).unwrap();
    verify_signature(
        MessageView::Response(&response),
        entry,
        &key.verifying_key().unwrap(),
    )
    .expect("the directory signature verifies");
    // Bound to the authority: the same signature does not hold for another host.
    let mut other = HeaderMap::new();
    other.insert("host", "mallory.test".parse().unwrap());
    let request = RequestView::new(&Method::GET, &uri, &other, "https");
    let response = ResponseView {
        status: StatusCode::OK,
        headers: &headers,
        request: Some(&request),
    };
    assert!(verify_signature(
        MessageView::Response(&response),
        entry,
        &key.verifying_key().unwrap()
    )
    .is_err());

    // Asked under a name that is not ours, the directory is served but not signed: peergate
    // does not vouch for hosts it is not.
    let resp = alice
        .send(RawRequest::new("GET", DIRECTORY_PATH).header("Host", "mallory.test"))
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("signature").is_none(), "{:?}", resp.headers);
    assert_eq!(alice.app.count(), 0);
}

#[tokio::test]
async fn welcome_page_renders_the_profile_safely() {
    let alice = start_with(Some(EVIL_PROFILE), None);
    let resp = alice.request("GET", PAGE).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(resp.header("content-security-policy"), Some(PAGE_CSP));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    let html = resp.text();
    let lower = html.to_ascii_lowercase();
    for bad in [
        "<script",
        "alert(",
        "onerror",
        "onclick",
        "javascript:",
        "<iframe",
        "position:fixed",
        "src=\"x\"",
    ] {
        assert!(!lower.contains(bad), "{bad} survived:\n{html}");
    }
    // What is safe survives.
    assert!(html.contains("<h1>Hello from Alice</h1>"), "{html}");
    assert!(html.contains("<strong>small</strong>"), "{html}");
    assert!(
        html.contains("href=\"https://alice.example.org\""),
        "{html}"
    );
    assert!(html.contains("href=\"mailto:alice@example.org\""), "{html}");
    assert!(html.contains("<table>"), "{html}");
    assert!(html.contains(">sneaky</a>"), "the link text stays: {html}");
    // The owner's name and short ID, and the key to compare.
    assert!(html.contains("<title>Alice · peergate</title>"), "{html}");
    assert!(html.contains(alice.public.short_id()));
    assert!(html.contains(alice.public.key_id()));
    // Self-contained: no external stylesheet, font or script.
    assert!(!lower.contains("<link rel=\"stylesheet\""));
    assert!(!lower.contains("@import"));
    assert!(!lower.contains("@font-face"));
    assert_eq!(alice.app.count(), 0);
}

#[tokio::test]
async fn welcome_page_without_profile_and_names_are_escaped() {
    let eve = Instance::start(Options {
        name: "Eve <b>&</b> \"co\"".into(),
        ..Options::default()
    });
    let resp = eve.request("GET", PAGE).await;
    assert_eq!(resp.status, 200);
    let html = resp.text();
    assert!(
        html.contains("Eve &lt;b&gt;&amp;&lt;/b&gt; &quot;co&quot;"),
        "{html}"
    );
    assert!(!html.contains("<b>&</b>"), "{html}");
    assert!(html.contains("has not written a profile yet"), "{html}");
    assert!(html.contains(eve.public.short_id()));
}

#[tokio::test]
async fn profile_at_the_root_when_configured() {
    let alice = start_with(Some("Root page"), Some("/"));
    let resp = alice.request("GET", "/").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().contains("<p>Root page</p>"));
    let resp = alice.request("GET", "/?utm=x").await;
    assert_eq!(resp.status, 200);
    // The default path is then the app's again (here: peers only, so unsigned is refused).
    let resp = alice.request("GET", PAGE).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    // Other paths still need a signature.
    assert_eq!(alice.request("GET", "/index.html").await.status, 401);
    assert_eq!(alice.app.count(), 0);
}

#[tokio::test]
async fn head_works_and_other_methods_get_405() {
    let alice = start_with(Some("hello"), None);
    for path in [IDENTITY_PATH, DIRECTORY_PATH, PAGE] {
        let get = alice.request("GET", path).await;
        let head = alice.request("HEAD", path).await;
        assert_eq!(head.status, 200, "{path}");
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(
            head.header("content-length"),
            Some(get.body.len().to_string().as_str()),
            "{path}"
        );
        assert_eq!(head.header("content-type"), get.header("content-type"));

        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let resp = alice
                .send(
                    RawRequest::new(method, path)
                        .header("Host", alice.authority())
                        .body("x=1")
                        .content_length(),
                )
                .await;
            assert_eq!(resp.status, 405, "{method} {path}: {}", resp.text());
            assert_eq!(
                resp.header("content-type"),
                Some("application/problem+json")
            );
            assert_eq!(resp.header("allow"), Some("GET, HEAD"));
            let problem = resp.json();
            assert_eq!(problem["status"], 405);
            assert_eq!(problem["reason"], "method_not_allowed");
        }
    }
    assert_eq!(alice.app.count(), 0);
    // Refusals, counted as such (they were counted `ok`). A request is counted once its
    // answer is written, a moment after the client has it.
    let count = |metrics: &str, series: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
    };
    let refusals = "peergate_rejections_total{direction=\"inbound\",reason=\"method_not_allowed\"}";
    let refused =
        "peergate_requests_total{direction=\"inbound\",outcome=\"refused\",peer=\"unknown\"}";
    let started = std::time::Instant::now();
    loop {
        let metrics = alice.running().shared().metrics.render();
        let counts = (count(&metrics, refusals), count(&metrics, refused));
        if counts == (Some(12.0), Some(12.0)) {
            break;
        }
        assert!(started.elapsed().as_secs() < 5, "{counts:?}\n{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn served_over_http2_too() {
    let alice = start_with(None, None);
    let resp = h2_request(
        alice.addr,
        alice.client.clone(),
        "alice.test",
        "GET",
        &format!("https://{}{IDENTITY_PATH}", alice.authority()),
        &[],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["key_id"], alice.public.key_id());
    let resp = h2_request(
        alice.addr,
        alice.client.clone(),
        "alice.test",
        "GET",
        &format!("https://{}{DIRECTORY_PATH}", alice.authority()),
        &[],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.header("signature").is_some(), "{:?}", resp.headers);
}

#[tokio::test]
async fn pages_follow_a_new_configuration() {
    let alice = start_with(Some("first"), None);
    assert!(alice.request("GET", PAGE).await.text().contains("first"));
    std::fs::write(alice.dir.path().join("profile.md"), "second *edition*").unwrap();
    let text = std::fs::read_to_string(&alice.config_path)
        .unwrap()
        .replace("name: \"Alice\"", "name: \"Alice B.\"");
    std::fs::write(&alice.config_path, text).unwrap();
    let loaded = peergate::config::load(&alice.config_path).unwrap();
    let snapshot = peergate::allowlist::Snapshot::build(&loaded.config).unwrap();
    alice.running().shared().install(snapshot);
    let html = alice.request("GET", PAGE).await.text();
    assert!(html.contains("second <em>edition</em>"), "{html}");
    assert!(html.contains("Alice B."), "{html}");
    assert_eq!(
        alice.request("GET", IDENTITY_PATH).await.json()["name"],
        "Alice B."
    );
}

#[test]
fn profile_path_is_validated_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    peergate::identity::write_new_key(&dir.path().join("k.pem"), false).unwrap();
    let cases = [
        ("welcome", "must start with /"),
        ("/about/*", "exact path"),
        ("/a/../b", ". or .."),
        ("/.well-known/peergate", "identity document"),
    ];
    for (value, why) in cases {
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            format!(
                "identity:\n  key_file: k.pem\n  hosts: [a.test]\n  profile_path: \"{value}\"\napp: {{ upstream: \"127.0.0.1:1\" }}\n"
            ),
        )
        .unwrap();
        let err = peergate::config::load(&path).unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(4), "{value}: {err}");
        assert!(err.message.contains(why), "{value}: {err}");
    }
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "identity:\n  key_file: k.pem\n  hosts: [a.test]\n  profile_path: /\napp: { upstream: \"127.0.0.1:1\" }\n",
    )
    .unwrap();
    let loaded = peergate::config::load(&path).unwrap();
    assert_eq!(loaded.config.identity.profile_path.as_str(), "/");
}
