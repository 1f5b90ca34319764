//! deskfleet's storage: the [`deskfleet_core::store::Store`] trait implemented for SQLite
//! (the embedded default: one file in the data directory) and for PostgreSQL (several
//! server replicas on one database), chosen once from the URL by [`connect`].
//!
//! Invariants:
//! - every `Store` method is one transaction, and nothing is acknowledged before it is
//!   durably committed (SQLite runs with `synchronous=FULL`);
//! - the same SQL serves both backends: queries are written once in `ops`, with the few
//!   dialect differences injected from `conn::Dialect`; each backend has its own
//!   migrations (`migrations/sqlite`, `migrations/postgres`) and one conformance suite
//!   (`tests/conformance`) runs against both;
//! - what is read back is parsed, never trusted: a row that does not decode is
//!   `StoreError::Corrupt`, never a panic.
//!
//! This crate depends on core and proto only. It must not depend on axum or anything of
//! the server: the server holds an `Arc<dyn Store>` and nothing else of ours.

pub mod audit;
mod audit_ops;
mod backend;
mod backup;
mod conn;
mod console_ops;
mod decode;
mod metric_ops;
mod ops;
mod postgres;
mod schema;
mod signals;
mod sqlite;
mod sqlite_conn;

use backend::DbStore;
pub use backup::{BackupError, backup};
use deskfleet_core::store::Store;
use sqlx::sqlite::SqliteConnectOptions;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// The SQLite file [`connect_data_dir`] uses inside the data directory.
pub const DATA_DIR_FILE: &str = "deskfleet.db";

/// Why the database could not be opened. Messages never include the URL, which may carry
/// a password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "unsupported database URL scheme {0:?}: use sqlite://PATH, a file path, \
         or postgres://..."
    )]
    UnsupportedScheme(String),
    #[error(
        "an in-memory SQLite database cannot be shared by the store's connections; \
         give a file path"
    )]
    InMemory,
    #[error("invalid SQLite URL")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database")]
    Open(#[source] sqlx::Error),
    #[error("cannot migrate the database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error(
        "the database was migrated by a newer deskfleet-server (schema version {applied}; \
         this build knows versions up to {known}), so this one will not use it; nothing was \
         changed. Run the newer version, or restore the backup taken before the upgrade"
    )]
    NewerSchema { applied: i64, known: i64 },
    #[error(
        "migration {0} recorded in the database differs from this build's: the database was \
         migrated by a different build of deskfleet-server; nothing was changed"
    )]
    AlteredMigration(i64),
}

/// Opens (creating if needed) and migrates the database named by `url`: `sqlite://PATH`
/// (or a plain file path) or `postgres://...`/`postgresql://...`.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, ConnectError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(DbStore::new(postgres::Postgres::open(url).await?)));
    }
    let options = sqlite_options(url)?;
    Ok(Arc::new(DbStore::new(sqlite::Sqlite::open(options).await?)))
}

/// The SQLite options of `url`: `sqlite://PATH` (or `sqlite:PATH?...`) or a plain path.
fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, ConnectError> {
    if url.starts_with("sqlite:") {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(ConnectError::InMemory);
        }
        SqliteConnectOptions::from_str(url).map_err(ConnectError::InvalidUrl)
    } else if let Some((scheme, _)) = url.split_once("://") {
        Err(ConnectError::UnsupportedScheme(scheme.to_owned()))
    } else if url == ":memory:" {
        Err(ConnectError::InMemory)
    } else {
        Ok(SqliteConnectOptions::new().filename(url))
    }
}

/// Convenience: the SQLite file `DIR/deskfleet.db`, creating `DIR` if needed.
pub async fn connect_data_dir(dir: &Path) -> Result<Arc<dyn Store>, ConnectError> {
    std::fs::create_dir_all(dir).map_err(|source| ConnectError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let options = SqliteConnectOptions::new().filename(dir.join(DATA_DIR_FILE));
    Ok(Arc::new(DbStore::new(sqlite::Sqlite::open(options).await?)))
}
