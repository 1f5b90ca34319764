//! The fleet channel: the OpAMP server at `/v1/opamp` (WebSocket and plain HTTP), the
//! package downloads at `/v1/packages/{id}`, the registry of connected desktops and the
//! scheduler that hands them work. See `docs/fleet-protocol.md`.
//!
//! Concurrency: each WebSocket connection is one task that owns its [`Session`]; the
//! scheduler never touches a session, it only sends it a [`Push::Wake`] through the
//! registry, and the session claims its work itself. HTTP agents keep their session in a
//! map between polls and get work in the answer to their next poll.

pub mod packages;
pub mod session;

use crate::AppState;
use crate::auth::secrets::{random_alphanumeric, sha256_hex};
use crate::engine::Worker;
use crate::error::ApiError;
use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deskfleet_core::fleet::DesktopIdentity;
use deskfleet_core::ids::{DesktopId, ProjectId};
use deskfleet_core::store::StoreError;
use deskfleet_proto::error::ErrorCode;
use deskfleet_proto::opamp::{self as op, AgentToServer, decode_ws_frame, encode_ws_frame};
use prost::Message as _;
use session::Session;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// The custom capability under which guests forward the monitoring agent's metrics.
pub const MONITOR_CAPABILITY: &str = "io.deskfleet.monitor";
/// Largest OpAMP message accepted.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Who opened a fleet connection.
#[derive(Debug, Clone)]
pub enum FleetAuth {
    /// An enrollment token of this project: a desktop that has no identity yet.
    Enrollment(ProjectId),
    /// A desktop credential.
    Desktop(Box<DesktopIdentity>),
}

/// What the scheduler can tell a connection.
#[derive(Debug, Clone, Copy)]
pub enum Push {
    /// Work may be waiting for this desktop: claim it.
    Wake,
}

struct Registered {
    conn_id: u64,
    push: Option<mpsc::Sender<Push>>,
    last_seen: Instant,
}

/// An HTTP agent between polls: (SHA-256 of its bearer secret, its instance uid).
type HttpSessionKey = (String, Vec<u8>);

/// The fleet's in-process state: who is connected here, HTTP sessions between polls,
/// the package cache, and the admission limits.
#[derive(Default)]
pub struct Fleet {
    conn_ids: AtomicU64,
    live: Mutex<HashMap<DesktopId, Registered>>,
    http_sessions: tokio::sync::Mutex<HashMap<HttpSessionKey, (Session, Instant)>>,
    pub packages: packages::PackageCache,
    /// Wakes the scheduler at once (a job was created here).
    pub wake: Notify,
    connections: AtomicUsize,
    admissions: Mutex<Option<(Instant, u32)>>,
}

/// A new desktop credential and its SHA-256.
pub fn new_credential() -> (String, String) {
    let credential = format!("DFD1{}", random_alphanumeric(48));
    let hash = sha256_hex(&credential);
    (credential, hash)
}

impl Fleet {
    fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn register(&self, desktop: &DesktopId, conn_id: u64, push: Option<mpsc::Sender<Push>>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.insert(
            desktop.clone(),
            Registered {
                conn_id,
                push,
                last_seen: Instant::now(),
            },
        );
    }

    fn unregister(&self, desktop: &DesktopId, conn_id: u64) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.get(desktop).is_some_and(|r| r.conn_id == conn_id) {
            live.remove(desktop);
        }
    }

    /// Is `desktop` connected here through another connection than `conn_id`?
    fn desktop_is_live(&self, desktop: &DesktopId, conn_id: u64) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(desktop)
            .is_some_and(|r| r.conn_id != conn_id && r.is_fresh())
    }

    /// How many desktops are connected to this replica.
    pub fn connected(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Tells every connected desktop among `desktops` to look for work.
    fn wake_desktops(&self, desktops: &[DesktopId]) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        desktops
            .iter()
            .filter_map(|d| live.get(d)?.push.as_ref())
            .filter(|tx| tx.try_send(Push::Wake).is_ok())
            .count()
    }

    /// Admission control for new connections: a cap on open connections and on new ones
    /// per second. `Err(retry_after_secs)` when full.
    fn admit(&self, max_connections: usize, per_second: u32) -> Result<(), u64> {
        if self.connections.load(Ordering::Relaxed) >= max_connections {
            return Err(5);
        }
        let mut window = self.admissions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match window.as_mut() {
            Some((start, count)) if now.duration_since(*start) < Duration::from_secs(1) => {
                if *count >= per_second {
                    return Err(1);
                }
                *count += 1;
            }
            _ => *window = Some((now, 1)),
        }
        Ok(())
    }
}

impl Registered {
    /// A WebSocket registration is live while its connection is; an HTTP one for three
    /// heartbeats after its last poll.
    fn is_fresh(&self) -> bool {
        self.push.is_some() || self.last_seen.elapsed() < Duration::from_secs(90)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/opamp", get(opamp_ws).post(opamp_http))
        .route("/v1/packages/{package_id}", get(download_package))
}

/// The fleet's own error answers: plain status with `Retry-After` where it helps.
fn refuse(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response {
    let mut response = (status, message.to_string()).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<FleetAuth, Response> {
    let unauthorized = |why: &str| refuse(StatusCode::UNAUTHORIZED, why, None);
    let Some(secret) = bearer(headers) else {
        return Err(unauthorized(
            "send Authorization: Bearer <enrollment token or desktop credential>",
        ));
    };
    let hash = sha256_hex(secret);
    let internal = |e: StoreError| ApiError::from(e).into_response();
    if secret.starts_with("DFD1") {
        match state
            .store
            .find_desktop_by_credential(&hash)
            .await
            .map_err(internal)?
        {
            Some(identity) => Ok(FleetAuth::Desktop(Box::new(identity))),
            None => Err(unauthorized("unknown desktop credential")),
        }
    } else {
        match state
            .store
            .find_enrollment_token(&hash, state.clock.now())
            .await
            .map_err(internal)?
        {
            Some(project) => Ok(FleetAuth::Enrollment(project)),
            None => Err(unauthorized("unknown or expired enrollment token")),
        }
    }
}

/// The base URL guests reach this server at, for download links.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.settings.fleet.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    // The scheme the guest reached us with: downloads use the same TLS as the socket.
    let scheme = if state.settings.tls.enabled {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

#[tracing::instrument(skip_all)]
async fn opamp_ws(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let fleet = &state.fleet;
    if let Err(retry) = fleet.admit(
        state.settings.fleet.max_connections,
        state.settings.fleet.max_new_connections_per_sec,
    ) {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections; retry later",
            Some(retry),
        );
    }
    let auth = match authenticate(&state, &parts.headers).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let base = base_url(&state, &parts.headers);
    // Small buffers: tens of thousands of mostly idle connections must fit in memory.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_socket(state, auth, base, socket))
}

/// One WebSocket connection: answer every message, and deliver work when woken.
async fn serve_socket(state: AppState, auth: FleetAuth, base: String, mut socket: WebSocket) {
    state.fleet.connections.fetch_add(1, Ordering::Relaxed);
    let (push_tx, mut push_rx) = mpsc::channel(4);
    let mut session = Session::new(state.clone(), auth, base, Some(push_tx));
    loop {
        let reply = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(data))) => match decode_ws_frame::<AgentToServer>(&data) {
                    Ok(msg) => {
                        let disconnect = msg.agent_disconnect.is_some();
                        let reply = session.handle(msg).await;
                        if disconnect {
                            if let Ok(reply) = reply {
                                let _ = socket.send(Message::Binary(encode_ws_frame(&reply).into())).await;
                            }
                            break;
                        }
                        reply
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "undecodable OpAMP frame");
                        Ok(bad_request(&e.to_string()))
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue, // text, ping, pong: nothing to answer
            },
            Some(Push::Wake) = push_rx.recv() => {
                let mut reply = op::ServerToAgent { instance_uid: session_uid(&session), ..Default::default() };
                match session.deliver(&mut reply).await {
                    Ok(()) if reply.packages_available.is_some() => Ok(reply),
                    Ok(()) => continue,
                    Err(e) => Err(e),
                }
            }
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "fleet session failed; the guest will reconnect");
                unavailable(5)
            }
        };
        if socket
            .send(Message::Binary(encode_ws_frame(&reply).into()))
            .await
            .is_err()
        {
            break;
        }
    }
    session.close();
    state.fleet.connections.fetch_sub(1, Ordering::Relaxed);
}

fn session_uid(session: &Session) -> Vec<u8> {
    session.instance_uid().to_vec()
}

fn bad_request(message: &str) -> op::ServerToAgent {
    op::ServerToAgent {
        error_response: Some(op::ServerErrorResponse {
            r#type: op::ServerErrorResponseType::BadRequest as i32,
            error_message: message.to_string(),
            details: None,
        }),
        ..Default::default()
    }
}

fn unavailable(retry_secs: u64) -> op::ServerToAgent {
    op::ServerToAgent {
        error_response: Some(op::ServerErrorResponse {
            r#type: op::ServerErrorResponseType::Unavailable as i32,
            error_message: "the server could not process the message; retry later".into(),
            details: Some(op::server_error_response::Details::RetryInfo(
                op::RetryInfo {
                    retry_after_nanoseconds: retry_secs * 1_000_000_000,
                },
            )),
        }),
        ..Default::default()
    }
}

fn protobuf(reply: &op::ServerToAgent) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(op::CONTENT_TYPE),
        )],
        reply.encode_to_vec(),
    )
        .into_response()
}

/// Plain-HTTP OpAMP: one `AgentToServer` in, one `ServerToAgent` out. The session lives
/// in a map between polls, keyed by the bearer secret and the instance uid.
#[tracing::instrument(skip_all)]
async fn opamp_http(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if body.len() > MAX_MESSAGE_BYTES {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "OpAMP message too large",
            None,
        );
    }
    let body = if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"))
    {
        let mut out = Vec::new();
        let mut limited = std::io::Read::take(
            flate2::read::GzDecoder::new(&body[..]),
            MAX_MESSAGE_BYTES as u64 + 1,
        );
        if std::io::Read::read_to_end(&mut limited, &mut out).is_err()
            || out.len() > MAX_MESSAGE_BYTES
        {
            return protobuf(&bad_request("the gzip body could not be decoded"));
        }
        Bytes::from(out)
    } else {
        body
    };
    let msg = match AgentToServer::decode(body) {
        Ok(msg) => msg,
        Err(e) => return protobuf(&bad_request(&format!("not an AgentToServer message: {e}"))),
    };
    let Some(secret) = bearer(&headers).map(sha256_hex) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <enrollment token or desktop credential>",
            None,
        );
    };
    let key = (secret, msg.instance_uid.clone());
    let existing = {
        let mut sessions = state.fleet.http_sessions.lock().await;
        // Forget agents that stopped polling.
        let idle = Duration::from_secs(3 * state.settings.fleet.heartbeat_secs.max(1));
        sessions.retain(|_, (s, at)| {
            let keep = at.elapsed() < idle;
            if !keep {
                s.close();
            }
            keep
        });
        sessions.remove(&key)
    };
    let mut session = match existing {
        Some((session, _)) => session,
        None => {
            let fleet = &state.settings.fleet;
            if let Err(retry) = state
                .fleet
                .admit(fleet.max_connections, fleet.max_new_connections_per_sec)
            {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections; retry later",
                    Some(retry),
                );
            }
            let auth = match authenticate(&state, &headers).await {
                Ok(auth) => auth,
                Err(response) => return response,
            };
            Session::new(state.clone(), auth, base_url(&state, &headers), None)
        }
    };
    let disconnect = msg.agent_disconnect.is_some();
    let reply = match session.handle(msg).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(error = %e, "fleet session failed");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server could not process the message; retry later",
                Some(5),
            );
        }
    };
    if let Some(desktop) = session.desktop_id() {
        state.fleet.touch(desktop);
    }
    if !disconnect {
        // A new credential changes the key the agent polls with.
        let key = match reply.connection_settings.as_ref().and_then(offered_bearer) {
            Some(credential) => (sha256_hex(&credential), reply_uid(&reply, &key.1)),
            None => (key.0, reply_uid(&reply, &key.1)),
        };
        state
            .fleet
            .http_sessions
            .lock()
            .await
            .insert(key, (session, Instant::now()));
    }
    protobuf(&reply)
}

fn reply_uid(reply: &op::ServerToAgent, current: &[u8]) -> Vec<u8> {
    reply
        .agent_identification
        .as_ref()
        .map(|a| a.new_instance_uid.clone())
        .unwrap_or_else(|| current.to_vec())
}

fn offered_bearer(offers: &op::ConnectionSettingsOffers) -> Option<String> {
    offers
        .opamp
        .as_ref()?
        .headers
        .as_ref()?
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case("authorization"))?
        .value
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

impl Fleet {
    fn touch(&self, desktop: &DesktopId) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = live.get_mut(desktop) {
            r.last_seen = Instant::now();
        }
    }
}

/// Serves a package to an enrolled desktop.
#[tracing::instrument(skip_all, fields(package_id = %package_id))]
async fn download_package(
    State(state): State<AppState>,
    Path(package_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match authenticate(&state, &headers).await {
        Ok(FleetAuth::Desktop(_)) => {}
        Ok(FleetAuth::Enrollment(_)) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "enroll first: packages are served to desktop credentials",
                None,
            );
        }
        Err(response) => return response,
    }
    match state.fleet.packages.blob(&state, &package_id).await {
        Ok(Some((meta, bytes))) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/gzip"),
                ),
                (
                    header::HeaderName::from_static("x-content-sha256"),
                    HeaderValue::from_str(&meta.sha256).unwrap_or(HeaderValue::from_static("")),
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => ApiError::new(ErrorCode::ResourceNotFound)
            .with_detail(format!("package {package_id} does not exist"))
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Hands waiting work to the desktops connected here: on its interval, and at once when
/// a job is created on this replica.
pub struct Scheduler {
    state: AppState,
}

impl Scheduler {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// One pass: wake the connected desktops that have waiting work. Returns how many.
    pub async fn step(&self) -> Result<u64, StoreError> {
        if self.state.fleet.connected() == 0 {
            return Ok(0);
        }
        let waiting = self.state.store.desktops_with_waiting_work(100_000).await?;
        Ok(self.state.fleet.wake_desktops(&waiting) as u64)
    }
}

#[async_trait]
impl Worker for Scheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.state.settings.fleet.schedule_interval_ms.max(10))
    }

    async fn wait(&self, interval: Duration) {
        let _ = tokio::time::timeout(interval, self.state.fleet.wake.notified()).await;
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.step().await
    }
}
