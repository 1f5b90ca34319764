//! Work survives the server process being killed: jobs, sub-jobs, tokens and keys are
//! still there after a restart, and the timeouts still fire.

use crate::helpers::eventually;
use deskfleet_client::{Client, ClientOptions, Credentials, create_token_with};
use deskfleet_server::bootstrap::Bootstrap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn start(dir: &Path) -> (Child, String) {
    let addr_file = dir.join("listen.addr");
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(env!("CARGO_BIN_EXE_deskfleet-server"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("settings.toml"))
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start deskfleet-server");
    (child, addr_file.display().to_string())
}

/// The server's `endpoint.url` once it listens (listen.addr is written last).
async fn endpoint(addr_file: &str) -> String {
    let addr = eventually(30, || async {
        std::fs::read_to_string(addr_file)
            .ok()
            .filter(|s| !s.is_empty())
    })
    .await;
    let dir = Path::new(addr_file).parent().unwrap();
    let endpoint = std::fs::read_to_string(dir.join("endpoint.url")).unwrap();
    // The file is written after bind; the first request may still race the accept loop.
    eventually(30, || async {
        tokio::net::TcpStream::connect(addr.trim())
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    endpoint.trim().to_string()
}

/// Clients trusting the CA of the data directory (the same CA across restarts).
fn options(dir: &Path) -> ClientOptions {
    ClientOptions::default()
        .with_ca_file(&dir.join("ca.pem"))
        .unwrap()
}

#[tokio::test]
async fn jobs_tokens_and_keys_survive_sigkill_and_timeouts_still_fire() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.toml"),
        "[jobs]\ndelivery_timeout_ms = 2500\nsweep_interval_ms = 50\n",
    )
    .unwrap();
    let (mut server, addr_file) = start(dir.path());
    let first = endpoint(&addr_file).await;
    let bootstrap: Bootstrap =
        serde_json::from_slice(&std::fs::read(dir.path().join("bootstrap.json")).unwrap()).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("bootstrap.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let store = deskfleet_store::connect_data_dir(dir.path()).await.unwrap();
    let project = deskfleet_core::ids::ProjectId::parse(bootstrap.project_id.as_str()).unwrap();
    let json = br#"[{"computer_name":"a","ip_address":"10.0.0.1","os_type":"Linux"},
                    {"computer_name":"b","ip_address":"10.0.0.2","os_type":"Windows"}]"#;
    let desktops = deskfleet_server::admin::import_desktops(
        store.as_ref(),
        &project,
        json,
        crate::helpers::now(),
    )
    .await
    .unwrap();
    let ids: Vec<String> = desktops.iter().map(|d| d.id.to_string()).collect();
    drop(store);

    let creds = Credentials::AkSk {
        access_key: bootstrap.access_key.clone(),
        secret_key: bootstrap.secret_key.clone(),
    };
    let options = options(dir.path());
    let client =
        Client::with_options(&first, &bootstrap.project_id, creds.clone(), &options).unwrap();
    let job = client.batch_install_agent(&ids).await.unwrap().job_id;
    let (token, _) = create_token_with(
        &options,
        &first,
        &bootstrap.domain_name,
        &bootstrap.user_name,
        &bootstrap.password,
        &bootstrap.project_id,
    )
    .await
    .unwrap();

    server.kill().unwrap(); // SIGKILL: no chance to flush anything
    server.wait().unwrap();

    let (mut server, addr_file) = start(dir.path());
    let second = endpoint(&addr_file).await;
    let client = Client::with_options(&second, &bootstrap.project_id, creds, &options).unwrap();
    let info = client.show_job(&job).await.unwrap();
    assert_eq!(info.sub_jobs_total, 2);
    let by_token = Client::with_options(
        &second,
        &bootstrap.project_id,
        Credentials::Token(token),
        &options,
    )
    .unwrap();
    assert_eq!(by_token.show_job(&job).await.unwrap().id, job);
    // The bootstrap ran once: the credentials file is unchanged.
    let again: Bootstrap =
        serde_json::from_slice(&std::fs::read(dir.path().join("bootstrap.json")).unwrap()).unwrap();
    assert_eq!(again.access_key, bootstrap.access_key);

    let done = eventually(20, || async {
        let info = client.show_job(&job).await.unwrap();
        (info.status == "FAIL").then_some(info)
    })
    .await;
    assert!(
        done.sub_jobs
            .iter()
            .all(|s| s.error_code.as_deref() == Some("WKS.00990001"))
    );

    server.kill().unwrap();
    server.wait().unwrap();
}
