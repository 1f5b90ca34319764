//! The latest figures of a desktop's monitoring agent:
//! `GET /v2/{project_id}/desktop-monitor/{desktop_id}` (a deskfleet extension).

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::wire::{self, api_time};
use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use deskfleet_core::ids::DesktopId;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v2/{project_id}/desktop-monitor/{desktop_id}",
        get(show_desktop_monitor),
    )
}

/// `{"desktop_id", "agent": {"agent_name", "agent_version", "healthy", "reported_at"} | null,
///   "metrics_reported_at": time | null, "metrics": <the agent's metrics object> | null,
///   "connection": {"state", "since", "last_seen_at"}, "last_seen_at": time | null,
///   "stale": bool, "metrics_age_seconds": number | null}`
///
/// Nothing here claims health that was not seen within three heartbeat intervals: once
/// the desktop is not online (disconnected, or silent for that long), `healthy` is false
/// and `stale` true; `stale` is also true when the newest figures are older than that
/// window (or there are none).
#[tracing::instrument(skip_all, fields(project_id = %project_id, desktop_id = %raw_id))]
async fn show_desktop_monitor(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((project_id, raw_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
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
    let agent = desktop.agent.map(|a| {
        json!({
            "agent_name": deskfleet_proto::workspace::AGENT_NAME,
            "agent_version": a.version,
            // The guest reports the agent's health whenever it changes, and all of it on
            // every reconnect: while the guest is online its last report holds.
            "healthy": a.healthy && online,
            "reported_at": api_time(a.reported_at),
        })
    });
    let (reported_at, age_ms, figures) = match metrics {
        Some(m) => (
            Some(api_time(m.received_at)),
            Some((fresh.now - m.received_at).max(0)),
            serde_json::from_str::<Value>(&m.json).map_err(|e| ApiError::internal(&e))?,
        ),
        None => (None, None, Value::Null),
    };
    let stale = !online || age_ms.is_none_or(|age| age > fresh.window_ms);
    Ok(Json(json!({
        "desktop_id": id,
        "agent": agent,
        "metrics_reported_at": reported_at,
        "metrics": figures,
        "connection": wire::connection(presence),
        "last_seen_at": presence.last_seen().map(api_time),
        "stale": stale,
        "metrics_age_seconds": age_ms.map(|ms| ms as f64 / 1000.0),
    })))
}
