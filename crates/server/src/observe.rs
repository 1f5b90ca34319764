//! What an operator sees of a running server: the Prometheus recorder behind the `metrics`
//! facade and its `GET /metrics` endpoint, the per-request metrics and access log, and the
//! log subscriber of the binary (text or JSON).
//!
//! Invariants:
//! - the recorder is installed once per process ([`prometheus`]), however many servers the
//!   process runs (the API tests run several), and every server renders the same registry;
//! - request metrics are labelled with the *matched route template*
//!   (`/v2/{project_id}/desktops/agents`), never the raw path, and with a method from a
//!   fixed set, so their cardinality is bounded whatever clients send;
//! - every metric whose name ends in `_seconds` is a histogram with [`SECONDS_BUCKETS`].

use crate::AppState;
use crate::error::ApiError;
use crate::settings::{LogFormat, LogSettings};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Buckets of every `*_seconds` histogram: from a millisecond (a cached request) to five
/// minutes (an install on a slow desktop).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The route label of a request no route matched (404 `APIGW.0101`).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// How often histogram samples are folded into their buckets when nobody scrapes, so that
/// an unscraped server does not keep every sample in memory.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The Content-Type of the Prometheus text exposition format.
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The process-wide Prometheus recorder, installed as the `metrics` global recorder on the
/// first call. A global recorder can be set once per process; if something else set one
/// first, this handle renders only what reaches it (nothing) and a warning says so.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        let upkeep = handle.clone();
        // A plain thread: the recorder outlives any one runtime (tests start several).
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
        }
        handle
    })
}

/// The `# HELP` lines of the metrics this module owns.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "deskfleet_http_requests_total",
        "HTTP requests answered, by method, matched route and status."
    );
    describe_histogram!(
        "deskfleet_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (to the response head), by method, matched route and status."
    );
    describe_gauge!(
        "deskfleet_jobs",
        "Jobs in the database by state (WAITING, RUNNING, SUCCESS, FAIL), counted at scrape time."
    );
    describe_gauge!(
        "deskfleet_sub_jobs",
        "Sub-jobs in the database by state (WAITING, RUNNING, SUCCESS, FAILED), counted at scrape time."
    );
}

/// `GET /metrics`.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(metrics_endpoint))
}

/// The matched route of a request, carried from the route layer (which runs after routing
/// and can see it) out to [`track_requests`] (which wraps the router and cannot).
#[derive(Clone)]
struct Route(MatchedPath);

/// Route layer: remembers the matched route template on the response.
pub(crate) async fn matched_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// Outer layer, inside the request span: counts and times every request by method, route
/// and status, and writes the access log line (debug for successes, info for client
/// errors, warn for server errors, so that a busy fleet does not flood the default log).
pub(crate) async fn track_requests(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let route = response
        .extensions()
        .get::<Route>()
        .map_or(UNMATCHED_ROUTE, |r| r.0.as_str())
        .to_owned();
    let status = response.status().as_u16();
    tracing::Span::current().record("route", route.as_str());
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("deskfleet_http_requests_total", &labels).increment(1);
    metrics::histogram!("deskfleet_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let route = labels[1].1.as_str();
    match status {
        500.. => {
            tracing::warn!(target: "deskfleet_server::access", route, status, latency_ms, "request answered")
        }
        400..500 => {
            tracing::info!(target: "deskfleet_server::access", route, status, latency_ms, "request answered")
        }
        _ => {
            tracing::debug!(target: "deskfleet_server::access", route, status, latency_ms, "request answered")
        }
    }
    response
}

/// A method label from a fixed set: anything non-standard is `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The job and sub-job gauges, recounted from the store at most every
/// `metrics.job_count_interval_ms`: concurrent and frequent scrapes share one count.
#[derive(Debug, Default)]
pub struct JobGauges(tokio::sync::Mutex<Option<Instant>>);

impl JobGauges {
    async fn refresh(&self, state: &AppState) {
        let every = Duration::from_millis(state.settings.metrics.job_count_interval_ms);
        let mut counted = self.0.lock().await;
        if counted.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        match state.store.count_by_state().await {
            Ok(counts) => {
                for (status, n) in counts.jobs {
                    metrics::gauge!("deskfleet_jobs", "state" => status.as_str()).set(n as f64);
                }
                for (status, n) in counts.sub_jobs {
                    metrics::gauge!("deskfleet_sub_jobs", "state" => status.as_str()).set(n as f64);
                }
                *counted = Some(Instant::now());
            }
            // The rest of the registry is still worth serving; the job gauges keep their
            // last values, and the log says why they are stale.
            Err(e) => tracing::warn!(error = %e, "cannot count jobs for /metrics"),
        }
    }
}

/// `GET /metrics`: the Prometheus text format. Open unless `metrics.bearer_token_file` is
/// set; then only `Authorization: Bearer <token>` is answered (401 JSON error otherwise).
/// The job gauges are counted from the store now, so every replica on one PostgreSQL
/// reports the same totals (aggregate them with `max`, not `sum`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = crate::openapi::TAG_EXTENSIONS,
    operation_id = "ShowPrometheusMetrics",
    responses(
        (status = 200, description = "The Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "APIGW.0301: metrics.bearer_token_file is set and the bearer is not it",
         body = deskfleet_proto::error::ErrorBody),
        (status = 500, description = "metrics.bearer_token_file cannot be read, or is empty",
         body = deskfleet_proto::error::ErrorBody),
    ),
)]
async fn metrics_endpoint(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(path) = &state.settings.metrics.bearer_token_file {
        let expected = match tokio::fs::read_to_string(path).await {
            Ok(token) => token.trim().to_owned(),
            Err(e) => {
                return ApiError::internal(&format!(
                    "reading metrics.bearer_token_file {}: {e}",
                    path.display()
                ))
                .into_response();
            }
        };
        if expected.is_empty() {
            // An empty file must not turn protection off.
            return ApiError::internal(&format!(
                "metrics.bearer_token_file {} is empty",
                path.display()
            ))
            .into_response();
        }
        if !bearer_matches(&headers, &expected) {
            let mut response =
                ApiError::unauthenticated("a valid metrics bearer token is required")
                    .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"deskfleet-metrics\""),
            );
            return response;
        }
    }
    state.job_gauges.refresh(&state).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, EXPOSITION_CONTENT_TYPE)],
        prometheus().render(),
    )
        .into_response()
}

/// Whether `Authorization` is `Bearer <expected>`, compared in constant time.
fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(deskfleet_proto::opamp::bearer_token)
    else {
        return false;
    };
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Installs the log subscriber of the binary: events to stderr, filtered by `RUST_LOG`
/// (default `info`), as text or JSON. Text is coloured only when stderr is a terminal
/// and `NO_COLOR` is unset; JSON lines carry the fields of every span the event happened
/// in (`spans`), so each line logged while serving a request has its `request_id`.
pub fn init_logging(settings: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log that cannot be written (its disk full) must not take requests down: the
        // report of that failure would go to the same stderr and panic.
        .log_internal_errors(false);
    match settings.format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_checked_exactly() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(bearer_matches(&with("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(&with("bearer  s3cret "), "s3cret"));
        assert!(!bearer_matches(&with("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(&with("Bearer s3cretx"), "s3cret"));
        assert!(!bearer_matches(&with("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(&with("s3cret"), "s3cret"));
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }

    #[test]
    fn log_and_metrics_settings_load_from_the_file_and_bad_formats_are_refused() {
        use crate::settings::Settings;
        use figment::providers::Serialized;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("settings.toml");
        let flags = || Serialized::globals(serde_json::json!({}));
        std::fs::write(
            &file,
            "[log]\nformat = \"json\"\n[metrics]\nbearer_token_file = \"/etc/t\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), flags()).unwrap();
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(
            s.metrics.bearer_token_file.as_deref(),
            Some(std::path::Path::new("/etc/t"))
        );
        std::fs::write(&file, "[log]\nformat = \"xml\"\n").unwrap();
        let err = Settings::load(Some(&file), flags()).unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");
        let defaults = Settings::default();
        assert_eq!(defaults.log.format, LogFormat::Text);
        assert!(defaults.metrics.bearer_token_file.is_none());
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
