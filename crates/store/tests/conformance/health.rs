use crate::harness::{Ctx, project};

/// The readiness probe reads and writes; asked again at once, it answers again (from its
/// one-second reuse) and leaves the store as it was.
pub async fn probe_reads_and_writes(ctx: Ctx) {
    let s = &*ctx.store;
    s.probe().await.expect("a healthy store passes its probe");
    s.probe().await.expect("and again");
    let p = project(s, "main").await;
    assert_eq!(s.find_project(&p).await.unwrap().unwrap().name, "main");
    let ctx = ctx.reopen().await;
    ctx.store
        .probe()
        .await
        .expect("the probe row survives a reopen");
}
