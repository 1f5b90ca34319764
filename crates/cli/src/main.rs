//! `deskfleet`: install, upgrade and follow the monitoring agent on desktop fleets from a
//! terminal. It talks to a deskfleet server over the same signed API as the official
//! SDKs (Workspace `/v2`, Cloud Eye `/v3` and `/V1.0`), and over the wire only.
//!
//! Output is for people by default (aligned tables) and for scripts with `-o json`;
//! `--query` selects fields. The exit code says what happened (see [`exit`]).

mod args;
mod commands;
mod config;
mod exit;
mod follow;
mod output;
mod query;
mod targets;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let timeout = cli.global.timeout_secs;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(exit::UNEXPECTED);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => exit::report(&e, timeout.unwrap_or(config::DEFAULT_TIMEOUT_SECS)),
    }
}
