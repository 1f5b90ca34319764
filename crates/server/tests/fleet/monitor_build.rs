//! The monitor built as another version, for tests of upgrades: shared by the fleet
//! tests and the CLI's tests (`#[path]`), so it is built once, in a target directory of
//! its own, whichever runs first.

use std::path::PathBuf;
use std::process::Command;

/// The monitor built from this workspace as `version`, in a target directory of its own
/// (so the usual `target/debug/deskfleet-monitor` stays what it is). Cargo does nothing
/// when it is up to date.
pub fn monitor_built_as(version: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/fleet-… -> target
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let target_dir = target.join(format!("test-monitor-{version}"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "deskfleet-monitor",
            "--bin",
            "deskfleet-monitor",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("DESKFLEET_MONITOR_VERSION", version)
        .env("CARGO_BUILD_JOBS", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building the monitor as {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = target_dir.join("debug/deskfleet-monitor");
    // It really is another version.
    let said = Command::new(&binary).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&said.stdout).trim(),
        format!("deskfleet-monitor {version}")
    );
    binary
}
