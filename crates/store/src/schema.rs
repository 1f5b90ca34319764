//! The schema version a database is at, against the migrations this build carries.
//!
//! Replicas of different versions may meet one database during a rolling upgrade. A newer
//! one migrates it; an older one must then refuse to start rather than run its queries
//! against tables it does not know (or, worse, write rows a newer schema reads
//! differently). sqlx's own migrator would stop too, but with "migration N was previously
//! applied but is missing", which does not say what to do.

use crate::ConnectError;
use sqlx::migrate::{MigrateError, Migrator};

/// The newest migration `migrator` carries.
fn newest_known(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// `Err(NewerSchema)` when `applied` (the newest migration recorded in the database,
/// if any) is one this build does not carry.
pub(crate) fn check_applied(migrator: &Migrator, applied: Option<i64>) -> Result<(), ConnectError> {
    let known = newest_known(migrator);
    match applied {
        Some(applied) if applied > known => Err(ConnectError::NewerSchema { applied, known }),
        _ => Ok(()),
    }
}

/// Runs `migrator`'s migrations, first refusing a database migrated by a newer build; the
/// migrator's own errors keep their meaning in words.
pub(crate) async fn migrate<'a, A>(
    migrator: &Migrator,
    applied: Option<i64>,
    target: A,
) -> Result<(), ConnectError>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    check_applied(migrator, applied)?;
    migrator.run(target).await.map_err(|e| match e {
        MigrateError::VersionMissing(applied) => ConnectError::NewerSchema {
            applied,
            known: newest_known(migrator),
        },
        MigrateError::VersionMismatch(version) => ConnectError::AlteredMigration(version),
        other => ConnectError::Migrate(other),
    })
}
