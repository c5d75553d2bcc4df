//! Hot reload: the configuration, peers and profile files are read again when they change, on
//! SIGHUP, and on a periodic check, and the new allowlist and policy are put in force for every
//! request that starts from then on. A file that does not validate changes nothing: the running
//! configuration stays, the error is logged with its file, line and column, and
//! `peergate_config_reloads_total{result="failure"}` counts it.
//!
//! What a reload applies: everything in the request snapshot ([`Snapshot`]): the peers and
//! their `allow` rules, `routes`, `identity.hosts`, `identity.scheme`, `identity.name` and the
//! profile page (`identity.profile`, `identity.profile_path`), the `signatures` checks
//! (`max_age`, `clock_skew`, `require_nonce`, `max_body`, `lifetime` of the signatures we make),
//! `identity_headers`, `app.upstream` and `reload.poll_interval`. What it cannot: the
//! settings of [`RestartBound`], which the listeners, the TLS setup, the replay cache and the
//! runtimes read once at start; a reload that changes one of them still applies the rest and
//! logs which keys wait for a restart.
//!
//! The reloader runs on a thread and runtime of its own, because Pingora owns the server's
//! runtimes and a `peergate run` process has no other place to run it. It watches the
//! *directories* of the files rather than the files: editors save by writing a temporary file
//! and renaming it over the old one, and Kubernetes updates a mounted ConfigMap by flipping the
//! `..data` symlink; a watch on the file itself would follow the old inode and see neither.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::allowlist::Snapshot;
use crate::config::{self, Config, ConfigError, Loaded};
use crate::state::Shared;

/// How long the directory must be quiet after a file event before the files are read: an
/// editor's save or a ConfigMap update is several events in a few milliseconds.
const SETTLE: Duration = Duration::from_millis(200);
/// Longest a stream of events can put the check off (a busy directory never goes quiet).
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// The settings only read at start, as comparable fingerprints: listen addresses, the TLS files
/// (by path and content: Pingora loads the certificate once), the identity (by key, so moving
/// the same key elsewhere is no change), the replay cache size, the connection timeouts the
/// proxy services were built with, and the shutdown timings given to Pingora.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartBound {
    settings: Vec<(&'static str, String)>,
}

impl RestartBound {
    pub fn of(config: &Config) -> RestartBound {
        let tls = config.tls.as_ref();
        let file = |f: Option<&config::ExistingFile>| match f {
            Some(f) => format!("{} {}", f.0.display(), digest_hex(&f.0)),
            None => "none".to_string(),
        };
        RestartBound {
            settings: vec![
                ("listen.inbound", config.listen.inbound.to_string()),
                ("listen.outbound", config.listen.outbound.to_string()),
                ("listen.admin", config.listen.admin.to_string()),
                ("tls.cert_file", file(tls.map(|t| &t.cert_file))),
                ("tls.key_file", file(tls.map(|t| &t.key_file))),
                (
                    "tls.peer_ca_file",
                    file(tls.and_then(|t| t.peer_ca_file.as_ref())),
                ),
                (
                    "identity.key_file",
                    config
                        .identity
                        .key_file
                        .identity
                        .public()
                        .key_id()
                        .to_string(),
                ),
                (
                    "signatures.replay_cache_size",
                    config.signatures.replay_cache_size.to_string(),
                ),
                (
                    "app.connect_timeout",
                    config.app.connect_timeout.to_string(),
                ),
                ("app.timeout", config.app.timeout.to_string()),
                (
                    "outbound.connect_timeout",
                    config.outbound.connect_timeout.to_string(),
                ),
                ("outbound.timeout", config.outbound.timeout.to_string()),
                (
                    "shutdown.grace_period",
                    config.shutdown.grace_period.to_string(),
                ),
                ("shutdown.timeout", config.shutdown.timeout.to_string()),
            ],
        }
    }

    /// The keys whose value in `new` differs from this one.
    pub fn changed(&self, new: &RestartBound) -> Vec<&'static str> {
        self.settings
            .iter()
            .zip(&new.settings)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0)
            .collect()
    }
}

fn digest_hex(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => Sha256::digest(&bytes)
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect(),
        Err(e) => format!("unreadable ({})", e.kind()),
    }
}

/// Why a reload was refused.
#[derive(Debug)]
pub enum ReloadError {
    /// The files do not validate (the message carries file:line:column).
    Config(ConfigError),
    /// The configuration validated but the snapshot could not be built from it.
    Invalid(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Config(e) => e.fmt(f),
            ReloadError::Invalid(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ReloadError {}

/// What a successful reload put in force.
#[derive(Debug)]
pub struct Applied {
    pub peers: usize,
    /// Changed keys that only take effect after a restart (the rest was applied).
    pub restart_needed: Vec<&'static str>,
    /// The files the configuration is read from now: the config file, its peers file and
    /// profile page.
    pub files: Vec<PathBuf>,
    pub poll_interval: Duration,
}

/// Reads and validates the configuration at `config_path` and puts it in force, or keeps the
/// running one when it does not validate. Logs and counts the outcome either way.
pub fn reload_now(shared: &Shared, config_path: &Path) -> Result<Applied, ReloadError> {
    let reloads = &shared.metrics.config_reloads;
    match try_reload(shared, config_path) {
        Ok(applied) => {
            reloads.with_label_values(&["success"]).inc();
            mark_loaded(shared);
            log::info!(
                "configuration reloaded from {}: {} peers on the allowlist",
                config_path.display(),
                applied.peers
            );
            if !applied.restart_needed.is_empty() {
                log::warn!(
                    "configuration reloaded, but these changed settings only take effect after a restart: {}",
                    applied.restart_needed.join(", ")
                );
            }
            Ok(applied)
        }
        Err(e) => {
            reloads.with_label_values(&["failure"]).inc();
            log::warn!(
                "configuration reload failed; the running configuration stays in force: {e}"
            );
            Err(e)
        }
    }
}

fn try_reload(shared: &Shared, config_path: &Path) -> Result<Applied, ReloadError> {
    // Keys already on the allowlist are not checked again (a large allowlist reloads twice
    // as fast); see `config::load_reusing`.
    let current = shared.snapshot();
    let known: config::KnownKeys = Arc::new(move |key_id: &str| current.key_bytes(key_id));
    let mut loaded = config::load_reusing(config_path, known).map_err(ReloadError::Config)?;
    for warning in &loaded.warnings {
        log::warn!("{}: {warning}", config_path.display());
    }
    let restart_needed = shared.started.changed(&RestartBound::of(&loaded.config));
    if restart_needed.contains(&"identity.key_file") {
        // The inbound side verifies as the identity read at start; signing with another key
        // before the restart would make the two sides disagree about who this is.
        loaded.config.identity.key_file.identity = shared.identity.clone();
    }
    let snapshot = Snapshot::build(&loaded.config).map_err(ReloadError::Invalid)?;
    let peers = snapshot.peer_count();
    shared.install(snapshot);
    // The snapshot has what requests need; the parsed list goes before the memory is handed
    // back, or a large allowlist would stay resident twice.
    loaded.config.peers = config::PeerList::default();
    crate::memory::release_freed();
    Ok(Applied {
        peers,
        restart_needed,
        files: files_of(&loaded),
        poll_interval: loaded.config.reload.poll_interval.0,
    })
}

/// Records that the configuration in force was loaded now (at start, and by each reload).
pub fn mark_loaded(shared: &Shared) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    shared.metrics.config_last_reload_success.set(now);
}

/// The files a reload reads: the config file, the peers file and the profile page.
fn files_of(loaded: &Loaded) -> Vec<PathBuf> {
    let config = &loaded.config;
    let mut files = vec![loaded.path.clone()];
    files.extend(config.peers_file.as_ref().map(|f| f.0.clone()));
    files.extend(config.identity.profile.as_ref().map(|f| f.0.clone()));
    files
}

/// The background reloader of one gateway; it stops (and its thread ends) when dropped.
pub struct Reloader {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reloader {
    /// Starts watching the files `loaded` was read from. SIGHUP is registered before this
    /// returns, so a SIGHUP sent afterwards reloads rather than ending the process.
    pub fn start(shared: Arc<Shared>, loaded: &Loaded) -> Result<Reloader, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("reloader: cannot start its runtime: {e}"))?;
        let poll_interval = loaded.config.reload.poll_interval.0;
        let sighup = {
            let _in_runtime = runtime.enter();
            signal(SignalKind::hangup())
                .map_err(|e| {
                    log::warn!("reloader: SIGHUP cannot be handled ({e}); files are still watched")
                })
                .ok()
        };
        // Capacity 1 and `try_send`: a full channel already holds the wake-up.
        let (events_tx, events_rx) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) if worth_a_look(&event.kind) => {
                    let _ = events_tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => log::debug!("reloader: file watch error: {e}"),
            }
        })
        .map_err(|e| {
            log::warn!(
                "reloader: cannot watch the configuration files ({e}); changes are picked up on SIGHUP and every {}",
                config::HumanDuration(poll_interval)
            )
        })
        .ok();
        let files = files_of(loaded);
        let mut state = ReloadState {
            shared,
            config_path: loaded.path.clone(),
            last: fingerprint(&files),
            files,
            watcher,
            watched: HashMap::new(),
            poll_interval,
        };
        state.refresh_watches();
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("peergate-reload".into())
            .spawn(move || runtime.block_on(state.run(stop_rx, events_rx, sighup)))
            .map_err(|e| format!("reloader: cannot start its thread: {e}"))?;
        Ok(Reloader {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opening and reading a file are events too (notify watches `IN_OPEN`): the reloader's own
/// reads would wake it again and again. Writes, creations, renames and removals count.
fn worth_a_look(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// SHA-256 of each file's content (`None`: unreadable), to tell a real change from an event
/// about another file in the same directory.
fn fingerprint(files: &[PathBuf]) -> Vec<Option<[u8; 32]>> {
    files
        .iter()
        .map(|f| std::fs::read(f).ok().map(|b| Sha256::digest(&b).into()))
        .collect()
}

/// The directories to watch for `file`: its own (as written, so symlink flips in it are
/// seen) and, when it is a symlink, the target's.
fn dirs_of(file: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(file)];
    if let Ok(real) = std::fs::canonicalize(file) {
        let real_dir = parent(&real);
        if std::fs::canonicalize(&dirs[0]).ok().as_ref() != Some(&real_dir) {
            dirs.push(real_dir);
        }
    }
    dirs
}

/// Device and inode: a directory replaced under the same name needs a new watch.
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

struct ReloadState {
    shared: Arc<Shared>,
    config_path: PathBuf,
    files: Vec<PathBuf>,
    /// The content last read (loaded or refused), so a refused file is not retried until it
    /// changes again.
    last: Vec<Option<[u8; 32]>>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashMap<PathBuf, Option<(u64, u64)>>,
    poll_interval: Duration,
}

impl ReloadState {
    async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut events: mpsc::Receiver<()>,
        mut sighup: Option<Signal>,
    ) {
        let mut poll = poll_timer(self.poll_interval);
        // (first event, check due) while events are settling.
        let mut settling: Option<(Instant, Instant)> = None;
        let mut events_open = true;
        loop {
            let due = settling.map(|(_, due)| due);
            tokio::select! {
                _ = &mut stop => return,
                event = events.recv(), if events_open => match event {
                    Some(()) => {
                        let now = Instant::now();
                        let first = settling.map_or(now, |(first, _)| first);
                        settling = Some((first, (now + SETTLE).min(first + MAX_SETTLE)));
                    }
                    None => events_open = false,
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    settling = None;
                    self.check(false, &mut poll);
                }
                got = next_signal(&mut sighup), if sighup.is_some() => match got {
                    Some(()) => {
                        log::info!("SIGHUP: reloading {}", self.config_path.display());
                        self.check(true, &mut poll);
                    }
                    None => sighup = None,
                },
                _ = poll.tick() => self.check(false, &mut poll),
            }
        }
    }

    /// Reloads when the files' content changed since last read, or always when `force`d.
    fn check(&mut self, force: bool, poll: &mut Interval) {
        self.refresh_watches();
        let now = fingerprint(&self.files);
        if !force && now == self.last {
            return;
        }
        self.last = now;
        if let Ok(applied) = reload_now(&self.shared, &self.config_path) {
            if applied.files != self.files {
                self.files = applied.files;
                self.last = fingerprint(&self.files);
                self.refresh_watches();
            }
            if applied.poll_interval != self.poll_interval {
                self.poll_interval = applied.poll_interval;
                *poll = poll_timer(self.poll_interval);
            }
        }
    }

    /// Watches the directories the current files live in, and only those.
    fn refresh_watches(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let mut wanted: Vec<PathBuf> = self.files.iter().flat_map(|f| dirs_of(f)).collect();
        wanted.sort();
        wanted.dedup();
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(dir, id)| !wanted.contains(dir) || dir_id(dir) != **id)
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in stale {
            let _ = watcher.unwatch(&dir);
            self.watched.remove(&dir);
        }
        for dir in wanted {
            if self.watched.contains_key(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    let id = dir_id(&dir);
                    self.watched.insert(dir, id);
                }
                Err(e) => log::debug!("reloader: cannot watch {}: {e}", dir.display()),
            }
        }
    }
}

fn poll_timer(period: Duration) -> Interval {
    let mut timer = tokio::time::interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

async fn next_signal(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_reads_do_not_wake_the_reloader_but_writes_and_renames_do() {
        use notify::event::{CreateKind, ModifyKind, RenameMode};
        assert!(!worth_a_look(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!worth_a_look(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(worth_a_look(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(worth_a_look(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(worth_a_look(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn a_symlinked_file_has_both_directories_watched() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2024_01");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("peers.yaml"), "peers: []\n").unwrap();
        let link = dir.path().join("peers.yaml");
        std::os::unix::fs::symlink(data.join("peers.yaml"), &link).unwrap();
        let dirs = dirs_of(&link);
        assert_eq!(dirs.len(), 2, "{dirs:?}");
        assert_eq!(dirs[0], dir.path());
        assert_eq!(dirs[1], std::fs::canonicalize(&data).unwrap());
        assert_eq!(dirs_of(Path::new("peergate.yaml"))[0], PathBuf::from("."));
    }

    #[test]
    fn fingerprints_change_with_content_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        let files = vec![file.clone(), dir.path().join("missing.yaml")];
        let first = fingerprint(&files);
        assert!(first[0].is_some() && first[1].is_none());
        std::fs::write(&file, "a: 1\n").unwrap();
        assert_eq!(fingerprint(&files), first);
        std::fs::write(&file, "a: 2\n").unwrap();
        assert_ne!(fingerprint(&files), first);
    }
}
