//! A desktop's page: its connection (state, since, last seen), its agent (version,
//! health), the work in flight, the install history with each failure's reason, and
//! charts of its CPU, memory, disk and network over the last hour from the stored metrics.

use super::charts::{Point, line_chart};
use super::page::{Area, ConsoleError, layout, opt_time, page, time};
use super::session::ConsoleUser;
use crate::AppState;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::ApiPath;
use axum::extract::State;
use axum::response::Response;
use deskfleet_core::ids::DesktopId;
use deskfleet_core::metrics::{SeriesFilter, SeriesKey, Tier};
use deskfleet_core::model::{AgentFilter, DesktopFilter, InvocationFilter, Page};
use deskfleet_core::presence::Presence;
use maud::html;

/// The metrics charted, in order: (metric, title, unit).
const CHARTS: [(&str, &str, &str); 5] = [
    ("cpu_usage", "CPU usage", "%"),
    ("mem_usedPercent", "Memory used", "%"),
    ("disk_usedPercent", "Disk used", "%"),
    ("net_bitRecv", "Network received", "bit/s"),
    ("net_bitSent", "Network sent", "bit/s"),
];

/// How far back the charts go.
const CHART_SPAN_MS: i64 = 60 * 60 * 1000;

pub async fn show(
    State(state): State<AppState>,
    user: ConsoleUser,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Response, ConsoleError> {
    let project = user.authorize(&state, Api::ShowDesktopDetail)?;
    let id = DesktopId::parse(raw_id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let filter = AgentFilter {
        desktop: DesktopFilter {
            desktop_ids: vec![id.clone()],
            ..DesktopFilter::default()
        },
        is_installed: None,
    };
    let (_, mut rows) = state
        .store
        .list_agent_conditions(
            &project,
            &filter,
            Page {
                limit: 1,
                offset: 0,
            },
        )
        .await?;
    let c = rows.pop().ok_or_else(|| {
        ApiError::not_found(format!("desktop {id} does not exist in this project"))
    })?;
    user.authorize(&state, Api::ListAgentInvocations)?;
    let (_, history) = state
        .store
        .list_invocations(
            &project,
            &InvocationFilter {
                desktop: Some(id.clone()),
                ..InvocationFilter::default()
            },
            Page {
                limit: 50,
                offset: 0,
            },
        )
        .await?;
    user.authorize(&state, Api::ShowMetricData)?;
    let fresh = state.freshness();
    let to = fresh.now;
    let from = to - CHART_SPAN_MS;
    let (series, _) = state
        .store
        .list_metric_series(
            &project,
            &SeriesFilter {
                desktop: Some(id.clone()),
                limit: 200,
                ..SeriesFilter::default()
            },
        )
        .await?;
    // A desktop has one disk series per mount point: the first is charted. Every chart's
    // series is read in one call.
    let keys: Vec<Option<SeriesKey>> = CHARTS
        .iter()
        .map(|(metric, _, _)| {
            series
                .iter()
                .find(|s| s.metric == *metric)
                .map(|s| SeriesKey {
                    desktop: id.clone(),
                    metric: (*metric).to_owned(),
                    mount_point: s.mount_point.clone(),
                })
        })
        .collect();
    let ids: Vec<i64> = keys.iter().flatten().map(SeriesKey::id).collect();
    let mut read = state
        .store
        .metric_aggregates(&project, &ids, Tier::Raw, from, to)
        .await?
        .into_iter();
    let mut charts = Vec::new();
    for ((_, title, unit), key) in CHARTS.iter().zip(&keys) {
        let aggregates = key.as_ref().and_then(|_| read.next()).unwrap_or_default();
        let points: Vec<Point> = aggregates
            .iter()
            .filter(|a| a.count > 0)
            .map(|a| (a.at, a.sum / a.count as f64))
            .collect();
        charts.push(line_chart(title, unit, &points, from, to));
    }
    let d = &c.desktop;
    let presence = fresh.presence(&d.connection);
    let since = match presence {
        Presence::Online { since, .. } | Presence::Offline { since, .. } => Some(since),
        Presence::Never => None,
    };
    let may_install = user.may(Api::BatchInstallAgent);
    let body = html! {
        section aria-labelledby="conn-h" {
            h2 id="conn-h" { "Connection and agent" }
            dl class="facts" {
                dt { "Connection" } dd { span class={"state " (presence.as_str())} { (presence.as_str()) } }
                dt { "Since" } dd { (opt_time(since)) }
                dt { "Last seen" } dd { (opt_time(presence.last_seen())) }
                dt { "Address" } dd { (d.ip_address) }
                dt { "Operating system" } dd { (d.os_type) }
                @if user.may(Api::ListTraces) {
                    dt { "Audit" } dd { a href=(super::audit::traces_of(d.id.as_str())) { "Traces of this desktop" } }
                }
                dt { "Agent" } dd {
                    @match &d.agent {
                        Some(a) => { (a.version) ", " @if a.healthy { "healthy" } @else { "unhealthy" } ", reported " (time(a.reported_at)) }
                        None => { "not installed" }
                    }
                }
                dt { "Work in flight" } dd {
                    @match c.in_flight {
                        Some(stage) => { (stage.to_string()) @if let Some(p) = c.process { ", " (p) "%" } }
                        None => { "none" }
                    }
                }
                dt { "Tags" } dd {
                    @if d.tags.is_empty() { "none" }
                    @for t in &d.tags { span class="tag" { (t.key) @if !t.value.is_empty() { "=" (t.value) } } " " }
                }
            }
            @if may_install {
                form method="get" action="/console/install" {
                    input type="hidden" name="scope" value="selected";
                    input type="hidden" name="desktop_id" value=(d.id.as_str());
                    button type="submit" { "Install the agent on this desktop" }
                }
            }
        }
        section aria-labelledby="metrics-h" {
            h2 id="metrics-h" { "Metrics, last hour" }
            div class="charts" { @for chart in &charts { (chart) } }
        }
        section aria-labelledby="history-h" {
            h2 id="history-h" { "Install history" }
            @if history.is_empty() {
                p { "Nothing was ever installed on this desktop." }
            } @else {
                table {
                    caption { "Work on this desktop, newest first" }
                    thead { tr {
                        th scope="col" { "Created" } th scope="col" { "Operation" }
                        th scope="col" { "Version" } th scope="col" { "Status" }
                        th scope="col" { "Reason" } th scope="col" { "Job" }
                    } }
                    tbody {
                        @for s in &history {
                            tr {
                                td { (time(s.created_at)) }
                                td { (s.operation.to_string()) }
                                td { (s.target_version.as_deref().unwrap_or("-")) }
                                td { (s.status.to_string()) }
                                td {
                                    @if let Some(r) = &s.fail_reason {
                                        (r) @if let Some(code) = &s.error_code { " (" (code) ")" }
                                    } @else { "-" }
                                }
                                td { a href={"/console/jobs/" (s.job_id.as_str())} aria-label={"Job " (s.job_id.as_str())} { "job" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(layout(
        &d.computer_name,
        Some(&user),
        Area::Desktops,
        body,
    )))
}
