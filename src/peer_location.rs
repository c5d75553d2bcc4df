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
//! keeps its meaning, in the parser's spelling (`scheme://host/...`), which every client reads
//! as that host: following it calls that host directly, unsigned. Whatever the app gets is
//! thus an absolute path under `/peers/<peer>` or a URL with a host: no reading of it leads
//! elsewhere on the app's listener.
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
    /// It does not parse as a URL: no client follows it the same way, and a lax one might
    /// read it as a path on the app's listener, so the app gets no `Location`.
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
        return Rewrite::Remove;
    };
    let same_origin = resolved.scheme() == scheme
        && resolved.host_str().map(|h| h.trim_matches(['[', ']'])) == Some(peer.host.as_str())
        && resolved.port_or_known_default() == Some(peer.port)
        && resolved.username().is_empty()
        && resolved.password().is_none();
    if !same_origin {
        // Another host, in the parser's own spelling: `scheme://host/...`, which every client
        // reads alike. As sent it might not be: `http:/peers/carol` from an `https` peer names
        // host `peers` to the parser, but an app's WHATWG client resolves it against its
        // `http://` listener as the path `/peers/carol` there; `//carol/x` takes the app's
        // scheme instead of the peer's.
        return canonical(resolved.to_string(), location);
    }
    let path = resolved.path();
    let rest = match path.strip_prefix(peer.base_path.as_str()) {
        // `/base2` is not under `/base`.
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return canonical(resolved.to_string(), location),
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
    canonical(out, location)
}

/// `Keep` when `sent` is already spelled as `canonical`.
fn canonical(canonical: String, sent: &str) -> Rewrite {
    if canonical == sent {
        Rewrite::Keep
    } else {
        Rewrite::Replace(canonical)
    }
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
        // Spellings that some client reads as a path on the app's `http://` listener.
        for (location, expected) in [
            ("http:/peers/carol/x", "http://peers/carol/x"),
            ("http:peers/carol/x", "http://peers/carol/x"),
            ("HTTP://Carol.Example/x", "http://carol.example/x"),
            ("http:\\\\carol.example\\x", "http://carol.example/x"),
        ] {
            assert_eq!(seen(bob, "/", location), expected, "{location}");
        }
    }

    #[test]
    fn a_location_that_does_not_parse_is_removed() {
        let bob = peer("https://bob.example");
        for location in [
            "http://[::1",
            "//[::1/peers/carol",
            "http:[/peers/carol",
            "https://a b/",
        ] {
            assert_eq!(
                rewrite(location, &bob, "/", "/peers/bob"),
                Rewrite::Remove,
                "{location}"
            );
        }
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
