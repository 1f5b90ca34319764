//! The Keystone-compatible part of IAM that the SDKs use: password tokens
//! (`POST /v3/auth/tokens`), token validation (`GET /v3/auth/tokens`) and project
//! discovery (`GET /v3/projects?name=`). Errors here have the Keystone shape.
//!
//! Passwords are checked, and wrong ones counted against the user's lockout, by
//! [`crate::auth::password`], which the console's sign-in uses too.

use crate::AppState;
use crate::auth::password::{LoginRefused, check_password};
use crate::auth::secrets::{new_token, sha256_hex};
use crate::auth::{Caller, count_failure, read_body};
use crate::error::ApiError;
use crate::extract::Query;
use crate::openapi::{KeystoneErrors, TAG_IAM, WorkspaceErrors};
use crate::wire::iam_time;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use deskfleet_core::model::{Project, Role, TokenRecord, User};
use deskfleet_proto::iam as k;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(validate_token, create_token))
}

pub fn authenticated_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_projects))
}

/// A Keystone error: `{"error": {"code", "message", "title"}}`.
#[derive(Debug)]
pub struct KeystoneError(StatusCode, String);

impl KeystoneError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }

    fn unauthorized() -> Self {
        Self(
            StatusCode::UNAUTHORIZED,
            "The username or password is wrong.".into(),
        )
    }

    /// The scope names a project the user has no role in, or none at all: Keystone's 401,
    /// which names neither the project nor whether it exists.
    fn no_access_to_scope() -> Self {
        Self(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication: the user has no role on the project in scope.".into(),
        )
    }
}

impl From<ApiError> for KeystoneError {
    fn from(e: ApiError) -> Self {
        let message = e
            .message
            .clone()
            .unwrap_or_else(|| e.code.message().to_string());
        Self(e.status(), message)
    }
}

impl From<deskfleet_core::store::StoreError> for KeystoneError {
    fn from(e: deskfleet_core::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for KeystoneError {
    fn into_response(self) -> Response {
        let body = k::KeystoneError {
            error: k::KeystoneErrorInner {
                code: self.0.as_u16(),
                message: self.1,
                title: self.0.canonical_reason().unwrap_or("Error").to_string(),
            },
        };
        (self.0, Json(body)).into_response()
    }
}

fn token_body(
    user: &User,
    project: &Project,
    role: Option<Role>,
    record: &TokenRecord,
) -> k::TokenResponse {
    let domain = |d: &deskfleet_core::model::Domain| k::IdName {
        id: d.id.to_string(),
        name: d.name.clone(),
    };
    k::TokenResponse {
        token: k::Token {
            catalog: vec![],
            expires_at: iam_time(record.expires_at),
            issued_at: iam_time(record.issued_at),
            methods: vec!["password".into()],
            project: Some(k::TokenProject {
                id: project.id.to_string(),
                name: project.name.clone(),
                domain: domain(&project.domain),
            }),
            domain: None,
            roles: role
                .map(|r| k::Role {
                    id: "0".into(),
                    name: r.to_string(),
                })
                .into_iter()
                .collect(),
            user: k::TokenUser {
                id: user.id.to_string(),
                name: user.name.clone(),
                domain: domain(&user.domain),
                password_expires_at: String::new(),
            },
        },
    }
}

fn with_subject_token(mut response: Response, token: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(token) {
        response.headers_mut().insert("x-subject-token", value);
    }
    response
}

/// KeystoneCreateUserTokenByPassword: a project-scoped token for a user's password. The
/// token is the `X-Subject-Token` header of the answer.
#[utoipa::path(
    post,
    path = "/v3/auth/tokens",
    tag = TAG_IAM,
    operation_id = "KeystoneCreateUserTokenByPassword",
    params(("nocatalog" = Option<String>, Query, description = "Accepted for the SDKs; the catalog is always empty")),
    request_body = k::TokenRequest,
    responses(
        (status = 201, description = "The token issued", body = k::TokenResponse,
         headers(("X-Subject-Token" = String, description = "The token, for X-Auth-Token"))),
        KeystoneErrors,
    ),
)]
#[tracing::instrument(skip_all)]
async fn create_token(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, KeystoneError> {
    // The one body an unauthenticated caller may send: a password request, small.
    let body = read_body(request.into_body(), super::PUBLIC_BODY_BYTES).await?;
    crate::audit::note_request_body(&body);
    let req: k::TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| KeystoneError::bad_request(format!("The request body is invalid: {e}")))?;
    let auth = req.auth;
    if auth.identity.methods != ["password"] {
        return Err(KeystoneError::bad_request(
            "The request body is invalid: identity.methods must be [\"password\"]",
        ));
    }
    let pw = auth.identity.password.user;
    let domain_name = pw.domain.name.clone().ok_or_else(|| {
        KeystoneError::bad_request("The request body is invalid: give user.domain.name")
    })?;
    if let Some(id) = auth
        .scope
        .as_ref()
        .and_then(|s| s.project.as_ref()?.id.as_deref())
        && let Ok(id) = deskfleet_core::ids::ProjectId::parse(id)
    {
        crate::audit::note_project(&id);
    }
    let user = check_password(&state, &domain_name, &pw.name, pw.password)
        .await
        .map_err(|refused| match refused {
            LoginRefused::BadCredentials => KeystoneError::unauthorized(),
            LoginRefused::Locked { secs } => KeystoneError(
                StatusCode::UNAUTHORIZED,
                format!(
                    "The user is locked after too many wrong passwords; try again in {secs} seconds."
                ),
            ),
            LoginRefused::Busy => KeystoneError(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many logins are being checked; try again in a few seconds.".into(),
            ),
            LoginRefused::Disabled => {
                KeystoneError(StatusCode::UNAUTHORIZED, "The user is disabled.".into())
            }
            LoginRefused::Store(e) => e.into(),
        })?;
    let scope = auth.scope.and_then(|s| s.project).ok_or_else(|| {
        KeystoneError::bad_request(
            "The request body is invalid: deskfleet issues project-scoped tokens; give scope.project.id or scope.project.name",
        )
    })?;
    let project = match (&scope.id, &scope.name) {
        (Some(id), _) => match deskfleet_core::ids::ProjectId::parse(id.as_str()) {
            Ok(id) => state.store.find_project(&id).await?,
            Err(_) => None,
        },
        (None, Some(name)) => state
            .store
            .list_user_projects(&user.id, Some(name))
            .await?
            .into_iter()
            .next(),
        (None, None) => None,
    }
    .filter(|p| p.domain.id == user.domain.id)
    .ok_or_else(|| {
        count_failure("no_role");
        KeystoneError::no_access_to_scope()
    })?;
    crate::audit::note_project(&project.id);
    let Some(role) = state.store.find_role(&user.id, &project.id).await? else {
        count_failure("no_role");
        tracing::info!(user = %user.name, "token refused: no role on the project in scope");
        return Err(KeystoneError::no_access_to_scope());
    };
    let role = Some(role);
    let now = state.clock.now();
    let record = TokenRecord {
        user_id: user.id.clone(),
        project_id: project.id.clone(),
        issued_at: now,
        expires_at: now + state.settings.auth.token_ttl_secs as i64 * 1000,
    };
    let token = new_token();
    state
        .store
        .insert_token(&sha256_hex(&token), &record)
        .await?;
    tracing::info!(user = %user.name, project = %project.id, "token issued");
    let body = token_body(&user, &project, role, &record);
    Ok(with_subject_token(
        (StatusCode::CREATED, Json(body)).into_response(),
        &token,
    ))
}

/// KeystoneValidateToken: what a token is (`X-Subject-Token`; the caller's own without it).
#[utoipa::path(
    get,
    path = "/v3/auth/tokens",
    tag = TAG_IAM,
    operation_id = "KeystoneValidateToken",
    params(
        ("X-Subject-Token" = Option<String>, Header, description = "The token to validate (the caller's own if absent)"),
        ("nocatalog" = Option<String>, Query, description = "Accepted for the SDKs; the catalog is always empty"),
    ),
    responses(
        (status = 200, description = "The token", body = k::TokenResponse,
         headers(("X-Subject-Token" = String, description = "The token validated"))),
        (status = 403, description = "Only one's own tokens, or those of a project one administers", body = k::KeystoneError),
        (status = 404, description = "X-Subject-Token is not a valid token", body = k::KeystoneError),
        KeystoneErrors,
    ),
    security(("token" = [])),
)]
#[tracing::instrument(skip_all)]
async fn validate_token(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, KeystoneError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let caller_token = header("x-auth-token").ok_or_else(|| {
        KeystoneError(StatusCode::UNAUTHORIZED, "X-Auth-Token is missing.".into())
    })?;
    let caller = state.authenticate_token(&caller_token).await?;
    let subject = header("x-subject-token").unwrap_or_else(|| caller_token.clone());
    let invalid = || {
        KeystoneError(
            StatusCode::NOT_FOUND,
            "X-Subject-Token is invalid in the request".into(),
        )
    };
    let record = state
        .store
        .find_token(&sha256_hex(&subject))
        .await?
        .filter(|r| r.expires_at > state.clock.now())
        .ok_or_else(invalid)?;
    let may_see = record.user_id == caller.user_id
        || (caller.project_id == record.project_id && caller.role == Some(Role::Admin));
    if !may_see {
        return Err(KeystoneError(
            StatusCode::FORBIDDEN,
            "You may validate only your own tokens, or those of a project you administer.".into(),
        ));
    }
    let user = state
        .store
        .find_user_by_id(&record.user_id)
        .await?
        .ok_or_else(invalid)?;
    let project = state
        .store
        .find_project(&record.project_id)
        .await?
        .ok_or_else(invalid)?;
    let role = state.store.find_role(&user.id, &project.id).await?;
    let body = token_body(&user, &project, role, &record);
    Ok(with_subject_token(Json(body).into_response(), &subject))
}

/// KeystoneListProjects: the projects the caller has a role in.
#[utoipa::path(
    get,
    path = "/v3/projects",
    tag = TAG_IAM,
    operation_id = "KeystoneListProjects",
    params(("name" = Option<String>, Query, description = "Only the project of this name")),
    responses((status = 200, description = "The projects", body = k::ProjectsResponse), WorkspaceErrors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all)]
async fn list_projects(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Query,
) -> Result<Json<k::ProjectsResponse>, ApiError> {
    let user = state
        .store
        .find_user_by_id(&caller.principal.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("Get secretKey failed"))?;
    let name = query.str("name")?;
    // Only the projects the caller has a role in: the others are none of its business.
    let projects = state
        .store
        .list_user_projects(&user.id, name.as_deref())
        .await?;
    Ok(Json(k::ProjectsResponse {
        projects: projects
            .into_iter()
            .map(|p| k::Project {
                id: p.id.into_string(),
                name: p.name,
                domain_id: p.domain.id.to_string(),
                enabled: true,
                description: String::new(),
                parent_id: user.domain.id.to_string(),
                is_domain: false,
            })
            .collect(),
    }))
}
