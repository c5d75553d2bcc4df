//! What all the listeners of one running peergate share: the current snapshot of the
//! configuration, the replay cache, the metrics and the identity.

use std::sync::Arc;

use arc_swap::ArcSwap;
use peergate_signature::ReplayCache;

use crate::allowlist::Snapshot;
use crate::body::BodyBudget;
use crate::config::Config;
use crate::identity::Identity;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::reload::RestartBound;
use crate::resolve::Resolver;
use crate::tls_cert::CertSlot;

pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Survives reloads: forgetting nonces on reload would reopen a replay window.
    pub replay: ReplayCache,
    pub metrics: Metrics,
    pub identity: Arc<Identity>,
    /// Listeners to check for readiness, and the connections a graceful shutdown waits for.
    pub lifecycle: Lifecycle,
    /// The settings read once at start, so a reload can say which changes need a restart.
    pub started: RestartBound,
    /// The addresses of the app's and the peers' host names, refreshed in the background.
    pub resolver: Resolver,
    /// The inbound listener's certificate and key (with `tls:`), which a reload replaces.
    pub server_cert: Option<Arc<CertSlot>>,
    /// Request-body bytes held now, on both listeners (`signatures.max_buffered`).
    pub bodies: Arc<BodyBudget>,
    /// The configuration file's text as last loaded whole, with which a reload reads the other
    /// files while an edit of the configuration file does not validate (`reload`).
    pub config_text: std::sync::Mutex<Option<String>>,
    /// The settings the last reload found changed since start that only a restart applies,
    /// for `/readyz` (the metric counts them).
    pub restart_pending: std::sync::Mutex<Vec<&'static str>>,
}

impl Shared {
    pub fn new(config: &Config) -> Result<Shared, String> {
        let snapshot = Snapshot::build(config)?;
        let metrics = Metrics::new().map_err(|e| format!("metrics: {e}"))?;
        metrics
            .peers
            .set(i64::try_from(snapshot.peer_count()).unwrap_or(i64::MAX));
        let now = crate::clock::unix_now();
        let replay = ReplayCache::new(config.signatures.replay_cache_size).remembering_since(now);
        replay.note_max_age(
            snapshot.policy.max_age.as_secs(),
            snapshot.policy.clock_skew.as_secs(),
            now,
        );
        Ok(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            replay,
            metrics,
            identity: config.identity.key_file.identity.clone(),
            lifecycle: Lifecycle::new(config),
            started: RestartBound::of(config),
            resolver: Resolver::default(),
            bodies: Arc::default(),
            config_text: std::sync::Mutex::default(),
            restart_pending: std::sync::Mutex::default(),
            server_cert: config
                .tls
                .as_ref()
                .and_then(|t| t.cert.as_ref())
                .map(|c| Arc::new(CertSlot::new(c))),
        })
    }

    /// The configuration in force now; a request keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts a new configuration in force for every request that starts from now on.
    pub fn install(&self, snapshot: Snapshot) {
        // Before the new age is in force, so that no request meets it while the cache does
        // not yet hold the older signatures to the age their nonces were remembered for.
        self.replay.note_max_age(
            snapshot.policy.max_age.as_secs(),
            snapshot.policy.clock_skew.as_secs(),
            crate::clock::unix_now(),
        );
        self.metrics
            .peers
            .set(i64::try_from(snapshot.peer_count()).unwrap_or(i64::MAX));
        self.snapshot.store(Arc::new(snapshot));
    }
}
