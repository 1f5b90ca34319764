//! [`Store`] for any [`Backend`]: each method opens one transaction on the backend and runs
//! the matching function of [`crate::ops`] in it. The backends differ only in how they
//! hand out transactions (see [`crate::sqlite`] and [`crate::postgres`]).
//!
//! Every method is timed into `deskfleet_store_operation_duration_seconds{op}` (`op` is the
//! method's name) and its failures counted into `deskfleet_store_errors_total{kind}`:
//! `unavailable` for storage faults, `other` for any other backend or decoding failure.
//! Answers that are part of the contract (not found, already exists, unknown desktops)
//! are not errors of the store and are not counted.

use crate::conn::{BoxFuture, Conn, backend, is_retryable};
use crate::console_ops;
use crate::metric_ops;
use crate::ops::{self, NewJob};
use async_trait::async_trait;
use deskfleet_core::audit::{Seal, Trace, TraceFilter};
use deskfleet_core::clock::Millis;
use deskfleet_core::console::{ConsoleSession, DesktopQuery, FleetSummary, JobProgress};
use deskfleet_core::fleet::{
    DesktopFacts, DesktopIdentity, Enrolled, Enrollment, EnrollmentGrant, MetricsRecord,
    PackageMeta, SubJobReport,
};
use deskfleet_core::ids::{DesktopId, DomainId, JobId, ProjectId, SubJobId, UserId};
use deskfleet_core::job::Stage;
use deskfleet_core::metrics::{
    Aggregate, MetricBatch, RetentionPolicy, RollupOutcome, SeriesFilter, SeriesInfo, Tier,
};
use deskfleet_core::model::{
    AccessKey, AgentCondition, AgentFilter, AgentState, AuthFailures, AuthSubject, Desktop,
    DesktopFilter, Domain, Job, Lockout, NewDesktop, Outcome, Page, Project, Role, SubJob,
    SubJobFilter, SubJobSelector, TokenRecord, User,
};
use deskfleet_core::model::{
    InvocationFilter, OperationSpec, OperationTarget, Rework, TargetResult,
};
use deskfleet_core::store::{
    Deadlines, Expired, Signal, StateCounts, Store, StoreError, StoreResult, StoredTrace,
    Subscription, TraceHead,
};
use std::future::Future;
use std::time::Instant;

/// The connection type of a backend's database.
pub(crate) type ConnOf<B> = <<B as Backend>::Db as sqlx::Database>::Connection;

/// How a database hands out transactions.
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: sqlx::Database<Connection: Conn>;
    /// The connection writes run on: the database's own on PostgreSQL, the writer's
    /// direct one on SQLite ([`crate::sqlite_conn`]).
    type WriteConn: Conn;

    /// For logs: `sqlite` or `postgres`.
    const NAME: &'static str;

    /// A read-only transaction: every read of one `Store` call sees one snapshot.
    fn read(
        &self,
    ) -> impl Future<Output = StoreResult<sqlx::Transaction<'static, Self::Db>>> + Send;

    /// A connection for a read of one statement, which sees one snapshot without a
    /// transaction around it (saving its BEGIN and COMMIT: two round trips on PostgreSQL).
    fn read_one(
        &self,
    ) -> impl Future<Output = StoreResult<sqlx::pool::PoolConnection<Self::Db>>> + Send;

    /// Runs `f` in a write transaction and answers only once it is durably committed;
    /// if `f` fails, nothing it did is kept.
    fn write<T, F>(&self, f: F) -> impl Future<Output = StoreResult<T>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Self::WriteConn) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static;

    /// See [`Store::subscribe`]; none by default.
    fn subscribe(&self, signal: Signal) -> Option<Box<dyn Subscription>> {
        let _ = signal;
        None
    }

    /// See [`Store::raise`]; a no-op by default.
    fn raise(&self, signal: Signal) {
        let _ = signal;
    }

    /// `create_install_job`, the call the server is hammered with: both backends group
    /// concurrent calls and create them with [`ops::create_install_jobs`].
    fn create_install_job(&self, call: NewJob) -> impl Future<Output = StoreResult<Job>> + Send;
}

/// How many times an enrollment that lost a race for a unique key (on PostgreSQL, the same
/// uid enrolling twice at once) is run again; the next run sees the winner.
const ENROLL_ATTEMPTS: u32 = 3;

/// The `Store` of a backend.
pub(crate) struct DbStore<B>(pub(crate) B, ProbeCache);

impl<B> DbStore<B> {
    pub(crate) fn new(backend: B) -> Self {
        Self(backend, ProbeCache::default())
    }
}

/// How long a probe result is reused: readiness checks, however frequent, cost the
/// database at most one tiny write a second.
const PROBE_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// A probe's outcome as kept for reuse: `Err((unavailable, message))`.
type ProbeOutcome = Result<(), (bool, String)>;

/// The last probe's time and outcome. Callers that come while a probe runs wait for it
/// and share its outcome.
#[derive(Default)]
pub(crate) struct ProbeCache {
    last: tokio::sync::Mutex<Option<(Instant, ProbeOutcome)>>,
}

/// Times a call of the `Store` method `op` and counts its failure, if it fails.
async fn timed<T>(op: &'static str, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let start = Instant::now();
    let result = call.await;
    metrics::histogram!("deskfleet_store_operation_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    let kind = match &result {
        Err(StoreError::Unavailable(_)) => Some("unavailable"),
        Err(StoreError::Backend(_) | StoreError::Corrupt(_)) => Some("other"),
        _ => None,
    };
    if let Some(kind) = kind {
        metrics::counter!("deskfleet_store_errors_total", "kind" => kind).increment(1);
    }
    result
}

/// `read!(self, op(args...))`: runs `ops::op` in a read transaction, timed as `op`.
macro_rules! read {
    ($self:ident, $op:ident($($arg:expr),* $(,)?)) => {{
        timed(stringify!($op), async {
            let mut tx = $self.0.read().await?;
            let out = ops::$op(&mut *tx, $($arg),*).await?;
            tx.commit().await.map_err(backend)?;
            Ok(out)
        })
        .await
    }};
}

/// `read_one!(self, op(args...))`: [`read!`] for an `ops::op` of a single statement.
macro_rules! read_one {
    ($self:ident, $op:ident($($arg:expr),* $(,)?)) => {{
        timed(stringify!($op), async {
            let mut conn = $self.0.read_one().await?;
            ops::$op(&mut *conn, $($arg),*).await
        })
        .await
    }};
}

/// `write!(self, { owned = value, ... }, op(args...))`: runs `ops::op` in a write
/// transaction. The write may run on another task, so what it borrows is first copied
/// into the named owned values. The draft trace of the caller's audit scope, if it is
/// still open, is appended in the same transaction ([`crate::audit`]).
macro_rules! write {
    ($self:ident, { $($own:ident = $val:expr),* $(,)? }, $op:ident($($arg:expr),* $(,)?)) => {{
        $(let $own = $val;)*
        let taken = crate::audit::take();
        let carried = taken.clone();
        let result = timed(
            stringify!($op),
            $self.0.write(move |c| {
                Box::pin(async move {
                    let out = ops::$op(c, $($arg),*).await?;
                    if let Some(t) = &carried {
                        let trace = t.finish(&out);
                        t.append(c, trace).await?;
                    }
                    Ok(out)
                })
            }),
        )
        .await;
        if let Some(t) = taken {
            t.settle(result.is_ok());
        }
        result
    }};
}

/// `write_quiet!`: [`write!`] for bookkeeping that is not a change of its own (counting
/// failed logins): it never takes the caller's draft trace.
macro_rules! write_quiet {
    ($self:ident, { $($own:ident = $val:expr),* $(,)? }, $op:ident($($arg:expr),* $(,)?)) => {{
        $(let $own = $val;)*
        timed(
            stringify!($op),
            $self
                .0
                .write(move |c| Box::pin(async move { ops::$op(c, $($arg),*).await })),
        )
        .await
    }};
}

/// [`read!`] for a function of [`crate::console_ops`].
macro_rules! console_read {
    ($self:ident, $op:ident($($arg:expr),* $(,)?)) => {{
        timed(stringify!($op), async {
            let mut tx = $self.0.read().await?;
            let out = console_ops::$op(&mut *tx, $($arg),*).await?;
            tx.commit().await.map_err(backend)?;
            Ok(out)
        })
        .await
    }};
}

/// [`write!`] for a function of [`crate::console_ops`].
macro_rules! console_write {
    ($self:ident, { $($own:ident = $val:expr),* $(,)? }, $op:ident($($arg:expr),* $(,)?)) => {{
        $(let $own = $val;)*
        timed(
            stringify!($op),
            $self
                .0
                .write(move |c| Box::pin(async move { console_ops::$op(c, $($arg),*).await })),
        )
        .await
    }};
}

/// Runs a job creation with the caller's draft trace, if any (see [`write!`]).
async fn audited_create<B: Backend>(
    backend: &B,
    op: &'static str,
    mut call: NewJob,
) -> StoreResult<Job> {
    let taken = crate::audit::take();
    if let Some(t) = &taken {
        t.complete_ahead(&call.job_id);
    }
    call.trace = taken.clone().map(Box::new);
    let result = timed(op, backend.create_install_job(call)).await;
    if let Some(t) = taken {
        t.settle(result.is_ok());
    }
    result
}

#[async_trait]
impl<B: Backend> Store for DbStore<B> {
    fn backend(&self) -> &'static str {
        B::NAME
    }

    fn subscribe(&self, signal: Signal) -> Option<Box<dyn Subscription>> {
        self.0.subscribe(signal)
    }

    fn raise(&self, signal: Signal) {
        self.0.raise(signal);
    }

    async fn probe(&self) -> StoreResult<()> {
        let mut last = self.1.last.lock().await;
        if let Some((at, outcome)) = &*last
            && at.elapsed() < PROBE_REUSE
        {
            return outcome.clone().map_err(|(unavailable, message)| {
                if unavailable {
                    StoreError::Unavailable(message.into())
                } else {
                    StoreError::Backend(message.into())
                }
            });
        }
        let result = timed("probe", async {
            let mut tx = self.0.read().await?;
            ops::probe_read(&mut *tx).await?;
            tx.commit().await.map_err(backend)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            self.0
                .write(move |c| Box::pin(async move { ops::probe_write(c, now).await }))
                .await
        })
        .await;
        let outcome = match &result {
            Ok(()) => Ok(()),
            Err(e) => Err((e.is_unavailable(), e.to_string())),
        };
        *last = Some((Instant::now(), outcome));
        result
    }

    // ---- identity ----

    #[tracing::instrument(skip_all, fields(backend = B::NAME))]
    async fn create_domain(&self, name: &str) -> StoreResult<Domain> {
        write!(self, { name = name.to_owned() }, create_domain(&name))
    }

    async fn find_domain_by_name(&self, name: &str) -> StoreResult<Option<Domain>> {
        read!(self, find_domain_by_name(name))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, domain = %domain))]
    async fn create_project(&self, domain: &DomainId, name: &str) -> StoreResult<Project> {
        write!(self, { domain = domain.clone(), name = name.to_owned() }, create_project(&domain, &name))
    }

    async fn find_project(&self, id: &ProjectId) -> StoreResult<Option<Project>> {
        read!(self, find_project(id))
    }

    async fn list_projects(
        &self,
        domain: Option<&DomainId>,
        name: Option<&str>,
    ) -> StoreResult<Vec<Project>> {
        read!(self, list_projects(domain, name))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, domain = %domain))]
    async fn create_user(
        &self,
        domain: &DomainId,
        name: &str,
        password_hash: &str,
    ) -> StoreResult<User> {
        write!(
            self,
            { domain = domain.clone(), name = name.to_owned(), hash = password_hash.to_owned() },
            create_user(&domain, &name, &hash)
        )
    }

    async fn find_user(&self, domain_name: &str, user_name: &str) -> StoreResult<Option<User>> {
        read!(self, find_user(domain_name, user_name))
    }

    async fn find_user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        read!(self, find_user_by_id(id))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, user = %user, project = %project))]
    async fn grant_role(&self, user: &UserId, project: &ProjectId, role: Role) -> StoreResult<()> {
        write!(self, { user = user.clone(), project = project.clone() }, grant_role(&user, &project, role))
    }

    async fn find_role(&self, user: &UserId, project: &ProjectId) -> StoreResult<Option<Role>> {
        read!(self, find_role(user, project))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, access_key = %key.access_key))]
    async fn create_access_key(&self, key: &AccessKey) -> StoreResult<()> {
        write!(self, { key = key.clone() }, create_access_key(&key))
    }

    async fn find_access_key(&self, access_key: &str) -> StoreResult<Option<AccessKey>> {
        read!(self, find_access_key(access_key))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, user = %token.user_id))]
    async fn insert_token(&self, token_sha256: &str, token: &TokenRecord) -> StoreResult<()> {
        write!(
            self,
            { sha = token_sha256.to_owned(), token = token.clone() },
            insert_token(&sha, &token)
        )
    }

    async fn find_token(&self, token_sha256: &str) -> StoreResult<Option<TokenRecord>> {
        read!(self, find_token(token_sha256))
    }

    // ---- taking credentials back ----

    async fn list_access_keys(&self) -> StoreResult<Vec<AccessKey>> {
        read!(self, list_access_keys())
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, access_key))]
    async fn replace_secret_key(
        &self,
        access_key: &str,
        expected: &str,
        replacement: &str,
    ) -> StoreResult<bool> {
        write!(
            self,
            {
                ak = access_key.to_owned(),
                expected = expected.to_owned(),
                replacement = replacement.to_owned()
            },
            replace_secret_key(&ak, &expected, &replacement)
        )
    }

    async fn list_user_projects(
        &self,
        user: &UserId,
        name: Option<&str>,
    ) -> StoreResult<Vec<Project>> {
        read!(self, list_user_projects(user, name))
    }

    async fn auth_failures(&self, subject: &AuthSubject) -> StoreResult<Option<AuthFailures>> {
        read!(self, auth_failures(subject))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME))]
    async fn record_auth_failure(
        &self,
        subject: &AuthSubject,
        now: Millis,
        lockout: Lockout,
    ) -> StoreResult<AuthFailures> {
        write_quiet!(
            self,
            { subject = subject.clone() },
            record_auth_failure(&subject, now, lockout)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME))]
    async fn clear_auth_failures(&self, subject: &AuthSubject) -> StoreResult<bool> {
        write_quiet!(
            self,
            { subject = subject.clone() },
            clear_auth_failures(&subject)
        )
    }

    async fn credential_revision(&self) -> StoreResult<i64> {
        read!(self, credential_revision())
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, access_key))]
    async fn delete_access_key(&self, access_key: &str) -> StoreResult<()> {
        write!(self, { ak = access_key.to_owned() }, delete_access_key(&ak))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, user = %user))]
    async fn set_user_disabled(&self, user: &UserId, disabled: bool) -> StoreResult<()> {
        write!(
            self,
            { user = user.clone() },
            set_user_disabled(&user, disabled)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, user = %user))]
    async fn revoke_user_tokens(&self, user: &UserId) -> StoreResult<u64> {
        write!(self, { user = user.clone() }, revoke_user_tokens(&user))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME))]
    async fn revoke_enrollment_token(&self, token_sha256: &str) -> StoreResult<()> {
        write!(
            self,
            { sha = token_sha256.to_owned() },
            revoke_enrollment_token(&sha)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project, desktop = %desktop))]
    async fn delete_desktop(
        &self,
        project: &ProjectId,
        desktop: &DesktopId,
        now: Millis,
    ) -> StoreResult<()> {
        write!(
            self,
            { project = project.clone(), desktop = desktop.clone() },
            delete_desktop(&project, &desktop, now)
        )
    }

    // ---- desktops ----

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project, desktops = desktops.len()))]
    async fn import_desktops(
        &self,
        project: &ProjectId,
        desktops: &[NewDesktop],
        now: Millis,
    ) -> StoreResult<Vec<Desktop>> {
        write!(
            self,
            { project = project.clone(), desktops = desktops.to_vec() },
            import_desktops(&project, &desktops, now)
        )
    }

    async fn list_desktops(
        &self,
        project: &ProjectId,
        filter: &DesktopFilter,
        page: Page,
    ) -> StoreResult<(i64, Vec<Desktop>)> {
        read!(self, list_desktops(project, filter, page))
    }

    async fn get_desktop(
        &self,
        project: &ProjectId,
        id: &DesktopId,
    ) -> StoreResult<Option<Desktop>> {
        read!(self, get_desktop(project, id))
    }

    async fn list_agent_conditions(
        &self,
        project: &ProjectId,
        filter: &AgentFilter,
        page: Page,
    ) -> StoreResult<(i64, Vec<AgentCondition>)> {
        read!(self, list_agent_conditions(project, filter, page))
    }

    // ---- jobs ----

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project, desktops = desktops.len()))]
    async fn create_install_job(
        &self,
        project: &ProjectId,
        desktops: &[DesktopId],
        job_type: &str,
        at: Deadlines,
    ) -> StoreResult<Job> {
        let call = NewJob::install(project, desktops, job_type, at);
        audited_create(&self.0, "create_install_job", call).await
    }

    async fn get_job(
        &self,
        project: &ProjectId,
        id: &JobId,
    ) -> StoreResult<Option<(Job, Vec<SubJob>)>> {
        read!(self, get_job(project, id))
    }

    async fn list_sub_jobs(
        &self,
        project: &ProjectId,
        filter: &SubJobFilter,
        page: Page,
    ) -> StoreResult<(i64, Vec<SubJob>)> {
        read!(self, list_sub_jobs(project, filter, page))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project, job = %id))]
    async fn retry_job(&self, project: &ProjectId, id: &JobId, at: Deadlines) -> StoreResult<u64> {
        write!(self, { project = project.clone(), id = id.clone() }, retry_job(&project, &id, at))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project, job = %id))]
    async fn cancel_job(&self, project: &ProjectId, id: &JobId, now: Millis) -> StoreResult<u64> {
        write!(self, { project = project.clone(), id = id.clone() }, cancel_job(&project, &id, now))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project))]
    async fn delete_sub_jobs(
        &self,
        project: &ProjectId,
        selector: &SubJobSelector,
    ) -> StoreResult<u64> {
        write!(
            self,
            { project = project.clone(), selector = selector.clone() },
            delete_sub_jobs(&project, &selector)
        )
    }

    // ---- operations ----

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project, desktops = desktops.len()))]
    async fn create_install_job_with(
        &self,
        project: &ProjectId,
        desktops: &[DesktopId],
        job_type: &str,
        spec: &OperationSpec,
        at: Deadlines,
    ) -> StoreResult<Job> {
        let mut call = NewJob::install(project, desktops, job_type, at);
        call.spec = OperationSpec {
            exclusive: false,
            ..spec.clone()
        };
        audited_create(&self.0, "create_install_job", call).await
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project, targets = targets.len()))]
    async fn create_operation_job(
        &self,
        project: &ProjectId,
        targets: &[OperationTarget],
        job_type: &str,
        spec: &OperationSpec,
        at: Deadlines,
    ) -> StoreResult<(Option<Job>, Vec<TargetResult>)> {
        let desktops: Vec<DesktopId> = targets.iter().map(|t| t.desktop.clone()).collect();
        let mut call = NewJob::install(project, &desktops, job_type, at);
        call.spec = spec.clone();
        call.rollbacks = targets
            .iter()
            .map(|t| match (&t.target_version, &t.rollback_of) {
                (Some(v), Some(undone)) => Some((v.clone(), undone.clone())),
                _ => None,
            })
            .collect();
        // Like job creation on PostgreSQL: a creator that lost the race to start work on
        // a desktop runs again, and then sees the winner's.
        let taken = crate::audit::take();
        let mut attempt = 1;
        let result = loop {
            let this = call.clone();
            let carried = taken.clone();
            let result = timed(
                "create_operation_job",
                self.0.write(move |c| {
                    Box::pin(async move {
                        let out = ops::create_operation_job(c, &this).await?;
                        if let Some(t) = &carried {
                            let trace = t.finish(&out);
                            t.append(c, trace).await?;
                        }
                        Ok(out)
                    })
                }),
            )
            .await;
            match result {
                Err(e) if attempt < 5 && is_retryable(&e) => attempt += 1,
                result => break result,
            }
        };
        if let Some(t) = taken {
            t.settle(result.is_ok());
        }
        result
    }

    async fn get_sub_jobs(
        &self,
        project: &ProjectId,
        ids: &[SubJobId],
    ) -> StoreResult<Vec<SubJob>> {
        read!(self, get_sub_jobs(project, ids))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project))]
    async fn retry_sub_jobs(
        &self,
        project: &ProjectId,
        ids: &[SubJobId],
        at: Deadlines,
    ) -> StoreResult<Vec<Rework>> {
        write!(
            self,
            { project = project.clone(), ids = ids.to_vec() },
            retry_sub_jobs(&project, &ids, at)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project, job = %job))]
    async fn retarget_failed_installs(
        &self,
        project: &ProjectId,
        job: &JobId,
        version: &str,
    ) -> StoreResult<u64> {
        write!(
            self,
            { project = project.clone(), job = job.clone(), version = version.to_owned() },
            retarget_failed_installs(&project, &job, &version)
        )
    }

    async fn list_invocations(
        &self,
        project: &ProjectId,
        filter: &InvocationFilter,
        page: Page,
    ) -> StoreResult<(i64, Vec<SubJob>)> {
        read!(self, list_invocations(project, filter, page))
    }

    // ---- the engine ----

    #[tracing::instrument(skip_all, fields(backend = B::NAME, now))]
    async fn expire_overdue(&self, now: Millis) -> StoreResult<Expired> {
        write!(self, {}, expire_overdue(now))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, desktop = %desktop))]
    async fn claim_desktop_work(
        &self,
        desktop: &DesktopId,
        now: Millis,
        execute_by: Millis,
    ) -> StoreResult<Option<SubJob>> {
        write!(
            self,
            { desktop = desktop.clone() },
            claim_desktop_work(&desktop, now, execute_by)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, sub_job = %sub_job, stage = %stage, process))]
    async fn record_progress(
        &self,
        sub_job: &SubJobId,
        stage: Stage,
        process: i32,
        now: Millis,
        execute_by: Millis,
    ) -> StoreResult<bool> {
        write!(
            self,
            { sub_job = sub_job.clone() },
            record_progress(&sub_job, stage, process, now, execute_by)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, sub_job = %sub_job))]
    async fn finish_sub_job(
        &self,
        sub_job: &SubJobId,
        outcome: &Outcome,
        now: Millis,
    ) -> StoreResult<bool> {
        write!(
            self,
            { sub_job = sub_job.clone(), outcome = outcome.clone() },
            finish_sub_job(&sub_job, &outcome, now)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, reports = reports.len()))]
    async fn apply_reports(&self, reports: &[SubJobReport], now: Millis) -> StoreResult<Vec<bool>> {
        write!(
            self,
            { reports = reports.to_vec() },
            apply_reports(&reports, now)
        )
    }

    async fn running_sub_job(&self, desktop: &DesktopId) -> StoreResult<Option<SubJob>> {
        read!(self, running_sub_job(desktop))
    }

    async fn desktops_with_waiting_work(&self, limit: u32) -> StoreResult<Vec<DesktopId>> {
        read!(self, desktops_with_waiting_work(limit))
    }

    async fn count_by_state(&self) -> StoreResult<StateCounts> {
        read!(self, count_by_state())
    }

    // ---- the fleet ----

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project))]
    async fn create_enrollment_token(
        &self,
        project: &ProjectId,
        desktop: Option<&DesktopId>,
        token_sha256: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()> {
        write!(
            self,
            {
                project = project.clone(),
                desktop = desktop.cloned(),
                sha = token_sha256.to_owned()
            },
            create_enrollment_token(&project, desktop.as_ref(), &sha, now, expires_at)
        )
    }

    async fn find_enrollment_token(
        &self,
        token_sha256: &str,
        now: Millis,
    ) -> StoreResult<Option<EnrollmentGrant>> {
        read!(self, find_enrollment_token(token_sha256, now))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, project = %project))]
    async fn enroll_desktop(
        &self,
        project: &ProjectId,
        enrollment: &Enrollment,
        now: Millis,
    ) -> StoreResult<Enrolled> {
        let mut attempt = 1;
        loop {
            let result = write!(
                self,
                { project = project.clone(), enrollment = enrollment.clone() },
                enroll_desktop(&project, &enrollment, now)
            );
            match result {
                Err(e) if attempt < ENROLL_ATTEMPTS && is_retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "enrollment raced another; again");
                    attempt += 1;
                }
                result => return result.map_err(ops::enroll_conflict),
            }
        }
    }

    async fn find_desktop_by_credential(
        &self,
        credential_sha256: &str,
    ) -> StoreResult<Option<DesktopIdentity>> {
        read!(self, find_desktop_by_credential(credential_sha256))
    }

    async fn find_desktop_by_instance_uid(
        &self,
        project: &ProjectId,
        instance_uid: &str,
    ) -> StoreResult<Option<DesktopIdentity>> {
        read!(self, find_desktop_by_instance_uid(project, instance_uid))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, desktop = %desktop))]
    async fn record_desktop_facts(
        &self,
        desktop: &DesktopId,
        facts: &DesktopFacts,
        now: Millis,
    ) -> StoreResult<()> {
        write!(
            self,
            { desktop = desktop.clone(), facts = facts.clone() },
            record_desktop_facts(&desktop, &facts, now)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, desktop = %desktop))]
    async fn record_agent_state(
        &self,
        desktop: &DesktopId,
        agent: Option<&AgentState>,
    ) -> StoreResult<()> {
        write!(
            self,
            { desktop = desktop.clone(), agent = agent.cloned() },
            record_agent_state(&desktop, agent.as_ref())
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, desktop = %desktop))]
    async fn record_metrics(
        &self,
        desktop: &DesktopId,
        json: &str,
        now: Millis,
    ) -> StoreResult<()> {
        write!(
            self,
            { desktop = desktop.clone(), json = json.to_owned() },
            record_metrics(&desktop, &json, now)
        )
    }

    async fn get_metrics(
        &self,
        project: &ProjectId,
        desktop: &DesktopId,
    ) -> StoreResult<Option<MetricsRecord>> {
        read!(self, get_metrics(project, desktop))
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, package = %meta.id, size = blob.len()))]
    async fn publish_package(&self, meta: &PackageMeta, blob: &[u8]) -> StoreResult<()> {
        write!(
            self,
            { meta = meta.clone(), blob = blob.to_vec() },
            publish_package(&meta, &blob)
        )
    }

    async fn latest_package(&self, name: &str, platform: &str) -> StoreResult<Option<PackageMeta>> {
        read!(self, latest_package(name, platform))
    }

    async fn get_package(&self, id: &str) -> StoreResult<Option<(PackageMeta, Vec<u8>)>> {
        read!(self, get_package(id))
    }

    async fn find_package_version(
        &self,
        name: &str,
        version: &str,
        platform: &str,
    ) -> StoreResult<Option<PackageMeta>> {
        read!(self, find_package_version(name, version, platform))
    }

    async fn list_packages(&self, name: &str) -> StoreResult<Vec<PackageMeta>> {
        read_one!(self, list_packages(name))
    }

    async fn newest_version(&self, name: &str) -> StoreResult<Option<String>> {
        read_one!(self, newest_version(name))
    }

    async fn set_package_withdrawn(
        &self,
        name: &str,
        version: &str,
        at: Option<Millis>,
    ) -> StoreResult<u64> {
        write!(
            self,
            { name = name.to_owned(), version = version.to_owned() },
            set_package_withdrawn(&name, &version, at)
        )
    }

    // ---- connection state ----

    #[tracing::instrument(skip_all, fields(backend = B::NAME, desktop = %desktop))]
    async fn record_connected(&self, desktop: &DesktopId, at: Millis) -> StoreResult<()> {
        write!(
            self,
            { desktop = desktop.clone() },
            record_connected(&desktop, at)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, desktop = %desktop))]
    async fn record_disconnected(
        &self,
        desktop: &DesktopId,
        connected_at: Millis,
        at: Millis,
        last_seen: Millis,
    ) -> StoreResult<bool> {
        write!(
            self,
            { desktop = desktop.clone() },
            record_disconnected(&desktop, connected_at, at, last_seen)
        )
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME, desktops = seen.len()))]
    async fn record_last_seen(&self, seen: &[(DesktopId, Millis)]) -> StoreResult<u64> {
        write!(self, { seen = seen.to_vec() }, record_last_seen(&seen))
    }

    // ---- metric time series ----

    #[tracing::instrument(skip_all, fields(backend = B::NAME, points = batch.points.len()))]
    async fn ingest_metrics(&self, batch: &MetricBatch) -> StoreResult<u64> {
        let batch = batch.clone();
        timed(
            "ingest_metrics",
            self.0.write(move |c| {
                Box::pin(async move { metric_ops::ingest_metrics(c, &batch).await })
            }),
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = B::NAME))]
    async fn roll_up_metrics(
        &self,
        policy: &RetentionPolicy,
        now: Millis,
    ) -> StoreResult<RollupOutcome> {
        let policy = *policy;
        timed(
            "roll_up_metrics",
            self.0.write(move |c| {
                Box::pin(async move { metric_ops::roll_up_metrics(c, &policy, now).await })
            }),
        )
        .await
    }

    async fn metric_aggregates(
        &self,
        project: &ProjectId,
        series: &[i64],
        tier: Tier,
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<Vec<Aggregate>>> {
        timed("metric_aggregates", async {
            let mut tx = self.0.read().await?;
            let out =
                metric_ops::metric_aggregates(&mut *tx, project, series, tier, from, to).await?;
            tx.commit().await.map_err(backend)?;
            Ok(out)
        })
        .await
    }

    async fn list_metric_series(
        &self,
        project: &ProjectId,
        filter: &SeriesFilter,
    ) -> StoreResult<(Vec<SeriesInfo>, u64)> {
        timed("list_metric_series", async {
            let mut tx = self.0.read().await?;
            let out = metric_ops::list_metric_series(&mut *tx, project, filter).await?;
            tx.commit().await.map_err(backend)?;
            Ok(out)
        })
        .await
    }

    async fn create_console_session(
        &self,
        id_sha256: &str,
        session: &ConsoleSession,
    ) -> StoreResult<()> {
        console_write!(
            self,
            { sha = id_sha256.to_owned(), session = session.clone() },
            create_console_session(&sha, &session)
        )
    }

    async fn find_console_session(&self, id_sha256: &str) -> StoreResult<Option<ConsoleSession>> {
        console_read!(self, find_console_session(id_sha256))
    }

    async fn touch_console_session(&self, id_sha256: &str, at: Millis) -> StoreResult<bool> {
        console_write!(
            self,
            { sha = id_sha256.to_owned() },
            touch_console_session(&sha, at)
        )
    }

    async fn delete_console_session(&self, id_sha256: &str) -> StoreResult<bool> {
        console_write!(
            self,
            { sha = id_sha256.to_owned() },
            delete_console_session(&sha)
        )
    }

    async fn delete_user_console_sessions(&self, user: &UserId) -> StoreResult<u64> {
        console_write!(
            self,
            { user = user.clone() },
            delete_user_console_sessions(&user)
        )
    }

    async fn delete_stale_console_sessions(
        &self,
        now: Millis,
        idle_before: Millis,
    ) -> StoreResult<u64> {
        console_write!(self, {}, delete_stale_console_sessions(now, idle_before))
    }

    async fn fleet_summary(
        &self,
        project: &ProjectId,
        now: Millis,
        window_ms: Millis,
    ) -> StoreResult<FleetSummary> {
        console_read!(self, fleet_summary(project, now, window_ms))
    }

    async fn query_desktops(
        &self,
        project: &ProjectId,
        query: &DesktopQuery,
        page: Page,
    ) -> StoreResult<(i64, Vec<AgentCondition>)> {
        console_read!(self, query_desktops(project, query, page))
    }

    async fn list_project_users(&self, project: &ProjectId) -> StoreResult<Vec<(User, Role)>> {
        console_read!(self, list_project_users(project))
    }

    async fn list_job_progress(
        &self,
        project: &ProjectId,
        page: Page,
    ) -> StoreResult<(i64, Vec<JobProgress>)> {
        console_read!(self, list_job_progress(project, page))
    }

    // ---- the audit trail ----

    #[tracing::instrument(skip_all, fields(backend = B::NAME))]
    async fn append_trace(&self, trace: &Trace) -> StoreResult<()> {
        write_quiet!(self, { trace = trace.clone() }, append_trace(&trace))
    }

    async fn refresh_statistics(&self) -> StoreResult<u64> {
        if <ConnOf<B> as Conn>::DIALECT != crate::conn::Dialect::Postgres {
            return Ok(0);
        }
        read_one!(self, refresh_statistics())
    }

    async fn chain_traces(&self, limit: u32) -> StoreResult<u64> {
        // Only PostgreSQL leaves traces to chain (`audit_ops::append_traces`): SQLite's
        // writer is not bothered.
        if <ConnOf<B> as Conn>::DIALECT != crate::conn::Dialect::Postgres {
            return Ok(0);
        }
        write_quiet!(self, {}, chain_traces(limit))
    }

    async fn list_traces(
        &self,
        project: &ProjectId,
        filter: &TraceFilter,
        limit: u32,
    ) -> StoreResult<Vec<Trace>> {
        read!(self, list_traces(project, filter, limit))
    }

    async fn trace_time(&self, project: &ProjectId, trace_id: &str) -> StoreResult<Option<Millis>> {
        read!(self, trace_time(project, trace_id))
    }

    async fn trace_chain(&self, from_seq: i64, limit: u32) -> StoreResult<Vec<StoredTrace>> {
        read!(self, trace_chain(from_seq, limit))
    }

    async fn trace_head(&self) -> StoreResult<TraceHead> {
        read!(self, trace_head())
    }

    async fn add_seal(&self, seal: &Seal) -> StoreResult<()> {
        write_quiet!(self, { seal = seal.clone() }, add_seal(&seal))
    }

    async fn list_seals(&self) -> StoreResult<Vec<Seal>> {
        read!(self, list_seals())
    }

    async fn prune_traces(&self, before: Millis) -> StoreResult<u64> {
        write_quiet!(self, {}, prune_traces(before))
    }
}
