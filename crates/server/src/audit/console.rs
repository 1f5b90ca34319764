//! The web console's door: every form POST leaves one trace, as the same change made
//! through the API does (the same trace names, from [`catalog::CONSOLE`]), with
//! `trace_type` `ConsoleAction` and `user.invoked_by` `["service.console"]` (CTS spec
//! 7.2).
//!
//! [`record`] wraps the console's routes. The form extractor adds who signed in and the
//! form's fields ([`note_console_form`]; the CSRF token is left out and secrets are
//! masked as in any trace); the change then commits with its trace exactly as through the
//! API, since the console calls the API's own functions. A form that failed or was
//! refused is recorded on its own, with the error code its page showed. Pages are not
//! copied into traces: the response of a console trace is the job id of the change when
//! there is one, and otherwise empty.

use super::{append_alone, catalog, describe, draft};
use crate::AppState;
use crate::auth::Principal;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use deskfleet_core::audit::{Rating, body_text};
use deskfleet_store::audit::{AuditScope, Stage, update_current};
use std::sync::Arc;

/// Route layer of the console: drafts the trace of an audited form POST and records it
/// if no change did.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.settings.audit.enabled {
        return next.run(request).await;
    }
    let entry = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| catalog::lookup_console(request.method(), p.as_str()));
    let Some(entry) = entry else {
        return next.run(request).await;
    };
    let mut trace = draft(&state, &request, entry);
    trace.trace_type = "ConsoleAction".to_owned();
    trace.user.invoked_by = vec!["service.console".to_owned()];
    let scope = AuditScope::new(trace);
    scope.set_describe(Arc::new(describe));
    let response = scope.run(next.run(request)).await;
    if scope.stage() == Stage::Committed {
        metrics::counter!("deskfleet_audit_traces_total", "path" => "with_change").increment(1);
        return response;
    }
    let status = response.status().as_u16();
    let mut trace = scope.draft();
    trace.code = status.to_string();
    // A console form succeeds with a page (200) or a redirect to one (303), and shows no
    // error ([`note_failure`]).
    let ok = status < 400 && trace.location_info.is_none();
    if trace.trace_rating != Rating::Incident.as_str() {
        trace.trace_rating = if ok { Rating::Normal } else { Rating::Warning }
            .as_str()
            .to_owned();
    }
    if !ok {
        if let Some(name) = entry.failure_name {
            trace.trace_name = name.to_owned();
        }
        if trace.location_info.is_none() {
            trace.location_info = Some(format!("the console answered {status}"));
        }
    }
    trace.record_time = state.clock.now().max(trace.time);
    append_alone(&state, &trace).await;
    response
}

/// The error a console page shows (its code and message), for the current trace: the
/// form failed, whatever the page's status.
pub fn note_failure(code: &str, message: &str) {
    let why: String = format!("{code} {message}")
        .trim()
        .chars()
        .take(300)
        .collect();
    update_current(|t| t.location_info = Some(why).filter(|w| !w.is_empty()));
}

/// The signed-in user of a console form and its fields (as a JSON object, the CSRF
/// token left out, secrets masked), for the current trace.
pub fn note_console_form(principal: &Principal, fields: &[(String, String)], csrf_field: &str) {
    super::note_principal(principal);
    note_form_fields(fields, csrf_field);
}

/// The fields of a form as the trace's `request` (a field given several times is a list).
pub fn note_form_fields(fields: &[(String, String)], csrf_field: &str) {
    let mut object = serde_json::Map::new();
    for (k, v) in fields.iter().filter(|(k, _)| k != csrf_field) {
        match object.get_mut(k) {
            Some(serde_json::Value::Array(list)) => list.push(v.as_str().into()),
            Some(first) => *first = serde_json::json!([first.take(), v]),
            None => {
                object.insert(k.clone(), v.as_str().into());
            }
        }
    }
    let text = body_text(serde_json::Value::Object(object).to_string().as_bytes());
    update_current(|t| t.request = text);
}
