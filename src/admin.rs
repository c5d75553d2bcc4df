//! The admin listener: `/metrics` for Prometheus, `/healthz` and `/readyz` for orchestrators.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::clock::unix_now;
use crate::config::HostPort;
use crate::state::Shared;

/// How long `/readyz` waits for the app to accept a connection (name resolution included);
/// well under the 1 s probe timeout orchestrators use by default.
const APP_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

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
                // The cache drops expired nonces only when a shard needs room, so without a
                // sweep the gauge would count nonces that no longer block anything, and a
                // gateway whose traffic stopped would keep their memory. A scrape sweeps:
                // O(entries) on this listener's own threads, at the operator's scrape
                // interval, a few milliseconds for a million entries.
                let replay = &self.shared.replay;
                replay.purge_expired(unix_now());
                self.shared
                    .metrics
                    .replay_cache_entries
                    .set(i64::try_from(replay.len()).unwrap_or(i64::MAX));
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.shared.metrics.render(),
                )
            }
            "/healthz" => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            "/readyz" => {
                let (ready, body) = readiness(&self.shared).await;
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                reply(status, "text/plain; charset=utf-8", body)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: the admin listener serves /metrics, /healthz and /readyz\n",
            ),
        }
    }
}

/// Ready means able to serve a peer's request end to end: the proxy listeners are bound, the
/// identity and the allowlist are loaded, and the app accepts connections. The body says what
/// each check found, so a 503 tells the operator which one failed. A reload that failed does not
/// make the gateway unready: the configuration in force is still a good one.
async fn readiness(shared: &Shared) -> (bool, String) {
    let snap = shared.snapshot();
    let (listeners, app) = tokio::join!(check_listeners(shared), check_app(&snap.upstream));
    let public = shared.identity.public();
    let checks: [(&str, Result<String, String>); 4] = [
        ("listeners", listeners),
        (
            "identity",
            Ok(format!(
                "{} (key id {})",
                public.short_id(),
                public.key_id()
            )),
        ),
        ("allowlist", Ok(format!("{} peers", snap.peer_count()))),
        ("app", app),
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(name, _)| *name)
        .collect();
    let mut body = if failed.is_empty() {
        "ready\n".to_string()
    } else {
        format!("not ready: {}\n", failed.join(", "))
    };
    for (name, result) in &checks {
        let line = match result {
            Ok(found) => format!("{name}: ok: {found}\n"),
            Err(why) => format!("{name}: FAILED: {why}\n"),
        };
        body.push_str(&line);
    }
    (failed.is_empty(), body)
}

async fn check_listeners(shared: &Shared) -> Result<String, String> {
    let mut up = Vec::new();
    let mut down = Vec::new();
    for (name, addr) in &shared.lifecycle.listeners {
        match crate::lifecycle::listening(*addr).await {
            Ok(()) => up.push(format!("{name} {addr}")),
            Err(why) => down.push(format!("{name}: {why}")),
        }
    }
    if down.is_empty() {
        Ok(up.join(", "))
    } else {
        Err(down.join("; "))
    }
}

async fn check_app(upstream: &HostPort) -> Result<String, String> {
    let attempt = async {
        let addr = crate::resolve::resolve(upstream)
            .await
            .map_err(|e| format!("cannot resolve {upstream}: {e}"))?;
        tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {upstream} ({addr}): {e}"))?;
        Ok(format!("{upstream} ({addr}) accepts connections"))
    };
    tokio::time::timeout(APP_CHECK_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{upstream} did not accept a connection within {}ms",
                APP_CHECK_TIMEOUT.as_millis()
            ))
        })
}
