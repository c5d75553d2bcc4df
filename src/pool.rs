//! Idle upstream connections kept for the next request, without a task per connection.
//!
//! Pingora's connector pool parks every released connection under a watcher task and, to hand
//! it out again, wakes that task and waits for it to let go: one spawn and one cross-task
//! wakeup per proxied request, often a context switch, on a path whose unavoidable cost is a
//! few tens of microseconds. Here an idle connection is only a stream in a list. Whether it is
//! still usable is asked when it is taken (a read that must find nothing waiting), and
//! connections idle past their timeout are closed when the list is next touched and by a sweep
//! every few seconds, so a connection the upstream closed does not stay open for long.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, ReadBuf};

/// How often idle connections are looked at when no request touches them (more often when
/// the idle timeout is shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

struct Idle {
    stream: Stream,
    since: Instant,
}

#[derive(Default)]
struct Lists {
    /// Oldest first: `put` adds at the back, `take` takes from the back, the oldest go from
    /// the front.
    by_peer: HashMap<u64, VecDeque<Idle>>,
    sweeping: bool,
}

/// Idle connections by upstream (Pingora's `reuse_hash` of the peer: address, TLS settings,
/// SNI), newest last.
pub struct Pool {
    lists: Mutex<Lists>,
    per_peer: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// At most `per_peer` idle connections to one upstream, each closed after `idle_timeout`.
    pub fn new(per_peer: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Pool {
            lists: Mutex::new(Lists::default()),
            per_peer,
            idle_timeout,
        })
    }

    /// The most recently used idle connection to `key` that is still open, if any.
    pub fn take(&self, key: u64) -> Option<Stream> {
        self.take_fresh(key, self.idle_timeout)
    }

    /// Like [`take`](Self::take), but only a connection idle for less than `within`; older
    /// ones stay for requests that may take them.
    pub fn take_fresh(&self, key: u64, within: Duration) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut lists = self.lists.lock().ok()?;
                let list = lists.by_peer.get_mut(&key)?;
                let idle = list.pop_back()?;
                let age = now.duration_since(idle.since);
                if age >= within && age < self.idle_timeout {
                    // The newest is too old for this request, so every other one is too.
                    list.push_back(idle);
                    return None;
                }
                if list.is_empty() {
                    lists.by_peer.remove(&key);
                }
                idle
            };
            let mut stream = idle.stream;
            if now.duration_since(idle.since) < self.idle_timeout && still_open(&mut stream) {
                return Some(stream);
            }
            // Closed, or idle too long: dropped here, outside the lock.
        }
    }

    /// Keeps `stream` for the next request to `key`. The oldest idle connection goes when the
    /// list is full. Needs a Tokio runtime (the sweep runs on it).
    pub fn put(self: &Arc<Self>, key: u64, mut stream: Stream) {
        if !still_open(&mut stream) {
            return;
        }
        let now = Instant::now();
        let mut dropped = Vec::new();
        let start_sweep = {
            let Ok(mut lists) = self.lists.lock() else {
                return;
            };
            let list = lists.by_peer.entry(key).or_default();
            dropped.extend(take_idle_for(list, now, self.idle_timeout));
            if list.len() >= self.per_peer.max(1) {
                dropped.extend(list.pop_front());
            }
            list.push_back(Idle { stream, since: now });
            !std::mem::replace(&mut lists.sweeping, true)
        };
        drop(dropped);
        if start_sweep {
            tokio::spawn(sweep(
                Arc::downgrade(self),
                SWEEP_EVERY.min(self.idle_timeout),
            ));
        }
    }

    /// Idle connections to `key`, for tests.
    pub fn idle(&self, key: u64) -> usize {
        self.lists
            .lock()
            .map_or(0, |l| l.by_peer.get(&key).map_or(0, VecDeque::len))
    }

    /// Closes what is idle too long or was closed by the other side. Returns false when the
    /// pool is empty, and then the sweep stops until the next `put`.
    ///
    /// Whether a connection is still open takes a system call (through TLS for a peer), so
    /// only the connections idle for `check_after` or longer (not used since the last sweep)
    /// are checked, and outside the lock: with hundreds kept, checking them under it made
    /// every request's `take` and `put` wait for hundreds of system calls.
    fn sweep_once(&self, check_after: Duration) -> bool {
        let now = Instant::now();
        let mut dropped = Vec::new();
        let mut to_check = Vec::new();
        {
            let Ok(mut lists) = self.lists.lock() else {
                return false;
            };
            for (key, list) in lists.by_peer.iter_mut() {
                dropped.extend(take_idle_for(list, now, self.idle_timeout));
                let old: Vec<_> = take_idle_for(list, now, check_after).collect();
                if !old.is_empty() {
                    to_check.push((*key, old));
                }
            }
            lists.by_peer.retain(|_, list| !list.is_empty());
        }
        drop(dropped);
        for (_, list) in &mut to_check {
            list.retain_mut(|idle| still_open(&mut idle.stream));
        }
        let mut over = Vec::new();
        let Ok(mut lists) = self.lists.lock() else {
            return false;
        };
        for (key, open) in to_check {
            if open.is_empty() {
                continue;
            }
            // Older than anything put meanwhile: back in front, in their order.
            let list = lists.by_peer.entry(key).or_default();
            for idle in open.into_iter().rev() {
                list.push_front(idle);
            }
            while list.len() > self.per_peer.max(1) {
                over.extend(list.pop_front());
            }
        }
        let busy = !lists.by_peer.is_empty();
        lists.sweeping = busy;
        drop(lists);
        drop(over);
        busy
    }
}

/// Takes from the front of `list` (oldest first) the connections idle for `age` or longer.
fn take_idle_for(
    list: &mut VecDeque<Idle>,
    now: Instant,
    age: Duration,
) -> std::collections::vec_deque::Drain<'_, Idle> {
    let count = list
        .iter()
        .take_while(|i| now.duration_since(i.since) >= age)
        .count();
    list.drain(..count)
}

async fn sweep(pool: Weak<Pool>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if !pool.sweep_once(every) {
            return;
        }
    }
}

/// An idle HTTP/1 connection is usable when nothing is waiting to be read on it: the upstream
/// neither closed it nor sent bytes nobody asked for. The read is polled once with a waker
/// that does nothing, so an idle connection never wakes a task.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(stream).poll_read(&mut cx, &mut buf) {
        Poll::Pending => true,
        Poll::Ready(Ok(())) if buf.filled().is_empty() => {
            log::debug!("an idle upstream connection was closed by the upstream");
            false
        }
        Poll::Ready(Ok(())) => {
            log::debug!("an idle upstream connection had unexpected data; closed");
            false
        }
        Poll::Ready(Err(e)) => {
            log::debug!("an idle upstream connection broke: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::connectors::TransportConnector;
    use pingora::prelude::HttpPeer;
    use pingora::upstreams::peer::Peer;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A listener on loopback, a peer for it, and a connector to it.
    async fn upstream() -> (TcpListener, HttpPeer, TransportConnector) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = HttpPeer::new(addr, false, String::new());
        (listener, peer, TransportConnector::new(None))
    }

    async fn connect(
        listener: &TcpListener,
        peer: &HttpPeer,
        connector: &TransportConnector,
    ) -> (Stream, TcpStream) {
        let (client, accepted) = tokio::join!(connector.new_stream(peer), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// Bytes the upstream side reads next: 0 once peergate's side is closed. Fails the test if
    /// nothing comes within 5 s.
    async fn next_read(server: &mut TcpStream) -> usize {
        let mut byte = [0u8; 1];
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(server, &mut byte),
        )
        .await
        .expect("the connection was closed in time")
        .unwrap()
    }

    /// `count` new connections put in `pool` under `key`, oldest first: their ids and the
    /// upstream's side of each.
    async fn put_new(
        pool: &Arc<Pool>,
        key: u64,
        count: usize,
        (listener, peer, connector): (&TcpListener, &HttpPeer, &TransportConnector),
    ) -> (Vec<i32>, Vec<TcpStream>) {
        let mut ids = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..count {
            let (client, server) = connect(listener, peer, connector).await;
            ids.push(client.id());
            servers.push(server);
            pool.put(key, client);
        }
        (ids, servers)
    }

    #[tokio::test]
    async fn a_connection_put_back_is_taken_again() {
        let (listener, peer, connector) = upstream().await;
        let pool = Pool::new(4, Duration::from_secs(60));
        let (client, _server) = connect(&listener, &peer, &connector).await;
        let id = client.id();
        pool.put(peer.reuse_hash(), client);
        assert_eq!(pool.idle(peer.reuse_hash()), 1);
        let again = pool.take(peer.reuse_hash()).expect("the idle connection");
        assert_eq!(again.id(), id);
        assert!(pool.take(peer.reuse_hash()).is_none(), "it was taken");
        assert!(
            pool.take(peer.reuse_hash() ^ 1).is_none(),
            "another peer has none"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_upstream_is_not_handed_out() {
        let (listener, peer, connector) = upstream().await;
        let pool = Pool::new(4, Duration::from_secs(60));
        let (client, server) = connect(&listener, &peer, &connector).await;
        pool.put(peer.reuse_hash(), client);
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(peer.reuse_hash()).is_none());
        assert_eq!(pool.idle(peer.reuse_hash()), 0);
    }

    #[tokio::test]
    async fn unexpected_bytes_from_the_upstream_close_the_connection() {
        let (listener, peer, connector) = upstream().await;
        let pool = Pool::new(4, Duration::from_secs(60));
        let (client, mut server) = connect(&listener, &peer, &connector).await;
        pool.put(peer.reuse_hash(), client);
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(peer.reuse_hash()).is_none());
    }

    #[tokio::test]
    async fn a_connection_idle_past_its_timeout_is_closed() {
        let (listener, peer, connector) = upstream().await;
        let pool = Pool::new(4, Duration::from_millis(100));
        let (client, mut server) = connect(&listener, &peer, &connector).await;
        pool.put(peer.reuse_hash(), client);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(pool.take(peer.reuse_hash()).is_none());
        // Closed, not only forgotten: the upstream sees the end of the stream.
        assert_eq!(next_read(&mut server).await, 0);
    }

    #[tokio::test]
    async fn a_fresh_take_leaves_an_older_connection_for_others() {
        let (listener, peer, connector) = upstream().await;
        let pool = Pool::new(4, Duration::from_secs(60));
        let key = peer.reuse_hash();
        let (client, _server) = connect(&listener, &peer, &connector).await;
        pool.put(key, client);
        assert!(pool.take_fresh(key, Duration::from_secs(5)).is_some());
        let (client, _server) = connect(&listener, &peer, &connector).await;
        pool.put(key, client);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(pool.take_fresh(key, Duration::from_millis(100)).is_none());
        assert_eq!(pool.idle(key), 1, "kept for a request that may take it");
        assert!(pool.take(key).is_some());
    }

    #[tokio::test]
    async fn the_sweep_closes_idle_connections_nobody_asks_for() {
        let (listener, peer, connector) = upstream().await;
        let pool = Pool::new(4, Duration::from_millis(100));
        let (client, mut server) = connect(&listener, &peer, &connector).await;
        pool.put(peer.reuse_hash(), client);
        // Nobody takes or puts: only the sweep can close it.
        assert_eq!(next_read(&mut server).await, 0);
        assert_eq!(pool.idle(peer.reuse_hash()), 0);
    }

    #[tokio::test]
    async fn a_sweep_closes_what_the_upstream_closed_and_keeps_the_order_of_the_rest() {
        let (listener, peer, connector) = upstream().await;
        let pool = Pool::new(4, Duration::from_secs(60));
        let key = peer.reuse_hash();
        let (ids, mut servers) = put_new(&pool, key, 3, (&listener, &peer, &connector)).await;
        drop(servers.remove(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Connections idle for less than the check age are not checked.
        assert!(pool.sweep_once(Duration::from_secs(30)));
        assert_eq!(pool.idle(key), 3);
        assert!(pool.sweep_once(Duration::ZERO));
        assert_eq!(pool.idle(key), 2, "the one the upstream closed is gone");
        assert_eq!(pool.take(key).unwrap().id(), ids[2]);
        assert_eq!(pool.take(key).unwrap().id(), ids[0]);
        assert!(!pool.sweep_once(Duration::ZERO), "empty: the sweep stops");
    }

    #[tokio::test]
    async fn a_full_list_lets_its_oldest_connection_go() {
        let (listener, peer, connector) = upstream().await;
        let pool = Pool::new(2, Duration::from_secs(60));
        let key = peer.reuse_hash();
        let (ids, mut servers) = put_new(&pool, key, 3, (&listener, &peer, &connector)).await;
        assert_eq!(pool.idle(key), 2);
        // Newest first; the first connection was closed to make room.
        let a = pool.take(key).unwrap();
        let b = pool.take(key).unwrap();
        assert_eq!(a.id(), ids[2]);
        assert_eq!(b.id(), ids[1]);
        assert_eq!(next_read(&mut servers[0]).await, 0);
    }
}
