//! A typed client for the deskfleet API, used by the `deskfleet` CLI and by the tests.
//!
//! It signs every `/v2` request exactly as the official SDKs do (`SDK-HMAC-SHA256` with
//! `X-Project-Id`, via [`deskfleet_proto::sign`]) or sends an `X-Auth-Token`. It talks to
//! the server over the wire only and must not depend on server, store or core crates.
//!
//! Transport ([`ClientOptions`]): https with rustls, trusting the system's roots plus an
//! optional CA bundle (the server's private CA, `DATA_DIR/ca.pem`). Plain `http://` is
//! refused unless the host is a loopback address (the credentials never leave the
//! machine) or the caller allows it (`--allow-insecure-http`). Every request has a
//! connect timeout and an overall timeout. Answers 429 and 503 can be retried after the
//! server's `Retry-After` or a doubling backoff ([`ClientOptions::retries`], off by default).

use deskfleet_proto::error::ErrorBody;
use deskfleet_proto::iam;
use deskfleet_proto::sign;
use deskfleet_proto::workspace as w;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

/// TCP connect and TLS handshake must finish within this, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A whole request (answer and body included) must finish within this, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests answered 429 or 503 are sent again this many times by the `deskfleet` CLI.
/// [`ClientOptions::default`] does not retry (0): tests and callers that look at a 429 or
/// 503 themselves get it at once; callers that want retries ask for them.
pub const DEFAULT_RETRIES: u32 = 3;

/// The first backoff when the server gives no `Retry-After`, by default (then 2x, 4x...).
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(500);

/// The longest wait before a retry, by default, whatever `Retry-After` asks.
pub const DEFAULT_RETRY_MAX_WAIT: Duration = Duration::from_secs(30);

/// Path-segment encoding: everything but the unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Clone)]
pub enum Credentials {
    AkSk {
        access_key: String,
        secret_key: String,
    },
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::AkSk { access_key, .. } => write!(f, "AkSk({access_key}, [redacted])"),
            Credentials::Token(_) => f.write_str("Token([redacted])"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {}", body.as_ref().map(|b| format!("{} {}", b.error_code, b.error_msg)).unwrap_or_else(|| text.clone()))]
    Api {
        status: u16,
        request_id: Option<String>,
        body: Option<Box<ErrorBody>>,
        text: String,
    },
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("bad endpoint: {0}")]
    Endpoint(String),
    #[error(
        "refusing plain http to {0}: credentials would cross the network unencrypted (use https, or allow insecure http explicitly)"
    )]
    InsecureHttp(String),
    #[error("CA certificates: {0}")]
    Ca(String),
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the server could not be reached or did not answer in time: connection
    /// refused, name not resolved, TLS handshake failed, or a timeout.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Transport(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            _ => false,
        }
    }

    /// True when the request timed out (connect or answer).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Transport(e) if e.is_timeout())
    }

    pub fn error_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body: Some(b), .. } => Some(&b.error_code),
            _ => None,
        }
    }
}

/// A raw answer, for callers (tests) that look at status and headers themselves.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// How the client reaches the server: whom it trusts, whether plain http is allowed,
/// and its timeouts.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// PEM certificates to trust in addition to the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Allow `http://` to hosts that are not loopback addresses.
    pub allow_insecure_http: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// How many times a request answered 429 or 503 is sent again (default 0: never).
    pub retries: u32,
    /// The first wait before a retry when the answer has no `Retry-After`; doubled at
    /// each further retry.
    pub retry_base: Duration,
    /// No wait before a retry is longer than this, whatever `Retry-After` asks.
    pub retry_max_wait: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_pem: None,
            allow_insecure_http: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            retries: 0,
            retry_base: DEFAULT_RETRY_BASE,
            retry_max_wait: DEFAULT_RETRY_MAX_WAIT,
        }
    }
}

impl ClientOptions {
    /// Trusts the certificates of a PEM file (besides the system's roots).
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self, ClientError> {
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Ca(format!("reading {}: {e}", path.display())))?;
        self.ca_pem = Some(pem);
        Ok(self)
    }

    /// Refuses `http://` to a host that is not loopback, unless allowed.
    pub fn check_endpoint(&self, endpoint: &Url) -> Result<(), ClientError> {
        match endpoint.scheme() {
            "https" => Ok(()),
            "http" if self.allow_insecure_http || is_loopback(endpoint) => Ok(()),
            "http" => Err(ClientError::InsecureHttp(endpoint.to_string())),
            other => Err(ClientError::Endpoint(format!(
                "{endpoint}: the scheme must be https (or http), not {other}"
            ))),
        }
    }

    /// A reqwest client with these roots and timeouts.
    pub fn http_client(&self) -> Result<reqwest::Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout);
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(ClientError::Ca("no certificate in the CA file".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder.build()?)
    }
}

/// `localhost`, `127.0.0.0/8` and `::1`: traffic that never leaves the machine.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    project_id: String,
    credentials: Credentials,
    user_agent: String,
    retry: RetryPolicy,
}

/// When and how long to wait before sending a 429/503-answered request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub base: Duration,
    pub max_wait: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based) of an answer with `status` and
    /// `retry_after` (the header's value); `None` when the answer is final.
    pub fn wait(&self, attempt: u32, status: u16, retry_after: Option<&str>) -> Option<Duration> {
        if !matches!(status, 429 | 503) || attempt >= self.retries {
            return None;
        }
        // Retry-After in seconds (its HTTP-date form is rare from APIs; fall back to backoff).
        let asked = retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let backoff = self.base.saturating_mul(1u32 << attempt.min(16));
        Some(asked.unwrap_or(backoff).min(self.max_wait))
    }
}

impl Client {
    /// A client with the default [`ClientOptions`] (system roots, default timeouts).
    pub fn new(
        endpoint: &str,
        project_id: &str,
        credentials: Credentials,
    ) -> Result<Self, ClientError> {
        Self::with_options(endpoint, project_id, credentials, &ClientOptions::default())
    }

    pub fn with_options(
        endpoint: &str,
        project_id: &str,
        credentials: Credentials,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let endpoint = Url::parse(endpoint).map_err(|e| ClientError::Endpoint(e.to_string()))?;
        options.check_endpoint(&endpoint)?;
        Ok(Self {
            http: options.http_client()?,
            endpoint,
            project_id: project_id.to_string(),
            credentials,
            user_agent: format!("deskfleet-client/{}", env!("CARGO_PKG_VERSION")),
            retry: RetryPolicy {
                retries: options.retries,
                base: options.retry_base,
                max_wait: options.retry_max_wait,
            },
        })
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The same client acting on another project's path (for isolation tests).
    pub fn with_project(&self, project_id: &str) -> Self {
        Self {
            project_id: project_id.to_string(),
            ..self.clone()
        }
    }

    fn host(&self) -> String {
        let host = self.endpoint.host_str().unwrap_or_default();
        match self.endpoint.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }

    /// Sends a request to `/v2/{project_id}/{path}` (path segments given unencoded), signed
    /// or with a token, and returns the raw answer.
    pub async fn send_v2(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> Result<RawResponse, ClientError> {
        self.send_under("v2", method, segments, query, body, extra_headers)
            .await
    }

    /// [`Client::send_v2`] under another API version: `/{version}/{project_id}/{path}`
    /// (`v3` and `V1.0` for Cloud Eye).
    ///
    /// An answer 429 or 503 is retried (signed anew each time) after its `Retry-After`
    /// or an exponential backoff, as the [`ClientOptions`] say; the last answer is returned.
    pub async fn send_under(
        &self,
        version: &str,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> Result<RawResponse, ClientError> {
        let mut attempt = 0;
        loop {
            let raw = self
                .send_once(
                    version,
                    method.clone(),
                    segments,
                    query,
                    body.clone(),
                    extra_headers,
                )
                .await?;
            let retry_after = raw.headers.get("retry-after").and_then(|v| v.to_str().ok());
            match self.retry.wait(attempt, raw.status, retry_after) {
                Some(wait) => {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                None => return Ok(raw),
            }
        }
    }

    async fn send_once(
        &self,
        version: &str,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> Result<RawResponse, ClientError> {
        let mut path = format!(
            "/{version}/{}",
            utf8_percent_encode(&self.project_id, SEGMENT)
        );
        for segment in segments {
            path.push('/');
            path.push_str(&utf8_percent_encode(segment, SEGMENT).to_string());
        }
        let body = body.unwrap_or_default();
        let mut headers: Vec<(String, String)> = vec![
            ("Content-Type".into(), "application/json".into()),
            ("User-Agent".into(), self.user_agent.clone()),
            ("X-Project-Id".into(), self.project_id.clone()),
        ];
        headers.extend(
            extra_headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let (headers, query) = match &self.credentials {
            Credentials::AkSk {
                access_key,
                secret_key,
            } => {
                headers.push(("Host".into(), self.host()));
                let signed = sign::sign(
                    access_key,
                    secret_key,
                    method.as_str(),
                    &path,
                    query,
                    &headers,
                    &body,
                    chrono::Utc::now(),
                );
                (signed.headers, signed.query)
            }
            Credentials::Token(token) => {
                headers.push(("X-Auth-Token".into(), token.clone()));
                let query = sign::canonical_query(
                    &query
                        .iter()
                        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                        .collect::<Vec<_>>()
                        .join("&"),
                );
                (headers, query)
            }
        };
        let mut url = self.endpoint.clone();
        url.set_path(&path);
        url.set_query((!query.is_empty()).then_some(query.as_str()));
        let mut request = self.http.request(method, url);
        for (name, value) in headers {
            if !name.eq_ignore_ascii_case("host") {
                request = request.header(name, value);
            }
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        let response = request.send().await?;
        Ok(RawResponse {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await?.to_vec(),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let raw = self.send_v2(method, segments, query, body, &[]).await?;
        decode(raw)
    }

    pub async fn batch_install_agent(
        &self,
        desktop_ids: &[String],
    ) -> Result<w::JobIdResponse, ClientError> {
        let body = w::BatchInstallAgentRequest {
            desktop_ids: desktop_ids.to_vec(),
            max_concurrency: None,
            max_errors: None,
        };
        self.call(Method::POST, &["desktops", "agents"], &[], Some(&body))
            .await
    }

    /// BatchInstallAgent with the rollout-control extension (`max_concurrency`,
    /// `max_errors`: a count such as `"10"` or a percentage such as `"10%"`).
    pub async fn batch_install_agent_limited(
        &self,
        desktop_ids: &[String],
        max_concurrency: Option<&str>,
        max_errors: Option<&str>,
    ) -> Result<w::JobIdResponse, ClientError> {
        let body = w::BatchInstallAgentRequest {
            desktop_ids: desktop_ids.to_vec(),
            max_concurrency: max_concurrency.map(str::to_owned),
            max_errors: max_errors.map(str::to_owned),
        };
        self.call(Method::POST, &["desktops", "agents"], &[], Some(&body))
            .await
    }

    pub async fn list_agents(
        &self,
        query: &[(String, String)],
    ) -> Result<w::ListAgentsResponse, ClientError> {
        self.call(Method::GET, &["desktops", "agents"], query, None::<&()>)
            .await
    }

    pub async fn show_job(&self, job_id: &str) -> Result<w::JobInfo, ClientError> {
        self.call(Method::GET, &["workspace-jobs", job_id], &[], None::<&()>)
            .await
    }

    pub async fn job_action(
        &self,
        job_id: &str,
        op_type: &str,
    ) -> Result<w::JobIdResponse, ClientError> {
        let body = w::JobActionRequest {
            op_type: op_type.to_string(),
        };
        self.call(
            Method::POST,
            &["workspace-jobs", job_id, "actions"],
            &[],
            Some(&body),
        )
        .await
    }

    pub async fn list_sub_jobs(
        &self,
        query: &[(String, String)],
    ) -> Result<w::ListSubJobsResponse, ClientError> {
        self.call(Method::GET, &["workspace-sub-jobs"], query, None::<&()>)
            .await
    }

    pub async fn delete_sub_jobs(
        &self,
        request: &w::DeleteSubJobsRequest,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(
            Method::POST,
            &["workspace-sub-jobs", "batch-delete"],
            &[],
            Some(request),
        )
        .await
    }

    pub async fn list_desktops(
        &self,
        query: &[(String, String)],
    ) -> Result<w::ListDesktopsResponse, ClientError> {
        self.call(Method::GET, &["desktops"], query, None::<&()>)
            .await
    }

    pub async fn list_desktops_detail(
        &self,
        query: &[(String, String)],
    ) -> Result<w::ListDesktopsDetailResponse, ClientError> {
        self.call(Method::GET, &["desktops", "detail"], query, None::<&()>)
            .await
    }

    pub async fn show_desktop(
        &self,
        desktop_id: &str,
    ) -> Result<w::ShowDesktopResponse, ClientError> {
        self.call(Method::GET, &["desktops", desktop_id], &[], None::<&()>)
            .await
    }

    /// The server's base URL, as this client was given it.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// ListAgentPackages (extension): the published versions of the monitoring agent.
    pub async fn list_agent_packages(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, &["agent-packages"], &[], None::<&()>)
            .await
    }

    /// CreateEnrollmentToken (extension): a token bound to `desktop_id` if given, valid
    /// `ttl_hours` (the server's default if not).
    pub async fn create_enrollment_token(
        &self,
        desktop_id: Option<&str>,
        ttl_hours: Option<u64>,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "desktop_id": desktop_id, "ttl_hours": ttl_hours });
        self.call(Method::POST, &["enrollment-tokens"], &[], Some(&body))
            .await
    }

    /// RevokeEnrollmentToken (extension).
    pub async fn revoke_enrollment_token(
        &self,
        token: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "enrollment_token": token });
        self.call(
            Method::POST,
            &["enrollment-tokens", "revoke"],
            &[],
            Some(&body),
        )
        .await
    }
}

/// A Cloud Eye request, built apart from sending so that its wire form can be checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CesRequest {
    pub method: Method,
    /// `v3` (agent management) or `V1.0` (metric data).
    pub version: &'static str,
    pub segments: Vec<&'static str>,
    pub query: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
}

/// Filters of ListAgentStatus (`POST /v3/{project_id}/agent-status/batch-query`).
#[derive(Debug, Clone, Default)]
pub struct AgentStatusQuery {
    pub instance_ids: Vec<String>,
    pub uniagent_status: Option<String>,
    pub extension_status: Option<String>,
}

/// Filters of ListAgentInvocations (`GET /v3/{project_id}/agent-invocations`).
#[derive(Debug, Clone, Default)]
pub struct InvocationQuery {
    pub instance_id: Option<String>,
    pub invocation_id: Option<String>,
    pub invocation_type: Option<String>,
    pub offset: Option<u64>,
    pub limit: Option<u32>,
}

/// ShowMetricData (`GET /V1.0/{project_id}/metric-data`) of one desktop's metric.
#[derive(Debug, Clone)]
pub struct MetricQuery {
    pub namespace: String,
    pub metric_name: String,
    /// `dim.0` .. `dim.3` as (name, value); the first is the instance.
    pub dimensions: Vec<(String, String)>,
    pub filter: String,
    pub period: u32,
    pub from_ms: i64,
    pub to_ms: i64,
}

impl CesRequest {
    /// ListAgentStatus of the `telescope` extension.
    pub fn agent_status(q: &AgentStatusQuery) -> Self {
        let mut body = serde_json::json!({
            "instance_ids": q.instance_ids,
            "extension_name": "telescope",
        });
        if let Some(s) = &q.uniagent_status {
            body["uniagent_status"] = s.clone().into();
        }
        if let Some(s) = &q.extension_status {
            body["extension_status"] = s.clone().into();
        }
        CesRequest {
            method: Method::POST,
            version: "v3",
            segments: vec!["agent-status", "batch-query"],
            query: vec![],
            body: Some(body),
        }
    }

    /// BatchCreateAgentInvocations of `invocation_type` (INSTALL, UPDATE, ROLLBACK,
    /// UNINSTALL) on instances, at `version` when given.
    pub fn create_invocations(
        invocation_type: &str,
        instance_ids: &[String],
        version: Option<&str>,
    ) -> Self {
        let mut body = serde_json::json!({
            "instance_ids": instance_ids,
            "invocation_type": invocation_type,
            "invocation_target": "telescope",
        });
        if let Some(v) = version {
            body["version"] = v.into();
        }
        CesRequest {
            method: Method::POST,
            version: "v3",
            segments: vec!["agent-invocations", "batch-create"],
            query: vec![],
            body: Some(body),
        }
    }

    /// BatchCreateAgentInvocations of `invocation_type` RETRY or ROLLBACK on existing
    /// invocations (the body the SDK sends: no target, no instances).
    pub fn act_on_invocations(invocation_type: &str, invocation_ids: &[String]) -> Self {
        CesRequest {
            method: Method::POST,
            version: "v3",
            segments: vec!["agent-invocations", "batch-create"],
            query: vec![],
            body: Some(serde_json::json!({
                "invocation_type": invocation_type,
                "invocation_ids": invocation_ids,
            })),
        }
    }

    /// ListAgentInvocations; only the filters given are sent (as the SDK does).
    pub fn list_invocations(q: &InvocationQuery) -> Self {
        let mut query = vec![];
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                query.push((k.to_string(), v));
            }
        };
        push("instance_id", q.instance_id.clone());
        push("invocation_id", q.invocation_id.clone());
        push("invocation_type", q.invocation_type.clone());
        push("limit", q.limit.map(|l| l.to_string()));
        push("offset", q.offset.map(|o| o.to_string()));
        CesRequest {
            method: Method::GET,
            version: "v3",
            segments: vec!["agent-invocations"],
            query,
            body: None,
        }
    }

    /// ShowMetricData; `dim.N` is `name,value` (the comma is encoded on the wire).
    pub fn metric_data(q: &MetricQuery) -> Self {
        let mut query = vec![
            ("namespace".to_string(), q.namespace.clone()),
            ("metric_name".to_string(), q.metric_name.clone()),
            ("filter".to_string(), q.filter.clone()),
            ("period".to_string(), q.period.to_string()),
            ("from".to_string(), q.from_ms.to_string()),
            ("to".to_string(), q.to_ms.to_string()),
        ];
        for (i, (name, value)) in q.dimensions.iter().enumerate() {
            query.push((format!("dim.{i}"), format!("{name},{value}")));
        }
        CesRequest {
            method: Method::GET,
            version: "V1.0",
            segments: vec!["metric-data"],
            query,
            body: None,
        }
    }
}

impl Client {
    /// Sends a Cloud Eye request; the answer's JSON, or its error.
    pub async fn ces(&self, request: &CesRequest) -> Result<serde_json::Value, ClientError> {
        let body = request
            .body
            .as_ref()
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let raw = self
            .send_under(
                request.version,
                request.method.clone(),
                &request.segments,
                &request.query,
                body,
                &[],
            )
            .await?;
        decode(raw)
    }
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn decode<T: DeserializeOwned>(raw: RawResponse) -> Result<T, ClientError> {
    if raw.status >= 400 {
        return Err(ClientError::Api {
            status: raw.status,
            request_id: raw
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: serde_json::from_slice(&raw.body).ok().map(Box::new),
            text: String::from_utf8_lossy(&raw.body).into_owned(),
        });
    }
    serde_json::from_slice(&raw.body)
        .map_err(|e| ClientError::Decode(format!("{e}: {}", String::from_utf8_lossy(&raw.body))))
}

/// `POST /v3/auth/tokens` with a password and project scope; returns the token.
pub async fn create_token(
    endpoint: &str,
    domain_name: &str,
    user_name: &str,
    password: &str,
    project_id: &str,
) -> Result<(String, iam::TokenResponse), ClientError> {
    create_token_with(
        &ClientOptions::default(),
        endpoint,
        domain_name,
        user_name,
        password,
        project_id,
    )
    .await
}

/// [`create_token`] with the given transport options.
pub async fn create_token_with(
    options: &ClientOptions,
    endpoint: &str,
    domain_name: &str,
    user_name: &str,
    password: &str,
    project_id: &str,
) -> Result<(String, iam::TokenResponse), ClientError> {
    let body = iam::TokenRequest {
        auth: iam::Auth {
            identity: iam::Identity {
                methods: vec!["password".into()],
                password: iam::PasswordMethod {
                    user: iam::PasswordUser {
                        domain: iam::NameOrId {
                            id: None,
                            name: Some(domain_name.into()),
                        },
                        name: user_name.into(),
                        password: password.into(),
                    },
                },
            },
            scope: Some(iam::Scope {
                project: Some(iam::NameOrId {
                    id: Some(project_id.into()),
                    name: None,
                }),
                domain: None,
            }),
        },
    };
    let url = Url::parse(endpoint)
        .and_then(|u| u.join("/v3/auth/tokens"))
        .map_err(|e| ClientError::Endpoint(e.to_string()))?;
    options.check_endpoint(&url)?;
    let response = options.http_client()?.post(url).json(&body).send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?.to_vec();
    let token = headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed: iam::TokenResponse = decode(RawResponse {
        status,
        headers,
        body: bytes,
    })?;
    let token = token.ok_or_else(|| ClientError::Decode("no X-Subject-Token header".into()))?;
    Ok((token, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_unless_loopback_or_allowed() {
        let options = ClientOptions::default();
        for ok in [
            "https://fleet.example",
            "http://127.0.0.1:8087",
            "http://127.3.2.1",
            "http://[::1]:1",
            "http://localhost:8087",
        ] {
            assert!(
                options.check_endpoint(&Url::parse(ok).unwrap()).is_ok(),
                "{ok}"
            );
        }
        for refused in [
            "http://fleet.example",
            "http://10.0.0.1:8087",
            "http://[::2]",
        ] {
            let url = Url::parse(refused).unwrap();
            assert!(
                matches!(
                    options.check_endpoint(&url),
                    Err(ClientError::InsecureHttp(_))
                ),
                "{refused}"
            );
            let allowed = ClientOptions {
                allow_insecure_http: true,
                ..ClientOptions::default()
            };
            assert!(allowed.check_endpoint(&url).is_ok(), "{refused}");
        }
        assert!(
            options
                .check_endpoint(&Url::parse("ftp://h").unwrap())
                .is_err()
        );
        assert!(Client::new("http://fleet.example", "p", Credentials::Token("t".into())).is_err());
    }

    #[test]
    fn only_429_and_503_are_retried_after_retry_after_or_a_doubling_backoff() {
        let policy = RetryPolicy {
            retries: 3,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
        };
        assert_eq!(policy.wait(0, 500, None), None);
        assert_eq!(policy.wait(0, 400, Some("1")), None);
        assert_eq!(policy.wait(0, 429, None), Some(Duration::from_millis(500)));
        assert_eq!(policy.wait(1, 503, None), Some(Duration::from_secs(1)));
        assert_eq!(policy.wait(2, 503, None), Some(Duration::from_secs(2)));
        assert_eq!(policy.wait(3, 503, None), None, "only 3 retries");
        assert_eq!(
            policy.wait(0, 429, Some(" 7 ")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            policy.wait(0, 429, Some("3600")),
            Some(Duration::from_secs(30)),
            "capped"
        );
        assert_eq!(
            policy.wait(0, 503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::from_millis(500)),
            "a date falls back to the backoff"
        );
    }

    #[test]
    fn ces_requests_are_built_as_the_sdk_sends_them() {
        let r =
            CesRequest::create_invocations("UPDATE", &["d-1".into(), "d-2".into()], Some("1.2.3"));
        assert_eq!((r.method.as_str(), r.version), ("POST", "v3"));
        assert_eq!(r.segments, ["agent-invocations", "batch-create"]);
        assert_eq!(
            r.body.unwrap(),
            serde_json::json!({"instance_ids": ["d-1", "d-2"], "invocation_type": "UPDATE",
                "invocation_target": "telescope", "version": "1.2.3"})
        );
        let r = CesRequest::create_invocations("UNINSTALL", &["d-1".into()], None);
        assert!(r.body.unwrap().get("version").is_none());

        let r = CesRequest::act_on_invocations("ROLLBACK", &["inv-1".into()]);
        assert_eq!(r.segments, ["agent-invocations", "batch-create"]);
        assert_eq!(
            r.body.unwrap(),
            serde_json::json!({"invocation_type": "ROLLBACK", "invocation_ids": ["inv-1"]})
        );

        let r = CesRequest::list_invocations(&InvocationQuery::default());
        assert_eq!((r.method.as_str(), r.version), ("GET", "v3"));
        assert!(r.query.is_empty(), "no defaults sent");
        let r = CesRequest::list_invocations(&InvocationQuery {
            instance_id: Some("d-1".into()),
            invocation_type: Some("ROLLBACK".into()),
            limit: Some(10),
            ..InvocationQuery::default()
        });
        assert_eq!(
            r.query,
            [
                ("instance_id".to_string(), "d-1".to_string()),
                ("invocation_type".into(), "ROLLBACK".into()),
                ("limit".into(), "10".into())
            ]
        );

        let r = CesRequest::agent_status(&AgentStatusQuery {
            instance_ids: vec!["d-1".into()],
            extension_status: Some("running".into()),
            ..AgentStatusQuery::default()
        });
        assert_eq!(r.segments, ["agent-status", "batch-query"]);
        assert_eq!(
            r.body.unwrap(),
            serde_json::json!({"instance_ids": ["d-1"], "extension_name": "telescope",
                "extension_status": "running"})
        );

        let r = CesRequest::metric_data(&MetricQuery {
            namespace: "AGT.ECS".into(),
            metric_name: "cpu_usage".into(),
            dimensions: vec![("instance_id".into(), "d-1".into())],
            filter: "average".into(),
            period: 300,
            from_ms: 1_000,
            to_ms: 2_000,
        });
        assert_eq!((r.method.as_str(), r.version), ("GET", "V1.0"));
        assert_eq!(r.segments, ["metric-data"]);
        let q: std::collections::HashMap<_, _> = r.query.into_iter().collect();
        assert_eq!(q["dim.0"], "instance_id,d-1");
        assert_eq!(q["period"], "300");
        assert_eq!(q["from"], "1000");
        assert_eq!(q["to"], "2000");
        assert_eq!(q["filter"], "average");
        assert_eq!(q["namespace"], "AGT.ECS");
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let options = ClientOptions {
            ca_pem: Some(b"not a certificate".to_vec()),
            ..ClientOptions::default()
        };
        assert!(matches!(options.http_client(), Err(ClientError::Ca(_))));
    }
}
