//! Jobs: the list with live progress bars, a job's page with its sub-jobs and their
//! failure reasons, retry and cancel (RunActionsOnWorkspaceJob's own function), and the
//! small JSON document `console.js` polls every second to move the bars without a reload.

use super::page::{Area, ConsoleError, Form, csrf_field, layout, page, progress_bar, see_other};
use super::session::ConsoleUser;
use crate::AppState;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiPath, Query};
use crate::routes::jobs::{job_action, job_not_found};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use deskfleet_core::console::JobProgress;
use deskfleet_core::ids::JobId;
use deskfleet_core::job::{JobStatus, SubJobStatus};
use deskfleet_core::model::{Job, Page, SubJob};
use maud::{Markup, html};
use serde::Serialize;

/// Jobs per page.
const PAGE_JOBS: u32 = 20;

fn job_id(raw: String) -> Result<JobId, ApiError> {
    JobId::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

fn finished(status: JobStatus) -> bool {
    matches!(status, JobStatus::Success | JobStatus::Fail)
}

/// The counts line of a job, as the page shows it and the script rewrites it.
fn counts_text(p: &Counts) -> String {
    format!(
        "{} succeeded, {} failed, {} running, {} waiting",
        p.success, p.failed, p.running, p.waiting
    )
}

/// A job's progress as `console.js` reads it.
#[derive(Debug, Serialize)]
pub struct Counts {
    pub status: String,
    pub finished: bool,
    pub percent: u64,
    pub waiting: u64,
    pub running: u64,
    pub success: u64,
    pub failed: u64,
    pub text: String,
    pub fail_reason: Option<String>,
    /// When the job ended, for people; `None` while it runs.
    pub ended: Option<String>,
    pub sub_jobs: Vec<SubJobState>,
}

#[derive(Debug, Serialize)]
pub struct SubJobState {
    pub id: String,
    pub status: String,
    pub process: i32,
    pub reason: String,
}

fn reason(s: &SubJob) -> String {
    match (&s.fail_reason, &s.error_code) {
        (Some(r), Some(code)) => format!("{r} ({code})"),
        (Some(r), None) => r.clone(),
        _ => String::new(),
    }
}

fn counts(job: &Job, subs: &[SubJob]) -> Counts {
    let of = |st: SubJobStatus| subs.iter().filter(|s| s.status == st).count() as u64;
    let p = JobProgress {
        job: job.clone(),
        waiting: of(SubJobStatus::Waiting),
        running: of(SubJobStatus::Running),
        success: of(SubJobStatus::Success),
        failed: of(SubJobStatus::Failed),
    };
    let mut c = Counts {
        status: job.status.to_string(),
        finished: finished(job.status),
        percent: p.percent(),
        waiting: p.waiting,
        running: p.running,
        success: p.success,
        failed: p.failed,
        text: String::new(),
        fail_reason: job.fail_reason.clone(),
        ended: job.end_time.map(super::page::time),
        sub_jobs: subs
            .iter()
            .map(|s| SubJobState {
                id: s.id.as_str().to_owned(),
                status: s.status.to_string(),
                process: s.process,
                reason: reason(s),
            })
            .collect(),
    };
    c.text = counts_text(&c);
    c
}

fn progress_cells(id: &str, status: JobStatus, percent: u64, text: &str) -> Markup {
    html! {
        td data-job-status=(id) { (status.to_string()) }
        td { (progress_bar(&format!("Progress of job {id}"), percent, Some(id))) }
        td data-job-counts=(id) { (text) }
    }
}

pub async fn list(
    State(state): State<AppState>,
    user: ConsoleUser,
    query: Query,
) -> Result<Response, ConsoleError> {
    let project = user.authorize(&state, Api::ShowJob)?;
    let page_no = query.int("page", 100_000, 1)?.max(1);
    let (total, jobs) = state
        .store
        .list_job_progress(
            &project,
            Page {
                limit: PAGE_JOBS,
                offset: (page_no - 1) * PAGE_JOBS,
            },
        )
        .await?;
    let pages = (total as u64).div_ceil(u64::from(PAGE_JOBS)).max(1);
    let body = html! {
        @if jobs.is_empty() {
            p { "No job yet. Choose desktops on the " a href="/console/desktops" { "desktops page" } " to install the agent." }
        } @else {
            table class="jobs" data-live-jobs {
                caption { "Jobs, newest first" }
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Type" } th scope="col" { "Created" }
                    th scope="col" { "Status" } th scope="col" { "Progress" } th scope="col" { "Sub-jobs" }
                } }
                tbody {
                    @for p in &jobs {
                        @let id = p.job.id.as_str();
                        @let text = format!("{} succeeded, {} failed, {} running, {} waiting", p.success, p.failed, p.running, p.waiting);
                        tr data-job=(id) data-finished=(finished(p.job.status)) {
                            th scope="row" { a href={"/console/jobs/" (id)} { (id) } }
                            td { (p.job.operation.to_string()) }
                            td { (super::page::time(p.job.created_at)) }
                            (progress_cells(id, p.job.status, p.percent(), &text))
                        }
                    }
                }
            }
            nav aria-label="Pages" class="pager" {
                @if page_no > 1 { a href={"/console/jobs?page=" (page_no - 1)} rel="prev" { "Previous page" } }
                @if u64::from(page_no) < pages { a href={"/console/jobs?page=" (page_no + 1)} rel="next" { "Next page" } }
            }
        }
    };
    Ok(page(layout("Jobs", Some(&user), Area::Jobs, body)))
}

async fn load(
    state: &AppState,
    user: &ConsoleUser,
    raw: String,
) -> Result<(Job, Vec<SubJob>), ConsoleError> {
    let project = user.authorize(state, Api::ShowJob)?;
    let id = job_id(raw)?;
    Ok(state
        .store
        .get_job(&project, &id)
        .await?
        .ok_or_else(|| job_not_found(&id))?)
}

pub async fn show(
    State(state): State<AppState>,
    user: ConsoleUser,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ConsoleError> {
    let (job, subs) = load(&state, &user, raw).await?;
    let c = counts(&job, &subs);
    let id = job.id.as_str();
    let may_act = user.may(Api::RunActionsOnWorkspaceJob);
    let body = html! {
        div data-job=(id) data-finished=(c.finished) data-live-job {
            dl class="facts" {
                dt { "Operation" } dd { (job.operation.to_string()) }
                dt { "Status" } dd data-job-status=(id) { (c.status) }
                dt { "Progress" } dd { (progress_bar(&format!("Progress of job {id}"), c.percent, Some(id))) }
                dt { "Sub-jobs" } dd data-job-counts=(id) { (c.text) }
                dt { "Created" } dd { (super::page::time(job.created_at)) }
                @if user.may(Api::ListTraces) {
                    dt { "Audit" } dd { a href=(super::audit::traces_of(id)) { "Traces of this job" } }
                }
                dt { "Ended" } dd data-job-ended=(id) { (super::page::opt_time(job.end_time)) }
                dt { "Failure" } dd data-job-reason=(id) {
                    (job.fail_reason.as_deref().unwrap_or("-"))
                    @if let Some(code) = &job.error_code { " (" (code) ")" }
                }
            }
            @if may_act {
                div class="actions" {
                    form method="post" action={"/console/jobs/" (id) "/retry"} {
                        (csrf_field(&user))
                        button type="submit" { "Retry failed sub-jobs" }
                    }
                    form method="post" action={"/console/jobs/" (id) "/cancel"} {
                        (csrf_field(&user))
                        button type="submit" { "Cancel waiting sub-jobs" }
                    }
                }
            }
            table {
                caption { "Sub-jobs" }
                thead { tr {
                    th scope="col" { "Desktop" } th scope="col" { "Address" } th scope="col" { "Status" }
                    th scope="col" { "Progress" } th scope="col" { "Reason" }
                } }
                tbody {
                    @for s in &subs {
                        @let sid = s.id.as_str();
                        tr {
                            th scope="row" { a href={"/console/desktops/" (s.desktop_id.as_str())} { (s.desktop_name) } }
                            td { (s.ip_address) }
                            td data-sub-status=(sid) { (s.status.to_string()) }
                            td { progress max="100" value=(s.process) data-sub-progress=(sid)
                                aria-label={"Progress on " (s.desktop_name)} { (s.process) "%" } }
                            td data-sub-reason=(sid) { (reason(s)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(layout(
        &format!("Job {id}"),
        Some(&user),
        Area::Jobs,
        body,
    )))
}

/// The job's progress as JSON, for `console.js`.
pub async fn progress(
    State(state): State<AppState>,
    user: ConsoleUser,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ConsoleError> {
    let (job, subs) = load(&state, &user, raw).await?;
    Ok(super::page::no_store(
        Json(counts(&job, &subs)).into_response(),
    ))
}

async fn act(state: AppState, form: Form, raw: String, op: &str) -> Result<Response, ConsoleError> {
    let project = form.authorize(&state, Api::RunActionsOnWorkspaceJob)?;
    let id = job_id(raw)?;
    let changed = job_action(&state, &project, &id, op).await?;
    tracing::info!(op, changed, job_id = %id, user = %form.user.user_name, "console job action");
    Ok(see_other(&format!("/console/jobs/{}", id.as_str())))
}

pub async fn retry(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    act(state, form, raw, "retry").await
}

pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    act(state, form, raw, "cancel").await
}
