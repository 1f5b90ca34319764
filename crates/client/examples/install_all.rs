//! Fleet benchmark driver: installs the agent on every desktop of a project in jobs of
//! `BATCH` desktop ids, through the signed API, and waits until every job has ended.
//! Prints one JSON line with the timings.
//!
//! Usage: `install_all ENDPOINT PROJECT_ID AK SK [BATCH=100] [CONCURRENCY=8]`; the
//! server's CA file (`DATA_DIR/ca.pem`) in `DESKFLEET_CA_CERT` for an https endpoint with
//! a private CA. `MAX_CONCURRENCY` and `MAX_ERRORS` (e.g. `10%`) send the rollout-control
//! extension with every job; the output then also tells the most sub-jobs of one job seen
//! RUNNING at once, and how many were stopped by `max_errors`.

use deskfleet_client::{Client, ClientOptions, Credentials};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, project, ak, sk] = &args[..5] else {
        return Err("usage: install_all ENDPOINT PROJECT_ID AK SK [BATCH] [CONCURRENCY]".into());
    };
    let batch: usize = args.get(5).map_or(Ok(100), |s| s.parse())?;
    let concurrency: usize = args.get(6).map_or(Ok(8), |s| s.parse())?;
    let mut options = ClientOptions::default();
    if let Some(ca) = std::env::var_os("DESKFLEET_CA_CERT") {
        options = options.with_ca_file(std::path::Path::new(&ca))?;
    }
    let client = Client::with_options(
        endpoint,
        project,
        Credentials::AkSk {
            access_key: ak.clone(),
            secret_key: sk.clone(),
        },
        &options,
    )?;

    let mut ids = Vec::new();
    loop {
        let page = client
            .list_desktops(&[
                ("limit".into(), "1000".into()),
                ("offset".into(), ids.len().to_string()),
            ])
            .await?;
        let n = page.desktops.len();
        ids.extend(page.desktops.into_iter().map(|d| d.desktop_id));
        if n == 0 || ids.len() as i64 >= page.total_count {
            break;
        }
    }

    let max_concurrency = std::env::var("MAX_CONCURRENCY").ok();
    let max_errors = std::env::var("MAX_ERRORS").ok();
    let started = Instant::now();
    let mut jobs = Vec::new();
    for group in ids.chunks(batch * concurrency) {
        let calls = group.chunks(batch).map(|chunk| {
            client.batch_install_agent_limited(
                chunk,
                max_concurrency.as_deref(),
                max_errors.as_deref(),
            )
        });
        for result in futures_util::future::join_all(calls).await {
            jobs.push(result?.job_id);
        }
    }
    let submitted = started.elapsed();

    let (mut success, mut failed, mut codes) = (0usize, 0usize, std::collections::BTreeMap::new());
    let mut most_running = 0usize;
    let mut pending = jobs.clone();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for job in pending {
            let info = client.show_job(&job).await?;
            let running = info
                .sub_jobs
                .iter()
                .filter(|s| s.status == "RUNNING")
                .count();
            most_running = most_running.max(running);
            if matches!(info.status.as_str(), "SUCCESS" | "FAIL") {
                for s in &info.sub_jobs {
                    if s.status == "SUCCESS" {
                        success += 1;
                    } else {
                        failed += 1;
                        *codes
                            .entry(s.error_code.clone().unwrap_or_default())
                            .or_insert(0usize) += 1;
                    }
                }
            } else {
                still.push(job);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let total = started.elapsed();
    println!(
        "{{\"desktops\":{},\"jobs\":{},\"most_running_in_a_job\":{most_running},\"success\":{success},\"failed\":{failed},\"failure_codes\":{},\"submit_secs\":{:.3},\"total_secs\":{:.3},\"desktops_per_sec\":{:.1}}}",
        ids.len(),
        jobs.len(),
        serde_json::to_string(&codes)?,
        submitted.as_secs_f64(),
        total.as_secs_f64(),
        ids.len() as f64 / total.as_secs_f64()
    );
    Ok(())
}
