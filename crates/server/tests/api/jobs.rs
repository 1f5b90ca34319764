use crate::helpers::{TestApp, eventually};
use deskfleet_proto::workspace::DeleteSubJobsRequest;

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn an_install_job_is_committed_with_one_sub_job_per_desktop() {
    let app = TestApp::spawn().await;
    let ids = app.import_desktops(3).await;
    let admin = app.admin();
    let with_dup = vec![
        ids[0].clone(),
        ids[1].clone(),
        ids[0].clone(),
        ids[2].clone(),
    ];
    let job = admin.batch_install_agent(&with_dup).await.unwrap();

    let info = admin.show_job(&job.job_id).await.unwrap();
    assert_eq!(info.id, job.job_id);
    assert_eq!(info.job_type, "batchInstallCesAgent");
    assert_eq!(info.status, "WAITING");
    assert_eq!(info.sub_jobs_total, 3);
    let desktops: Vec<_> = info
        .sub_jobs
        .iter()
        .map(|s| s.entities.desktop_id.clone().unwrap())
        .collect();
    assert_eq!(desktops, ids);
    assert!(
        info.sub_jobs
            .iter()
            .all(|s| s.status == "WAITING" && s.process == Some(0))
    );

    let subs = admin
        .list_sub_jobs(&q(&[("job_id", &job.job_id)]))
        .await
        .unwrap();
    assert_eq!(subs.total_count, 3);
    let agents = admin
        .list_agents(&q(&[("desktop_id", &ids[0])]))
        .await
        .unwrap();
    assert_eq!(agents.total_count, 1);
    assert_eq!(agents.agents_condition[0].task_status, "queued");
    assert_eq!(agents.agents_condition[0].process, Some(0));
    assert!(!agents.agents_condition[0].agent_info[0].is_installed);
    app.stop().await;
}

#[tokio::test]
async fn undelivered_work_fails_at_the_delivery_timeout_and_retry_requeues_it() {
    let app = TestApp::spawn_with(|s| s.jobs.delivery_timeout_ms = 300).await;
    let ids = app.import_desktops(2).await;
    let admin = app.admin();
    let job = admin.batch_install_agent(&ids).await.unwrap().job_id;

    let info = eventually(10, || async {
        let info = admin.show_job(&job).await.unwrap();
        (info.status == "FAIL").then_some(info)
    })
    .await;
    assert_eq!(info.job_error_code.as_deref(), Some("WKS.00990001"));
    assert!(
        info.fail_reason.as_deref().unwrap().contains("2 of 2"),
        "{:?}",
        info.fail_reason
    );
    assert!(info.end_time.is_some());
    for s in &info.sub_jobs {
        assert_eq!(s.status, "FAILED");
        assert_eq!(s.error_code.as_deref(), Some("WKS.00990001"));
        assert!(
            s.fail_reason
                .as_deref()
                .unwrap()
                .contains("deskfleet guest")
        );
    }
    let failed = admin
        .list_sub_jobs(&q(&[("status", "FAILED"), ("status", "SUCCESS")]))
        .await
        .unwrap();
    assert_eq!(failed.total_count, 2);

    admin.job_action(&job, "retry").await.unwrap();
    let retried = admin.show_job(&job).await.unwrap();
    assert!(
        retried
            .sub_jobs
            .iter()
            .all(|s| s.status == "WAITING" && s.error_code.is_none()),
        "{retried:?}"
    );
    assert_ne!(retried.status, "FAIL");
    // Nothing stays waiting: the retried work times out again.
    eventually(10, || async {
        (admin.show_job(&job).await.unwrap().status == "FAIL").then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn cancel_ends_waiting_work_with_the_cancel_code() {
    let app = TestApp::spawn().await;
    let ids = app.import_desktops(2).await;
    let admin = app.admin();
    let job = admin.batch_install_agent(&ids).await.unwrap().job_id;
    admin.job_action(&job, "cancel").await.unwrap();
    let info = admin.show_job(&job).await.unwrap();
    assert_eq!(info.status, "FAIL");
    assert!(
        info.sub_jobs
            .iter()
            .all(|s| s.error_code.as_deref() == Some("WKS.00990003"))
    );
    let err = admin.job_action(&job, "pause").await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(400), Some("WKS.0001"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_second_job_for_a_busy_desktop_follows_the_first() {
    let app = TestApp::spawn_with(|s| s.jobs.delivery_timeout_ms = 400).await;
    let ids = app.import_desktops(2).await;
    let admin = app.admin();
    let first = admin.batch_install_agent(&ids[..1]).await.unwrap().job_id;
    let second = admin.batch_install_agent(&ids).await.unwrap().job_id;
    // Both end, and the follower carries the leader's result.
    let info = eventually(10, || async {
        let info = admin.show_job(&second).await.unwrap();
        (info.status == "FAIL").then_some(info)
    })
    .await;
    let first = admin.show_job(&first).await.unwrap();
    assert_eq!(first.status, "FAIL");
    assert_eq!(info.sub_jobs[0].error_code, first.sub_jobs[0].error_code);
    // One desktop had one install in flight, never two: only 2 leaders timed out.
    let subs = admin.list_sub_jobs(&[]).await.unwrap();
    assert_eq!(subs.total_count, 3);
    app.stop().await;
}

#[tokio::test]
async fn finished_sub_jobs_can_be_deleted() {
    let app = TestApp::spawn_with(|s| s.jobs.delivery_timeout_ms = 200).await;
    let ids = app.import_desktops(3).await;
    let admin = app.admin();
    let job = admin.batch_install_agent(&ids).await.unwrap().job_id;
    eventually(10, || async {
        (admin.show_job(&job).await.unwrap().status == "FAIL").then_some(())
    })
    .await;
    let subs = admin.show_job(&job).await.unwrap().sub_jobs;
    admin
        .delete_sub_jobs(&DeleteSubJobsRequest {
            job_ids: Some(vec![subs[0].id.clone()]),
            delete_by_status: None,
        })
        .await
        .unwrap();
    assert_eq!(admin.show_job(&job).await.unwrap().sub_jobs.len(), 2);
    admin
        .delete_sub_jobs(&DeleteSubJobsRequest {
            job_ids: None,
            delete_by_status: Some("FAILED".into()),
        })
        .await
        .unwrap();
    assert_eq!(admin.list_sub_jobs(&[]).await.unwrap().total_count, 0);
    for bad in [
        DeleteSubJobsRequest {
            job_ids: None,
            delete_by_status: None,
        },
        DeleteSubJobsRequest {
            job_ids: Some(vec![]),
            delete_by_status: None,
        },
        DeleteSubJobsRequest {
            job_ids: None,
            delete_by_status: Some("RUNNING".into()),
        },
    ] {
        let err = admin.delete_sub_jobs(&bad).await.unwrap_err();
        assert_eq!(
            (err.status(), err.error_code()),
            (Some(400), Some("WKS.0001")),
            "{bad:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn desktops_are_listed_filtered_and_paged() {
    let app = TestApp::spawn().await;
    let ids = app.import_desktops(5).await;
    let admin = app.admin();
    let all = admin.list_desktops(&[]).await.unwrap();
    assert_eq!(all.total_count, 5);
    let page = admin
        .list_desktops(&q(&[("limit", "2"), ("offset", "4")]))
        .await
        .unwrap();
    assert_eq!((page.total_count, page.desktops.len()), (5, 1));
    let by_ids = admin
        .list_desktops(&q(&[("desktop_id", &ids[1]), ("desktop_id", &ids[3])]))
        .await
        .unwrap();
    assert_eq!(by_ids.total_count, 2);
    let by_name = admin
        .list_desktops_detail(&q(&[("computer_name", "wks-0002")]))
        .await
        .unwrap();
    assert_eq!(by_name.desktops[0].desktop_id, ids[2]);
    assert_eq!(by_name.desktops[0].metadata["os_type"], "Linux");
    let one = admin.show_desktop(&ids[4]).await.unwrap();
    assert_eq!(one.desktop.computer_name, "wks-0004");
    let err = admin.show_desktop("no-such-desktop").await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(404), Some("WKS.0202"))
    );
    let installed = admin
        .list_agents(&q(&[("is_installed", "true")]))
        .await
        .unwrap();
    assert_eq!(installed.total_count, 0);
    let not_installed = admin
        .list_agents(&q(&[("is_installed", "false"), ("limit", "3")]))
        .await
        .unwrap();
    assert_eq!(
        (
            not_installed.total_count,
            not_installed.agents_condition.len()
        ),
        (5, 3)
    );
    app.stop().await;
}
