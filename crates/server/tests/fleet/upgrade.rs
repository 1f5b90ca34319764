//! Upgrades, automatic rollbacks and package versions, end to end: a real server, real
//! guests and real monitors, one of them built by the test as another version
//! (`DESKFLEET_MONITOR_VERSION`, docs/monitor.md); packages published with the real
//! `admin packages` commands.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::harness::{Guest, Server, bin, eventually};
use super::monitor_build::monitor_built_as;
use super::{FAST, desktops_enrolled, job_done};

/// The bundled monitor is left out: each test publishes what it needs.
pub(crate) fn settings() -> String {
    format!("{FAST}[packages]\npublish_bundled_monitor = false\n")
}

/// The workspace's monitor: it reports the crate version.
pub(crate) const BUILT: &str = env!("CARGO_PKG_VERSION");

/// The "new" version, built by [`monitor_built_as`].
pub(crate) const NEW: &str = "0.2.0";

/// `admin packages publish --binary PATH --version V`.
pub(crate) fn publish_binary(server: &Server, binary: &Path, version: &str) -> serde_json::Value {
    server.admin(&[
        "packages",
        "publish",
        "--binary",
        binary.to_str().unwrap(),
        "--version",
        version,
    ])
}

/// A `/bin/sh` "agent" written into the server's directory.
fn script(server: &Server, name: &str, body: &str) -> PathBuf {
    let path = server.dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    path
}

/// The agent as the monitor API reports it: (version, healthy).
async fn agent(server: &Server, desktop: &str) -> Option<(String, bool)> {
    let raw = server
        .client()
        .send_v2(
            reqwest::Method::GET,
            &["desktop-monitor", desktop],
            &[],
            None,
            &[],
        )
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw.body).ok()?;
    Some((
        v["agent"]["agent_version"].as_str()?.to_string(),
        v["agent"]["healthy"].as_bool()?,
    ))
}

pub(crate) async fn agent_is(server: &Server, desktop: &str, version: &str) {
    eventually(
        30,
        &format!("{desktop} runs {version} healthily"),
        || async { (agent(server, desktop).await? == (version.to_string(), true)).then_some(()) },
    )
    .await;
}

pub(crate) fn state(guest: &Guest) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(guest.state_dir.path().join("state.json")).unwrap())
        .unwrap()
}

/// The guest confirmed `version` (its watch passed) and keeps `previous`; exactly one
/// agent runs, from `version`'s directory.
pub(crate) async fn confirmed(guest: &Guest, version: &str, previous: Option<&str>) {
    eventually(
        30,
        &format!("{} confirmed {version}", guest.name),
        || async {
            let s = state(guest);
            (s["package"]["version"] == version
                && s["previous"]["version"].as_str() == previous
                && s["watching"].is_null())
            .then_some(())
        },
    )
    .await;
    let dir = guest
        .state_dir
        .path()
        .join("agents/deskfleet-monitor")
        .join(version);
    eventually(
        30,
        &format!("{} runs only {version}", guest.name),
        || async {
            let pids = guest.monitor_pids();
            let from_version = pids
                .iter()
                .filter(|pid| {
                    std::fs::read_link(format!("/proc/{pid}/exe"))
                        .is_ok_and(|exe| exe.starts_with(&dir))
                })
                .count();
            (pids.len() == 1 && from_version == 1).then_some(())
        },
    )
    .await;
}

pub(crate) async fn install_all(
    server: &Server,
    ids: &[String],
) -> deskfleet_proto::workspace::JobInfo {
    let job = server
        .client()
        .batch_install_agent(ids)
        .await
        .unwrap()
        .job_id;
    job_done(server, &job, 120).await
}

#[tokio::test]
async fn three_desktops_upgrade_to_a_version_built_by_the_test() {
    let new_monitor = monitor_built_as(NEW);
    let server = Server::start(&settings()).await;
    publish_binary(&server, &bin("deskfleet-monitor"), BUILT);
    let token = server.enrollment_token();
    let guests: Vec<Guest> = (0..3)
        .map(|i| Guest::start(&server, &token, &format!("up-{i}")))
        .collect();
    let ids = desktops_enrolled(&server, 3).await;
    let info = install_all(&server, &ids).await;
    assert_eq!(info.status, "SUCCESS", "{info:#?}");
    for id in &ids {
        agent_is(&server, id, BUILT).await;
    }
    for g in &guests {
        confirmed(g, BUILT, None).await;
    }

    // BatchInstallAgent installs the newest published version: an upgrade.
    publish_binary(&server, &new_monitor, NEW);
    let started = Instant::now();
    let info = install_all(&server, &ids).await;
    assert_eq!(info.status, "SUCCESS", "{info:#?}\n{}", server.log());
    for id in &ids {
        agent_is(&server, id, NEW).await;
    }
    // Each guest watched it, confirmed it and kept the version it replaced.
    for g in &guests {
        confirmed(g, NEW, Some(BUILT)).await;
        let on_disk: Vec<_> =
            std::fs::read_dir(g.state_dir.path().join("agents/deskfleet-monitor"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
        assert_eq!(on_disk.len(), 2, "{on_disk:?}");
    }
    eprintln!(
        "upgrade of 3 desktops to {NEW}, confirmed by every guest: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn broken_packages_roll_back_by_themselves_and_the_old_agent_runs_again() {
    let server = Server::start(&settings()).await;
    publish_binary(&server, &bin("deskfleet-monitor"), BUILT);
    let token = server.enrollment_token();
    let guest = Guest::start(&server, &token, "broken-1");
    let ids = desktops_enrolled(&server, 1).await;
    assert_eq!(install_all(&server, &ids).await.status, "SUCCESS");
    agent_is(&server, &ids[0], BUILT).await;
    confirmed(&guest, BUILT, None).await;

    // An agent that exits at start.
    let exits = script(&server, "exits", "#!/bin/sh\nexit 4\n");
    publish_binary(&server, &exits, "0.8.0");
    let started = Instant::now();
    let info = install_all(&server, &ids).await;
    let took = started.elapsed();
    let sub = &info.sub_jobs[0];
    assert_eq!(sub.status, "FAILED", "{info:#?}");
    assert_eq!(sub.error_code.as_deref(), Some("WKS.00990021"), "{sub:#?}");
    let reason = sub.fail_reason.as_deref().unwrap_or_default();
    assert!(reason.contains("exit status: 4"), "{reason}");
    assert!(
        reason.ends_with(&format!("rolled back to {BUILT}")),
        "{reason}"
    );
    // Within seconds: well before the execution timeout (30 s here).
    assert!(took < Duration::from_secs(15), "failed after {took:?}");
    assert_eq!(info.status, "FAIL");
    eprintln!("a package whose agent exits at start: job FAIL after {took:?}");
    agent_is(&server, &ids[0], BUILT).await;
    confirmed(&guest, BUILT, None).await;

    // The agent of 0.1.0 published as 0.9.0: it reports another version than its package.
    publish_binary(&server, &bin("deskfleet-monitor"), "0.9.0");
    let started = Instant::now();
    let info = install_all(&server, &ids).await;
    let took = started.elapsed();
    let sub = &info.sub_jobs[0];
    assert_eq!(sub.error_code.as_deref(), Some("WKS.00990023"), "{sub:#?}");
    let reason = sub.fail_reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&format!("reports version {BUILT}"))
            && reason.ends_with(&format!("rolled back to {BUILT}")),
        "{reason}"
    );
    assert!(took < Duration::from_secs(15), "failed after {took:?}");
    agent_is(&server, &ids[0], BUILT).await;
    confirmed(&guest, BUILT, None).await;
    eprintln!("a version-mismatch package rolled back in {took:?}");
}

#[tokio::test]
async fn a_server_restart_mid_upgrade_loses_nothing() {
    let new_monitor = monitor_built_as(NEW);
    let mut server = Server::start(&settings()).await;
    publish_binary(&server, &bin("deskfleet-monitor"), BUILT);
    let token = server.enrollment_token();
    let guests: Vec<Guest> = (0..3)
        .map(|i| Guest::start(&server, &token, &format!("rs-{i}")))
        .collect();
    let ids = desktops_enrolled(&server, 3).await;
    assert_eq!(install_all(&server, &ids).await.status, "SUCCESS");
    for g in &guests {
        confirmed(g, BUILT, None).await;
    }

    publish_binary(&server, &new_monitor, NEW);
    let job = server
        .client()
        .batch_install_agent(&ids)
        .await
        .unwrap()
        .job_id;
    // Killed while the desktops download, switch and watch.
    eventually(30, "the upgrade under way", || async {
        let info = server.client().show_job(&job).await.ok()?;
        info.sub_jobs
            .iter()
            .any(|s| s.process >= Some(10))
            .then_some(())
    })
    .await;
    server.kill_and_restart().await;
    let info = job_done(&server, &job, 120).await;
    assert_eq!(info.status, "SUCCESS", "{info:#?}\n{}", server.log());
    assert_eq!(info.sub_jobs_total, 3);
    for id in &ids {
        agent_is(&server, id, NEW).await;
    }
    for g in &guests {
        confirmed(g, NEW, Some(BUILT)).await;
    }
    assert_eq!(
        server
            .client()
            .list_desktops(&[])
            .await
            .unwrap()
            .total_count,
        3
    );
}

// ---------------------------------------------------------------------------------------
// admin packages
// ---------------------------------------------------------------------------------------

/// Runs `admin ARGS` expecting a failure; its stderr.
fn admin_fails(server: &Server, args: &[&str]) -> String {
    let out = Command::new(bin("deskfleet-server"))
        .arg("--data-dir")
        .arg(server.dir.path())
        .arg("admin")
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "admin {args:?} succeeded");
    assert!(out.stdout.is_empty(), "nothing printed on stdout");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn admin_packages_publish_list_withdraw_and_restore() {
    let server = Server::start(&settings()).await;
    let monitor = bin("deskfleet-monitor");
    let size = std::fs::metadata(&monitor).unwrap().len();

    let first = publish_binary(&server, &monitor, "0.1.0");
    assert_eq!(first["name"], "deskfleet-monitor");
    assert_eq!(first["version"], "0.1.0");
    assert_eq!(
        first["platform"],
        deskfleet_server::fleet::packages::host_platform()
    );
    assert_eq!(first["sha256"].as_str().unwrap().len(), 64);
    // A compressed archive of the binary and its manifest.
    assert!(first["size"].as_u64().unwrap() < size);

    // The archive built is the documented one, signed by the server's key.
    let store = deskfleet_store::connect_data_dir(server.dir.path())
        .await
        .unwrap();
    let (meta, archive) = store
        .get_package(first["package_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut entries = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
    let mut files = std::collections::BTreeMap::new();
    for entry in entries.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mode = entry.header().mode().unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        files.insert(path, (mode, bytes));
    }
    assert_eq!(files["deskfleet-monitor"].0 & 0o777, 0o755);
    assert_eq!(
        files["deskfleet-monitor"].1,
        std::fs::read(&monitor).unwrap()
    );
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"].1).unwrap();
    assert_eq!(
        manifest,
        serde_json::json!({"name": "deskfleet-monitor", "version": "0.1.0", "entrypoint": "deskfleet-monitor"})
    );
    let key = deskfleet_server::fleet::packages::read_public_key(&server.public_key()).unwrap();
    let signature =
        ed25519_dalek::Signature::from_slice(&hex::decode(&meta.signature).unwrap()).unwrap();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&archive);
    assert!(key.verify_strict(&digest, &signature).is_ok());

    // The same version again: refused, whatever the bytes.
    let other = script(&server, "other", "#!/bin/sh\nexit 0\n");
    let error = admin_fails(
        &server,
        &[
            "packages",
            "publish",
            "--binary",
            other.to_str().unwrap(),
            "--version",
            "0.1.0",
        ],
    );
    assert!(error.contains("0.1.0 is already published"), "{error}");
    // A version the guests could not use, and a missing binary.
    let error = admin_fails(
        &server,
        &[
            "packages",
            "publish",
            "--binary",
            other.to_str().unwrap(),
            "--version",
            "../0.2",
        ],
    );
    assert!(error.contains("is not a valid version"), "{error}");
    let error = admin_fails(
        &server,
        &[
            "packages",
            "publish",
            "--binary",
            "/no/such/binary",
            "--version",
            "0.2.0",
        ],
    );
    assert!(error.contains("/no/such/binary"), "{error}");

    // An archive is published as it is, if its manifest names the version given.
    let archive = server.dir.path().join("0.1.5.tar.gz");
    std::fs::write(
        &archive,
        deskfleet_server::fleet::packages::build_archive(
            "deskfleet-monitor",
            "0.1.5",
            b"#!/bin/sh
",
        )
        .unwrap(),
    )
    .unwrap();
    let error = admin_fails(
        &server,
        &[
            "packages",
            "publish",
            archive.to_str().unwrap(),
            "--version",
            "0.1.6",
        ],
    );
    assert!(
        error.contains("manifest.json names deskfleet-monitor/0.1.5, not deskfleet-monitor/0.1.6"),
        "{error}"
    );
    let error = admin_fails(
        &server,
        &[
            "packages",
            "publish",
            other.to_str().unwrap(),
            "--version",
            "0.1.6",
        ],
    );
    assert!(error.contains("not a package archive"), "{error}");
    let published = server.admin(&[
        "packages",
        "publish",
        archive.to_str().unwrap(),
        "--version",
        "0.1.5",
    ]);
    assert_eq!(published["version"], "0.1.5");
    // Its agent is no agent: never offered.
    server.admin(&["packages", "withdraw", "--version", "0.1.5"]);

    publish_binary(&server, &other, "0.2.0");
    let list = server.admin(&["packages", "list"]);
    let versions: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["0.2.0", "0.1.5", "0.1.0"], "newest first");
    for p in list.as_array().unwrap() {
        for field in ["package_id", "platform", "size", "sha256", "published_at"] {
            assert!(!p[field].is_null(), "{field}: {p}");
        }
        assert_eq!(p["withdrawn_at"].is_null(), p["version"] != "0.1.5", "{p}");
    }
    let latest = || async {
        store
            .latest_package(
                "deskfleet-monitor",
                &deskfleet_server::fleet::packages::host_platform(),
            )
            .await
            .unwrap()
            .unwrap()
            .version
    };
    assert_eq!(latest().await, "0.2.0");

    // Withdrawn: no longer offered; listed with its time; still there for rollbacks.
    let out = server.admin(&["packages", "withdraw", "--version", "0.2.0"]);
    assert_eq!(out["withdrawn"], true);
    assert_eq!(out["packages"], 1);
    assert_eq!(latest().await, "0.1.0");
    let list = server.admin(&["packages", "list"]);
    assert!(list[0]["withdrawn_at"].as_str().unwrap().ends_with('Z'));
    assert!(list[1]["withdrawn_at"].as_str().is_some());
    assert!(list[2]["withdrawn_at"].is_null());
    // An install now gets 0.1.0.
    let token = server.enrollment_token();
    let _guest = Guest::start(&server, &token, "pkg-1");
    let ids = desktops_enrolled(&server, 1).await;
    assert_eq!(install_all(&server, &ids).await.status, "SUCCESS");
    agent_is(&server, &ids[0], "0.1.0").await;

    let out = server.admin(&["packages", "restore", "--version", "0.2.0"]);
    assert_eq!(out["withdrawn"], false);
    assert_eq!(latest().await, "0.2.0");
    assert!(server.admin(&["packages", "list"])[0]["withdrawn_at"].is_null());

    let error = admin_fails(&server, &["packages", "withdraw", "--version", "9.9.9"]);
    assert!(error.contains("9.9.9 is not published"), "{error}");
}
