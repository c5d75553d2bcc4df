//! What peergate tells anyone who asks, without a signature: who this installation is.
//!
//! Three resources on the inbound listener, answered by peergate itself (never forwarded to the
//! app, whatever the routes say, so an app can neither hide nor fake them):
//!
//! - `GET /.well-known/peergate`: the identity document (JSON) that `peergate peer add` reads:
//!   the public key in the form peers paste into their allowlist, its key id, peer ID, short ID,
//!   the owner's name and profile;
//! - `GET /.well-known/http-message-signatures-directory`: the same key as a JWKS, in the form of
//!   the HTTP Message Signatures Directory draft (draft-meunier-http-message-signatures-directory,
//!   the one Web Bot Auth uses), signed as the draft recommends so a client can check that the
//!   holder of the key vouches for this authority;
//! - the welcome page (`identity.profile_path`): the owner's Markdown profile as HTML.
//!
//! Bodies are computed once per configuration ([`PublicPages::new`], from `Snapshot::build`), so
//! they follow a reload and cost nothing per request but a copy of a reference-counted buffer.
//! Only the directory's signature is made per request: it covers the authority the client asked
//! for, which is not known in advance.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use peergate_signature::{
    content_digest, sign_message, Authority, ComponentId, DigestAlgorithm, HostRule, MessageView,
    RequestView, ResponseView, SignatureParams,
};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::config::Config;
use crate::identity::Identity;
use crate::problem::Problem;

/// The identity document.
pub const IDENTITY_PATH: &str = "/.well-known/peergate";
/// The HTTP Message Signatures Directory (a JWKS), at the well-known URI the draft registers.
pub const DIRECTORY_PATH: &str = "/.well-known/http-message-signatures-directory";
/// The media type the directory draft registers; the draft says the directory MUST use it.
pub const DIRECTORY_MEDIA_TYPE: &str = "application/http-message-signatures-directory+json";
/// The `tag` the draft requires on the directory response's signature.
pub const DIRECTORY_TAG: &str = "http-message-signatures-directory";
/// The label of the directory response's signature.
pub const DIRECTORY_LABEL: &str = "sig1";
/// The welcome page may show nothing but its own inline style and images from https: it holds
/// Markdown written by the owner, and a sanitizer bug must not turn into script execution.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:";
/// A profile larger than this is refused at load: it is a welcome page, not a website.
pub const MAX_PROFILE_BYTES: u64 = 256 * 1024;

const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";
/// How long clients may cache the documents (they change only when the config does).
const CACHE_CONTROL: &str = "max-age=60";

/// Which public resource a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Identity,
    Directory,
    Page,
}

/// A response peergate writes itself.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Headers besides Content-Type and Content-Length.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A HEAD request: the headers of the GET answer (Content-Length included), no body.
    pub head_only: bool,
    pub resource: Resource,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Writes the whole response.
    pub async fn send(&self, session: &mut Session) -> pingora::Result<()> {
        let mut resp = ResponseHeader::build(self.status, Some(self.headers.len() + 2))?;
        resp.insert_header(http::header::CONTENT_TYPE, self.content_type)?;
        resp.insert_header(http::header::CONTENT_LENGTH, self.body.len().to_string())?;
        for (name, value) in &self.headers {
            resp.append_header(name.clone(), value.clone())?;
        }
        if !session.is_body_done() {
            // A request body (a POST to a public document) is never read: the connection cannot
            // carry another request after it.
            session.set_keepalive(None);
        }
        session
            .write_response_header(Box::new(resp), self.head_only)
            .await?;
        if !self.head_only {
            session
                .write_response_body(Some(self.body.clone()), true)
                .await?;
        }
        Ok(())
    }
}

/// The three public resources of one configuration, ready to send.
pub struct PublicPages {
    identity_json: Bytes,
    directory_json: Bytes,
    /// `Content-Digest` of the directory body (covered by its signature).
    directory_digest: HeaderValue,
    page_html: Bytes,
    profile_path: String,
    identity: Arc<Identity>,
    hosts: Vec<HostRule>,
    scheme: &'static str,
    /// `expires - created` of the directory signature; the response's Cache-Control max-age
    /// is half of it, so a cached copy is not served with a signature about to expire.
    signature_lifetime: u64,
}

impl std::fmt::Debug for PublicPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicPages")
            .field("profile_path", &self.profile_path)
            .finish_non_exhaustive()
    }
}

impl PublicPages {
    /// Builds the bodies; fails only when the profile file cannot be read (too large, not
    /// UTF-8, gone), so a reload with a broken profile keeps the running configuration.
    pub fn new(config: &Config) -> Result<PublicPages, String> {
        let id = &config.identity;
        let identity = id.key_file.identity.clone();
        let public = identity.public();
        let name = id.display_name();
        let profile = match &id.profile {
            Some(file) => Some(read_profile(&file.0)?),
            None => None,
        };
        let hosts: Vec<String> = id.hosts.0.iter().map(ToString::to_string).collect();
        let url = public_url(config);
        let profile_path = id.profile_path.as_str().to_string();

        let identity_doc = serde_json::json!({
            "peer_id": public.peer_id(),
            "short_id": public.short_id(),
            "key_id": public.key_id(),
            "public_key": public.spki_base64(),
            "alg": "ed25519",
            "name": name,
            "profile": profile,
            "scheme": id.scheme.as_str(),
            "hosts": hosts,
            "url": url,
            "profile_path": profile_path,
        });
        let directory_doc = serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": public.raw_base64url(),
                "kid": public.key_id(),
                "use": "sig",
            }]
        });
        let directory_json = Bytes::from(directory_doc.to_string());
        let digest = content_digest(DigestAlgorithm::Sha256, &directory_json);
        let directory_digest = HeaderValue::try_from(digest)
            .map_err(|_| "cannot build the directory's Content-Digest".to_string())?;
        let page = render_page(&PageInput {
            name: &name,
            short_id: public.short_id(),
            peer_id: &public.peer_id(),
            key_id: public.key_id(),
            public_key: &public.spki_base64(),
            url: url.as_deref(),
            profile_markdown: profile.as_deref(),
        });
        let host_rules = id
            .hosts
            .0
            .iter()
            .map(|h| {
                HostRule::parse(&h.to_string()).map_err(|e| format!("identity.hosts {h}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PublicPages {
            identity_json: Bytes::from(identity_doc.to_string()),
            directory_json,
            directory_digest,
            page_html: Bytes::from(page),
            profile_path,
            identity,
            hosts: host_rules,
            scheme: id.scheme.as_str(),
            signature_lifetime: config.signatures.lifetime.0.as_secs().max(1),
        })
    }

    /// The path of the welcome page.
    pub fn profile_path(&self) -> &str {
        &self.profile_path
    }

    /// Which resource `path` (the request's path, without query) names, if any. Matching is
    /// exact: anything else is the app's, and goes through routing and verification.
    pub fn resource(&self, path: &str) -> Option<Resource> {
        if path == IDENTITY_PATH {
            Some(Resource::Identity)
        } else if path == DIRECTORY_PATH {
            Some(Resource::Directory)
        } else if path == self.profile_path {
            Some(Resource::Page)
        } else {
            None
        }
    }

    /// The answer to `method path`, unsigned; `None` when the path is not a public resource.
    /// GET and HEAD are served; anything else is refused (`Err`: 405 `method_not_allowed`,
    /// counted and logged as a refusal, as on the other listeners).
    pub fn answer(&self, method: &Method, path: &str) -> Option<Result<Answer, Problem>> {
        let resource = self.resource(path)?;
        if method != Method::GET && method != Method::HEAD {
            return Some(Err(method_not_allowed(method, path, resource)));
        }
        let head_only = method == Method::HEAD;
        let mut headers = vec![(
            http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        )];
        let mut cache_control = HeaderValue::from_static(CACHE_CONTROL);
        let (content_type, body) = match resource {
            Resource::Identity => {
                headers.push((
                    http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                ));
                (JSON, self.identity_json.clone())
            }
            Resource::Directory => {
                headers.push((
                    http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                ));
                headers.push((
                    HeaderName::from_static("content-digest"),
                    self.directory_digest.clone(),
                ));
                // The signature expires: a cached copy must be gone well before it does.
                let max_age = (self.signature_lifetime / 2).max(1);
                cache_control = HeaderValue::try_from(format!("max-age={max_age}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
                (DIRECTORY_MEDIA_TYPE, self.directory_json.clone())
            }
            Resource::Page => {
                headers.push((
                    http::header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(PAGE_CSP),
                ));
                headers.push((
                    http::header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ));
                headers.push((
                    http::header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("DENY"),
                ));
                (HTML, self.page_html.clone())
            }
        };
        headers.push((http::header::CACHE_CONTROL, cache_control));
        Some(Ok(Answer {
            status: 200,
            content_type,
            body,
            headers,
            head_only,
            resource,
        }))
    }

    /// [`answer`](Self::answer) for a whole request, with the directory response signed at
    /// `now` (unix seconds) when the request is for one of `identity.hosts`.
    ///
    /// The signature covers `"@authority";req`, so it states "the holder of this key serves
    /// this directory at this authority". It is made only for our own hosts: signing whatever
    /// `Host` a client sends would hand out that statement for any name it likes.
    pub fn answer_request(
        &self,
        req: &RequestView<'_>,
        now: u64,
    ) -> Option<Result<Answer, Problem>> {
        let mut answer = match self.answer(req.method, req.uri.path())? {
            Ok(answer) => answer,
            Err(refused) => return Some(Err(refused)),
        };
        if answer.resource == Resource::Directory && answer.status == 200 {
            match self.sign_directory(req, &answer, now) {
                Ok(Some((input, signature))) => {
                    answer
                        .headers
                        .push((HeaderName::from_static("signature-input"), input));
                    answer
                        .headers
                        .push((HeaderName::from_static("signature"), signature));
                }
                Ok(None) => {}
                Err(e) => log::warn!("public identity: cannot sign the directory response: {e}"),
            }
        }
        Some(Ok(answer))
    }

    /// `Signature-Input` and `Signature` for a directory response, or `None` when the request
    /// is not for one of our hosts.
    fn sign_directory(
        &self,
        req: &RequestView<'_>,
        answer: &Answer,
        now: u64,
    ) -> Result<Option<(HeaderValue, HeaderValue)>, String> {
        let Ok(authority) = Authority::of_request(req) else {
            return Ok(None);
        };
        if !self
            .hosts
            .iter()
            .any(|h| h.matches(&authority, self.scheme))
        {
            return Ok(None);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(answer.content_type),
        );
        headers.insert(
            HeaderName::from_static("content-digest"),
            self.directory_digest.clone(),
        );
        let response = ResponseView {
            status: StatusCode::OK,
            headers: &headers,
            request: Some(req),
        };
        let components = [
            ComponentId::parse("\"@authority\";req").map_err(|e| e.to_string())?,
            ComponentId::new("content-digest").map_err(|e| e.to_string())?,
        ];
        let public = self.identity.public();
        let mut params = SignatureParams::new();
        let fail = |e: peergate_signature::InputError| e.to_string();
        params.push_integer("created", now).map_err(fail)?;
        params
            .push_integer("expires", now.saturating_add(self.signature_lifetime))
            .map_err(fail)?;
        params.push_string("keyid", public.key_id()).map_err(fail)?;
        params.push_string("alg", "ed25519").map_err(fail)?;
        params.push_string("tag", DIRECTORY_TAG).map_err(fail)?;
        let signed = sign_message(
            self.identity.signing_key(),
            MessageView::Response(&response),
            DIRECTORY_LABEL,
            &components,
            &params,
            &[],
        )
        .map_err(|e| e.to_string())?;
        let input = HeaderValue::try_from(signed.signature_input)
            .map_err(|_| "Signature-Input is not a header value".to_string())?;
        let signature = HeaderValue::try_from(signed.signature_field)
            .map_err(|_| "Signature is not a header value".to_string())?;
        Ok(Some((input, signature)))
    }
}

fn method_not_allowed(method: &Method, path: &str, resource: Resource) -> Problem {
    let what = match resource {
        Resource::Identity => "the identity document",
        Resource::Directory => "the signatures directory",
        Resource::Page => "the welcome page",
    };
    Problem::get_or_head_only(format!(
        "{path} is {what}, served by peergate itself: only GET and HEAD, not {method}"
    ))
}

/// The URL peers use for us: the first of `identity.hosts` with its port, or the inbound
/// listener's port when the host has none and it is not the scheme's default.
pub fn public_url(config: &Config) -> Option<String> {
    let identity = &config.identity;
    identity.hosts.0.first().map(|h| {
        let scheme = identity.scheme.as_str();
        let default = if scheme == "https" { 443 } else { 80 };
        let port = h.port.unwrap_or_else(|| config.listen.inbound.0.port());
        let host = if h.host.contains(':') {
            format!("[{}]", h.host)
        } else {
            h.host.clone()
        };
        if port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{port}")
        }
    })
}

fn read_profile(path: &std::path::Path) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("identity.profile {}: {e}", path.display()))?;
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(format!(
            "identity.profile {} is {} bytes; a profile is at most {} KiB",
            path.display(),
            meta.len(),
            MAX_PROFILE_BYTES / 1024
        ));
    }
    let bytes = crate::files::read(path, MAX_PROFILE_BYTES)
        .map_err(|e| format!("identity.profile {}: {e}", path.display()))?;
    String::from_utf8(bytes)
        .map_err(|_| format!("identity.profile {} is not UTF-8 text", path.display()))
}

/// Markdown to HTML that can only format: no script, no event handlers, no styles, links only
/// to http, https and mailto, images only from https (the page's CSP blocks the rest anyway).
pub fn render_markdown(markdown: &str) -> String {
    use pulldown_cmark::{html, Options, Parser};
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    let mut raw = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut raw, Parser::new_ext(markdown, options));
    sanitize(&raw)
}

fn sanitize(html: &str) -> String {
    let schemes: HashSet<&str> = ["http", "https", "mailto"].into_iter().collect();
    ammonia::Builder::default()
        .url_schemes(schemes)
        .link_rel(Some("noopener noreferrer nofollow ugc"))
        .attribute_filter(|element, attribute, value| {
            if element == "img" && attribute == "src" {
                let https = value
                    .get(..6)
                    .is_some_and(|s| s.eq_ignore_ascii_case("https:"));
                return https.then(|| value.into());
            }
            Some(value.into())
        })
        .clean(html)
        .to_string()
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

struct PageInput<'a> {
    name: &'a str,
    short_id: &'a str,
    peer_id: &'a str,
    key_id: &'a str,
    public_key: &'a str,
    url: Option<&'a str>,
    profile_markdown: Option<&'a str>,
}

/// The welcome page: self-contained (inline CSS, no script, no external asset), readable on a
/// phone and on a desktop, light or dark as the visitor prefers.
fn render_page(p: &PageInput<'_>) -> String {
    let name = escape_html(p.name);
    let initial = p
        .name
        .chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect::<String>())
        .unwrap_or_else(|| "?".into());
    let profile = match p.profile_markdown.map(render_markdown) {
        Some(html) if !html.trim().is_empty() => html,
        _ => format!("<p class=\"empty\">{name} has not written a profile yet.</p>"),
    };
    let add = match p.url {
        Some(url) => format!(
            "<p>Run peergate too? Add {name} to your allowlist with</p>\n<pre><code>peergate peer add {}</code></pre>\n<p class=\"hint\">then compare the key id below with {name}, by phone or in person, before you confirm.</p>",
            escape_html(url)
        ),
        None => String::new(),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<title>{name} · peergate</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
<main>
<header class="card intro">
<div class="avatar" aria-hidden="true">{initial}</div>
<div>
<h1>{name}</h1>
<p class="handle">short ID <span class="id">{short_id}</span></p>
</div>
</header>
<article class="card profile">
{profile}
</article>
<section class="card connect">
<h2>Connect</h2>
{add}
<dl>
<dt>key id</dt><dd><code>{key_id}</code></dd>
<dt>public key</dt><dd><code>{public_key}</code></dd>
<dt>peer ID</dt><dd><code>{peer_id}</code></dd>
</dl>
</section>
<footer>Served by peergate · peer-to-peer HTTP, every request signed (RFC 9421)</footer>
</main>
</body>
</html>
"#,
        short_id = escape_html(p.short_id),
        key_id = escape_html(p.key_id),
        public_key = escape_html(p.public_key),
        peer_id = escape_html(p.peer_id),
    )
}

const STYLE: &str = r#"
:root{--bg:#f4f5f7;--card:#fff;--text:#1d2330;--muted:#5b6475;--line:#e2e5ea;--accent:#2f6fde;--accent-soft:#e7effc;--code:#f1f3f6}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1a1e24;--text:#e7eaf0;--muted:#9aa3b2;--line:#2a3039;--accent:#7aa7ff;--accent-soft:#1f2a3d;--code:#242a33}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--text);font:16px/1.6 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:44rem;margin:0 auto;padding:1.25rem 1rem 2.5rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:1.25rem 1.25rem;margin:0 0 1rem;box-shadow:0 1px 2px rgba(0,0,0,.04)}
.intro{display:flex;align-items:center;gap:1rem}
.avatar{flex:none;width:3.5rem;height:3.5rem;border-radius:50%;display:flex;align-items:center;justify-content:center;background:var(--accent-soft);color:var(--accent);font-weight:700;font-size:1.6rem}
h1{font-size:1.6rem;line-height:1.2;margin:0;overflow-wrap:anywhere}
h2{font-size:1.15rem;margin:0 0 .5rem}
.handle{margin:.25rem 0 0;color:var(--muted);font-size:.95rem}
.id{font:600 1rem ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--accent-soft);color:var(--accent);padding:.1rem .45rem;border-radius:6px;letter-spacing:.04em}
.profile>:first-child{margin-top:0}.profile>:last-child{margin-bottom:0}
.profile h1,.profile h2,.profile h3{line-height:1.3;margin:1.2em 0 .4em}
.profile h1{font-size:1.35rem}.profile h2{font-size:1.2rem}.profile h3{font-size:1.05rem}
.profile img{max-width:100%;height:auto;border-radius:8px}
.profile blockquote{margin:1em 0;padding:.2em 1em;border-left:3px solid var(--line);color:var(--muted)}
.profile blockquote p{margin:.35em 0}
.profile table{border-collapse:collapse;display:block;overflow-x:auto}
.profile th,.profile td{border:1px solid var(--line);padding:.3em .6em}
.empty{color:var(--muted);font-style:italic}
a{color:var(--accent);text-underline-offset:2px}
code{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);padding:.1em .3em;border-radius:4px;overflow-wrap:anywhere}
pre{background:var(--code);padding:.75rem .9rem;border-radius:8px;overflow-x:auto}
pre code{padding:0;background:none}
.connect pre code{white-space:pre-wrap;word-break:break-all}
.hint{color:var(--muted);font-size:.9rem}
dl{margin:1rem 0 0;display:grid;grid-template-columns:1fr;gap:.15rem}
dt{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.06em;margin-top:.5rem}
dd{margin:0;font-size:.9rem}
dd code{display:block;padding:.4rem .55rem;border-radius:6px;word-break:break-all;line-height:1.5}
footer{text-align:center;color:var(--muted);font-size:.85rem;margin-top:1.5rem}
@media (min-width:40rem){main{padding-top:3rem}.card{padding:1.5rem 1.75rem}dl{grid-template-columns:7rem 1fr;column-gap:1rem}dt{margin-top:.5rem}h1{font-size:1.9rem}}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_sanitized() {
        let html = render_markdown(
            "# Hi\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[x](javascript:alert(1)) <a href=\"JaVaScRiPt:alert(2)\">y</a> [ok](https://example.org) [m](mailto:a@b.c)\n\n<p style=\"color:red\" onclick=\"alert(3)\">p</p>\n\n![i](http://insecure.example/x.png) ![j](https://ok.example/j.png)",
        );
        let lower = html.to_ascii_lowercase();
        for bad in [
            "<script",
            "onerror",
            "javascript:",
            "onclick",
            "style=",
            "alert(1)</",
            "http://insecure",
        ] {
            assert!(!lower.contains(bad), "{bad} in {html}");
        }
        assert!(html.contains("<h1>Hi</h1>"), "{html}");
        assert!(html.contains("href=\"https://example.org\""), "{html}");
        assert!(html.contains("href=\"mailto:a@b.c\""), "{html}");
        assert!(html.contains("src=\"https://ok.example/j.png\""), "{html}");
        assert!(
            html.contains("rel=\"noopener noreferrer nofollow ugc\""),
            "{html}"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_html(r#"<a href="x">O'Neil & co</a>"#),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; co&lt;/a&gt;"
        );
    }

    #[test]
    fn page_escapes_the_name_and_has_no_script() {
        let page = render_page(&PageInput {
            name: "<b>Eve</b> & \"co\"",
            short_id: "abcdef",
            peer_id: "abcdefgh",
            key_id: "kid",
            public_key: "MCow",
            url: Some("https://eve.example"),
            profile_markdown: None,
        });
        assert!(page.contains("&lt;b&gt;Eve&lt;/b&gt; &amp; &quot;co&quot;"));
        assert!(!page.contains("<b>Eve"));
        assert!(!page.to_ascii_lowercase().contains("<script"));
        assert!(page.contains("has not written a profile yet"));
        assert!(page.contains("peergate peer add https://eve.example"));
    }
}
