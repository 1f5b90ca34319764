//! The agent's life through Cloud Eye, end to end: a real server, real guests and real
//! monitors driven by CES invocations (`docs/ces.md`, "Agent invocations"): an UPDATE
//! rolled back by an explicit ROLLBACK (the guest switches back to the version it kept,
//! without downloading it; a version it no longer keeps is downloaded), and an UNINSTALL
//! followed by a new INSTALL. A ROLLBACK that cannot be done (`invocationmgr.0008`) is
//! shown by the SDK tests (tests/sdk/test_ces_invocations.py) and here for a ROLLBACK
//! invocation itself.

use std::time::Instant;

use deskfleet_client::{AgentStatusQuery, CesRequest, InvocationQuery};
use serde_json::Value;

use super::desktops_enrolled;
use super::harness::{Guest, Server, bin, eventually};
use super::monitor_build::monitor_built_as;
use super::upgrade::{BUILT, NEW, confirmed, publish_binary, settings, state};

/// BatchCreateAgentInvocations on instances; the invocation ids, asserting every target
/// was taken.
async fn create(server: &Server, kind: &str, ids: &[String], version: Option<&str>) -> Vec<String> {
    let r = server
        .client()
        .ces(&CesRequest::create_invocations(kind, ids, version))
        .await
        .unwrap();
    created(&r)
}

fn created(r: &Value) -> Vec<String> {
    r["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["ret_status"], "successful", "{r}");
            i["invocation_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// One invocation as ListAgentInvocations shows it.
async fn invocation(server: &Server, id: &str) -> Option<Value> {
    let r = server
        .client()
        .ces(&CesRequest::list_invocations(&InvocationQuery {
            invocation_id: Some(id.to_string()),
            ..Default::default()
        }))
        .await
        .ok()?;
    r["invocations"].as_array()?.first().cloned()
}

/// Waits until invocation `id` ends; fails if it ends in another status than `status`.
async fn ends(server: &Server, id: &str, status: &str, secs: u64) -> Value {
    let done = eventually(secs, &format!("invocation {id} ended"), || async {
        let inv = invocation(server, id).await?;
        (!matches!(inv["invocation_status"].as_str()?, "PENDING" | "RUNNING")).then_some(inv)
    })
    .await;
    assert_eq!(
        done["invocation_status"],
        status,
        "{done:#}\n{}",
        server.log()
    );
    done
}

/// ListAgentStatus of `ids`, by instance: (uniagent_status, telescope status, version).
async fn agent_status(server: &Server, ids: &[String]) -> Vec<(String, String, Option<String>)> {
    let r = server
        .client()
        .ces(&CesRequest::agent_status(&AgentStatusQuery {
            instance_ids: ids.to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap();
    r["agent_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let ext = &a["extensions"][0];
            assert_eq!(ext["name"], "telescope", "{a}");
            (
                a["uniagent_status"].as_str().unwrap().to_string(),
                ext["status"].as_str().unwrap().to_string(),
                ext["version"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Waits until every desktop of `ids` shows `(uniagent, telescope, version)`.
async fn status_is(server: &Server, ids: &[String], want: (&str, &str, Option<&str>)) {
    eventually(30, &format!("ListAgentStatus shows {want:?}"), || async {
        agent_status(server, ids)
            .await
            .iter()
            .all(|(u, t, v)| (u.as_str(), t.as_str(), v.as_deref()) == want)
            .then_some(())
    })
    .await;
}

/// Packages the server has served (`deskfleet_package_downloads_total{result="ok"}`).
async fn downloads(server: &Server) -> u64 {
    let (status, text) = server.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    text.lines()
        .find(|l| l.starts_with("deskfleet_package_downloads_total{result=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_update_through_ces_is_rolled_back_to_the_kept_version_without_a_download() {
    let new_monitor = monitor_built_as(NEW);
    let server = Server::start(&settings()).await;
    publish_binary(&server, &bin("deskfleet-monitor"), BUILT);
    let token = server.enrollment_token();
    let guests: Vec<Guest> = (0..3)
        .map(|i| Guest::start(&server, &token, &format!("ces-rb-{i}")))
        .collect();
    let ids = desktops_enrolled(&server, 3).await;
    for inv in create(&server, "INSTALL", &ids, Some(BUILT)).await {
        ends(&server, &inv, "SUCCEEDED", 60).await;
    }
    status_is(&server, &ids, ("running", "running", Some(BUILT))).await;
    for g in &guests {
        confirmed(g, BUILT, None).await;
    }

    publish_binary(&server, &new_monitor, NEW);
    let started = Instant::now();
    let updates = create(&server, "UPDATE", &ids, Some(NEW)).await;
    for inv in &updates {
        let done = ends(&server, inv, "SUCCEEDED", 60).await;
        assert_eq!(done["invocation_type"], "UPDATE");
        assert_eq!(done["current_version"], BUILT, "{done:#}");
        assert_eq!(done["target_version"], NEW, "{done:#}");
    }
    status_is(&server, &ids, ("running", "running", Some(NEW))).await;
    for g in &guests {
        confirmed(g, NEW, Some(BUILT)).await;
    }
    eprintln!("CES UPDATE of 3 desktops to {NEW}: {:?}", started.elapsed());

    // The ROLLBACK: nothing is downloaded, each guest switches back to what it kept.
    let served = downloads(&server).await;
    assert!(
        served >= 6,
        "installs and updates were downloaded: {served}"
    );
    let started = Instant::now();
    let r = server
        .client()
        .ces(&CesRequest::act_on_invocations("ROLLBACK", &updates))
        .await
        .unwrap();
    let rollbacks = created(&r);
    assert_eq!(rollbacks.len(), 3);
    assert!(
        rollbacks.iter().all(|r| !updates.contains(r)),
        "a ROLLBACK is a new invocation"
    );
    for inv in &rollbacks {
        let done = ends(&server, inv, "ROLLBACKED", 60).await;
        assert_eq!(done["invocation_type"], "ROLLBACK");
        assert_eq!(done["target_version"], BUILT, "{done:#}");
    }
    for inv in &updates {
        let undone = invocation(&server, inv).await.unwrap();
        assert_eq!(undone["invocation_status"], "ROLLBACKED", "{undone:#}");
    }
    status_is(&server, &ids, ("running", "running", Some(BUILT))).await;
    for g in &guests {
        confirmed(g, BUILT, Some(NEW)).await;
        assert!(
            g.log().contains(
                "the offered version is the kept previous one; switching back without a download"
            ),
            "{}",
            g.log()
        );
    }
    assert_eq!(
        downloads(&server).await,
        served,
        "the rollback downloaded nothing"
    );
    eprintln!(
        "CES ROLLBACK of 3 desktops to the kept {BUILT}: {:?}",
        started.elapsed()
    );

    // A ROLLBACK is not rolled back itself.
    let r = server
        .client()
        .ces(&CesRequest::act_on_invocations("ROLLBACK", &rollbacks[..1]))
        .await
        .unwrap();
    let refused = &r["invocations"][0];
    assert_eq!(refused["ret_status"], "error", "{r}");
    assert_eq!(refused["error_code"], "invocationmgr.0008", "{r}");

    // Upgraded again: the version kept since the rollback is switched to, again without
    // a download.
    for inv in create(&server, "UPDATE", &ids, Some(NEW)).await {
        let done = ends(&server, &inv, "SUCCEEDED", 60).await;
        assert_eq!(done["current_version"], BUILT, "{done:#}");
    }
    status_is(&server, &ids, ("running", "running", Some(NEW))).await;
    for g in &guests {
        confirmed(g, NEW, Some(BUILT)).await;
    }
    assert_eq!(downloads(&server).await, served, "nothing downloaded");
}

#[tokio::test]
async fn uninstall_through_ces_removes_the_agent_and_keeps_the_guest() {
    let server = Server::start(&settings()).await;
    publish_binary(&server, &bin("deskfleet-monitor"), BUILT);
    let token = server.enrollment_token();
    let guest = Guest::start(&server, &token, "ces-un-1");
    let ids = desktops_enrolled(&server, 1).await;
    let install = create(&server, "INSTALL", &ids, None).await;
    ends(&server, &install[0], "SUCCEEDED", 60).await;
    status_is(&server, &ids, ("running", "running", Some(BUILT))).await;
    confirmed(&guest, BUILT, None).await;
    let monitor = guest.monitor_pids();
    assert_eq!(monitor.len(), 1);
    let installed = guest.state_dir.path().join("agents/deskfleet-monitor");
    assert!(installed.join(BUILT).is_dir());

    let started = Instant::now();
    let uninstall = create(&server, "UNINSTALL", &ids, None).await;
    let done = ends(&server, &uninstall[0], "SUCCEEDED", 60).await;
    let took = started.elapsed();
    assert_eq!(done["invocation_type"], "UNINSTALL");
    assert_eq!(done["result_msg"], "the agent was removed", "{done:#}");
    status_is(&server, &ids, ("running", "none", None)).await;
    // The agent is gone, process and files; the guest is still there and connected.
    assert!(
        !std::path::Path::new(&format!("/proc/{}", monitor[0])).exists(),
        "the monitor process {} still runs",
        monitor[0]
    );
    assert!(guest.monitor_pids().is_empty());
    assert!(
        !installed.exists(),
        "{} is still there",
        installed.display()
    );
    assert!(state(&guest)["package"].is_null(), "{:#}", state(&guest));
    let pid = guest.pid().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // For three heartbeat intervals it stays connected, without an agent.
    let since = Instant::now();
    eventually(10, "three heartbeats without an agent", || async {
        assert_eq!(
            agent_status(&server, &ids).await,
            [("running".to_string(), "none".to_string(), None)]
        );
        (since.elapsed().as_secs() >= 3).then_some(())
    })
    .await;
    eprintln!("CES UNINSTALL: SUCCEEDED after {took:?}");

    // A new INSTALL works again.
    let again = create(&server, "INSTALL", &ids, None).await;
    let done = ends(&server, &again[0], "SUCCEEDED", 60).await;
    assert!(done["current_version"].is_null(), "{done:#}");
    status_is(&server, &ids, ("running", "running", Some(BUILT))).await;
    confirmed(&guest, BUILT, None).await;
}

#[tokio::test]
async fn a_rollback_to_a_version_no_longer_on_disk_downloads_it() {
    let new_monitor = monitor_built_as(NEW);
    let server = Server::start(&settings()).await;
    publish_binary(&server, &bin("deskfleet-monitor"), BUILT);
    publish_binary(&server, &new_monitor, NEW);
    let token = server.enrollment_token();
    let guest = Guest::start(&server, &token, "ces-dl-1");
    let ids = desktops_enrolled(&server, 1).await;
    let install = create(&server, "INSTALL", &ids, Some(BUILT)).await;
    ends(&server, &install[0], "SUCCEEDED", 60).await;
    let update = create(&server, "UPDATE", &ids, Some(NEW)).await;
    ends(&server, &update[0], "SUCCEEDED", 60).await;
    confirmed(&guest, NEW, Some(BUILT)).await;

    // Uninstalled (both versions removed), then installed again at the newest: the
    // desktop no longer keeps the version the UPDATE replaced.
    let uninstall = create(&server, "UNINSTALL", &ids, None).await;
    ends(&server, &uninstall[0], "SUCCEEDED", 60).await;
    let install = create(&server, "INSTALL", &ids, None).await;
    let done = ends(&server, &install[0], "SUCCEEDED", 60).await;
    assert_eq!(done["target_version"], NEW, "{done:#}");
    confirmed(&guest, NEW, None).await;

    // Rolling the UPDATE back offers its earlier version, which is downloaded.
    let served = downloads(&server).await;
    let r = server
        .client()
        .ces(&CesRequest::act_on_invocations("ROLLBACK", &update))
        .await
        .unwrap();
    let rollback = created(&r);
    let done = ends(&server, &rollback[0], "ROLLBACKED", 60).await;
    assert_eq!(done["target_version"], BUILT, "{done:#}");
    assert_eq!(done["current_version"], NEW, "{done:#}");
    status_is(&server, &ids, ("running", "running", Some(BUILT))).await;
    confirmed(&guest, BUILT, Some(NEW)).await;
    assert_eq!(downloads(&server).await, served + 1, "one download");
}
