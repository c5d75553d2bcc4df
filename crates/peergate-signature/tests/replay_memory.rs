//! The replay cache's memory accounting against the heap it really uses.
//!
//! `ReplayCache::table_bytes` and `max_table_bytes` are computed (slots × 13 bytes), not
//! measured; the unit tests check the cache against them. This binary counts the bytes its
//! own thread has on the heap, so that a computed figure that drifts from the real one (an
//! entry that grew, a table layout that changed) fails here. It is its own test binary because
//! it installs a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use peergate_signature::ReplayCache;

/// Counts, per thread, the bytes allocated and not yet freed, and the highest that reached.
/// Per thread, so the test harness's own allocations on other threads do not count.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed on to `System` unchanged; the counting touches only
// const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.with(Cell::get).max(0) as usize
}

fn reset_peak() {
    PEAK.with(|p| p.set(LIVE.with(Cell::get)));
}

fn peak() -> usize {
    PEAK.with(Cell::get).max(0) as usize
}

/// What the cache holds besides its tables: the shard array (at most 127 shards of a lock, a
/// table header and two counters) and, per table, hashbrown's trailing control group and the
/// rounding of the entries to it. Far below what a byte more per slot would add (100 000 slots
/// and more below).
const OVERHEAD: usize = 128 * 128;

/// Heap bytes the cache holds now, compared with what it says it holds.
fn check(c: &ReplayCache, heap_before: usize, when: &str) -> usize {
    let heap = live() - heap_before;
    let counted = c.table_bytes();
    assert!(
        heap >= counted,
        "{when}: {heap} heap bytes, fewer than the {counted} table_bytes() reports"
    );
    assert!(
        heap <= counted + OVERHEAD,
        "{when}: {heap} heap bytes for {counted} table_bytes(): the entries are larger than \
         13 bytes a slot"
    );
    heap
}

#[test]
fn table_bytes_is_the_heap_the_cache_uses() {
    // 56 shards of at most 3 572 entries: 4 096 slots each, 229 376 in all (32 shards of 6 250
    // would need 8 192 slots each, 262 144 in all).
    let cap = 200_000;
    // The first cache of a thread sets up its random generator (for the secret), which stays.
    drop(ReplayCache::new(1));
    let base = live();
    let c = ReplayCache::new(cap);
    assert_eq!(c.table_bytes(), 0);
    let empty = check(&c, base, "new");
    assert!(
        empty <= 128 * 64,
        "{empty} bytes up front: the shards, no table"
    );

    // Half full, with the tables grown as inserts need them.
    let mut i = 0u64;
    while c.len() < cap / 2 {
        i += 1;
        c.check_and_insert("k", &i.to_string(), 1_000, 0)
            .expect("room left");
    }
    check(&c, base, "half full");

    // Full: the ceiling, 13 bytes a slot.
    reset_peak();
    while c.len() < cap && i < 2 * cap as u64 {
        i += 1;
        let _ = c.check_and_insert("k", &i.to_string(), 1_000, 0);
    }
    assert!(c.len() > cap * 95 / 100);
    let full = check(&c, base, "full");
    assert!(c.table_bytes() <= c.max_table_bytes());
    assert_eq!(c.max_table_bytes(), 229_376 * 13);
    assert!(full <= 229_376 * 13 + OVERHEAD, "{full} bytes when full");
    // While a table grows its old one is still there: one shard's worth (a 56th) at most.
    assert!(
        peak() - base <= c.max_table_bytes() + c.max_table_bytes() / 56 + OVERHEAD,
        "peak {} bytes",
        peak() - base
    );

    // Expired: the tables are rebuilt small, and the heap follows.
    let held = c.len();
    assert_eq!(c.purge_expired(1_001), held);
    assert!(c.is_empty());
    let after = check(&c, base, "purged");
    assert!(after < full / 100, "{after} bytes after the purge");

    drop(c);
    assert_eq!(live(), base, "everything given back");
}
