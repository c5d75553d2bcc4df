//! peergate: a reverse-proxy sidecar that gives any unmodified HTTP app peer-to-peer identity.
//!
//! The signature engine lives in its own crate, `peergate-signature`, so it builds, fuzzes and
//! benchmarks without the proxy; this crate holds the identity, the configuration, the command
//! line and the proxy services around it.

pub mod admin;
pub mod allowlist;
pub mod app_request;
pub mod body;
pub mod cli;
pub mod client_idle;
pub mod clock;
pub mod config;
pub mod connection_cap;
pub mod demo;
pub mod early_signals;
pub mod fd_limit;
pub mod files;
pub mod forward;
pub mod identity;
pub mod inbound;
pub mod lifecycle;
pub mod local_app;
pub mod logger;
pub mod memory;
pub mod method_override;
pub mod metrics;
pub mod outbound;
pub mod peer_cmd;
pub mod peer_cookie;
pub mod peer_location;
pub mod peers_text;
pub mod pool;
pub mod problem;
pub mod public_identity;
pub mod record;
pub mod reload;
pub mod request_cap;
pub mod request_framing;
pub mod request_path;
pub mod resolve;
pub mod server;
pub mod state;
pub mod throttle;
pub mod tls_accept;
pub mod tls_cert;
pub mod unreadable_head;

pub use peergate_signature as signature;
