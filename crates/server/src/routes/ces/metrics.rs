//! ShowMetricData, BatchListMetricData and ListMetrics (`/V1.0/{project_id}/…`).

use crate::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
}
