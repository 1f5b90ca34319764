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
use crate::openapi::TAG_EXTENSIONS;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use deskfleet_core::store::StoreError;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// A probe's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Probe {
    /// `ok` (`/healthz`), `ready` or `unavailable` (`/readyz`).
    pub status: &'static str,
    /// Why the server is not ready, coarsely; the cause is in the server log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// Liveness: 200 as long as the process serves requests.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = TAG_EXTENSIONS,
    operation_id = "ShowHealth",
    responses((status = 200, description = "The process serves requests", body = Probe)),
)]
async fn healthz() -> Json<Probe> {
    Json(Probe {
        status: "ok",
        reason: None,
    })
}

/// Readiness: 200 only if the store reads and durably writes now.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = TAG_EXTENSIONS,
    operation_id = "ShowReadiness",
    responses(
        (status = 200, description = "The store reads and writes", body = Probe),
        (status = 503, description = "The store does not; Retry-After says when to look again", body = Probe),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.probe().await {
        Ok(()) => Json(Probe {
            status: "ready",
            reason: None,
        })
        .into_response(),
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
                Json(Probe {
                    status: "unavailable",
                    reason: Some(reason),
                }),
            )
                .into_response()
        }
    }
}
