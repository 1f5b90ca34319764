//! The install action: desktops chosen by checkbox, by the table's filter, or all; then a
//! confirmation page to choose the version and optional rollout limits; then a POST that
//! calls BatchInstallAgent's own function ([`crate::routes::agents::batch_install`]), so
//! validation, limits and error codes are the API's.
//!
//! A selection by filter may be larger than the 100 desktops a job takes (the API's
//! limit): it becomes one job per 100 desktops, as `deskfleet install --all` does, each
//! with the same rollout limits.

use super::desktops::Filters;
use super::page::{Area, ConsoleError, Form, csrf_field, error_box, layout, page, see_other};
use super::session::ConsoleUser;
use crate::AppState;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::Query;
use crate::routes::agents::{InstallRequest, batch_install};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use deskfleet_core::model::Page;
use maud::html;

/// Desktops a job takes (the API's `desktop_ids` limit).
const JOB_DESKTOPS: u32 = 100;

/// What the user chose to install on.
enum Selection {
    Desktops(Vec<String>),
    Filter(Filters),
}

fn selection(fields: &Query) -> Result<Selection, ApiError> {
    match fields.str("scope")?.as_deref() {
        Some("filter") => Ok(Selection::Filter(Filters::from_query(fields)?)),
        Some("selected") | None => {
            let ids = fields.all("desktop_id", 100)?;
            if ids.is_empty() {
                return Err(ApiError::invalid(
                    "no desktop is selected; tick the desktops to install on, or install on all matching",
                ));
            }
            Ok(Selection::Desktops(ids))
        }
        Some(other) => Err(ApiError::invalid(format!(
            "scope must be selected or filter, not {other:?}"
        ))),
    }
}

/// The published versions offered, newest first.
pub(super) async fn versions(state: &AppState) -> Result<Vec<String>, ApiError> {
    let mut packages = state
        .store
        .list_packages(crate::fleet::packages::MONITOR)
        .await?;
    packages.retain(|p| p.withdrawn_at.is_none());
    packages.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    let mut versions: Vec<String> = Vec::new();
    for p in packages {
        if !versions.contains(&p.version) {
            versions.push(p.version);
        }
    }
    Ok(versions)
}

/// The confirmation page (GET: it changes nothing).
pub async fn confirm(
    State(state): State<AppState>,
    user: ConsoleUser,
    query: Query,
) -> Result<Response, ConsoleError> {
    let project = user.authorize(&state, Api::BatchInstallAgent)?;
    let chosen = match selection(&query) {
        Ok(s) => s,
        Err(e) => {
            let body = html! {
                (error_box(&e))
                p { a href="/console/desktops" { "Back to the desktops" } }
            };
            let markup = layout("Install the agent", Some(&user), Area::Desktops, body);
            return Ok((e.status(), axum::response::Html(markup.into_string())).into_response());
        }
    };
    let (count, what) = match &chosen {
        Selection::Desktops(ids) => (ids.len() as i64, format!("{} selected desktops", ids.len())),
        Selection::Filter(f) => {
            let q = f.to_query(state.freshness())?;
            let (n, _) = state
                .store
                .query_desktops(
                    &project,
                    &q,
                    Page {
                        limit: 0,
                        offset: 0,
                    },
                )
                .await?;
            (n, format!("all {n} desktops matching the filter"))
        }
    };
    let versions = versions(&state).await?;
    let body = html! {
        form method="post" action="/console/install" class="confirm" {
            (csrf_field(&user))
            @match &chosen {
                Selection::Desktops(ids) => {
                    input type="hidden" name="scope" value="selected";
                    @for id in ids { input type="hidden" name="desktop_id" value=(id); }
                }
                Selection::Filter(f) => {
                    input type="hidden" name="scope" value="filter";
                    (f.hidden())
                }
            }
            p { "Install the monitoring agent on " strong { (what) } "." }
            @if count > i64::from(JOB_DESKTOPS) {
                p { "This makes " ((count as u64).div_ceil(u64::from(JOB_DESKTOPS))) " jobs of at most 100 desktops each." }
            }
            label for="version" { "Version" }
            select id="version" name="version" {
                @for (i, v) in versions.iter().enumerate() {
                    option value=(v) selected[i == 0] { (v) @if i == 0 { " (newest)" } }
                }
            }
            fieldset {
                legend { "Rollout limits (optional)" }
                label for="max_concurrency" { "At most this many at once (a number or a percentage)" }
                input id="max_concurrency" name="max_concurrency" inputmode="numeric" placeholder="e.g. 10 or 25%";
                label for="max_errors" { "Stop after this many failures (a number or a percentage)" }
                input id="max_errors" name="max_errors" inputmode="numeric" placeholder="e.g. 3 or 10%";
            }
            button type="submit" { "Confirm install" }
            " "
            a href="/console/desktops" { "Cancel" }
        }
    };
    Ok(page(layout(
        "Install the agent",
        Some(&user),
        Area::Desktops,
        body,
    )))
}

/// Creates the job(s), then shows the job (or the jobs list when there are several).
pub async fn submit(State(state): State<AppState>, form: Form) -> Result<Response, ConsoleError> {
    let project = form.authorize(&state, Api::BatchInstallAgent)?;
    let fields = &form.fields;
    let request = |desktop_ids| -> Result<InstallRequest, ApiError> {
        Ok(InstallRequest {
            desktop_ids,
            max_concurrency: fields.str("max_concurrency")?,
            max_errors: fields.str("max_errors")?,
            version: fields.str("version")?,
        })
    };
    let result = async {
        match selection(fields)? {
            Selection::Desktops(ids) => {
                Ok(vec![batch_install(&state, &project, request(ids)?).await?])
            }
            Selection::Filter(f) => {
                let q = f.to_query(state.freshness())?;
                // Every matching id first: the jobs created change what matches (work in
                // flight, agents), which would shift later pages.
                let mut ids: Vec<String> = Vec::new();
                loop {
                    let (_, rows) = state
                        .store
                        .query_desktops(
                            &project,
                            &q,
                            Page {
                                limit: 1000,
                                offset: ids.len() as u32,
                            },
                        )
                        .await?;
                    if rows.is_empty() {
                        break;
                    }
                    ids.extend(rows.into_iter().map(|c| c.desktop.id.into_string()));
                }
                let mut jobs = Vec::new();
                for chunk in ids.chunks(JOB_DESKTOPS as usize) {
                    jobs.push(batch_install(&state, &project, request(chunk.to_vec())?).await?);
                }
                if jobs.is_empty() {
                    return Err(ApiError::invalid(
                        "no desktop matches the filter; change the filter and try again",
                    ));
                }
                Ok(jobs)
            }
        }
    }
    .await;
    match result {
        Ok(jobs) if jobs.len() == 1 => {
            Ok(see_other(&format!("/console/jobs/{}", jobs[0].id.as_str())))
        }
        Ok(_) => Ok(see_other("/console/jobs")),
        Err(e) => {
            let body = html! {
                (error_box(&e))
                p { a href="/console/desktops" { "Back to the desktops" } }
            };
            let markup = layout("Install the agent", Some(&form.user), Area::Desktops, body);
            let status = if e.status().is_success() {
                StatusCode::BAD_REQUEST
            } else {
                e.status()
            };
            Ok((status, axum::response::Html(markup.into_string())).into_response())
        }
    }
}
