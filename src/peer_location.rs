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
//! A URL that leads to another peer on the allowlist is removed: an app that sends its calls
//! through the outbound listener as its HTTP proxy would follow it there, signed. So is one
//! that leads back to the app's own machine (`localhost`, a loopback or unspecified address, or
//! the outbound listener's address): from there `http://127.0.0.1:8480/peers/carol/x` reaches
//! carol, signed, through the listener's default address, and any other URL there is one of
//! the app's local services, which a peer elsewhere has no business sending it to. A peer that
//! itself runs on this machine may still send the app to its other local addresses, but never
//! to the listener's port.
//!
//! An app that used the outbound listener as its HTTP proxy wrote the peer's own URL and
//! resolves a `Location` against it; so does peergate, and hands it the result spelled whole.

use std::net::{IpAddr, SocketAddr};

use url::Url;

use crate::config::PeerUrl;

/// What becomes of a peer's `Location`.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// It reads the same from the app's side.
    Keep,
    /// The app must be sent this instead.
    Replace(String),
    /// The app gets no `Location`: it leads to another peer, or it does not parse as a URL
    /// (no client follows such a one the same way, and a lax one might read it as a path on
    /// the app's listener).
    Remove,
}

/// How the app reached the peer, which is what it resolves a `Location` against.
#[derive(Debug, Clone)]
pub enum AppSide {
    /// Path mode: `/peers/<peer>` as the app wrote it stands for the peer's URL.
    Path { prefix: String },
    /// Proxy mode: the absolute URL the app wrote (`http://bob.example/x`).
    Proxy { url: String },
}

/// What the app should see of `location`, as its peer sent it.
///
/// `target` is the path and query the request had on the peer, base path included;
/// `listener` is the outbound listener's address; `another_peer` tells whether a URL leads to
/// a peer other than the one called, were the app to send it through the outbound listener as
/// its HTTP proxy.
pub fn rewrite(
    location: &str,
    peer: &PeerUrl,
    target: &str,
    app: &AppSide,
    listener: SocketAddr,
    another_peer: impl Fn(&Url) -> bool,
) -> Rewrite {
    let scheme = peer.scheme();
    // The URL the app's client resolves against: in proxy mode the one it wrote; in path mode
    // the request's URL on the peer, since the `/peers/<peer>` path stands for it.
    let (base, prefix) = match app {
        AppSide::Proxy { url } => (Url::parse(url), None),
        AppSide::Path { prefix } => (
            Url::parse(&format!("{scheme}://{}{target}", peer.authority())),
            Some(prefix),
        ),
    };
    // A base that does not parse (it went on the wire, so it should) resolves nothing.
    let Some(resolved) = base.ok().and_then(|base| base.join(location).ok()) else {
        return Rewrite::Remove;
    };
    let same_origin = resolved.scheme() == scheme
        && resolved.host_str().map(|h| h.trim_matches(['[', ']'])) == Some(peer.host.as_str())
        && resolved.port_or_known_default() == Some(peer.port)
        && resolved.username().is_empty()
        && resolved.password().is_none();
    let under_base = resolved
        .path()
        .strip_prefix(peer.base_path.as_str())
        // `/base2` is not under `/base`.
        .filter(|rest| same_origin && (rest.is_empty() || rest.starts_with('/')));
    let (Some(prefix), Some(rest)) = (prefix, under_base) else {
        // Another host, elsewhere on the peer's, or any place in proxy mode: an absolute URL,
        // in the parser's own spelling (`scheme://host/...`), which every client reads alike.
        // As sent it might not be: `http:/peers/carol` from an `https` peer names host `peers`
        // to the parser, but an app's WHATWG client resolves it against its own `http://`
        // listener as the path `/peers/carol` there; `//carol/x` takes the app's scheme
        // instead of the peer's. An app that sends its calls through the outbound listener as
        // its HTTP proxy would reach another peer with such a URL, signed: that one is
        // removed, and so is one back to the app's own machine.
        if another_peer(&resolved) || (!same_origin && back_home(&resolved, peer, listener)) {
            return Rewrite::Remove;
        }
        return canonical(resolved.to_string(), location);
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

/// Whether `to` leads to the app's own machine where a peer must not send it: the outbound
/// listener's port there (a signed call to any peer), or any port when the peer itself lives
/// elsewhere. `to` is in the parser's spelling, so `http://2130706433/` and `http://127.1/`
/// have come out as `127.0.0.1` already.
fn back_home(to: &Url, peer: &PeerUrl, listener: SocketAddr) -> bool {
    let Some(host) = to.host_str() else {
        return false;
    };
    let local = this_machine(host) || ip(host).is_some_and(|ip| ip == listener.ip());
    local && (to.port_or_known_default() == Some(listener.port()) || !this_machine(&peer.host))
}

/// `localhost` and its subdomains (RFC 6761), a loopback address or the unspecified one
/// (which Linux connects to as the loopback).
fn this_machine(host: &str) -> bool {
    match ip(host) {
        Some(IpAddr::V4(v4)) => v4.is_loopback() || v4.is_unspecified(),
        Some(IpAddr::V6(v6)) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
        }
        None => {
            let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

/// `host` as an address, with or without the brackets of an IPv6 literal.
fn ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
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

    /// The outbound listener's default address.
    const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8480);

    fn path_mode() -> AppSide {
        AppSide::Path {
            prefix: "/peers/bob".into(),
        }
    }

    /// What the app sees for `location`, from a peer at `url` asked for `target`, called as
    /// `/peers/bob`.
    fn seen(url: &str, target: &str, location: &str) -> String {
        match rewrite(location, &peer(url), target, &path_mode(), LISTENER, |_| {
            false
        }) {
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
                rewrite(location, &peer(bob), "/", &path_mode(), LISTENER, |_| false),
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
                rewrite(location, &bob, "/", &path_mode(), LISTENER, |_| false),
                Rewrite::Remove,
                "{location}"
            );
        }
    }

    /// Python's resolver (requests, urllib) reads `http:///peers/carol/y` against the app's
    /// `http://` listener as a path there; the parser reads host `peers` (an audit's finding).
    #[test]
    fn three_slashes_from_a_plain_http_peer_name_a_host() {
        let bob = "http://bob.example:8080";
        assert_eq!(
            seen(bob, "/", "http:///peers/carol/y"),
            "http://peers/carol/y"
        );
        assert_eq!(
            seen(bob, "/", "HtTp:\t///peers/carol/y"),
            "http://peers/carol/y"
        );
    }

    #[test]
    fn a_url_that_leads_to_another_peer_is_removed() {
        let bob = peer("https://bob.example/base");
        let carol = |u: &Url| u.host_str() == Some("carol.example");
        for location in [
            "https://carol.example/x",
            "http://carol.example/x",
            "//carol.example/x",
            "http:///carol.example/x",
            "HTTP:\\\\carol.example/x",
        ] {
            assert_eq!(
                rewrite(location, &bob, "/base/a", &path_mode(), LISTENER, carol),
                Rewrite::Remove,
                "{location}"
            );
        }
        // Paths on bob, under its base path or not, are still bob's.
        assert_eq!(
            rewrite("/x", &bob, "/base/a", &path_mode(), LISTENER, carol),
            Rewrite::Replace("https://bob.example/x".into())
        );
        assert_eq!(
            rewrite("/base/x", &bob, "/base/a", &path_mode(), LISTENER, carol),
            Rewrite::Replace("/peers/bob/x".into())
        );
    }

    #[test]
    fn a_url_back_to_the_apps_own_machine_is_removed() {
        let bob = peer("https://bob.example");
        let from_bob = |location: &str, listener: SocketAddr| {
            rewrite(location, &bob, "/", &path_mode(), listener, |_| false)
        };
        for location in [
            // The outbound listener, however the parser lets it be spelled.
            "http://127.0.0.1:8480/peers/carol/x",
            "http://127.1:8480/peers/carol/x",
            "http://2130706433:8480/peers/carol/x",
            "http://0x7f.0.0.1:8480/peers/carol/x",
            "http://LocalHost:8480/peers/carol/x",
            "http://localhost.:8480/x",
            "http://[::ffff:127.0.0.1]:8480/x",
            // The app's other local services.
            "http://127.0.0.1:6379/",
            "https://localhost/admin",
            "http://a.localhost/",
            "http://[::1]:9464/metrics",
            "http://0.0.0.0:3000/",
            "http://[::]/",
        ] {
            assert_eq!(from_bob(location, LISTENER), Rewrite::Remove, "{location}");
        }
        // A listener on another address: its own address is this machine too.
        let listener: SocketAddr = "10.0.0.5:9000".parse().unwrap();
        assert_eq!(
            from_bob("http://10.0.0.5:9000/peers/carol", listener),
            Rewrite::Remove
        );
        assert_eq!(from_bob("http://10.0.0.6:9000/x", listener), Rewrite::Keep);
        assert_eq!(
            from_bob("http://localhost.example/x", LISTENER),
            Rewrite::Keep
        );
    }

    #[test]
    fn a_peer_on_this_machine_may_send_the_app_to_it_but_not_to_the_listener() {
        let bob = peer("https://127.0.0.1:8443");
        let from_bob =
            |location: &str| rewrite(location, &bob, "/", &path_mode(), LISTENER, |_| false);
        assert_eq!(
            from_bob("https://127.0.0.1:8443/x"),
            Rewrite::Replace("/peers/bob/x".into())
        );
        assert_eq!(from_bob("http://localhost:3000/x"), Rewrite::Keep);
        assert_eq!(
            from_bob("http://localhost:8480/peers/carol/x"),
            Rewrite::Remove
        );
        assert_eq!(from_bob("http://127.0.0.1:8480/x"), Rewrite::Remove);
    }

    #[test]
    fn in_proxy_mode_a_location_is_resolved_against_the_url_the_app_wrote() {
        let bob = peer("https://bob.example");
        let app = AppSide::Proxy {
            url: "http://bob.example/dir/a?q=1".into(),
        };
        let carol = |u: &Url| u.host_str() == Some("carol.example");
        for (location, expected) in [
            (
                "/peers/carol/x",
                Rewrite::Replace("http://bob.example/peers/carol/x".into()),
            ),
            (
                "next",
                Rewrite::Replace("http://bob.example/dir/next".into()),
            ),
            ("http://bob.example/x", Rewrite::Keep),
            ("https://other.example/x", Rewrite::Keep),
            (
                "http:/peers/carol",
                Rewrite::Replace("http://bob.example/peers/carol".into()),
            ),
            ("http://carol.example/x", Rewrite::Remove),
            ("http:///carol.example/x", Rewrite::Remove),
            ("//carol.example/x", Rewrite::Remove),
            ("http://[::1", Rewrite::Remove),
        ] {
            assert_eq!(
                rewrite(location, &bob, "/dir/a?q=1", &app, LISTENER, carol),
                expected,
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
