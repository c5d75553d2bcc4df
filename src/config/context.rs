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
use std::sync::Arc;

use crate::identity::{IdentityError, PublicIdentity};

/// Keys a running gateway has already checked (their 32 bytes, by key id): a reload parses a key
/// it already has without checking the point again (see [`PublicIdentity::parse_reusing`]).
pub type KnownKeys = Arc<dyn Fn(&str) -> Option<[u8; 32]> + Send + Sync>;

#[derive(Default)]
struct LoadState {
    /// Directory relative paths are resolved against: the directory of the file being read.
    base_dir: PathBuf,
    /// The files read so far; the last is the one being read.
    files: Vec<String>,
    /// Which peer entry is being read ("peers[2] in peers.yaml").
    current_peer: Option<Who>,
    key_ids: HashMap<String, Option<Who>>,
    short_ids: HashMap<String, Option<Who>>,
    names: HashMap<String, Option<Who>>,
}

/// A peer entry, for messages that point at it: its index in the list of one file. Kept as
/// numbers (a big allowlist claims hundreds of thousands of keys and names) and written out
/// only for a message.
#[derive(Clone, Copy)]
struct Who {
    file: usize,
    index: usize,
}

impl LoadState {
    fn describe(&self, who: Option<Who>) -> String {
        match who {
            Some(w) => format!(
                "peers[{}] in {}",
                w.index,
                self.files.get(w.file).map_or("", String::as_str)
            ),
            None => String::new(),
        }
    }
}

thread_local! {
    static STATE: RefCell<Option<LoadState>> = const { RefCell::new(None) };
    static KNOWN: RefCell<Option<KnownKeys>> = const { RefCell::new(None) };
}

/// Makes [`parse_key`] on this thread reuse `known` keys until dropped. Kept apart from the
/// load scope: the threads that read a large peers file in parallel use it too.
pub struct ReuseKeys(Option<KnownKeys>);

impl ReuseKeys {
    pub fn install(known: Option<KnownKeys>) -> Self {
        ReuseKeys(KNOWN.with(|k| k.replace(known)))
    }
}

impl Drop for ReuseKeys {
    fn drop(&mut self) {
        let previous = self.0.take();
        KNOWN.with(|k| *k.borrow_mut() = previous);
    }
}

/// The keys [`ReuseKeys`] installed on this thread, to hand to other threads.
pub fn known_keys() -> Option<KnownKeys> {
    KNOWN.with(|k| k.borrow().clone())
}

/// Parses a peer's public key, reusing an already checked one when [`ReuseKeys`] says so.
pub fn parse_key(text: &str) -> Result<PublicIdentity, IdentityError> {
    match known_keys() {
        Some(known) => PublicIdentity::parse_reusing(text, &*known),
        None => PublicIdentity::parse(text),
    }
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
        let base = crate::files::directory_of(file).to_path_buf();
        let name = file.display().to_string();
        with_state(|s| {
            s.base_dir = base;
            s.files.push(name);
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
    with_state(|s| {
        s.current_peer = Some(Who {
            file: s.files.len().saturating_sub(1),
            index,
        })
    });
}

/// Records a peer's key; `Err` names the peer that already has it.
pub fn claim_key(key_id: &str, short_id: &str) -> Result<(), String> {
    with_state(|s| {
        if let Some(other) = s.key_ids.get(key_id) {
            let other = s.describe(*other);
            return Err(format!("this key is already used by {other}; one key belongs to one peer"));
        }
        if let Some(other) = s.short_ids.get(short_id) {
            let other = s.describe(*other);
            return Err(format!(
                "this key's short ID {short_id} is also the short ID of {other}; short IDs must be unique so people and paths can tell peers apart"
            ));
        }
        if let Some(other) = s.names.get(&short_id.to_lowercase()) {
            let other = s.describe(*other);
            return Err(format!(
                "this key's short ID {short_id} is the name of {other}; a name may not look like another peer's short ID"
            ));
        }
        let who = s.current_peer;
        s.key_ids.insert(key_id.to_string(), who);
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
            let other = s.describe(*other);
            return Err(format!("the name {name:?} is already used by {other}; names must be unique"));
        }
        if let Some(other) = s.short_ids.get(&folded) {
            let other = s.describe(*other);
            return Err(format!(
                "the name {name:?} is the short ID of {other}; a name may not look like another peer's short ID"
            ));
        }
        let who = s.current_peer;
        s.names.insert(folded, who);
        Ok(())
    })
    .unwrap_or(Ok(()))
}

/// Whether a peer read earlier in this load has this key id (for [`super::peers::fast`], which
/// checks its entries itself). `false` on a thread without a load scope.
pub fn key_claimed(key_id: &str) -> bool {
    with_state(|s| s.key_ids.contains_key(key_id)).unwrap_or(false)
}

/// Whether a key read earlier in this load has this short ID.
pub fn short_id_claimed(short_id: &str) -> bool {
    with_state(|s| s.short_ids.contains_key(short_id)).unwrap_or(false)
}

/// Whether a peer read earlier in this load has this name (`folded`: lowercase).
pub fn name_claimed(folded: &str) -> bool {
    with_state(|s| s.names.contains_key(folded)).unwrap_or(false)
}
