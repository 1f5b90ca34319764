use crate::harness::{
    Ctx, DELIVER, EXECUTE, INSTALL, T0, at, claim, desktops, finish, install, job, project,
    sub_job_of,
};
use deskfleet_core::job::{JobStatus, Stage, StatusCounts, SubJobStatus, job_fail_reason};
use deskfleet_core::model::Outcome;
use deskfleet_core::store::Expired;
use deskfleet_proto::error::TaskErrorCode;

pub async fn claim_progress_and_finish(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let j = install(s, &p, &ds, T0).await;
    let other = desktops(s, &p, 1).await;
    assert!(
        s.claim_desktop_work(&other[0], T0, T0 + EXECUTE)
            .await
            .unwrap()
            .is_none()
    );

    let sub = claim(s, &ds[0], T0 + 10).await;
    assert_eq!(sub.job_id, j.id);
    assert_eq!(sub.desktop_id, ds[0]);
    assert_eq!(sub.status, SubJobStatus::Running);
    assert_eq!(
        (sub.stage, sub.process),
        (Stage::Delivered, Stage::Delivered.process(None))
    );
    assert_eq!((sub.begin_time, sub.end_time), (Some(T0 + 10), None));
    assert_eq!(sub.desktop_name, "pc-0");
    assert!(
        s.claim_desktop_work(&ds[0], T0 + 11, T0 + EXECUTE)
            .await
            .unwrap()
            .is_none(),
        "nothing else waits for this desktop"
    );
    // A job begins when it is accepted ("task start time"), not when a desktop picks it up.
    assert_eq!(j.begin_time, Some(T0));
    let (running, _) = job(s, &p, &j.id).await;
    assert_eq!(
        (running.status, running.begin_time),
        (JobStatus::Running, Some(T0))
    );

    let pct = Stage::Downloading.process(Some(50));
    assert!(
        s.record_progress(&sub.id, Stage::Downloading, pct, T0 + 20, T0 + 60_000)
            .await
            .unwrap()
    );
    let now = sub_job_of(s, &p, &j.id, &ds[0]).await;
    assert_eq!(
        (now.status, now.stage, now.process),
        (SubJobStatus::Running, Stage::Downloading, pct)
    );

    finish(s, &sub.id, &Outcome::Success, T0 + 30).await;
    let done = sub_job_of(s, &p, &j.id, &ds[0]).await;
    assert_eq!(
        (done.status, done.stage, done.process),
        (SubJobStatus::Success, Stage::Healthy, 100)
    );
    assert_eq!(
        (done.begin_time, done.end_time),
        (Some(T0 + 10), Some(T0 + 30))
    );
    let (half, _) = job(s, &p, &j.id).await;
    assert_eq!((half.status, half.end_time), (JobStatus::Running, None));

    let last = s
        .claim_desktop_work(&ds[1], T0 + 40, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    finish(s, &last.id, &Outcome::Success, T0 + 50).await;
    let (finished, _) = job(s, &p, &j.id).await;
    assert_eq!(finished.status, JobStatus::Success);
    assert_eq!(
        (finished.begin_time, finished.end_time),
        (Some(T0), Some(T0 + 50))
    );
    assert_eq!((finished.error_code, finished.fail_reason), (None, None));
    assert_eq!(finished.sub_jobs_total, 2);
}

pub async fn a_result_reported_twice_is_recorded_once(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 1).await;
    let j = install(s, &p, &ds, T0).await;
    let sub = claim(s, &ds[0], T0).await;
    finish(s, &sub.id, &Outcome::Success, T0 + 5).await;
    let before = job(s, &p, &j.id).await;

    let late_failure = Outcome::Failed {
        code: "WKS.00990008".into(),
        reason: "late".into(),
    };
    assert!(
        !s.finish_sub_job(&sub.id, &Outcome::Success, T0 + 9)
            .await
            .unwrap()
    );
    assert!(
        !s.finish_sub_job(&sub.id, &late_failure, T0 + 9)
            .await
            .unwrap()
    );
    assert!(
        !s.record_progress(&sub.id, Stage::Installing, 70, T0 + 9, T0 + EXECUTE)
            .await
            .unwrap()
    );
    assert_eq!(
        job(s, &p, &j.id).await,
        before,
        "a duplicate report changes nothing"
    );
    let (_, subs) = before;
    assert_eq!(subs[0].end_time, Some(T0 + 5));
    // A sub-job never claimed cannot be finished either.
    let j2 = install(s, &p, &ds, T0 + 10).await;
    let waiting = sub_job_of(s, &p, &j2.id, &ds[0]).await;
    assert!(
        !s.finish_sub_job(&waiting.id, &Outcome::Success, T0 + 11)
            .await
            .unwrap()
    );
    assert!(
        !s.record_progress(&waiting.id, Stage::Installing, 70, T0 + 11, T0 + EXECUTE)
            .await
            .unwrap()
    );
    assert_eq!(sub_job_of(s, &p, &j2.id, &ds[0]).await, waiting);
}

pub async fn a_failure_explains_the_job(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 3).await;
    let j = install(s, &p, &ds, T0).await;
    let code = TaskErrorCode::ChecksumMismatch.code();
    let failed = Outcome::Failed {
        code: code.into(),
        reason: "sha256 differs".into(),
    };
    let first = s
        .claim_desktop_work(&ds[1], T0 + 1, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    let pct = Stage::Verifying.process(None);
    assert!(
        s.record_progress(&first.id, Stage::Verifying, pct, T0 + 2, T0 + EXECUTE)
            .await
            .unwrap()
    );
    finish(s, &first.id, &failed, T0 + 3).await;
    let sub = sub_job_of(s, &p, &j.id, &ds[1]).await;
    assert_eq!(sub.status, SubJobStatus::Failed);
    assert_eq!(
        (sub.stage, sub.process),
        (Stage::Verifying, pct),
        "where it failed"
    );
    assert_eq!(sub.error_code.as_deref(), Some(code));
    assert_eq!(sub.fail_reason.as_deref(), Some("sha256 differs"));
    let (mid, _) = job(s, &p, &j.id).await;
    assert_eq!(
        (mid.status, mid.error_code.as_ref()),
        (JobStatus::Running, None)
    );

    let second = Outcome::Failed {
        code: "WKS.00990004".into(),
        reason: "404".into(),
    };
    let next = s
        .claim_desktop_work(&ds[2], T0 + 4, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    finish(s, &next.id, &second, T0 + 5).await;
    let ok = s
        .claim_desktop_work(&ds[0], T0 + 6, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    finish(s, &ok.id, &Outcome::Success, T0 + 7).await;

    let (done, _) = job(s, &p, &j.id).await;
    assert_eq!(done.status, JobStatus::Fail);
    assert_eq!(done.end_time, Some(T0 + 7));
    assert_eq!(
        done.error_code.as_deref(),
        Some(code),
        "the first failure's code"
    );
    let counts = StatusCounts {
        success: 1,
        failed: 2,
        ..Default::default()
    };
    let expected = job_fail_reason(counts, Some((code, "sha256 differs")));
    assert_eq!(done.fail_reason.as_deref(), Some(expected.as_str()));
}

pub async fn second_install_follows_the_one_in_flight(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 3).await;
    let (a, b, c) = (&ds[0], &ds[1], &ds[2]);
    let j1 = s
        .create_install_job(&p, &[a.clone(), b.clone()], INSTALL, at(T0))
        .await
        .unwrap();
    let j2 = s
        .create_install_job(&p, &[b.clone(), c.clone()], INSTALL, at(T0 + 1))
        .await
        .unwrap();
    let leader = sub_job_of(s, &p, &j1.id, b).await;
    let follower = sub_job_of(s, &p, &j2.id, b).await;
    assert_eq!(follower.follows, Some(leader.id.clone()));
    assert_eq!(
        (follower.status, follower.stage),
        (SubJobStatus::Waiting, Stage::Queued)
    );
    assert_eq!(sub_job_of(s, &p, &j2.id, c).await.follows, None);
    assert_eq!(sub_job_of(s, &p, &j1.id, a).await.follows, None);

    // Only the leader is handed out; the follower is never delivered on its own.
    let claimed = s
        .claim_desktop_work(b, T0 + 2, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, leader.id);
    assert!(
        s.claim_desktop_work(b, T0 + 3, T0 + EXECUTE)
            .await
            .unwrap()
            .is_none()
    );

    // A follower has no delivery deadline of its own: the leader's install is running,
    // so nothing expires however long it waits for delivery.
    let j3 = install(s, &p, std::slice::from_ref(b), T0 + 4).await;
    assert!(
        s.record_progress(&leader.id, Stage::Installing, 70, T0 + 5, T0 + 10 * DELIVER)
            .await
            .unwrap()
    );
    let swept = s.expire_overdue(T0 + 5 * DELIVER).await.unwrap();
    assert_eq!(
        swept,
        Expired {
            undelivered: 2,
            silent: 0,
            followers: 0
        },
        "a and c only"
    );
    let f3 = sub_job_of(s, &p, &j3.id, b).await;
    assert_eq!(f3.status, SubJobStatus::Running);
    assert_eq!(f3.follows, Some(leader.id.clone()));
}

pub async fn followers_mirror_their_leader(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 1).await;
    let j1 = install(s, &p, &ds, T0).await;
    let j2 = install(s, &p, &ds, T0 + 1).await;
    let leader = s
        .claim_desktop_work(&ds[0], T0 + 2, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leader.job_id, j1.id);

    let f = sub_job_of(s, &p, &j2.id, &ds[0]).await;
    assert_eq!(
        (f.status, f.stage, f.process),
        (SubJobStatus::Running, Stage::Delivered, 10)
    );
    assert_eq!(f.begin_time, Some(T0 + 2));
    assert_eq!(job(s, &p, &j2.id).await.0.status, JobStatus::Running);

    let pct = Stage::Downloading.process(Some(80));
    assert!(
        s.record_progress(&leader.id, Stage::Downloading, pct, T0 + 3, T0 + EXECUTE)
            .await
            .unwrap()
    );
    let f = sub_job_of(s, &p, &j2.id, &ds[0]).await;
    assert_eq!((f.stage, f.process), (Stage::Downloading, pct));

    finish(s, &leader.id, &Outcome::Success, T0 + 4).await;
    let f = sub_job_of(s, &p, &j2.id, &ds[0]).await;
    assert_eq!(
        (f.status, f.stage, f.process),
        (SubJobStatus::Success, Stage::Healthy, 100)
    );
    assert_eq!(f.end_time, Some(T0 + 4));
    for j in [&j1, &j2] {
        let (done, _) = job(s, &p, &j.id).await;
        assert_eq!(
            (done.status, done.end_time),
            (JobStatus::Success, Some(T0 + 4))
        );
    }
    // With nothing in flight, the next install leads again.
    let j3 = install(s, &p, &ds, T0 + 5).await;
    assert_eq!(sub_job_of(s, &p, &j3.id, &ds[0]).await.follows, None);
}

pub async fn delivery_timeout_fails_undelivered_work(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 3).await;
    let j = install(s, &p, &ds, T0).await;
    let picked = s
        .claim_desktop_work(&ds[0], T0 + 1, T0 + 10 * DELIVER)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        s.expire_overdue(T0 + DELIVER).await.unwrap(),
        Expired::default(),
        "not yet"
    );
    let swept = s.expire_overdue(T0 + DELIVER + 1).await.unwrap();
    assert_eq!(
        swept,
        Expired {
            undelivered: 2,
            silent: 0,
            followers: 0
        }
    );
    assert_eq!(swept.total(), 2);
    let (failed, subs) = job(s, &p, &j.id).await;
    for sub in &subs[1..] {
        assert_eq!(sub.status, SubJobStatus::Failed);
        assert_eq!(
            sub.error_code.as_deref(),
            Some(TaskErrorCode::DeliveryTimeout.code())
        );
        let reason = sub.fail_reason.as_deref().unwrap();
        assert!(
            reason.contains("delivery timeout") && reason.contains("guest"),
            "{reason}"
        );
        assert_eq!(
            (sub.begin_time, sub.end_time),
            (None, Some(T0 + DELIVER + 1))
        );
    }
    assert_eq!(
        subs[0].status,
        SubJobStatus::Running,
        "delivered work is not undelivered"
    );
    assert_eq!(failed.status, JobStatus::Running);
    assert_eq!(
        s.expire_overdue(T0 + DELIVER + 2).await.unwrap(),
        Expired::default()
    );
    finish(s, &picked.id, &Outcome::Success, T0 + DELIVER + 3).await;
    let (done, _) = job(s, &p, &j.id).await;
    assert_eq!(done.status, JobStatus::Fail);
    assert_eq!(
        done.error_code.as_deref(),
        Some(TaskErrorCode::DeliveryTimeout.code())
    );
    assert!(
        done.fail_reason
            .unwrap()
            .starts_with("2 of 3 sub-jobs failed")
    );
}

pub async fn execution_timeout_fails_silent_work(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 1).await;
    let j = install(s, &p, &ds, T0).await;
    let sub = s
        .claim_desktop_work(&ds[0], T0 + 1, T0 + 1000)
        .await
        .unwrap()
        .unwrap();
    // A report pushes the deadline out.
    assert!(
        s.record_progress(&sub.id, Stage::Installing, 70, T0 + 900, T0 + 2000)
            .await
            .unwrap()
    );
    assert_eq!(
        s.expire_overdue(T0 + 1500).await.unwrap(),
        Expired::default()
    );
    assert_eq!(s.expire_overdue(T0 + DELIVER + 1).await.unwrap().silent, 1);

    let (failed, subs) = job(s, &p, &j.id).await;
    let sub = &subs[0];
    assert_eq!(sub.status, SubJobStatus::Failed);
    assert_eq!(
        sub.error_code.as_deref(),
        Some(TaskErrorCode::ExecutionTimeout.code())
    );
    assert!(
        sub.fail_reason
            .as_deref()
            .unwrap()
            .contains("stopped reporting progress")
    );
    assert_eq!((sub.stage, sub.process), (Stage::Installing, 70));
    assert_eq!(sub.end_time, Some(T0 + DELIVER + 1));
    assert_eq!(failed.status, JobStatus::Fail);
    assert_eq!(
        failed.error_code.as_deref(),
        Some(TaskErrorCode::ExecutionTimeout.code())
    );
    assert_eq!(failed.end_time, Some(T0 + DELIVER + 1));
    // The desktop's late report is dropped.
    assert!(
        !s.finish_sub_job(&sub.id, &Outcome::Success, T0 + DELIVER + 2)
            .await
            .unwrap()
    );
}

pub async fn followers_take_the_leaders_failure(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let (a, b) = (&ds[0], &ds[1]);
    // Desktop a: never picks up; its follower fails with it at the leader's deadline.
    let j1 = install(s, &p, std::slice::from_ref(a), T0).await;
    let j2 = install(s, &p, std::slice::from_ref(a), T0 + DELIVER / 2).await;
    let swept = s.expire_overdue(T0 + DELIVER + 1).await.unwrap();
    assert_eq!(
        swept,
        Expired {
            undelivered: 1,
            silent: 0,
            followers: 1
        }
    );
    let f = sub_job_of(s, &p, &j2.id, a).await;
    assert_eq!(f.status, SubJobStatus::Failed);
    assert_eq!(
        f.error_code.as_deref(),
        Some(TaskErrorCode::DeliveryTimeout.code())
    );
    assert_eq!(
        f.fail_reason,
        sub_job_of(s, &p, &j1.id, a).await.fail_reason
    );
    for j in [&j1, &j2] {
        assert_eq!(job(s, &p, &j.id).await.0.status, JobStatus::Fail);
    }

    // Desktop b: the leader reports a failure; the follower gets it too.
    let t = T0 + 2 * DELIVER;
    let j3 = install(s, &p, std::slice::from_ref(b), t).await;
    let j4 = install(s, &p, std::slice::from_ref(b), t + 1).await;
    let leader = s
        .claim_desktop_work(b, t + 2, t + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leader.job_id, j3.id);
    let failed = Outcome::Failed {
        code: TaskErrorCode::BadSignature.code().into(),
        reason: "bad key".into(),
    };
    finish(s, &leader.id, &failed, t + 3).await;
    let f = sub_job_of(s, &p, &j4.id, b).await;
    assert_eq!(f.status, SubJobStatus::Failed);
    assert_eq!(
        f.error_code.as_deref(),
        Some(TaskErrorCode::BadSignature.code())
    );
    assert_eq!(f.fail_reason.as_deref(), Some("bad key"));
    assert_eq!(f.end_time, Some(t + 3));
    assert_eq!(
        job(s, &p, &j4.id).await.0.error_code.as_deref(),
        Some(TaskErrorCode::BadSignature.code())
    );

    // Silent leader: the follower takes the execution timeout.
    let t = t + 10;
    let j5 = install(s, &p, std::slice::from_ref(b), t).await;
    let j6 = install(s, &p, std::slice::from_ref(b), t).await;
    s.claim_desktop_work(b, t + 1, t + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    let swept = s.expire_overdue(t + EXECUTE + 1).await.unwrap();
    assert_eq!(
        swept,
        Expired {
            undelivered: 0,
            silent: 1,
            followers: 1
        }
    );
    let f = sub_job_of(s, &p, &j6.id, b).await;
    assert_eq!(
        f.error_code.as_deref(),
        Some(TaskErrorCode::ExecutionTimeout.code())
    );
    assert_eq!(job(s, &p, &j5.id).await.0.status, JobStatus::Fail);
}
