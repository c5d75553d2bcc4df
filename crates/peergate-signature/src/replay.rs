//! Nonce replay cache: remembers each `(keyid, nonce)` pair for as long as a signature that
//! carries it could still be accepted, so a captured request cannot be played again.
//!
//! Design, for a cache that faces the internet:
//!
//! * **Hard bound.** The cache holds at most `capacity` entries, and every shard's table is
//!   allocated at its full size up front, so memory is fixed at start-up and never grows,
//!   whatever the traffic.
//! * **Fail closed.** When full, expired entries are dropped first; if every entry is still
//!   live the request is refused with [`ReplayError::Full`]. Evicting a live entry would let
//!   its request be replayed, so that is never done.
//! * **Cheap when under attack.** Each shard tracks the earliest expiry it holds. A full shard
//!   whose earliest expiry is still ahead answers `Full` in O(1); it is swept (O(shard size))
//!   only when at least one entry has expired, which, with expiries in whole seconds, happens
//!   at most once per second per shard.
//! * **Compact entries.** An entry is a 128-bit keyed hash of key id and nonce (SHA-256 under
//!   a random per-cache secret, so senders cannot aim collisions) plus the expiry: 24 bytes
//!   and one control byte per table slot, however long the nonce was.
//! * **Atomic check-and-insert.** Lookup and insert happen under one shard lock: of two
//!   concurrent requests with the same nonce exactly one is accepted.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use sha2::{Digest as _, Sha256};

/// Why [`ReplayCache::check_and_insert`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The `(keyid, nonce)` pair was already seen and is still remembered.
    #[error("this nonce was already used with this key; sign every request with a fresh nonce")]
    Replayed,
    /// The cache is full of live entries; accepting would mean forgetting one.
    #[error("the replay cache is full of live nonces; retry later")]
    Full,
}

/// Shards are used once the capacity is large enough to give each a useful share.
const MIN_ENTRIES_PER_SHARD: usize = 4096;
/// Upper bound on shards: enough to keep lock contention low on many-core hosts.
const MAX_SHARDS: usize = 64;

/// A 128-bit keyed digest of `(key_id, nonce)`. Both halves are uniformly distributed, so
/// `lo` serves directly as the table hash and `hi` picks the shard.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    lo: u64,
    hi: u64,
}

impl Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.lo);
    }
}

/// Pass-through hasher: the fingerprint is already a keyed cryptographic hash, hashing it
/// again would only cost time.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than `write_u64` is used; stay correct anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type Table = HashMap<Fingerprint, u64, BuildHasherDefault<PassThrough>>;

struct Shard {
    /// fingerprint -> remember until (unix seconds, inclusive)
    map: Table,
    /// This shard's share of the capacity; `map.len()` never exceeds it.
    cap: usize,
    /// No entry expires before this (may be lower than the true minimum, never higher).
    /// `u64::MAX` when empty.
    min_until: u64,
}

impl Shard {
    /// Drops expired entries if any can be expired at `now`; returns how many were dropped.
    fn sweep_if_due(&mut self, now: u64) -> usize {
        if now <= self.min_until {
            return 0;
        }
        let before = self.map.len();
        let mut min = u64::MAX;
        self.map.retain(|_, until| {
            let keep = *until >= now;
            if keep {
                min = min.min(*until);
            }
            keep
        });
        self.min_until = min;
        before - self.map.len()
    }
}

/// The nonce replay cache. `Send + Sync`: share one (in an `Arc`) across all worker threads.
pub struct ReplayCache {
    shards: Box<[Mutex<Shard>]>,
    capacity: usize,
    len: AtomicUsize,
    secret: [u8; 32],
    sweeps: AtomicU64,
}

impl fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl ReplayCache {
    /// A cache holding at most `capacity` entries, allocated in full now.
    ///
    /// Memory is about 25 bytes per table slot, and a table has the next power of two above
    /// 8/7 of its share of slots: between roughly 29 and 57 bytes per unit of capacity
    /// (1,000,000 entries: about 50 MiB). Size it for the peak request rate times the
    /// freshness window (`max_age` + `clock_skew`).
    ///
    /// Large caches are split into up to 64 shards (of at least 4096 entries each) that each
    /// hold an equal share; `Full` is then reported when one shard is full, which with the
    /// uniform hash happens within a few percent of `capacity`.
    pub fn new(capacity: usize) -> Self {
        let wanted = (capacity / MIN_ENTRIES_PER_SHARD).clamp(1, MAX_SHARDS);
        // Largest power of two not above `wanted` (wanted >= 1).
        let n = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        let base = capacity / n;
        let extra = capacity % n;
        let shards = (0..n)
            .map(|i| {
                let cap = base + usize::from(i < extra);
                Mutex::new(Shard {
                    map: Table::with_capacity_and_hasher(cap, BuildHasherDefault::default()),
                    cap,
                    min_until: u64::MAX,
                })
            })
            .collect();
        ReplayCache {
            shards,
            capacity,
            len: AtomicUsize::new(0),
            secret: rand::random(),
            sweeps: AtomicU64::new(0),
        }
    }

    /// Atomically: if `(key_id, nonce)` is remembered and `now` is not past its
    /// `remember_until`, `Err(Replayed)`; otherwise remember it until `remember_until`
    /// (unix seconds, inclusive) and `Ok`.
    ///
    /// When the shard is full, expired entries are dropped first; if it is still full,
    /// `Err(Full)`: refusing is safer than forgetting a live nonce.
    ///
    /// A `remember_until` already in the past is accepted without storing anything: such a
    /// signature is expired and refused on that ground anyway.
    ///
    /// # Errors
    /// [`ReplayError::Replayed`] for a pair still remembered; [`ReplayError::Full`] when there
    /// is no room without forgetting a live entry.
    pub fn check_and_insert(
        &self,
        key_id: &str,
        nonce: &str,
        remember_until: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        let fp = self.fingerprint(key_id, nonce);
        let mut shard = self.shard(&fp);

        if let Some(until) = shard.map.get_mut(&fp) {
            if *until >= now {
                return Err(ReplayError::Replayed);
            }
            // Seen before but forgotten by now: reuse the slot.
            if remember_until >= now {
                *until = remember_until;
                shard.min_until = shard.min_until.min(remember_until);
            } else {
                shard.map.remove(&fp);
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            return Ok(());
        }

        if remember_until < now {
            return Ok(());
        }

        if shard.map.len() >= shard.cap {
            let dropped = shard.sweep_if_due(now);
            if dropped > 0 {
                self.sweeps.fetch_add(1, Ordering::Relaxed);
                self.len.fetch_sub(dropped, Ordering::Relaxed);
            }
            if shard.map.len() >= shard.cap {
                return Err(ReplayError::Full);
            }
        }

        shard.map.insert(fp, remember_until);
        shard.min_until = shard.min_until.min(remember_until);
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Entries currently held, expired ones not yet swept included (for the
    /// `peergate_replay_cache_entries` gauge).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hard bound on entries given to [`new`](ReplayCache::new).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops every entry expired at `now` (whose `remember_until` is before `now`); returns how
    /// many. For a periodic sweeper, so the gauge reflects live entries; correctness does not
    /// depend on it. Shards with nothing expired are skipped in O(1).
    pub fn purge_expired(&self, now: u64) -> usize {
        let mut total = 0;
        for shard in &self.shards {
            let dropped = lock(shard).sweep_if_due(now);
            if dropped > 0 {
                self.sweeps.fetch_add(1, Ordering::Relaxed);
                self.len.fetch_sub(dropped, Ordering::Relaxed);
            }
            total += dropped;
        }
        total
    }

    fn fingerprint(&self, key_id: &str, nonce: &str) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(self.secret);
        // Length prefix: ("ab", "c") and ("a", "bc") must differ.
        h.update((key_id.len() as u64).to_be_bytes());
        h.update(key_id.as_bytes());
        h.update(nonce.as_bytes());
        let out: [u8; 32] = h.finalize().into();
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&out[0..8]);
        hi.copy_from_slice(&out[8..16]);
        Fingerprint {
            lo: u64::from_le_bytes(lo),
            hi: u64::from_le_bytes(hi),
        }
    }

    fn shard(&self, fp: &Fingerprint) -> MutexGuard<'_, Shard> {
        // `shards` is never empty (at least one shard) and the remainder is below its length,
        // so this index is always in range.
        let idx = usize::try_from(fp.hi % self.shards.len() as u64).unwrap_or(0);
        lock(&self.shards[idx])
    }

    #[cfg(test)]
    fn sweeps(&self) -> u64 {
        self.sweeps.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn allocated_slots(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.capacity()).sum()
    }
}

/// A panic while holding a shard lock cannot leave the table half-updated in a way that
/// matters (each operation is a single map call), so a poisoned lock is used as is rather
/// than taking the whole proxy down.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::thread;

    const K: &str = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ReplayCache>();
    }

    #[test]
    fn replay_detected() {
        let c = ReplayCache::new(100);
        assert_eq!(c.check_and_insert(K, "n1", 1060, 1000), Ok(()));
        assert_eq!(
            c.check_and_insert(K, "n1", 1061, 1001),
            Err(ReplayError::Replayed)
        );
        assert_eq!(c.check_and_insert(K, "n2", 1060, 1000), Ok(()));
        // Same nonce, other key: a different pair.
        assert_eq!(c.check_and_insert("other", "n1", 1060, 1000), Ok(()));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn key_and_nonce_are_separated() {
        let c = ReplayCache::new(100);
        assert_eq!(c.check_and_insert("ab", "c", 10, 0), Ok(()));
        assert_eq!(c.check_and_insert("a", "bc", 10, 0), Ok(()));
        assert_eq!(c.check_and_insert("", "abc", 10, 0), Ok(()));
        assert_eq!(c.check_and_insert("abc", "", 10, 0), Ok(()));
        assert_eq!(
            c.check_and_insert("ab", "c", 10, 0),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn expiry_allows_reuse_after_remember_until() {
        let c = ReplayCache::new(10);
        assert_eq!(c.check_and_insert(K, "n", 20, 10), Ok(()));
        // remember_until is inclusive.
        assert_eq!(
            c.check_and_insert(K, "n", 30, 20),
            Err(ReplayError::Replayed)
        );
        assert_eq!(c.check_and_insert(K, "n", 31, 21), Ok(()));
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.check_and_insert(K, "n", 31, 31),
            Err(ReplayError::Replayed)
        );
        // An expired entry re-presented with an already-past window is dropped, not stored.
        assert_eq!(c.check_and_insert(K, "n", 5, 40), Ok(()));
        assert_eq!(c.len(), 0);
        // A window already in the past is not stored.
        assert_eq!(c.check_and_insert(K, "m", 5, 40), Ok(()));
        assert!(c.is_empty());
    }

    #[test]
    fn purge_expired() {
        let c = ReplayCache::new(100);
        for i in 0..10 {
            assert_eq!(c.check_and_insert(K, &format!("a{i}"), 50, 0), Ok(()));
            assert_eq!(c.check_and_insert(K, &format!("b{i}"), 100, 0), Ok(()));
        }
        assert_eq!(c.len(), 20);
        assert_eq!(c.purge_expired(50), 0);
        assert_eq!(c.purge_expired(51), 10);
        assert_eq!(c.len(), 10);
        assert_eq!(c.purge_expired(51), 0);
        assert_eq!(
            c.check_and_insert(K, "b3", 200, 60),
            Err(ReplayError::Replayed)
        );
        assert_eq!(c.check_and_insert(K, "a3", 200, 60), Ok(()));
        assert_eq!(c.purge_expired(1000), 11);
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_bound_holds_single_shard() {
        let c = ReplayCache::new(1000);
        let slots = c.allocated_slots();
        assert!(slots >= 1000);
        let mut ok = 0;
        for i in 0..10_000 {
            match c.check_and_insert(K, &format!("n{i}"), 1_000_000, 0) {
                Ok(()) => ok += 1,
                Err(e) => assert_eq!(e, ReplayError::Full),
            }
            assert!(c.len() <= c.capacity());
        }
        assert_eq!(ok, 1000);
        assert_eq!(c.len(), 1000);
        assert_eq!(c.allocated_slots(), slots, "the table must not grow");
    }

    #[test]
    fn capacity_bound_holds_sharded() {
        let cap = 100_000;
        let c = ReplayCache::new(cap);
        assert!(c.shards.len() > 1);
        let slots = c.allocated_slots();
        let mut ok = 0usize;
        for i in 0..(2 * cap) {
            if c.check_and_insert(K, &i.to_string(), u64::MAX, 0).is_ok() {
                ok += 1;
            }
        }
        assert!(ok <= cap);
        assert_eq!(c.len(), ok);
        // Uniform hashing fills the shards evenly.
        assert!(ok >= cap * 95 / 100, "only {ok} of {cap} used");
        assert_eq!(c.allocated_slots(), slots, "the tables must not grow");
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let c = ReplayCache::new(0);
        assert_eq!(c.check_and_insert(K, "n", 10, 0), Err(ReplayError::Full));
        assert!(c.is_empty());
    }

    #[test]
    fn full_refuses_and_never_evicts_live_entries() {
        let c = ReplayCache::new(100);
        for i in 0..100 {
            assert_eq!(c.check_and_insert(K, &format!("n{i}"), 100, 10), Ok(()));
        }
        for i in 0..1000 {
            assert_eq!(
                c.check_and_insert(K, &format!("x{i}"), 100, 10),
                Err(ReplayError::Full)
            );
        }
        // Every live entry is still remembered.
        for i in 0..100 {
            assert_eq!(
                c.check_and_insert(K, &format!("n{i}"), 100, 50),
                Err(ReplayError::Replayed)
            );
        }
        // The O(1) path: nothing could have expired, so nothing was swept.
        assert_eq!(c.sweeps(), 0);
        // Once they expire, room is made.
        assert_eq!(c.check_and_insert(K, "late", 200, 101), Ok(()));
        assert_eq!(c.len(), 1);
        assert_eq!(c.sweeps(), 1);
    }

    #[test]
    fn full_path_sweeps_at_most_once_per_second() {
        let c = ReplayCache::new(100);
        for i in 0..50 {
            assert_eq!(c.check_and_insert(K, &format!("a{i}"), 20, 10), Ok(()));
        }
        for i in 0..50 {
            assert_eq!(c.check_and_insert(K, &format!("b{i}"), 100, 10), Ok(()));
        }
        // At 21 the a-entries have expired: the first insert sweeps them and refills.
        for i in 0..50 {
            assert_eq!(c.check_and_insert(K, &format!("c{i}"), 100, 21), Ok(()));
        }
        assert_eq!(c.sweeps(), 1);
        // Full again, nothing expired: many refusals, no further sweep.
        for i in 0..10_000 {
            assert_eq!(
                c.check_and_insert(K, &format!("d{i}"), 100, 21),
                Err(ReplayError::Full)
            );
        }
        assert_eq!(c.sweeps(), 1);
        assert_eq!(c.len(), 100);
    }

    #[test]
    fn concurrent_same_nonce_exactly_one_ok() {
        let threads = 16;
        let c = Arc::new(ReplayCache::new(10_000));
        for round in 0..50 {
            let barrier = Arc::new(Barrier::new(threads));
            let nonce = format!("nonce-{round}");
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let c = Arc::clone(&c);
                    let b = Arc::clone(&barrier);
                    let nonce = nonce.clone();
                    thread::spawn(move || {
                        b.wait();
                        c.check_and_insert(K, &nonce, 100, 0)
                    })
                })
                .collect();
            let results: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(ReplayError::Full)))
                .collect();
            let ok = results.iter().filter(|r| r.is_ok()).count();
            let replayed = results
                .iter()
                .filter(|r| **r == Err(ReplayError::Replayed))
                .count();
            assert_eq!((ok, replayed), (1, threads - 1), "round {round}");
        }
        assert_eq!(c.len(), 50);
    }

    #[test]
    fn concurrent_distinct_nonces_respect_capacity() {
        let cap = 20_000; // several shards
        let c = Arc::new(ReplayCache::new(cap));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let c = Arc::clone(&c);
                thread::spawn(move || {
                    let mut ok = 0usize;
                    for i in 0..5_000 {
                        if c.check_and_insert(K, &format!("{t}-{i}"), 100, 0).is_ok() {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert!(ok <= cap);
        assert_eq!(c.len(), ok);
    }

    #[test]
    fn errors_read_well() {
        assert!(ReplayError::Replayed.to_string().contains("fresh nonce"));
        assert!(ReplayError::Full.to_string().contains("retry"));
    }
}
