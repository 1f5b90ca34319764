//! `GET /v1/packages/{id}`: the signed agent packages, served to enrolled desktops only.

use super::{FleetAuth, auth};
use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use deskfleet_proto::error::ErrorCode;

fn counted(result: &'static str) {
    metrics::counter!("deskfleet_package_downloads_total", "result" => result).increment(1);
}

/// Serves a package to an enrolled desktop: the signed archive of `docs/packages.md`.
#[utoipa::path(
    get,
    path = "/v1/packages/{package_id}",
    tag = crate::openapi::TAG_EXTENSIONS,
    operation_id = "DownloadPackage",
    params(("package_id" = String, Path, description = "The package id, from the server's offer")),
    responses(
        (status = 200, description = "The package archive", content_type = "application/gzip", body = Vec<u8>,
         headers(("X-Content-SHA256" = String, description = "The archive's SHA-256, hex"))),
        crate::openapi::FleetErrors,
    ),
    security(("fleet_bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(package_id = %package_id))]
pub async fn download_package(
    State(state): State<AppState>,
    Path(package_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match auth::authenticate(&state, &headers).await {
        Ok((_, FleetAuth::Desktop(_))) => {}
        Ok((_, FleetAuth::Enrollment { .. })) => {
            counted("denied");
            return auth::refuse(
                ErrorCode::Forbidden,
                "enroll first: packages are served to desktop credentials",
                None,
            )
            .into_response();
        }
        Err(error) => {
            counted("denied");
            return error.into_response();
        }
    }
    match state.fleet.packages.blob(&state, &package_id).await {
        Ok(Some((meta, bytes))) => {
            counted("ok");
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/gzip"),
                    ),
                    (
                        header::HeaderName::from_static("x-content-sha256"),
                        HeaderValue::from_str(&meta.sha256).unwrap_or(HeaderValue::from_static("")),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(None) => {
            counted("not_found");
            ApiError::new(ErrorCode::ResourceNotFound)
                .with_detail(format!("package {package_id} does not exist"))
                .into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}
