//! `replay-mem --rate R --window W --capacity C`: the replay cache's memory when it holds what
//! a gateway at R verified requests/s remembers (steady state: R × W live entries, fed for 2W
//! seconds of simulated time with the clock moving), and when it is full (C live entries), as
//! resident memory measured in a fresh process for each, beside what the cache counts in its
//! tables.

use peergate_signature::ReplayCache;

use crate::args::Args;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn bytes_mib(bytes: usize) -> f64 {
    bytes as f64 / 1048576.0
}

pub fn main(args: &Args) -> Result<(), String> {
    let rate: f64 = args.num("rate", 1000.0)?;
    let window: u64 = args.num("window", 90)?;
    let capacity: usize = args.num("capacity", 1_000_000)?;
    let start = 1_700_000_000u64;
    // Each measurement runs in a process of its own: memory the first cache freed would
    // otherwise be reused by the second and hide what it costs.
    match args.get("part") {
        Some("steady") => {
            let base = status_kib("VmRSS:");
            let cache = ReplayCache::new(capacity);
            let after_new = status_kib("VmRSS:");
            let per_second = rate.round() as u64;
            let mut refused = 0u64;
            let mut n = 0u64;
            for t in 0..2 * window {
                let now = start + t;
                for _ in 0..per_second {
                    n += 1;
                    if cache
                        .check_and_insert("key", &n.to_string(), now + window, now)
                        .is_err()
                    {
                        refused += 1;
                    }
                }
            }
            let steady = status_kib("VmRSS:");
            print!(
                "{} entries live ({per_second}/s x {window}s, {refused} refused): {:.1} MiB resident, {:.1} MiB of tables ({:.1} MiB right after new())",
                cache.len(),
                mib(steady.saturating_sub(base)),
                bytes_mib(cache.table_bytes()),
                mib(after_new.saturating_sub(base)),
            );
            Ok(())
        }
        Some("full") => {
            let base = status_kib("VmRSS:");
            let full = ReplayCache::new(capacity);
            let mut i = 0u64;
            while full.len() < capacity && i < 2 * capacity as u64 {
                i += 1;
                let _ = full.check_and_insert("key", &i.to_string(), u64::MAX, start);
            }
            let at_capacity = status_kib("VmRSS:");
            print!(
                "full at {} entries: {:.1} MiB resident, {:.1} MiB of tables (ceiling {:.1} MiB)",
                full.len(),
                mib(at_capacity.saturating_sub(base)),
                bytes_mib(full.table_bytes()),
                bytes_mib(full.max_table_bytes()),
            );
            Ok(())
        }
        Some(other) => Err(format!("--part {other:?}: expected steady or full")),
        None => {
            let steady = run_part("steady", rate, window, capacity)?;
            let full = run_part("full", rate, window, capacity)?;
            println!("{steady}; {full}");
            Ok(())
        }
    }
}

fn run_part(part: &str, rate: f64, window: u64, capacity: usize) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let out = std::process::Command::new(exe)
        .args(["replay-mem", "--part", part, "--rate", &rate.to_string()])
        .args([
            "--window",
            &window.to_string(),
            "--capacity",
            &capacity.to_string(),
        ])
        .output()
        .map_err(|e| format!("replay-mem --part {part}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "replay-mem --part {part} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
