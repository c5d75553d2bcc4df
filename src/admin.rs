//! The admin listener: `/metrics` for Prometheus, `/healthz` and `/readyz` for orchestrators.
//!
//! It runs on a thread of its own, outside Pingora's services. Pingora closes every service's
//! listener when SIGTERM starts the drain, and the drain lasts up to `shutdown.grace_period` +
//! `shutdown.timeout` (30 s by default): a liveness probe refused for that long gets the process
//! killed in the middle of the drain it was asked for. Here `/healthz` answers until the process
//! exits, and `/readyz` turns 503 as soon as the proxy listeners close (its listener check).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;

use crate::clock::unix_now;
use crate::config::HostPort;
use crate::local_app::{self, Listener};
use crate::problem::{Code, Problem};
use crate::state::Shared;
use crate::throttle::{more_since, Throttle};

/// How long `/readyz` waits for the app to accept a connection (name resolution included);
/// well under the 1 s probe timeout orchestrators use by default.
const APP_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a connection may take to send a request head, and may stay idle between requests.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The most connections the admin listener serves at once. Prometheus keeps one, each probe
/// opens one for a moment; without a ceiling, anyone who can reach the listener (the
/// Kubernetes example binds it to the pod's address) could hold a task and its buffers per
/// connection up to the open-files limit.
pub const MAX_CONNECTIONS: usize = 64;

/// The admin listener's connections: at [`MAX_CONNECTIONS`], the one idle longest (waiting for
/// a request head) is closed to make room for the new one, as on the proxy listeners
/// (`connection_cap`), so that connections opened and left idle cannot keep a probe out; a
/// new connection is closed unanswered only when every one is in a request.
#[derive(Default)]
struct Connections {
    open: Vec<(tokio::task::AbortHandle, Arc<Activity>)>,
    /// One log line a second at most while connections are closed to make room or refused.
    said: Throttle,
}

/// Whether a connection is answering a request, and since when it is idle otherwise.
struct Activity {
    busy: AtomicBool,
    /// When the connection last became idle, in [`Activity::now`]'s milliseconds.
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            busy: AtomicBool::new(false),
            idle_since: AtomicU64::new(Self::now()),
        })
    }

    /// Milliseconds since the first call: a clock for ordering connections by idleness.
    fn now() -> u64 {
        static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
        u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a request under way until the returned guard is dropped.
    fn request(self: &Arc<Self>) -> Busy {
        self.busy.store(true, Ordering::Release);
        Busy(self.clone())
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(Activity::now(), Ordering::Release);
        self.0.busy.store(false, Ordering::Release);
    }
}

impl Connections {
    /// Whether a new connection may be served: below the ceiling, or once the connection idle
    /// longest has been closed to make room.
    fn admit(&mut self) -> bool {
        self.open.retain(|(task, _)| !task.is_finished());
        if self.open.len() < MAX_CONNECTIONS {
            return true;
        }
        let idlest = self
            .open
            .iter()
            .enumerate()
            .filter(|(_, (_, activity))| !activity.busy.load(Ordering::Acquire))
            .min_by_key(|(_, (_, activity))| activity.idle_since.load(Ordering::Acquire))
            .map(|(i, _)| i);
        let made_room = match idlest {
            Some(i) => {
                let (task, _) = self.open.swap_remove(i);
                task.abort();
                true
            }
            None => false,
        };
        if let Some(left_out) = self.said.admit_now() {
            let did = if made_room {
                "closing the one idle longest to make room"
            } else {
                "every one is in a request: closing the new one"
            };
            log::warn!(
                "admin listener: {MAX_CONNECTIONS} connections open, as many as it serves; \
                 {did}{}",
                more_since(left_out)
            );
        }
        made_room
    }
}

/// The running admin listener. Dropping it stops it (after the request being answered).
pub struct AdminListener {
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl AdminListener {
    /// Binds `addr` now, so that a port in use is an error at start, and serves on a thread.
    pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> Result<AdminListener, String> {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| crate::server::cannot_listen("listen.admin", addr, &e))?;
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let loopback = addr.ip().is_loopback();
        let thread = std::thread::Builder::new()
            .name("peergate-admin".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(serve(listener, shared, stopped, loopback)),
                    Err(e) => log::error!("admin listener {addr}: cannot start: {e}"),
                }
            })
            .map_err(|e| format!("admin listener {addr}: cannot start a thread: {e}"))?;
        Ok(AdminListener {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for AdminListener {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `loopback`: the listener serves this machine only, so a `Host` naming anything but an
/// address or `localhost` is a rebound page's (see [`crate::local_app`]).
async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
    loopback: bool,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            log::error!("admin listener: {e}");
            return;
        }
    };
    let mut connections = tokio::task::JoinSet::new();
    let mut admitted = Connections::default();
    // A descriptor held in reserve: when the process runs out of them (a flood of client
    // connections up to the open-files limit), it is let go so that this listener can still
    // accept, and a liveness probe still gets its 200 instead of killing a process that works.
    let mut reserve = open_reserve();
    loop {
        let accepted = tokio::select! {
            () = stop.notified() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if out_of_descriptors(&e) && reserve.is_some() => {
                // The next accept takes the descriptor let go here.
                log::warn!(
                    "admin listener: out of file descriptors ({e}); using the one held in reserve"
                );
                reserve = None;
                continue;
            }
            Err(e) => {
                // Out of descriptors with none in reserve, most likely: wait rather than spin.
                log::warn!("admin listener: cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                if reserve.is_none() {
                    reserve = open_reserve();
                }
                continue;
            }
        };
        if reserve.is_none() {
            reserve = open_reserve();
        }
        // Reap the finished ones so that the set does not grow with every connection served.
        while connections.try_join_next().is_some() {}
        if !admitted.admit() {
            // Dropping the stream closes the connection, unanswered.
            continue;
        }
        let shared = shared.clone();
        let activity = Activity::new();
        let watched = activity.clone();
        let task = connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let shared = shared.clone();
                let busy = watched.request();
                async move {
                    let _busy = busy;
                    let checked = local_app::check(req.headers(), false, loopback, Listener::Admin);
                    let resp = match checked {
                        Ok(())
                            if req.method() == http::Method::GET
                                || req.method() == http::Method::HEAD =>
                        {
                            respond(&shared, req.uri().path()).await
                        }
                        Ok(()) => problem_reply(&Problem::get_or_head_only(format!(
                            "the admin listener answers GET and HEAD, not {}",
                            req.method()
                        ))),
                        Err(problem) => problem_reply(&problem),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                log::debug!("admin listener: connection: {e}");
            }
        });
        admitted.open.push((task, activity));
    }
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let body = body.into();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, value);
    }
    resp
}

fn problem_reply(problem: &Problem) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = reply(status, "application/problem+json", problem.body());
    if let Some(methods) = problem.allow {
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static(methods));
    }
    resp
}

/// The answer to a GET or HEAD of `path`.
async fn respond(shared: &Shared, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => {
            // The cache drops expired nonces only when a shard needs room, so without a sweep
            // the gauge would count nonces that no longer block anything, and a gateway whose
            // traffic stopped would keep their memory. A scrape sweeps: O(entries) on this
            // listener's own thread, at the operator's scrape interval, a few milliseconds for
            // a million entries.
            let replay = &shared.replay;
            replay.purge_expired(unix_now());
            shared
                .metrics
                .replay_cache_entries
                .set(i64::try_from(replay.len()).unwrap_or(i64::MAX));
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                shared.metrics.render(),
            )
        }
        "/healthz" => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        "/readyz" => {
            let (ready, body) = readiness(shared).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "text/plain; charset=utf-8", body)
        }
        _ => problem_reply(&Problem::new(
            404,
            Code::NoRoute,
            "No such page",
            "the admin listener serves /metrics, /healthz and /readyz",
        )),
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
    // Never a failure: the configuration in force serves; the line says what waits.
    let pending = shared
        .restart_pending
        .lock()
        .map(|p| p.join(", "))
        .unwrap_or_default();
    let config = if pending.is_empty() {
        "no changed setting waits for a restart".to_string()
    } else {
        format!("changed settings wait for a restart: {pending}")
    };
    let checks: [(&str, Result<String, String>); 5] = [
        ("listeners", listeners),
        (
            "identity",
            Ok(format!(
                "{} (key id {})",
                public.short_id(),
                public.key_id()
            )),
        ),
        (
            "allowlist",
            Ok(crate::allowlist::peers_counted(snap.peer_count())),
        ),
        ("app", app),
        ("config", Ok(config)),
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
    if shared.lifecycle.stopping().now() {
        return Err(
            "shutting down: the proxy listeners are closed while requests in flight finish".into(),
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// At the ceiling, the connection idle longest is closed, never one answering a request;
    /// with every one answering, the new connection is refused.
    #[tokio::test]
    async fn at_the_ceiling_the_idlest_goes_and_busy_ones_stay() {
        let mut connections = Connections::default();
        let mut requests = Vec::new();
        for i in 0..MAX_CONNECTIONS {
            let task = tokio::spawn(std::future::pending::<()>()).abort_handle();
            let activity = Activity::new();
            // Idle since i ms after the epoch: the first is the idlest.
            activity
                .idle_since
                .store(u64::try_from(i).unwrap(), Ordering::Release);
            requests.push(activity.request());
            connections.open.push((task, activity));
        }
        assert!(!connections.admit(), "room made with every connection busy");
        assert_eq!(connections.open.len(), MAX_CONNECTIONS);

        // Two done with their requests: the one idle longer goes.
        let (third, fifth) = (connections.open[3].clone(), connections.open[5].clone());
        drop(requests.swap_remove(5));
        drop(requests.swap_remove(3));
        third.1.idle_since.store(1, Ordering::Release);
        fifth.1.idle_since.store(2, Ordering::Release);
        assert!(connections.admit());
        assert_eq!(connections.open.len(), MAX_CONNECTIONS - 1);
        tokio::task::yield_now().await;
        assert!(third.0.is_finished(), "the idlest was not closed");
        assert!(!fifth.0.is_finished());
    }
}
