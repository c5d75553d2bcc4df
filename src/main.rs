use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: a request allocates and frees many small objects
/// across threads, and loading a large allowlist millions on several threads at once; glibc's
/// malloc spent ~7 % of a request's CPU and ~20 % of a load on that, and serialized the parallel
/// load (benches/HISTORY.md has the numbers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    peergate::memory::purge_promptly();
    let cli = peergate::cli::Cli::parse();
    // The demo explains itself on stdout; its per-request log lines would bury that, and its
    // readiness probes (plain TCP connects to the TLS listeners) would log handshake errors.
    let quiet = matches!(cli.command, Some(peergate::cli::Command::Demo { .. }));
    let level = if quiet {
        "warn,pingora_core::services::listening=off"
    } else {
        "info"
    };
    peergate::logger::init(level);
    match peergate::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("peergate: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
