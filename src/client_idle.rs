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
//! the app's and the peers' timeouts apply. Pingora gives each read of a connection's first
//! head 60 s of its own, which would cut a connection with no first request yet at 60 s
//! whatever the deadline; so the first bytes are read by `unreadable_head::Watch`, which runs
//! inside [`Guarded`] and so under the deadline. HTTP/2 connections are timed otherwise, as their
//! requests run on tasks of their own. Pingora has an HTTP/2 idle timeout (set in `server.rs`
//! as a backstop), but it starts only once the HTTP/2 handshake is done, drops the connection
//! without a GOAWAY, and Pingora gives the handshake no time limit, so a client that finished
//! TLS with ALPN h2 and never sent the connection preface kept its connection for ever. So an
//! HTTP/2 connection, too, must bring its first request head within `listen.idle_timeout`:
//! its streams' tasks say so through [`H2_CONNECTIONS`], where they also count the requests in
//! flight, so that at `listen.max_connections` an HTTP/2 connection with none can be closed to
//! make room (with a GOAWAY, which Pingora sends as at a graceful shutdown) in the same order
//! as HTTP/1 connections. One idle for `listen.idle_timeout` after a request is closed the
//! same way, with a GOAWAY, before Pingora's own idle timeout would drop it without one.

use std::collections::HashMap;
use std::net::SocketAddr;
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

/// HTTP/2 connections being served, by (local, peer) address. Their requests run on tasks of
/// their own (Pingora spawns one per stream), outside the connection task's task-locals, and
/// find their connection here. An entry lives as long as its connection is served.
static H2_CONNECTIONS: LazyLock<Mutex<H2Connections>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// (local, peer) address of an HTTP/2 connection → its requests' count.
type H2Connections = HashMap<(SocketAddr, SocketAddr), Arc<H2Conn>>;

/// How long a connection told to go away (to make room, or idle) may take to finish its
/// graceful close, which ends it as soon as it is done: the GOAWAY goes out, the client's
/// answer to the PING sent with it comes back (a round trip), the final GOAWAY names the last
/// request taken, and a request that crossed the first one on the wire is answered. A request
/// in flight then is still answered (the connection closes when the last one is done). With
/// 100 ms, a client 80 ms away lost a request that crossed the GOAWAY, unanswered and not
/// named (found by an audit).
const GOAWAY_GRACE: Duration = Duration::from_secs(2);

/// One HTTP/2 connection as the ceiling (`connection_cap`) sees it: it may be closed to make
/// room while no request is in flight on it, in the same order as HTTP/1 connections (by when
/// it would be closed for want of a request).
struct H2Conn {
    idle: Duration,
    state: Mutex<H2State>,
    /// Wakes the connection's task when the connection is chosen to make room, and when a
    /// request on it ends.
    changed: tokio::sync::Notify,
}

struct H2State {
    /// Requests whose heads reached the proxy and whose answers are not done yet.
    in_flight: usize,
    /// Whether any request head has come on the connection.
    seen_head: bool,
    /// When the connection is closed for want of a request while none is in flight: its opening
    /// plus `idle` before the first, the end of the last answer plus `idle` after
    /// ([`H2Conn::go_away_when_unused`] then closes it).
    deadline: Instant,
    /// Chosen to make room: it is sent a GOAWAY, and closed once no request is in flight.
    reclaimed: bool,
}

impl H2Conn {
    /// A connection opened at `opened`, with no request yet: closed for want of one at
    /// `opened + idle`.
    fn new(idle: Duration, opened: Instant) -> Arc<H2Conn> {
        Arc::new(H2Conn {
            idle,
            state: Mutex::new(H2State {
                in_flight: 0,
                seen_head: false,
                deadline: opened + idle,
                reclaimed: false,
            }),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// The state stays meaningful even if a thread panicked while holding the lock.
    fn state(&self) -> std::sync::MutexGuard<'_, H2State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once the connection has been chosen to make room, or has had no request in
    /// flight since its deadline (after a first request: before one, the connection task's
    /// own deadline closes it), has been told to go away (`goaway`, which starts Pingora's
    /// graceful close), and has no request in flight. Says which.
    async fn go_away_when_unused(&self, goaway: &tokio::sync::watch::Sender<bool>) -> Unused {
        let why = loop {
            let idle_until = {
                let mut state = self.state();
                if state.reclaimed {
                    break Unused::RoomNeeded;
                }
                let idle = state.seen_head && state.in_flight == 0;
                // On Tokio's clock, the one the sleep below keeps: the same as `Instant`'s,
                // except with time paused (tests), where `Instant` would stand still while the
                // sleep ended at once, again and again.
                let passed =
                    tokio::time::Instant::from_std(state.deadline) <= tokio::time::Instant::now();
                if idle && passed {
                    // Gone from the ceiling's choice too (`close_if_idle`).
                    state.reclaimed = true;
                    break Unused::Idle;
                }
                idle.then_some(state.deadline)
            };
            match idle_until {
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline.into()) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        };
        self.go_away(goaway).await;
        why
    }

    /// Tells the connection to go away (`goaway`, which starts Pingora's graceful close), and
    /// resolves once the GOAWAY has had [`GOAWAY_GRACE`] to reach the client and no request is
    /// in flight: the connection may then be closed, whether or not the client answered.
    async fn go_away(&self, goaway: &tokio::sync::watch::Sender<bool>) {
        goaway.send_replace(true);
        loop {
            tokio::time::sleep(GOAWAY_GRACE).await;
            if self.state().in_flight == 0 {
                return;
            }
            self.requests_ended().await;
        }
    }

    /// Resolves once no request is in flight on the connection.
    async fn requests_ended(&self) {
        // `notify_one` keeps a permit when no one waits: an end between the look and this
        // wait is not missed.
        while self.state().in_flight > 0 {
            self.changed.notified().await;
        }
    }
}

/// Pingora's own HTTP/2 idle timeout, for a listener whose idle time is `idle`: later than
/// [`H2Conn::go_away_when_unused`]'s, which tells the client to go away first. Pingora's drops
/// the connection without a word (a request sent just then fails instead of going on a new
/// connection); it stays for a connection not tracked here (no socket address to key it by).
pub fn h2_backstop(idle: Duration) -> Duration {
    idle + GOAWAY_GRACE + Duration::from_secs(1)
}

/// Why [`H2Conn::go_away_when_unused`] closed a connection.
enum Unused {
    /// Chosen to make room under `listen.max_connections`.
    RoomNeeded,
    /// No request for `listen.idle_timeout`.
    Idle,
}

impl crate::connection_cap::Reclaim for H2Conn {
    fn head_deadline(&self) -> Option<Instant> {
        let state = self.state();
        (!state.reclaimed && state.in_flight == 0).then_some(state.deadline)
    }

    fn close_if_idle(&self) -> bool {
        let mut state = self.state();
        if state.reclaimed || state.in_flight > 0 {
            return false;
        }
        state.reclaimed = true;
        drop(state);
        self.changed.notify_one();
        true
    }
}

/// A request in flight on an HTTP/2 connection, from its head reaching the proxy to the end of
/// its answer (or of its handling, however it ends): while one is, the connection is not
/// closed to make room. Nothing for an HTTP/1 request, whose connection task keeps that count
/// itself.
#[derive(Default)]
pub struct InFlight(Option<Arc<H2Conn>>);

impl InFlight {
    fn end(&mut self, ended: Instant) {
        if let Some(conn) = self.0.take() {
            let mut state = conn.state();
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.deadline = ended + conn.idle;
            }
            drop(state);
            conn.changed.notify_one();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.end(Instant::now());
    }
}

/// The request head is in: the deadline is off until the answer is done. Keep what this
/// returns until then (an HTTP/2 request's connection counts it as in flight).
pub fn head_received(session: &Session) -> InFlight {
    let _ = CLOCK.try_with(|clock| clock.set(None));
    if !session.is_http2() {
        return InFlight(None);
    }
    let local = session.server_addr().and_then(|a| a.as_inet());
    let peer = session.client_addr().and_then(|a| a.as_inet());
    let (Some(local), Some(peer)) = (local, peer) else {
        return InFlight(None);
    };
    let conn = H2_CONNECTIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(*local, *peer))
        .cloned();
    if let Some(conn) = &conn {
        let mut state = conn.state();
        state.in_flight += 1;
        state.seen_head = true;
    }
    InFlight(conn)
}

/// Serves an HTTP/2 connection, closing it if its first request head has not come within
/// `idle` of its opening (the TLS and HTTP/2 handshakes included), and offering it to be
/// closed to make room whenever no request is in flight on it.
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
    let opened = crate::tls_accept::opened();
    let conn = H2Conn::new(idle, opened);
    H2_CONNECTIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, conn.clone());
    crate::connection_cap::reclaimable(conn.clone());
    // The connection's own shutdown signal, which Pingora answers with a GOAWAY and a graceful
    // close (requests in flight are answered): raised when the process shuts down, or when
    // the connection is chosen to make room.
    let (goaway, watch) = tokio::sync::watch::channel(*shutdown.borrow());
    // Pingora's graceful close then waits for the client to answer a PING before the last
    // GOAWAY, for as long as the grace period lasts: a client that has stopped reading would
    // hold the shutdown that long. Once the GOAWAY has had its time to reach the client and no
    // request is in flight, the connection is closed here, as one closed to make room is.
    let relay = async {
        shutdown_started(shutdown).await;
        conn.go_away(&goaway).await;
    };
    // Pingora's HTTP/2 handshake watches neither the clock nor a shutdown: a connection that
    // never sends its preface would also hold a graceful shutdown for its whole grace period.
    // A second after the shutdown begins is enough for one whose first request is on its way
    // (Pingora then drains it with GOAWAY like any other).
    let deadline = opened + idle;
    let first_head = async {
        let why = tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {
                "no request head within the idle timeout"
            }
            () = shutdown_begun(shutdown, Duration::from_secs(1)) => {
                "no request head yet, and peergate is shutting down"
            }
        };
        if conn.state().seen_head {
            std::future::pending::<()>().await;
        }
        why
    };
    let served = tokio::select! {
        served = inner.process_new(session, &watch) => served,
        why = first_head => {
            log::debug!("closed an HTTP/2 client connection: {why} ({idle:?})");
            None
        }
        why = conn.go_away_when_unused(&goaway) => {
            match why {
                Unused::RoomNeeded => log::debug!(
                    "closed an HTTP/2 client connection: its place was needed \
                     (listen.max_connections)"
                ),
                Unused::Idle => log::debug!(
                    "closed an HTTP/2 client connection: no request for {idle:?} \
                     (listen.idle_timeout)"
                ),
            }
            None
        }
        () = relay => {
            log::debug!("closed an HTTP/2 client connection: peergate is shutting down");
            None
        }
    };
    // The connection is done once its streams' last frames are sent, which is before their
    // tasks have finished (the log line, the metrics): until they have, it still counts as
    // served, so a graceful shutdown does not exit between the two (`lifecycle::Tracked`).
    conn.requests_ended().await;
    let mut connections = H2_CONNECTIONS.lock().unwrap_or_else(|p| p.into_inner());
    // Only this connection's own entry (a new connection could reuse the addresses).
    if connections.get(&key).is_some_and(|c| Arc::ptr_eq(c, &conn)) {
        connections.remove(&key);
    }
    served
}

/// Resolves `after` the graceful shutdown begins; never, if it does not. For connections that
/// have no request in flight yet (a handshake, an HTTP/2 preface), which would otherwise hold
/// the shutdown for as long as their own limit allows.
pub async fn shutdown_begun(shutdown: &ShutdownWatch, after: Duration) {
    shutdown_started(shutdown).await;
    tokio::time::sleep(after).await;
}

/// Resolves as soon as the graceful shutdown begins (at once if it has); never, if it does not.
pub async fn shutdown_started(shutdown: &ShutdownWatch) {
    let mut stopping = shutdown.clone();
    while !*stopping.borrow_and_update() {
        if stopping.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Whether no request head has reached the proxy's phases since this connection opened or its
/// last answer ended (false outside an HTTP/1 connection's task).
pub fn awaiting_head() -> bool {
    CLOCK
        .try_with(|clock| clock.get().is_some())
        .unwrap_or(false)
}

/// The answer was done at `ended`: the next head has `listen.idle_timeout` from then (on an
/// HTTP/2 connection, once no other request is in flight). `request` is what
/// [`head_received`] returned for it.
pub fn answer_finished(ended: Instant, mut request: InFlight) {
    let _ = CLOCK.try_with(|clock| clock.set(Some(ended + clock.idle)));
    request.end(ended);
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
///
/// And a pipelined request (RFC 9112 §9.3.2: sent before the answer to the one before it) is
/// served after that answer. Left to Pingora's default, its bytes arriving while the answer
/// was awaited broke the exchange on the routes Pingora proxies itself: the client got a 400
/// for a request the app had acted on.
pub fn limit(session: &mut Session, idle_seconds: u64) {
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(idle_seconds));
    }
    session.set_write_timeout(Some(Duration::from_secs(idle_seconds)));
    if let pingora::protocols::http::ServerSession::H1(h1) = session.as_downstream_mut() {
        h1.set_pipelining_enabled(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection_cap::Reclaim;

    fn conn(opened: Instant) -> Arc<H2Conn> {
        H2Conn::new(Duration::from_secs(75), opened)
    }

    /// What [`head_received`] does for a request on `conn`.
    fn start(conn: &Arc<H2Conn>) -> InFlight {
        let mut state = conn.state();
        state.in_flight += 1;
        state.seen_head = true;
        drop(state);
        InFlight(Some(conn.clone()))
    }

    /// An HTTP/2 connection is offered to make room only while no request is in flight, by
    /// when it would be closed for want of one, and only once.
    #[test]
    fn an_http2_connection_makes_room_only_with_nothing_in_flight() {
        let opened = Instant::now();
        let c = conn(opened);
        assert_eq!(c.head_deadline(), Some(opened + Duration::from_secs(75)));

        let (mut first, second) = (start(&c), start(&c));
        assert_eq!(c.head_deadline(), None);
        assert!(!c.close_if_idle());
        drop(second);
        assert_eq!(c.head_deadline(), None, "one is still in flight");
        let ended = opened + Duration::from_secs(3);
        first.end(ended);
        assert_eq!(c.head_deadline(), Some(ended + Duration::from_secs(75)));
        drop(first);
        assert_eq!(c.state().in_flight, 0, "a request ends once");
        assert_eq!(c.head_deadline(), Some(ended + Duration::from_secs(75)));

        assert!(c.close_if_idle());
        assert_eq!(c.head_deadline(), None);
        assert!(!c.close_if_idle(), "its place was given back already");
    }

    /// A connection chosen to make room is let go once its GOAWAY had time to go out, and a
    /// request that crossed the GOAWAY is answered first.
    #[tokio::test(start_paused = true)]
    async fn a_connection_chosen_to_make_room_waits_for_requests_that_crossed_it() {
        let c = conn(Instant::now());
        let (goaway, watch) = tokio::sync::watch::channel(false);
        assert!(c.close_if_idle());
        let crossed = start(&c);
        let made_room = c.go_away_when_unused(&goaway);
        tokio::pin!(made_room);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), &mut made_room)
                .await
                .is_err(),
            "let go with a request in flight"
        );
        assert!(*watch.borrow(), "no GOAWAY");
        drop(crossed);
        let started = tokio::time::Instant::now();
        assert!(matches!(made_room.await, Unused::RoomNeeded));
        assert!(started.elapsed() >= GOAWAY_GRACE);
    }

    /// After its first request, a connection with none in flight for its idle time is told to
    /// go away, and let go once the GOAWAY had time to go out; the idle time runs again from
    /// the end of each request, and not at all while one is in flight.
    /// (Real time: the deadlines are `std` instants, which paused Tokio time does not move.)
    #[tokio::test]
    async fn an_idle_http2_connection_is_told_to_go_away() {
        let idle = Duration::from_millis(300);
        let c = H2Conn::new(idle, Instant::now());
        let (goaway, watch) = tokio::sync::watch::channel(false);
        let unused = c.go_away_when_unused(&goaway);
        tokio::pin!(unused);
        // Before a first request the connection task's own deadline applies, not this one.
        let not_yet = tokio::time::timeout(idle * 2, &mut unused).await;
        assert!(not_yet.is_err(), "told to go away before any request");

        let first = start(&c);
        let waited = tokio::time::timeout(idle * 2, &mut unused).await;
        assert!(waited.is_err(), "told to go away with a request in flight");
        let ended = Instant::now();
        drop(first);
        let why = tokio::time::timeout(Duration::from_secs(10), unused)
            .await
            .expect("not told to go away");
        assert!(matches!(why, Unused::Idle));
        assert!(*watch.borrow(), "no GOAWAY");
        let waited = ended.elapsed();
        assert!(waited >= idle + GOAWAY_GRACE, "{waited:?}");
        assert!(!c.close_if_idle(), "offered to make room after going away");
    }
}
