//! What one request went through, on either listener: refused by policy, failed upstream, or
//! answered; and the one place that turns that into the client's answer, the metrics and the
//! log line, so the inbound and outbound sides report the same way.

use std::time::Instant;

use http::HeaderValue;
use pingora::proxy::Session;

use crate::forward::ForwardError;
use crate::metrics::{Direction, Metrics, Outcome, UpstreamErrorKind, UNKNOWN_PEER};
use crate::problem::Problem;

pub struct Record {
    start: Instant,
    direction: Direction,
    refused: Option<&'static str>,
    upstream_error: Option<UpstreamErrorKind>,
    /// Status peergate sent itself (refusals, failures, its own answers, buffered forwards);
    /// `None` when Pingora's proxy path answered.
    status: Option<u16>,
}

impl Record {
    pub fn new(direction: Direction) -> Self {
        Record {
            start: Instant::now(),
            direction,
            refused: None,
            upstream_error: None,
            status: None,
        }
    }

    pub fn answered(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// Answers with `problem` as a refusal of peergate's policy.
    pub async fn refuse(
        &mut self,
        session: &mut Session,
        problem: &Problem,
        accept_signature: Option<&HeaderValue>,
    ) {
        self.refused = Some(problem.reason);
        self.status = Some(problem.status);
        if !session.is_body_done() || session.req_header().method == http::Method::CONNECT {
            // The rest of the body is never read: the connection cannot carry another request.
            session.set_keepalive(None);
        }
        if let Err(e) = problem.send(session, accept_signature).await {
            log::debug!(
                "{}: could not send the refusal: {e}",
                self.direction.as_str()
            );
        }
    }

    /// Answers a failure to reach the upstream (the app, or a peer) with `problem` (502/504).
    pub async fn upstream_failed(
        &mut self,
        session: &mut Session,
        metrics: &Metrics,
        kind: UpstreamErrorKind,
        problem: &Problem,
    ) {
        metrics.upstream_error(self.direction, kind);
        self.upstream_error = Some(kind);
        self.status = Some(problem.status);
        if let Err(e) = problem.send(session, None).await {
            log::debug!(
                "{}: could not send the failure: {e}",
                self.direction.as_str()
            );
        }
    }

    /// Records how a forward ended, answering or cutting the connection as it requires.
    pub async fn forwarded(
        &mut self,
        session: &mut Session,
        metrics: &Metrics,
        result: Result<u16, ForwardError>,
    ) {
        match result {
            Ok(status) => self.status = Some(status),
            Err(ForwardError::Upstream { kind, problem }) => {
                self.upstream_failed(session, metrics, kind, &problem).await;
            }
            Err(ForwardError::Aborted { kind, detail }) => {
                log::warn!("{}: {detail}", self.direction.as_str());
                if let Some(kind) = kind {
                    metrics.upstream_error(self.direction, kind);
                    self.upstream_error = Some(kind);
                }
                session.set_keepalive(None);
            }
        }
    }

    /// Counts the request and writes its log line. `peer` is a short ID from the allowlist
    /// (the caller inbound, the peer called outbound) or `None`.
    pub fn finish(&self, session: &Session, metrics: &Metrics, peer: Option<&str>) {
        let elapsed = self.start.elapsed();
        let outcome = if self.refused.is_some() {
            Outcome::Refused
        } else if self.upstream_error.is_some() {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        metrics.request(
            self.direction,
            peer.unwrap_or(UNKNOWN_PEER),
            outcome,
            self.refused,
            elapsed,
        );
        let status = self
            .status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let req = session.req_header();
        let target: String = String::from_utf8_lossy(req.raw_path())
            .chars()
            .take(200)
            .collect();
        log::info!(
            "{} {} {:?} peer={} outcome={} reason={} status={} duration_ms={:.3}",
            self.direction.as_str(),
            req.method,
            target,
            peer.unwrap_or("-"),
            outcome.as_str(),
            self.refused
                .or(self.upstream_error.map(UpstreamErrorKind::as_str))
                .unwrap_or("-"),
            status,
            elapsed.as_secs_f64() * 1000.0
        );
    }
}
