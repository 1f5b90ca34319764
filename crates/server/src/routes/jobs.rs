//! Jobs and sub-jobs: ShowJob, RunActionsOnWorkspaceJob (retry, cancel), ListItaSubJobs,
//! BatchDeleteSubJobs.

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Query};
use crate::openapi::{
    PrintableId, ProjectIdParam, TAG_WORKSPACE, WorkspaceErrors, one_of_strings, schema_type,
};
use crate::wire;
use axum::extract::State;
use axum::{Extension, Json};
use deskfleet_core::ids::{JobId, ProjectId, SubJobId};
use deskfleet_core::job::SubJobStatus;
use deskfleet_core::model::{SubJobFilter, SubJobSelector};
use deskfleet_proto::error::ErrorBody;
use deskfleet_proto::workspace::{
    DeleteSubJobsRequest, EmptyResponse, JobActionRequest, JobIdResponse, JobInfo,
    ListSubJobsResponse,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show_job))
        .routes(routes!(run_job_action))
        .routes(routes!(list_sub_jobs))
        .routes(routes!(batch_delete_sub_jobs))
}

schema_type!(
    /// A sub-job status, as ListItaSubJobs filters by it.
    SubJobStatusName => one_of_strings(SubJobStatus::ALL.iter().map(|s| s.as_str()))
);

fn job_id(raw: String) -> Result<JobId, ApiError> {
    JobId::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

pub(crate) fn job_not_found(id: &JobId) -> ApiError {
    ApiError::not_found(format!("job {id} does not exist in this project"))
}

/// ShowJob: a job and its sub-jobs.
#[utoipa::path(
    get,
    path = "/v2/{project_id}/workspace-jobs/{job_id}",
    tag = TAG_WORKSPACE,
    operation_id = "ShowJob",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"), ("job_id" = inline(PrintableId), Path, description = "The job id")),
    responses((status = 200, description = "The job", body = JobInfo), (status = 404, description = "WKS: no such job in this project", body = ErrorBody), WorkspaceErrors),
    security(("aksk" = []), ("token" = [])),
)]
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

/// RunActionsOnWorkspaceJob: `retry` a job's failed sub-jobs, or `cancel` the ones not
/// done.
#[utoipa::path(
    post,
    path = "/v2/{project_id}/workspace-jobs/{job_id}/actions",
    tag = TAG_WORKSPACE,
    operation_id = "RunActionsOnWorkspaceJob",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"), ("job_id" = inline(PrintableId), Path, description = "The job id")),
    request_body = JobActionRequest,
    responses((status = 200, description = "The job acted on", body = JobIdResponse), (status = 404, description = "WKS: no such job in this project", body = ErrorBody), WorkspaceErrors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id, job_id = %raw_job))]
async fn run_job_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((project_id, raw_job)): ApiPath<(String, String)>,
    ApiJson(action): ApiJson<JobActionRequest>,
) -> Result<Json<JobIdResponse>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::RunActionsOnWorkspaceJob)?;
    let id = job_id(raw_job)?;
    let changed = job_action(&state, &project, &id, &action.op_type).await?;
    tracing::info!(op = %action.op_type, changed, "job action");
    Ok(Json(JobIdResponse {
        job_id: id.into_string(),
    }))
}

/// RunActionsOnWorkspaceJob once authorised: `retry` puts the job's FAILED sub-jobs back
/// to WAITING (on the newest version), `cancel` ends its WAITING ones. Returns how many
/// sub-jobs changed. The console's retry and cancel buttons call it too.
pub async fn job_action(
    state: &AppState,
    project: &ProjectId,
    id: &JobId,
    op_type: &str,
) -> Result<u64, ApiError> {
    crate::audit::note_resource(id.as_str(), "");
    let result = match op_type {
        "retry" => {
            // Workspace has no version field: a retried install takes the newest published
            // version, as a new one would (a CES RETRY keeps the invocation's version).
            let retargeted = match state.newest_monitor_version().await? {
                Some(version) => {
                    state
                        .store
                        .retarget_failed_installs(project, id, &version)
                        .await
                }
                None => Ok(0),
            };
            match retargeted {
                Ok(_) => state.store.retry_job(project, id, state.deadlines()).await,
                Err(e) => Err(e),
            }
        }
        "cancel" => {
            crate::audit::note_trace_name("cancelWorkspaceJob");
            state.store.cancel_job(project, id, state.clock.now()).await
        }
        other => {
            return Err(ApiError::invalid(format!(
                "op_type must be \"retry\" or \"cancel\", not {other:?}"
            )));
        }
    };
    let changed = result.map_err(|e| match e {
        deskfleet_core::store::StoreError::NotFound => job_not_found(id),
        other => other.into(),
    })?;
    if op_type == "retry" && changed > 0 {
        state.work_queued();
    }
    Ok(changed)
}

/// ListItaSubJobs: sub-jobs, newest first.
#[utoipa::path(
    get,
    path = "/v2/{project_id}/workspace-sub-jobs",
    tag = TAG_WORKSPACE,
    operation_id = "ListItaSubJobs",
    params(
        ("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"),
        ("status" = inline(Option<Vec<SubJobStatusName>>), Query, explode = true, max_items = 4, description = "Up to 4 statuses"),
        ("job_id" = inline(Option<PrintableId>), Query, description = "Only the sub-jobs of this job"),
        ("job_type" = Option<String>, Query, description = "Only sub-jobs of this type"),
        ("desktop_pool_id" = Option<String>, Query, description = "deskfleet has no pools: matches nothing"),
        ("limit" = Option<u32>, Query, maximum = 1000, description = "Page size, 0 to 1000 (1000)"),
        ("offset" = Option<u32>, Query, maximum = 10000, description = "Rows to skip, at most 10000"),
    ),
    responses((status = 200, description = "A page of sub-jobs", body = ListSubJobsResponse), WorkspaceErrors),
    security(("aksk" = []), ("token" = [])),
)]
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

/// BatchDeleteSubJobs: deletes sub-jobs by id, or every finished one of a status.
#[utoipa::path(
    post,
    path = "/v2/{project_id}/workspace-sub-jobs/batch-delete",
    tag = TAG_WORKSPACE,
    operation_id = "BatchDeleteSubJobs",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)")),
    request_body = DeleteSubJobsRequest,
    responses((status = 200, description = "Deleted", body = EmptyResponse), WorkspaceErrors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn batch_delete_sub_jobs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(request): ApiJson<DeleteSubJobsRequest>,
) -> Result<Json<EmptyResponse>, ApiError> {
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
    Ok(Json(EmptyResponse {}))
}
