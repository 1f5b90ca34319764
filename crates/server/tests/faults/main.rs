//! Storage faults injected for real under a real server: a full file system (a tmpfs the
//! test mounts), database files made immutable (`chattr +i`), a private PostgreSQL cluster
//! stopped and started under load; and an online backup restored into a second server.
//!
//! Each fault test drives signed writes (BatchInstallAgent) and reads through the real
//! client while the fault lasts, then repairs it and checks what an operator relies on:
//! writes were refused with 503 `WKS.00000503` and `Retry-After` (never a 500), reads
//! kept working, the process never died, writes came back by themselves, and every job
//! that was acknowledged (got a job_id) is still there. The figures are printed.
//!
//! Mounting and `chattr` need root; without it (or without the tools, or without the
//! PostgreSQL binaries) a test prints `SKIPPED: ...` and does nothing else.

#[allow(dead_code)]
#[path = "../fleet/harness.rs"]
mod harness;
mod load;

mod backup;
mod health;
mod postgres;
mod sqlite;

use std::os::unix::fs::MetadataExt;

/// Settings for the servers of these tests: no throttling (the load is ours), no bundled
/// package to publish (it would not fit a small tmpfs), jobs that stay waiting.
pub const SETTINGS: &str = "[throttle]\nenabled = false\n\
                            [packages]\npublish_bundled_monitor = false\n\
                            [jobs]\ndelivery_timeout_ms = 3600000\n";

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Says loudly that a test could not run here.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED: {test}: {why}");
    println!("SKIPPED: {test}: {why}");
}
