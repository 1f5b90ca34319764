//! The real `deskfleet-server` binary keeps its data directory private, and the admin
//! command, another process, takes a key back from it within about a second.

use crate::harness::{Server, eventually};
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn the_real_server_keeps_its_data_private_and_drops_a_deleted_key_at_once() {
    let server = Server::start("").await;
    let client = server.client();
    client.list_desktops(&[]).await.unwrap();

    let dir = server.dir.path();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    for name in [
        "deskfleet.db",
        "deskfleet.db-wal",
        "deskfleet.db-shm",
        "secrets.key",
        "bootstrap.json",
        "listen.addr",
        "package-signing.key",
    ] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }

    let deleted = server.admin(&["access-keys", "delete", &server.bootstrap.access_key]);
    assert_eq!(deleted["deleted"], true);
    let start = std::time::Instant::now();
    eventually(5, "deleted key refused", || async {
        match client.list_desktops(&[]).await {
            Err(e) if e.status() == Some(401) => Some(()),
            _ => None,
        }
    })
    .await;
    let took = start.elapsed();
    eprintln!(
        "a deleted key was refused {} ms after the admin command",
        took.as_millis()
    );
    assert!(took.as_millis() < 3000, "{took:?}");
}
