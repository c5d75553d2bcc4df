//! RFC 9457 problem details: every refusal and failure a client gets from peergate says what
//! went wrong in words a person can act on, plus a machine-readable `reason`.

use bytes::Bytes;
use http::HeaderValue;
use peergate_signature::{Reason, Refusal};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

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
    pub fn new(
        status: u16,
        reason: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            reason,
            title,
            detail: detail.into(),
            allow: None,
        }
    }

    /// A 405 for a resource that answers GET and HEAD only (peergate's own: the admin
    /// listener, the peer directory, the public documents), with `Allow` saying so.
    pub fn get_or_head_only(detail: impl Into<String>) -> Self {
        Problem::new(405, "method_not_allowed", "Method not allowed", detail).allowing("GET, HEAD")
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
        Problem::new(reason.status(), reason.code(), reason.title(), detail)
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
