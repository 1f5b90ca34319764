use crate::harness::{
    Ctx, DELIVER, EXECUTE, INSTALL, T0, all, at, claim, desktops, finish, install, job, page,
    project, sub_job_of,
};
use deskfleet_core::ids::{DesktopId, JobId, SubJobId};
use deskfleet_core::job::{JobStatus, Stage, SubJobStatus};
use deskfleet_core::model::{Outcome, SubJobFilter, SubJobSelector};
use deskfleet_core::store::StoreError;
use deskfleet_proto::error::TaskErrorCode;

pub async fn create_writes_the_job_and_its_sub_jobs(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 3).await;
    let asked = vec![ds[2].clone(), ds[0].clone(), ds[1].clone()];
    let created = install(s, &p, &asked, T0).await;
    assert_eq!(created.status, JobStatus::Waiting);
    assert_eq!(created.sub_jobs_total, 3);
    assert_eq!(created.created_at, T0);
    assert_eq!(created.job_type, INSTALL);
    assert_eq!(
        (created.begin_time, created.end_time),
        (Some(T0), None),
        "a job begins when it is accepted"
    );

    let (stored, subs) = job(s, &p, &created.id).await;
    assert_eq!(stored, created);
    let order: Vec<&DesktopId> = subs.iter().map(|s| &s.desktop_id).collect();
    assert_eq!(
        order,
        asked.iter().collect::<Vec<_>>(),
        "sub-jobs in request order"
    );
    for (i, sub) in subs.iter().enumerate() {
        assert_eq!(sub.job_id, created.id);
        assert_eq!(sub.job_type, INSTALL);
        assert_eq!(sub.project_id, p);
        assert_eq!(sub.status, SubJobStatus::Waiting);
        assert_eq!(sub.stage, Stage::Queued);
        assert_eq!(sub.process, 0);
        assert_eq!(sub.attempts, 0);
        assert_eq!(sub.follows, None);
        assert_eq!((sub.begin_time, sub.end_time), (None, None));
        assert_eq!(
            (sub.error_code.as_deref(), sub.fail_reason.as_deref()),
            (None, None)
        );
        assert_eq!(sub.created_at, T0);
        let desktop = s.get_desktop(&p, &asked[i]).await.unwrap().unwrap();
        assert_eq!(sub.desktop_name, desktop.computer_name);
        assert_eq!(sub.ip_address, desktop.ip_address);
    }
    let (total, listed) = s
        .list_sub_jobs(&p, &SubJobFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(total, 3);
    assert_eq!(listed.len(), 3);
}

pub async fn unknown_desktops_write_nothing(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let ghost1 = DesktopId::parse("ghost-1").unwrap();
    let ghost2 = DesktopId::parse("ghost-2").unwrap();
    let asked = vec![ghost2.clone(), ds[0].clone(), ghost1.clone(), ds[1].clone()];
    match s.create_install_job(&p, &asked, INSTALL, at(T0)).await {
        Err(StoreError::UnknownDesktops(unknown)) => {
            assert_eq!(
                unknown,
                ["ghost-2", "ghost-1"],
                "the unknown ids, in request order"
            )
        }
        other => panic!("expected UnknownDesktops, got {other:?}"),
    }
    assert_eq!(
        s.list_sub_jobs(&p, &SubJobFilter::default(), all())
            .await
            .unwrap()
            .0,
        0
    );
    // Nothing was left in flight either: a new job for the known desktops leads.
    let j = install(s, &p, &ds, T0).await;
    let (_, subs) = job(s, &p, &j.id).await;
    assert!(subs.iter().all(|s| s.follows.is_none()));
    assert_eq!(
        s.list_sub_jobs(&p, &SubJobFilter::default(), all())
            .await
            .unwrap()
            .0,
        2
    );
}

pub async fn another_projects_desktop_is_unknown(ctx: Ctx) {
    let s = &*ctx.store;
    let a = project(s, "a").await;
    let b = project(s, "b").await;
    let da = desktops(s, &a, 1).await;
    let db = desktops(s, &b, 1).await;
    match s
        .create_install_job(&a, &[da[0].clone(), db[0].clone()], INSTALL, at(T0))
        .await
    {
        Err(StoreError::UnknownDesktops(unknown)) => assert_eq!(unknown, [db[0].to_string()]),
        other => panic!("expected UnknownDesktops, got {other:?}"),
    }
    for p in [&a, &b] {
        assert_eq!(
            s.list_sub_jobs(p, &SubJobFilter::default(), all())
                .await
                .unwrap()
                .0,
            0
        );
    }
    assert!(
        s.claim_desktop_work(&da[0], T0, T0 + EXECUTE)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn list_sub_jobs_filters_and_pages_newest_first(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 4).await;
    let older = install(s, &p, &ds[..2], T0).await;
    let newer = s
        .create_install_job(&p, &ds[2..], "otherJob", at(T0 + 10))
        .await
        .unwrap();
    let claimed = s
        .claim_desktop_work(&ds[0], T0 + 20, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();

    let (total, subs) = s
        .list_sub_jobs(&p, &SubJobFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(total, 4);
    let jobs: Vec<&JobId> = subs.iter().map(|s| &s.job_id).collect();
    assert_eq!(
        jobs,
        [&newer.id, &newer.id, &older.id, &older.id],
        "newest first"
    );

    let pr = &p;
    let list = |f: SubJobFilter| async move { s.list_sub_jobs(pr, &f, all()).await.unwrap() };
    let (n, running) = list(SubJobFilter {
        statuses: vec![SubJobStatus::Running],
        ..Default::default()
    })
    .await;
    assert_eq!(n, 1);
    assert_eq!(running[0].id, claimed.id);
    let either = vec![SubJobStatus::Running, SubJobStatus::Waiting];
    assert_eq!(
        list(SubJobFilter {
            statuses: either,
            ..Default::default()
        })
        .await
        .0,
        4
    );
    assert_eq!(
        list(SubJobFilter {
            statuses: vec![SubJobStatus::Failed],
            ..Default::default()
        })
        .await
        .0,
        0
    );
    let (n, of_older) = list(SubJobFilter {
        job_id: Some(older.id.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(n, 2);
    assert!(of_older.iter().all(|s| s.job_id == older.id));
    let (n, other) = list(SubJobFilter {
        job_type: Some("otherJob".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(n, 2);
    assert!(
        other
            .iter()
            .all(|s| s.job_type == "otherJob" && s.job_id == newer.id)
    );
    let both = SubJobFilter {
        statuses: vec![SubJobStatus::Waiting],
        job_id: Some(older.id.clone()),
        job_type: Some(INSTALL.into()),
    };
    assert_eq!(list(both).await.0, 1);

    let (total, first) = s
        .list_sub_jobs(&p, &SubJobFilter::default(), page(3, 0))
        .await
        .unwrap();
    let (_, rest) = s
        .list_sub_jobs(&p, &SubJobFilter::default(), page(3, 3))
        .await
        .unwrap();
    assert_eq!((total, first.len(), rest.len()), (4, 3, 1));
    let paged: Vec<SubJobId> = first.into_iter().chain(rest).map(|s| s.id).collect();
    assert_eq!(paged, subs.into_iter().map(|s| s.id).collect::<Vec<_>>());
}

pub async fn delete_removes_only_finished_records(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 3).await;
    let j = install(s, &p, &ds, T0).await;
    let ok = claim(s, &ds[0], T0).await;
    finish(s, &ok.id, &Outcome::Success, T0 + 1).await;
    let bad = claim(s, &ds[1], T0).await;
    let failed = Outcome::Failed {
        code: "WKS.00990008".into(),
        reason: "unpack failed".into(),
    };
    finish(s, &bad.id, &failed, T0 + 2).await;
    let waiting = sub_job_of(s, &p, &j.id, &ds[2]).await;
    let (before, _) = job(s, &p, &j.id).await;
    assert_eq!(before.status, JobStatus::Running);

    assert_eq!(
        s.delete_sub_jobs(&p, &SubJobSelector::Status(SubJobStatus::Waiting))
            .await
            .unwrap(),
        0,
        "work in flight is never deleted"
    );
    let ids = vec![
        ok.id.clone(),
        waiting.id.clone(),
        bad.id.clone(),
        SubJobId::generate(),
    ];
    assert_eq!(
        s.delete_sub_jobs(&p, &SubJobSelector::Ids(ids.clone()))
            .await
            .unwrap(),
        2
    );
    let (after, subs) = job(s, &p, &j.id).await;
    assert_eq!(
        subs.iter().map(|s| &s.id).collect::<Vec<_>>(),
        [&waiting.id]
    );
    assert_eq!(after, before, "the job keeps its status and total");
    assert_eq!(
        s.list_sub_jobs(&p, &SubJobFilter::default(), all())
            .await
            .unwrap()
            .0,
        1
    );
    assert_eq!(
        s.delete_sub_jobs(&p, &SubJobSelector::Ids(ids))
            .await
            .unwrap(),
        0
    );

    // By status: only that status goes.
    let j2 = install(s, &p, &ds[..2], T0 + 10).await;
    for d in &ds[..2] {
        let sub = s
            .claim_desktop_work(d, T0 + 11, T0 + EXECUTE)
            .await
            .unwrap()
            .unwrap();
        finish(s, &sub.id, &Outcome::Success, T0 + 12).await;
    }
    assert_eq!(
        s.delete_sub_jobs(&p, &SubJobSelector::Status(SubJobStatus::Failed))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.delete_sub_jobs(&p, &SubJobSelector::Status(SubJobStatus::Success))
            .await
            .unwrap(),
        2
    );
    let (j2_after, subs) = job(s, &p, &j2.id).await;
    assert!(subs.is_empty());
    assert_eq!(
        (j2_after.status, j2_after.sub_jobs_total),
        (JobStatus::Success, 2)
    );
    assert_eq!(
        s.delete_sub_jobs(&p, &SubJobSelector::Ids(vec![]))
            .await
            .unwrap(),
        0
    );
}

pub async fn retry_requeues_only_failed_sub_jobs(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let j = install(s, &p, &ds, T0).await;
    let ok = s
        .claim_desktop_work(&ds[0], T0 + 1, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    finish(s, &ok.id, &Outcome::Success, T0 + 2).await;
    s.expire_overdue(T0 + DELIVER + 1).await.unwrap();
    let (failed_job, _) = job(s, &p, &j.id).await;
    assert_eq!(failed_job.status, JobStatus::Fail);
    assert!(failed_job.end_time.is_some());

    let later = T0 + DELIVER + 100;
    assert_eq!(s.retry_job(&p, &j.id, at(later)).await.unwrap(), 1);
    let (retried, subs) = job(s, &p, &j.id).await;
    assert_eq!(
        retried.status,
        JobStatus::Running,
        "one succeeded, one waits again"
    );
    assert_eq!(retried.end_time, None);
    assert_eq!((retried.error_code, retried.fail_reason), (None, None));
    assert_eq!(
        (retried.begin_time, failed_job.begin_time),
        (Some(T0), Some(T0)),
        "began when it was accepted"
    );
    assert_eq!(subs[0].status, SubJobStatus::Success);
    assert_eq!(subs[0].attempts, 0);
    let again = &subs[1];
    assert_eq!(again.status, SubJobStatus::Waiting);
    assert_eq!(
        (again.stage, again.process, again.attempts),
        (Stage::Queued, 0, 1)
    );
    assert_eq!(
        (again.error_code.as_deref(), again.fail_reason.as_deref()),
        (None, None)
    );
    assert_eq!((again.end_time, again.follows.as_ref()), (None, None));

    // It got a new delivery deadline, counted from the retry.
    let quiet = s.expire_overdue(later + DELIVER).await.unwrap();
    assert_eq!(quiet.total(), 0);
    assert_eq!(
        s.retry_job(&p, &j.id, at(later)).await.unwrap(),
        0,
        "nothing failed now"
    );
    let sub = s
        .claim_desktop_work(&ds[1], later + 1, later + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.id, again.id);
    finish(s, &sub.id, &Outcome::Success, later + 2).await;
    let (done, _) = job(s, &p, &j.id).await;
    assert_eq!(
        (done.status, done.end_time),
        (JobStatus::Success, Some(later + 2))
    );

    assert!(matches!(
        s.retry_job(&p, &JobId::generate(), at(later)).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn retry_follows_an_install_in_flight(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 1).await;
    let first = install(s, &p, &ds, T0).await;
    s.expire_overdue(T0 + DELIVER + 1).await.unwrap();
    let t1 = T0 + DELIVER + 10;
    let second = install(s, &p, &ds, t1).await;
    let leader = sub_job_of(s, &p, &second.id, &ds[0]).await;
    assert_eq!(leader.follows, None, "nothing was in flight any more");

    assert_eq!(s.retry_job(&p, &first.id, at(t1 + 1)).await.unwrap(), 1);
    let retried = sub_job_of(s, &p, &first.id, &ds[0]).await;
    assert_eq!(retried.status, SubJobStatus::Waiting);
    assert_eq!(
        retried.follows,
        Some(leader.id.clone()),
        "the desktop is not installed twice"
    );

    let claimed = s
        .claim_desktop_work(&ds[0], t1 + 2, t1 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, leader.id);
    assert!(
        s.claim_desktop_work(&ds[0], t1 + 2, t1 + EXECUTE)
            .await
            .unwrap()
            .is_none()
    );
    finish(s, &leader.id, &Outcome::Success, t1 + 3).await;
    for j in [&first, &second] {
        let (done, subs) = job(s, &p, &j.id).await;
        assert_eq!(done.status, JobStatus::Success);
        assert_eq!(subs[0].status, SubJobStatus::Success);
    }
}

pub async fn cancel_ends_only_waiting_and_promotes_a_follower(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let (a, b) = (&ds[0], &ds[1]);
    let j1 = install(s, &p, &ds, T0).await;
    let running = s
        .claim_desktop_work(a, T0 + 1, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    let j2 = install(s, &p, std::slice::from_ref(b), T0 + 2).await;
    let j3 = install(s, &p, std::slice::from_ref(b), T0 + 3).await;
    let leader = sub_job_of(s, &p, &j1.id, b).await;
    let f2 = sub_job_of(s, &p, &j2.id, b).await;
    let f3 = sub_job_of(s, &p, &j3.id, b).await;
    assert_eq!(f2.follows.as_ref(), Some(&leader.id));
    assert_eq!(f3.follows.as_ref(), Some(&leader.id));

    assert_eq!(
        s.cancel_job(&p, &j1.id, T0 + 5).await.unwrap(),
        1,
        "only the waiting one"
    );
    let (j1_now, subs) = job(s, &p, &j1.id).await;
    assert_eq!(
        subs[0].status,
        SubJobStatus::Running,
        "work already started is not canceled"
    );
    assert_eq!(subs[0].id, running.id);
    let canceled = &subs[1];
    assert_eq!(canceled.status, SubJobStatus::Failed);
    assert_eq!(
        canceled.error_code.as_deref(),
        Some(TaskErrorCode::Canceled.code())
    );
    assert_eq!(
        canceled.fail_reason.as_deref(),
        Some("canceled by the user before it started")
    );
    assert_eq!(canceled.end_time, Some(T0 + 5));
    assert_eq!(j1_now.status, JobStatus::Running);

    // The oldest follower took over; the other follows it now.
    let f2 = sub_job_of(s, &p, &j2.id, b).await;
    let f3 = sub_job_of(s, &p, &j3.id, b).await;
    assert_eq!(f2.follows, None);
    assert_eq!(f2.status, SubJobStatus::Waiting);
    assert_eq!(f3.follows, Some(f2.id.clone()));
    let claimed = s
        .claim_desktop_work(b, T0 + 6, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, f2.id);
    let f3 = sub_job_of(s, &p, &j3.id, b).await;
    assert_eq!(
        (f3.status, f3.stage),
        (SubJobStatus::Running, Stage::Delivered)
    );

    assert_eq!(s.cancel_job(&p, &j1.id, T0 + 7).await.unwrap(), 0);
    assert_eq!(
        s.cancel_job(&p, &j2.id, T0 + 7).await.unwrap(),
        0,
        "j2 is running"
    );
    assert!(matches!(
        s.cancel_job(&p, &JobId::generate(), T0).await,
        Err(StoreError::NotFound)
    ));
    // Canceling the whole of a waiting job ends it FAIL, with the cancel as its reason.
    let j4 = install(s, &p, std::slice::from_ref(b), T0 + 8).await;
    assert_eq!(s.cancel_job(&p, &j4.id, T0 + 9).await.unwrap(), 1);
    let (j4_now, _) = job(s, &p, &j4.id).await;
    assert_eq!(j4_now.status, JobStatus::Fail);
    assert_eq!(
        j4_now.error_code.as_deref(),
        Some(TaskErrorCode::Canceled.code())
    );
    assert_eq!(j4_now.end_time, Some(T0 + 9));
    assert!(
        j4_now
            .fail_reason
            .unwrap()
            .starts_with("1 of 1 sub-jobs failed")
    );
}
