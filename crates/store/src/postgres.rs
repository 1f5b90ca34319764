//! PostgreSQL: a pool of connections, one transaction per call, except job creations.
//! Several server replicas may share the database; the queries in [`crate::ops`] lock
//! desktop rows so that concurrent writers of one desktop's sub-jobs take turns.
//!
//! Job creations, the call the server is hammered with, are grouped as on SQLite: a few
//! creators each take the calls queued meanwhile and create their jobs in one transaction,
//! with the same handful of statements whatever their number. PostgreSQL's cost is mostly
//! per statement (it is what bounds the rate on a small machine: its CPU), so grouped
//! calls cost it a fraction of one transaction each. An idle server's call is a group of
//! one, created at once.

use crate::ConnectError;
use crate::backend::Backend;
use crate::conn::{BoxFuture, backend, is_retryable};
use crate::ops::{self, NewJob};
use crate::signals::Signals;
use deskfleet_core::model::Job;
use deskfleet_core::store::{Signal, StoreError, StoreResult, Subscription};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};

/// How many times a job creation that lost a race to another is run again.
const CREATE_ATTEMPTS: u32 = 5;

/// Connections per server process. Several replicas share the server's
/// `max_connections` (100 by default).
const POOL_SIZE: u32 = 16;

/// Job-creation groups in flight at once (each holds a connection while it runs), and
/// the most calls a group takes.
const CREATORS: usize = 4;
const MAX_GROUP: usize = 128;
/// Calls that may wait for a creator before callers themselves wait to enqueue.
const CREATE_QUEUE: usize = CREATORS * MAX_GROUP;

/// A queued `create_install_job` call and where its answer goes.
type QueuedCreate = (NewJob, oneshot::Sender<StoreResult<Job>>);

/// How long a call waits for a connection, including opening a new one, before it fails
/// with `StoreError::Unavailable` (503). Bounded and short, so that while the database is
/// down or refuses connections callers are told so quickly instead of hanging; the pool
/// checks a connection before handing it out and opens new ones once the database is
/// back, so the store recovers by itself.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub(crate) struct Postgres {
    pool: PgPool,
    creates: mpsc::Sender<QueuedCreate>,
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
        let (creates, queued) = mpsc::channel(CREATE_QUEUE);
        let queued = Arc::new(Mutex::new(queued));
        for _ in 0..CREATORS {
            tokio::spawn(create_loop(pool.clone(), Arc::clone(&queued)));
        }
        Ok(Self {
            pool,
            creates,
            signals: OnceLock::new(),
        })
    }
}

/// A creator: takes whatever calls are queued (waiting for one if none is) and creates
/// their jobs together, until the store is gone.
async fn create_loop(pool: PgPool, queued: Arc<Mutex<mpsc::Receiver<QueuedCreate>>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    loop {
        if queued.lock().await.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        let (calls, answers): (Vec<NewJob>, Vec<_>) = group.drain(..).unzip();
        match create_group(&pool, calls).await {
            Ok(results) => {
                for (result, to) in results.into_iter().zip(answers) {
                    // The caller may have gone away meanwhile; its job stays created.
                    let _ = to.send(result);
                }
            }
            Err(e) => {
                for to in answers {
                    let _ = to.send(Err(e.retell()));
                }
            }
        }
    }
}

/// Creates the jobs of `calls` in one transaction, run again (all of them) when it lost a
/// race to another writer (see [`Postgres::create_install_job`]). A call that fails on
/// its own (unknown desktops) has its own error and leaves the others be.
async fn create_group(pool: &PgPool, calls: Vec<NewJob>) -> StoreResult<Vec<StoreResult<Job>>> {
    let mut attempt = 1;
    loop {
        let these = calls.clone();
        let result = transaction(pool, move |c| {
            Box::pin(async move { ops::create_install_jobs(c, &these).await })
        })
        .await;
        match result {
            Err(e) if attempt < CREATE_ATTEMPTS && is_retryable(&e) => {
                tracing::debug!(error = %e, attempt, calls = calls.len(), "job creation raced another; again");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Runs `f` in a transaction of its own, committed if it succeeds.
async fn transaction<T, F>(pool: &PgPool, f: F) -> StoreResult<T>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<T>>,
{
    let mut conn = pool.acquire().await.map_err(backend)?;
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

impl Backend for Postgres {
    type Db = sqlx::Postgres;
    type WriteConn = PgConnection;
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

    /// Job creations are grouped (see the module documentation). Groups run side by
    /// side, with each other and with other replicas; one that loses the race to start an
    /// install on a desktop runs again, and then follows the winner's install (see `ops`).
    async fn create_install_job(&self, call: NewJob) -> StoreResult<Job> {
        let (to, answer) = oneshot::channel();
        self.creates
            .send((call, to))
            .await
            .map_err(|_| StoreError::Unavailable("the job creators have stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the job was not created: its group was dropped".into())
        })?
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        transaction(&self.pool, f).await
    }
}

#[cfg(test)]
mod tests {
    use crate::conn::Dialect;
    use sqlx::{Connection, Executor, PgConnection};

    /// The look-ups by a JSON list of ids probe their index whatever the statistics say.
    /// Here they say what they said during a benchmark: nearly every sub-job follows
    /// another, so almost none is an in-flight leader; then 5,000 leaders arrive before
    /// the next ANALYZE. A list of two desktops must still be two probes of the leader
    /// index, not a hash of the list and a read of all 5,000 leaders.
    #[tokio::test]
    async fn list_lookups_probe_their_index_under_stale_statistics() {
        let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
            eprintln!("skipped: TEST_DATABASE_URL not set");
            return;
        };
        let name = format!("df_plan_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        let outcome = tokio::spawn(async move {
            drop(crate::connect(&url).await.expect("migrate"));
            // Sub-jobs alone: no foreign key ties them to jobs or desktops (migration 0025).
            let mut c = PgConnection::connect(&url).await.unwrap();
            let insert = |status: &str, follows: &str, from: u32, to: u32| {
                format!(
                    "INSERT INTO sub_jobs (id, job_id, project_id, desktop_id, position, \
                     status, stage, process, created_at, attempts, follows) \
                     SELECT 's' || i, 'j', 'p', 'd' || i, 0, '{status}', 'QUEUED', 0, i, 0, \
                     {follows} FROM generate_series({from}, {to}) AS i"
                )
            };
            c.execute(insert("WAITING", "'s0'", 1, 20_000).as_str())
                .await
                .unwrap();
            c.execute("ANALYZE sub_jobs").await.unwrap();
            c.execute(insert("WAITING", "NULL", 20_001, 25_000).as_str())
                .await
                .unwrap();
            let sql = format!(
                "EXPLAIN (ANALYZE, FORMAT TEXT) {}",
                crate::ops::in_flight_leaders_sql(Dialect::Postgres)
            );
            let plan: Vec<String> = sqlx::query_scalar(&sql)
                .bind(r#"["d20001", "d24999"]"#)
                .fetch_all(&mut c)
                .await
                .unwrap();
            let plan = plan.join("\n");
            assert!(
                plan.contains("Index Scan using sub_jobs_one_leader")
                    && plan.contains("Index Cond: (desktop_id = ANY")
                    && plan.contains("rows=2 loops=1"),
                "{plan}"
            );
        })
        .await;
        admin
            .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
            .await
            .unwrap();
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
