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
