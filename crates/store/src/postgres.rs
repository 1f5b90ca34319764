//! PostgreSQL: a pool of connections, one transaction per call. Several server replicas may
//! share the database; the queries in [`crate::ops`] lock desktop rows so that concurrent
//! writers of one desktop's sub-jobs take turns (PostgreSQL already groups the WAL flushes
//! of concurrent commits, so no batching is needed here).

use crate::ConnectError;
use crate::backend::Backend;
use crate::conn::{BoxFuture, backend};
use deskfleet_core::store::StoreResult;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use std::future::Future;
use std::time::Duration;

/// Connections per server process. Several replicas share the server's
/// `max_connections` (100 by default).
const POOL_SIZE: u32 = 16;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub(crate) struct Postgres {
    pool: PgPool,
}

impl Postgres {
    /// Connects and migrates (the migrator holds an advisory lock, so replicas starting
    /// together migrate once).
    pub(crate) async fn open(url: &str) -> Result<Self, ConnectError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(ConnectError::Open)?;
        MIGRATOR.run(&pool).await.map_err(ConnectError::Migrate)?;
        Ok(Self { pool })
    }
}

impl Backend for Postgres {
    type Db = sqlx::Postgres;
    const NAME: &'static str = "postgres";

    fn read(
        &self,
    ) -> impl Future<Output = StoreResult<sqlx::Transaction<'static, sqlx::Postgres>>> + Send {
        // One snapshot for all the statements of a read (a count and its page agree).
        async move {
            self.pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(backend)
        }
    }

    fn write<T, F>(&self, f: F) -> impl Future<Output = StoreResult<T>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        async move {
            let mut conn = self.pool.acquire().await.map_err(backend)?;
            let mut tx = Connection::begin(&mut *conn).await.map_err(backend)?;
            match f(&mut tx).await {
                Ok(out) => {
                    tx.commit().await.map_err(backend)?;
                    Ok(out)
                }
                Err(e) => {
                    // Dropping the transaction would roll back too, but only lazily.
                    if let Err(rb) = tx.rollback().await {
                        tracing::warn!(error = %rb, "postgres rollback failed");
                    }
                    Err(e)
                }
            }
        }
    }
}
