//! The deskfleet monitoring agent: the package deskfleet installs on each desktop. It
//! samples the desktop's CPU, memory, disks, network, load and uptime, and its own
//! footprint, and writes them to stdout as newline-delimited JSON ([`Report`] lines) for its
//! parent, the deskfleet guest daemon, to read.
//!
//! Invariants:
//! - stdout carries [`Report`] lines and nothing else, one JSON object per line, written
//!   whole; diagnostics go to stderr or into a report's `errors`.
//! - A figure that could not be measured is `null` or absent, never a made-up zero. That is
//!   why the first sample waits a short [`FIRST_WINDOW`] and [`Collector::sample`] never
//!   measures over less than [`MIN_WINDOW`].
//! - The agent never panics on the guest going away: a closed stdout or SIGTERM/SIGINT is
//!   a clean exit (status 0).
//! - Linux only (`/proc` and statvfs). On other platforms it compiles and runs, reporting
//!   `"supported": false` with a reason in its health lines and no metrics.
//!
//! Protocol (stdout, one [`Report`] per line, `"type"` tags the variant):
//! 1. at start, `health` with `status: "running"`;
//! 2. after [`FIRST_WINDOW`] (about 250 ms), the first `metrics`, whose rates and CPU
//!    percentages cover that short window (its `interval_ms` says so);
//! 3. every interval (`--interval-ms`, `DESKFLEET_MONITOR_INTERVAL_MS`, default
//!    [`DEFAULT_INTERVAL_MS`]) a `metrics` line, preceded every [`HEARTBEAT_EVERY`]th time by
//!    a `health` line;
//! 4. on SIGTERM/SIGINT a last `health` with `status: "stopping"`, then exit 0. A closed
//!    stdout ends the agent with status 0 too, noticed while it waits, not only at the next
//!    write. `--once` stops after step 2.
//!
//! It must not depend on an async runtime, on a system-information crate, or on any other
//! deskfleet crate: it is installed on every desktop, its footprint is part of the product,
//! and the guest links this library for the [`Report`] types alone. The `/proc` parsers in
//! [`procfs`] are pure functions over text, tested on committed fixtures.

pub mod collector;
pub mod procfs;
pub mod report;
pub mod run;
pub mod settings;

use std::time::Duration;

pub use collector::{Collector, health, now_ms, unsupported_reason};
pub use report::{Cpu, Disk, Health, Memory, Metrics, NetworkInterface, Report, SelfUsage, Status};
#[cfg(unix)]
pub use run::SignalWaiter;
pub use run::{Exit, SleepWaiter, Waiter, Wake, run, system_waiter};
pub use settings::{Command, INTERVAL_ENV, Settings, SettingsError, parse_command, usage};

/// The `agent` field of every line.
pub const AGENT_NAME: &str = "deskfleet-monitor";

/// The `version` field of every line and of `--version`: the version this agent was built
/// as. The guest matches it against the package it installed, so a package whose agent
/// reports another version is rolled back as broken.
///
/// It is the crate's version, unless `DESKFLEET_MONITOR_VERSION` was set when the agent
/// was built (`DESKFLEET_MONITOR_VERSION=0.2.0 cargo build -p deskfleet-monitor`): that is
/// how a release, or a test, builds a genuinely different version from the same sources
/// (`docs/monitor.md`). Cargo rebuilds the crate when that variable changes.
pub const VERSION: &str = match option_env!("DESKFLEET_MONITOR_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// Default time between samples, in milliseconds.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;

/// The window of the first sample, taken right after the first health line, so the guest
/// gets real figures within a fraction of a second of starting the agent.
pub const FIRST_WINDOW: Duration = Duration::from_millis(250);

/// The shortest window a sample measures over, and so the shortest interval accepted.
/// At the usual 100 Hz tick that is still ten ticks per core.
pub const MIN_WINDOW: Duration = Duration::from_millis(100);

/// The longest interval accepted: a day.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// A health line is sent again every this many intervals, as a heartbeat.
pub const HEARTBEAT_EVERY: u64 = 6;
