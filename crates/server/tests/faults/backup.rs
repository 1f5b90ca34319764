//! An online backup, taken while the server writes, restored into a second server.

use crate::SETTINGS;
use crate::harness::{Server, bin};
use crate::load::{Kind, Load, import_desktops};
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_into_a_working_server() {
    let server = Server::start(SETTINGS).await;
    let desktops = import_desktops(&server, 3).await;
    let load = Load::start(server.client(), desktops.clone(), 2);
    let started = Instant::now();
    load.wait_writes(60, "writes acknowledged", started, 10, |k| {
        matches!(k, Kind::Ok(_))
    })
    .await;
    let before: Vec<String> = load
        .writes
        .lock()
        .unwrap()
        .iter()
        .filter_map(|o| match &o.kind {
            Kind::Ok(Some(id)) => Some(id.clone()),
            _ => None,
        })
        .collect();

    let target = tempfile::tempdir().unwrap();
    let copy = target.path().join("deskfleet-backup.db");
    let out = std::process::Command::new(bin("deskfleet-server"))
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["admin", "backup", "--to"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (writes, _) = load.stop().await;
    let failed: Vec<_> = writes
        .iter()
        .filter(|o| !matches!(o.kind, Kind::Ok(_)))
        .map(|o| &o.kind)
        .collect();
    assert!(
        failed.is_empty(),
        "writes failed during the backup: {failed:?}\n{}",
        server.log()
    );
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the backup holds secrets");

    // A second backup to the same file is refused: nothing is overwritten.
    let again = std::process::Command::new(bin("deskfleet-server"))
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["admin", "backup", "--to"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!again.status.success());

    // Restore: the copy becomes the database of a fresh data directory, beside the files
    // that are not in the database (keys, the bootstrap credentials the client signs
    // with), as an operator restores them.
    let source = server.dir.path().to_owned();
    let db = deskfleet_store::DATA_DIR_FILE;
    let skip = [
        db.to_string(),
        format!("{db}-wal"),
        format!("{db}-shm"),
        "listen.addr".into(),
        "server.log".into(),
        "settings.toml".into(),
    ];
    let restored = Server::start_with(SETTINGS, |dir| {
        for entry in std::fs::read_dir(&source).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_file() && !skip.contains(&name) {
                std::fs::copy(entry.path(), dir.join(&name)).unwrap();
            }
        }
        std::fs::copy(&copy, dir.join(db)).unwrap();
    })
    .await;
    drop(server);
    let client = restored.client();
    let list = client.list_desktops(&[]).await.unwrap();
    assert_eq!(list.total_count, desktops.len() as i64);
    for id in &before {
        let job = client.show_job(id).await;
        assert!(
            job.is_ok(),
            "job {id} acknowledged before the backup is missing: {job:?}"
        );
    }
    let after = client.batch_install_agent(&desktops).await;
    assert!(after.is_ok(), "the restored server takes writes: {after:?}");
}
