//! The latest figures of a desktop's monitoring agent:
//! `GET /v2/{project_id}/desktop-monitor/{desktop_id}` (a deskfleet extension).

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::wire::api_time;
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
///   "metrics_reported_at": time | null, "metrics": <the agent's metrics object> | null}`
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
    let agent = desktop.agent.map(|a| {
        json!({
            "agent_name": deskfleet_proto::workspace::AGENT_NAME,
            "agent_version": a.version,
            "healthy": a.healthy,
            "reported_at": api_time(a.reported_at),
        })
    });
    let (reported_at, figures) = match metrics {
        Some(m) => (
            Some(api_time(m.received_at)),
            serde_json::from_str::<Value>(&m.json).map_err(|e| ApiError::internal(&e))?,
        ),
        None => (None, Value::Null),
    };
    Ok(Json(json!({
        "desktop_id": id,
        "agent": agent,
        "metrics_reported_at": reported_at,
        "metrics": figures,
    })))
}
