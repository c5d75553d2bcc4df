//! RFC 9457 problem details: every refusal and failure a client gets from peergate says what
//! went wrong in words a person can act on, plus a machine-readable `reason`.

use bytes::Bytes;
use http::HeaderValue;
use peergate_signature::{Reason, Refusal};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::metrics::Direction;

/// Defines [`Code`] and [`Code::ALL`] from one list, so that no code can be missing from the
/// list the rejection series are made from at start.
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, refused by [$($side:ident),*];)*) => {
        /// The problem codes of peergate's own, beside the signature engine's [`Reason`]s:
        /// a closed set, since each is a `reason` label value.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// Whether the listener of `direction` refuses requests with this code (counted
            /// in `peergate_rejections_total`); a code given by neither is a failure, counted
            /// in `peergate_upstream_errors_total`.
            pub fn refused_by(self, direction: Direction) -> bool {
                match self {
                    $(Code::$variant => [$(Direction::$side),*].contains(&direction),)*
                }
            }
        }
    };
}

codes! {
    BadRequest = "bad_request", refused by [Inbound, Outbound];
    BadPath = "bad_path", refused by [Inbound, Outbound];
    ConnectNotSupported = "connect_not_supported", refused by [Inbound, Outbound];
    MethodNotAllowed = "method_not_allowed", refused by [Inbound, Outbound];
    Overloaded = "overloaded", refused by [Inbound, Outbound];
    /// The outbound listener (and the admin one, which counts no requests) to web pages.
    CrossOrigin = "cross_origin", refused by [Outbound];
    ForeignHost = "foreign_host", refused by [Outbound];
    UnknownPeer = "unknown_peer", refused by [Outbound];
    NotAPeer = "not_a_peer", refused by [Outbound];
    PeerHasNoUrl = "peer_has_no_url", refused by [Outbound];
    NoRoute = "no_route", refused by [Outbound];
    UpstreamUnreachable = "upstream_unreachable", refused by [];
    UpstreamTimeout = "upstream_timeout", refused by [];
    InternalError = "internal_error", refused by [];
}

/// The signature engine's reasons the outbound listener gives too: a body past
/// `signatures.max_body` (the inbound listener gives them all).
pub const OUTBOUND_REASONS: [Reason; 1] = [Reason::BodyTooLarge];

/// Why a request was not served, whether refused by policy or failed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    /// A code from DESIGN.md's table (or a gateway failure code such as `upstream_unreachable`);
    /// also the `reason` label of the rejection metrics, so always from a fixed set.
    pub reason: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// For a 405: the `Allow` header, the methods the resource answers (RFC 9110 §15.5.6).
    pub allow: Option<&'static str>,
}

impl Problem {
    pub fn new(status: u16, code: Code, title: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            reason: code.as_str(),
            title,
            detail: detail.into(),
            allow: None,
        }
    }

    /// A 405 for a resource that answers GET and HEAD only (peergate's own: the admin
    /// listener, the peer directory, the public documents), with `Allow` saying so.
    pub fn get_or_head_only(detail: impl Into<String>) -> Self {
        Problem::new(405, Code::MethodNotAllowed, "Method not allowed", detail)
            .allowing("GET, HEAD")
    }

    /// The same, saying which methods the resource answers (`"GET, HEAD"`).
    pub fn allowing(mut self, methods: &'static str) -> Self {
        self.allow = Some(methods);
        self
    }

    pub fn refusal(refusal: &Refusal) -> Self {
        Problem::from_reason(refusal.reason, refusal.detail.clone())
    }

    pub fn from_reason(reason: Reason, detail: impl Into<String>) -> Self {
        Problem {
            status: reason.status(),
            reason: reason.code(),
            title: reason.title(),
            detail: detail.into(),
            allow: None,
        }
    }

    pub fn body(&self) -> Bytes {
        let doc = serde_json::json!({
            "type": format!("urn:peergate:problem:{}", self.reason),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "reason": self.reason,
        });
        Bytes::from(doc.to_string())
    }

    /// The response header, with `Accept-Signature` on 401 so a client knows what to send.
    pub fn header(
        &self,
        body_len: usize,
        accept_signature: Option<&HeaderValue>,
    ) -> pingora::Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.status, Some(5))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/problem+json")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        if self.status == 401 {
            if let Some(value) = accept_signature {
                resp.insert_header("accept-signature", value.clone())?;
            }
        }
        if let Some(methods) = self.allow {
            resp.insert_header(http::header::ALLOW, methods)?;
        }
        Ok(resp)
    }

    /// Writes the problem as the whole response.
    pub async fn send(
        &self,
        session: &mut Session,
        accept_signature: Option<&HeaderValue>,
    ) -> pingora::Result<()> {
        let body = self.body();
        let resp = self.header(body.len(), accept_signature)?;
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_json_has_every_rfc9457_member_and_the_reason() {
        let p = Problem::from_reason(Reason::UnknownKey, "keyid \"x\" is not on the allowlist");
        let v: serde_json::Value = serde_json::from_slice(&p.body()).unwrap();
        assert_eq!(v["type"], "urn:peergate:problem:unknown_key");
        assert_eq!(v["status"], 401);
        assert_eq!(v["reason"], "unknown_key");
        assert_eq!(v["detail"], "keyid \"x\" is not on the allowlist");
        assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()));
        let accept = HeaderValue::from_static("peer=(\"@method\");created");
        let h = p.header(10, Some(&accept)).unwrap();
        assert_eq!(h.headers["content-type"], "application/problem+json");
        assert_eq!(h.headers["accept-signature"], accept);
        let forbidden = Problem::from_reason(Reason::Forbidden, "no")
            .header(2, Some(&accept))
            .unwrap();
        assert!(forbidden.headers.get("accept-signature").is_none());
    }
}
