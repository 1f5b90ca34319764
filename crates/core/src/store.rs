//! The one storage interface. Each method is one transaction: it either happens whole or
//! not at all, so a crash never leaves a half-written job behind.

use crate::clock::Millis;
use crate::fleet::{
    DesktopFacts, DesktopIdentity, Enrolled, Enrollment, MetricsRecord, PackageMeta, SubJobReport,
};
use crate::ids::{DesktopId, DomainId, JobId, ProjectId, SubJobId, UserId};
use crate::job::Stage;
use crate::model::{
    AccessKey, AgentCondition, AgentFilter, AgentState, Desktop, DesktopFilter, Domain, Job,
    NewDesktop, Outcome, Page, Project, Role, SubJob, SubJobFilter, SubJobSelector, TokenRecord,
    User,
};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Some requested desktops do not exist in the project.
    #[error("unknown desktops: {0:?}")]
    UnknownDesktops(Vec<String>),
    #[error("invalid stored data: {0}")]
    Corrupt(String),
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The storage cannot serve the call now (I/O error, disk full, read-only database,
    /// database unreachable or its pool exhausted). Nothing of the call was kept; the same
    /// call may succeed once the storage is repaired, without restarting anything.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether this is [`StoreError::Unavailable`]: the storage, not the call, is at fault.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What one sweep of the timeout checker changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// WAITING sub-jobs that were never picked up before their delivery deadline.
    pub undelivered: u64,
    /// RUNNING sub-jobs silent past their execution deadline.
    pub silent: u64,
    /// Followers that took the result of the sub-job they followed.
    pub followers: u64,
}

impl Expired {
    pub fn total(&self) -> u64 {
        self.undelivered + self.silent + self.followers
    }
}

/// Deadlines for new or retried work, computed by the caller from its clock and settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub now: Millis,
    pub deliver_by: Millis,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs.
    fn backend(&self) -> &'static str;

    /// Checks that the store can read AND durably write now (a tiny write to a table of
    /// its own). Readiness checks call it; it is cheap but not free, so callers should not
    /// call it more than about once a second.
    async fn probe(&self) -> StoreResult<()>;

    // ---- identity ----

    async fn create_domain(&self, name: &str) -> StoreResult<Domain>;
    async fn find_domain_by_name(&self, name: &str) -> StoreResult<Option<Domain>>;
    async fn create_project(&self, domain: &DomainId, name: &str) -> StoreResult<Project>;
    async fn find_project(&self, id: &ProjectId) -> StoreResult<Option<Project>>;
    /// Projects, optionally of one domain and one name.
    async fn list_projects(
        &self,
        domain: Option<&DomainId>,
        name: Option<&str>,
    ) -> StoreResult<Vec<Project>>;
    async fn create_user(
        &self,
        domain: &DomainId,
        name: &str,
        password_hash: &str,
    ) -> StoreResult<User>;
    async fn find_user(&self, domain_name: &str, user_name: &str) -> StoreResult<Option<User>>;
    async fn find_user_by_id(&self, id: &UserId) -> StoreResult<Option<User>>;
    async fn grant_role(&self, user: &UserId, project: &ProjectId, role: Role) -> StoreResult<()>;
    async fn find_role(&self, user: &UserId, project: &ProjectId) -> StoreResult<Option<Role>>;
    async fn create_access_key(&self, key: &AccessKey) -> StoreResult<()>;
    async fn find_access_key(&self, access_key: &str) -> StoreResult<Option<AccessKey>>;
    async fn insert_token(&self, token_sha256: &str, token: &TokenRecord) -> StoreResult<()>;
    async fn find_token(&self, token_sha256: &str) -> StoreResult<Option<TokenRecord>>;

    // ---- desktops ----

    async fn import_desktops(
        &self,
        project: &ProjectId,
        desktops: &[NewDesktop],
        now: Millis,
    ) -> StoreResult<Vec<Desktop>>;
    async fn list_desktops(
        &self,
        project: &ProjectId,
        filter: &DesktopFilter,
        page: Page,
    ) -> StoreResult<(i64, Vec<Desktop>)>;
    async fn get_desktop(
        &self,
        project: &ProjectId,
        id: &DesktopId,
    ) -> StoreResult<Option<Desktop>>;
    async fn list_agent_conditions(
        &self,
        project: &ProjectId,
        filter: &AgentFilter,
        page: Page,
    ) -> StoreResult<(i64, Vec<AgentCondition>)>;

    // ---- jobs ----

    /// Creates the job and one sub-job per desktop (ids already de-duplicated), or fails
    /// with [`StoreError::UnknownDesktops`] and writes nothing. A desktop with an install
    /// in flight gets a sub-job that follows that install.
    async fn create_install_job(
        &self,
        project: &ProjectId,
        desktops: &[DesktopId],
        job_type: &str,
        at: Deadlines,
    ) -> StoreResult<Job>;
    async fn get_job(
        &self,
        project: &ProjectId,
        id: &JobId,
    ) -> StoreResult<Option<(Job, Vec<SubJob>)>>;
    async fn list_sub_jobs(
        &self,
        project: &ProjectId,
        filter: &SubJobFilter,
        page: Page,
    ) -> StoreResult<(i64, Vec<SubJob>)>;
    /// Puts the job's FAILED sub-jobs back to WAITING; returns how many.
    async fn retry_job(&self, project: &ProjectId, id: &JobId, at: Deadlines) -> StoreResult<u64>;
    /// Ends the job's WAITING sub-jobs FAILED with the cancel code; returns how many.
    async fn cancel_job(&self, project: &ProjectId, id: &JobId, now: Millis) -> StoreResult<u64>;
    /// Deletes finished sub-job records; returns how many.
    async fn delete_sub_jobs(
        &self,
        project: &ProjectId,
        selector: &SubJobSelector,
    ) -> StoreResult<u64>;

    // ---- the engine ----

    /// Fails every sub-job past its delivery or execution deadline, hands results to
    /// followers, and brings the jobs concerned up to date.
    async fn expire_overdue(&self, now: Millis) -> StoreResult<Expired>;
    /// Takes the desktop's oldest WAITING sub-job (not a follower) and marks it RUNNING,
    /// delivered, with an execution deadline.
    async fn claim_desktop_work(
        &self,
        desktop: &DesktopId,
        now: Millis,
        execute_by: Millis,
    ) -> StoreResult<Option<SubJob>>;
    /// Records progress of a RUNNING sub-job and pushes its execution deadline out.
    /// Returns false if the sub-job is no longer RUNNING (a late report is dropped).
    async fn record_progress(
        &self,
        sub_job: &SubJobId,
        stage: Stage,
        process: i32,
        now: Millis,
        execute_by: Millis,
    ) -> StoreResult<bool>;
    /// Ends a RUNNING sub-job and its followers. Returns false if it was not RUNNING, so a
    /// result reported twice is recorded once.
    async fn finish_sub_job(
        &self,
        sub_job: &SubJobId,
        outcome: &Outcome,
        now: Millis,
    ) -> StoreResult<bool>;

    // ---- the fleet ----

    /// Stores an enrollment token of `project` under the SHA-256 of its value.
    /// `NotFound` if the project does not exist, `AlreadyExists` for a hash already stored.
    async fn create_enrollment_token(
        &self,
        project: &ProjectId,
        token_sha256: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()>;
    /// The project of an unexpired enrollment token.
    async fn find_enrollment_token(
        &self,
        token_sha256: &str,
        now: Millis,
    ) -> StoreResult<Option<ProjectId>>;
    /// Enrolls a desktop of `project`: the desktop already holding the instance uid with
    /// the same host name is re-enrolled; else an imported desktop that never connected
    /// and whose `computer_name` equals the host name (case-insensitive) is claimed; else
    /// a new desktop is created. Stores the uid, the facts and the credential hash.
    ///
    /// `AlreadyExists` if another desktop of the project (another host name) holds the
    /// instance uid: the caller must hand the desktop a fresh uid first.
    async fn enroll_desktop(
        &self,
        project: &ProjectId,
        enrollment: &Enrollment,
        now: Millis,
    ) -> StoreResult<Enrolled>;
    async fn find_desktop_by_credential(
        &self,
        credential_sha256: &str,
    ) -> StoreResult<Option<DesktopIdentity>>;
    async fn find_desktop_by_instance_uid(
        &self,
        project: &ProjectId,
        instance_uid: &str,
    ) -> StoreResult<Option<DesktopIdentity>>;
    /// Records what the desktop reports of itself (host name, OS, addresses; its
    /// `ip_address` becomes the first address, if any) and when it was last seen. The
    /// `computer_name` is kept. `NotFound` if the desktop does not exist.
    async fn record_desktop_facts(
        &self,
        desktop: &DesktopId,
        facts: &DesktopFacts,
        now: Millis,
    ) -> StoreResult<()>;
    /// Records the state of the desktop's monitoring agent; `None` clears it (the agent is
    /// then not installed). `NotFound` if the desktop does not exist.
    async fn record_agent_state(
        &self,
        desktop: &DesktopId,
        agent: Option<&AgentState>,
    ) -> StoreResult<()>;
    /// Keeps the latest metrics JSON of a desktop. `NotFound` if the desktop does not
    /// exist.
    async fn record_metrics(&self, desktop: &DesktopId, json: &str, now: Millis)
    -> StoreResult<()>;
    /// The latest metrics of a desktop of `project` (none for another project's desktop).
    async fn get_metrics(
        &self,
        project: &ProjectId,
        desktop: &DesktopId,
    ) -> StoreResult<Option<MetricsRecord>>;
    /// Stores a package; `AlreadyExists` for the same (name, version, platform) or id.
    async fn publish_package(&self, meta: &PackageMeta, blob: &[u8]) -> StoreResult<()>;
    /// The most recently published package of this name and platform (the latest
    /// `created_at`, then the last stored), without its archive.
    async fn latest_package(&self, name: &str, platform: &str) -> StoreResult<Option<PackageMeta>>;
    /// A package with its archive.
    async fn get_package(&self, id: &str) -> StoreResult<Option<(PackageMeta, Vec<u8>)>>;
    /// Desktops that have a WAITING sub-job that is not a follower, at most `limit`, the
    /// most urgent (earliest delivery deadline) first.
    async fn desktops_with_waiting_work(&self, limit: u32) -> StoreResult<Vec<DesktopId>>;
    /// The desktop's RUNNING sub-job that is not a follower, if any.
    async fn running_sub_job(&self, desktop: &DesktopId) -> StoreResult<Option<SubJob>>;
    /// Applies progress and results of RUNNING sub-jobs (followers mirror them) in one
    /// transaction, in order, each exactly as [`Store::record_progress`] or
    /// [`Store::finish_sub_job`] would; a report about a sub-job that is not a RUNNING
    /// leader changes nothing (false). One answer per report.
    async fn apply_reports(&self, reports: &[SubJobReport], now: Millis) -> StoreResult<Vec<bool>>;
}
