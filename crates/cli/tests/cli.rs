//! The `deskfleet` binary's transport rules, without a server: what it refuses it refuses
//! before any connection is made. Its requests against a real server are tested with
//! the server (crates/server/tests/fleet).

use std::process::Command;

fn deskfleet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deskfleet"))
        .args(["--project", "p", "--access-key", "ak", "--secret-key", "sk"])
        .args(args)
        .env_remove("DESKFLEET_ENDPOINT")
        .env_remove("DESKFLEET_DATA_DIR")
        .env_remove("DESKFLEET_CA_CERT")
        .output()
        .expect("run deskfleet")
}

#[test]
fn plain_http_to_a_remote_host_is_refused_without_allow_insecure_http() {
    // `.invalid` never resolves: if the refusal were missing the command would fail
    // later, on name resolution, with another message.
    let out = deskfleet(&["--endpoint", "http://deskfleet.invalid:8087", "agents"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing plain http"), "{stderr}");
    assert!(stderr.contains("--allow-insecure-http"), "{stderr}");

    // Allowed, it goes on to the network, and fails there instead.
    let out = deskfleet(&[
        "--endpoint",
        "http://deskfleet.invalid:8087",
        "--allow-insecure-http",
        "agents",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("refusing plain http"), "{stderr}");
}

#[test]
fn a_data_dir_gives_the_endpoint_and_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bootstrap.json"),
        r#"{"project_id":"p","access_key":"ak","secret_key":"sk"}"#,
    )
    .unwrap();
    let endpoint = dir.path().join("endpoint.url");
    std::fs::write(&endpoint, "https://deskfleet.invalid:1\n").unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    let out = deskfleet(&["--data-dir", dir.path().to_str().unwrap(), "agents"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CA certificates"), "{stderr}");

    // A server with TLS off writes an http:// endpoint: refused for a remote host.
    std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
    std::fs::write(&endpoint, "http://deskfleet.invalid:1\n").unwrap();
    let out = deskfleet(&["--data-dir", dir.path().to_str().unwrap(), "agents"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing plain http to http://deskfleet.invalid:1/"),
        "{stderr}"
    );
}
