//! `pgbench callgrind --file F --requests N`: a callgrind profile of one proxy process, as
//! instructions per request in a few groups, so that peergate and nginx can be compared by a
//! count that a busy machine does not disturb (`callgrind.sh`).
//!
//! Each function's own instructions (not what it calls) are put in a group by the object, the
//! function's source file or the file of the code inlined into it, the first group that any of
//! them belongs to in this order:
//!
//! - `sig`: Ed25519 and the hashes it needs (AWS-LC's at alice, dalek's and `sha2` at bob);
//! - `tls`: record encryption and the TLS state machine (ring, rustls; OpenSSL's libssl and
//!   libcrypto for nginx);
//! - `copy`: libc's `memcpy`/`memmove`/`memset`. Valgrind counts each byte that `rep movsb`
//!   moves as an instruction, so this group overstates what copies cost on the CPU;
//! - `alloc`: the allocator (mimalloc; glibc's malloc for nginx);
//! - `rest`: everything else: HTTP parsing and writing, the async runtime, the proxy's own
//!   logic, logging, the kernel interface in libc.

use std::collections::HashMap;

use crate::args::Args;

const GROUPS: [&str; 5] = ["sig", "tls", "copy", "alloc", "rest"];

pub fn main(args: &Args) -> Result<(), String> {
    let file = args.req("file")?;
    let requests: f64 = args.num("requests", 0.0)?;
    if requests <= 0.0 {
        return Err("--requests must be a positive number".into());
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let costs = self_costs(&text).map_err(|e| format!("{file}: {e}"))?;
    let mut groups = [0u64; GROUPS.len()];
    for ((object, source, inlined, function), cost) in &costs {
        // Crypto inlined into a caller's function is still crypto; std's arithmetic inlined
        // into dalek's is dalek's: either file decides.
        let g = group(object, source, function).min(group(object, inlined, function));
        groups[g] += cost;
    }
    let total: u64 = groups.iter().sum();
    let per = |n: u64| (n as f64 / requests).round() as u64;
    let mut line = format!("total={}", per(total));
    for (name, n) in GROUPS.iter().zip(groups) {
        line.push_str(&format!(" {name}={}", per(n)));
    }
    println!("{line}");
    Ok(())
}

/// Object, the function's source file, the file of the inlined code the cost is in (the same
/// when none), function.
type Key = (String, String, String, String);

/// Each (object, source file, function)'s own cost, from callgrind's format: cost lines
/// belong to the current `fn=`, except the one after `calls=`, which is the call's inclusive
/// cost. Names are compressed: `(n) name` defines `n`, a later `(n)` refers to it.
fn self_costs(text: &str) -> Result<HashMap<Key, u64>, String> {
    let mut names: HashMap<(&str, String), String> = HashMap::new();
    let mut resolve = |kind: &'static str, value: &str| -> String {
        let value = value.trim();
        let Some(rest) = value.strip_prefix('(') else {
            return value.to_string();
        };
        let Some((id, name)) = rest.split_once(')') else {
            return value.to_string();
        };
        let name = name.trim();
        if name.is_empty() {
            names
                .get(&(kind, id.to_string()))
                .cloned()
                .unwrap_or_default()
        } else {
            names.insert((kind, id.to_string()), name.to_string());
            name.to_string()
        }
    };
    let (mut object, mut source, mut function) = (String::new(), String::new(), String::new());
    let mut inlined = String::new();
    let mut after_call = false;
    let mut costs: HashMap<Key, u64> = HashMap::new();
    let mut events_seen = false;
    for line in text.lines() {
        if let Some((field, value)) = line.split_once('=') {
            match field {
                "ob" => object = resolve("ob", value),
                "fl" => {
                    source = resolve("fl", value);
                    inlined = source.clone();
                }
                // Code inlined from another file (a crate's, std's): still the current
                // function's cost.
                "fi" | "fe" => inlined = resolve("fl", value),
                "fn" => function = resolve("fn", value),
                "cob" => {
                    resolve("ob", value);
                }
                "cfi" | "cfl" => {
                    resolve("fl", value);
                }
                "cfn" => {
                    resolve("fn", value);
                }
                "calls" => after_call = true,
                _ => {}
            }
            continue;
        }
        if let Some(events) = line.strip_prefix("events:") {
            if events.trim() != "Ir" {
                return Err(format!("expected only the Ir event, found {events:?}"));
            }
            events_seen = true;
            continue;
        }
        let starts_cost = line
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'+' || b == b'-' || b == b'*');
        if !starts_cost {
            continue;
        }
        let Some(cost) = line.split_whitespace().nth(1) else {
            continue;
        };
        let cost: u64 = cost
            .parse()
            .map_err(|_| format!("unreadable cost line {line:?}"))?;
        if after_call {
            after_call = false;
            continue;
        }
        *costs
            .entry((
                object.clone(),
                source.clone(),
                inlined.clone(),
                function.clone(),
            ))
            .or_default() += cost;
    }
    if !events_seen {
        return Err("not a callgrind profile (no `events:` line)".into());
    }
    Ok(costs)
}

fn group(object: &str, source: &str, function: &str) -> usize {
    let crate_of = |name: &str| source.contains(&format!("/{name}-"));
    let sig = source.contains("/aws-lc/")
        || function.starts_with("aws_lc_")
        || ["curve25519-dalek", "ed25519-dalek", "sha2", "sha512"]
            .iter()
            .any(|c| crate_of(c));
    let tls = ["ring", "rustls", "tokio-rustls"]
        .iter()
        .any(|c| crate_of(c))
        || object.contains("libssl")
        || object.contains("libcrypto");
    let copy = object.contains("libc.so")
        && ["memcpy", "memmove", "memset"]
            .iter()
            .any(|f| function.contains(f));
    let alloc = crate_of("libmimalloc-sys")
        || crate_of("mimalloc")
        || (object.contains("libc.so") && source.contains("/malloc/"));
    let index = if sig {
        0
    } else if tls {
        1
    } else if copy {
        2
    } else if alloc {
        3
    } else {
        4
    };
    debug_assert_eq!(GROUPS.len(), 5);
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_costs_not_calls_and_compressed_names() {
        let text = "events: Ir\n\
            ob=(1) /bin/x\nfl=(1) /src/a.rs\nfn=(1) main\n10 5\ncfl=(1)\ncfn=(2) callee\ncalls=1 3\n11 100\n12 7\n\
            fn=(2)\n3 100\n";
        let costs = self_costs(text).unwrap();
        let key = |f: &str| {
            (
                "/bin/x".into(),
                "/src/a.rs".into(),
                "/src/a.rs".into(),
                f.into(),
            )
        };
        let (main, callee): (Key, Key) = (key("main"), key("callee"));
        assert_eq!(costs[&main], 12);
        assert_eq!(costs[&callee], 100);
    }

    #[test]
    fn groups() {
        let reg = "/root/.cargo/registry/src/index.crates.io-1/";
        assert_eq!(
            group(
                "peergate",
                &format!("{reg}curve25519-dalek-4.1.3/src/x.rs"),
                "f"
            ),
            0
        );
        assert_eq!(group("/usr/lib/libssl.so.3", "???", "SSL_read"), 1);
        assert_eq!(
            group(
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "memmove.S",
                "__memcpy_avx"
            ),
            2
        );
        assert_eq!(
            group("peergate", &format!("{reg}http-1.5.0/src/map.rs"), "get"),
            4
        );
    }
}
