//! End to end: a real server and real guest daemons on loopback install the real
//! monitoring agent, and every failure ends with its stable code.

mod audit;
mod ces_life;
mod ces_metrics;
mod credentials;
mod harness;
mod hostile;
mod instrumentation;
mod logs;
mod monitor_build;
mod presence;
mod rollout;
mod tls;
mod upgrade;

use deskfleet_core::fleet::PackageMeta;
use deskfleet_proto::workspace::JobInfo;
use deskfleet_server::fleet::packages::{MONITOR, build_archive, host_platform, sign_archive};
use harness::{Guest, Server, eventually};

pub(crate) const FAST: &str = "[jobs]\ndelivery_timeout_ms = 30000\nexecution_timeout_ms = 30000\nsweep_interval_ms = 100\n\
                    [fleet]\nschedule_interval_ms = 100\nmetrics_min_interval_ms = 0\n";

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) async fn desktops_enrolled(server: &Server, n: i64) -> Vec<String> {
    let client = server.client();
    eventually(60, "desktops enrolled", || async {
        let list = client.list_desktops(&[]).await.ok()?;
        (list.total_count == n).then(|| list.desktops.into_iter().map(|d| d.desktop_id).collect())
    })
    .await
}

pub(crate) async fn job_done(server: &Server, job: &str, secs: u64) -> JobInfo {
    let client = server.client();
    eventually(secs, "job finished", || async {
        let info = client.show_job(job).await.ok()?;
        matches!(info.status.as_str(), "SUCCESS" | "FAIL").then_some(info)
    })
    .await
}

/// Publishes `archive` with metadata `meta` (possibly altered), as the newest package.
async fn publish(server: &Server, mut meta: PackageMeta, archive: &[u8]) {
    meta.created_at = harness::now_ms();
    let store = deskfleet_store::connect_data_dir(server.dir.path())
        .await
        .unwrap();
    store.publish_package(&meta, archive).await.unwrap();
}

fn signing_key(server: &Server) -> ed25519_dalek::SigningKey {
    deskfleet_server::fleet::packages::load_or_create_signing_key(server.dir.path()).unwrap()
}

#[tokio::test]
async fn three_guests_install_the_agent_and_report_metrics() {
    let server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let guests: Vec<Guest> = (0..3)
        .map(|i| Guest::start(&server, &token, &format!("desk-{i}")))
        .collect();
    let ids = desktops_enrolled(&server, 3).await;
    let client = server.client();
    let detail = client.list_desktops_detail(&[]).await.unwrap();
    let mut names: Vec<_> = detail
        .desktops
        .iter()
        .map(|d| d.computer_name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["desk-0", "desk-1", "desk-2"]);
    assert!(
        detail
            .desktops
            .iter()
            .all(|d| d.metadata["os_type"] == "Linux" && !d.ip_addresses.is_empty())
    );

    let job = client.batch_install_agent(&ids).await.unwrap().job_id;
    let info = job_done(&server, &job, 90).await;
    assert_eq!(info.status, "SUCCESS", "{info:#?}\n{}", server.log());
    assert!(
        info.sub_jobs
            .iter()
            .all(|s| s.status == "SUCCESS" && s.process == Some(100))
    );

    let agents = client
        .list_agents(&q(&[("is_installed", "true")]))
        .await
        .unwrap();
    assert_eq!(agents.total_count, 3);
    let version = env!("CARGO_PKG_VERSION");
    for a in &agents.agents_condition {
        assert_eq!(a.agent_info[0].agent_version, version);
        assert!(a.agent_info[0].is_installed);
    }
    // The agent really runs, once per desktop.
    for g in &guests {
        assert_eq!(g.monitor_pids().len(), 1, "{}", g.log());
    }
    // Its figures are served.
    let figures = eventually(30, "metrics served", || async {
        let raw = client
            .send_v2(
                reqwest::Method::GET,
                &["desktop-monitor", &ids[0]],
                &[],
                None,
                &[],
            )
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&raw.body).ok()?;
        (raw.status == 200
            && v["metrics"]["cpu"]["cores"]
                .as_u64()
                .is_some_and(|c| c >= 1))
        .then_some(v)
    })
    .await;
    assert_eq!(figures["agent"]["agent_version"], version);
    assert!(
        figures["metrics"]["memory"]["total_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Installing again succeeds at once, without reinstalling: the same process runs on.
    let before: Vec<_> = guests.iter().map(Guest::monitor_pids).collect();
    let again = client.batch_install_agent(&ids).await.unwrap().job_id;
    assert_eq!(job_done(&server, &again, 30).await.status, "SUCCESS");
    let after: Vec<_> = guests.iter().map(Guest::monitor_pids).collect();
    assert_eq!(before, after);
}

#[tokio::test]
async fn an_imported_desktop_is_claimed_with_the_token_issued_for_it() {
    let server = Server::start(FAST).await;
    let file = server.dir.path().join("desktops.json");
    std::fs::write(
        &file,
        r#"[{"computer_name":"Desk-Imported","ip_address":"10.9.0.1","os_type":"Linux"}]"#,
    )
    .unwrap();
    let imported = server.admin(&[
        "desktops",
        "import",
        "--project",
        &server.bootstrap.project_id,
        file.to_str().unwrap(),
    ]);
    let imported_id = imported[0]["desktop_id"].as_str().unwrap().to_string();
    // A token issued for that desktop: a host name alone claims nothing.
    let token = server.desktop_enrollment_token(&imported_id);
    let mut guest = Guest::start(&server, &token, "desk-imported");
    guest.enrolled().await;
    let ids = desktops_enrolled(&server, 1).await;
    assert_eq!(ids, std::slice::from_ref(&imported_id));
    // A restarted guest keeps its identity: still one desktop.
    guest.kill();
    // A well-formed token the server never issued: the stored credential is used.
    guest.launch(&server, "DFE1not-needed-any-more");
    let job = server
        .client()
        .batch_install_agent(&ids)
        .await
        .unwrap()
        .job_id;
    assert_eq!(
        job_done(&server, &job, 60).await.status,
        "SUCCESS",
        "{}",
        guest.log()
    );
    assert_eq!(
        server
            .client()
            .list_desktops(&[])
            .await
            .unwrap()
            .total_count,
        1
    );
}

#[tokio::test]
async fn a_tampered_package_fails_verification_and_nothing_runs() {
    let server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let guest = Guest::start(&server, &token, "desk-t");
    let ids = desktops_enrolled(&server, 1).await;
    let archive =
        build_archive(MONITOR, "7.0.0", b"#!/bin/sh\necho tampered > /tmp/never\n").unwrap();
    let key = signing_key(&server);
    // The announced hash (and its valid signature) are of other bytes than those served.
    let mut meta = sign_archive(
        &key,
        MONITOR,
        "7.0.0",
        &host_platform(),
        b"the original bytes",
        1,
    );
    meta.size = archive.len() as u64;
    publish(&server, meta, &archive).await;
    let job = server
        .client()
        .batch_install_agent(&ids)
        .await
        .unwrap()
        .job_id;
    let info = job_done(&server, &job, 60).await;
    assert_eq!(info.status, "FAIL");
    assert_eq!(
        info.sub_jobs[0].error_code.as_deref(),
        Some("WKS.00990005"),
        "{info:#?}"
    );
    assert!(guest.monitor_pids().is_empty());
    assert!(
        !guest
            .state_dir
            .path()
            .join("agents")
            .join(MONITOR)
            .join("7.0.0")
            .exists()
    );

    // Signed by a key the guest does not trust.
    let foreign = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let archive = build_archive(MONITOR, "7.0.1", b"#!/bin/sh\n").unwrap();
    publish(
        &server,
        sign_archive(&foreign, MONITOR, "7.0.1", &host_platform(), &archive, 2),
        &archive,
    )
    .await;
    let job = server
        .client()
        .batch_install_agent(&ids)
        .await
        .unwrap()
        .job_id;
    let info = job_done(&server, &job, 60).await;
    assert_eq!(
        info.sub_jobs[0].error_code.as_deref(),
        Some("WKS.00990006"),
        "{info:#?}"
    );
    assert!(guest.monitor_pids().is_empty());
}

#[tokio::test]
async fn an_offline_desktop_fails_at_the_delivery_timeout_while_the_others_succeed() {
    let server = Server::start(
        "[jobs]\ndelivery_timeout_ms = 4000\nexecution_timeout_ms = 30000\nsweep_interval_ms = 100\n\
         [fleet]\nschedule_interval_ms = 100\n",
    )
    .await;
    let file = server.dir.path().join("desktops.json");
    std::fs::write(
        &file,
        r#"[{"computer_name":"never-on","ip_address":"10.9.0.2","os_type":"Windows"}]"#,
    )
    .unwrap();
    let offline = server.admin(&[
        "desktops",
        "import",
        "--project",
        &server.bootstrap.project_id,
        file.to_str().unwrap(),
    ]);
    let token = server.enrollment_token();
    let _guests: Vec<Guest> = (0..2)
        .map(|i| Guest::start(&server, &token, &format!("on-{i}")))
        .collect();
    let ids = desktops_enrolled(&server, 3).await;
    let job = server
        .client()
        .batch_install_agent(&ids)
        .await
        .unwrap()
        .job_id;
    let info = job_done(&server, &job, 60).await;
    assert_eq!(info.status, "FAIL");
    let offline_id = offline[0]["desktop_id"].as_str().unwrap();
    for s in &info.sub_jobs {
        if s.entities.desktop_id.as_deref() == Some(offline_id) {
            assert_eq!(
                (s.status.as_str(), s.error_code.as_deref()),
                ("FAILED", Some("WKS.00990001"))
            );
        } else {
            assert_eq!(s.status, "SUCCESS", "{s:#?}");
        }
    }
    assert!(info.fail_reason.unwrap().starts_with("1 of 3"));
}

#[tokio::test]
async fn a_guest_killed_mid_install_fails_at_the_execution_timeout_and_a_retry_succeeds() {
    let server = Server::start(
        "[jobs]\ndelivery_timeout_ms = 60000\nexecution_timeout_ms = 3000\nsweep_interval_ms = 100\n\
         [fleet]\nschedule_interval_ms = 100\n[packages]\npublish_bundled_monitor = false\n",
    )
    .await;
    // An agent that never reports: the guest watches it (Installing) until the guest dies.
    let archive = build_archive(MONITOR, "0.0.1-hang", b"#!/bin/sh\nexec sleep 600\n").unwrap();
    let key = signing_key(&server);
    publish(
        &server,
        sign_archive(&key, MONITOR, "0.0.1-hang", &host_platform(), &archive, 1),
        &archive,
    )
    .await;
    let token = server.enrollment_token();
    // A watch window longer than the test: the hung agent is never judged.
    let options = harness::GuestOptions {
        watch_window_secs: Some(600),
        ..Default::default()
    };
    let mut guest = Guest::start_with(&server, &token, "desk-k", options);
    let ids = desktops_enrolled(&server, 1).await;
    let client = server.client();
    let job = client.batch_install_agent(&ids).await.unwrap().job_id;
    eventually(30, "install started", || async {
        let info = client.show_job(&job).await.ok()?;
        // Switched to it: the guest watches the hung agent.
        let state = std::fs::read(guest.state_dir.path().join("state.json")).ok()?;
        let state: serde_json::Value = serde_json::from_slice(&state).ok()?;
        (info.sub_jobs[0].process >= Some(70) && state["watching"].is_object()).then_some(())
    })
    .await;
    let hung = guest.monitor_pids();
    guest.kill();
    for pid in hung {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
    let info = job_done(&server, &job, 30).await;
    assert_eq!(
        info.sub_jobs[0].error_code.as_deref(),
        Some("WKS.00990002"),
        "{info:#?}"
    );

    // The real agent is published; the guest comes back; a retry installs it.
    let binary = std::fs::read(harness::bin("deskfleet-monitor")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let archive = build_archive(MONITOR, version, &binary).unwrap();
    publish(
        &server,
        sign_archive(&key, MONITOR, version, &host_platform(), &archive, 2),
        &archive,
    )
    .await;
    guest.options.watch_window_secs = None;
    guest.launch(&server, &token);
    client.job_action(&job, "retry").await.unwrap();
    let info = job_done(&server, &job, 60).await;
    assert_eq!(info.status, "SUCCESS", "{info:#?}\n{}", guest.log());
    assert_eq!(guest.monitor_pids().len(), 1);
}

#[tokio::test]
async fn a_server_killed_mid_job_finishes_it_after_restart_with_nothing_lost() {
    let mut server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let guests: Vec<Guest> = (0..3)
        .map(|i| Guest::start(&server, &token, &format!("desk-r{i}")))
        .collect();
    let ids = desktops_enrolled(&server, 3).await;
    let job = server
        .client()
        .batch_install_agent(&ids)
        .await
        .unwrap()
        .job_id;
    server.kill_and_restart().await;
    let info = job_done(&server, &job, 90).await;
    assert_eq!(info.status, "SUCCESS", "{info:#?}\n{}", server.log());
    assert_eq!(info.sub_jobs_total, 3);
    let subs = server
        .client()
        .list_sub_jobs(&q(&[("job_id", &job)]))
        .await
        .unwrap();
    assert_eq!(subs.total_count, 3);
    assert!(subs.jobs.iter().all(|s| s.status == "SUCCESS"));
    for g in &guests {
        assert_eq!(
            g.monitor_pids().len(),
            1,
            "one agent per desktop: {}",
            g.log()
        );
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

#[tokio::test]
async fn a_cloned_desktop_gets_an_identity_of_its_own() {
    let server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let original = Guest::start(&server, &token, "golden");
    desktops_enrolled(&server, 1).await;
    // Clone the golden image: its state directory, credential and instance uid included.
    let clone = Guest::cloned_from(&original, &server, &token, "golden-clone");
    let ids = desktops_enrolled(&server, 2).await;
    assert_ne!(ids[0], ids[1]);
    let uid = |g: &Guest| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(g.state_dir.path().join("state.json")).unwrap())
                .unwrap();
        v["instance_uid"].as_str().unwrap().to_string()
    };
    eventually(30, "clone took a new instance uid", || async {
        (uid(&original) != uid(&clone)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_connections_is_refused_with_retry_after_not_served_badly() {
    let server = Server::start("[fleet]\nmax_new_connections_per_sec = 3\n").await;
    let token = server.enrollment_token();
    // The bearer is the token's secret, as a guest sends it.
    let secret = deskfleet_proto::enrollment::EnrollmentToken::parse(&token)
        .unwrap()
        .secret;
    let http = server.http();
    let url = format!("{}/v1/opamp", server.endpoint);
    let mut refused = 0;
    for _ in 0..10 {
        let r = http.get(&url).bearer_auth(&secret).send().await.unwrap();
        if r.status() == 503 {
            refused += 1;
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry >= 1);
        } else {
            // Admitted: a plain GET is not a WebSocket upgrade.
            assert!(r.status().is_client_error(), "{}", r.status());
        }
    }
    assert!(refused >= 5, "only {refused} of 10 refused");
    // The server still serves the API.
    server.client().list_desktops(&[]).await.unwrap();
}
