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
    /// case (ASCII ones directly, others by their lowercase forms, as ASP.NET Core folds `É` to
    /// `é` too), and trailing slashes ignored on both sides (`/admin/` as `/admin`, as Express,
    /// ASP.NET Core and Rails route them).
    fn matches_as(&self, path: &str, reading: Reading) -> bool {
        let (path, exact) = if reading.ignore_trailing_slash {
            (slashless(path), slashless(&self.text))
        } else {
            (path, self.text.as_str())
        };
        if reading.ignore_case && !(path.is_ascii() && self.text.is_ascii()) {
            let path = path.to_lowercase();
            return match &self.prefix {
                None => path == exact.to_lowercase(),
                Some(prefix) => under(&path, &prefix.to_lowercase(), |a, b| a == b),
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
}

impl Reading {
    const AS_WRITTEN: Reading = Reading {
        ignore_case: false,
        ignore_trailing_slash: false,
    };
    const ALL: [Reading; 4] = [
        Reading::AS_WRITTEN,
        Reading {
            ignore_case: true,
            ignore_trailing_slash: false,
        },
        Reading {
            ignore_case: false,
            ignore_trailing_slash: true,
        },
        Reading {
            ignore_case: true,
            ignore_trailing_slash: true,
        },
    ];
}

/// First match wins; no match means `peers` (fail closed).
///
/// Paths are case-sensitive, but many app frameworks route without regard to case (Express's
/// default, ASP.NET Core): with `/admin/*` for peers and `/*` public, `/Admin/users` would be
/// public here and the admin page there; and most route `/admin/` as `/admin` (Express, ASP.NET
/// Core, Rails, Spring before 6). So a path is public only when it is public in every reading:
/// as written, with case ignored (Unicode letters folded too), with trailing slashes ignored,
/// and with both ignored.
pub fn access_for(routes: &[Route], normalized_path: &str) -> Access {
    let public_in = |reading: Reading| {
        routes
            .iter()
            .find(|r| r.path.matches_as(normalized_path, reading))
            .is_some_and(|r| r.access == Access::Public)
    };
    if Reading::ALL.into_iter().all(public_in) {
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
            self.matches_as(path, Reading::ALL[1])
        }

        fn matches_slashless(&self, path: &str) -> bool {
            self.matches_as(path, Reading::ALL[2])
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
        assert!(p("/Admin").matches_as("/ADMIN/", Reading::ALL[3]));
        assert!(p("/café").matches_as("/CAFÉ/", Reading::ALL[3]));
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
