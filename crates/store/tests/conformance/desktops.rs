use crate::harness::{
    Ctx, EXECUTE, T0, all, at, claim, desktops, finish, install, new_desktop, page, project,
};
use deskfleet_core::ids::{DesktopId, JobId};
use deskfleet_core::job::Stage;
use deskfleet_core::model::{
    AgentFilter, DesktopFilter, Outcome, SubJobFilter, SubJobSelector, Tag,
};
use deskfleet_core::store::StoreError;

pub async fn import_keeps_order_and_fills_defaults(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let mut second = new_desktop("pc-b", "10.0.0.2");
    second.enterprise_project_id = Some("ep-7".to_owned());
    second.tags = vec![
        Tag {
            key: "env".to_owned(),
            value: "prod".to_owned(),
        },
        Tag {
            key: "owner".to_owned(),
            value: String::new(),
        },
    ];
    let input = vec![
        new_desktop("pc-c", "10.0.0.3"),
        second,
        new_desktop("pc-a", "10.0.0.1"),
    ];
    let out = s.import_desktops(&p, &input, T0 + 5).await.unwrap();
    let names: Vec<&str> = out.iter().map(|d| d.computer_name.as_str()).collect();
    assert_eq!(names, ["pc-c", "pc-b", "pc-a"], "returned in input order");
    for (d, new) in out.iter().zip(&input) {
        assert_eq!(d.id.as_str().len(), 32);
        assert_eq!(d.project_id, p);
        assert_eq!(d.ip_address, new.ip_address);
        assert_eq!(d.os_type, "Windows");
        assert_eq!(d.status, "ACTIVE");
        assert_eq!(d.tags, new.tags);
        assert_eq!(d.created_at, T0 + 5);
        assert_eq!(d.agent, None);
        assert_eq!(s.get_desktop(&p, &d.id).await.unwrap().as_ref(), Some(d));
    }
    assert_eq!(out[0].enterprise_project_id, "0");
    assert_eq!(out[1].enterprise_project_id, "ep-7");
    assert_ne!(out[0].id, out[2].id);
    assert_eq!(s.import_desktops(&p, &[], T0).await.unwrap(), vec![]);
    let (total, _) = s
        .list_desktops(&p, &DesktopFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(total, 3);
}

pub async fn list_filters_orders_and_pages(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let mut db = new_desktop("DB-01", "10.0.1.1");
    db.enterprise_project_id = Some("ep-db".to_owned());
    let first = s
        .import_desktops(
            &p,
            &[
                new_desktop("Web-01", "10.0.0.1"),
                new_desktop("web-02", "10.0.0.2"),
                db,
            ],
            T0,
        )
        .await
        .unwrap();
    let later = s
        .import_desktops(&p, &[new_desktop("100%_done", "10.0.0.9")], T0 + 1)
        .await
        .unwrap();

    // Ordered by creation time, then id.
    let (total, listed) = s
        .list_desktops(&p, &DesktopFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(total, 4);
    let mut expected: Vec<DesktopId> = first.iter().map(|d| d.id.clone()).collect();
    expected.sort();
    expected.push(later[0].id.clone());
    assert_eq!(
        listed.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        expected
    );

    let pr = &p;
    let names = |f: DesktopFilter| async move {
        let (total, ds) = s.list_desktops(pr, &f, all()).await.unwrap();
        let mut names: Vec<String> = ds.into_iter().map(|d| d.computer_name).collect();
        names.sort();
        assert_eq!(total, names.len() as i64);
        names
    };
    let by_name = |n: &str| DesktopFilter {
        computer_name: Some(n.to_owned()),
        ..Default::default()
    };
    assert_eq!(
        names(by_name("WEB")).await,
        ["Web-01", "web-02"],
        "case-insensitive substring"
    );
    assert_eq!(names(by_name("b-0")).await, ["DB-01", "Web-01", "web-02"]);
    assert_eq!(
        names(by_name("%")).await,
        ["100%_done"],
        "% is a character, not a wildcard"
    );
    assert_eq!(names(by_name("%_d")).await, ["100%_done"]);
    assert_eq!(
        names(by_name("1_0")).await,
        Vec::<String>::new(),
        "_ is a character too"
    );
    assert_eq!(
        names(DesktopFilter {
            ip_address: Some("10.0.0.2".into()),
            ..Default::default()
        })
        .await,
        ["web-02"]
    );
    assert_eq!(
        names(DesktopFilter {
            ip_address: Some("10.0.0".into()),
            ..Default::default()
        })
        .await,
        Vec::<String>::new(),
        "ip matches exactly"
    );
    assert_eq!(
        names(DesktopFilter {
            status: Some("ACTIVE".into()),
            ..Default::default()
        })
        .await
        .len(),
        4
    );
    assert_eq!(
        names(DesktopFilter {
            status: Some("SHUTOFF".into()),
            ..Default::default()
        })
        .await
        .len(),
        0
    );
    assert_eq!(
        names(DesktopFilter {
            enterprise_project_id: Some("ep-db".into()),
            ..Default::default()
        })
        .await,
        ["DB-01"]
    );
    assert_eq!(
        names(DesktopFilter {
            desktop_ids: vec![
                first[2].id.clone(),
                later[0].id.clone(),
                DesktopId::generate()
            ],
            ..Default::default()
        })
        .await,
        ["100%_done", "DB-01"]
    );
    assert_eq!(
        names(DesktopFilter {
            desktop_ids: vec![first[0].id.clone(), first[1].id.clone()],
            computer_name: Some("02".into()),
            ..Default::default()
        })
        .await,
        ["web-02"],
        "filters combine"
    );

    // Pages cut the ordered list; the total counts every match.
    let (total, p1) = s
        .list_desktops(&p, &DesktopFilter::default(), page(3, 0))
        .await
        .unwrap();
    let (total2, p2) = s
        .list_desktops(&p, &DesktopFilter::default(), page(3, 3))
        .await
        .unwrap();
    let (total3, p3) = s
        .list_desktops(&p, &DesktopFilter::default(), page(3, 9))
        .await
        .unwrap();
    assert_eq!((total, total2, total3), (4, 4, 4));
    assert_eq!(p1.len(), 3);
    assert_eq!(p2.len(), 1);
    assert!(p3.is_empty());
    let paged: Vec<DesktopId> = p1.into_iter().chain(p2).map(|d| d.id).collect();
    assert_eq!(paged, expected);
}

pub async fn projects_do_not_see_each_other(ctx: Ctx) {
    let s = &*ctx.store;
    let a = project(s, "a").await;
    let b = project(s, "b").await;
    let da = desktops(s, &a, 2).await;
    let db = desktops(s, &b, 1).await;
    let (total, listed) = s
        .list_desktops(&b, &DesktopFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(listed[0].id, db[0]);
    let asked = DesktopFilter {
        desktop_ids: da.clone(),
        ..Default::default()
    };
    assert_eq!(s.list_desktops(&b, &asked, all()).await.unwrap().0, 0);
    let conditions = s
        .list_agent_conditions(&b, &AgentFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(conditions.0, 1);
    assert_eq!(conditions.1[0].desktop.id, db[0]);
    assert_eq!(s.get_desktop(&b, &da[0]).await.unwrap(), None);

    let job = install(s, &a, &da, T0).await;
    assert_eq!(s.get_job(&b, &job.id).await.unwrap(), None);
    assert!(matches!(
        s.retry_job(&b, &job.id, at(T0)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.cancel_job(&b, &job.id, T0).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        s.list_sub_jobs(&b, &SubJobFilter::default(), all())
            .await
            .unwrap()
            .0,
        0
    );
    let by_job = SubJobFilter {
        job_id: Some(job.id.clone()),
        ..Default::default()
    };
    assert_eq!(s.list_sub_jobs(&b, &by_job, all()).await.unwrap().0, 0);
    assert_eq!(s.list_sub_jobs(&a, &by_job, all()).await.unwrap().0, 2);

    // Finished records of project a cannot be deleted through project b.
    let claimed = claim(s, &da[0], T0).await;
    finish(s, &claimed.id, &Outcome::Success, T0 + 1).await;
    let ids = SubJobSelector::Ids(vec![claimed.id.clone()]);
    assert_eq!(s.delete_sub_jobs(&b, &ids).await.unwrap(), 0);
    let success = SubJobSelector::Status(deskfleet_core::job::SubJobStatus::Success);
    assert_eq!(s.delete_sub_jobs(&b, &success).await.unwrap(), 0);
    assert_eq!(s.list_sub_jobs(&a, &by_job, all()).await.unwrap().0, 2);
    assert_eq!(s.get_job(&a, &JobId::generate()).await.unwrap(), None);
}

pub async fn agent_conditions_follow_the_install(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let pr = &p;
    let conditions =
        |f: AgentFilter| async move { s.list_agent_conditions(pr, &f, all()).await.unwrap() };
    let one = |d: &DesktopId| AgentFilter {
        desktop: DesktopFilter {
            desktop_ids: vec![d.clone()],
            ..Default::default()
        },
        is_installed: None,
    };

    let (total, idle) = conditions(AgentFilter::default()).await;
    assert_eq!(total, 2);
    assert!(
        idle.iter()
            .all(|c| c.in_flight.is_none() && c.process.is_none())
    );
    // No agent has reported yet: every desktop counts as not installed.
    let installed = |v| AgentFilter {
        is_installed: Some(v),
        ..Default::default()
    };
    assert_eq!(conditions(installed(true)).await.0, 0);
    assert_eq!(conditions(installed(false)).await.0, 2);

    install(s, &p, &ds[..1], T0).await;
    let (_, c) = conditions(one(&ds[0])).await;
    assert_eq!(
        (c[0].in_flight, c[0].process),
        (Some(Stage::Queued), Some(0))
    );
    let (_, c) = conditions(one(&ds[1])).await;
    assert_eq!(
        (c[0].in_flight, c[0].process),
        (None, None),
        "the other desktop is idle"
    );

    let sub = s
        .claim_desktop_work(&ds[0], T0 + 1, T0 + EXECUTE)
        .await
        .unwrap()
        .unwrap();
    let (_, c) = conditions(one(&ds[0])).await;
    assert_eq!(
        (c[0].in_flight, c[0].process),
        (Some(Stage::Delivered), Some(10))
    );
    let downloading = Stage::Downloading.process(Some(40));
    assert!(
        s.record_progress(
            &sub.id,
            Stage::Downloading,
            downloading,
            T0 + 2,
            T0 + EXECUTE
        )
        .await
        .unwrap()
    );
    let (_, c) = conditions(one(&ds[0])).await;
    assert_eq!(
        (c[0].in_flight, c[0].process),
        (Some(Stage::Downloading), Some(downloading))
    );

    finish(s, &sub.id, &Outcome::Success, T0 + 3).await;
    let (_, c) = conditions(one(&ds[0])).await;
    assert_eq!(
        (c[0].in_flight, c[0].process),
        (None, Some(100)),
        "the last install's process"
    );

    // A new install in flight speaks for the desktop again.
    install(s, &p, &ds[..1], T0 + 4).await;
    let (_, c) = conditions(one(&ds[0])).await;
    assert_eq!(
        (c[0].in_flight, c[0].process),
        (Some(Stage::Queued), Some(0))
    );
}
