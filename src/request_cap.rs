//! A ceiling on the requests one proxy listener serves at once, over HTTP/1.1 and HTTP/2
//! together (`listen.max_connections` again).
//!
//! The connection ceiling ([`crate::connection_cap`]) bounds HTTP/1.1 work, one request per
//! connection, but an HTTP/2 connection carries up to 100 requests at once: under the
//! connection ceiling alone, 4 096 connections could hold 409 600 requests in flight, each with
//! a connection to the app and its answer's buffers (about 270 KiB for an answer its client does
//! not read), which anyone reaching a public route could make. So a request is admitted only
//! while fewer than the ceiling are in flight on its listener; past it, it gets a 503
//! `overloaded` at once, before any work is done for it, and is sent again by its client
//! later. HTTP/1.1 never meets this ceiling (its connections are held to it), and an HTTP/2
//! client only when the listener is full, as nginx's `worker_connections` counts requests'
//! upstream connections with its clients'.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::problem::{Code, Problem};

/// A count of requests at work, held under a ceiling. Each proxy listener has one; another
/// bounds the refused HTTP/2 bodies read and dropped at once (`body::discard_after_refusal`).
pub struct RequestCap {
    in_flight: AtomicUsize,
    max: usize,
    /// What the ceiling covers, for the 503's detail.
    covers: &'static str,
}

/// One admitted request's place; given back when dropped (with the request's context, also
/// when the request is cancelled).
pub struct Slot(Arc<RequestCap>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RequestCap {
    pub fn new(max: usize) -> Arc<RequestCap> {
        Arc::new(RequestCap {
            in_flight: AtomicUsize::new(0),
            max,
            covers: "(listen.max_connections), over all its connections",
        })
    }

    /// The share of a listener's ceiling (`max`) that requests on public routes may hold at
    /// once: half, at least one. Unsigned clients can keep requests in flight as long as they
    /// like (an app that answers slowly, a body trickled in, an answer left unread over
    /// HTTP/2), and before they had the whole ceiling: three HTTP/2 connections of public
    /// requests got every peer's signed requests refused `overloaded` (found by an audit). With
    /// this share, signed requests always find the other half.
    pub fn public_share(max: usize) -> Arc<RequestCap> {
        Arc::new(RequestCap {
            in_flight: AtomicUsize::new(0),
            max: (max / 2).max(1),
            covers: "on its public routes (half of listen.max_connections, so that signed \
                     requests always find room)",
        })
    }

    /// A place for one more request, or the 503 to answer it with.
    pub fn admit(self: &Arc<Self>) -> Result<Slot, Problem> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Slot(self.clone())),
            Err(_) => Err(Problem::new(
                503,
                Code::Overloaded,
                "Too many requests at once",
                format!(
                    "this listener serves at most {} requests at once {}; send it again shortly",
                    self.max, self.covers
                ),
            )),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_is_exact_and_places_come_back() {
        let cap = RequestCap::new(3);
        let held: Vec<Slot> = (0..3).map(|_| cap.admit().ok().unwrap()).collect();
        let refused = cap.admit().err().unwrap();
        assert_eq!((refused.status, refused.reason), (503, "overloaded"));
        assert!(
            refused.detail.contains("at most 3 requests"),
            "{}",
            refused.detail
        );
        assert_eq!(cap.in_flight(), 3);
        drop(held);
        assert_eq!(cap.in_flight(), 0);
        let again = cap.admit();
        assert!(again.is_ok());
        assert_eq!(cap.in_flight(), 1);
        assert_eq!(
            refused.detail,
            "this listener serves at most 3 requests at once (listen.max_connections), over all \
             its connections; send it again shortly"
        );

        for (max, share) in [(4096, 2048), (5, 2), (2, 1), (1, 1)] {
            let public = RequestCap::public_share(max);
            let held: Vec<Slot> = (0..share).map(|_| public.admit().ok().unwrap()).collect();
            let refused = public.admit().err().unwrap();
            assert!(
                refused.detail.contains(&format!(
                    "at most {share} requests at once on its public routes"
                )),
                "{}",
                refused.detail
            );
            drop(held);
        }
    }
}
