//! A ceiling on the client connections one proxy listener serves at once
//! (`listen.max_connections`).
//!
//! Each open client connection holds 40–50 KiB (benches/HISTORY.md, change 31) for as long as it
//! lives, and an idle one lives up to `listen.idle_timeout`. Without a ceiling, anyone who can
//! reach a listener could hold as many as the open-files limit allows (hundreds of thousands
//! under systemd's default), and the memory with them.
//!
//! At the ceiling, room is made first: the HTTP/1 connection that has waited longest for a
//! request head (idle between requests, or still sending its first head) is closed, as nginx
//! closes its idle keep-alive connections when it runs out of `worker_connections`. Closing an
//! idle connection costs its client a reconnect (a kept connection can always be closed, and
//! clients and peergate's own pool retry an idempotent request on one); refusing a new one
//! costs a request. A connection sending its head a byte at a time makes room too, so such
//! clients cannot hold the listener. An HTTP/2 connection with no request in flight makes room
//! the same way, by the same order (`client_idle`; it gets a GOAWAY first). Only when every
//! connection has a request in flight is the new connection closed as soon as it is accepted,
//! before any TLS handshake is spent on it ([`AtCapacity`], Pingora's connection filter), as
//! Envoy does at its connection limit; one is admitted again as soon as a place is free.
//! nginx stops accepting instead, which leaves new connections waiting in the kernel's queue
//! with no sign they are refused; a prompt close tells the client at once, and a peer's
//! gateway that opened it answers its app with a 502 rather than a timeout.
//!
//! What is counted is the connections being served ([`Capped`], around the proxy), from the
//! moment they are accepted: the inbound listener's TLS handshake runs inside it
//! (`tls_accept`), and a connection still in its handshake can be closed to make room like one
//! waiting for a head, by the same order (whichever must be done soonest, which is whichever
//! opened or was answered first). The filter and [`Capped`] act a moment apart, so a burst of
//! new connections can pass the filter together; [`Capped`] holds those to the ceiling (making
//! room or closing them), so the ceiling is exact.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::ConnectionFilter;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::metrics::Direction;
use crate::state::Shared;
use crate::throttle::{more_since, Throttle};

/// A connection that can be closed to make room while it waits for a request head
/// (`client_idle`'s clock of an HTTP/1 connection, or its count of an HTTP/2 connection's
/// requests in flight) or for its TLS handshake (`tls_accept`).
pub trait Reclaim: Send + Sync {
    /// When the connection will be closed for want of a request head; `None` while a request
    /// is in flight.
    fn head_deadline(&self) -> Option<Instant>;
    /// Closes the connection now if it still waits for a request head; whether it will close.
    fn close_if_idle(&self) -> bool;
}

tokio::task_local! {
    /// The place of the connection this task serves.
    static HELD: Arc<Held>;
}

/// Offers the connection this task serves to be closed when its listener needs room, in place
/// of what was offered before (`tls_accept::Handshake` offers a connection during its TLS
/// handshake, then `client_idle::Guarded` while each HTTP/1 connection waits for a head).
pub fn reclaimable(connection: Arc<dyn Reclaim>) {
    let _ = HELD.try_with(|held| held.offer(connection));
}

/// One served connection's place.
#[derive(Default)]
struct Held {
    /// The place has been given back (the connection ended, or was closed to make room).
    released: AtomicBool,
    reclaim: Mutex<Option<Arc<dyn Reclaim>>>,
}

impl Held {
    fn offer(&self, connection: Arc<dyn Reclaim>) {
        *self.reclaim.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection);
    }

    fn offered(&self) -> Option<Arc<dyn Reclaim>> {
        self.reclaim
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One listener's ceiling and the connections it serves now.
pub struct Cap {
    direction: Direction,
    limit: usize,
    open: AtomicUsize,
    shared: Arc<Shared>,
    held: Mutex<HashMap<u64, Arc<Held>>>,
    next_id: AtomicU64,
    /// One warning a second at most while connections are being refused.
    warned: Throttle,
    /// One line a second at most while idle connections are closed to make room.
    reclaimed: Throttle,
}

impl std::fmt::Debug for Cap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cap")
            .field("direction", &self.direction)
            .field("limit", &self.limit)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Cap {
    pub fn new(direction: Direction, limit: usize, shared: Arc<Shared>) -> Arc<Cap> {
        Arc::new(Cap {
            direction,
            limit: limit.max(1),
            open: AtomicUsize::new(0),
            shared,
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            warned: Throttle::new(),
            reclaimed: Throttle::new(),
        })
    }

    /// The places stay meaningful even if a thread panicked while holding the lock.
    fn places(&self) -> MutexGuard<'_, HashMap<u64, Arc<Held>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_room(&self) -> bool {
        self.open.load(Ordering::Acquire) < self.limit
    }

    /// Never counts a place it does not take, even for a moment: a count that went over and
    /// back made another thread's take fail with a place free.
    fn try_take(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.limit).then_some(open + 1)
            })
            .is_ok()
    }

    /// Takes a place for a connection about to be served, making room if there is none; or
    /// says there is none to be had (and counts the refusal).
    fn enter(self: &Arc<Self>) -> Option<Place> {
        if !(self.try_take() || self.reclaim_idle(Room::Taken)) {
            self.refuse();
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let held = Arc::new(Held::default());
        self.places().insert(id, held.clone());
        self.shared.metrics.client_connection_opened(self.direction);
        Some(Place {
            cap: self.clone(),
            id,
            held,
        })
    }

    /// Gives a place back, once.
    fn release(&self, held: &Held) {
        if self.vacate(held) {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Ends a connection's hold on its place, once, without giving the place back: whether
    /// this call ended it (and the caller has the place).
    fn vacate(&self, held: &Held) -> bool {
        let first = !held.released.swap(true, Ordering::AcqRel);
        if first {
            self.shared.metrics.client_connection_closed(self.direction);
        }
        first
    }

    /// Closes the connection that has waited longest for a request head, its place given back
    /// at once (its task ends a moment later) or, with [`Room::Taken`], passed straight to the
    /// connection that asked; `false` when no connection waits for a head (and, with
    /// [`Room::Taken`], no place came free otherwise).
    ///
    /// The place is passed on, not given back and taken again, because between the two a
    /// connection on another thread (one that passed the filter when there was room) could take
    /// it: under a flood of new connections, new ones were refused while every open one was
    /// idle.
    fn reclaim_idle(&self, room: Room) -> bool {
        let places = self.places();
        // A connection whose head arrives just as it is chosen is passed over for the next.
        let mut passed: Vec<*const Held> = Vec::new();
        loop {
            let oldest = places
                .values()
                .filter(|held| !held.released.load(Ordering::Acquire))
                .filter(|held| !passed.contains(&Arc::as_ptr(held)))
                .filter_map(|held| {
                    let connection = held.offered()?;
                    Some((connection.head_deadline()?, connection, held))
                })
                .min_by_key(|(deadline, _, _)| *deadline);
            let Some((_, connection, held)) = oldest else {
                // Places may have come free while this waited for the lock.
                return matches!(room, Room::Taken) && self.try_take();
            };
            passed.push(Arc::as_ptr(held));
            if !connection.close_if_idle() {
                continue;
            }
            if let Some(left_out) = self.reclaimed.admit_now() {
                log::info!("{}", self.line(Line::MadeRoom, left_out));
            }
            match room {
                Room::Freed => {
                    self.release(held);
                    return true;
                }
                // Not vacated here when its task ended just now and gave the place back itself:
                // take that one, or close another.
                Room::Taken if self.vacate(held) || self.try_take() => return true,
                Room::Taken => {}
            }
        }
    }

    fn refuse(&self) {
        self.shared
            .metrics
            .client_connection_refused(self.direction);
        if let Some(left_out) = self.warned.admit_now() {
            log::warn!("{}", self.line(Line::Refused, left_out));
        }
    }

    /// The log line for what the ceiling did, with how many times since the last line.
    fn line(&self, what: Line, left_out: u64) -> String {
        let did = match what {
            Line::MadeRoom => {
                "; closing the ones that wait longest for a request head to make room"
            }
            // Or, for the few microseconds between taking its place and offering itself, was
            // accepted that moment: a flood of new connections refuses none (each makes room).
            Line::Refused => {
                ", and none can be closed to make room (each has a request in flight): closing \
                 new ones as they come until one is done"
            }
        };
        format!(
            "{} listener: {} client connections open, as many as listen.max_connections allows\
             {did}{}",
            self.direction.as_str(),
            self.limit,
            more_since(left_out)
        )
    }
}

/// What becomes of the place a connection closed to make room had.
#[derive(Clone, Copy)]
enum Room {
    /// Given back, for whichever connection takes it first (the filter, which holds no place).
    Freed,
    /// Passed to the connection being served.
    Taken,
}

#[derive(Clone, Copy)]
enum Line {
    MadeRoom,
    Refused,
}

/// A served connection's hold on its place, given back however its task ends (finished, or
/// cancelled at shutdown).
struct Place {
    cap: Arc<Cap>,
    id: u64,
    held: Arc<Held>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.cap.places().remove(&self.id);
        self.cap.release(&self.held);
    }
}

/// Pingora's connection filter: at the ceiling, makes room or closes the new connection as
/// soon as it is accepted.
#[derive(Debug)]
pub struct AtCapacity(pub Arc<Cap>);

#[async_trait]
impl ConnectionFilter for AtCapacity {
    async fn should_accept(&self, _addr: Option<&SocketAddr>) -> bool {
        let cap = &self.0;
        // The place made here is taken when the connection is served ([`Capped`]).
        if cap.has_room() || cap.reclaim_idle(Room::Freed) {
            return true;
        }
        cap.refuse();
        false
    }
}

/// A proxy whose connections each hold a place under the ceiling while they are served.
pub struct Capped<A> {
    inner: Arc<A>,
    cap: Arc<Cap>,
}

impl<A> Capped<A> {
    pub fn new(inner: A, cap: Arc<Cap>) -> Self {
        Capped {
            inner: Arc::new(inner),
            cap,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    /// Runs as soon as a connection is accepted (before the inbound listener's TLS handshake,
    /// see `tls_accept`), and again for each further request on a kept connection.
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(place) = self.cap.enter() else {
            // Dropping the stream closes the connection, unanswered.
            return None;
        };
        let held = place.held.clone();
        let served = HELD
            .scope(held, self.inner.process_new(session, shutdown))
            .await;
        drop(place);
        served
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shared() -> (tempfile::TempDir, Arc<Shared>) {
        let dir = tempfile::tempdir().unwrap();
        crate::identity::write_new_key(&dir.path().join("me.pem"), false).unwrap();
        let config = dir.path().join("peergate.yaml");
        std::fs::write(
            &config,
            "identity: { key_file: me.pem, hosts: [me.example.org] }\napp: { upstream: \"127.0.0.1:9\" }\n",
        )
        .unwrap();
        let loaded = crate::config::load(&config).unwrap();
        (dir, Arc::new(Shared::new(&loaded.config).unwrap()))
    }

    /// A connection's head clock: waiting for a head until `deadline`, or `None` in flight.
    struct Conn {
        deadline: Mutex<Option<Instant>>,
        closed: AtomicBool,
        /// A head that arrives just as the connection is chosen.
        head_arrives: AtomicBool,
    }

    impl Conn {
        fn new(deadline: Option<Instant>) -> Arc<Conn> {
            Arc::new(Conn {
                deadline: Mutex::new(deadline),
                closed: AtomicBool::new(false),
                head_arrives: AtomicBool::new(false),
            })
        }
    }

    impl Reclaim for Conn {
        fn head_deadline(&self) -> Option<Instant> {
            *self.deadline.lock().unwrap()
        }
        fn close_if_idle(&self) -> bool {
            let mut deadline = self.deadline.lock().unwrap();
            if self.head_arrives.load(Ordering::Relaxed) {
                *deadline = None;
            }
            if deadline.is_none() {
                return false;
            }
            self.closed.store(true, Ordering::Relaxed);
            true
        }
    }

    /// Serves a connection with `conn` as its clock, as `Capped` and `client_idle` do.
    fn serve(cap: &Arc<Cap>, conn: &Arc<Conn>) -> Option<Place> {
        let place = cap.enter()?;
        place.held.offer(conn.clone());
        Some(place)
    }

    fn rendered(shared: &Shared, series: &str) -> bool {
        shared.metrics.render().contains(series)
    }

    #[test]
    fn log_lines_read_as_one_sentence() {
        let (_dir, shared) = shared();
        let cap = Cap::new(Direction::Inbound, 4096, shared);
        assert_eq!(
            cap.line(Line::MadeRoom, 0),
            "inbound listener: 4096 client connections open, as many as \
             listen.max_connections allows; closing the ones that wait longest for a request \
             head to make room"
        );
        assert_eq!(
            cap.line(Line::Refused, 3),
            "inbound listener: 4096 client connections open, as many as \
             listen.max_connections allows, and none can be closed to make room (each has a \
             request in flight): closing new ones as they come until one is done (3 more since \
             the last line)"
        );
    }

    /// Connections that passed the filter together (each still in its TLS handshake while the
    /// others were accepted) are held to the ceiling when they are served.
    #[tokio::test]
    async fn places_are_exact_whatever_the_filter_let_through() {
        let (_dir, shared) = shared();
        let cap = Cap::new(Direction::Inbound, 2, shared.clone());
        let filter = AtCapacity(cap.clone());
        for _ in 0..3 {
            assert!(filter.should_accept(None).await);
        }
        let busy = Conn::new(None);
        let first = serve(&cap, &busy).unwrap();
        let _second = serve(&cap, &busy).unwrap();
        assert!(
            serve(&cap, &busy).is_none(),
            "a third place under a ceiling of 2"
        );
        assert!(!filter.should_accept(None).await);
        assert!(rendered(
            &shared,
            "peergate_client_connections{direction=\"inbound\"} 2\n"
        ));
        assert!(rendered(
            &shared,
            "peergate_client_connections_refused_total{direction=\"inbound\"} 2\n"
        ));
        drop(first);
        assert!(filter.should_accept(None).await);
        let _third = serve(&cap, &busy).unwrap();
        assert_eq!(cap.open.load(Ordering::Relaxed), 2);
    }

    /// At the ceiling the connection that has waited longest for a head is closed to make
    /// room; one with a request in flight, or whose head has just come, never is.
    #[tokio::test]
    async fn room_is_made_by_closing_the_connection_idle_longest() {
        let (_dir, shared) = shared();
        let cap = Cap::new(Direction::Outbound, 3, shared.clone());
        let filter = AtCapacity(cap.clone());
        let now = Instant::now();
        let busy = Conn::new(None);
        let older = Conn::new(Some(now + Duration::from_secs(10)));
        let oldest = Conn::new(Some(now + Duration::from_secs(5)));
        oldest.head_arrives.store(true, Ordering::Relaxed);
        let _busy = serve(&cap, &busy).unwrap();
        let older_place = serve(&cap, &older).unwrap();
        let _oldest = serve(&cap, &oldest).unwrap();

        // The filter makes room, and the new connection takes it once served.
        assert!(filter.should_accept(None).await);
        assert!(older.closed.load(Ordering::Relaxed));
        assert!(
            !oldest.closed.load(Ordering::Relaxed),
            "its head came as it was chosen"
        );
        assert!(!busy.closed.load(Ordering::Relaxed));
        assert!(rendered(
            &shared,
            "peergate_client_connections{direction=\"outbound\"} 2\n"
        ));
        let newcomer = Conn::new(Some(now + Duration::from_secs(75)));
        let _newcomer = serve(&cap, &newcomer).unwrap();
        // The closed connection's task ends later; its place is not given back twice.
        drop(older_place);
        assert_eq!(cap.open.load(Ordering::Relaxed), 3);
        assert!(rendered(
            &shared,
            "peergate_client_connections{direction=\"outbound\"} 3\n"
        ));

        // Served directly (it passed the filter with others): room is made there too.
        let late = Conn::new(None);
        let _late = serve(&cap, &late).unwrap();
        assert!(newcomer.closed.load(Ordering::Relaxed));
        // Now every connection has a request in flight: no room, and nothing closed.
        assert!(!filter.should_accept(None).await);
        assert!(serve(&cap, &Conn::new(None)).is_none());
        assert!(rendered(
            &shared,
            "peergate_client_connections_refused_total{direction=\"outbound\"} 2\n"
        ));
        assert!(!busy.closed.load(Ordering::Relaxed) && !oldest.closed.load(Ordering::Relaxed));
    }
    /// A place made for a connection being served is its own: another thread's connection
    /// cannot take it between the closing and the taking. Before, under a flood of new
    /// connections, some were refused while every open one was idle.
    #[test]
    fn room_made_for_a_connection_goes_to_it() {
        let (_dir, shared) = shared();
        let cap = Cap::new(Direction::Inbound, 4, shared.clone());
        let refused = AtomicUsize::new(0);
        std::thread::scope(|threads| {
            for _ in 0..4 {
                threads.spawn(|| {
                    let mut held = std::collections::VecDeque::new();
                    for _ in 0..20_000 {
                        let idle = Conn::new(Some(Instant::now() + Duration::from_secs(75)));
                        match serve(&cap, &idle) {
                            Some(place) => held.push_back(place),
                            None => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // Some connections end on their own, as clients leave.
                        if held.len() > 3 {
                            held.pop_front();
                        }
                    }
                });
            }
        });
        assert_eq!(
            refused.load(Ordering::Relaxed),
            0,
            "new connections refused while every open one waited for a head"
        );
        assert!(cap.open.load(Ordering::Relaxed) <= 4);
        assert!(rendered(
            &shared,
            "peergate_client_connections_refused_total{direction=\"inbound\"} 0\n"
        ));
    }
}
