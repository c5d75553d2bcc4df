//! Opening the files a configuration names, which may not be what they seem.
//!
//! A path can name a device, a FIFO or a directory. `/dev/zero` given as the key file filled
//! memory until the process was killed, and a peers file replaced by a link to it kept the
//! reloader hashing forever. So every file peergate reads whole must be a regular file, checked
//! on the open file (a swap after the check changes nothing), and is read up to a limit.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

/// The most a configuration or peers file may hold: far above a million peers (~150 MB).
pub const MAX_CONFIG_FILE: u64 = 1 << 30;

/// The most a key or certificate file may hold.
pub const MAX_KEY_FILE: u64 = 1 << 20;

/// The directory `file` is in, `.` for a bare file name: where relative paths written in it
/// are resolved, and where a file replacing it is written before the rename.
pub fn directory_of(file: &Path) -> &Path {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Opens `path` for reading if it is a regular file (after following symlinks).
pub fn open_regular(path: &Path) -> io::Result<File> {
    // Without blocking: opening a FIFO for reading waits for a writer, and `peergate check` or
    // `id` given one hung. A regular file reads the same either way.
    #[cfg(unix)]
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(who_cannot_read)?
    };
    #[cfg(not(unix))]
    let file = File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a directory, device or pipe)",
        ));
    }
    Ok(file)
}

/// A file the service user may not read is the usual slip of a first systemd install (the key
/// made as root, then the service started as its own user): the error says who peergate runs
/// as, which the system's "Permission denied" does not.
fn who_cannot_read(e: io::Error) -> io::Error {
    if e.kind() != io::ErrorKind::PermissionDenied {
        return e;
    }
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{e}; peergate runs as {}, which needs read access to the file and search (x) \
             access to every directory above it (chown or chmod them)",
            running_as()
        ),
    )
}

/// "user NAME (uid N)", or "uid N" when the user has no name.
#[cfg(unix)]
pub fn running_as() -> String {
    // SAFETY: geteuid cannot fail; getpwuid_r writes only into the buffers given, and `pwd.pw_name`
    // is read only when it reported an entry, while `buf` (which it points into) is alive.
    let uid = unsafe { libc::geteuid() };
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    let name = (rc == 0 && !found.is_null() && !pwd.pw_name.is_null())
        .then(|| unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) })
        .map(|n| n.to_string_lossy().into_owned());
    match name {
        Some(name) => format!("user {name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

#[cfg(not(unix))]
pub fn running_as() -> String {
    "this user".to_string()
}

/// Reads the regular file at `path` whole, as UTF-8, refusing one larger than `limit` bytes.
/// Text that is not UTF-8 is an [`io::ErrorKind::InvalidData`] error, as with
/// [`std::fs::read_to_string`]. A leading byte order mark (some Windows editors write one) is
/// dropped: YAML readers took it for content and gave misleading errors ("missing field", "more
/// than one document"), and PEM readers found no block.
pub fn read_to_string(path: &Path, limit: u64) -> io::Result<String> {
    let mut text = String::from_utf8(read(path, limit)?)
        // The same error as std::fs::read_to_string gives.
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Reads the regular file at `path` whole, refusing one larger than `limit` bytes.
pub fn read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let read = read_unrecorded(path, limit);
    if recording() {
        let digest = match &read {
            Ok(bytes) => Ok(Sha256::digest(bytes).into()),
            Err(e) => Err(e.kind()),
        };
        record(path, digest);
    }
    read
}

/// Notes a read of `path` that found `digest` (see [`Recording`]).
fn record(path: &Path, digest: Result<FileDigest, io::ErrorKind>) {
    match digest {
        Ok(digest) => note(path, Some(digest)),
        // Readable, only too large: not what "could not be read" means to the reloader, whose
        // look hashes it whole. Recorded so, it would differ from every look, and a refused
        // certificate of 2 MiB would be reloaded (and refused) at every poll.
        Err(io::ErrorKind::FileTooLarge) => {}
        Err(_) => note(path, None),
    }
}

fn read_unrecorded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

/// The SHA-256 of everything `reader` gives, read 64 KiB at a time: a peers file of a large
/// allowlist is megabytes, which need not be in memory to be compared.
pub fn digest_of(mut reader: impl Read) -> io::Result<FileDigest> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(buffer.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The SHA-256 of the regular file at `path`, without holding it whole; recorded as a read
/// while a [`Recording`] is open, as [`read`] records one.
pub fn digest(path: &Path, limit: u64) -> io::Result<FileDigest> {
    let digest = (|| {
        let file = open_regular(path)?;
        if file.metadata()?.len() > limit {
            return Err(too_large(limit));
        }
        digest_of(file.take(limit))
    })();
    record(path, digest.as_ref().copied().map_err(io::Error::kind));
    digest
}

/// The digest of the last read of `path` recorded on this thread (while a [`Recording`] is
/// open); `None` when that read failed or there was none.
pub fn last_recorded(path: &Path) -> Option<FileDigest> {
    RECORDED.with(|r| {
        r.borrow()
            .reads
            .iter()
            .rev()
            .find(|(read, _)| read == path)
            .and_then(|(_, digest)| *digest)
    })
}

/// Records `path` as named by a configuration but not readable (missing, say), while a
/// [`Recording`] is open: the reloader then watches for it to appear.
pub fn tried(path: &Path) {
    note(path, None);
}

/// The SHA-256 of a file's bytes.
pub type FileDigest = [u8; 32];

/// A file as a load read it: its digest, or `None` when it could not be read.
pub type FileRead = (PathBuf, Option<FileDigest>);

/// The reads recorded on this thread, and how many [`Recording`]s are open.
#[derive(Default)]
struct Recorded {
    reads: Vec<FileRead>,
    open: usize,
}

thread_local! {
    static RECORDED: RefCell<Recorded> = RefCell::new(Recorded::default());
}

/// While it lives, every file read whole on this thread ([`read`], or a reader wrapped in
/// [`Hashing`]) is recorded with the digest of what was read, and every file a configuration
/// names that could not be read ([`tried`]). A gateway's reloader compares the files with what
/// the configuration in force was read from, and watches what a reload tried to read: without
/// it, a file changed between a load's read and the reloader's next look counted as never
/// changed, and one named only by an edit that did not load was never watched.
///
/// Recordings nest: an inner one sees the reads made while it lived, the outer one all.
pub struct Recording {
    from: usize,
    /// Not `Send`: the count it keeps is this thread's, and a recording ended on another
    /// thread would leave this one recording (and its reads growing) for good.
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl Recording {
    pub fn begin() -> Recording {
        RECORDED.with(|r| {
            let mut r = r.borrow_mut();
            r.open += 1;
            Recording {
                from: r.reads.len(),
                _this_thread: std::marker::PhantomData,
            }
        })
    }

    /// What was read, by path as given, in order (a file read twice is there twice: the last
    /// read is what was used).
    pub fn finish(self) -> Vec<FileRead> {
        RECORDED.with(|r| {
            r.borrow()
                .reads
                .get(self.from..)
                .unwrap_or_default()
                .to_vec()
        })
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        RECORDED.with(|r| {
            let mut r = r.borrow_mut();
            r.open = r.open.saturating_sub(1);
            if r.open == 0 {
                r.reads = Vec::new();
            }
        });
    }
}

fn recording() -> bool {
    RECORDED.with(|r| r.borrow().open > 0)
}

fn note(path: &Path, digest: Option<FileDigest>) {
    RECORDED.with(|r| {
        let mut r = r.borrow_mut();
        if r.open > 0 {
            r.reads.push((path.to_path_buf(), digest));
        }
    });
}

/// A reader that hashes what passes through it when a [`Recording`] is open on the thread
/// that makes it (it may be read on another). [`HashedAtEnd::record`] notes the file once it was
/// read to its end.
pub struct Hashing<R> {
    inner: R,
    hasher: Option<Sha256>,
    done: Arc<OnceLock<FileDigest>>,
}

/// Where a [`Hashing`] reader leaves the digest once it reaches the end.
#[derive(Clone)]
pub struct HashedAtEnd(Arc<OnceLock<FileDigest>>);

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> (Hashing<R>, HashedAtEnd) {
        let done = Arc::new(OnceLock::new());
        let hasher = recording().then(Sha256::new);
        let reader = Hashing {
            inner,
            hasher,
            done: done.clone(),
        };
        (reader, HashedAtEnd(done))
    }
}

impl HashedAtEnd {
    /// Records `path` as read, if the reader got to its end.
    pub fn record(&self, path: &Path) {
        if let Some(digest) = self.0.get() {
            note(path, Some(*digest));
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if buf.is_empty() {
            // Zero bytes asked for, not the end of the file.
            return Ok(0);
        }
        if let Some(hasher) = self.hasher.as_mut() {
            match buf.get(..n) {
                Some(read) if n > 0 => hasher.update(read),
                _ => {
                    if let Some(hasher) = self.hasher.take() {
                        let _ = self.done.set(hasher.finalize().into());
                    }
                }
            }
        }
        Ok(n)
    }
}

/// The error for a file past `limit` bytes.
pub fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("larger than {} MiB", limit >> 20),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run as root, the tests cannot meet a real "Permission denied": the error is made here.
    #[test]
    fn a_file_peergate_may_not_read_says_who_peergate_runs_as() {
        let denied = who_cannot_read(io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied);
        let text = denied.to_string();
        let uid = unsafe { libc::geteuid() };
        assert!(
            text.starts_with("Permission denied (os error 13); "),
            "{text}"
        );
        assert!(text.contains("peergate runs as "), "{text}");
        assert!(text.contains(&format!("uid {uid}")), "{text}");
        if uid == 0 {
            assert!(text.contains("user root (uid 0)"), "{text}");
        }
        assert!(text.contains("chown or chmod"), "{text}");
        // Any other failure is left as the system said it.
        let missing = who_cannot_read(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            missing.to_string(),
            "No such file or directory (os error 2)"
        );
    }

    #[test]
    fn regular_files_are_read_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(read_to_string(&path, 3).unwrap(), "abc");
        std::fs::write(&path, "\u{feff}peers: []\n").unwrap();
        assert_eq!(read_to_string(&path, 100).unwrap(), "peers: []\n");
        let err = read_to_string(&path, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_to_string(&path, 10).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn devices_and_directories_are_refused_without_reading() {
        for path in ["/dev/zero", "/dev/null"] {
            let err = read_to_string(Path::new(path), MAX_KEY_FILE).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{path}");
            assert!(err.to_string().contains("not a regular file"), "{path}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(read_to_string(dir.path(), 10).is_err());
    }

    /// A FIFO is refused at once: opening one to read used to wait for a writer, forever.
    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("key.pem");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the file.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read(&fifo, MAX_KEY_FILE).map_err(|e| e.kind()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading a FIFO returned within 5 s");
        assert_eq!(got, Err(io::ErrorKind::InvalidInput));
    }
}
