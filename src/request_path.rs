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
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
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

/// Whether `raw` (a path, percent-encoded as sent) has a `.` or `..` segment, spelled plainly or
/// with `%2e`: the outbound side refuses those, as resolving them on the peer's side could leave
/// the base path of the peer's URL.
pub fn has_dot_segment(raw: &str) -> bool {
    raw.split('/').any(|segment| {
        // Counts the dots of a segment made of dots only; on every request, so no allocation.
        let mut rest = segment.as_bytes();
        let mut dots = 0;
        while !rest.is_empty() {
            rest = match rest {
                [b'.', tail @ ..] => tail,
                [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
                _ => return false,
            };
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_seen_however_spelled() {
        for raw in ["/..", "/a/../b", "/a/./b", "/%2e%2E/x", "/a/.%2e", "/x/."] {
            assert!(has_dot_segment(raw), "{raw}");
        }
        for raw in [
            "/",
            "/a/b",
            "/a..b/c",
            "/.well-known/x",
            "/...",
            "/%2e%2e%2e",
        ] {
            assert!(!has_dot_segment(raw), "{raw}");
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
