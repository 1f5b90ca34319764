//! Gives each test a fresh store of one backend, and helpers to fill it.
//!
//! SQLite: a new file in a temporary directory. PostgreSQL (only when `TEST_DATABASE_URL`
//! is set): a new database `df_test_<random>` created through that URL and dropped after
//! the test, pass or fail.

use deskfleet_core::clock::Millis;
use deskfleet_core::ids::{DesktopId, JobId, ProjectId, SubJobId};
use deskfleet_core::model::{Job, NewDesktop, Outcome, Page, SubJob, Tag};
use deskfleet_core::store::{Deadlines, Store};
use sqlx::{Connection, Executor};
use std::future::Future;
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What a test gets: a store, and the means to close and reopen it.
pub struct Ctx {
    pub store: Arc<dyn Store>,
    url: String,
}

impl Ctx {
    /// The database's URL, for tests that reach it behind the store's back (tampering
    /// with rows, faking a newer schema).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops this store (every handle to it must be gone) and opens the same database again.
    pub async fn reopen(self) -> Ctx {
        let Ctx { store, url } = self;
        assert_eq!(Arc::strong_count(&store), 1, "a store handle is still held");
        drop(store);
        let store = deskfleet_store::connect(&url)
            .await
            .expect("reopen the store");
        Ctx { store, url }
    }
}

/// Runs `test` against a fresh store of `backend`. The test body runs as its own task so
/// that the database is cleaned up even when it panics; the panic is then re-raised.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("deskfleet.db").display());
            let store = deskfleet_store::connect(&url).await.expect("open sqlite");
            assert_eq!(store.backend(), "sqlite");
            let outcome = tokio::spawn(test(Ctx { store, url })).await;
            drop(dir);
            reraise(outcome);
        }
        Backend::Postgres => {
            let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
                eprintln!("skipped: TEST_DATABASE_URL not set");
                return;
            };
            let name = format!("df_test_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("connect to TEST_DATABASE_URL");
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("create the test database");
            let url = with_database(&admin_url, &name);
            let store = deskfleet_store::connect(&url).await.expect("open postgres");
            assert_eq!(store.backend(), "postgres");
            let outcome = tokio::spawn(test(Ctx { store, url })).await;
            // FORCE ends the connections the dropped store's pool may still hold.
            admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .expect("drop the test database");
            reraise(outcome);
        }
    }
}

fn reraise(outcome: Result<(), tokio::task::JoinError>) {
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task did not finish: {e}"),
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

// ---- fixtures ----

/// An arbitrary "now" for tests; time only moves when a test says so.
pub const T0: Millis = 1_700_000_000_000;
/// The delivery timeout tests use.
pub const DELIVER: Millis = 60_000;
/// The execution timeout tests use.
pub const EXECUTE: Millis = 30_000;
pub const INSTALL: &str = "batchInstallCesAgent";

pub fn at(now: Millis) -> Deadlines {
    Deadlines {
        now,
        deliver_by: now + DELIVER,
    }
}

pub fn all() -> Page {
    Page {
        limit: 100_000,
        offset: 0,
    }
}

pub fn page(limit: u32, offset: u32) -> Page {
    Page { limit, offset }
}

pub fn new_desktop(name: &str, ip: &str) -> NewDesktop {
    NewDesktop {
        computer_name: name.to_owned(),
        ip_address: ip.to_owned(),
        os_type: "Windows".to_owned(),
        tags: vec![Tag {
            key: "team".to_owned(),
            value: "ops".to_owned(),
        }],
        enterprise_project_id: None,
    }
}

/// A project in a domain of its own.
pub async fn project(store: &dyn Store, name: &str) -> ProjectId {
    let domain = store
        .create_domain(&format!("domain-of-{name}"))
        .await
        .expect("create domain");
    store
        .create_project(&domain.id, name)
        .await
        .expect("create project")
        .id
}

/// `n` desktops `pc-0`.. in `project`, imported at `T0`.
pub async fn desktops(store: &dyn Store, project: &ProjectId, n: usize) -> Vec<DesktopId> {
    let new: Vec<NewDesktop> = (0..n)
        .map(|i| new_desktop(&format!("pc-{i}"), &format!("10.0.0.{i}")))
        .collect();
    store
        .import_desktops(project, &new, T0)
        .await
        .expect("import desktops")
        .into_iter()
        .map(|d| d.id)
        .collect()
}

/// A job that must exist, with its sub-jobs.
pub async fn job(store: &dyn Store, project: &ProjectId, id: &JobId) -> (Job, Vec<SubJob>) {
    store
        .get_job(project, id)
        .await
        .expect("get job")
        .expect("the job exists")
}

/// The sub-job of `desktop` in a job.
pub async fn sub_job_of(
    store: &dyn Store,
    project: &ProjectId,
    job_id: &JobId,
    desktop: &DesktopId,
) -> SubJob {
    let (_, subs) = job(store, project, job_id).await;
    subs.into_iter()
        .find(|s| &s.desktop_id == desktop)
        .expect("a sub-job for the desktop")
}

/// Creates an install job that must succeed, with the test deadlines from `now`.
pub async fn install(
    store: &dyn Store,
    project: &ProjectId,
    desktops: &[DesktopId],
    now: Millis,
) -> Job {
    store
        .create_install_job(project, desktops, INSTALL, at(now))
        .await
        .expect("create install job")
}

/// Claims the work waiting for `desktop`, which must exist, with an execution deadline of
/// `now + EXECUTE`.
pub async fn claim(store: &dyn Store, desktop: &DesktopId, now: Millis) -> SubJob {
    store
        .claim_desktop_work(desktop, now, now + EXECUTE)
        .await
        .expect("claim")
        .expect("work waits for the desktop")
}

/// Ends a RUNNING sub-job; it must have been running.
pub async fn finish(store: &dyn Store, sub_job: &SubJobId, outcome: &Outcome, now: Millis) {
    assert!(
        store
            .finish_sub_job(sub_job, outcome, now)
            .await
            .expect("finish"),
        "sub-job {sub_job} was not running"
    );
}
