//! The admin listener: `/metrics` for Prometheus, `/healthz` and `/readyz` for orchestrators.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::state::Shared;

pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub fn new(shared: Arc<Shared>) -> Self {
        Admin { shared }
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/metrics" => {
                self.shared
                    .metrics
                    .replay_cache_entries
                    .set(i64::try_from(self.shared.replay.len()).unwrap_or(i64::MAX));
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.shared.metrics.render(),
                )
            }
            "/healthz" => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            "/readyz" => {
                let snap = self.shared.snapshot();
                let body = format!(
                    "ready: identity {} loaded, {} peers on the allowlist\n",
                    self.shared.identity.public().short_id(),
                    snap.peers().len()
                );
                reply(StatusCode::OK, "text/plain; charset=utf-8", body)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: the admin listener serves /metrics, /healthz and /readyz\n",
            ),
        }
    }
}
