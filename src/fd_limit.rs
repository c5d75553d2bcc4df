//! Raises the open-files limit to what the system allows, at start.
//!
//! Every client connection, kept upstream connection and watched file takes a descriptor, and
//! a shell or container often starts processes with a soft limit of 1024 while allowing far
//! more (the hard limit). At 1024 a few hundred idle keep-alive clients and their upstream
//! connections would make `accept` fail for everyone else; servers raise the soft limit to the
//! hard one for that reason (Go does it for every program, nginx has `worker_rlimit_nofile`).

/// The `RLIMIT_NOFILE` now, if it can be read.
fn get() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass, which lives for the call.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// Sets the soft `RLIMIT_NOFILE` to the hard one; returns `(before, after)` when it changed.
/// Failure leaves the limit as it was: the process works, with fewer connections.
pub fn raise() -> Option<(libc::rlim_t, libc::rlim_t)> {
    let mut limit = get()?;
    if limit.rlim_cur >= limit.rlim_max {
        return None;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return None;
    }
    Some((before, limit.rlim_max))
}

/// The soft `RLIMIT_NOFILE` now, if it can be read (`None` also for "unlimited").
pub fn soft() -> Option<u64> {
    get()
        .map(|limit| limit.rlim_cur)
        .filter(|&soft| soft != libc::RLIM_INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> (libc::rlim_t, libc::rlim_t) {
        let limit = get().expect("getrlimit");
        (limit.rlim_cur, limit.rlim_max)
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let (_, hard) = current();
        // Lower the soft limit first (always allowed), so there is something to raise; to no
        // less than 4096, as the other tests of this process run meanwhile.
        let lowered = libc::rlimit {
            rlim_cur: hard.min(4096),
            rlim_max: hard,
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        let changed = raise();
        assert_eq!(current(), (hard, hard));
        if hard > 4096 {
            assert_eq!(changed, Some((4096, hard)));
        }
        assert_eq!(raise(), None, "nothing left to raise");
    }
}
