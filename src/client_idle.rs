//! How long a client's connection may go without a complete request head.
//!
//! Left to itself, Pingora keeps an HTTP/1.1 connection open for as long as the client likes
//! once the first request on it has been read (its keep-alive then has no timeout), and an
//! HTTP/2 connection too; and it times a request head only per read, so a client that sends
//! one byte of a head every minute keeps a connection for ever. On the inbound listener, which
//! faces the internet, that lets anyone hold sockets and memory for nothing.
//!
//! So, per HTTP/1 connection, [`Guarded`] keeps a deadline: a complete request head must have
//! arrived within `listen.idle_timeout` of the connection opening or of the previous answer
//! ending. The proxy's `request_filter` (the head is in) calls [`head_received`], its
//! `logging` (the answer is done) calls [`answer_finished`]; both only touch a value of the
//! connection's own task. When the deadline passes, the connection is dropped, unanswered, as
//! a timed-out keep-alive connection is; at the listener's `listen.max_connections`,
//! `connection_cap` brings the deadline of the connection waiting longest forward to now, to
//! make room. While a request is in flight nothing is timed here:
//! the app's and the peers' timeouts apply. HTTP/2 connections get Pingora's own idle timeout
//! instead (set in `server.rs`), as their requests run on tasks of their own; but that one
//! starts only once the HTTP/2 handshake is done, and Pingora gives the handshake no time
//! limit, so a client that finished TLS with ALPN h2 and never sent the connection preface kept
//! its connection for ever. So an HTTP/2 connection, too, must bring its first request head
//! within `listen.idle_timeout`: its streams' tasks say so through [`H2_AWAITING`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;

tokio::task_local! {
    static CLOCK: Arc<HeadClock>;
}

/// The deadline of one connection's next request head; `None` while a request is in flight.
struct HeadClock {
    idle: Duration,
    deadline: Mutex<Option<Instant>>,
    /// Wakes [`HeadClock::expired`] when the deadline is brought forward to make room
    /// (`connection_cap`).
    moved: tokio::sync::Notify,
}

impl HeadClock {
    fn set(&self, deadline: Option<Instant>) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = deadline;
        }
    }

    fn get(&self) -> Option<Instant> {
        self.deadline.lock().ok().and_then(|d| *d)
    }

    /// Resolves once the deadline has passed with no head in: sleeps to the deadline in force
    /// (or for `idle` while a request is in flight), then looks again, so the request path
    /// never has to wake it; only a deadline brought forward does.
    async fn expired(&self) {
        loop {
            let now = Instant::now();
            let wait = match self.get() {
                Some(deadline) if deadline <= now => return,
                Some(deadline) => deadline,
                None => now + self.idle,
            };
            tokio::select! {
                () = tokio::time::sleep_until(wait.into()) => {}
                () = self.moved.notified() => {}
            }
        }
    }
}

impl crate::connection_cap::Reclaim for HeadClock {
    fn head_deadline(&self) -> Option<Instant> {
        self.get()
    }

    fn close_if_idle(&self) -> bool {
        let Ok(mut deadline) = self.deadline.lock() else {
            return false;
        };
        if deadline.is_none() {
            return false;
        }
        *deadline = Some(Instant::now());
        drop(deadline);
        self.moved.notify_one();
        true
    }
}

/// HTTP/2 connections still waiting for their first request head, by (local, peer) address,
/// with the flag their first stream sets. An entry lives from the connection's start until its
/// first request or its end, whichever comes first.
static H2_AWAITING: LazyLock<Mutex<Awaiting>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// (local, peer) address of a connection → whether its first request head has come.
type Awaiting = HashMap<(SocketAddr, SocketAddr), Arc<AtomicBool>>;

/// The request head is in: the deadline is off until the answer is done (HTTP/1), or for good
/// (HTTP/2, whose first request this may be).
pub fn head_received(session: &Session) {
    let _ = CLOCK.try_with(|clock| clock.set(None));
    if session.is_http2() {
        let local = session.server_addr().and_then(|a| a.as_inet());
        let peer = session.client_addr().and_then(|a| a.as_inet());
        if let (Some(local), Some(peer), Ok(mut awaiting)) = (local, peer, H2_AWAITING.lock()) {
            if let Some(seen) = awaiting.remove(&(*local, *peer)) {
                seen.store(true, Ordering::Release);
            }
        }
    }
}

/// Serves an HTTP/2 connection, closing it if its first request head has not come within
/// `idle` of its opening (the TLS and HTTP/2 handshakes included).
async fn serve_h2<A: ServerApp + Send + Sync + 'static>(
    inner: &Arc<A>,
    session: Stream,
    shutdown: &ShutdownWatch,
    idle: Duration,
) -> Option<Stream> {
    let digest = session.get_socket_digest();
    let key = digest
        .as_ref()
        .and_then(|d| Some((*d.local_addr()?.as_inet()?, *d.peer_addr()?.as_inet()?)));
    let Some(key) = key else {
        return inner.process_new(session, shutdown).await;
    };
    let seen = Arc::new(AtomicBool::new(false));
    if let Ok(mut awaiting) = H2_AWAITING.lock() {
        awaiting.insert(key, seen.clone());
    }
    // Pingora's HTTP/2 handshake watches neither the clock nor a shutdown: a connection that
    // never sends its preface would also hold a graceful shutdown for its whole grace period.
    // A second after the shutdown begins is enough for one whose first request is on its way
    // (Pingora then drains it with GOAWAY like any other).
    let deadline = crate::tls_accept::opened() + idle;
    let first_head = async {
        let why = tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {
                "no request head within the idle timeout"
            }
            () = shutdown_begun(shutdown, Duration::from_secs(1)) => {
                "no request head yet, and peergate is shutting down"
            }
        };
        if seen.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        why
    };
    let served = tokio::select! {
        served = inner.process_new(session, shutdown) => served,
        why = first_head => {
            log::debug!("closed an HTTP/2 client connection: {why} ({idle:?})");
            None
        }
    };
    if let Ok(mut awaiting) = H2_AWAITING.lock() {
        // Only this connection's own entry (a new connection could reuse the addresses).
        if awaiting.get(&key).is_some_and(|s| Arc::ptr_eq(s, &seen)) {
            awaiting.remove(&key);
        }
    }
    served
}

/// Resolves `after` the graceful shutdown begins; never, if it does not. For connections that
/// have no request in flight yet (a handshake, an HTTP/2 preface), which would otherwise hold
/// the shutdown for as long as their own limit allows.
pub async fn shutdown_begun(shutdown: &ShutdownWatch, after: Duration) {
    let mut stopping = shutdown.clone();
    while !*stopping.borrow_and_update() {
        if stopping.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
    tokio::time::sleep(after).await;
}

/// Whether no request head has reached the proxy's phases since this connection opened or its
/// last answer ended (false outside an HTTP/1 connection's task).
pub fn awaiting_head() -> bool {
    CLOCK
        .try_with(|clock| clock.get().is_some())
        .unwrap_or(false)
}

/// The answer was done at `ended`: the next head has `listen.idle_timeout` from then.
pub fn answer_finished(ended: Instant) {
    let _ = CLOCK.try_with(|clock| clock.set(Some(ended + clock.idle)));
}

/// A proxy whose HTTP/1 connections are closed when no complete request head arrives in time.
pub struct Guarded<A> {
    inner: Arc<A>,
    idle: Duration,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, idle: Duration) -> Self {
        Guarded {
            inner: Arc::new(inner),
            idle,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if session.selected_alpn_proto() == Some(ALPN::H2) {
            return serve_h2(&self.inner, session, shutdown, self.idle).await;
        }
        let clock = Arc::new(HeadClock {
            idle: self.idle,
            deadline: Mutex::new(Some(crate::tls_accept::opened() + self.idle)),
            moved: tokio::sync::Notify::new(),
        });
        crate::connection_cap::reclaimable(clock.clone());
        let serve = self.inner.process_new(session, shutdown);
        CLOCK
            .scope(clock.clone(), async {
                tokio::select! {
                    biased;
                    reusable = serve => reusable,
                    () = clock.expired() => {
                        log::debug!(
                            "closed a client connection: no complete request head within {:?}, \
                             or its place was needed (listen.max_connections)",
                            self.idle
                        );
                        None
                    }
                }
            })
            .await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Sets Pingora's keep-alive for this connection's next request to `listen.idle_timeout`, when
/// the connection is kept at all (`Connection: close`, and HTTP/1.0 without `keep-alive`,
/// stay closed): each read of the next head then times out too, not only the whole head.
///
/// And the same limit on writing the answer: a client that takes no bytes of it for that long
/// is cut off. Pingora's server session has no write timeout of its own, so a client that
/// stopped reading held its connection, the request in flight and the upstream connection
/// behind it (on the outbound side, the peer's and its app's too) for as long as it liked.
pub fn limit(session: &mut Session, idle_seconds: u64) {
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(idle_seconds));
    }
    session.set_write_timeout(Some(Duration::from_secs(idle_seconds)));
}
