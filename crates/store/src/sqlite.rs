//! SQLite: one file in WAL mode, `synchronous=FULL`, one writer connection and a pool of
//! readers.
//!
//! Writes go through a queue to a single task that owns the writer connection (group
//! commit). The task takes everything queued (up to [`MAX_BATCH`] calls), runs each call
//! inside its own SAVEPOINT of one transaction, so that a failing call rolls back alone,
//! then commits once and only then answers every caller. One fsync thus covers a whole
//! batch, and since nothing is answered before the commit, an acknowledged write survives
//! a crash or a power cut. Readers never block the writer nor each other (WAL).

use crate::backend::Backend;
use crate::conn::BoxFuture;
use crate::ConnectError;
use deskfleet_core::store::{StoreError, StoreResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqliteConnection};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most calls committed together. Large enough to amortise an fsync over many callers,
/// small enough that one batch holds the write lock only briefly.
pub(crate) const MAX_BATCH: usize = 128;
/// Calls that may wait for the writer before callers themselves wait to enqueue.
const QUEUE_DEPTH: usize = 4 * MAX_BATCH;
/// Read connections; reads run in parallel with each other and with the writer.
const READERS: u32 = 4;
/// How long a statement waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub(crate) struct Sqlite {
    readers: SqlitePool,
    queue: mpsc::Sender<WriteOp>,
}

/// One queued call: runs on the writer connection and hands back its answer, to be sent
/// once the batch's fate is known.
type WriteOp =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Answer>> + Send>;

/// A call's result, held until its batch commits or fails.
trait Answer: Send {
    fn succeeded(&self) -> bool;
    /// Sends the result: the call's own on commit, else an error saying nothing was written.
    fn send(self: Box<Self>, batch: Result<(), &str>);
}

struct Pending<T> {
    result: StoreResult<T>,
    to: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send> Answer for Pending<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn send(self: Box<Self>, batch: Result<(), &str>) {
        let result = match (batch, self.result) {
            (Ok(()), result) | (Err(_), result @ Err(_)) => result,
            (Err(why), Ok(_)) => Err(not_written(why)),
        };
        // The caller may have gone away meanwhile; what was committed stays committed.
        let _ = self.to.send(result);
    }
}

fn not_written(why: &str) -> StoreError {
    StoreError::Backend(format!("the write was not committed: {why}").into())
}

impl Sqlite {
    /// Opens (creating it if needed) and migrates the database, and starts the writer task.
    pub(crate) async fn open(options: SqliteConnectOptions) -> Result<Self, ConnectError> {
        let common = options
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("temp_store", "memory")
            .statement_cache_capacity(256);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                common
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .pragma("cache_size", "-65536"),
            )
            .await
            .map_err(ConnectError::Open)?;
        MIGRATOR.run(&writer).await.map_err(ConnectError::Migrate)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(common.pragma("query_only", "ON"))
            .await
            .map_err(ConnectError::Open)?;
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(write_loop(writer, pending));
        Ok(Self { readers, queue })
    }
}

impl Backend for Sqlite {
    type Db = sqlx::Sqlite;
    const NAME: &'static str = "sqlite";

    fn read(
        &self,
    ) -> impl Future<Output = StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>>> + Send {
        async move { self.readers.begin().await.map_err(crate::conn::backend) }
    }

    fn write<T, F>(&self, f: F) -> impl Future<Output = StoreResult<T>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        async move {
            let (to, answer) = oneshot::channel();
            let op: WriteOp = Box::new(move |conn| {
                Box::pin(async move {
                    let result = f(conn).await;
                    Box::new(Pending { result, to }) as Box<dyn Answer>
                })
            });
            self.queue
                .send(op)
                .await
                .map_err(|_| not_written("the writer has stopped"))?;
            answer
                .await
                .map_err(|_| not_written("its batch failed; see the log"))?
        }
    }
}

/// The writer task: batches until every sender (the store) is gone.
async fn write_loop(writer: SqlitePool, mut queue: mpsc::Receiver<WriteOp>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ops = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        run_batch(&writer, ops).await;
    }
    writer.close().await;
}

/// Runs `ops` in one transaction, one savepoint each, and answers them after the commit.
/// If the transaction itself fails, every caller gets an error and nothing is kept (calls
/// not yet run are dropped, which their callers see as "not committed").
async fn run_batch(writer: &SqlitePool, ops: Vec<WriteOp>) {
    let size = ops.len();
    let mut conn = match writer.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, size, "sqlite writer connection unavailable");
            return;
        }
    };
    // IMMEDIATE takes the write lock up front: another process holding it makes us wait
    // (busy_timeout) rather than fail half-way through the batch.
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, size, "sqlite write batch could not begin");
            return;
        }
    };
    let mut answers: Vec<Box<dyn Answer>> = Vec::with_capacity(size);
    let mut failure = None;
    for op in ops {
        let mut savepoint = match Connection::begin(&mut *tx).await {
            Ok(sp) => sp,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let answer = op(&mut savepoint).await;
        let closed = if answer.succeeded() {
            savepoint.commit().await
        } else {
            savepoint.rollback().await
        };
        answers.push(answer);
        if let Err(e) = closed {
            failure = Some(e);
            break;
        }
    }
    let outcome = match failure {
        Some(e) => {
            if let Err(rb) = tx.rollback().await {
                tracing::error!(error = %rb, "sqlite write batch rollback failed");
                conn.close_on_drop();
            }
            Err(e)
        }
        None => tx.commit().await,
    };
    match outcome {
        Ok(()) => {
            tracing::trace!(size, "sqlite write batch committed");
            answers.into_iter().for_each(|a| a.send(Ok(())));
        }
        Err(e) => {
            tracing::error!(error = %e, size, "sqlite write batch failed; nothing was kept");
            let why = e.to_string();
            answers.into_iter().for_each(|a| a.send(Err(&why)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{Conn, DbRow, args};

    async fn scratch() -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        MIGRATOR.run(&pool).await.unwrap();
        (dir, pool)
    }

    /// The shared queries write `$n` placeholders, which SQLite reads as *named*
    /// parameters; sqlx must bind them by their number, not by order of appearance.
    #[tokio::test]
    async fn dollar_placeholders_bind_by_number() {
        let (_dir, pool) = scratch().await;
        let mut conn = pool.acquire().await.unwrap();
        let row = conn
            .fetch_optional("SELECT $2 || $1 || $2 AS v, $3 + 1 AS n", args!["a", "b", 41])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.text("v").unwrap(), "bab");
        assert_eq!(row.int("n").unwrap(), 42);
    }

    /// The statements the engine runs all the time must read indexes, never a whole table.
    #[tokio::test]
    async fn hot_queries_use_their_indexes() {
        let (_dir, pool) = scratch().await;
        let mut conn = pool.acquire().await.unwrap();
        let cases: &[(&str, &str)] = &[
            (
                "UPDATE sub_jobs SET status = 'FAILED' WHERE deliver_by IS NOT NULL \
                 AND deliver_by < $1 AND status = 'WAITING' AND follows IS NULL",
                "sub_jobs_deliver_by",
            ),
            (
                "UPDATE sub_jobs SET status = 'FAILED' WHERE execute_by IS NOT NULL \
                 AND execute_by < $1 AND status = 'RUNNING' AND follows IS NULL",
                "sub_jobs_execute_by",
            ),
            (
                "SELECT s.id FROM sub_jobs s WHERE s.desktop_id IN (SELECT t.value FROM \
                 json_each($1) AS t) AND s.status IN ('WAITING', 'RUNNING') \
                 AND s.follows IS NULL",
                "sub_jobs_one_leader",
            ),
            (
                "SELECT s.id FROM sub_jobs s WHERE s.follows = $1 \
                 AND s.status IN ('WAITING', 'RUNNING') ORDER BY s.created_at, s.seq",
                "sub_jobs_followers",
            ),
            (
                "SELECT s.seq FROM sub_jobs s WHERE s.desktop_id = $1 \
                 AND s.status IN ('WAITING', 'RUNNING') AND s.follows IS NULL \
                 AND s.status = 'WAITING' ORDER BY s.created_at, s.seq LIMIT 1",
                "sub_jobs_one_leader",
            ),
        ];
        for (sql, index) in cases {
            // Unbound parameters are NULL, which is all a plan needs.
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let rows = conn.fetch_all(&explain, Vec::new()).await.unwrap();
            let detail = rows
                .iter()
                .map(|r| r.text("detail").unwrap())
                .collect::<Vec<_>>()
                .join("; ");
            assert!(detail.contains(index), "{sql}\nplan: {detail}");
        }
    }
}
