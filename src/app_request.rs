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

/// Fields with which a request names another method for the app to act on than its own: Rails
/// (Rack::MethodOverride), Laravel, Symfony and Express's `method-override` take a POST carrying
/// one of them as the method it names. A peer's `allow.methods` must hold for those too.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Each method-override field of the request (see [`METHOD_OVERRIDES`]), `_` look-alikes
/// included (Rack on Puma reads `x_http_method_override` as the real one): its name as sent
/// and the method it names, upper-cased as the frameworks read it. Walks every field: only for
/// peers whose methods are narrowed.
pub fn method_overrides(headers: &http::HeaderMap) -> impl Iterator<Item = (&str, Vec<u8>)> {
    headers.iter().filter_map(|(name, value)| {
        let name = name.as_str();
        METHOD_OVERRIDES
            .iter()
            .any(|o| same_but_underscores(o, name))
            .then(|| (name, value.as_bytes().trim_ascii().to_ascii_uppercase()))
    })
}

/// The values of the request's `_method` query parameters (Laravel and Symfony take a POST's
/// method from one), decoded as a form is and upper-cased. A `_method` in the body is
/// [`body_method_parameters`]'s: the body is read after authorization.
pub fn method_parameters(query: Option<&str>) -> impl Iterator<Item = Vec<u8>> + '_ {
    form_method_parameters(query.unwrap_or_default().as_bytes())
}

/// The `_method` parameters of `application/x-www-form-urlencoded` data, decoded and upper-cased.
fn form_method_parameters(form: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let decode = |s: &[u8]| -> Vec<u8> {
        let spaced: Vec<u8> = s
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&spaced).collect()
    };
    form.split(|&b| b == b'&').filter_map(move |pair| {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &[][..]),
        };
        (decode(name) == b"_method").then(|| decode(value).trim_ascii().to_ascii_uppercase())
    })
}

/// The methods a POST's body names in a `_method` parameter, upper-cased as the frameworks read
/// it. Rack::MethodOverride (Rails, Sinatra) and Symfony take one from a form, urlencoded or
/// multipart (Rack reads a POST without `Content-Type` as an urlencoded form too); Laravel from
/// its input, a JSON body's top-level object included; Express's `method-override` from
/// `req.body`. Only a POST's: those frameworks take the override from nothing else.
pub fn body_method_parameters(
    method: &http::Method,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Vec<Vec<u8>> {
    if method != http::Method::POST {
        return Vec::new();
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes().to_ascii_lowercase());
    let Some(content_type) = content_type else {
        return form_method_parameters(body).collect();
    };
    let mut params = content_type.split(|&b| b == b';').map(<[u8]>::trim_ascii);
    let media_type = params.next().unwrap_or_default();
    match media_type {
        b"application/x-www-form-urlencoded" => form_method_parameters(body).collect(),
        b"multipart/form-data" => {
            // The boundary as sent: the lower-cased copy is only for finding the parameter.
            let boundary = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| boundary_of(v.as_bytes()));
            boundary.map_or_else(Vec::new, |b| multipart_method_parameters(body, &b))
        }
        // Laravel's test for a JSON body (`Request::isJson`).
        _ if contains(&content_type, b"/json") || contains(&content_type, b"+json") => {
            match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(map)) => map
                    .get("_method")
                    .and_then(serde_json::Value::as_str)
                    .map(|m| vec![m.trim().as_bytes().to_ascii_uppercase()])
                    .unwrap_or_default(),
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The `boundary` parameter of a `multipart/form-data` content type, unquoted.
fn boundary_of(content_type: &[u8]) -> Option<Vec<u8>> {
    content_type
        .split(|&b| b == b';')
        .skip(1)
        .find_map(|param| {
            let param = param.trim_ascii();
            let (name, value) = param.split_at_checked(param.iter().position(|&b| b == b'=')?)?;
            let value = value.get(1..)?.trim_ascii();
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            (name.trim_ascii().eq_ignore_ascii_case(b"boundary") && !value.is_empty())
                .then(|| value.to_vec())
        })
}

/// The contents of the parts named `_method` in a multipart form (RFC 7578), upper-cased.
fn multipart_method_parameters(body: &[u8], boundary: &[u8]) -> Vec<Vec<u8>> {
    let delimiter = [b"--".as_slice(), boundary].concat();
    let starts: Vec<usize> = memchr::memmem::find_iter(body, &delimiter).collect();
    let mut found = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(body.len());
        let Some(part) = body.get(start + delimiter.len()..end) else {
            continue;
        };
        if part.starts_with(b"--") {
            break;
        }
        let Some(head_end) = memchr::memmem::find(part, b"\r\n\r\n") else {
            continue;
        };
        let (head, content) = part.split_at(head_end);
        let named_method = head.split(|&b| b == b'\n').any(|line| {
            let line = line.trim_ascii();
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return false;
            };
            let (name, value) = line.split_at(colon);
            name.trim_ascii()
                .eq_ignore_ascii_case(b"content-disposition")
                && value
                    .get(1..)
                    .unwrap_or_default()
                    .split(|&b| b == b';')
                    .any(|param| {
                        let param = param.trim_ascii();
                        let Some(eq) = param.iter().position(|&b| b == b'=') else {
                            return false;
                        };
                        let (key, v) = param.split_at(eq);
                        let v = v.get(1..).unwrap_or_default().trim_ascii();
                        let v = v
                            .strip_prefix(b"\"")
                            .and_then(|v| v.strip_suffix(b"\""))
                            .unwrap_or(v);
                        key.trim_ascii().eq_ignore_ascii_case(b"name") && v == b"_method"
                    })
        });
        if named_method {
            // The content runs from after the blank line to the CRLF before the next delimiter.
            let content = content.get(4..).unwrap_or_default();
            let content = content.strip_suffix(b"\r\n").unwrap_or(content);
            found.push(content.trim_ascii().to_ascii_uppercase());
        }
    }
    found
}

/// `name` is `canonical` with any of its `-` written as `_` (both lowercase, as `HeaderMap`
/// keeps names): servers that map field names to CGI-style variables read the two alike.
fn same_but_underscores(canonical: &str, name: &str) -> bool {
    canonical.len() == name.len()
        && canonical
            .bytes()
            .zip(name.bytes())
            .all(|(a, b)| a == b || (a == b'-' && b == b'_'))
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
const CLIENT_FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// Whether a field is one a client may not send the app: one of [`CLIENT_FORWARDING`], or a
/// look-alike with `_` for `-` of those or of the two peergate sets (`X-Forwarded-For`,
/// `X-Forwarded-Proto`). Servers that map field names to CGI-style variables (Rack, PHP,
/// WSGI) read `x_forwarded_for` as `X-Forwarded-For`, so it could stand in for peergate's.
/// `name` is lowercase, as `HeaderMap` keeps names.
fn client_forwarding(name: &str) -> bool {
    if CLIENT_FORWARDING.contains(&name) {
        return true;
    }
    name.contains('_')
        && CLIENT_FORWARDING
            .iter()
            .chain(&["x-forwarded-for", "x-forwarded-proto"])
            .any(|f| same_but_underscores(f, name))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posts_body_names_its_method_override_as_the_frameworks_read_it() {
        let read = |method: &str, content_type: Option<&str>, body: &[u8]| {
            let mut headers = http::HeaderMap::new();
            if let Some(c) = content_type {
                headers.insert(http::header::CONTENT_TYPE, c.parse().unwrap());
            }
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            body_method_parameters(&method, &headers, body)
                .into_iter()
                .map(|m| String::from_utf8(m).unwrap())
                .collect::<Vec<_>>()
        };
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(
            read("POST", form, b"a=1&_method=delete&_method=Put"),
            ["DELETE", "PUT"]
        );
        assert_eq!(
            read("POST", None, b"_method=DELETE"),
            ["DELETE"],
            "Rack: a form"
        );
        assert_eq!(read("POST", form, b"_meth%6Fd=%20patch+"), ["PATCH"]);
        assert!(read("POST", form, b"x_method=DELETE&_methodx=DELETE").is_empty());
        assert!(
            read("PUT", form, b"_method=DELETE").is_empty(),
            "only a POST's"
        );
        assert!(read("POST", Some("text/plain"), b"_method=DELETE").is_empty());

        let parts = "--b1\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n\
                     DELETE\r\n--b1\r\nContent-Disposition: form-data; name=\"_methods\"\r\n\
                     \r\nPUT\r\n--b1\r\nCONTENT-DISPOSITION:form-data;NAME=_method\r\n\
                     Content-Type: text/plain\r\n\r\n patch \r\n--b1--\r\n\
                     --b1\r\nContent-Disposition: form-data; name=_method\r\n\r\nGET\r\n";
        let multipart = |boundary: &str| format!("multipart/form-data; boundary={boundary}");
        assert_eq!(
            read("POST", Some(&multipart("b1")), parts.as_bytes()),
            ["DELETE", "PATCH"],
            "after the closing delimiter, nothing is a part"
        );
        assert_eq!(
            read("POST", Some(&multipart("\"b1\"")), parts.as_bytes()),
            ["DELETE", "PATCH"]
        );
        assert!(read("POST", Some(&multipart("b2")), parts.as_bytes()).is_empty());
        assert!(read("POST", Some("multipart/form-data"), parts.as_bytes()).is_empty());

        let json = Some("application/json; charset=utf-8");
        assert_eq!(read("POST", json, br#"{"_method":" delete "}"#), ["DELETE"]);
        assert!(read("POST", json, br#"{"a":{"_method":"DELETE"}}"#).is_empty());
        assert!(read("POST", json, br#"[{"_method":"DELETE"}]"#).is_empty());
        assert!(read("POST", json, b"{not json").is_empty());
        assert_eq!(
            read(
                "POST",
                Some("application/merge-patch+json"),
                br#"{"_method":"PUT"}"#
            ),
            ["PUT"]
        );
    }
}
