//! Who may use the outbound listener: the local app, not a web page in a browser beside it.
//! The admin listener applies the same rules: on loopback its metrics name every peer and
//! their traffic, which a rebound page could read too.
//!
//! Whatever reaches the outbound listener is signed with this installation's key. It listens on
//! loopback, but a browser on the same machine reaches loopback too, on behalf of any web page:
//! a form on `https://evil.example` can POST to `http://127.0.0.1:8480/peers/bob/…` (no CORS
//! preflight for a form), and a page whose name is rebound to 127.0.0.1 (DNS rebinding) can
//! even read the answers, the peer directory included. Apps calling their peers send neither an
//! `Origin` nor `Sec-Fetch-Site`, and they reach a loopback listener by an address or
//! `localhost`; a browser gives itself away by one of the three:
//!
//! * `Sec-Fetch-Site` other than `same-origin` or `none` (a request made by another site's
//!   page; browsers send it to loopback addresses, which count as trustworthy);
//! * an `Origin` that is not the listener's own (`Host`): a cross-origin request, from browsers
//!   that send no `Sec-Fetch-*` too;
//! * on a loopback listener (`outbound.allow_remote_clients: false`), a `Host` that is a name
//!   other than `localhost`: the name of a rebound page, as no other name should lead there.
//!   Absolute-form requests (the app's `HTTP_PROXY`) carry the peer's host instead and are
//!   judged by the allowlist, and a browser never sends one to a page's own server.

use http::HeaderMap;

use crate::problem::{Code, Problem};

/// The listener a request came to, for the refusal's words.
#[derive(Clone, Copy, Debug)]
pub enum Listener {
    Outbound,
    Admin,
}

impl Listener {
    /// Who the listener answers, and why a page has no business there.
    fn purpose(self) -> (&'static str, &'static str) {
        match self {
            Listener::Outbound => (
                "the outbound listener answers apps on this machine",
                "the outbound listener signs requests for apps, not for pages a browser loads",
            ),
            Listener::Admin => (
                "the admin listener answers Prometheus and health checks on this machine",
                "the admin listener serves metrics and health checks, not pages a browser loads",
            ),
        }
    }
}

/// `Err` with the refusal when the request comes from a web page rather than from an app.
/// `loopback_only` is true when the listener serves this machine only (the default).
pub fn check(
    headers: &HeaderMap,
    absolute_form: bool,
    loopback_only: bool,
    listener: Listener,
) -> Result<(), Problem> {
    // On every request: nothing here allocates unless it refuses. A value that is not visible
    // ASCII matches nothing local (U+FFFD is no host), so it is refused.
    let header = |name: http::header::HeaderName| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}").trim())
    };
    let (answers, not_for_pages) = listener.purpose();
    let host = header(http::header::HOST);
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if !site.eq_ignore_ascii_case(b"same-origin") && !site.eq_ignore_ascii_case(b"none") {
            return Err(cross_origin(format!(
                "Sec-Fetch-Site is {:?}: a web page in a browser made this request; {not_for_pages}",
                String::from_utf8_lossy(site)
            )));
        }
    }
    if let Some(origin) = header(http::header::ORIGIN) {
        let same = host.is_some_and(|host| {
            origin_authority(origin).is_some_and(|a| a.eq_ignore_ascii_case(host))
        });
        if !same {
            return Err(cross_origin(format!(
                "Origin {origin:?} is another site: a web page in a browser made this request; {not_for_pages}"
            )));
        }
    }
    if loopback_only && !absolute_form {
        if let Some(host) = host {
            if !is_local_host(host) {
                return Err(Problem::new(
                    403,
                    Code::ForeignHost,
                    "Not a local address",
                    format!(
                        "Host {host:?} is a name other than localhost; {answers}, \
which reach it as 127.0.0.1, [::1] or localhost (a browser page whose name points here would be a DNS rebinding attack)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn cross_origin(detail: String) -> Problem {
    Problem::new(403, Code::CrossOrigin, "Request from a web page", detail)
}

/// `host[:port]` of a serialized origin (`scheme://host[:port]`), with the scheme's default port
/// left out as browsers leave it out of `Host`. `None` for `null` and anything else opaque.
fn origin_authority(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        ":80"
    } else if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else {
        return Some(authority);
    };
    Some(authority.strip_suffix(default_port).unwrap_or(authority))
}

/// An IP address (any: a browser that connects to a literal address resolved no name), or
/// `localhost` and names below it, which resolve to loopback and nowhere else (RFC 6761).
fn is_local_host(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        return rest.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok()
                && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port))
        });
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return false,
        None => host,
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    // `localhost` or a name ending in `.localhost`, in any case, with or without the root dot.
    let name = name.strip_suffix('.').unwrap_or(name);
    let split = name.len().checked_sub("localhost".len());
    split.is_some_and(|at| {
        name.get(at..)
            .is_some_and(|last| last.eq_ignore_ascii_case("localhost"))
            && name
                .get(..at)
                .is_some_and(|before| before.is_empty() || before.ends_with('.'))
    })
}

/// A port number: digits only, at most 65535.
fn is_port(port: &str) -> bool {
    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/peers/bob/x", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn reason(
        headers: &[(&str, &str)],
        absolute: bool,
        loopback_only: bool,
    ) -> Option<&'static str> {
        check(
            &req(headers).headers,
            absolute,
            loopback_only,
            Listener::Outbound,
        )
        .err()
        .map(|p| p.reason)
    }

    #[test]
    fn apps_pass() {
        for host in [
            "127.0.0.1:8480",
            "127.0.0.1",
            "[::1]:8480",
            "localhost:8480",
            "LOCALHOST",
            "app.localhost:8480",
            "localhost.",
            "10.1.2.3:8480",
        ] {
            assert_eq!(reason(&[("Host", host)], false, true), None, "{host}");
        }
        assert_eq!(reason(&[], false, true), None, "no Host (HTTP/1.0)");
        // A user typing the directory's address into the browser's address bar.
        assert_eq!(
            reason(
                &[("Host", "127.0.0.1:8480"), ("Sec-Fetch-Site", "none")],
                false,
                true
            ),
            None
        );
        // Same-origin, with the port or with the scheme's default left out.
        assert_eq!(
            reason(
                &[
                    ("Host", "127.0.0.1:8480"),
                    ("Origin", "http://127.0.0.1:8480")
                ],
                false,
                true
            ),
            None
        );
        assert_eq!(
            reason(
                &[("Host", "localhost"), ("Origin", "http://localhost")],
                false,
                true
            ),
            None
        );
        // A remote client by name, where the operator allowed remote clients.
        assert_eq!(reason(&[("Host", "peergate:8480")], false, false), None);
        // HTTP_PROXY mode: Host is the peer's.
        assert_eq!(reason(&[("Host", "bob.example.org")], true, true), None);
    }

    #[test]
    fn web_pages_are_refused() {
        let h = ("Host", "127.0.0.1:8480");
        for site in ["cross-site", "same-site", "Cross-Site", "bogus"] {
            assert_eq!(
                reason(&[h, ("Sec-Fetch-Site", site)], false, true),
                Some("cross_origin"),
                "{site}"
            );
        }
        for origin in [
            "https://evil.example",
            "http://127.0.0.1:9999",
            "null",
            "http://127.0.0.1:8480/path",
            "",
        ] {
            assert_eq!(
                reason(&[h, ("Origin", origin)], false, true),
                Some("cross_origin"),
                "{origin}"
            );
            // Whatever the form and listener.
            assert_eq!(
                reason(&[h, ("Origin", origin)], true, false),
                Some("cross_origin")
            );
        }
        // A rebound name: refused on a loopback listener, even same-origin.
        for host in [
            "evil.example:8480",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1:x",
            "[zz]:1",
            "notlocalhost:8480",
            "127.0.0.1:+80",
            "localhost:99999",
            "[::1]:",
        ] {
            assert_eq!(
                reason(&[("Host", host)], false, true),
                Some("foreign_host"),
                "{host}"
            );
        }
        assert_eq!(
            reason(
                &[
                    ("Host", "evil.example:8480"),
                    ("Origin", "http://evil.example:8480")
                ],
                false,
                true
            ),
            Some("foreign_host")
        );
    }
}
