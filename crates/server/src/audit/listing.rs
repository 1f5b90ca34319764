//! Cloud Trace Service reads: ListTraces (`GET /v3/{project_id}/traces`) and ListTrackers
//! (`GET /v3/{project_id}/trackers`), wire-exact for `huaweicloudsdkcts` 3.1.219
//! (docs/audit.md). Errors speak CTS (`CTS.0300` for a bad query, `CTS.0013` for a
//! denial, `CTS.0214` for an unknown tracker); gateway errors stay `APIGW.*`.

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiPath, Query};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use deskfleet_core::audit::{Rating, Trace, TraceFilter};
use deskfleet_core::store::StoreError;
use deskfleet_proto::error::ErrorCode;
use serde_json::{Value, json};

/// How far back ListTraces answers (CTS keeps 7 days queryable).
pub const QUERYABLE_MS: i64 = 7 * 24 * 3600 * 1000;
/// The default window when `from` is absent: one hour.
const DEFAULT_WINDOW_MS: i64 = 3600 * 1000;
/// The bounds CTS documents for `from` and `to`.
const MIN_TIME: i64 = 946_656_000_000;
const MAX_TIME: i64 = 4_102_416_000_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/{project_id}/traces", get(list_traces))
        .route("/v3/{project_id}/trackers", get(list_trackers))
}

/// A CTS error: the catalogue's status with a `CTS.*` code.
#[derive(Debug)]
pub struct CtsError(ApiError, Option<&'static str>);

impl CtsError {
    fn query(message: impl Into<String>) -> Self {
        Self(
            ApiError::invalid(format!("Query failed. {}", message.into())),
            Some("CTS.0300"),
        )
    }
}

impl From<ApiError> for CtsError {
    fn from(e: ApiError) -> Self {
        Self(e, None)
    }
}

impl From<StoreError> for CtsError {
    fn from(e: StoreError) -> Self {
        Self(e.into(), None)
    }
}

impl IntoResponse for CtsError {
    fn into_response(self) -> Response {
        let CtsError(e, code) = self;
        let code = code.or(match e.code {
            ErrorCode::InvalidParameter => Some("CTS.0300"),
            ErrorCode::Forbidden => Some("CTS.0013"),
            ErrorCode::ResourceNotFound => Some("CTS.0214"),
            ErrorCode::Internal | ErrorCode::StorageUnavailable => Some("CTS.0005"),
            _ => None,
        });
        let Some(code) = code else {
            return e.into_response();
        };
        let status =
            StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let msg = match (&e.message, &e.detail) {
            (Some(m), Some(d)) => format!("{m}: {d}"),
            (Some(m), None) => m.clone(),
            (None, Some(d)) => format!("{}: {d}", e.code.message()),
            (None, None) => e.code.message().to_owned(),
        };
        let mut body = json!({"error_code": code, "error_msg": msg});
        if let Some(enc) = &e.encoded_authorization_message {
            body["encoded_authorization_message"] = json!(enc);
        }
        (status, Json(body)).into_response()
    }
}

/// A `from`/`to` value: epoch milliseconds, 13 digits.
fn millis(query: &Query, key: &str) -> Result<Option<i64>, CtsError> {
    let Some(v) = query.str(key)? else {
        return Ok(None);
    };
    match v.parse::<i64>() {
        Ok(ms) if (MIN_TIME..=MAX_TIME).contains(&ms) => Ok(Some(ms)),
        _ => Err(CtsError::query(format!(
            "{key} must be a UTC time in milliseconds (13 digits) from {MIN_TIME} to \
             {MAX_TIME}, not {v:?}"
        ))),
    }
}

/// A string filter with CTS's length limits.
fn text(query: &Query, key: &str, max: usize) -> Result<Option<String>, CtsError> {
    let v = query.str(key)?;
    if let Some(v) = &v
        && v.chars().count() > max
    {
        return Err(CtsError::query(format!(
            "{key} must be at most {max} characters"
        )));
    }
    Ok(v)
}

#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_traces(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Query,
) -> Result<Json<Value>, CtsError> {
    let project = state.authorize(&caller, &project_id, Api::ListTraces)?;
    let trace_type = query.str("trace_type")?.unwrap_or_else(|| "system".into());
    let tracker = query.str("tracker_name")?;
    match trace_type.as_str() {
        "system" => {
            if tracker.as_deref().is_some_and(|t| t != "system") {
                return Err(CtsError(
                    ApiError::not_found("The tracker does not exist."),
                    Some("CTS.0214"),
                ));
            }
        }
        "data" => {
            return Ok(Json(
                json!({"traces": [], "meta_data": {"count": 0, "marker": null}}),
            ));
        }
        other => {
            return Err(CtsError::query(format!(
                "trace_type must be system or data, not {other:?}"
            )));
        }
    }
    let limit = match query.str("limit")? {
        None => 10,
        Some(v) => match v.parse::<u32>() {
            Ok(0) => 10,
            Ok(n) if n <= 200 => n,
            _ => {
                return Err(CtsError::query(format!(
                    "limit must be an integer from 0 to 200, not {v:?}"
                )));
            }
        },
    };
    let now = state.clock.now();
    let to = millis(&query, "to")?.unwrap_or(now + 1);
    let oldest = now - QUERYABLE_MS;
    let from = millis(&query, "from")?
        .unwrap_or(to - DEFAULT_WINDOW_MS)
        .max(oldest - 1);
    if from >= to {
        return Err(CtsError::query("from must be earlier than to"));
    }
    let rating = text(&query, "trace_rating", 20)?;
    if let Some(r) = &rating
        && Rating::parse(r).is_none()
    {
        return Err(CtsError::query(format!(
            "trace_rating must be normal, warning or incident, not {r:?}"
        )));
    }
    let mut filter = TraceFilter {
        trace_id: text(&query, "trace_id", 200)?,
        service_type: text(&query, "service_type", 32)?,
        user: text(&query, "user", 1024)?,
        resource_id: text(&query, "resource_id", 350)?,
        resource_name: text(&query, "resource_name", 300)?,
        resource_type: text(&query, "resource_type", 100)?,
        trace_name: text(&query, "trace_name", 100)?,
        trace_rating: rating,
        access_key_id: text(&query, "access_key_id", 128)?,
        enterprise_project_id: text(&query, "enterprise_project_id", 64)?,
        after: from,
        before: to,
        older_than: None,
    };
    if let Some(id) = filter.trace_id.clone() {
        // A trace id overrides every other condition (still within what is queryable).
        filter = TraceFilter {
            trace_id: Some(id),
            after: oldest - 1,
            before: i64::MAX,
            ..TraceFilter::default()
        };
    } else if let Some(next) = text(&query, "next", 64)? {
        if next.len() >= 10 && next.chars().all(|c| c.is_ascii_digit()) {
            let at: i64 = next.parse().unwrap_or(i64::MAX);
            filter.before = filter.before.min(at);
        } else {
            let Some(at) = state.store.trace_time(&project, &next).await? else {
                return Err(CtsError::query(format!(
                    "next {next:?} is not the marker of a trace of this project"
                )));
            };
            filter.older_than = Some((at, next));
        }
    }
    // One more than asked tells whether a next page exists.
    let mut traces = state
        .store
        .list_traces(&project, &filter, limit + 1)
        .await?;
    let more = traces.len() > limit as usize;
    traces.truncate(limit as usize);
    let marker = if more {
        traces.last().map(|t| json!(t.trace_id))
    } else {
        None
    };
    Ok(Json(json!({
        "traces": traces.iter().map(wire).collect::<Vec<_>>(),
        "meta_data": {"count": traces.len(), "marker": marker.unwrap_or(Value::Null)},
    })))
}

/// A trace as ListTraces sends it: `code` a string, `request`/`response` JSON strings,
/// `read_only` a boolean, `user` an object (the stored form already is all that).
fn wire(t: &Trace) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    v["event_type"] = json!("system");
    v
}

#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_trackers(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Query,
) -> Result<Json<Value>, CtsError> {
    let project = state.authorize(&caller, &project_id, Api::ListTrackers)?;
    let name = query.str("tracker_name")?;
    let kind = query.str("tracker_type")?;
    if let Some(k) = &kind
        && k != "system"
        && k != "data"
    {
        return Err(CtsError::query(format!(
            "tracker_type must be system or data, not {k:?}"
        )));
    }
    if name.as_deref().is_some_and(|n| n != "system") {
        return Err(CtsError(
            ApiError::not_found("The tracker does not exist."),
            Some("CTS.0214"),
        ));
    }
    if kind.as_deref() == Some("data") {
        return Ok(Json(json!({"trackers": []})));
    }
    // The one management tracker always exists; its id is stable per project.
    let digest = crate::auth::secrets::sha256_hex(&format!("tracker:{project}"));
    let bytes: [u8; 16] = hex::decode(&digest[..32])
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or_default();
    let id = uuid::Uuid::from_bytes(bytes);
    Ok(Json(json!({"trackers": [{
        "id": id.to_string(),
        "create_time": 0,
        "domain_id": "",
        "project_id": project.as_str(),
        "tracker_name": "system",
        "tracker_type": "system",
        "status": "enabled",
        "is_support_validate": true,
        "lts": {"is_lts_enabled": false, "log_group_name": "", "log_topic_name": ""},
        "obs_info": {"bucket_name": "", "file_prefix_name": "", "is_obs_created": false,
                     "is_authorized_bucket": false, "bucket_lifecycle": 0},
    }]})))
}
