//! The inbound listener's TLS handshake, run here instead of in Pingora's listener.
//!
//! Pingora's listener gives every TLS handshake 60 s before any app sees the connection, so a
//! client that opened TCP connections and never sent a ClientHello held a descriptor and a
//! task for a minute each, and `listen.max_connections` did not count them: a flood of such
//! connections was bounded only by the open-files limit. Here the listener is plain TCP to
//! Pingora, and [`Handshake`] (inside `connection_cap::Capped`) runs the handshake with
//! Pingora's own acceptor (the same rustls configuration, certificate resolver and ALPN). So a
//! connection holds its place under the ceiling from the moment it is accepted; it must finish
//! its handshake within `listen.idle_timeout` of opening, the same limit as for its first
//! request head (which now counts from the opening too, not from the end of the handshake);
//! and at the ceiling, the connection that has waited longest, for a handshake or for a head,
//! is closed to make room.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use crate::throttle::{more_since, Throttle};

tokio::task_local! {
    /// When the connection this task serves was accepted, for its first request.
    static OPENED: Instant;
}

/// When the connection this task serves was accepted, if its first request is being served
/// after a handshake here; else now (a plain listener's connection is served as soon as it is
/// accepted, and a kept connection's next request is timed from the previous answer).
pub fn opened() -> Instant {
    OPENED.try_with(|o| *o).unwrap_or_else(|_| Instant::now())
}

const HANDSHAKING: u8 = 0;
const DONE: u8 = 1;
const CLOSING: u8 = 2;

/// One connection's handshake, as `connection_cap` sees it: it may be closed to make room until
/// it is done.
struct Handshaking {
    deadline: Instant,
    state: AtomicU8,
    close: Notify,
}

impl Handshaking {
    fn new(deadline: Instant) -> Handshaking {
        Handshaking {
            deadline,
            state: AtomicU8::new(HANDSHAKING),
            close: Notify::new(),
        }
    }

    /// Whether the connection goes on to be served: false when it was chosen to make room just
    /// as its handshake finished (its place is already given back).
    fn finish(&self) -> bool {
        self.state
            .compare_exchange(HANDSHAKING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl crate::connection_cap::Reclaim for Handshaking {
    fn head_deadline(&self) -> Option<Instant> {
        (self.state.load(Ordering::Acquire) == HANDSHAKING).then_some(self.deadline)
    }

    fn close_if_idle(&self) -> bool {
        let closing = self
            .state
            .compare_exchange(HANDSHAKING, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if closing {
            self.close.notify_one();
        }
        closing
    }
}

/// Serves TLS on a listener Pingora runs as plain TCP.
pub struct Handshake<A> {
    inner: Arc<A>,
    acceptor: Acceptor,
    idle: Duration,
    /// One line a second at most about failed handshakes (port scanners and TCP health checks
    /// make one per connection).
    failed: Throttle,
}

impl<A> Handshake<A> {
    pub fn new(inner: A, acceptor: Acceptor, idle: Duration) -> Self {
        Handshake {
            inner: Arc::new(inner),
            acceptor,
            idle,
            failed: Throttle::new(),
        }
    }

    fn log_failure(&self, peer: Option<SocketAddr>, why: &str) {
        if let Some(left_out) = self.failed.admit_now() {
            let from = peer.map_or_else(|| "a client".to_owned(), |p| p.to_string());
            let more = more_since(left_out);
            log::info!("inbound listener: TLS handshake with {from} failed: {why}{more}");
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Handshake<A> {
    /// Runs as soon as a connection is accepted (Pingora's listener does no TLS), and again for
    /// each further request on a kept connection, whose TLS is already up.
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !session.as_any().is::<TcpStream>() {
            // A kept connection's next request.
            return self.inner.process_new(session, shutdown).await;
        }
        let opened = Instant::now();
        let peer = session
            .get_socket_digest()
            .and_then(|d| d.peer_addr()?.as_inet().copied());
        let Ok(tcp) = session.into_any().downcast::<TcpStream>() else {
            return None;
        };
        let handshaking = Arc::new(Handshaking::new(opened + self.idle));
        crate::connection_cap::reclaimable(handshaking.clone());
        let handshake = tokio::select! {
            tls = self.acceptor.tls_handshake(*tcp) => tls,
            () = tokio::time::sleep_until(handshaking.deadline.into()) => {
                log::debug!(
                    "closed a client connection: no TLS handshake within {:?} (listen.idle_timeout)",
                    self.idle
                );
                return None;
            }
            () = handshaking.close.notified() => return None,
            () = crate::client_idle::shutdown_begun(shutdown, Duration::from_secs(1)) => {
                return None;
            }
        };
        let tls = match handshake {
            Ok(tls) => tls,
            Err(e) => {
                self.log_failure(peer, &e.to_string());
                return None;
            }
        };
        if !handshaking.finish() {
            return None;
        }
        OPENED
            .scope(opened, self.inner.process_new(Box::new(tls), shutdown))
            .await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection_cap::Reclaim;

    fn handshaking() -> Handshaking {
        Handshaking::new(Instant::now())
    }

    /// A handshake that finishes just as its connection is chosen to make room: exactly one of
    /// the two wins, so a connection whose place was given back is never served.
    #[test]
    fn finishing_and_closing_exclude_each_other() {
        let h = handshaking();
        assert!(h.head_deadline().is_some());
        assert!(h.close_if_idle());
        assert!(!h.finish(), "closed to make room: not served");
        assert!(h.head_deadline().is_none());
        assert!(!h.close_if_idle(), "closed once");

        let h = handshaking();
        assert!(h.finish());
        assert!(h.head_deadline().is_none(), "done: no longer a candidate");
        assert!(!h.close_if_idle());
    }
}
