use crate::harness::{Ctx, desktops, project};
use sqlx::Connection;

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

/// PostgreSQL: a table that has grown well past its last statistics is analysed, and not
/// again until it grows again (the statistics a connection's cached plans depend on). The
/// row counts this reads are published by PostgreSQL's statistics collector shortly after
/// each commit, hence the bounded wait for them.
pub async fn tables_that_grew_get_fresh_planner_statistics(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    desktops(s, &p, 1_200).await;
    if s.backend() == "sqlite" {
        assert_eq!(s.refresh_statistics().await.unwrap(), 0);
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let analysed = loop {
        let n = s.refresh_statistics().await.unwrap();
        if n > 0 || std::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(analysed >= 1, "the desktops table grew to 1,200 rows");
    let mut db = sqlx::PgConnection::connect(ctx.url()).await.unwrap();
    let tuples: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'desktops'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(tuples, 1_200.0);
    // Nothing grew since: nothing is analysed again.
    assert_eq!(s.refresh_statistics().await.unwrap(), 0);
}
