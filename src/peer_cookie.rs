//! A peer's `Set-Cookie` as the app that called it in path mode must store it.
//!
//! In path mode every peer is reached at one origin, the outbound listener's
//! (`http://127.0.0.1:8480/peers/bob/...`, `.../peers/carol/...`), and cookies are kept by
//! origin host and path (RFC 6265 §5.3), not by port. Relayed unchanged, bob's
//! `Set-Cookie: session=...; Path=/` would be stored for the whole listener, and an app that
//! keeps cookies (a browser, a `requests.Session`, a Java `CookieManager`) would send bob's
//! session to carol on its next call there; and carol could set cookies the app then sends to
//! bob. So each cookie is scoped to the peer that set it, as a `Location` is rewritten
//! ([`crate::peer_location`]): its path, as the peer meant it on its own host, becomes the
//! `/peers/<peer>/...` path that reaches the same place through peergate, and a path outside the
//! peer URL's base path becomes the whole peer's, `/peers/<peer>/`. Its `Domain` is removed: on
//! the listener's host the cookie is the listener's alone (host-only), whatever domain the peer
//! named. Every cookie gets an explicit `Path`, since a client's default (the directory of the
//! request's path, RFC 6265 §5.1.4) is `/peers` for a call to the bare `/peers/bob`.
//!
//! A `__Host-` cookie must have `Path=/`, so a client that holds cookies to those rules drops
//! it rather than storing it for every peer. In proxy mode the app wrote the peer's own URL and
//! keeps its cookies by the peer's host; they are left as sent.

use crate::config::PeerUrl;

/// The attributes a cookie keeps (RFC 6265 §5.2; `SameSite`, `Partitioned` and `Priority` from
/// the drafts browsers follow), compared without regard to ASCII case and written in these
/// spellings. `Path` is rewritten and `Domain` removed; any other attribute goes too, however a
/// client would read it: Python's `http.cookiejar` strips a byte 0xA0 or 0x85 around a name as
/// whitespace, so `\xa0Path=/`, passed on as an unknown attribute, was a second `Path`, and
/// the one it kept.
const KEPT: [&str; 7] = [
    "Expires",
    "Max-Age",
    "Secure",
    "HttpOnly",
    "SameSite",
    "Partitioned",
    "Priority",
];

/// `set_cookie` (one `Set-Cookie` field's value) scoped to the peer it came from, or `None`
/// when it is no single cookie and is dropped.
///
/// `target` is the path and query the request had on the peer, base path included, for the
/// default path of a cookie without a usable `Path`; `prefix` is the `/peers/<peer>` path the
/// app called, without a trailing slash.
///
/// A comma anywhere but in an `Expires` date drops the cookie: no cookie value or attribute
/// holds one (RFC 6265 §4.1.1), and Java's `HttpCookie` reads a field with `Max-Age` and no
/// `Expires` as a list of cookies split at its commas, where only the last would have the
/// `Path` written here.
pub fn rescope(set_cookie: &[u8], peer: &PeerUrl, target: &str, prefix: &str) -> Option<Vec<u8>> {
    let mut parts = set_cookie.split(|&b| b == b';');
    let pair = parts.next().unwrap_or_default().trim_ascii();
    // RFC 6265 §5.2 step 2: a pair without `=` is no cookie; curl and Java took
    // `;a=1; Max-Age=9` for a cookie named `Max-Age`.
    if pair.contains(&b',') || !pair.contains(&b'=') {
        return None;
    }
    let mut out = Vec::with_capacity(set_cookie.len() + prefix.len() + 8);
    out.extend_from_slice(pair);
    // RFC 6265 §5.3 step 7: the last `Path` attribute counts.
    let mut path: Option<&[u8]> = None;
    for attribute in parts {
        let trimmed = attribute.trim_ascii();
        let (name, value) = match trimmed.iter().position(|&b| b == b'=') {
            Some(at) => (
                trimmed.get(..at).unwrap_or_default().trim_ascii(),
                trimmed.get(at + 1..).unwrap_or_default().trim_ascii(),
            ),
            None => (trimmed, &b""[..]),
        };
        if name.eq_ignore_ascii_case(b"path") {
            path = Some(value);
            continue;
        }
        let Some(kept) = KEPT
            .iter()
            .find(|kept| name.eq_ignore_ascii_case(kept.as_bytes()))
        else {
            continue;
        };
        let expires = *kept == "Expires";
        if value.contains(&b',') && !(expires && one_date_comma(value)) {
            return None;
        }
        // Written as `Name=value`, whatever spacing came: Java's `HttpCookie` looks for the
        // text `expires=` to know that a comma in the field is a date's and not a list's.
        out.extend_from_slice(b"; ");
        out.extend_from_slice(kept.as_bytes());
        if trimmed.contains(&b'=') {
            out.push(b'=');
            out.extend_from_slice(value);
        }
    }
    // §5.2.4: a path that does not begin with `/` is the default one.
    let on_peer = match path.and_then(|p| std::str::from_utf8(p).ok()) {
        Some(p) if p.starts_with('/') => p,
        _ => default_path(target),
    };
    out.extend_from_slice(b"; Path=");
    out.extend_from_slice(prefix.as_bytes());
    let rest = on_peer
        .strip_prefix(peer.base_path.as_str())
        // `/base2` is not under `/base`; a path outside the base is the whole peer's.
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or_default();
    // The peer's whole space is `/peers/bob/`, with its slash: RFC 6265's path-match would
    // take `/peers/bob` for it too without matching `/peers/bobby`, but Java's `CookieManager`
    // matches a path as a plain prefix, and sent bob's cookies to bobby.
    if rest.is_empty() {
        out.push(b'/');
    } else {
        out.extend_from_slice(rest.as_bytes());
    }
    Some(out)
}

/// Whether `date` has its one comma where an HTTP date has it (RFC 9110 §5.6.7, and RFC 850's
/// form): right after the day's name, its first word; and nothing after it that a date does
/// not hold (a `=` would begin another cookie for a client that splits at the comma).
fn one_date_comma(date: &[u8]) -> bool {
    let day = date.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let (Some(b','), Some(rest)) = (date.get(day), date.get(day + 1..)) else {
        return false;
    };
    day > 0
        && rest
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'-' | b':'))
}

/// RFC 6265 §5.1.4's default path of a cookie set in answer to `target`: its path up to, not
/// including, the last `/`, or `/`.
fn default_path(target: &str) -> &str {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(at) => path.get(..at).unwrap_or("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(base_path: &str) -> PeerUrl {
        PeerUrl {
            https: true,
            host: "bob.example".into(),
            port: 443,
            base_path: base_path.into(),
        }
    }

    /// Whether `set_cookie`, answering `/` on a peer without a base path, is dropped.
    fn dropped(set_cookie: &str) -> bool {
        rescope(set_cookie.as_bytes(), &peer(""), "/", "/peers/bob").is_none()
    }

    fn seen(base_path: &str, target: &str, set_cookie: &str) -> String {
        let out = rescope(
            set_cookie.as_bytes(),
            &peer(base_path),
            target,
            "/peers/bob",
        );
        String::from_utf8(out.expect("kept")).unwrap()
    }

    #[test]
    fn a_path_on_the_peer_becomes_its_path_through_peergate() {
        assert_eq!(
            seen("", "/login", "sid=1; Path=/"),
            "sid=1; Path=/peers/bob/"
        );
        assert_eq!(
            seen("", "/login", "sid=1; Path=/app; HttpOnly"),
            "sid=1; HttpOnly; Path=/peers/bob/app"
        );
        // The last Path counts; attribute names in any case.
        assert_eq!(
            seen("", "/", "sid=1; path=/a; PATH=/b"),
            "sid=1; Path=/peers/bob/b"
        );
    }

    #[test]
    fn the_peers_whole_space_ends_with_a_slash() {
        // Java's CookieManager matches paths as plain prefixes: `/peers/bob` would take in
        // `/peers/bobby`.
        assert_eq!(seen("", "/", "sid=1; Path=/"), "sid=1; Path=/peers/bob/");
        assert_eq!(
            seen("/base", "/base", "sid=1; Path=/base"),
            "sid=1; Path=/peers/bob/"
        );
        assert_eq!(
            seen("", "/x", "sid=1; secure; HTTPONLY; samesite=None"),
            "sid=1; Secure; HttpOnly; SameSite=None; Path=/peers/bob/"
        );
    }

    #[test]
    fn the_domain_is_removed_and_other_attributes_kept() {
        assert_eq!(
            seen(
                "",
                "/x",
                "sid=abc; Domain=.example; Secure; HttpOnly; SameSite=Lax; Max-Age=60"
            ),
            "sid=abc; Secure; HttpOnly; SameSite=Lax; Max-Age=60; Path=/peers/bob/"
        );
        assert_eq!(
            seen("", "/x", "sid=abc;domain = evil.example;Path=/"),
            "sid=abc; Path=/peers/bob/"
        );
    }

    #[test]
    fn without_a_usable_path_the_default_one_is_scoped() {
        assert_eq!(seen("", "/login", "sid=1"), "sid=1; Path=/peers/bob/");
        assert_eq!(
            seen("", "/a/b/login?next=/x/y", "sid=1"),
            "sid=1; Path=/peers/bob/a/b"
        );
        assert_eq!(
            seen("", "/a/b", "sid=1; Path=relative"),
            "sid=1; Path=/peers/bob/a"
        );
        assert_eq!(seen("", "/a/b", "sid=1; Path="), "sid=1; Path=/peers/bob/a");
    }

    #[test]
    fn the_base_path_is_taken_off_and_a_path_outside_it_is_the_whole_peer() {
        assert_eq!(
            seen("/base", "/base/x", "sid=1; Path=/base/app"),
            "sid=1; Path=/peers/bob/app"
        );
        assert_eq!(
            seen("/base", "/base/x", "sid=1; Path=/base"),
            "sid=1; Path=/peers/bob/"
        );
        for outside in ["/", "/other", "/base2"] {
            assert_eq!(
                seen("/base", "/base/x", &format!("sid=1; Path={outside}")),
                "sid=1; Path=/peers/bob/",
                "{outside}"
            );
        }
        assert_eq!(
            seen("/base", "/base/d/x", "sid=1"),
            "sid=1; Path=/peers/bob/d"
        );
    }

    #[test]
    fn odd_values_stay_within_the_peer() {
        // No name=value pair, empty attributes, bytes that are not UTF-8.
        for pairless in ["", ";a=1; Max-Age=9", "name; Path=/"] {
            assert!(dropped(pairless), "{pairless}");
        }
        assert_eq!(seen("", "/", "a=b;;; ;"), "a=b; Path=/peers/bob/");
        let out = rescope(b"a=\xff; Path=/\xfe", &peer(""), "/x/y", "/peers/bob");
        assert_eq!(out.unwrap(), b"a=\xff; Path=/peers/bob/x");
    }

    #[test]
    fn attributes_other_than_the_known_ones_are_dropped() {
        // A client that takes 0xA0 or 0x85 for whitespace reads these as `Path`.
        for smuggled in [
            &b"sid=1; \xa0Path=/"[..],
            b"sid=1; Path\xa0=/",
            b"sid=1; \x85Path=/",
            b"sid=1; Path\x85=/peers/dave",
        ] {
            let out = rescope(smuggled, &peer(""), "/x", "/peers/bob").unwrap();
            assert_eq!(out, b"sid=1; Path=/peers/bob/", "{smuggled:?}");
        }
        assert_eq!(
            seen(
                "",
                "/x",
                "sid=1; Version=1; Comment=x; Priority=High; Partitioned"
            ),
            "sid=1; Priority=High; Partitioned; Path=/peers/bob/"
        );
    }

    #[test]
    fn a_field_that_reads_as_several_cookies_is_dropped() {
        for listed in [
            "a=1; Max-Age=60, b=2; Path=/",
            "a=1, b=2",
            "a=1; SameSite=Lax, b=2",
        ] {
            assert!(dropped(listed), "{listed}");
        }
        // Nor one with a comma elsewhere in an `Expires`, or spaced so that Java does not
        // see `expires=` and splits it.
        for listed in [
            "sid=X; Max-Age=999; Expires =Wed, x=1",
            "sid=X; Expires=Wed, 21 Oct 2037, x=1",
            "sid=X; Expires=, x=1",
        ] {
            assert!(dropped(listed), "{listed}");
        }
        // The comma of a date is no list, and the attribute is written plainly.
        assert_eq!(
            seen("", "/x", "a=1; expires =Wed, 21 Oct 2037 07:28:00 GMT"),
            "a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/peers/bob/"
        );
        assert_eq!(
            seen("", "/x", "a=1; Expires=Wednesday, 21-Oct-37 07:28:00 GMT"),
            "a=1; Expires=Wednesday, 21-Oct-37 07:28:00 GMT; Path=/peers/bob/"
        );
        assert_eq!(
            seen(
                "",
                "/x",
                "a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=60"
            ),
            "a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=60; Path=/peers/bob/"
        );
    }
}
