//! Rows back into domain records, and the column lists that go with them. Every value is
//! parsed, never trusted: a row that does not fit is [`StoreError::Corrupt`].

use crate::conn::DbRow;
use deskfleet_core::fleet::{DesktopIdentity, MetricsRecord, PackageMeta};
use deskfleet_core::ids::{DesktopId, DomainId, IdError, JobId, ProjectId, SubJobId, UserId};
use deskfleet_core::model::{
    AccessKey, AgentState, AuthFailures, Desktop, Domain, Job, Project, Role, SubJob, Tag,
    TokenRecord, User,
};
use deskfleet_core::presence::Connection;
use deskfleet_core::store::{StoreError, StoreResult};
use std::str::FromStr;

/// Columns of [`project`]: a project joined with its domain `dm`.
pub(crate) const PROJECT_COLUMNS: &str =
    "p.id AS id, p.name AS name, dm.id AS domain_id, dm.name AS domain_name";

/// Columns of [`user`]: a user joined with its domain `dm`.
pub(crate) const USER_COLUMNS: &str = "u.id AS id, u.name AS name, u.password_hash AS password_hash, \
     u.disabled AS disabled, dm.id AS domain_id, dm.name AS domain_name";

/// Columns of [`desktop`], from a desktop `d`.
pub(crate) const DESKTOP_COLUMNS: &str = "d.id AS id, d.project_id AS project_id, \
     d.computer_name AS computer_name, d.ip_address AS ip_address, d.os_type AS os_type, \
     d.status AS status, d.enterprise_project_id AS enterprise_project_id, d.tags AS tags, \
     d.created_at AS created_at, d.agent_version AS agent_version, \
     d.agent_healthy AS agent_healthy, d.agent_reported_at AS agent_reported_at, \
     d.connected_at AS connected_at, d.disconnected_at AS disconnected_at, \
     d.last_seen_at AS last_seen_at";

/// Columns of [`identity`], from a desktop `d`: [`DESKTOP_COLUMNS`] and these.
pub(crate) const IDENTITY_COLUMNS: &str = "d.instance_uid AS instance_uid, d.hostname AS hostname";

/// Columns of [`package`], from `packages` (never the archive).
pub(crate) const PACKAGE_COLUMNS: &str =
    "id, name, version, platform, size, sha256, signature, created_at, withdrawn_at";

/// Columns of [`job`].
pub(crate) const JOB_COLUMNS: &str = "id, project_id, job_type, status, created_at, begin_time, \
     end_time, error_code, fail_reason, sub_jobs_total, operation, max_concurrency, max_errors";

/// `SELECT` of [`sub_job`]: a sub-job `s` with its job `j` and desktop `d`.
pub(crate) const SUB_JOB_SELECT: &str = "SELECT s.id AS id, s.job_id AS job_id, \
     j.job_type AS job_type, s.project_id AS project_id, s.desktop_id AS desktop_id, \
     d.computer_name AS desktop_name, d.ip_address AS ip_address, s.status AS status, \
     s.stage AS stage, s.process AS process, s.error_code AS error_code, \
     s.fail_reason AS fail_reason, s.created_at AS created_at, s.begin_time AS begin_time, \
     s.end_time AS end_time, s.follows AS follows, s.attempts AS attempts, \
     s.operation AS operation, s.target_version AS target_version, \
     s.current_version AS current_version, s.rollback_of AS rollback_of, \
     s.rolled_back_at AS rolled_back_at \
     FROM sub_jobs s JOIN jobs j ON j.id = s.job_id JOIN desktops d ON d.id = s.desktop_id";

fn corrupt(col: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {col}: {why}"))
}

/// An identifier column, through its parser.
pub(crate) fn id<R: DbRow, T>(
    row: &R,
    col: &str,
    parse: fn(String) -> Result<T, IdError>,
) -> StoreResult<T> {
    parse(row.text(col)?).map_err(|e| corrupt(col, e))
}

pub(crate) fn opt_id<R: DbRow, T>(
    row: &R,
    col: &str,
    parse: fn(String) -> Result<T, IdError>,
) -> StoreResult<Option<T>> {
    row.opt_text(col)?
        .map(|v| parse(v).map_err(|e| corrupt(col, e)))
        .transpose()
}

/// A column holding one of the wire enums (`SubJobStatus`, `Stage`, `Role`...).
pub(crate) fn parsed<R: DbRow, T: FromStr<Err = String>>(row: &R, col: &str) -> StoreResult<T> {
    row.text(col)?.parse().map_err(|e: String| corrupt(col, e))
}

/// An integer column that must fit a narrower type (`process`, `attempts`, counts).
pub(crate) fn narrow<R: DbRow, T: TryFrom<i64>>(row: &R, col: &str) -> StoreResult<T> {
    let v = row.int(col)?;
    T::try_from(v).map_err(|_| corrupt(col, format!("{v} is out of range")))
}

pub(crate) fn domain<R: DbRow>(row: &R) -> StoreResult<Domain> {
    Ok(Domain {
        id: id(row, "id", DomainId::parse)?,
        name: row.text("name")?,
    })
}

fn domain_of<R: DbRow>(row: &R) -> StoreResult<Domain> {
    Ok(Domain {
        id: id(row, "domain_id", DomainId::parse)?,
        name: row.text("domain_name")?,
    })
}

pub(crate) fn project<R: DbRow>(row: &R) -> StoreResult<Project> {
    Ok(Project {
        id: id(row, "id", ProjectId::parse)?,
        name: row.text("name")?,
        domain: domain_of(row)?,
    })
}

pub(crate) fn user<R: DbRow>(row: &R) -> StoreResult<User> {
    Ok(User {
        id: id(row, "id", UserId::parse)?,
        name: row.text("name")?,
        domain: domain_of(row)?,
        password_hash: row.text("password_hash")?,
        disabled: row.int("disabled")? != 0,
    })
}

pub(crate) fn auth_failures<R: DbRow>(row: &R) -> StoreResult<AuthFailures> {
    Ok(AuthFailures {
        failures: narrow(row, "failures")?,
        locked_until: row.opt_int("locked_until")?,
    })
}

pub(crate) fn role<R: DbRow>(row: &R) -> StoreResult<Role> {
    parsed(row, "role")
}

pub(crate) fn access_key<R: DbRow>(row: &R) -> StoreResult<AccessKey> {
    Ok(AccessKey {
        access_key: row.text("access_key")?,
        secret_key: row.text("secret_key")?,
        user_id: id(row, "user_id", UserId::parse)?,
        project_id: id(row, "project_id", ProjectId::parse)?,
        created_at: row.int("created_at")?,
    })
}

pub(crate) fn token<R: DbRow>(row: &R) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        user_id: id(row, "user_id", UserId::parse)?,
        project_id: id(row, "project_id", ProjectId::parse)?,
        issued_at: row.int("issued_at")?,
        expires_at: row.int("expires_at")?,
    })
}

pub(crate) fn desktop<R: DbRow>(row: &R) -> StoreResult<Desktop> {
    let tags: Vec<Tag> =
        serde_json::from_str(&row.text("tags")?).map_err(|e| corrupt("tags", e))?;
    let agent = match row.opt_text("agent_version")? {
        None => None,
        Some(version) => Some(AgentState {
            version,
            healthy: row
                .opt_int("agent_healthy")?
                .ok_or_else(|| corrupt("agent_healthy", "missing for a reported agent"))?
                != 0,
            reported_at: row
                .opt_int("agent_reported_at")?
                .ok_or_else(|| corrupt("agent_reported_at", "missing for a reported agent"))?,
        }),
    };
    Ok(Desktop {
        id: id(row, "id", DesktopId::parse)?,
        project_id: id(row, "project_id", ProjectId::parse)?,
        computer_name: row.text("computer_name")?,
        ip_address: row.text("ip_address")?,
        os_type: row.text("os_type")?,
        status: row.text("status")?,
        enterprise_project_id: row.text("enterprise_project_id")?,
        tags,
        created_at: row.int("created_at")?,
        agent,
        connection: Connection {
            connected_at: row.opt_int("connected_at")?,
            disconnected_at: row.opt_int("disconnected_at")?,
            last_seen_at: row.opt_int("last_seen_at")?,
        },
    })
}

pub(crate) fn job<R: DbRow>(row: &R) -> StoreResult<Job> {
    Ok(Job {
        id: id(row, "id", JobId::parse)?,
        project_id: id(row, "project_id", ProjectId::parse)?,
        job_type: row.text("job_type")?,
        status: parsed(row, "status")?,
        created_at: row.int("created_at")?,
        begin_time: row.opt_int("begin_time")?,
        end_time: row.opt_int("end_time")?,
        error_code: row.opt_text("error_code")?,
        fail_reason: row.opt_text("fail_reason")?,
        sub_jobs_total: narrow(row, "sub_jobs_total")?,
        operation: parsed(row, "operation")?,
        limits: deskfleet_core::job::RolloutLimits {
            max_concurrency: opt_narrow(row, "max_concurrency")?,
            max_errors: opt_narrow(row, "max_errors")?,
        },
    })
}

pub(crate) fn sub_job<R: DbRow>(row: &R) -> StoreResult<SubJob> {
    Ok(SubJob {
        id: id(row, "id", SubJobId::parse)?,
        job_id: id(row, "job_id", JobId::parse)?,
        job_type: row.text("job_type")?,
        project_id: id(row, "project_id", ProjectId::parse)?,
        desktop_id: id(row, "desktop_id", DesktopId::parse)?,
        desktop_name: row.text("desktop_name")?,
        ip_address: row.text("ip_address")?,
        status: parsed(row, "status")?,
        stage: parsed(row, "stage")?,
        process: narrow(row, "process")?,
        error_code: row.opt_text("error_code")?,
        fail_reason: row.opt_text("fail_reason")?,
        created_at: row.int("created_at")?,
        begin_time: row.opt_int("begin_time")?,
        end_time: row.opt_int("end_time")?,
        follows: opt_id(row, "follows", SubJobId::parse)?,
        attempts: narrow(row, "attempts")?,
        operation: parsed(row, "operation")?,
        target_version: row.opt_text("target_version")?,
        current_version: row.opt_text("current_version")?,
        rollback_of: opt_id(row, "rollback_of", SubJobId::parse)?,
        rolled_back_at: row.opt_int("rolled_back_at")?,
    })
}

pub(crate) fn identity<R: DbRow>(row: &R) -> StoreResult<DesktopIdentity> {
    Ok(DesktopIdentity {
        desktop: desktop(row)?,
        instance_uid: row.opt_text("instance_uid")?,
        hostname: row.opt_text("hostname")?,
    })
}

pub(crate) fn package<R: DbRow>(row: &R) -> StoreResult<PackageMeta> {
    Ok(PackageMeta {
        id: row.text("id")?,
        name: row.text("name")?,
        version: row.text("version")?,
        platform: row.text("platform")?,
        size: narrow(row, "size")?,
        sha256: row.text("sha256")?,
        signature: row.text("signature")?,
        created_at: row.int("created_at")?,
        withdrawn_at: row.opt_int("withdrawn_at")?,
    })
}

pub(crate) fn metrics<R: DbRow>(row: &R) -> StoreResult<MetricsRecord> {
    Ok(MetricsRecord {
        desktop_id: id(row, "desktop_id", DesktopId::parse)?,
        project_id: id(row, "project_id", ProjectId::parse)?,
        json: row.text("json")?,
        received_at: row.int("received_at")?,
    })
}

/// An optional integer column narrowed to `u32` (rollout limits).
pub(crate) fn opt_narrow<R: DbRow>(row: &R, col: &str) -> StoreResult<Option<u32>> {
    row.opt_int(col)?
        .map(|v| u32::try_from(v).map_err(|e| corrupt(col, e)))
        .transpose()
}
