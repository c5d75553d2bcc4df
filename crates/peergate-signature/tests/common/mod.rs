//! Helpers shared by the integration tests: the RFC 9421 test key and request, and a
//! request builder that keeps the parts `RequestView` borrows.

#![allow(dead_code)]

use ed25519_dalek::{SigningKey, VerifyingKey};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use peergate_signature::{Policy, RequestView};

/// RFC 9421 B.1.4 `test-key-ed25519`, 32-byte seed.
pub const RFC_SEED_HEX: &str = "9f8362f87a484a954e6e740c5b4c0e84229139a20aa8ab56ff66586f6a7d29c5";
/// RFC 9421 B.1.4 `test-key-ed25519`, public key.
pub const RFC_PUBLIC_HEX: &str = "26b40b8f93fff3d897112f7ebc582b232dbd72517d082fe83cfb30ddce43d1bb";

/// B.2.6 `Signature-Input` and `Signature` member values, from the RFC.
pub const B26_INPUT: &str = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
pub const B26_SIGNATURE: &str = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
pub const B26_CREATED: u64 = 1_618_884_473;
pub const B26_BODY: &[u8] = br#"{"hello": "world"}"#;

pub fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

pub fn rfc_signing_key() -> SigningKey {
    SigningKey::from_bytes(&hex32(RFC_SEED_HEX))
}

pub fn rfc_verifying_key() -> VerifyingKey {
    VerifyingKey::from_bytes(&hex32(RFC_PUBLIC_HEX)).unwrap()
}

/// An owned request: what a `RequestView` borrows.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub scheme: String,
}

impl Req {
    pub fn new(method: &str, uri: &str) -> Req {
        Req {
            method: method.parse().unwrap(),
            uri: uri.parse().unwrap(),
            headers: HeaderMap::new(),
            scheme: "https".to_owned(),
        }
    }

    /// Appends a field line.
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.add(name, value.as_bytes());
        self
    }

    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }

    /// Replaces every line of the field.
    pub fn set(&mut self, name: &str, value: &str) {
        self.headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }

    pub fn view(&self) -> RequestView<'_> {
        RequestView::new(&self.method, &self.uri, &self.headers, &self.scheme)
    }
}

/// RFC 9421 B.2 `test-request`, without signature fields.
pub fn rfc_test_request() -> Req {
    Req::new("POST", "/foo?param=Value&Pet=dog")
        .header("host", "example.com")
        .header("date", "Tue, 20 Apr 2021 02:07:55 GMT")
        .header("content-type", "application/json")
        .header(
            "content-digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        )
        .header("content-length", "18")
}

/// The B.2 request with the B.2.6 signature fields.
pub fn rfc_b26_request() -> Req {
    rfc_test_request()
        .header("signature-input", B26_INPUT)
        .header("signature", B26_SIGNATURE)
}

/// A policy for the RFC vectors: created pinned, host example.com, no nonce.
pub fn rfc_policy(hosts: &[&str]) -> Policy {
    Policy {
        hosts: hosts
            .iter()
            .map(|h| peergate_signature::HostRule::parse(h).unwrap())
            .collect(),
        require_nonce: false,
        ..Policy::default()
    }
}
