//! The audit trail in the console: ListTraces' own filters (trace name, user, resource
//! id, rating, time window) and paging, for the users whose role grants `cts:trace:list`
//! (auditors and administrators). A desktop's and a job's pages link here with their id
//! as the resource.

use super::page::{Area, ConsoleError, enc, layout, page, time};
use super::session::ConsoleUser;
use crate::AppState;
use crate::audit::listing::QUERYABLE_MS;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::Query;
use axum::extract::State;
use axum::response::Response;
use deskfleet_core::audit::{Rating, TraceFilter};
use maud::html;

/// Traces per page.
const PAGE_TRACES: u32 = 25;

/// The windows the page offers, as (value, label, milliseconds).
const WINDOWS: [(&str, &str, i64); 4] = [
    ("1h", "Last hour", 3_600_000),
    ("24h", "Last 24 hours", 86_400_000),
    ("7d", "Last 7 days", QUERYABLE_MS),
    ("30m", "Last 30 minutes", 1_800_000),
];

/// A filter field: at most `max` characters.
fn field(query: &Query, key: &str, max: usize) -> Result<Option<String>, ApiError> {
    let v = query.str(key)?;
    if v.as_ref().is_some_and(|v| v.chars().count() > max) {
        return Err(ApiError::invalid(format!(
            "{key} must be at most {max} characters"
        )));
    }
    Ok(v)
}

/// The link to the traces of one resource (a desktop, a job).
pub fn traces_of(resource_id: &str) -> String {
    format!("/console/audit?window=7d&resource_id={}", enc(resource_id))
}

pub async fn show(
    State(state): State<AppState>,
    user: ConsoleUser,
    query: Query,
) -> Result<Response, ConsoleError> {
    let project = user.authorize(&state, Api::ListTraces)?;
    let window = query.str("window")?.unwrap_or_else(|| "24h".to_owned());
    let Some((_, _, span)) = WINDOWS.iter().find(|(v, _, _)| *v == window) else {
        return Err(ApiError::invalid("window must be 30m, 1h, 24h or 7d").into());
    };
    let rating = field(&query, "trace_rating", 20)?;
    if rating
        .as_deref()
        .is_some_and(|r| Rating::parse(r).is_none())
    {
        return Err(ApiError::invalid("trace_rating must be normal, warning or incident").into());
    }
    let now = state.clock.now();
    let mut filter = TraceFilter {
        trace_name: field(&query, "trace_name", 100)?,
        user: field(&query, "user", 1024)?,
        resource_id: field(&query, "resource_id", 350)?,
        trace_rating: rating,
        after: now - span - 1,
        before: now + 1,
        ..TraceFilter::default()
    };
    // Paging: the time and id of the last trace of the page before.
    if let Some(next) = field(&query, "next", 64)? {
        let Some(at) = state.store.trace_time(&project, &next).await? else {
            return Err(ApiError::invalid("next is not a trace of this project").into());
        };
        filter.older_than = Some((at, next));
    }
    let mut traces = state
        .store
        .list_traces(&project, &filter, PAGE_TRACES + 1)
        .await?;
    let more = traces.len() > PAGE_TRACES as usize;
    traces.truncate(PAGE_TRACES as usize);
    let next_link = more.then(|| {
        let mut href = format!("/console/audit?window={}", enc(&window));
        for (k, v) in [
            ("trace_name", &filter.trace_name),
            ("user", &filter.user),
            ("resource_id", &filter.resource_id),
            ("trace_rating", &filter.trace_rating),
        ] {
            if let Some(v) = v {
                href.push_str(&format!("&{k}={}", enc(v)));
            }
        }
        if let Some(last) = traces.last() {
            href.push_str(&format!("&next={}", enc(&last.trace_id)));
        }
        href
    });
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let body = html! {
        form method="get" action="/console/audit" class="filters" {
            label { "Operation (trace name) " input name="trace_name" value=(value(&filter.trace_name)) placeholder="batchInstallCesAgent"; }
            label { "User " input name="user" value=(value(&filter.user)); }
            label { "Resource id " input name="resource_id" value=(value(&filter.resource_id)); }
            label { "Rating "
                select name="trace_rating" {
                    option value="" { "Any" }
                    @for r in ["normal", "warning", "incident"] {
                        option value=(r) selected[filter.trace_rating.as_deref() == Some(r)] { (r) }
                    }
                }
            }
            label { "Time "
                select name="window" {
                    @for (v, label, _) in WINDOWS {
                        option value=(v) selected[window == v] { (label) }
                    }
                }
            }
            button type="submit" { "Show traces" }
        }
        @if traces.is_empty() {
            p { "No trace matches." }
        } @else {
            table class="traces" {
                caption { "Traces, newest first" }
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Operation" } th scope="col" { "User" }
                    th scope="col" { "Source" } th scope="col" { "Resource" } th scope="col" { "Result" }
                    th scope="col" { "Rating" }
                } }
                tbody {
                    @for t in &traces {
                        tr data-trace=(t.trace_id) {
                            td { (time(t.time)) }
                            th scope="row" { (t.trace_name) " " small { "(" (t.trace_type) ")" } }
                            td { (t.user.name)
                                @if !t.user.access_key_id.is_empty() { " " small { "key " (t.user.access_key_id) } } }
                            td { (t.source_ip) }
                            td { (t.resource_type) " " (t.resource_id) }
                            td { (t.code) @if let Some(why) = &t.location_info { " " (why) } }
                            td { (t.trace_rating) }
                        }
                    }
                }
            }
        }
        @if let Some(href) = next_link {
            nav aria-label="Pages" class="pager" { a href=(href) rel="next" { "Older traces" } }
        }
    };
    Ok(page(layout("Audit trail", Some(&user), Area::Audit, body)))
}
