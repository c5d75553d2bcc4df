//! Log lines to standard error, each in one `write` and without a lock.
//!
//! Every proxied request logs a line. env_logger writes its lines while holding the
//! process-wide stderr lock, so two runtime threads that finish requests at the same moment
//! wait for each other's `write` (a futex sleep and a context switch on the request path), and
//! it styles each line and then strips the styles again when stderr is not a terminal. Here
//! env_logger only decides what is logged (`RUST_LOG` works as it always did); each thread
//! formats into a buffer of its own and hands the whole line to the kernel in one `write` on a
//! duplicate of stderr's descriptor, which keeps lines whole: they share one open file
//! description, whose offset the kernel advances atomically for each write. The format is
//! env_logger's default: `[2026-11-24T21:56:18Z INFO  target] message`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsFd;

use log::{Log, Metadata, Record};

/// A line buffer that grew past this (a huge message) is given back after use.
const KEEP_BUFFER: usize = 16 * 1024;

struct LineLogger {
    filter: env_logger::Logger,
    out: File,
}

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
        Ok(out) => log::set_boxed_logger(Box::new(LineLogger { filter, out })),
        // No descriptor to spare: env_logger writes itself.
        Err(_) => log::set_boxed_logger(Box::new(filter)),
    };
    if installed.is_ok() {
        log::set_max_level(max);
    }
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Log for LineLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.filter.matches(record) {
            return;
        }
        let write = |line: &mut String| {
            line.clear();
            format_line(line, crate::clock::unix_now(), record);
            // Nowhere to report a failed write to stderr.
            let _ = (&self.out).write_all(line.as_bytes());
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

    fn flush(&self) {}
}

/// One log line, newline included, stamped `secs` after the Unix epoch.
fn format_line(line: &mut String, secs: u64, record: &Record) {
    line.push('[');
    push_rfc3339_seconds(line, secs);
    let _ = write!(line, " {:<5}", record.level());
    if !record.target().is_empty() {
        line.push(' ');
        line.push_str(record.target());
    }
    let _ = writeln!(line, "] {}", record.args());
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
        format_line(&mut line, 1_795_467_378, &record);
        line
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
}
