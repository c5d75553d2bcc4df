//! Turning `host:port` into a socket address without blocking a worker thread, and without
//! waiting for DNS on every request.
//!
//! Pingora's own resolution (`HttpPeer::new` with a name) blocks, and panics when a name does
//! not resolve; [`resolve`] asks the system resolver (`getaddrinfo`) on tokio's blocking pool
//! instead. That is a thread hand-off and maybe a DNS query: too much for every request to a
//! peer or an app named by host name, and it would make every request fail while DNS is down
//! although the connections already open still work. So the request paths go through
//! [`Resolver`], which remembers each name's address: a request uses the address it holds and,
//! once that is [`REFRESH`] old, one request starts a lookup in the background while the
//! others go on with the address they have (as Envoy's DNS refresh does). Only the first
//! request to a name waits for it. When a lookup fails, the last address stays in use and the
//! failure is logged; a name that never resolved fails the request.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pingora::{Error, ErrorType};

use crate::config::HostPort;

/// How long an address is used before it is looked up again (in the background).
pub const REFRESH: Duration = Duration::from_secs(10);

/// Pingora error type of a name that cannot be resolved (`peergate_upstream_errors_total`
/// counts it as `kind="resolve"`).
pub const RESOLVE_ERROR: ErrorType = ErrorType::Custom("ResolveError");

/// Names not used (so not refreshed) for this many refresh periods are forgotten.
const FORGET_AFTER_REFRESHES: u32 = 30;

/// Resolves `target` now. When a name has both IPv4 and IPv6 addresses, an IPv4 one is used:
/// `localhost` lists `::1` first on many systems while apps often listen on 127.0.0.1 only.
pub async fn resolve(target: &HostPort) -> pingora::Result<SocketAddr> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    first_address(target, system_lookup(target.clone()).await)
}

/// The address to use from what a lookup of `target` found.
fn first_address(
    target: &HostPort,
    found: io::Result<Vec<SocketAddr>>,
) -> pingora::Result<SocketAddr> {
    let addrs =
        found.map_err(|e| Error::because(RESOLVE_ERROR, format!("cannot resolve {target}"), e))?;
    pick(&addrs)
        .ok_or_else(|| Error::explain(RESOLVE_ERROR, format!("{target} resolves to no address")))
}

fn pick(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;
type LookupFn = dyn Fn(HostPort) -> Lookup + Send + Sync;

fn system_lookup(target: HostPort) -> Lookup {
    Box::pin(async move {
        Ok(tokio::net::lookup_host((target.host.as_str(), target.port))
            .await?
            .collect())
    })
}

/// The addresses of the names the request paths use; share one per gateway.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    names: Mutex<Names>,
    lookup: Box<LookupFn>,
    refresh: Duration,
}

#[derive(Default)]
struct Names {
    known: HashMap<HostPort, Known>,
    /// `known.len()` after the last sweep of forgotten names; the next sweep is at twice that.
    swept_at: usize,
}

struct Known {
    addr: SocketAddr,
    /// When `addr` was last confirmed, or a lookup last failed (so a failing name is asked
    /// again once per refresh, not on every request).
    checked: Instant,
    refreshing: bool,
}

fn lock(m: &Mutex<Names>) -> MutexGuard<'_, Names> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::with_lookup(REFRESH, system_lookup)
    }
}

impl Resolver {
    /// A resolver asking `lookup`, and again every `refresh`.
    fn with_lookup(
        refresh: Duration,
        lookup: impl Fn(HostPort) -> Lookup + Send + Sync + 'static,
    ) -> Resolver {
        Resolver {
            inner: Arc::new(Inner {
                names: Mutex::new(Names::default()),
                lookup: Box::new(lookup),
                refresh,
            }),
        }
    }

    /// The address to use for `target` now: an IP as it is, a name from memory (starting a
    /// background refresh when due), or looked up when it is new.
    pub async fn resolve(&self, target: &HostPort) -> pingora::Result<SocketAddr> {
        if let Ok(ip) = target.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, target.port));
        }
        let now = Instant::now();
        {
            let mut names = lock(&self.inner.names);
            if let Some(known) = names.known.get_mut(target) {
                let addr = known.addr;
                if now.duration_since(known.checked) >= self.inner.refresh && !known.refreshing {
                    known.refreshing = true;
                    drop(names);
                    self.refresh_in_background(target.clone(), addr);
                }
                return Ok(addr);
            }
        }
        let addr = first_address(target, (self.inner.lookup)(target.clone()).await)?;
        let mut names = lock(&self.inner.names);
        names.known.insert(
            target.clone(),
            Known {
                addr,
                checked: Instant::now(),
                refreshing: false,
            },
        );
        if names.known.len() > names.swept_at.saturating_mul(2).max(64) {
            let forget = self.inner.refresh * FORGET_AFTER_REFRESHES;
            names
                .known
                .retain(|_, k| k.refreshing || now.duration_since(k.checked) < forget);
            names.swept_at = names.known.len();
        }
        Ok(addr)
    }

    fn refresh_in_background(&self, target: HostPort, was: SocketAddr) {
        let inner = Arc::clone(&self.inner);
        // Always inside a runtime on the request paths; elsewhere the address is kept as it is.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            if let Some(known) = lock(&inner.names).known.get_mut(&target) {
                known.refreshing = false;
            }
            return;
        };
        runtime.spawn(async move {
            let found = (inner.lookup)(target.clone()).await;
            let mut names = lock(&inner.names);
            let Some(known) = names.known.get_mut(&target) else {
                return;
            };
            known.refreshing = false;
            known.checked = Instant::now();
            let found = first_address(&target, found);
            if let Ok(addr) = found {
                known.addr = addr;
            }
            // Logged after the lock is let go: a warning is written before `warn!` returns.
            drop(names);
            match found {
                Ok(addr) if addr != was => {
                    log::info!("{target} now resolves to {addr} (was {was})")
                }
                Ok(_) => {}
                Err(e) => log::warn!("{e}; still using {was}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn target(host: &str) -> HostPort {
        HostPort {
            host: host.into(),
            port: 8080,
        }
    }

    #[tokio::test]
    async fn literal_addresses_and_names() {
        let ip = HostPort {
            host: "127.0.0.1".into(),
            port: 80,
        };
        assert_eq!(resolve(&ip).await.unwrap(), "127.0.0.1:80".parse().unwrap());
        let v6 = HostPort {
            host: "::1".into(),
            port: 80,
        };
        assert_eq!(resolve(&v6).await.unwrap(), "[::1]:80".parse().unwrap());
        assert_eq!(
            resolve(&target("localhost")).await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        let nowhere = HostPort {
            host: "no-such-host.invalid".into(),
            port: 1,
        };
        let err = resolve(&nowhere).await.unwrap_err();
        assert_eq!(err.etype(), &RESOLVE_ERROR);

        // The same through the resolver the request paths use.
        let resolver = Resolver::default();
        assert_eq!(
            resolver.resolve(&target("localhost")).await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            resolver.resolve(&ip).await.unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert!(resolver.resolve(&nowhere).await.is_err());
    }

    /// A resolver whose lookups answer from `answer` (an address, or `None` for a failure)
    /// and are counted.
    fn scripted(refresh: Duration) -> (Resolver, Arc<AtomicUsize>, Arc<Mutex<Option<SocketAddr>>>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new(None::<SocketAddr>));
        let (c, a) = (calls.clone(), answer.clone());
        let resolver = Resolver::with_lookup(refresh, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            let now = *a.lock().unwrap();
            Box::pin(async move {
                now.map(|addr| vec![addr])
                    .ok_or_else(|| io::Error::other("no such name"))
            })
        });
        (resolver, calls, answer)
    }

    async fn settle(calls: &AtomicUsize, expected: usize) {
        for _ in 0..500 {
            if calls.load(Ordering::SeqCst) >= expected {
                // Let the refresh task store what it found.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!(
            "expected {expected} lookups, saw {}",
            calls.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn a_name_is_looked_up_once_then_again_in_the_background() {
        let (resolver, calls, answer) = scripted(Duration::from_millis(100));
        let (first, second): (SocketAddr, SocketAddr) = (
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.2:8080".parse().unwrap(),
        );
        *answer.lock().unwrap() = Some(first);
        let app = target("app.internal");
        for _ in 0..100 {
            assert_eq!(resolver.resolve(&app).await.unwrap(), first);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one lookup for 100 requests"
        );

        // The name moves; once the address is due, the request still gets the old one at
        // once and one background lookup brings the new one.
        *answer.lock().unwrap() = Some(second);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(resolver.resolve(&app).await.unwrap(), first);
        assert_eq!(resolver.resolve(&app).await.unwrap(), first);
        settle(&calls, 2).await;
        assert_eq!(resolver.resolve(&app).await.unwrap(), second);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one refresh, not one per request"
        );
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_address_and_a_new_name_that_fails_is_an_error() {
        let (resolver, calls, answer) = scripted(Duration::from_millis(50));
        let addr: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let peer = target("bob.example");
        let err = resolver.resolve(&peer).await.unwrap_err();
        assert_eq!(err.etype(), &RESOLVE_ERROR);
        assert!(
            err.to_string().contains("cannot resolve bob.example:8080"),
            "{err}"
        );

        *answer.lock().unwrap() = Some(addr);
        assert_eq!(resolver.resolve(&peer).await.unwrap(), addr);
        // DNS goes away: requests go on to the last address.
        *answer.lock().unwrap() = None;
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(resolver.resolve(&peer).await.unwrap(), addr);
        settle(&calls, 3).await;
        assert_eq!(resolver.resolve(&peer).await.unwrap(), addr);
        // The failure counts as a check: not looked up again before the next refresh.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn names_not_used_for_a_while_are_forgotten() {
        let (resolver, calls, answer) = scripted(Duration::from_millis(1));
        *answer.lock().unwrap() = Some("10.0.0.1:8080".parse().unwrap());
        for i in 0..64 {
            resolver
                .resolve(&target(&format!("n{i}.example")))
                .await
                .unwrap();
        }
        assert_eq!(lock(&resolver.inner.names).known.len(), 64);
        // 30 refresh periods later, the 65th name sweeps the 64 unused ones away.
        tokio::time::sleep(Duration::from_millis(40)).await;
        resolver.resolve(&target("last.example")).await.unwrap();
        assert_eq!(lock(&resolver.inner.names).known.len(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 65);
    }
}
