//! Cloud Trace Service reads: ListTraces (`GET /v3/{project_id}/traces`) and ListTrackers
//! (`GET /v3/{project_id}/trackers`), wire-exact for `huaweicloudsdkcts` 3.1.219
//! (docs/audit.md). Errors speak CTS (`CTS.0300` for a bad query, `CTS.0013` for a
//! denial, `CTS.0214` for an unknown tracker); gateway errors stay `APIGW.*`.

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiPath, Query};
use crate::openapi::{
    CtsErrors, ProjectIdParam, TAG_CTS, integer_between, one_of_strings, schema_type, string_up_to,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use deskfleet_core::audit::{Rating, Trace, TraceFilter};
use deskfleet_core::store::StoreError;
use deskfleet_proto::error::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How far back ListTraces answers (CTS keeps 7 days queryable).
pub const QUERYABLE_MS: i64 = 7 * 24 * 3600 * 1000;
/// The default window when `from` is absent: one hour.
const DEFAULT_WINDOW_MS: i64 = 3600 * 1000;
/// The bounds CTS documents for `from` and `to`.
const MIN_TIME: i64 = 946_656_000_000;
const MAX_TIME: i64 = 4_102_416_000_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_traces))
        .routes(routes!(list_trackers))
}

schema_type!(
    /// `system` (management events) or `data` (none are kept).
    TraceTypeName => one_of_strings(["system", "data"])
);
schema_type!(
    /// A trace rating.
    RatingName => one_of_strings(["normal", "warning", "incident"])
);
schema_type!(
    /// Epoch milliseconds (13 digits) within the bounds CTS documents.
    CtsMillis => integer_between(MIN_TIME, MAX_TIME, "Epoch milliseconds")
);
schema_type!(
    /// Traces a page: 1 to 200 (0: the default, 10).
    TraceLimit => integer_between(0, 200, "Traces per page")
);
schema_type!(
    /// A filter of at most 32 characters.
    Text32 => string_up_to(32, "At most 32 characters")
);
schema_type!(
    /// A filter of at most 64 characters.
    Text64 => string_up_to(64, "At most 64 characters")
);
schema_type!(
    /// A filter of at most 100 characters.
    Text100 => string_up_to(100, "At most 100 characters")
);
schema_type!(
    /// A filter of at most 128 characters.
    Text128 => string_up_to(128, "At most 128 characters")
);
schema_type!(
    /// A filter of at most 200 characters.
    Text200 => string_up_to(200, "At most 200 characters")
);
schema_type!(
    /// A filter of at most 300 characters.
    Text300 => string_up_to(300, "At most 300 characters")
);
schema_type!(
    /// A filter of at most 350 characters.
    Text350 => string_up_to(350, "At most 350 characters")
);
schema_type!(
    /// A filter of at most 1024 characters.
    Text1024 => string_up_to(1024, "At most 1024 characters")
);

/// A CTS error body: `CTS.*` code and message (and the encoded authorization message of
/// a denial).
#[derive(Debug, Serialize, ToSchema)]
pub struct CtsErrorBody {
    pub error_code: String,
    pub error_msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoded_authorization_message: Option<String>,
}

/// ListTraces' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListTracesResponse {
    pub traces: Vec<WireTrace>,
    pub meta_data: TracesMeta,
}

/// A trace as ListTraces sends it: `code` a string, `request`/`response` JSON strings,
/// `read_only` a boolean, `user` an object (the stored form already is all that), and
/// `event_type`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WireTrace {
    #[serde(flatten)]
    pub trace: Trace,
    /// Always `system`: management events.
    pub event_type: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TracesMeta {
    /// Traces on this page.
    pub count: usize,
    /// The `next` of the following page (the id of this page's last trace); null on the
    /// last page.
    pub marker: Option<String>,
}

/// ListTrackers' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListTrackersResponse {
    pub trackers: Vec<Tracker>,
}

/// The one management tracker.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tracker {
    pub id: String,
    pub create_time: i64,
    pub domain_id: String,
    pub project_id: String,
    pub tracker_name: String,
    pub tracker_type: String,
    pub status: String,
    pub is_support_validate: bool,
    pub lts: TrackerLts,
    pub obs_info: TrackerObs,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackerLts {
    pub is_lts_enabled: bool,
    pub log_group_name: String,
    pub log_topic_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackerObs {
    pub bucket_name: String,
    pub file_prefix_name: String,
    pub is_obs_created: bool,
    pub is_authorized_bucket: bool,
    pub bucket_lifecycle: i64,
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
        let body = CtsErrorBody {
            error_code: code.to_owned(),
            error_msg: msg,
            encoded_authorization_message: e.encoded_authorization_message.clone(),
        };
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

/// ListTraces: the project's management traces, newest first, filtered and paged as CTS
/// does (docs/audit.md).
#[utoipa::path(
    get,
    path = "/v3/{project_id}/traces",
    tag = TAG_CTS,
    operation_id = "ListTraces",
    params(
        ("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"),
        ("trace_type" = inline(Option<TraceTypeName>), Query, description = "Default system"),
        ("limit" = inline(Option<TraceLimit>), Query, description = "Traces a page (default 10)"),
        ("from" = inline(Option<CtsMillis>), Query, description = "After this time (default: an hour before to)"),
        ("to" = inline(Option<CtsMillis>), Query, description = "Before this time (default: now); after from"),
        ("next" = inline(Option<Text64>), Query, description = "The marker of the page before"),
        ("tracker_name" = inline(Option<Text32>), Query, description = "Only system exists"),
        ("trace_id" = inline(Option<Text200>), Query, description = "One trace (overrides every other filter)"),
        ("service_type" = inline(Option<Text32>), Query),
        ("user" = inline(Option<Text1024>), Query, description = "The user name"),
        ("resource_id" = inline(Option<Text350>), Query),
        ("resource_name" = inline(Option<Text300>), Query),
        ("resource_type" = inline(Option<Text100>), Query),
        ("trace_name" = inline(Option<Text100>), Query),
        ("trace_rating" = inline(Option<RatingName>), Query),
        ("access_key_id" = inline(Option<Text128>), Query),
        ("enterprise_project_id" = inline(Option<Text64>), Query),
    ),
    responses((status = 200, description = "A page of traces", body = ListTracesResponse), CtsErrors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_traces(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Query,
) -> Result<Json<ListTracesResponse>, CtsError> {
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
            return Ok(Json(ListTracesResponse {
                traces: Vec::new(),
                meta_data: TracesMeta {
                    count: 0,
                    marker: None,
                },
            }));
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
        traces.last().map(|t| t.trace_id.clone())
    } else {
        None
    };
    Ok(Json(ListTracesResponse {
        meta_data: TracesMeta {
            count: traces.len(),
            marker,
        },
        traces: traces
            .into_iter()
            .map(|trace| WireTrace {
                trace,
                event_type: "system",
            })
            .collect(),
    }))
}

/// ListTrackers: the one management tracker, `system`, always enabled.
#[utoipa::path(
    get,
    path = "/v3/{project_id}/trackers",
    tag = TAG_CTS,
    operation_id = "ListTrackers",
    params(
        ("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"),
        ("tracker_name" = inline(Option<Text32>), Query, description = "Only system exists"),
        ("tracker_type" = inline(Option<TraceTypeName>), Query),
    ),
    responses((status = 200, description = "The trackers", body = ListTrackersResponse), CtsErrors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_trackers(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Query,
) -> Result<Json<ListTrackersResponse>, CtsError> {
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
        return Ok(Json(ListTrackersResponse {
            trackers: Vec::new(),
        }));
    }
    // The one management tracker always exists; its id is stable per project.
    let digest = crate::auth::secrets::sha256_hex(&format!("tracker:{project}"));
    let bytes: [u8; 16] = hex::decode(&digest[..32])
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or_default();
    let id = uuid::Uuid::from_bytes(bytes);
    Ok(Json(ListTrackersResponse {
        trackers: vec![Tracker {
            id: id.to_string(),
            create_time: 0,
            domain_id: String::new(),
            project_id: project.as_str().to_owned(),
            tracker_name: "system".to_owned(),
            tracker_type: "system".to_owned(),
            status: "enabled".to_owned(),
            is_support_validate: true,
            lts: TrackerLts {
                is_lts_enabled: false,
                log_group_name: String::new(),
                log_topic_name: String::new(),
            },
            obs_info: TrackerObs {
                bucket_name: String::new(),
                file_prefix_name: String::new(),
                is_obs_created: false,
                is_authorized_bucket: false,
                bucket_lifecycle: 0,
            },
        }],
    }))
}
