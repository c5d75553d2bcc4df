//! What the process needs to start and stop cleanly: which listeners must be up for `/readyz`,
//! and which connections are still being served, so that a graceful shutdown ends as soon as
//! the last request in flight has finished rather than after a fixed wait.
//!
//! Pingora's SIGTERM sequence (pingora-core `server/mod.rs`) is: broadcast the shutdown, which
//! ends every accept loop (the listening sockets close, new connections are refused), turns
//! keep-alive off and wakes idle keep-alive connections so they close; then sleep
//! `grace_period_seconds`, a fixed sleep whether or not anything is still running; then shut the
//! runtimes down, which cancels whatever task is left, waiting at most
//! `graceful_shutdown_timeout_seconds` for their threads. [`Tracked`] counts the connections of
//! a proxy service, and [`exit_when_drained`] ends the process during that fixed sleep as soon
//! as the count is zero.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::listening::Service;

use crate::config::Config;
use crate::state::Shared;

/// Fixed at start: the listeners `/readyz` checks, the shutdown grace period, and the count of
/// connections being served.
pub struct Lifecycle {
    /// The proxy listeners (the admin listener needs no check: it is answering).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    /// How long requests in flight may take to finish after SIGTERM.
    pub grace_period: Duration,
    drain: Arc<Drain>,
}

impl Lifecycle {
    pub fn new(config: &Config) -> Lifecycle {
        Lifecycle {
            listeners: vec![
                ("inbound", config.listen.inbound.0),
                ("outbound", config.listen.outbound.0),
            ],
            grace_period: config.shutdown.grace_period.0,
            drain: Arc::new(Drain::default()),
        }
    }

    /// Wraps a service's app so that its connections are counted.
    pub fn track<A>(&self, app: A) -> Tracked<A> {
        self.lock().services += 1;
        Tracked {
            inner: Arc::new(app),
            drain: self.drain.clone(),
        }
    }

    /// Whether a graceful shutdown has begun, for the answers still being written.
    pub fn stopping(&self) -> Stopping {
        Stopping(self.drain.clone())
    }

    /// Connections being served now, over every tracked service.
    pub fn connections(&self) -> usize {
        self.lock().active
    }

    /// Waits until every tracked service has stopped accepting and served its last connection,
    /// or until `deadline`; `true` when drained.
    pub fn wait_drained(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        loop {
            let expected = state.services.max(self.listeners.len());
            if state.closed >= expected && state.active == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.drain.changed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, DrainState> {
        self.drain.lock()
    }
}

#[derive(Default)]
struct Drain {
    state: Mutex<DrainState>,
    changed: Condvar,
    /// Set once a tracked service's accept loops have ended: read per answer, so not behind
    /// the lock.
    stopping: AtomicBool,
}

/// A handle on whether the gateway is shutting down. An answer written then says
/// `Connection: close` (RFC 9112 §9.6): the connection is closed after it, and a client told it
/// would be kept would send its next request, a POST maybe, into the close. Pingora turns
/// keep-alive off for connections between requests, not for answers still to come.
#[derive(Clone)]
pub struct Stopping(Arc<Drain>);

impl Stopping {
    pub fn now(&self) -> bool {
        self.0.stopping.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct DrainState {
    /// Services wrapped by [`Lifecycle::track`].
    services: usize,
    /// Services whose accept loops have ended (shutdown has begun).
    closed: usize,
    /// Connections being served (for HTTP/1.1 a whole keep-alive connection, for HTTP/2 the
    /// connection with all its streams).
    active: usize,
}

impl Drain {
    /// The counters stay meaningful even if a thread panicked while holding the lock.
    fn lock(&self) -> MutexGuard<'_, DrainState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut DrainState)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

/// Counts one connection for as long as it lives, also when its task is cancelled.
struct Busy(Arc<Drain>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|s| s.active = s.active.saturating_sub(1));
    }
}

/// A Pingora app whose connections are counted; otherwise it is the app it wraps.
pub struct Tracked<A> {
    inner: Arc<A>,
    drain: Arc<Drain>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Tracked<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.drain.update(|s| s.active += 1);
        let _busy = Busy(self.drain.clone());
        self.inner.process_new(session, shutdown).await
    }

    /// Runs once the service's accept loops have ended; the wrapped cleanup wakes idle
    /// keep-alive connections so they close.
    async fn cleanup(&self) {
        self.drain.stopping.store(true, Ordering::Relaxed);
        self.inner.cleanup().await;
        self.drain.update(|s| s.closed += 1);
    }
}

/// A Pingora service whose connections count for graceful shutdown. Every proxy listener
/// must be built this way (`pingora::proxy::http_proxy(conf, inner)`, options set on it, then
/// this): the early exit waits for every listener of [`Lifecycle::listeners`], and a listener
/// built otherwise is never seen as closed, so shutdown falls back to the full grace period.
pub fn tracked_service<A>(name: &str, app: A, shared: &Shared) -> Service<Tracked<A>>
where
    A: ServerApp + Send + Sync + 'static,
{
    Service::new(name.to_string(), shared.lifecycle.track(app))
}

/// For `peergate run`: once a graceful shutdown reaches its grace period, ends the process
/// (status 0) as soon as no connection is left, instead of sleeping the whole grace period.
/// When the grace period runs out first, Pingora goes on as usual: it cancels what is left and
/// exits.
pub fn exit_when_drained(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    shared: Arc<Shared>,
) {
    let spawned = std::thread::Builder::new()
        .name("peergate-drain".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    let lifecycle = &shared.lifecycle;
                    let start = Instant::now();
                    // The configuration caps the grace period at a year; should it still be
                    // too long for the clock, the wait is a year rather than an overflow.
                    let deadline = start
                        .checked_add(lifecycle.grace_period)
                        .or_else(|| start.checked_add(crate::config::units::MAX_DURATION))
                        .unwrap_or(start);
                    let drained = lifecycle.wait_drained(deadline);
                    // Pingora announces the end of the grace period before it cancels what is
                    // left: a drain seen after that is the cancellation, not requests finishing.
                    if drained && !grace_over(&mut phases) {
                        log::info!(
                            "graceful shutdown: every request finished after {:.3}s; exiting",
                            start.elapsed().as_secs_f64()
                        );
                        std::process::exit(0);
                    }
                    // When Pingora ended the grace period first, it has already cut them,
                    // and the count is 0.
                    match lifecycle.connections() {
                        0 => log::warn!(
                            "graceful shutdown: connections still open after the grace period ({:?}) were cut",
                            lifecycle.grace_period
                        ),
                        open => log::warn!(
                            "graceful shutdown: {open} connection(s) still open after the grace period ({:?}); they are cut now",
                            lifecycle.grace_period
                        ),
                    }
                    return;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch the shutdown ({e}); SIGTERM will wait the whole grace period");
    }
}

/// Whether Pingora has moved past the grace period (or is gone).
fn grace_over(phases: &mut tokio::sync::broadcast::Receiver<ExecutionPhase>) -> bool {
    use tokio::sync::broadcast::error::TryRecvError;
    loop {
        match phases.try_recv() {
            Ok(ExecutionPhase::ShutdownRuntimes | ExecutionPhase::Terminated) => return true,
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Closed) => return true,
        }
    }
}

/// Whether this process listens on `addr`. On Linux the kernel's socket tables say so without
/// touching the listener (a test connection would make a TLS listener log a handshake error on
/// every probe); elsewhere a TCP connection is tried.
pub async fn listening(addr: SocketAddr) -> Result<(), String> {
    let port = addr.port();
    let from_proc = tokio::task::spawn_blocking(move || owns_listening_socket(port))
        .await
        .map_err(|e| format!("the listener check failed: {e}"))?;
    match from_proc {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("nothing in this process listens on {addr}")),
        Err(_) => connect_probe(addr).await,
    }
}

async fn connect_probe(addr: SocketAddr) -> Result<(), String> {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    match tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(target),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot connect to {target}: {e}")),
        Err(_) => Err(format!("no answer from {target} within 300ms")),
    }
}

/// `Ok(true)` when one of this process's file descriptors is a TCP socket listening on `port`;
/// `Err` when the tables cannot be read (not Linux, no /proc).
pub fn owns_listening_socket(port: u16) -> io::Result<bool> {
    let mut inodes = HashSet::new();
    let mut read_any = false;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        read_any = true;
        inodes.extend(listening_inodes(&text, port));
    }
    if !read_any {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no /proc socket tables",
        ));
    }
    if inodes.is_empty() {
        return Ok(false);
    }
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let inode = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'));
        if inode.is_some_and(|i| inodes.contains(i)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The inodes of the sockets in LISTEN state (`0A`) on `port` in one `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (*state == "0A" && local_port == port && *inode != "0").then(|| inode.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_found_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inodes(table, 8080), vec!["4242".to_string()]);
        assert_eq!(listening_inodes(table, 80), vec!["4444".to_string()]);
        assert!(listening_inodes(table, 443).is_empty());
    }

    #[tokio::test]
    async fn a_listener_of_this_process_is_seen_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(listening(addr).await, Ok(()));
        drop(listener);
        assert!(listening(addr).await.is_err());
    }
}
