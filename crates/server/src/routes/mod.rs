//! The router: one module per feature, merged here, with the request-id middleware and the
//! gateway-style fallbacks (404 `APIGW.0101` for unknown paths and methods).

mod agents;
mod ces;
mod desktops;
mod health;
mod iam;
mod jobs;
mod monitor;

use crate::AppState;
use crate::auth::authenticate;
use crate::error::{ApiError, REQUEST_ID};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use deskfleet_proto::error::ErrorCode;
use std::time::Duration;
use tracing::Instrument;

/// Largest body accepted on the unauthenticated routes (`POST /v3/auth/tokens`, which
/// reads its body itself with this limit).
pub(crate) const PUBLIC_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    crate::observe::prometheus();
    let v2 = Router::new()
        .merge(agents::routes())
        .merge(jobs::routes())
        .merge(desktops::routes())
        .merge(monitor::routes())
        .merge(ces::routes())
        .merge(iam::authenticated_routes())
        .merge(crate::audit::listing::routes())
        .route_layer(from_fn_with_state(state.clone(), authenticate));
    let body_deadline = Duration::from_millis(state.settings.http.body_read_timeout_ms);
    Router::new()
        .merge(v2)
        .merge(iam::public_routes())
        .merge(health::routes())
        .merge(crate::fleet::routes())
        .merge(crate::observe::routes())
        .route_layer(from_fn_with_state(state.clone(), crate::audit::record))
        .route_layer(from_fn(crate::observe::matched_route))
        .fallback(api_not_found)
        .method_not_allowed_fallback(api_not_found)
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_deadline,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal(&"a request handler panicked").into_response()
        }))
        .layer(from_fn(crate::observe::track_requests))
        .layer(from_fn(request_context))
        .with_state(state)
}

async fn api_not_found() -> ApiError {
    ApiError::new(ErrorCode::ApiNotFound)
}

/// Gives every request an id (the `X-Request-Id` response header, and `request_id` in
/// gateway error bodies) and a span carrying it.
async fn request_context(request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
        route = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    span.record("status", response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
