//! Following jobs to their end: live counts on stderr, then a summary of every failure.
//!
//! Several jobs (a selection of more than 100 desktops is split) are followed together
//! and counted as one. On a terminal the progress line is rewritten in place; otherwise
//! a line is written each time the counts change, so logs stay readable.

use deskfleet_client::Client;
use deskfleet_proto::workspace::JobInfo;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::time::Duration;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub running: usize,
    pub waiting: usize,
}

impl Counts {
    pub fn of(jobs: &[JobInfo]) -> Self {
        let mut c = Counts::default();
        for s in jobs.iter().flat_map(|j| &j.sub_jobs) {
            c.total += 1;
            match s.status.as_str() {
                "SUCCESS" => c.done += 1,
                "FAILED" | "FAIL" => c.failed += 1,
                "RUNNING" => c.running += 1,
                _ => c.waiting += 1,
            }
        }
        c
    }

    pub fn line(&self) -> String {
        format!(
            "progress: {}/{} done, {} failed, {} running, {} waiting",
            self.done, self.total, self.failed, self.running, self.waiting
        )
    }
}

fn finished(job: &JobInfo) -> bool {
    matches!(job.status.as_str(), "SUCCESS" | "FAIL")
}

/// Polls the jobs every `poll` until all have ended; progress goes to stderr.
pub async fn follow(
    client: &Client,
    job_ids: &[String],
    poll: Duration,
) -> anyhow::Result<Vec<JobInfo>> {
    let terminal = std::io::stderr().is_terminal();
    let mut last: Option<Counts> = None;
    loop {
        let mut jobs = Vec::with_capacity(job_ids.len());
        for id in job_ids {
            jobs.push(client.show_job(id).await?);
        }
        let counts = Counts::of(&jobs);
        if last != Some(counts) {
            let mut err = std::io::stderr().lock();
            // Progress is a courtesy: a closed stderr must not stop the wait.
            let _ = if terminal {
                write!(err, "\r\x1b[2K{}", counts.line())
            } else {
                writeln!(err, "{}", counts.line())
            };
            let _ = err.flush();
            last = Some(counts);
        }
        if jobs.iter().all(finished) {
            if terminal {
                let _ = writeln!(std::io::stderr());
            }
            return Ok(jobs);
        }
        tokio::time::sleep(poll).await;
    }
}

/// The summary document: overall status, counts, each failed desktop with its reason,
/// and the jobs themselves.
pub fn summary(jobs: &[JobInfo]) -> Value {
    let counts = Counts::of(jobs);
    let failures: Vec<Value> = jobs
        .iter()
        .flat_map(|j| &j.sub_jobs)
        .filter(|s| matches!(s.status.as_str(), "FAILED" | "FAIL"))
        .map(|s| {
            json!({
                "job_id": s.job_id,
                "desktop_id": s.entities.desktop_id,
                "desktop_name": s.entities.desktop_name.clone().or_else(|| s.desktop_name.clone()),
                "error_code": s.error_code,
                "reason": s.fail_reason.clone().or_else(|| s.message.clone()),
            })
        })
        .collect();
    let status = if jobs.iter().all(|j| j.status == "SUCCESS") {
        "SUCCESS"
    } else {
        "FAIL"
    };
    json!({
        "status": status,
        "job_ids": jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        "total": counts.total,
        "succeeded": counts.done,
        "failed": counts.failed,
        "failures": failures,
        "jobs": jobs,
    })
}

/// The summary in words, for people.
pub fn summary_lines(doc: &Value, color: bool) -> String {
    let status = doc["status"].as_str().unwrap_or_default();
    let mut out = format!(
        "{} {} of {} desktops succeeded, {} failed\n",
        crate::output::paint(status, color),
        doc["succeeded"],
        doc["total"],
        doc["failed"]
    );
    let failures = doc["failures"].as_array().cloned().unwrap_or_default();
    if !failures.is_empty() {
        let rows: Vec<Vec<String>> = failures
            .iter()
            .map(|f| {
                ["desktop_name", "desktop_id", "error_code", "reason"]
                    .iter()
                    .map(|k| f[*k].as_str().unwrap_or("-").to_string())
                    .collect()
            })
            .collect();
        out.push('\n');
        out.push_str(&crate::output::table(
            &["FAILED DESKTOP", "ID", "CODE", "REASON"],
            &rows,
            color,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, status: &str, subs: &[(&str, &str, Option<&str>)]) -> JobInfo {
        serde_json::from_value(json!({
            "id": id, "job_type": "INSTALL_AGENT", "status": status, "sub_jobs_total": subs.len(),
            "sub_jobs": subs.iter().enumerate().map(|(i, (name, st, reason))| json!({
                "id": format!("{id}-{i}"), "job_id": id, "job_type": "INSTALL_AGENT",
                "entities": {"desktop_id": format!("d-{name}"), "desktop_name": name},
                "status": st, "fail_reason": reason,
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn jobs_are_counted_together_and_every_failure_keeps_its_reason() {
        let jobs = [
            job(
                "a",
                "FAIL",
                &[("w1", "SUCCESS", None), ("w2", "FAILED", Some("offline"))],
            ),
            job(
                "b",
                "RUNNING",
                &[("w3", "RUNNING", None), ("w4", "WAITING", None)],
            ),
        ];
        let c = Counts::of(&jobs);
        assert_eq!(
            c.line(),
            "progress: 1/4 done, 1 failed, 1 running, 1 waiting"
        );
        let doc = summary(&jobs);
        assert_eq!(doc["status"], "FAIL");
        assert_eq!(doc["job_ids"], json!(["a", "b"]));
        assert_eq!(doc["failures"][0]["desktop_name"], "w2");
        assert_eq!(doc["failures"][0]["reason"], "offline");
        let text = summary_lines(&doc, false);
        assert!(
            text.starts_with("FAIL 1 of 4 desktops succeeded, 1 failed\n"),
            "{text}"
        );
        assert!(
            text.contains("w2              d-w2  -     offline"),
            "{text}"
        );
        let ok = [job("c", "SUCCESS", &[("w5", "SUCCESS", None)])];
        assert_eq!(summary(&ok)["status"], "SUCCESS");
    }
}
