//! The web console's reads and its sessions (see `deskfleet_core::console`). Same
//! conventions as [`crate::ops`]: one function = the body of one transaction, SQL written
//! once for both dialects. Every read is bounded by its page or by one aggregate row; the
//! desktops table filters, sorts and pages in SQL.

use crate::conn::{Conn, DbRow, args, sql};
use crate::decode::{self, DESKTOP_COLUMNS, JOB_COLUMNS, USER_COLUMNS};
use crate::ops::{conflict, count, like_pattern, strings};
use deskfleet_core::clock::Millis;
use deskfleet_core::console::{
    AgentFilterState, ConsoleSession, DesktopQuery, DesktopSort, FleetSummary, JobProgress,
    PresenceFilter,
};
use deskfleet_core::ids::{ProjectId, UserId};
use deskfleet_core::job::{Stage, SubJobStatus};
use deskfleet_core::model::{AgentCondition, Page, Role, User};
use deskfleet_core::store::{StoreError, StoreResult};
use std::collections::HashMap;

// ---- sessions ----

pub(crate) async fn create_console_session<C: Conn>(
    c: &mut C,
    id_sha256: &str,
    s: &ConsoleSession,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO console_sessions \
         (id_sha256, user_id, project_id, created_at, last_seen_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            id_sha256,
            s.user_id.as_str(),
            s.project_id.as_str(),
            s.created_at,
            s.last_seen_at,
            s.expires_at,
        ],
    )
    .await
    .map_err(|e| conflict(e, || "console session".to_owned()))?;
    Ok(())
}

pub(crate) async fn find_console_session<C: Conn>(
    c: &mut C,
    id_sha256: &str,
) -> StoreResult<Option<ConsoleSession>> {
    let row = c
        .fetch_optional(
            "SELECT user_id, project_id, created_at, last_seen_at, expires_at \
             FROM console_sessions WHERE id_sha256 = $1",
            args![id_sha256],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    let id = |col: &str| r.text(col);
    Ok(Some(ConsoleSession {
        user_id: UserId::parse(id("user_id")?).map_err(|e| corrupt("user_id", e))?,
        project_id: ProjectId::parse(id("project_id")?).map_err(|e| corrupt("project_id", e))?,
        created_at: r.int("created_at")?,
        last_seen_at: r.int("last_seen_at")?,
        expires_at: r.int("expires_at")?,
    }))
}

fn corrupt(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {col}: {e}"))
}

pub(crate) async fn touch_console_session<C: Conn>(
    c: &mut C,
    id_sha256: &str,
    at: Millis,
) -> StoreResult<bool> {
    let exists = c
        .fetch_optional(
            "SELECT 1 AS n FROM console_sessions WHERE id_sha256 = $1",
            args![id_sha256],
        )
        .await?
        .is_some();
    c.execute(
        "UPDATE console_sessions SET last_seen_at = $2 \
         WHERE id_sha256 = $1 AND last_seen_at < $2",
        args![id_sha256, at],
    )
    .await?;
    Ok(exists)
}

pub(crate) async fn delete_console_session<C: Conn>(
    c: &mut C,
    id_sha256: &str,
) -> StoreResult<bool> {
    let n = c
        .execute(
            "DELETE FROM console_sessions WHERE id_sha256 = $1",
            args![id_sha256],
        )
        .await?;
    Ok(n > 0)
}

pub(crate) async fn delete_user_console_sessions<C: Conn>(
    c: &mut C,
    user: &UserId,
) -> StoreResult<u64> {
    c.execute(
        "DELETE FROM console_sessions WHERE user_id = $1",
        args![user.as_str()],
    )
    .await
}

pub(crate) async fn delete_stale_console_sessions<C: Conn>(
    c: &mut C,
    now: Millis,
    idle_before: Millis,
) -> StoreResult<u64> {
    c.execute(
        "DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at < $2",
        args![now, idle_before],
    )
    .await
}

// ---- the fleet ----

/// A desktop's connection state at the cutoff `$CUT` (now less the freshness window),
/// exactly as `deskfleet_core::presence::Connection::presence` decides it.
fn presence_sql(cut: u8) -> String {
    format!(
        "(CASE WHEN d.connected_at IS NOT NULL AND d.last_seen_at >= ${cut} THEN 'online' \
         WHEN d.connected_at IS NULL AND d.disconnected_at IS NULL \
         AND d.last_seen_at IS NULL THEN 'never' ELSE 'offline' END)"
    )
}

/// Whether desktop `d` is failing now: its agent reported unhealthy, or its latest
/// finished work failed (the `sub_jobs_finished` index answers the latter).
const FAILING: &str = "(d.agent_healthy = 0 OR (SELECT l.status FROM sub_jobs l \
     WHERE l.desktop_id = d.id AND l.status IN ('SUCCESS', 'FAILED') \
     ORDER BY l.end_time DESC, l.seq DESC LIMIT 1) = 'FAILED')";

pub(crate) async fn fleet_summary<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    now: Millis,
    window_ms: Millis,
) -> StoreResult<FleetSummary> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT COUNT(*) AS total, \
         COALESCE(SUM(CASE WHEN {p} = 'online' THEN 1 ELSE 0 END), 0) AS online, \
         COALESCE(SUM(CASE WHEN {p} = 'offline' THEN 1 ELSE 0 END), 0) AS offline, \
         COALESCE(SUM(CASE WHEN {p} = 'never' THEN 1 ELSE 0 END), 0) AS never, \
         COALESCE(SUM(CASE WHEN d.agent_version IS NOT NULL THEN 1 ELSE 0 END), 0) AS with_agent, \
         COALESCE(SUM(CASE WHEN {FAILING} THEN 1 ELSE 0 END), 0) AS failing \
         FROM desktops d WHERE d.project_id = $1",
        p = presence_sql(2)
    ));
    let row = c
        .fetch_optional(sql, args![project.as_str(), now - window_ms])
        .await?
        .ok_or_else(|| StoreError::Corrupt("an aggregate returned no row".into()))?;
    let n = |col: &str| row.int(col).map(|v| v.max(0) as u64);
    let versions = c
        .fetch_all(
            "SELECT d.agent_version AS version, COUNT(*) AS n FROM desktops d \
             WHERE d.project_id = $1 AND d.agent_version IS NOT NULL \
             GROUP BY d.agent_version ORDER BY n DESC, version LIMIT 20",
            args![project.as_str()],
        )
        .await?
        .iter()
        .map(|r| Ok((r.text("version")?, r.int("n")?.max(0) as u64)))
        .collect::<StoreResult<Vec<_>>>()?;
    let active_jobs = count(
        c.fetch_optional(
            "SELECT COUNT(*) AS n FROM jobs WHERE project_id = $1 \
             AND status IN ('WAITING', 'RUNNING')",
            args![project.as_str()],
        )
        .await?,
    )?;
    Ok(FleetSummary {
        total: n("total")?,
        online: n("online")?,
        offline: n("offline")?,
        never: n("never")?,
        with_agent: n("with_agent")?,
        by_version: versions,
        failing: n("failing")?,
        active_jobs: active_jobs.max(0) as u64,
    })
}

/// The filters of the desktops table over `d`: `$1` project, `$2` search pattern, `$3`
/// presence, `$4` freshness cutoff, `$5` agent state, `$6` version, `$7` tag pattern.
fn query_where() -> String {
    format!(
        "d.project_id = $1 \
         AND ($2 IS NULL OR lower(d.computer_name) LIKE $2 ESCAPE '\\' \
              OR lower(d.ip_address) LIKE $2 ESCAPE '\\') \
         AND ($3 IS NULL OR {presence} = $3) \
         AND ($5 IS NULL \
              OR ($5 = 'installed' AND d.agent_version IS NOT NULL) \
              OR ($5 = 'missing' AND d.agent_version IS NULL) \
              OR ($5 = 'busy' AND EXISTS (SELECT 1 FROM sub_jobs b WHERE b.desktop_id = d.id \
                  AND b.status IN ('WAITING', 'RUNNING'))) \
              OR ($5 = 'failing' AND {FAILING})) \
         AND ($6 IS NULL OR d.agent_version = $6) \
         AND ($7 IS NULL OR d.tags LIKE $7 ESCAPE '\\')",
        presence = presence_sql(4)
    )
}

/// `LIKE` pattern over the stored tags (a JSON array of `{"key","value"}` objects) for a
/// tag key, or a key and its value.
fn tag_pattern(key: &str, value: Option<&str>) -> String {
    let json = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let needle = match value {
        Some(v) => format!("{{\"key\":{},\"value\":{}}}", json(key), json(v)),
        None => format!("{{\"key\":{},", json(key)),
    };
    let mut p = String::from("%");
    for ch in needle.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

fn order_by(sort: DesktopSort, descending: bool) -> String {
    let dir = if descending { "DESC" } else { "ASC" };
    let key = match sort {
        DesktopSort::Name => "lower(d.computer_name)",
        DesktopSort::Address => "d.ip_address",
        DesktopSort::LastSeen => "COALESCE(d.last_seen_at, 0)",
        DesktopSort::Version => "COALESCE(d.agent_version, '')",
        DesktopSort::Created => "d.created_at",
    };
    format!("{key} {dir}, d.id {dir}")
}

pub(crate) async fn query_desktops<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    q: &DesktopQuery,
    page: Page,
) -> StoreResult<(i64, Vec<AgentCondition>)> {
    let search = q.search.as_deref().map(like_pattern);
    let presence = q.presence.map(|p| match p {
        PresenceFilter::Online => "online",
        PresenceFilter::Offline => "offline",
        PresenceFilter::Never => "never",
    });
    let agent = q.agent.map(|a| match a {
        AgentFilterState::Installed => "installed",
        AgentFilterState::Missing => "missing",
        AgentFilterState::Failing => "failing",
        AgentFilterState::Busy => "busy",
    });
    let tag = q.tag.as_ref().map(|(k, v)| tag_pattern(k, v.as_deref()));
    let bind = || {
        args![
            project.as_str(),
            search.as_deref(),
            presence,
            q.now - q.window_ms,
            agent,
            q.version.as_deref(),
            tag.as_deref(),
        ]
    };
    let count_sql = sql!(C::DIALECT, |_d| format!(
        "SELECT COUNT(*) AS n FROM desktops d WHERE {}",
        query_where()
    ));
    let total = count(c.fetch_optional(count_sql, bind()).await?)?;
    // The order is one of a few fixed clauses, so the statement is built per call.
    let select = format!(
        "SELECT {DESKTOP_COLUMNS}, f.stage AS flight_stage, f.process AS flight_process \
         FROM desktops d LEFT JOIN sub_jobs f ON f.desktop_id = d.id \
         AND f.status IN ('WAITING', 'RUNNING') AND f.follows IS NULL \
         WHERE {} ORDER BY {} LIMIT $8 OFFSET $9",
        query_where(),
        order_by(q.sort, q.descending)
    );
    let mut a = bind();
    a.extend(args![i64::from(page.limit), i64::from(page.offset)]);
    let rows = c.fetch_all(&select, a).await?;
    let conditions = rows
        .iter()
        .map(|r| {
            let in_flight = r
                .opt_text("flight_stage")?
                .map(|s| s.parse::<Stage>().map_err(StoreError::Corrupt))
                .transpose()?;
            let process = r
                .opt_int("flight_process")?
                .map(|p| i32::try_from(p).map_err(|_| corrupt("process", p)))
                .transpose()?;
            Ok(AgentCondition {
                desktop: decode::desktop(r)?,
                in_flight,
                process,
            })
        })
        .collect::<StoreResult<_>>()?;
    Ok((total, conditions))
}

// ---- users ----

pub(crate) async fn list_project_users<C: Conn>(
    c: &mut C,
    project: &ProjectId,
) -> StoreResult<Vec<(User, Role)>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {USER_COLUMNS}, r.role AS role FROM roles r \
         JOIN users u ON u.id = r.user_id JOIN domains dm ON dm.id = u.domain_id \
         WHERE r.project_id = $1 ORDER BY u.name, u.id"
    ));
    c.fetch_all(sql, args![project.as_str()])
        .await?
        .iter()
        .map(|r| {
            let role = r
                .text("role")?
                .parse::<Role>()
                .map_err(StoreError::Corrupt)?;
            Ok((decode::user(r)?, role))
        })
        .collect()
}

// ---- jobs ----

pub(crate) async fn list_job_progress<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    page: Page,
) -> StoreResult<(i64, Vec<JobProgress>)> {
    let total = count(
        c.fetch_optional(
            "SELECT COUNT(*) AS n FROM jobs WHERE project_id = $1",
            args![project.as_str()],
        )
        .await?,
    )?;
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    ));
    let jobs = c
        .fetch_all(
            sql,
            args![
                project.as_str(),
                i64::from(page.limit),
                i64::from(page.offset)
            ],
        )
        .await?
        .iter()
        .map(decode::job)
        .collect::<StoreResult<Vec<_>>>()?;
    if jobs.is_empty() {
        return Ok((total, vec![]));
    }
    let ids = strings(jobs.iter().map(|j| j.id.as_str()));
    let counts_sql = sql!(C::DIALECT, |d| format!(
        "SELECT s.job_id AS job_id, s.status AS status, COUNT(*) AS n FROM sub_jobs s \
         WHERE {} GROUP BY s.job_id, s.status",
        d.in_texts("s.job_id", 1)
    ));
    let mut counts: HashMap<(String, String), u64> = HashMap::new();
    for r in c.fetch_all(counts_sql, args![ids.as_str()]).await? {
        counts.insert(
            (r.text("job_id")?, r.text("status")?),
            r.int("n")?.max(0) as u64,
        );
    }
    let of = |job: &str, status: SubJobStatus| {
        counts
            .get(&(job.to_owned(), status.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let progress = jobs
        .into_iter()
        .map(|job| {
            let id = job.id.as_str().to_owned();
            JobProgress {
                waiting: of(&id, SubJobStatus::Waiting),
                running: of(&id, SubJobStatus::Running),
                success: of(&id, SubJobStatus::Success),
                failed: of(&id, SubJobStatus::Failed),
                job,
            }
        })
        .collect();
    Ok((total, progress))
}
