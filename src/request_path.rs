//! The request path as routes and `allow` rules see it.
//!
//! The app receives the exact path bytes that were signed, so routing must not judge a different
//! path than the app will act on. Apps disagree on how to read `..`, `%2e%2e`, `%2f`, `\` and
//! `//`; rather than guess which reading an app uses, a path that any of them could read in more
//! than one way is refused. What is left has one meaning: its percent-decoded form, which is what
//! the route patterns are matched against.
//!
//! An unreserved character (a letter, a digit, `-`, `_`) sent percent-encoded is refused too
//! (`~` is not: common encoders send it as `%7E`): `/%61pi/x` is `/api/x` to a route pattern and to apps that decode before routing, and
//! something else to apps that route on the raw path.
//!
//! `;` is refused too, raw or encoded. Servlet containers (Tomcat, Jetty) cut each segment at its
//! first `;` (path parameters) before they route, so `/public/..;/admin` is `/admin` to them
//! while every other reader sees a segment named `..;` below `/public`; `/secret;x/y` is
//! `/secret/y` to them and not under `/secret/` to a route pattern. Spring Security's strict
//! firewall refuses `;` for the same reason.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(String);

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes `raw` (the path of the request target, without query) into the form routes match,
/// or refuses it when it is not in one unambiguous normal form.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let refuse = |why: &str| Err(PathError(format!("the path {raw:?} {why}")));
    if !raw.starts_with('/') {
        return refuse("does not start with /");
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let Some(value) = escaped(bytes, i) else {
                    return refuse("has a % that is not followed by two hex digits");
                };
                if matches!(value, b'/' | b'\\' | b'.' | b'%' | b';')
                    || value < 0x20
                    || value == 0x7f
                {
                    return refuse(&format!(
                        "encodes {:?} as %{value:02X}; send it unencoded or not at all",
                        char::from(value)
                    ));
                }
                // RFC 3986 §2.3: an unreserved character is the same encoded or not, and an
                // app that routes on the raw path does not see `/%61pi` as `/api`, which the
                // route patterns would. `~` is left out: older encoders (Java's URLEncoder,
                // .NET's UrlEncode, Python before 3.7) send it as %7E.
                if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'_') {
                    return refuse(&format!(
                        "encodes {:?} as %{value:02X}; it needs no encoding, send it as it is",
                        char::from(value)
                    ));
                }
                decoded.push(value);
                i += 3;
            }
            b'\\' => return refuse("contains a backslash"),
            b';' => {
                return refuse(
                    "contains ; (path parameters), which some apps cut off before routing \
                     (Tomcat, Jetty) and others keep",
                )
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let Ok(decoded) = String::from_utf8(decoded) else {
        return refuse("does not decode to UTF-8");
    };
    if decoded.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    let inner = decoded.strip_prefix('/').unwrap_or(&decoded);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty() {
        for segment in inner.split('/') {
            match segment {
                "" => return refuse("has an empty segment (//)"),
                "." | ".." => return refuse("has a . or .. segment"),
                _ => {}
            }
        }
    }
    Ok(decoded)
}

/// Whether `raw` (a path, percent-encoded as sent) has a `.` or `..` segment as some server
/// could read it: spelled plainly or with `%2e`, between separators that include `\` and an
/// encoded `/` or `\` (`%2f`, `%5c`, which some servers decode before they resolve dots), and
/// ending at a `;` (path parameters, which servlet containers cut off: `..;` is `..` to them).
/// The outbound side refuses those, as resolving them on the peer's side could leave the base
/// path of the peer's URL.
pub fn has_dot_segment(raw: &str) -> bool {
    // On every request, so no allocation: each segment is read from its start, counting its
    // leading dots, then skipped to the next separator.
    let mut rest = raw.as_bytes();
    loop {
        let mut dots = 0;
        while let Some(tail) = rest
            .strip_prefix(b".")
            .or_else(|| rest.strip_prefix(b"%2e"))
            .or_else(|| rest.strip_prefix(b"%2E"))
        {
            rest = tail;
            dots += 1;
        }
        let ended = rest.is_empty()
            || separator_len(rest).is_some()
            || matches!(rest, [b';', ..] | [b'%', b'3', b'b' | b'B', ..]);
        if ended && (dots == 1 || dots == 2) {
            return true;
        }
        loop {
            if rest.is_empty() {
                return false;
            }
            if let Some(len) = separator_len(rest) {
                rest = rest.get(len..).unwrap_or_default();
                break;
            }
            rest = rest.get(1..).unwrap_or_default();
        }
    }
}

/// Whether `raw` (a path, percent-encoded as sent) starts with two separators as some server
/// could read them (`//`, `/%2F`, `/%5C`): a server that decodes before it routes, or takes `\`
/// for `/`, reads it as a network-path reference, whose first segment is a host name.
pub fn starts_with_two_separators(raw: &str) -> bool {
    separator_len(raw.as_bytes())
        .and_then(|len| raw.as_bytes().get(len..))
        .is_some_and(|rest| separator_len(rest).is_some())
}

/// The length of the path separator `bytes` start with, as some server could read one: `/`,
/// `\`, or either percent-encoded.
fn separator_len(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [b'/' | b'\\', ..] => Some(1),
        [b'%', b'2', b'f' | b'F', ..] | [b'%', b'5', b'c' | b'C', ..] => Some(3),
        _ => None,
    }
}

/// `pq` (a path and query) with every byte that RFC 3986 does not allow there percent-encoded:
/// non-ASCII bytes, space, `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`, controls, and a `%`
/// that does not start an escape; and `'` in the query, which WHATWG's parser encodes there
/// (not in the path, where RFC 3986 allows it and both parsers below leave it). An app may
/// send those raw (as a UTF-8 file name, say) and the outbound side signs what it sends; a
/// verifier that takes the target through a URL parser (WHATWG's, Python's `requests`, which
/// re-encodes a whole target with a stray `%` in it) sees them encoded, so the `@path` or
/// `@query` it rebuilds would not be the one signed. Encoded, both parsers leave them as they
/// are. `[` and `]` are encoded too: RFC 3986 allows them only around an IPv6 address, and a
/// verifier that checks the URL against it (the PyPI `http-message-signatures` package does)
/// refuses one that has them raw, while WHATWG's parser and `requests` leave `%5B` and `%5D`
/// as they are.
pub fn encode_for_uri(pq: &str) -> std::borrow::Cow<'_, str> {
    fn allowed(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?".contains(&b)
    }
    let bytes = pq.as_bytes();
    let query_at = pq.find('?').unwrap_or(pq.len());
    // A `%` stays only where it starts an escape; a `'` only in the path.
    let keep = |i: usize, b: u8| {
        allowed(b) || (b == b'%' && escaped(bytes, i).is_some()) || (b == b'\'' && i < query_at)
    };
    if bytes.iter().enumerate().all(|(i, &b)| keep(i, b)) {
        return std::borrow::Cow::Borrowed(pq);
    }
    use std::fmt::Write;
    let mut out = String::with_capacity(pq.len() + 16);
    for (i, &b) in bytes.iter().enumerate() {
        if keep(i, b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `raw` in the form RFC 3986 (6.2.2) calls equivalent: an escape of an unreserved character
/// (`%61` for `a`) decoded, the hex digits of every other escape in upper case. Two URLs that
/// differ only so name the same resource, which is how the outbound side tells which of
/// several peers behind one host a proxy-mode request is for.
pub fn equivalent_form(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('%') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, escaped(bytes, i)) {
            (b'%', Some(d)) if d.is_ascii_alphanumeric() || b"-._~".contains(&d) => {
                out.push(d);
                i += 3;
            }
            (b'%', Some(d)) => {
                out.extend_from_slice(format!("%{d:02X}").as_bytes());
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII bytes were written in place of escapes, so the text stays UTF-8.
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The byte the escape at `bytes[at]` stands for: `%` and exactly two hex digits (`u8`'s own
/// parser would take `%+1` too), else `None`.
fn escaped(bytes: &[u8], at: usize) -> Option<u8> {
    let hex = |b: &u8| char::from(*b).to_digit(16);
    match bytes.get(at..at + 3)? {
        [b'%', high, low] => u8::try_from(hex(high)? * 16 + hex(low)?).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_forms_decode_unreserved_escapes_only() {
        for (raw, form) in [
            ("/alice/x", "/alice/x"),
            ("/%61lice/x", "/alice/x"),
            ("/%41%7e%2D%2e%5F%30", "/A~-._0"),
            ("/a%2fb%3b", "/a%2Fb%3B"),
            ("/%c3%a9", "/%C3%A9"),
            ("/100%", "/100%"),
            ("/%zz%4", "/%zz%4"),
            ("/%+1x", "/%+1x"),
            ("/é%61", "/éa"),
        ] {
            assert_eq!(equivalent_form(raw), form, "{raw}");
        }
    }

    #[test]
    fn two_separators_at_the_start_are_seen_however_spelled() {
        for raw in [
            "//x", "/%2F/x", "/%2fx", "/%5C%5cx", "/\\x", "\\\\x", "%2F%2Fx",
        ] {
            assert!(starts_with_two_separators(raw), "{raw}");
        }
        for raw in ["/", "/x//y", "/x/%2F", "/%2", "/%25%2F", "", "/%2E/"] {
            assert!(!starts_with_two_separators(raw), "{raw}");
        }
    }

    #[test]
    fn dot_segments_are_seen_however_spelled() {
        for raw in [
            "/..",
            "/a/../b",
            "/a/./b",
            "/%2e%2E/x",
            "/a/.%2e",
            "/x/.",
            "/..;/admin",
            "/a/..;x=1/b",
            "/..%3Badmin",
            "/..%2fadmin",
            "/..%2Fadmin",
            "/x%2f..%2fy",
            "/..%5cadmin",
            "/x\\..\\y",
            "/x%5C.",
            "/.%2e;",
        ] {
            assert!(has_dot_segment(raw), "{raw}");
        }
        for raw in [
            "/",
            "",
            "/a/b",
            "/a..b/c",
            "/.well-known/x",
            "/...",
            "/%2e%2e%2e",
            "/a;../b",
            "/..a/b",
            "/a%2fb",
            "/%2e%2e%2e%2fx",
            "/x/..%41",
        ] {
            assert!(!has_dot_segment(raw), "{raw}");
        }
    }

    #[test]
    fn what_a_uri_cannot_hold_is_percent_encoded() {
        for (pq, encoded) in [
            ("/files/caf\u{e9}?q=\u{e9}", "/files/caf%C3%A9?q=%C3%A9"),
            ("/a b", "/a%20b"),
            ("/x{1}|^`\\\"<>", "/x%7B1%7D%7C%5E%60%5C%22%3C%3E"),
            ("/\u{7f}\u{1}", "/%7F%01"),
            ("/100%?q=O'Brien", "/100%25?q=O%27Brien"),
            ("/O'Brien/x?a='b'", "/O'Brien/x?a=%27b%27"),
            ("/p[0]?a[]=1", "/p%5B0%5D?a%5B%5D=1"),
            ("/a%2", "/a%252"),
            ("/a%zz%C3%A9", "/a%25zz%C3%A9"),
        ] {
            assert_eq!(encode_for_uri(pq), encoded, "{pq:?}");
        }
        // What a URI may hold stays as it is, and is not copied.
        for pq in [
            "/a/b?x=1&y=%2F;z=%5B0%5D",
            "/~user/!$&'()*+,;=:@",
            "/caf%c3%a9%2F",
            "",
        ] {
            assert!(
                matches!(encode_for_uri(pq), std::borrow::Cow::Borrowed(b) if b == pq),
                "{pq:?}"
            );
        }
    }

    #[test]
    fn normal_paths_decode() {
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("/api/x").unwrap(), "/api/x");
        assert_eq!(normalize("/api/x/").unwrap(), "/api/x/");
        assert_eq!(normalize("/files/caf%C3%A9").unwrap(), "/files/café");
        assert_eq!(normalize("/a%20b/file.txt").unwrap(), "/a b/file.txt");
        assert_eq!(normalize("/.well-known/x").unwrap(), "/.well-known/x");
        assert_eq!(normalize("/a..b").unwrap(), "/a..b");
        // Reserved and other characters may be encoded.
        assert_eq!(normalize("/q/a%2Bb%3Dc%40d").unwrap(), "/q/a+b=c@d");
        // What Java's URLEncoder and .NET's UrlEncode make of `~`.
        assert_eq!(normalize("/home/%7Euser").unwrap(), "/home/~user");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (raw, why) in [
            ("/api/../admin", ". or .."),
            ("/api/./x", ". or .."),
            ("/api/..", ". or .."),
            ("/api/%2e%2e/admin", "%2E"),
            ("/api/%2E./admin", "%2E"),
            ("/api/..%2fadmin", "%2F"),
            ("/api%2Fadmin", "%2F"),
            ("/api%5cadmin", "%5C"),
            ("/api\\..\\admin", "backslash"),
            ("//admin", "empty segment"),
            ("/api//x", "empty segment"),
            ("/api/%252e", "%25"),
            ("/api/%00", "%00"),
            ("/public/..;/admin", "path parameters"),
            ("/public/.;/x", "path parameters"),
            ("/secret;x/y", "path parameters"),
            ("/public/..%3B/admin", "%3B"),
            ("/public/..%3b/admin", "%3B"),
            ("/api/%zz", "two hex digits"),
            ("/api/%2", "two hex digits"),
            ("/api/%+1", "two hex digits"),
            ("/api/%ff", "UTF-8"),
            ("/%61pi/x", "%61; it needs no encoding"),
            ("/api/%41", "%41"),
            ("/api/%39", "%39"),
            ("/api/a%2db", "%2D"),
            ("/api/a%5Fb", "%5F"),
            ("*", "start with /"),
            ("", "start with /"),
        ] {
            let err = normalize(raw).unwrap_err().to_string();
            assert!(err.contains(why), "{raw}: {err}");
        }
    }
}
