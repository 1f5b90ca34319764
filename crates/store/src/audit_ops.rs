//! The audit trail's queries (see [`deskfleet_core::audit`] and [`crate::audit`]). Same
//! conventions as [`crate::ops`].
//!
//! Appends take turns on the one row of `trace_head`: SQLite has one writer anyway; on
//! PostgreSQL the row is locked `FOR UPDATE` as the last statement before the commit of
//! the change it belongs to, so the lock is held only for the append and the commit, and
//! never while waiting for another lock (no deadlock cycle can include it).

use crate::conn::{Conn, DbRow, Dialect, args, sql};
use deskfleet_core::audit::{self, ChainedTrace, Seal, Trace, TraceFilter};
use deskfleet_core::ids::ProjectId;
use deskfleet_core::store::{StoreError, StoreResult, StoredTrace, TraceHead};

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

/// Appends `trace` at the head of the chain.
pub(crate) async fn append_trace<C: Conn>(c: &mut C, trace: &Trace) -> StoreResult<ChainedTrace> {
    append_traces(c, std::slice::from_ref(trace))
        .await?
        .pop()
        .ok_or_else(|| StoreError::Backend("no trace appended".into()))
}

/// One row of [`append_traces`]' batch insert.
#[derive(serde::Serialize)]
struct TraceRow<'a> {
    seq: i64,
    trace_id: &'a str,
    project_id: &'a str,
    at: i64,
    trace_name: &'a str,
    trace_rating: &'a str,
    service_type: &'a str,
    resource_type: &'a str,
    resource_id: &'a str,
    resource_name: &'a str,
    user_name: &'a str,
    access_key_id: &'a str,
    enterprise_project_id: &'a str,
    content: String,
    prev_hash: String,
    hash: String,
    #[serde(skip)]
    trace: &'a Trace,
}

fn insert_sql(d: Dialect) -> String {
    format!(
        "INSERT INTO traces (seq, trace_id, project_id, at, trace_name, trace_rating, \
         service_type, resource_type, resource_id, resource_name, user_name, access_key_id, \
         enterprise_project_id, content, prev_hash, hash) \
         SELECT CAST(j.value ->> 'seq' AS BIGINT), j.value ->> 'trace_id', \
         j.value ->> 'project_id', CAST(j.value ->> 'at' AS BIGINT), j.value ->> 'trace_name', \
         j.value ->> 'trace_rating', j.value ->> 'service_type', j.value ->> 'resource_type', \
         j.value ->> 'resource_id', j.value ->> 'resource_name', j.value ->> 'user_name', \
         j.value ->> 'access_key_id', j.value ->> 'enterprise_project_id', \
         j.value ->> 'content', j.value ->> 'prev_hash', j.value ->> 'hash' FROM {}",
        d.objects(1)
    )
}

/// Appends `traces` in order at the head of the chain, with three statements however
/// many there are (the SQLite writer appends the traces of a whole batch of job
/// creations at once).
pub(crate) async fn append_traces<C: Conn>(
    c: &mut C,
    traces: &[Trace],
) -> StoreResult<Vec<ChainedTrace>> {
    if traces.is_empty() {
        return Ok(Vec::new());
    }
    let h = head(c, true).await?;
    let mut prev = h.hash;
    let mut rows = Vec::with_capacity(traces.len());
    for (seq, trace) in (h.seq + 1..).zip(traces) {
        let content = audit::content(trace);
        let hash = audit::chain_hash(&prev, seq, &content);
        rows.push(TraceRow {
            seq,
            trace_id: &trace.trace_id,
            project_id: &trace.project_id,
            at: trace.time,
            trace_name: &trace.trace_name,
            trace_rating: &trace.trace_rating,
            service_type: &trace.service_type,
            resource_type: &trace.resource_type,
            resource_id: &trace.resource_id,
            resource_name: &trace.resource_name,
            user_name: &trace.user.name,
            access_key_id: &trace.user.access_key_id,
            enterprise_project_id: &trace.enterprise_project_id,
            trace,
            content,
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    let payload = serde_json::to_string(&rows).map_err(|e| StoreError::Backend(Box::new(e)))?;
    c.execute(sql!(C::DIALECT, |d| insert_sql(d)), args![payload.as_str()])
        .await?;
    let last = rows.last().map_or(h.seq, |r| r.seq);
    c.execute(
        "UPDATE trace_head SET seq = $1, hash = $2 WHERE id = 1",
        args![last, prev.as_str()],
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ChainedTrace {
            seq: r.seq,
            prev_hash: r.prev_hash,
            hash: r.hash,
            trace: r.trace.clone(),
        })
        .collect())
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
    let mut sql = String::from("SELECT content FROM traces WHERE project_id = $1");
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
            "SELECT at FROM traces WHERE project_id = $1 AND trace_id = $2",
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
