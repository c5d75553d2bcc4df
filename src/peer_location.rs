//! A peer's `Location` as the app that called it in path mode must read it.
//!
//! The app called `/peers/bob/x` on its outbound listener, so it resolves a `Location` from bob
//! against that address. Relayed unchanged, bob's `Location: /peers/carol/y` (which on bob's
//! host is just a path) would send an app that follows redirects to `/peers/carol/y` on its
//! own listener: a request signed as this installation, to another peer, chosen by bob. And
//! bob's `Location: /base/z` (a page of bob's, under its URL's base path) would leave the app
//! at `/base/z` on its own listener, which is no route.
//!
//! So a `Location` is resolved as the peer meant it, against the URL the request had on the
//! peer, with the WHATWG URL parser that browsers and most HTTP clients use (it also resolves
//! `..` and `%2e` segments). Under the peer URL's base path, it becomes the
//! `/peers/<peer>/...` path that reaches the same place through peergate, as nginx's
//! `proxy_redirect default` does. Anywhere else on the peer's host, it becomes that absolute
//! URL, so the app never reads it as a path on its own listener. A `Location` on another host
//! is left as it is: following it calls that host directly, unsigned.
//!
//! An app that used the outbound listener as its HTTP proxy wrote the peer's own URL, so it
//! resolves a `Location` against it already; its answers are left alone.

use url::Url;

use crate::config::PeerUrl;

/// What becomes of a peer's `Location`.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// It reads the same from the app's side.
    Keep,
    /// The app must be sent this instead.
    Replace(String),
    /// It cannot be resolved (a relative reference the URL parser refuses): an app's client
    /// might still read it as a path on the app's listener, so the app gets no `Location`.
    Remove,
}

/// What the app should see of `location`, as its peer sent it.
///
/// `prefix` is the path that stands for the peer URL in the app's request (`/peers/bob`, as the
/// app wrote it); `target` the path and query the request had on the peer, base path included.
pub fn rewrite(location: &str, peer: &PeerUrl, target: &str, prefix: &str) -> Rewrite {
    let scheme = peer.scheme();
    let Ok(request) = Url::parse(&format!("{scheme}://{}{target}", peer.authority())) else {
        // The target was sent on the wire, so it parses; if not, nothing can be resolved.
        return Rewrite::Remove;
    };
    let Ok(resolved) = request.join(location) else {
        return if is_absolute(location) {
            Rewrite::Keep
        } else {
            Rewrite::Remove
        };
    };
    let same_origin = resolved.scheme() == scheme
        && resolved.host_str().map(|h| h.trim_matches(['[', ']'])) == Some(peer.host.as_str())
        && resolved.port_or_known_default() == Some(peer.port)
        && resolved.username().is_empty()
        && resolved.password().is_none();
    if !same_origin {
        // Another host: already absolute, or a network-path reference (`//other/x`) that the
        // app would resolve against its listener's scheme instead of the peer's.
        return if is_absolute(location) {
            Rewrite::Keep
        } else {
            Rewrite::Replace(resolved.to_string())
        };
    }
    let path = resolved.path();
    let rest = match path.strip_prefix(peer.base_path.as_str()) {
        // `/base2` is not under `/base`.
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return Rewrite::Replace(resolved.to_string()),
    };
    let mut out = String::with_capacity(prefix.len() + rest.len() + 16);
    out.push_str(prefix);
    out.push_str(rest);
    if let Some(query) = resolved.query() {
        out.push('?');
        out.push_str(query);
    }
    if let Some(fragment) = resolved.fragment() {
        out.push('#');
        out.push_str(fragment);
    }
    if out == location {
        Rewrite::Keep
    } else {
        Rewrite::Replace(out)
    }
}

/// Whether `reference` starts with a scheme (RFC 3986 §3.1), so that no base changes it.
fn is_absolute(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(url: &str) -> PeerUrl {
        PeerUrl::parse(url).unwrap()
    }

    /// What the app sees for `location`, from a peer at `url` asked for `target`, called as
    /// `/peers/bob`.
    fn seen(url: &str, target: &str, location: &str) -> String {
        match rewrite(location, &peer(url), target, "/peers/bob") {
            Rewrite::Keep => location.to_string(),
            Rewrite::Replace(to) => to,
            Rewrite::Remove => panic!("{location} removed"),
        }
    }

    #[test]
    fn paths_on_the_peer_become_paths_through_peergate() {
        let bob = "https://bob.example:8443";
        for (location, expected) in [
            ("/login", "/peers/bob/login"),
            ("/peers/carol/x", "/peers/bob/peers/carol/x"),
            ("https://bob.example:8443/a?b=1#c", "/peers/bob/a?b=1#c"),
            ("HTTPS://BOB.EXAMPLE:8443/a", "/peers/bob/a"),
            ("next", "/peers/bob/dir/next"),
            ("../up", "/peers/bob/up"),
            ("?page=2", "/peers/bob/dir/item?page=2"),
            ("//bob.example:8443/n", "/peers/bob/n"),
            ("/a/%2e%2e/b", "/peers/bob/b"),
            ("/../../x", "/peers/bob/x"),
        ] {
            assert_eq!(seen(bob, "/dir/item?q=1", location), expected, "{location}");
        }
        // The default port, spelled or not.
        assert_eq!(
            seen("https://bob.example", "/", "https://bob.example:443/x"),
            "/peers/bob/x"
        );
    }

    #[test]
    fn the_base_path_is_taken_off_and_what_lies_outside_it_is_absolute() {
        let bob = "https://bob.example/base";
        for (location, expected) in [
            ("/base/x", "/peers/bob/x"),
            ("/base", "/peers/bob"),
            ("/base/", "/peers/bob/"),
            ("x", "/peers/bob/dir/x"),
            ("/other", "https://bob.example/other"),
            ("/base2/x", "https://bob.example/base2/x"),
            ("/peers/carol/x", "https://bob.example/peers/carol/x"),
            ("../../x", "https://bob.example/x"),
            ("/base/%2E%2E/admin", "https://bob.example/admin"),
        ] {
            assert_eq!(
                seen(bob, "/base/dir/item", location),
                expected,
                "{location}"
            );
        }
    }

    #[test]
    fn other_hosts_are_left_as_sent_unless_the_app_would_misread_them() {
        let bob = "https://bob.example:8443";
        for location in [
            "https://carol.example/x",
            "https://bob.example/x",
            "http://bob.example:8443/x",
            "https://user@bob.example:8443/x",
            "mailto:someone@example.org",
        ] {
            assert_eq!(
                rewrite(location, &peer(bob), "/", "/peers/bob"),
                Rewrite::Keep,
                "{location}"
            );
        }
        assert_eq!(
            seen(bob, "/", "//carol.example/x"),
            "https://carol.example/x"
        );
    }

    #[test]
    fn a_location_that_does_not_parse_is_kept_when_absolute_and_removed_when_relative() {
        let bob = peer("https://bob.example");
        assert_eq!(
            rewrite("http://[::1", &bob, "/", "/peers/bob"),
            Rewrite::Keep
        );
        // No client can take it for another host, but a lax one could for a path.
        assert_eq!(
            rewrite("//[::1/peers/carol", &bob, "/", "/peers/bob"),
            Rewrite::Remove
        );
    }

    #[test]
    fn ip_literal_peers() {
        assert_eq!(
            seen("https://[::1]:8443", "/", "https://[::1]:8443/x"),
            "/peers/bob/x"
        );
        assert_eq!(seen("https://127.0.0.1:8443", "/", "/x"), "/peers/bob/x");
    }
}
