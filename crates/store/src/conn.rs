//! The seam between the SQL in [`crate::ops`] and the database drivers.
//!
//! [`Conn`] is the little a query needs from a connection: run a statement with bound
//! arguments, fetch rows, and say which [`Dialect`] it speaks. It is implemented by a
//! macro for sqlx's `SqliteConnection` and `PgConnection`, and for the SQLite writer's own
//! connection ([`crate::sqlite_conn`]), so every query is written one time.

use deskfleet_core::store::{StoreError, StoreResult};
use std::future::Future;
use std::pin::Pin;

/// A boxed `Send` future, as the write path needs to hand work to another task.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The few places where the two SQL dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite = 0,
    Postgres = 1,
}

impl Dialect {
    /// The condition that `expr` is one of the strings of the JSON array bound as text at
    /// `$n`. On PostgreSQL it is `= ANY` of an array, which the planner turns into a probe
    /// of `expr`'s index for each string: with `IN (SELECT ...)` it may instead hash the
    /// list and read the whole index, and it did whenever its statistics still counted a
    /// few rows where there were thousands (the in-flight leaders of a fleet that had just
    /// been given work: 11 ms a look-up instead of 0.1).
    pub(crate) fn in_texts(self, expr: &str, n: u8) -> String {
        match self {
            Dialect::Sqlite => format!("{expr} IN (SELECT value FROM json_each(${n}))"),
            Dialect::Postgres => {
                format!("{expr} = ANY(ARRAY(SELECT jsonb_array_elements_text(${n}::jsonb)))")
            }
        }
    }

    /// A table `j(value)` of the objects of the JSON array bound as text at `$n`; read a
    /// field with `j.value ->> 'name'` (text in both dialects).
    pub(crate) fn objects(self, n: u8) -> String {
        match self {
            Dialect::Sqlite => format!("json_each(${n}) AS j"),
            Dialect::Postgres => format!("jsonb_array_elements(${n}::jsonb) AS j(value)"),
        }
    }

    /// Whether concurrent writers exist, so that writers of one desktop's sub-jobs must
    /// lock its row first. SQLite has one writer connection and needs no row locks.
    pub(crate) fn locks_rows(self) -> bool {
        self == Dialect::Postgres
    }

    /// The suffix of a `SELECT ... FROM desktops d` that locks those rows exclusively.
    pub(crate) fn lock_suffix(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR NO KEY UPDATE OF d",
        }
    }

    /// The suffix of a `SELECT` that locks the rows of table `alias` exclusively.
    pub(crate) fn lock_suffix_of(self, alias: &str) -> String {
        match self {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres => format!(" FOR NO KEY UPDATE OF {alias}"),
        }
    }

    /// The suffix of a `SELECT ... FROM desktops d` that locks those rows shared: job
    /// creators only add followers, so they may run side by side.
    pub(crate) fn share_lock_suffix(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE OF d",
        }
    }
}

/// A `&'static str` of SQL built once per dialect from `|d| expr`, where `d: Dialect`.
/// Statics in a generic function are shared by every instance, hence one slot a dialect.
macro_rules! sql {
    ($dialect:expr, |$d:ident| $build:expr) => {{
        static SQL: [::std::sync::LazyLock<String>; 2] = [
            ::std::sync::LazyLock::new(|| {
                let $d = $crate::conn::Dialect::Sqlite;
                $build
            }),
            ::std::sync::LazyLock::new(|| {
                let $d = $crate::conn::Dialect::Postgres;
                $build
            }),
        ];
        SQL[$dialect as usize].as_str()
    }};
}
pub(crate) use sql;

/// Row counts a [`RowInsert`] prepares statements for, largest first: fixed sizes, so that
/// each statement is prepared once per connection and then reused from its cache. Each
/// statement has a cost of its own (on PostgreSQL a round trip, several rows' worth), so
/// rows take one statement of the next size up, padded with rows of NULLs that it leaves
/// out.
const ROW_COUNTS: [usize; 11] = [1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1];

/// A multi-row `INSERT ... SELECT ... FROM (VALUES ...)` with bound values, for the rows a
/// write makes at once. Taking a JSON array of rows apart in SQL instead costs SQLite more
/// than the inserts themselves (each `->>` parses the row's object again); and SQLite gets
/// anonymous `?` placeholders, since sqlx asks SQLite each parameter's name while binding,
/// which walks the statement's named ones (quadratic in `$n`).
pub(crate) struct RowInsert {
    /// `INSERT INTO table (columns...)`: the bound columns first, then any constant ones.
    /// The first bound column is never NULL: the padding rows are told by it.
    head: &'static str,
    /// Bound values a row.
    params: usize,
    /// The constant values that end each row (`'WAITING', 0`), or "".
    constants: &'static str,
    /// What a row must also meet to be inserted ([`RowInsert::when`]), or "".
    condition: &'static str,
    /// The most rows a statement takes (a [`ROW_COUNTS`] entry); `params` times this stays
    /// under SQLite's 32,766 parameters.
    most: usize,
    sql: [[std::sync::OnceLock<String>; ROW_COUNTS.len()]; 2],
}

impl RowInsert {
    pub(crate) const fn new(
        head: &'static str,
        params: usize,
        constants: &'static str,
        most: usize,
    ) -> Self {
        Self {
            head,
            params,
            constants,
            most,
            condition: "",
            sql: [
                [const { std::sync::OnceLock::new() }; ROW_COUNTS.len()],
                [const { std::sync::OnceLock::new() }; ROW_COUNTS.len()],
            ],
        }
    }

    /// Inserts only the rows that meet `condition`, an SQL expression over the row's
    /// values (`v.column1`...); [`RowInsert::run`] counts the rows inserted.
    pub(crate) const fn when(mut self, condition: &'static str) -> Self {
        self.condition = condition;
        self
    }

    /// The statement (by its [`ROW_COUNTS`] index) that takes the next of `rows` rows: the
    /// fewest that hold them all, up to `most`.
    fn slot(&self, rows: usize) -> usize {
        let rows = rows.min(self.most);
        ROW_COUNTS
            .iter()
            .rposition(|&n| n >= rows)
            .unwrap_or(ROW_COUNTS.len() - 1)
    }

    fn statement(&self, d: Dialect, slot: usize) -> &str {
        self.sql[d as usize][slot].get_or_init(|| {
            // `columnN` names the columns of a `VALUES` list, in SQLite as in PostgreSQL.
            let mut sql = format!("{} SELECT ", self.head);
            for col in 1..=self.params {
                if col > 1 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("column{col}"));
            }
            if !self.constants.is_empty() {
                sql.push_str(", ");
                sql.push_str(self.constants);
            }
            sql.push_str(" FROM (VALUES ");
            for row in 0..ROW_COUNTS[slot] {
                sql.push_str(if row == 0 { "(" } else { ", (" });
                for col in 1..=self.params {
                    if col > 1 {
                        sql.push_str(", ");
                    }
                    match d {
                        Dialect::Sqlite => sql.push('?'),
                        Dialect::Postgres => sql.push_str(&format!("${}", row * self.params + col)),
                    }
                }
                sql.push(')');
            }
            sql.push_str(") AS v WHERE column1 IS NOT NULL");
            if !self.condition.is_empty() {
                sql.push_str(" AND ");
                sql.push_str(self.condition);
            }
            sql
        })
    }

    /// An empty list for the values of `rows` rows.
    pub(crate) fn values<'a>(&self, rows: usize) -> Vec<Arg<'a>> {
        Vec::with_capacity(rows * self.params)
    }

    /// Inserts the rows whose values `values` holds, `params` a row in order, with as few
    /// statements as the fixed row counts allow. Returns how many rows were inserted.
    pub(crate) async fn run<'a, C: Conn>(
        &self,
        c: &mut C,
        mut values: Vec<Arg<'a>>,
    ) -> StoreResult<u64> {
        debug_assert_eq!(values.len() % self.params, 0);
        // A padding row is NULLs of the first row's types: PostgreSQL types each column of
        // a `VALUES` list from all its rows, and every row binds the same types.
        let padding: Vec<Arg<'static>> = values
            .iter()
            .take(self.params)
            .map(Arg::null_of_its_type)
            .collect();
        let mut inserted = 0;
        while !values.is_empty() {
            let rows = values.len() / self.params;
            let slot = self.slot(rows);
            let taken = ROW_COUNTS[slot].min(rows);
            let rest = values.split_off(taken * self.params);
            for _ in taken..ROW_COUNTS[slot] {
                values.extend(padding.iter().cloned());
            }
            inserted += c.execute(self.statement(C::DIALECT, slot), values).await?;
            values = rest;
        }
        Ok(inserted)
    }
}

/// A value bound to a `$n` placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Str(&'a str),
    OptStr(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bytes(&'a [u8]),
    OptBytes(Option<&'a [u8]>),
}

impl Arg<'_> {
    /// A NULL bound with this value's type.
    fn null_of_its_type(&self) -> Arg<'static> {
        match self {
            Arg::Str(_) | Arg::OptStr(_) => Arg::OptStr(None),
            Arg::Int(_) | Arg::OptInt(_) => Arg::OptInt(None),
            Arg::Bytes(_) | Arg::OptBytes(_) => Arg::OptBytes(None),
        }
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Str(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Str(v)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptStr(v)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}

/// `args![a, b, c]`: a `Vec<Arg>` from values that convert into [`Arg`].
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::conn::Arg::from($v)),*] };
}
pub(crate) use args;

/// Typed access to a result row by column name. Anything that does not decode is
/// [`StoreError::Corrupt`]: the store never panics on what it reads back.
pub(crate) trait DbRow: Send + Sync {
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    fn bytes(&self, col: &str) -> StoreResult<Vec<u8>>;
    /// A `REAL` / `DOUBLE PRECISION` column (metric values).
    fn float(&self, col: &str) -> StoreResult<f64>;
}

/// A connection the shared queries can run on.
pub(crate) trait Conn: Send {
    type Row: DbRow;
    const DIALECT: Dialect;

    /// Runs one statement; returns the number of rows it changed.
    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Arg<'a>>,
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'a;

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Arg<'a>>,
    ) -> impl Future<Output = StoreResult<Vec<Self::Row>>> + Send + 'a;

    fn fetch_optional<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Arg<'a>>,
    ) -> impl Future<Output = StoreResult<Option<Self::Row>>> + Send + 'a;
}

/// Wraps a driver error (the SQLite writer's rusqlite errors are wrapped the same way by
/// its own module). A fault of the storage itself (see [`is_storage_fault`]) is
/// `StoreError::Unavailable`; anything else stays `Backend`, where constraint violations
/// stay recognisable through [`violation`], so callers can turn them into
/// `AlreadyExists` or `NotFound`.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    if is_storage_fault(&e) {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}

/// Whether `e` says the storage cannot serve anyone now, rather than that this call was
/// wrong: I/O errors, a full disk, a read-only or unopenable database file, a write lock
/// another process held past the busy timeout (SQLite); a refused or lost connection, a
/// server shutting down or out of resources (PostgreSQL); an exhausted or closed pool.
pub(crate) fn is_storage_fault(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                code.parse().is_ok_and(is_sqlite_storage_fault)
            } else {
                // Connection exceptions (08), insufficient resources such as a full disk
                // (53), the server shutting down or starting (57P01-03), I/O error (58030),
                // a read-only server (25006).
                code.starts_with("08")
                    || code.starts_with("53")
                    || matches!(&*code, "57P01" | "57P02" | "57P03" | "58030" | "25006")
            }
        }
        _ => false,
    }
}

/// Whether SQLite's (extended) result `code` is a fault of the storage: BUSY, READONLY,
/// IOERR, FULL, CANTOPEN, PROTOCOL. Extended codes carry the primary one in their low byte.
pub(crate) fn is_sqlite_storage_fault(code: i32) -> bool {
    matches!(code & 0xff, 5 | 8 | 10 | 13 | 14 | 15)
}

/// Which constraint a failed statement violated, if that is why it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    Unique,
    ForeignKey,
}

pub(crate) fn violation(e: &StoreError) -> Option<Violation> {
    let StoreError::Backend(source) = e else {
        return None;
    };
    if let Some(e) = source.downcast_ref::<rusqlite::Error>() {
        return rusqlite_violation(e);
    }
    let db = source.downcast_ref::<sqlx::Error>()?.as_database_error()?;
    if db.is_unique_violation() {
        Some(Violation::Unique)
    } else if db.is_foreign_key_violation() {
        Some(Violation::ForeignKey)
    } else {
        None
    }
}

/// The constraint a statement of the SQLite writer violated, by SQLite's extended codes.
fn rusqlite_violation(e: &rusqlite::Error) -> Option<Violation> {
    const PRIMARY_KEY: i32 = 1555;
    const UNIQUE: i32 = 2067;
    const FOREIGN_KEY: i32 = 787;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.extended_code {
            PRIMARY_KEY | UNIQUE => Some(Violation::Unique),
            FOREIGN_KEY => Some(Violation::ForeignKey),
            _ => None,
        },
        _ => None,
    }
}

/// Whether running the transaction again may succeed: it lost a race for a unique key,
/// a deadlock, or a serialization check (PostgreSQL).
pub(crate) fn is_retryable(e: &StoreError) -> bool {
    if violation(e) == Some(Violation::Unique) {
        return true;
    }
    let StoreError::Backend(source) = e else {
        return false;
    };
    source
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|db| db.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

fn column_error(col: &str, e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(format!("column {col}: {e}"))
}

macro_rules! impl_conn {
    ($conn:ty, $db:ty, $row:ty, $dialect:expr) => {
        const _: () = {
            use sqlx::Row as _;

            fn bind<'q>(
                sql: &'q str,
                args: Vec<Arg<'q>>,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                args.into_iter().fold(sqlx::query(sql), |q, arg| match arg {
                    Arg::Str(v) => q.bind(v),
                    Arg::OptStr(v) => q.bind(v),
                    Arg::Int(v) => q.bind(v),
                    Arg::OptInt(v) => q.bind(v),
                    Arg::Bytes(v) => q.bind(v),
                    Arg::OptBytes(v) => q.bind(v),
                })
            }

            impl DbRow for $row {
                fn text(&self, col: &str) -> StoreResult<String> {
                    self.try_get(col).map_err(|e| column_error(col, e))
                }
                fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
                    self.try_get(col).map_err(|e| column_error(col, e))
                }
                fn int(&self, col: &str) -> StoreResult<i64> {
                    self.try_get(col).map_err(|e| column_error(col, e))
                }
                fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
                    self.try_get(col).map_err(|e| column_error(col, e))
                }
                fn bytes(&self, col: &str) -> StoreResult<Vec<u8>> {
                    self.try_get(col).map_err(|e| column_error(col, e))
                }
                fn float(&self, col: &str) -> StoreResult<f64> {
                    self.try_get(col).map_err(|e| column_error(col, e))
                }
            }

            impl Conn for $conn {
                type Row = $row;
                const DIALECT: Dialect = $dialect;

                fn execute<'a>(
                    &'a mut self,
                    sql: &'a str,
                    args: Vec<Arg<'a>>,
                ) -> impl Future<Output = StoreResult<u64>> + Send + 'a {
                    async move {
                        let done = bind(sql, args).execute(self).await.map_err(backend)?;
                        Ok(done.rows_affected())
                    }
                }

                fn fetch_all<'a>(
                    &'a mut self,
                    sql: &'a str,
                    args: Vec<Arg<'a>>,
                ) -> impl Future<Output = StoreResult<Vec<Self::Row>>> + Send + 'a {
                    async move { bind(sql, args).fetch_all(self).await.map_err(backend) }
                }

                fn fetch_optional<'a>(
                    &'a mut self,
                    sql: &'a str,
                    args: Vec<Arg<'a>>,
                ) -> impl Future<Output = StoreResult<Option<Self::Row>>> + Send + 'a {
                    async move { bind(sql, args).fetch_optional(self).await.map_err(backend) }
                }
            }
        };
    };
}

impl_conn!(
    sqlx::SqliteConnection,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    Dialect::Sqlite
);
impl_conn!(
    sqlx::PgConnection,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    Dialect::Postgres
);

/// The shared queries write `$n` placeholders, which SQLite reads as *named* parameters:
/// a connection must bind the n-th argument to `$n` wherever it stands and however often,
/// and `?` to the next one. Run against each SQLite connection by its own tests.
#[cfg(test)]
pub(crate) async fn check_placeholders_bind_by_number<C: Conn>(conn: &mut C) {
    let row = conn
        .fetch_optional(
            "SELECT $2 || $1 || $2 AS v, $3 + 1 AS n",
            args!["a", "b", 41],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.text("v").unwrap(), "bab");
    assert_eq!(row.int("n").unwrap(), 42);
    let row = conn
        .fetch_optional("SELECT ? || ? AS v", args!["x", "y"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.text("v").unwrap(), "xy");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_faults_are_unavailable_and_the_rest_is_not() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert!(backend(e).is_unavailable());
        }
        assert!(!backend(sqlx::Error::RowNotFound).is_unavailable());
    }

    #[test]
    fn row_inserts_take_every_row_once_in_statements_of_the_right_shape() {
        let insert = RowInsert::new("INSERT INTO t (a, b, c)", 2, "'x'", 64);
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            for n in 1..2_000 {
                let mut left = n;
                let mut statements = 0;
                while left > 0 {
                    let rows = ROW_COUNTS[insert.slot(left)];
                    // The fewest rows that hold what is left, up to 64: padded.
                    assert!(rows <= 64, "{n}: {rows} of {left}");
                    assert!(rows >= left.min(64), "{n}: {rows} of {left}");
                    assert!(rows < 2 * left.min(64), "{n}: {rows} of {left}");
                    let sql = insert.statement(d, insert.slot(left));
                    assert_eq!(sql.matches('(').count(), rows + 2, "{sql}");
                    let placeholders = match d {
                        Dialect::Sqlite => sql.matches('?').count(),
                        Dialect::Postgres => sql.matches('$').count(),
                    };
                    assert_eq!(placeholders, 2 * rows, "{sql}");
                    left -= rows.min(left);
                    statements += 1;
                }
                assert_eq!(statements, n.div_ceil(64), "{n} rows");
            }
        }
        assert_eq!(
            insert.statement(Dialect::Postgres, insert.slot(2)),
            "INSERT INTO t (a, b, c) SELECT column1, column2, 'x' \
             FROM (VALUES ($1, $2), ($3, $4)) AS v WHERE column1 IS NOT NULL"
        );
        assert_eq!(
            insert.statement(Dialect::Sqlite, insert.slot(3)),
            "INSERT INTO t (a, b, c) SELECT column1, column2, 'x' \
             FROM (VALUES (?, ?), (?, ?), (?, ?), (?, ?)) AS v WHERE column1 IS NOT NULL"
        );
    }
}
