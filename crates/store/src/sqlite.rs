//! SQLite: one file in WAL mode, `synchronous=FULL`, one writer connection and a pool of
//! readers.
//!
//! Writes go through a queue to a single task that owns the writer connection (group
//! commit). The task takes everything queued (up to [`MAX_BATCH`] calls), runs each call
//! inside its own SAVEPOINT of one transaction, so that a failing call rolls back alone,
//! then commits once and only then answers every caller. One fsync thus covers a whole
//! batch, and since nothing is answered before the commit, an acknowledged write survives
//! a crash or a power cut. Readers never block the writer nor each other (WAL).
//!
//! Three refinements keep the writer fast, as it is the one thing that cannot scale out:
//! - the `create_install_job` calls of a batch run as one group, with a handful of
//!   statements for all of them (`ops::create_install_jobs`): each call is validated
//!   before anything is written, so one naming unknown desktops still fails alone, and
//!   per-statement overhead stops dominating;
//! - the writer calls SQLite directly from its own thread ([`crate::sqlite_conn`]) rather
//!   than through sqlx, where every statement is a round trip to a driver thread;
//! - WAL checkpoints run on a connection of their own ([`checkpoint_loop`]), so that a
//!   commit is only its WAL append and fsync.
//!
//! Measured with `examples/create_jobs.rs` (64 callers, 100 desktops, 2 cores): about
//! 20,000 calls/s of 2 sub-jobs and 1,300 calls/s of 100 sub-jobs (130,000 sub-jobs/s).
//!
//! Storage faults (disk full, I/O errors, a read-only or immutable file) fail the batch
//! they hit, and only its callers, with `StoreError::Unavailable`; the writer then drops
//! its connection, whose transaction state can no longer be trusted, and the next batch
//! runs on a fresh one, so writes resume by themselves once the disk is writable again.
//! The WAL index (`-shm`) is memory-mapped: touching it once its file can no longer be
//! written in place (immutable, or a file system gone read-only) raises SIGBUS, which no
//! error handling can catch. So every transaction first checks that this file can still be
//! written ([`shm_fault`]) and refuses with `Unavailable` if not; why the store
//! keeps a shared WAL index rather than a private one is in docs/operations.md.

use crate::ConnectError;
use crate::backend::Backend;
use crate::conn::BoxFuture;
use crate::ops::{self, NewJob};
use crate::sqlite_conn::{WriterConn, WriterSettings};
use deskfleet_core::model::Job;
use deskfleet_core::store::{StoreError, StoreResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, SqliteConnection};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most calls committed together. Large enough to amortise an fsync over many callers,
/// small enough that one batch holds the write lock only briefly.
pub(crate) const MAX_BATCH: usize = 128;
/// Calls that may wait for the writer before callers themselves wait to enqueue.
const QUEUE_DEPTH: usize = 4 * MAX_BATCH;
/// Read connections; reads run in parallel with each other and with the writer.
const READERS: u32 = 4;
/// Pragmas of every connection, the writer's and the readers'.
const CONNECTION_PRAGMAS: [(&str, &str); 3] = [
    ("foreign_keys", "ON"),
    ("synchronous", "FULL"),
    ("temp_store", "MEMORY"),
];
/// How long a statement waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read waits for a free reader connection.
const READER_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often at most the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL pages after which the writer checkpoints by itself, should the checkpointer fall
/// behind (it normally keeps the WAL far smaller).
const WRITER_CHECKPOINT_PAGES: &str = "20000";
/// Bytes the WAL file is truncated back to once checkpointed.
const WAL_SIZE_LIMIT: &str = "67108864";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub(crate) struct Sqlite {
    readers: SqlitePool,
    queue: mpsc::Sender<Queued>,
    /// The WAL index file, checked before every read ([`shm_fault`]).
    shm: Arc<Path>,
}

/// What callers queue for the writer.
enum Queued {
    /// Any write, run in a savepoint of its own.
    Op(WriteOp),
    /// A `create_install_job` call. The calls of one batch are created together, with a
    /// handful of statements for all of them, in one savepoint: each call is checked
    /// before anything is written, so a call naming unknown desktops fails alone.
    Create(NewJob, oneshot::Sender<StoreResult<Job>>),
}

/// One queued call: runs on the writer connection and hands back its answer, to be sent
/// once the batch's fate is known.
type WriteOp = Box<dyn for<'c> FnOnce(&'c mut WriterConn) -> BoxFuture<'c, Box<dyn Answer>> + Send>;

/// A call's result, held until its batch commits or fails.
trait Answer: Send {
    fn succeeded(&self) -> bool;
    /// Whether the call failed because of the storage itself: the transaction it ran in
    /// may have been rolled back by SQLite, so the batch cannot go on.
    fn storage_fault(&self) -> bool;
    /// Sends the result: the call's own on commit, else the batch's error (nothing of the
    /// call was written).
    fn send(self: Box<Self>, batch: Result<(), &StoreError>);
}

struct Pending<T> {
    result: StoreResult<T>,
    to: oneshot::Sender<StoreResult<T>>,
}

/// The answers of calls that ran together and succeed or fail together.
struct Group<T> {
    succeeded: bool,
    storage_fault: bool,
    parts: Vec<Pending<T>>,
}

impl<T: Send> Answer for Group<T> {
    fn succeeded(&self) -> bool {
        self.succeeded
    }

    fn storage_fault(&self) -> bool {
        self.storage_fault
    }

    fn send(self: Box<Self>, batch: Result<(), &StoreError>) {
        for part in self.parts {
            Box::new(part).send(batch);
        }
    }
}

/// One write op that creates the jobs of all `calls`, answering each caller.
fn create_group(calls: Vec<(NewJob, oneshot::Sender<StoreResult<Job>>)>) -> WriteOp {
    Box::new(move |conn| {
        Box::pin(async move {
            let (calls, senders): (Vec<NewJob>, Vec<_>) = calls.into_iter().unzip();
            let group = match ops::create_install_jobs(conn, &calls).await {
                Ok(results) => Group {
                    succeeded: true,
                    storage_fault: false,
                    parts: results
                        .into_iter()
                        .zip(senders)
                        .map(|(result, to)| Pending { result, to })
                        .collect(),
                },
                Err(e) => Group {
                    succeeded: false,
                    storage_fault: e.is_unavailable(),
                    parts: senders
                        .into_iter()
                        .map(|to| Pending {
                            result: Err(e.retell()),
                            to,
                        })
                        .collect(),
                },
            };
            Box::new(group) as Box<dyn Answer>
        })
    })
}

impl<T: Send> Answer for Pending<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn storage_fault(&self) -> bool {
        matches!(&self.result, Err(e) if e.is_unavailable())
    }

    fn send(self: Box<Self>, batch: Result<(), &StoreError>) {
        let result = match (batch, self.result) {
            // A call that failed has its own answer, whatever became of the batch.
            (Ok(()), result) | (Err(_), result @ Err(_)) => result,
            (Err(e), Ok(_)) => Err(e.retell()),
        };
        // The caller may have gone away meanwhile; what was committed stays committed.
        let _ = self.to.send(result);
    }
}

/// The batch's error when one of its calls hit a storage fault.
fn storage_fault_in_batch() -> StoreError {
    StoreError::Unavailable("a call of the batch hit a storage fault; see the log".into())
}

fn not_written(why: &str) -> StoreError {
    StoreError::Backend(format!("the write was not committed: {why}").into())
}

/// `Unavailable` if the WAL index file `shm` exists but can no longer be written
/// (immutable, read-only file system, permissions). SQLite maps that file into memory and
/// would take a SIGBUS writing to it; this check keeps the process alive. A missing file
/// is fine: SQLite creates it.
///
/// It asks with `access(2)` and never opens the file: closing any descriptor of a file
/// drops every POSIX lock this process holds on it, and SQLite's locks on the `-shm` file
/// are what tell another process (an admin command) that the WAL index is in use; without
/// them that process would rebuild the index under us.
fn shm_fault(shm: &Path) -> Option<StoreError> {
    match rustix::fs::access(shm, rustix::fs::Access::WRITE_OK) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => None,
        Err(e) => Some(StoreError::Unavailable(
            format!("the WAL index {} cannot be written: {e}", shm.display()).into(),
        )),
    }
}

/// The WAL index file of the database `options` opens.
fn shm_path(options: &SqliteConnectOptions) -> Arc<Path> {
    let mut path = options.get_filename().as_os_str().to_owned();
    path.push("-shm");
    Arc::from(PathBuf::from(path))
}

impl Sqlite {
    /// Opens (creating it if needed) and migrates the database, and starts the writer task.
    pub(crate) async fn open(options: SqliteConnectOptions) -> Result<Self, ConnectError> {
        let common = CONNECTION_PRAGMAS.iter().fold(
            options
                .busy_timeout(BUSY_TIMEOUT)
                .statement_cache_capacity(256),
            |options, &(name, value)| options.pragma(name, value),
        );
        let shm = shm_path(&common);
        let path = common.get_filename().to_owned();
        // This one-connection pool creates and migrates the database and sets it to WAL;
        // the writer then opens its own connection ([`crate::sqlite_conn`]) with the same
        // settings.
        let setup = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                common
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(ConnectError::Open)?;
        let migrated: bool = sqlx::query_scalar(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&setup)
        .await
        .map_err(ConnectError::Open)?;
        let applied = if migrated {
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
                .fetch_one(&setup)
                .await
                .map_err(ConnectError::Open)?
        } else {
            None
        };
        crate::schema::migrate(&MIGRATOR, applied, &setup).await?;
        setup.close().await;
        let checkpointer = SqliteConnection::connect_with(&common)
            .await
            .map_err(ConnectError::Open)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(READER_ACQUIRE_TIMEOUT)
            .connect_with(common.pragma("query_only", "ON"))
            .await
            .map_err(ConnectError::Open)?;
        let target = WriterTarget {
            path,
            settings: WriterSettings {
                busy_timeout: BUSY_TIMEOUT,
                pragmas: CONNECTION_PRAGMAS
                    .iter()
                    .chain(&[
                        ("journal_mode", "WAL"),
                        ("cache_size", "-65536"),
                        ("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES),
                        ("journal_size_limit", WAL_SIZE_LIMIT),
                    ])
                    .map(|&(name, value)| (name, value.to_owned()))
                    .collect(),
            },
            shm: shm.clone(),
        };
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        let (poke, pokes) = mpsc::channel(1);
        tokio::spawn(checkpoint_loop(checkpointer, pokes, shm.clone()));
        // The writer runs on a thread of its own, as the single writer bounds the rate of
        // every write: on the server's runtime it would queue behind the requests being
        // handled.
        let loop_ = write_loop(target, pending, poke);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|runtime| {
                std::thread::Builder::new()
                    .name("sqlite-writer".into())
                    .spawn(move || runtime.block_on(loop_))
            })
            .map_err(|e| ConnectError::Open(sqlx::Error::Io(e)))?;
        Ok(Self {
            readers,
            queue,
            shm,
        })
    }
}

impl Backend for Sqlite {
    type Db = sqlx::Sqlite;
    type WriteConn = WriterConn;
    const NAME: &'static str = "sqlite";

    async fn read(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        if let Some(fault) = shm_fault(&self.shm) {
            return Err(fault);
        }
        self.readers.begin().await.map_err(crate::conn::backend)
    }

    async fn read_one(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        if let Some(fault) = shm_fault(&self.shm) {
            return Err(fault);
        }
        self.readers.acquire().await.map_err(crate::conn::backend)
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriterConn) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let (to, answer) = oneshot::channel();
        let op: WriteOp = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                Box::new(Pending { result, to }) as Box<dyn Answer>
            })
        });
        self.enqueue(Queued::Op(op), answer).await
    }

    async fn create_install_job(&self, call: NewJob) -> StoreResult<Job> {
        let (to, answer) = oneshot::channel();
        self.enqueue(Queued::Create(call, to), answer).await
    }
}

impl Sqlite {
    async fn enqueue<T>(
        &self,
        queued: Queued,
        answer: oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        self.queue
            .send(queued)
            .await
            .map_err(|_| not_written("the writer has stopped"))?;
        // Calls of a batch that failed before they ran are dropped unanswered; a batch
        // fails only when the storage does (see `run_batch`).
        answer.await.map_err(|_| {
            StoreError::Unavailable("the write was not committed: its batch failed".into())
        })?
    }
}

/// Copies committed WAL frames back into the database file, off the writer's path, so
/// that a commit costs only its WAL append and fsync. A PASSIVE checkpoint never blocks
/// the writer or the readers. Runs after commits (`pokes`), at most every
/// [`CHECKPOINT_EVERY`], until the writer stops.
async fn checkpoint_loop(
    mut conn: SqliteConnection,
    mut pokes: mpsc::Receiver<()>,
    shm: Arc<Path>,
) {
    while pokes.recv().await.is_some() {
        if shm_fault(&shm).is_some() {
            // The writer reports the fault; try again after the next commit.
        } else if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "sqlite checkpoint failed; the writer will checkpoint");
        }
        tokio::time::sleep(CHECKPOINT_EVERY).await;
    }
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "sqlite checkpointer close failed");
    }
}

/// Where and how the writer opens its connection.
struct WriterTarget {
    path: PathBuf,
    settings: WriterSettings,
    shm: Arc<Path>,
}

/// The writer task: batches until every sender (the store) is gone.
async fn write_loop(
    target: WriterTarget,
    mut queue: mpsc::Receiver<Queued>,
    checkpoint: mpsc::Sender<()>,
) {
    let depth = metrics::gauge!("deskfleet_store_writer_queue_depth");
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Opened by the first batch, and again by the batch after one that failed.
    let mut conn = None;
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        depth.set((batch.len() + queue.len()) as f64);
        // Every call of a batch was queued before the batch began and is answered after
        // it commits, so any order among them is a valid one: job creations go first,
        // together.
        let mut creates = Vec::new();
        let mut ops = Vec::with_capacity(batch.len() + 1);
        ops.push(None);
        for queued in batch.drain(..) {
            match queued {
                Queued::Op(op) => ops.push(Some(op)),
                Queued::Create(call, to) => creates.push((call, to)),
            }
        }
        if !creates.is_empty() {
            ops[0] = Some(create_group(creates));
        }
        let committed = run_batch(&mut conn, &target, ops.into_iter().flatten().collect()).await;
        depth.set(queue.len() as f64);
        // Only a commit adds to the WAL; a checkpoint after a failed batch would only
        // touch the WAL index of a storage that is failing. Full means one is already due.
        if committed {
            let _ = checkpoint.try_send(());
        }
    }
}

/// Runs `ops` in one transaction, one savepoint each, and answers them after the commit.
/// If the transaction itself fails, or a call hits a storage fault (after which SQLite may
/// already have rolled the transaction back), every caller of the batch gets an error and
/// nothing is kept; calls not yet run are dropped, which their callers see as
/// `Unavailable`. The connection of a failed batch is closed rather than reused: a failed
/// COMMIT or ROLLBACK leaves it in a transaction state nobody can vouch for, and the next
/// batch opens a fresh one. True when the batch committed.
async fn run_batch(
    slot: &mut Option<WriterConn>,
    target: &WriterTarget,
    ops: Vec<WriteOp>,
) -> bool {
    let size = ops.len();
    if let Some(fault) = shm_fault(&target.shm) {
        tracing::error!(error = %fault, size, "sqlite write batch refused");
        return false;
    }
    let conn = match slot {
        Some(conn) => conn,
        None => match WriterConn::open(&target.path, &target.settings) {
            Ok(conn) => slot.insert(conn),
            Err(e) => {
                tracing::error!(error = %e, size, "sqlite writer connection unavailable");
                return false;
            }
        },
    };
    match run_in_transaction(conn, &target.shm, ops).await {
        Ok(answers) => {
            tracing::trace!(size, "sqlite write batch committed");
            answers.into_iter().for_each(|a| a.send(Ok(())));
            true
        }
        Err((e, answers)) => {
            tracing::error!(error = %e, size, "sqlite write batch failed; nothing was kept");
            answers.into_iter().for_each(|a| a.send(Err(&e)));
            // Closing rolls back whatever transaction is still open.
            *slot = None;
            false
        }
    }
}

/// The answers of a committed batch, or the batch's error with the answers of the calls
/// that ran (the caller sends that error to all of them).
type BatchOutcome = Result<Vec<Box<dyn Answer>>, (StoreError, Vec<Box<dyn Answer>>)>;

async fn run_in_transaction(conn: &mut WriterConn, shm: &Path, ops: Vec<WriteOp>) -> BatchOutcome {
    let mut answers: Vec<Box<dyn Answer>> = Vec::with_capacity(ops.len());
    // IMMEDIATE takes the write lock up front: another process holding it makes us wait
    // (busy_timeout) rather than fail half-way through the batch.
    if let Err(e) = conn.run("BEGIN IMMEDIATE") {
        return Err((e, answers));
    }
    let mut failure = None;
    // A batch of one call needs no savepoint: if the call fails, the whole transaction is
    // rolled back instead, which undoes the same writes, and the call still gets its own
    // answer.
    if ops.len() == 1 {
        let op = ops.into_iter().next().expect("one op");
        let answer = op(conn).await;
        let (storage_fault, succeeded) = (answer.storage_fault(), answer.succeeded());
        answers.push(answer);
        if storage_fault {
            failure = Some(storage_fault_in_batch());
        } else if !succeeded {
            return match conn.run("ROLLBACK") {
                Ok(()) => Ok(answers),
                Err(e) => Err((e, answers)),
            };
        }
        return finish_transaction(conn, shm, failure, answers);
    }
    for op in ops {
        if let Err(e) = conn.run("SAVEPOINT op") {
            failure = Some(e);
            break;
        }
        let answer = op(conn).await;
        if answer.storage_fault() {
            answers.push(answer);
            failure = Some(storage_fault_in_batch());
            break;
        }
        let closed = if answer.succeeded() {
            conn.run("RELEASE op")
        } else {
            conn.run("ROLLBACK TO op")
                .and_then(|()| conn.run("RELEASE op"))
        };
        answers.push(answer);
        if let Err(e) = closed {
            failure = Some(e);
            break;
        }
    }
    finish_transaction(conn, shm, failure, answers)
}

/// Commits a batch's transaction, or rolls it back after `failure`.
fn finish_transaction(
    conn: &mut WriterConn,
    shm: &Path,
    mut failure: Option<StoreError>,
    answers: Vec<Box<dyn Answer>>,
) -> BatchOutcome {
    // COMMIT writes the WAL index: look again, as the batch may have run for a while
    // since the check in `run_batch`. A ROLLBACK of frames never written leaves the
    // index alone.
    if failure.is_none() {
        failure = shm_fault(shm);
    }
    match failure {
        Some(e) => {
            // After some errors SQLite has rolled the transaction back already.
            if conn.in_transaction()
                && let Err(rb) = conn.run("ROLLBACK")
            {
                tracing::warn!(error = %rb, "sqlite write batch rollback failed");
            }
            Err((e, answers))
        }
        None => match conn.run("COMMIT") {
            Ok(()) => Ok(answers),
            Err(e) => Err((e, answers)),
        },
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
        crate::conn::check_placeholders_bind_by_number(&mut *conn).await;
    }

    /// A multi-row insert takes every row once, in one statement up to its most rows, and
    /// none of the NULL rows that pad the statement to its size.
    #[tokio::test]
    async fn a_row_insert_keeps_the_rows_and_drops_its_padding() {
        let (_dir, pool) = scratch().await;
        let mut conn = pool.acquire().await.unwrap();
        conn.execute(
            "CREATE TABLE t (a TEXT NOT NULL, b INTEGER, c TEXT NOT NULL)",
            Vec::new(),
        )
        .await
        .unwrap();
        let insert = crate::conn::RowInsert::new("INSERT INTO t (a, b, c)", 2, "'x'", 32);
        for n in 1..=70_i64 {
            conn.execute("DELETE FROM t", Vec::new()).await.unwrap();
            let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
            let mut values = insert.values(names.len());
            for (i, name) in (0_i64..).zip(&names) {
                values.extend(args![name.as_str(), (i % 2 == 0).then_some(i)]);
            }
            assert_eq!(insert.run(&mut *conn, values).await.unwrap(), n as u64);
            let row = conn
                .fetch_optional(
                    "SELECT COUNT(*) AS n, COUNT(DISTINCT a) AS names, COALESCE(SUM(b), 0) AS b, \
                     COUNT(b) AS bs, SUM(c = 'x') AS xs FROM t",
                    Vec::new(),
                )
                .await
                .unwrap()
                .unwrap();
            let evens = (n + 1) / 2;
            assert_eq!(row.int("n").unwrap(), n);
            assert_eq!(row.int("names").unwrap(), n);
            assert_eq!(row.int("bs").unwrap(), evens, "{n} rows");
            assert_eq!(row.int("b").unwrap(), evens * (evens - 1), "{n} rows");
            assert_eq!(row.int("xs").unwrap(), n);
        }
        // A condition keeps rows out, and the count says how many went in.
        let insert = crate::conn::RowInsert::new("INSERT INTO t (a, b, c)", 2, "'x'", 32)
            .when("NOT EXISTS (SELECT 1 FROM t AS old WHERE old.a = v.column1)");
        let mut values = insert.values(3);
        values.extend(args!["r0", 1_i64, "new-1", 2_i64, "r5", 3_i64]);
        assert_eq!(insert.run(&mut *conn, values).await.unwrap(), 1);
    }

    /// The statements the engine runs all the time must read indexes, never a whole table.
    #[tokio::test]
    async fn hot_queries_use_their_indexes() {
        let (_dir, pool) = scratch().await;
        let mut conn = pool.acquire().await.unwrap();
        let cases = crate::ops::hot_queries(crate::conn::Dialect::Sqlite);
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
            assert!(
                !detail.contains("SCAN s ") && !detail.contains("SCAN sub_jobs"),
                "{sql}\nplan: {detail}"
            );
        }
    }

    /// A database created before the fleet existed (only `0001` applied) migrates in
    /// place: what it held is kept and works with the new queries, and a job not yet
    /// begun takes its creation time as its begin time.
    #[tokio::test]
    async fn a_database_of_the_first_schema_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        std::fs::create_dir(&first).unwrap();
        std::fs::write(
            first.join("0001_init.sql"),
            include_str!("../migrations/sqlite/0001_init.sql"),
        )
        .unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("old.db"))
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(first.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        for sql in [
            "INSERT INTO desktops (id, project_id, computer_name, ip_address, os_type, status, \
             enterprise_project_id, tags, created_at) \
             VALUES ('d1', 'p1', 'PC-1', '10.0.0.1', 'Linux', 'ACTIVE', '0', '[]', 5)",
            "INSERT INTO jobs (id, project_id, job_type, status, created_at, sub_jobs_total) \
             VALUES ('j1', 'p1', 'install', 'WAITING', 7, 1)",
            "INSERT INTO jobs (id, project_id, job_type, status, created_at, begin_time, \
             sub_jobs_total) VALUES ('j2', 'p1', 'install', 'RUNNING', 7, 9, 1)",
            "INSERT INTO sub_jobs (id, job_id, project_id, desktop_id, position, status, \
             stage, process, created_at, deliver_by, attempts) \
             VALUES ('s1', 'j1', 'p1', 'd1', 0, 'WAITING', 'queued', 0, 7, 100, 0)",
        ] {
            conn.execute(sql, Vec::new()).await.unwrap();
        }
        drop(conn);
        MIGRATOR.run(&pool).await.unwrap();

        let mut conn = pool.acquire().await.unwrap();
        let begun = conn
            .fetch_all("SELECT begin_time FROM jobs ORDER BY id", Vec::new())
            .await
            .unwrap();
        let begun: Vec<i64> = begun.iter().map(|r| r.int("begin_time").unwrap()).collect();
        assert_eq!(
            begun,
            [7, 9],
            "only the job not yet begun takes its creation time"
        );
        let d1 = deskfleet_core::ids::DesktopId::parse("d1").unwrap();
        assert_eq!(
            ops::desktops_with_waiting_work(&mut *conn, 10)
                .await
                .unwrap(),
            std::slice::from_ref(&d1)
        );
        let p1 = deskfleet_core::ids::ProjectId::parse("p1").unwrap();
        let enrollment = deskfleet_core::fleet::Enrollment {
            instance_uid: "u1".into(),
            facts: deskfleet_core::fleet::DesktopFacts {
                hostname: "pc-1".into(),
                os_type: "Linux".into(),
                ip_addresses: vec![],
            },
            credential_sha256: "c1".into(),
            claim: Some(deskfleet_core::fleet::Claim {
                desktop: d1.clone(),
                token_sha256: "t1".into(),
            }),
        };
        // The old database has no project rows (desktops do not reference them).
        for sql in [
            "PRAGMA foreign_keys = OFF",
            "INSERT INTO enrollment_tokens (token_sha256, project_id, desktop_id, created_at, \
             expires_at) VALUES ('t1', 'p1', 'd1', 10, 100)",
        ] {
            conn.execute(sql, Vec::new()).await.unwrap();
        }
        let enrolled = ops::enroll_desktop(&mut *conn, &p1, &enrollment, 11)
            .await
            .unwrap();
        assert!(enrolled.matched_import, "the old desktop is claimable");
        assert_eq!(enrolled.desktop.id, d1);
    }
}
