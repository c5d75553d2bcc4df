//! The request header the app receives: what peergate removes from what came in, and what it
//! adds. Shared by the proxied path and the buffered-body path so both send the same thing.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::allowlist::{Caller, IdentityHeaderNames};

/// Hop-by-hop fields (RFC 9110 §7.6.1) and `Upgrade`: an upgraded connection would carry bytes
/// the signature never covered, so it is not offered to the app.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Fields a `Connection` header may not nominate for removal: what frames the request, what the
/// signature rests on, and what peergate itself sets for the app. Removing `Host` would hand the
/// app a request without the authority that was verified. Pingora refuses the first four on the
/// routes it proxies itself; [`protected_nomination`] refuses all of them on every route.
const PROTECTED: &[&str] = &[
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "content-length",
    "transfer-encoding",
    "content-digest",
    "signature",
    "signature-input",
];

/// The first field the request's `Connection` header nominates that must reach the app (see
/// [`PROTECTED`]), spelled as it came.
pub fn protected_nomination(req: &RequestHeader) -> Option<String> {
    connection_tokens(&req.headers)
        .find(|token| {
            token.first() == Some(&b':')
                || PROTECTED
                    .iter()
                    .any(|p| p.as_bytes().eq_ignore_ascii_case(token))
        })
        .map(|token| String::from_utf8_lossy(token).into_owned())
}

/// `name` is `canonical` with any of its `-` written as another byte that is not a letter or
/// digit (both lowercase, as `HeaderMap` keeps names), folded as the identity headers are
/// (`IdentityHeaderName::fold_byte`): servers that map field names to CGI-style variables
/// read `x_forwarded_host` alike, and some (lighttpd's, older Apache's) `x.forwarded.host`.
pub(crate) fn same_folded(canonical: &str, name: &str) -> bool {
    canonical.len() == name.len()
        && canonical
            .bytes()
            .zip(name.bytes())
            .all(|(a, b)| a == crate::config::IdentityHeaderName::fold_byte(b))
}

/// The field names a message's `Connection` headers nominate, trimmed, empty ones left out.
pub(crate) fn connection_tokens(headers: &http::HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// RFC 9113 §8.2.3: an HTTP/2 client may split `Cookie` into several fields, which MUST be
/// joined with `"; "` before the request goes on over HTTP/1.1; an app reading one `Cookie` line
/// would otherwise see only the first part. (An HTTP/1.1 client sends one line, per RFC 6265.)
fn join_cookies(req: &mut RequestHeader) -> pingora::Result<()> {
    let cookies = req.headers.get_all(http::header::COOKIE);
    if cookies.iter().nth(1).is_none() {
        return Ok(());
    }
    let joined = cookies
        .iter()
        .map(http::HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    let value = http::HeaderValue::from_bytes(&joined)
        .map_err(|e| pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "cookie", e))?;
    req.remove_header(&http::header::COOKIE);
    req.insert_header(http::header::COOKIE, value)
}

/// Forwarding fields that only the proxy in front of the app may set, and peergate is that
/// proxy: what a client sends in them would reach the app as peergate's word. Frameworks build
/// links and redirects from them (Rails and Django from `X-Forwarded-Host`, Spring from
/// `Forwarded` and `X-Forwarded-Prefix`, Gin takes the client address from `X-Real-IP`), so a
/// client's `X-Forwarded-Host: evil.example` would poison a password-reset link. Removed on
/// every request; peergate sets `X-Forwarded-Host` itself. (`X-Forwarded-For` is appended to,
/// as every proxy does: an app reads its last entry.)
///
/// With them, the other client-address and scheme fields CDNs and load balancers set, which
/// libraries read before `X-Forwarded-For` (Node's `request-ip` takes `X-Client-IP` first), and
/// the fields that carry the original path through a rewriting proxy, which IIS's URL Rewrite,
/// ASP.NET and older Symfony and Laminas route on: a client's `X-Original-URL: /admin` would
/// reach a route that `allow.paths` (or a public route's own path) keeps it from.
const CLIENT_FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-envoy-original-path",
];

/// Whether a field is one a client may not send the app: one of [`CLIENT_FORWARDING`], or a
/// look-alike ([`same_folded`]) of those or of the two peergate sets (`X-Forwarded-For`,
/// `X-Forwarded-Proto`). Servers that map field names to CGI-style variables (Rack, PHP,
/// WSGI) read `x_forwarded_for` as `X-Forwarded-For`, so it could stand in for peergate's.
/// `name` is lowercase, as `HeaderMap` keeps names.
fn client_forwarding(name: &str) -> bool {
    if CLIENT_FORWARDING.contains(&name) {
        return true;
    }
    name.bytes()
        .any(|b| b != b'-' && !b.is_ascii_alphanumeric())
        && CLIENT_FORWARDING
            .iter()
            .chain(&["x-forwarded-for", "x-forwarded-proto"])
            .any(|f| same_folded(f, name))
}

/// `X-Forwarded-For` to look up without parsing the name. (Pingora's `insert_header` takes
/// names as `&'static str` with one allocation fewer than as `HeaderName`s, which it titles
/// into a copy before parsing the name again.)
static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// Removes every copy of every identity header look-alike, every hop-by-hop field and the
/// forwarding fields a client may not set, then sets the forwarding headers and, for a
/// verified caller, the identity headers.
pub fn prepare(
    req: &mut RequestHeader,
    names: &IdentityHeaderNames,
    caller: Option<&Caller>,
    client_ip: Option<IpAddr>,
    proto: &str,
) -> pingora::Result<()> {
    let mut doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            names.matches(name) || HOP_BY_HOP.contains(&name) || client_forwarding(name)
        })
        .cloned()
        .collect();
    doomed.extend(
        connection_tokens(&req.headers).filter_map(|t| http::HeaderName::from_bytes(t).ok()),
    );
    for name in doomed {
        req.remove_header(&name);
    }
    join_cookies(req)?;

    if let Some(ip) = client_ip {
        let earlier: Vec<&str> = req
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let forwarded_for = if earlier.is_empty() {
            ip.to_string()
        } else {
            format!("{}, {ip}", earlier.join(", "))
        };
        req.insert_header("x-forwarded-for", forwarded_for)?;
    }
    req.insert_header("x-forwarded-proto", proto)?;
    // The host the client asked for (and, for a signed request, the authority verified): from
    // `Host`, or from the target of an HTTP/2 request, which carries it in `:authority`.
    let host = match req.headers.get(http::header::HOST) {
        Some(host) => Some(host.clone()),
        None => req
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()),
    };
    if let Some(host) = host {
        req.insert_header("x-forwarded-host", host)?;
    }

    if let Some(caller) = caller {
        req.insert_header(names.id.clone(), caller.id_header.clone())?;
        req.insert_header(names.name.clone(), caller.name_header.clone())?;
        req.insert_header(names.key_id.clone(), caller.key_id_header.clone())?;
    }
    Ok(())
}
