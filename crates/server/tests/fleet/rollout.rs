//! Rollout control with real guests: `max_concurrency` and `max_errors` on
//! BatchInstallAgent (the deskfleet extension, `docs/api.md`).

use super::harness::{Guest, Server, eventually};
use super::{FAST, desktops_enrolled, job_done, publish, signing_key};
use deskfleet_server::fleet::packages::{MONITOR, build_archive, host_platform, sign_archive};

#[tokio::test]
async fn max_concurrency_one_installs_one_desktop_at_a_time() {
    let server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let _guests: Vec<Guest> = (1..=3)
        .map(|i| Guest::start(&server, &token, &format!("desk-r{i}")))
        .collect();
    let ids = desktops_enrolled(&server, 3).await;
    let client = server.client();
    let job = client
        .batch_install_agent_limited(&ids, Some("1"), None)
        .await
        .unwrap()
        .job_id;
    // Watch the whole rollout: never two RUNNING at once.
    let most = std::cell::Cell::new(0);
    let info = eventually(90, "the rollout to end", || {
        let (client, job, most) = (&client, &job, &most);
        async move {
            let info = client.show_job(job).await.ok()?;
            let running = info
                .sub_jobs
                .iter()
                .filter(|s| s.status == "RUNNING")
                .count();
            most.set(most.get().max(running));
            matches!(info.status.as_str(), "SUCCESS" | "FAIL").then_some(info)
        }
    })
    .await;
    assert_eq!(info.status, "SUCCESS", "{info:#?}");
    assert!(most.get() <= 1, "{} sub-jobs ran at once", most.get());
}

#[tokio::test]
async fn max_errors_stops_a_rollout_where_desktops_fail() {
    let server = Server::start(
        "[jobs]\ndelivery_timeout_ms = 30000\nexecution_timeout_ms = 30000\nsweep_interval_ms = 100\n\
         [fleet]\nschedule_interval_ms = 100\n[packages]\npublish_bundled_monitor = false\n",
    )
    .await;
    // Nothing is published yet: the signing key (and the public half the guests trust)
    // is made now.
    let key = signing_key(&server);
    let token = server.enrollment_token();
    let guests: Vec<Guest> = (1..=3)
        .map(|i| Guest::start(&server, &token, &format!("desk-e{i}")))
        .collect();
    let ids = desktops_enrolled(&server, 3).await;
    // Every desktop fails this package: its announced hash is of other bytes.
    let archive = build_archive(MONITOR, "7.1.0", b"#!/bin/sh\n").unwrap();
    let mut meta = sign_archive(&key, MONITOR, "7.1.0", &host_platform(), b"other bytes", 1);
    meta.size = archive.len() as u64;
    publish(&server, meta, &archive).await;
    let job = server
        .client()
        .batch_install_agent_limited(&ids, Some("1"), Some("0"))
        .await
        .unwrap()
        .job_id;
    let info = job_done(&server, &job, 60).await;
    assert_eq!(info.status, "FAIL", "{info:#?}");
    let codes: Vec<_> = info
        .sub_jobs
        .iter()
        .map(|s| s.error_code.clone().unwrap_or_default())
        .collect();
    // The first desktop tried and failed; the rollout stopped before the others started.
    assert_eq!(
        codes.iter().filter(|c| *c == "WKS.00990005").count(),
        1,
        "{info:#?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "WKS.00990020").count(),
        2,
        "{info:#?}"
    );
    for s in info
        .sub_jobs
        .iter()
        .filter(|s| s.error_code.as_deref() == Some("WKS.00990020"))
    {
        let reason = s.fail_reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("rollout stopped"), "{reason}");
        assert_eq!(s.begin_time, None, "never started: {s:#?}");
    }
    drop(guests);
}
