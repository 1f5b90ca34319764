//! `ApiError`: the one way a handler fails. It carries an [`ErrorCode`] from the catalogue
//! (status and wire code come from there, never from a literal here) and an optional
//! message and detail for the caller. Internal causes are logged once and not sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deskfleet_core::store::StoreError;
use deskfleet_proto::error::{ErrorBody, ErrorCode};

tokio::task_local! {
    /// The id of the request being served; set by the request-id middleware.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Option<String>,
    pub detail: Option<String>,
    pub encoded_authorization_message: Option<String>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: None,
            detail: None,
            encoded_authorization_message: None,
            retry_after_secs: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// 400 `WKS.0001` with a message that says what to fix.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameter).with_message(message)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound).with_detail(what)
    }

    /// 401 `APIGW.0301` with one of the gateway's sub-messages.
    pub fn unauthenticated(sub_message: &str) -> Self {
        let base = ErrorCode::Unauthenticated.message();
        Self::new(ErrorCode::Unauthenticated).with_message(format!("{base}: {sub_message}"))
    }

    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// `Retry-After` of a 503 for unavailable storage: a fault is usually repaired in
/// minutes, but writes resume within a second or two of the repair.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 3;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::new(ErrorCode::ResourceNotFound),
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "storage unavailable");
                ApiError {
                    retry_after_secs: Some(STORAGE_RETRY_AFTER_SECS),
                    ..ApiError::new(ErrorCode::StorageUnavailable)
                }
            }
            other => ApiError::internal(&other),
        }
    }
}

impl ApiError {
    /// The wire body; gateway (`APIGW.*`) errors carry the request id, as the gateway's do.
    pub fn body(&self) -> ErrorBody {
        let code = self.code.code();
        let gateway = code.starts_with("APIGW.");
        ErrorBody {
            error_code: code.to_string(),
            error_msg: self
                .message
                .clone()
                .unwrap_or_else(|| self.code.message().to_string()),
            error_detail: self.detail.clone(),
            encoded_authorization_message: self.encoded_authorization_message.clone(),
            request_id: if gateway { current_request_id() } else { None },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
