//! The audit trail at the doors: every write through the HTTP API, and every refusal of
//! one, leaves one trace (docs/audit.md).
//!
//! [`record`] wraps each route. For a route the [`catalog`] lists as audited it drafts the
//! trace (name, service, request id, source address, user agent, time) and opens an
//! [`AuditScope`] around the rest of the request. The authentication middleware adds who
//! called and the request body ([`note_request_body`], [`note_principal`]); the first
//! store write of the handler then commits the trace with the change, in one transaction.
//! When the request ends with the draft still open (refused before any change, or the
//! change failed and was rolled back), the trace is completed from the response (status,
//! error code, body) and appended on its own. If that append fails, a refusal is only
//! logged (it changed nothing); see docs/audit.md.

pub mod admin;
pub mod catalog;
pub mod console;
pub mod export;
pub mod listing;
pub mod seal;

use crate::AppState;
use crate::auth::Principal;
use crate::error::current_request_id;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use deskfleet_core::audit::{Rating, Trace, TraceUser, body_text};
use deskfleet_core::ids::JobId;
use deskfleet_core::model::Job;
use deskfleet_store::audit::{AuditScope, Described, Stage, update_current};
use std::net::SocketAddr;
use std::sync::Arc;

/// The largest response body copied into a trace of a failure (error bodies are small).
const RESPONSE_BYTES: usize = 64 * 1024;

/// Route layer: drafts the trace of an audited route and records it if no change did.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.settings.audit.enabled {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let entry = route
        .as_deref()
        .and_then(|r| catalog::lookup(request.method(), r));
    let Some(entry) = entry else {
        // A route that changes nothing: only its refusals (401, 403) are recorded.
        let refusal = catalog::refusal_entry(route.as_deref().unwrap_or(""));
        let scope = AuditScope::refusal_only(draft(&state, &request, &refusal));
        let response = scope.run(next.run(request)).await;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            let name = if status == 401 {
                "authenticationFailed"
            } else {
                "authorizationDenied"
            };
            let route = route.unwrap_or_default();
            scope.update(|t| {
                t.trace_name = name.to_owned();
                t.operation_id = Some(route).filter(|r| !r.is_empty());
            });
            return finish(&state, &scope, &refusal, response).await;
        }
        return response;
    };
    let scope = AuditScope::new(draft(&state, &request, entry));
    scope.set_describe(Arc::new(describe));
    let response = scope.run(next.run(request)).await;
    finish(&state, &scope, entry, response).await
}

/// The trace of a request as far as its headers tell.
fn draft(state: &AppState, request: &Request, entry: &catalog::Entry) -> Trace {
    let project = request
        .uri()
        .path()
        .split('/')
        .nth(2)
        .filter(|_| entry.project_in_path)
        .unwrap_or("")
        .to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let source_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let user = TraceUser {
        access_key_id: access_key_of(&header("authorization")),
        ..TraceUser::default()
    };
    Trace {
        trace_id: deskfleet_core::audit::new_trace_id(),
        trace_name: entry.trace_name.to_owned(),
        trace_rating: Rating::Normal.as_str().to_owned(),
        trace_type: "ApiCall".to_owned(),
        // What a change committed with its trace answers; a failure overwrites it.
        code: "200".to_owned(),
        api_version: entry.api_version.to_owned(),
        time: state.clock.now(),
        user,
        service_type: entry.service_type.to_owned(),
        resource_type: entry.resource_type.to_owned(),
        source_ip,
        request_id: current_request_id().unwrap_or_default(),
        enterprise_project_id: "0".to_owned(),
        operation_id: Some(entry.operation_id.to_owned()),
        project_id: project,
        tracker_name: "system".to_owned(),
        user_agent: header("user-agent"),
        ..Trace::default()
    }
}

/// After the request: nothing to do if the change committed its trace; else the trace is
/// completed from the response and appended on its own.
async fn finish(
    state: &AppState,
    scope: &AuditScope,
    entry: &catalog::Entry,
    response: Response,
) -> Response {
    let status = response.status().as_u16();
    match scope.stage() {
        Stage::Committed => {
            metrics::counter!("deskfleet_audit_traces_total", "path" => "with_change").increment(1);
            return response;
        }
        Stage::Open | Stage::InFlight => {}
    }
    let (parts, body) = response.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > RESPONSE_BYTES) {
        // Too large to copy into a trace (audited answers are small JSON): recorded
        // without its body, and passed on untouched.
        let mut trace = scope.draft();
        trace.code = status.to_string();
        trace.response = format!("<{} bytes>", declared.unwrap_or(0));
        trace.trace_rating = Rating::of_status(status).as_str().to_owned();
        trace.record_time = state.clock.now().max(trace.time);
        append_alone(state, &trace).await;
        return Response::from_parts(parts, body);
    }
    let bytes = axum::body::to_bytes(body, RESPONSE_BYTES)
        .await
        .unwrap_or_default();
    let mut trace = scope.draft();
    trace.code = status.to_string();
    trace.response = body_text(&bytes);
    if trace.trace_rating != Rating::Incident.as_str() {
        trace.trace_rating = Rating::of_status(status).as_str().to_owned();
    }
    if !(200..300).contains(&status) {
        if let Some(name) = entry.failure_name {
            trace.trace_name = name.to_owned();
            trace.service_type = "IAM".to_owned();
            trace.resource_type = "user".to_owned();
        }
        let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let code = error["error_code"].as_str().unwrap_or("");
        let msg = error["error_msg"].as_str().unwrap_or("");
        trace.location_info = Some(
            format!("{code} {msg}")
                .trim()
                .chars()
                .take(300)
                .collect::<String>(),
        )
        .filter(|s| !s.is_empty());
    }
    trace.record_time = state.clock.now().max(trace.time);
    append_alone(state, &trace).await;
    Response::from_parts(parts, Body::from(bytes))
}

/// Appends a trace on its own (a refusal or a failure: nothing else to commit with it).
/// If that fails, the request changed nothing: it is logged and counted.
async fn append_alone(state: &AppState, trace: &Trace) {
    match state.store.append_trace(trace).await {
        Ok(_) => {
            metrics::counter!("deskfleet_audit_traces_total", "path" => "on_its_own").increment(1)
        }
        Err(e) => {
            metrics::counter!("deskfleet_audit_write_failures_total").increment(1);
            tracing::error!(
                error = %e,
                trace_name = %trace.trace_name,
                code = %trace.code,
                request_id = %trace.request_id,
                "a trace could not be recorded"
            );
        }
    }
}

/// The audit scope of a desktop's enrollment (over OpAMP, with an enrollment token): the
/// trace `enrollDesktop` commits with the new (or claimed) desktop. Its user is the
/// desktop's guest; no token or credential enters it.
pub fn enrollment_scope(
    state: &AppState,
    project: &deskfleet_core::ids::ProjectId,
    facts: &deskfleet_core::fleet::DesktopFacts,
    claimed: Option<&str>,
) -> AuditScope {
    let user = TraceUser {
        name: facts.hostname.clone(),
        user_name: facts.hostname.clone(),
        kind: "DesktopGuest".to_owned(),
        invoked_by: vec!["deskfleet-guest".to_owned()],
        principal_is_root_user: "false".to_owned(),
        ..TraceUser::default()
    };
    let scope = AuditScope::new(Trace {
        trace_id: deskfleet_core::audit::new_trace_id(),
        trace_name: "enrollDesktop".to_owned(),
        trace_rating: Rating::Normal.as_str().to_owned(),
        trace_type: "ApiCall".to_owned(),
        request: serde_json::json!({
            "hostname": facts.hostname,
            "os_type": facts.os_type,
            "ip_addresses": facts.ip_addresses,
            "claim": claimed,
        })
        .to_string(),
        code: "200".to_owned(),
        time: state.clock.now(),
        user,
        service_type: "deskfleet".to_owned(),
        resource_type: "workspace".to_owned(),
        resource_id: claimed.unwrap_or("").to_owned(),
        resource_name: facts.hostname.clone(),
        source_ip: facts.ip_addresses.first().cloned().unwrap_or_default(),
        request_id: current_request_id().unwrap_or_default(),
        enterprise_project_id: "0".to_owned(),
        operation_id: Some("OpAMP enrollment".to_owned()),
        project_id: project.as_str().to_owned(),
        tracker_name: "system".to_owned(),
        user_agent: "deskfleet-guest".to_owned(),
        ..Trace::default()
    });
    scope.set_describe(Arc::new(|answer: &dyn std::any::Any| {
        let e = answer.downcast_ref::<deskfleet_core::fleet::Enrolled>()?;
        Some(Described {
            response: serde_json::json!({
                "desktop_id": e.desktop.id.as_str(),
                "matched_import": e.matched_import,
            })
            .to_string(),
            resource_id: Some(e.desktop.id.as_str().to_owned()),
        })
    }));
    scope
}

/// Records an enrollment that failed (its draft is still open), on its own.
pub async fn enrollment_failed(state: &AppState, scope: &AuditScope, why: &str) {
    if scope.stage() != Stage::Open {
        return;
    }
    let mut t = scope.draft();
    t.code = "409".to_owned();
    t.trace_rating = Rating::Warning.as_str().to_owned();
    t.location_info = Some(why.chars().take(300).collect());
    t.record_time = state.clock.now().max(t.time);
    if let Err(e) = state.store.append_trace(&t).await {
        metrics::counter!("deskfleet_audit_write_failures_total").increment(1);
        tracing::error!(error = %e, "the trace of a failed enrollment could not be recorded");
    }
}

/// The access key id of an `SDK-HMAC-SHA256 Access=..., ...` header ("" if none).
fn access_key_of(authorization: &str) -> String {
    authorization
        .split([' ', ','])
        .find_map(|p| p.trim().strip_prefix("Access="))
        .unwrap_or("")
        .chars()
        .take(128)
        .collect()
}

/// A write's answer as its trace shows it: the job created (the store may ask with the
/// job's id alone, before the write; see `deskfleet_store::audit`).
fn describe(answer: &dyn std::any::Any) -> Option<Described> {
    let id = answer.downcast_ref::<JobId>().or_else(|| {
        answer
            .downcast_ref::<Job>()
            .or_else(|| {
                answer
                    .downcast_ref::<(Option<Job>, Vec<deskfleet_core::model::TargetResult>)>()
                    .and_then(|(job, _)| job.as_ref())
            })
            .map(|job| &job.id)
    })?;
    Some(Described {
        response: serde_json::json!({ "job_id": id.as_str() }).to_string(),
        resource_id: None,
    })
}

/// The request body of the current request, as its trace keeps it (secrets masked).
/// Also picks the token-creation trace name from the IAM method used.
pub fn note_request_body(bytes: &[u8]) {
    let text = body_text(bytes);
    update_current(|t| {
        if t.trace_name.starts_with("createTokenBy") {
            let body: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            let method = body["auth"]["identity"]["methods"][0]
                .as_str()
                .unwrap_or("");
            t.trace_name = match method {
                "token" => "createTokenByToken",
                "hw_ak_sk" => "createTokenByHwAccessKey",
                _ => "createTokenByPwd",
            }
            .to_owned();
            let user = &body["auth"]["identity"]["password"]["user"];
            if let Some(name) = user["name"].as_str() {
                t.user.name = name.to_owned();
                t.user.user_name = name.to_owned();
                t.resource_name = name.to_owned();
            }
            if let Some(domain) = user["domain"]["name"].as_str() {
                t.user.domain.name = domain.to_owned();
            }
        }
        t.request = text;
    });
}

/// The authenticated caller of the current request.
pub fn note_principal(p: &Principal) {
    update_current(|t| {
        let ak = std::mem::take(&mut t.user.access_key_id);
        let invoked_by = std::mem::take(&mut t.user.invoked_by);
        t.user = TraceUser::iam(
            p.user_id.as_str(),
            &p.user_name,
            p.domain.id.as_str(),
            &p.domain.name,
            &ak,
        );
        t.user.invoked_by = invoked_by;
        t.domain_id = p.domain.id.as_str().to_owned();
        if t.project_id.is_empty() {
            t.project_id = p.project_id.as_str().to_owned();
        }
    });
}

/// The user a login names, once found (a failed login is recorded against it).
pub fn note_login_user(user: &deskfleet_core::model::User) {
    update_current(|t| {
        let invoked_by = std::mem::take(&mut t.user.invoked_by);
        t.user = TraceUser::iam(
            user.id.as_str(),
            &user.name,
            user.domain.id.as_str(),
            &user.domain.name,
            "",
        );
        t.user.invoked_by = invoked_by;
        t.domain_id = user.domain.id.as_str().to_owned();
        t.resource_id = user.id.as_str().to_owned();
        t.resource_name = user.name.clone();
    });
}

/// The project of the current request, when its path does not carry it (a login's scope,
/// an admin command's `--project`).
pub fn note_project(project: &deskfleet_core::ids::ProjectId) {
    update_current(|t| t.project_id = project.as_str().to_owned());
}

/// Names the resource of the current request (a desktop id list, a job id).
pub fn note_resource(id: &str, name: &str) {
    update_current(|t| {
        t.resource_id = id.chars().take(350).collect();
        t.resource_name = name.chars().take(300).collect();
    });
}

/// Marks the current request's trace: an account or key locked by this failure is an
/// incident, not a mere failure.
pub fn note_lockout(what: &str) {
    update_current(|t| {
        t.trace_rating = Rating::Incident.as_str().to_owned();
        t.message = format!("{what} locked after repeated failures");
    });
}

/// Renames the current request's trace (one route, several operations: a job action is a
/// retry or a cancel).
pub fn note_trace_name(name: &'static str) {
    update_current(|t| t.trace_name = name.to_owned());
}

/// The comma-joined ids of a batch, if they fit CTS's `resource_id` (350 characters).
pub fn joined_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let joined = ids.into_iter().collect::<Vec<_>>().join(",");
    if joined.chars().count() > 350 {
        String::new()
    } else {
        joined
    }
}
