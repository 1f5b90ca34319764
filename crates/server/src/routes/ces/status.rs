//! ListAgentStatus (`POST /v3/{project_id}/agent-status/batch-query`).

use crate::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
}
