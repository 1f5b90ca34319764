//! Operations on the agent (INSTALL, UPDATE, ROLLBACK, UNINSTALL), rollout limits,
//! RETRY and ROLLBACK bookkeeping, and the invocation listing.

use crate::harness::{Ctx, DELIVER, INSTALL, T0, at, claim, desktops, finish, job, project};
use deskfleet_core::ids::{DesktopId, ProjectId};
use deskfleet_core::job::{JobStatus, Operation, RolloutLimits, SubJobStatus};
use deskfleet_core::model::{
    AgentState, InvocationFilter, OperationSpec, OperationTarget, Outcome, Page, Rework,
    TargetResult,
};
use deskfleet_core::store::Store;
use deskfleet_proto::error::{ROLLOUT_STOPPED_CODE, TaskErrorCode};

fn spec(operation: Operation, version: Option<&str>) -> OperationSpec {
    OperationSpec {
        operation,
        target_version: version.map(str::to_owned),
        newest_of: None,
        limits: RolloutLimits::default(),
        exclusive: true,
    }
}

fn targets(ds: &[DesktopId]) -> Vec<OperationTarget> {
    ds.iter()
        .map(|d| OperationTarget {
            desktop: d.clone(),
            target_version: None,
            rollback_of: None,
        })
        .collect()
}

fn failed(why: &str) -> Outcome {
    Outcome::Failed {
        code: TaskErrorCode::InstallFailed.code().into(),
        reason: why.into(),
    }
}

async fn with_agent(s: &dyn Store, d: &DesktopId, version: &str) {
    let agent = AgentState {
        version: version.into(),
        healthy: true,
        reported_at: T0,
    };
    s.record_agent_state(d, Some(&agent)).await.unwrap();
}

async fn running(s: &dyn Store, p: &ProjectId, j: &deskfleet_core::ids::JobId) -> usize {
    let (_, subs) = job(s, p, j).await;
    subs.iter()
        .filter(|x| x.status == SubJobStatus::Running)
        .count()
}

pub async fn operations_record_versions_and_refuse_other_work_in_flight(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 3).await;
    with_agent(s, &ds[0], "0.1.0").await;
    let (j, results) = s
        .create_operation_job(
            &p,
            &targets(&ds[..2]),
            "batchUpdateCesAgent",
            &spec(Operation::Update, Some("0.2.0")),
            at(T0),
        )
        .await
        .unwrap();
    let j = j.expect("a job");
    assert_eq!((j.operation, j.sub_jobs_total), (Operation::Update, 2));
    assert!(
        results
            .iter()
            .all(|r| matches!(r, TargetResult::Created(_)))
    );
    let (_, subs) = job(s, &p, &j.id).await;
    let first = subs.iter().find(|x| x.desktop_id == ds[0]).unwrap();
    assert_eq!(first.operation, Operation::Update);
    assert_eq!(first.target_version.as_deref(), Some("0.2.0"));
    assert_eq!(first.current_version.as_deref(), Some("0.1.0"));
    let second = subs.iter().find(|x| x.desktop_id == ds[1]).unwrap();
    assert_eq!(second.current_version, None);

    // Another operation on a desktop with work in flight is refused, per target.
    let (j2, results) = s
        .create_operation_job(
            &p,
            &targets(&[ds[0].clone(), ds[2].clone()]),
            "batchUninstallCesAgent",
            &spec(Operation::Uninstall, None),
            at(T0 + 1),
        )
        .await
        .unwrap();
    match &results[0] {
        TargetResult::Busy {
            operation,
            target_version,
            ..
        } => assert_eq!(
            (*operation, target_version.as_deref()),
            (Operation::Update, Some("0.2.0"))
        ),
        other => panic!("expected busy, got {other:?}"),
    }
    assert!(matches!(results[1], TargetResult::Created(_)));
    assert_eq!(j2.unwrap().sub_jobs_total, 1);
    // The same operation and version follows; a Workspace install always follows.
    let (j3, results) = s
        .create_operation_job(
            &p,
            &targets(&ds[..1]),
            "batchUpdateCesAgent",
            &spec(Operation::Update, Some("0.2.0")),
            at(T0 + 2),
        )
        .await
        .unwrap();
    assert!(matches!(results[0], TargetResult::Created(_)));
    let (_, subs) = job(s, &p, &j3.unwrap().id).await;
    assert!(subs[0].follows.is_some());
    let ws = s
        .create_install_job_with(
            &p,
            &ds[..1],
            INSTALL,
            &OperationSpec::install(Some("0.3.0".into())),
            at(T0 + 3),
        )
        .await
        .unwrap();
    let (_, subs) = job(s, &p, &ws.id).await;
    assert!(subs[0].follows.is_some());
    assert_eq!(subs[0].target_version.as_deref(), Some("0.3.0"));
    // A desktop every target of which is busy makes no job.
    let (none, results) = s
        .create_operation_job(
            &p,
            &targets(&ds[..1]),
            "batchRollbackCesAgent",
            &spec(Operation::Rollback, Some("0.1.0")),
            at(T0 + 4),
        )
        .await
        .unwrap();
    assert!(none.is_none());
    assert!(matches!(results[0], TargetResult::Busy { .. }));
}

pub async fn max_concurrency_holds_the_rest_until_slots_free(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 5).await;
    let mut spec = OperationSpec::install(Some("0.1.0".into()));
    spec.limits.max_concurrency = Some(2);
    let j = s
        .create_install_job_with(&p, &ds, INSTALL, &spec, at(T0))
        .await
        .unwrap();
    assert_eq!(j.limits.max_concurrency, Some(2));
    // Only the first two are offered; the others are held and never time out.
    let waiting = s.desktops_with_waiting_work(100).await.unwrap();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    for d in &ds[2..] {
        assert!(
            s.claim_desktop_work(d, T0 + 1, T0 + 1000)
                .await
                .unwrap()
                .is_none(),
            "a held sub-job is not claimed"
        );
    }
    // Long execution deadlines: only the holding is under test here.
    let long = T0 + DELIVER * 100;
    let take = |d: &DesktopId, now| {
        let d = d.clone();
        async move {
            s.claim_desktop_work(&d, now, long)
                .await
                .unwrap()
                .expect("work waits for the desktop")
        }
    };
    let a = take(&ds[0], T0 + 1).await;
    let b = take(&ds[1], T0 + 1).await;
    assert_eq!(running(s, &p, &j.id).await, 2);
    let swept = s.expire_overdue(T0 + DELIVER * 10).await.unwrap();
    assert_eq!(swept.total(), 0, "held work does not time out");
    assert_eq!(running(s, &p, &j.id).await, 2);
    // A slot frees: the sweep releases exactly one more.
    finish(s, &a.id, &Outcome::Success, T0 + DELIVER * 10 + 1).await;
    let now = T0 + DELIVER * 10 + 2;
    s.expire_overdue(now).await.unwrap();
    let waiting = s.desktops_with_waiting_work(100).await.unwrap();
    assert_eq!(waiting, vec![ds[2].clone()]);
    let c = take(&ds[2], now).await;
    assert_eq!(running(s, &p, &j.id).await, 2);
    s.expire_overdue(now + 1).await.unwrap();
    assert!(s.desktops_with_waiting_work(100).await.unwrap().is_empty());
    finish(s, &b.id, &Outcome::Success, now + 2).await;
    finish(s, &c.id, &Outcome::Success, now + 2).await;
    s.expire_overdue(now + 3).await.unwrap();
    assert_eq!(s.desktops_with_waiting_work(100).await.unwrap().len(), 2);
    let d = take(&ds[3], now + 4).await;
    let e = take(&ds[4], now + 4).await;
    assert_eq!(running(s, &p, &j.id).await, 2);
    finish(s, &d.id, &Outcome::Success, now + 5).await;
    finish(s, &e.id, &Outcome::Success, now + 5).await;
    let (j, _) = job(s, &p, &j.id).await;
    assert_eq!(j.status, JobStatus::Success);
}

pub async fn max_errors_stops_the_targets_not_started(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 6).await;
    let mut spec = OperationSpec::install(Some("0.1.0".into()));
    spec.limits = RolloutLimits {
        max_concurrency: Some(3),
        max_errors: Some(1),
    };
    let j = s
        .create_install_job_with(&p, &ds, INSTALL, &spec, at(T0))
        .await
        .unwrap();
    let a = claim(s, &ds[0], T0 + 1).await;
    let b = claim(s, &ds[1], T0 + 1).await;
    let c = claim(s, &ds[2], T0 + 1).await;
    finish(s, &a.id, &failed("agent-exited: boom"), T0 + 2).await;
    // One failure is within max_errors: the rollout goes on.
    s.expire_overdue(T0 + 3).await.unwrap();
    assert_eq!(
        s.desktops_with_waiting_work(10).await.unwrap(),
        vec![ds[3].clone()]
    );
    finish(s, &b.id, &failed("agent-unhealthy: no"), T0 + 4).await;
    // Two exceed it: nothing more starts, and the sweep ends what was not started.
    assert!(
        s.claim_desktop_work(&ds[3], T0 + 5, T0 + 1000)
            .await
            .unwrap()
            .is_none()
    );
    s.expire_overdue(T0 + 6).await.unwrap();
    let (_, subs) = job(s, &p, &j.id).await;
    for d in &ds[3..] {
        let sub = subs.iter().find(|x| &x.desktop_id == d).unwrap();
        assert_eq!(sub.status, SubJobStatus::Failed);
        assert_eq!(sub.error_code.as_deref(), Some(ROLLOUT_STOPPED_CODE));
        let reason = sub.fail_reason.as_deref().unwrap();
        assert!(reason.starts_with("rollout stopped"), "{reason}");
        assert!(reason.contains("max_errors"), "{reason}");
    }
    // The one in flight finishes.
    assert_eq!(running(s, &p, &j.id).await, 1);
    finish(s, &c.id, &Outcome::Success, T0 + 7).await;
    let (j, _) = job(s, &p, &j.id).await;
    assert_eq!(j.status, JobStatus::Fail);
    // A retry runs the stopped job again.
    assert_eq!(s.retry_job(&p, &j.id, at(T0 + 8)).await.unwrap(), 5);
    assert_eq!(claim(s, &ds[3], T0 + 9).await.desktop_id, ds[3]);
}

pub async fn retry_takes_only_failed_invocations_back(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let (j, results) = s
        .create_operation_job(
            &p,
            &targets(&ds),
            "batchUpdateCesAgent",
            &spec(Operation::Update, Some("0.2.0")),
            at(T0),
        )
        .await
        .unwrap();
    let j = j.unwrap();
    let ids: Vec<_> = results
        .iter()
        .map(|r| match r {
            TargetResult::Created(id) => id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let a = claim(s, &ds[0], T0 + 1).await;
    finish(
        s,
        &a.id,
        &failed("version-mismatch: reported 0.1.0"),
        T0 + 2,
    )
    .await;
    let other = project(s, "other").await;
    let unknown = deskfleet_core::ids::SubJobId::parse("nope").unwrap();
    let answers = s
        .retry_sub_jobs(&p, &[ids[0].clone(), ids[1].clone(), unknown], at(T0 + 3))
        .await
        .unwrap();
    assert_eq!(answers[0], Rework::Retried);
    assert!(matches!(&answers[1], Rework::NotAllowed(why) if why.contains("WAITING")));
    assert_eq!(answers[2], Rework::NotFound);
    assert_eq!(
        s.retry_sub_jobs(&other, &ids[..1], at(T0 + 3))
            .await
            .unwrap(),
        vec![Rework::NotFound],
        "another project's invocation is unknown"
    );
    let sub = claim(s, &ds[0], T0 + 4).await;
    assert_eq!((sub.id.clone(), sub.attempts), (ids[0].clone(), 1));
    assert_eq!(sub.target_version.as_deref(), Some("0.2.0"));
    let (j, _) = job(s, &p, &j.id).await;
    assert_eq!(j.status, JobStatus::Running);
    // A canceled invocation is not retried.
    assert_eq!(s.cancel_job(&p, &j.id, T0 + 5).await.unwrap(), 1);
    let answers = s.retry_sub_jobs(&p, &ids[1..], at(T0 + 6)).await.unwrap();
    assert!(matches!(&answers[0], Rework::NotAllowed(why) if why.contains("CANCELED")));
}

pub async fn a_successful_rollback_marks_what_it_undid(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 1).await;
    with_agent(s, &ds[0], "0.1.0").await;
    let (_, results) = s
        .create_operation_job(
            &p,
            &targets(&ds),
            "batchUpdateCesAgent",
            &spec(Operation::Update, Some("0.2.0")),
            at(T0),
        )
        .await
        .unwrap();
    let TargetResult::Created(update) = results[0].clone() else {
        panic!()
    };
    let a = claim(s, &ds[0], T0 + 1).await;
    finish(s, &a.id, &Outcome::Success, T0 + 2).await;
    let target = OperationTarget {
        desktop: ds[0].clone(),
        target_version: Some("0.1.0".into()),
        rollback_of: Some(update.clone()),
    };
    let (_, results) = s
        .create_operation_job(
            &p,
            &[target],
            "batchRollbackCesAgent",
            &spec(Operation::Rollback, None),
            at(T0 + 3),
        )
        .await
        .unwrap();
    let TargetResult::Created(rollback) = results[0].clone() else {
        panic!()
    };
    let r = claim(s, &ds[0], T0 + 4).await;
    assert_eq!(r.id, rollback);
    assert_eq!(r.operation, Operation::Rollback);
    assert_eq!(r.target_version.as_deref(), Some("0.1.0"));
    assert_eq!(r.rollback_of.as_ref(), Some(&update));
    let before = s
        .get_sub_jobs(&p, std::slice::from_ref(&update))
        .await
        .unwrap();
    assert_eq!(before[0].rolled_back_at, None);
    finish(s, &r.id, &Outcome::Success, T0 + 5).await;
    let after = s
        .get_sub_jobs(&p, std::slice::from_ref(&update))
        .await
        .unwrap();
    assert_eq!(after[0].rolled_back_at, Some(T0 + 5));
}

pub async fn invocations_list_filters_pages_and_forgets_old_ones(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 3).await;
    s.create_install_job(&p, &ds, INSTALL, at(T0))
        .await
        .unwrap();
    let (_, results) = s
        .create_operation_job(
            &p,
            &targets(&ds[..1]),
            "batchUninstallCesAgent",
            &spec(Operation::Uninstall, None),
            at(T0 + 10),
        )
        .await
        .unwrap();
    assert!(matches!(results[0], TargetResult::Busy { .. }));
    let all = InvocationFilter {
        created_since: T0,
        ..InvocationFilter::default()
    };
    let page = Page {
        limit: 2,
        offset: 0,
    };
    let (n, rows) = s.list_invocations(&p, &all, page).await.unwrap();
    assert_eq!((n, rows.len()), (3, 2));
    let (_, rest) = s
        .list_invocations(
            &p,
            &all,
            Page {
                limit: 2,
                offset: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    let mine = InvocationFilter {
        desktop: Some(ds[1].clone()),
        ..all.clone()
    };
    let (n, rows) = s.list_invocations(&p, &mine, page).await.unwrap();
    assert_eq!((n, rows[0].desktop_id.clone()), (1, ds[1].clone()));
    let by_id = InvocationFilter {
        sub_job: Some(rows[0].id.clone()),
        ..all.clone()
    };
    assert_eq!(s.list_invocations(&p, &by_id, page).await.unwrap().0, 1);
    let updates = InvocationFilter {
        operation: Some(Operation::Update),
        ..all.clone()
    };
    assert_eq!(s.list_invocations(&p, &updates, page).await.unwrap().0, 0);
    let installs = InvocationFilter {
        operation: Some(Operation::Install),
        ..all.clone()
    };
    assert_eq!(s.list_invocations(&p, &installs, page).await.unwrap().0, 3);
    let recent = InvocationFilter {
        created_since: T0 + 1,
        ..all.clone()
    };
    assert_eq!(s.list_invocations(&p, &recent, page).await.unwrap().0, 0);
    let other = project(s, "other").await;
    assert_eq!(s.list_invocations(&other, &all, page).await.unwrap().0, 0);
}

/// Several writers at once, as several server replicas on one database would be: sweeps
/// releasing held work, claims and results race, and the window still holds.
pub async fn max_concurrency_holds_under_racing_sweeps_and_claims(ctx: Ctx) {
    let s = ctx.store.clone();
    let p = project(&*s, "main").await;
    let ds = desktops(&*s, &p, 16).await;
    let mut spec = OperationSpec::install(Some("0.1.0".into()));
    spec.limits.max_concurrency = Some(3);
    let j = s
        .create_install_job_with(&p, &ds, INSTALL, &spec, at(T0))
        .await
        .unwrap();
    let workers = 4;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (s, p, ds, job) = (s.clone(), p.clone(), ds.clone(), j.id.clone());
            tokio::spawn(async move {
                let mut most = 0;
                let mut mine: Vec<deskfleet_core::ids::SubJobId> = Vec::new();
                for round in 0..400_i64 {
                    let now = T0 + 1 + round;
                    s.expire_overdue(now).await.unwrap();
                    // What this worker ran last round ends now; then it takes more.
                    for id in mine.drain(..) {
                        s.finish_sub_job(&id, &Outcome::Success, now).await.unwrap();
                    }
                    for d in ds.iter().skip(w).step_by(workers) {
                        if let Some(sub) =
                            s.claim_desktop_work(d, now, now + 600_000).await.unwrap()
                        {
                            mine.push(sub.id);
                        }
                    }
                    let (j, subs) = s.get_job(&p, &job).await.unwrap().unwrap();
                    let running = subs
                        .iter()
                        .filter(|x| x.status == SubJobStatus::Running)
                        .count();
                    most = most.max(running);
                    if j.status.is_terminal() {
                        break;
                    }
                }
                most
            })
        })
        .collect();
    for t in tasks {
        let most = t.await.unwrap();
        assert!(most <= 3, "{most} sub-jobs of the job ran at once");
    }
    let (j, _) = job(&*s, &p, &j.id).await;
    assert_eq!(j.status, JobStatus::Success);
}

/// An install asked for the newest version gets the newest published, not withdrawn, one
/// as its own write reads it: a later publication or withdrawal moves it, and with none
/// published no version is recorded.
pub async fn an_install_of_the_newest_version_reads_it_when_written(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 1).await;
    let newest = OperationSpec {
        newest_of: Some("deskfleet-monitor"),
        ..OperationSpec::install(None)
    };
    // The version the sub-job of a new install with `spec` records.
    async fn installs(
        s: &dyn Store,
        p: &ProjectId,
        d: &DesktopId,
        spec: &OperationSpec,
        n: i64,
    ) -> Option<String> {
        let created = s
            .create_install_job_with(p, std::slice::from_ref(d), INSTALL, spec, at(T0 + n))
            .await
            .unwrap();
        let (_, subs) = job(s, p, &created.id).await;
        let recorded = subs[0].target_version.clone();
        if spec.target_version.is_none() {
            // What the write chose is what the store answers as the newest version.
            assert_eq!(
                s.newest_version("deskfleet-monitor").await.unwrap(),
                recorded
            );
        }
        recorded
    }
    assert_eq!(installs(s, &p, &ds[0], &newest, 0).await, None);
    const LINUX: &str = "linux-x86_64";
    let v1 = crate::fleet::package("p1", "1.0.0", LINUX, T0, b"v1");
    let v2 = crate::fleet::package("p2", "2.0.0", "linux-aarch64", T0 + 10, b"v2");
    s.publish_package(&v1, b"v1").await.unwrap();
    assert_eq!(
        installs(s, &p, &ds[0], &newest, 1).await.as_deref(),
        Some("1.0.0")
    );
    // The newest of any platform.
    s.publish_package(&v2, b"v2").await.unwrap();
    assert_eq!(
        installs(s, &p, &ds[0], &newest, 2).await.as_deref(),
        Some("2.0.0")
    );
    // A given version is kept as given.
    let given = OperationSpec {
        target_version: Some("1.0.0".into()),
        ..newest.clone()
    };
    assert_eq!(
        installs(s, &p, &ds[0], &given, 3).await.as_deref(),
        Some("1.0.0")
    );
    s.set_package_withdrawn("deskfleet-monitor", "2.0.0", Some(T0 + 20))
        .await
        .unwrap();
    assert_eq!(
        installs(s, &p, &ds[0], &newest, 4).await.as_deref(),
        Some("1.0.0")
    );
    // Built at the same time as 1.0.0 and published after it: the last published.
    let v3 = crate::fleet::package("p3", "1.0.1", LINUX, T0, b"v3");
    s.publish_package(&v3, b"v3").await.unwrap();
    assert_eq!(
        installs(s, &p, &ds[0], &newest, 5).await.as_deref(),
        Some("1.0.1")
    );
}
