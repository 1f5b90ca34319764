//! Which API needs which IAM action, and which role grants it. One table.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deskfleet_core::model::Role;
use serde::{Deserialize, Serialize};

/// How an API counts for roles and throttling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Reading the audit trail: its own right (an auditor need not read anything else,
    /// and a read-only operator does not read the trail).
    Audit,
}

/// One API of the `/v2` surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    BatchInstallAgent,
    ListAgentsInstallCondition,
    ShowJob,
    RunActionsOnWorkspaceJob,
    ListItaSubJobs,
    BatchDeleteSubJobs,
    ListDesktops,
    ListDesktopsDetail,
    ShowDesktopDetail,
    ShowDesktopMonitor,
    // deskfleet extensions for the fleet's set-up (docs/api.md).
    ListAgentPackages,
    // Cloud Eye (CES), `docs/ces.md`.
    BatchCreateAgentInvocations,
    ListAgentInvocations,
    ListAgentStatus,
    ShowMetricData,
    BatchListMetricData,
    ListMetrics,
    // deskfleet's own administration, offered by the web console (`docs/console.md`) and,
    // for enrollment tokens, by the API (docs/api.md).
    CreateEnrollmentToken,
    RevokeEnrollmentToken,
    /// Users, their roles and their access keys: seen and changed by administrators only.
    ManageIdentity,
    // Cloud Trace Service (CTS), `docs/audit.md`.
    ListTraces,
    ListTrackers,
}

impl Api {
    /// (API name, IAM action, access). Actions marked inferred in the spec are documented
    /// in `docs/api.md`; ListItaSubJobs needs no identity policy, so any role may call it.
    pub const fn spec(self) -> (&'static str, &'static str, Access) {
        match self {
            Api::BatchInstallAgent => (
                "BatchInstallAgent",
                "workspace:desktops:batchInstallAgents",
                Access::Write,
            ),
            Api::ListAgentsInstallCondition => (
                "ListAgentsInstallCondition",
                "workspace:desktops:list",
                Access::Read,
            ),
            Api::ShowJob => ("ShowJob", "workspace:jobs:get", Access::Read),
            Api::RunActionsOnWorkspaceJob => (
                "RunActionsOnWorkspaceJob",
                "workspace:jobs:update",
                Access::Write,
            ),
            Api::ListItaSubJobs => ("ListItaSubJobs", "", Access::Read),
            Api::BatchDeleteSubJobs => (
                "BatchDeleteSubJobs",
                "workspace:jobs:deleteSubJobRecords",
                Access::Write,
            ),
            Api::ListDesktops => ("ListDesktops", "workspace:desktops:list", Access::Read),
            Api::ListDesktopsDetail => (
                "ListDesktopsDetail",
                "workspace:desktops:list",
                Access::Read,
            ),
            Api::ShowDesktopDetail => ("ShowDesktopDetail", "workspace:desktops:get", Access::Read),
            Api::ShowDesktopMonitor => {
                ("ShowDesktopMonitor", "workspace:desktops:get", Access::Read)
            }
            Api::ListAgentPackages => (
                "ListAgentPackages",
                "deskfleet:agentPackages:list",
                Access::Read,
            ),
            Api::BatchCreateAgentInvocations => (
                "BatchCreateAgentInvocations",
                "ces:agent:createAgentInvocations",
                Access::Write,
            ),
            Api::ListAgentInvocations => (
                "ListAgentInvocations",
                "ces:agent:listTaskInvocations",
                Access::Read,
            ),
            Api::ListAgentStatus => ("ListAgentStatus", "ces:agent:listStatuses", Access::Read),
            Api::ShowMetricData => ("ShowMetricData", "ces:metricData:get", Access::Read),
            Api::BatchListMetricData => {
                ("BatchListMetricData", "ces:metricData:list", Access::Read)
            }
            Api::ListMetrics => ("ListMetrics", "ces:metrics:list", Access::Read),
            Api::CreateEnrollmentToken => (
                "CreateEnrollmentToken",
                "deskfleet:enrollmentTokens:create",
                Access::Write,
            ),
            Api::RevokeEnrollmentToken => (
                "RevokeEnrollmentToken",
                "deskfleet:enrollmentTokens:delete",
                Access::Write,
            ),
            Api::ManageIdentity => ("ManageIdentity", "iam:users:manage", Access::Write),
            Api::ListTraces => ("ListTraces", "cts:trace:list", Access::Audit),
            Api::ListTrackers => ("ListTrackers", "cts:tracker:list", Access::Audit),
        }
    }

    pub const fn name(self) -> &'static str {
        self.spec().0
    }

    pub const fn action(self) -> &'static str {
        self.spec().1
    }

    pub const fn access(self) -> Access {
        self.spec().2
    }
}

/// Does this role grant this API? `admin`: everything; `readonly`: reads but not the
/// audit trail; `auditor`: the audit trail only.
pub fn grants(role: Role, api: Api) -> bool {
    match role {
        Role::Admin => true,
        Role::Readonly => api.access() == Access::Read,
        Role::Auditor => api.access() == Access::Audit,
    }
}

/// What a 403's `encoded_authorization_message` carries. It is base64url JSON, decoded by
/// `deskfleet-server admin decode-authorization-message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub decision: String,
    pub action: String,
    pub api: String,
    pub user_id: String,
    pub user_name: String,
    pub project_id: String,
    pub role: Option<String>,
    pub reason: String,
    pub request_id: Option<String>,
}

impl Denial {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(message: &str) -> Result<Self, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(message.trim())
            .map_err(|e| format!("not an encoded authorization message: {e}"))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("not an encoded authorization message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readonly_reads_and_admin_does_everything() {
        assert!(grants(Role::Readonly, Api::ShowJob));
        assert!(!grants(Role::Readonly, Api::BatchInstallAgent));
        assert!(!grants(Role::Readonly, Api::BatchDeleteSubJobs));
        assert!(grants(Role::Admin, Api::BatchInstallAgent));
    }

    #[test]
    fn only_auditors_and_admins_read_the_trail() {
        assert!(!grants(Role::Readonly, Api::ListTraces));
        assert!(grants(Role::Auditor, Api::ListTraces));
        assert!(grants(Role::Auditor, Api::ListTrackers));
        assert!(grants(Role::Admin, Api::ListTraces));
        assert!(!grants(Role::Auditor, Api::ShowJob));
        assert!(!grants(Role::Auditor, Api::BatchInstallAgent));
    }

    #[test]
    fn denials_round_trip() {
        let d = Denial {
            decision: "deny".into(),
            action: Api::BatchInstallAgent.action().into(),
            api: "BatchInstallAgent".into(),
            user_id: "u".into(),
            user_name: "ro".into(),
            project_id: "p".into(),
            role: Some("readonly".into()),
            reason: "role readonly does not grant the action".into(),
            request_id: Some("r".into()),
        };
        assert_eq!(Denial::decode(&d.encode()).unwrap(), d);
        assert!(Denial::decode("%%%").is_err());
    }
}
