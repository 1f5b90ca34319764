//! The monitoring agent's published versions (a deskfleet extension):
//! `GET /v2/{project_id}/agent-packages`. Versions are published with the admin command
//! `packages publish` (`docs/packages.md`); this is how the CLI, the console and scripts
//! see which versions an install, upgrade or rollback can name.

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::fleet::packages::MONITOR;
use crate::openapi::{ProjectIdParam, TAG_EXTENSIONS, WorkspaceErrors};
use crate::wire::api_time;
use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_agent_packages))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentPackages {
    /// Extension. Every published version, newest first, one entry per platform.
    pub packages: Vec<AgentPackage>,
    /// Extension. The version an install or upgrade takes when none is named: the newest
    /// not withdrawn (null when there is none).
    pub default_version: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentPackage {
    pub name: String,
    pub version: String,
    /// e.g. `linux-x86_64`.
    pub platform: String,
    /// Archive size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the archive.
    pub sha256: String,
    pub published_at: String,
    /// When the version was withdrawn (no longer offered for installs or upgrades, still
    /// served for rollbacks); null while it is offered.
    pub withdrawn_at: Option<String>,
}

/// ListAgentPackages (extension): the published versions of the monitoring agent.
#[utoipa::path(
    get,
    path = "/v2/{project_id}/agent-packages",
    tag = TAG_EXTENSIONS,
    operation_id = "ListAgentPackages",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)")),
    responses(
        (status = 200, description = "The published versions", body = AgentPackages),
        WorkspaceErrors,
    ),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_agent_packages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
) -> Result<Json<AgentPackages>, ApiError> {
    state.authorize(&caller, &project_id, Api::ListAgentPackages)?;
    let mut listed = state.store.list_packages(MONITOR).await?;
    listed.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.platform.cmp(&b.platform))
    });
    let default_version = state.newest_monitor_version().await?;
    Ok(Json(AgentPackages {
        packages: listed
            .into_iter()
            .map(|p| AgentPackage {
                name: p.name,
                version: p.version,
                platform: p.platform,
                size: p.size,
                sha256: p.sha256,
                published_at: api_time(p.created_at),
                withdrawn_at: p.withdrawn_at.map(api_time),
            })
            .collect(),
        default_version,
    }))
}
