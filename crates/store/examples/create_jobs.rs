//! Throughput of `create_install_job` under concurrency, the shape of the server's
//! benchmark (`bench/api`): CALLERS concurrent callers on a project of 100 desktops, each
//! call a job for the first SIZE desktops, or for a random run of 2..=100 of them when
//! SIZE is `random`.
//!
//! ```text
//! cargo run --release -p deskfleet-store --example create_jobs -- [URL|-] [CALLERS] [SECONDS] [SIZE]
//! ```
//! Without a URL (or with `-`) it uses a fresh SQLite file in a temporary directory.
//! With `AUDIT=1` each call carries a trace as an audited request does (the server's
//! draft of a BatchInstallAgent), so that the run shows what the audit trail costs the
//! writer.

use deskfleet_core::audit::{Trace, TraceUser};
use deskfleet_core::ids::DesktopId;
use deskfleet_core::model::NewDesktop;
use deskfleet_core::store::Deadlines;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DESKTOPS: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = tempfile::tempdir()?;
    let url = match args.next() {
        Some(url) if url != "-" => url,
        _ => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let callers: u64 = args.next().map_or(Ok(64), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let size: Option<usize> = match args.next().as_deref() {
        None | Some("random") => None,
        Some(n) => Some(n.parse::<usize>()?.clamp(1, DESKTOPS)),
    };

    let audit = std::env::var("AUDIT").is_ok_and(|v| v == "1");

    let store = deskfleet_store::connect(&url).await?;
    let domain = store
        .create_domain(&format!("bench-{}", uuid::Uuid::new_v4()))
        .await?;
    let project = store.create_project(&domain.id, "bench").await?.id;
    let new: Vec<NewDesktop> = (0..DESKTOPS)
        .map(|i| NewDesktop {
            computer_name: format!("pc-{i}"),
            ip_address: format!("10.0.{}.{}", i / 256, i % 256),
            os_type: "Linux".into(),
            tags: vec![],
            enterprise_project_id: None,
        })
        .collect();
    let ids: Arc<Vec<DesktopId>> = Arc::new(
        store
            .import_desktops(&project, &new, 0)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect(),
    );

    let calls = Arc::new(AtomicU64::new(0));
    let sub_jobs = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (store, project, ids) = (store.clone(), project.clone(), ids.clone());
        let (calls, sub_jobs) = (calls.clone(), sub_jobs.clone());
        tasks.push(tokio::spawn(async move {
            // A small LCG is random enough to spread calls over the desktops.
            let mut seed = caller.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut next = move || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as usize
            };
            while Instant::now() < deadline {
                let (start, n) = match size {
                    Some(n) => (0, n),
                    None => {
                        let n = 2 + next() % (DESKTOPS - 1);
                        (next() % (DESKTOPS - n + 1), n)
                    }
                };
                let wanted = &ids[start..start + n];
                let at = Deadlines {
                    now: 1,
                    deliver_by: 1 + 600_000,
                };
                let call = store.create_install_job(&project, wanted, "bench", at);
                let result = if audit {
                    let scope = deskfleet_store::audit::AuditScope::new(draft(project.as_str()));
                    scope.set_describe(Arc::new(describe));
                    scope.run(call).await
                } else {
                    call.await
                };
                match result {
                    Ok(_) => {
                        calls.fetch_add(1, Ordering::Relaxed);
                        sub_jobs.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("create_install_job: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let calls = calls.load(Ordering::Relaxed);
    let sub_jobs = sub_jobs.load(Ordering::Relaxed);
    println!(
        "{}{}: {callers} callers, {seconds}s, size {}: {calls} calls ({:.0}/s), {sub_jobs} sub-jobs ({:.0}/s)",
        store.backend(),
        if audit { " (audited)" } else { "" },
        size.map_or("random".to_owned(), |n| n.to_string()),
        calls as f64 / seconds as f64,
        sub_jobs as f64 / seconds as f64,
    );
    Ok(())
}

/// What the server's describer adds to the trace of a job it creates: the job's id as the
/// response, known from the id alone, so the trace is completed before the write.
fn describe(answer: &dyn std::any::Any) -> Option<deskfleet_store::audit::Described> {
    let id = answer
        .downcast_ref::<deskfleet_core::ids::JobId>()
        .or_else(|| {
            answer
                .downcast_ref::<deskfleet_core::model::Job>()
                .map(|j| &j.id)
        })?;
    Some(deskfleet_store::audit::Described {
        response: format!("{{\"job_id\":\"{}\"}}", id.as_str()),
        resource_id: None,
    })
}

/// A trace as the server drafts one for BatchInstallAgent before the change.
fn draft(project: &str) -> Trace {
    Trace {
        trace_id: deskfleet_core::audit::new_trace_id(),
        trace_name: "batchInstallCesAgent".into(),
        trace_rating: "normal".into(),
        trace_type: "ApiCall".into(),
        code: "200".into(),
        api_version: "v2".into(),
        time: 1,
        user: TraceUser {
            access_key_id: "HPUAXXXXXXXXXXXXXXXX".into(),
            name: "admin".into(),
            ..TraceUser::default()
        },
        service_type: "Workspace".into(),
        resource_type: "desktop".into(),
        source_ip: "127.0.0.1".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        enterprise_project_id: "0".into(),
        operation_id: Some("BatchInstallAgent".into()),
        project_id: project.to_owned(),
        tracker_name: "system".into(),
        user_agent: "huaweicloud-usdk-python/3.0".into(),
        request: r#"{"desktop_ids":["a","b"]}"#.into(),
        ..Trace::default()
    }
}
