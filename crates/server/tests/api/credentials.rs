//! Credentials at rest and taken back: secret keys are encrypted in the database, the
//! data directory is private, wrong passwords lock a user, project listing and scoping
//! follow roles, and the admin commands (run as their own process, as an operator would)
//! revoke, disable, delete and unlock with effect on the running server within a second.

use crate::helpers::{TestApp, eventually, now};
use deskfleet_client::{ClientError, create_token_with};
use deskfleet_core::ids::ProjectId;
use deskfleet_core::model::Role;
use deskfleet_server::Application;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// A server with the production sweep interval: these tests run admin commands, other
/// processes that write to the same SQLite file, and a sweep writing every 50 ms (the
/// test default) can keep them waiting for the write lock on a loaded machine.
async fn spawn(configure: impl FnOnce(&mut deskfleet_server::settings::Settings)) -> TestApp {
    TestApp::spawn_with(|s| {
        s.jobs.sweep_interval_ms = 1000;
        configure(s);
    })
    .await
}

/// Runs `deskfleet-server --data-dir DIR admin ARGS...`; returns (success, stdout JSON or
/// null, stderr).
fn admin(app: &TestApp, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_deskfleet-server"))
        .arg("--data-dir")
        .arg(&app.settings.data_dir)
        .arg("admin")
        .args(args)
        .output()
        .expect("run the admin command");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin_ok(app: &TestApp, args: &[&str]) -> serde_json::Value {
    let (ok, json, stderr) = admin(app, args);
    assert!(ok, "admin {args:?} failed: {stderr}");
    json
}

/// A user with `role` on the bootstrap project and an access key, made by the admin
/// command; returns (AK, SK, password).
fn new_user(app: &TestApp, name: &str, role: &str) -> (String, String, String) {
    let user = admin_ok(
        app,
        &[
            "users",
            "create",
            "--name",
            name,
            "--project",
            app.project(),
            "--role",
            role,
        ],
    );
    let key = admin_ok(
        app,
        &[
            "access-keys",
            "create",
            "--user",
            name,
            "--project",
            app.project(),
        ],
    );
    (
        key["access_key"].as_str().unwrap().to_string(),
        key["secret_key"].as_str().unwrap().to_string(),
        user["password"].as_str().unwrap().to_string(),
    )
}

fn status_of(e: &ClientError) -> u16 {
    e.status().unwrap_or_default()
}

/// Waits (at most 5 s) until `request` is refused with 401; returns how long it took.
async fn refused_within<F, Fut, T>(request: F) -> std::time::Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let start = std::time::Instant::now();
    eventually(5, || async {
        match request().await {
            Err(e) if status_of(&e) == 401 => Some(()),
            _ => None,
        }
    })
    .await;
    start.elapsed()
}

/// Stops the server but keeps its data directory (owned by `app`).
async fn stop_keeping_data(app: &mut TestApp) {
    app.shutdown.cancel();
    (&mut app.server).await.unwrap().unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn all_bytes_of_the_database(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("deskfleet.db") {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn secret_keys_are_not_in_the_database_in_clear() {
    let app = spawn(|_| {}).await;
    let (ak, sk, _) = new_user(&app, "keyholder", "admin");
    app.client(&ak, &sk).list_desktops(&[]).await.unwrap();
    app.admin().list_desktops(&[]).await.unwrap();

    let bytes = all_bytes_of_the_database(&app.settings.data_dir);
    // The access keys are there in clear: this is the right data.
    assert!(contains(&bytes, &ak));
    assert!(contains(&bytes, &app.bootstrap.access_key));
    assert!(!contains(&bytes, &sk), "an SK is stored in clear");
    assert!(!contains(&bytes, &app.bootstrap.secret_key));
    let stored = app
        .store()
        .await
        .find_access_key(&ak)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.secret_key.starts_with("v1:"),
        "{}",
        stored.secret_key
    );
    app.stop().await;
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private_after_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A directory from an older version: world-readable, with a world-readable file.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notes.txt"), "x").unwrap();
    std::fs::set_permissions(
        data.join("notes.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let app = spawn(|s| s.data_dir = data.clone()).await;
    // A write, so that the WAL and shared-memory files exist.
    let (ak, sk, _) = new_user(&app, "writer", "admin");
    app.client(&ak, &sk).list_desktops(&[]).await.unwrap();

    assert_eq!(mode(&data), 0o700);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(mode(&path), 0o600, "{name} is {:o}", mode(&path));
        names.push(name);
    }
    for expected in [
        "deskfleet.db",
        "deskfleet.db-wal",
        "deskfleet.db-shm",
        "secrets.key",
        "bootstrap.json",
        "listen.addr",
        "notes.txt",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert_eq!(std::fs::read(data.join("secrets.key")).unwrap().len(), 32);
    app.stop().await;
}

#[tokio::test]
async fn a_database_with_secret_keys_in_clear_is_encrypted_on_start() {
    let mut app = spawn(|_| {}).await;
    let settings = app.settings.clone();
    let b = app.bootstrap.clone();
    stop_keeping_data(&mut app).await;
    // Make it a database of an older version: the SK in clear, and no key file yet.
    let store = deskfleet_store::connect(&settings.effective_database_url())
        .await
        .unwrap();
    let sealed = store.find_access_key(&b.access_key).await.unwrap().unwrap();
    assert!(
        store
            .replace_secret_key(&b.access_key, &sealed.secret_key, &b.secret_key)
            .await
            .unwrap()
    );
    drop(store);
    std::fs::remove_file(settings.data_dir.join("secrets.key")).unwrap();
    // Older versions had no audit seal key either.
    std::fs::remove_file(settings.data_dir.join("trace-seal.key")).unwrap();

    let app = Application::build(settings.clone()).await.unwrap();
    let addr = app.local_addr();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    let store = deskfleet_store::connect(&settings.effective_database_url())
        .await
        .unwrap();
    let stored = store.find_access_key(&b.access_key).await.unwrap().unwrap();
    assert!(stored.secret_key.starts_with("v1:"));
    assert!(!stored.secret_key.contains(&b.secret_key));
    // The old key still authenticates.
    let _ = addr;
    let endpoint = crate::helpers::endpoint_in(&settings.data_dir);
    let client = deskfleet_client::Client::with_options(
        &endpoint,
        &b.project_id,
        deskfleet_client::Credentials::AkSk {
            access_key: b.access_key.clone(),
            secret_key: b.secret_key.clone(),
        },
        &deskfleet_client::ClientOptions::default()
            .with_ca_file(&settings.data_dir.join("ca.pem"))
            .unwrap(),
    )
    .unwrap();
    client.list_desktops(&[]).await.unwrap();
    shutdown.cancel();
    server.await.unwrap().unwrap();

    // Starting again changes nothing: the migration is done once.
    let again = Application::build(settings.clone()).await.unwrap();
    drop(again);
    let after = store.find_access_key(&b.access_key).await.unwrap().unwrap();
    assert_eq!(after.secret_key, stored.secret_key);
}

#[tokio::test]
async fn a_wrong_or_missing_key_file_stops_the_start_clearly() {
    let mut app = spawn(|_| {}).await;
    let settings = app.settings.clone();
    stop_keeping_data(&mut app).await;
    let key_file = settings.data_dir.join("secrets.key");

    std::fs::write(&key_file, [7u8; 32]).unwrap();
    let err = Application::build(settings.clone())
        .await
        .err()
        .expect("a wrong key file must stop the start");
    let msg = format!("{err:#}");
    assert!(msg.contains("not the key file"), "{msg}");
    assert!(msg.contains("secrets.key"), "{msg}");

    std::fs::remove_file(&key_file).unwrap();
    let err = Application::build(settings.clone())
        .await
        .err()
        .expect("a missing key file must stop the start");
    let msg = format!("{err:#}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(!key_file.exists(), "no new key may replace the lost one");

    std::fs::write(&key_file, b"short").unwrap();
    let err = Application::build(settings).await.err().unwrap();
    assert!(format!("{err:#}").contains("exactly 32 bytes"), "{err:#}");
}

#[tokio::test]
async fn wrong_passwords_lock_the_user_even_against_the_right_password() {
    let app = spawn(|s| {
        s.auth.login_lockout_failures = 3;
        s.auth.login_lockout_secs = 600;
    })
    .await;
    let (_, _, password) = new_user(&app, "guesser", "readonly");
    let login = |pw: String| {
        let (options, endpoint) = (app.options(), app.endpoint());
        let project = app.project().to_string();
        async move {
            create_token_with(&options, &endpoint, "deskfleet", "guesser", &pw, &project).await
        }
    };
    // A success in between resets the count.
    for _ in 0..2 {
        assert_eq!(status_of(&login("wrong".into()).await.unwrap_err()), 401);
    }
    login(password.clone()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(status_of(&login("wrong".into()).await.unwrap_err()), 401);
    }
    let err = login(password.clone()).await.unwrap_err();
    let ClientError::Api { status, text, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 401);
    let body: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["title"], "Unauthorized");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("locked"), "{message}");
    assert!(message.contains("seconds"), "{message}");

    // The lock is in the database: the admin command, another process, lifts it.
    let unlocked = admin_ok(&app, &["users", "unlock", "--name", "guesser"]);
    assert_eq!(unlocked["unlocked"], true);
    login(password).await.unwrap();
    app.stop().await;
}

/// `GET /v3/projects` signed with AK/SK, as the SDK's region mode sends it.
async fn list_projects(app: &TestApp, ak: &str, sk: &str) -> serde_json::Value {
    let endpoint = app.endpoint();
    let host = endpoint.split("://").nth(1).unwrap().to_string();
    let headers = vec![
        ("Host".to_string(), host),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let signed = deskfleet_proto::sign::sign(
        ak,
        sk,
        "GET",
        "/v3/projects",
        &[],
        &headers,
        b"",
        chrono::Utc::now(),
    );
    let mut request = app.http().get(format!("{endpoint}/v3/projects"));
    for (k, v) in signed.headers {
        if !k.eq_ignore_ascii_case("host") {
            request = request.header(k, v);
        }
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn projects_are_listed_and_scoped_only_where_the_user_has_a_role() {
    let app = spawn(|_| {}).await;
    let store = app.store().await;
    let domain = store
        .find_domain_by_name("deskfleet")
        .await
        .unwrap()
        .unwrap();
    let hidden = store.create_project(&domain.id, "hidden-1").await.unwrap();
    let (ak, sk, password) = new_user(&app, "scoped", "readonly");

    let listed = list_projects(&app, &ak, &sk).await;
    let ids: Vec<&str> = listed["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![app.project()]);
    // The admin has a role on the bootstrap project only, too.
    let listed = list_projects(&app, &app.bootstrap.access_key, &app.bootstrap.secret_key).await;
    assert_eq!(listed["projects"].as_array().unwrap().len(), 1);

    let err = create_token_with(
        &app.options(),
        &app.endpoint(),
        "deskfleet",
        "scoped",
        &password,
        hidden.id.as_str(),
    )
    .await
    .unwrap_err();
    let ClientError::Api { status, text, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 401);
    let body: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(body["error"]["code"], 401);
    assert!(!text.contains(hidden.id.as_str()), "{text}");
    // A project that does not exist answers the same: existence is not revealed.
    let missing = ProjectId::generate();
    let err = create_token_with(
        &app.options(),
        &app.endpoint(),
        "deskfleet",
        "scoped",
        &password,
        missing.as_str(),
    )
    .await
    .unwrap_err();
    let ClientError::Api {
        status, text: t2, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*status, t2.as_str()), (401, text.as_str()));

    // Given a role, the same request succeeds.
    let user = store
        .find_user("deskfleet", "scoped")
        .await
        .unwrap()
        .unwrap();
    store
        .grant_role(&user.id, &hidden.id, Role::Readonly)
        .await
        .unwrap();
    create_token_with(
        &app.options(),
        &app.endpoint(),
        "deskfleet",
        "scoped",
        &password,
        hidden.id.as_str(),
    )
    .await
    .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_access_key_answers_like_an_unknown_one_at_once() {
    let app = spawn(|_| {}).await;
    let (ak, sk, _) = new_user(&app, "leaver", "admin");
    let client = app.client(&ak, &sk);
    client.list_desktops(&[]).await.unwrap();
    let deleted = admin_ok(&app, &["access-keys", "delete", &ak]);
    assert_eq!(deleted["deleted"], true);
    let took = refused_within(|| client.list_desktops(&[])).await;
    assert!(took.as_millis() < 3000, "{took:?}");
    let err = client.list_desktops(&[]).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("Get secretKey failed"),
        "{err:?}"
    );

    let (ok, _, stderr) = admin(&app, &["access-keys", "delete", &ak]);
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_user_loses_keys_tokens_and_logins_until_enabled() {
    let app = spawn(|_| {}).await;
    let (ak, sk, password) = new_user(&app, "temp", "admin");
    let (token, _) = create_token_with(
        &app.options(),
        &app.endpoint(),
        "deskfleet",
        "temp",
        &password,
        app.project(),
    )
    .await
    .unwrap();
    let by_key = app.client(&ak, &sk);
    let by_token = app.token_client(&token);
    by_key.list_desktops(&[]).await.unwrap();
    by_token.list_desktops(&[]).await.unwrap();

    admin_ok(&app, &["users", "disable", "--name", "temp"]);
    refused_within(|| by_key.list_desktops(&[])).await;
    refused_within(|| by_token.list_desktops(&[])).await;
    let login = create_token_with(
        &app.options(),
        &app.endpoint(),
        "deskfleet",
        "temp",
        &password,
        app.project(),
    )
    .await;
    assert_eq!(status_of(&login.unwrap_err()), 401);

    admin_ok(&app, &["users", "enable", "--name", "temp"]);
    eventually(5, || async { by_key.list_desktops(&[]).await.ok() }).await;
    by_token.list_desktops(&[]).await.unwrap();

    // Revoking the tokens leaves the keys working.
    let revoked = admin_ok(&app, &["users", "revoke-tokens", "--name", "temp"]);
    assert_eq!(revoked["revoked_tokens"], 1);
    refused_within(|| by_token.list_desktops(&[])).await;
    by_key.list_desktops(&[]).await.unwrap();

    let (ok, _, stderr) = admin(&app, &["users", "disable", "--name", "nobody"]);
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
    app.stop().await;
}

#[tokio::test]
async fn a_role_change_applies_at_once() {
    let app = spawn(|_| {}).await;
    let ids = app.import_desktops(1).await;
    let (ak, sk, _) = new_user(&app, "demoted", "admin");
    let client = app.client(&ak, &sk);
    client.batch_install_agent(&ids).await.unwrap();
    admin_ok(
        &app,
        &[
            "users",
            "grant",
            "--name",
            "demoted",
            "--project",
            app.project(),
            "--role",
            "readonly",
        ],
    );
    eventually(3, || async {
        match client.batch_install_agent(&ids).await {
            Err(e) if status_of(&e) == 403 => Some(()),
            _ => None,
        }
    })
    .await;
    client.list_desktops(&[]).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_locked_access_key_is_unlocked_by_the_admin_command() {
    let app = spawn(|s| s.auth.lockout_failures = 3).await;
    let (ak, sk, _) = new_user(&app, "fumbler", "admin");
    let wrong = app.client(&ak, "not-the-secret");
    for _ in 0..3 {
        assert_eq!(status_of(&wrong.list_desktops(&[]).await.unwrap_err()), 401);
    }
    let good = app.client(&ak, &sk);
    let err = good.list_desktops(&[]).await.unwrap_err();
    assert!(format!("{err:?}").contains("reach the limit"), "{err:?}");
    // The lock is shared through the database: a second connection sees it.
    let failures = app
        .store()
        .await
        .auth_failures(&deskfleet_core::model::AuthSubject::AccessKey(ak.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(failures.locked_at(now()).is_some());

    let unlocked = admin_ok(&app, &["access-keys", "unlock", &ak]);
    assert_eq!(unlocked["unlocked"], true);
    eventually(3, || async { good.list_desktops(&[]).await.ok() }).await;
    app.stop().await;
}

#[tokio::test]
async fn enrollment_tokens_are_revoked_and_desktops_deleted() {
    let app = spawn(|_| {}).await;
    let created = admin_ok(
        &app,
        &["enrollment-tokens", "create", "--project", app.project()],
    );
    let token = created["enrollment_token"].as_str().unwrap();
    let store = app.store().await;
    let secret = deskfleet_proto::enrollment::EnrollmentToken::parse(token)
        .unwrap()
        .secret;
    let sha = deskfleet_server::auth::secrets::sha256_hex(&secret);
    assert!(
        store
            .find_enrollment_token(&sha, now())
            .await
            .unwrap()
            .is_some()
    );
    admin_ok(&app, &["enrollment-tokens", "revoke", "--token", token]);
    assert!(
        store
            .find_enrollment_token(&sha, now())
            .await
            .unwrap()
            .is_none()
    );
    let (ok, _, stderr) = admin(&app, &["enrollment-tokens", "revoke", "--token", token]);
    assert!(!ok && stderr.contains("does not exist"), "{stderr}");

    let ids = app.import_desktops(2).await;
    let client = app.admin();
    let job = client.batch_install_agent(&ids).await.unwrap();
    let deleted = admin_ok(
        &app,
        &["desktops", "delete", "--project", app.project(), &ids[0]],
    );
    assert_eq!(deleted["deleted"], true);
    let list = client.list_desktops(&[]).await.unwrap();
    assert_eq!(list.total_count, 1);
    assert_eq!(
        client.show_job(&job.job_id).await.unwrap().sub_jobs_total,
        2
    );
    let (ok, _, stderr) = admin(
        &app,
        &["desktops", "delete", "--project", app.project(), &ids[0]],
    );
    assert!(!ok && stderr.contains("does not exist"), "{stderr}");
    app.stop().await;
}

#[tokio::test]
async fn the_binary_refuses_an_invalid_environment_setting_and_shows_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deskfleet-server"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("DESKFLEET_THROTTLE__ENABLED", "nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid settings"), "{stderr}");
    assert!(
        stderr.contains("environment variable DESKFLEET_THROTTLE__ENABLED"),
        "{stderr}"
    );
    assert!(stderr.contains("nope"), "{stderr}");
    assert!(
        !dir.path().join("listen.addr").exists(),
        "the server must not start"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_deskfleet-server"))
        .args(["config", "show"])
        .env("DESKFLEET_LISTEN", "127.0.0.1:9123")
        .env("DESKFLEET_MAX_BODY_BYTES", "1234")
        .env("DESKFLEET_AUTH__MAX_CLOCK_SKEW_SECS", "42")
        .env("DESKFLEET_THROTTLE__WRITES_PER_MINUTE", "7")
        .env("DESKFLEET_THROTTLE__ENABLED", "false")
        .env(
            "DESKFLEET_DATABASE_URL",
            "postgres://deskfleet:hunter2@db.invalid/deskfleet",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["listen"], "127.0.0.1:9123");
    assert_eq!(shown["max_body_bytes"], 1234);
    assert_eq!(shown["auth"]["max_clock_skew_secs"], 42);
    assert_eq!(shown["throttle"]["writes_per_minute"], 7);
    assert_eq!(shown["throttle"]["enabled"], false);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
}
