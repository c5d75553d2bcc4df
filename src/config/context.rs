//! State shared by the value parsers while one configuration is being read.
//!
//! serde_yaml reports the exact line and column only for errors raised while a value is being
//! visited. Some checks need more than the value itself: a relative path needs the directory of
//! the file it is written in, and "two peers with one key" needs every key seen so far, across the
//! config file and the peers file. Passing that through serde's `DeserializeSeed` would mean
//! hand-writing every map visitor, so instead the loader installs a [`LoadScope`] for the duration
//! of one load, on the loading thread, and the visitors consult it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Default)]
struct LoadState {
    /// Directory relative paths are resolved against: the directory of the file being read.
    base_dir: PathBuf,
    /// The file being read, for messages that point at an earlier peer.
    file: String,
    /// Which peer entry is being read ("peers[2] in peers.yaml").
    current_peer: String,
    key_ids: HashMap<String, String>,
    short_ids: HashMap<String, String>,
    names: HashMap<String, String>,
}

thread_local! {
    static STATE: RefCell<Option<LoadState>> = const { RefCell::new(None) };
}

/// Installs the load state on this thread until dropped.
pub struct LoadScope(());

impl LoadScope {
    pub fn begin() -> Self {
        STATE.with(|s| *s.borrow_mut() = Some(LoadState::default()));
        LoadScope(())
    }

    /// Switches to reading `file`: relative paths are now resolved against its directory.
    pub fn reading(&self, file: &Path) {
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = file.display().to_string();
        with_state(|s| {
            s.base_dir = base;
            s.file = name;
        });
    }
}

impl Drop for LoadScope {
    fn drop(&mut self) {
        STATE.with(|s| *s.borrow_mut() = None);
    }
}

fn with_state<R>(f: impl FnOnce(&mut LoadState) -> R) -> Option<R> {
    STATE.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Resolves a path written in the file being read: relative to that file's directory.
pub fn resolve_path(written: &str) -> PathBuf {
    let path = PathBuf::from(written);
    if path.is_absolute() {
        return path;
    }
    with_state(|s| s.base_dir.join(&path)).unwrap_or(path)
}

pub fn enter_peer(index: usize) {
    with_state(|s| s.current_peer = format!("peers[{index}] in {}", s.file));
}

/// Records a peer's key; `Err` names the peer that already has it.
pub fn claim_key(key_id: &str, short_id: &str) -> Result<(), String> {
    with_state(|s| {
        if let Some(other) = s.key_ids.get(key_id) {
            return Err(format!("this key is already used by {other}; one key belongs to one peer"));
        }
        if let Some(other) = s.short_ids.get(short_id) {
            return Err(format!(
                "this key's short ID {short_id} is also the short ID of {other}; short IDs must be unique so people and paths can tell peers apart"
            ));
        }
        if let Some(other) = s.names.get(&short_id.to_lowercase()) {
            return Err(format!(
                "this key's short ID {short_id} is the name of {other}; a name may not look like another peer's short ID"
            ));
        }
        let who = s.current_peer.clone();
        s.key_ids.insert(key_id.to_string(), who.clone());
        s.short_ids.insert(short_id.to_string(), who);
        Ok(())
    })
    .unwrap_or(Ok(()))
}

/// Records a peer's name; names are compared case-insensitively because apps address peers by
/// name in URLs (`/peers/<name>/…`).
pub fn claim_name(name: &str) -> Result<(), String> {
    let folded = name.to_lowercase();
    with_state(|s| {
        if let Some(other) = s.names.get(&folded) {
            return Err(format!("the name {name:?} is already used by {other}; names must be unique"));
        }
        if let Some(other) = s.short_ids.get(&folded) {
            return Err(format!(
                "the name {name:?} is the short ID of {other}; a name may not look like another peer's short ID"
            ));
        }
        let who = s.current_peer.clone();
        s.names.insert(folded, who);
        Ok(())
    })
    .unwrap_or(Ok(()))
}
