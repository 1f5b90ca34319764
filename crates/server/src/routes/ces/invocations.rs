//! BatchCreateAgentInvocations and ListAgentInvocations (`/v3/{project_id}/agent-invocations…`).

use crate::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
}
