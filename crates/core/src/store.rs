//! The one storage interface. Each method is one transaction: it either happens whole or
//! not at all, so a crash never leaves a half-written job behind.

use crate::audit::{Seal, Trace, TraceFilter};
use crate::clock::Millis;
use crate::console::{ConsoleSession, DesktopQuery, FleetSummary, JobProgress};
use crate::fleet::{
    DesktopFacts, DesktopIdentity, Enrolled, Enrollment, EnrollmentGrant, MetricsRecord,
    PackageMeta, SubJobReport,
};
use crate::ids::{DesktopId, DomainId, JobId, ProjectId, SubJobId, UserId};
use crate::job::{JobStatus, Stage, SubJobStatus};
use crate::metrics::{
    Aggregate, MetricBatch, RetentionPolicy, RollupOutcome, SeriesFilter, SeriesInfo, Tier,
};
use crate::model::{
    AccessKey, AgentCondition, AgentFilter, AgentState, AuthFailures, AuthSubject, Desktop,
    DesktopFilter, Domain, Job, Lockout, NewDesktop, Outcome, Page, Project, Role, SubJob,
    SubJobFilter, SubJobSelector, TokenRecord, User,
};
use crate::model::{InvocationFilter, OperationSpec, OperationTarget, Rework, TargetResult};
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

    /// The same error again, for each of several callers that failed as one (a batch):
    /// a source error becomes its message.
    pub fn retell(&self) -> StoreError {
        match self {
            StoreError::NotFound => StoreError::NotFound,
            StoreError::AlreadyExists(what) => StoreError::AlreadyExists(what.clone()),
            StoreError::UnknownDesktops(ids) => StoreError::UnknownDesktops(ids.clone()),
            StoreError::Corrupt(why) => StoreError::Corrupt(why.clone()),
            StoreError::Backend(source) => StoreError::Backend(source.to_string().into()),
            StoreError::Unavailable(source) => StoreError::Unavailable(source.to_string().into()),
        }
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

/// How many jobs and sub-jobs are in each status, over every project (for `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCounts {
    /// One entry per status, in [`JobStatus::ALL`] order, zeros included.
    pub jobs: Vec<(JobStatus, u64)>,
    /// One entry per status, in [`SubJobStatus::ALL`] order, zeros included.
    pub sub_jobs: Vec<(SubJobStatus, u64)>,
}

/// The chain's head: the last trace appended, and where the kept chain starts (the last
/// trace removed by retention; `seq` 0 and the genesis hash if none was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHead {
    pub seq: i64,
    pub hash: String,
    pub pruned_seq: i64,
    pub pruned_hash: String,
}

/// A trace as stored, for verification: its chain fields, its canonical content, and the
/// columns ListTraces filters on (name, value as text), which must agree with the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTrace {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    pub content: String,
    pub columns: Vec<(&'static str, String)>,
}

/// A change another replica (or an admin command) made that a server must act on at once,
/// not at its next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A credential was taken back or changed: drop the credential cache.
    Credentials,
    /// New work waits for desktops (a job was created or retried): deliver it.
    Work,
}

/// Tells its holder when a [`Signal`] was raised anywhere.
#[async_trait]
pub trait Subscription: Send + Sync {
    /// Waits until the signal is raised after the last call returned (at once if it was
    /// meanwhile). A subscription that can no longer tell waits forever: callers wait
    /// on it beside their own poll interval.
    async fn raised(&mut self);
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs.
    fn backend(&self) -> &'static str;

    /// Subscribes to `signal`, raised by every replica's store writes (PostgreSQL
    /// `LISTEN/NOTIFY`). `None` when the backend cannot tell (SQLite: one server process;
    /// an admin command's change is seen at the next poll).
    fn subscribe(&self, signal: Signal) -> Option<Box<dyn Subscription>> {
        let _ = signal;
        None
    }

    /// Announces `signal` to every replica, after the change that calls for it committed
    /// (new work). Coalesced, and a no-op where [`Store::subscribe`] is.
    fn raise(&self, signal: Signal) {
        let _ = signal;
    }

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

    // ---- taking credentials back ----
    //
    // Every method here that revokes, disables, deletes, locks or unlocks bumps the
    // credential revision in the same transaction, as does `grant_role`: servers poll
    // [`Store::credential_revision`] and drop their credential caches when it moves.

    /// Every access key (the stored secret keys are opaque to the store).
    async fn list_access_keys(&self) -> StoreResult<Vec<AccessKey>>;
    /// Replaces the stored secret key of `access_key` if it still is `expected`; false if
    /// it changed meanwhile (another process got there first) or the key is gone.
    async fn replace_secret_key(
        &self,
        access_key: &str,
        expected: &str,
        replacement: &str,
    ) -> StoreResult<bool>;
    /// Projects where `user` has a role, optionally only those named `name`.
    async fn list_user_projects(
        &self,
        user: &UserId,
        name: Option<&str>,
    ) -> StoreResult<Vec<Project>>;
    /// The failure count and lock of `subject`, if it failed since its last success.
    async fn auth_failures(&self, subject: &AuthSubject) -> StoreResult<Option<AuthFailures>>;
    /// Counts one more failure of `subject` (afresh if its lock has run out) and locks it
    /// for `lockout.lock_ms` once it reached `lockout.failures`. Returns the new state.
    async fn record_auth_failure(
        &self,
        subject: &AuthSubject,
        now: Millis,
        lockout: Lockout,
    ) -> StoreResult<AuthFailures>;
    /// Forgets the failures and lock of `subject`; false if there were none.
    async fn clear_auth_failures(&self, subject: &AuthSubject) -> StoreResult<bool>;
    /// A counter that moves whenever a credential is taken back or changed.
    async fn credential_revision(&self) -> StoreResult<i64>;
    /// Deletes an access key (and its failure count). `NotFound` if it does not exist.
    async fn delete_access_key(&self, access_key: &str) -> StoreResult<()>;
    /// Disables or enables a user. `NotFound` if it does not exist.
    async fn set_user_disabled(&self, user: &UserId, disabled: bool) -> StoreResult<()>;
    /// Deletes every token of `user`; returns how many. `NotFound` if the user does not
    /// exist.
    async fn revoke_user_tokens(&self, user: &UserId) -> StoreResult<u64>;
    /// Deletes an enrollment token. `NotFound` if it does not exist.
    async fn revoke_enrollment_token(&self, token_sha256: &str) -> StoreResult<()>;
    /// Deletes a desktop of `project` with its credential, metrics and sub-jobs (those in
    /// flight included); the jobs concerned are brought up to date with the sub-jobs they
    /// keep. `NotFound` if the project has no such desktop.
    async fn delete_desktop(
        &self,
        project: &ProjectId,
        desktop: &DesktopId,
        now: Millis,
    ) -> StoreResult<()>;

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

    // ---- operations (INSTALL, UPDATE, ROLLBACK, UNINSTALL; rollout control) ----

    /// [`Store::create_install_job`] with the operation, target version and rollout limits
    /// of `spec` (a non-exclusive spec: every desktop gets a sub-job).
    async fn create_install_job_with(
        &self,
        project: &ProjectId,
        desktops: &[DesktopId],
        job_type: &str,
        spec: &OperationSpec,
        at: Deadlines,
    ) -> StoreResult<Job>;
    /// Creates one job whose sub-jobs are the `targets` that can take the operation now;
    /// one [`TargetResult`] a target, in order. With an exclusive spec, a desktop that has
    /// work of another operation or version in flight is refused ([`TargetResult::Busy`]).
    /// No job (`None`) when no target could be taken. [`StoreError::UnknownDesktops`]
    /// if a desktop is not in the project (nothing written).
    async fn create_operation_job(
        &self,
        project: &ProjectId,
        targets: &[OperationTarget],
        job_type: &str,
        spec: &OperationSpec,
        at: Deadlines,
    ) -> StoreResult<(Option<Job>, Vec<TargetResult>)>;
    /// The sub-jobs of `project` among `ids` (missing ones are left out).
    async fn get_sub_jobs(&self, project: &ProjectId, ids: &[SubJobId])
    -> StoreResult<Vec<SubJob>>;
    /// Puts each FAILED (not canceled) sub-job of `ids` back to WAITING (same id, one more attempt); one
    /// answer an id, in order. A retried sub-job follows the desktop's work in flight if
    /// it is the same operation and version, and is refused if not. Its job, if stopped
    /// by its rollout, runs again.
    async fn retry_sub_jobs(
        &self,
        project: &ProjectId,
        ids: &[SubJobId],
        at: Deadlines,
    ) -> StoreResult<Vec<Rework>>;
    /// Sets the target version of the job's FAILED INSTALL sub-jobs (a Workspace retry
    /// installs the newest version); returns how many changed. `NotFound` for a job not
    /// in the project.
    async fn retarget_failed_installs(
        &self,
        project: &ProjectId,
        job: &JobId,
        version: &str,
    ) -> StoreResult<u64>;
    /// Sub-jobs as ListAgentInvocations lists them, newest first, with the total.
    async fn list_invocations(
        &self,
        project: &ProjectId,
        filter: &InvocationFilter,
        page: Page,
    ) -> StoreResult<(i64, Vec<SubJob>)>;

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

    /// Stores an enrollment token of `project` under the SHA-256 of its value; with
    /// `desktop`, a token bound to that desktop of the project (see [`EnrollmentGrant`]).
    /// `NotFound` if the project (or the desktop, in that project) does not exist,
    /// `AlreadyExists` for a hash already stored.
    async fn create_enrollment_token(
        &self,
        project: &ProjectId,
        desktop: Option<&DesktopId>,
        token_sha256: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()>;
    /// What an unexpired enrollment token grants; `None` for an unknown, expired or
    /// spent one (a desktop-bound token is spent by its claim, and is of no use once
    /// its desktop has connected).
    async fn find_enrollment_token(
        &self,
        token_sha256: &str,
        now: Millis,
    ) -> StoreResult<Option<EnrollmentGrant>>;
    /// Enrolls a desktop of `project`: with a [`Claim`](crate::fleet::Claim), the imported desktop it names,
    /// if it never connected, spending the desktop-bound token; else a new desktop.
    /// Stores the uid, the facts and the credential hash.
    ///
    /// An enrollment never takes over an existing desktop: `AlreadyExists` if a desktop
    /// of the project holds the instance uid (the caller hands the desktop a fresh uid),
    /// or if the claimed desktop already connected or its token is spent or expired.
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
    /// One version of a package for a platform, withdrawn or not.
    async fn find_package_version(
        &self,
        name: &str,
        version: &str,
        platform: &str,
    ) -> StoreResult<Option<PackageMeta>>;
    /// Every published version of a package, by platform, newest first.
    async fn list_packages(&self, name: &str) -> StoreResult<Vec<PackageMeta>>;
    /// The newest published, not withdrawn, version of a package on any platform (the
    /// latest built; of those, the last published), as a job of the newest version
    /// (`OperationSpec::newest_of`) records it. `None` when there is none.
    async fn newest_version(&self, name: &str) -> StoreResult<Option<String>>;
    /// Withdraws (`Some(at)`) or restores (`None`) a version on every platform; returns how
    /// many packages changed (0: no such version).
    async fn set_package_withdrawn(
        &self,
        name: &str,
        version: &str,
        at: Option<Millis>,
    ) -> StoreResult<u64>;
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
    /// Jobs and sub-jobs by status, over every project. It counts whole tables, so it is
    /// meant for a scrape every few seconds, not for every request.
    async fn count_by_state(&self) -> StoreResult<StateCounts>;

    // ---- connection state (see [`crate::presence`]) ----

    /// A connection now holds the desktop, since `at` (its guest is seen at `at` too).
    /// `NotFound` if the desktop does not exist.
    async fn record_connected(&self, desktop: &DesktopId, at: Millis) -> StoreResult<()>;
    /// The connection established at `connected_at` ended at `at`; the guest was last
    /// seen at `last_seen`. Changes nothing (false) if another connection holds the
    /// desktop since (a reconnect that overtook this goodbye) or it does not exist.
    async fn record_disconnected(
        &self,
        desktop: &DesktopId,
        connected_at: Millis,
        at: Millis,
        last_seen: Millis,
    ) -> StoreResult<bool>;
    /// Moves the last-seen time of many desktops forward in one statement (never back;
    /// the latest of several entries for one desktop wins). Unknown desktops are skipped.
    /// Returns how many desktops changed.
    async fn record_last_seen(&self, seen: &[(DesktopId, Millis)]) -> StoreResult<u64>;

    // ---- metric time series (namespace AGT.ECS) ----

    /// Writes one batch of reports in one transaction: the series not seen before (of
    /// desktops that exist; others are skipped), the raw points (a second point of a
    /// series at the same time is ignored), and each desktop's latest report (as
    /// [`Store::record_metrics`], skipping unknown desktops). Returns the points written.
    async fn ingest_metrics(&self, batch: &MetricBatch) -> StoreResult<u64>;
    /// One bounded step of roll-up and retention: rolls finished 5-minute buckets up from
    /// raw points and finished hours up from 5-minute buckets (each exactly once), then
    /// deletes what is older than its retention, never what is not rolled up yet.
    async fn roll_up_metrics(
        &self,
        policy: &RetentionPolicy,
        now: Millis,
    ) -> StoreResult<RollupOutcome>;
    /// For each of `series`, in that order, its aggregates with `from <= at < to`, read
    /// from `tier`, oldest first: raw points one by one; for a roll-up tier its buckets,
    /// then the finer data not rolled up yet in finer buckets (the caller re-buckets).
    /// Empty for a series of another project or none at all. One read, however many
    /// series: a batch query costs no more round trips than a single one.
    async fn metric_aggregates(
        &self,
        project: &ProjectId,
        series: &[i64],
        tier: Tier,
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<Vec<Aggregate>>>;
    /// The series of `project` matching `filter`, in (metric, desktop, mount point) order,
    /// and how many match without paging.
    async fn list_metric_series(
        &self,
        project: &ProjectId,
        filter: &SeriesFilter,
    ) -> StoreResult<(Vec<SeriesInfo>, u64)>;

    // ---- the web console (see [`crate::console`]) ----

    /// Stores a console session under the SHA-256 of its id. `AlreadyExists` for a hash
    /// already stored.
    async fn create_console_session(
        &self,
        id_sha256: &str,
        session: &ConsoleSession,
    ) -> StoreResult<()>;
    /// The session stored under `id_sha256`, expired or not (the caller decides).
    async fn find_console_session(&self, id_sha256: &str) -> StoreResult<Option<ConsoleSession>>;
    /// Moves the session's last use forward to `at` (never back); false if it is gone.
    async fn touch_console_session(&self, id_sha256: &str, at: Millis) -> StoreResult<bool>;
    /// Deletes a session (sign-out); false if it was gone already.
    async fn delete_console_session(&self, id_sha256: &str) -> StoreResult<bool>;
    /// Deletes the sessions of `user` (its password changed, it was disabled); how many.
    async fn delete_user_console_sessions(&self, user: &UserId) -> StoreResult<u64>;
    /// Deletes sessions past their absolute end, or idle since before `idle_before`.
    async fn delete_stale_console_sessions(
        &self,
        now: Millis,
        idle_before: Millis,
    ) -> StoreResult<u64>;
    /// The fleet of `project` counted: connection states (with `now` and `window_ms` as in
    /// [`crate::presence`]), agents by version, desktops failing now, jobs in flight.
    async fn fleet_summary(
        &self,
        project: &ProjectId,
        now: Millis,
        window_ms: Millis,
    ) -> StoreResult<FleetSummary>;
    /// One page of the desktops of `project` that match `query`, in its order, with the
    /// in-flight work of each, and how many match in all.
    async fn query_desktops(
        &self,
        project: &ProjectId,
        query: &DesktopQuery,
        page: Page,
    ) -> StoreResult<(i64, Vec<AgentCondition>)>;
    /// The users with a role on `project`, by name, with that role.
    async fn list_project_users(&self, project: &ProjectId) -> StoreResult<Vec<(User, Role)>>;
    /// One page of the jobs of `project`, newest first, with their sub-jobs counted by
    /// status, and how many jobs there are.
    async fn list_job_progress(
        &self,
        project: &ProjectId,
        page: Page,
    ) -> StoreResult<(i64, Vec<JobProgress>)>;

    // ---- the audit trail (see [`crate::audit`]) ----
    //
    // Besides these, every write that changes something appends the trace drafted by the
    // caller's audit scope (`deskfleet_store::audit`) in its own transaction.

    /// Records a trace in a transaction of its own: a refusal or a failure, which changed
    /// nothing else. Like a trace written with its change, it is chained at once (SQLite)
    /// or by the next [`Store::chain_traces`] (PostgreSQL).
    async fn append_trace(&self, trace: &Trace) -> StoreResult<()>;
    /// Refreshes the query planner's statistics of the tables that have grown well past
    /// the size they were last analysed at (PostgreSQL: at least 1,000 rows and twice as
    /// many as then); returns how many tables it analysed. A no-op on SQLite, which keeps
    /// no plan across its statements' preparation. See docs/operations.md.
    async fn refresh_statistics(&self) -> StoreResult<u64> {
        Ok(0)
    }
    /// Chains up to `limit` recorded traces not chained yet (oldest first), one chainer
    /// at a time across replicas; returns how many it took (0: none are left). A no-op on
    /// SQLite, which chains every trace as it is written.
    async fn chain_traces(&self, limit: u32) -> StoreResult<u64>;
    /// Traces of `project` matching `filter`, newest first (time, then trace id), at most
    /// `limit`.
    async fn list_traces(
        &self,
        project: &ProjectId,
        filter: &TraceFilter,
        limit: u32,
    ) -> StoreResult<Vec<Trace>>;
    /// The time of a trace of `project` (`None`: no such trace in the project).
    async fn trace_time(&self, project: &ProjectId, trace_id: &str) -> StoreResult<Option<Millis>>;
    /// The stored chain from `from_seq` on, in `seq` order, at most `limit` traces.
    async fn trace_chain(&self, from_seq: i64, limit: u32) -> StoreResult<Vec<StoredTrace>>;
    async fn trace_head(&self) -> StoreResult<TraceHead>;
    /// Keeps a seal (a second seal of the same `seq` is ignored).
    async fn add_seal(&self, seal: &Seal) -> StoreResult<()>;
    /// Every seal, by `seq`.
    async fn list_seals(&self) -> StoreResult<Vec<Seal>>;
    /// Removes the traces older than `before`, up to the newest sealed one among them, and
    /// starts the kept chain there. Returns how many were removed.
    async fn prune_traces(&self, before: Millis) -> StoreResult<u64>;
}
