//! `pgbench`: the pieces of peergate's load harness (`benches/load/run.sh`) that are simpler in
//! Rust than in shell.
//!
//! | command | what it does |
//! | --- | --- |
//! | `app` | the sample app every setup proxies to: HTTP/1.1 keep-alive, answers `200 ok` |
//! | `load` | the load generator: closed loop (as fast as it goes) or constant rate, HTTP or HTTPS, optionally signing every request itself (RFC 9421, each signature unique) |
//! | `certs` | a throwaway CA and a certificate for `localhost` / `127.0.0.1` |
//! | `identity` | an Ed25519 identity key (PKCS#8 PEM) and its public names |
//! | `peers` | a peers file of any size (unique keys, names and short IDs) |
//! | `ports` | free loopback ports |
//! | `crypto` | the cost of one Ed25519 signature, one strict verification (peergate's and dalek's `verify_strict`), SHA-256 of 1 KiB |
//! | `replay-mem` | the replay cache's resident memory at a given rate, and when full |
//! | `callgrind` | a callgrind profile of a proxy as instructions per request, in groups (`callgrind.sh`) |

mod app;
mod args;
mod callgrind;
mod crypto;
mod gen;
mod load;
mod replay_mem;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        eprintln!("usage: pgbench app|load|certs|identity|peers|ports|replay-mem|crypto|callgrind [--option value ...]");
        return ExitCode::from(2);
    }
    let command = argv.remove(0);
    let result = args::Args::parse(&argv).and_then(|a| match command.as_str() {
        "app" => app::main(&a),
        "load" => load::main(&a),
        "certs" => gen::certs(&a),
        "identity" => gen::identity(&a),
        "peers" => gen::peers(&a),
        "ports" => gen::ports(&a),
        "replay-mem" => replay_mem::main(&a),
        "crypto" => crypto::main(&a),
        "callgrind" => callgrind::main(&a),
        other => Err(format!("unknown command {other:?}")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgbench {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tokio runtime the app and the load generator run on: one thread without a scheduler
/// to steal work, or `threads` workers.
fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| e.to_string())
}
