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
//!
//! A directory watch also hears about every other file in the directory (a log file kept
//! beside the config is a stream of events), and the peers file of a large allowlist is
//! megabytes, so a check is kept cheap twice over: an event wakes the reloader only when its path is one a
//! reload reads or passes through ([`Interest`]), and a file is read and hashed only when its
//! metadata differs from what was recorded when it was last read ([`Watched`]). The content
//! hash still decides whether anything changed; SIGHUP skips the metadata and reads it all.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::allowlist::Snapshot;
use crate::config::{self, Config, ConfigError, Loaded};
use crate::files::{FileDigest, FileRead};
use crate::state::Shared;

/// How long the directory must be quiet after a file event before the files are read: an
/// editor's save or a ConfigMap update is several events in a few milliseconds.
const SETTLE: Duration = Duration::from_millis(200);
/// Longest a stream of events can put the check off (a busy directory never goes quiet).
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// The settings only read at start, as comparable fingerprints: the `listen` settings,
/// whether TLS is on (the certificate and key themselves are replaced live), the peer CA file
/// (by path and content: the outbound connector loads it once), the identity (by
/// key, so moving the same key elsewhere is no change), the replay cache size, the connection
/// timeouts the proxy services were built with, and the shutdown timings given to Pingora.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartBound {
    settings: Vec<(&'static str, String)>,
}

impl RestartBound {
    pub fn of(config: &Config) -> RestartBound {
        let file = |f: Option<&Path>| match f {
            Some(f) => format!("{} {}", f.display(), digest_hex(f)),
            None => "none".to_string(),
        };
        RestartBound {
            settings: vec![
                ("listen.inbound", config.listen.inbound.to_string()),
                ("listen.outbound", config.listen.outbound.to_string()),
                ("listen.admin", config.listen.admin.to_string()),
                ("listen.threads", config.listen.threads.to_string()),
                (
                    "listen.idle_timeout",
                    config.listen.idle_timeout.to_string(),
                ),
                (
                    "listen.max_connections",
                    config.listen.max_connections.to_string(),
                ),
                // The certificate and key are replaced live; only turning TLS on or off
                // changes what the listener speaks.
                (
                    "tls",
                    if config.inbound_tls().is_some() {
                        "on"
                    } else {
                        "off"
                    }
                    .to_string(),
                ),
                ("tls.peer_ca_file", file(config.peer_ca_file())),
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
    match crate::files::digest(path, crate::files::MAX_CONFIG_FILE) {
        Ok(digest) => digest.iter().take(12).map(|b| format!("{b:02x}")).collect(),
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
    /// The configuration file does not validate (the first error), and the files it names do
    /// not load with its last version that did either (the second).
    Both(ConfigError, Box<ConfigError>),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Config(e) => e.fmt(f),
            ReloadError::Invalid(e) => f.write_str(e),
            ReloadError::Both(config, named) => {
                write!(
                    f,
                    "{config}; and the files it names do not load either: {named}"
                )
            }
        }
    }
}

impl std::error::Error for ReloadError {}

/// What a successful reload put in force.
#[derive(Debug)]
pub struct Applied {
    pub peers: usize,
    /// The peers the reload added and removed.
    pub changes: crate::allowlist::PeerChanges,
    /// Changed keys that only take effect after a restart (the rest was applied).
    pub restart_needed: Vec<&'static str>,
    /// The files the configuration is read from now (see [`files_of`]).
    pub files: Vec<PathBuf>,
    pub poll_interval: Duration,
    /// Why the certificate and key did not load: the rest was applied, the pair in force
    /// stays, and the reload counts as failed.
    pub tls_error: Option<String>,
    /// Why the configuration file itself did not load: its last version that did stays in
    /// force, the files it names (the peers file, the certificate, the profile) were read
    /// again with it and applied, and the reload counts as failed.
    pub config_error: Option<ConfigError>,
}

/// Reads and validates the configuration at `config_path` and puts it in force, or keeps the
/// running one when it does not validate. Logs and counts the outcome either way.
pub fn reload_now(shared: &Shared, config_path: &Path) -> Result<Applied, ReloadError> {
    let reloads = &shared.metrics.config_reloads;
    match try_reload(shared, config_path) {
        Ok(applied) => {
            if let Some(e) = &applied.config_error {
                // Not the last successful reload: the file in force is not the one on disk.
                reloads.with_label_values(&["failure"]).inc();
                log::warn!(
                    "configuration reload failed; the running {} stays in force: {e}; the files it names were read again with it and applied: {} on the allowlist ({})",
                    config_path.display(),
                    crate::allowlist::peers_counted(applied.peers),
                    applied.changes
                );
                if let Some(e) = &applied.tls_error {
                    log::error!(
                        "the TLS certificate and key do not load, so the ones in force stay: {e}"
                    );
                }
            } else if let Some(e) = &applied.tls_error {
                // Counted as a failure, and not as the last successful reload, so that a
                // broken renewal is seen before the certificate in force expires.
                reloads.with_label_values(&["failure"]).inc();
                log::error!(
                    "configuration reloaded from {} ({} on the allowlist; {}), but the TLS certificate and key do not load, so the ones in force stay: {e}",
                    config_path.display(),
                    crate::allowlist::peers_counted(applied.peers),
                    applied.changes
                );
            } else {
                reloads.with_label_values(&["success"]).inc();
                // Changes that wait for a restart were not applied: the configuration in force
                // is not yet the one on disk.
                if applied.restart_needed.is_empty() {
                    mark_loaded(shared);
                }
                log::info!(
                    "configuration reloaded from {}: {} on the allowlist; {}",
                    config_path.display(),
                    crate::allowlist::peers_counted(applied.peers),
                    applied.changes
                );
            }
            shared
                .metrics
                .config_restart_pending
                .set(i64::try_from(applied.restart_needed.len()).unwrap_or(i64::MAX));
            if let Ok(mut pending) = shared.restart_pending.lock() {
                pending.clone_from(&applied.restart_needed);
            }
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
    // as fast); see `config::load_serving`.
    let current = shared.snapshot();
    let in_force = current.peer_table();
    let known: config::KnownKeys = Arc::new(move |key_id: &str| current.key_bytes(key_id));
    let (mut loaded, config_error) =
        match config::load_reloading(config_path, Some(known.clone()), Some(in_force.clone())) {
            Ok(loaded) => {
                remember_text(shared, &loaded.text);
                (loaded, None)
            }
            // An edit of the configuration file that does not validate changes nothing of it, but
            // must not hold back a valid change of the files it names: a peer taken off the
            // allowlist is refused from the next request on, whatever else is being edited.
            Err(e) if same_file(&e.file, config_path) => {
                let text = shared
                    .config_text
                    .lock()
                    .ok()
                    .and_then(|t| t.clone())
                    .ok_or_else(|| ReloadError::Config(e.clone()))?;
                let loaded = match config::load_reloading_with(
                    config_path,
                    &text,
                    Some(known),
                    Some(in_force),
                ) {
                    Ok(loaded) => loaded,
                    // The same error both times: a file both versions name (the key file, say)
                    // does not load, and the configuration file itself may be fine.
                    Err(named) if named.to_string() == e.to_string() => {
                        return Err(ReloadError::Config(e))
                    }
                    Err(named) => return Err(ReloadError::Both(e, Box::new(named))),
                };
                (loaded, Some(e))
            }
            Err(e) => return Err(ReloadError::Config(e)),
        };
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
    let changes = snapshot.changes_since(&shared.snapshot());
    shared.install(snapshot);
    let new_cert = loaded.config.tls.as_ref().and_then(|t| t.cert.as_ref());
    if let (Some(slot), Some(cert)) = (&shared.server_cert, new_cert) {
        slot.replace(cert);
    }
    // What the load freed, and the snapshot replaced unless a request still holds it, go
    // back to the system now: the reloader sleeps until the next change.
    crate::memory::release_freed();
    Ok(Applied {
        peers,
        changes,
        restart_needed,
        files: files_of(&loaded),
        poll_interval: loaded.config.reload.poll_interval.0,
        tls_error: loaded.tls_error.map(|e| e.to_string()),
        config_error,
    })
}

/// Keeps `text` as the configuration file's last version that loaded.
pub fn remember_text(shared: &Shared, text: &str) {
    if let Ok(mut slot) = shared.config_text.lock() {
        match slot.as_mut() {
            Some(kept) if kept.as_str() == text => {}
            _ => *slot = Some(text.to_owned()),
        }
    }
}

/// Whether two paths name one file (an error names the path it read, maybe otherwise spelled).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Records that the configuration in force was loaded now (at start, and by each reload).
pub fn mark_loaded(shared: &Shared) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    shared.metrics.config_last_reload_success.set(now);
}

/// The files a reload reads: the config file, the peers file, the profile page and the TLS
/// certificate and key (see [`watch_list`] for the others it may read).
fn files_of(loaded: &Loaded) -> Vec<PathBuf> {
    let config = &loaded.config;
    let mut files = vec![loaded.path.clone()];
    files.extend(config.peers_file.as_ref().map(|f| f.0.clone()));
    files.extend(config.identity.profile.as_ref().map(|f| f.0.clone()));
    if let Some(tls) = &config.tls {
        files.extend(tls.cert_file.iter().map(|f| f.0.clone()));
        files.extend(tls.key_file.iter().map(|f| f.0.clone()));
    }
    files
}

/// The background reloader of one gateway; it stops (and its thread ends) when dropped.
pub struct Reloader {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reloader {
    /// Starts watching the files `loaded` was read from. SIGHUP is registered before this
    /// returns, so a SIGHUP sent afterwards reloads rather than ending the process. `reads` is
    /// what the start read of each file (see [`crate::files::Recording`]): the first look
    /// compares with that, so that an edit made while the gateway was starting is applied.
    pub fn start(
        shared: Arc<Shared>,
        loaded: &Loaded,
        reads: &[FileRead],
    ) -> Result<Reloader, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("reloader: cannot start its runtime: {e}"))?;
        let sighup = {
            let _in_runtime = runtime.enter();
            signal(SignalKind::hangup())
                .map_err(|e| {
                    log::warn!("reloader: SIGHUP cannot be handled ({e}); files are still watched")
                })
                .ok()
        };
        // Asked once SIGHUP is watched here, so that none falls between the two.
        let hangup_while_starting = crate::early_signals::hangup_came();
        // Capacity 1 and `try_send`: a full channel already holds the wake-up.
        let (events_tx, events_rx) = mpsc::channel::<()>(1);
        let mut state = ReloadState::new(shared, loaded, reads);
        // Shared with the watcher's thread, which filters there: an event about another file
        // then costs a few path comparisons and never wakes the reloader.
        let filter = state.interest.clone();
        state.watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) if worth_a_look(&event.kind) && concerns(&filter, &event) => {
                    let _ = events_tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => log::debug!("reloader: file watch error: {e}"),
            }
        })
        .map_err(|e| {
            log::warn!(
                "reloader: cannot watch the configuration files ({e}); changes are picked up on SIGHUP and every {}",
                config::HumanDuration(state.poll_interval)
            )
        })
        .ok();
        state.refresh_watches();
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("peergate-reload".into())
            .spawn(move || {
                runtime.block_on(state.run(stop_rx, events_rx, sighup, hangup_while_starting))
            })
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

/// Whether `event` may concern a file a reload reads. When the filter cannot be consulted the
/// answer is yes: a needless check costs little, a missed change stays until the next poll.
fn concerns(interest: &RwLock<Interest>, event: &notify::Event) -> bool {
    interest.read().map_or(true, |i| i.concerns(event))
}

/// The paths whose events can mean that a file a reload reads changed: each file as written
/// (made absolute the way `notify` reports it), its real path, and every path its resolution
/// goes through, so that flipping a symlink anywhere on the way counts.
#[derive(Debug)]
struct Interest {
    paths: Vec<PathBuf>,
}

impl Interest {
    fn of(files: &[PathBuf]) -> Interest {
        let mut paths = Vec::new();
        for file in files {
            paths.extend(absolute(file));
            paths.extend(std::fs::canonicalize(file).ok());
            paths.extend(resolution(file));
        }
        paths.sort();
        paths.dedup();
        Interest { paths }
    }

    /// An event without paths (the kernel's queue overflowed, or the platform does not say)
    /// may be about anything. Names starting with `..` are how kubelet swaps a ConfigMap's
    /// files (`..data`, `..2024_01_01_…`); they count even when the resolution recorded at
    /// the last check does not lead through them yet.
    fn concerns(&self, event: &notify::Event) -> bool {
        event.need_rescan()
            || event.paths.is_empty()
            || event.paths.iter().any(|path| {
                path.file_name()
                    .is_some_and(|name| name.as_bytes().starts_with(b".."))
                    || self.paths.iter().any(|p| p == path)
            })
    }
}

/// `path` made absolute against the working directory, as `notify` does with the directories
/// it is given (`Path` equality ignores the `.` components that leaves).
fn absolute(path: &Path) -> Option<PathBuf> {
    if path.is_absolute() {
        Some(path.to_path_buf())
    } else {
        std::env::current_dir().ok().map(|cwd| cwd.join(path))
    }
}

/// Every path met while resolving `file` component by component: the symlinks, where they
/// point, and the directories in between. A change to any of them can change what `file` is.
fn resolution(file: &Path) -> Vec<PathBuf> {
    /// Linux gives up after 40 links too.
    const MAX_LINKS: usize = 40;
    let mut met = Vec::new();
    let Some(file) = absolute(file) else {
        return met;
    };
    let mut todo: VecDeque<PathBuf> = VecDeque::new();
    let mut at = PathBuf::from("/");
    let mut links = 0;
    push_components(&mut todo, &file);
    while let Some(part) = todo.pop_front() {
        if part.as_os_str() == ".." {
            // `at` has no symlink left in it, so its parent is the real one.
            at.pop();
            continue;
        }
        let next = at.join(&part);
        met.push(next.clone());
        match std::fs::read_link(&next) {
            Ok(target) if links < MAX_LINKS => {
                links += 1;
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                let mut rest = VecDeque::new();
                push_components(&mut rest, &target);
                rest.extend(todo);
                todo = rest;
            }
            _ => at = next,
        }
    }
    met
}

/// The names in `path` (no root, no `.`), each as its own path, and `..` kept as such.
fn push_components(todo: &mut VecDeque<PathBuf>, path: &Path) {
    for part in path.components() {
        match part {
            Component::Normal(name) => todo.push_back(PathBuf::from(name)),
            Component::ParentDir => todo.push_back(PathBuf::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// A config file's modification and change times can be this coarse (FAT's are two seconds,
/// ext3's and HFS+'s one). A write within the same tick as the one recorded may leave every
/// field of the metadata as it was, so metadata taken that soon after a change does not
/// vouch for the content: the next check reads the file again.
const COARSEST_TIMESTAMP: Duration = Duration::from_secs(2);

/// The metadata that changes when a file is written or replaced: an in-place write moves the
/// modification and change times (compared to the nanosecond, so two same-length writes in
/// one second differ) and usually the length; a rename over the file or a symlink flip
/// brings another inode. The change time cannot be set back by `touch -d` or `cp -p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    fn ctime_nanos(&self) -> i128 {
        i128::from(self.ctime.0) * 1_000_000_000 + i128::from(self.ctime.1)
    }
}

/// What [`Watched::look`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Look {
    /// The metadata vouches for the content; the file was not read.
    Unchanged,
    /// The file was read and hashes as before (touched, or rewritten with the same content).
    Same,
    /// The file was read and its content differs from the last read (or became readable or
    /// unreadable).
    Changed,
}

/// One file a reload reads, as it was last read.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    /// SHA-256 of the content last read (`None`: missing or unreadable). It, not the
    /// metadata, decides whether the file changed.
    digest: Option<[u8; 32]>,
    /// The metadata of what was last read, while it can vouch for that content: `None` after
    /// a failed read or one too soon after a change (see [`COARSEST_TIMESTAMP`]).
    stamp: Option<Stamp>,
    coarsest: Duration,
}

impl Watched {
    /// A file as `reads` says it was last read, to be read again at the next look. One that
    /// `reads` does not name counts as unreadable: should that look find it readable, it
    /// reloads.
    fn as_read(path: PathBuf, reads: &[FileRead]) -> Watched {
        let digest = last_read(reads, &path).flatten();
        Watched {
            path,
            digest,
            stamp: None,
            coarsest: COARSEST_TIMESTAMP,
        }
    }

    /// Records that a reload read `digest` (`None`: could not read it). When that is not what
    /// the look before it found, the file changed in between: the next look reads it again.
    fn reloaded(&mut self, digest: Option<FileDigest>) {
        if self.digest != digest {
            self.digest = digest;
            self.stamp = None;
        }
    }

    #[cfg(test)]
    fn new(path: PathBuf, coarsest: Duration) -> Watched {
        let mut watched = Watched {
            path,
            digest: None,
            stamp: None,
            coarsest,
        };
        watched.read();
        watched
    }

    /// Compares the file with its last read; `thorough` reads it whatever the metadata says.
    fn look(&mut self, thorough: bool) -> Look {
        if !thorough {
            if let Some(stamp) = self.stamp {
                let now = std::fs::metadata(&self.path).ok().map(|m| Stamp::of(&m));
                if now == Some(stamp) {
                    return Look::Unchanged;
                }
            }
        }
        let before = self.digest;
        self.read();
        if self.digest == before {
            Look::Same
        } else {
            Look::Changed
        }
    }

    /// The metadata is taken from the open file before reading it, so it is never newer than
    /// the content: a write during the read shows at the next look.
    fn read(&mut self) {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        self.stamp = None;
        self.digest = None;
        // Only a regular file: a link to /dev/zero would be hashed forever.
        let Ok(file) = crate::files::open_regular(&self.path) else {
            return;
        };
        let stamp = file.metadata().ok().map(|m| Stamp::of(&m));
        // Hashed as it is read: the peers file of a large allowlist is megabytes, which would
        // otherwise be in memory just before the reload that reads it again.
        let Ok(digest) = crate::files::digest_of(file) else {
            return;
        };
        self.digest = Some(digest);
        let settled = started - self.coarsest.as_nanos() as i128;
        self.stamp = stamp.filter(|s| s.ctime_nanos() < settled);
    }
}

/// The directories to watch for `file`: its own (as written, so symlink flips in it are
/// seen), the target's when it is a symlink, and each directory holding a symlink met on the
/// way (`data/current -> v1` in `data/current/peers.yaml`), where flipping one changes what
/// `file` is.
fn dirs_of(file: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| crate::files::directory_of(p).to_path_buf();
    let mut dirs = vec![parent(file)];
    let mut real_dirs: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect();
    let links = resolution(file).into_iter().filter(|met| {
        met.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
    });
    let targets = std::fs::canonicalize(file).into_iter();
    for dir in targets.chain(links).map(|p| parent(&p)) {
        let real = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if !real_dirs.contains(&real) {
            real_dirs.push(real);
            dirs.push(dir);
        }
    }
    dirs
}

/// Device and inode: a directory replaced under the same name needs a new watch.
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

struct ReloadState {
    shared: Arc<Shared>,
    config_path: PathBuf,
    /// Each file as last read (loaded or refused), so a refused file is not retried until it
    /// changes again.
    files: Vec<Watched>,
    /// What the watcher's filter lets through; follows `files` and their symlinks.
    interest: Arc<RwLock<Interest>>,
    watcher: Option<notify::RecommendedWatcher>,
    watched_dirs: HashMap<PathBuf, Option<(u64, u64)>>,
    poll_interval: Duration,
}

impl ReloadState {
    /// The state of a gateway started from `loaded`, whose start read `reads`; no watcher yet.
    fn new(shared: Arc<Shared>, loaded: &Loaded, reads: &[FileRead]) -> ReloadState {
        let files = watch_list(files_of(loaded), reads);
        ReloadState {
            shared,
            config_path: loaded.path.clone(),
            interest: Arc::new(RwLock::new(Interest::of(&files))),
            files: files
                .into_iter()
                .map(|f| Watched::as_read(f, reads))
                .collect(),
            watcher: None,
            watched_dirs: HashMap::new(),
            poll_interval: loaded.config.reload.poll_interval.0,
        }
    }

    async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut events: mpsc::Receiver<()>,
        mut sighup: Option<Signal>,
        hangup_while_starting: bool,
    ) {
        let mut poll = poll_timer(self.poll_interval);
        if hangup_while_starting {
            log::info!(
                "SIGHUP while starting: reloading {}",
                self.config_path.display()
            );
        }
        // The files are watched now: this first look reads each and reloads if one is not
        // what the start read.
        self.check(hangup_while_starting, &mut poll);
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

    /// Reloads when the files' content changed since last read, or always when `force`d
    /// (SIGHUP: then every file is read, whatever its metadata says).
    fn check(&mut self, mut force: bool, poll: &mut Interval) {
        loop {
            self.refresh_watches();
            if !self.look(force) {
                return;
            }
            let new_files = self.reload(poll);
            if !new_files {
                return;
            }
            // A file new to the watch was read by the reload before it was watched: looked at
            // once more now that it is, an edit made in between is not missed.
            force = false;
        }
    }

    /// Looks at every file (all are read when `thorough`): whether one changed.
    fn look(&mut self, thorough: bool) -> bool {
        let mut changed = false;
        for file in &mut self.files {
            // Every file is looked at, even after a change is found: the look records what
            // the next check compares with.
            changed |= file.look(thorough) == Look::Changed;
        }
        changed || thorough
    }

    /// Reloads, and watches what the reload read from now on: whether that brought files not
    /// watched before.
    fn reload(&mut self, poll: &mut Interval) -> bool {
        let recording = crate::files::Recording::begin();
        let result = reload_now(&self.shared, &self.config_path);
        let reads = recording.finish();
        let watch = match &result {
            Ok(applied) => {
                if applied.poll_interval != self.poll_interval {
                    self.poll_interval = applied.poll_interval;
                    *poll = poll_timer(self.poll_interval);
                }
                watch_list(applied.files.iter().cloned(), &reads)
            }
            // What the configuration in force is read from stays watched, and what the
            // refused edit named is watched too, so that fixing or creating it is seen.
            Err(_) => watch_list(self.files.iter().map(|f| f.path.clone()), &reads),
        };
        let mut old = std::mem::take(&mut self.files);
        let mut new_files = false;
        self.files = watch
            .into_iter()
            .map(|path| match old.iter().position(|f| f.path == path) {
                Some(i) => old.swap_remove(i),
                None => {
                    new_files = true;
                    Watched::as_read(path, &reads)
                }
            })
            .collect();
        // The next look compares with what the reload read (what is in force, or what was
        // refused), not with what the look before it found: a file written during the reload
        // and then back would otherwise pass for unchanged.
        for file in &mut self.files {
            if let Some(digest) = last_read(&reads, &file.path) {
                file.reloaded(digest);
            }
        }
        new_files
    }

    /// Watches the directories the current files live in, and only those, and lets through
    /// the events about where the files' paths lead now.
    fn refresh_watches(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let files: Vec<PathBuf> = self.files.iter().map(|f| f.path.clone()).collect();
        let interest = Interest::of(&files);
        match self.interest.write() {
            Ok(mut current) => *current = interest,
            Err(poisoned) => *poisoned.into_inner() = interest,
        }
        let mut wanted: Vec<PathBuf> = files.iter().flat_map(|f| dirs_of(f)).collect();
        wanted.sort();
        wanted.dedup();
        let stale: Vec<PathBuf> = self
            .watched_dirs
            .iter()
            .filter(|(dir, id)| !wanted.contains(dir) || dir_id(dir) != **id)
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in stale {
            let _ = watcher.unwatch(&dir);
            self.watched_dirs.remove(&dir);
        }
        for dir in wanted {
            if self.watched_dirs.contains_key(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    let id = dir_id(&dir);
                    self.watched_dirs.insert(dir, id);
                }
                Err(e) => log::debug!("reloader: cannot watch {}: {e}", dir.display()),
            }
        }
    }
}

/// What `reads` says the last read of `path` found: `None` when it does not name it.
fn last_read(reads: &[FileRead], path: &Path) -> Option<Option<FileDigest>> {
    reads
        .iter()
        .rev()
        .find(|(read, _)| read == path)
        .map(|(_, digest)| *digest)
}

/// The files to watch: `named` (what a reload reads, see [`files_of`]) and every other file
/// the load in `reads` tried to read, such as the identity key file and CA files: a reload
/// that failed on one of them is then tried again once it is fixed, and a change of one that
/// needs a restart is said in the log when it is made.
fn watch_list(named: impl IntoIterator<Item = PathBuf>, reads: &[FileRead]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in named
        .into_iter()
        .chain(reads.iter().map(|(p, _)| p.clone()))
    {
        if !files.contains(&path) {
            files.push(path);
        }
    }
    files
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

    /// A directory with an identity key (`me.pem`) and `peergate.yaml`, which names
    /// `peers.yaml`; `identity_more` goes into its `identity:` mapping, `more` at its end.
    fn gateway_files(identity_more: &str, more: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let me = crate::identity::Identity::generate();
        std::fs::write(dir.path().join("me.pem"), me.to_pkcs8_pem().unwrap()).unwrap();
        let config_path = dir.path().join("peergate.yaml");
        std::fs::write(
            &config_path,
            format!(
                "identity: {{ key_file: me.pem, hosts: [me.example.org]{identity_more} }}\n\
                 app: {{ upstream: \"127.0.0.1:9\" }}\npeers_file: peers.yaml\n{more}"
            ),
        )
        .unwrap();
        (dir, config_path)
    }

    /// A gateway's reload reads a large peers file straight into the new table. One refused
    /// only at its end, by the checks across entries that run once all are in, must leave the
    /// allowlist in force as it was, with the error a plain load gives.
    #[test]
    fn a_large_peers_file_refused_at_its_end_changes_nothing() {
        let (dir, config_path) = gateway_files("", "");
        let ids = crate::identity::Identity::generate_distinct(601);
        let entry = |name: &str, id: &crate::identity::Identity| {
            format!(
                "  - name: {name}\n    public_key: \"{}\"\n",
                id.public().spki_base64()
            )
        };
        let mut good = String::from("peers:\n");
        for (i, id) in ids.iter().take(600).enumerate() {
            good.push_str(&entry(&format!("p{i}"), id));
        }
        let peers_path = dir.path().join("peers.yaml");
        std::fs::write(&peers_path, &good).unwrap();
        let loaded = config::load_serving(&config_path, None).unwrap();
        let shared = Shared::new(&loaded.config).unwrap();
        drop(loaded);
        let newcomer = ids.get(600).unwrap();

        // The newcomer takes the first peer's name.
        std::fs::write(&peers_path, format!("{good}{}", entry("P0", newcomer))).unwrap();
        let err = reload_now(&shared, &config_path).unwrap_err();
        let plain = config::load(&config_path).unwrap_err();
        assert_eq!(err.to_string(), plain.to_string());
        assert!(err.to_string().contains("already used by"), "{err}");
        let snapshot = shared.snapshot();
        assert_eq!(snapshot.peer_count(), 600);
        assert!(snapshot.key(newcomer.public().key_id()).is_none());
        let (_, first) = snapshot.caller(ids[0].public().key_id()).unwrap();
        assert_eq!(first.name(), "p0");

        std::fs::write(&peers_path, format!("{good}{}", entry("p600", newcomer))).unwrap();
        assert_eq!(reload_now(&shared, &config_path).unwrap().peers, 601);
        let snapshot = shared.snapshot();
        let (_, added) = snapshot.caller(newcomer.public().key_id()).unwrap();
        assert_eq!(added.name(), "p600");
    }

    /// A reload whose peers file holds the bytes the table in force was read from serves that
    /// table again, instead of parsing the file into a second one beside it (100 000 peers:
    /// 15 MiB more for the reload, and most of a second of a core); what else changed is
    /// applied. Any change of the bytes, inline peers, or another peers file builds a new one.
    #[test]
    fn an_unchanged_peers_file_keeps_the_table_in_force() {
        // A few peers (read as one document) and many (the parallel reader).
        for count in [2, 600] {
            let (dir, config_path) = gateway_files("", "");
            let ids = crate::identity::Identity::generate_distinct(count + 1);
            let listed: Vec<_> = ids.iter().take(count).collect();
            let peers_path = dir.path().join("peers.yaml");
            // p0 reached over plain http: its warning is given at every reload, kept or not.
            let text = peers_text(&listed).replacen(
                "  - name: p1\n",
                "    url: http://p0.example\n  - name: p1\n",
                1,
            );
            std::fs::write(&peers_path, &text).unwrap();
            let loaded = config::load_serving(&config_path, None).unwrap();
            let shared = Shared::new(&loaded.config).unwrap();
            let table = || shared.snapshot().peer_table();
            let first = table();
            assert_eq!(
                first.source().map(|s| s.file.clone()),
                Some(peers_path.clone())
            );

            let applied = reload_now(&shared, &config_path).unwrap();
            assert!(applied.changes.kept, "{count}: {}", applied.changes);
            assert!(Arc::ptr_eq(&first, &table()), "{count}");
            let kept = config::load_reloading(&config_path, None, Some(first.clone())).unwrap();
            assert!(
                kept.warnings.iter().any(|w| w.contains(&format!(
                    "\"p0\" (in {}) is reached over plain http",
                    peers_path.display()
                ))),
                "{:?}",
                kept.warnings
            );
            // The reloader compares the file with this load's read of it.
            assert_eq!(
                last_read(&kept.reads, &peers_path),
                Some(first.source().map(|s| s.digest))
            );

            // The configuration changes, the peers file does not.
            let config_text = std::fs::read_to_string(&config_path).unwrap();
            std::fs::write(
                &config_path,
                config_text.replace("hosts: [me.example.org]", "hosts: [me.example.net]"),
            )
            .unwrap();
            let applied = reload_now(&shared, &config_path).unwrap();
            assert!(applied.changes.kept, "{count}");
            assert!(Arc::ptr_eq(&first, &table()), "{count}");
            assert_eq!(
                shared.snapshot().policy.hosts[0].to_string(),
                "me.example.net"
            );

            // One byte of the peers file, the length unchanged.
            std::fs::write(&peers_path, text.replacen("name: p0", "name: q0", 1)).unwrap();
            let applied = reload_now(&shared, &config_path).unwrap();
            assert!(!applied.changes.kept, "{count}");
            let renamed = table();
            assert!(!Arc::ptr_eq(&first, &renamed), "{count}");
            assert_eq!(
                renamed.name_of_key(ids[0].public().key_id()),
                Some("q0"),
                "{count}"
            );
            // The same bytes written again (a new modification time): kept.
            std::fs::write(&peers_path, text.replacen("name: p0", "name: q0", 1)).unwrap();
            reload_now(&shared, &config_path).unwrap();
            assert!(Arc::ptr_eq(&renamed, &table()), "{count}");

            // Another file with the same bytes: read, as any file new to the gateway is.
            std::fs::copy(&peers_path, dir.path().join("copy.yaml")).unwrap();
            let config_text = std::fs::read_to_string(&config_path).unwrap();
            std::fs::write(
                &config_path,
                config_text.replace("peers_file: peers.yaml", "peers_file: copy.yaml"),
            )
            .unwrap();
            reload_now(&shared, &config_path).unwrap();
            let copied = table();
            assert!(!Arc::ptr_eq(&renamed, &copied), "{count}");
            assert_eq!(copied.len(), count);

            // Inline peers come before the file's: the table is built, every time.
            let newcomer = ids.last().unwrap();
            std::fs::write(
                &config_path,
                format!(
                    "{}peers:\n  - name: inline\n    public_key: \"{}\"\n",
                    std::fs::read_to_string(&config_path).unwrap(),
                    newcomer.public().spki_base64()
                ),
            )
            .unwrap();
            let applied = reload_now(&shared, &config_path).unwrap();
            assert_eq!(applied.peers, count + 1);
            assert_eq!(applied.changes.added.count, 1);
            let with_inline = table();
            assert!(with_inline.source().is_none());
            reload_now(&shared, &config_path).unwrap();
            assert!(!Arc::ptr_eq(&with_inline, &table()), "{count}");
            assert_eq!(table().len(), count + 1);
        }
    }

    /// The reloader's first look compares each file with what the start read of it: a file
    /// the start read but did not record would be reloaded at every start, and one recorded
    /// under another spelling of its path would never be compared.
    #[test]
    fn a_start_records_every_file_the_reloader_watches() {
        let (dir, config_path) = gateway_files(
            ", profile: profile.md",
            "tls: { cert_file: cert.pem, key_file: key.pem }\n",
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["me.example.org".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("profile.md"), "# Me\n").unwrap();
        let peers_path = dir.path().join("peers.yaml");
        // A few peers (read as one document) and many (the parallel reader).
        for count in [2, 600] {
            let ids = crate::identity::Identity::generate_distinct(count);
            std::fs::write(&peers_path, peers_text(&ids.iter().collect::<Vec<_>>())).unwrap();
            let loaded = config::load_serving(&config_path, None).unwrap();
            let recording = crate::files::Recording::begin();
            let shared = Shared::new(&loaded.config).unwrap();
            let mut reads = loaded.reads.clone();
            reads.extend(recording.finish());
            let files = files_of(&loaded);
            assert_eq!(files.len(), 5, "{files:?}");
            // The identity key is watched too, though only a restart applies a new one.
            let watched = watch_list(files, &reads);
            assert_eq!(watched.len(), 6, "{watched:?}");
            assert!(watched.contains(&dir.path().join("me.pem")), "{watched:?}");
            for path in &watched {
                let mut watched = Watched::as_read(path.clone(), &reads);
                assert!(
                    watched.digest.is_some(),
                    "{} is not recorded",
                    path.display()
                );
                assert_eq!(watched.look(false), Look::Same, "{}", path.display());
            }

            // What a reload reads is recorded the same way.
            let recording = crate::files::Recording::begin();
            reload_now(&shared, &config_path).unwrap();
            let reads = recording.finish();
            for path in &watched {
                let mut watched = Watched::as_read(path.clone(), &reads);
                assert_eq!(watched.look(false), Look::Same, "{}", path.display());
            }
        }
        // Recording ends with the load: a read after it is not noted anywhere.
        assert!(crate::files::Recording::begin().finish().is_empty());

        // A file the configuration names but that is missing is recorded as tried, so that
        // its creation is watched for.
        std::fs::remove_file(&peers_path).unwrap();
        let recording = crate::files::Recording::begin();
        assert!(config::load_serving(&config_path, None).is_err());
        let reads = recording.finish();
        assert_eq!(last_read(&reads, &peers_path), Some(None), "{reads:?}");
    }

    /// A gateway's files in a temporary directory (`me.pem`, `peergate.yaml` naming
    /// `peers.yaml`), and its reloader's state as at start, without a watcher.
    struct Reloading {
        dir: tempfile::TempDir,
        state: ReloadState,
        poll: Interval,
    }

    impl Reloading {
        fn start(peers: &[&crate::identity::Identity]) -> Reloading {
            let (dir, config_path) = gateway_files("", "");
            std::fs::write(dir.path().join("peers.yaml"), peers_text(peers)).unwrap();
            let loaded = config::load_serving(&config_path, None).unwrap();
            let recording = crate::files::Recording::begin();
            let shared = Arc::new(Shared::new(&loaded.config).unwrap());
            let mut reads = loaded.reads.clone();
            reads.extend(recording.finish());
            Reloading {
                state: ReloadState::new(shared, &loaded, &reads),
                dir,
                poll: poll_timer(Duration::from_secs(3600)),
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn has(&self, peer: &crate::identity::Identity) -> bool {
            let key = peer.public().key_id();
            self.state.shared.snapshot().key(key).is_some()
        }

        /// What the reloader does on an event, in its two steps: whether the look saw a
        /// change, and whether the reload applied (`None`: no reload).
        fn check(&mut self) -> Option<bool> {
            if !self.state.look(false) {
                return None;
            }
            let successes = self
                .state
                .shared
                .metrics
                .config_reloads
                .with_label_values(&["success"]);
            let before = successes.get();
            self.state.reload(&mut self.poll);
            Some(successes.get() > before)
        }
    }

    fn peers_text(peers: &[&crate::identity::Identity]) -> String {
        let mut text = String::from("peers:\n");
        for (i, id) in peers.iter().enumerate() {
            text.push_str(&format!(
                "  - name: p{i}\n    public_key: \"{}\"\n",
                id.public().spki_base64()
            ));
        }
        text
    }

    /// The look saw one version of the peers file, the reload read another (written while it
    /// read), and then the file went back to what the look saw: the next look compares with
    /// what the reload put in force, and applies the file. It compared with the look's, saw
    /// no change, and left the version written during the reload in force (half a file, when
    /// the write had cut it) until the file's next change.
    #[tokio::test]
    async fn a_file_written_during_a_reload_and_back_is_applied() {
        let [bob, carol, dave] = crate::identity::Identity::generate_distinct(3)
            .try_into()
            .unwrap_or_else(|_| unreachable!());
        let mut gw = Reloading::start(&[&bob]);
        let peers = gw.path("peers.yaml");
        std::fs::write(&peers, peers_text(&[&dave])).unwrap();
        assert!(gw.state.look(false));
        std::fs::write(&peers, peers_text(&[&carol])).unwrap();
        gw.state.reload(&mut gw.poll);
        assert!(gw.has(&carol));
        std::fs::write(&peers, peers_text(&[&dave])).unwrap();
        assert_eq!(gw.check(), Some(true));
        assert!(gw.has(&dave) && !gw.has(&carol));
        // And nothing more once it is in force.
        assert_eq!(gw.check(), None);
    }

    /// A reload refused because a file only a restart applies (the identity key) could not be
    /// read is tried again once it is back: the key file is watched. It was not, so the peer
    /// the refused edit removed stayed on the allowlist until another edit.
    #[tokio::test]
    async fn a_reload_refused_for_a_missing_key_file_is_retried_when_it_is_back() {
        let [bob, dave] = crate::identity::Identity::generate_distinct(2)
            .try_into()
            .unwrap_or_else(|_| unreachable!());
        let mut gw = Reloading::start(&[&bob]);
        std::fs::rename(gw.path("me.pem"), gw.path("me.pem.bak")).unwrap();
        std::fs::write(gw.path("peers.yaml"), peers_text(&[&dave])).unwrap();
        assert_eq!(gw.check(), Some(false));
        assert!(gw.has(&bob));
        assert_eq!(gw.check(), None, "a refused file is not retried unchanged");
        // Said once: the last configuration that loaded names the same missing file.
        let err = reload_now(&gw.state.shared, &gw.path("peergate.yaml"))
            .unwrap_err()
            .to_string();
        assert_eq!(err.matches("identity.key_file").count(), 1, "{err}");
        std::fs::rename(gw.path("me.pem.bak"), gw.path("me.pem")).unwrap();
        assert_eq!(gw.check(), Some(true));
        assert!(gw.has(&dave) && !gw.has(&bob));
    }

    /// A file refused only for its size is readable to the reloader's look, which hashes it
    /// whole: not retried until it changes, like any refused file. It was recorded as
    /// unreadable, differed from every look, and was reloaded (and refused) at every poll.
    #[tokio::test]
    async fn a_file_refused_for_its_size_is_not_retried_until_it_changes() {
        let [bob] = crate::identity::Identity::generate_distinct(1)
            .try_into()
            .unwrap_or_else(|_| unreachable!());
        let mut gw = Reloading::start(&[&bob]);
        std::fs::write(gw.path("me.pem"), vec![b'a'; 2 << 20]).unwrap();
        assert_eq!(gw.check(), Some(false));
        assert_eq!(gw.check(), None);
        assert_eq!(gw.check(), None);
    }

    /// A peers file named only by an edit that was refused (it did not parse, or did not
    /// exist yet) is watched: fixing or creating it applies the edit.
    #[tokio::test]
    async fn a_file_named_by_a_refused_edit_is_watched() {
        let [bob, carol, dave] = crate::identity::Identity::generate_distinct(3)
            .try_into()
            .unwrap_or_else(|_| unreachable!());
        let mut gw = Reloading::start(&[&bob]);
        let config = std::fs::read_to_string(gw.path("peergate.yaml")).unwrap();
        std::fs::write(gw.path("peers2.yaml"), "peers:\n  - nmae: x\n").unwrap();
        std::fs::write(
            gw.path("peergate.yaml"),
            config.replace("peers.yaml", "peers2.yaml"),
        )
        .unwrap();
        assert_eq!(gw.check(), Some(false));
        std::fs::write(gw.path("peers2.yaml"), peers_text(&[&carol])).unwrap();
        assert_eq!(gw.check(), Some(true));
        assert!(gw.has(&carol) && !gw.has(&bob));

        std::fs::write(
            gw.path("peergate.yaml"),
            config.replace("peers.yaml", "peers3.yaml"),
        )
        .unwrap();
        assert_eq!(gw.check(), Some(false));
        assert!(gw.has(&carol));
        std::fs::write(gw.path("peers3.yaml"), peers_text(&[&dave])).unwrap();
        assert_eq!(gw.check(), Some(true));
        assert!(gw.has(&dave) && !gw.has(&carol));
    }

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

    fn event(kind: EventKind, paths: &[&Path]) -> notify::Event {
        paths
            .iter()
            .fold(notify::Event::new(kind), |e, p| e.add_path(p.to_path_buf()))
    }

    fn write_event(path: &Path) -> notify::Event {
        event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &[path],
        )
    }

    #[test]
    fn only_events_about_the_files_a_reload_reads_wake_the_reloader() {
        use notify::event::{CreateKind, Flag, MetadataKind, ModifyKind, RemoveKind, RenameMode};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (config, peers) = (d.join("peergate.yaml"), d.join("peers.yaml"));
        std::fs::write(&config, "peers_file: peers.yaml\n").unwrap();
        std::fs::write(&peers, "peers: []\n").unwrap();
        let interest = Interest::of(&[config.clone(), peers.clone()]);

        // Other files in the same directory: a log, a backup, an editor's swap file.
        for other in [
            "peergate.log",
            "peers.yaml~",
            ".peers.yaml.swp",
            "peers.yaml.tmp",
        ] {
            let other = d.join(other);
            assert!(!interest.concerns(&write_event(&other)), "{other:?}");
            let created = event(EventKind::Create(CreateKind::File), &[&other]);
            assert!(!interest.concerns(&created), "{other:?}");
        }
        assert!(interest.concerns(&write_event(&peers)));
        assert!(interest.concerns(&write_event(&config)));
        let attrib = event(
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            &[&peers],
        );
        assert!(interest.concerns(&attrib));
        let removed = event(EventKind::Remove(RemoveKind::File), &[&peers]);
        assert!(interest.concerns(&removed));

        // An editor's save: the temporary file is written, then renamed onto the target.
        let tmp = d.join("peers.yaml.tmp");
        let rename =
            |mode, paths: &[&Path]| event(EventKind::Modify(ModifyKind::Name(mode)), paths);
        assert!(!interest.concerns(&rename(RenameMode::From, &[&tmp])));
        assert!(interest.concerns(&rename(RenameMode::To, &[&peers])));
        assert!(interest.concerns(&rename(RenameMode::Both, &[&tmp, &peers])));
        // And the old file moved away (a backup): the target is gone.
        assert!(interest.concerns(&rename(RenameMode::From, &[&peers])));

        // Kubelet's names, and events that say nothing about which file.
        assert!(interest.concerns(&write_event(&d.join("..data"))));
        assert!(interest.concerns(&write_event(&d.join("..2024_06_01_12_00_00.1"))));
        assert!(interest.concerns(&event(EventKind::Any, &[])));
        let overflow = event(EventKind::Other, &[]).set_flag(Flag::Rescan);
        assert!(interest.concerns(&overflow));
        let overflow_with_path = event(EventKind::Other, &[&tmp]).set_flag(Flag::Rescan);
        assert!(interest.concerns(&overflow_with_path));

        // The shared filter the watcher's thread consults.
        let shared = RwLock::new(interest);
        assert!(concerns(&shared, &write_event(&peers)));
        assert!(!concerns(&shared, &write_event(&tmp)));
    }

    #[test]
    fn relative_paths_match_the_absolute_ones_notify_reports() {
        // notify joins a relative directory to the working directory, `.` included.
        let cwd = std::env::current_dir().unwrap();
        let interest = Interest::of(&[
            PathBuf::from("peergate-no-such.yaml"),
            PathBuf::from("conf/peers-no-such.yaml"),
        ]);
        let as_reported = cwd.join(".").join("peergate-no-such.yaml");
        assert!(interest.concerns(&write_event(&as_reported)));
        let as_reported = cwd.join("conf").join("peers-no-such.yaml");
        assert!(interest.concerns(&write_event(&as_reported)));
        assert!(!interest.concerns(&write_event(&cwd.join("other.yaml"))));
    }

    #[test]
    fn every_path_a_symlinked_file_resolves_through_counts() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(dir.path()).unwrap();
        // kubelet's layout: peers.yaml -> ..data/peers.yaml, ..data -> ..v1.
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/peers.yaml"), "peers: []\n").unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/peers.yaml", d.join("peers.yaml")).unwrap();
        // A symlinked directory elsewhere, with an absolute link, and a `..` in a target.
        std::fs::create_dir_all(d.join("real/etc")).unwrap();
        std::fs::write(d.join("real/etc/app.yaml"), "a: 1\n").unwrap();
        std::os::unix::fs::symlink(d.join("real/etc"), d.join("conf")).unwrap();
        std::os::unix::fs::symlink("../real/etc/app.yaml", d.join("..v1/app.yaml")).unwrap();

        let met = resolution(&d.join("peers.yaml"));
        for path in ["peers.yaml", "..data", "..v1", "..v1/peers.yaml"] {
            assert!(met.contains(&d.join(path)), "{path} not in {met:?}");
        }
        let met = resolution(&d.join("conf/app.yaml"));
        for path in ["conf", "real/etc", "real/etc/app.yaml"] {
            assert!(met.contains(&d.join(path)), "{path} not in {met:?}");
        }
        let met = resolution(&d.join("..v1/app.yaml"));
        assert!(met.contains(&d.join("real/etc/app.yaml")), "{met:?}");

        let interest = Interest::of(&[d.join("peers.yaml"), d.join("conf/app.yaml")]);
        // Renaming a new link onto `conf`, or writing the real files, concerns them...
        assert!(interest.concerns(&write_event(&d.join("conf"))));
        assert!(interest.concerns(&write_event(&d.join("real/etc/app.yaml"))));
        assert!(interest.concerns(&write_event(&d.join("..v1/peers.yaml"))));
        // ...other files in the directories watched for them do not.
        assert!(!interest.concerns(&write_event(&d.join("real/etc/other.yaml"))));
        assert!(!interest.concerns(&write_event(&d.join("..v1/other.yaml"))));

        // A loop resolves to an end rather than forever.
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        assert!(resolution(&d.join("loop")).len() <= 64);
    }

    /// Waits until the clock has moved past `path`'s change time, so that a later write gets
    /// another one even where timestamps only move once per kernel tick.
    fn next_tick() {
        std::thread::sleep(Duration::from_millis(20));
    }

    #[test]
    fn a_file_whose_metadata_is_unchanged_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers.yaml");
        std::fs::write(&file, "peers: []\n").unwrap();
        next_tick();
        let mut watched = Watched::new(file.clone(), Duration::ZERO);
        assert!(watched.stamp.is_some() && watched.digest.is_some());
        for _ in 0..3 {
            assert_eq!(watched.look(false), Look::Unchanged);
        }
        // Writing another file beside it changes nothing about it.
        std::fs::write(dir.path().join("peergate.log"), "x").unwrap();
        assert_eq!(watched.look(false), Look::Unchanged);
    }

    #[test]
    fn a_same_length_rewrite_within_the_same_second_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers.yaml");
        // Both writes must land in one second for the case to be tested; a few tries make
        // straddling a second boundary every time impossible in practice.
        for _ in 0..10 {
            std::fs::write(&file, "peers: [a]\n").unwrap();
            next_tick();
            let mut watched = Watched::new(file.clone(), Duration::ZERO);
            let Some(before) = watched.stamp else {
                panic!("the stamp of a settled file is kept");
            };
            std::fs::write(&file, "peers: [b]\n").unwrap();
            let after = Stamp::of(&std::fs::metadata(&file).unwrap());
            assert_eq!(
                (after.len, after.ino, after.dev),
                (before.len, before.ino, before.dev)
            );
            if after.mtime.0 != before.mtime.0 || after.ctime.0 != before.ctime.0 {
                continue;
            }
            assert_eq!(watched.look(false), Look::Changed);
            assert_eq!(watched.look(false), Look::Unchanged);
            return;
        }
        panic!("no two writes landed in the same second");
    }

    #[test]
    fn a_touch_reads_the_file_but_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers.yaml");
        std::fs::write(&file, "peers: []\n").unwrap();
        next_tick();
        let mut watched = Watched::new(file.clone(), Duration::ZERO);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(SystemTime::now())
            .unwrap();
        assert_eq!(watched.look(false), Look::Same);
        next_tick();
        // Rewritten with the same content: read again, still no change.
        std::fs::write(&file, "peers: []\n").unwrap();
        next_tick();
        assert_eq!(watched.look(false), Look::Same);
        assert_eq!(watched.look(false), Look::Unchanged);
    }

    #[test]
    fn a_thorough_look_reads_whatever_the_metadata_says() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers.yaml");
        std::fs::write(&file, "peers: []\n").unwrap();
        next_tick();
        let mut watched = Watched::new(file.clone(), Duration::ZERO);
        assert_eq!(watched.look(false), Look::Unchanged);
        assert_eq!(watched.look(true), Look::Same);
    }

    #[test]
    fn metadata_taken_soon_after_a_change_does_not_vouch_for_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers.yaml");
        std::fs::write(&file, "peers: []\n").unwrap();
        // Just written: a same-length write in the same timestamp tick could leave the
        // metadata exactly as recorded, so the next look reads again.
        let mut watched = Watched::new(file.clone(), COARSEST_TIMESTAMP);
        assert_eq!(watched.stamp, None);
        assert_eq!(watched.look(false), Look::Same);
        assert_eq!(watched.look(false), Look::Same);
    }

    #[test]
    fn renames_removals_and_creations_are_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers.yaml");
        let tmp = dir.path().join("peers.yaml.tmp");
        std::fs::write(&file, "peers: [a]\n").unwrap();
        next_tick();
        let mut watched = Watched::new(file.clone(), Duration::ZERO);
        // Saved by rename with the same content: another inode, read, no change.
        std::fs::write(&tmp, "peers: [a]\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(watched.look(false), Look::Same);
        next_tick();
        std::fs::write(&tmp, "peers: [b]\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(watched.look(false), Look::Changed);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(watched.look(false), Look::Changed);
        assert_eq!(watched.look(false), Look::Same);
        std::fs::write(&file, "peers: [b]\n").unwrap();
        assert_eq!(watched.look(false), Look::Changed);
        let missing = Watched::new(dir.path().join("missing.yaml"), Duration::ZERO);
        assert_eq!((missing.digest, missing.stamp), (None, None));
    }
}
