//! The audit trail's queries (see [`deskfleet_core::audit`] and [`crate::audit`]). Same
//! conventions as [`crate::ops`].
//!
//! The chain's head is one row, `trace_head`; appending to the chain reads and moves it.
//! SQLite has one writer anyway, so a change appends its trace to the chain itself. On
//! PostgreSQL a change only puts its trace in `trace_inbox`, and [`chain_traces`] appends
//! the committed ones in batches under the head row's lock (`FOR UPDATE`, the first
//! statement of its transaction), so no change waits for another's commit.

use crate::conn::{Conn, DbRow, Dialect, RowInsert, args, sql};
use deskfleet_core::audit::{self, Seal, Trace, TraceFilter};
use deskfleet_core::ids::ProjectId;
use deskfleet_core::store::{StoreError, StoreResult, StoredTrace, TraceHead};
use std::borrow::Cow;

fn head_sql(d: Dialect) -> String {
    format!(
        "SELECT seq, hash, pruned_seq, pruned_hash FROM trace_head WHERE id = 1{}",
        match d {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    )
}

async fn head<C: Conn>(c: &mut C, lock: bool) -> StoreResult<TraceHead> {
    let sql = if lock {
        sql!(C::DIALECT, |d| head_sql(d))
    } else {
        "SELECT seq, hash, pruned_seq, pruned_hash FROM trace_head WHERE id = 1"
    };
    let row = c
        .fetch_optional(sql, args![])
        .await?
        .ok_or_else(|| StoreError::Corrupt("the trace_head row is missing".into()))?;
    Ok(TraceHead {
        seq: row.int("seq")?,
        hash: row.text("hash")?,
        pruned_seq: row.int("pruned_seq")?,
        pruned_hash: row.text("pruned_hash")?,
    })
}

/// Records `trace` with the change being written (see [`append_traces`]).
pub(crate) async fn append_trace<C: Conn>(c: &mut C, trace: &Trace) -> StoreResult<()> {
    append_traces(c, std::slice::from_ref(trace)).await
}

/// The filter columns of a trace, and its canonical content: one row of a batch insert
/// into `traces` (with its chain fields) or `trace_inbox` (without).
struct TraceRow<'a> {
    seq: Option<i64>,
    trace_id: Cow<'a, str>,
    project_id: Cow<'a, str>,
    at: i64,
    trace_name: Cow<'a, str>,
    trace_rating: Cow<'a, str>,
    service_type: Cow<'a, str>,
    resource_type: Cow<'a, str>,
    resource_id: Cow<'a, str>,
    resource_name: Cow<'a, str>,
    user_name: Cow<'a, str>,
    access_key_id: Cow<'a, str>,
    enterprise_project_id: Cow<'a, str>,
    content: Cow<'a, str>,
    prev_hash: Option<String>,
    hash: Option<String>,
}

impl<'a> TraceRow<'a> {
    fn of(trace: &'a Trace, content: Cow<'a, str>) -> Self {
        Self {
            seq: None,
            trace_id: Cow::Borrowed(&trace.trace_id),
            project_id: Cow::Borrowed(&trace.project_id),
            at: trace.time,
            trace_name: Cow::Borrowed(&trace.trace_name),
            trace_rating: Cow::Borrowed(&trace.trace_rating),
            service_type: Cow::Borrowed(&trace.service_type),
            resource_type: Cow::Borrowed(&trace.resource_type),
            resource_id: Cow::Borrowed(&trace.resource_id),
            resource_name: Cow::Borrowed(&trace.resource_name),
            user_name: Cow::Borrowed(&trace.user.name),
            access_key_id: Cow::Borrowed(&trace.user.access_key_id),
            enterprise_project_id: Cow::Borrowed(&trace.enterprise_project_id),
            content,
            prev_hash: None,
            hash: None,
        }
    }
}

/// The columns both trace tables share, in the order of their batch inserts.
macro_rules! columns {
    () => {
        "trace_id, project_id, at, trace_name, trace_rating, service_type, \
         resource_type, resource_id, resource_name, user_name, access_key_id, \
         enterprise_project_id, content"
    };
}
const COLUMNS: &str = columns!();

/// SQLite's insert of chained traces, at most 32 a statement: 16 bound values a row
/// (`seq`, the [`COLUMNS`], `prev_hash` and `hash`).
static INSERT_CHAINED: RowInsert = RowInsert::new(
    concat!(
        "INSERT INTO traces (seq, ",
        columns!(),
        ", prev_hash, hash)"
    ),
    16,
    "",
    32,
);

/// PostgreSQL's insert of traces into the inbox, at most 256 a statement (13 bound values
/// a row, the [`COLUMNS`]), of the traces whose id the chain does not hold already (a
/// trace recorded twice would otherwise stop the chainer). Bound values rather than a
/// JSON batch, which PostgreSQL parsed whole (every trace's content escaped in it) before
/// taking it apart.
///
/// `OFFSET 0` keeps the check a probe of the trace-id index for each trace. Without it the
/// planner may turn it into a hash anti-join that reads the whole chain, and a connection
/// keeps that plan: prepared while the chain was nearly empty, it cost every audited write
/// a scan of every trace (measured: 5 to 20 ms a write after a few thousand traces).
static INSERT_UNCHAINED: RowInsert = RowInsert::new(
    concat!("INSERT INTO trace_inbox (", columns!(), ")"),
    13,
    "",
    256,
)
.when("NOT EXISTS (SELECT 1 FROM traces t WHERE t.trace_id = v.column1 OFFSET 0)");

fn encode<T: serde::Serialize>(rows: &T) -> StoreResult<String> {
    serde_json::to_string(rows).map_err(|e| StoreError::Backend(Box::new(e)))
}

/// Records `traces` with the change being written, in the same transaction, with a
/// statement or three however many there are.
///
/// SQLite has one writer, so it chains them at once: the head is read and moved in the
/// writer's own transaction, which no one else waits on. On PostgreSQL that would hold
/// the head row's lock through the commit of every audited change, one after another
/// (audited commits could no longer share a WAL flush); there they go to `trace_inbox`
/// instead, which locks nothing shared, and [`chain_traces`] chains them shortly after.
pub(crate) async fn append_traces<C: Conn>(c: &mut C, traces: &[Trace]) -> StoreResult<()> {
    let rows: Vec<TraceRow> = traces
        .iter()
        .map(|t| TraceRow::of(t, Cow::Owned(audit::content(t))))
        .collect();
    append_rows(c, rows).await
}

/// [`append_traces`] of traces whose content is already encoded.
pub(crate) async fn append_completed<C: Conn>(
    c: &mut C,
    traces: &[crate::audit::Completed],
) -> StoreResult<()> {
    let rows: Vec<TraceRow> = traces
        .iter()
        .map(|t| TraceRow::of(&t.trace, Cow::Borrowed(t.content.as_str())))
        .collect();
    append_rows(c, rows).await
}

async fn append_rows<C: Conn>(c: &mut C, rows: Vec<TraceRow<'_>>) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    match C::DIALECT {
        Dialect::Sqlite => append_chained(c, rows).await,
        Dialect::Postgres => {
            let mut values = INSERT_UNCHAINED.values(rows.len());
            for r in &rows {
                values.extend(row_args(r));
            }
            let n = INSERT_UNCHAINED.run(c, values).await?;
            if n != rows.len() as u64 {
                return Err(StoreError::AlreadyExists(
                    "a trace with the same id is already recorded".into(),
                ));
            }
            Ok(())
        }
    }
}

/// A trace's [`COLUMNS`], bound in their order.
fn row_args<'a>(r: &'a TraceRow<'_>) -> Vec<crate::conn::Arg<'a>> {
    args![
        r.trace_id.as_ref(),
        r.project_id.as_ref(),
        r.at,
        r.trace_name.as_ref(),
        r.trace_rating.as_ref(),
        r.service_type.as_ref(),
        r.resource_type.as_ref(),
        r.resource_id.as_ref(),
        r.resource_name.as_ref(),
        r.user_name.as_ref(),
        r.access_key_id.as_ref(),
        r.enterprise_project_id.as_ref(),
        r.content.as_ref(),
    ]
}

/// Appends `rows` in order at the head of the chain: SQLite's writer, in the change's own
/// transaction. One multi-row statement with bound values (no JSON batch taken apart in
/// SQL, which would parse every trace's content again for each column).
async fn append_chained<C: Conn>(c: &mut C, mut rows: Vec<TraceRow<'_>>) -> StoreResult<()> {
    let h = head(c, true).await?;
    let mut prev = h.hash;
    let mut last = h.seq;
    for (seq, row) in (h.seq + 1..).zip(rows.iter_mut()) {
        let hash = audit::chain_hash(&prev, seq, &row.content);
        row.seq = Some(seq);
        row.prev_hash = Some(std::mem::replace(&mut prev, hash.clone()));
        row.hash = Some(hash);
        last = seq;
    }
    let mut values = INSERT_CHAINED.values(rows.len());
    for r in &rows {
        values.push(r.seq.unwrap_or_default().into());
        values.extend(row_args(r));
        values.extend(args![
            r.prev_hash.as_deref().unwrap_or_default(),
            r.hash.as_deref().unwrap_or_default(),
        ]);
    }
    INSERT_CHAINED.run(c, values).await?;
    move_head(c, last, &prev).await
}

async fn move_head<C: Conn>(c: &mut C, seq: i64, hash: &str) -> StoreResult<()> {
    c.execute(
        "UPDATE trace_head SET seq = $1, hash = $2 WHERE id = 1",
        args![seq, hash],
    )
    .await?;
    Ok(())
}

/// Where a trace of the inbox goes in the chain.
#[derive(serde::Serialize)]
struct Link {
    id: i64,
    seq: i64,
    prev_hash: String,
    hash: String,
}

/// Moves the inbox traces of the JSON array of [`Link`]s `$1` into the chain. The traces
/// go from table to table inside the database; only their chain fields travel.
fn insert_linked_sql(d: Dialect) -> String {
    let from_inbox = COLUMNS
        .split(", ")
        .map(|col| format!("i.{col}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO traces (seq, {COLUMNS}, prev_hash, hash) \
         SELECT CAST(j.value ->> 'seq' AS BIGINT), {from_inbox}, \
         j.value ->> 'prev_hash', j.value ->> 'hash' \
         FROM {} JOIN trace_inbox i ON i.id = CAST(j.value ->> 'id' AS BIGINT)",
        d.objects(1)
    )
}

/// Chains up to `limit` committed traces of the inbox (oldest first), under the head's
/// lock, so that replicas take turns. A trace whose id the chain already holds (it can
/// only be recorded twice by a race of [`append_traces`] with this) is dropped from the
/// inbox rather than block the chain. Returns how many left the inbox (0: it is empty).
pub(crate) async fn chain_traces<C: Conn>(c: &mut C, limit: u32) -> StoreResult<u64> {
    // The lock first: what the inbox holds is then read after any other chainer's commit.
    let h = head(c, true).await?;
    if C::DIALECT == Dialect::Postgres {
        // The inbox is a queue: every row is deleted within a second of its insert, so
        // most of its pages hold dead rows until autovacuum comes by, while its
        // statistics count only the few live ones. A plan made from them reads every
        // page and sorts (measured: 25 ms a call, half the chainer's time); the primary
        // key's order reads only the rows it returns. `OFFSET 0` below keeps the check of
        // each one a probe of the trace-id index, as in `insert_unchained_sql`: without
        // it the check became a hash of every trace id of the chain, built on each call.
        c.execute("SET LOCAL enable_seqscan = off", args![]).await?;
    }
    let rows = c
        .fetch_all(
            &format!(
                "SELECT id, trace_id, content, CAST(CASE WHEN EXISTS (SELECT 1 FROM traces t \
                 WHERE t.trace_id = trace_inbox.trace_id OFFSET 0) THEN 1 ELSE 0 END AS BIGINT) \
                 AS chained \
                 FROM trace_inbox ORDER BY id LIMIT {limit}"
            ),
            args![],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut links = Vec::with_capacity(rows.len());
    let (mut seq, mut prev) = (h.seq, h.hash);
    for r in &rows {
        let id = r.int("id")?;
        ids.push(id);
        if r.int("chained")? != 0 {
            tracing::error!(
                trace_id = %r.text("trace_id")?,
                "a trace id recorded twice: the later one was dropped from the inbox"
            );
            continue;
        }
        seq += 1;
        let hash = audit::chain_hash(&prev, seq, &r.text("content")?);
        links.push(Link {
            id,
            seq,
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    let taken = rows.len() as u64;
    if !links.is_empty() {
        let n = c
            .execute(
                sql!(C::DIALECT, |d| insert_linked_sql(d)),
                args![encode(&links)?.as_str()],
            )
            .await?;
        if n != links.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "{} of {} inbox traces were chained",
                n,
                links.len()
            )));
        }
        move_head(c, seq, &prev).await?;
    }
    let ids = encode(&ids)?;
    c.execute(
        sql!(C::DIALECT, |d| format!(
            "DELETE FROM trace_inbox WHERE id IN (SELECT CAST(j.value AS BIGINT) FROM {})",
            d.objects(1)
        )),
        args![ids.as_str()],
    )
    .await?;
    Ok(taken)
}

/// Every recorded trace, chained or not (ListTraces shows a trace from its commit on).
/// SQLite's inbox stays empty ([`append_traces`]), and reading the chain alone keeps its
/// ordered index scans.
fn recorded(d: Dialect) -> String {
    match d {
        Dialect::Sqlite => "traces".to_owned(),
        Dialect::Postgres => format!(
            "(SELECT {COLUMNS} FROM traces UNION ALL SELECT {COLUMNS} FROM trace_inbox) AS t"
        ),
    }
}

fn decode_trace(content: &str) -> StoreResult<Trace> {
    serde_json::from_str(content)
        .map_err(|e| StoreError::Corrupt(format!("a stored trace does not decode: {e}")))
}

/// Traces of `project` matching `filter`, newest first (time, then trace id).
pub(crate) async fn list_traces<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    filter: &TraceFilter,
    limit: u32,
) -> StoreResult<Vec<Trace>> {
    let mut sql = format!(
        "SELECT content FROM {} WHERE project_id = $1",
        recorded(C::DIALECT)
    );
    let mut strings: Vec<&str> = Vec::new();
    for (col, value) in [
        ("trace_id", &filter.trace_id),
        ("service_type", &filter.service_type),
        ("user_name", &filter.user),
        ("resource_id", &filter.resource_id),
        ("resource_name", &filter.resource_name),
        ("resource_type", &filter.resource_type),
        ("trace_name", &filter.trace_name),
        ("trace_rating", &filter.trace_rating),
        ("access_key_id", &filter.access_key_id),
        ("enterprise_project_id", &filter.enterprise_project_id),
    ] {
        if let Some(v) = value {
            strings.push(v.as_str());
            sql.push_str(&format!(" AND {col} = ${}", strings.len() + 1));
        }
    }
    let k = strings.len() + 1;
    sql.push_str(&format!(" AND at > ${} AND at < ${}", k + 1, k + 2));
    if filter.older_than.is_some() {
        sql.push_str(&format!(
            " AND (at < ${a} OR (at = ${a} AND trace_id < ${b}))",
            a = k + 3,
            b = k + 4
        ));
    }
    sql.push_str(" ORDER BY at DESC, trace_id DESC");
    sql.push_str(&format!(" LIMIT {limit}"));
    let mut a = args![project.as_str()];
    a.extend(strings.iter().map(|s| crate::conn::Arg::from(*s)));
    a.push(filter.after.into());
    a.push(filter.before.into());
    if let Some((at, id)) = &filter.older_than {
        a.push((*at).into());
        a.push(id.as_str().into());
    }
    let rows = c.fetch_all(&sql, a).await?;
    rows.iter()
        .map(|r| decode_trace(&r.text("content")?))
        .collect()
}

/// The time of a trace of `project`, for paging from it.
pub(crate) async fn trace_time<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    trace_id: &str,
) -> StoreResult<Option<i64>> {
    let row = c
        .fetch_optional(
            &format!(
                "SELECT at FROM {} WHERE project_id = $1 AND trace_id = $2",
                recorded(C::DIALECT)
            ),
            args![project.as_str(), trace_id],
        )
        .await?;
    row.map(|r| r.int("at")).transpose()
}

/// The stored chain from `from_seq` on, in `seq` order.
pub(crate) async fn trace_chain<C: Conn>(
    c: &mut C,
    from_seq: i64,
    limit: u32,
) -> StoreResult<Vec<StoredTrace>> {
    let rows = c
        .fetch_all(
            &format!(
                "SELECT seq, trace_id, project_id, at, trace_name, trace_rating, service_type, \
                 resource_type, resource_id, resource_name, user_name, access_key_id, \
                 enterprise_project_id, content, prev_hash, hash \
                 FROM traces WHERE seq >= $1 ORDER BY seq LIMIT {limit}"
            ),
            args![from_seq],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let content = r.text("content")?;
            let columns = vec![
                ("trace_id", r.text("trace_id")?),
                ("project_id", r.text("project_id")?),
                ("time", r.int("at")?.to_string()),
                ("trace_name", r.text("trace_name")?),
                ("trace_rating", r.text("trace_rating")?),
                ("service_type", r.text("service_type")?),
                ("resource_type", r.text("resource_type")?),
                ("resource_id", r.text("resource_id")?),
                ("resource_name", r.text("resource_name")?),
                ("user", r.text("user_name")?),
                ("access_key_id", r.text("access_key_id")?),
                ("enterprise_project_id", r.text("enterprise_project_id")?),
            ];
            Ok(StoredTrace {
                seq: r.int("seq")?,
                prev_hash: r.text("prev_hash")?,
                hash: r.text("hash")?,
                content,
                columns,
            })
        })
        .collect()
}

pub(crate) async fn trace_head<C: Conn>(c: &mut C) -> StoreResult<TraceHead> {
    head(c, false).await
}

pub(crate) async fn add_seal<C: Conn>(c: &mut C, seal: &Seal) -> StoreResult<()> {
    c.execute(
        "INSERT INTO trace_seals (seq, hash, signed_at, signature, public_key) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
        args![
            seal.seq,
            seal.hash.as_str(),
            seal.signed_at,
            seal.signature.as_str(),
            seal.public_key.as_str()
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn list_seals<C: Conn>(c: &mut C) -> StoreResult<Vec<Seal>> {
    let rows = c
        .fetch_all(
            "SELECT seq, hash, signed_at, signature, public_key FROM trace_seals ORDER BY seq",
            args![],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Seal {
                seq: r.int("seq")?,
                hash: r.text("hash")?,
                signed_at: r.int("signed_at")?,
                signature: r.text("signature")?,
                public_key: r.text("public_key")?,
            })
        })
        .collect()
}

/// Removes the traces with `time < before` up to the newest sealed trace (never past a
/// seal: the kept chain must start where a seal vouches for it), and moves the pruned
/// anchor of `trace_head` there. Returns how many were removed.
pub(crate) async fn prune_traces<C: Conn>(c: &mut C, before: i64) -> StoreResult<u64> {
    let h = head(c, true).await?;
    // The last trace that may go: older than `before` and covered by a seal.
    let row = c
        .fetch_optional(
            "SELECT t.seq, t.hash FROM traces t \
             JOIN trace_seals s ON s.seq = t.seq AND s.hash = t.hash \
             WHERE t.seq > $1 AND NOT EXISTS \
               (SELECT 1 FROM traces n WHERE n.seq <= t.seq AND n.seq > $1 AND n.at >= $2) \
             ORDER BY t.seq DESC LIMIT 1",
            args![h.pruned_seq, before],
        )
        .await?;
    let Some(row) = row else { return Ok(0) };
    let (seq, hash) = (row.int("seq")?, row.text("hash")?);
    let removed = c
        .execute("DELETE FROM traces WHERE seq <= $1", args![seq])
        .await?;
    c.execute(
        "UPDATE trace_head SET pruned_seq = $1, pruned_hash = $2 WHERE id = 1",
        args![seq, hash.as_str()],
    )
    .await?;
    Ok(removed)
}
