//! Online backup of the SQLite database: `VACUUM INTO` a new file, while the server keeps
//! serving. The copy is one consistent snapshot (a read transaction), compacted, and
//! needs no WAL beside it, so restoring is copying it in place of `deskfleet.db` while
//! the server is stopped. PostgreSQL is backed up with its own tools (`pg_dump`).
//!
//! The copy holds every secret of the database, so it is written where no other user can
//! open it: into a fresh private (0700) directory next to the target, made 0600, synced,
//! then renamed into place. An existing target is never overwritten.

use crate::{ConnectError, sqlite_options};
use sqlx::{Connection, SqliteConnection};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "this database is PostgreSQL: back it up with pg_dump (see docs/operations.md, \
         \"Backup and restore\")"
    )]
    NotSqlite,
    #[error("{} already exists; give a new file name", .0.display())]
    Exists(PathBuf),
    #[error("{} has no file name", .0.display())]
    NoFileName(PathBuf),
    #[error(transparent)]
    Open(#[from] ConnectError),
    #[error("cannot copy the database")]
    Copy(#[source] sqlx::Error),
    #[error("{}", .0)]
    Io(String, #[source] std::io::Error),
}

/// Writes a consistent copy of the SQLite database named by `url` (as for
/// [`crate::connect`]) to the new file `to`, mode 0600; returns its size in bytes.
pub async fn backup(url: &str, to: &Path) -> Result<u64, BackupError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(BackupError::NotSqlite);
    }
    if to.exists() {
        return Err(BackupError::Exists(to.to_owned()));
    }
    let name = to
        .file_name()
        .ok_or_else(|| BackupError::NoFileName(to.to_owned()))?;
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let options = sqlite_options(url)?
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(10));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| BackupError::Open(ConnectError::Open(e)))?;

    let private = parent.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io = |what: String| move |e| BackupError::Io(what, e);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io(format!("cannot create {}", private.display())))?;
    let partial = private.join(name);
    let result = async {
        sqlx::query("VACUUM INTO ?1")
            .bind(partial.to_string_lossy().into_owned())
            .execute(&mut conn)
            .await
            .map_err(BackupError::Copy)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("cannot restrict {}", partial.display())))?;
        let file = std::fs::File::open(&partial)
            .map_err(io(format!("cannot open {}", partial.display())))?;
        file.sync_all()
            .map_err(io(format!("cannot sync {}", partial.display())))?;
        let size = file
            .metadata()
            .map_err(io(format!("cannot read {}", partial.display())))?
            .len();
        // A rename does not replace a directory entry created meanwhile only on some
        // systems; check once more right before it.
        if to.exists() {
            return Err(BackupError::Exists(to.to_owned()));
        }
        std::fs::rename(&partial, to)
            .map_err(io(format!("cannot move the copy to {}", to.display())))?;
        if let Ok(dir) = std::fs::File::open(&parent) {
            let _ = dir.sync_all();
        }
        Ok(size)
    }
    .await;
    let _ = std::fs::remove_dir_all(&private);
    let _ = conn.close().await;
    result
}
