//! Cloud Eye (CES): the agent-management API (`/v3/{project_id}/agent-…`) and the metric
//! API (`/V1.0/{project_id}/…`), over the same authentication, projects and roles as the
//! Workspace API. Their error bodies differ from Workspace's: see [`error`].

pub mod error;
pub(crate) mod invocations;
mod metric_bodies;
mod metrics;
mod status;

use crate::AppState;
use utoipa_axum::router::OpenApiRouter;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(invocations::routes())
        .merge(status::routes())
        .merge(metrics::routes())
}
