//! Bad input gets a precise status and code, never a 500, and writes nothing.

use crate::helpers::TestApp;
use reqwest::Method;

#[tokio::test]
async fn install_validation_errors_are_precise_and_write_nothing() {
    let app = TestApp::spawn().await;
    let ids = app.import_desktops(1).await;
    let admin = app.admin();
    let other = app.store().await;
    let domain = other
        .find_domain_by_name("deskfleet")
        .await
        .unwrap()
        .unwrap();
    let project_b = other.create_project(&domain.id, "other").await.unwrap();
    let foreign = app.import_desktops_into(project_b.id.as_str(), 1).await;

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (b"{not json".to_vec(), "not valid"),
        (br#"{"desktop_ids": "abc"}"#.to_vec(), "invalid type"),
        (br#"{"desktop_ids": [1]}"#.to_vec(), "invalid type"),
        (br#"{}"#.to_vec(), "missing field"),
        (br#"{"desktop_ids": []}"#.to_vec(), "at least one"),
        (
            serde_json::to_vec(&serde_json::json!({"desktop_ids": vec!["x"; 101]})).unwrap(),
            "at most 100",
        ),
        (
            serde_json::to_vec(&serde_json::json!({"desktop_ids": ["a".repeat(256)]})).unwrap(),
            "256",
        ),
    ];
    for (body, needle) in cases {
        let raw = admin
            .send_v2(
                Method::POST,
                &["desktops", "agents"],
                &[],
                Some(body.clone()),
                &[],
            )
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&raw.body).to_string();
        assert_eq!(raw.status, 400, "{text}");
        let err: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
        assert_eq!(err["error_code"], "WKS.0001");
        assert!(text.contains(needle), "{needle:?} not in {text}");
        assert!(raw.headers.contains_key("x-request-id"));
    }

    let unknown = vec![ids[0].clone(), "ghost-1".into(), foreign[0].clone()];
    let err = admin.batch_install_agent(&unknown).await.unwrap_err();
    match &err {
        deskfleet_client::ClientError::Api {
            status: 400,
            body: Some(body),
            ..
        } => {
            assert_eq!(body.error_code, "WKS.0001");
            assert_eq!(
                body.error_detail.as_deref(),
                Some(format!("ghost-1,{}", foreign[0]).as_str())
            );
        }
        other => panic!("{other:?}"),
    }
    // Nothing was written by the refused calls.
    assert_eq!(admin.list_sub_jobs(&[]).await.unwrap().total_count, 0);
    app.stop().await;
}

#[tokio::test]
async fn gateway_errors_for_paths_sizes_and_queries() {
    let app = TestApp::spawn_with(|s| s.max_body_bytes = 64 * 1024).await;
    let admin = app.admin();
    let http = app.http();
    for (method, path) in [
        (Method::GET, "/v2/x/nothing-here".to_string()),
        (
            Method::DELETE,
            format!("/v2/{}/desktops/agents", app.project()),
        ),
        (Method::GET, "/".to_string()),
    ] {
        let r = http
            .request(method.clone(), format!("{}{path}", app.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        assert!(r.headers().contains_key("x-request-id"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error_code"], "APIGW.0101");
        assert!(body["request_id"].is_string());
    }
    let big = vec![b' '; 65 * 1024];
    let raw = admin
        .send_v2(Method::POST, &["desktops", "agents"], &[], Some(big), &[])
        .await
        .unwrap();
    assert_eq!(raw.status, 413);
    let body: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(body["error_code"], "APIGW.0201");

    for (key, value) in [
        ("limit", "1001"),
        ("limit", "-1"),
        ("offset", "x"),
        ("is_installed", "yes"),
    ] {
        let query = vec![(key.to_string(), value.to_string())];
        let raw = admin
            .send_v2(Method::GET, &["desktops", "agents"], &query, None, &[])
            .await
            .unwrap();
        assert_eq!(raw.status, 400, "{key}={value}");
        let body: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
        assert_eq!(body["error_code"], "WKS.0001");
        assert!(body["error_msg"].as_str().unwrap().contains(key));
    }
    let raw = admin
        .send_v2(
            Method::GET,
            &["workspace-sub-jobs"],
            &[("status".into(), "DONE".into())],
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 400);
    let err = admin.show_job("no-such-job").await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(404), Some("WKS.0202"))
    );
    app.stop().await;
}
