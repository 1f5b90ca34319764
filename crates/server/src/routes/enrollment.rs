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
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The longest lifetime a token may be given: a year.
pub const MAX_TTL_HOURS: u64 = 365 * 24;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_enrollment_token))
        .routes(routes!(revoke_enrollment_token))
}

/// CreateEnrollmentToken's body, as documented. Both fields are optional: `{}` makes a
/// project-wide token with the server's default lifetime. Read by [`parse_create`]: serde
/// would also take a JSON array for a struct, and refuse `2.0` as a whole number.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentTokenRequest {
    /// Extension. Bind the token to this imported desktop: the guest that presents it
    /// becomes that desktop (once). Without it, the token enrolls new desktops.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
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
    #[schema(
        min_length = 5,
        max_length = 256,
        pattern = "^DFE1[A-Za-z0-9]+([.][0-9A-Fa-f]{64})?$"
    )]
    pub enrollment_token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevokedEnrollmentToken {
    pub revoked: bool,
}

/// A CreateEnrollmentToken body: an object with at most `desktop_id` (a string) and
/// `ttl_hours` (a whole number, `2.0` included).
fn parse_create(body: &Value) -> Result<CreateEnrollmentTokenRequest, ApiError> {
    let shape =
        "the body must be a JSON object {\"desktop_id\"?: string, \"ttl_hours\"?: whole number}";
    let object = body.as_object().ok_or_else(|| ApiError::invalid(shape))?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !["desktop_id", "ttl_hours"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "unknown field {unknown:?}: {shape}"
        )));
    }
    let desktop_id = match object.get("desktop_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "desktop_id must be a string: {shape}"
            )));
        }
    };
    let ttl_hours = match object.get("ttl_hours") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(f))
                        .map(|f| f as u64)
                })
                .ok_or_else(|| {
                    ApiError::invalid(format!("ttl_hours must be 1 to {MAX_TTL_HOURS}, not {n}"))
                })?,
        ),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "ttl_hours must be a number: {shape}"
            )));
        }
    };
    Ok(CreateEnrollmentTokenRequest {
        desktop_id,
        ttl_hours,
    })
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
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<CreatedEnrollmentToken>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::CreateEnrollmentToken)?;
    let request = parse_create(&body)?;
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
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<RevokedEnrollmentToken>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::RevokeEnrollmentToken)?;
    // An object only: serde would take `["DFE1..."]` for the struct too.
    let shape = "the body must be a JSON object {\"enrollment_token\": string}";
    if !body.is_object() {
        return Err(ApiError::invalid(shape));
    }
    let request: RevokeEnrollmentTokenRequest =
        serde_json::from_value(body).map_err(|e| ApiError::invalid(format!("{e}: {shape}")))?;
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
