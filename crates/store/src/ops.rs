//! Every query, written once for both dialects. Each public function is the body of one
//! `Store` method and runs inside the transaction (or savepoint) its caller opened, so it
//! either happens whole or not at all.
//!
//! Sub-job invariants kept here:
//! - a desktop has at most one in-flight (WAITING or RUNNING) *leader* sub-job, enforced by
//!   the unique index `sub_jobs_one_leader`; any other in-flight sub-job of that desktop
//!   *follows* it and takes the leader's state whenever the leader changes ([`mirror`]);
//! - `deliver_by` is set only on a WAITING leader and `execute_by` only on a RUNNING
//!   leader, so the timeout sweep reads exactly the overdue rows off two partial indexes;
//! - a job's status is recomputed from its sub-jobs ([`recompute_jobs`]) in the same
//!   transaction as any change to them.
//!
//! On PostgreSQL several transactions write at once. Every transaction that changes
//! sub-jobs first locks the rows of their desktops, in id order ([`lock_desktops`]), and
//! locks job rows last, in id order, before it counts their sub-jobs
//! ([`recompute_jobs`]): writers of one desktop are serialised, the last writer of a job
//! counts what all the others committed, and no two transactions can wait on each other
//! in a cycle. Job creators are the exception that keeps creation fast: they only add
//! sub-jobs, so they take the desktop locks *shared* and run side by side, still
//! excluding every writer that could end a leader under them. Two creators that both
//! start a leader for one desktop collide on the unique leader index (they insert leaders
//! in desktop order, so they cannot deadlock); the loser's transaction is run again and
//! then follows the winner. SQLite has one writer and skips all of this.

pub(crate) use crate::audit_ops::{
    add_seal, append_trace, chain_traces, list_seals, list_traces, prune_traces, trace_chain,
    trace_head, trace_time,
};
use crate::conn::{Arg, Conn, DbRow, Dialect, RowInsert, Violation, args, sql, violation};
use crate::decode::{
    self, DESKTOP_COLUMNS, IDENTITY_COLUMNS, JOB_COLUMNS, PACKAGE_COLUMNS, PROJECT_COLUMNS,
    SUB_JOB_SELECT, USER_COLUMNS,
};
use deskfleet_core::clock::Millis;
use deskfleet_core::fleet::{
    DesktopFacts, DesktopIdentity, Enrolled, Enrollment, EnrollmentGrant, MetricsRecord,
    PackageMeta, SubJobReport,
};
use deskfleet_core::ids::{DesktopId, DomainId, JobId, ProjectId, SubJobId, UserId};
use deskfleet_core::job::{
    JobStatus, Operation, Stage, StatusCounts, SubJobStatus, derive_job_status, job_fail_reason,
};
use deskfleet_core::model::{
    AccessKey, AgentCondition, AgentFilter, AgentState, AuthFailures, AuthSubject, Desktop,
    DesktopFilter, Domain, Job, Lockout, NewDesktop, Outcome, Page, Project, Role, SubJob,
    SubJobFilter, SubJobSelector, TokenRecord, User,
};
use deskfleet_core::model::{OperationSpec, TargetResult};
use deskfleet_core::store::{Deadlines, Expired, StateCounts, StoreError, StoreResult};
use deskfleet_proto::error::TaskErrorCode;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Why a sub-job failed at its delivery deadline, for the person who reads it.
pub(crate) const DELIVERY_TIMEOUT_REASON: &str = "the desktop did not pick up the install \
     within the delivery timeout; check that its deskfleet guest is running and connected, \
     then retry";
/// Why a sub-job failed at its execution deadline.
pub(crate) const EXECUTION_TIMEOUT_REASON: &str = "the desktop stopped reporting progress \
     before the install finished (execution timeout); check that the desktop is running and \
     its deskfleet guest is connected, then retry";
/// Why a sub-job was canceled.
pub(crate) const CANCELED_REASON: &str = "canceled by the user before it started";

/// A JSON array of strings, bound as text and read back with `Dialect::texts`.
pub(crate) fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items = items
        .into_iter()
        .map(|s| serde_json::Value::String(s.as_ref().to_owned()))
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// A JSON array of objects, bound as text and read back with `Dialect::objects`.
fn objects<T: Serialize>(items: &[T]) -> StoreResult<String> {
    serde_json::to_string(items).map_err(|e| StoreError::Backend(Box::new(e)))
}

/// A constraint violation as the caller should see it.
pub(crate) fn conflict(e: StoreError, what: impl FnOnce() -> String) -> StoreError {
    match violation(&e) {
        Some(Violation::Unique) => StoreError::AlreadyExists(what()),
        Some(Violation::ForeignKey) => StoreError::NotFound,
        None => e,
    }
}

fn texts<R: DbRow>(rows: &[R], col: &str) -> StoreResult<Vec<String>> {
    rows.iter().map(|r| r.text(col)).collect()
}

pub(crate) fn count<R: DbRow>(row: Option<R>) -> StoreResult<i64> {
    row.map_or(Ok(0), |r| r.int("n"))
}

// ---- the statements that run all the time ----
//
// Each must read an index, never scan a table that grows with every job: the SQLite test
// `hot_queries_use_their_indexes` checks their plans (see [`hot_queries`]). The partial
// indexes of the schema apply only when a query repeats their conditions word for word,
// hence some seemingly redundant terms.

/// Fails WAITING leaders past their delivery deadline (`$1` now, `$2` code, `$3` reason).
const EXPIRE_UNDELIVERED: &str = "UPDATE sub_jobs SET status = 'FAILED', error_code = $2, \
     fail_reason = $3, end_time = $1, deliver_by = NULL \
     WHERE deliver_by IS NOT NULL AND deliver_by < $1 \
     AND status = 'WAITING' AND follows IS NULL RETURNING id, job_id";

/// Fails RUNNING leaders silent past their execution deadline (same arguments).
const EXPIRE_SILENT: &str = "UPDATE sub_jobs SET status = 'FAILED', error_code = $2, \
     fail_reason = $3, end_time = $1, execute_by = NULL \
     WHERE execute_by IS NOT NULL AND execute_by < $1 \
     AND status = 'RUNNING' AND follows IS NULL RETURNING id, job_id";

/// Takes the oldest WAITING leader of desktop `$1` (the leader index holds at most one
/// in-flight leader a desktop), unless a rollout holds it (no delivery deadline) or its
/// job was stopped at `max_errors`.
const CLAIM: &str = "UPDATE sub_jobs SET status = 'RUNNING', stage = $2, process = $3, \
     begin_time = $4, execute_by = $5, deliver_by = NULL \
     WHERE seq = (SELECT s.seq FROM sub_jobs s WHERE s.desktop_id = $1 \
     AND s.status IN ('WAITING', 'RUNNING') AND s.follows IS NULL \
     AND s.status = 'WAITING' AND s.deliver_by IS NOT NULL \
     AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = s.job_id AND j.stopped_at IS NOT NULL) \
     ORDER BY s.created_at, s.seq LIMIT 1) \
     RETURNING id, job_id";

/// The in-flight followers of leader `$1`, oldest first.
const FOLLOWERS: &str = "SELECT s.id AS id FROM sub_jobs s WHERE s.follows = $1 \
     AND s.status IN ('WAITING', 'RUNNING') ORDER BY s.created_at, s.seq";

/// The in-flight leaders of the desktops in the JSON array `$1`.
pub(crate) fn in_flight_leaders_sql(d: Dialect) -> String {
    format!(
        "SELECT s.desktop_id AS desktop_id, s.id AS id, s.operation AS operation, \
         s.target_version AS target_version FROM sub_jobs s \
         WHERE {} \
         AND s.status IN ('WAITING', 'RUNNING') AND s.follows IS NULL",
        d.in_texts("s.desktop_id", 1)
    )
}

/// Copies each leader in the JSON array `$1` onto its in-flight followers.
fn mirror_sql(d: Dialect) -> String {
    format!(
        "UPDATE sub_jobs SET status = l.status, stage = l.stage, process = l.process, \
         error_code = l.error_code, fail_reason = l.fail_reason, \
         begin_time = COALESCE(sub_jobs.begin_time, l.begin_time), end_time = l.end_time, \
         deliver_by = NULL, execute_by = NULL \
         FROM sub_jobs AS l \
         WHERE {} AND sub_jobs.follows = l.id \
         AND sub_jobs.status IN ('WAITING', 'RUNNING') \
         RETURNING sub_jobs.job_id AS job_id",
        d.in_texts("l.id", 1)
    )
}

/// The project of each desktop in the JSON array `$1` (share-locked on PostgreSQL), each
/// looked up by key.
fn known_desktops_sql(d: Dialect) -> String {
    format!(
        "SELECT d.id AS id, d.project_id AS project_id, d.agent_version AS agent_version \
         FROM desktops d WHERE {} ORDER BY d.id{}",
        d.in_texts("d.id", 1),
        d.share_lock_suffix()
    )
}

/// A page of desktops with their install state. `f` is the desktop's in-flight leader (at
/// most one); its followers mirror it, so it speaks for all of them.
fn agent_conditions_sql(d: Dialect) -> String {
    format!(
        "SELECT {DESKTOP_COLUMNS}, f.stage AS flight_stage, f.process AS flight_process, \
         (SELECT l.process FROM sub_jobs l WHERE l.desktop_id = d.id \
          AND l.status IN ('SUCCESS', 'FAILED') \
          ORDER BY l.end_time DESC, l.seq DESC LIMIT 1) AS last_process \
         FROM desktops d LEFT JOIN sub_jobs f ON f.desktop_id = d.id \
         AND f.status IN ('WAITING', 'RUNNING') AND f.follows IS NULL \
         WHERE {} ORDER BY d.created_at, d.id LIMIT $9 OFFSET $10",
        desktop_where(d)
    )
}

/// The desktops with a WAITING leader, the most urgent first. A WAITING leader is exactly a
/// sub-job with a delivery deadline (see the module documentation), and the index on
/// `deliver_by` holds the desktop: the scheduler runs this several times a second without
/// reading the table.
const WAITING_WORK: &str = "SELECT s.desktop_id AS desktop_id FROM sub_jobs s \
     WHERE s.deliver_by IS NOT NULL ORDER BY s.deliver_by LIMIT $1";

/// The RUNNING leader of desktop `$1`, if any.
fn running_leader_sql() -> String {
    format!(
        "{SUB_JOB_SELECT} WHERE s.desktop_id = $1 AND s.status IN ('WAITING', 'RUNNING') \
         AND s.follows IS NULL AND s.status = 'RUNNING'"
    )
}

/// The desktop of the credential hash `$1`, as its connection sees it.
fn identity_by_credential_sql() -> String {
    format!(
        "SELECT {DESKTOP_COLUMNS}, {IDENTITY_COLUMNS} FROM desktops d \
         WHERE d.credential_sha256 = $1"
    )
}

/// The desktop of project `$1` holding instance uid `$2`.
fn identity_by_uid_sql() -> String {
    format!(
        "SELECT {DESKTOP_COLUMNS}, {IDENTITY_COLUMNS} FROM desktops d \
         WHERE d.project_id = $1 AND d.instance_uid = $2"
    )
}

/// The hot statements with the index each must use, for the plan test.
#[cfg(test)]
pub(crate) fn hot_queries(d: Dialect) -> Vec<(String, &'static str)> {
    vec![
        (EXPIRE_UNDELIVERED.to_owned(), "sub_jobs_deliver_by"),
        (EXPIRE_SILENT.to_owned(), "sub_jobs_execute_by"),
        (CLAIM.to_owned(), "sub_jobs_one_leader"),
        (FOLLOWERS.to_owned(), "sub_jobs_followers"),
        (in_flight_leaders_sql(d), "sub_jobs_one_leader"),
        (mirror_sql(d), "sub_jobs_followers"),
        (known_desktops_sql(d), "sqlite_autoindex_desktops_1"),
        (agent_conditions_sql(d), "sub_jobs_one_leader"),
        (agent_conditions_sql(d), "sub_jobs_finished"),
        (
            WAITING_WORK.to_owned(),
            "USING COVERING INDEX sub_jobs_deliver_by",
        ),
        (running_leader_sql(), "sub_jobs_one_leader"),
        (identity_by_credential_sql(), "desktops_by_credential"),
        (identity_by_uid_sql(), "desktops_by_instance_uid"),
        (STOPPED_JOBS.to_owned(), "jobs_stopped"),
    ]
}

// ---- identity ----

async fn domain_by_id<C: Conn>(c: &mut C, id: &DomainId) -> StoreResult<Domain> {
    let row = c
        .fetch_optional(
            "SELECT id, name FROM domains WHERE id = $1",
            args![id.as_str()],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    decode::domain(&row)
}

pub(crate) async fn create_domain<C: Conn>(c: &mut C, name: &str) -> StoreResult<Domain> {
    let domain = Domain {
        id: DomainId::generate(),
        name: name.to_owned(),
    };
    c.execute(
        "INSERT INTO domains (id, name) VALUES ($1, $2)",
        args![domain.id.as_str(), name],
    )
    .await
    .map_err(|e| conflict(e, || format!("domain {name:?}")))?;
    Ok(domain)
}

pub(crate) async fn find_domain_by_name<C: Conn>(
    c: &mut C,
    name: &str,
) -> StoreResult<Option<Domain>> {
    let row = c
        .fetch_optional("SELECT id, name FROM domains WHERE name = $1", args![name])
        .await?;
    row.as_ref().map(decode::domain).transpose()
}

pub(crate) async fn create_project<C: Conn>(
    c: &mut C,
    domain: &DomainId,
    name: &str,
) -> StoreResult<Project> {
    let domain = domain_by_id(c, domain).await?;
    let project = Project {
        id: ProjectId::generate(),
        name: name.to_owned(),
        domain,
    };
    c.execute(
        "INSERT INTO projects (id, domain_id, name) VALUES ($1, $2, $3)",
        args![project.id.as_str(), project.domain.id.as_str(), name],
    )
    .await
    .map_err(|e| conflict(e, || format!("project {name:?}")))?;
    Ok(project)
}

pub(crate) async fn find_project<C: Conn>(
    c: &mut C,
    id: &ProjectId,
) -> StoreResult<Option<Project>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {PROJECT_COLUMNS} FROM projects p JOIN domains dm ON dm.id = p.domain_id \
         WHERE p.id = $1"
    ));
    let row = c.fetch_optional(sql, args![id.as_str()]).await?;
    row.as_ref().map(decode::project).transpose()
}

pub(crate) async fn list_projects<C: Conn>(
    c: &mut C,
    domain: Option<&DomainId>,
    name: Option<&str>,
) -> StoreResult<Vec<Project>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {PROJECT_COLUMNS} FROM projects p JOIN domains dm ON dm.id = p.domain_id \
         WHERE ($1 IS NULL OR p.domain_id = $1) AND ($2 IS NULL OR p.name = $2) \
         ORDER BY dm.name, p.name, p.id"
    ));
    let rows = c
        .fetch_all(sql, args![domain.map(DomainId::as_str), name])
        .await?;
    rows.iter().map(decode::project).collect()
}

pub(crate) async fn create_user<C: Conn>(
    c: &mut C,
    domain: &DomainId,
    name: &str,
    password_hash: &str,
) -> StoreResult<User> {
    let domain = domain_by_id(c, domain).await?;
    let user = User {
        id: UserId::generate(),
        name: name.to_owned(),
        domain,
        password_hash: password_hash.to_owned(),
        disabled: false,
    };
    c.execute(
        "INSERT INTO users (id, domain_id, name, password_hash) VALUES ($1, $2, $3, $4)",
        args![
            user.id.as_str(),
            user.domain.id.as_str(),
            name,
            password_hash
        ],
    )
    .await
    .map_err(|e| conflict(e, || format!("user {name:?}")))?;
    Ok(user)
}

pub(crate) async fn find_user<C: Conn>(
    c: &mut C,
    domain_name: &str,
    user_name: &str,
) -> StoreResult<Option<User>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN domains dm ON dm.id = u.domain_id \
         WHERE dm.name = $1 AND u.name = $2"
    ));
    let row = c.fetch_optional(sql, args![domain_name, user_name]).await?;
    row.as_ref().map(decode::user).transpose()
}

pub(crate) async fn find_user_by_id<C: Conn>(c: &mut C, id: &UserId) -> StoreResult<Option<User>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN domains dm ON dm.id = u.domain_id \
         WHERE u.id = $1"
    ));
    let row = c.fetch_optional(sql, args![id.as_str()]).await?;
    row.as_ref().map(decode::user).transpose()
}

pub(crate) async fn grant_role<C: Conn>(
    c: &mut C,
    user: &UserId,
    project: &ProjectId,
    role: Role,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO roles (user_id, project_id, role) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, project_id) DO UPDATE SET role = excluded.role",
        args![user.as_str(), project.as_str(), role.as_str()],
    )
    .await
    .map_err(|e| conflict(e, || format!("role of user {user} on project {project}")))?;
    bump_revision(c).await
}

pub(crate) async fn find_role<C: Conn>(
    c: &mut C,
    user: &UserId,
    project: &ProjectId,
) -> StoreResult<Option<Role>> {
    let row = c
        .fetch_optional(
            "SELECT role FROM roles WHERE user_id = $1 AND project_id = $2",
            args![user.as_str(), project.as_str()],
        )
        .await?;
    row.as_ref().map(decode::role).transpose()
}

pub(crate) async fn create_access_key<C: Conn>(c: &mut C, key: &AccessKey) -> StoreResult<()> {
    c.execute(
        "INSERT INTO access_keys (access_key, secret_key, user_id, project_id, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        args![
            key.access_key.as_str(),
            key.secret_key.as_str(),
            key.user_id.as_str(),
            key.project_id.as_str(),
            key.created_at,
        ],
    )
    .await
    .map_err(|e| conflict(e, || format!("access key {:?}", key.access_key)))?;
    Ok(())
}

pub(crate) async fn find_access_key<C: Conn>(
    c: &mut C,
    access_key: &str,
) -> StoreResult<Option<AccessKey>> {
    let row = c
        .fetch_optional(
            "SELECT access_key, secret_key, user_id, project_id, created_at \
             FROM access_keys WHERE access_key = $1",
            args![access_key],
        )
        .await?;
    row.as_ref().map(decode::access_key).transpose()
}

pub(crate) async fn insert_token<C: Conn>(
    c: &mut C,
    token_sha256: &str,
    token: &TokenRecord,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO tokens (token_sha256, user_id, project_id, issued_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
        args![
            token_sha256,
            token.user_id.as_str(),
            token.project_id.as_str(),
            token.issued_at,
            token.expires_at,
        ],
    )
    .await
    .map_err(|e| conflict(e, || "token".to_owned()))?;
    Ok(())
}

pub(crate) async fn find_token<C: Conn>(
    c: &mut C,
    token_sha256: &str,
) -> StoreResult<Option<TokenRecord>> {
    let row = c
        .fetch_optional(
            "SELECT user_id, project_id, issued_at, expires_at FROM tokens \
             WHERE token_sha256 = $1",
            args![token_sha256],
        )
        .await?;
    row.as_ref().map(decode::token).transpose()
}

// ---- taking credentials back ----

/// Moves the credential revision, so that every server drops its credential cache (at
/// once where it is signalled, else at its next poll).
async fn bump_revision<C: Conn>(c: &mut C) -> StoreResult<()> {
    c.execute(
        "UPDATE credential_revision SET revision = revision + 1 WHERE id = 1",
        args![],
    )
    .await?;
    signal_credentials(c).await
}

/// Raises the credentials signal for every replica when the transaction commits
/// (PostgreSQL `NOTIFY`; SQLite has one server, which acts on its own writes). `NOTIFY`
/// serialises the commits of the transactions that send it, which credential changes
/// (rare) can afford; new work is signalled after its commit instead
/// ([`deskfleet_core::store::Store::raise`]).
async fn signal_credentials<C: Conn>(c: &mut C) -> StoreResult<()> {
    if C::DIALECT == Dialect::Postgres {
        c.execute("NOTIFY deskfleet_credentials", args![]).await?;
    }
    Ok(())
}

pub(crate) async fn credential_revision<C: Conn>(c: &mut C) -> StoreResult<i64> {
    let row = c
        .fetch_optional(
            "SELECT revision FROM credential_revision WHERE id = 1",
            args![],
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("the credential revision row is missing".into()))?;
    row.int("revision")
}

pub(crate) async fn list_access_keys<C: Conn>(c: &mut C) -> StoreResult<Vec<AccessKey>> {
    let rows = c
        .fetch_all(
            "SELECT access_key, secret_key, user_id, project_id, created_at \
             FROM access_keys ORDER BY created_at, access_key",
            args![],
        )
        .await?;
    rows.iter().map(decode::access_key).collect()
}

pub(crate) async fn replace_secret_key<C: Conn>(
    c: &mut C,
    access_key: &str,
    expected: &str,
    replacement: &str,
) -> StoreResult<bool> {
    let n = c
        .execute(
            "UPDATE access_keys SET secret_key = $3 WHERE access_key = $1 AND secret_key = $2",
            args![access_key, expected, replacement],
        )
        .await?;
    Ok(n > 0)
}

pub(crate) async fn list_user_projects<C: Conn>(
    c: &mut C,
    user: &UserId,
    name: Option<&str>,
) -> StoreResult<Vec<Project>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {PROJECT_COLUMNS} FROM roles r JOIN projects p ON p.id = r.project_id \
         JOIN domains dm ON dm.id = p.domain_id \
         WHERE r.user_id = $1 AND ($2 IS NULL OR p.name = $2) \
         ORDER BY dm.name, p.name, p.id"
    ));
    let rows = c.fetch_all(sql, args![user.as_str(), name]).await?;
    rows.iter().map(decode::project).collect()
}

pub(crate) async fn auth_failures<C: Conn>(
    c: &mut C,
    subject: &AuthSubject,
) -> StoreResult<Option<AuthFailures>> {
    let row = c
        .fetch_optional(
            "SELECT failures, locked_until FROM auth_failures WHERE subject = $1",
            args![subject.key().as_str()],
        )
        .await?;
    row.as_ref().map(decode::auth_failures).transpose()
}

pub(crate) async fn record_auth_failure<C: Conn>(
    c: &mut C,
    subject: &AuthSubject,
    now: Millis,
    lockout: Lockout,
) -> StoreResult<AuthFailures> {
    let key = subject.key();
    // One upsert counts atomically on either backend (on PostgreSQL it takes the row lock,
    // so concurrent failures from several replicas all count); a lock that ran out starts
    // the count afresh.
    let row = c
        .fetch_optional(
            "INSERT INTO auth_failures (subject, failures, locked_until) VALUES ($1, 1, NULL) \
             ON CONFLICT (subject) DO UPDATE SET \
             failures = CASE WHEN auth_failures.locked_until IS NOT NULL \
             AND auth_failures.locked_until <= $2 THEN 1 ELSE auth_failures.failures + 1 END, \
             locked_until = CASE WHEN auth_failures.locked_until IS NOT NULL \
             AND auth_failures.locked_until <= $2 THEN NULL ELSE auth_failures.locked_until END \
             RETURNING failures, locked_until",
            args![key.as_str(), now],
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("the failure upsert returned nothing".into()))?;
    let mut after = decode::auth_failures(&row)?;
    if after.failures >= lockout.failures && after.locked_at(now).is_none() {
        let until = now + lockout.lock_ms;
        c.execute(
            "UPDATE auth_failures SET locked_until = $2 WHERE subject = $1",
            args![key.as_str(), until],
        )
        .await?;
        after.locked_until = Some(until);
        bump_revision(c).await?;
    }
    Ok(after)
}

pub(crate) async fn clear_auth_failures<C: Conn>(
    c: &mut C,
    subject: &AuthSubject,
) -> StoreResult<bool> {
    let n = c
        .execute(
            "DELETE FROM auth_failures WHERE subject = $1",
            args![subject.key().as_str()],
        )
        .await?;
    if n > 0 {
        bump_revision(c).await?;
    }
    Ok(n > 0)
}

pub(crate) async fn delete_access_key<C: Conn>(c: &mut C, access_key: &str) -> StoreResult<()> {
    let n = c
        .execute(
            "DELETE FROM access_keys WHERE access_key = $1",
            args![access_key],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    let subject = AuthSubject::AccessKey(access_key.to_owned()).key();
    c.execute(
        "DELETE FROM auth_failures WHERE subject = $1",
        args![subject.as_str()],
    )
    .await?;
    bump_revision(c).await
}

pub(crate) async fn set_user_disabled<C: Conn>(
    c: &mut C,
    user: &UserId,
    disabled: bool,
) -> StoreResult<()> {
    let n = c
        .execute(
            "UPDATE users SET disabled = $2 WHERE id = $1",
            args![user.as_str(), i64::from(disabled)],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    bump_revision(c).await
}

pub(crate) async fn revoke_user_tokens<C: Conn>(c: &mut C, user: &UserId) -> StoreResult<u64> {
    if find_user_by_id(c, user).await?.is_none() {
        return Err(StoreError::NotFound);
    }
    let n = c
        .execute(
            "DELETE FROM tokens WHERE user_id = $1",
            args![user.as_str()],
        )
        .await?;
    bump_revision(c).await?;
    Ok(n)
}

pub(crate) async fn revoke_enrollment_token<C: Conn>(
    c: &mut C,
    token_sha256: &str,
) -> StoreResult<()> {
    let n = c
        .execute(
            "DELETE FROM enrollment_tokens WHERE token_sha256 = $1",
            args![token_sha256],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    bump_revision(c).await
}

pub(crate) async fn delete_desktop<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    desktop: &DesktopId,
    now: Millis,
) -> StoreResult<()> {
    lock_desktops(c, [desktop.as_str().to_owned()]).await?;
    let found = c
        .fetch_optional(
            "SELECT id FROM desktops WHERE id = $1 AND project_id = $2",
            args![desktop.as_str(), project.as_str()],
        )
        .await?;
    if found.is_none() {
        return Err(StoreError::NotFound);
    }
    let jobs = c
        .fetch_all(
            "SELECT DISTINCT job_id FROM sub_jobs WHERE desktop_id = $1",
            args![desktop.as_str()],
        )
        .await?;
    let jobs = texts(&jobs, "job_id")?;
    // Every in-flight sub-job of a desktop belongs to it (followers follow a leader of the
    // same desktop), so they all go together and nothing is left following a ghost.
    c.execute(
        "DELETE FROM sub_jobs WHERE desktop_id = $1",
        args![desktop.as_str()],
    )
    .await?;
    c.execute(
        "DELETE FROM desktop_metrics WHERE desktop_id = $1",
        args![desktop.as_str()],
    )
    .await?;
    crate::metric_ops::delete_desktop_series(c, desktop).await?;
    // A token bound to the desktop can claim nothing once it is gone.
    c.execute(
        "DELETE FROM enrollment_tokens WHERE desktop_id = $1",
        args![desktop.as_str()],
    )
    .await?;
    c.execute(
        "DELETE FROM desktops WHERE id = $1",
        args![desktop.as_str()],
    )
    .await?;
    recompute_jobs(c, jobs, now).await?;
    bump_revision(c).await
}

// ---- desktops ----

#[derive(Serialize)]
struct DesktopInsert<'a> {
    id: &'a str,
    name: &'a str,
    ip: &'a str,
    os: &'a str,
    eps: &'a str,
    tags: String,
}

pub(crate) async fn import_desktops<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    desktops: &[NewDesktop],
    now: Millis,
) -> StoreResult<Vec<Desktop>> {
    let created: Vec<Desktop> = desktops
        .iter()
        .map(|d| Desktop {
            id: DesktopId::generate(),
            project_id: project.clone(),
            computer_name: d.computer_name.clone(),
            ip_address: d.ip_address.clone(),
            os_type: d.os_type.clone(),
            status: "ACTIVE".to_owned(),
            enterprise_project_id: d
                .enterprise_project_id
                .clone()
                .unwrap_or_else(|| "0".into()),
            tags: d.tags.clone(),
            created_at: now,
            agent: None,
            connection: Default::default(),
        })
        .collect();
    if created.is_empty() {
        return Ok(created);
    }
    let rows = created
        .iter()
        .map(|d| {
            Ok(DesktopInsert {
                id: d.id.as_str(),
                name: &d.computer_name,
                ip: &d.ip_address,
                os: &d.os_type,
                eps: &d.enterprise_project_id,
                tags: serde_json::to_string(&d.tags).map_err(|e| StoreError::Backend(e.into()))?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let sql = sql!(C::DIALECT, |d| format!(
        "INSERT INTO desktops (id, project_id, computer_name, ip_address, os_type, status, \
         enterprise_project_id, tags, created_at) \
         SELECT j.value ->> 'id', $2, j.value ->> 'name', j.value ->> 'ip', j.value ->> 'os', \
         'ACTIVE', j.value ->> 'eps', j.value ->> 'tags', $3 FROM {}",
        d.objects(1)
    ));
    let payload = objects(&rows)?;
    c.execute(sql, args![payload.as_str(), project.as_str(), now])
        .await
        .map_err(|e| conflict(e, || "desktop id".to_owned()))?;
    Ok(created)
}

pub(crate) async fn get_desktop<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    id: &DesktopId,
) -> StoreResult<Option<Desktop>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {DESKTOP_COLUMNS} FROM desktops d WHERE d.id = $1 AND d.project_id = $2"
    ));
    let row = c
        .fetch_optional(sql, args![id.as_str(), project.as_str()])
        .await?;
    row.as_ref().map(decode::desktop).transpose()
}

/// The bound values of [`desktop_where`], `$1` to `$8`.
struct DesktopArgs {
    project: String,
    ids: Option<String>,
    name_like: Option<String>,
    ip: Option<String>,
    status: Option<String>,
    eps: Option<String>,
    installed: Option<i64>,
    seen_after: Option<Millis>,
}

impl DesktopArgs {
    fn new(project: &ProjectId, f: &DesktopFilter, installed: Option<bool>) -> Self {
        Self {
            project: project.as_str().to_owned(),
            ids: (!f.desktop_ids.is_empty()).then(|| strings(&f.desktop_ids)),
            name_like: f.computer_name.as_deref().map(like_pattern),
            ip: f.ip_address.clone(),
            status: f.status.clone(),
            eps: f.enterprise_project_id.clone(),
            installed: installed.map(i64::from),
            seen_after: f.seen_after,
        }
    }

    fn bind(&self) -> Vec<Arg<'_>> {
        args![
            self.project.as_str(),
            self.ids.as_deref(),
            self.name_like.as_deref(),
            self.ip.as_deref(),
            self.status.as_deref(),
            self.eps.as_deref(),
            self.installed,
            self.seen_after,
        ]
    }
}

/// `%needle%`, lowercased, with LIKE's wildcards escaped by `\`.
pub(crate) fn like_pattern(needle: &str) -> String {
    let mut p = String::with_capacity(needle.len() + 2);
    p.push('%');
    for ch in needle.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

/// A desktop's run state: with `$8` (a freshness cutoff) bound, a desktop that connected
/// once and is now disconnected, or connected but not seen since `$8`, is `SHUTOFF` (see
/// `deskfleet_core::presence`); otherwise, and with `$8` NULL, the stored status.
const RUN_STATUS: &str = "(CASE WHEN $8 IS NULL THEN d.status \
     WHEN d.connected_at IS NOT NULL AND d.last_seen_at >= $8 THEN d.status \
     WHEN d.connected_at IS NOT NULL OR d.disconnected_at IS NOT NULL \
     OR d.last_seen_at IS NOT NULL THEN 'SHUTOFF' ELSE d.status END)";

/// The desktop filter over `d`, bound by [`DesktopArgs`]. Case-insensitive name matching
/// folds ASCII only on SQLite (its `lower`), all of Unicode on PostgreSQL.
fn desktop_where(d: Dialect) -> String {
    format!(
        "d.project_id = $1 \
         AND ($2 IS NULL OR {}) \
         AND ($3 IS NULL OR lower(d.computer_name) LIKE $3 ESCAPE '\\') \
         AND ($4 IS NULL OR d.ip_address = $4) \
         AND ($5 IS NULL OR {RUN_STATUS} = $5) \
         AND ($6 IS NULL OR d.enterprise_project_id = $6) \
         AND ($7 IS NULL OR ($7 = 1 AND d.agent_version IS NOT NULL) \
              OR ($7 = 0 AND d.agent_version IS NULL))",
        d.in_texts("d.id", 2)
    )
}

async fn count_desktops<C: Conn>(c: &mut C, a: &DesktopArgs) -> StoreResult<i64> {
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT COUNT(*) AS n FROM desktops d WHERE {}",
        desktop_where(d)
    ));
    count(c.fetch_optional(sql, a.bind()).await?)
}

fn paged<'a>(mut args: Vec<Arg<'a>>, page: Page) -> Vec<Arg<'a>> {
    args.extend(args![i64::from(page.limit), i64::from(page.offset)]);
    args
}

pub(crate) async fn list_desktops<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    filter: &DesktopFilter,
    page: Page,
) -> StoreResult<(i64, Vec<Desktop>)> {
    let a = DesktopArgs::new(project, filter, None);
    let total = count_desktops(c, &a).await?;
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT {DESKTOP_COLUMNS} FROM desktops d WHERE {} \
         ORDER BY d.created_at, d.id LIMIT $9 OFFSET $10",
        desktop_where(d)
    ));
    let rows = c.fetch_all(sql, paged(a.bind(), page)).await?;
    let desktops = rows
        .iter()
        .map(decode::desktop)
        .collect::<StoreResult<_>>()?;
    Ok((total, desktops))
}

pub(crate) async fn list_agent_conditions<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    filter: &AgentFilter,
    page: Page,
) -> StoreResult<(i64, Vec<AgentCondition>)> {
    let a = DesktopArgs::new(project, &filter.desktop, filter.is_installed);
    let total = count_desktops(c, &a).await?;
    let sql = sql!(C::DIALECT, |d| agent_conditions_sql(d));
    let rows = c.fetch_all(sql, paged(a.bind(), page)).await?;
    let conditions = rows
        .iter()
        .map(|r| {
            let in_flight = r
                .opt_text("flight_stage")?
                .map(|s| s.parse::<Stage>().map_err(StoreError::Corrupt))
                .transpose()?;
            let process = match r.opt_int("flight_process")? {
                Some(p) => Some(p),
                None => r.opt_int("last_process")?,
            };
            let process = process
                .map(|p| i32::try_from(p).map_err(|_| corrupt_process(p)))
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

fn corrupt_process(p: i64) -> StoreError {
    StoreError::Corrupt(format!("column process: {p} is out of range"))
}

// ---- jobs ----

/// The in-flight leader sub-job of each of the desktops in the JSON array `desktops`.
async fn in_flight_leaders<C: Conn>(
    c: &mut C,
    desktops: &str,
) -> StoreResult<HashMap<String, String>> {
    Ok(in_flight_leader_work(c, desktops)
        .await?
        .into_iter()
        .map(|(desktop, l)| (desktop, l.id))
        .collect())
}

/// An in-flight leader and what it does.
#[derive(Debug, Clone)]
struct LeaderWork {
    id: String,
    operation: Operation,
    target_version: Option<String>,
}

/// The in-flight leaders of the desktops in the JSON array `desktops`, with their work.
async fn in_flight_leader_work<C: Conn>(
    c: &mut C,
    desktops: &str,
) -> StoreResult<HashMap<String, LeaderWork>> {
    let sql = sql!(C::DIALECT, |d| in_flight_leaders_sql(d));
    let rows = c.fetch_all(sql, args![desktops]).await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.text("desktop_id")?,
                LeaderWork {
                    id: r.text("id")?,
                    operation: decode::parsed(r, "operation")?,
                    target_version: r.opt_text("target_version")?,
                },
            ))
        })
        .collect()
}

/// The newest published, not withdrawn, version of each package of `names` (`None` when
/// there is none), read once for a whole group of calls.
async fn newest_versions<C: Conn>(
    c: &mut C,
    names: impl IntoIterator<Item = &'static str>,
) -> StoreResult<HashMap<&'static str, Option<String>>> {
    let mut newest = HashMap::new();
    for name in names.into_iter().collect::<BTreeSet<_>>() {
        newest.insert(name, newest_version(c, name).await?);
    }
    Ok(newest)
}

/// The newest published, not withdrawn, version of package `name` on any platform: the
/// latest built, and of those the last published (`Store::newest_version`).
pub(crate) async fn newest_version<C: Conn>(c: &mut C, name: &str) -> StoreResult<Option<String>> {
    let row = c
        .fetch_optional(
            "SELECT version FROM packages WHERE name = $1 AND withdrawn_at IS NULL \
             ORDER BY created_at DESC, seq DESC LIMIT 1",
            args![name],
        )
        .await?;
    row.map(|r| r.text("version")).transpose()
}

/// Locks the rows of `desktops` in id order (PostgreSQL; nothing on SQLite). See the
/// module documentation for why.
async fn lock_desktops<C: Conn>(
    c: &mut C,
    desktops: impl IntoIterator<Item = String>,
) -> StoreResult<()> {
    if !C::DIALECT.locks_rows() {
        return Ok(());
    }
    let desktops: BTreeSet<String> = desktops.into_iter().collect();
    if desktops.is_empty() {
        return Ok(());
    }
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT d.id AS id FROM desktops d WHERE {} \
         ORDER BY d.id{}",
        d.in_texts("d.id", 1),
        d.lock_suffix()
    ));
    c.fetch_all(sql, args![strings(&desktops).as_str()]).await?;
    Ok(())
}

/// Locks the row of the desktop of `sub_job` (PostgreSQL; nothing on SQLite).
async fn lock_desktop_of<C: Conn>(c: &mut C, sub_job: &SubJobId) -> StoreResult<()> {
    if !C::DIALECT.locks_rows() {
        return Ok(());
    }
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT d.id AS id FROM desktops d \
         WHERE d.id = (SELECT s.desktop_id FROM sub_jobs s WHERE s.id = $1){}",
        d.lock_suffix()
    ));
    c.fetch_all(sql, args![sub_job.as_str()]).await?;
    Ok(())
}

/// Locks the desktops of the sub-jobs `SELECT desktop_id FROM sub_jobs WHERE {cond}`
/// selects (PostgreSQL; nothing on SQLite).
async fn lock_desktops_where<'a, C: Conn>(
    c: &mut C,
    select: &'a str,
    args: Vec<Arg<'a>>,
) -> StoreResult<()> {
    if !C::DIALECT.locks_rows() {
        return Ok(());
    }
    let rows = c.fetch_all(select, args).await?;
    lock_desktops(c, texts(&rows, "desktop_id")?).await
}

/// One `create_install_job` call.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub project: ProjectId,
    pub desktops: Vec<DesktopId>,
    pub job_type: String,
    pub at: Deadlines,
    /// The operation, version and rollout limits (a plain install for
    /// `create_install_job`).
    pub spec: OperationSpec,
    /// Per desktop (parallel to `desktops`, or empty): the version to go back to and the
    /// sub-job undone, for a ROLLBACK.
    pub rollbacks: Vec<Option<(String, SubJobId)>>,
    /// The caller's draft trace, appended with the job ([`crate::audit`]).
    pub trace: Option<Box<crate::audit::Taken>>,
    /// The id the job gets if one is created, chosen by the caller so that it can
    /// complete the trace before the write.
    pub job_id: JobId,
}

impl NewJob {
    /// A Workspace install as `create_install_job` makes it.
    pub(crate) fn install(
        project: &ProjectId,
        desktops: &[DesktopId],
        job_type: &str,
        at: Deadlines,
    ) -> Self {
        Self {
            project: project.clone(),
            desktops: desktops.to_vec(),
            job_type: job_type.to_owned(),
            at,
            spec: OperationSpec::install(None),
            rollbacks: Vec::new(),
            trace: None,
            job_id: JobId::time_ordered(),
        }
    }
}

struct SubJobInsert<'a> {
    id: String,
    job: String,
    project: &'a str,
    desktop: &'a str,
    position: i64,
    created_at: Millis,
    deliver_by: Option<Millis>,
    follows: Option<String>,
    operation: &'a str,
    target_version: Option<String>,
    current_version: Option<String>,
    rollback_of: Option<String>,
}

/// New sub-jobs, many rows a statement; they begin WAITING, queued, with no attempt.
static INSERT_SUB_JOBS: RowInsert = RowInsert::new(
    "INSERT INTO sub_jobs (id, job_id, project_id, desktop_id, position, created_at, \
     deliver_by, follows, operation, target_version, current_version, rollback_of, \
     status, stage, process, attempts)",
    12,
    "'WAITING', 'queued', 0, 0",
    1024,
);

/// New jobs, many rows a statement.
static INSERT_JOBS: RowInsert = RowInsert::new(
    "INSERT INTO jobs (id, project_id, job_type, status, created_at, begin_time, end_time, \
     sub_jobs_total, operation, max_concurrency, max_errors, delivery_ms)",
    12,
    "",
    1024,
);

async fn insert_sub_jobs<C: Conn>(c: &mut C, rows: &[SubJobInsert<'_>]) -> StoreResult<()> {
    let mut values = INSERT_SUB_JOBS.values(rows.len());
    for r in rows {
        values.extend(args![
            r.id.as_str(),
            r.job.as_str(),
            r.project,
            r.desktop,
            r.position,
            r.created_at,
            r.deliver_by,
            r.follows.as_deref(),
            r.operation,
            r.target_version.as_deref(),
            r.current_version.as_deref(),
            r.rollback_of.as_deref(),
        ]);
    }
    INSERT_SUB_JOBS.run(c, values).await?;
    Ok(())
}

/// Creates the jobs of several `create_install_job` calls; see [`create_jobs`].
pub(crate) async fn create_install_jobs<C: Conn>(
    c: &mut C,
    calls: &[NewJob],
) -> StoreResult<Vec<StoreResult<Job>>> {
    let results: Vec<StoreResult<Job>> = create_jobs(c, calls)
        .await?
        .into_iter()
        .map(|r| {
            r.and_then(|(job, _)| {
                job.ok_or_else(|| StoreError::Backend("a job without sub-jobs".into()))
            })
        })
        .collect();
    // Each job created carries its trace (mostly completed by its caller already); a
    // trace that cannot be written fails them all (the caller rolls the group back).
    let mut takers = Vec::new();
    let mut traces = Vec::new();
    for (call, result) in calls.iter().zip(&results) {
        if let (Some(t), Ok(job)) = (&call.trace, result) {
            traces.push(t.completed_for(job.id.as_str(), job));
            takers.push(t);
        }
    }
    crate::audit_ops::append_completed(c, &traces).await?;
    for (t, completed) in takers.into_iter().zip(traces) {
        t.appended(completed.trace);
    }
    Ok(results)
}

/// Creates one job of operations (`Store::create_operation_job`).
pub(crate) async fn create_operation_job<C: Conn>(
    c: &mut C,
    call: &NewJob,
) -> StoreResult<(Option<Job>, Vec<TargetResult>)> {
    create_jobs(c, std::slice::from_ref(call))
        .await?
        .pop()
        .unwrap_or_else(|| Err(StoreError::Backend("no result for the job created".into())))
}

/// Creates the jobs of several calls with a fixed number of statements, however many
/// calls and sub-jobs there are (the SQLite writer hands it every call of a batch at
/// once).
///
/// Each call is checked before anything is written: one that names a desktop that is not
/// in its project gets [`StoreError::UnknownDesktops`] and writes nothing. The others are
/// created in order; a desktop with work in flight, or started by an earlier call of the
/// same group, gets a sub-job that follows it, unless the call is exclusive and that work
/// is another operation or version: that target gets [`TargetResult::Busy`] and no
/// sub-job. A call left with no sub-job creates no job (`None`). The outer error means
/// nothing may be kept (the caller rolls back).
async fn create_jobs<C: Conn>(
    c: &mut C,
    calls: &[NewJob],
) -> StoreResult<Vec<StoreResult<(Option<Job>, Vec<TargetResult>)>>> {
    let asked: BTreeSet<&str> = calls
        .iter()
        .flat_map(|call| call.desktops.iter().map(DesktopId::as_str))
        .collect();
    // On PostgreSQL this also share-locks the desktops: no leader of theirs can end while
    // followers are being added to it (see the module documentation).
    let sql = sql!(C::DIALECT, |d| known_desktops_sql(d));
    let rows = c.fetch_all(sql, args![strings(&asked).as_str()]).await?;
    let mut project_of: HashMap<String, String> = HashMap::with_capacity(rows.len());
    let mut agent_of: HashMap<String, String> = HashMap::new();
    for r in &rows {
        let id = r.text("id")?;
        if let Some(v) = r.opt_text("agent_version")? {
            agent_of.insert(id.clone(), v);
        }
        project_of.insert(id, r.text("project_id")?);
    }

    let mut valid_calls: Vec<bool> = Vec::with_capacity(calls.len());
    let mut results: Vec<StoreResult<(Option<Job>, Vec<TargetResult>)>> =
        Vec::with_capacity(calls.len());
    for call in calls {
        let mut unknown: Vec<String> = Vec::new();
        for d in &call.desktops {
            let known =
                project_of.get(d.as_str()).map(String::as_str) == Some(call.project.as_str());
            if !known && !unknown.iter().any(|u| u == d.as_str()) {
                unknown.push(d.as_str().to_owned());
            }
        }
        valid_calls.push(unknown.is_empty());
        results.push(if unknown.is_empty() {
            Ok((None, Vec::new()))
        } else {
            Err(StoreError::UnknownDesktops(unknown))
        });
    }
    if !valid_calls.iter().any(|v| *v) {
        return Ok(results);
    }
    let valid: BTreeSet<&str> = calls
        .iter()
        .zip(&valid_calls)
        .filter(|(_, v)| **v)
        .flat_map(|(call, _)| call.desktops.iter().map(DesktopId::as_str))
        .collect();
    let mut leaders = in_flight_leader_work(c, &strings(&valid)).await?;
    let newest = newest_versions(
        c,
        calls
            .iter()
            .zip(&valid_calls)
            .filter(|(call, v)| **v && call.spec.target_version.is_none())
            .filter_map(|(call, _)| call.spec.newest_of),
    )
    .await?;
    let mut sub_jobs = Vec::new();
    let mut created: Vec<(usize, Job)> = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        if !valid_calls[index] {
            continue;
        }
        let job_id = call.job_id.clone();
        let operation = call.spec.operation;
        let mut targets = Vec::with_capacity(call.desktops.len());
        let mut total: u32 = 0;
        // Leaders beyond the rollout window wait without a delivery deadline (held).
        let mut window = call.spec.limits.max_concurrency.unwrap_or(u32::MAX);
        for (position, desktop) in (0_i64..).zip(&call.desktops) {
            let (target_version, rollback_of) = match call
                .rollbacks
                .get(position as usize)
                .and_then(Option::as_ref)
            {
                Some((version, undone)) => {
                    (Some(version.clone()), Some(undone.as_str().to_owned()))
                }
                None => match (&call.spec.target_version, call.spec.newest_of) {
                    (None, Some(package)) => (newest.get(package).cloned().flatten(), None),
                    (version, _) => (version.clone(), None),
                },
            };
            // Time-ordered, so that index inserts append instead of landing on random pages.
            let sub_job = SubJobId::time_ordered();
            let id = sub_job.as_str().to_owned();
            // The first sub-job of a desktop with nothing in flight leads; any later one,
            // in this call or a later call of the group, follows it (or, for an exclusive
            // call, is refused when it would do something else).
            let follows = match leaders.get(desktop.as_str()) {
                Some(leader)
                    if call.spec.exclusive
                        && (leader.operation != operation
                            || leader.target_version != target_version) =>
                {
                    targets.push(TargetResult::Busy {
                        sub_job: SubJobId::parse(leader.id.clone()).map_err(|e| {
                            StoreError::Corrupt(format!("leader id {}: {e}", leader.id))
                        })?,
                        operation: leader.operation,
                        target_version: leader.target_version.clone(),
                    });
                    continue;
                }
                Some(leader) => Some(leader.id.clone()),
                None => {
                    leaders.insert(
                        desktop.as_str().to_owned(),
                        LeaderWork {
                            id: id.clone(),
                            operation,
                            target_version: target_version.clone(),
                        },
                    );
                    None
                }
            };
            targets.push(TargetResult::Created(sub_job));
            total += 1;
            let deliver_by = match (&follows, window) {
                (Some(_), _) | (None, 0) => None,
                (None, _) => {
                    window -= 1;
                    Some(call.at.deliver_by)
                }
            };
            sub_jobs.push(SubJobInsert {
                id,
                job: job_id.as_str().to_owned(),
                project: call.project.as_str(),
                desktop: desktop.as_str(),
                position,
                created_at: call.at.now,
                deliver_by,
                follows,
                operation: operation.as_str(),
                target_version,
                current_version: agent_of.get(desktop.as_str()).cloned(),
                rollback_of,
            });
        }
        if total == 0 {
            results[index] = Ok((None, targets));
            continue;
        }
        let status = derive_job_status(StatusCounts {
            waiting: total,
            ..StatusCounts::default()
        });
        let job = Job {
            id: job_id,
            project_id: call.project.clone(),
            job_type: call.job_type.clone(),
            status,
            created_at: call.at.now,
            // A job begins when it is accepted, not when a desktop first picks it up.
            begin_time: Some(call.at.now),
            end_time: status.is_terminal().then_some(call.at.now),
            error_code: None,
            fail_reason: None,
            sub_jobs_total: total,
            operation,
            limits: call.spec.limits,
        };
        results[index] = Ok((Some(job.clone()), targets));
        created.push((index, job));
    }
    if created.is_empty() {
        return Ok(results);
    }
    let mut values = INSERT_JOBS.values(created.len());
    for (index, job) in &created {
        values.extend(args![
            job.id.as_str(),
            job.project_id.as_str(),
            job.job_type.as_str(),
            job.status.as_str(),
            job.created_at,
            job.begin_time,
            job.end_time,
            i64::from(job.sub_jobs_total),
            job.operation.as_str(),
            job.limits.max_concurrency.map(i64::from),
            job.limits.max_errors.map(i64::from),
            calls[*index].at.deliver_by - calls[*index].at.now,
        ]);
    }
    INSERT_JOBS.run(c, values).await?;
    // New leaders first, in desktop order: see the module documentation on why.
    sub_jobs.sort_by(|a, b| match (&a.follows, &b.follows) {
        (None, None) => a.desktop.cmp(b.desktop),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(_), Some(_)) => std::cmp::Ordering::Equal,
    });
    insert_sub_jobs(c, &sub_jobs).await?;
    Ok(results)
}

async fn job_in_project<C: Conn>(c: &mut C, project: &ProjectId, id: &JobId) -> StoreResult<()> {
    c.fetch_optional(
        "SELECT id FROM jobs WHERE id = $1 AND project_id = $2",
        args![id.as_str(), project.as_str()],
    )
    .await?
    .map(|_| ())
    .ok_or(StoreError::NotFound)
}

pub(crate) async fn get_job<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    id: &JobId,
) -> StoreResult<Option<(Job, Vec<SubJob>)>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND project_id = $2"
    ));
    let Some(row) = c
        .fetch_optional(sql, args![id.as_str(), project.as_str()])
        .await?
    else {
        return Ok(None);
    };
    let job = decode::job(&row)?;
    let sql = sql!(C::DIALECT, |_d| format!(
        "{SUB_JOB_SELECT} WHERE s.job_id = $1 ORDER BY s.position, s.seq"
    ));
    let rows = c.fetch_all(sql, args![id.as_str()]).await?;
    let sub_jobs = rows
        .iter()
        .map(decode::sub_job)
        .collect::<StoreResult<_>>()?;
    Ok(Some((job, sub_jobs)))
}

/// The sub-job filter over `s` joined with its job `j`, bound `$1` to `$4`.
fn sub_job_where(d: Dialect) -> String {
    format!(
        "s.project_id = $1 AND ($2 IS NULL OR {}) \
         AND ($3 IS NULL OR s.job_id = $3) AND ($4 IS NULL OR j.job_type = $4)",
        d.in_texts("s.status", 2)
    )
}

pub(crate) async fn list_sub_jobs<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    filter: &SubJobFilter,
    page: Page,
) -> StoreResult<(i64, Vec<SubJob>)> {
    let statuses =
        (!filter.statuses.is_empty()).then(|| strings(filter.statuses.iter().map(|s| s.as_str())));
    let bound = args![
        project.as_str(),
        statuses.as_deref(),
        filter.job_id.as_ref().map(JobId::as_str),
        filter.job_type.as_deref(),
    ];
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT COUNT(*) AS n FROM sub_jobs s JOIN jobs j ON j.id = s.job_id WHERE {}",
        sub_job_where(d)
    ));
    let total = count(c.fetch_optional(sql, bound.clone()).await?)?;
    let sql = sql!(C::DIALECT, |d| format!(
        "{SUB_JOB_SELECT} WHERE {} ORDER BY s.created_at DESC, s.seq DESC \
         LIMIT $5 OFFSET $6",
        sub_job_where(d)
    ));
    let rows = c.fetch_all(sql, paged(bound, page)).await?;
    let sub_jobs = rows
        .iter()
        .map(decode::sub_job)
        .collect::<StoreResult<_>>()?;
    Ok((total, sub_jobs))
}

#[derive(Serialize)]
struct Requeue {
    id: String,
    follows: Option<String>,
}

pub(crate) async fn retry_job<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    id: &JobId,
    at: Deadlines,
) -> StoreResult<u64> {
    job_in_project(c, project, id).await?;
    lock_desktops_where(
        c,
        "SELECT desktop_id FROM sub_jobs WHERE job_id = $1 AND status = 'FAILED'",
        args![id.as_str()],
    )
    .await?;
    let failed = c
        .fetch_all(
            "SELECT s.id AS id, s.desktop_id AS desktop_id FROM sub_jobs s \
             WHERE s.job_id = $1 AND s.status = 'FAILED' ORDER BY s.position, s.seq",
            args![id.as_str()],
        )
        .await?;
    if failed.is_empty() {
        return Ok(0);
    }
    let desktops = texts(&failed, "desktop_id")?;
    let mut leaders = in_flight_leaders(c, &strings(&desktops)).await?;
    let mut requeue = Vec::with_capacity(failed.len());
    for (row, desktop) in failed.iter().zip(desktops) {
        let id = row.text("id")?;
        let follows = match leaders.get(&desktop) {
            Some(leader) => Some(leader.clone()),
            None => {
                leaders.insert(desktop, id.clone());
                None
            }
        };
        requeue.push(Requeue { id, follows });
    }
    let sql = sql!(C::DIALECT, |d| format!(
        "UPDATE sub_jobs SET status = 'WAITING', stage = 'queued', process = 0, \
         error_code = NULL, fail_reason = NULL, begin_time = NULL, end_time = NULL, \
         execute_by = NULL, deliver_by = CASE WHEN p.follows IS NULL THEN $2 END, \
         follows = p.follows, attempts = attempts + 1 \
         FROM (SELECT j.value ->> 'id' AS id, j.value ->> 'follows' AS follows FROM {}) AS p \
         WHERE sub_jobs.id = p.id AND sub_jobs.status = 'FAILED'",
        d.objects(1)
    ));
    let payload = objects(&requeue)?;
    let n = c
        .execute(sql, args![payload.as_str(), at.deliver_by])
        .await?;
    // A job its rollout stopped runs again (its limits stay).
    c.execute(
        "UPDATE jobs SET stopped_at = NULL WHERE id = $1 AND stopped_at IS NOT NULL",
        args![id.as_str()],
    )
    .await?;
    recompute_jobs(c, [id.as_str().to_owned()], at.now).await?;
    Ok(n)
}

pub(crate) async fn cancel_job<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    id: &JobId,
    now: Millis,
) -> StoreResult<u64> {
    job_in_project(c, project, id).await?;
    lock_desktops_where(
        c,
        "SELECT desktop_id FROM sub_jobs WHERE job_id = $1 AND status = 'WAITING'",
        args![id.as_str()],
    )
    .await?;
    let waiting = c
        .fetch_all(
            "SELECT s.id AS id, s.follows AS follows, s.deliver_by AS deliver_by \
             FROM sub_jobs s WHERE s.job_id = $1 AND s.status = 'WAITING' \
             ORDER BY s.position, s.seq",
            args![id.as_str()],
        )
        .await?;
    if waiting.is_empty() {
        return Ok(0);
    }
    let n = c
        .execute(
            "UPDATE sub_jobs SET status = 'FAILED', error_code = $2, fail_reason = $3, \
             end_time = $4, deliver_by = NULL WHERE job_id = $1 AND status = 'WAITING'",
            args![
                id.as_str(),
                TaskErrorCode::Canceled.code(),
                CANCELED_REASON,
                now,
            ],
        )
        .await?;
    // A canceled leader may have followers in other jobs: the oldest takes over the
    // install, with the deadline the leader had, and the others follow it instead.
    for row in &waiting {
        if row.opt_text("follows")?.is_some() {
            continue;
        }
        let leader = row.text("id")?;
        let followers = c.fetch_all(FOLLOWERS, args![leader.as_str()]).await?;
        let Some(heir) = followers.first() else {
            continue;
        };
        let heir = heir.text("id")?;
        c.execute(
            "UPDATE sub_jobs SET follows = NULL, deliver_by = $2 WHERE id = $1",
            args![heir.as_str(), row.opt_int("deliver_by")?],
        )
        .await?;
        if followers.len() > 1 {
            c.execute(
                "UPDATE sub_jobs SET follows = $2 WHERE follows = $1 \
                 AND status IN ('WAITING', 'RUNNING')",
                args![leader.as_str(), heir.as_str()],
            )
            .await?;
        }
    }
    recompute_jobs(c, [id.as_str().to_owned()], now).await?;
    Ok(n)
}

/// Finished sub-jobs of project `$1` among the JSON array of ids `$2`.
fn finished_ids_where(d: Dialect) -> String {
    format!(
        "project_id = $1 AND {} AND status IN ('SUCCESS', 'FAILED')",
        d.in_texts("id", 2)
    )
}

pub(crate) async fn delete_sub_jobs<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    selector: &SubJobSelector,
) -> StoreResult<u64> {
    // Only finished records go: a sub-job in flight is skipped, not an error.
    match selector {
        SubJobSelector::Ids(ids) => {
            if ids.is_empty() {
                return Ok(0);
            }
            let ids = strings(ids);
            let select = sql!(C::DIALECT, |d| format!(
                "SELECT DISTINCT desktop_id FROM sub_jobs WHERE {}",
                finished_ids_where(d)
            ));
            let bound = args![project.as_str(), ids.as_str()];
            lock_desktops_where(c, select, bound.clone()).await?;
            let sql = sql!(C::DIALECT, |d| format!(
                "DELETE FROM sub_jobs WHERE {}",
                finished_ids_where(d)
            ));
            c.execute(sql, bound).await
        }
        SubJobSelector::Status(status) => {
            if !status.is_terminal() {
                return Ok(0);
            }
            let bound = args![project.as_str(), status.as_str()];
            lock_desktops_where(
                c,
                "SELECT DISTINCT desktop_id FROM sub_jobs WHERE project_id = $1 AND status = $2",
                bound.clone(),
            )
            .await?;
            c.execute(
                "DELETE FROM sub_jobs WHERE project_id = $1 AND status = $2",
                bound,
            )
            .await
        }
    }
}

/// Jobs and sub-jobs by status; every status appears, with 0 when none is in it.
pub(crate) async fn count_by_state<C: Conn>(c: &mut C) -> StoreResult<StateCounts> {
    let mut jobs: Vec<(JobStatus, u64)> = JobStatus::ALL.iter().map(|&s| (s, 0)).collect();
    let rows = c
        .fetch_all(
            "SELECT status, COUNT(*) AS n FROM jobs GROUP BY status",
            args![],
        )
        .await?;
    for row in rows {
        let status: JobStatus = decode::parsed(&row, "status")?;
        let n: u64 = decode::narrow(&row, "n")?;
        if let Some(slot) = jobs.iter_mut().find(|(s, _)| *s == status) {
            slot.1 += n;
        }
    }
    let mut sub_jobs: Vec<(SubJobStatus, u64)> =
        SubJobStatus::ALL.iter().map(|&s| (s, 0)).collect();
    let rows = c
        .fetch_all(
            "SELECT status, COUNT(*) AS n FROM sub_jobs GROUP BY status",
            args![],
        )
        .await?;
    for row in rows {
        let status: SubJobStatus = decode::parsed(&row, "status")?;
        let n: u64 = decode::narrow(&row, "n")?;
        if let Some(slot) = sub_jobs.iter_mut().find(|(s, _)| *s == status) {
            slot.1 += n;
        }
    }
    Ok(StateCounts { jobs, sub_jobs })
}

// ---- the engine ----

/// Copies the state of each sub-job in `leaders` to its in-flight followers. Returns the
/// job of every follower changed (one entry a follower).
async fn mirror<C: Conn>(c: &mut C, leaders: &[String]) -> StoreResult<Vec<String>> {
    if leaders.is_empty() {
        return Ok(Vec::new());
    }
    let sql = sql!(C::DIALECT, |d| mirror_sql(d));
    let rows = c.fetch_all(sql, args![strings(leaders).as_str()]).await?;
    texts(&rows, "job_id")
}

#[derive(Default)]
struct Tally {
    counts: StatusCounts,
    first_failure: Option<(String, String)>,
}

/// Brings the stored status of `jobs` in line with their sub-jobs.
async fn recompute_jobs<C: Conn>(
    c: &mut C,
    jobs: impl IntoIterator<Item = String>,
    now: Millis,
) -> StoreResult<()> {
    let mut tallies: BTreeMap<String, Tally> =
        jobs.into_iter().map(|j| (j, Tally::default())).collect();
    if tallies.is_empty() {
        return Ok(());
    }
    let set = strings(tallies.keys());
    // On PostgreSQL, writers of different desktops may change sub-jobs of one job at
    // once. Whoever locks the job row last counts after every other writer of it
    // committed (each statement of a READ COMMITTED transaction reads afresh), so the
    // last status written is right. Counting before the lock would let a writer
    // overwrite the job with a count that misses a concurrent change. The jobs not ended
    // yet are noted: the ones this recount ends record their end.
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT j.id AS id, j.project_id AS project_id, j.job_type AS job_type \
         FROM jobs j WHERE {} AND j.end_time IS NULL \
         ORDER BY j.id{}",
        d.in_texts("j.id", 1),
        d.lock_suffix_of("j")
    ));
    let mut open: BTreeMap<String, (String, String)> = BTreeMap::new();
    for row in c.fetch_all(sql, args![set.as_str()]).await? {
        open.insert(
            row.text("id")?,
            (row.text("project_id")?, row.text("job_type")?),
        );
    }
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT s.job_id AS job_id, s.status AS status, COUNT(*) AS n \
         FROM sub_jobs s WHERE {} \
         GROUP BY s.job_id, s.status",
        d.in_texts("s.job_id", 1)
    ));
    for row in c.fetch_all(sql, args![set.as_str()]).await? {
        let Some(t) = tallies.get_mut(&row.text("job_id")?) else {
            continue;
        };
        let n: u32 = decode::narrow(&row, "n")?;
        let counts = &mut t.counts;
        match decode::parsed::<_, SubJobStatus>(&row, "status")? {
            SubJobStatus::Waiting => counts.waiting += n,
            SubJobStatus::Running => counts.running += n,
            SubJobStatus::Success => counts.success += n,
            SubJobStatus::Failed => counts.failed += n,
        }
    }
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT s.job_id AS job_id, s.error_code AS error_code, s.fail_reason AS fail_reason \
         FROM sub_jobs s WHERE {} AND s.status = 'FAILED' \
         ORDER BY s.end_time, s.position, s.seq",
        d.in_texts("s.job_id", 1)
    ));
    for row in c.fetch_all(sql, args![set.as_str()]).await? {
        if let Some(t) = tallies.get_mut(&row.text("job_id")?)
            && t.first_failure.is_none()
        {
            let code = row.opt_text("error_code")?.unwrap_or_default();
            let reason = row.opt_text("fail_reason")?.unwrap_or_default();
            t.first_failure = Some((code, reason));
        }
    }
    let mut ended = Vec::new();
    for (job, t) in &tallies {
        let status = derive_job_status(t.counts);
        let failure = t
            .first_failure
            .as_ref()
            .map(|(code, why)| (code.as_str(), why.as_str()));
        let (code, reason) = match status {
            deskfleet_core::job::JobStatus::Fail => (
                failure.map(|(code, _)| code.to_owned()),
                Some(job_fail_reason(t.counts, failure)),
            ),
            _ => (None, None),
        };
        // A job with `max_errors` stops once more than that many of its sub-jobs failed;
        // the sweep then ends the ones not started (see [`stop_and_release`]).
        c.execute(
            "UPDATE jobs SET status = $2, \
             end_time = CASE WHEN $3 IS NULL THEN NULL ELSE COALESCE(end_time, $3) END, \
             error_code = $4, fail_reason = $5, \
             stopped_at = CASE WHEN stopped_at IS NULL AND max_errors IS NOT NULL \
             AND $6 > max_errors THEN $7 ELSE stopped_at END WHERE id = $1",
            args![
                job.as_str(),
                status.as_str(),
                status.is_terminal().then_some(now),
                code.as_deref(),
                reason.as_deref(),
                i64::from(t.counts.failed),
                now,
            ],
        )
        .await?;
        if status.is_terminal()
            && let Some((project_id, job_type)) = open.get(job)
        {
            ended.push(deskfleet_core::audit::job_end(
                &deskfleet_core::audit::JobEnd {
                    project_id,
                    job_id: job,
                    job_type,
                    status,
                    error_code: code.as_deref(),
                    fail_reason: reason.as_deref(),
                    succeeded: t.counts.success,
                    failed: t.counts.failed,
                    at: now,
                },
            ));
        }
    }
    // In the same transaction as the change that ended them (docs/audit.md).
    crate::audit_ops::append_traces(c, &ended).await
}

/// After `leaders` changed: their followers take their state, and every job concerned
/// (`jobs` plus the followers') is recomputed. Returns how many followers changed.
async fn propagate<C: Conn>(
    c: &mut C,
    leaders: &[String],
    jobs: Vec<String>,
    now: Millis,
) -> StoreResult<u64> {
    let followers = mirror(c, leaders).await?;
    let n = followers.len() as u64;
    recompute_jobs(c, jobs.into_iter().chain(followers), now).await?;
    Ok(n)
}

pub(crate) async fn expire_overdue<C: Conn>(c: &mut C, now: Millis) -> StoreResult<Expired> {
    // Rollout control first: what it stops and releases is locked with the overdue work,
    // in one sorted set (see the module documentation). On PostgreSQL the sweeps of all
    // replicas take turns (a lock of their own, which no other writer takes): two sweeps
    // counting a job's free slots at once would both fill them.
    if C::DIALECT.locks_rows() {
        c.execute("SELECT pg_advisory_xact_lock($1)", args![SWEEP_LOCK])
            .await?;
    }
    let rollout = rollout_plan(c, now).await?;
    if C::DIALECT.locks_rows() {
        let rows = c
            .fetch_all(
                "SELECT desktop_id FROM sub_jobs WHERE deliver_by IS NOT NULL AND deliver_by < $1 \
                 UNION SELECT desktop_id FROM sub_jobs WHERE execute_by IS NOT NULL \
                 AND execute_by < $1",
                args![now],
            )
            .await?;
        let mut desktops = texts(&rows, "desktop_id")?;
        desktops.extend(rollout.desktops.iter().cloned());
        lock_desktops(c, desktops).await?;
    }
    let (stopped, stopped_jobs) = apply_rollout(c, &rollout, now).await?;
    let undelivered = c
        .fetch_all(
            EXPIRE_UNDELIVERED,
            args![
                now,
                TaskErrorCode::DeliveryTimeout.code(),
                DELIVERY_TIMEOUT_REASON,
            ],
        )
        .await?;
    let silent = c
        .fetch_all(
            EXPIRE_SILENT,
            args![
                now,
                TaskErrorCode::ExecutionTimeout.code(),
                EXECUTION_TIMEOUT_REASON,
            ],
        )
        .await?;
    if undelivered.is_empty() && silent.is_empty() && stopped.is_empty() {
        return Ok(Expired::default());
    }
    let leaders: Vec<String> = texts(&undelivered, "id")?
        .into_iter()
        .chain(texts(&silent, "id")?)
        .chain(stopped)
        .collect();
    let jobs: Vec<String> = texts(&undelivered, "job_id")?
        .into_iter()
        .chain(texts(&silent, "job_id")?)
        .chain(stopped_jobs)
        .collect();
    let followers = propagate(c, &leaders, jobs, now).await?;
    Ok(Expired {
        undelivered: undelivered.len() as u64,
        silent: silent.len() as u64,
        followers,
    })
}

async fn fetch_sub_job<C: Conn>(c: &mut C, id: &str) -> StoreResult<SubJob> {
    let sql = sql!(C::DIALECT, |_d| format!("{SUB_JOB_SELECT} WHERE s.id = $1"));
    let row = c
        .fetch_optional(sql, args![id])
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("sub-job {id} vanished mid-transaction")))?;
    decode::sub_job(&row)
}

pub(crate) async fn claim_desktop_work<C: Conn>(
    c: &mut C,
    desktop: &DesktopId,
    now: Millis,
    execute_by: Millis,
) -> StoreResult<Option<SubJob>> {
    lock_desktops(c, [desktop.as_str().to_owned()]).await?;
    let claimed = c
        .fetch_optional(
            CLAIM,
            args![
                desktop.as_str(),
                Stage::Delivered.as_str(),
                i64::from(Stage::Delivered.process(None)),
                now,
                execute_by,
            ],
        )
        .await?;
    let Some(row) = claimed else {
        return Ok(None);
    };
    let id = row.text("id")?;
    let job = row.text("job_id")?;
    // A claim only turns a WAITING sub-job RUNNING: it changes its job only while the
    // job is WAITING. A RUNNING job is left alone, so that the claims of one job's
    // desktops do not queue on its row (a job row locked and its sub-jobs counted per
    // claim). No writer that ends a job depends on this claim's recount: each recounts
    // under the job's lock itself.
    let status = c
        .fetch_optional("SELECT status FROM jobs WHERE id = $1", args![job.as_str()])
        .await?
        .map(|row| row.text("status"))
        .transpose()?;
    let jobs = match status.as_deref() {
        Some(s) if s == deskfleet_core::job::JobStatus::Running.as_str() => Vec::new(),
        _ => vec![job],
    };
    propagate(c, std::slice::from_ref(&id), jobs, now).await?;
    fetch_sub_job(c, &id).await.map(Some)
}

/// Records the progress of sub-job `$1` if it is a RUNNING leader; its followers are left
/// to [`propagate`].
const PROGRESS: &str = "UPDATE sub_jobs SET stage = $2, process = $3, execute_by = $4 \
     WHERE id = $1 AND status = 'RUNNING' AND follows IS NULL";

/// Ends sub-job `$1` if it is a RUNNING leader; its followers are left to [`propagate`].
const FINISH: &str = "UPDATE sub_jobs SET status = $2, stage = COALESCE($3, stage), \
     process = COALESCE($4, process), error_code = $5, fail_reason = $6, \
     end_time = $7, execute_by = NULL, deliver_by = NULL \
     WHERE id = $1 AND status = 'RUNNING' AND follows IS NULL RETURNING job_id";

/// Applies [`PROGRESS`]: whether the sub-job was a RUNNING leader.
async fn progress<C: Conn>(
    c: &mut C,
    sub_job: &SubJobId,
    stage: Stage,
    process: i32,
    execute_by: Millis,
) -> StoreResult<bool> {
    let n = c
        .execute(
            PROGRESS,
            args![
                sub_job.as_str(),
                stage.as_str(),
                i64::from(process),
                execute_by,
            ],
        )
        .await?;
    Ok(n > 0)
}

/// Applies [`FINISH`]: the job of the sub-job, if it was a RUNNING leader.
async fn finish<C: Conn>(
    c: &mut C,
    sub_job: &SubJobId,
    outcome: &Outcome,
    now: Millis,
) -> StoreResult<Option<String>> {
    let (status, stage, process, code, reason) = match outcome {
        Outcome::Success => (
            SubJobStatus::Success,
            Some(Stage::Healthy.as_str()),
            Some(i64::from(Stage::Healthy.process(None))),
            None,
            None,
        ),
        // A failure keeps the stage and progress it reached: that is where it failed.
        Outcome::Failed { code, reason } => (
            SubJobStatus::Failed,
            None,
            None,
            Some(code.as_str()),
            Some(reason.as_str()),
        ),
    };
    let finished = c
        .fetch_optional(
            FINISH,
            args![
                sub_job.as_str(),
                status.as_str(),
                stage,
                process,
                code,
                reason,
                now,
            ],
        )
        .await?;
    finished.map(|row| row.text("job_id")).transpose()
}

pub(crate) async fn record_progress<C: Conn>(
    c: &mut C,
    sub_job: &SubJobId,
    stage: Stage,
    process: i32,
    now: Millis,
    execute_by: Millis,
) -> StoreResult<bool> {
    lock_desktop_of(c, sub_job).await?;
    if !progress(c, sub_job, stage, process, execute_by).await? {
        return Ok(false);
    }
    // The leader's own job does not change status; only followers that start mirroring
    // can move theirs.
    propagate(c, &[sub_job.as_str().to_owned()], Vec::new(), now).await?;
    Ok(true)
}

pub(crate) async fn finish_sub_job<C: Conn>(
    c: &mut C,
    sub_job: &SubJobId,
    outcome: &Outcome,
    now: Millis,
) -> StoreResult<bool> {
    lock_desktop_of(c, sub_job).await?;
    let Some(job) = finish(c, sub_job, outcome, now).await? else {
        return Ok(false);
    };
    propagate(c, &[sub_job.as_str().to_owned()], vec![job], now).await?;
    mark_rolled_back(c, &[sub_job.as_str().to_owned()], now).await?;
    Ok(true)
}

pub(crate) async fn running_sub_job<C: Conn>(
    c: &mut C,
    desktop: &DesktopId,
) -> StoreResult<Option<SubJob>> {
    let sql = sql!(C::DIALECT, |_d| running_leader_sql());
    let row = c.fetch_optional(sql, args![desktop.as_str()]).await?;
    row.as_ref().map(decode::sub_job).transpose()
}

pub(crate) async fn desktops_with_waiting_work<C: Conn>(
    c: &mut C,
    limit: u32,
) -> StoreResult<Vec<DesktopId>> {
    let rows = c.fetch_all(WAITING_WORK, args![i64::from(limit)]).await?;
    rows.iter()
        .map(|r| decode::id(r, "desktop_id", DesktopId::parse))
        .collect()
}

/// The sub-job a report is about.
fn reported(report: &SubJobReport) -> &SubJobId {
    match report {
        SubJobReport::Progress { sub_job, .. } | SubJobReport::Finish { sub_job, .. } => sub_job,
    }
}

/// Applies each report as [`record_progress`] or [`finish_sub_job`] would, in order, then
/// mirrors every leader changed onto its followers and recomputes every job concerned
/// once. On PostgreSQL the desktops of all the sub-jobs named are locked first, in id
/// order, as every writer of sub-jobs does.
pub(crate) async fn apply_reports<C: Conn>(
    c: &mut C,
    reports: &[SubJobReport],
    now: Millis,
) -> StoreResult<Vec<bool>> {
    match reports {
        [] => return Ok(Vec::new()),
        // The common case (the server sends each report as it comes), locked as the
        // single-report methods do. PostgreSQL plans the set form below for a hundred
        // ids, and then reads the whole desktops table even for one.
        [one] => lock_desktop_of(c, reported(one)).await?,
        _ if C::DIALECT.locks_rows() => {
            let ids = strings(reports.iter().map(reported));
            let select = sql!(C::DIALECT, |d| format!(
                "SELECT s.desktop_id AS desktop_id FROM sub_jobs s \
                 WHERE {}",
                d.in_texts("s.id", 1)
            ));
            lock_desktops_where(c, select, args![ids.as_str()]).await?;
        }
        _ => {}
    }
    let mut applied = Vec::with_capacity(reports.len());
    let mut leaders = BTreeSet::new();
    let mut jobs = Vec::new();
    for report in reports {
        let changed = match report {
            SubJobReport::Progress {
                sub_job,
                stage,
                process,
                execute_by,
            } => progress(c, sub_job, *stage, *process, *execute_by).await?,
            SubJobReport::Finish { sub_job, outcome } => {
                match finish(c, sub_job, outcome, now).await? {
                    Some(job) => {
                        jobs.push(job);
                        true
                    }
                    None => false,
                }
            }
        };
        if changed {
            leaders.insert(reported(report).as_str().to_owned());
        }
        applied.push(changed);
    }
    let leaders: Vec<String> = leaders.into_iter().collect();
    propagate(c, &leaders, jobs, now).await?;
    mark_rolled_back(c, &leaders, now).await?;
    Ok(applied)
}

// ---- the fleet ----

pub(crate) async fn create_enrollment_token<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    desktop: Option<&DesktopId>,
    token_sha256: &str,
    now: Millis,
    expires_at: Millis,
) -> StoreResult<()> {
    if let Some(desktop) = desktop {
        let n = count(
            c.fetch_optional(
                "SELECT COUNT(*) AS n FROM desktops WHERE id = $1 AND project_id = $2",
                args![desktop.as_str(), project.as_str()],
            )
            .await?,
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
    }
    c.execute(
        "INSERT INTO enrollment_tokens (token_sha256, project_id, desktop_id, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5)",
        args![
            token_sha256,
            project.as_str(),
            desktop.map(DesktopId::as_str),
            now,
            expires_at
        ],
    )
    .await
    .map_err(|e| conflict(e, || "enrollment token".to_owned()))?;
    Ok(())
}

pub(crate) async fn find_enrollment_token<C: Conn>(
    c: &mut C,
    token_sha256: &str,
    now: Millis,
) -> StoreResult<Option<EnrollmentGrant>> {
    let row = c
        .fetch_optional(
            "SELECT t.project_id, t.desktop_id FROM enrollment_tokens t \
             WHERE t.token_sha256 = $1 AND t.expires_at > $2 AND t.used_at IS NULL \
             AND (t.desktop_id IS NULL OR EXISTS (SELECT 1 FROM desktops d \
             WHERE d.id = t.desktop_id AND d.instance_uid IS NULL))",
            args![token_sha256, now],
        )
        .await?;
    row.as_ref()
        .map(|r| {
            Ok(EnrollmentGrant {
                project: decode::id(r, "project_id", ProjectId::parse)?,
                desktop: decode::opt_id(r, "desktop_id", DesktopId::parse)?,
            })
        })
        .transpose()
}

/// `SET` terms recording a desktop's [`DesktopFacts`]: `$2` host name, `$3` addresses
/// (JSON), `$4` OS, `$5` now, `$6` first address or NULL. The `computer_name` stays.
macro_rules! set_facts {
    () => {
        "hostname = $2, ip_addresses = $3, os_type = $4, last_seen_at = $5, \
         ip_address = COALESCE($6, ip_address)"
    };
}

/// The bound values of [`set_facts!`], after the desktop id.
struct FactsArgs<'a> {
    facts: &'a DesktopFacts,
    ips: String,
    now: Millis,
}

impl<'a> FactsArgs<'a> {
    fn new(facts: &'a DesktopFacts, now: Millis) -> Self {
        Self {
            facts,
            ips: strings(&facts.ip_addresses),
            now,
        }
    }

    fn first_ip(&self) -> Option<&'a str> {
        self.facts.ip_addresses.first().map(String::as_str)
    }

    /// `$1` the desktop, `$2`..`$6` the facts, then `more`.
    fn bind<'b>(&'b self, desktop: &'b str, more: Vec<Arg<'b>>) -> Vec<Arg<'b>> {
        let mut args = args![
            desktop,
            self.facts.hostname.as_str(),
            self.ips.as_str(),
            self.facts.os_type.as_str(),
            self.now,
            self.first_ip(),
        ];
        args.extend(more);
        args
    }
}

async fn identity_where<C: Conn>(
    c: &mut C,
    sql: &str,
    bound: Vec<Arg<'_>>,
) -> StoreResult<Option<DesktopIdentity>> {
    let row = c.fetch_optional(sql, bound).await?;
    row.as_ref().map(decode::identity).transpose()
}

async fn desktop_by_id<C: Conn>(c: &mut C, id: &str) -> StoreResult<Desktop> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {DESKTOP_COLUMNS} FROM desktops d WHERE d.id = $1"
    ));
    let row = c
        .fetch_optional(sql, args![id])
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("desktop {id} vanished mid-transaction")))?;
    decode::desktop(&row)
}

/// Enrolls a desktop; see `Store::enroll_desktop`. A unique key lost to a concurrent
/// enrollment comes back as the driver's error, so that the caller can run it again
/// (it then finds the winner's row) before telling `AlreadyExists`.
pub(crate) async fn enroll_desktop<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    enrollment: &Enrollment,
    now: Millis,
) -> StoreResult<Enrolled> {
    let facts = FactsArgs::new(&enrollment.facts, now);
    let uid = enrollment.instance_uid.as_str();
    let credential = enrollment.credential_sha256.as_str();

    // 1. An enrollment never takes over the desktop that holds the uid, whatever host
    // name it reports: taking over needs that desktop's own credential.
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT d.id AS id FROM desktops d \
         WHERE d.project_id = $1 AND d.instance_uid = $2{}",
        d.lock_suffix()
    ));
    if c.fetch_optional(sql, args![project.as_str(), uid])
        .await?
        .is_some()
    {
        return Err(StoreError::AlreadyExists(format!(
            "instance uid {uid} belongs to a desktop of the project"
        )));
    }

    // 2. The imported desktop a desktop-bound token names, if it never connected. The
    // token is spent first (and only once, even by concurrent enrollments); a claim that
    // then fails rolls the spending back with the transaction.
    if let Some(claim) = &enrollment.claim {
        let spent = c
            .execute(
                "UPDATE enrollment_tokens SET used_at = $3 WHERE token_sha256 = $1 \
                 AND desktop_id = $2 AND used_at IS NULL AND expires_at > $3",
                args![claim.token_sha256.as_str(), claim.desktop.as_str(), now],
            )
            .await?;
        if spent != 1 {
            return Err(StoreError::AlreadyExists(
                "the desktop-bound enrollment token is spent or expired".to_owned(),
            ));
        }
        let claimed = c
            .execute(
                concat!(
                    "UPDATE desktops SET ",
                    set_facts!(),
                    ", instance_uid = $7, credential_sha256 = $8 \
                     WHERE id = $1 AND project_id = $9 AND instance_uid IS NULL"
                ),
                facts.bind(
                    claim.desktop.as_str(),
                    args![uid, credential, project.as_str()],
                ),
            )
            .await?;
        if claimed != 1 {
            return Err(StoreError::AlreadyExists(format!(
                "desktop {} already connected once; it cannot be claimed again",
                claim.desktop
            )));
        }
        return Ok(Enrolled {
            desktop: desktop_by_id(c, claim.desktop.as_str()).await?,
            matched_import: true,
        });
    }

    // 3. A desktop new to the store.
    let desktop = Desktop {
        id: DesktopId::generate(),
        project_id: project.clone(),
        computer_name: enrollment.facts.hostname.clone(),
        ip_address: facts.first_ip().unwrap_or_default().to_owned(),
        os_type: enrollment.facts.os_type.clone(),
        status: "ACTIVE".to_owned(),
        enterprise_project_id: "0".to_owned(),
        tags: Vec::new(),
        created_at: now,
        agent: None,
        connection: deskfleet_core::presence::Connection {
            last_seen_at: Some(now),
            ..Default::default()
        },
    };
    c.execute(
        "INSERT INTO desktops (id, project_id, computer_name, ip_address, os_type, status, \
         enterprise_project_id, tags, created_at, instance_uid, credential_sha256, hostname, \
         ip_addresses, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, 'ACTIVE', '0', '[]', $6, $7, $8, $3, $9, $6)",
        args![
            desktop.id.as_str(),
            project.as_str(),
            desktop.computer_name.as_str(),
            desktop.ip_address.as_str(),
            desktop.os_type.as_str(),
            now,
            uid,
            credential,
            facts.ips.as_str(),
        ],
    )
    .await?;
    Ok(Enrolled {
        desktop,
        matched_import: false,
    })
}

/// The error a caller of [`enroll_desktop`] sees once it stops running it again.
pub(crate) fn enroll_conflict(e: StoreError) -> StoreError {
    conflict(e, || {
        "the instance uid or the credential of another desktop".to_owned()
    })
}

pub(crate) async fn find_desktop_by_credential<C: Conn>(
    c: &mut C,
    credential_sha256: &str,
) -> StoreResult<Option<DesktopIdentity>> {
    let sql = sql!(C::DIALECT, |_d| identity_by_credential_sql());
    identity_where(c, sql, args![credential_sha256]).await
}

pub(crate) async fn find_desktop_by_instance_uid<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    instance_uid: &str,
) -> StoreResult<Option<DesktopIdentity>> {
    let sql = sql!(C::DIALECT, |_d| identity_by_uid_sql());
    identity_where(c, sql, args![project.as_str(), instance_uid]).await
}

fn found(changed: u64) -> StoreResult<()> {
    if changed == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

pub(crate) async fn record_desktop_facts<C: Conn>(
    c: &mut C,
    desktop: &DesktopId,
    facts: &DesktopFacts,
    now: Millis,
) -> StoreResult<()> {
    let facts = FactsArgs::new(facts, now);
    let n = c
        .execute(
            concat!("UPDATE desktops SET ", set_facts!(), " WHERE id = $1"),
            facts.bind(desktop.as_str(), Vec::new()),
        )
        .await?;
    found(n)
}

pub(crate) async fn record_agent_state<C: Conn>(
    c: &mut C,
    desktop: &DesktopId,
    agent: Option<&AgentState>,
) -> StoreResult<()> {
    let n = c
        .execute(
            "UPDATE desktops SET agent_version = $2, agent_healthy = $3, \
             agent_reported_at = $4 WHERE id = $1",
            args![
                desktop.as_str(),
                agent.map(|a| a.version.as_str()),
                agent.map(|a| i64::from(a.healthy)),
                agent.map(|a| a.reported_at),
            ],
        )
        .await?;
    found(n)
}

pub(crate) async fn record_metrics<C: Conn>(
    c: &mut C,
    desktop: &DesktopId,
    json: &str,
    now: Millis,
) -> StoreResult<()> {
    let n = c
        .execute(
            "INSERT INTO desktop_metrics (desktop_id, project_id, json, received_at) \
             SELECT d.id, d.project_id, $2, $3 FROM desktops d WHERE d.id = $1 \
             ON CONFLICT (desktop_id) DO UPDATE SET project_id = excluded.project_id, \
             json = excluded.json, received_at = excluded.received_at",
            args![desktop.as_str(), json, now],
        )
        .await?;
    found(n)
}

pub(crate) async fn get_metrics<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    desktop: &DesktopId,
) -> StoreResult<Option<MetricsRecord>> {
    let row = c
        .fetch_optional(
            "SELECT desktop_id, project_id, json, received_at FROM desktop_metrics \
             WHERE desktop_id = $1 AND project_id = $2",
            args![desktop.as_str(), project.as_str()],
        )
        .await?;
    row.as_ref().map(decode::metrics).transpose()
}

pub(crate) async fn publish_package<C: Conn>(
    c: &mut C,
    meta: &PackageMeta,
    blob: &[u8],
) -> StoreResult<()> {
    let size = i64::try_from(meta.size).map_err(|_| {
        StoreError::Backend(format!("package size {} is too large", meta.size).into())
    })?;
    c.execute(
        "INSERT INTO packages (id, name, version, platform, size, sha256, signature, \
         created_at, blob) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        args![
            meta.id.as_str(),
            meta.name.as_str(),
            meta.version.as_str(),
            meta.platform.as_str(),
            size,
            meta.sha256.as_str(),
            meta.signature.as_str(),
            meta.created_at,
            blob,
        ],
    )
    .await
    .map_err(|e| {
        conflict(e, || {
            format!(
                "package {} {} for {} (or id {})",
                meta.name, meta.version, meta.platform, meta.id
            )
        })
    })?;
    Ok(())
}

pub(crate) async fn latest_package<C: Conn>(
    c: &mut C,
    name: &str,
    platform: &str,
) -> StoreResult<Option<PackageMeta>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {PACKAGE_COLUMNS} FROM packages WHERE name = $1 AND platform = $2 \
         AND withdrawn_at IS NULL ORDER BY created_at DESC, seq DESC LIMIT 1"
    ));
    let row = c.fetch_optional(sql, args![name, platform]).await?;
    row.as_ref().map(decode::package).transpose()
}

pub(crate) async fn find_package_version<C: Conn>(
    c: &mut C,
    name: &str,
    version: &str,
    platform: &str,
) -> StoreResult<Option<PackageMeta>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {PACKAGE_COLUMNS} FROM packages WHERE name = $1 AND version = $2 AND platform = $3"
    ));
    let row = c
        .fetch_optional(sql, args![name, version, platform])
        .await?;
    row.as_ref().map(decode::package).transpose()
}

pub(crate) async fn list_packages<C: Conn>(c: &mut C, name: &str) -> StoreResult<Vec<PackageMeta>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {PACKAGE_COLUMNS} FROM packages WHERE name = $1 \
         ORDER BY platform, created_at DESC, seq DESC"
    ));
    let rows = c.fetch_all(sql, args![name]).await?;
    rows.iter().map(decode::package).collect()
}

/// Withdraws (`at` set) or restores (`None`) every platform's build of a version; the
/// number of packages changed.
pub(crate) async fn set_package_withdrawn<C: Conn>(
    c: &mut C,
    name: &str,
    version: &str,
    at: Option<Millis>,
) -> StoreResult<u64> {
    c.execute(
        "UPDATE packages SET withdrawn_at = $1 WHERE name = $2 AND version = $3",
        args![at, name, version],
    )
    .await
}

pub(crate) async fn get_package<C: Conn>(
    c: &mut C,
    id: &str,
) -> StoreResult<Option<(PackageMeta, Vec<u8>)>> {
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT {PACKAGE_COLUMNS}, blob FROM packages WHERE id = $1"
    ));
    let row = c.fetch_optional(sql, args![id]).await?;
    row.as_ref()
        .map(|r| Ok((decode::package(r)?, r.bytes("blob")?)))
        .transpose()
}

// ---- connection state ----

/// `last_seen_at` moved forward to `$N`, never back (batched writes may arrive late).
macro_rules! seen_at_least {
    ($n:literal) => {
        concat!(
            "last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < ",
            $n,
            " THEN ",
            $n,
            " ELSE last_seen_at END"
        )
    };
}

pub(crate) async fn record_connected<C: Conn>(
    c: &mut C,
    desktop: &DesktopId,
    at: Millis,
) -> StoreResult<()> {
    let n = c
        .execute(
            concat!(
                "UPDATE desktops SET connected_at = $2, disconnected_at = NULL, ",
                seen_at_least!("$2"),
                " WHERE id = $1"
            ),
            args![desktop.as_str(), at],
        )
        .await?;
    found(n)
}

pub(crate) async fn record_disconnected<C: Conn>(
    c: &mut C,
    desktop: &DesktopId,
    connected_at: Millis,
    at: Millis,
    last_seen: Millis,
) -> StoreResult<bool> {
    let n = c
        .execute(
            concat!(
                "UPDATE desktops SET connected_at = NULL, disconnected_at = $3, ",
                seen_at_least!("$4"),
                " WHERE id = $1 AND connected_at = $2"
            ),
            args![desktop.as_str(), connected_at, at, last_seen],
        )
        .await?;
    Ok(n > 0)
}

#[derive(Serialize)]
struct SeenRow<'a> {
    id: &'a str,
    at: Millis,
}

pub(crate) async fn record_last_seen<C: Conn>(
    c: &mut C,
    seen: &[(DesktopId, Millis)],
) -> StoreResult<u64> {
    if seen.is_empty() {
        return Ok(0);
    }
    let rows: Vec<SeenRow<'_>> = seen
        .iter()
        .map(|(id, at)| SeenRow {
            id: id.as_str(),
            at: *at,
        })
        .collect();
    let payload = objects(&rows)?;
    let sql = sql!(C::DIALECT, |d| format!(
        "UPDATE desktops SET last_seen_at = s.at FROM \
         (SELECT j.value ->> 'id' AS id, MAX(CAST(j.value ->> 'at' AS BIGINT)) AS at \
          FROM {} GROUP BY j.value ->> 'id') AS s \
         WHERE desktops.id = s.id \
         AND (desktops.last_seen_at IS NULL OR desktops.last_seen_at < s.at)",
        d.objects(1)
    ));
    c.execute(sql, args![payload.as_str()]).await
}

// ---- planner statistics (PostgreSQL) ----

/// The fewest rows a table must hold before [`refresh_statistics`] analyses it.
const ANALYZE_FLOOR: i64 = 1_000;

/// Analyses the tables of the current schema that hold at least [`ANALYZE_FLOOR`] rows and
/// more than twice as many as when they were last analysed (or were never analysed).
///
/// PostgreSQL keeps, in each pooled connection, the generic plan it made for a prepared
/// statement, and makes it anew only when the statistics of a table it reads change.
/// A plan made while a table was nearly empty (a new database, the first desktops
/// enrolling) can read every row of it once it is large: an update of one sub-job by its
/// id was planned as a scan of every install in flight, and the fleet's installs slowed
/// as the fleet grew. Autovacuum analyses a table only at its next visit (up to a minute
/// later); this does it within the server's interval, as the tables grow.
pub(crate) async fn refresh_statistics<C: Conn>(c: &mut C) -> StoreResult<u64> {
    let rows = c
        .fetch_all(
            "SELECT s.relname AS name FROM pg_stat_user_tables s \
             JOIN pg_class t ON t.oid = s.relid \
             WHERE s.schemaname = current_schema() AND s.n_live_tup >= $1 \
             AND s.n_live_tup > 2 * GREATEST(t.reltuples, 0) ORDER BY s.relname",
            args![ANALYZE_FLOOR],
        )
        .await?;
    let mut analysed = 0;
    for r in &rows {
        let name = r.text("name")?;
        c.execute(
            &format!("ANALYZE \"{}\"", name.replace('"', "\"\"")),
            args![],
        )
        .await?;
        tracing::debug!(table = %name, "planner statistics refreshed");
        analysed += 1;
    }
    Ok(analysed)
}

// ---- health ----

/// Reads the probe row (there may be none yet): the database answers reads.
pub(crate) async fn probe_read<C: Conn>(c: &mut C) -> StoreResult<()> {
    c.fetch_optional("SELECT probed_at FROM store_probe WHERE id = 1", args![])
        .await?;
    Ok(())
}

/// Rewrites the probe row: committed, it proves the database takes durable writes now.
pub(crate) async fn probe_write<C: Conn>(c: &mut C, now: Millis) -> StoreResult<()> {
    c.execute(
        "INSERT INTO store_probe (id, probed_at) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        args![now],
    )
    .await?;
    Ok(())
}

// ---- operations: rollout control, RETRY, ROLLBACK, ListAgentInvocations ----

/// The PostgreSQL advisory lock the timeout sweeps take turns on.
const SWEEP_LOCK: i64 = 0x6465_736b_0008;

/// Why a sub-job not yet started ended when its job's rollout stopped.
pub(crate) fn stop_reason(max_errors: i64, total: i64) -> String {
    format!(
        "rollout stopped: more than {max_errors} of the job's {total} targets failed, which \
         exceeded max_errors; this target was not started (retry it once the cause is fixed)"
    )
}

/// The stopped jobs still in flight (the partial index `jobs_stopped` holds exactly them).
const STOPPED_JOBS: &str = "SELECT j.id AS id, j.max_errors AS max_errors, \
     j.sub_jobs_total AS total FROM jobs j \
     WHERE j.stopped_at IS NOT NULL AND j.status IN ('WAITING', 'RUNNING') ORDER BY j.id";

/// The jobs with held leaders. SQLite reads them off the partial index `sub_jobs_held`,
/// which holds exactly the held leaders (its plan is a scan of that index, which the plan
/// test would take for a table scan, so it is not listed there).
const HELD_JOBS: &str = "SELECT DISTINCT s.job_id AS job_id FROM sub_jobs s \
     WHERE s.status = 'WAITING' AND s.follows IS NULL AND s.deliver_by IS NULL";

/// What one sweep of rollout control will do, computed before the desktops are locked
/// (every statement that then changes a row re-checks its state).
#[derive(Default)]
struct RolloutPlan {
    /// Stopped jobs with sub-jobs not started: (job, max_errors, total).
    stop: Vec<(String, i64, i64)>,
    /// Held leaders to release: (sub-job, delivery deadline).
    release: Vec<(String, Millis)>,
    /// The desktops of all of them.
    desktops: Vec<String>,
}

/// The stopped jobs still in flight, and the held leaders that fit in their job's window.
async fn rollout_plan<C: Conn>(c: &mut C, now: Millis) -> StoreResult<RolloutPlan> {
    let mut plan = RolloutPlan::default();
    let stopped = c.fetch_all(STOPPED_JOBS, args![]).await?;
    for row in &stopped {
        let job = row.text("id")?;
        let rows = c
            .fetch_all(
                "SELECT s.desktop_id AS desktop_id FROM sub_jobs s \
                 WHERE s.job_id = $1 AND s.status = 'WAITING'",
                args![job.as_str()],
            )
            .await?;
        if rows.is_empty() {
            continue;
        }
        plan.desktops.extend(texts(&rows, "desktop_id")?);
        plan.stop.push((
            job,
            row.opt_int("max_errors")?.unwrap_or(0),
            row.int("total")?,
        ));
    }
    let held = c.fetch_all(HELD_JOBS, args![]).await?;
    for row in &held {
        let job = row.text("job_id")?;
        let Some(j) = c
            .fetch_optional(
                "SELECT j.max_concurrency AS max_concurrency, j.delivery_ms AS delivery_ms, \
                 j.stopped_at AS stopped_at, (SELECT COUNT(*) FROM sub_jobs r \
                 WHERE r.job_id = j.id AND (r.status = 'RUNNING' OR (r.status = 'WAITING' \
                 AND r.follows IS NULL AND r.deliver_by IS NOT NULL))) AS busy \
                 FROM jobs j WHERE j.id = $1",
                args![job.as_str()],
            )
            .await?
        else {
            continue;
        };
        if j.opt_int("stopped_at")?.is_some() {
            continue;
        }
        // A job without a window holds nothing of its own; it may inherit a held
        // leadership (a canceled leader's heir): release it all.
        let free = match j.opt_int("max_concurrency")? {
            Some(window) => window - j.int("busy")?,
            None => i64::MAX,
        };
        if free <= 0 {
            continue;
        }
        let deliver_by = now + j.opt_int("delivery_ms")?.unwrap_or(0);
        let rows = c
            .fetch_all(
                "SELECT s.id AS id, s.desktop_id AS desktop_id FROM sub_jobs s \
                 WHERE s.job_id = $1 AND s.status = 'WAITING' AND s.follows IS NULL \
                 AND s.deliver_by IS NULL ORDER BY s.position, s.seq LIMIT $2",
                args![job.as_str(), free.min(100_000)],
            )
            .await?;
        for r in &rows {
            plan.release.push((r.text("id")?, deliver_by));
            plan.desktops.push(r.text("desktop_id")?);
        }
    }
    Ok(plan)
}

/// Ends the not-yet-started sub-jobs of stopped jobs and releases held leaders. Returns
/// the leaders ended and their jobs, for [`propagate`].
async fn apply_rollout<C: Conn>(
    c: &mut C,
    plan: &RolloutPlan,
    now: Millis,
) -> StoreResult<(Vec<String>, Vec<String>)> {
    let mut ended = Vec::new();
    let mut jobs = Vec::new();
    for (job, max_errors, total) in &plan.stop {
        let rows = c
            .fetch_all(
                "UPDATE sub_jobs SET status = 'FAILED', error_code = $2, fail_reason = $3, \
                 end_time = $4, deliver_by = NULL WHERE job_id = $1 AND status = 'WAITING' \
                 RETURNING id, follows",
                args![
                    job.as_str(),
                    deskfleet_proto::error::ROLLOUT_STOPPED_CODE,
                    stop_reason(*max_errors, *total).as_str(),
                    now,
                ],
            )
            .await?;
        for r in &rows {
            if r.opt_text("follows")?.is_none() {
                ended.push(r.text("id")?);
            }
        }
        if !rows.is_empty() {
            jobs.push(job.clone());
        }
    }
    for (id, deliver_by) in &plan.release {
        c.execute(
            "UPDATE sub_jobs SET deliver_by = $2 WHERE id = $1 AND status = 'WAITING' \
             AND follows IS NULL AND deliver_by IS NULL",
            args![id.as_str(), *deliver_by],
        )
        .await?;
    }
    Ok((ended, jobs))
}

/// Marks as rolled back the sub-jobs undone by the ROLLBACKs among `leaders` (and their
/// followers) that just succeeded.
async fn mark_rolled_back<C: Conn>(c: &mut C, leaders: &[String], now: Millis) -> StoreResult<()> {
    if leaders.is_empty() {
        return Ok(());
    }
    // Almost every report is about other work: a lookup by key tells, without reading
    // the table.
    let sql = sql!(C::DIALECT, |d| format!(
        "SELECT COUNT(*) AS n FROM sub_jobs s WHERE {} \
         AND s.operation = 'ROLLBACK'",
        d.in_texts("s.id", 1)
    ));
    let rollbacks = count(
        c.fetch_optional(sql, args![strings(leaders).as_str()])
            .await?,
    )?;
    if rollbacks == 0 {
        return Ok(());
    }
    let sql = sql!(C::DIALECT, |d| format!(
        "UPDATE sub_jobs SET rolled_back_at = $2 WHERE rolled_back_at IS NULL AND id IN \
         (SELECT r.rollback_of FROM sub_jobs r WHERE r.rollback_of IS NOT NULL \
         AND r.status = 'SUCCESS' AND ({} OR {}))",
        d.in_texts("r.id", 1),
        d.in_texts("r.follows", 1)
    ));
    c.execute(sql, args![strings(leaders).as_str(), now])
        .await?;
    Ok(())
}

/// The sub-jobs of `project` among `ids`, in no particular order.
pub(crate) async fn get_sub_jobs<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    ids: &[SubJobId],
) -> StoreResult<Vec<SubJob>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = sql!(C::DIALECT, |d| format!(
        "{SUB_JOB_SELECT} WHERE {} AND s.project_id = $2",
        d.in_texts("s.id", 1)
    ));
    let rows = c
        .fetch_all(sql, args![strings(ids).as_str(), project.as_str()])
        .await?;
    rows.iter().map(decode::sub_job).collect()
}

/// Puts FAILED sub-jobs of `project` back to WAITING, one by one (CES RETRY): same id, a
/// new attempt, following the desktop's work in flight if it is the same operation and
/// version, refused if it is not.
pub(crate) async fn retry_sub_jobs<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    ids: &[SubJobId],
    at: Deadlines,
) -> StoreResult<Vec<deskfleet_core::model::Rework>> {
    use deskfleet_core::model::Rework;
    let found = get_sub_jobs(c, project, ids).await?;
    lock_desktops(c, found.iter().map(|s| s.desktop_id.as_str().to_owned())).await?;
    // Read again under the locks: the state may have moved meanwhile.
    let found = get_sub_jobs(c, project, ids).await?;
    let by_id: HashMap<&str, &SubJob> = found.iter().map(|s| (s.id.as_str(), s)).collect();
    let desktops: BTreeSet<&str> = found.iter().map(|s| s.desktop_id.as_str()).collect();
    let mut leaders = in_flight_leader_work(c, &strings(&desktops)).await?;
    let mut answers = Vec::with_capacity(ids.len());
    let mut jobs = BTreeSet::new();
    for id in ids {
        let Some(sub) = by_id.get(id.as_str()) else {
            answers.push(Rework::NotFound);
            continue;
        };
        let canceled = sub.error_code.as_deref() == Some(TaskErrorCode::Canceled.code());
        if sub.status != SubJobStatus::Failed || sub.rolled_back_at.is_some() || canceled {
            let state = if canceled {
                "CANCELED".to_owned()
            } else {
                sub.status.to_string()
            };
            answers.push(Rework::NotAllowed(format!(
                "invocation {id} is {state}; only FAILED or TIMEOUT invocations can be retried"
            )));
            continue;
        }
        let follows = match leaders.get(sub.desktop_id.as_str()) {
            Some(l) if l.operation != sub.operation || l.target_version != sub.target_version => {
                answers.push(Rework::Busy(SubJobId::parse(l.id.clone()).map_err(
                    |e| StoreError::Corrupt(format!("leader id {}: {e}", l.id)),
                )?));
                continue;
            }
            Some(l) => Some(l.id.clone()),
            None => {
                leaders.insert(
                    sub.desktop_id.as_str().to_owned(),
                    LeaderWork {
                        id: id.as_str().to_owned(),
                        operation: sub.operation,
                        target_version: sub.target_version.clone(),
                    },
                );
                None
            }
        };
        c.execute(
            "UPDATE sub_jobs SET status = 'WAITING', stage = 'queued', process = 0, \
             error_code = NULL, fail_reason = NULL, begin_time = NULL, end_time = NULL, \
             execute_by = NULL, deliver_by = $2, follows = $3, attempts = attempts + 1 \
             WHERE id = $1 AND status = 'FAILED'",
            args![
                id.as_str(),
                follows.is_none().then_some(at.deliver_by),
                follows.as_deref(),
            ],
        )
        .await?;
        jobs.insert(sub.job_id.as_str().to_owned());
        answers.push(Rework::Retried);
    }
    // A retried job may have been stopped by its rollout: it runs again.
    if !jobs.is_empty() {
        let sql = sql!(C::DIALECT, |d| format!(
            "UPDATE jobs SET stopped_at = NULL WHERE {}",
            d.in_texts("id", 1)
        ));
        c.execute(sql, args![strings(&jobs).as_str()]).await?;
    }
    recompute_jobs(c, jobs, at.now).await?;
    Ok(answers)
}

/// ListAgentInvocations' filter over `s`, bound `$1` to `$5`.
const INVOCATION_WHERE: &str = "s.project_id = $1 AND s.created_at >= $2 \
     AND ($3 IS NULL OR s.desktop_id = $3) AND ($4 IS NULL OR s.id = $4) \
     AND ($5 IS NULL OR s.operation = $5)";

pub(crate) async fn list_invocations<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    filter: &deskfleet_core::model::InvocationFilter,
    page: Page,
) -> StoreResult<(i64, Vec<SubJob>)> {
    let bound = args![
        project.as_str(),
        filter.created_since,
        filter.desktop.as_ref().map(DesktopId::as_str),
        filter.sub_job.as_ref().map(SubJobId::as_str),
        filter.operation.map(Operation::as_str),
    ];
    let sql = sql!(C::DIALECT, |_d| format!(
        "SELECT COUNT(*) AS n FROM sub_jobs s WHERE {INVOCATION_WHERE}"
    ));
    let total = count(c.fetch_optional(sql, bound.clone()).await?)?;
    let sql = sql!(C::DIALECT, |_d| format!(
        "{SUB_JOB_SELECT} WHERE {INVOCATION_WHERE} ORDER BY s.created_at DESC, s.seq DESC \
         LIMIT $6 OFFSET $7"
    ));
    let rows = c.fetch_all(sql, paged(bound, page)).await?;
    let sub_jobs = rows
        .iter()
        .map(decode::sub_job)
        .collect::<StoreResult<_>>()?;
    Ok((total, sub_jobs))
}

pub(crate) async fn retarget_failed_installs<C: Conn>(
    c: &mut C,
    project: &ProjectId,
    job: &JobId,
    version: &str,
) -> StoreResult<u64> {
    job_in_project(c, project, job).await?;
    // FAILED sub-jobs are not claimed by anyone: no desktop lock is needed to change them.
    c.execute(
        "UPDATE sub_jobs SET target_version = $2 WHERE job_id = $1 AND status = 'FAILED' \
         AND operation = 'INSTALL'",
        args![job.as_str(), version],
    )
    .await
}
