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
pub fn access_for(routes: &[Route], normalized_path: &str) -> Access {
    routes
        .iter()
        .find(|r| r.path.matches(normalized_path))
        .map_or(Access::Peers, |r| r.access)
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
