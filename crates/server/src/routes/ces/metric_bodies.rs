//! The bodies of the V1.0 metric API (ShowMetricData, BatchListMetricData, ListMetrics),
//! with the field names Cloud Eye's SDK reads.

use deskfleet_core::clock::Millis;
use serde::Serialize;

/// One point: the value under the name of its filter (`average`, `max`, `min`, `sum` or
/// `variance`; exactly one is present), and its time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Datapoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variance: Option<f64>,
    /// The start of the point's period, epoch milliseconds.
    #[schema(value_type = i64)]
    pub timestamp: Millis,
    /// The metric's unit (ShowMetricData only; BatchListMetricData gives it per metric).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
}

impl Datapoint {
    /// The point at `at` of the filter named `filter`.
    pub fn new(at: Millis, filter: &str, value: f64, unit: Option<&'static str>) -> Self {
        let mut point = Self {
            average: None,
            max: None,
            min: None,
            sum: None,
            variance: None,
            timestamp: at,
            unit,
        };
        let slot = match filter {
            "max" => &mut point.max,
            "min" => &mut point.min,
            "sum" => &mut point.sum,
            "variance" => &mut point.variance,
            _ => &mut point.average,
        };
        *slot = Some(value);
        point
    }
}

/// ShowMetricData's body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShowMetricDataResponse {
    pub datapoints: Vec<Datapoint>,
    pub metric_name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricDimension {
    pub name: String,
    pub value: String,
}

/// One metric of BatchListMetricData's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchMetricData {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<MetricDimension>,
    pub datapoints: Vec<Datapoint>,
    /// The unit, or `unknown` when the metric has no data in the range.
    pub unit: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchListMetricDataResponse {
    pub metrics: Vec<BatchMetricData>,
}

/// One metric of ListMetrics' answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricInfo {
    pub namespace: &'static str,
    pub metric_name: String,
    pub dimensions: Vec<MetricDimension>,
    pub unit: String,
}

/// The page of ListMetrics: `marker` is the `start` of the next page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetaData {
    pub count: usize,
    pub total: u64,
    pub marker: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListMetricsResponse {
    pub metrics: Vec<MetricInfo>,
    pub meta_data: MetaData,
}
