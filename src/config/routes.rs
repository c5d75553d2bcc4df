//! Inbound routes and path patterns: which paths are public and which need a verified peer.

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::values::parse_str;

/// A path pattern: an exact path (`/healthz`), or a prefix ending in `/*` (`/api/*` matches
/// `/api` and everything below it; `/*` matches every path). Patterns are compared with the
/// normalized request path, so they may not contain `.`/`..` segments, `//` or `%`.
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    /// For `/x/*`: `/x`; for `/*`: the empty string.
    prefix: Option<String>,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("path pattern {text:?} {why}");
        if !text.starts_with('/') {
            return Err(bad("must start with /"));
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '\\'))
        {
            return Err(bad(&format!(
                "contains {c:?}; patterns match the decoded, normalized path, without query"
            )));
        }
        let (body, prefix) = match text.strip_suffix("/*") {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err(bad(
                "has a * that is not a trailing /*; only prefixes like /api/* are supported",
            ));
        }
        let inner = body.strip_prefix('/').unwrap_or(body);
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        if !inner.is_empty()
            && inner
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(bad(
                "has an empty, . or .. segment; write the normalized path",
            ));
        }
        Ok(PathPattern {
            text: text.to_string(),
            prefix: prefix.then(|| body.to_string()),
        })
    }

    /// `path` must already be normalized (decoded, dot segments resolved).
    pub fn matches(&self, path: &str) -> bool {
        self.matches_as(path, Reading::AS_WRITTEN)
    }

    /// Whether `path` matches when read as `reading` says: letters compared without regard to
    /// case (ASCII ones directly, others as [`fold`] folds them, as ASP.NET Core folds `É` to
    /// `é` too), trailing slashes ignored on both sides (`/admin/` as `/admin`, as Express,
    /// ASP.NET Core and Rails route them), and a format suffix of the path's last segment
    /// ignored (`/admin.json` as `/admin`, as Rails routes `/admin(.:format)`).
    fn matches_as(&self, path: &str, reading: Reading) -> bool {
        let (path, exact) = if reading.ignore_trailing_slash {
            (slashless(path), slashless(&self.text))
        } else {
            (path, self.text.as_str())
        };
        let path = if reading.ignore_format {
            formatless(path)
        } else {
            path
        };
        if reading.ignore_case && !(path.is_ascii() && self.text.is_ascii()) {
            let path = fold(path);
            return match &self.prefix {
                None => path == fold(exact),
                Some(prefix) => under(&path, &fold(prefix), |a, b| a == b),
            };
        }
        let same = |a: &str, b: &str| {
            if reading.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match &self.prefix {
            None => same(path, exact),
            Some(prefix) => under(path, prefix, same),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a path pattern such as \"/api/*\"", PathPattern::parse)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// No signature needed; identity headers are still stripped.
    Public,
    /// A verified, allowlisted peer only.
    Peers,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Peers => "peers",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route: a mapping with path and access"
)]
pub struct Route {
    pub path: PathPattern,
    pub access: Access,
}

/// `path` is `prefix` or below it (`prefix` has no trailing slash; the empty one is the root's).
fn under(path: &str, prefix: &str, same: impl Fn(&str, &str) -> bool) -> bool {
    same(path, prefix)
        || (path.as_bytes().get(prefix.len()) == Some(&b'/')
            && path
                .get(..prefix.len())
                .is_some_and(|head| same(head, prefix)))
}

/// `text` with its letters folded for a comparison without regard to case, so that every two
/// spellings some framework takes for one are folded alike: lower-cased, and the four letters
/// outside ASCII that a framework's case mapping turns into ASCII ones turned into those
/// (`ſ` and `ı` are lowercase already, but Java's `equalsIgnoreCase` and Python's `re.I` take
/// them for `s` and `i`; `İ` lower-cases to `i` plus a dot in Rust, to `i` in Java; the Kelvin
/// sign to `k`).
fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{17f}' => folded.push('s'),
            '\u{130}' | '\u{131}' => folded.push('i'),
            '\u{212a}' => folded.push('k'),
            c => folded.extend(c.to_lowercase()),
        }
    }
    folded
}

/// `path` without the format suffix of its last segment (`/admin.json` → `/admin`: from the
/// first dot after the segment's leading ones; `/.env` has none).
fn formatless(path: &str) -> &str {
    let segment = path.rfind('/').map_or(0, |slash| slash + 1);
    let last = path.get(segment..).unwrap_or_default();
    let dots = last.len() - last.trim_start_matches('.').len();
    match last.get(dots..).and_then(|name| name.find('.')) {
        Some(dot) => path.get(..segment + dots + dot).unwrap_or(path),
        None => path,
    }
}

/// `path` without its trailing slashes; `/` stays `/`.
fn slashless(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

/// How a path is compared with the patterns: see [`access_for`].
#[derive(Clone, Copy)]
struct Reading {
    ignore_case: bool,
    ignore_trailing_slash: bool,
    ignore_format: bool,
}

impl Reading {
    const AS_WRITTEN: Reading = Reading {
        ignore_case: false,
        ignore_trailing_slash: false,
        ignore_format: false,
    };

    /// Every reading: each combination of the three.
    fn all() -> impl Iterator<Item = Reading> {
        (0..8u8).map(|bits| Reading {
            ignore_case: bits & 1 != 0,
            ignore_trailing_slash: bits & 2 != 0,
            ignore_format: bits & 4 != 0,
        })
    }
}

/// First match wins; no match means `peers` (fail closed).
///
/// Paths are case-sensitive, but many app frameworks route without regard to case (Express's
/// default, ASP.NET Core): with `/admin/*` for peers and `/*` public, `/Admin/users` would be
/// public here and the admin page there; and most route `/admin/` as `/admin` (Express, ASP.NET
/// Core, Rails, Spring before 6); and Rails serves `/admin.json` with the `/admin` action
/// (Spring MVC did before 5.3). So a path is public only when it is public in every reading:
/// as written, with case ignored (Unicode letters folded too), with trailing slashes ignored,
/// with a format suffix ignored, and with any of them together.
pub fn access_for(routes: &[Route], normalized_path: &str) -> Access {
    // Without a suffix, the readings that ignore one are the others again.
    let suffixed = formatless(normalized_path) != normalized_path
        || formatless(slashless(normalized_path)) != slashless(normalized_path);
    let public_in = |reading: Reading| {
        routes
            .iter()
            .find(|r| r.path.matches_as(normalized_path, reading))
            .is_some_and(|r| r.access == Access::Public)
    };
    if Reading::all()
        .filter(|r| suffixed || !r.ignore_format)
        .all(public_in)
    {
        Access::Public
    } else {
        Access::Peers
    }
}

pub fn default_routes() -> Vec<Route> {
    vec![Route {
        path: PathPattern {
            text: "/*".into(),
            prefix: Some(String::new()),
        },
        access: Access::Peers,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
    }

    impl PathPattern {
        fn matches_as_folded(&self, path: &str) -> bool {
            self.matches_as(path, reading(true, false, false))
        }

        fn matches_slashless(&self, path: &str) -> bool {
            self.matches_as(path, reading(false, true, false))
        }
    }

    fn reading(ignore_case: bool, ignore_trailing_slash: bool, ignore_format: bool) -> Reading {
        Reading {
            ignore_case,
            ignore_trailing_slash,
            ignore_format,
        }
    }

    #[test]
    fn matching() {
        assert!(p("/*").matches("/"));
        assert!(p("/*").matches("/anything/at/all"));
        assert!(p("/api/*").matches("/api"));
        assert!(p("/api/*").matches("/api/x"));
        assert!(!p("/api/*").matches("/apix"));
        assert!(!p("/api/*").matches("/"));
        assert!(p("/healthz").matches("/healthz"));
        assert!(!p("/healthz").matches("/healthz/x"));
    }

    #[test]
    fn matching_ignoring_case() {
        assert!(p("/admin/*").matches_as_folded("/Admin/users"));
        assert!(p("/admin/*").matches_as_folded("/ADMIN"));
        assert!(!p("/admin/*").matches_as_folded("/Adminx"));
        assert!(p("/Healthz").matches_as_folded("/healthz"));
        assert!(!p("/healthz").matches_as_folded("/healthz/x"));
        assert!(p("/*").matches_as_folded("/x"));
        // Other letters fold too; a prefix that ends inside a character does not match.
        assert!(p("/café/*").matches_as_folded("/CAFÉ/x"));
        assert!(p("/CAFÉ").matches_as_folded("/café"));
        assert!(!p("/café/*").matches_as_folded("/cafés/x"));
        assert!(!p("/ab/*").matches_as_folded("/a\u{e9}/x"));
    }

    fn route(path: &str, access: Access) -> Route {
        Route {
            path: p(path),
            access,
        }
    }

    /// An app that routes without regard to case must not find a peers-only page on a path
    /// that is public here only because of its case.
    #[test]
    fn a_path_is_public_only_when_public_whatever_its_case() {
        let routes = [
            route("/admin/*", Access::Peers),
            route("/*", Access::Public),
        ];
        assert_eq!(access_for(&routes, "/admin/users"), Access::Peers);
        assert_eq!(access_for(&routes, "/Admin/users"), Access::Peers);
        assert_eq!(access_for(&routes, "/ADMIN"), Access::Peers);
        assert_eq!(access_for(&routes, "/about"), Access::Public);
        // The other way round, case-sensitive matching is the stricter one.
        let routes = [
            route("/public/*", Access::Public),
            route("/*", Access::Peers),
        ];
        assert_eq!(access_for(&routes, "/public/x"), Access::Public);
        assert_eq!(access_for(&routes, "/PUBLIC/x"), Access::Peers);
        assert_eq!(access_for(&[], "/x"), Access::Peers);
    }

    #[test]
    fn matching_with_trailing_slashes_ignored() {
        assert!(p("/admin").matches_slashless("/admin/"));
        assert!(p("/admin/").matches_slashless("/admin"));
        assert!(p("/admin").matches_slashless("/admin//"));
        assert!(!p("/admin").matches_slashless("/admin/x"));
        assert!(p("/api/*").matches_slashless("/api/x/"));
        assert!(!p("/api/*").matches_slashless("/apix/"));
        assert!(p("/").matches_slashless("/"));
        assert!(p("/*").matches_slashless("/"));
        assert!(!p("/").matches_slashless("/x/"));
        // Folded and slashless at once.
        assert!(p("/Admin").matches_as("/ADMIN/", reading(true, true, false)));
        assert!(p("/café").matches_as("/CAFÉ/", reading(true, true, false)));
    }

    /// Most app frameworks serve `/admin/` with the `/admin` handler: a path is not public
    /// only because of a trailing slash, in either direction.
    #[test]
    fn a_path_is_public_only_when_public_whatever_its_trailing_slash() {
        let routes = [
            route("/admin", Access::Peers),
            route("/docs/", Access::Peers),
            route("/*", Access::Public),
        ];
        assert_eq!(access_for(&routes, "/admin/"), Access::Peers);
        assert_eq!(access_for(&routes, "/Admin/"), Access::Peers);
        assert_eq!(access_for(&routes, "/docs"), Access::Peers);
        assert_eq!(access_for(&routes, "/admin/x"), Access::Public);
        assert_eq!(access_for(&routes, "/"), Access::Public);
        // An exact public route stays public on its own path.
        let routes = [
            route("/healthz", Access::Public),
            route("/*", Access::Peers),
        ];
        assert_eq!(access_for(&routes, "/healthz"), Access::Public);
        assert_eq!(access_for(&routes, "/healthz/"), Access::Peers);
    }

    #[test]
    fn letters_that_case_map_to_ascii_fold_to_it() {
        assert_eq!(
            fold("/\u{17f}ecret/ADM\u{130}N/adm\u{131}n/\u{212a}"),
            "/secret/admin/admin/k"
        );
        assert_eq!(fold("/CAFÉ"), "/café");
        assert!(p("/secret/*").matches_as_folded("/\u{17f}ecret/x"));
        assert!(p("/admin").matches_as_folded("/adm\u{130}n"));
        assert!(!p("/admin").matches("/adm\u{131}n"));
    }

    #[test]
    fn a_format_suffix_is_cut_from_the_last_segment_only() {
        for (path, cut) in [
            ("/admin.json", "/admin"),
            ("/admin.tar.gz", "/admin"),
            ("/a.b/admin.json", "/a.b/admin"),
            ("/admin.", "/admin"),
            ("/.env", "/.env"),
            ("/..x.json", "/..x"),
            ("/.well-known.json", "/.well-known"),
            ("/admin", "/admin"),
            ("/admin/", "/admin/"),
            ("/", "/"),
        ] {
            assert_eq!(formatless(path), cut, "{path}");
        }
        let routes = [
            route("/admin/*", Access::Peers),
            route("/api", Access::Peers),
            route("/*", Access::Public),
        ];
        for path in [
            "/admin.json",
            "/api.xml",
            "/api.xml/",
            "/API.json",
            "/admin/x.json",
        ] {
            assert_eq!(access_for(&routes, path), Access::Peers, "{path}");
        }
        for path in ["/administrator.json", "/apis.xml", "/x/api.xml", "/api.d/x"] {
            assert_eq!(access_for(&routes, path), Access::Public, "{path}");
        }
    }

    #[test]
    fn refused_patterns() {
        for (bad, why) in [
            ("api/*", "start with /"),
            ("/a*b", "trailing /*"),
            ("/a/../b", ". or .."),
            ("/a//b", "empty"),
            ("/a%2f", "contains '%'"),
            ("/a b", "contains ' '"),
        ] {
            let err = PathPattern::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn first_match_wins_and_default_is_peers() {
        let routes = vec![
            Route {
                path: p("/public/*"),
                access: Access::Public,
            },
            Route {
                path: p("/public/secret"),
                access: Access::Peers,
            },
        ];
        assert_eq!(access_for(&routes, "/public/secret"), Access::Public);
        assert_eq!(access_for(&routes, "/other"), Access::Peers);
    }
}
