//! BatchInstallAgent and ListAgentsInstallCondition: `/v2/{project_id}/desktops/agents`.

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Query};
use crate::openapi::{PrintableId, ProjectIdParam, TAG_WORKSPACE, WorkspaceErrors};
use crate::wire;
use axum::extract::State;
use axum::{Extension, Json};
use deskfleet_core::ids::{DesktopId, ProjectId};
use deskfleet_core::job::{RolloutLimits, install_targets};
use deskfleet_core::model::{AgentFilter, DesktopFilter, Job, OperationSpec};
use deskfleet_core::store::{Deadlines, StoreError};
use deskfleet_proto::workspace::{
    BatchInstallAgentRequest, JOB_TYPE_INSTALL_AGENT, JobIdResponse, ListAgentsResponse,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(batch_install_agent, list_agents_install_condition))
}

/// BatchInstallAgent: installs the monitoring agent on desktops, as one job.
#[utoipa::path(
    post,
    path = "/v2/{project_id}/desktops/agents",
    tag = TAG_WORKSPACE,
    operation_id = "BatchInstallAgent",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)")),
    request_body = BatchInstallAgentRequest,
    responses((status = 200, description = "The job created", body = JobIdResponse), WorkspaceErrors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn batch_install_agent(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(request): ApiJson<BatchInstallAgentRequest>,
) -> Result<Json<JobIdResponse>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::BatchInstallAgent)?;
    let job = batch_install(
        &state,
        &project,
        InstallRequest {
            desktop_ids: request.desktop_ids,
            max_concurrency: request.max_concurrency,
            max_errors: request.max_errors,
            version: None,
        },
    )
    .await?;
    Ok(Json(JobIdResponse {
        job_id: job.id.into_string(),
    }))
}

/// What BatchInstallAgent is asked, as the API and the console ask it.
#[derive(Debug, Clone, Default)]
pub struct InstallRequest {
    pub desktop_ids: Vec<String>,
    pub max_concurrency: Option<String>,
    pub max_errors: Option<String>,
    /// A published (not withdrawn) version of the agent; `None` for the newest.
    pub version: Option<String>,
}

/// BatchInstallAgent once authorised: validates the desktops, the rollout limits and the
/// version exactly as the API does, and creates the job. The console's install calls it
/// too, so both answer the same errors.
pub async fn batch_install(
    state: &AppState,
    project: &ProjectId,
    request: InstallRequest,
) -> Result<Job, ApiError> {
    let desktops = install_targets(request.desktop_ids).map_err(ApiError::invalid)?;
    crate::audit::note_resource(
        &crate::audit::joined_ids(desktops.iter().map(|d| d.as_str())),
        "",
    );
    let limits = RolloutLimits::resolve(
        request.max_concurrency.as_deref(),
        request.max_errors.as_deref(),
        u32::try_from(desktops.len()).unwrap_or(u32::MAX),
    )
    .map_err(ApiError::invalid)?;
    let spec = match request.version {
        // The newest published (not withdrawn) version, chosen by the job's own write.
        None => OperationSpec {
            newest_of: Some(crate::fleet::packages::MONITOR),
            limits,
            ..OperationSpec::install(None)
        },
        Some(v) => OperationSpec {
            limits,
            ..OperationSpec::install(Some(state.offered_monitor_version(&v).await?))
        },
    };
    let job = state
        .store
        .create_install_job_with(
            project,
            &desktops,
            JOB_TYPE_INSTALL_AGENT,
            &spec,
            state.deadlines(),
        )
        .await
        .map_err(|e| match e {
            StoreError::UnknownDesktops(ids) => ApiError::invalid(format!(
                "{} of the desktop_ids do not exist in project {project}; remove them or register the desktops",
                ids.len()
            ))
            .with_detail(ids.join(",")),
            other => other.into(),
        })?;
    tracing::debug!(job_id = %job.id, desktops = desktops.len(), "install job created");
    state.work_queued();
    Ok(job)
}

/// ListAgentsInstallCondition: each desktop's agent, installed or not, and its install in
/// flight.
#[utoipa::path(
    get,
    path = "/v2/{project_id}/desktops/agents",
    tag = TAG_WORKSPACE,
    operation_id = "ListAgentsInstallCondition",
    params(
        ("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"),
        ("desktop_id" = inline(Option<PrintableId>), Query, description = "Only this desktop"),
        ("desktop_name" = Option<String>, Query, description = "Only desktops of this name"),
        ("ip_address" = Option<String>, Query, description = "Only desktops with this address"),
        ("status" = Option<String>, Query, description = "Only desktops in this run state"),
        ("enterprise_project_id" = Option<String>, Query),
        ("desktop_pool_id" = Option<String>, Query, description = "deskfleet has no pools: matches nothing"),
        ("is_installed" = Option<bool>, Query, description = "Only desktops with (true) or without (false) the agent"),
        ("limit" = Option<u32>, Query, maximum = 1000, description = "Page size, 0 to 1000 (10)"),
        ("offset" = Option<u32>, Query, maximum = 2147483647, description = "Rows to skip"),
    ),
    responses((status = 200, description = "A page of desktops", body = ListAgentsResponse), WorkspaceErrors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_agents_install_condition(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Query,
) -> Result<Json<ListAgentsResponse>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::ListAgentsInstallCondition)?;
    let page = query.page(1000, 10, i32::MAX as u32)?;
    let desktop_ids = query
        .str("desktop_id")?
        .map(|id| DesktopId::parse(id).map_err(|e| ApiError::invalid(e.to_string())))
        .transpose()?
        .into_iter()
        .collect();
    let fresh = state.freshness();
    let filter = AgentFilter {
        desktop: DesktopFilter {
            desktop_ids,
            computer_name: query.str("desktop_name")?,
            ip_address: query.str("ip_address")?,
            status: query.str("status")?,
            enterprise_project_id: query.str("enterprise_project_id")?,
            seen_after: Some(fresh.cutoff()),
        },
        is_installed: query.bool("is_installed")?,
    };
    // deskfleet has no desktop pools: a pool filter matches nothing.
    if query.str("desktop_pool_id")?.is_some() {
        return Ok(Json(ListAgentsResponse {
            agents_condition: vec![],
            total_count: 0,
        }));
    }
    let (total_count, rows) = state
        .store
        .list_agent_conditions(&project, &filter, page)
        .await?;
    Ok(Json(ListAgentsResponse {
        agents_condition: rows
            .into_iter()
            .map(|c| wire::agents_condition(c, fresh))
            .collect(),
        total_count,
    }))
}

impl AppState {
    /// Deadlines for work created or retried now.
    pub fn deadlines(&self) -> Deadlines {
        let now = self.clock.now();
        Deadlines {
            now,
            deliver_by: now + self.settings.jobs.delivery_timeout_ms as i64,
        }
    }
}

impl AppState {
    /// `version` if it is a published, not withdrawn, version of the monitoring agent;
    /// else a `WKS.0001` that lists the versions that are.
    pub async fn offered_monitor_version(&self, version: &str) -> Result<String, ApiError> {
        let packages = self
            .store
            .list_packages(crate::fleet::packages::MONITOR)
            .await?;
        let mut offered: Vec<&str> = packages
            .iter()
            .filter(|p| p.withdrawn_at.is_none())
            .map(|p| p.version.as_str())
            .collect();
        if offered.contains(&version) {
            return Ok(version.to_owned());
        }
        offered.dedup();
        Err(ApiError::invalid(format!(
            "version {version:?} is not published or was withdrawn; choose one of: {}",
            if offered.is_empty() {
                "(none published)".to_owned()
            } else {
                offered.join(", ")
            }
        )))
    }
}
