//! The agents' time series: batched ingest, roll-up and retention, and the reads behind
//! Cloud Eye's metric API. Same conventions as [`crate::ops`]: one function = the body of
//! one transaction, SQL written once for both dialects.
//!
//! Batches travel as one JSON array bound to one parameter and unpacked by the database
//! (`json_each` / `jsonb_array_elements`), so a batch of any size is one statement per
//! table, with no limit on bound parameters.
//!
//! Roll-ups are exact-once: a tier's mark (`metric_rollup_marks.done_until`) moves in the
//! same transaction that writes the buckets before it. A point that arrives for a bucket
//! already rolled up stays a raw point only (Cloud Eye also leaves late points out of its
//! aggregates). Retention never deletes what the next tier has not rolled up yet.

use crate::conn::{Conn, DbRow, Dialect, args};
use deskfleet_core::clock::Millis;
use deskfleet_core::ids::{DesktopId, ProjectId};
use deskfleet_core::metrics::{
    Aggregate, FIVE_MINUTES_MS, MetricBatch, ONE_HOUR_MS, RetentionPolicy, RollupOutcome,
    SeriesFilter, SeriesInfo, Tier,
};
use deskfleet_core::store::{StoreError, StoreResult};

fn json(value: serde_json::Value) -> String {
    value.to_string()
}

pub(crate) async fn ingest_metrics<C: Conn>(c: &mut C, batch: &MetricBatch) -> StoreResult<u64> {
    let d = C::DIALECT;
    if !batch.series.is_empty() {
        let rows: Vec<_> = batch
            .series
            .iter()
            .map(|s| {
                serde_json::json!([
                    s.key.id().to_string(),
                    s.key.desktop.as_str(),
                    s.key.metric,
                    s.key.mount_point.as_deref().unwrap_or(""),
                    s.origin.as_deref().unwrap_or(""),
                    s.unit,
                ])
            })
            .collect();
        let sql = format!(
            "INSERT INTO metric_series (id, project_id, desktop_id, metric_name, mount_point, \
             origin, unit, created_at) \
             SELECT CAST(j.value ->> 0 AS BIGINT), d.project_id, d.id, j.value ->> 2, \
             j.value ->> 3, j.value ->> 4, j.value ->> 5, $2 \
             FROM {} JOIN desktops d ON d.id = (j.value ->> 1) WHERE true \
             ON CONFLICT (id) DO NOTHING",
            d.objects(1)
        );
        c.execute(&sql, args![&json(rows.into()), batch.now])
            .await?;
    }
    let mut written = 0;
    if !batch.points.is_empty() {
        let rows: Vec<_> = batch
            .points
            .iter()
            .filter(|p| {
                let m = &p.minute;
                m.count > 0
                    && [m.sum, m.sum_sq, m.min, m.max]
                        .iter()
                        .all(|v| v.is_finite())
            })
            .map(|p| {
                let m = &p.minute;
                serde_json::json!([
                    p.series.to_string(),
                    m.at.to_string(),
                    m.count.to_string(),
                    m.sum,
                    m.sum_sq,
                    m.min,
                    m.max
                ])
            })
            .collect();
        // A minute already written (a late report, or the flush at shutdown) is merged.
        let sql = format!(
            "INSERT INTO metric_points (series_id, ts, n, sum, sum_sq, min, max) \
             SELECT CAST(j.value ->> 0 AS BIGINT), CAST(j.value ->> 1 AS BIGINT), \
             CAST(j.value ->> 2 AS BIGINT), CAST(j.value ->> 3 AS DOUBLE PRECISION), \
             CAST(j.value ->> 4 AS DOUBLE PRECISION), CAST(j.value ->> 5 AS DOUBLE PRECISION), \
             CAST(j.value ->> 6 AS DOUBLE PRECISION) FROM {} WHERE true \
             ON CONFLICT (series_id, ts) DO UPDATE SET n = metric_points.n + excluded.n, \
             sum = metric_points.sum + excluded.sum, \
             sum_sq = metric_points.sum_sq + excluded.sum_sq, \
             min = {least}(metric_points.min, excluded.min), \
             max = {greatest}(metric_points.max, excluded.max)",
            d.objects(1),
            least = least(d),
            greatest = greatest(d),
        );
        written = c.execute(&sql, args![&json(rows.into())]).await?;
    }
    if !batch.latest.is_empty() {
        let rows: Vec<_> = batch
            .latest
            .iter()
            .map(|l| serde_json::json!([l.desktop.as_str(), l.json, l.received_at.to_string()]))
            .collect();
        let sql = format!(
            "INSERT INTO desktop_metrics (desktop_id, project_id, json, received_at) \
             SELECT d.id, d.project_id, j.value ->> 1, CAST(j.value ->> 2 AS BIGINT) \
             FROM {} JOIN desktops d ON d.id = (j.value ->> 0) WHERE true \
             ON CONFLICT (desktop_id) DO UPDATE SET project_id = excluded.project_id, \
             json = excluded.json, received_at = excluded.received_at",
            d.objects(1)
        );
        c.execute(&sql, args![&json(rows.into())]).await?;
    }
    Ok(written)
}

async fn mark<C: Conn>(c: &mut C, period: Millis) -> StoreResult<Option<Millis>> {
    let row = c
        .fetch_optional(
            "SELECT done_until FROM metric_rollup_marks WHERE period = $1",
            args![period],
        )
        .await?;
    row.map(|r| r.int("done_until")).transpose()
}

async fn set_mark<C: Conn>(c: &mut C, period: Millis, until: Millis) -> StoreResult<()> {
    c.execute(
        "INSERT INTO metric_rollup_marks (period, done_until) VALUES ($1, $2) \
         ON CONFLICT (period) DO UPDATE SET done_until = excluded.done_until",
        args![period, until],
    )
    .await?;
    Ok(())
}

/// The smallest `ts` at or after `from` in `table` (of `period`, for roll-ups).
async fn first_at<C: Conn>(c: &mut C, source: Source, from: Millis) -> StoreResult<Option<Millis>> {
    let row = match source {
        Source::Raw => {
            c.fetch_optional(
                "SELECT min(ts) AS earliest FROM metric_points WHERE ts >= $1",
                args![from],
            )
            .await?
        }
        Source::Rollup(period) => {
            c.fetch_optional(
                "SELECT min(ts) AS earliest FROM metric_rollups WHERE period = $1 AND ts >= $2",
                args![period, from],
            )
            .await?
        }
    };
    Ok(row.map(|r| r.opt_int("earliest")).transpose()?.flatten())
}

#[derive(Clone, Copy)]
enum Source {
    Raw,
    Rollup(Millis),
}

fn least(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "min",
        Dialect::Postgres => "LEAST",
    }
}

fn greatest(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "max",
        Dialect::Postgres => "GREATEST",
    }
}

/// Rolls up at most `policy.buckets_per_step` finished buckets of `period` from `source`;
/// returns the rows written.
async fn roll_up_tier<C: Conn>(
    c: &mut C,
    period: Millis,
    source: Source,
    ceiling: Millis,
    policy: &RetentionPolicy,
) -> StoreResult<u64> {
    let d = C::DIALECT;
    let done = mark(c, period).await?;
    // Skip empty time at once: the next bucket with data.
    let Some(first) = first_at(c, source, done.unwrap_or(Millis::MIN)).await? else {
        return Ok(0);
    };
    let start = first.div_euclid(period) * period;
    let start = done.map_or(start, |done| start.max(done));
    let end = (start + i64::from(policy.buckets_per_step.max(1)) * period).min(ceiling);
    if end <= start {
        return Ok(0);
    }
    let select = match source {
        Source::Raw => format!(
            "SELECT series_id, {period} AS period, (ts / {period}) * {period} AS bucket, \
             CAST(sum(n) AS BIGINT) AS n, sum(sum) AS s, sum(sum_sq) AS sq, min(min) AS lo, \
             max(max) AS hi FROM metric_points WHERE ts >= $1 AND ts < $2 \
             GROUP BY series_id, (ts / {period}) * {period}"
        ),
        Source::Rollup(from) => format!(
            "SELECT series_id, {period} AS period, (ts / {period}) * {period} AS bucket, \
             CAST(sum(n) AS BIGINT) AS n, sum(sum) AS s, sum(sum_sq) AS sq, min(min) AS lo, \
             max(max) AS hi FROM metric_rollups WHERE period = {from} AND ts >= $1 \
             AND ts < $2 GROUP BY series_id, (ts / {period}) * {period}"
        ),
    };
    let sql = format!(
        "INSERT INTO metric_rollups (series_id, period, ts, n, sum, sum_sq, min, max) \
         SELECT * FROM ({select}) AS g WHERE true \
         ON CONFLICT (series_id, period, ts) DO UPDATE SET n = metric_rollups.n + excluded.n, \
         sum = metric_rollups.sum + excluded.sum, sum_sq = metric_rollups.sum_sq + excluded.sum_sq, \
         min = {least}(metric_rollups.min, excluded.min), \
         max = {greatest}(metric_rollups.max, excluded.max)",
        least = least(d),
        greatest = greatest(d),
    );
    let n = c.execute(&sql, args![start, end]).await?;
    set_mark(c, period, end).await?;
    Ok(n)
}

/// Deletes the oldest `span` of `source` older than `cutoff`; returns the rows deleted.
async fn delete_old<C: Conn>(
    c: &mut C,
    source: Source,
    cutoff: Millis,
    span: Millis,
) -> StoreResult<u64> {
    let Some(oldest) = first_at(c, source, Millis::MIN).await? else {
        return Ok(0);
    };
    if oldest >= cutoff {
        return Ok(0);
    }
    let until = cutoff.min(oldest.saturating_add(span));
    match source {
        Source::Raw => {
            c.execute("DELETE FROM metric_points WHERE ts < $1", args![until])
                .await
        }
        Source::Rollup(period) => {
            c.execute(
                "DELETE FROM metric_rollups WHERE period = $1 AND ts < $2",
                args![period, until],
            )
            .await
        }
    }
}

pub(crate) async fn roll_up_metrics<C: Conn>(
    c: &mut C,
    policy: &RetentionPolicy,
    now: Millis,
) -> StoreResult<RollupOutcome> {
    let settled = now - policy.rollup_delay_ms;
    let mut out = RollupOutcome::default();
    let ceiling5 = settled.div_euclid(FIVE_MINUTES_MS) * FIVE_MINUTES_MS;
    out.rolled_up += roll_up_tier(c, FIVE_MINUTES_MS, Source::Raw, ceiling5, policy).await?;
    let done5 = mark(c, FIVE_MINUTES_MS).await?;
    if let Some(done5) = done5 {
        let ceiling60 = done5.div_euclid(ONE_HOUR_MS) * ONE_HOUR_MS;
        out.rolled_up += roll_up_tier(
            c,
            ONE_HOUR_MS,
            Source::Rollup(FIVE_MINUTES_MS),
            ceiling60,
            policy,
        )
        .await?;
    }
    let done60 = mark(c, ONE_HOUR_MS).await?;
    let steps = i64::from(policy.buckets_per_step.max(1));
    if let Some(done5) = done5 {
        let cutoff = (now - policy.raw_ms).min(done5);
        out.deleted += delete_old(c, Source::Raw, cutoff, steps * FIVE_MINUTES_MS).await?;
    }
    if let Some(done60) = done60 {
        let cutoff = (now - policy.five_minutes_ms).min(done60);
        out.deleted += delete_old(
            c,
            Source::Rollup(FIVE_MINUTES_MS),
            cutoff,
            steps * FIVE_MINUTES_MS,
        )
        .await?;
    }
    out.deleted += delete_old(
        c,
        Source::Rollup(ONE_HOUR_MS),
        now - policy.one_hour_ms,
        steps * ONE_HOUR_MS,
    )
    .await?;
    Ok(out)
}

fn aggregate<R: DbRow>(row: &R) -> StoreResult<Aggregate> {
    Ok(Aggregate {
        at: row.int("ts")?,
        count: u64::try_from(row.int("n")?)
            .map_err(|_| StoreError::Corrupt("negative roll-up count".into()))?,
        sum: row.float("s")?,
        sum_sq: row.float("sq")?,
        min: row.float("lo")?,
        max: row.float("hi")?,
    })
}

/// One part of a series read: a table, a time range and how its rows become aggregates.
enum Part {
    /// Roll-up buckets of `period` in `[from, to)`.
    Rollups(Millis, Millis, Millis),
    /// Raw minutes of `[from, to)`, one by one.
    Raw(Millis, Millis),
    /// Raw minutes of `[from, to)` in buckets of five minutes.
    RawInBuckets(Millis, Millis),
}

impl Part {
    /// The part's `SELECT` over the series whose placeholders are `ids`, with its time
    /// range bound at `$first` and `$first + 1`.
    fn select(&self, ids: &str, first: usize) -> String {
        let (from, to) = (first, first + 1);
        match self {
            Part::Rollups(period, _, _) => format!(
                "SELECT series_id, ts, n, sum AS s, sum_sq AS sq, min AS lo, max AS hi \
                 FROM metric_rollups WHERE series_id IN ({ids}) AND period = {period} \
                 AND ts >= ${from} AND ts < ${to}"
            ),
            Part::Raw(..) => format!(
                "SELECT series_id, ts, n, sum AS s, sum_sq AS sq, min AS lo, max AS hi \
                 FROM metric_points WHERE series_id IN ({ids}) AND ts >= ${from} AND ts < ${to}"
            ),
            Part::RawInBuckets(..) => {
                let p = FIVE_MINUTES_MS;
                format!(
                    "SELECT series_id, (ts / {p}) * {p} AS ts, CAST(sum(n) AS BIGINT) AS n, \
                     sum(sum) AS s, sum(sum_sq) AS sq, min(min) AS lo, max(max) AS hi \
                     FROM metric_points WHERE series_id IN ({ids}) AND ts >= ${from} \
                     AND ts < ${to} GROUP BY series_id, (ts / {p}) * {p}"
                )
            }
        }
    }

    fn range(&self) -> (Millis, Millis) {
        match *self {
            Part::Rollups(_, from, to) | Part::Raw(from, to) | Part::RawInBuckets(from, to) => {
                (from, to)
            }
        }
    }
}

/// The parts that answer `[from, to)` at `tier`, given how far each roll-up has got: the
/// coarsest data already rolled up first, then finer data for what is not yet.
fn parts(tier: Tier, from: Millis, to: Millis, done5: Millis, done60: Millis) -> Vec<Part> {
    let parts = match tier {
        Tier::Raw => vec![Part::Raw(from, to)],
        Tier::FiveMinutes => {
            let split = done5.clamp(from, to);
            vec![
                Part::Rollups(FIVE_MINUTES_MS, from, split),
                Part::RawInBuckets(split, to),
            ]
        }
        Tier::OneHour => {
            let split60 = done60.clamp(from, to);
            let split5 = done5.clamp(split60, to);
            vec![
                Part::Rollups(ONE_HOUR_MS, from, split60),
                Part::Rollups(FIVE_MINUTES_MS, split60, split5),
                Part::RawInBuckets(split5, to),
            ]
        }
    };
    parts
        .into_iter()
        .filter(|p| {
            let (from, to) = p.range();
            from < to
        })
        .collect()
}

/// Two statements whatever the number of series: which of them `project` owns, with both
/// roll-up marks; then every part of every owned series in one `UNION ALL`, ordered by
/// series and time.
pub(crate) async fn metric_aggregates<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    series: &[i64],
    tier: Tier,
    from: Millis,
    to: Millis,
) -> StoreResult<Vec<Vec<Aggregate>>> {
    let mut out = vec![Vec::new(); series.len()];
    if series.is_empty() || from >= to {
        return Ok(out);
    }
    let mut unique = series.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let ids = (0..unique.len())
        .map(|i| format!("${}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    // The series are found by their key and the project compared here: a `project_id`
    // condition in SQL lets SQLite's planner pick the (project, metric, ...) index and
    // walk every series of the project instead of the handful asked for.
    let sql = format!(
        "SELECT id, project_id, \
         (SELECT done_until FROM metric_rollup_marks WHERE period = {FIVE_MINUTES_MS}) AS m5, \
         (SELECT done_until FROM metric_rollup_marks WHERE period = {ONE_HOUR_MS}) AS m60 \
         FROM metric_series WHERE id IN ({ids})"
    );
    let bound: Vec<crate::conn::Arg> = unique.iter().map(|&id| id.into()).collect();
    let found = c.fetch_all(&sql, bound).await?;
    let Some(first) = found.first() else {
        return Ok(out);
    };
    let done5 = first.opt_int("m5")?.unwrap_or(Millis::MIN);
    let done60 = first.opt_int("m60")?.unwrap_or(Millis::MIN);
    let mut owned = Vec::with_capacity(found.len());
    for row in &found {
        if row.text("project_id")? == project.as_str() {
            owned.push(row.int("id")?);
        }
    }
    if owned.is_empty() {
        return Ok(out);
    }
    let parts = parts(tier, from, to, done5, done60);
    if parts.is_empty() {
        return Ok(out);
    }
    let ids = (0..owned.len())
        .map(|i| format!("${}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let mut bound: Vec<crate::conn::Arg> = owned.iter().map(|&id| id.into()).collect();
    let selects: Vec<String> = parts
        .iter()
        .map(|part| {
            let (from, to) = part.range();
            let first = bound.len() + 1;
            bound.push(from.into());
            bound.push(to.into());
            part.select(&ids, first)
        })
        .collect();
    let sql = format!("{} ORDER BY series_id, ts", selects.join(" UNION ALL "));
    let rows = c.fetch_all(&sql, bound).await?;
    let mut by_series: std::collections::HashMap<i64, Vec<Aggregate>> =
        std::collections::HashMap::with_capacity(owned.len());
    for row in &rows {
        by_series
            .entry(row.int("series_id")?)
            .or_default()
            .push(aggregate(row)?);
    }
    for (slot, id) in out.iter_mut().zip(series) {
        if let Some(found) = by_series.get(id) {
            slot.clone_from(found);
        }
    }
    Ok(out)
}

pub(crate) async fn list_metric_series<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    filter: &SeriesFilter,
) -> StoreResult<(Vec<SeriesInfo>, u64)> {
    let mut conditions = vec!["project_id = $1".to_owned()];
    let mut values: Vec<String> = vec![project.as_str().to_owned()];
    let mut bind = |column: &str, value: &str, conditions: &mut Vec<String>| {
        values.push(value.to_owned());
        conditions.push(format!("{column} = ${}", values.len()));
    };
    if let Some(m) = &filter.metric {
        bind("metric_name", m, &mut conditions);
    }
    if let Some(desktop) = &filter.desktop {
        bind("desktop_id", desktop.as_str(), &mut conditions);
    }
    if let Some(mp) = &filter.mount_point {
        bind("mount_point", mp, &mut conditions);
    }
    let filtered = conditions.join(" AND ");
    let count_sql = format!("SELECT count(*) AS total FROM metric_series WHERE {filtered}");
    let total = {
        let args = values.iter().map(|v| v.as_str().into()).collect();
        let row = c.fetch_optional(&count_sql, args).await?;
        row.map(|r| r.int("total")).transpose()?.unwrap_or(0)
    };
    let mut page_values = values.clone();
    let mut page_conditions = filtered;
    let direction = if filter.descending { "DESC" } else { "ASC" };
    if let Some((metric, desktop, mount)) = &filter.after {
        let n = page_values.len();
        page_values.extend([metric.clone(), desktop.clone(), mount.clone()]);
        let op = if filter.descending { "<" } else { ">" };
        page_conditions.push_str(&format!(
            " AND (metric_name, desktop_id, mount_point) {op} (${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3
        ));
    }
    let sql = format!(
        "SELECT desktop_id, metric_name, mount_point, unit FROM metric_series \
         WHERE {page_conditions} ORDER BY metric_name {direction}, desktop_id {direction}, \
         mount_point {direction} LIMIT {}",
        filter.limit.max(1)
    );
    let args = page_values.iter().map(|v| v.as_str().into()).collect();
    let rows = c.fetch_all(&sql, args).await?;
    let series = rows
        .iter()
        .map(|r| {
            let mount = r.text("mount_point")?;
            Ok(SeriesInfo {
                desktop: DesktopId::parse(&r.text("desktop_id")?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                metric: r.text("metric_name")?,
                mount_point: (!mount.is_empty()).then_some(mount),
                unit: r.text("unit")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok((series, u64::try_from(total).unwrap_or(0)))
}

/// Removes a desktop's series and their raw points (roll-ups go with retention; no
/// query reaches them without their series).
pub(crate) async fn delete_desktop_series<C: Conn>(
    c: &mut C,
    desktop: &DesktopId,
) -> StoreResult<()> {
    c.execute(
        "DELETE FROM metric_points WHERE series_id IN \
         (SELECT id FROM metric_series WHERE desktop_id = $1)",
        args![desktop.as_str()],
    )
    .await?;
    c.execute(
        "DELETE FROM metric_series WHERE desktop_id = $1",
        args![desktop.as_str()],
    )
    .await?;
    Ok(())
}
