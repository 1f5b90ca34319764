//! Records as the store hands them out. Times are [`Millis`]; rendering them for the wire
//! is the server's job.

use crate::clock::Millis;
use crate::ids::{DesktopId, DomainId, JobId, ProjectId, SubJobId, UserId};
use crate::job::{JobStatus, Operation, RolloutLimits, Stage, SubJobStatus};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub id: DomainId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub domain: Domain,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub domain: Domain,
    /// PHC string (argon2id); never the password.
    pub password_hash: String,
    /// A disabled user can neither log in nor use its keys and tokens.
    pub disabled: bool,
}

/// A role on one project. `admin` grants every action, `readonly` the reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Readonly,
    /// Reads the audit trail (ListTraces, ListTrackers) and nothing else.
    Auditor,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Readonly => "readonly",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "readonly" => Ok(Role::Readonly),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!(
                "{other:?} is not a role; use admin, readonly or auditor"
            )),
        }
    }
}

/// An AK/SK pair, bound to one user and one project.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key: String,
    /// Needed in clear to verify HMAC signatures; never logged (see the `Debug` impl).
    pub secret_key: String,
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub created_at: Millis,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key", &self.access_key)
            .field("secret_key", &"[redacted]")
            .field("user_id", &self.user_id)
            .field("project_id", &self.project_id)
            .finish()
    }
}

/// Whose failed authentications are counted: an access key (bad signatures) or a user
/// (wrong passwords).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AuthSubject {
    AccessKey(String),
    User(UserId),
}

impl AuthSubject {
    /// The stored form: `ak:<access key>` or `user:<user id>`.
    pub fn key(&self) -> String {
        match self {
            AuthSubject::AccessKey(ak) => format!("ak:{ak}"),
            AuthSubject::User(id) => format!("user:{id}"),
        }
    }
}

/// Consecutive failed authentications of one subject, and the lock they led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthFailures {
    pub failures: u32,
    /// Set once `failures` reached the threshold; may lie in the past.
    pub locked_until: Option<Millis>,
}

impl AuthFailures {
    /// The end of a lock still in force at `now`.
    pub fn locked_at(&self, now: Millis) -> Option<Millis> {
        self.locked_until.filter(|until| *until > now)
    }
}

/// When failures lock a subject: after `failures` of them, for `lock_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub failures: u32,
    pub lock_ms: Millis,
}

/// An issued token, stored under the SHA-256 of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub issued_at: Millis,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// A desktop to register (`admin desktops import`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDesktop {
    pub computer_name: String,
    pub ip_address: String,
    pub os_type: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub enterprise_project_id: Option<String>,
}

/// What a desktop reports of its monitoring agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    pub version: String,
    pub healthy: bool,
    pub reported_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desktop {
    pub id: DesktopId,
    pub project_id: ProjectId,
    pub computer_name: String,
    pub ip_address: String,
    pub os_type: String,
    /// Run state: ACTIVE, SHUTOFF, ERROR, HIBERNATED.
    pub status: String,
    pub enterprise_project_id: String,
    pub tags: Vec<Tag>,
    pub created_at: Millis,
    pub agent: Option<AgentState>,
    /// Its guest's connection; see [`crate::presence`].
    pub connection: crate::presence::Connection,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub project_id: ProjectId,
    pub job_type: String,
    pub status: JobStatus,
    pub created_at: Millis,
    pub begin_time: Option<Millis>,
    pub end_time: Option<Millis>,
    pub error_code: Option<String>,
    pub fail_reason: Option<String>,
    pub sub_jobs_total: u32,
    /// What the job does to each desktop's agent.
    pub operation: Operation,
    /// Its rollout limits, as counts of its targets.
    pub limits: RolloutLimits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubJob {
    pub id: SubJobId,
    pub job_id: JobId,
    pub job_type: String,
    pub project_id: ProjectId,
    pub desktop_id: DesktopId,
    pub desktop_name: String,
    pub ip_address: String,
    pub status: SubJobStatus,
    pub stage: Stage,
    pub process: i32,
    pub error_code: Option<String>,
    pub fail_reason: Option<String>,
    pub created_at: Millis,
    pub begin_time: Option<Millis>,
    pub end_time: Option<Millis>,
    /// The in-flight sub-job of the same desktop that this one mirrors, if any.
    pub follows: Option<SubJobId>,
    pub attempts: u32,
    /// What the sub-job does to the desktop's agent.
    pub operation: Operation,
    /// The version it puts in place (none for UNINSTALL; none for work created before
    /// versions were recorded, which takes the newest published version).
    pub target_version: Option<String>,
    /// The agent version the desktop had when the sub-job was created.
    pub current_version: Option<String>,
    /// For a ROLLBACK: the sub-job whose change it undoes.
    pub rollback_of: Option<SubJobId>,
    /// When a ROLLBACK undid this sub-job's change.
    pub rolled_back_at: Option<Millis>,
}

/// A desktop with the state of its agent and of its latest install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCondition {
    pub desktop: Desktop,
    /// The in-flight install's stage; `None` when idle.
    pub in_flight: Option<Stage>,
    /// The in-flight install's `process`, else the last finished one's; `None` if never.
    pub process: Option<i32>,
}

/// `limit` / `offset` after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesktopFilter {
    pub desktop_ids: Vec<DesktopId>,
    /// Substring match.
    pub computer_name: Option<String>,
    pub ip_address: Option<String>,
    pub status: Option<String>,
    pub enterprise_project_id: Option<String>,
    /// With `Some(t)`, `status` matches the run state as the desktop's connection tells
    /// it (see [`crate::presence`]): a desktop that connected once and was not seen since
    /// `t` (or is disconnected) is `SHUTOFF`. With `None`, the stored status.
    pub seen_after: Option<Millis>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    pub desktop: DesktopFilter,
    pub is_installed: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubJobFilter {
    pub statuses: Vec<SubJobStatus>,
    pub job_id: Option<JobId>,
    pub job_type: Option<String>,
}

/// Which finished sub-jobs to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubJobSelector {
    Ids(Vec<SubJobId>),
    Status(SubJobStatus),
}

/// The outcome a desktop reports for the sub-job it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed { code: String, reason: String },
}

// ---- operations ----

/// How a new job's targets are treated, beyond the desktops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationSpec {
    pub operation: Operation,
    /// The version every target gets (`None`: none recorded, for UNINSTALL).
    pub target_version: Option<String>,
    /// With no `target_version`: every target gets the newest published, not withdrawn,
    /// version of this package, read in the transaction that writes the job (so no
    /// read before it, and no withdrawal can fall between the two). `None` recorded when
    /// none is published.
    pub newest_of: Option<&'static str>,
    pub limits: RolloutLimits,
    /// When a target already has work in flight of another operation or version: `false`
    /// follows it (Workspace installs), `true` refuses that target ([`TargetResult::Busy`]).
    pub exclusive: bool,
}

impl OperationSpec {
    /// A Workspace install as it always was: follows what is in flight, no limits.
    pub fn install(target_version: Option<String>) -> Self {
        Self {
            operation: Operation::Install,
            target_version,
            newest_of: None,
            limits: RolloutLimits::default(),
            exclusive: false,
        }
    }
}

/// One target of a job of operations: a desktop, and for a ROLLBACK the sub-job undone
/// and the version to go back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationTarget {
    pub desktop: DesktopId,
    /// Overrides [`OperationSpec::target_version`] for this target (ROLLBACK).
    pub target_version: Option<String>,
    pub rollback_of: Option<SubJobId>,
}

/// What became of one target of a job of operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetResult {
    /// A sub-job (the invocation) was created.
    Created(SubJobId),
    /// No such desktop in the project.
    UnknownDesktop,
    /// The desktop has work of another operation or version in flight.
    Busy {
        sub_job: SubJobId,
        operation: Operation,
        target_version: Option<String>,
    },
}

/// What may be done again with an existing sub-job (CES RETRY or ROLLBACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rework {
    /// Put back to WAITING, same id.
    Retried,
    /// No such sub-job in the project.
    NotFound,
    /// Not in a state that allows it; the reason says why, for the person who reads it.
    NotAllowed(String),
    /// The desktop has other work in flight.
    Busy(SubJobId),
}

/// ListAgentInvocations' filters over sub-jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationFilter {
    pub desktop: Option<DesktopId>,
    pub sub_job: Option<SubJobId>,
    pub operation: Option<Operation>,
    /// Only sub-jobs created at or after this time.
    pub created_since: Millis,
}
