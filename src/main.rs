use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = peergate::cli::Cli::parse();
    match peergate::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("peergate: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
