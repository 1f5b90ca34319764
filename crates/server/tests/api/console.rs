//! The web console's sign-in, session and forgery rules, through real HTTP requests: the
//! cookie's flags, sign-out ending the session wherever its cookie was copied, expired
//! sessions sent back to the sign-in page, the CSRF token and the origin check on every
//! POST, a readonly user refused a write, and wrong passwords counted against the same
//! lockout as the IAM token API.

use crate::helpers::{TestApp, now};
use deskfleet_core::console::ConsoleSession;
use deskfleet_core::model::Role;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};

const COOKIE_NAME: &str = "__Host-deskfleet-console";

/// A client that trusts the server's CA and does not follow redirects (they are checked).
fn browser(app: &TestApp) -> reqwest::Client {
    let pem = std::fs::read(app.settings.data_dir.join("ca.pem")).unwrap();
    let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    for cert in reqwest::Certificate::from_pem_bundle(&pem).unwrap() {
        b = b.add_root_certificate(cert);
    }
    b.build().unwrap()
}

fn url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.endpoint())
}

async fn sign_in(
    app: &TestApp,
    http: &reqwest::Client,
    user: &str,
    password: &str,
) -> reqwest::Response {
    http.post(url(app, "/console/login"))
        .form(&[
            ("domain", app.bootstrap.domain_name.as_str()),
            ("user", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

/// The `name=value` of the session cookie a sign-in set.
fn session_cookie(response: &reqwest::Response) -> String {
    let set = response
        .headers()
        .get(SET_COOKIE)
        .expect("a sign-in sets the session cookie")
        .to_str()
        .unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// The CSRF token in the hidden field of a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf_token\" value=\"")
        .expect("the page has a form with the CSRF field");
    let rest = &html[at + "name=\"csrf_token\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn get(app: &TestApp, http: &reqwest::Client, path: &str, cookie: &str) -> reqwest::Response {
    http.get(url(app, path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

/// Every trace recorded (failed sign-ins have no project yet), newest first.
async fn traces(app: &TestApp) -> Vec<deskfleet_core::audit::Trace> {
    let store = app.store().await;
    let mut all: Vec<deskfleet_core::audit::Trace> = store
        .trace_chain(1, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|t| serde_json::from_str(&t.content).unwrap())
        .collect();
    all.reverse();
    all
}

/// The console's traces named `name`.
async fn console_traces(app: &TestApp, name: &str) -> Vec<deskfleet_core::audit::Trace> {
    traces(app)
        .await
        .into_iter()
        .filter(|t| t.trace_type == "ConsoleAction" && t.trace_name == name)
        .collect()
}

fn location(r: &reqwest::Response) -> &str {
    r.headers().get(LOCATION).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session() {
    let app = TestApp::spawn().await;
    let http = browser(&app);
    let anonymous = http.get(url(&app, "/console/")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&anonymous), "/console/login?reason=signin");

    let wrong = sign_in(&app, &http, &app.bootstrap.user_name, "not-the-password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(wrong.text().await.unwrap().contains("password is wrong"));

    let ok = sign_in(
        &app,
        &http,
        &app.bootstrap.user_name,
        &app.bootstrap.password,
    )
    .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&ok), "/console/");
    let set = ok.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing from {set}");
    }
    assert!(set.starts_with(&format!("{COOKIE_NAME}=")), "{set}");
    let cookie = session_cookie(&ok);

    let overview = get(&app, &http, "/console/", &cookie).await;
    assert_eq!(overview.status(), StatusCode::OK);
    assert_eq!(overview.headers().get("cache-control").unwrap(), "no-store");
    let html = overview.text().await.unwrap();
    assert!(html.contains("<h1>Overview</h1>"), "{html}");
    assert!(
        html.contains("href=\"/openapi.json\""),
        "the API reference is linked"
    );
    let csrf = csrf_of(&html);

    // Sign-out without the token, with a wrong one, or from another origin: refused.
    for (form, origin) in [
        (vec![], None),
        (vec![("csrf_token", "0".repeat(64))], None),
        (
            vec![("csrf_token", csrf.clone())],
            Some("https://evil.example"),
        ),
    ] {
        let mut request = http
            .post(url(&app, "/console/logout"))
            .header(COOKIE, &cookie)
            .form(&form);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::FORBIDDEN,
            "{form:?} {origin:?}"
        );
        let body = refused.text().await.unwrap();
        assert!(body.contains("WKS.0403"), "the code is shown: {body}");
        assert!(body.contains("forgery"), "{body}");
    }
    assert_eq!(
        get(&app, &http, "/console/", &cookie).await.status(),
        StatusCode::OK,
        "a refused sign-out leaves the session"
    );

    let out = http
        .post(url(&app, "/console/logout"))
        .header(COOKIE, &cookie)
        .header(ORIGIN, app.endpoint())
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()
            .get(SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = get(&app, &http, "/console/", &cookie).await;
    assert_eq!(
        after.status(),
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
    assert!(location(&after).starts_with("/console/login"));
    app.stop().await;
}

#[tokio::test]
async fn expired_sessions_go_back_to_sign_in() {
    let app = TestApp::spawn().await;
    let http = browser(&app);
    let store = app.store().await;
    let admin = deskfleet_server::admin::find_user(
        store.as_ref(),
        &app.bootstrap.domain_name,
        &app.bootstrap.user_name,
    )
    .await
    .unwrap();
    let project = deskfleet_core::ids::ProjectId::parse(app.project()).unwrap();
    let t = now();
    let idle_ms = app.settings.console.idle_timeout_secs as i64 * 1000;
    // (id, created, last seen, absolute end): idle too long; past its end; fine.
    let sessions = [
        (
            "idle",
            t - idle_ms - 5_000,
            t - idle_ms - 1_000,
            t + 3_600_000,
        ),
        ("ended", t - 7_200_000, t - 1_000, t - 1_000),
        ("fresh", t - 1_000, t - 1_000, t + 3_600_000),
    ];
    for (id, created_at, last_seen_at, expires_at) in sessions {
        let session = ConsoleSession {
            user_id: admin.id.clone(),
            project_id: project.clone(),
            created_at,
            last_seen_at,
            expires_at,
        };
        store
            .create_console_session(&deskfleet_server::auth::secrets::sha256_hex(id), &session)
            .await
            .unwrap();
    }
    for id in ["idle", "ended"] {
        let r = get(&app, &http, "/console/", &format!("{COOKIE_NAME}={id}")).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{id}");
        assert_eq!(location(&r), "/console/login?reason=expired", "{id}");
        let r = get(&app, &http, "/console/", &format!("{COOKIE_NAME}={id}")).await;
        assert_eq!(
            location(&r),
            "/console/login?reason=signin",
            "{id}: the expired row was deleted"
        );
    }
    let fresh = get(&app, &http, "/console/", &format!("{COOKIE_NAME}=fresh")).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_readonly_user_sees_no_controls_and_a_forged_write_is_refused() {
    let app = TestApp::spawn().await;
    let http = browser(&app);
    let ids = app.import_desktops(3).await;
    let store = app.store().await;
    let (ro, password) = deskfleet_server::admin::create_user(
        store.as_ref(),
        &app.bootstrap.domain_name,
        "viewer",
        Some("viewer-password-1".into()),
    )
    .await
    .unwrap();
    let project = deskfleet_core::ids::ProjectId::parse(app.project()).unwrap();
    store
        .grant_role(&ro.id, &project, Role::Readonly)
        .await
        .unwrap();

    let signed = sign_in(&app, &http, "viewer", &password).await;
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(&signed);
    let page = get(&app, &http, "/console/desktops", &cookie).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("wks-0000"), "the desktops are listed");
    assert!(
        !html.contains("Install on"),
        "no install control for readonly"
    );
    assert!(!html.contains("name=\"desktop_id\""), "no checkboxes");
    assert!(
        !html.contains("Upgrade selected"),
        "no upgrade control for readonly"
    );
    assert!(
        !html.contains("href=\"/console/users\""),
        "no users page in the navigation"
    );
    for path in ["/console/users", "/console/enrollment"] {
        let r = get(&app, &http, path, &cookie).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let csrf = csrf_of(&html);

    let forged = http
        .post(url(&app, "/console/install"))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("scope", "selected"),
            ("desktop_id", ids[0].as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let body = forged.text().await.unwrap();
    assert!(body.contains("WKS.0403"), "{body}");
    assert!(
        body.contains("role readonly does not grant workspace:desktops:batchInstallAgents"),
        "{body}"
    );
    let (jobs, _) = store
        .list_job_progress(
            &project,
            deskfleet_core::model::Page {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(jobs, 0, "no job was created");
    // The refusal is on the record, as the API's would be: who, what, and why.
    let refused = console_traces(&app, "batchInstallCesAgent").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    let t = &refused[0];
    assert_eq!(
        (t.code.as_str(), t.trace_rating.as_str()),
        ("403", "warning")
    );
    assert_eq!(t.user.name, "viewer");
    assert_eq!(t.user.invoked_by, vec!["service.console".to_owned()]);
    assert!(
        t.location_info.as_deref().unwrap().contains("WKS.0403"),
        "{t:?}"
    );
    assert!(
        !t.request.contains(&csrf),
        "the CSRF token is not kept: {}",
        t.request
    );
    assert!(t.request.contains(ids[0].as_str()), "{}", t.request);
    // Reading the trail is the auditors' and administrators': no page, no link.
    assert!(!html.contains("href=\"/console/audit\""));
    let audit = get(&app, &http, "/console/audit", &cookie).await;
    assert_eq!(audit.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_installs_from_the_console_with_the_api_rules() {
    let app = TestApp::spawn().await;
    let http = browser(&app);
    let ids = app.import_desktops(2).await;
    let signed = sign_in(
        &app,
        &http,
        &app.bootstrap.user_name,
        &app.bootstrap.password,
    )
    .await;
    let cookie = session_cookie(&signed);
    let confirm = get(
        &app,
        &http,
        &format!("/console/install?scope=selected&desktop_id={}", ids[0]),
        &cookie,
    )
    .await;
    assert_eq!(confirm.status(), StatusCode::OK);
    let csrf = csrf_of(&confirm.text().await.unwrap());
    // The API's validation, in the API's words: a bad rollout limit.
    let bad = http
        .post(url(&app, "/console/install"))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("scope", "selected"),
            ("desktop_id", ids[0].as_str()),
            ("max_concurrency", "lots"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("WKS.0001"));
    let made = http
        .post(url(&app, "/console/install"))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("scope", "filter"),
            ("q", "wks-"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    let job_page = location(&made).to_owned();
    assert!(job_page.starts_with("/console/jobs/"), "{job_page}");
    let progress = get(&app, &http, &format!("{job_page}/progress"), &cookie).await;
    assert_eq!(progress.status(), StatusCode::OK);
    let json: serde_json::Value = progress.json().await.unwrap();
    assert_eq!(json["sub_jobs"].as_array().unwrap().len(), 2, "{json}");

    // The sign-in and both forms are on the record as console actions: the refused one
    // with its error, the other committed with its job.
    let signed_in = console_traces(&app, "login").await;
    assert_eq!(signed_in.len(), 1, "{signed_in:?}");
    assert!(!signed_in[0].request.contains(&app.bootstrap.password));
    assert!(
        signed_in[0].request.contains("********"),
        "{}",
        signed_in[0].request
    );
    let installs = console_traces(&app, "batchInstallCesAgent").await;
    assert_eq!(installs.len(), 2, "{installs:?}");
    let (made_trace, bad_trace) = (&installs[0], &installs[1]);
    let job_id = job_page.trim_start_matches("/console/jobs/");
    assert_eq!(made_trace.code, "200");
    assert_eq!(made_trace.trace_rating, "normal");
    assert!(made_trace.response.contains(job_id), "{made_trace:?}");
    assert!(
        made_trace.request.contains("\"scope\":\"filter\""),
        "{}",
        made_trace.request
    );
    assert!(!made_trace.request.contains("csrf_token"));
    assert_eq!(made_trace.user.name, app.bootstrap.user_name);
    assert_eq!(
        (bad_trace.code.as_str(), bad_trace.trace_rating.as_str()),
        ("400", "warning")
    );
    assert!(
        bad_trace
            .location_info
            .as_deref()
            .unwrap()
            .contains("WKS.0001")
    );

    // The audit page shows them, filtered as ListTraces filters; the job links to it.
    let job_html = get(&app, &http, &job_page, &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(job_html.contains("Traces of this job"), "{job_html}");
    let audit = get(
        &app,
        &http,
        "/console/audit?window=1h&trace_name=batchInstallCesAgent&trace_rating=warning",
        &cookie,
    )
    .await;
    assert_eq!(audit.status(), StatusCode::OK);
    let audit = audit.text().await.unwrap();
    assert!(audit.contains(&bad_trace.trace_id), "{audit}");
    assert!(
        !audit.contains(&made_trace.trace_id),
        "the rating filter applies"
    );
    assert!(audit.contains("ConsoleAction"));
    let wrong = get(&app, &http, "/console/audit?window=forever", &cookie).await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn wrong_console_passwords_lock_the_api_login_too() {
    let app = TestApp::spawn_with(|s| {
        s.auth.login_lockout_failures = 2;
    })
    .await;
    let http = browser(&app);
    for _ in 0..2 {
        let r = sign_in(&app, &http, &app.bootstrap.user_name, "wrong").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let locked = sign_in(
        &app,
        &http,
        &app.bootstrap.user_name,
        &app.bootstrap.password,
    )
    .await;
    assert_eq!(locked.status(), StatusCode::UNAUTHORIZED);
    assert!(locked.text().await.unwrap().contains("locked"));
    let token = http
        .post(url(&app, "/v3/auth/tokens"))
        .json(&serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": app.bootstrap.user_name,
                "password": app.bootstrap.password,
                "domain": {"name": app.bootstrap.domain_name}}}},
            "scope": {"project": {"id": app.project()}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::UNAUTHORIZED);
    assert!(token.text().await.unwrap().contains("locked"));
    // Each wrong console password left a loginFailed trace, without the password.
    let failed = console_traces(&app, "loginFailed").await;
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed.iter().all(|t| t.trace_rating != "normal"));
    assert!(failed.iter().all(|t| !t.request.contains("wrong")));
    app.stop().await;
}

/// POSTs a form with the session's token (taken from `page`) and returns the response.
async fn post_form(
    app: &TestApp,
    http: &reqwest::Client,
    cookie: &str,
    page: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let html = get(app, http, page, cookie).await.text().await.unwrap();
    let csrf = csrf_of(&html);
    let mut form: Vec<(&str, &str)> = vec![("csrf_token", csrf.as_str())];
    form.extend_from_slice(fields);
    http.post(url(app, path))
        .header(COOKIE, cookie)
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// The `value` of the input with this id.
fn input_value(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .expect("the input is there");
    let rest = &html[at..];
    let v = rest.find("value=\"").unwrap() + "value=\"".len();
    rest[v..v + rest[v..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn an_admin_manages_enrollment_tokens_users_and_access_keys() {
    let app = TestApp::spawn().await;
    let http = browser(&app);
    let signed = sign_in(
        &app,
        &http,
        &app.bootstrap.user_name,
        &app.bootstrap.password,
    )
    .await;
    let cookie = session_cookie(&signed);
    let store = app.store().await;

    // An enrollment token, shown once with the guest's command line; then revoked.
    let made = post_form(
        &app,
        &http,
        &cookie,
        "/console/enrollment",
        "/console/enrollment",
        &[("ttl_hours", "2"), ("desktop", "")],
    )
    .await;
    assert_eq!(made.status(), StatusCode::OK);
    let html = made.text().await.unwrap();
    let token = input_value(&html, "token-value");
    assert!(token.starts_with("DFE1"), "{token}");
    assert!(html.contains("deskfleet-guest --server https://"), "{html}");
    let parsed = deskfleet_proto::enrollment::EnrollmentToken::parse(&token).unwrap();
    let sha = deskfleet_server::auth::secrets::sha256_hex(&parsed.secret);
    assert!(
        store
            .find_enrollment_token(&sha, now())
            .await
            .unwrap()
            .is_some()
    );
    let bad = post_form(
        &app,
        &http,
        &cookie,
        "/console/enrollment",
        "/console/enrollment",
        &[("ttl_hours", "0")],
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("ttl_hours must be"));
    let revoked = post_form(
        &app,
        &http,
        &cookie,
        "/console/enrollment",
        "/console/enrollment/revoke",
        &[("token", token.as_str())],
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert!(
        revoked
            .text()
            .await
            .unwrap()
            .contains("The token is revoked")
    );
    assert!(
        store
            .find_enrollment_token(&sha, now())
            .await
            .unwrap()
            .is_none()
    );

    // A readonly user with a generated password, who can then sign in.
    let created = post_form(
        &app,
        &http,
        &cookie,
        "/console/users",
        "/console/users",
        &[("name", "auditor"), ("role", "readonly"), ("password", "")],
    )
    .await;
    assert_eq!(created.status(), StatusCode::OK);
    let html = created.text().await.unwrap();
    let password = input_value(&html, "generated");
    assert!(password.len() >= 16);
    assert_eq!(
        sign_in(&app, &http, "auditor", &password).await.status(),
        StatusCode::SEE_OTHER
    );
    let project = deskfleet_core::ids::ProjectId::parse(app.project()).unwrap();
    let users = store.list_project_users(&project).await.unwrap();
    let (auditor, role) = users.iter().find(|(u, _)| u.name == "auditor").unwrap();
    assert_eq!(*role, Role::Readonly);

    // An access key for it, whose secret works with the API, then deleted.
    let keyed = post_form(
        &app,
        &http,
        &cookie,
        "/console/users",
        &format!("/console/users/{}/keys", auditor.id),
        &[],
    )
    .await;
    assert_eq!(keyed.status(), StatusCode::OK);
    let html = keyed.text().await.unwrap();
    let (ak, sk) = (input_value(&html, "new-ak"), input_value(&html, "new-sk"));
    let listed = app.client(&ak, &sk).list_desktops(&[]).await;
    assert!(listed.is_ok(), "{listed:?}");
    let deleted = post_form(
        &app,
        &http,
        &cookie,
        "/console/users",
        &format!("/console/keys/{ak}/delete"),
        &[],
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert!(store.find_access_key(&ak).await.unwrap().is_none());

    // Disabled: its console sessions end, and it cannot sign in.
    let off = post_form(
        &app,
        &http,
        &cookie,
        "/console/users",
        &format!("/console/users/{}/disable", auditor.id),
        &[],
    )
    .await;
    assert_eq!(off.status(), StatusCode::SEE_OTHER);
    let r = sign_in(&app, &http, "auditor", &password).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("disabled"));
    app.stop().await;
}

#[tokio::test]
async fn cancel_and_retry_from_a_job_page_change_the_sub_jobs() {
    let app = TestApp::spawn().await;
    let http = browser(&app);
    let ids = app.import_desktops(2).await;
    let signed = sign_in(
        &app,
        &http,
        &app.bootstrap.user_name,
        &app.bootstrap.password,
    )
    .await;
    let cookie = session_cookie(&signed);
    // No guest is connected: the sub-jobs wait.
    let made = post_form(
        &app,
        &http,
        &cookie,
        &format!(
            "/console/install?scope=selected&desktop_id={}&desktop_id={}",
            ids[0], ids[1]
        ),
        "/console/install",
        &[
            ("scope", "selected"),
            ("desktop_id", &ids[0]),
            ("desktop_id", &ids[1]),
        ],
    )
    .await;
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    let job_page = location(&made).to_owned();
    let progress = |cookie: String| {
        let (app, http, job_page) = (&app, &http, job_page.clone());
        async move {
            let r = get(app, http, &format!("{job_page}/progress"), &cookie).await;
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let before = progress(cookie.clone()).await;
    assert_eq!(before["waiting"], 2, "{before}");

    let cancelled = post_form(
        &app,
        &http,
        &cookie,
        &job_page,
        &format!("{job_page}/cancel"),
        &[],
    )
    .await;
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&cancelled), job_page);
    let after = progress(cookie.clone()).await;
    assert_eq!(
        (after["waiting"].as_u64(), after["failed"].as_u64()),
        (Some(0), Some(2)),
        "{after}"
    );
    assert!(after["finished"].as_bool().unwrap());
    let reason = after["sub_jobs"][0]["reason"].as_str().unwrap();
    assert!(!reason.is_empty(), "a cancelled sub-job says why: {after}");
    let html = get(&app, &http, &job_page, &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(reason.split(" (").next().unwrap()),
        "the reason is on the page"
    );

    let retried = post_form(
        &app,
        &http,
        &cookie,
        &job_page,
        &format!("{job_page}/retry"),
        &[],
    )
    .await;
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);
    let again = progress(cookie.clone()).await;
    // As the API's retry: every FAILED sub-job, cancelled ones included, waits again.
    assert_eq!(
        (again["waiting"].as_u64(), again["failed"].as_u64()),
        (Some(2), Some(0)),
        "{again}"
    );
    app.stop().await;
}

#[tokio::test]
async fn assets_are_versioned_cached_and_revalidated() {
    let app = TestApp::spawn().await;
    let http = browser(&app);
    let login = http
        .get(url(&app, "/console/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in ["console.css", "console.js"] {
        let at = login
            .find(&format!("/console/assets/{name}?v="))
            .unwrap_or_else(|| panic!("{name} is linked with its version: {login}"));
        let href = &login[at..at + login[at..].find('"').unwrap()];
        let first = http.get(url(&app, href)).send().await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert!(
            first.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        assert!(href.ends_with(etag.trim_matches('"')), "{href} {etag}");
        assert!(!first.bytes().await.unwrap().is_empty());
        let again = http
            .get(url(&app, href))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }
    let missing = http
        .get(url(&app, "/console/assets/other.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn the_desktops_table_pages_sorts_and_says_what_is_wrong_with_a_filter() {
    let app = TestApp::spawn().await;
    let http = browser(&app);
    app.import_desktops(60).await;
    let signed = sign_in(
        &app,
        &http,
        &app.bootstrap.user_name,
        &app.bootstrap.password,
    )
    .await;
    let cookie = session_cookie(&signed);
    let rows = |html: &str| html.matches("<th scope=\"row\">").count();

    let first = get(&app, &http, "/console/desktops", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(first.contains("60 desktops match. Page 1 of 2."), "{first}");
    assert_eq!(rows(&first), 50);
    assert!(first.contains("rel=\"next\""));
    let second = get(&app, &http, "/console/desktops?page=2", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rows(&second), 10);
    assert!(second.contains("wks-0059") && !second.contains("wks-0000<"));

    let desc = get(&app, &http, "/console/desktops?sort=name&dir=desc", &cookie)
        .await
        .text()
        .await
        .unwrap();
    let (a, b) = (
        desc.find("wks-0059").unwrap(),
        desc.find("wks-0058").unwrap(),
    );
    assert!(a < b, "descending by name");
    assert!(desc.contains("aria-sort=\"descending\""));

    let searched = get(&app, &http, "/console/desktops?q=10.0.0.1", &cookie)
        .await
        .text()
        .await
        .unwrap();
    // 10.0.0.1, 10.0.0.10 ... 10.0.0.19: eleven addresses contain it.
    assert!(searched.contains("11 desktops match."), "{searched}");

    for (query, words) in [
        (
            "sort=size",
            "sort must be name, address, last_seen, version or created",
        ),
        (
            "presence=sometimes",
            "presence must be online, offline or never",
        ),
        ("page=x", "query parameter page must be an integer"),
    ] {
        let r = get(&app, &http, &format!("/console/desktops?{query}"), &cookie).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("WKS.0001") && body.contains(words),
            "{query}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_session_in_use_is_kept_alive_even_with_a_short_idle_timeout() {
    // Half the idle timeout (10 s) is shorter than the usual minute between writes.
    let app = TestApp::spawn_with(|s| s.console.idle_timeout_secs = 20).await;
    let http = browser(&app);
    let store = app.store().await;
    let admin = deskfleet_server::admin::find_user(
        store.as_ref(),
        &app.bootstrap.domain_name,
        &app.bootstrap.user_name,
    )
    .await
    .unwrap();
    let t = now();
    let session = ConsoleSession {
        user_id: admin.id.clone(),
        project_id: deskfleet_core::ids::ProjectId::parse(app.project()).unwrap(),
        created_at: t - 12_000,
        last_seen_at: t - 12_000,
        expires_at: t + 3_600_000,
    };
    let sha = deskfleet_server::auth::secrets::sha256_hex("busy");
    store.create_console_session(&sha, &session).await.unwrap();
    let r = get(&app, &http, "/console/", &format!("{COOKIE_NAME}=busy")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let seen = store.find_console_session(&sha).await.unwrap().unwrap();
    assert!(
        seen.last_seen_at >= t,
        "the use was written: {} < {t}",
        seen.last_seen_at
    );
    app.stop().await;
}
