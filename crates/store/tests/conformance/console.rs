//! The web console's sessions and reads: sessions are found by hash, touched forward only,
//! deleted one by one, per user, and when stale; the fleet summary, the desktops query
//! and the jobs list count, filter, sort and page in the database.

use crate::harness::{Ctx, T0, claim, desktops, finish, install, new_desktop, page, project};
use deskfleet_core::console::{
    AgentFilterState, ConsoleSession, DesktopQuery, DesktopSort, PresenceFilter,
};
use deskfleet_core::model::{AgentState, Outcome, Role, Tag};
use deskfleet_core::store::StoreError;

const WINDOW: i64 = 30_000;

fn query() -> DesktopQuery {
    DesktopQuery {
        search: None,
        presence: None,
        agent: None,
        version: None,
        tag: None,
        sort: DesktopSort::Name,
        descending: false,
        now: T0 + 100_000,
        window_ms: WINDOW,
    }
}

pub async fn sessions_are_found_touched_and_deleted(ctx: Ctx) {
    let s = &*ctx.store;
    let domain = s.create_domain("acme").await.unwrap();
    let p = s.create_project(&domain.id, "main").await.unwrap();
    let alice = s.create_user(&domain.id, "alice", "h").await.unwrap();
    let bob = s.create_user(&domain.id, "bob", "h").await.unwrap();
    let session = |user: &deskfleet_core::ids::UserId, at| ConsoleSession {
        user_id: user.clone(),
        project_id: p.id.clone(),
        created_at: at,
        last_seen_at: at,
        expires_at: at + 3_600_000,
    };
    let a = session(&alice.id, T0);
    s.create_console_session("sha-a", &a).await.unwrap();
    s.create_console_session("sha-a2", &session(&alice.id, T0))
        .await
        .unwrap();
    s.create_console_session("sha-b", &session(&bob.id, T0 + 10))
        .await
        .unwrap();
    assert!(matches!(
        s.create_console_session("sha-a", &a).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        s.find_console_session("sha-a").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(s.find_console_session("nope").await.unwrap(), None);

    assert!(s.touch_console_session("sha-a", T0 + 500).await.unwrap());
    assert!(s.touch_console_session("sha-a", T0 + 100).await.unwrap());
    let touched = s.find_console_session("sha-a").await.unwrap().unwrap();
    assert_eq!(touched.last_seen_at, T0 + 500, "never moved back");
    assert_eq!(touched.created_at, T0);
    assert!(!s.touch_console_session("nope", T0).await.unwrap());

    assert!(s.delete_console_session("sha-a").await.unwrap());
    assert!(!s.delete_console_session("sha-a").await.unwrap());
    assert_eq!(s.find_console_session("sha-a").await.unwrap(), None);

    assert_eq!(s.delete_user_console_sessions(&alice.id).await.unwrap(), 1);
    assert_eq!(s.find_console_session("sha-a2").await.unwrap(), None);
    assert!(s.find_console_session("sha-b").await.unwrap().is_some());

    // Idle since before T0 + 11: bob's (last seen T0 + 10) goes.
    assert_eq!(
        s.delete_stale_console_sessions(T0, T0 + 11).await.unwrap(),
        1
    );
    assert_eq!(s.find_console_session("sha-b").await.unwrap(), None);
    // Past its absolute end.
    s.create_console_session("sha-c", &session(&bob.id, T0))
        .await
        .unwrap();
    assert_eq!(
        s.delete_stale_console_sessions(T0 + 3_600_000, 0)
            .await
            .unwrap(),
        1
    );
}

pub async fn fleet_summary_counts_states_versions_and_failures(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let other = project(s, "other").await;
    desktops(s, &other, 2).await;
    let d = desktops(s, &p, 5).await;
    let now = T0 + 100_000;
    // d0, d1 online; d2 connected but silent (offline); d3 disconnected; d4 never.
    for x in &d[..4] {
        s.record_connected(x, T0).await.unwrap();
    }
    s.record_last_seen(&[(d[0].clone(), now - 1_000), (d[1].clone(), now - 2_000)])
        .await
        .unwrap();
    s.record_disconnected(&d[3], T0, T0 + 5, T0 + 5)
        .await
        .unwrap();
    let agent = |version: &str, healthy| AgentState {
        version: version.into(),
        healthy,
        reported_at: now,
    };
    s.record_agent_state(&d[0], Some(&agent("1.0", true)))
        .await
        .unwrap();
    s.record_agent_state(&d[1], Some(&agent("1.1", true)))
        .await
        .unwrap();
    s.record_agent_state(&d[2], Some(&agent("1.1", false)))
        .await
        .unwrap();
    // d4's install failed; it is failing now.
    let job = install(s, &p, &[d[4].clone()], T0).await;
    let sub = claim(s, &d[4], T0 + 1).await;
    let failed = Outcome::Failed {
        code: "X".into(),
        reason: "broken".into(),
    };
    finish(s, &sub.id, &failed, T0 + 2).await;
    // A job in flight.
    install(s, &p, &[d[0].clone()], T0 + 3).await;

    let sum = s.fleet_summary(&p, now, WINDOW).await.unwrap();
    assert_eq!(sum.total, 5);
    assert_eq!((sum.online, sum.offline, sum.never), (2, 2, 1));
    assert_eq!(sum.with_agent, 3);
    assert_eq!(
        sum.by_version,
        vec![("1.1".to_string(), 2), ("1.0".to_string(), 1)]
    );
    assert_eq!(sum.failing, 2, "the unhealthy agent and the failed install");
    assert_eq!(sum.active_jobs, 1);
    let _ = job;

    let empty = s
        .fleet_summary(&project(s, "empty").await, now, WINDOW)
        .await
        .unwrap();
    assert_eq!(empty.total, 0);
    assert!(empty.by_version.is_empty());
}

pub async fn desktops_query_filters_sorts_and_pages(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let mut paris = new_desktop("Paris-02", "10.1.0.2");
    paris.tags = vec![Tag {
        key: "site".into(),
        value: "paris".into(),
    }];
    let mut lyon = new_desktop("lyon-01", "10.2.0.1");
    lyon.tags = vec![Tag {
        key: "site".into(),
        value: "lyon_1".into(),
    }];
    let out = s
        .import_desktops(&p, &[new_desktop("paris-01", "10.1.0.1"), paris, lyon], T0)
        .await
        .unwrap();
    let ids: Vec<_> = out.iter().map(|d| d.id.clone()).collect();
    let now = T0 + 100_000;
    s.record_connected(&ids[0], T0).await.unwrap();
    s.record_last_seen(&[(ids[0].clone(), now - 10)])
        .await
        .unwrap();
    s.record_agent_state(
        &ids[2],
        Some(&AgentState {
            version: "2.0".into(),
            healthy: true,
            reported_at: now,
        }),
    )
    .await
    .unwrap();
    install(s, &p, &[ids[1].clone()], T0).await;

    let names = |rows: &[deskfleet_core::model::AgentCondition]| {
        rows.iter()
            .map(|c| c.desktop.computer_name.clone())
            .collect::<Vec<_>>()
    };
    let (total, rows) = s.query_desktops(&p, &query(), page(10, 0)).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(
        names(&rows),
        ["lyon-01", "paris-01", "Paris-02"],
        "name, no case"
    );
    let desc = DesktopQuery {
        descending: true,
        ..query()
    };
    let (_, rows) = s.query_desktops(&p, &desc, page(2, 1)).await.unwrap();
    assert_eq!(names(&rows), ["paris-01", "lyon-01"], "descending, paged");

    let pr = &p;
    let by = |q: DesktopQuery| async move {
        let (n, rows) = s.query_desktops(pr, &q, page(10, 0)).await.unwrap();
        assert_eq!(n as usize, rows.len());
        names(&rows)
    };
    assert_eq!(
        by(DesktopQuery {
            search: Some("PARIS".into()),
            ..query()
        })
        .await,
        ["paris-01", "Paris-02"]
    );
    assert_eq!(
        by(DesktopQuery {
            search: Some("10.2.".into()),
            ..query()
        })
        .await,
        ["lyon-01"],
        "search by address"
    );
    assert_eq!(
        by(DesktopQuery {
            search: Some("%".into()),
            ..query()
        })
        .await,
        Vec::<String>::new(),
        "wildcards are literal"
    );
    assert_eq!(
        by(DesktopQuery {
            presence: Some(PresenceFilter::Online),
            ..query()
        })
        .await,
        ["paris-01"]
    );
    assert_eq!(
        by(DesktopQuery {
            presence: Some(PresenceFilter::Never),
            ..query()
        })
        .await,
        ["lyon-01", "Paris-02"]
    );
    assert_eq!(
        by(DesktopQuery {
            agent: Some(AgentFilterState::Installed),
            ..query()
        })
        .await,
        ["lyon-01"]
    );
    assert_eq!(
        by(DesktopQuery {
            agent: Some(AgentFilterState::Busy),
            ..query()
        })
        .await,
        ["Paris-02"]
    );
    assert_eq!(
        by(DesktopQuery {
            version: Some("2.0".into()),
            ..query()
        })
        .await,
        ["lyon-01"]
    );
    assert_eq!(
        by(DesktopQuery {
            tag: Some(("site".into(), None)),
            ..query()
        })
        .await,
        ["lyon-01", "Paris-02"]
    );
    assert_eq!(
        by(DesktopQuery {
            tag: Some(("site".into(), Some("lyon_1".into()))),
            ..query()
        })
        .await,
        ["lyon-01"]
    );
    assert_eq!(
        by(DesktopQuery {
            tag: Some(("site".into(), Some("lyon".into()))),
            ..query()
        })
        .await,
        Vec::<String>::new(),
        "a tag value matches whole"
    );
    assert_eq!(
        by(DesktopQuery {
            sort: DesktopSort::LastSeen,
            descending: true,
            ..query()
        })
        .await[0],
        "paris-01"
    );
    let (_, rows) = s
        .query_desktops(
            &p,
            &DesktopQuery {
                agent: Some(AgentFilterState::Busy),
                ..query()
            },
            page(10, 0),
        )
        .await
        .unwrap();
    assert!(rows[0].in_flight.is_some(), "the work in flight is shown");
}

pub async fn job_progress_counts_sub_jobs_newest_first(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let d = desktops(s, &p, 3).await;
    let first = install(s, &p, &d, T0).await;
    let sub = claim(s, &d[0], T0 + 1).await;
    finish(s, &sub.id, &Outcome::Success, T0 + 2).await;
    claim(s, &d[1], T0 + 3).await;
    let second = install(s, &p, &d[2..], T0 + 10).await;
    let other = project(s, "other").await;
    let od = desktops(s, &other, 1).await;
    install(s, &other, &od, T0).await;

    let (total, jobs) = s.list_job_progress(&p, page(10, 0)).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(jobs[0].job.id, second.id, "newest first");
    let f = &jobs[1];
    assert_eq!(f.job.id, first.id);
    assert_eq!((f.waiting, f.running, f.success, f.failed), (1, 1, 1, 0));
    assert_eq!(f.percent(), 33);
    let (_, paged) = s.list_job_progress(&p, page(1, 1)).await.unwrap();
    assert_eq!(paged.len(), 1);
    assert_eq!(paged[0].job.id, first.id);
    let (_, none) = s.list_job_progress(&p, page(10, 5)).await.unwrap();
    assert!(none.is_empty());
}

pub async fn project_users_are_listed_with_their_roles(ctx: Ctx) {
    let s = &*ctx.store;
    let domain = s.create_domain("acme").await.unwrap();
    let p = s.create_project(&domain.id, "main").await.unwrap();
    let other = s.create_project(&domain.id, "other").await.unwrap();
    let bob = s.create_user(&domain.id, "bob", "h").await.unwrap();
    let alice = s.create_user(&domain.id, "alice", "h").await.unwrap();
    let carol = s.create_user(&domain.id, "carol", "h").await.unwrap();
    s.grant_role(&bob.id, &p.id, Role::Readonly).await.unwrap();
    s.grant_role(&alice.id, &p.id, Role::Admin).await.unwrap();
    s.grant_role(&carol.id, &other.id, Role::Admin)
        .await
        .unwrap();
    s.set_user_disabled(&bob.id, true).await.unwrap();
    let users = s.list_project_users(&p.id).await.unwrap();
    let seen: Vec<(&str, Role, bool)> = users
        .iter()
        .map(|(u, r)| (u.name.as_str(), *r, u.disabled))
        .collect();
    assert_eq!(
        seen,
        [("alice", Role::Admin, false), ("bob", Role::Readonly, true)],
        "by name, only this project's, with their state"
    );
    assert!(
        s.list_project_users(&project(s, "empty").await)
            .await
            .unwrap()
            .is_empty()
    );
}
