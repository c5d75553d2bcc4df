//! The Prometheus metrics of DESIGN.md, in a registry of the gateway's own.
//!
//! Labels are bounded by construction: `peer` is a short ID from the allowlist or `unknown`,
//! `reason` and `kind` come from fixed code lists, `direction` and `outcome` from enums here.
//! Nothing taken from a request (path, host, key id) ever becomes a label value.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded, and an answer came back (whatever its status).
    Ok,
    /// Refused by peergate's policy (401/403/413/...).
    Refused,
    /// Accepted, but the upstream failed (502/504).
    Error,
    /// The client went away before any answer was written (mid-body, or while the upstream
    /// was answering): nothing was refused and nothing failed upstream, but it is no success.
    Aborted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::Aborted => "aborted",
        }
    }
}

/// Why forwarding failed, for `peergate_upstream_errors_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Tls,
    Protocol,
    Resolve,
    /// Outbound only: the peer answered 401 with `Accept-Signature` (RFC 9421 §5.1), so it did
    /// not take this installation's signature. The answer still goes to the app; this is
    /// what shows an operator that every call to a peer is being refused.
    SignatureRefused,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 6] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Protocol,
        UpstreamErrorKind::Resolve,
        UpstreamErrorKind::SignatureRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Resolve => "resolve",
            UpstreamErrorKind::SignatureRefused => "signature_refused",
        }
    }
}

pub const UNKNOWN_PEER: &str = "unknown";

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    rejections: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    client_connections: IntGaugeVec,
    client_connections_refused: IntCounterVec,
    pub peers: IntGauge,
    pub replay_cache_entries: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: Gauge,
    pub config_restart_pending: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "peergate_requests_total",
                "Requests handled, by direction, peer (short ID or unknown) and outcome.",
            ),
            &["direction", "peer", "outcome"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "peergate_rejections_total",
                "Requests refused, by direction and refusal reason.",
            ),
            &["direction", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "peergate_request_duration_seconds",
                "Time from request head to the end of the answer.",
            )
            // Up to the default timeouts of the app and of peers (60 s), and past them for a
            // slow answer streamed after its head, so that a stall at the timeout shows as
            // what it is in a quantile rather than as the last bucket's bound.
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 120.0,
            ]),
            &["direction"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "peergate_upstream_errors_total",
                "Failures reaching the app (inbound) or a peer (outbound), by kind.",
            ),
            &["direction", "kind"],
        )?;
        let client_connections = IntGaugeVec::new(
            Opts::new(
                "peergate_client_connections",
                "Client connections the inbound or outbound listener serves now.",
            ),
            &["direction"],
        )?;
        let client_connections_refused = IntCounterVec::new(
            Opts::new(
                "peergate_client_connections_refused_total",
                "Client connections closed unanswered because the listener was at listen.max_connections, every connection busy.",
            ),
            &["direction"],
        )?;
        let peers = IntGauge::new("peergate_peers", "Peers on the allowlist now.")?;
        let replay_cache_entries = IntGauge::new(
            "peergate_replay_cache_entries",
            "Nonces remembered by the replay cache now.",
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "peergate_config_reloads_total",
                "Configuration reloads, by result (success or failure).",
            ),
            &["result"],
        )?;
        let config_last_reload_success = Gauge::new(
            "peergate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration load that took effect.",
        )?;
        // Beside the reload counters: a reload that changed a restart-bound setting succeeds
        // (everything else was applied), so without this only a log line tells an operator
        // that the file on disk is not wholly in force.
        let config_restart_pending = IntGauge::new(
            "peergate_config_restart_pending",
            "Settings changed in the configuration since start that take effect only after a restart (0: none waits).",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "peergate_build_info",
                "Always 1; the version label says which peergate runs.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rejections.clone()),
            Box::new(duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(client_connections.clone()),
            Box::new(client_connections_refused.clone()),
            Box::new(peers.clone()),
            Box::new(replay_cache_entries.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_last_reload_success.clone()),
            Box::new(config_restart_pending.clone()),
            Box::new(build_info),
        ] {
            registry.register(collector)?;
        }
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        // Series with bounded labels exist from the start, at 0: `increase()` and `rate()`
        // ignore the value a series first appears with, so the first app outage after a
        // restart would not show. (Per-peer series cannot all be made; there may be 100 000.)
        for direction in [Direction::Inbound, Direction::Outbound] {
            let d = direction.as_str();
            client_connections.with_label_values(&[d]);
            client_connections_refused.with_label_values(&[d]);
            duration.with_label_values(&[d]);
            for kind in UpstreamErrorKind::ALL {
                // The app is not asked for signatures.
                if kind != UpstreamErrorKind::SignatureRefused || direction == Direction::Outbound {
                    upstream_errors.with_label_values(&[d, kind.as_str()]);
                }
            }
        }
        // Every refusal code either listener gives, not only DESIGN.md's table: an alert on
        // the first `overloaded` after a restart needs its series there before it.
        for reason in peergate_signature::Reason::ALL {
            rejections.with_label_values(&[Direction::Inbound.as_str(), reason.code()]);
        }
        for reason in crate::problem::OUTBOUND_REASONS {
            rejections.with_label_values(&[Direction::Outbound.as_str(), reason.code()]);
        }
        for direction in [Direction::Inbound, Direction::Outbound] {
            for code in crate::problem::Code::ALL {
                if code.refused_by(direction) {
                    rejections.with_label_values(&[direction.as_str(), code.as_str()]);
                }
            }
        }
        Ok(Metrics {
            registry,
            requests,
            rejections,
            duration,
            upstream_errors,
            client_connections,
            client_connections_refused,
            peers,
            replay_cache_entries,
            config_reloads,
            config_last_reload_success,
            config_restart_pending,
        })
    }

    /// Records one finished request. `peer` must be a short ID from the allowlist or
    /// [`UNKNOWN_PEER`]; `reason` a refusal code when the outcome is `Refused`. `elapsed` is
    /// `None` for a request with no start to time it from (a head that could not be read, see
    /// [`crate::record::unreadable_head`]): counted, not timed.
    pub fn request(
        &self,
        direction: Direction,
        peer: &str,
        outcome: Outcome,
        reason: Option<&'static str>,
        elapsed: Option<Duration>,
    ) {
        let d = direction.as_str();
        self.requests
            .with_label_values(&[d, peer, outcome.as_str()])
            .inc();
        if let (Outcome::Refused, Some(reason)) = (outcome, reason) {
            self.rejections.with_label_values(&[d, reason]).inc();
        }
        if let Some(elapsed) = elapsed {
            self.duration
                .with_label_values(&[d])
                .observe(elapsed.as_secs_f64());
        }
    }

    pub fn upstream_error(&self, direction: Direction, kind: UpstreamErrorKind) {
        self.upstream_errors
            .with_label_values(&[direction.as_str(), kind.as_str()])
            .inc();
    }

    pub fn client_connection_opened(&self, direction: Direction) {
        self.client_connections
            .with_label_values(&[direction.as_str()])
            .inc();
    }

    pub fn client_connection_closed(&self, direction: Direction) {
        self.client_connections
            .with_label_values(&[direction.as_str()])
            .dec();
    }

    pub fn client_connection_refused(&self, direction: Direction) {
        self.client_connections_refused
            .with_label_values(&[direction.as_str()])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
