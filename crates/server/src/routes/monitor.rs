//! The latest figures of a desktop's monitoring agent:
//! `GET /v2/{project_id}/desktop-monitor/{desktop_id}` (a deskfleet extension).

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::openapi::{PrintableId, ProjectIdParam, TAG_EXTENSIONS, WorkspaceErrors};
use crate::wire::{self, api_time};
use axum::extract::State;
use axum::{Extension, Json};
use deskfleet_core::ids::DesktopId;
use deskfleet_proto::error::ErrorBody;
use deskfleet_proto::workspace::ConnectionInfo;
use serde::Serialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show_desktop_monitor))
}

/// ShowDesktopMonitor's body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DesktopMonitor {
    pub desktop_id: String,
    /// The monitoring agent as the guest last reported it; null if it has none.
    pub agent: Option<MonitorAgent>,
    /// When the newest figures arrived; null if none ever did.
    pub metrics_reported_at: Option<String>,
    /// The agent's newest figures, as it sent them (`docs/monitor.md`); null if none.
    pub metrics: Option<Value>,
    pub connection: ConnectionInfo,
    /// When a message of the desktop's guest last arrived; null if never.
    pub last_seen_at: Option<String>,
    /// True when the desktop is not online, or the figures are older than three
    /// heartbeat intervals (or there are none).
    pub stale: bool,
    /// The age of the newest figures; null if none.
    pub metrics_age_seconds: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MonitorAgent {
    pub agent_name: &'static str,
    pub agent_version: String,
    /// As the guest last reported it, and false once the desktop is not online.
    pub healthy: bool,
    pub reported_at: String,
}

/// ShowDesktopMonitor (extension): the latest figures of a desktop's monitoring agent.
///
/// Nothing here claims health that was not seen within three heartbeat intervals: once
/// the desktop is not online (disconnected, or silent for that long), `healthy` is false
/// and `stale` true; `stale` is also true when the newest figures are older than that
/// window (or there are none).
#[utoipa::path(
    get,
    path = "/v2/{project_id}/desktop-monitor/{desktop_id}",
    tag = TAG_EXTENSIONS,
    operation_id = "ShowDesktopMonitor",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"), ("desktop_id" = inline(PrintableId), Path, description = "The desktop id")),
    responses(
        (status = 200, description = "The desktop's agent and its newest figures", body = DesktopMonitor),
        (status = 404, description = "WKS: no such desktop in this project", body = ErrorBody),
        WorkspaceErrors,
    ),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id, desktop_id = %raw_id))]
async fn show_desktop_monitor(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((project_id, raw_id)): ApiPath<(String, String)>,
) -> Result<Json<DesktopMonitor>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::ShowDesktopMonitor)?;
    let id = DesktopId::parse(raw_id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let desktop = state
        .store
        .get_desktop(&project, &id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("desktop {id} does not exist in this project"))
        })?;
    let metrics = state.store.get_metrics(&project, &id).await?;
    let fresh = state.freshness();
    let presence = fresh.presence(&desktop.connection);
    let online = presence.is_online();
    let agent = desktop.agent.map(|a| MonitorAgent {
        agent_name: deskfleet_proto::workspace::AGENT_NAME,
        agent_version: a.version,
        // The guest reports the agent's health whenever it changes, and all of it on
        // every reconnect: while the guest is online its last report holds.
        healthy: a.healthy && online,
        reported_at: api_time(a.reported_at),
    });
    let (reported_at, age_ms, figures) = match metrics {
        Some(m) => (
            Some(api_time(m.received_at)),
            Some((fresh.now - m.received_at).max(0)),
            Some(serde_json::from_str::<Value>(&m.json).map_err(|e| ApiError::internal(&e))?),
        ),
        None => (None, None, None),
    };
    let stale = !online || age_ms.is_none_or(|age| age > fresh.window_ms);
    Ok(Json(DesktopMonitor {
        desktop_id: id.into_string(),
        agent,
        metrics_reported_at: reported_at,
        metrics: figures,
        connection: wire::connection(presence),
        last_seen_at: presence.last_seen().map(api_time),
        stale,
        metrics_age_seconds: age_ms.map(|ms| ms as f64 / 1000.0),
    }))
}
