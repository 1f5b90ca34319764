//! `deskfleet-monitor`: parses the command line and runs [`deskfleet_monitor::run`] on
//! stdout. Exit status: 0 for every clean end (`--once` done, SIGTERM/SIGINT, stdout
//! closed), 1 for another write error, 2 for bad arguments.

use std::io::{self, Write};
use std::process::ExitCode;

use deskfleet_monitor::{
    AGENT_NAME, Command, INTERVAL_ENV, VERSION, now_ms, parse_command, run, system_waiter, usage,
};

fn main() -> ExitCode {
    let started_at_ms = now_ms();
    let env_interval = std::env::var(INTERVAL_ENV).ok();
    let command = parse_command(std::env::args().skip(1), env_interval.as_deref());
    // println!/eprintln! panic when their stream is closed; these writes are best effort.
    let settings = match command {
        Ok(Command::Run(settings)) => settings,
        Ok(Command::Version) => {
            let _ = writeln!(io::stdout(), "{AGENT_NAME} {VERSION}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            let _ = write!(io::stdout(), "{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let _ = writeln!(io::stderr(), "{AGENT_NAME}: {error}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let mut waiter = match system_waiter() {
        Ok(waiter) => waiter,
        Err(error) => {
            let _ = writeln!(
                io::stderr(),
                "{AGENT_NAME}: cannot install signal handlers: {error}"
            );
            return ExitCode::FAILURE;
        }
    };
    match run(
        &settings,
        started_at_ms,
        &mut io::stdout().lock(),
        &mut waiter,
    ) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(
                io::stderr(),
                "{AGENT_NAME}: cannot write to stdout: {error}"
            );
            ExitCode::FAILURE
        }
    }
}
