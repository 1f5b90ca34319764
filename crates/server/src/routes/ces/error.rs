//! The two CES error dialects.
//!
//! * v3 (agent management): `{"error_code": "taskmgr.NNNN", "error_msg": …, "request_id": …}`.
//! * v1 (metric data): the documented legacy body `{"http_code", "message": {"details",
//!   "code"}}` with the top-level `error_code`/`error_msg` pair beside it, which the SDK
//!   reads first (`docs/ces.md`).
//!
//! Handlers fail with [`ApiError`] as everywhere else; [`TaskmgrError`] and [`MetricError`]
//! translate its catalogue code into the dialect's code. A handler that knows a more
//! precise CES code (a bad query parameter, `ces.0013`) builds the dialect error itself.
//! Gateway errors (authentication, routing, size) stay `APIGW.*`, as the real gateway
//! answers them in front of every service.

use crate::error::{ApiError, current_request_id};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deskfleet_core::store::StoreError;
use deskfleet_proto::error::ErrorCode;
use serde::Serialize;

/// The v3 error body: `{"error_code": "taskmgr.NNNN", "error_msg", "request_id"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskmgrErrorBody {
    /// `taskmgr.NNNN` (`docs/ces.md`).
    pub error_code: &'static str,
    /// What went wrong and what to fix.
    pub error_msg: String,
    /// The request's id (also in the `X-Request-Id` header).
    pub request_id: Option<String>,
    /// Why a call was denied, for 403s: a base64 JSON document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoded_authorization_message: Option<String>,
}

/// The v1 error body: the documented legacy shape with the `error_code`/`error_msg` pair
/// beside it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricErrorBody {
    /// `ces.NNNN` (`docs/ces.md`).
    pub error_code: &'static str,
    /// What went wrong and what to fix.
    pub error_msg: String,
    /// The HTTP status, repeated.
    pub http_code: u16,
    pub message: MetricErrorMessage,
    /// Why a call was denied, for 403s: a base64 JSON document.
    pub encoded_authorization_message: Option<String>,
    /// The request's id (also in the `X-Request-Id` header).
    pub request_id: Option<String>,
}

/// The legacy part of [`MetricErrorBody`]: `{"details", "code"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricErrorMessage {
    pub details: String,
    pub code: &'static str,
}

/// A v3 (agent-management) error.
#[derive(Debug)]
pub struct TaskmgrError(pub ApiError);

/// A v1 (metric data) error, with an explicit `ces.NNNN` code when the handler knows one.
#[derive(Debug)]
pub struct MetricError {
    pub inner: ApiError,
    pub code: Option<&'static str>,
}

impl MetricError {
    /// 400 `ces.0013`: a query parameter is missing or invalid.
    pub fn bad_query(message: impl Into<String>) -> Self {
        Self {
            inner: ApiError::invalid(message),
            code: Some("ces.0013"),
        }
    }

    /// 400 `ces.0014`: the body is not correct; `fields` name what to fix.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self {
            inner: ApiError::invalid(message),
            code: Some("ces.0014"),
        }
    }
}

impl From<ApiError> for TaskmgrError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for TaskmgrError {
    fn from(e: StoreError) -> Self {
        Self(e.into())
    }
}

impl From<ApiError> for MetricError {
    fn from(inner: ApiError) -> Self {
        Self { inner, code: None }
    }
}

impl From<StoreError> for MetricError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// The v3 code for a catalogue code; `None` keeps the catalogue's (gateway codes).
fn taskmgr_code(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::InvalidParameter | ErrorCode::ResourceNotFound | ErrorCode::Conflict => {
            "taskmgr.0005"
        }
        ErrorCode::Forbidden => "taskmgr.0007",
        ErrorCode::Internal | ErrorCode::StorageUnavailable => "taskmgr.0001",
        _ => return None,
    })
}

/// The v1 code for a catalogue code; `None` keeps the catalogue's (gateway codes).
fn metric_code(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::InvalidParameter | ErrorCode::Conflict => "ces.0014",
        ErrorCode::ResourceNotFound => "ces.0016",
        ErrorCode::Forbidden => "ces.0017",
        ErrorCode::Throttled => "ces.0429",
        ErrorCode::Internal => "ces.0007",
        ErrorCode::StorageUnavailable => "ces.0008",
        _ => return None,
    })
}

/// The message a CES client sees: the handler's own, else the catalogue's, with the
/// detail (which desktop, which field) appended.
fn message(e: &ApiError) -> String {
    let base = e
        .message
        .clone()
        .unwrap_or_else(|| e.code.message().to_string());
    match &e.detail {
        Some(detail) if !base.contains(detail.as_str()) => format!("{base}: {detail}"),
        _ => base,
    }
}

fn finish(e: &ApiError, body: impl Serialize) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = e.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

impl IntoResponse for TaskmgrError {
    fn into_response(self) -> Response {
        let e = self.0;
        let Some(code) = taskmgr_code(e.code) else {
            return e.into_response();
        };
        let body = TaskmgrErrorBody {
            error_code: code,
            error_msg: message(&e),
            request_id: current_request_id(),
            encoded_authorization_message: e.encoded_authorization_message.clone(),
        };
        finish(&e, body)
    }
}

impl IntoResponse for MetricError {
    fn into_response(self) -> Response {
        let e = self.inner;
        let Some(code) = self.code.or_else(|| metric_code(e.code)) else {
            return e.into_response();
        };
        let msg = message(&e);
        let body = MetricErrorBody {
            error_code: code,
            http_code: e.code.status(),
            message: MetricErrorMessage {
                details: msg.clone(),
                code,
            },
            error_msg: msg,
            encoded_authorization_message: e.encoded_authorization_message.clone(),
            request_id: current_request_id(),
        };
        finish(&e, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(r: Response) -> (u16, serde_json::Value) {
        let status = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn v3_errors_speak_taskmgr() {
        let (status, body) =
            body_of(TaskmgrError(ApiError::invalid("instance_ids is empty")).into_response()).await;
        assert_eq!(status, 400);
        assert_eq!(body["error_code"], "taskmgr.0005");
        assert_eq!(body["error_msg"], "instance_ids is empty");
        let (status, body) =
            body_of(TaskmgrError(ApiError::new(ErrorCode::Forbidden)).into_response()).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (403, Some("taskmgr.0007"))
        );
    }

    #[tokio::test]
    async fn v1_errors_carry_both_shapes() {
        let (status, body) =
            body_of(MetricError::bad_query("period must be one of 1, 60").into_response()).await;
        assert_eq!(status, 400);
        assert_eq!(body["error_code"], "ces.0013");
        assert_eq!(body["message"]["code"], "ces.0013");
        assert_eq!(body["http_code"], 400);
        let (status, body) =
            body_of(MetricError::from(ApiError::new(ErrorCode::Throttled)).into_response()).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (429, Some("ces.0429"))
        );
    }

    #[tokio::test]
    async fn gateway_errors_stay_gateway_errors() {
        let (status, body) =
            body_of(TaskmgrError(ApiError::unauthenticated("no signature")).into_response()).await;
        assert_eq!(status, 401);
        assert!(body["error_code"].as_str().unwrap().starts_with("APIGW."));
    }
}
