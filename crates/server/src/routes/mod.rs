//! The router: one module per feature, merged here, with the request-id middleware and the
//! gateway-style fallbacks (404 `APIGW.0101` for unknown paths and methods).
//!
//! Every module registers its handlers with `utoipa_axum::routes!`, so each route carries
//! its OpenAPI operation: [`api`] is both the router and the document ([`document`],
//! served at `GET /openapi.json`, see [`crate::openapi`]).

pub(crate) mod agents;
pub(crate) mod ces;
mod desktops;
mod enrollment;
mod health;
mod iam;
pub(crate) mod jobs;
mod monitor;
mod packages;

use crate::AppState;
use crate::auth::authenticate;
use crate::error::{ApiError, REQUEST_ID};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use deskfleet_proto::error::ErrorCode;
use std::sync::LazyLock;
use std::time::Duration;
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest body accepted on the unauthenticated routes (`POST /v3/auth/tokens`, which
/// reads its body itself with this limit).
pub(crate) const PUBLIC_BODY_BYTES: usize = 64 * 1024;

/// Every route of the API with its operation. `authenticated` are the ones behind the
/// AK/SK-or-token middleware; the others authenticate themselves (IAM login, the fleet
/// channel) or are public (probes, this document).
pub struct Api {
    pub authenticated: OpenApiRouter<AppState>,
    pub public: OpenApiRouter<AppState>,
}

pub fn api() -> Api {
    Api {
        authenticated: OpenApiRouter::new()
            .merge(agents::routes())
            .merge(jobs::routes())
            .merge(desktops::routes())
            .merge(monitor::routes())
            .merge(packages::routes())
            .merge(enrollment::routes())
            .merge(ces::routes())
            .merge(crate::audit::listing::routes())
            .merge(iam::authenticated_routes()),
        public: OpenApiRouter::new()
            .merge(iam::public_routes())
            .merge(health::routes())
            .merge(crate::fleet::routes())
            .merge(crate::observe::routes())
            .routes(routes!(openapi_json)),
    }
}

/// The OpenAPI document of [`api`], generated once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        let Api {
            authenticated,
            public,
        } = api();
        crate::openapi::build(authenticated.merge(public))
    });
    &DOCUMENT
}

/// [`document`] serialized, once: what `/openapi.json` answers.
fn document_json() -> &'static [u8] {
    static JSON: LazyLock<Vec<u8>> =
        LazyLock::new(|| serde_json::to_vec(document()).expect("an OpenAPI document serializes"));
    &JSON
}

/// The OpenAPI 3.1 document of this API (this document).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = crate::openapi::TAG_EXTENSIONS,
    operation_id = "ShowOpenApiDocument",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json",
         body = Object),
    ),
)]
async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}

pub fn router(state: AppState) -> Router {
    crate::observe::prometheus();
    // Made now, not on the first request.
    document_json();
    let Api {
        authenticated,
        public,
    } = api();
    let v2 =
        Router::from(authenticated).route_layer(from_fn_with_state(state.clone(), authenticate));
    let body_deadline = Duration::from_millis(state.settings.http.body_read_timeout_ms);
    Router::new()
        .merge(v2)
        .merge(Router::from(public))
        .route_layer(from_fn_with_state(state.clone(), crate::audit::record))
        .merge(crate::console::routes(&state))
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
