use crate::harness::{Ctx, EXECUTE, T0, desktops, finish, install, job, project};
use deskfleet_core::job::{JobStatus, SubJobStatus};
use deskfleet_core::model::Outcome;

pub async fn data_survives_closing_and_reopening(ctx: Ctx) {
    let (p, ds, created, before) = {
        let s = &*ctx.store;
        let p = project(s, "main").await;
        let ds = desktops(s, &p, 2).await;
        let created = install(s, &p, &ds, T0).await;
        let sub = s
            .claim_desktop_work(&ds[0], T0 + 1, T0 + EXECUTE)
            .await
            .unwrap()
            .unwrap();
        finish(s, &sub.id, &Outcome::Success, T0 + 2).await;
        let before = job(s, &p, &created.id).await;
        (p, ds, created, before)
    };
    let ctx = ctx.reopen().await;
    let s = &*ctx.store;
    assert!(
        s.find_domain_by_name("domain-of-main")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(s.find_project(&p).await.unwrap().unwrap().name, "main");
    assert_eq!(
        s.get_desktop(&p, &ds[1])
            .await
            .unwrap()
            .unwrap()
            .computer_name,
        "pc-1"
    );
    assert_eq!(job(s, &p, &created.id).await, before);
    // The engine picks up where it was.
    let next = s
        .claim_desktop_work(&ds[1], T0 + 3, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.job_id, created.id);
    finish(s, &next.id, &Outcome::Success, T0 + 4).await;
    let (done, subs) = job(s, &p, &created.id).await;
    assert_eq!(done.status, JobStatus::Success);
    assert!(subs.iter().all(|s| s.status == SubJobStatus::Success));
}
