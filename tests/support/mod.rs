//! Shared integration-test harness for peergate: everything real, on loopback, no mocks.
//!
//! - [`tls`]: a test CA (`rcgen`) issuing server certificates, PEM files for the gateway's
//!   `tls:` section, and rustls configs (ring provider, like pingora-rustls).
//! - [`echo`]: an HTTP/1.1 app that records every request exactly as received, with slow,
//!   closing and custom variants, plus `free_port` / `dead_addr`.
//! - [`client`]: exact-bytes HTTP/1.1 requests (plain or TLS) and HTTP/2 requests (TLS, ALPN
//!   `h2`), each network operation bounded by [`NET_TIMEOUT`].
//!
//! Use it from an integration test with `mod support;` and `use support::*;`.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod echo;
pub mod python;
pub mod tls;

pub use client::{
    closed_within, h2_get_given_up, h2_get_read_late, h2_get_then_deaf, h2_gets_at_once,
    h2_post_streamed, h2_raw, h2_raw_zero_window, h2_request, h2_request_then_idle, raw_request,
    rustls_error, RawConn, RawRequest, RawResponse, NET_TIMEOUT,
};
pub use echo::{
    dead_addr, free_port, wait_bound, wait_listening, EchoApp, Handler, Recorded, Reply,
};
pub use tls::{crypto_provider, IssuedCert, TestCa};

/// `got`, an HTTP/1.1 answer read until its connection ended, is a chunked 200 carrying
/// `carrying` that was cut off: it lacks the last chunk that finishing it would have written, so
/// its client can tell it is incomplete.
pub fn assert_visibly_cut_chunked(what: &str, got: &[u8], carrying: &str) {
    let text = String::from_utf8_lossy(got);
    let lower = text.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{what}: {text}");
    assert!(
        lower.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{what}: {text:?}"
    );
    assert!(text.contains(carrying), "{what}: {text:?}");
    assert!(
        !text.ends_with("\r\n0\r\n\r\n"),
        "{what}: the cut answer was finished with a last chunk: {text:?}"
    );
}

/// `len` bytes that are not all alike, for bodies whose every byte must arrive as sent.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// `resp` is an RFC 9457 problem+json refusal with this status and reason, a title, a type
/// naming the reason and a detail a person can act on; a 401 says in `Accept-Signature` what
/// to sign.
#[track_caller]
pub fn assert_problem(resp: &RawResponse, status: u16, reason: &str) {
    assert_eq!(
        resp.status,
        status,
        "expected {status} {reason}, got {}: {}",
        resp.status,
        resp.text()
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json"),
        "{}",
        resp.text()
    );
    let doc = resp.json();
    assert_eq!(doc["reason"], reason, "{doc}");
    assert_eq!(doc["status"], status, "{doc}");
    assert!(
        doc["detail"].as_str().is_some_and(|d| d.len() > 10),
        "a detail a person can act on: {doc}"
    );
    assert!(
        doc["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{doc}"
    );
    assert!(
        doc["type"].as_str().is_some_and(|t| t.ends_with(reason)),
        "{doc}"
    );
    if status == 401 {
        let accept = resp
            .header("accept-signature")
            .expect("401 carries Accept-Signature");
        assert!(
            accept.contains("\"@method\"") && accept.contains("created"),
            "{accept}"
        );
    }
}

/// The first value of header `name` in `headers` (names compared case-insensitively).
pub fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of header `name` in `headers`, in order (names compared case-insensitively).
pub fn all_headers<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Reads a request head (and whatever came with it) off a raw connection, as a hand-written
/// upstream does; `None` when the connection ends first.
pub async fn read_request_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    Some(head)
}
