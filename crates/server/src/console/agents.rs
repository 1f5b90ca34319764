//! The agent's versions, and upgrade and rollback of a selection of desktops. Both go
//! through BatchCreateAgentInvocations' own function
//! ([`crate::routes::ces::invocations::create_invocations`]): UPDATE to a chosen version,
//! and ROLLBACK of each desktop's newest UPDATE (as `deskfleet rollback` does), with the
//! API's checks and its per-desktop answers (`invocationmgr.*` codes) shown as they come.

use super::page::{Area, ConsoleError, Form, csrf_field, error_box, layout, page, time};
use super::session::ConsoleUser;
use crate::AppState;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::Query;
use crate::fleet::packages::MONITOR;
use crate::routes::ces::invocations::{
    BatchCreateBody, CreatedInvocation, HISTORY_MS, TARGET, create_invocations,
};
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use deskfleet_core::ids::{DesktopId, ProjectId, SubJobId};
use deskfleet_core::job::Operation;
use deskfleet_core::model::{DesktopFilter, InvocationFilter, Page};
use maud::{Markup, html};
use std::collections::BTreeMap;

/// The packages page: every published version, by platform, withdrawn or not.
pub async fn packages(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, ConsoleError> {
    user.authorize(&state, Api::ListAgentStatus)?;
    let packages = state.store.list_packages(MONITOR).await?;
    // Newest first, one row a version with its platforms.
    let mut versions: BTreeMap<(i64, String), Vec<String>> = BTreeMap::new();
    let mut withdrawn: BTreeMap<String, bool> = BTreeMap::new();
    for p in &packages {
        let at = packages
            .iter()
            .filter(|q| q.version == p.version)
            .map(|q| q.created_at)
            .min()
            .unwrap_or(p.created_at);
        versions
            .entry((-at, p.version.clone()))
            .or_default()
            .push(p.platform.clone());
        *withdrawn.entry(p.version.clone()).or_insert(true) &= p.withdrawn_at.is_some();
    }
    let body = html! {
        p { "The monitoring agent's published versions. To upgrade or roll back desktops, tick them on the "
            a href="/console/desktops" { "desktops page" } "." }
        table {
            caption { "Versions of " (MONITOR) ", newest first" }
            thead { tr {
                th scope="col" { "Version" } th scope="col" { "Platforms" }
                th scope="col" { "Published" } th scope="col" { "Offered" }
                th scope="col" { "Desktops on it" }
            } }
            tbody {
                @for ((at, version), platforms) in &versions {
                    tr {
                        th scope="row" { (version) }
                        td { (platforms.join(", ")) }
                        td { (time(-at)) }
                        td { @if withdrawn.get(version).copied().unwrap_or(false) { "withdrawn" } @else { "yes" } }
                        td { a href={"/console/desktops?version=" (super::page::enc(version))} { "show" } }
                    }
                }
            }
        }
    };
    Ok(page(layout("Packages", Some(&user), Area::Packages, body)))
}

fn selected(query: &Query) -> Result<Vec<String>, ApiError> {
    let ids = query.all("desktop_id", 100)?;
    if ids.is_empty() {
        return Err(ApiError::invalid(
            "no desktop is selected; tick the desktops on the desktops page first",
        ));
    }
    Ok(ids)
}

fn hidden_ids(ids: &[String]) -> Markup {
    html! { @for id in ids { input type="hidden" name="desktop_id" value=(id); } }
}

fn refused(user: &ConsoleUser, title: &str, e: &ApiError) -> Response {
    let body = html! {
        (error_box(e))
        p { a href="/console/desktops" { "Back to the desktops" } }
    };
    let markup = layout(title, Some(user), Area::Desktops, body);
    (e.status(), Html(markup.into_string())).into_response()
}

/// The upgrade confirmation: version and optional rollout limits.
pub async fn upgrade_confirm(
    State(state): State<AppState>,
    user: ConsoleUser,
    query: Query,
) -> Result<Response, ConsoleError> {
    user.authorize(&state, Api::BatchCreateAgentInvocations)?;
    let ids = match selected(&query) {
        Ok(ids) => ids,
        Err(e) => return Ok(refused(&user, "Upgrade the agent", &e)),
    };
    let versions = super::install::versions(&state).await?;
    let body = html! {
        form method="post" action="/console/agents/upgrade" class="confirm" {
            (csrf_field(&user))
            (hidden_ids(&ids))
            p { "Upgrade the agent on " strong { (ids.len()) " selected desktops" } "." }
            label for="version" { "Version" }
            select id="version" name="version" {
                @for (i, v) in versions.iter().enumerate() {
                    option value=(v) selected[i == 0] { (v) @if i == 0 { " (newest)" } }
                }
            }
            fieldset {
                legend { "Rollout limits (optional)" }
                label for="max_concurrency" { "At most this many at once (a number or a percentage)" }
                input id="max_concurrency" name="max_concurrency" inputmode="numeric";
                label for="max_errors" { "Stop after this many failures (a number or a percentage)" }
                input id="max_errors" name="max_errors" inputmode="numeric";
            }
            button type="submit" { "Confirm upgrade" }
            " " a href="/console/desktops" { "Cancel" }
        }
    };
    Ok(page(layout(
        "Upgrade the agent",
        Some(&user),
        Area::Desktops,
        body,
    )))
}

/// The rollback confirmation.
pub async fn rollback_confirm(
    State(state): State<AppState>,
    user: ConsoleUser,
    query: Query,
) -> Result<Response, ConsoleError> {
    user.authorize(&state, Api::BatchCreateAgentInvocations)?;
    let ids = match selected(&query) {
        Ok(ids) => ids,
        Err(e) => return Ok(refused(&user, "Roll back the agent", &e)),
    };
    let body = html! {
        form method="post" action="/console/agents/rollback" class="confirm" {
            (csrf_field(&user))
            (hidden_ids(&ids))
            p { "Roll back the newest upgrade on " strong { (ids.len()) " selected desktops" }
                ": each goes back to the version it had before." }
            button type="submit" { "Confirm rollback" }
            " " a href="/console/desktops" { "Cancel" }
        }
    };
    Ok(page(layout(
        "Roll back the agent",
        Some(&user),
        Area::Desktops,
        body,
    )))
}

fn opt(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

pub async fn upgrade(State(state): State<AppState>, form: Form) -> Result<Response, ConsoleError> {
    let project = form.authorize(&state, Api::BatchCreateAgentInvocations)?;
    let ids = match selected(&form.fields) {
        Ok(ids) => ids,
        Err(e) => return Ok(refused(&form.user, "Upgrade the agent", &e)),
    };
    let body = BatchCreateBody {
        instance_ids: Some(ids),
        invocation_type: Some(Operation::Update.to_string()),
        invocation_target: Some(TARGET.to_owned()),
        version: opt(form.fields.str("version")?),
        max_concurrency: opt(form.fields.str("max_concurrency")?),
        max_errors: opt(form.fields.str("max_errors")?),
        ..BatchCreateBody::default()
    };
    match create_invocations(&state, &project, &body).await {
        Ok(answers) => results(&state, &form.user, &project, "Upgrade", answers).await,
        Err(e) => Ok(refused(&form.user, "Upgrade the agent", &e.0)),
    }
}

pub async fn rollback(State(state): State<AppState>, form: Form) -> Result<Response, ConsoleError> {
    let project = form.authorize(&state, Api::BatchCreateAgentInvocations)?;
    let ids = match selected(&form.fields) {
        Ok(ids) => ids,
        Err(e) => return Ok(refused(&form.user, "Roll back the agent", &e)),
    };
    // Each desktop's newest UPDATE is what is rolled back.
    let mut invocations = Vec::new();
    let mut without: Vec<CreatedInvocation> = Vec::new();
    for id in &ids {
        let desktop = DesktopId::parse(id.clone()).map_err(|e| ApiError::invalid(e.to_string()))?;
        let filter = InvocationFilter {
            desktop: Some(desktop),
            operation: Some(Operation::Update),
            created_since: state.clock.now() - HISTORY_MS,
            ..InvocationFilter::default()
        };
        let (_, newest) = state
            .store
            .list_invocations(
                &project,
                &filter,
                Page {
                    limit: 1,
                    offset: 0,
                },
            )
            .await?;
        match newest.first() {
            Some(s) => invocations.push(s.id.as_str().to_owned()),
            None => without.push(CreatedInvocation {
                instance_id: Some(id.clone()),
                invocation_id: None,
                ret_status: "error",
                error_code: None,
                error_msg: Some(
                    "this desktop was never upgraded: there is nothing to roll back".into(),
                ),
            }),
        }
    }
    let mut answers = if invocations.is_empty() {
        Vec::new()
    } else {
        let body = BatchCreateBody {
            invocation_ids: Some(invocations),
            invocation_type: Some(Operation::Rollback.to_string()),
            invocation_target: Some(TARGET.to_owned()),
            ..BatchCreateBody::default()
        };
        match create_invocations(&state, &project, &body).await {
            Ok(answers) => answers,
            Err(e) => return Ok(refused(&form.user, "Roll back the agent", &e.0)),
        }
    };
    answers.extend(without);
    results(&state, &form.user, &project, "Rollback", answers).await
}

/// What became of each desktop, with a link to the job that was made.
async fn results(
    state: &AppState,
    user: &ConsoleUser,
    project: &ProjectId,
    what: &str,
    answers: Vec<CreatedInvocation>,
) -> Result<Response, ConsoleError> {
    let created: Vec<SubJobId> = answers
        .iter()
        .filter(|a| a.ret_status == "successful")
        .filter_map(|a| a.invocation_id.clone())
        .filter_map(|id| SubJobId::parse(id).ok())
        .collect();
    let subs = if created.is_empty() {
        Vec::new()
    } else {
        state.store.get_sub_jobs(project, &created).await?
    };
    let job = subs.first().map(|s| s.job_id.as_str().to_owned());
    // Desktops are shown by name, accepted or not.
    let asked: Vec<DesktopId> = answers
        .iter()
        .filter_map(|a| a.instance_id.clone())
        .filter_map(|id| DesktopId::parse(id).ok())
        .collect();
    let names: BTreeMap<String, String> = if asked.is_empty() {
        BTreeMap::new()
    } else {
        let filter = DesktopFilter {
            desktop_ids: asked,
            ..DesktopFilter::default()
        };
        let page = Page {
            limit: 100,
            offset: 0,
        };
        let (_, desktops) = state.store.list_desktops(project, &filter, page).await?;
        desktops
            .into_iter()
            .map(|d| (d.id.into_string(), d.computer_name))
            .collect()
    };
    let name = |instance: &Option<String>| {
        instance
            .as_ref()
            .map(|i| names.get(i).cloned().unwrap_or_else(|| i.clone()))
            .unwrap_or_else(|| "-".into())
    };
    let body = html! {
        p role="status" { (created.len()) " of " (answers.len()) " desktops accepted." }
        @if let Some(job) = &job {
            p { a href={"/console/jobs/" (job)} { "Follow the job" } }
        }
        table {
            caption { (what) ", desktop by desktop" }
            thead { tr { th scope="col" { "Desktop" } th scope="col" { "Result" } th scope="col" { "Reason" } } }
            tbody {
                @for a in &answers {
                    tr {
                        th scope="row" { (name(&a.instance_id)) }
                        td { @if a.ret_status == "successful" { "accepted" } @else { "refused" } }
                        td {
                            @if let Some(m) = &a.error_msg { (m) }
                            @if let Some(c) = a.error_code { " (" (c) ")" }
                        }
                    }
                }
            }
        }
    };
    Ok(page(layout(
        &format!("{what} requested"),
        Some(user),
        Area::Desktops,
        body,
    )))
}
