//! PostgreSQL: a pool of connections, one transaction per call. Several server replicas may
//! share the database; the queries in [`crate::ops`] lock desktop rows so that concurrent
//! writers of one desktop's sub-jobs take turns (PostgreSQL already groups the WAL flushes
//! of concurrent commits, so no batching is needed here).

use crate::ConnectError;
use crate::backend::Backend;
use crate::conn::{BoxFuture, backend, is_retryable};
use crate::ops::{self, NewJob};
use crate::signals::Signals;
use deskfleet_core::model::Job;
use deskfleet_core::store::{Signal, StoreResult, Subscription};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use std::sync::OnceLock;
use std::time::Duration;

/// How many times a job creation that lost a race to another is run again.
const CREATE_ATTEMPTS: u32 = 5;

/// Connections per server process. Several replicas share the server's
/// `max_connections` (100 by default).
const POOL_SIZE: u32 = 16;

/// How long a call waits for a connection, including opening a new one, before it fails
/// with `StoreError::Unavailable` (503). Bounded and short, so that while the database is
/// down or refuses connections callers are told so quickly instead of hanging; the pool
/// checks a connection before handing it out and opens new ones once the database is
/// back, so the store recovers by itself.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub(crate) struct Postgres {
    pool: PgPool,
    /// Started at the first subscription or announcement (admin commands need none).
    signals: OnceLock<Option<Signals>>,
}

impl Postgres {
    fn signals(&self) -> Option<&Signals> {
        self.signals
            .get_or_init(|| Signals::start(&self.pool))
            .as_ref()
    }
}

impl Postgres {
    /// Connects and migrates (the migrator holds an advisory lock, so replicas starting
    /// together migrate once).
    pub(crate) async fn open(url: &str) -> Result<Self, ConnectError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(true)
            .connect(url)
            .await
            .map_err(ConnectError::Open)?;
        let migrated: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .map_err(ConnectError::Open)?;
        let applied = if migrated {
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
                .fetch_one(&pool)
                .await
                .map_err(ConnectError::Open)?
        } else {
            None
        };
        crate::schema::migrate(&MIGRATOR, applied, &pool).await?;
        Ok(Self {
            pool,
            signals: OnceLock::new(),
        })
    }
}

impl Backend for Postgres {
    type Db = sqlx::Postgres;
    const NAME: &'static str = "postgres";

    fn subscribe(&self, signal: Signal) -> Option<Box<dyn Subscription>> {
        Some(self.signals()?.subscribe(signal))
    }

    fn raise(&self, signal: Signal) {
        if let Some(s) = self.signals() {
            s.raise(signal);
        }
    }

    async fn read(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        // One snapshot for all the statements of a read (a count and its page agree).
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(backend)
    }

    async fn read_one(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.pool.acquire().await.map_err(backend)
    }

    /// Job creators run side by side; one that loses the race to start an install on a
    /// desktop runs again, and then follows the winner's install (see `ops`).
    async fn create_install_job(&self, call: NewJob) -> StoreResult<Job> {
        let mut attempt = 1;
        loop {
            let this = call.clone();
            let result = self
                .write(move |c| Box::pin(async move { ops::create_install_job(c, &this).await }))
                .await;
            match result {
                Err(e) if attempt < CREATE_ATTEMPTS && is_retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "job creation raced another; again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
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
