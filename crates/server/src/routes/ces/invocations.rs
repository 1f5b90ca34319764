//! BatchCreateAgentInvocations and ListAgentInvocations (`/v3/{project_id}/agent-invocations…`).
//!
//! An invocation is a sub-job: a CES batch-create makes one job whose sub-jobs are its
//! invocations (`invocation_id` = sub-job id), run by the same engine as Workspace's
//! BatchInstallAgent, so the history of a desktop shows through both APIs. The state
//! mapping, the `invocationmgr.NNNN` codes and the RETRY / ROLLBACK rules are in
//! `docs/ces.md` ("Agent invocations").

use super::error::TaskmgrError;
use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Query};
use crate::fleet::packages::MONITOR;
use crate::openapi::{
    CesV3Errors, ProjectIdParam, TAG_CES, one_of_strings, pattern_string, schema_type,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use deskfleet_core::clock::Millis;
use deskfleet_core::ids::{DesktopId, ProjectId, SubJobId};
use deskfleet_core::job::{Operation, RolloutLimits, SubJobStatus};
use deskfleet_core::model::{
    DesktopFilter, InvocationFilter, OperationSpec, OperationTarget, Page, Rework, SubJob,
    TargetResult,
};
use deskfleet_core::store::StoreError;
use deskfleet_proto::error::TaskErrorCode;
use deskfleet_proto::workspace::JOB_TYPE_INSTALL_AGENT;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(batch_create))
        .routes(routes!(list))
}

/// The only `invocation_target`: Cloud Eye's name for its host-monitoring agent, which
/// is deskfleet's monitoring agent (`deskfleet-monitor`).
pub const TARGET: &str = "telescope";
/// Most instance or invocation ids one batch-create may name.
const MAX_IDS: usize = 100;
/// How far back ListAgentInvocations looks ("the last 3 months").
pub const HISTORY_MS: Millis = 90 * 24 * 3600 * 1000;

/// The `job_type` of the jobs of each operation, beside Workspace's install.
pub fn job_type(op: Operation) -> &'static str {
    match op {
        Operation::Install => JOB_TYPE_INSTALL_AGENT,
        Operation::Update => "batchUpdateCesAgent",
        Operation::Rollback => "batchRollbackCesAgent",
        Operation::Uninstall => "batchUninstallCesAgent",
    }
}

schema_type!(
    /// An instance or invocation id of a batch-create.
    BatchId => pattern_string("^[a-zA-Z0-9-]+$", 1, 64, "1 to 64 letters, digits or hyphens")
);
schema_type!(
    /// An invocation id as ListAgentInvocations filters by it.
    InvocationIdParam => pattern_string(
        "^[a-zA-Z0-9][a-zA-Z0-9_-]*$",
        1,
        usize::MAX,
        "A letter or digit, then letters, digits, '_' or '-' (longer than 255 matches none)"
    )
);
schema_type!(
    /// Every desktop is an ECS.
    InstanceType => one_of_strings(["ECS", "BMS"])
);
schema_type!(
    /// The invocation types ListAgentInvocations takes.
    InvocationTypeName => one_of_strings([
        "INSTALL",
        "UPDATE",
        "ROLLBACK",
        "RETRY",
        "UNINSTALL",
        "SET_REMOTE_INSTALLER",
        "REMOTE_INSTALL",
    ])
);
schema_type!(
    /// The one invocation target.
    TargetName => one_of_strings([TARGET])
);

/// Per-target error codes of a batch-create (`docs/ces.md`).
pub mod code {
    /// The instance is not a desktop of this project.
    pub const UNKNOWN_INSTANCE: &str = "invocationmgr.0001";
    /// The version asked for is not published, or withdrawn.
    pub const NO_SUCH_VERSION: &str = "invocationmgr.0002";
    /// No version of the agent is published at all.
    pub const NOTHING_PUBLISHED: &str = "invocationmgr.0003";
    /// The desktop has another operation (or version) in flight.
    pub const BUSY: &str = "invocationmgr.0004";
    /// UPDATE of a desktop without the agent.
    pub const NOT_INSTALLED: &str = "invocationmgr.0005";
    /// The invocation id is not an invocation of this project.
    pub const UNKNOWN_INVOCATION: &str = "invocationmgr.0006";
    /// RETRY of an invocation that is not FAILED or TIMEOUT.
    pub const NOT_RETRYABLE: &str = "invocationmgr.0007";
    /// ROLLBACK of an invocation that did not replace a version.
    pub const NOT_ROLLBACKABLE: &str = "invocationmgr.0008";
}

/// `BatchCreateAgentInvocationsRequestBody`, as the API and the console send it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = BatchCreateAgentInvocationsRequestBody)]
pub struct BatchCreateBody {
    /// The desktops (INSTALL, UPDATE, UNINSTALL): 1 to 100 ids.
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    /// INSTALL, UPDATE, ROLLBACK, RETRY or UNINSTALL.
    #[serde(default)]
    pub invocation_type: Option<String>,
    /// `telescope` only.
    #[serde(default)]
    pub invocation_target: Option<String>,
    /// The invocations (RETRY, ROLLBACK): 1 to 100 ids.
    #[serde(default)]
    pub invocation_ids: Option<Vec<String>>,
    /// The agent version (INSTALL, UPDATE); the newest published if absent.
    #[serde(default)]
    pub version: Option<String>,
    /// Extension: rollout control, as on BatchInstallAgent: at most this many desktops at
    /// once, a count (`"10"`) or a percentage (`"10%"`).
    #[serde(default)]
    pub max_concurrency: Option<String>,
    /// Extension: once more than this many desktops failed (a count or a percentage), the
    /// desktops not started yet end FAILED.
    #[serde(default)]
    pub max_errors: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = BatchCreateAgentInvocationsResponse)]
struct BatchCreateResponse {
    invocations: Vec<CreatedInvocation>,
}

/// One target's answer: `successful` with its invocation, or `error` with why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedInvocation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    pub ret_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
}

impl CreatedInvocation {
    fn ok(instance: &str, invocation: &str) -> Self {
        Self {
            instance_id: Some(instance.to_owned()),
            invocation_id: Some(invocation.to_owned()),
            ret_status: "successful",
            error_code: None,
            error_msg: None,
        }
    }

    fn error(
        instance: Option<&str>,
        invocation: Option<&str>,
        code: &'static str,
        msg: String,
    ) -> Self {
        // The documented bound of error_msg.
        let msg: String = msg.chars().take(128).collect();
        Self {
            instance_id: instance.map(str::to_owned),
            invocation_id: invocation.map(str::to_owned),
            ret_status: "error",
            error_code: Some(code),
            error_msg: Some(msg),
        }
    }
}

/// `^[a-zA-Z0-9-]{1,64}$`: instance and invocation ids of a batch-create.
fn is_batch_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `^([0-9A-Za-z]|_|-|\.)+$`, at most 64 characters.
fn is_version(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The ids of `field`: 1..=100 of them, each `^[a-zA-Z0-9-]{1,64}$`; duplicates collapse
/// to their first occurrence.
fn batch_ids(field: &str, ids: Option<Vec<String>>, kind: &str) -> Result<Vec<String>, ApiError> {
    let ids = ids.unwrap_or_default();
    if ids.is_empty() {
        return Err(ApiError::invalid(format!(
            "{field} must name 1 to {MAX_IDS} ids for invocation_type {kind}"
        )));
    }
    if ids.len() > MAX_IDS {
        return Err(ApiError::invalid(format!(
            "{field} names {} ids; at most {MAX_IDS} are allowed per request, split the list",
            ids.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        if !is_batch_id(&id) {
            return Err(ApiError::invalid(format!(
                "{field}[{i}] {id:?} is not valid: 1 to 64 letters, digits or hyphens"
            )));
        }
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

/// What a batch-create asks, once its body is checked.
enum Ask {
    /// INSTALL, UPDATE, UNINSTALL on instances.
    Targets(Operation, Vec<String>),
    Retry(Vec<String>),
    Rollback(Vec<String>),
}

fn parse_body(body: &BatchCreateBody) -> Result<Ask, ApiError> {
    let Some(kind) = body.invocation_type.as_deref() else {
        return Err(ApiError::invalid(
            "invocation_type is required: INSTALL, UPDATE, ROLLBACK, RETRY or UNINSTALL",
        ));
    };
    if let Some(target) = body.invocation_target.as_deref()
        && target != TARGET
    {
        return Err(ApiError::invalid(format!(
            "invocation_target must be {TARGET:?} (the monitoring agent), not {target:?}"
        )));
    }
    if let Some(v) = body.version.as_deref()
        && !v.is_empty()
        && !is_version(v)
    {
        return Err(ApiError::invalid(format!(
            "version {v:?} is not valid: 1 to 64 letters, digits, '_', '-' or '.'"
        )));
    }
    let version_given = body.version.as_deref().is_some_and(|v| !v.is_empty());
    let ask = match kind {
        "INSTALL" | "UPDATE" | "UNINSTALL" => {
            let op: Operation = kind.parse().map_err(ApiError::invalid)?;
            if op == Operation::Uninstall && version_given {
                return Err(ApiError::invalid(
                    "version is not taken by UNINSTALL: it removes every version of the agent",
                ));
            }
            Ask::Targets(
                op,
                batch_ids("instance_ids", body.instance_ids.clone(), kind)?,
            )
        }
        "RETRY" | "ROLLBACK" => {
            if version_given {
                return Err(ApiError::invalid(format!(
                    "version is not taken by {kind}: it acts on the versions of the invocations named"
                )));
            }
            let ids = batch_ids("invocation_ids", body.invocation_ids.clone(), kind)?;
            if kind == "RETRY" {
                if body.max_concurrency.is_some() || body.max_errors.is_some() {
                    return Err(ApiError::invalid(
                        "max_concurrency and max_errors are not taken by RETRY: a retried invocation keeps its job's limits",
                    ));
                }
                Ask::Retry(ids)
            } else {
                Ask::Rollback(ids)
            }
        }
        "SET_REMOTE_INSTALLER" | "REMOTE_INSTALL" => {
            return Err(ApiError::invalid(format!(
                "invocation_type {kind} is not offered: deskfleet installs the agent through the guest running on each desktop, never over a remote login; use INSTALL"
            )));
        }
        other => {
            return Err(ApiError::invalid(format!(
                "invocation_type must be INSTALL, UPDATE, ROLLBACK, RETRY or UNINSTALL, not {other:?}"
            )));
        }
    };
    Ok(ask)
}

/// BatchCreateAgentInvocations: install, upgrade, roll back, retry or uninstall the
/// monitoring agent; one invocation per desktop.
#[utoipa::path(
    post,
    path = "/v3/{project_id}/agent-invocations/batch-create",
    tag = TAG_CES,
    operation_id = "BatchCreateAgentInvocations",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)")),
    request_body = BatchCreateBody,
    responses((status = 201, description = "Each target's invocation or error", body = BatchCreateResponse), CesV3Errors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn batch_create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(body): ApiJson<BatchCreateBody>,
) -> Result<(StatusCode, Json<BatchCreateResponse>), TaskmgrError> {
    let project = state.authorize(&caller, &project_id, Api::BatchCreateAgentInvocations)?;
    let invocations = create_invocations(&state, &project, &body).await?;
    Ok((
        StatusCode::CREATED,
        Json(BatchCreateResponse { invocations }),
    ))
}

/// BatchCreateAgentInvocations once authorised: checks the body and creates the job of
/// invocations. The console's upgrade and rollback call it too.
pub async fn create_invocations(
    state: &AppState,
    project: &ProjectId,
    body: &BatchCreateBody,
) -> Result<Vec<CreatedInvocation>, TaskmgrError> {
    let ask = parse_body(body)?;
    let limits = |targets: usize| {
        RolloutLimits::resolve(
            body.max_concurrency.as_deref(),
            body.max_errors.as_deref(),
            u32::try_from(targets).unwrap_or(u32::MAX),
        )
        .map_err(ApiError::invalid)
    };
    let invocations = match ask {
        Ask::Targets(op, ids) => {
            let limits = limits(ids.len())?;
            let version = body.version.as_deref().filter(|v| !v.is_empty());
            create_for_instances(state, project, op, ids, version, limits).await?
        }
        Ask::Retry(ids) => retry(state, project, ids).await?,
        Ask::Rollback(ids) => {
            let limits = limits(ids.len())?;
            rollback(state, project, ids, limits).await?
        }
    };
    state.work_queued();
    Ok(invocations)
}

impl AppState {
    /// The newest published, not withdrawn, version of the monitoring agent (any
    /// platform), if any.
    pub async fn newest_monitor_version(&self) -> Result<Option<String>, StoreError> {
        self.store.newest_version(MONITOR).await
    }
}

/// INSTALL, UPDATE or UNINSTALL of the desktops `ids`: one job, one invocation a desktop
/// that can take it, an error entry for each that cannot.
async fn create_for_instances(
    state: &AppState,
    project: &ProjectId,
    op: Operation,
    ids: Vec<String>,
    version: Option<&str>,
    limits: RolloutLimits,
) -> Result<Vec<CreatedInvocation>, TaskmgrError> {
    // The version every target gets, resolved now.
    let target_version = if op.installs() {
        let packages = state.store.list_packages(MONITOR).await?;
        match version {
            Some(v) => {
                let builds: Vec<_> = packages.iter().filter(|p| p.version == v).collect();
                let problem = if builds.is_empty() {
                    Some(format!(
                        "version {v} of the agent is not published; publish it or choose a published version"
                    ))
                } else if builds.iter().all(|p| p.withdrawn_at.is_some()) {
                    Some(format!(
                        "version {v} of the agent is withdrawn; restore it or choose another version"
                    ))
                } else {
                    None
                };
                if let Some(msg) = problem {
                    return Ok(ids
                        .iter()
                        .map(|id| {
                            CreatedInvocation::error(
                                Some(id),
                                None,
                                code::NO_SUCH_VERSION,
                                msg.clone(),
                            )
                        })
                        .collect());
                }
                Some(v.to_owned())
            }
            None => match state.newest_monitor_version().await? {
                Some(v) => Some(v),
                None => {
                    return Ok(ids
                        .iter()
                        .map(|id| {
                            CreatedInvocation::error(
                                Some(id),
                                None,
                                code::NOTHING_PUBLISHED,
                                "no version of the agent is published; publish one first".into(),
                            )
                        })
                        .collect());
                }
            },
        }
    } else {
        None
    };

    // Which of the ids are desktops of this project, and their agents.
    let parsed: Vec<Option<DesktopId>> = ids
        .iter()
        .map(|id| DesktopId::parse(id.clone()).ok())
        .collect();
    let filter = DesktopFilter {
        desktop_ids: parsed.iter().flatten().cloned().collect(),
        ..DesktopFilter::default()
    };
    let page = Page {
        limit: MAX_IDS as u32,
        offset: 0,
    };
    let (_, desktops) = if filter.desktop_ids.is_empty() {
        (0, Vec::new())
    } else {
        state.store.list_desktops(project, &filter, page).await?
    };
    let mut answers: Vec<Option<CreatedInvocation>> = Vec::with_capacity(ids.len());
    let mut targets = Vec::new();
    let mut slots = Vec::new();
    for (i, (id, desktop)) in ids.iter().zip(&parsed).enumerate() {
        let found = desktop
            .as_ref()
            .and_then(|d| desktops.iter().find(|x| &x.id == d));
        let Some(found) = found else {
            answers.push(Some(CreatedInvocation::error(
                Some(id),
                None,
                code::UNKNOWN_INSTANCE,
                format!("instance {id} is not a desktop of this project"),
            )));
            continue;
        };
        if op == Operation::Update && found.agent.is_none() {
            answers.push(Some(CreatedInvocation::error(
                Some(id),
                None,
                code::NOT_INSTALLED,
                "the agent is not installed on this desktop; use INSTALL".into(),
            )));
            continue;
        }
        answers.push(None);
        slots.push(i);
        targets.push(OperationTarget {
            desktop: found.id.clone(),
            target_version: None,
            rollback_of: None,
        });
    }
    if targets.is_empty() {
        return Ok(answers.into_iter().flatten().collect());
    }
    let spec = OperationSpec {
        operation: op,
        target_version,
        newest_of: None,
        limits,
        exclusive: true,
    };
    let (job, results) = state
        .store
        .create_operation_job(project, &targets, job_type(op), &spec, state.deadlines())
        .await?;
    if let Some(job) = &job {
        tracing::info!(job_id = %job.id, operation = %op, targets = job.sub_jobs_total, "invocations created");
    }
    for ((slot, target), result) in slots.into_iter().zip(&targets).zip(results) {
        answers[slot] = Some(target_answer(target.desktop.as_str(), None, result));
    }
    Ok(answers.into_iter().flatten().collect())
}

/// The batch-create entry of one target of a job of operations.
fn target_answer(instance: &str, asked: Option<&str>, result: TargetResult) -> CreatedInvocation {
    match result {
        TargetResult::Created(id) => CreatedInvocation::ok(instance, id.as_str()),
        TargetResult::UnknownDesktop => CreatedInvocation::error(
            Some(instance),
            asked,
            code::UNKNOWN_INSTANCE,
            format!("instance {instance} is not a desktop of this project"),
        ),
        TargetResult::Busy {
            sub_job,
            operation,
            target_version,
        } => CreatedInvocation::error(
            Some(instance),
            asked,
            code::BUSY,
            format!(
                "invocation {sub_job} ({operation}{}) is in flight on this desktop; wait for it to end",
                target_version.map(|v| format!(" {v}")).unwrap_or_default()
            ),
        ),
    }
}

/// The sub-jobs named by invocation ids, and an error entry for each id that names none.
async fn named(
    state: &AppState,
    project: &ProjectId,
    ids: &[String],
) -> Result<(Vec<SubJobId>, Vec<SubJob>), TaskmgrError> {
    let parsed: Vec<SubJobId> = ids
        .iter()
        .filter_map(|id| SubJobId::parse(id.clone()).ok())
        .collect();
    let found = state.store.get_sub_jobs(project, &parsed).await?;
    Ok((parsed, found))
}

fn unknown_invocation(id: &str) -> CreatedInvocation {
    CreatedInvocation::error(
        None,
        Some(id),
        code::UNKNOWN_INVOCATION,
        format!("invocation {id} does not exist in this project"),
    )
}

/// RETRY: each FAILED or TIMEOUT invocation back to PENDING, same id.
async fn retry(
    state: &AppState,
    project: &ProjectId,
    ids: Vec<String>,
) -> Result<Vec<CreatedInvocation>, TaskmgrError> {
    let (parsed, found) = named(state, project, &ids).await?;
    let answers = state
        .store
        .retry_sub_jobs(project, &parsed, state.deadlines())
        .await?;
    let answered: std::collections::HashMap<&str, Rework> =
        parsed.iter().map(SubJobId::as_str).zip(answers).collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let Some(answer) = answered.get(id.as_str()).cloned() else {
            out.push(unknown_invocation(id));
            continue;
        };
        let instance = found
            .iter()
            .find(|s| s.id.as_str() == id)
            .map(|s| s.desktop_id.as_str().to_owned());
        out.push(match answer {
            Rework::Retried => CreatedInvocation::ok(instance.as_deref().unwrap_or_default(), id),
            Rework::NotFound => unknown_invocation(id),
            Rework::NotAllowed(why) => {
                CreatedInvocation::error(instance.as_deref(), Some(id), code::NOT_RETRYABLE, why)
            }
            Rework::Busy(leader) => CreatedInvocation::error(
                instance.as_deref(),
                Some(id),
                code::BUSY,
                format!("invocation {leader} of another operation or version is in flight on this desktop; wait for it to end"),
            ),
        });
    }
    Ok(out)
}

/// Why an invocation cannot be rolled back, if it cannot; else the version to go back to.
fn rollback_to(sub: &SubJob) -> Result<String, String> {
    let id = &sub.id;
    if !matches!(sub.operation, Operation::Update | Operation::Install) {
        return Err(format!(
            "invocation {id} is a {}; only UPDATE (or INSTALL) invocations that replaced a version can be rolled back",
            sub.operation
        ));
    }
    if sub.rolled_back_at.is_some() {
        return Err(format!("invocation {id} is already rolled back"));
    }
    if sub.status != SubJobStatus::Success {
        return Err(format!(
            "invocation {id} did not succeed; only a SUCCEEDED invocation can be rolled back (a failed upgrade is rolled back by the desktop itself)"
        ));
    }
    match (&sub.current_version, &sub.target_version) {
        (Some(before), Some(after)) if before != after => Ok(before.clone()),
        (Some(_), Some(_)) => Err(format!(
            "invocation {id} did not change the version; there is nothing to roll back"
        )),
        _ => Err(format!(
            "invocation {id} installed the agent where there was none; there is no earlier version to roll back to"
        )),
    }
}

/// ROLLBACK: a new ROLLBACK invocation for each UPDATE (or version-replacing INSTALL)
/// named, back to the version current before it.
async fn rollback(
    state: &AppState,
    project: &ProjectId,
    ids: Vec<String>,
    limits: RolloutLimits,
) -> Result<Vec<CreatedInvocation>, TaskmgrError> {
    let (_, found) = named(state, project, &ids).await?;
    let mut answers: Vec<Option<CreatedInvocation>> = Vec::with_capacity(ids.len());
    let mut targets = Vec::new();
    let mut slots = Vec::new();
    let mut seen_desktops = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(sub) = found.iter().find(|s| s.id.as_str() == id) else {
            answers.push(Some(unknown_invocation(id)));
            continue;
        };
        let instance = Some(sub.desktop_id.as_str());
        match rollback_to(sub) {
            Err(why) => answers.push(Some(CreatedInvocation::error(
                instance,
                Some(id),
                code::NOT_ROLLBACKABLE,
                why,
            ))),
            Ok(_) if !seen_desktops.insert(sub.desktop_id.clone()) => {
                answers.push(Some(CreatedInvocation::error(
                    instance,
                    Some(id),
                    code::BUSY,
                    "another invocation of this request already rolls this desktop back".into(),
                )))
            }
            Ok(version) => {
                answers.push(None);
                slots.push(i);
                targets.push(OperationTarget {
                    desktop: sub.desktop_id.clone(),
                    target_version: Some(version),
                    rollback_of: Some(sub.id.clone()),
                });
            }
        }
    }
    if !targets.is_empty() {
        let spec = OperationSpec {
            operation: Operation::Rollback,
            target_version: None,
            newest_of: None,
            limits,
            exclusive: true,
        };
        let (_, results) = state
            .store
            .create_operation_job(
                project,
                &targets,
                job_type(Operation::Rollback),
                &spec,
                state.deadlines(),
            )
            .await?;
        for ((slot, target), result) in slots.into_iter().zip(&targets).zip(results) {
            answers[slot] = Some(target_answer(
                target.desktop.as_str(),
                Some(ids[slot].as_str()),
                result,
            ));
        }
    }
    Ok(answers.into_iter().flatten().collect())
}

// ---- ListAgentInvocations ----

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ListAgentInvocationsResponse)]
struct ListResponse {
    invocations: Vec<InvocationInfo>,
    count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct InvocationInfo {
    invocation_id: String,
    instance_id: String,
    instance_name: String,
    instance_type: &'static str,
    intranet_ips: Vec<String>,
    elastic_ips: Vec<String>,
    invocation_type: &'static str,
    invocation_status: &'static str,
    invocation_target: &'static str,
    create_time: i64,
    update_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_version: Option<String>,
    result_msg: String,
}

/// `invocation_status` of a sub-job (`docs/ces.md`).
pub fn invocation_status(sub: &SubJob) -> &'static str {
    match sub.status {
        SubJobStatus::Waiting => "PENDING",
        SubJobStatus::Running => "RUNNING",
        SubJobStatus::Success
            if sub.rolled_back_at.is_some() || sub.operation == Operation::Rollback =>
        {
            "ROLLBACKED"
        }
        SubJobStatus::Success => "SUCCEEDED",
        SubJobStatus::Failed => {
            match sub.error_code.as_deref().and_then(TaskErrorCode::from_code) {
                Some(TaskErrorCode::Canceled) => "CANCELED",
                Some(TaskErrorCode::DeliveryTimeout | TaskErrorCode::ExecutionTimeout) => "TIMEOUT",
                _ => "FAILED",
            }
        }
    }
}

/// `result_msg`: the guest's own reason for a failure, else where the work is.
fn result_msg(sub: &SubJob) -> String {
    let msg = match sub.status {
        SubJobStatus::Waiting => "waiting for the desktop to pick the work up".to_owned(),
        SubJobStatus::Running => format!("{} ({}%)", sub.stage, sub.process),
        SubJobStatus::Success => match (sub.operation, &sub.target_version) {
            (_, _) if sub.rolled_back_at.is_some() => format!(
                "rolled back to {}",
                sub.current_version
                    .as_deref()
                    .unwrap_or("the previous version")
            ),
            (Operation::Uninstall, _) => "the agent was removed".to_owned(),
            (Operation::Rollback, Some(v)) => format!("rolled back to {v}"),
            (_, Some(v)) => format!("{v} installed and running"),
            (_, None) => "installed and running".to_owned(),
        },
        SubJobStatus::Failed => match (&sub.error_code, &sub.fail_reason) {
            (Some(code), Some(reason)) => format!("{code}: {reason}"),
            (_, Some(reason)) => reason.clone(),
            _ => "failed".to_owned(),
        },
    };
    msg.chars().take(5000).collect()
}

fn invocation_info(sub: SubJob) -> InvocationInfo {
    let update_time = [
        Some(sub.created_at),
        sub.begin_time,
        sub.end_time,
        sub.rolled_back_at,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(sub.created_at);
    InvocationInfo {
        invocation_status: invocation_status(&sub),
        result_msg: result_msg(&sub),
        invocation_id: sub.id.into_string(),
        instance_id: sub.desktop_id.as_str().to_owned(),
        instance_name: sub.desktop_name,
        instance_type: "ECS",
        intranet_ips: if sub.ip_address.is_empty() {
            Vec::new()
        } else {
            vec![sub.ip_address]
        },
        elastic_ips: Vec::new(),
        invocation_type: sub.operation.as_str(),
        invocation_target: TARGET,
        create_time: sub.created_at,
        update_time,
        current_version: sub.current_version,
        target_version: sub.target_version,
    }
}

fn bad_query(message: String) -> TaskmgrError {
    ApiError::invalid(message).into()
}

/// ListAgentInvocations: the invocations of the last 3 months, newest first.
#[utoipa::path(
    get,
    path = "/v3/{project_id}/agent-invocations",
    tag = TAG_CES,
    operation_id = "ListAgentInvocations",
    params(
        ("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"),
        ("instance_id" = inline(Option<BatchId>), Query, description = "Only this desktop"),
        ("instance_type" = inline(Option<InstanceType>), Query, description = "ECS (all) or BMS (none)"),
        ("invocation_id" = inline(Option<InvocationIdParam>), Query, description = "Only this invocation"),
        ("invocation_type" = inline(Option<InvocationTypeName>), Query, description = "RETRY, SET_REMOTE_INSTALLER and REMOTE_INSTALL match none"),
        ("invocation_target" = inline(Option<TargetName>), Query),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (100)"),
        ("offset" = Option<u64>, Query, maximum = 9999999999999u64, description = "Rows to skip"),
    ),
    responses((status = 200, description = "A page of invocations", body = ListResponse), CesV3Errors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Query,
) -> Result<Json<ListResponse>, TaskmgrError> {
    let project = state.authorize(&caller, &project_id, Api::ListAgentInvocations)?;
    let limit = match query.str("limit")? {
        None => 100,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                bad_query(format!("limit must be an integer from 1 to 100, not {v:?}"))
            })?,
    };
    let offset = match query.str("offset")? {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= 9_999_999_999_999)
            .ok_or_else(|| {
                bad_query(format!(
                    "offset must be an integer from 0 to 9999999999999, not {v:?}"
                ))
            })?,
    };
    let mut none = false;
    let mut filter = InvocationFilter {
        created_since: state.clock.now() - HISTORY_MS,
        ..InvocationFilter::default()
    };
    if let Some(id) = query.str("instance_id")? {
        if !is_batch_id(&id) {
            return Err(bad_query(format!(
                "instance_id {id:?} is not valid: 1 to 64 letters, digits or hyphens"
            )));
        }
        match DesktopId::parse(id) {
            Ok(d) => filter.desktop = Some(d),
            Err(_) => none = true,
        }
    }
    if let Some(id) = query.str("invocation_id")? {
        let valid = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(bad_query(format!(
                "invocation_id {id:?} is not valid: a letter or digit, then letters, digits, '_' or '-'"
            )));
        }
        match SubJobId::parse(id) {
            Ok(s) => filter.sub_job = Some(s),
            Err(_) => none = true,
        }
    }
    match query.str("instance_type")?.as_deref() {
        None | Some("ECS") => {}
        // Every desktop is listed as an ECS.
        Some("BMS") => none = true,
        Some(other) => {
            return Err(bad_query(format!(
                "instance_type must be ECS or BMS, not {other:?}"
            )));
        }
    }
    match query.str("invocation_type")?.as_deref() {
        None => {}
        Some(kind @ ("INSTALL" | "UPDATE" | "ROLLBACK" | "UNINSTALL")) => {
            filter.operation = kind.parse().ok();
        }
        // A retried invocation keeps its type; remote installs are not offered.
        Some("RETRY" | "SET_REMOTE_INSTALLER" | "REMOTE_INSTALL") => none = true,
        Some(other) => {
            return Err(bad_query(format!(
                "invocation_type must be INSTALL, UPDATE, ROLLBACK, RETRY, UNINSTALL, SET_REMOTE_INSTALLER or REMOTE_INSTALL, not {other:?}"
            )));
        }
    }
    if let Some(target) = query.str("invocation_target")?
        && target != TARGET
    {
        return Err(bad_query(format!(
            "invocation_target must be {TARGET:?}, not {target:?}"
        )));
    }
    if none {
        return Ok(Json(ListResponse {
            invocations: Vec::new(),
            count: 0,
        }));
    }
    let page = Page {
        limit,
        offset: u32::try_from(offset).unwrap_or(u32::MAX),
    };
    let (count, rows) = state
        .store
        .list_invocations(&project, &filter, page)
        .await?;
    Ok(Json(ListResponse {
        invocations: rows.into_iter().map(invocation_info).collect(),
        count,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_versions_follow_the_documented_patterns() {
        assert!(is_batch_id("4270ff17-aba3-4138-89fa-820594c39755"));
        assert!(!is_batch_id(""));
        assert!(!is_batch_id(&"a".repeat(65)));
        assert!(!is_batch_id("a_b"));
        assert!(is_version("0.2.0-rc_1"));
        assert!(!is_version("0.2 0"));
        assert!(!is_version(&"1".repeat(65)));
    }

    #[test]
    fn remote_installs_are_refused_with_a_reason() {
        let body = BatchCreateBody {
            instance_ids: Some(vec!["d1".into()]),
            invocation_type: Some("REMOTE_INSTALL".into()),
            invocation_target: None,
            invocation_ids: None,
            version: None,
            max_concurrency: None,
            max_errors: None,
        };
        let err = parse_body(&body).err().unwrap();
        assert!(err.message.unwrap().contains("use INSTALL"));
    }
}
