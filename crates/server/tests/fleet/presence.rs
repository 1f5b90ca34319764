//! Online status, told truthfully: real guests that are killed, frozen and stopped, seen
//! through the Workspace desktop and agent APIs, the monitor API and Cloud Eye's
//! ListAgentStatus.

use crate::harness::{Guest, Server, eventually};
use crate::{FAST, desktops_enrolled, job_done};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

/// One-second heartbeats: a desktop must be offline within three seconds of going quiet.
fn settings(heartbeat_secs: u64) -> String {
    format!("{FAST}heartbeat_secs = {heartbeat_secs}\n")
}

/// ListAgentStatus for `ids`: `(uniagent_status, telescope status, telescope version)`.
async fn ces_status(server: &Server, ids: &[&str]) -> Vec<(String, String, Option<String>)> {
    let body = serde_json::to_vec(&json!({ "instance_ids": ids })).unwrap();
    let raw = server
        .client()
        .send_under(
            "v3",
            reqwest::Method::POST,
            &["agent-status", "batch-query"],
            &[],
            Some(body),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
    let v: Value = serde_json::from_slice(&raw.body).unwrap();
    v["agent_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let ext = &s["extensions"][0];
            assert_eq!(ext["name"], "telescope");
            (
                s["uniagent_status"].as_str().unwrap().to_owned(),
                ext["status"].as_str().unwrap().to_owned(),
                ext["version"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

async fn uniagent(server: &Server, id: &str) -> String {
    ces_status(server, &[id]).await.remove(0).0
}

async fn monitor(server: &Server, id: &str) -> Value {
    let raw = server
        .client()
        .send_v2(
            reqwest::Method::GET,
            &["desktop-monitor", id],
            &[],
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 200);
    serde_json::from_slice(&raw.body).unwrap()
}

/// `(status, login_status, connection.state)` from ShowDesktopDetail.
async fn detail(server: &Server, id: &str) -> (String, String, String) {
    let d = server.client().show_desktop(id).await.unwrap().desktop;
    let state = d.connection.map(|c| c.state).unwrap_or_default();
    (d.status, d.login_status, state)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn wait_uniagent(server: &Server, id: &str, want: &str, secs: u64) -> Duration {
    let started = Instant::now();
    eventually(secs, &format!("uniagent_status {want}"), || async {
        (uniagent(server, id).await == want).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_killed_guest_is_offline_within_three_heartbeats_and_back_when_it_reconnects() {
    let server = Server::start(&settings(1)).await;
    let token = server.enrollment_token();
    let mut guest = Guest::start(&server, &token, "desk-kill");
    let id = desktops_enrolled(&server, 1).await.remove(0);
    let client = server.client();

    // Never-connected ids and another project's desktops look the same: no guest.
    assert_eq!(
        ces_status(&server, &["0123456789abcdef0123456789abcdef"]).await,
        [("none".to_owned(), "none".to_owned(), None)]
    );

    // Install the agent: online, agent running, version known.
    let job = client
        .batch_install_agent(std::slice::from_ref(&id))
        .await
        .unwrap()
        .job_id;
    assert_eq!(job_done(&server, &job, 90).await.status, "SUCCESS");
    let version = env!("CARGO_PKG_VERSION").to_owned();
    eventually(20, "telescope running", || async {
        let s = ces_status(&server, &[&id]).await.remove(0);
        (s == ("running".into(), "running".into(), Some(version.clone()))).then_some(())
    })
    .await;
    assert_eq!(
        detail(&server, &id).await,
        ("ACTIVE".into(), "REGISTERED".into(), "online".into())
    );
    let figures = eventually(20, "fresh figures", || async {
        let m = monitor(&server, &id).await;
        (m["stale"] == false && m["agent"]["healthy"] == true).then_some(m)
    })
    .await;
    assert_eq!(figures["connection"]["state"], "online");
    assert!(figures["last_seen_at"].is_string());
    assert!(figures["metrics_age_seconds"].as_f64().unwrap() <= 3.0);

    // The agent dies while its guest stays: a fault, not "running" on stale news, until
    // the guest has restarted it.
    let monitors = guest.monitor_pids();
    assert_eq!(monitors.len(), 1, "{}", guest.log());
    signal(monitors[0], "-KILL");
    eventually(10, "telescope fault", || async {
        let s = ces_status(&server, &[&id]).await.remove(0);
        (s == ("running".into(), "fault".into(), Some(version.clone()))).then_some(())
    })
    .await;
    eventually(30, "telescope running after the restart", || async {
        let s = ces_status(&server, &[&id]).await.remove(0);
        (s.1 == "running").then_some(())
    })
    .await;

    // SIGKILL: no goodbye. Its monitor is orphaned; stop it too, as a dead desktop would.
    let orphans = guest.monitor_pids();
    guest.kill();
    for pid in orphans {
        signal(pid, "-KILL");
    }
    let took = wait_uniagent(&server, &id, "unknown", 10).await;
    eprintln!("killed guest: offline after {} ms", took.as_millis());
    assert!(took < Duration::from_secs(3), "offline after {took:?}");
    assert_eq!(
        ces_status(&server, &[&id]).await,
        [("unknown".into(), "unknown".into(), Some(version.clone()))]
    );
    assert_eq!(
        detail(&server, &id).await,
        ("SHUTOFF".into(), "UNREGISTER".into(), "offline".into())
    );
    let m = monitor(&server, &id).await;
    assert_eq!(m["agent"]["healthy"], false, "{m}");
    assert_eq!(m["stale"], true);
    assert_eq!(m["connection"]["state"], "offline");
    // The lists agree, and their status filter follows the derived state.
    let shutoff = client
        .list_desktops(&[("status".into(), "SHUTOFF".into())])
        .await
        .unwrap();
    assert_eq!(shutoff.total_count, 1);
    assert_eq!(shutoff.desktops[0].connect_status, "UNREGISTER");
    let active = client
        .list_agents(&[("status".into(), "ACTIVE".into())])
        .await
        .unwrap();
    assert_eq!(active.total_count, 0);

    // Back: the same desktop reconnects with its credential.
    guest.launch(&server, &token);
    let took = wait_uniagent(&server, &id, "running", 30).await;
    eprintln!("relaunched guest: online after {} ms", took.as_millis());
    eventually(30, "telescope running again", || async {
        let s = ces_status(&server, &[&id]).await.remove(0);
        (s.1 == "running").then_some(())
    })
    .await;
    assert_eq!(
        detail(&server, &id).await,
        ("ACTIVE".into(), "REGISTERED".into(), "online".into())
    );
}

#[tokio::test]
async fn a_frozen_guest_goes_offline_without_any_disconnect() {
    // SIGSTOP keeps the TCP connection open and sends nothing: only the missing
    // heartbeats can tell.
    let server = Server::start(&settings(1)).await;
    let token = server.enrollment_token();
    let guest = Guest::start(&server, &token, "desk-frozen");
    let id = desktops_enrolled(&server, 1).await.remove(0);
    wait_uniagent(&server, &id, "running", 20).await;
    let pid = guest.pid().unwrap();
    signal(pid, "-STOP");
    let took = wait_uniagent(&server, &id, "unknown", 15).await;
    signal(pid, "-CONT");
    eprintln!("frozen guest: offline after {} ms", took.as_millis());
    // Three intervals, plus the last heartbeat's interval and a flush.
    assert!(
        took < Duration::from_millis(4_500),
        "offline after {took:?}"
    );
    assert_eq!(detail(&server, &id).await.2, "offline");
    wait_uniagent(&server, &id, "running", 30).await;
}

#[tokio::test]
async fn a_clean_guest_stop_is_offline_at_once() {
    // Ten-second heartbeats: staleness would take 30 s, the goodbye must not.
    let server = Server::start(&settings(10)).await;
    let token = server.enrollment_token();
    let mut guest = Guest::start(&server, &token, "desk-stop");
    let id = desktops_enrolled(&server, 1).await.remove(0);
    wait_uniagent(&server, &id, "running", 20).await;
    let before = detail(&server, &id).await;
    assert_eq!(before.1, "REGISTERED");
    let started = Instant::now();
    signal(guest.pid().unwrap(), "-TERM");
    guest.exited(20).await;
    wait_uniagent(&server, &id, "unknown", 5).await;
    let took = started.elapsed();
    eprintln!("stopped guest: offline after {} ms", took.as_millis());
    assert!(took < Duration::from_secs(5), "offline after {took:?}");
    let d = server.client().show_desktop(&id).await.unwrap().desktop;
    let c = d.connection.unwrap();
    assert_eq!(
        (c.state.as_str(), d.login_status.as_str()),
        ("offline", "UNREGISTER")
    );
    assert!(c.since.is_some() && c.last_seen_at.is_some());
}

/// The value of the Prometheus sample `series` (name and labels exactly as exported).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn last_seen_times_are_written_in_batches_not_per_message() {
    // One-second heartbeats: the last-seen flush runs every half second.
    let started = Instant::now();
    let server = Server::start(&settings(1)).await;
    let token = server.enrollment_token();
    let _guests: Vec<Guest> = (0..6)
        .map(|i| Guest::start(&server, &token, &format!("desk-seen-{i}")))
        .collect();
    let ids = desktops_enrolled(&server, 6).await;
    let messages = r#"deskfleet_opamp_messages_total{transport="ws"}"#;
    let flushes = r#"deskfleet_store_operation_duration_seconds_count{op="record_last_seen"}"#;
    // Enough traffic to tell one write per message from one per flush.
    let text = eventually(30, "60 guest messages", || async {
        let (status, text) = server.get("/metrics").await.ok()?;
        (status == 200 && sample(&text, messages) >= 60.0).then_some(text)
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let (messages, flushes) = (sample(&text, messages), sample(&text, flushes));
    let written = sample(&text, "deskfleet_fleet_last_seen_written_total");
    eprintln!(
        "{messages} messages from 6 guests in {elapsed:.1} s: {flushes} last-seen writes, \
         {written} desktop rows written"
    );
    assert!(flushes >= 1.0, "{text}");
    // At most one statement per flush interval, however many messages arrived.
    assert!(
        flushes <= elapsed / 0.5 + 2.0,
        "{flushes} writes in {elapsed} s"
    );
    assert!(
        flushes * 2.0 < messages,
        "{flushes} writes for {messages} messages"
    );
    // And still fresh: every desktop was seen within the last three heartbeats.
    let now = chrono::Utc::now();
    for id in &ids {
        let d = server.client().show_desktop(id).await.unwrap().desktop;
        let seen = d.connection.unwrap().last_seen_at.unwrap();
        let seen = chrono::DateTime::parse_from_rfc3339(&seen).unwrap();
        let age = now.signed_duration_since(seen).num_milliseconds();
        assert!(age < 3_000, "desktop {id} last seen {age} ms ago");
    }
}

#[tokio::test]
async fn a_server_shutdown_records_its_desktops_offline() {
    let mut server = Server::start(&settings(10)).await;
    let token = server.enrollment_token();
    let _guests: Vec<Guest> = (0..2)
        .map(|i| Guest::start(&server, &token, &format!("desk-down-{i}")))
        .collect();
    // And a plain OpAMP client polling over HTTP, held between polls.
    let mut message = crate::hostile::full_state(
        uuid::Uuid::now_v7().as_bytes(),
        "desk-down-http",
        "10.7.0.1",
    );
    message.capabilities = deskfleet_proto::opamp::AgentCapabilities::bits(&[
        deskfleet_proto::opamp::AgentCapabilities::ReportsStatus,
    ]);
    let (status, _) = crate::hostile::post(&server.opamp_url(), Some(&token), &message).await;
    assert_eq!(status, 200);
    let ids = desktops_enrolled(&server, 3).await;
    for id in &ids {
        wait_uniagent(&server, id, "running", 20).await;
    }
    let before_stop = crate::harness::now_ms();
    server
        .terminate(15)
        .expect("the server stops within 15 s with guests connected");
    // Read what the stopped server left behind: every desktop disconnected, at shutdown.
    let store = deskfleet_store::connect_data_dir(server.dir.path())
        .await
        .unwrap();
    let project =
        deskfleet_core::ids::ProjectId::parse(server.bootstrap.project_id.clone()).unwrap();
    for id in &ids {
        let id = deskfleet_core::ids::DesktopId::parse(id.clone()).unwrap();
        let c = store
            .get_desktop(&project, &id)
            .await
            .unwrap()
            .unwrap()
            .connection;
        assert_eq!(c.connected_at, None, "{id}: {c:?}");
        let at = c.disconnected_at.expect("disconnect recorded");
        assert!(
            at >= before_stop,
            "{id}: disconnected at {at}, before the stop {before_stop}"
        );
        assert!(c.last_seen_at.is_some());
    }
}
