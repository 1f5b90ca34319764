//! The audit trail end to end: each kind of change and refusal leaves exactly one trace
//! with the right user, key, address, outcome and redaction; ListTraces is its own right
//! and stays in its project; the seals, the file sink and the export verify.

use crate::helpers::{TestApp, eventually, now};
use deskfleet_client::{Client, create_token_with};
use deskfleet_core::model::Role;
use reqwest::Method;
use serde_json::Value;

async fn add_user(app: &TestApp, name: &str, role: Role) -> (String, String, String) {
    let store = app.store().await;
    let (user, password) = deskfleet_server::admin::create_user(
        store.as_ref(),
        "deskfleet",
        name,
        Some(format!("pw-{name}-123456")),
    )
    .await
    .unwrap();
    let project = deskfleet_core::ids::ProjectId::parse(app.project()).unwrap();
    store.grant_role(&user.id, &project, role).await.unwrap();
    let keyring = app.keyring().await;
    let (ak, sk) = deskfleet_server::admin::create_access_key(
        store.as_ref(),
        &keyring,
        &user.id,
        &project,
        now(),
    )
    .await
    .unwrap();
    (ak, sk, password)
}

/// ListTraces with `query`; (status, body).
async fn list(client: &Client, query: &[(&str, &str)]) -> (u16, Value) {
    let q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let raw = client
        .send_under("v3", Method::GET, &["traces"], &q, None, &[])
        .await
        .unwrap();
    (raw.status, serde_json::from_slice(&raw.body).unwrap())
}

/// Every trace of the project (last hour), newest first, via an auditor.
async fn all_traces(auditor: &Client) -> Vec<Value> {
    let (status, body) = list(auditor, &[("limit", "200")]).await;
    assert_eq!(status, 200, "{body}");
    body["traces"].as_array().unwrap().clone()
}

fn named<'a>(traces: &'a [Value], name: &str) -> Vec<&'a Value> {
    traces.iter().filter(|t| t["trace_name"] == name).collect()
}

#[tokio::test]
async fn each_change_and_refusal_leaves_exactly_one_trace() {
    let app = TestApp::spawn().await;
    let (aud_ak, aud_sk, _) = add_user(&app, "auditor", Role::Auditor).await;
    let auditor = app.client(&aud_ak, &aud_sk);
    let (ro_ak, ro_sk, _) = add_user(&app, "viewer", Role::Readonly).await;
    let admin = app.admin();
    let ids = app.import_desktops(2).await;

    // A change: one trace, committed with the job.
    let job = admin.batch_install_agent(&ids).await.unwrap().job_id;
    let traces = all_traces(&auditor).await;
    let install = named(&traces, "batchInstallCesAgent");
    assert_eq!(install.len(), 1, "{traces:?}");
    let t = install[0];
    assert_eq!(t["user"]["name"], app.bootstrap.user_name);
    assert_eq!(t["user"]["access_key_id"], app.bootstrap.access_key);
    assert_eq!(t["source_ip"], "127.0.0.1");
    assert_eq!(
        (t["code"].as_str(), t["trace_rating"].as_str()),
        (Some("200"), Some("normal"))
    );
    assert_eq!(t["service_type"], "Workspace");
    assert_eq!(t["resource_type"], "workspace");
    assert_eq!(t["resource_id"], ids.join(","));
    assert_eq!(t["read_only"], false);
    assert_eq!(t["trace_type"], "ApiCall");
    let response: Value = serde_json::from_str(t["response"].as_str().unwrap()).unwrap();
    assert_eq!(response["job_id"], job.as_str());
    let request: Value = serde_json::from_str(t["request"].as_str().unwrap()).unwrap();
    assert_eq!(request["desktop_ids"][0], ids[0].as_str());
    assert!(!t["request_id"].as_str().unwrap().is_empty());

    // A refused change (unknown desktop): one trace, a warning with the error, no job.
    let err = admin
        .batch_install_agent(&["no-such-desktop".to_string()])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    // A denial: a readonly user may not install.
    let ro = app.client(&ro_ak, &ro_sk);
    assert_eq!(
        ro.batch_install_agent(&ids).await.unwrap_err().status(),
        Some(403)
    );
    // A bad signature.
    let forged = app.client(&app.bootstrap.access_key, "not-the-secret-key");
    assert_eq!(
        forged.batch_install_agent(&ids).await.unwrap_err().status(),
        Some(401)
    );
    let traces = all_traces(&auditor).await;
    let install = named(&traces, "batchInstallCesAgent");
    assert_eq!(install.len(), 4, "{traces:?}");
    let by_code =
        |code: &str| -> Vec<&&Value> { install.iter().filter(|t| t["code"] == code).collect() };
    let bad = by_code("400");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["trace_rating"], "warning");
    assert!(
        bad[0]["location_info"]
            .as_str()
            .unwrap()
            .starts_with("WKS.0001")
    );
    let denied = by_code("403");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["user"]["name"], "viewer");
    assert_eq!(denied[0]["user"]["access_key_id"], ro_ak.as_str());
    let unsigned = by_code("401");
    assert_eq!(unsigned.len(), 1);
    assert_eq!(
        unsigned[0]["user"]["access_key_id"],
        app.bootstrap.access_key
    );
    assert_eq!(unsigned[0]["trace_rating"], "warning");

    // Job cancel, then sub-job deletion: one trace each.
    admin.job_action(&job, "cancel").await.unwrap();
    let subs = admin.show_job(&job).await.unwrap();
    let _ = subs;
    let traces = all_traces(&auditor).await;
    let cancel = named(&traces, "cancelWorkspaceJob");
    assert_eq!(cancel.len(), 1);
    assert_eq!(cancel[0]["resource_id"], job.as_str());

    // Tokens: a good login, a wrong password; the password is nowhere.
    let (_, _, viewer_password) = ("", "", "pw-viewer-123456");
    create_token_with(
        &app.options(),
        &app.endpoint(),
        "deskfleet",
        "viewer",
        viewer_password,
        app.project(),
    )
    .await
    .unwrap();
    let wrong = create_token_with(
        &app.options(),
        &app.endpoint(),
        "deskfleet",
        "viewer",
        "wrong-password-xyz",
        app.project(),
    )
    .await;
    assert!(wrong.is_err());
    let traces = all_traces(&auditor).await;
    let login = named(&traces, "createTokenByPwd");
    assert_eq!(login.len(), 1, "{traces:?}");
    assert_eq!(login[0]["service_type"], "IAM");
    assert_eq!(login[0]["user"]["name"], "viewer");
    let failed = named(&traces, "loginFailed");
    assert_eq!(failed.len(), 1, "{traces:?}");
    assert_eq!(failed[0]["trace_rating"], "warning");
    assert_eq!(failed[0]["code"], "401");
    let text = serde_json::to_string(&traces).unwrap();
    for secret in [
        viewer_password,
        "wrong-password-xyz",
        app.bootstrap.secret_key.as_str(),
        ro_sk.as_str(),
        aud_sk.as_str(),
        app.bootstrap.password.as_str(),
    ] {
        assert!(!text.contains(secret), "a secret is in a trace");
    }
    assert!(text.contains("********"), "the password was masked");

    // The whole chain verifies, and so does its export, line by line.
    let store = app.store().await;
    let v = deskfleet_core::audit::verify_store(store.as_ref())
        .await
        .unwrap();
    assert!(v.ok(), "{v:?}");
    let mut out = Vec::new();
    let n = deskfleet_server::audit::export::export(store.as_ref(), None, None, &mut out)
        .await
        .unwrap();
    assert_eq!(n, v.checked);
    let export = String::from_utf8(out).unwrap();
    let mut prev = deskfleet_core::audit::GENESIS_HASH.to_string();
    for line in export.lines() {
        assert!(deskfleet_server::audit::export::line_holds(line), "{line}");
        let l: Value = serde_json::from_str(line).unwrap();
        assert_eq!(l["prev_hash"], prev.as_str());
        prev = l["hash"].as_str().unwrap().to_owned();
    }
    for secret in [viewer_password, app.bootstrap.secret_key.as_str()] {
        assert!(!export.contains(secret), "a secret is in the export");
    }
    app.stop().await;
}

#[tokio::test]
async fn reading_traces_is_its_own_right_and_stays_in_its_project() {
    let app = TestApp::spawn().await;
    let (aud_ak, aud_sk, _) = add_user(&app, "auditor", Role::Auditor).await;
    let (ro_ak, ro_sk, _) = add_user(&app, "viewer", Role::Readonly).await;
    let auditor = app.client(&aud_ak, &aud_sk);
    let ids = app.import_desktops(1).await;
    for _ in 0..5 {
        app.admin().batch_install_agent(&ids).await.unwrap();
    }
    // readonly reads desktops but not the trail.
    let (status, body) = list(&app.client(&ro_ak, &ro_sk), &[]).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (403, Some("CTS.0013"))
    );
    // An auditor reads the trail but installs nothing.
    assert_eq!(
        auditor
            .batch_install_agent(&ids)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    // Paging: 2 + 2 + the rest, newest first, marker null at the end.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut q = vec![("limit", "2"), ("trace_name", "batchInstallCesAgent")];
        if let Some(n) = &next {
            q.push(("next", n.as_str()));
        }
        let (status, body) = list(&auditor, &q).await;
        assert_eq!(status, 200, "{body}");
        let page = body["traces"].as_array().unwrap();
        assert_eq!(body["meta_data"]["count"], page.len());
        seen.extend(page.iter().map(|t| t["time"].as_i64().unwrap()));
        match body["meta_data"]["marker"].as_str() {
            Some(m) => next = Some(m.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "5 installs and the refused one");
    // The readonly user's refused read of the trail is itself on the record.
    let traces = all_traces(&auditor).await;
    let denied = named(&traces, "authorizationDenied");
    assert_eq!(denied.len(), 1, "{traces:?}");
    assert_eq!(denied[0]["user"]["name"], "viewer");
    assert_eq!(denied[0]["service_type"], "CTS");
    assert_eq!(denied[0]["code"], "403");
    assert_eq!(denied[0]["operation_id"], "/v3/{project_id}/traces");
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first");
    // Bad queries: precise CTS.0300.
    for q in [
        vec![("limit", "201")],
        vec![("trace_type", "nope")],
        vec![("from", "1700000")],
        vec![("trace_rating", "bad")],
        vec![("next", "not-a-trace-of-this-project")],
    ] {
        let (status, body) = list(&auditor, &q).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some("CTS.0300")),
            "{q:?}"
        );
    }
    // Another project's traces are invisible: a new project with its own auditor.
    let store = app.store().await;
    let other = deskfleet_server::admin::create_project(store.as_ref(), "deskfleet", "other")
        .await
        .unwrap();
    let (user, _) = deskfleet_server::admin::create_user(
        store.as_ref(),
        "deskfleet",
        "other-auditor",
        Some("pw-other-123456".into()),
    )
    .await
    .unwrap();
    store
        .grant_role(&user.id, &other.id, Role::Auditor)
        .await
        .unwrap();
    let keyring = app.keyring().await;
    let (ak, sk) = deskfleet_server::admin::create_access_key(
        store.as_ref(),
        &keyring,
        &user.id,
        &other.id,
        now(),
    )
    .await
    .unwrap();
    let theirs = app.client(&ak, &sk).with_project(other.id.as_str());
    let (status, body) = list(&theirs, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["traces"].as_array().unwrap().len(), 0);
    // And reading our project with their key is refused.
    let (status, _) = list(&app.client(&ak, &sk), &[]).await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test]
async fn seals_are_signed_and_the_file_sink_follows_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("traces.jsonl");
    let sink_path = sink.clone();
    let app = TestApp::spawn_with(move |s| {
        s.audit.seal_interval_secs = 1;
        s.audit.file_sink = Some(sink_path);
        s.audit.file_sink_max_bytes = 2000;
        s.audit.file_sink_keep = 3;
    })
    .await;
    let ids = app.import_desktops(1).await;
    for _ in 0..2 {
        app.admin().batch_install_agent(&ids).await.unwrap();
    }
    // The first lines reach the sink before more come, so that the sink must rotate.
    let first = sink.clone();
    eventually(20, || {
        let first = first.clone();
        async move { std::fs::metadata(&first).ok().filter(|m| m.len() > 0) }
    })
    .await;
    for _ in 0..2 {
        app.admin().batch_install_agent(&ids).await.unwrap();
    }
    let store = app.store().await;
    let seal = eventually(20, || {
        let store = store.clone();
        async move {
            let seals = store.list_seals().await.unwrap();
            seals.into_iter().find(|s| s.seq >= 4)
        }
    })
    .await;
    let key = deskfleet_server::fleet::packages::read_public_key(
        &app.settings.data_dir.join("trace-seal.pub"),
    )
    .unwrap();
    assert_eq!(
        deskfleet_server::audit::seal::check_seal(&seal, &[key]),
        Ok(())
    );
    let report = deskfleet_server::audit::admin::verify(store.as_ref(), &[key])
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    // A seal signed by another key is named.
    let mut forged = seal.clone();
    forged.signed_at += 1;
    assert!(deskfleet_server::audit::seal::check_seal(&forged, &[key]).is_err());
    // The sink: every trace, rotated, each line verifiable.
    let lines = eventually(20, || {
        let sink = sink.clone();
        async move {
            let mut lines = Vec::new();
            for n in (1..=3).rev() {
                let p = std::path::PathBuf::from(format!("{}.{n}", sink.display()));
                if let Ok(t) = std::fs::read_to_string(p) {
                    lines.extend(t.lines().map(str::to_owned));
                }
            }
            if let Ok(t) = std::fs::read_to_string(&sink) {
                lines.extend(t.lines().map(str::to_owned));
            }
            (lines.len() >= 4).then_some(lines)
        }
    })
    .await;
    assert!(
        std::path::Path::new(&format!("{}.1", sink.display())).exists(),
        "the sink rotated"
    );
    for (i, line) in lines.iter().enumerate() {
        assert!(deskfleet_server::audit::export::line_holds(line));
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            v["seq"].as_i64(),
            Some(i as i64 + 1),
            "in order, none twice"
        );
    }
    app.stop().await;
}
