//! Workspace v2 request and response bodies, with the field names the official SDKs use.
//!
//! Responses are serialized with every documented field present (`null` where unknown):
//! the SDKs accept `null` everywhere and ignore unknown fields, so adding a field later is
//! safe, renaming one is not. Fixtures in `tests/fixtures/` pin the shapes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `job_type` of an agent-install job, after the audit-trail event name of the
/// real service (`batchInstallCesAgent`).
pub const JOB_TYPE_INSTALL_AGENT: &str = "batchInstallCesAgent";

/// The name under which the monitoring agent is reported in `agent_info`.
pub const AGENT_NAME: &str = "deskfleet-monitor";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchInstallAgentRequest {
    /// 1 to 100 desktop ids, each of a desktop of the project.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100))]
    pub desktop_ids: Vec<String>,
    /// Extension (rollout control, `docs/api.md`): at most this many desktops installing
    /// at once, a count (`"10"`) or a percentage of the desktops (`"10%"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<String>,
    /// Extension: once more than this many desktops failed (a count or a percentage), the
    /// desktops not started yet end FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobIdResponse {
    pub job_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobActionRequest {
    /// `retry` (the failed sub-jobs) or `cancel` (the ones not done).
    #[cfg_attr(feature = "openapi", schema(pattern = "^(retry|cancel)$"))]
    pub op_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteSubJobsRequest {
    /// 1 to 10 sub-job ids; or else `delete_by_status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 10))]
    pub job_ids: Option<Vec<String>>,
    /// `SUCCESS` or `FAILED`: every sub-job of that status; or else `job_ids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^(SUCCESS|FAILED)$"))]
    pub delete_by_status: Option<String>,
}

/// An empty object: the body of BatchDeleteSubJobs' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmptyResponse {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEntities {
    pub desktop_id: Option<String>,
    pub desktop_name: Option<String>,
    pub ip_address: Option<String>,
    pub product_id: Option<String>,
    pub user_name: Option<String>,
}

/// `JobDetailInfo`: one sub-job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubJobInfo {
    pub id: String,
    pub job_id: String,
    pub job_type: String,
    pub project_id: Option<String>,
    pub entities: JobEntities,
    pub status: String,
    pub process: Option<i32>,
    pub begin_time: Option<String>,
    pub end_time: Option<String>,
    pub error_code: Option<String>,
    pub fail_reason: Option<String>,
    pub message: Option<String>,
    pub host: Option<String>,
    pub desktop_name: Option<String>,
    pub ip_address: Option<String>,
}

/// ShowJob's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInfo {
    pub id: String,
    pub job_type: String,
    pub status: String,
    pub begin_time: Option<String>,
    pub end_time: Option<String>,
    pub job_error_code: Option<String>,
    pub fail_reason: Option<String>,
    pub sub_jobs_total: i32,
    pub sub_jobs: Vec<SubJobInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListSubJobsResponse {
    pub total_count: i64,
    pub jobs: Vec<SubJobInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentInfo {
    pub agent_name: String,
    pub agent_version: String,
    pub is_installed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentsCondition {
    pub desktop_id: String,
    pub desktop_name: String,
    pub desktop_pool_id: Option<String>,
    pub status: String,
    pub task_status: String,
    pub ip_address: String,
    pub enterprise_project_id: String,
    pub process: Option<i32>,
    pub agent_info: Vec<AgentInfo>,
    /// deskfleet extension: the guest's connection.
    #[serde(default)]
    pub connection: Option<ConnectionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListAgentsResponse {
    pub agents_condition: Vec<AgentsCondition>,
    pub total_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// `SimpleDesktopInfo` (ListDesktops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SimpleDesktopInfo {
    pub desktop_id: String,
    pub computer_name: String,
    pub os_host_name: Option<String>,
    pub status: String,
    pub task_status: String,
    pub ip_address: String,
    pub created: String,
    pub enterprise_project_id: String,
    pub project_id: String,
    pub desktop_type: String,
    pub tags: Vec<Tag>,
    /// `REGISTERED` while the desktop's guest is online, else `UNREGISTER` (the values of
    /// `login_status`).
    #[serde(default)]
    pub connect_status: String,
    /// deskfleet extension: the guest's connection.
    #[serde(default)]
    pub connection: Option<ConnectionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListDesktopsResponse {
    pub total_count: i64,
    pub desktops: Vec<SimpleDesktopInfo>,
}

/// `DesktopDetailInfo` (ListDesktopsDetail, ShowDesktopDetail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DesktopDetailInfo {
    pub desktop_id: String,
    pub computer_name: String,
    pub os_host_name: Option<String>,
    pub status: String,
    pub task_status: String,
    pub ip_addresses: Vec<String>,
    pub ipv4: Option<String>,
    pub created: String,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<Tag>,
    pub enterprise_project_id: String,
    pub project_id: String,
    pub desktop_type: String,
    pub login_status: String,
    pub process: Option<i32>,
    pub agent_version: Option<String>,
    /// deskfleet extension: the guest's connection.
    #[serde(default)]
    pub connection: Option<ConnectionInfo>,
}

/// deskfleet extension on the desktop and agent lists: the desktop's guest connection,
/// as its heartbeats and disconnects tell it (see `docs/api.md`, "Online status").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionInfo {
    /// `online`, `offline` or `never` (its guest never connected).
    pub state: String,
    /// When it came online (`online`) or went offline (`offline`); null for `never`.
    pub since: Option<String>,
    /// When a message of its guest last arrived; null if never.
    pub last_seen_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListDesktopsDetailResponse {
    pub total_count: i64,
    pub desktops: Vec<DesktopDetailInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShowDesktopResponse {
    pub desktop: DesktopDetailInfo,
}
