//! Authentication, authorisation and throttling as a client sees them.

use crate::helpers::{TestApp, now};
use deskfleet_client::{ClientError, create_token_with};
use deskfleet_core::model::Role;
use deskfleet_server::auth::policy::Denial;
use reqwest::Method;

fn api_error(e: &ClientError) -> (u16, String, String) {
    match e {
        ClientError::Api {
            status,
            body: Some(b),
            request_id,
            ..
        } => {
            assert!(
                request_id.as_deref().is_some_and(|r| !r.is_empty()),
                "no request id"
            );
            (*status, b.error_code.clone(), b.error_msg.clone())
        }
        other => panic!("not an API error: {other:?}"),
    }
}

async fn add_user(app: &TestApp, name: &str, role: Role) -> (String, String, String) {
    let store = app.store().await;
    let (user, password) = deskfleet_server::admin::create_user(
        store.as_ref(),
        "deskfleet",
        name,
        Some("pw-123456".into()),
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

#[tokio::test]
async fn bad_signatures_are_refused_and_lock_the_key() {
    let app = TestApp::spawn().await;
    let good = app.admin();
    let wrong = app.client(&app.bootstrap.access_key, "not-the-secret");
    for _ in 0..4 {
        let (status, code, msg) = api_error(&wrong.list_desktops(&[]).await.unwrap_err());
        assert_eq!((status, code.as_str()), (401, "APIGW.0301"));
        assert!(msg.ends_with("verify aksk signature fail"), "{msg}");
    }
    // A good signature resets the count of consecutive failures.
    good.list_desktops(&[]).await.unwrap();
    for _ in 0..5 {
        wrong.list_desktops(&[]).await.unwrap_err();
    }
    let (status, _, msg) = api_error(&good.list_desktops(&[]).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(
        msg.ends_with("AK access failed to reach the limit,forbidden"),
        "{msg}"
    );

    let unknown = app.client("NOSUCHKEY00000000000", "x");
    let (_, _, msg) = api_error(&unknown.list_desktops(&[]).await.unwrap_err());
    assert!(msg.ends_with("Get secretKey failed"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn stale_dates_missing_and_malformed_credentials_are_401() {
    let app = TestApp::spawn().await;
    let admin = app.admin();
    let stale = admin
        .send_v2(
            Method::GET,
            &["desktops"],
            &[],
            None,
            &[("X-Sdk-Date", "20200101T000000Z")],
        )
        .await
        .unwrap();
    assert_eq!(stale.status, 401);
    let body: serde_json::Value = serde_json::from_slice(&stale.body).unwrap();
    assert_eq!(body["error_code"], "APIGW.0301");
    assert!(body["error_detail"].as_str().unwrap().contains("clock"));

    let http = app.http();
    let url = format!("{}/v2/{}/desktops", app.endpoint(), app.project());
    for (name, value, needle) in [
        ("x-none", "x", "x-auth-token not found"),
        ("authorization", "Basic abc", "verify aksk signature fail"),
        (
            "authorization",
            "SDK-HMAC-SHA256 Access=A, Signature=zz",
            "verify aksk signature fail",
        ),
        ("x-auth-token", "DFT1garbage", "decrypt token fail"),
    ] {
        let r = http.get(&url).header(name, value).send().await.unwrap();
        assert_eq!(r.status(), 401, "{name}: {value}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error_code"], "APIGW.0301");
        assert!(
            body["error_msg"].as_str().unwrap().ends_with(needle),
            "{body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn tokens_work_on_every_call_and_expire() {
    let app = TestApp::spawn().await;
    let b = &app.bootstrap;
    let (token, body) = create_token_with(
        &app.options(),
        &app.endpoint(),
        &b.domain_name,
        &b.user_name,
        &b.password,
        app.project(),
    )
    .await
    .unwrap();
    assert_eq!(body.token.project.as_ref().unwrap().id, app.project());
    assert_eq!(body.token.roles[0].name, "admin");
    let ids = app.import_desktops(1).await;
    let client = app.token_client(&token);
    let job = client.batch_install_agent(&ids).await.unwrap();
    assert_eq!(
        client.show_job(&job.job_id).await.unwrap().sub_jobs_total,
        1
    );

    let wrong = create_token_with(
        &app.options(),
        &app.endpoint(),
        &b.domain_name,
        &b.user_name,
        "wrong",
        app.project(),
    )
    .await;
    assert_eq!(wrong.unwrap_err().status(), Some(401));
    app.stop().await;

    let short = TestApp::spawn_with(|s| s.auth.token_ttl_secs = 0).await;
    let b = &short.bootstrap;
    let (token, _) = create_token_with(
        &short.options(),
        &short.endpoint(),
        &b.domain_name,
        &b.user_name,
        &b.password,
        short.project(),
    )
    .await
    .unwrap();
    let (status, _, msg) = api_error(
        &short
            .token_client(&token)
            .list_desktops(&[])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);
    assert!(msg.contains("token expires, expires_at: "), "{msg}");
    short.stop().await;
}

#[tokio::test]
async fn roles_and_projects_are_enforced_with_a_decodable_denial() {
    let app = TestApp::spawn().await;
    let ids = app.import_desktops(1).await;
    let (ak, sk, _) = add_user(&app, "viewer", Role::Readonly).await;
    let viewer = app.client(&ak, &sk);
    viewer.list_desktops(&[]).await.unwrap();
    let err = viewer.batch_install_agent(&ids).await.unwrap_err();
    let (status, code, _) = api_error(&err);
    assert_eq!((status, code.as_str()), (403, "WKS.0403"));
    let ClientError::Api {
        body: Some(body), ..
    } = err
    else {
        unreachable!()
    };
    let denial = Denial::decode(body.encoded_authorization_message.as_deref().unwrap()).unwrap();
    assert_eq!(denial.action, "workspace:desktops:batchInstallAgents");
    assert_eq!(denial.user_name, "viewer");
    assert_eq!(denial.role.as_deref(), Some("readonly"));

    // The admin's key is bound to its project: another project's path is denied.
    let store = app.store().await;
    let domain = store
        .find_domain_by_name("deskfleet")
        .await
        .unwrap()
        .unwrap();
    let other = store.create_project(&domain.id, "other").await.unwrap();
    let elsewhere = app.admin().with_project(other.id.as_str());
    let (status, code, _) = api_error(&elsewhere.list_desktops(&[]).await.unwrap_err());
    assert_eq!((status, code.as_str()), (403, "WKS.0403"));
    app.stop().await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        s.throttle.writes_per_minute = 2;
        s.throttle.reads_per_minute = 3;
    })
    .await;
    let ids = app.import_desktops(1).await;
    let admin = app.admin();
    admin.batch_install_agent(&ids).await.unwrap();
    admin.batch_install_agent(&ids).await.unwrap();
    let raw = admin
        .send_v2(
            Method::POST,
            &["desktops", "agents"],
            &[],
            Some(serde_json::to_vec(&serde_json::json!({"desktop_ids": ids})).unwrap()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 429);
    let retry_after: u64 = raw.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(body["error_code"], "APIGW.0308");
    // Reads have their own allowance, per API.
    for _ in 0..3 {
        admin.list_desktops(&[]).await.unwrap();
    }
    assert_eq!(
        admin.list_desktops(&[]).await.unwrap_err().status(),
        Some(429)
    );
    admin.list_sub_jobs(&[]).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn enrollment_tokens_are_written_by_admins_and_kept_to_their_project() {
    let app = TestApp::spawn().await;
    let (ak, sk, _) = add_user(&app, "viewer", Role::Readonly).await;
    let viewer = app.client(&ak, &sk);
    // A reader sees the versions but makes no token.
    viewer.list_agent_packages().await.unwrap();
    let (status, code, _) = api_error(
        &viewer
            .create_enrollment_token(None, None)
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (403, "WKS.0403"));

    let admin = app.admin();
    let made = admin.create_enrollment_token(None, Some(1)).await.unwrap();
    let token = made["enrollment_token"].as_str().unwrap().to_owned();
    assert_eq!(made["project_id"], app.project());
    let (status, code, _) = api_error(&viewer.revoke_enrollment_token(&token).await.unwrap_err());
    assert_eq!((status, code.as_str()), (403, "WKS.0403"));

    // Another project's token is not this project's to take back, and stays valid.
    let store = app.store().await;
    let domain = store
        .find_domain_by_name("deskfleet")
        .await
        .unwrap()
        .unwrap();
    let other = store.create_project(&domain.id, "other").await.unwrap();
    let (foreign, _) =
        deskfleet_server::admin::create_enrollment_token(store.as_ref(), &other.id, None, 1, now())
            .await
            .unwrap();
    let (status, code, _) = api_error(&admin.revoke_enrollment_token(&foreign).await.unwrap_err());
    assert_eq!((status, code.as_str()), (404, "WKS.0202"));
    let hash = deskfleet_server::auth::secrets::sha256_hex(&foreign);
    assert!(
        store
            .find_enrollment_token(&hash, now())
            .await
            .unwrap()
            .is_some()
    );

    // Its own is taken back once.
    assert_eq!(
        admin.revoke_enrollment_token(&token).await.unwrap()["revoked"],
        true
    );
    let (status, _, _) = api_error(&admin.revoke_enrollment_token(&token).await.unwrap_err());
    assert_eq!(status, 404);
    app.stop().await;
}
