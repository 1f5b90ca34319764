//! How guests and the CLI trust the server: a guest given only the URL and the
//! enrollment token pins the server's CA by the token's fingerprint and keeps it; a
//! token with another fingerprint makes the guest refuse the server and enroll nothing;
//! with TLS off, plain http needs `--allow-insecure-http`.

use crate::harness::{Guest, GuestOptions, Server, bin, eventually};
use crate::{FAST, desktops_enrolled};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

fn fingerprint_of(pem: &std::path::Path) -> String {
    let der = CertificateDer::from_pem_file(pem).unwrap();
    hex::encode(Sha256::digest(der.as_ref()))
}

/// The guest's command line, as any local user sees it in `ps`.
fn cmdline(guest: &Guest) -> String {
    let pid = guest.pid().expect("the guest runs");
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).into_owned()
}

#[tokio::test]
async fn a_guest_given_the_url_and_the_token_pins_the_servers_ca_and_enrolls() {
    let server = Server::start(FAST).await;
    let token = server.enrollment_token();
    // DFE1<secret>.<sha256 of the CA's DER>
    let (secret, fingerprint) = token.split_once('.').expect("a fingerprint");
    assert!(secret.starts_with("DFE1"), "{token}");
    assert_eq!(fingerprint, fingerprint_of(&server.ca_cert()));

    // Token in a file, no CA: pinning. Token in the environment, with --ca-cert.
    let pinned = Guest::start(&server, &token, "desk-pinned");
    let with_ca = Guest::start_with(
        &server,
        &token,
        "desk-ca-file",
        GuestOptions {
            ca_cert: true,
            token_in_env: true,
            ..GuestOptions::default()
        },
    );
    pinned.enrolled().await;
    with_ca.enrolled().await;
    desktops_enrolled(&server, 2).await;

    // The pinned CA is kept (0600) for every later connection; the other guest was
    // given its CA and keeps nothing.
    let kept = pinned.state_dir.path().join("server-ca.pem");
    assert_eq!(fingerprint_of(&kept), fingerprint);
    let mode = std::fs::metadata(&kept).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert!(!with_ca.state_dir.path().join("server-ca.pem").exists());
    // Neither shows the token to other local users.
    for guest in [&pinned, &with_ca] {
        assert!(!cmdline(guest).contains(secret), "{}", cmdline(guest));
    }
}

#[tokio::test]
async fn a_guest_whose_token_names_another_ca_refuses_the_server_and_enrolls_nothing() {
    let server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let (secret, fingerprint) = token.split_once('.').unwrap();
    let other = "0".repeat(64);
    assert_ne!(fingerprint, other);
    let guest = Guest::start(&server, &format!("{secret}.{other}"), "desk-mitm");
    eventually(30, "the guest says why it refuses", || async {
        guest
            .log()
            .contains(&format!(
                "no CA with the enrollment token's fingerprint sha256:{other}"
            ))
            .then_some(())
    })
    .await;
    let list = server.client().list_desktops(&[]).await.unwrap();
    assert_eq!(list.total_count, 0);
    let state = std::fs::read_to_string(guest.state_dir.path().join("state.json")).unwrap();
    assert!(!state.contains("DFD1"), "{state}");
    assert!(!guest.state_dir.path().join("server-ca.pem").exists());
}

#[tokio::test]
async fn with_tls_off_plain_http_must_be_allowed_by_the_guest_and_the_cli() {
    let server = Server::start(&format!("[tls]\nenabled = false\n{FAST}")).await;
    let endpoint = reqwest::Url::parse(&server.endpoint).unwrap();
    assert_eq!(endpoint.scheme(), "http");
    let token = server.enrollment_token();
    assert!(!token.contains('.'), "no CA, no fingerprint: {token}");

    // The guest refuses plain http unless told otherwise, and says how.
    let mut refused = Guest::start(&server, &token, "desk-plain-refused");
    assert!(!refused.exited(30).await.success());
    assert!(
        refused.log().contains("--allow-insecure-http"),
        "{}",
        refused.log()
    );
    let allowed = Guest::start_with(
        &server,
        &token,
        "desk-plain",
        GuestOptions {
            allow_insecure_http: true,
            ..GuestOptions::default()
        },
    );
    allowed.enrolled().await;
    let ids = desktops_enrolled(&server, 1).await;

    // The CLI talks plain http to the server's loopback address...
    let data_dir = server.dir.path().to_str().unwrap();
    let out = std::process::Command::new(bin("deskfleet"))
        .args(["--data-dir", data_dir, "desktops", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&ids[0]));
    // ...but not to a host elsewhere on the network (never contacted: `.invalid`).
    let mut remote = endpoint.clone();
    remote.set_host(Some("deskfleet.invalid")).unwrap();
    let out = std::process::Command::new(bin("deskfleet"))
        .args([
            "--data-dir",
            data_dir,
            "--endpoint",
            remote.as_str(),
            "agents",
            "list",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing plain http"), "{stderr}");
    assert!(stderr.contains("--allow-insecure-http"), "{stderr}");
}
