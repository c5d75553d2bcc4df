//! How long a client's connection may sit idle between requests.
//!
//! Left to itself, Pingora keeps an HTTP/1.1 connection open for as long as the client likes
//! once the first request on it has been read (its keep-alive then has no timeout), and an
//! HTTP/2 connection too. On the inbound listener, which faces the internet, that lets anyone
//! hold sockets and memory for nothing. Every request therefore sets the wait for the next one
//! to `listen.idle_timeout`, and the inbound listener's HTTP/2 idle timeout is the same
//! (`server.rs`). Pingora applies the HTTP/1.1 timeout to each read of the next request head,
//! so a client that sends nothing for that long is closed, quietly, as a client closing is.

use pingora::proxy::Session;

/// Sets the wait for this connection's next request, when the connection is kept at all:
/// `Connection: close`, and HTTP/1.0 without `keep-alive`, stay closed.
pub fn limit(session: &mut Session, idle_seconds: u64) {
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(idle_seconds));
    }
}
