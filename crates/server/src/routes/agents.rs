//! BatchInstallAgent and ListAgentsInstallCondition: `/v2/{project_id}/desktops/agents`.

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Query};
use crate::wire;
use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json, Router};
use deskfleet_core::ids::DesktopId;
use deskfleet_core::job::{RolloutLimits, install_targets};
use deskfleet_core::model::{AgentFilter, DesktopFilter, OperationSpec};
use deskfleet_core::store::{Deadlines, StoreError};
use deskfleet_proto::workspace::{
    BatchInstallAgentRequest, JOB_TYPE_INSTALL_AGENT, JobIdResponse, ListAgentsResponse,
};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v2/{project_id}/desktops/agents",
        post(batch_install_agent).get(list_agents_install_condition),
    )
}

#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn batch_install_agent(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(request): ApiJson<BatchInstallAgentRequest>,
) -> Result<Json<JobIdResponse>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::BatchInstallAgent)?;
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
    // The version is chosen now: the newest published (not withdrawn) one.
    let spec = OperationSpec {
        limits,
        ..OperationSpec::install(state.newest_monitor_version().await?)
    };
    let job = state
        .store
        .create_install_job_with(
            &project,
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
    tracing::info!(job_id = %job.id, desktops = desktops.len(), "install job created");
    state.fleet.wake.notify_one();
    Ok(Json(JobIdResponse {
        job_id: job.id.into_string(),
    }))
}

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
