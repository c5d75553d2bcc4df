//! At most one log line a second for a kind of failure that can repeat for every request or
//! connection (the app down, a port scanner's TLS handshakes), saying how many were left out.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;
use std::time::Instant;

/// When the process started counting seconds for throttles.
static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// One kind of line, written at most once per second.
#[derive(Debug, Default)]
pub struct Throttle {
    /// The second (since [`START`]) of the last line written, plus one; 0 before any.
    last: AtomicU64,
    left_out: AtomicU64,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            last: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now, and how many were left out before it.
    pub fn admit_now(&self) -> Option<u64> {
        self.admit(START.elapsed().as_secs() + 1)
    }

    /// Whether a line may be written in `second` (counted from 1), and how many were left out
    /// before it.
    pub fn admit(&self, second: u64) -> Option<u64> {
        let last = self.last.load(Relaxed);
        // `<=`: a thread that read the clock before another wrote a line must not write one
        // for an earlier second.
        if second <= last
            || self
                .last
                .compare_exchange(last, second, Relaxed, Relaxed)
                .is_err()
        {
            self.left_out.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.left_out.swap(0, Relaxed))
    }
}

/// What a throttled line adds about the lines left out before it: nothing when none were.
pub fn more_since(left_out: u64) -> String {
    if left_out > 0 {
        format!(" ({left_out} more since the last line)")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_admitted_once_a_second_and_counts_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.admit(1), Some(0));
        assert_eq!(t.admit(1), None);
        assert_eq!(t.admit(1), None);
        assert_eq!(t.admit(2), Some(2));
        assert_eq!(t.admit(2), None);
        assert_eq!(t.admit(7), Some(1));
        // A late thread with an earlier second writes nothing.
        assert_eq!(t.admit(6), None);
        assert_eq!(t.admit(8), Some(1));
    }
}
