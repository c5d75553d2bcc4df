//! A ceiling on the client connections one proxy listener serves at once
//! (`listen.max_connections`).
//!
//! Each open client connection holds 40–50 KiB (benches/README.md, change 31) for as long as it
//! lives, and an idle one lives up to `listen.idle_timeout`. Without a ceiling, anyone who can
//! reach a listener could hold as many as the open-files limit allows (hundreds of thousands
//! under systemd's default), and the memory with them. At the ceiling a new connection is closed
//! as soon as it is accepted, before any TLS handshake is spent on it ([`AtCapacity`], Pingora's
//! connection filter), as Envoy does at its connection limit; the connections already open go
//! on, and one is admitted again as soon as one of them closes. nginx stops accepting instead,
//! which leaves the new connections waiting in the kernel's queue with no sign they are
//! refused; a prompt close tells the client at once, and a peer's gateway that opened it
//! answers its app with a 502 rather than a timeout.
//!
//! What is counted is the connections being served ([`Capped`], around the proxy): one still in
//! its TLS handshake (Pingora gives that 60 s) is not yet, so a burst of new connections can
//! pass the filter together; [`Capped`] closes those over the ceiling once their handshake is
//! done, so the ceiling on connections served is exact.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::ConnectionFilter;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::metrics::Direction;
use crate::state::Shared;
use crate::throttle::Throttle;

/// One listener's ceiling and the connections it serves now.
pub struct Cap {
    direction: Direction,
    limit: usize,
    open: AtomicUsize,
    shared: Arc<Shared>,
    /// One warning a second at most while connections are being refused.
    warned: Throttle,
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
            warned: Throttle::new(),
        })
    }

    /// Takes a place for a connection, or says there is none (and counts the refusal).
    fn enter(&self) -> bool {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.limit {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refuse();
            return false;
        }
        self.shared.metrics.client_connection_opened(self.direction);
        true
    }

    fn leave(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.shared.metrics.client_connection_closed(self.direction);
    }

    fn refuse(&self) {
        self.shared
            .metrics
            .client_connection_refused(self.direction);
        if let Some(left_out) = self.warned.admit_now() {
            let more = if left_out > 0 {
                format!(" ({left_out} more since the last line)")
            } else {
                String::new()
            };
            log::warn!(
                "{} listener: {} client connections open, as many as listen.max_connections \
                 allows; closing new ones as they come until some close{more}",
                self.direction.as_str(),
                self.limit
            );
        }
    }
}

/// Pingora's connection filter: closes a new connection before its TLS handshake while the
/// listener is at its ceiling.
#[derive(Debug)]
pub struct AtCapacity(pub Arc<Cap>);

#[async_trait]
impl ConnectionFilter for AtCapacity {
    async fn should_accept(&self, _addr: Option<&SocketAddr>) -> bool {
        let cap = &self.0;
        if cap.open.load(Ordering::Acquire) >= cap.limit {
            cap.refuse();
            return false;
        }
        true
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

/// Gives a connection's place back however its task ends (finished, or cancelled at shutdown).
struct Place(Arc<Cap>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.leave();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    /// Runs once per connection, after its TLS handshake.
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !self.cap.enter() {
            // Dropping the stream closes the connection, unanswered.
            return None;
        }
        let _place = Place(self.cap.clone());
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Connections that passed the filter together (each still in its TLS handshake while the
    /// others were accepted) are held to the ceiling when they are served.
    #[tokio::test]
    async fn places_are_exact_whatever_the_filter_let_through() {
        let (_dir, shared) = shared();
        let cap = Cap::new(Direction::Inbound, 2, shared.clone());
        let filter = AtCapacity(cap.clone());
        // Three connections accepted before any is served.
        for _ in 0..3 {
            assert!(filter.should_accept(None).await);
        }
        assert!(cap.enter());
        assert!(cap.enter());
        assert!(!cap.enter(), "a third place under a ceiling of 2");
        assert!(!filter.should_accept(None).await);
        let metrics = shared.metrics.render();
        assert!(
            metrics.contains("peergate_client_connections{direction=\"inbound\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("peergate_client_connections_refused_total{direction=\"inbound\"} 2"),
            "{metrics}"
        );
        cap.leave();
        assert!(filter.should_accept(None).await);
        assert!(cap.enter());
        assert_eq!(cap.open.load(Ordering::Relaxed), 2);
    }
}
