//! `connect` itself: which URLs open which backend, and which are refused.

use deskfleet_store::{ConnectError, connect, connect_data_dir};

#[tokio::test]
async fn refuses_what_it_cannot_open() {
    for (url, want) in [
        ("mysql://root@localhost/db", "mysql"),
        ("redis://localhost", "redis"),
    ] {
        match connect(url).await {
            Err(ConnectError::UnsupportedScheme(scheme)) => assert_eq!(scheme, want),
            Err(other) => panic!("{url}: {other:?}"),
            Ok(_) => panic!("{url} opened"),
        }
    }
    for url in [
        "sqlite::memory:",
        ":memory:",
        "sqlite://file.db?mode=memory",
    ] {
        assert!(
            matches!(connect(url).await, Err(ConnectError::InMemory)),
            "{url} must be refused: an in-memory database is not shared"
        );
    }
}

#[tokio::test]
async fn opens_sqlite_by_path_url_or_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.db");
    let store = connect(path.to_str().unwrap()).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.create_domain("acme").await.unwrap();
    drop(store);
    let url = format!("sqlite://{}", path.display());
    let again = connect(&url).await.unwrap();
    assert!(
        again.find_domain_by_name("acme").await.unwrap().is_some(),
        "same file"
    );

    let data = dir.path().join("nested").join("data");
    let store = connect_data_dir(&data).await.unwrap();
    store.create_domain("acme").await.unwrap();
    assert!(data.join(deskfleet_store::DATA_DIR_FILE).is_file());
}

/// A database migrated by a newer build (a migration this build does not carry) is
/// refused with a message that says so, and left as it was.
pub async fn a_database_migrated_by_a_newer_build_is_refused(ctx: crate::harness::Ctx) {
    use sqlx::{Connection, Executor};
    let url = ctx.url().to_owned();
    ctx.store.create_domain("acme").await.unwrap();
    let future = "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                  execution_time) VALUES (99990101000000, 'from the future', true, \
                  X'00', 0)";
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        c.execute(future.replace("X'00'", "'\\x00'::bytea").as_str())
            .await
            .unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        c.execute(future).await.unwrap();
    }
    drop(ctx.store);
    match connect(&url).await {
        Err(e @ ConnectError::NewerSchema { applied, known }) => {
            assert_eq!(applied, 99990101000000);
            assert!(known < applied);
            let message = e.to_string();
            assert!(message.contains("newer deskfleet-server"), "{message}");
            assert!(message.contains("nothing was changed"), "{message}");
        }
        Err(other) => panic!("another error: {other:?}"),
        Ok(_) => panic!("a database of a newer schema was opened"),
    }
    // Still the newer build's: once that row is gone, this build opens it as before.
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        c.execute("DELETE FROM _sqlx_migrations WHERE version = 99990101000000")
            .await
            .unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        c.execute("DELETE FROM _sqlx_migrations WHERE version = 99990101000000")
            .await
            .unwrap();
    }
    let store = connect(&url).await.unwrap();
    assert!(store.find_domain_by_name("acme").await.unwrap().is_some());
}
