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
        match &self.prefix {
            None => path == self.text,
            Some(prefix) => {
                path == prefix
                    || path
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }

    /// [`PathPattern::matches`], with letters compared without regard to case: ASCII ones
    /// directly, others by their lowercase forms (ASP.NET Core folds `É` to `é` too).
    pub fn matches_ignoring_case(&self, path: &str) -> bool {
        let text = match &self.prefix {
            None => &self.text,
            Some(prefix) => prefix,
        };
        if !(path.is_ascii() && text.is_ascii()) {
            let folded = PathPattern {
                text: self.text.to_lowercase(),
                prefix: self.prefix.as_ref().map(|p| p.to_lowercase()),
            };
            return folded.matches(&path.to_lowercase());
        }
        let starts = |p: &str| {
            path.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        };
        match &self.prefix {
            None => path.eq_ignore_ascii_case(&self.text),
            Some(prefix) => {
                path.eq_ignore_ascii_case(prefix)
                    || (starts(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
            }
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

/// First match wins; no match means `peers` (fail closed).
///
/// Paths are case-sensitive, but many app frameworks route without regard to case (Express's
/// default, ASP.NET Core): with `/admin/*` for peers and `/*` public, `/Admin/users` would be
/// public here and the admin page there. So a path is public only when it is public both as
/// written and with case ignored (Unicode letters folded too).
pub fn access_for(routes: &[Route], normalized_path: &str) -> Access {
    let first = |matches: &dyn Fn(&PathPattern) -> bool| {
        routes
            .iter()
            .find(|r| matches(&r.path))
            .map_or(Access::Peers, |r| r.access)
    };
    let exact = first(&|p| p.matches(normalized_path));
    let folded = first(&|p| p.matches_ignoring_case(normalized_path));
    if exact == Access::Public && folded == Access::Public {
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
        assert!(p("/admin/*").matches_ignoring_case("/Admin/users"));
        assert!(p("/admin/*").matches_ignoring_case("/ADMIN"));
        assert!(!p("/admin/*").matches_ignoring_case("/Adminx"));
        assert!(p("/Healthz").matches_ignoring_case("/healthz"));
        assert!(!p("/healthz").matches_ignoring_case("/healthz/x"));
        assert!(p("/*").matches_ignoring_case("/x"));
        // Other letters fold too; a prefix that ends inside a character does not match.
        assert!(p("/café/*").matches_ignoring_case("/CAFÉ/x"));
        assert!(p("/CAFÉ").matches_ignoring_case("/café"));
        assert!(!p("/café/*").matches_ignoring_case("/cafés/x"));
        assert!(!p("/ab/*").matches_ignoring_case("/a\u{e9}/x"));
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
