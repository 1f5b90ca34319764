//! ShowMetricData, BatchListMetricData and ListMetrics (`/V1.0/{project_id}/…`): the
//! agents' `AGT.ECS` time series through Cloud Eye's v1 metric API.
//!
//! A metric that does not exist (another namespace, an unknown name, a desktop of another
//! project or none at all) answers 200 with no datapoints, as Cloud Eye does: a caller
//! cannot tell another project's desktop from a missing one. Bad query parameters are
//! `ces.0013`, a bad batch body `ces.0014` naming its fields (`docs/ces.md`, "Metrics").

use super::error::MetricError;
use super::metric_bodies::{
    BatchListMetricDataResponse, BatchMetricData, Datapoint, ListMetricsResponse, MetaData,
    MetricDimension, MetricInfo, ShowMetricDataResponse,
};
use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiPath, Query};
use crate::openapi::{
    CesV1Errors, ProjectIdParam, TAG_CES, integer_between, one_of_integers, one_of_strings,
    pattern_string, schema_type,
};
use crate::timeseries::report::{is_disk_metric, unit_of};
use axum::extract::State;
use axum::{Extension, Json};
use bytes::Bytes;
use deskfleet_core::clock::Millis;
use deskfleet_core::ids::{DesktopId, ProjectId};
use deskfleet_core::metrics::{
    Aggregate, DIM_INSTANCE, DIM_MOUNT_POINT, NAMESPACE, SeriesFilter, SeriesKey, Tier,
};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show_metric_data))
        .routes(routes!(batch_list_metric_data))
        .routes(routes!(list_metrics))
}

/// BatchListMetricData's body, as checked by [`parse_batch`] (which names the field at
/// fault; this type only describes it).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct BatchListMetricDataRequest {
    /// 1 to 500 metrics.
    #[schema(min_items = 1, max_items = 500)]
    metrics: Vec<MetricQuery>,
    /// 1, 60, 300, 1200, 3600, 14400 or 86400 (a string or a number).
    period: String,
    /// average, max, min, sum or variance.
    filter: String,
    /// Epoch milliseconds.
    from: i64,
    /// Epoch milliseconds, after `from`.
    to: i64,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct MetricQuery {
    /// `service.item`, e.g. `AGT.ECS`.
    namespace: String,
    metric_name: String,
    /// 1 to 4 `{name, value}`.
    #[schema(min_items = 1, max_items = 4)]
    dimensions: Vec<QueryDimension>,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct QueryDimension {
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_-]{0,31}$")]
    name: String,
    #[schema(pattern = "^[A-Za-z0-9*_/#()][A-Za-z0-9_./#()-]{0,255}$")]
    value: String,
}

/// The periods Cloud Eye offers, in seconds.
pub const PERIODS: [i64; 7] = [1, 60, 300, 1200, 3600, 14400, 86400];
/// Bounds of `from` and `to` (epoch milliseconds), as Cloud Eye documents them.
const TIME_MIN: i64 = 1_111_111_111_111;
const TIME_MAX: i64 = 9_999_999_999_999;
/// BatchListMetricData: metrics per call, body size, and points per answer.
pub const BATCH_MAX_METRICS: usize = 500;
pub const BATCH_MAX_BODY: usize = 512 * 1024;
pub const BATCH_MAX_POINTS: i64 = 3000;
const MAX_DIMENSIONS: usize = 4;
const LIST_MAX_LIMIT: u32 = 1000;

/// How values of a bucket are summed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Average,
    Max,
    Min,
    Sum,
    Variance,
}

impl Filter {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "average" => Self::Average,
            "max" => Self::Max,
            "min" => Self::Min,
            "sum" => Self::Sum,
            "variance" => Self::Variance,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Average => "average",
            Self::Max => "max",
            Self::Min => "min",
            Self::Sum => "sum",
            Self::Variance => "variance",
        }
    }

    fn of(self, a: &Aggregate) -> f64 {
        match self {
            Self::Average => a.average(),
            Self::Max => a.max,
            Self::Min => a.min,
            Self::Sum => a.sum,
            Self::Variance => a.variance(),
        }
    }
}

const FILTERS: &str = "average, max, min, sum or variance";

schema_type!(
    /// How a period's values are summed up.
    FilterName => one_of_strings(["average", "max", "min", "sum", "variance"])
);
schema_type!(
    /// A period Cloud Eye offers, in seconds.
    PeriodSeconds => one_of_integers(PERIODS)
);
schema_type!(
    /// `from` and `to`: epoch milliseconds within Cloud Eye's bounds.
    EpochMillis => integer_between(TIME_MIN, TIME_MAX, "Epoch milliseconds")
);
schema_type!(
    /// `service.item`, letters, digits and `_`, each part starting with a letter.
    Namespace => pattern_string(
        "^[A-Za-z][A-Za-z0-9_]*\\.[A-Za-z][A-Za-z0-9_]*$",
        3,
        32,
        "service.item, e.g. AGT.ECS"
    )
);
schema_type!(
    /// A metric name: a letter, then letters, digits, `_` or `-`.
    MetricName => pattern_string("^[A-Za-z][A-Za-z0-9_-]*$", 1, 96, "A metric name")
);
schema_type!(
    /// A dimension of a query string: `name,value`, a name of letters, digits, `_` or `-`
    /// starting with a letter (at most 32) and a value of 1 to 256 letters, digits, `_`,
    /// `-`, `.`, `/`, `#`, `(` or `)`, not starting with `-` or `.` (`*` may start it).
    QueryDim => pattern_string(
        "^[A-Za-z][A-Za-z0-9_-]{0,31},[A-Za-z0-9*_/#()][A-Za-z0-9_./#()-]{0,255}$",
        3,
        289,
        "name,value"
    )
);
schema_type!(
    /// A ListMetrics marker: `AGT.ECS.<metric>.instance_id:<desktop>[.mount_point:<id>]`.
    Marker => pattern_string(
        "^AGT\\.ECS\\.[A-Za-z][A-Za-z0-9_-]*\\.instance_id:[ -~]+$",
        22,
        1024,
        "The marker of a previous page"
    )
);
schema_type!(
    /// The order of ListMetrics.
    Order => one_of_strings(["asc", "desc"])
);
const PERIOD_LIST: &str = "1, 60, 300, 1200, 3600, 14400 or 86400";

/// Where a period is read from: raw data (the agent's one-minute collection) for 1 and
/// 60 s, 5-minute roll-ups up to 20 minutes, hourly ones beyond.
fn tier(period: i64) -> Tier {
    match period {
        1 | 60 => Tier::Raw,
        300 | 1200 => Tier::FiveMinutes,
        _ => Tier::OneHour,
    }
}

/// The datapoints of a series at `period` seconds: for period 1 each raw minute's average,
/// as `average`, on the minute's start; else one point per period, on the period's start.
pub fn datapoints(
    aggregates: &[Aggregate],
    period: i64,
    filter: Filter,
) -> Vec<(Millis, &'static str, f64)> {
    if period == 1 {
        return aggregates
            .iter()
            .map(|a| (a.at, "average", a.average()))
            .collect();
    }
    let p = period * 1000;
    let mut buckets: BTreeMap<Millis, Aggregate> = BTreeMap::new();
    for a in aggregates {
        let at = a.at.div_euclid(p) * p;
        buckets
            .entry(at)
            .and_modify(|b| b.merge(a))
            .or_insert(Aggregate { at, ..*a });
    }
    buckets
        .values()
        .map(|b| (b.at, filter.name(), filter.of(b)))
        .collect()
}

/// A dimension as given: `(name, value)`.
type Dim = (String, String);

fn valid_dim_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Cloud Eye's rule for a dimension value: 1 to 256 of letters, digits, `_`, `-`, `.`,
/// `/`, `#`, `(` and `)`, the first of them not `-` nor `.` and possibly `*`.
fn valid_dim_value(value: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || "_-./#()".contains(c);
    let mut chars = value.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || "*_/#()".contains(c))
        && value.len() <= 256
        && chars.all(inner)
}

/// What [`valid_dim_value`] accepts, in words.
const DIM_VALUE_RULE: &str = "a value of 1 to 256 letters, digits, _, -, ., /, #, ( or ) \
     (not starting with - or .; * may start it)";

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 96
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_namespace(ns: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (3..=32).contains(&ns.len()) && ns.split_once('.').is_some_and(|(s, i)| part(s) && part(i))
}

/// The series a metric and its dimensions name, if it can exist: namespace `AGT.ECS`, an
/// `instance_id`, and a `mount_point` exactly for the disk metrics.
fn series_of(namespace: &str, metric: &str, dims: &[Dim]) -> Option<SeriesKey> {
    if namespace != NAMESPACE || unit_of(metric).is_none() {
        return None;
    }
    let get = |name: &str| dims.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    if dims
        .iter()
        .any(|(n, _)| n != DIM_INSTANCE && n != DIM_MOUNT_POINT)
    {
        return None;
    }
    let desktop = DesktopId::parse(get(DIM_INSTANCE)?).ok()?;
    let mount_point = get(DIM_MOUNT_POINT);
    if mount_point.is_some() != is_disk_metric(metric) {
        return None;
    }
    Some(SeriesKey {
        desktop,
        metric: metric.to_owned(),
        mount_point,
    })
}

/// `dim.0` … `dim.3` of a query, each `name,value` (split at the first comma).
fn query_dims(query: &Query) -> Result<Vec<Dim>, MetricError> {
    let mut dims = Vec::new();
    for i in 0..MAX_DIMENSIONS {
        let key = format!("dim.{i}");
        let Some(raw) = query.str(&key).map_err(|e| bad_query(&e))? else {
            continue;
        };
        let Some((name, value)) = raw.split_once(',') else {
            return Err(MetricError::bad_query(format!(
                "{key} must be name,value (e.g. instance_id,<desktop id>), not {raw:?}"
            )));
        };
        if !valid_dim_name(name) || !valid_dim_value(value) {
            return Err(MetricError::bad_query(format!(
                "{key} must be name,value with a name of letters, digits, _ or - (starting \
                 with a letter, at most 32) and {DIM_VALUE_RULE}, not {raw:?}"
            )));
        }
        dims.push((name.to_owned(), value.to_owned()));
    }
    Ok(dims)
}

fn bad_query(e: &ApiError) -> MetricError {
    MetricError::bad_query(e.message.clone().unwrap_or_else(|| e.code.message().into()))
}

fn required(query: &Query, key: &str) -> Result<String, MetricError> {
    query
        .str(key)
        .map_err(|e| bad_query(&e))?
        .ok_or_else(|| MetricError::bad_query(format!("query parameter {key} is required")))
}

fn time_param(query: &Query, key: &str) -> Result<i64, MetricError> {
    let raw = required(query, key)?;
    raw.parse::<i64>()
        .ok()
        .filter(|t| (TIME_MIN..=TIME_MAX).contains(t))
        .ok_or_else(|| {
            MetricError::bad_query(format!(
                "{key} must be epoch milliseconds from {TIME_MIN} to {TIME_MAX}, not {raw:?}"
            ))
        })
}

/// `from` rounded down to the period (period 1: to the raw data's minute).
fn round_down(from: Millis, period: i64) -> Millis {
    let p = if period == 1 { 60_000 } else { period * 1000 };
    from.div_euclid(p) * p
}

/// The aggregates of each of `keys` (in one read of the store), in their order.
async fn aggregates_of(
    state: &AppState,
    project: &ProjectId,
    keys: &[&SeriesKey],
    period: i64,
    from: Millis,
    to: Millis,
) -> Result<Vec<Vec<Aggregate>>, MetricError> {
    let ids: Vec<i64> = keys.iter().map(|key| key.id()).collect();
    Ok(state
        .store
        .metric_aggregates(project, &ids, tier(period), from, to)
        .await?)
}

/// ShowMetricData: one metric's datapoints.
#[utoipa::path(
    get,
    path = "/V1.0/{project_id}/metric-data",
    tag = TAG_CES,
    operation_id = "ShowMetricData",
    params(
        ("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"),
        ("namespace" = inline(Namespace), Query, description = "`AGT.ECS`"),
        ("metric_name" = inline(MetricName), Query, description = "e.g. cpu_usage"),
        ("dim.0" = inline(QueryDim), Query, description = "A dimension, name,value (e.g. instance_id,<desktop id>)"),
        ("dim.1" = inline(Option<QueryDim>), Query, description = "A second dimension, name,value"),
        ("dim.2" = inline(Option<QueryDim>), Query, description = "A third dimension, name,value"),
        ("dim.3" = inline(Option<QueryDim>), Query, description = "A fourth dimension, name,value"),
        ("filter" = inline(FilterName), Query),
        ("period" = inline(PeriodSeconds), Query, description = "Seconds"),
        ("from" = inline(EpochMillis), Query),
        ("to" = inline(EpochMillis), Query, description = "Epoch milliseconds, after from"),
    ),
    responses((status = 200, description = "The datapoints", body = ShowMetricDataResponse), CesV1Errors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn show_metric_data(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Result<Query, ApiError>,
) -> Result<Json<ShowMetricDataResponse>, MetricError> {
    let project = state.authorize(&caller, &project_id, Api::ShowMetricData)?;
    let query = query.map_err(|e| bad_query(&e))?;
    let namespace = required(&query, "namespace")?;
    if !valid_namespace(&namespace) {
        return Err(MetricError::bad_query(format!(
            "namespace must be service.item (letters, digits, _; 3 to 32 characters), not {namespace:?}"
        )));
    }
    let metric = required(&query, "metric_name")?;
    if !valid_metric_name(&metric) {
        return Err(MetricError::bad_query(format!(
            "metric_name must start with a letter and hold letters, digits, _ or - (at most 96), not {metric:?}"
        )));
    }
    if query.str("dim.0").map_err(|e| bad_query(&e))?.is_none() {
        return Err(MetricError::bad_query(
            "query parameter dim.0 is required (e.g. dim.0=instance_id,<desktop id>)",
        ));
    }
    let dims = query_dims(&query)?;
    let filter_raw = required(&query, "filter")?;
    let filter = Filter::parse(&filter_raw).ok_or_else(|| {
        MetricError::bad_query(format!("filter must be {FILTERS}, not {filter_raw:?}"))
    })?;
    let period_raw = required(&query, "period")?;
    let period = period_raw
        .parse::<i64>()
        .ok()
        .filter(|p| PERIODS.contains(p))
        .ok_or_else(|| {
            MetricError::bad_query(format!("period must be {PERIOD_LIST}, not {period_raw:?}"))
        })?;
    let from = time_param(&query, "from")?;
    let to = time_param(&query, "to")?;
    if from >= to {
        return Err(MetricError::bad_query(format!(
            "from ({from}) must be less than to ({to})"
        )));
    }
    let unit = unit_of(&metric).unwrap_or("");
    let points = match series_of(&namespace, &metric, &dims) {
        Some(key) => {
            let from = round_down(from, period);
            let aggregates = aggregates_of(&state, &project, &[&key], period, from, to).await?;
            aggregates
                .first()
                .map(|found| datapoints(found, period, filter))
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    let datapoints = points
        .into_iter()
        .map(|(at, name, value)| Datapoint::new(at, name, value, Some(unit)))
        .collect();
    Ok(Json(ShowMetricDataResponse {
        datapoints,
        metric_name: metric,
    }))
}

/// A parsed BatchListMetricData body.
#[derive(Debug)]
struct BatchQuery {
    metrics: Vec<(String, String, Vec<Dim>)>,
    period: i64,
    filter: Filter,
    from: Millis,
    to: Millis,
}

fn body_error(fields: &str, what: impl std::fmt::Display) -> MetricError {
    MetricError::bad_body(format!(
        "Some content in message body is not correct, error message: [{fields}]: {what}"
    ))
}

/// Parses and checks a BatchListMetricData body; errors name the fields to fix.
fn parse_batch(body: &[u8]) -> Result<BatchQuery, MetricError> {
    if body.len() > BATCH_MAX_BODY {
        return Err(body_error(
            "body",
            format!(
                "the body is {} bytes; at most {BATCH_MAX_BODY} are accepted",
                body.len()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| body_error("body", format!("not a JSON object: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(body_error("body", "send a JSON object"));
    };
    let missing: Vec<&str> = ["metrics", "period", "filter", "from", "to"]
        .into_iter()
        .filter(|f| obj.get(*f).is_none_or(Value::is_null))
        .collect();
    if !missing.is_empty() {
        return Err(body_error(&missing.join(", "), "required"));
    }
    let metrics = obj["metrics"]
        .as_array()
        .ok_or_else(|| body_error("metrics", "must be an array"))?;
    if metrics.is_empty() || metrics.len() > BATCH_MAX_METRICS {
        return Err(body_error(
            "metrics",
            format!(
                "must hold 1 to {BATCH_MAX_METRICS} metrics, not {}",
                metrics.len()
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(metrics.len());
    for (i, m) in metrics.iter().enumerate() {
        let field = |f: &str| format!("metrics[{i}].{f}");
        let namespace = m
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|ns| valid_namespace(ns))
            .ok_or_else(|| body_error(&field("namespace"), "must be service.item, e.g. AGT.ECS"))?;
        let metric = m
            .get("metric_name")
            .and_then(Value::as_str)
            .filter(|n| valid_metric_name(n))
            .ok_or_else(|| {
                body_error(
                    &field("metric_name"),
                    "must start with a letter and hold letters, digits, _ or - (at most 96)",
                )
            })?;
        let dims = m
            .get("dimensions")
            .and_then(Value::as_array)
            .filter(|d| (1..=MAX_DIMENSIONS).contains(&d.len()))
            .ok_or_else(|| {
                body_error(
                    &field("dimensions"),
                    "must be an array of 1 to 4 {name, value}",
                )
            })?;
        let mut dimensions = Vec::with_capacity(dims.len());
        for (j, d) in dims.iter().enumerate() {
            let name = d.get("name").and_then(Value::as_str);
            let value = d.get("value").and_then(Value::as_str);
            match (name, value) {
                (Some(n), Some(v)) if valid_dim_name(n) && valid_dim_value(v) => {
                    dimensions.push((n.to_owned(), v.to_owned()));
                }
                _ => {
                    return Err(body_error(
                        &field(&format!("dimensions[{j}]")),
                        format!(
                            "must be {{\"name\", \"value\"}}: a name of letters, digits, _ \
                             or - (starting with a letter) and {DIM_VALUE_RULE}"
                        ),
                    ));
                }
            }
        }
        parsed.push((namespace.to_owned(), metric.to_owned(), dimensions));
    }
    let period = match &obj["period"] {
        Value::String(s) => s.parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
    .filter(|p| PERIODS.contains(p))
    .ok_or_else(|| {
        body_error(
            "period",
            format!(
                "must be {PERIOD_LIST} (a string or a number), not {}",
                obj["period"]
            ),
        )
    })?;
    let filter = obj["filter"]
        .as_str()
        .and_then(Filter::parse)
        .ok_or_else(|| {
            body_error(
                "filter",
                format!("must be {FILTERS}, not {}", obj["filter"]),
            )
        })?;
    let time = |f: &str| {
        obj[f]
            .as_i64()
            .filter(|t| (TIME_MIN..=TIME_MAX).contains(t))
            .ok_or_else(|| {
                body_error(
                    f,
                    format!(
                        "must be epoch milliseconds from {TIME_MIN} to {TIME_MAX}, not {}",
                        obj[f]
                    ),
                )
            })
    };
    let from = time("from")?;
    let to = time("to")?;
    if from >= to {
        return Err(body_error(
            "from, to",
            format!("from ({from}) must be less than to ({to})"),
        ));
    }
    Ok(BatchQuery {
        metrics: parsed,
        period,
        filter,
        from,
        to,
    })
}

/// Cloud Eye's range rule: `metrics × (to − from) / period ≤ 3000` (period 1 counted as
/// one minute); a longer range has its `from` moved forward.
pub fn clamp_from(count: usize, period: i64, from: Millis, to: Millis) -> Millis {
    let period_ms = if period == 1 { 60_000 } else { period * 1000 };
    let span = BATCH_MAX_POINTS * period_ms / count.max(1) as i64;
    from.max(to - span)
}

/// BatchListMetricData: several metrics' datapoints (3000 in all at most).
#[utoipa::path(
    post,
    path = "/V1.0/{project_id}/batch-query-metric-data",
    tag = TAG_CES,
    operation_id = "BatchListMetricData",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)")),
    request_body = BatchListMetricDataRequest,
    responses((status = 200, description = "Each metric's datapoints", body = BatchListMetricDataResponse), CesV1Errors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn batch_list_metric_data(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    body: Bytes,
) -> Result<Json<BatchListMetricDataResponse>, MetricError> {
    let project = state.authorize(&caller, &project_id, Api::BatchListMetricData)?;
    let q = parse_batch(&body)?;
    let from = round_down(
        clamp_from(q.metrics.len(), q.period, q.from, q.to),
        q.period,
    );
    // At most 3000 datapoints in all: each metric keeps its share, the newest.
    let share = (BATCH_MAX_POINTS as usize / q.metrics.len()).max(1);
    let keys: Vec<Option<SeriesKey>> = q
        .metrics
        .iter()
        .map(|(namespace, metric, dims)| series_of(namespace, metric, dims))
        .collect();
    let known: Vec<&SeriesKey> = keys.iter().flatten().collect();
    let mut found = aggregates_of(&state, &project, &known, q.period, from, q.to)
        .await?
        .into_iter();
    let mut out = Vec::with_capacity(q.metrics.len());
    for ((namespace, metric, dims), key) in q.metrics.iter().zip(&keys) {
        let aggregates = key.as_ref().and_then(|_| found.next());
        let (unit, points) = match aggregates {
            Some(aggregates) => {
                let mut points = datapoints(&aggregates, q.period, q.filter);
                if points.len() > share {
                    points.drain(..points.len() - share);
                }
                let unit = if aggregates.is_empty() {
                    "unknown"
                } else {
                    unit_of(metric).unwrap_or("")
                };
                (unit, points)
            }
            None => ("unknown", Vec::new()),
        };
        let datapoints = points
            .into_iter()
            .map(|(at, name, value)| Datapoint::new(at, name, value, None))
            .collect();
        let dimensions = dims
            .iter()
            .map(|(n, v)| MetricDimension {
                name: n.clone(),
                value: v.clone(),
            })
            .collect();
        out.push(BatchMetricData {
            namespace: namespace.clone(),
            metric_name: metric.clone(),
            dimensions,
            datapoints,
            unit,
        });
    }
    Ok(Json(BatchListMetricDataResponse { metrics: out }))
}

/// A `start`/`marker`: `AGT.ECS.<metric>.instance_id:<desktop>[.mount_point:<id>]`, as
/// `(metric, desktop, mount point or "")`.
fn parse_marker(start: &str) -> Option<(String, String, String)> {
    let rest = start.strip_prefix(NAMESPACE)?.strip_prefix('.')?;
    let (metric, rest) = rest.split_once(&format!(".{DIM_INSTANCE}:"))?;
    let (desktop, mount) = match rest.rsplit_once(&format!(".{DIM_MOUNT_POINT}:")) {
        Some((desktop, mount)) => (desktop, mount),
        None => (rest, ""),
    };
    (valid_metric_name(metric) && !desktop.is_empty())
        .then(|| (metric.to_owned(), desktop.to_owned(), mount.to_owned()))
}

/// ListMetrics: the metrics that have data, a page at a time.
#[utoipa::path(
    get,
    path = "/V1.0/{project_id}/metrics",
    tag = TAG_CES,
    operation_id = "ListMetrics",
    params(
        ("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"),
        ("namespace" = inline(Option<Namespace>), Query, description = "`AGT.ECS`"),
        ("metric_name" = inline(Option<MetricName>), Query),
        ("dim.0" = inline(Option<QueryDim>), Query, description = "A dimension, name,value (e.g. instance_id,<desktop id>)"),
        ("dim.1" = inline(Option<QueryDim>), Query, description = "A second dimension, name,value"),
        ("dim.2" = inline(Option<QueryDim>), Query, description = "A third dimension, name,value"),
        ("dim.3" = inline(Option<QueryDim>), Query, description = "A fourth dimension, name,value"),
        ("start" = inline(Option<Marker>), Query, description = "The marker of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size, 1 to 1000 (1000)"),
        ("order" = inline(Option<Order>), Query),
    ),
    responses((status = 200, description = "A page of metrics", body = ListMetricsResponse), CesV1Errors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Result<Query, ApiError>,
) -> Result<Json<ListMetricsResponse>, MetricError> {
    let project = state.authorize(&caller, &project_id, Api::ListMetrics)?;
    let query = query.map_err(|e| bad_query(&e))?;
    let namespace = query.str("namespace").map_err(|e| bad_query(&e))?;
    if let Some(ns) = &namespace
        && !valid_namespace(ns)
    {
        return Err(MetricError::bad_query(format!(
            "namespace must be service.item (letters, digits, _; 3 to 32 characters), not {ns:?}"
        )));
    }
    let metric = query.str("metric_name").map_err(|e| bad_query(&e))?;
    if let Some(m) = &metric
        && !valid_metric_name(m)
    {
        return Err(MetricError::bad_query(format!(
            "metric_name must start with a letter and hold letters, digits, _ or - (at most 96), not {m:?}"
        )));
    }
    let dims = query_dims(&query)?;
    let limit = match query.str("limit").map_err(|e| bad_query(&e))? {
        None => LIST_MAX_LIMIT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=LIST_MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                MetricError::bad_query(format!(
                    "limit must be an integer from 1 to {LIST_MAX_LIMIT}, not {raw:?}"
                ))
            })?,
    };
    let descending = match query.str("order").map_err(|e| bad_query(&e))?.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(MetricError::bad_query(format!(
                "order must be asc or desc, not {other:?}"
            )));
        }
    };
    let after = match query.str("start").map_err(|e| bad_query(&e))? {
        None => None,
        Some(start) => Some(parse_marker(&start).ok_or_else(|| MetricError {
            inner: ApiError::invalid(format!(
                "start must be a marker of a previous page \
                 (AGT.ECS.<metric_name>.instance_id:<desktop id>[.mount_point:<id>]), not {start:?}"
            )),
            code: Some("ces.0006"),
        })?),
    };
    let empty = || {
        Json(ListMetricsResponse {
            metrics: vec![],
            meta_data: MetaData {
                count: 0,
                total: 0,
                marker: String::new(),
            },
        })
    };
    if namespace.as_deref().is_some_and(|ns| ns != NAMESPACE)
        || dims
            .iter()
            .any(|(n, _)| n != DIM_INSTANCE && n != DIM_MOUNT_POINT)
    {
        return Ok(empty());
    }
    let get = |name: &str| dims.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let desktop = match get(DIM_INSTANCE) {
        Some(raw) => match DesktopId::parse(raw) {
            Ok(id) => Some(id),
            Err(_) => return Ok(empty()),
        },
        None => None,
    };
    let filter = SeriesFilter {
        metric,
        desktop,
        mount_point: get(DIM_MOUNT_POINT),
        after,
        descending,
        limit,
    };
    let (series, total) = state.store.list_metric_series(&project, &filter).await?;
    let marker = series.last().map(|s| s.marker()).unwrap_or_default();
    let dimension = |name: &str, value: &str| MetricDimension {
        name: name.to_owned(),
        value: value.to_owned(),
    };
    let metrics = series
        .iter()
        .map(|s| {
            let mut dimensions = vec![dimension(DIM_INSTANCE, s.desktop.as_str())];
            if let Some(mp) = &s.mount_point {
                dimensions.push(dimension(DIM_MOUNT_POINT, mp));
            }
            MetricInfo {
                namespace: NAMESPACE,
                metric_name: s.metric.clone(),
                dimensions,
                unit: s.unit.clone(),
            }
        })
        .collect();
    Ok(Json(ListMetricsResponse {
        metrics,
        meta_data: MetaData {
            count: series.len(),
            total,
            marker,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(at: Millis, v: f64) -> Aggregate {
        Aggregate::of(at, v)
    }

    #[test]
    fn buckets_start_on_the_period_and_every_filter_is_answered() {
        let raw = [
            agg(60_000, 1.0),
            agg(70_000, 3.0),
            agg(119_999, 5.0),
            agg(120_000, 10.0),
        ];
        let avg = datapoints(&raw, 60, Filter::Average);
        assert_eq!(
            avg,
            vec![(60_000, "average", 3.0), (120_000, "average", 10.0)]
        );
        assert_eq!(datapoints(&raw, 60, Filter::Max)[0].2, 5.0);
        assert_eq!(datapoints(&raw, 60, Filter::Min)[0].2, 1.0);
        assert_eq!(datapoints(&raw, 60, Filter::Sum)[0].2, 9.0);
        // Population variance of 1, 3, 5.
        let var = datapoints(&raw, 60, Filter::Variance)[0].2;
        assert!((var - 8.0 / 3.0).abs() < 1e-9, "{var}");
        // Period 1: every raw value as average, at its own time, whatever the filter.
        let raw1 = datapoints(&raw, 1, Filter::Max);
        assert_eq!(raw1.len(), 4);
        assert_eq!(raw1[1], (70_000, "average", 3.0));
    }

    #[test]
    fn roll_ups_merge_into_longer_periods() {
        let mut a = agg(0, 2.0);
        a.merge(&agg(1, 4.0));
        let b = agg(300_000, 6.0);
        let points = datapoints(&[a, b], 1200, Filter::Average);
        assert_eq!(points, vec![(0, "average", 4.0)]);
    }

    #[test]
    fn the_3000_point_rule_moves_from() {
        // 300 metrics at period 1 allow ten minutes.
        let to = 2_000_000_000_000;
        assert_eq!(clamp_from(300, 1, to - 3_600_000, to), to - 600_000);
        // One metric at 5 minutes: 3000 points are 250 hours; a day passes unchanged.
        assert_eq!(clamp_from(1, 300, to - 86_400_000, to), to - 86_400_000);
    }

    #[test]
    fn markers_round_trip() {
        let m = "AGT.ECS.disk_free.instance_id:d-1.x.mount_point:0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_marker(m),
            Some((
                "disk_free".into(),
                "d-1.x".into(),
                "0123456789abcdef0123456789abcdef".into()
            ))
        );
        assert_eq!(
            parse_marker("AGT.ECS.cpu_usage.instance_id:d-1"),
            Some(("cpu_usage".into(), "d-1".into(), String::new()))
        );
        assert_eq!(parse_marker("SYS.ECS.cpu_util.instance_id:x"), None);
        assert_eq!(parse_marker("garbage"), None);
    }

    #[test]
    fn batch_bodies_are_checked_field_by_field() {
        let ok = br#"{"metrics":[{"namespace":"AGT.ECS","metric_name":"cpu_usage","dimensions":[{"name":"instance_id","value":"d-1"}]}],"period":300,"filter":"max","from":1735689600000,"to":1735693200000}"#;
        let q = parse_batch(ok).unwrap();
        assert_eq!((q.period, q.filter), (300, Filter::Max));
        let string_period = String::from_utf8(ok.to_vec())
            .unwrap()
            .replace("300", "\"300\"");
        assert_eq!(parse_batch(string_period.as_bytes()).unwrap().period, 300);
        let bad = String::from_utf8(ok.to_vec())
            .unwrap()
            .replace("300", "\"10086\"");
        let e = parse_batch(bad.as_bytes()).unwrap_err();
        assert_eq!(e.code, Some("ces.0014"));
        assert!(e.inner.message.unwrap().contains("[period]"));
        let e = parse_batch(br#"{"metrics":[]}"#).unwrap_err();
        assert!(
            e.inner
                .message
                .unwrap()
                .contains("[period, filter, from, to]")
        );
    }
}
