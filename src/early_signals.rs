//! Signals that arrive while `peergate run` is still starting: reading a large peers file takes
//! most of a second, and until the reloader and the shutdown watch are registered, SIGHUP and
//! SIGTERM have their default action, which ends the process (`systemctl reload` right after
//! `start` killed the service; a SIGTERM then exited 143, not 0).
//!
//! [`hold`] registers, first thing, an action that only notes each of them; the watches
//! registered later take over from there (`signal-hook-registry` runs every registered
//! action, so tokio's and these coexist), and each asks here once whether its signal came
//! before it: the reloader then reloads at once, the shutdown watch stops gracefully at once.

use std::sync::atomic::{AtomicBool, Ordering};

static HANGUP: AtomicBool = AtomicBool::new(false);
static TERMINATE: AtomicBool = AtomicBool::new(false);

/// Notes SIGHUP, SIGTERM and SIGQUIT from now on instead of letting them end the process. For
/// `peergate run` only: a gateway started in another program (the tests) leaves its signals
/// alone.
pub fn hold() {
    let notes: [(libc::c_int, &'static AtomicBool, &str); 3] = [
        (libc::SIGHUP, &HANGUP, "SIGHUP"),
        (libc::SIGTERM, &TERMINATE, "SIGTERM"),
        (libc::SIGQUIT, &TERMINATE, "SIGQUIT"),
    ];
    for (signal, flag, name) in notes {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        let registered = unsafe {
            signal_hook_registry::register(signal, move || flag.store(true, Ordering::SeqCst))
        };
        if let Err(e) = registered {
            log::warn!(
                "cannot hold {name} while starting ({e}); until started it ends the process"
            );
        }
    }
}

/// Whether a SIGHUP came since [`hold`] (or since the last call); asked once the reloader
/// watches SIGHUP itself.
pub fn hangup_came() -> bool {
    HANGUP.swap(false, Ordering::SeqCst)
}

/// Whether a SIGTERM or SIGQUIT came since [`hold`]; asked once the shutdown watch is
/// registered.
pub fn terminate_came() -> bool {
    TERMINATE.load(Ordering::SeqCst)
}
