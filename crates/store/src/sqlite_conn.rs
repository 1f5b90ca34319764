//! The SQLite writer's own connection: rusqlite on the writer's thread, with no driver
//! thread between the writer and SQLite.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every statement is a round
//! trip to it: the statement goes over a channel, that thread wakes, runs it, and sends
//! the answer back, which wakes the caller. Under load each round trip waited for a core
//! (about 50 microseconds a statement measured inside the writer, as much as a whole
//! multi-row insert), and the single writer bounds the rate of every write. The writer
//! therefore calls SQLite directly, from its own thread: a statement is a function call.
//! Readers stay on sqlx's pool; both link the one SQLite library of `libsqlite3-sys`.
//!
//! [`WriterConn`] implements [`Conn`], so the writer runs the same queries as every other
//! connection, with the same `$n` placeholders, the same row access and the same errors
//! (storage faults `Unavailable`, constraint violations recognised by
//! [`crate::conn::violation`]).

use crate::conn::{Arg, Conn, DbRow, Dialect};
use deskfleet_core::store::{StoreError, StoreResult};
use rusqlite::types::{Value, ValueRef};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Statements kept prepared: every query the writer runs, with each size of every
/// multi-row insert.
const STATEMENT_CACHE: usize = 512;

/// The writer's connection.
pub(crate) struct WriterConn {
    conn: rusqlite::Connection,
}

/// The settings of the writer's connection: those of the readers' options, and its own.
pub(crate) struct WriterSettings {
    pub(crate) busy_timeout: Duration,
    /// `(name, value)` pragmas run after opening, in order.
    pub(crate) pragmas: Vec<(&'static str, String)>,
}

impl WriterConn {
    /// Opens the database file `path`, which exists and is migrated. The path is taken as
    /// it is (no `file:` URI), as the readers' options hold it.
    pub(crate) fn open(path: &Path, settings: &WriterSettings) -> StoreResult<Self> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(error)?;
        conn.busy_timeout(settings.busy_timeout).map_err(error)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        for (name, value) in &settings.pragmas {
            // Some pragmas answer with a row (journal_mode); read it and move on.
            conn.query_row(&format!("PRAGMA {name} = {value}"), [], |_| Ok(()))
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(()),
                    e => Err(e),
                })
                .map_err(error)?;
        }
        Ok(Self { conn })
    }

    /// Runs a statement of no arguments and no rows: BEGIN, SAVEPOINT, COMMIT...
    pub(crate) fn run(&mut self, sql: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.raw_execute())
            .map(|_| ())
            .map_err(error)
    }

    /// Whether a transaction is open (SQLite rolls one back by itself after some errors).
    pub(crate) fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn query(&mut self, sql: &str, args: Vec<Arg<'_>>, most: usize) -> StoreResult<Vec<Row>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(error)?;
        bind(&mut stmt, args)?;
        let columns: Arc<[String]> = stmt
            .column_names()
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let mut out = Vec::new();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(error)? {
            if out.len() < most {
                let values = (0..columns.len())
                    .map(|i| row.get_ref(i).map(Value::from))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(error)?;
                out.push(Row {
                    columns: columns.clone(),
                    values,
                });
            }
        }
        Ok(out)
    }
}

/// Binds `args` to the statement's parameters: `$n` takes the n-th argument wherever it
/// stands (SQLite numbers named parameters by first appearance), `?` the next one.
fn bind(stmt: &mut rusqlite::Statement<'_>, args: Vec<Arg<'_>>) -> StoreResult<()> {
    let count = stmt.parameter_count();
    for index in 1..=count {
        let arg = match stmt.parameter_name(index) {
            None => args.get(index - 1),
            Some(name) => {
                let n = name
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        StoreError::Backend(format!("unsupported parameter {name}").into())
                    })?;
                args.get(n.wrapping_sub(1))
            }
        };
        let arg = arg.ok_or_else(|| {
            StoreError::Backend(
                format!("parameter {index} has no argument ({} given)", args.len()).into(),
            )
        })?;
        let bound = match arg {
            Arg::Str(v) => stmt.raw_bind_parameter(index, v),
            Arg::OptStr(v) => stmt.raw_bind_parameter(index, v),
            Arg::Int(v) => stmt.raw_bind_parameter(index, v),
            Arg::OptInt(v) => stmt.raw_bind_parameter(index, v),
            Arg::Bytes(v) => stmt.raw_bind_parameter(index, v),
            Arg::OptBytes(v) => stmt.raw_bind_parameter(index, v),
        };
        bound.map_err(error)?;
    }
    Ok(())
}

/// A row read by the writer, owned.
pub(crate) struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    fn get(&self, col: &str) -> StoreResult<&Value> {
        self.columns
            .iter()
            .position(|c| c == col)
            .map(|i| &self.values[i])
            .ok_or_else(|| StoreError::Corrupt(format!("column {col}: no such column")))
    }

    fn mismatch(col: &str, want: &str, got: &Value) -> StoreError {
        StoreError::Corrupt(format!(
            "column {col}: expected {want}, found {}",
            ValueRef::from(got).data_type()
        ))
    }
}

impl DbRow for Row {
    fn text(&self, col: &str) -> StoreResult<String> {
        self.opt_text(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {col}: unexpected NULL")))
    }

    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        match self.get(col)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            other => Err(Self::mismatch(col, "TEXT", other)),
        }
    }

    fn int(&self, col: &str) -> StoreResult<i64> {
        self.opt_int(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {col}: unexpected NULL")))
    }

    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
        match self.get(col)? {
            Value::Null => Ok(None),
            Value::Integer(v) => Ok(Some(*v)),
            other => Err(Self::mismatch(col, "INTEGER", other)),
        }
    }

    fn bytes(&self, col: &str) -> StoreResult<Vec<u8>> {
        match self.get(col)? {
            Value::Blob(v) => Ok(v.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(Self::mismatch(col, "BLOB", other)),
        }
    }

    fn float(&self, col: &str) -> StoreResult<f64> {
        match self.get(col)? {
            Value::Real(v) => Ok(*v),
            Value::Integer(v) => Ok(*v as f64),
            other => Err(Self::mismatch(col, "REAL", other)),
        }
    }
}

impl Conn for WriterConn {
    type Row = Row;
    const DIALECT: Dialect = Dialect::Sqlite;

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Arg<'a>>,
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'a {
        // Rows a statement answers with (`RETURNING`) are stepped through and dropped.
        let result = self.query(sql, args, 0).map(|_| self.conn.changes());
        std::future::ready(result)
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Arg<'a>>,
    ) -> impl Future<Output = StoreResult<Vec<Row>>> + Send + 'a {
        std::future::ready(self.query(sql, args, usize::MAX))
    }

    fn fetch_optional<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Arg<'a>>,
    ) -> impl Future<Output = StoreResult<Option<Row>>> + Send + 'a {
        std::future::ready(self.query(sql, args, 1).map(|rows| rows.into_iter().next()))
    }
}

/// Wraps a rusqlite error as [`crate::conn::backend`] wraps sqlx's: a fault of the storage
/// itself is `Unavailable`, anything else `Backend`.
pub(crate) fn error(e: rusqlite::Error) -> StoreError {
    if is_storage_fault(&e) {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}

/// Judged by the same result codes as sqlx's SQLite errors
/// ([`crate::conn::is_sqlite_storage_fault`]).
fn is_storage_fault(e: &rusqlite::Error) -> bool {
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return false;
    };
    crate::conn::is_sqlite_storage_fault(f.extended_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{Violation, args};

    fn scratch() -> (tempfile::TempDir, WriterConn) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        rusqlite::Connection::open(&path).unwrap();
        let settings = WriterSettings {
            busy_timeout: Duration::from_millis(100),
            pragmas: vec![
                ("foreign_keys", "ON".into()),
                ("journal_mode", "WAL".into()),
            ],
        };
        let mut conn = WriterConn::open(&path, &settings).unwrap();
        conn.run("CREATE TABLE p (id TEXT PRIMARY KEY)").unwrap();
        conn.run(
            "CREATE TABLE c (id TEXT PRIMARY KEY, p TEXT NOT NULL REFERENCES p (id), \
             n INTEGER, f REAL, b BLOB)",
        )
        .unwrap();
        (dir, conn)
    }

    /// `$n` is the n-th argument wherever it stands and however often; `?` takes the
    /// next one.
    #[tokio::test]
    async fn dollar_placeholders_bind_by_number() {
        let (_dir, mut conn) = scratch();
        crate::conn::check_placeholders_bind_by_number(&mut conn).await;
    }

    /// Too few arguments is an error, not a NULL bound in silence.
    #[tokio::test]
    async fn a_missing_argument_is_an_error() {
        let (_dir, mut conn) = scratch();
        let e = conn
            .fetch_optional("SELECT $1 || $2 AS v", args!["a"])
            .await
            .err()
            .expect("an error");
        assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    }

    /// Rows come back typed as the columns hold them; a value of another type, a NULL
    /// where one is not expected or an unknown column is `Corrupt`, never a panic.
    #[tokio::test]
    async fn rows_decode_by_type() {
        let (_dir, mut conn) = scratch();
        conn.execute("INSERT INTO p (id) VALUES ($1)", args!["p1"])
            .await
            .unwrap();
        let inserted = conn
            .execute(
                "INSERT INTO c (id, p, n, f, b) VALUES ($1, $2, $3, 2.5, $4), ($5, $2, NULL, 3, NULL)",
                args!["c1", "p1", 7, &b"raw"[..], "c2"],
            )
            .await
            .unwrap();
        assert_eq!(inserted, 2);
        let rows = conn
            .fetch_all("SELECT id, n, f, b FROM c ORDER BY id", Vec::new())
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text("id").unwrap(), "c1");
        assert_eq!(rows[0].opt_int("n").unwrap(), Some(7));
        assert_eq!(rows[0].float("f").unwrap(), 2.5);
        assert_eq!(rows[0].bytes("b").unwrap(), b"raw");
        assert_eq!(rows[1].opt_int("n").unwrap(), None);
        assert_eq!(rows[1].float("f").unwrap(), 3.0);
        for e in [
            rows[0].text("n").unwrap_err(),
            rows[1].int("n").unwrap_err(),
            rows[0].int("nope").unwrap_err(),
            rows[1].bytes("b").unwrap_err(),
        ] {
            assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
        }
    }

    /// `execute` counts the rows a statement changed, and steps through any it returns.
    #[tokio::test]
    async fn execute_counts_changes() {
        let (_dir, mut conn) = scratch();
        conn.execute("INSERT INTO p (id) VALUES ('a'), ('b'), ('c')", Vec::new())
            .await
            .unwrap();
        let deleted = conn
            .execute("DELETE FROM p WHERE id <> $1 RETURNING id", args!["b"])
            .await
            .unwrap();
        assert_eq!(deleted, 2);
        let left = conn
            .fetch_all("SELECT id FROM p", Vec::new())
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
    }

    /// Constraint violations are recognised as such, whatever the statement.
    #[tokio::test]
    async fn violations_are_recognised() {
        let (_dir, mut conn) = scratch();
        conn.execute("INSERT INTO p (id) VALUES ('a')", Vec::new())
            .await
            .unwrap();
        let dup = conn
            .execute("INSERT INTO p (id) VALUES ('a')", Vec::new())
            .await
            .unwrap_err();
        assert_eq!(crate::conn::violation(&dup), Some(Violation::Unique));
        let orphan = conn
            .execute("INSERT INTO c (id, p) VALUES ('c', 'nobody')", Vec::new())
            .await
            .unwrap_err();
        assert_eq!(crate::conn::violation(&orphan), Some(Violation::ForeignKey));
        let syntax = conn.execute("INSERT INTO", Vec::new()).await.unwrap_err();
        assert_eq!(crate::conn::violation(&syntax), None);
        assert!(!syntax.is_unavailable());
    }

    /// A lock held by another connection past the busy timeout is a fault of the storage
    /// (`Unavailable`), as on sqlx's connections.
    #[tokio::test]
    async fn a_lock_held_elsewhere_is_unavailable() {
        let (dir, mut conn) = scratch();
        let other = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let e = conn.run("BEGIN IMMEDIATE").unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(!conn.in_transaction());
        other.execute_batch("ROLLBACK").unwrap();
        conn.run("BEGIN IMMEDIATE").unwrap();
        assert!(conn.in_transaction());
        conn.run("COMMIT").unwrap();
    }
}
