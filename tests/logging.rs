//! What the running binary writes to its log when clients misbehave: a line for what an
//! operator can act on, not one per connection a scanner opens.

mod ops;
mod support;

use std::time::Duration;

use ops::{eventually, TlsBinary};
use support::EchoApp;

/// A port scanner, or a load balancer's TCP health check, opens connections to the TLS
/// listener and closes them without a handshake. The binary writes at most one line a second
/// about failed handshakes, and the next one says how many were left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tls_handshakes_are_logged_once_a_second_with_a_count() {
    let app = EchoApp::start();
    let TlsBinary { setup, binary, .. } = TlsBinary::run(app.addr());

    for _ in 0..50 {
        drop(std::net::TcpStream::connect(setup.inbound).unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    drop(std::net::TcpStream::connect(setup.inbound).unwrap());
    let (log, _) = eventually(Duration::from_secs(10), "a line with the count", || async {
        let log = binary.log();
        log.lines()
            .any(|l| l.contains("TLS handshake") && l.contains("more since the last line)"))
            .then_some(log)
    })
    .await;
    let lines = log.lines().filter(|l| l.contains("handshake")).count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} handshake lines for 52 failed handshakes:\n{log}"
    );
}
