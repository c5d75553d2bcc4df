//! Log lines to standard error, whole, in order, and off the request path.
//!
//! Every proxied request logs a line. env_logger writes its lines while holding the
//! process-wide stderr lock, so two runtime threads that finish requests at the same moment
//! wait for each other's `write`, and it styles each line and then strips the styles again when
//! stderr is not a terminal. Here env_logger only decides what is logged (`RUST_LOG` works as it
//! always did); each thread formats the line in a buffer of its own (env_logger's default
//! format: `[2026-11-24T21:56:18Z INFO  target] message`) and queues it.
//!
//! A `write` per line cost each request 2–4 µs, nearly all of it in the kernel, and a slow
//! sink (a pipe whose reader lags, a disk busy committing its journal) stalled the runtime
//! thread, and every request on it, for as long as the `write` took. So lines are written by a
//! thread of their own: it wakes on the first line queued after a quiet spell, waits
//! [`GATHER`] for more, and writes all of them in one `write`. Nothing is lost and nothing
//! reordered:
//!
//! * `warn` and `error` lines are written by the thread that logs them, before `log` returns,
//!   together with every line queued before them: what explains a failure is on disk when the
//!   failure is reported.
//! * Past [`MAX_PENDING`] bytes queued (a sink that does not keep up), the logging thread
//!   writes the batch itself, so a stuck sink slows requests as an unbatched `write` would
//!   rather than growing memory without bound.
//! * At exit (`main` returning, `std::process::exit`) and on a panic, what is queued is written
//!   first. Only a process killed outright (`SIGKILL`) can lose lines: the last [`GATHER`] of
//!   them at most.
//!
//! Batches go out under one lock in the order their lines were queued, on a duplicate of
//! stderr's descriptor; a line is never split across writes.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use log::{Level, Log, Metadata, Record};

use crate::throttle::Throttle;

/// A line buffer that grew past this (a huge message) is given back after use.
const KEEP_BUFFER: usize = 16 * 1024;

/// How long the writer thread waits, after the first line of a batch, for more lines before
/// writing. At 13 000 lines/s that is ~26 lines per `write`; a line reaches the sink at most
/// this much (plus the `write`) later than it would unbatched.
const GATHER: Duration = Duration::from_millis(2);

/// Queued bytes past which the logging thread writes the batch itself.
const MAX_PENDING: usize = 1 << 20;

/// How long the exit and panic flushes wait for the batch being written before writing what is
/// still queued beside it (the writer thread may be stuck in a `write` that never returns).
const FLUSH_PATIENCE: Duration = Duration::from_millis(200);

struct LineLogger {
    filter: env_logger::Logger,
    sink: Arc<Sink>,
}

/// The sink behind the installed logger, for the exit and panic flushes.
static SINK: OnceLock<Arc<Sink>> = OnceLock::new();

/// Installs the logger: `RUST_LOG` if set, `default_filter` otherwise.
pub fn init(default_filter: &str) {
    let filter =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
            .build();
    let max = filter.filter();
    let out = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from);
    let installed = match out {
        Ok(out) => {
            let sink = Sink::start(out);
            let logger = LineLogger {
                filter,
                sink: Arc::clone(&sink),
            };
            let installed = log::set_boxed_logger(Box::new(logger));
            if installed.is_ok() && SINK.set(sink).is_ok() {
                flush_at_exit_and_on_panic();
            }
            installed
        }
        // No descriptor to spare: env_logger writes itself.
        Err(_) => log::set_boxed_logger(Box::new(filter)),
    };
    if installed.is_ok() {
        log::set_max_level(max);
    }
}

/// Writes every queued line now: at exit and on a panic.
fn flush() {
    if let Some(sink) = SINK.get() {
        sink.flush_within(FLUSH_PATIENCE);
    }
}

extern "C" fn flush_at_exit() {
    flush();
}

fn flush_at_exit_and_on_panic() {
    // SAFETY: `atexit` only records the function; `flush_at_exit` is a plain `extern "C"` fn
    // that does not unwind (`flush` has no panicking path) and stays valid for the process.
    if unsafe { libc::atexit(flush_at_exit) } != 0 {
        log::warn!("cannot register the log flush at exit; the last lines may be lost then");
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Log for LineLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.filter.matches(record) || self.housekeeping_hidden(record) {
            return;
        }
        let left_out = match throttle_for(record) {
            Some(throttle) => match throttle.admit_now() {
                Some(n) => n,
                None => return,
            },
            None => 0,
        };
        let urgent = record.level() <= Level::Warn;
        let write = |line: &mut String| {
            line.clear();
            format_line(line, crate::clock::unix_now(), record, left_out);
            self.sink.queue(line.as_bytes(), urgent);
            if line.capacity() > KEEP_BUFFER {
                *line = String::new();
            }
        };
        // A message whose formatting logs (or a thread being torn down) gets a fresh buffer.
        let done = LINE
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut line) => {
                    write(&mut line);
                    true
                }
                Err(_) => false,
            })
            .unwrap_or(false);
        if !done {
            write(&mut String::new());
        }
    }

    fn flush(&self) {
        self.sink.flush_within(FLUSH_PATIENCE);
    }
}

impl LineLogger {
    /// The file watcher's notes on its own bookkeeping (a watch already gone when it removes
    /// it: every Kubernetes `..data` swap deletes a watched directory) are written only where
    /// `RUST_LOG` asks for its debug lines: the reloader logs what a change did.
    fn housekeeping_hidden(&self, record: &Record) -> bool {
        let target = record.target();
        let watcher = target == "notify" || target.starts_with("notify::");
        watcher
            && matches!(record.level(), Level::Warn | Level::Info)
            && !self.filter.enabled(
                &Metadata::builder()
                    .level(Level::Debug)
                    .target(target)
                    .build(),
            )
    }
}

/// Pingora's warnings and errors about clients (it tags them `Downstream`: a TLS handshake that
/// failed, a client that closed while sending its head) come from whoever connects: a port
/// scanner, or a load balancer's TCP health check, makes one each time. So at most one such
/// line a second is written for each Pingora module, with the number left out since the one
/// before. Its other lines (an `accept` that failed for want of descriptors, a runtime that
/// did not stop) are written as they come.
fn throttle_for(record: &Record) -> Option<&'static Throttle> {
    /// Pingora modules that have logged so far; more than [`MOST`] share the last throttle.
    const MOST: usize = 32;
    static SEEN: Mutex<Vec<(String, &'static Throttle)>> = Mutex::new(Vec::new());
    static OTHERS: Throttle = Throttle::new();

    let target = record.target();
    let pingora = target == "pingora" || target.starts_with("pingora_");
    if !pingora || record.level() > Level::Warn || !about_clients(record) {
        return None;
    }
    let mut seen = lock(&SEEN);
    if let Some((_, throttle)) = seen.iter().find(|(t, _)| t == target) {
        return Some(throttle);
    }
    if seen.len() >= MOST {
        return Some(&OTHERS);
    }
    // Leaked on purpose: one small counter per Pingora module, for the life of the process.
    let throttle: &'static Throttle = Box::leak(Box::new(Throttle::new()));
    seen.push((target.to_owned(), throttle));
    Some(throttle)
}

/// Whether a Pingora line is about a client: Pingora names the side an error came from, and
/// `Downstream` is the client's (`downstream` in some lines). Its HTTP/2 handshake error, one
/// per TLS connection that offered `h2` and then sent no HTTP/2 (any scanner), names no side.
fn about_clients(record: &Record) -> bool {
    let about = |text: &str| {
        ["Downstream", "downstream", "H2 handshake error"]
            .iter()
            .any(|mark| text.contains(mark))
    };
    match record.args().as_str() {
        Some(text) => about(text),
        // Formatted only for Pingora's warnings and errors, which are rare but for floods.
        None => about(&record.args().to_string()),
    }
}

/// Lines queued for the writer thread.
struct Pending {
    bytes: Vec<u8>,
    /// The writer thread sleeps on [`Sink::wake`] and must be woken for the next line.
    writer_asleep: bool,
}

/// Queued lines and the one descriptor they are written to.
struct Sink {
    out: File,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Held while a batch is written, so batches reach `out` in the order they were queued;
    /// holds the spare buffer swapped in for the batch taken.
    writing: Mutex<Vec<u8>>,
    /// Whether a writer thread runs; without one every line is written at once.
    batched: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sink {
    /// A sink writing to `out`, with its writer thread (or, if no thread can be started,
    /// writing each line as it comes).
    fn start(out: File) -> Arc<Sink> {
        let sink = Arc::new(Sink {
            out,
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                writer_asleep: false,
            }),
            wake: Condvar::new(),
            writing: Mutex::new(Vec::new()),
            batched: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&sink);
        let spawned = std::thread::Builder::new()
            .name("peergate-log".into())
            .spawn(move || for_thread.write_batches());
        sink.batched.store(spawned.is_ok(), Ordering::Relaxed);
        sink
    }

    /// Queues one whole line; `urgent` (or a full queue, or no writer thread) writes it, and
    /// everything queued before it, before returning.
    fn queue(&self, line: &[u8], urgent: bool) {
        if urgent || !self.batched.load(Ordering::Relaxed) {
            self.write_queued(&mut lock(&self.writing), line);
            return;
        }
        let mut pending = lock(&self.pending);
        if pending.bytes.len().saturating_add(line.len()) > MAX_PENDING {
            drop(pending);
            self.write_queued(&mut lock(&self.writing), line);
            return;
        }
        pending.bytes.extend_from_slice(line);
        let wake = std::mem::take(&mut pending.writer_asleep);
        drop(pending);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Writes what is queued, then `extra`, in one `write`. The caller holds `writing`.
    fn write_queued(&self, spare: &mut Vec<u8>, extra: &[u8]) {
        std::mem::swap(&mut lock(&self.pending).bytes, spare);
        spare.extend_from_slice(extra);
        if !spare.is_empty() {
            // Nowhere to report a failed write to stderr.
            let _ = (&self.out).write_all(spare);
        }
        spare.clear();
        if spare.capacity() > MAX_PENDING {
            *spare = Vec::new();
        }
    }

    /// The writer thread: sleeps until a line is queued, gathers for [`GATHER`], writes.
    fn write_batches(&self) {
        loop {
            let mut pending = lock(&self.pending);
            while pending.bytes.is_empty() {
                pending.writer_asleep = true;
                pending = self
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            pending.writer_asleep = false;
            drop(pending);
            // While lines keep coming, gather on the timer: a writer that slept on the
            // condvar after every batch would be woken for the next line by a futex call on a
            // request's thread. Only a quiet spell of one GATHER sends it back to sleep.
            loop {
                std::thread::sleep(GATHER);
                if lock(&self.pending).bytes.is_empty() {
                    break;
                }
                self.write_queued(&mut lock(&self.writing), &[]);
            }
        }
    }

    /// Writes what is queued, waiting at most `patience` for a batch being written; after that
    /// it writes without waiting (the order of the two batches is then not guaranteed).
    fn flush_within(&self, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            match self.writing.try_lock() {
                Ok(mut spare) => return self.write_queued(&mut spare, &[]),
                Err(TryLockError::Poisoned(p)) => {
                    return self.write_queued(&mut p.into_inner(), &[]);
                }
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::WouldBlock) => {
                    return self.write_queued(&mut Vec::new(), &[]);
                }
            }
        }
    }
}

/// One log line, newline included, stamped `secs` after the Unix epoch; `left_out` lines like
/// it were not written since the last one (see [`throttle_for`]).
fn format_line(line: &mut String, secs: u64, record: &Record, left_out: u64) {
    line.push('[');
    push_rfc3339_seconds(line, secs);
    let _ = write!(line, " {:<5}", record.level());
    if !record.target().is_empty() {
        line.push(' ');
        line.push_str(record.target());
    }
    let _ = write!(line, "] {}", record.args());
    if left_out > 0 {
        let _ = write!(
            line,
            " ({left_out} more lines from {} left out since the last one)",
            record.target()
        );
    }
    line.push('\n');
}

/// `secs` after the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC), as env_logger writes it.
fn push_rfc3339_seconds(line: &mut String, secs: u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        line,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(secs: u64) -> String {
        let mut s = String::new();
        push_rfc3339_seconds(&mut s, secs);
        s
    }

    #[test]
    fn timestamps_are_utc_rfc3339_seconds() {
        // Checked against `date -u -d @SECS +%FT%TZ`.
        assert_eq!(stamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(stamp(951_782_399), "2000-02-28T23:59:59Z");
        assert_eq!(stamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(stamp(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(stamp(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(stamp(1_795_467_378), "2026-11-23T20:56:18Z");
        assert_eq!(stamp(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(stamp(4_294_967_296), "2106-02-07T06:28:16Z");
    }

    fn line(level: log::Level, target: &str, message: std::fmt::Arguments) -> String {
        let mut line = String::new();
        let record = Record::builder()
            .args(message)
            .level(level)
            .target(target)
            .build();
        format_line(&mut line, 1_795_467_378, &record, 0);
        line
    }

    #[test]
    fn a_throttled_line_says_how_many_were_left_out() {
        let mut line = String::new();
        let record = Record::builder()
            .args(format_args!("Downstream handshake error"))
            .level(log::Level::Error)
            .target("pingora_core::services::listening")
            .build();
        format_line(&mut line, 1_795_467_378, &record, 41);
        assert_eq!(
            line,
            "[2026-11-23T20:56:18Z ERROR pingora_core::services::listening] Downstream handshake \
             error (41 more lines from pingora_core::services::listening left out since the last \
             one)\n"
        );
    }

    fn record_of(level: log::Level, target: &'static str) -> Record<'static> {
        Record::builder()
            .args(format_args!("x"))
            .level(level)
            .target(target)
            .build()
    }

    #[test]
    fn pingoras_lines_about_clients_are_throttled_per_module() {
        let about_clients = |level, target| {
            Record::builder()
                .args(format_args!("Downstream handshake error from 127.0.0.1:1"))
                .level(level)
                .target(target)
                .build()
        };
        let listening = about_clients(log::Level::Error, "pingora_core::services::listening");
        let proxy = about_clients(log::Level::Error, "pingora_proxy");
        let a = throttle_for(&listening).unwrap();
        assert!(std::ptr::eq(a, throttle_for(&listening).unwrap()));
        assert!(!std::ptr::eq(a, throttle_for(&proxy).unwrap()));
        assert!(throttle_for(&about_clients(log::Level::Warn, "pingora_proxy")).is_some());
        let client = "client";
        let formatted = format_args!("Fail to proxy: Downstream ConnectionClosed ({client})");
        assert!(throttle_for(
            &Record::builder()
                .args(formatted)
                .level(log::Level::Error)
                .target("pingora_proxy")
                .build()
        )
        .is_some());
        let h2 = Record::builder()
            .args(format_args!("H2 handshake error  HandshakeError context: while h2 handshaking with client cause: connection error detected: unspecific protocol error detected"))
            .level(log::Level::Error)
            .target("pingora_core::apps")
            .build();
        assert!(throttle_for(&h2).is_some());
        let malformed = Record::builder()
            .args(format_args!(
                "tearing down downstream h2 connection after 10 malformed requests"
            ))
            .level(log::Level::Warn)
            .target("pingora_core::protocols::http::v2::server")
            .build();
        assert!(throttle_for(&malformed).is_some());
        // Pingora's other lines (`Accept() failed`, a runtime that did not stop), its info
        // lines, and everyone else's warnings are not throttled.
        let accept = Record::builder()
            .args(format_args!("Accept() failed Too many open files"))
            .level(log::Level::Error)
            .target("pingora_core::services::listening")
            .build();
        assert!(throttle_for(&accept).is_none());
        assert!(throttle_for(&about_clients(log::Level::Info, "pingora_proxy")).is_none());
        assert!(throttle_for(&about_clients(log::Level::Warn, "peergate::reload")).is_none());
        assert!(throttle_for(&about_clients(log::Level::Error, "pingoraish")).is_none());
        assert!(throttle_for(&record_of(log::Level::Error, "pingora_proxy")).is_none());
    }

    fn logger(filter: &str) -> LineLogger {
        LineLogger {
            filter: env_logger::Builder::new().parse_filters(filter).build(),
            sink: Sink::start(tempfile::tempfile().unwrap()),
        }
    }

    #[test]
    fn the_watchers_housekeeping_shows_only_at_its_debug_level() {
        let warn = record_of(log::Level::Warn, "notify::inotify");
        let info = record_of(log::Level::Info, "notify::inotify");
        let error = record_of(log::Level::Error, "notify::inotify");
        let ours = record_of(log::Level::Warn, "peergate::reload");
        let default = logger("info");
        assert!(default.housekeeping_hidden(&warn));
        assert!(default.housekeeping_hidden(&info));
        assert!(!default.housekeeping_hidden(&error));
        assert!(!default.housekeeping_hidden(&ours));
        let asked = logger("info,notify=debug");
        assert!(!asked.housekeeping_hidden(&warn));
        assert!(!asked.housekeeping_hidden(&info));
    }

    #[test]
    fn a_line_is_env_loggers_default_format() {
        assert_eq!(
            line(
                log::Level::Info,
                "peergate::record",
                format_args!("inbound GET \"/\" peer=- status=200")
            ),
            "[2026-11-23T20:56:18Z INFO  peergate::record] inbound GET \"/\" peer=- status=200\n"
        );
        assert_eq!(
            line(log::Level::Warn, "", format_args!("x")),
            "[2026-11-23T20:56:18Z WARN ] x\n"
        );
    }

    /// A sink over a fresh file, and the file's path.
    fn sink() -> (Arc<Sink>, tempfile::TempPath) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let (file, path) = file.into_parts();
        (Sink::start(file), path)
    }

    fn contents(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_each_threads_order() {
        let (sink, path) = sink();
        std::thread::scope(|s| {
            for t in 0..4 {
                let sink = &sink;
                s.spawn(move || {
                    for i in 0..500 {
                        sink.queue(
                            format!("thread {t} line {i:03} {}\n", "x".repeat(i % 50)).as_bytes(),
                            false,
                        );
                    }
                });
            }
        });
        // No flush: the writer thread writes the batches on its own.
        let deadline = Instant::now() + Duration::from_secs(10);
        while contents(&path).lines().count() < 2000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = contents(&path);
        let mut next = [0usize; 4];
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let (t, i): (usize, usize) = (words[1].parse().unwrap(), words[3].parse().unwrap());
            assert_eq!(i, next[t], "thread {t} out of order: {line}");
            assert_eq!(words[4], "x".repeat(i % 50), "a line was cut: {line}");
            next[t] += 1;
        }
        assert_eq!(next, [500; 4], "every line arrives");
    }

    #[test]
    fn a_sink_that_stops_reading_does_not_block_the_logging_thread() {
        use std::io::Read as _;
        let (mut reader, writer) = std::io::pipe().unwrap();
        let sink = Sink::start(File::from(std::os::fd::OwnedFd::from(writer)));
        // 256 KiB of lines, four times what a pipe buffers, while nobody reads: the writer
        // thread blocks in `write`, the logging thread goes on.
        let line = format!("{}\n", "z".repeat(255));
        let (done, finished) = std::sync::mpsc::channel();
        let logging = Arc::clone(&sink);
        std::thread::spawn(move || {
            for _ in 0..1024 {
                logging.queue(line.as_bytes(), false);
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("queueing returned while the sink was not read");
        // Reading again lets every line through, whole.
        let (got, reading) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = vec![0u8; 1024 * 256];
            let _ = got.send(reader.read_exact(&mut text).map(|()| text));
        });
        let text = reading
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert!(text
            .chunks(256)
            .all(|l| l[..255].iter().all(|&b| b == b'z') && l[255] == b'\n'));
    }

    #[test]
    fn a_warning_is_written_with_everything_before_it_before_log_returns() {
        let (sink, path) = sink();
        sink.queue(b"one\n", false);
        sink.queue(b"two\n", false);
        sink.queue(b"three (warn)\n", true);
        assert_eq!(contents(&path), "one\ntwo\nthree (warn)\n");
        sink.queue(b"four\n", false);
        sink.flush_within(FLUSH_PATIENCE);
        assert_eq!(contents(&path), "one\ntwo\nthree (warn)\nfour\n");
    }

    #[test]
    fn a_queue_past_its_bound_is_written_by_the_logging_thread() {
        let (sink, path) = sink();
        sink.queue(b"first\n", false);
        let mut big = vec![b'y'; MAX_PENDING];
        big.push(b'\n');
        sink.queue(&big, false);
        let text = contents(&path);
        assert_eq!(
            text.len(),
            6 + MAX_PENDING + 1,
            "written before queue returned"
        );
        assert!(text.starts_with("first\nyyy"));
    }

    #[test]
    fn log_records_reach_the_sink_through_the_filter() {
        let (sink, path) = sink();
        let logger = LineLogger {
            filter: env_logger::Builder::new().parse_filters("info").build(),
            sink,
        };
        let log = |level, message: &str| {
            logger.log(
                &Record::builder()
                    .args(format_args!("{message}"))
                    .level(level)
                    .target("t")
                    .build(),
            );
        };
        log(Level::Debug, "filtered out");
        log(Level::Info, "kept");
        log(Level::Error, "failed");
        let text = contents(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with(" INFO  t] kept"), "{text}");
        assert!(lines[1].ends_with(" ERROR t] failed"), "{text}");
    }
}
