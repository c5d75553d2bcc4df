//! The wall clock in whole Unix seconds: what signatures carry (`created`, `expires`) and what
//! freshness and the replay cache count in.
//!
//! A clock set before 1970 reads as 0. That fails closed: signatures we make are then dated
//! 1970 and refused by peers as too old, and signatures we check look created far in the future
//! and are refused here.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
