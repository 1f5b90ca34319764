//! `count_by_state`: what `/metrics` reports as `deskfleet_jobs` and `deskfleet_sub_jobs`.

use crate::harness::{Ctx, T0, claim, desktops, finish, install, project};
use deskfleet_core::job::{JobStatus, SubJobStatus};
use deskfleet_core::model::Outcome;
use deskfleet_core::store::StateCounts;

fn counts(jobs: [u64; 4], sub_jobs: [u64; 4]) -> StateCounts {
    StateCounts {
        jobs: JobStatus::ALL.iter().copied().zip(jobs).collect(),
        sub_jobs: SubJobStatus::ALL.iter().copied().zip(sub_jobs).collect(),
    }
}

pub async fn count_by_state_spans_projects_and_statuses(ctx: Ctx) {
    let s = &*ctx.store;
    // Every status is listed, with 0, before anything exists.
    assert_eq!(s.count_by_state().await.unwrap(), counts([0; 4], [0; 4]));

    let p1 = project(s, "one").await;
    let p2 = project(s, "two").await;
    let d1 = desktops(s, &p1, 3).await;
    let d2 = desktops(s, &p2, 1).await;
    install(s, &p1, &d1, T0).await;
    install(s, &p2, &d2, T0).await;
    // jobs: WAITING, RUNNING, SUCCESS, FAIL; sub-jobs: WAITING, RUNNING, SUCCESS, FAILED
    assert_eq!(
        s.count_by_state().await.unwrap(),
        counts([2, 0, 0, 0], [4, 0, 0, 0])
    );

    let running = claim(s, &d1[0], T0 + 1).await;
    assert_eq!(
        s.count_by_state().await.unwrap(),
        counts([1, 1, 0, 0], [3, 1, 0, 0])
    );

    finish(s, &running.id, &Outcome::Success, T0 + 2).await;
    let failed = claim(s, &d1[1], T0 + 3).await;
    let failure = Outcome::Failed {
        code: "WKS.00990001".into(),
        reason: "test".into(),
    };
    finish(s, &failed.id, &failure, T0 + 4).await;
    let only = claim(s, &d2[0], T0 + 5).await;
    finish(s, &only.id, &Outcome::Success, T0 + 6).await;
    assert_eq!(
        s.count_by_state().await.unwrap(),
        counts([0, 1, 1, 0], [1, 0, 2, 1])
    );

    let last = claim(s, &d1[2], T0 + 7).await;
    finish(s, &last.id, &Outcome::Success, T0 + 8).await;
    assert_eq!(
        s.count_by_state().await.unwrap(),
        counts([0, 0, 1, 1], [0, 0, 3, 1])
    );
}
