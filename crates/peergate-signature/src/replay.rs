//! Nonce replay cache: remembers each `(keyid, nonce)` pair for as long as a signature that
//! carries it could still be accepted, so a captured request cannot be played again.
//!
//! **The window.** The verifier remembers a nonce until `min(created + max_age, expires)`, the
//! last second at which this gateway's clock still accepts the signature (`remember_until` is
//! inclusive: the entry blocks a replay in that very second; one second later the signature is
//! refused as expired on its own). For peergate's own signatures that is `lifetime` (60 s by
//! default) after `created`, more only when the signer's clock is ahead of ours (by at most
//! `clock_skew`, which bounds how far in the future `created` may be).
//!
//! No margin is added past that second. A margin only matters if this gateway's wall clock
//! steps backwards: after a step back of d seconds, signatures that expired in the last d
//! seconds are accepted again, and an entry already swept no longer blocks their replay (an
//! entry not yet swept still does: expiry is compared with the current clock). What the cache
//! defends against is replay of a captured request while time moves forwards; a wall clock
//! that steps back while serving is outside that, and keeping it from doing so (a synchronized
//! clock that NTP slews rather than steps) is the host's job. No fixed margin would close the
//! gap anyway: a step larger than the margin gets through. The `clock_skew` (30 s) that used to
//! be added covered only steps of up to 30 s, and cost a third more entries at any rate (90 s
//! of nonces instead of 60 s for peergate's signatures), enough to fill the default 1 000 000
//! entries at about 11 000 verified requests/s.
//!
//! Design, for a cache that faces the internet:
//!
//! * **Hard bound.** The cache holds at most `capacity` entries. Each shard's table grows with
//!   the entries it holds (never past what its share of `capacity` needs), so memory follows
//!   the traffic, up to a ceiling fixed at start-up whatever the traffic.
//! * **Expired entries go first.** Before a shard's table grows, and when a shard is full, its
//!   expired entries are dropped, so the table is sized for the live entries only: a gateway
//!   at R verified requests/s holds about R × (the freshness window) entries.
//! * **Fail closed.** If every entry of a full shard is still live, the request is refused
//!   with [`ReplayError::Full`]. Evicting a live entry would let its request be replayed, so
//!   that is never done.
//! * **Cheap when under attack.** Each shard tracks the earliest expiry it holds. A full shard
//!   whose earliest expiry is still ahead answers `Full` in O(1); it is swept (O(shard size))
//!   only when at least one entry has expired, which, with expiries in whole seconds, happens
//!   at most once per second per shard.
//! * **Compact entries.** An entry is a 64-bit keyed hash of key id and nonce (SHA-256 under a
//!   random per-cache secret, so senders cannot aim collisions), held as two 32-bit halves, and
//!   a 32-bit expiry: 12 bytes with 4-byte alignment (a `u64` would pad it to 16), and one
//!   control byte per table slot, however long the nonce was. Two different pairs with one
//!   hash would make the second look replayed (a refusal, never an acceptance); with a million
//!   entries that happens to one request in about 10^13.
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
/// Bytes of one table slot: a 12-byte entry ([`Fingerprint`] and [`Stamp`], no padding) and
/// hashbrown's control byte.
const SLOT_BYTES: usize = 13;

// The memory accounting (`table_bytes`, `max_table_bytes`, the documented bounds) rests on
// this: an entry that grew (a `u64` field brings back 4 bytes of padding) must change it too.
const _: () = assert!(std::mem::size_of::<(Fingerprint, Stamp)>() + 1 == SLOT_BYTES);

/// Pass-through hasher: the key is already a keyed cryptographic hash, hashing it again would
/// only cost time.
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

/// The 64-bit keyed hash of `(keyid, nonce)`, stored as two `u32` halves so that an entry has
/// 4-byte alignment: beside the 32-bit [`Stamp`] that makes 12 bytes where a `u64` key would
/// pad the entry to 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint([u32; 2]);

impl Fingerprint {
    fn new(v: u64) -> Fingerprint {
        // Truncation is the point: the two halves.
        Fingerprint([v as u32, (v >> 32) as u32])
    }

    fn get(self) -> u64 {
        let [lo, hi] = self.0;
        u64::from(lo) | (u64::from(hi) << 32)
    }
}

impl Hash for Fingerprint {
    /// One `write_u64` of the whole fingerprint, so [`PassThrough`] hands the table all 64
    /// uniform bits as they are. The derived impl would hash the array as a slice (a length
    /// prefix, then bytes), which only the byte-wise fallback would mix.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.get());
    }
}

/// fingerprint -> remember until (unix seconds, inclusive), as a [`Stamp`].
type Table = HashMap<Fingerprint, Stamp, BuildHasherDefault<PassThrough>>;

/// Unix seconds in 32 bits, compared with serial number arithmetic (RFC 1982): correct for
/// any two times less than 2^31 s (68 years) apart, so across 2106 too. Expiries further
/// than that from now are shortened to that distance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(u32);

/// Longest time ahead an entry is stored for.
const MAX_AHEAD: u64 = (1 << 31) - 1;

impl Stamp {
    fn at(t: u64) -> Stamp {
        // Truncation is the point: the serial arithmetic below works modulo 2^32.
        Stamp(t as u32)
    }

    /// Whether the entry is still remembered at `now` (its time is `now` or later).
    fn live_at(self, now: Stamp) -> bool {
        (self.0.wrapping_sub(now.0) as i32) >= 0
    }

    /// The full time of a live stamp, given `now`.
    fn resolve(self, now: u64) -> u64 {
        now + u64::from(self.0.wrapping_sub(now as u32))
    }
}

struct Shard {
    map: Table,
    /// This shard's share of the capacity; `map.len()` never exceeds it.
    cap: usize,
    /// No entry expires before this (may be lower than the true minimum, never higher).
    /// `u64::MAX` when empty.
    min_until: u64,
}

impl Shard {
    /// Drops expired entries if any can be expired at `now`; returns how many were dropped.
    ///
    /// The live entries are moved to a new table sized for them (plus an eighth, so the next
    /// sweep is not due at once): deleting in place would leave tombstones that make the table
    /// grow as if it held them, and would never give memory back after a burst.
    fn sweep_if_due(&mut self, now: u64) -> usize {
        if now <= self.min_until {
            return 0;
        }
        let before = self.map.len();
        let stamp = Stamp::at(now);
        let live = self.map.values().filter(|u| u.live_at(stamp)).count();
        let room = live
            .saturating_add(live / 8)
            .saturating_add(16)
            .min(self.cap);
        let mut fresh = Table::with_capacity_and_hasher(room, BuildHasherDefault::default());
        let mut min = u64::MAX;
        for (fp, until) in self.map.drain() {
            if until.live_at(stamp) {
                min = min.min(until.resolve(now));
                fresh.insert(fp, until);
            }
        }
        self.map = fresh;
        self.min_until = min;
        before - live
    }
}

/// The nonce replay cache. `Send + Sync`: share one (in an `Arc`) across all worker threads.
pub struct ReplayCache {
    shards: Box<[Mutex<Shard>]>,
    capacity: usize,
    len: AtomicUsize,
    secret: [u8; 32],
    sweeps: AtomicU64,
    /// The second from which this cache has seen every nonce (see
    /// [`remembering_since`](ReplayCache::remembering_since)).
    since: Option<u64>,
    /// Signatures created before this second (0: none) may have had their nonces remembered
    /// for a shorter age than the one in force now (see [`remembered_for`]).
    ///
    /// [`remembered_for`]: ReplayCache::remembered_for
    shorter_until: AtomicU64,
    ages: Mutex<Ages>,
}

/// The `max_age` values the verifier has remembered nonces for.
#[derive(Debug, Default)]
struct Ages {
    /// The one in force, as last told.
    current: Option<u64>,
    /// The largest `clock_skew` told so far: how far ahead of this gateway's clock a
    /// signature accepted until now could have claimed its `created` to be.
    skew: u64,
    /// `(until, age)`: a signature created before `until` may have been accepted, and its
    /// nonce remembered, under a `max_age` as short as `age`.
    shorter: Option<(u64, u64)>,
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

/// Table slots hashbrown allocates for `n` entries (a power of two, at most 7/8 full).
fn slots_for(n: usize) -> usize {
    match n {
        0 => 0,
        1..=3 => 4,
        4..=7 => 8,
        _ => (n.saturating_mul(8) / 7).next_power_of_two(),
    }
}

/// How many shards a cache of `capacity` entries is split into.
///
/// A shard's table is a power of two of slots at most 7/8 full, so a share just above 7/8 of a
/// power of two needs the next one, half empty even when the shard is full: 1 000 000 entries
/// in 64 shards of 15 625 would need 32 768 slots each (26 MiB), while 70 shards of at most
/// 14 286 fit in 16 384 (14 MiB). So the power-of-two count that gives shards of at least
/// [`MIN_ENTRIES_PER_SHARD`] (up to [`MAX_SHARDS`]) is raised, when that needs fewer slots in
/// all, to the count whose shares just fit the next smaller table. Fewer than twice as many
/// shards, each still above half the minimum share.
fn shard_count(capacity: usize) -> usize {
    let wanted = (capacity / MIN_ENTRIES_PER_SHARD).clamp(1, MAX_SHARDS);
    // Largest power of two not above `wanted` (wanted >= 1).
    let n = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
    if n == 1 {
        return 1;
    }
    let slots = slots_for(capacity.div_ceil(n));
    // Entries a table of half as many slots holds.
    let fits = slots / 2 / 8 * 7;
    if fits == 0 {
        return n;
    }
    let more = capacity.div_ceil(fits);
    if more.saturating_mul(slots / 2) < n.saturating_mul(slots) {
        more
    } else {
        n
    }
}

impl ReplayCache {
    /// A cache holding at most `capacity` entries. Nothing is allocated per entry up front:
    /// each shard's table grows with its live entries.
    ///
    /// Memory is 13 bytes per table slot; a table has a power of two of slots and is at most
    /// 7/8 full, and a sweep rebuilds it for its live entries plus an eighth: between 15 and
    /// about 34 bytes per live entry, and at most
    /// [`max_table_bytes`](ReplayCache::max_table_bytes) when full (1,000,000 entries: 14.2
    /// MiB). Size it for the peak rate of verified requests times the freshness window (for
    /// peergate's own signatures, `signatures.lifetime`: 60 s by default, up to `clock_skew`
    /// more for a signer whose clock is ahead).
    ///
    /// Large caches are split into shards (up to 127, of at least 2048 entries each, sized so
    /// that a full shard fills its table; see `shard_count`) that each hold an equal share;
    /// `Full` is then reported when one shard is full, which with the uniform hash happens
    /// within a few percent of `capacity`.
    pub fn new(capacity: usize) -> Self {
        let n = shard_count(capacity);
        let base = capacity / n;
        let extra = capacity % n;
        let shards = (0..n)
            .map(|i| {
                let cap = base + usize::from(i < extra);
                Mutex::new(Shard {
                    map: Table::default(),
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
            since: None,
            shorter_until: AtomicU64::new(0),
            ages: Mutex::default(),
        }
    }

    /// This cache has seen every nonce verified since `unix` (seconds): the moment a gateway
    /// started. Nonces are held in memory only, so a signature made before then may have been
    /// accepted by the process before this one; the verifier refuses it (`replayed`) rather
    /// than take it again. Without this (the default), a cache is taken to have seen every
    /// nonce, as for tests that verify fixed vectors.
    #[must_use]
    pub fn remembering_since(mut self, unix: u64) -> Self {
        self.since = Some(unix);
        self
    }

    /// See [`remembering_since`](ReplayCache::remembering_since).
    pub fn remembers_since(&self) -> Option<u64> {
        self.since
    }

    /// Tells the cache the verifier's `max_age` is `max_age` seconds from `now` on, before
    /// the verifier uses it (at start, and before a reload puts a new one in force).
    ///
    /// A nonce is remembered for the `max_age` in force when it was accepted. Were `max_age`
    /// raised, a signature accepted under the shorter one would be forgotten while the longer
    /// one still accepts it, and could be played again: so a raise from `a` to `b` seconds
    /// holds every signature created before `now` plus the largest `clock_skew` told so far
    /// (the latest `created` a signature accepted until now can claim, whatever skew was in
    /// force when it was accepted) to `a`, which
    /// [`remembered_for`](ReplayCache::remembered_for) then says. After a second raise
    /// while the first still matters, the earlier and shorter limit covers both (stricter for
    /// some signatures made between the two, never looser).
    pub fn note_max_age(&self, max_age: u64, clock_skew: u64, now: u64) {
        let mut ages = lock(&self.ages);
        ages.skew = ages.skew.max(clock_skew);
        if let Some(before) = ages.current.filter(|&before| before < max_age) {
            let until = now.saturating_add(ages.skew);
            ages.shorter = Some(match ages.shorter {
                Some((old_until, old_age)) => (until.max(old_until), before.min(old_age)),
                None => (until, before),
            });
            if let Some((until, _)) = ages.shorter {
                self.shorter_until.store(until, Ordering::Release);
            }
        }
        ages.current = Some(max_age);
    }

    /// The longest a signature created at `created` may have been remembered for, when a
    /// raise of `max_age` (see [`note_max_age`](ReplayCache::note_max_age)) left it shorter
    /// than the one in force; `None` otherwise. One atomic load for signatures made since.
    pub fn remembered_for(&self, created: u64) -> Option<u64> {
        if created >= self.shorter_until.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.ages)
            .shorter
            .filter(|&(until, _)| created < until)
            .map(|(_, age)| age)
    }

    /// Atomically: if `(key_id, nonce)` is remembered and `now` is not past its
    /// `remember_until`, `Err(Replayed)`; otherwise remember it until `remember_until`
    /// (unix seconds, inclusive; at most 68 years ahead) and `Ok`.
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
        let (fp, shard_hash) = self.fingerprint(key_id, nonce);
        let mut shard = self.shard(shard_hash);
        let until = remember_until.min(now.saturating_add(MAX_AHEAD));
        let stamp = Stamp::at(now);

        if let Some(seen) = shard.map.get_mut(&fp) {
            if seen.live_at(stamp) {
                return Err(ReplayError::Replayed);
            }
            // Seen before but forgotten by now: reuse the slot.
            if until >= now {
                *seen = Stamp::at(until);
                shard.min_until = shard.min_until.min(until);
            } else {
                shard.map.remove(&fp);
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            return Ok(());
        }

        if until < now {
            return Ok(());
        }

        // Make room from expired entries before refusing (full) or growing the table.
        let full = shard.map.len() >= shard.cap;
        if full || shard.map.len() >= shard.map.capacity() {
            let dropped = shard.sweep_if_due(now);
            if dropped > 0 {
                self.sweeps.fetch_add(1, Ordering::Relaxed);
                self.len.fetch_sub(dropped, Ordering::Relaxed);
            }
            if shard.map.len() >= shard.cap {
                return Err(ReplayError::Full);
            }
        }

        shard.map.insert(fp, Stamp::at(until));
        shard.min_until = shard.min_until.min(until);
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

    /// Bytes the tables hold now (slots allocated, used or not).
    pub fn table_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| slots_for(lock(s).map.capacity()) * SLOT_BYTES)
            .sum()
    }

    /// The most bytes the tables can ever hold: every shard full.
    pub fn max_table_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| slots_for(lock(s).cap) * SLOT_BYTES)
            .sum()
    }

    /// Drops every entry expired at `now` (whose `remember_until` is before `now`); returns how
    /// many. For a periodic sweeper (peergate's metrics scrape), so the gauge reflects live
    /// entries and a cache whose traffic stopped gives its memory back; correctness does not
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

    /// The table key and the shard selector: two independent 64-bit parts of one keyed digest.
    fn fingerprint(&self, key_id: &str, nonce: &str) -> (Fingerprint, u64) {
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
        (
            Fingerprint::new(u64::from_le_bytes(lo)),
            u64::from_le_bytes(hi),
        )
    }

    fn shard(&self, shard_hash: u64) -> MutexGuard<'_, Shard> {
        // `shards` is never empty (at least one shard) and the remainder is below its length,
        // so this index is always in range.
        let idx = usize::try_from(shard_hash % self.shards.len() as u64).unwrap_or(0);
        lock(&self.shards[idx])
    }

    #[cfg(test)]
    fn sweeps(&self) -> u64 {
        self.sweeps.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn allocated_slots(&self) -> usize {
        self.shards
            .iter()
            .map(|s| slots_for(lock(s).map.capacity()))
            .sum()
    }

    #[cfg(test)]
    fn max_slots(&self) -> usize {
        self.shards.iter().map(|s| slots_for(lock(s).cap)).sum()
    }
}

/// A panic while holding a lock cannot leave what it guards half-updated in a way that
/// matters (each operation on a shard is a single map call; the ages are two plain fields), so
/// a poisoned lock is used as is rather than taking the whole proxy down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Barrier};
    use std::thread;

    #[test]
    fn a_raised_max_age_holds_older_signatures_to_the_age_before() {
        let cache = ReplayCache::new(16);
        cache.note_max_age(60, 30, 1_000);
        // Lowered: nonces are remembered for longer than needed, which is safe.
        cache.note_max_age(10, 30, 1_100);
        assert_eq!(cache.remembered_for(1_099), None);
        // Raised at 1 200 from 10 s: everything that could claim a `created` before 1 230
        // (30 s of skew) is held to 10 s; what is made later is not.
        cache.note_max_age(300, 30, 1_200);
        assert_eq!(cache.remembered_for(0), Some(10));
        assert_eq!(cache.remembered_for(1_229), Some(10));
        assert_eq!(cache.remembered_for(1_230), None);
        // A reload lowers the skew to 1 s, and the next raises the age again while the first
        // raise still matters: the earlier, shorter age covers both, and the margin is still
        // the 30 s a signature accepted under the larger skew may claim (an audit's finding).
        cache.note_max_age(300, 1, 1_240);
        cache.note_max_age(600, 1, 1_250);
        assert_eq!(cache.remembered_for(1_200), Some(10));
        assert_eq!(cache.remembered_for(1_279), Some(10));
        assert_eq!(cache.remembered_for(1_280), None);
        // The same age told again (a reload that changed something else) changes nothing.
        cache.note_max_age(600, 30, 1_400);
        assert_eq!(cache.remembered_for(1_300), None);
    }

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
        assert_eq!(c.allocated_slots(), 0, "nothing is allocated up front");
        let mut ok = 0;
        for i in 0..10_000 {
            match c.check_and_insert(K, &format!("n{i}"), 1_000_000, 0) {
                Ok(()) => ok += 1,
                Err(e) => assert_eq!(e, ReplayError::Full),
            }
            assert!(c.len() <= c.capacity());
            assert!(c.allocated_slots() <= c.max_slots());
        }
        assert_eq!(ok, 1000);
        assert_eq!(c.len(), 1000);
        assert_eq!(
            c.allocated_slots(),
            c.max_slots(),
            "full: the ceiling, no more"
        );
    }

    #[test]
    fn capacity_bound_holds_sharded() {
        let cap = 100_000;
        let c = ReplayCache::new(cap);
        assert!(c.shards.len() > 1);
        assert_eq!(c.allocated_slots(), 0);
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
        assert!(
            c.allocated_slots() <= c.max_slots(),
            "the tables stay under the ceiling"
        );
        assert!(c.table_bytes() <= c.max_table_bytes());
        // The ceiling: 13 bytes a slot, power-of-two tables at most 7/8 full.
        assert!(c.max_table_bytes() <= cap * 13 * 8 / 7 * 2);
    }

    #[test]
    fn default_capacity_ceiling() {
        // The figure the docs give: 70 shards of at most 14 286 entries, which is within 7/8
        // of 16 384 slots, 13 bytes a slot: 14.2 MiB. (64 shards of 15 625 would need 32 768
        // slots each: 26 MiB.)
        let c = ReplayCache::new(1_000_000);
        assert_eq!(c.shards.len(), 70);
        assert_eq!(c.max_table_bytes(), 70 * 16_384 * 13);
        assert_eq!((c.max_table_bytes() * 10) >> 20, 142);
    }

    #[test]
    fn shard_count_never_costs_slots() {
        // For any capacity, the chosen split needs no more slots when full than the plain
        // power-of-two split, keeps shares of at least half the minimum, and the shares add
        // up to the capacity (the hard bound).
        for capacity in (0..200_000)
            .step_by(997)
            .chain([1, 7, 4096, 8191, 65_536, 917_504, 1_000_000, 5_000_000])
        {
            let c = ReplayCache::new(capacity);
            let n = c.shards.len();
            let wanted = (capacity / MIN_ENTRIES_PER_SHARD).clamp(1, MAX_SHARDS);
            let pow2 = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
            assert!(n >= pow2 && n < 2 * pow2, "{capacity}: {n} shards");
            let plain = pow2 * slots_for(capacity.div_ceil(pow2));
            assert!(
                c.max_slots() <= plain,
                "{capacity}: {} > {plain}",
                c.max_slots()
            );
            let caps: Vec<usize> = c.shards.iter().map(|s| lock(s).cap).collect();
            assert_eq!(caps.iter().sum::<usize>(), capacity);
            if n > 1 {
                assert!(
                    caps.iter().all(|&k| k >= MIN_ENTRIES_PER_SHARD / 2),
                    "{capacity}"
                );
            }
            // A full shard's table is exactly the size its share needs: it never grows past
            // it (hashbrown grows a table once it holds 7/8 of its slots).
            for &k in &caps {
                assert!(
                    k <= slots_for(k) / 8 * 7 || slots_for(k) <= 8,
                    "{capacity}: {k}"
                );
            }
        }
    }

    #[test]
    fn an_entry_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<(Fingerprint, Stamp)>(), 12);
        assert_eq!(std::mem::align_of::<(Fingerprint, Stamp)>(), 4);
        assert_eq!(SLOT_BYTES, 13);
    }

    #[test]
    fn the_table_hash_is_the_fingerprint() {
        use std::hash::BuildHasher as _;
        let build = BuildHasherDefault::<PassThrough>::default();
        for v in [0, 1, 0xdead_beef, 1 << 32, 0x0123_4567_89ab_cdef, u64::MAX] {
            let fp = Fingerprint::new(v);
            assert_eq!(fp.get(), v);
            // All 64 bits reach hashbrown unchanged: the bucket index (low bits) and the
            // control byte (top 7 bits) both come from the keyed digest.
            assert_eq!(build.hash_one(fp), v, "{v:#x}");
        }
        // Two fingerprints differing in either half are different keys.
        assert_ne!(Fingerprint::new(1), Fingerprint::new(1 << 32));
        // Real fingerprints: the halves come from the digest, and distinct pairs differ.
        let c = ReplayCache::new(10);
        let (a, sa) = c.fingerprint(K, "n1");
        let (b, _) = c.fingerprint(K, "n2");
        assert_ne!(a, b);
        assert_eq!(c.fingerprint(K, "n1"), (a, sa));
        assert_eq!(build.hash_one(a), a.get());
    }

    #[test]
    fn remember_until_is_the_last_second_blocked() {
        let c = ReplayCache::new(100);
        let until = 1_060;
        assert_eq!(c.check_and_insert(K, "n", until, 1_000), Ok(()));
        for now in [1_001, until - 1, until] {
            assert_eq!(
                c.check_and_insert(K, "n", now + 60, now),
                Err(ReplayError::Replayed),
                "now={now}"
            );
            // A sweep at that second keeps it too.
            assert_eq!(c.purge_expired(now), 0, "now={now}");
        }
        assert_eq!(c.len(), 1);
        // One second later it is forgotten, by a sweep and by a lookup alike.
        assert_eq!(c.purge_expired(until + 1), 1);
        assert_eq!(c.check_and_insert(K, "n", until + 61, until + 1), Ok(()));
        let d = ReplayCache::new(100);
        assert_eq!(d.check_and_insert(K, "n", until, 1_000), Ok(()));
        assert_eq!(d.check_and_insert(K, "n", until + 61, until + 1), Ok(()));
    }

    #[test]
    fn memory_follows_live_entries_not_capacity() {
        // A steady 1000 verified requests/s, each remembered 60 s (peergate's own signatures),
        // for 10 simulated minutes: about 60 000 live entries in a cache that could hold a
        // million.
        let c = ReplayCache::new(1_000_000);
        let mut n = 0u64;
        for t in 0..600u64 {
            for _ in 0..1000 {
                n += 1;
                assert_eq!(c.check_and_insert(K, &n.to_string(), t + 60, t), Ok(()));
            }
            // Expired entries are dropped before a table grows: the tables are sized for the
            // 61 000 live entries whatever the capacity, each shard's for at most twice its
            // share (expired ones not yet swept included; 13-byte slots, at most 7/8 full,
            // power-of-two sizes).
            let shards = c.shards.len();
            let bound = shards * slots_for(2 * 61_000 / shards) * 13;
            assert!(c.table_bytes() <= bound, "t={t}: {} bytes", c.table_bytes());
            assert!(c.len() <= 2 * 61_000, "t={t}: {} entries", c.len());
        }
        assert!(c.table_bytes() * 4 < c.max_table_bytes());
        // Nothing live was forgotten.
        for m in (n - 60_000)..=n {
            assert_eq!(
                c.check_and_insert(K, &m.to_string(), 700, 599),
                Err(ReplayError::Replayed)
            );
        }
    }

    #[test]
    fn a_table_shrinks_after_a_burst() {
        let c = ReplayCache::new(100_000);
        for i in 0..50_000 {
            assert_eq!(c.check_and_insert(K, &format!("b{i}"), 10, 0), Ok(()));
        }
        let burst = c.table_bytes();
        assert_eq!(c.purge_expired(11), 50_000);
        assert!(
            c.table_bytes() < burst / 8,
            "{} of {burst}",
            c.table_bytes()
        );
        assert!(c.is_empty());
    }

    #[test]
    fn expiries_far_ahead_and_past_2106() {
        let c = ReplayCache::new(100);
        // Beyond 68 years ahead: remembered for 68 years, which is still remembered now.
        assert_eq!(c.check_and_insert(K, "far", u64::MAX, 1000), Ok(()));
        assert_eq!(
            c.check_and_insert(K, "far", u64::MAX, 1000 + (1 << 30)),
            Err(ReplayError::Replayed)
        );
        // Around the 32-bit wrap of unix seconds (February 2106).
        let wrap = 1u64 << 32;
        assert_eq!(c.check_and_insert(K, "w", wrap + 30, wrap - 30), Ok(()));
        for now in [wrap - 30, wrap - 1, wrap, wrap + 30] {
            assert_eq!(
                c.check_and_insert(K, "w", wrap + 90, now),
                Err(ReplayError::Replayed),
                "now={now}"
            );
        }
        assert_eq!(c.check_and_insert(K, "w", wrap + 90, wrap + 31), Ok(()));
        // "w", and "far", whose 68 years (from 1000) are over by then.
        assert_eq!(c.purge_expired(wrap + 91), 2);
        assert!(c.is_empty());
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
