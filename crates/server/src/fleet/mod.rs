//! The fleet channel: the OpAMP server at `/v1/opamp` (WebSocket and plain HTTP), the
//! package downloads at `/v1/packages/{id}`, the registry of connected desktops and the
//! scheduler that hands them work. See `docs/fleet-protocol.md`.
//!
//! Concurrency: each WebSocket connection is one task that owns its [`Session`]; the
//! scheduler never touches a session, it only sends it a [`Push::Wake`] through the
//! registry, and the session claims its work itself. HTTP agents keep their session in a
//! map between polls and get work in the answer to their next poll.
//!
//! A request meets, in this order: [`auth`] (headers only; nothing unauthenticated is
//! read, decoded or admitted), [`admission`] (a permit owned for the connection's life),
//! then its transport (`ws`, `http`) and the [`session`]. Every `/v1` error is an
//! [`ApiError`](crate::error::ApiError) with the JSON error body. Shutdown reaches the
//! WebSocket sessions through [`Fleet::shutdown`]; [`Fleet::close_sessions`] waits for
//! their goodbyes.

pub mod admission;
pub mod auth;
mod download;
mod http;
pub mod packages;
pub mod presence;
pub mod reports;
pub mod session;
mod ws;

use crate::AppState;
use crate::auth::secrets::{random_alphanumeric, sha256_hex};
use crate::engine::Worker;
use async_trait::async_trait;
use axum::http::{HeaderMap, header};
use deskfleet_core::fleet::{DesktopIdentity, EnrollmentGrant};
use deskfleet_core::ids::DesktopId;
use deskfleet_core::store::{Signal, StoreError, Subscription};
use deskfleet_proto::opamp as op;
use session::Session;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The custom capability under which guests forward the monitoring agent's metrics.
pub const MONITOR_CAPABILITY: &str = "io.deskfleet.monitor";
/// Largest OpAMP message accepted.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// How long shutdown waits, beyond `fleet.drain_secs`, for the WebSocket sessions to
/// say goodbye and end.
pub const SESSION_GOODBYE: Duration = Duration::from_secs(5);

/// Who opened a fleet connection.
#[derive(Debug, Clone)]
pub enum FleetAuth {
    /// An enrollment token: a desktop that has no identity yet.
    Enrollment {
        grant: EnrollmentGrant,
        /// SHA-256 of the token, to spend a desktop-bound one when it claims.
        token_sha256: String,
    },
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
    /// Three heartbeat intervals: an HTTP agent silent for longer is gone.
    stale_after: Duration,
}

/// An HTTP agent between polls: (SHA-256 of its bearer secret, its instance uid).
type HttpSessionKey = (String, Vec<u8>);

/// An HTTP agent's session between polls, with its admission permit.
struct HttpSession {
    session: Session,
    at: Instant,
    _permit: OwnedSemaphorePermit,
}

/// The HTTP agents between polls. A session whose key changed in an answer (a new
/// credential, a new instance uid) stays reachable under the key the agent used until
/// it uses another: an agent that cannot adopt what it was given keeps its session
/// instead of starting (and enrolling) a new one on every poll.
#[derive(Default)]
struct HttpSessions {
    by_key: HashMap<HttpSessionKey, HttpSession>,
    aliases: HashMap<HttpSessionKey, HttpSessionKey>,
}

impl HttpSessions {
    /// Takes the session `key` reaches, directly or through an alias.
    fn take(&mut self, key: &HttpSessionKey) -> Option<HttpSession> {
        if let Some(session) = self.by_key.remove(key) {
            return Some(session);
        }
        let target = self.aliases.remove(key)?;
        self.by_key.remove(&target)
    }

    /// Keeps `session` under `key`, reachable from `used` too when that differs.
    fn put(&mut self, used: HttpSessionKey, key: HttpSessionKey, session: HttpSession) {
        if used != key {
            self.aliases.insert(used, key.clone());
        }
        self.by_key.insert(key, session);
    }

    /// Forgets the agents silent for `idle`; their permits go back.
    fn prune(&mut self, idle: Duration) {
        self.by_key.retain(|_, s| {
            let keep = s.at.elapsed() < idle;
            if !keep {
                s.session.close_detached();
            }
            keep
        });
        let by_key = &self.by_key;
        self.aliases.retain(|_, target| by_key.contains_key(target));
    }
}

/// The fleet's in-process state: who is connected here, HTTP sessions between polls,
/// the package cache, admission, and the shutdown every WebSocket session selects on.
#[derive(Default)]
pub struct Fleet {
    conn_ids: AtomicU64,
    live: Mutex<HashMap<DesktopId, Registered>>,
    http_sessions: tokio::sync::Mutex<HttpSessions>,
    pub packages: packages::PackageCache,
    /// Wakes the scheduler at once (a job was created here).
    pub wake: Notify,
    pub admission: admission::Admission,
    /// Cancelled when the server shuts down: every WebSocket session then sends a Close
    /// (1001 going away) and ends.
    pub shutdown: CancellationToken,
    /// The WebSocket sessions, so that shutdown can wait for their goodbyes.
    sessions: TaskTracker,
    /// Last-seen times not written yet.
    pub last_seen: presence::LastSeen,
    /// Sub-job reports on their way to the store, written together.
    pub reports: reports::ReportQueue,
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

    fn register(
        &self,
        desktop: &DesktopId,
        conn_id: u64,
        push: Option<mpsc::Sender<Push>>,
        stale_after: Duration,
    ) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.insert(
            desktop.clone(),
            Registered {
                conn_id,
                push,
                last_seen: Instant::now(),
                stale_after,
            },
        );
        metrics::gauge!("deskfleet_fleet_connected_desktops").set(live.len() as f64);
    }

    fn unregister(&self, desktop: &DesktopId, conn_id: u64) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.get(desktop).is_some_and(|r| r.conn_id == conn_id) {
            live.remove(desktop);
        }
        metrics::gauge!("deskfleet_fleet_connected_desktops").set(live.len() as f64);
    }

    /// Is `desktop` connected to this replica (a WebSocket, or an HTTP agent polling)?
    pub fn is_connected(&self, desktop: &DesktopId) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(desktop).is_some_and(Registered::is_fresh)
    }

    /// Shutdown of the fleet channel (a drain): no new work is claimed and new upgrades
    /// are refused; every WebSocket session without an install in flight closes at once
    /// (1001, so that its guest reconnects to another replica), and one with an install
    /// in flight closes once the guest has reported its end, or after `drain` at most.
    /// Waits for them (and [`SESSION_GOODBYE`] more), then records the HTTP agents'
    /// desktops offline.
    pub async fn close_sessions(&self, drain: Duration) {
        self.shutdown.cancel();
        self.sessions.close();
        if tokio::time::timeout(drain + SESSION_GOODBYE, self.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.sessions.len(),
                "fleet sessions still open after the drain timeout"
            );
        }
        // HTTP agents between polls are gone with this server too: their desktops are
        // recorded offline now rather than three heartbeat intervals from now.
        let polled = std::mem::take(&mut *self.http_sessions.lock().await);
        for (_, mut held) in polled.by_key {
            held.session.close().await;
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
}

impl Registered {
    /// A WebSocket registration is live while its connection is (a silent one is closed
    /// after three heartbeat intervals); an HTTP one for three intervals after its last
    /// poll.
    fn is_fresh(&self) -> bool {
        self.push.is_some() || self.last_seen.elapsed() < self.stale_after
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ws::opamp_ws, http::opamp_http))
        .routes(routes!(download::download_package))
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

impl Fleet {
    fn touch(&self, desktop: &DesktopId) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = live.get_mut(desktop) {
            r.last_seen = Instant::now();
        }
    }
}

/// Hands waiting work to the desktops connected here: on its interval, and at once when
/// a job is created on this replica.
pub struct Scheduler {
    state: AppState,
    /// Work queued on another replica (PostgreSQL), if the store can tell.
    signal: tokio::sync::Mutex<Option<Box<dyn Subscription>>>,
}

impl Scheduler {
    pub fn new(state: AppState) -> Self {
        let signal = state.store.subscribe(Signal::Work);
        Self {
            state,
            signal: tokio::sync::Mutex::new(signal),
        }
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
        let mut signal = self.signal.lock().await;
        tokio::select! {
            _ = tokio::time::timeout(interval, self.state.fleet.wake.notified()) => {}
            () = crate::engine::raised(signal.as_mut()) => {}
        }
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.step().await
    }
}
