//! Jobs and sub-jobs: ShowJob, RunActionsOnWorkspaceJob (retry, cancel), ListItaSubJobs,
//! BatchDeleteSubJobs.

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Query};
use crate::wire;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use deskfleet_core::ids::{JobId, SubJobId};
use deskfleet_core::job::SubJobStatus;
use deskfleet_core::model::{SubJobFilter, SubJobSelector};
use deskfleet_proto::workspace::{
    DeleteSubJobsRequest, JobActionRequest, JobIdResponse, JobInfo, ListSubJobsResponse,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/{project_id}/workspace-jobs/{job_id}", get(show_job))
        .route(
            "/v2/{project_id}/workspace-jobs/{job_id}/actions",
            post(run_job_action),
        )
        .route("/v2/{project_id}/workspace-sub-jobs", get(list_sub_jobs))
        .route(
            "/v2/{project_id}/workspace-sub-jobs/batch-delete",
            post(batch_delete_sub_jobs),
        )
}

fn job_id(raw: String) -> Result<JobId, ApiError> {
    JobId::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

fn job_not_found(id: &JobId) -> ApiError {
    ApiError::not_found(format!("job {id} does not exist in this project"))
}

#[tracing::instrument(skip_all, fields(project_id = %project_id, job_id = %raw_job))]
async fn show_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((project_id, raw_job)): ApiPath<(String, String)>,
) -> Result<Json<JobInfo>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::ShowJob)?;
    let id = job_id(raw_job)?;
    let (job, sub_jobs) = state
        .store
        .get_job(&project, &id)
        .await?
        .ok_or_else(|| job_not_found(&id))?;
    Ok(Json(wire::job(job, sub_jobs)))
}

#[tracing::instrument(skip_all, fields(project_id = %project_id, job_id = %raw_job))]
async fn run_job_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((project_id, raw_job)): ApiPath<(String, String)>,
    ApiJson(action): ApiJson<JobActionRequest>,
) -> Result<Json<JobIdResponse>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::RunActionsOnWorkspaceJob)?;
    let id = job_id(raw_job)?;
    crate::audit::note_resource(id.as_str(), "");
    let result = match action.op_type.as_str() {
        "retry" => {
            // Workspace has no version field: a retried install takes the newest published
            // version, as a new one would (a CES RETRY keeps the invocation's version).
            let retargeted = match state.newest_monitor_version().await? {
                Some(version) => {
                    state
                        .store
                        .retarget_failed_installs(&project, &id, &version)
                        .await
                }
                None => Ok(0),
            };
            match retargeted {
                Ok(_) => {
                    state
                        .store
                        .retry_job(&project, &id, state.deadlines())
                        .await
                }
                Err(e) => Err(e),
            }
        }
        "cancel" => {
            crate::audit::note_trace_name("cancelWorkspaceJob");
            state
                .store
                .cancel_job(&project, &id, state.clock.now())
                .await
        }
        other => {
            return Err(ApiError::invalid(format!(
                "op_type must be \"retry\" or \"cancel\", not {other:?}"
            )));
        }
    };
    let changed = result.map_err(|e| match e {
        deskfleet_core::store::StoreError::NotFound => job_not_found(&id),
        other => other.into(),
    })?;
    tracing::info!(op = %action.op_type, changed, "job action");
    Ok(Json(JobIdResponse {
        job_id: id.into_string(),
    }))
}

#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_sub_jobs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Query,
) -> Result<Json<ListSubJobsResponse>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::ListItaSubJobs)?;
    let page = query.page(1000, 1000, 10_000)?;
    let statuses = query
        .all("status", 4)?
        .into_iter()
        .map(|s| {
            s.parse::<SubJobStatus>()
                .map_err(|e| ApiError::invalid(format!("status: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let filter = SubJobFilter {
        statuses,
        job_id: query.str("job_id")?.map(job_id).transpose()?,
        job_type: query.str("job_type")?,
    };
    // deskfleet has no desktop pools: a pool filter matches nothing.
    let (total_count, rows) = if query.str("desktop_pool_id")?.is_some() {
        (0, vec![])
    } else {
        state.store.list_sub_jobs(&project, &filter, page).await?
    };
    Ok(Json(ListSubJobsResponse {
        total_count,
        jobs: rows.into_iter().map(wire::sub_job).collect(),
    }))
}

#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn batch_delete_sub_jobs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(request): ApiJson<DeleteSubJobsRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::BatchDeleteSubJobs)?;
    let selector = match (request.job_ids, request.delete_by_status) {
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > 10 {
                return Err(ApiError::invalid(format!(
                    "job_ids must name 1 to 10 sub-jobs, not {}",
                    ids.len()
                )));
            }
            let ids = ids
                .into_iter()
                .map(|id| {
                    SubJobId::parse(id)
                        .map_err(|e| ApiError::invalid(format!("job_ids: {}", e.reason)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            SubJobSelector::Ids(ids)
        }
        (None, Some(status)) => match status.parse::<SubJobStatus>() {
            Ok(s @ (SubJobStatus::Success | SubJobStatus::Failed)) => SubJobSelector::Status(s),
            _ => {
                return Err(ApiError::invalid(format!(
                    "delete_by_status must be SUCCESS or FAILED, not {status:?}"
                )));
            }
        },
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of job_ids (sub-job ids) and delete_by_status",
            ));
        }
    };
    let deleted = state.store.delete_sub_jobs(&project, &selector).await?;
    tracing::info!(deleted, "sub-jobs deleted");
    Ok(Json(serde_json::json!({})))
}
