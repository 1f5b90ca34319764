//! Enrollment tokens over the API (deskfleet extensions), for the CLI and scripts:
//! `POST /v2/{project_id}/enrollment-tokens` creates one, `POST
//! /v2/{project_id}/enrollment-tokens/revoke` takes one back. The admin command
//! `enrollment-tokens create` does the same on the database directly.
//!
//! A token is a secret: the server keeps only its hash, answers it once, and revocation
//! names the token in the body, never in a URL (URLs end up in logs).

use crate::AppState;
use crate::admin::IssueError;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::{ProjectIdParam, TAG_EXTENSIONS, WorkspaceErrors};
use crate::wire::api_time;
use axum::extract::State;
use axum::{Extension, Json};
use deskfleet_core::store::StoreError;
use deskfleet_proto::enrollment::EnrollmentToken;
use deskfleet_proto::error::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The longest lifetime a token may be given: a year.
pub const MAX_TTL_HOURS: u64 = 365 * 24;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_enrollment_token))
        .routes(routes!(revoke_enrollment_token))
}

/// CreateEnrollmentToken's body. Both fields are optional: `{}` makes a project-wide
/// token with the server's default lifetime.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentTokenRequest {
    /// Extension. Bind the token to this imported desktop: the guest that presents it
    /// becomes that desktop (once). Without it, the token enrolls new desktops.
    #[schema(max_length = 64)]
    pub desktop_id: Option<String>,
    /// Extension. Hours the token stays valid (default: `fleet.enrollment_token_ttl_hours`).
    #[schema(minimum = 1, maximum = 8760)]
    pub ttl_hours: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedEnrollmentToken {
    /// Extension. The token, with the fingerprint of the server's CA when the server made
    /// its own (a guest given only the URL and the token verifies the server by it).
    /// Shown once: the server keeps its hash only.
    pub enrollment_token: String,
    pub project_id: String,
    pub expires_at: String,
    pub desktop_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeEnrollmentTokenRequest {
    /// Extension. The token as it was created (with or without its CA fingerprint).
    #[schema(min_length = 1, max_length = 256)]
    pub enrollment_token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevokedEnrollmentToken {
    pub revoked: bool,
}

/// CreateEnrollmentToken (extension): a token for guests to enroll desktops with.
#[utoipa::path(
    post,
    path = "/v2/{project_id}/enrollment-tokens",
    tag = TAG_EXTENSIONS,
    operation_id = "CreateEnrollmentToken",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)")),
    request_body = CreateEnrollmentTokenRequest,
    responses(
        (status = 200, description = "The token, shown this once", body = CreatedEnrollmentToken),
        (status = 404, description = "WKS: no such desktop in this project", body = ErrorBody),
        WorkspaceErrors,
    ),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn create_enrollment_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(request): ApiJson<CreateEnrollmentTokenRequest>,
) -> Result<Json<CreatedEnrollmentToken>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::CreateEnrollmentToken)?;
    let ttl = request
        .ttl_hours
        .unwrap_or(state.settings.fleet.enrollment_token_ttl_hours);
    if !(1..=MAX_TTL_HOURS).contains(&ttl) {
        return Err(ApiError::invalid(format!(
            "ttl_hours must be 1 to {MAX_TTL_HOURS}, not {ttl}"
        )));
    }
    if let Some(d) = &request.desktop_id {
        deskfleet_core::ids::DesktopId::parse(d.clone())
            .map_err(|e| ApiError::invalid(format!("desktop_id: {e}")))?;
    }
    let issued = crate::admin::issue_enrollment_token(
        state.store.as_ref(),
        &state.settings.data_dir,
        &project,
        request.desktop_id.as_deref(),
        ttl,
        state.clock.now(),
    )
    .await
    .map_err(|e| match e {
        IssueError::NoSuchDesktop(d) => ApiError::not_found(format!(
            "desktop {d} does not exist in this project: import it first, or leave \
             desktop_id out for a project-wide token"
        )),
        IssueError::Store(e) => e.into(),
        e @ IssueError::CaFile(_) => ApiError::internal(&e),
    })?;
    tracing::info!(
        bound = request.desktop_id.is_some(),
        ttl_hours = ttl,
        "enrollment token created"
    );
    Ok(Json(CreatedEnrollmentToken {
        enrollment_token: issued.token,
        project_id: project.into_string(),
        expires_at: api_time(issued.expires_at),
        desktop_id: request.desktop_id,
    }))
}

/// RevokeEnrollmentToken (extension): the token no longer enrolls anything.
#[utoipa::path(
    post,
    path = "/v2/{project_id}/enrollment-tokens/revoke",
    tag = TAG_EXTENSIONS,
    operation_id = "RevokeEnrollmentToken",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)")),
    request_body = RevokeEnrollmentTokenRequest,
    responses(
        (status = 200, description = "Revoked", body = RevokedEnrollmentToken),
        (status = 404, description = "WKS: no such token in this project", body = ErrorBody),
        WorkspaceErrors,
    ),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn revoke_enrollment_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(request): ApiJson<RevokeEnrollmentTokenRequest>,
) -> Result<Json<RevokedEnrollmentToken>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::RevokeEnrollmentToken)?;
    let not_found = || {
        ApiError::not_found(
            "no such enrollment token in this project (give the token as it was created; \
             a revoked one is gone already)",
        )
    };
    let token = EnrollmentToken::parse(request.enrollment_token.trim()).map_err(|e| {
        ApiError::invalid(format!("enrollment_token is not an enrollment token: {e}"))
    })?;
    let hash = crate::auth::secrets::sha256_hex(&token.secret);
    // Another project's live token is not this caller's to see or take back.
    if let Some(grant) = state
        .store
        .find_enrollment_token(&hash, state.clock.now())
        .await?
        && grant.project != project
    {
        return Err(not_found());
    }
    state
        .store
        .revoke_enrollment_token(&hash)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => not_found(),
            other => other.into(),
        })?;
    tracing::info!("enrollment token revoked");
    Ok(Json(RevokedEnrollmentToken { revoked: true }))
}
