//! ListAgentStatus (`POST /v3/{project_id}/agent-status/batch-query`): each desktop's
//! guest ("uniagent") and monitoring agent ("telescope") as Cloud Eye reports them.
//!
//! `uniagent_status` comes from the guest's connection (see `deskfleet_core::presence`):
//! `running` while online, `unknown` once it connected but is offline now (disconnected,
//! or silent for three heartbeat intervals), `none` when no guest ever connected, and for
//! ids this project does not have (another project's desktops included: they are never
//! told apart from unknown ids). `silent` is never reported: deskfleet does not offer
//! pausing the agent. The one extension, `telescope`, is deskfleet's monitoring agent.
//! The mapping is written down in `docs/ces.md`, "Agent status".

use super::error::TaskmgrError;
use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::openapi::{CesV3Errors, ProjectIdParam, TAG_CES, one_of_strings, schema_type};
use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use deskfleet_core::ids::DesktopId;
use deskfleet_core::model::{Desktop, DesktopFilter, Page};
use deskfleet_core::presence::{Freshness, Presence};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The name Cloud Eye gives the monitoring agent; deskfleet's is `deskfleet-monitor`.
pub const TELESCOPE: &str = "telescope";
/// At most this many `instance_ids` in one query.
pub const MAX_INSTANCE_IDS: usize = 2000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_agent_status))
}

/// `ListAgentStatusRequestBody`. Unknown fields are ignored, as the SDK's models do.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ListAgentStatusRequestBody)]
struct RequestBody {
    /// 1 to 2000 desktop ids.
    #[schema(inline, value_type = Vec<super::invocations::BatchId>, min_items = 1, max_items = 2000)]
    instance_ids: Option<Vec<String>>,
    /// Only desktops whose guest is in this state.
    #[schema(inline, value_type = Option<UniagentStatusName>)]
    uniagent_status: Option<String>,
    /// Only `telescope` (the monitoring agent) can be queried.
    #[schema(inline, value_type = Option<ExtensionName>)]
    extension_name: Option<String>,
    /// Only desktops whose agent is in this state.
    #[schema(inline, value_type = Option<ExtensionStatusName>)]
    extension_status: Option<String>,
}

schema_type!(
    /// A guest state ListAgentStatus filters by.
    UniagentStatusName => one_of_strings(UNIAGENT_STATUSES)
);
schema_type!(
    /// The one extension that can be queried.
    ExtensionName => one_of_strings([TELESCOPE])
);
schema_type!(
    /// An agent state ListAgentStatus filters by.
    ExtensionStatusName => one_of_strings(EXTENSION_STATUSES)
);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListAgentStatusResponse {
    pub agent_status: Vec<AgentStatusInfo>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentStatusInfo {
    pub instance_id: String,
    /// The guest: `running`, `unknown` (connected once, offline now) or `none`.
    pub uniagent_status: &'static str,
    pub extensions: Vec<ExtensionInfo>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExtensionInfo {
    /// `telescope`: deskfleet's monitoring agent.
    pub name: &'static str,
    /// `running`, `fault`, `none` or `unknown`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

const UNIAGENT_STATUSES: [&str; 4] = ["none", "running", "silent", "unknown"];
const EXTENSION_STATUSES: [&str; 5] = ["none", "running", "stopped", "fault", "unknown"];

/// What the caller asked, once checked.
#[derive(Debug)]
struct StatusQuery {
    /// Distinct, in the order given.
    instance_ids: Vec<String>,
    uniagent_status: Option<String>,
    extension_status: Option<String>,
}

fn bad(message: impl Into<String>) -> TaskmgrError {
    TaskmgrError(ApiError::invalid(message))
}

fn is_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn one_of(
    field: &str,
    value: Option<String>,
    allowed: &[&str],
) -> Result<Option<String>, TaskmgrError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(bad(format!(
            "{field} {v:?} is not one of {}",
            allowed.join(", ")
        ))),
        other => Ok(other),
    }
}

fn parse(body: &[u8]) -> Result<StatusQuery, TaskmgrError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(
            "the request body is empty: send a JSON object with instance_ids, \
             e.g. {\"instance_ids\": [\"<desktop id>\"]}",
        ));
    }
    let body: RequestBody = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the request body is not valid: {e}")))?;
    let ids = body
        .instance_ids
        .ok_or_else(|| bad("instance_ids is required: 1 to 2000 desktop ids"))?;
    if ids.is_empty() || ids.len() > MAX_INSTANCE_IDS {
        return Err(bad(format!(
            "instance_ids has {} items; send 1 to {MAX_INSTANCE_IDS}",
            ids.len()
        )));
    }
    if let Some(wrong) = ids.iter().find(|id| !is_instance_id(id)) {
        return Err(bad(format!(
            "instance_ids item {wrong:?} does not match ^[a-zA-Z0-9-]{{1,64}}$"
        )));
    }
    if let Some(name) = &body.extension_name
        && name != TELESCOPE
    {
        return Err(bad(format!(
            "extension_name {name:?} is not supported; only \"{TELESCOPE}\" can be queried"
        )));
    }
    let mut seen = HashSet::new();
    let instance_ids = ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    Ok(StatusQuery {
        instance_ids,
        uniagent_status: one_of("uniagent_status", body.uniagent_status, &UNIAGENT_STATUSES)?,
        extension_status: one_of(
            "extension_status",
            body.extension_status,
            &EXTENSION_STATUSES,
        )?,
    })
}

/// The status of one desktop (`None`: not a desktop of this project).
pub fn agent_status(id: String, desktop: Option<&Desktop>, fresh: Freshness) -> AgentStatusInfo {
    let presence = desktop.map_or(Presence::Never, |d| fresh.presence(&d.connection));
    let agent = desktop.and_then(|d| d.agent.as_ref());
    let (uniagent_status, status) = match presence {
        Presence::Never => ("none", "none"),
        Presence::Offline { .. } => ("unknown", "unknown"),
        Presence::Online { .. } => (
            "running",
            match agent {
                None => "none",
                Some(a) if a.healthy => "running",
                Some(_) => "fault",
            },
        ),
    };
    AgentStatusInfo {
        instance_id: id,
        uniagent_status,
        extensions: vec![ExtensionInfo {
            name: TELESCOPE,
            status,
            version: agent.map(|a| a.version.clone()),
        }],
    }
}

/// ListAgentStatus: each desktop's guest and monitoring agent.
#[utoipa::path(
    post,
    path = "/v3/{project_id}/agent-status/batch-query",
    tag = TAG_CES,
    operation_id = "ListAgentStatus",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)")),
    request_body = RequestBody,
    responses((status = 200, description = "The desktops' status", body = ListAgentStatusResponse), CesV3Errors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_agent_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    body: Bytes,
) -> Result<Json<ListAgentStatusResponse>, TaskmgrError> {
    let project = state.authorize(&caller, &project_id, Api::ListAgentStatus)?;
    let query = parse(&body)?;
    // Every instance id is a valid desktop id (a stricter pattern).
    let desktop_ids = query
        .instance_ids
        .iter()
        .map(|id| DesktopId::parse(id.as_str()).map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let filter = DesktopFilter {
        desktop_ids,
        ..DesktopFilter::default()
    };
    let page = Page {
        limit: MAX_INSTANCE_IDS as u32,
        offset: 0,
    };
    let (_, desktops) = state.store.list_desktops(&project, &filter, page).await?;
    let fresh = state.freshness();
    let by_id: HashMap<&str, &Desktop> = desktops.iter().map(|d| (d.id.as_str(), d)).collect();
    let agent_status = query
        .instance_ids
        .iter()
        .map(|id| agent_status(id.clone(), by_id.get(id.as_str()).copied(), fresh))
        .filter(|s| {
            query
                .uniagent_status
                .as_deref()
                .is_none_or(|want| s.uniagent_status == want)
                && query
                    .extension_status
                    .as_deref()
                    .is_none_or(|want| s.extensions.iter().any(|e| e.status == want))
        })
        .collect();
    Ok(Json(ListAgentStatusResponse { agent_status }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        let TaskmgrError(e) = parse(body.as_bytes()).unwrap_err();
        e.message.unwrap_or_default()
    }

    #[test]
    fn bodies_are_checked() {
        assert!(err("").contains("empty"));
        assert!(err("{}").contains("instance_ids is required"));
        assert!(err(r#"{"instance_ids": []}"#).contains("0 items"));
        let many: Vec<String> = (0..2001).map(|i| format!("\"d{i}\"")).collect();
        assert!(err(&format!("{{\"instance_ids\": [{}]}}", many.join(","))).contains("2001"));
        assert!(err(r#"{"instance_ids": ["a_b"]}"#).contains("a_b"));
        assert!(err(r#"{"instance_ids": ["a"], "extension_name": "x"}"#).contains("telescope"));
        assert!(err(r#"{"instance_ids": ["a"], "uniagent_status": "up"}"#).contains("up"));
        assert!(err(r#"{"instance_ids": ["a"], "extension_status": "ok"}"#).contains("ok"));
        let q =
            parse(br#"{"instance_ids": ["a", "b", "a"], "uniagent_status": "silent"}"#).unwrap();
        assert_eq!(q.instance_ids, ["a", "b"]);
        assert_eq!(q.uniagent_status.as_deref(), Some("silent"));
    }
}
