//! The error-code catalogue: every code the server can answer with, its HTTP status and
//! its default message, in one table. Handlers name a variant; they never spell a code.
//!
//! `APIGW.*` codes are the API gateway's (authentication, routing, throttling, size);
//! `WKS.*` codes are Workspace's own. The choices where the public material is silent are
//! documented in `docs/api.md`.

use serde::{Deserialize, Serialize};

/// A request-level error: answered as an HTTP status with the Workspace error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 404: no route for this path and method.
    ApiNotFound,
    /// 413: the body is larger than the 12 MB limit.
    BodyTooLarge,
    /// 401: missing, malformed, wrong, expired or locked credential.
    Unauthenticated,
    /// 429: the per-user, per-API request rate was exceeded.
    Throttled,
    /// 503: the server is overloaded or shutting down; retry after the given delay.
    Unavailable,
    /// 400: a parameter is missing, malformed or out of range.
    InvalidParameter,
    /// 403: the caller's role does not grant the action.
    Forbidden,
    /// 404: the named resource does not exist in this project.
    ResourceNotFound,
    /// 409: the resource is in a state that does not allow the operation.
    Conflict,
    /// 500: something failed inside the server; the cause is logged, not sent.
    Internal,
    /// 400: the request could not be parsed as HTTP at all (bad bytes in a header,
    /// conflicting lengths); answered below the API.
    MalformedRequest,
    /// 414: the request line is too long.
    UriTooLong,
    /// 431: the header block is too large.
    HeadersTooLarge,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 503: the database cannot be written (or reached) now: disk full, I/O errors, a
    /// read-only file, the database server down. Retry after the given delay.
    StorageUnavailable,
}

impl ErrorCode {
    /// Every variant, for tests and docs that walk the table.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::ApiNotFound,
        ErrorCode::BodyTooLarge,
        ErrorCode::Unauthenticated,
        ErrorCode::Throttled,
        ErrorCode::Unavailable,
        ErrorCode::InvalidParameter,
        ErrorCode::Forbidden,
        ErrorCode::ResourceNotFound,
        ErrorCode::Conflict,
        ErrorCode::Internal,
        ErrorCode::MalformedRequest,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::StorageUnavailable,
    ];

    /// The one table: HTTP status, wire code, default message.
    pub const fn spec(self) -> (u16, &'static str, &'static str) {
        match self {
            ErrorCode::ApiNotFound => (
                404,
                "APIGW.0101",
                "The API does not exist or has not been published in the environment.",
            ),
            ErrorCode::BodyTooLarge => (413, "APIGW.0201", "Request entity too large."),
            ErrorCode::Unauthenticated => (
                401,
                "APIGW.0301",
                "Incorrect IAM authentication information",
            ),
            ErrorCode::Throttled => (
                429,
                "APIGW.0308",
                "The throttling threshold has been reached.",
            ),
            ErrorCode::Unavailable => (503, "APIGW.0201", "Backend unavailable."),
            ErrorCode::InvalidParameter => (400, "WKS.0001", "Invalid request parameter."),
            ErrorCode::Forbidden => (
                403,
                "WKS.0403",
                "The user is not authorized to perform this action.",
            ),
            ErrorCode::ResourceNotFound => (404, "WKS.0202", "The resource not found."),
            ErrorCode::Conflict => (409, "WKS.0409", "The resource is in a conflicting state."),
            ErrorCode::Internal => (500, "WKS.00000003", "Internal server error."),
            ErrorCode::MalformedRequest => (400, "APIGW.0201", "API request error."),
            ErrorCode::UriTooLong => (414, "APIGW.0201", "Request URI too large."),
            ErrorCode::HeadersTooLarge => (431, "APIGW.0201", "Request headers too large."),
            ErrorCode::RequestTimeout => (408, "APIGW.0201", "Request timeout."),
            ErrorCode::StorageUnavailable => (
                503,
                "WKS.00000503",
                "The server cannot use its database now (disk full, I/O error, read-only \
                 storage or database unreachable); nothing of this request was saved. \
                 Retry after the Retry-After delay; operators: see /readyz and the server log.",
            ),
        }
    }

    pub const fn status(self) -> u16 {
        self.spec().0
    }

    pub const fn code(self) -> &'static str {
        self.spec().1
    }

    pub const fn message(self) -> &'static str {
        self.spec().2
    }
}

/// A task-level error: stored on a failed sub-job (`error_code`, `fail_reason`), never an
/// HTTP status. Codes are stable; clients may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskErrorCode {
    /// The desktop never picked the work up before the delivery timeout (offline).
    DeliveryTimeout,
    /// The desktop picked the work up, then went silent past the execution timeout.
    ExecutionTimeout,
    /// The work was canceled (`op_type: cancel`) before it started.
    Canceled,
    /// The package could not be downloaded.
    DownloadFailed,
    /// The downloaded package does not have the announced SHA-256.
    ChecksumMismatch,
    /// The package signature does not verify against the trusted key.
    BadSignature,
    /// No space left, or no permission, in the install root.
    NoSpaceOrPermission,
    /// Unpacking or an install step failed.
    InstallFailed,
    /// The agent was installed but did not start or report in time.
    AgentNotStarted,
    // ---- upgrade watch and uninstall (the guest's reason codes of the same names) ----
    /// The new agent exited during the watch window; the previous version was put back.
    AgentExited,
    /// The new agent was still unhealthy at the end of the watch window; rolled back.
    AgentUnhealthy,
    /// The new agent reports another version than its package's; rolled back.
    VersionMismatch,
    /// The agent could not be stopped or its files removed.
    UninstallFailed,
}

impl TaskErrorCode {
    pub const ALL: [TaskErrorCode; 13] = [
        TaskErrorCode::DeliveryTimeout,
        TaskErrorCode::ExecutionTimeout,
        TaskErrorCode::Canceled,
        TaskErrorCode::DownloadFailed,
        TaskErrorCode::ChecksumMismatch,
        TaskErrorCode::BadSignature,
        TaskErrorCode::NoSpaceOrPermission,
        TaskErrorCode::InstallFailed,
        TaskErrorCode::AgentNotStarted,
        TaskErrorCode::AgentExited,
        TaskErrorCode::AgentUnhealthy,
        TaskErrorCode::VersionMismatch,
        TaskErrorCode::UninstallFailed,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            TaskErrorCode::DeliveryTimeout => "WKS.00990001",
            TaskErrorCode::ExecutionTimeout => "WKS.00990002",
            TaskErrorCode::Canceled => "WKS.00990003",
            TaskErrorCode::DownloadFailed => "WKS.00990004",
            TaskErrorCode::ChecksumMismatch => "WKS.00990005",
            TaskErrorCode::BadSignature => "WKS.00990006",
            TaskErrorCode::NoSpaceOrPermission => "WKS.00990007",
            TaskErrorCode::InstallFailed => "WKS.00990008",
            TaskErrorCode::AgentNotStarted => "WKS.00990009",
            TaskErrorCode::AgentExited => "WKS.00990021",
            TaskErrorCode::AgentUnhealthy => "WKS.00990022",
            TaskErrorCode::VersionMismatch => "WKS.00990023",
            TaskErrorCode::UninstallFailed => "WKS.00990024",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Task error code of a sub-job that never started because its job's rollout stopped:
/// more of the job's targets failed than its `max_errors` allows. Kept apart from
/// [`TaskErrorCode`], whose codes the guest's reasons map to.
pub const ROLLOUT_STOPPED_CODE: &str = "WKS.00990020";

/// The Workspace error body (BaseResponse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error_code: String,
    pub error_msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoded_authorization_message: Option<String>,
    /// Sent on gateway (`APIGW.*`) errors, as the real gateway does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_fit_the_schema_and_task_codes_are_unique() {
        for c in ErrorCode::ALL {
            assert!(c.code().len() <= 12, "{c:?}");
            assert!((400..600).contains(&c.status()));
        }
        let codes: HashSet<_> = TaskErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), TaskErrorCode::ALL.len());
        for c in TaskErrorCode::ALL {
            assert!(c.code().len() <= 12);
            assert_eq!(TaskErrorCode::from_code(c.code()), Some(c));
        }
    }
}
