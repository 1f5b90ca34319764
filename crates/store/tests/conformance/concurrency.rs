use crate::harness::{Ctx, EXECUTE, INSTALL, T0, all, at, desktops, job, project};
use deskfleet_core::ids::DesktopId;
use deskfleet_core::model::{Outcome, SubJob, SubJobFilter};
use deskfleet_core::store::StoreError;
use std::collections::HashMap;
use tokio::task::JoinSet;

pub async fn one_of_many_concurrent_claims_wins(ctx: Ctx) {
    let p = project(&*ctx.store, "main").await;
    let ds = desktops(&*ctx.store, &p, 1).await;
    ctx.store
        .create_install_job(&p, &ds, INSTALL, at(T0))
        .await
        .unwrap();
    let mut claims = JoinSet::new();
    for i in 0..20 {
        let (store, desktop) = (ctx.store.clone(), ds[0].clone());
        claims.spawn(async move {
            store
                .claim_desktop_work(&desktop, T0 + i, T0 + EXECUTE)
                .await
        });
    }
    let won: Vec<SubJob> = claims
        .join_all()
        .await
        .into_iter()
        .filter_map(|r| r.expect("claim"))
        .collect();
    assert_eq!(won.len(), 1, "exactly one claim gets the work");
    let (_, subs) = job(&*ctx.store, &p, &won[0].job_id).await;
    assert_eq!(subs[0].begin_time, won[0].begin_time);
}

/// Every in-flight sub-job of a desktop either leads or follows the one leader.
fn assert_one_leader_per_desktop(subs: &[SubJob]) {
    let mut by_desktop: HashMap<&DesktopId, Vec<&SubJob>> = HashMap::new();
    for s in subs.iter().filter(|s| !s.status.is_terminal()) {
        by_desktop.entry(&s.desktop_id).or_default().push(s);
    }
    for (desktop, in_flight) in by_desktop {
        let leaders: Vec<_> = in_flight.iter().filter(|s| s.follows.is_none()).collect();
        assert_eq!(leaders.len(), 1, "desktop {desktop}: {in_flight:#?}");
        for s in &in_flight {
            if let Some(leader) = &s.follows {
                assert_eq!(
                    leader, &leaders[0].id,
                    "desktop {desktop} follows a stale leader"
                );
            }
        }
    }
}

pub async fn concurrent_jobs_for_the_same_desktops_agree_on_leaders(ctx: Ctx) {
    let p = project(&*ctx.store, "main").await;
    let ds = desktops(&*ctx.store, &p, 10).await;
    let mut creates = JoinSet::new();
    for i in 0..16 {
        let wanted: Vec<DesktopId> = (0..5).map(|k| ds[(i + k) % 10].clone()).collect();
        let (store, p) = (ctx.store.clone(), p.clone());
        creates.spawn(async move { store.create_install_job(&p, &wanted, INSTALL, at(T0)).await });
    }
    let jobs: Vec<_> = creates
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("create"))
        .collect();
    assert_eq!(jobs.len(), 16);
    let (total, subs) = ctx
        .store
        .list_sub_jobs(&p, &SubJobFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(total, 80);
    for j in &jobs {
        assert_eq!(job(&*ctx.store, &p, &j.id).await.1.len(), 5);
    }
    assert_one_leader_per_desktop(&subs);
    assert_eq!(subs.iter().filter(|s| s.follows.is_none()).count(), 10);
}

pub async fn a_batch_fails_only_the_calls_that_fail(ctx: Ctx) {
    let p = project(&*ctx.store, "main").await;
    let ds = desktops(&*ctx.store, &p, 100).await;
    let mut calls = JoinSet::new();
    for i in 0..64_usize {
        let size = 2 + (i * 37) % 99;
        let mut wanted: Vec<DesktopId> = (0..size).map(|k| ds[(i + k) % 100].clone()).collect();
        let ghost = (i % 4 == 3).then(|| DesktopId::parse(format!("ghost-{i}")).unwrap());
        if let Some(g) = &ghost {
            wanted.insert(size / 2, g.clone());
        }
        let (store, p) = (ctx.store.clone(), p.clone());
        calls.spawn(async move {
            let result = store.create_install_job(&p, &wanted, INSTALL, at(T0)).await;
            (size, ghost, result)
        });
    }
    let mut expected_sub_jobs = 0;
    let mut committed = Vec::new();
    for (size, ghost, result) in calls.join_all().await {
        match (ghost, result) {
            (None, Ok(job)) => {
                assert_eq!(job.sub_jobs_total as usize, size);
                expected_sub_jobs += size;
                committed.push((job, size));
            }
            (Some(ghost), Err(StoreError::UnknownDesktops(unknown))) => {
                assert_eq!(unknown, [ghost.to_string()]);
            }
            (ghost, result) => panic!("ghost {ghost:?} got {result:?}"),
        }
    }
    assert_eq!(committed.len(), 48);
    let (total, subs) = ctx
        .store
        .list_sub_jobs(&p, &SubJobFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(total as usize, expected_sub_jobs);
    for (j, size) in &committed {
        let (stored, its) = job(&*ctx.store, &p, &j.id).await;
        assert_eq!(&stored, j);
        assert_eq!(its.len(), *size);
    }
    assert_one_leader_per_desktop(&subs);
}

pub async fn no_follower_is_orphaned_by_racing_finishes(ctx: Ctx) {
    let p = project(&*ctx.store, "main").await;
    let ds = desktops(&*ctx.store, &p, 4).await;
    let rounds = 25;
    let creator = {
        let (store, p, ds) = (ctx.store.clone(), p.clone(), ds.clone());
        tokio::spawn(async move {
            for r in 0..rounds {
                store
                    .create_install_job(&p, &ds, INSTALL, at(T0 + r))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let worker = |d: DesktopId| {
        let store = ctx.store.clone();
        tokio::spawn(async move {
            let mut finished = 0;
            for r in 0..rounds * 4 {
                if let Some(sub) = store
                    .claim_desktop_work(&d, T0 + r, T0 + EXECUTE)
                    .await
                    .unwrap()
                {
                    assert!(
                        store
                            .finish_sub_job(&sub.id, &Outcome::Success, T0 + r)
                            .await
                            .unwrap()
                    );
                    finished += 1;
                }
                tokio::task::yield_now().await;
            }
            finished
        })
    };
    let workers: Vec<_> = ds.iter().cloned().map(worker).collect();
    creator.await.unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let (_, subs) = ctx
        .store
        .list_sub_jobs(&p, &SubJobFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(subs.len(), rounds as usize * 4);
    assert_one_leader_per_desktop(&subs);

    // Whatever is left can be driven to the end: no follower waits on a finished leader.
    for d in &ds {
        while let Some(sub) = ctx
            .store
            .claim_desktop_work(d, T0 + 1000, T0 + EXECUTE)
            .await
            .unwrap()
        {
            assert!(
                ctx.store
                    .finish_sub_job(&sub.id, &Outcome::Success, T0 + 1001)
                    .await
                    .unwrap()
            );
        }
    }
    let (_, subs) = ctx
        .store
        .list_sub_jobs(&p, &SubJobFilter::default(), all())
        .await
        .unwrap();
    let stuck: Vec<_> = subs.iter().filter(|s| !s.status.is_terminal()).collect();
    assert!(stuck.is_empty(), "{stuck:#?}");
    assert!(
        subs.iter()
            .all(|s| s.status == deskfleet_core::job::SubJobStatus::Success)
    );
}

/// Desktops deleted while jobs naming them are being created: each creation either
/// commits before the deletion, which then takes its sub-jobs along, or finds the desktop
/// gone and fails; no sub-job is left naming a desktop that no longer exists.
pub async fn deleting_desktops_while_jobs_are_created_leaves_no_orphan(ctx: Ctx) {
    let p = project(&*ctx.store, "main").await;
    let ds = desktops(&*ctx.store, &p, 20).await;
    let mut tasks = JoinSet::new();
    for i in 0..32_usize {
        let wanted: Vec<DesktopId> = (0..4).map(|k| ds[(i * 3 + k * 5) % 20].clone()).collect();
        let (store, p) = (ctx.store.clone(), p.clone());
        tasks.spawn(async move {
            match store.create_install_job(&p, &wanted, INSTALL, at(T0)).await {
                Ok(_) | Err(StoreError::UnknownDesktops(_)) => Ok(()),
                Err(e) => Err(e),
            }
        });
    }
    for d in &ds[..10] {
        let (store, p, d) = (ctx.store.clone(), p.clone(), d.clone());
        tasks.spawn(async move { store.delete_desktop(&p, &d, T0).await });
    }
    for result in tasks.join_all().await {
        result.expect("a creation or a deletion failed");
    }
    let (_, subs) = ctx
        .store
        .list_sub_jobs(&p, &SubJobFilter::default(), all())
        .await
        .unwrap();
    let orphans: Vec<&SubJob> = subs
        .iter()
        .filter(|s| ds[..10].contains(&s.desktop_id))
        .collect();
    assert!(
        orphans.is_empty(),
        "sub-jobs of deleted desktops: {orphans:#?}"
    );
    assert!(!subs.is_empty());
    assert_one_leader_per_desktop(&subs);
}

/// PostgreSQL runs a job creation and a desktop's deletion side by side, and no foreign
/// key checks a sub-job's desktop: the creation's share lock on the desktop's row is what
/// keeps it from adding work to a desktop being deleted. Here a deletion has locked the
/// row and deleted the desktop's sub-jobs when a creation naming it starts: the creation
/// must wait for the deletion's commit, then fail, rather than commit sub-jobs the
/// deletion can no longer see.
pub async fn a_job_creation_waits_for_a_desktop_deletion_under_way(ctx: Ctx) {
    use sqlx::{Connection, Executor};
    if !ctx.url().starts_with("postgres") {
        return; // one writer: a creation and a deletion never overlap
    }
    let p = project(&*ctx.store, "main").await;
    let ds = desktops(&*ctx.store, &p, 2).await;
    let mut deletion = sqlx::PgConnection::connect(ctx.url()).await.unwrap();
    let mut watch = sqlx::PgConnection::connect(ctx.url()).await.unwrap();
    let gone = ds[0].as_str();
    deletion.execute("BEGIN").await.unwrap();
    for sql in [
        "SELECT id FROM desktops WHERE id = $1 FOR NO KEY UPDATE",
        "DELETE FROM sub_jobs WHERE desktop_id = $1",
    ] {
        sqlx::query(sql)
            .bind(gone)
            .execute(&mut deletion)
            .await
            .unwrap();
    }
    let (store, p2, wanted) = (ctx.store.clone(), p.clone(), ds.clone());
    let mut creation = tokio::spawn(async move {
        store
            .create_install_job(&p2, &wanted, INSTALL, at(T0))
            .await
    });
    // Until the creation waits on the deletion's lock, or has finished without waiting.
    let waited = async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut watch)
            .await
            .unwrap();
            if waiting > 0 || creation.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), waited)
        .await
        .expect("the creation neither waited nor finished");
    sqlx::query("DELETE FROM desktops WHERE id = $1")
        .bind(gone)
        .execute(&mut deletion)
        .await
        .unwrap();
    deletion.execute("COMMIT").await.unwrap();
    let created = (&mut creation).await.unwrap();
    assert!(
        matches!(&created, Err(StoreError::UnknownDesktops(u)) if u == &[gone.to_owned()]),
        "{created:?}"
    );
    let (_, subs) = ctx
        .store
        .list_sub_jobs(&p, &SubJobFilter::default(), all())
        .await
        .unwrap();
    assert!(subs.is_empty(), "{subs:#?}");
}
