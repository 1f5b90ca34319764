//! A typed client for the deskfleet API, used by the `deskfleet` CLI and by the tests.
//!
//! It signs every `/v2` request exactly as the official SDKs do (`SDK-HMAC-SHA256` with
//! `X-Project-Id`, via [`deskfleet_proto::sign`]) or sends an `X-Auth-Token`. It talks to
//! the server over the wire only and must not depend on server, store or core crates.

use deskfleet_proto::error::ErrorBody;
use deskfleet_proto::iam;
use deskfleet_proto::sign;
use deskfleet_proto::workspace as w;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    project_id: String,
    credentials: Credentials,
    user_agent: String,
}

impl Client {
    pub fn new(
        endpoint: &str,
        project_id: &str,
        credentials: Credentials,
    ) -> Result<Self, ClientError> {
        let endpoint = Url::parse(endpoint).map_err(|e| ClientError::Endpoint(e.to_string()))?;
        Ok(Self {
            http: reqwest::Client::new(),
            endpoint,
            project_id: project_id.to_string(),
            credentials,
            user_agent: format!("deskfleet-client/{}", env!("CARGO_PKG_VERSION")),
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
        let mut path = format!("/v2/{}", utf8_percent_encode(&self.project_id, SEGMENT));
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
    let response = reqwest::Client::new().post(url).json(&body).send().await?;
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
