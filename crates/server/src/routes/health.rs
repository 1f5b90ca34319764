//! `GET /healthz` and `GET /readyz`: unauthenticated probes for load balancers, systemd
//! watchdogs and orchestrators, shaped like Kubernetes' liveness and readiness endpoints.
//!
//! - `/healthz` answers 200 as long as the process serves requests; it touches nothing.
//! - `/readyz` answers 200 only if the store reads AND durably writes now
//!   ([`Store::probe`]), else 503 with a JSON reason and `Retry-After`. The store reuses a
//!   probe result for about a second, so hammering this endpoint cannot load the database.
//!
//! Neither says more than "ok" or a coarse reason: the cause (paths, driver messages) is
//! logged, not handed to unauthenticated callers.
//!
//! [`Store::probe`]: deskfleet_core::store::Store::probe

use crate::AppState;
use crate::error::STORAGE_RETRY_AFTER_SECS;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deskfleet_core::store::StoreError;
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.probe().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the store probe failed");
            let reason = match e {
                StoreError::Unavailable(_) => {
                    "storage unavailable: the database cannot be read or written now \
                     (disk full, I/O error, read-only storage or database unreachable)"
                }
                _ => "storage error: the database probe failed; see the server log",
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, STORAGE_RETRY_AFTER_SECS.to_string())],
                Json(json!({"status": "unavailable", "reason": reason})),
            )
                .into_response()
        }
    }
}
