//! The guest against a fake OpAMP server (axum, in this process): enrollment, reconnect
//! with the credential, a real install of a signed package with a stand-in monitor,
//! refusal of unverified packages, `Retry-After`, and a restart that does not enroll
//! again; and how the guest trusts the server: the CA pinned by the enrollment token's
//! fingerprint and kept, `--ca-cert`, refusal of a server whose chain does not match,
//! refusal of plain http. The fake server speaks https with its own CA, as the real one
//! does. The end-to-end tests against the real server live elsewhere.

#![cfg(unix)]

mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deskfleet_guest::Config;
use deskfleet_guest::backoff::BackoffPolicy;
use deskfleet_guest::host::HostFacts;
use deskfleet_guest::testing::{self, SignedPackage};
use deskfleet_guest::tls::ServerTrust;
use deskfleet_proto::opamp::{
    AgentToServer, ConnectionSettingsOffers, ConnectionSettingsStatuses, Header, Headers,
    OpAmpConnectionSettings, PackageStatusEnum, ServerToAgent, decode_ws_frame, encode_ws_frame,
};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "DFE1-test-enrollment";
const CREDENTIAL: &str = "DFD1-test-credential";
const WAIT: Duration = Duration::from_secs(20);
/// The watch window of the tests' guests.
const WATCH: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum Seen {
    Connected { authorization: String },
    Message(Box<AgentToServer>),
}

#[derive(Default)]
struct Shared {
    /// Sender of the newest connection's outgoing messages.
    to_guest: Mutex<Option<mpsc::UnboundedSender<ServerToAgent>>>,
    from_guest: Mutex<Option<mpsc::UnboundedSender<Seen>>>,
    package: Mutex<Vec<u8>>,
    /// `Authorization` of every package download.
    downloads: Mutex<Vec<String>>,
    /// Upgrades still to refuse with 503 + `Retry-After: 1`.
    refuse: AtomicUsize,
    /// Package downloads still to answer with 503.
    failing_downloads: AtomicUsize,
    attempts: Mutex<Vec<Instant>>,
    /// TLS handshakes the client broke off (it refused the server's certificate).
    failed_handshakes: Arc<AtomicUsize>,
}

struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// `None`: plain http.
    pki: Option<pki::Pki>,
}

impl FakeServer {
    /// An https server whose leaf is valid for 127.0.0.1 and localhost.
    async fn start() -> FakeServer {
        FakeServer::start_with(Some(pki::Pki::new(&["127.0.0.1", "localhost"]))).await
    }

    async fn start_with(pki: Option<pki::Pki>) -> FakeServer {
        let (tx, seen) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        *shared.from_guest.lock().unwrap() = Some(tx);
        let app = Router::new()
            .route("/v1/opamp", get(opamp))
            .route("/packages/monitor.tar.gz", get(package))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(pki::serve(
            listener,
            pki.as_ref().map(|p| p.acceptor.clone()),
            app,
            shared.failed_handshakes.clone(),
        ));
        FakeServer {
            addr,
            shared,
            seen,
            pki,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn pki(&self) -> &pki::Pki {
        self.pki.as_ref().expect("an https server")
    }

    /// The enrollment token with this server's CA fingerprint, as the admin command
    /// prints it.
    fn token(&self) -> String {
        match &self.pki {
            Some(pki) => format!("{TOKEN}.{}", pki.fingerprint()),
            None => TOKEN.to_owned(),
        }
    }

    fn send(&self, msg: ServerToAgent) {
        let to_guest = self.shared.to_guest.lock().unwrap();
        to_guest.as_ref().expect("a connection").send(msg).unwrap();
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("the guest to say something in time")
            .unwrap()
    }

    async fn expect_connect(&mut self) -> String {
        match self.next().await {
            Seen::Connected { authorization } => authorization,
            Seen::Message(msg) => panic!("expected a new connection, got {msg:?}"),
        }
    }

    async fn expect_message(&mut self) -> AgentToServer {
        match self.next().await {
            Seen::Message(msg) => *msg,
            Seen::Connected { .. } => panic!("expected a message, got a new connection"),
        }
    }

    /// Messages until `done` says so (within [`WAIT`]); all of them.
    async fn until(&mut self, mut done: impl FnMut(&AgentToServer) -> bool) -> Vec<AgentToServer> {
        let deadline = Instant::now() + WAIT;
        let mut all = Vec::new();
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.expect_message()).await {
                Ok(msg) => msg,
                Err(_) => panic!(
                    "the awaited message did not come; the last of {} were {:#?}",
                    all.len(),
                    &all[all.len().saturating_sub(3)..]
                ),
            };
            let stop = done(&msg);
            all.push(msg);
            if stop {
                return all;
            }
        }
    }

    fn serve(&self, bytes: &[u8]) {
        *self.shared.package.lock().unwrap() = bytes.to_vec();
    }

    fn offer(&self, uid: &[u8], package: &SignedPackage, version: &str) {
        let url = format!("{}/packages/monitor.tar.gz", self.url());
        self.send(testing::offer_message(uid, package, version, &url));
    }
}

async fn opamp(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    shared.attempts.lock().unwrap().push(Instant::now());
    if shared
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "busy",
        )
            .into_response();
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    upgrade.on_upgrade(move |socket| connection(shared, authorization, socket))
}

async fn connection(shared: Arc<Shared>, authorization: String, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    *shared.to_guest.lock().unwrap() = Some(tx);
    let seen = shared.from_guest.lock().unwrap().clone().unwrap();
    let _ = seen.send(Seen::Connected { authorization });
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(data))) => {
                    let msg: AgentToServer = decode_ws_frame(&data).expect("a valid OpAMP frame");
                    let bye = msg.agent_disconnect.is_some();
                    let _ = seen.send(Seen::Message(Box::new(msg)));
                    if bye {
                        // As the real server: done with this connection.
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            Some(out) = rx.recv() => {
                if socket.send(Message::Binary(encode_ws_frame(&out).into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn package(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    shared.downloads.lock().unwrap().push(authorization);
    let failing = &shared.failing_downloads;
    if failing
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    shared.package.lock().unwrap().clone().into_response()
}

fn config(server: &FakeServer, dir: &Path, key_seed: u8) -> Config {
    let trusted = testing::signing_key(key_seed).verifying_key();
    let mut config = Config::new(
        &server.url(),
        Some(SecretString::from(server.token())),
        trusted,
        dir.join("state"),
    )
    .unwrap();
    config.allow_insecure_http = server.pki.is_none();
    let quick = BackoffPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        jitter: 0.5,
    };
    config.reconnect = quick;
    config.monitor_restart = quick;
    config.monitor_interval = Duration::from_millis(1000);
    config.heartbeat = Duration::from_millis(400);
    config.monitor_stop_timeout = Duration::from_secs(2);
    config.watch_window = WATCH;
    config.host = Some(HostFacts {
        host_name: "wks-test-7".into(),
        os_type: "linux".into(),
        arch: std::env::consts::ARCH.into(),
        ips: vec!["10.1.2.3".parse().unwrap()],
    });
    config
}

fn spawn_guest(config: Config) -> (CancellationToken, JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { deskfleet_guest::run(config, shutdown).await.unwrap() }
    });
    (shutdown, task)
}

fn monitor_status(msg: &AgentToServer) -> Option<&deskfleet_proto::opamp::PackageStatus> {
    msg.package_statuses
        .as_ref()?
        .packages
        .get("deskfleet-monitor")
}

fn monitor_health(msg: &AgentToServer) -> Option<&deskfleet_proto::opamp::ComponentHealth> {
    msg.health
        .as_ref()?
        .component_health_map
        .get("deskfleet-monitor")
}

fn credential_reply(uid: &[u8]) -> ServerToAgent {
    ServerToAgent {
        instance_uid: uid.to_vec(),
        connection_settings: Some(ConnectionSettingsOffers {
            hash: vec![7; 16],
            opamp: Some(OpAmpConnectionSettings {
                headers: Some(Headers {
                    headers: vec![Header {
                        key: "Authorization".into(),
                        value: format!("Bearer {CREDENTIAL}"),
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// PIDs of processes running an executable under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&needle)
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// Waits until no process runs from under `dir`: a stopped monitor's process group is
/// killed, and a killed process leaves `/proc` only once the kernel has run it.
async fn nothing_runs_under(dir: &Path) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = processes_under(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind under {}: {left:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("state/state.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn enrolls_installs_supervises_and_restarts_without_enrolling_again() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let package = testing::signed_monitor_package("1.2.3", &testing::signing_key(9));
    server.serve(&package.archive);
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));

    // Enrollment: the token, then the full state.
    assert_eq!(server.expect_connect().await, format!("Bearer {TOKEN}"));
    let first = server.expect_message().await;
    let uid = first.instance_uid.clone();
    assert_eq!(uid.len(), 16);
    let desc = first
        .agent_description
        .as_ref()
        .expect("a description first");
    assert_eq!(desc.get_str("host.name"), Some("wks-test-7"));
    assert_eq!(
        desc.get_str("service.instance.id"),
        Some(hex::encode(&uid).as_str())
    );
    assert_eq!(
        first.custom_capabilities.unwrap().capabilities,
        ["io.deskfleet.monitor"]
    );
    let mut last_seq = first.sequence_num;

    // The credential: persisted, then a goodbye and a new connection that uses it.
    server.send(credential_reply(&uid));
    let bye = server.expect_message().await;
    assert!(bye.agent_disconnect.is_some(), "{bye:?}");
    assert_eq!(
        server.expect_connect().await,
        format!("Bearer {CREDENTIAL}")
    );
    let state = state_json(dir.path());
    assert_eq!(state["credential"], CREDENTIAL);
    assert_eq!(state["instance_uid"], hex::encode(&uid));
    let mode = std::fs::metadata(dir.path().join("state/state.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let second = server.expect_message().await;
    assert!(
        second.agent_description.is_some(),
        "full state on the new connection"
    );
    let applied = second.connection_settings_status.unwrap();
    assert_eq!(applied.status(), ConnectionSettingsStatuses::Applied);
    assert_eq!(applied.last_connection_settings_hash, vec![7; 16]);
    assert_eq!(bye.sequence_num, last_seq + 1);
    assert_eq!(second.sequence_num, bye.sequence_num + 1);
    last_seq = second.sequence_num;

    // The install, step by step, up to INSTALLED once the watch window passed.
    server.offer(&uid, &package, "1.2.3");
    let messages = server
        .until(|m| monitor_status(m).is_some_and(|s| s.status() == PackageStatusEnum::Installed))
        .await;
    assert!(
        messages
            .iter()
            .any(|m| monitor_health(m).is_some_and(|h| h.healthy)),
        "healthy before it is confirmed"
    );
    let mut steps: Vec<(PackageStatusEnum, Option<f64>)> = messages
        .iter()
        .filter_map(monitor_status)
        .map(|s| {
            (
                s.status(),
                s.download_details.as_ref().map(|d| d.download_percent),
            )
        })
        .collect();
    // Unpacking and watching are both INSTALLING.
    steps.dedup();
    assert_eq!(
        steps.first(),
        Some(&(PackageStatusEnum::Downloading, Some(0.0)))
    );
    let tail: Vec<_> = steps.iter().rev().take(3).rev().cloned().collect();
    assert_eq!(
        tail,
        [
            (PackageStatusEnum::Downloading, Some(100.0)),
            (PackageStatusEnum::Installing, None),
            (PackageStatusEnum::Installed, None),
        ]
    );
    let installed = messages.iter().rev().find_map(monitor_status).unwrap();
    assert_eq!(installed.agent_has_version, "1.2.3");
    assert_eq!(installed.server_offered_version, "1.2.3");
    let health = messages.iter().rev().find_map(monitor_health).unwrap();
    assert_eq!(health.status, "running deskfleet-monitor/1.2.3");
    assert!(health.start_time_unix_nano > 0);
    for msg in &messages {
        assert_eq!(msg.sequence_num, last_seq + 1, "no gap in sequence numbers");
        last_seq = msg.sequence_num;
    }
    assert_eq!(
        *server.shared.downloads.lock().unwrap(),
        [format!("Bearer {CREDENTIAL}")]
    );
    let state = state_json(dir.path());
    assert_eq!(state["package"]["version"], "1.2.3");
    assert_eq!(
        state["package"]["sha256"],
        hex::encode(package.content_hash)
    );
    let install_dir = dir.path().join("state/agents/deskfleet-monitor/1.2.3");
    assert_eq!(
        PathBuf::from(state["package"]["path"].as_str().unwrap()),
        install_dir.join("deskfleet-monitor")
    );

    // Metrics are forwarded, and heartbeats fill the silence between them.
    let more = server.until(|m| m.custom_message.is_some()).await;
    let metrics = more.last().unwrap().custom_message.as_ref().unwrap();
    assert_eq!(
        (metrics.capability.as_str(), metrics.r#type.as_str()),
        ("io.deskfleet.monitor", "metrics")
    );
    let sample: serde_json::Value = serde_json::from_slice(&metrics.data).unwrap();
    assert_eq!(sample["type"], "metrics");
    server
        .until(|m| {
            m.custom_message.is_none()
                && m.health.is_none()
                && m.package_statuses.is_none()
                && m.agent_description.is_none()
        })
        .await;

    // The same offer again: no download, just INSTALLED and healthy.
    server.offer(&uid, &package, "1.2.3");
    let again = server.until(|m| monitor_status(m).is_some()).await;
    assert_eq!(
        monitor_status(again.last().unwrap()).unwrap().status(),
        PackageStatusEnum::Installed
    );
    server
        .until(|m| monitor_health(m).is_some_and(|h| h.healthy))
        .await;
    assert_eq!(server.shared.downloads.lock().unwrap().len(), 1);

    // Shutdown: a goodbye, the monitor stopped, run returns.
    assert!(
        !processes_under(&install_dir).is_empty(),
        "the monitor runs"
    );
    shutdown.cancel();
    server.until(|m| m.agent_disconnect.is_some()).await;
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
    nothing_runs_under(&install_dir).await;

    // A restart: the credential, not the token; the monitor is started at once and the
    // first message already reports it installed.
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    assert_eq!(
        server.expect_connect().await,
        format!("Bearer {CREDENTIAL}")
    );
    let first = server.expect_message().await;
    assert_eq!(first.instance_uid, uid);
    let status = monitor_status(&first).unwrap();
    assert_eq!(status.status(), PackageStatusEnum::Installed);
    assert_eq!(status.agent_has_version, "1.2.3");
    let health = match monitor_health(&first) {
        Some(h) if h.healthy => h.clone(),
        _ => monitor_health(
            server
                .until(|m| monitor_health(m).is_some_and(|h| h.healthy))
                .await
                .last()
                .unwrap(),
        )
        .unwrap()
        .clone(),
    };
    assert_eq!(health.status, "running deskfleet-monitor/1.2.3");
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
    assert_eq!(server.shared.downloads.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unverified_packages_are_refused_and_never_unpacked() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    server.expect_connect().await;
    let uid = server.expect_message().await.instance_uid;

    // Signed by a key the guest does not trust.
    let foreign = testing::signed_monitor_package("1.0.0", &testing::signing_key(66));
    server.serve(&foreign.archive);
    server.offer(&uid, &foreign, "1.0.0");
    let failed = server
        .until(|m| {
            monitor_status(m).is_some_and(|s| s.status() == PackageStatusEnum::InstallFailed)
        })
        .await;
    let status = monitor_status(failed.last().unwrap()).unwrap();
    assert!(
        status.error_message.starts_with("bad_signature: "),
        "{}",
        status.error_message
    );
    assert_eq!(status.agent_has_version, "");

    // Properly signed, but the bytes served differ from the bytes announced.
    let genuine = testing::signed_monitor_package("1.0.1", &testing::signing_key(9));
    let mut tampered = genuine.archive.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    server.serve(&tampered);
    server.offer(&uid, &genuine, "1.0.1");
    let failed = server
        .until(|m| {
            monitor_status(m).is_some_and(|s| s.status() == PackageStatusEnum::InstallFailed)
        })
        .await;
    let status = monitor_status(failed.last().unwrap()).unwrap();
    assert!(
        status.error_message.starts_with("checksum_mismatch: "),
        "{}",
        status.error_message
    );
    assert_eq!(status.server_offered_version, "1.0.1");

    // Nothing was unpacked, nothing is left of the downloads, nothing runs.
    let root = dir.path().join("state/agents");
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the install root: {left:?}");
    assert!(processes_under(&root).is_empty());
    assert!(state_json(dir.path())["package"].is_null());

    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

#[tokio::test]
async fn retry_after_on_the_upgrade_is_honoured() {
    let mut server = FakeServer::start().await;
    server.shared.refuse.store(1, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    server.expect_connect().await;
    let attempts = server.shared.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2);
    let waited = attempts[1] - attempts[0];
    // The backoff alone would have been ~50 ms.
    assert!(
        waited >= Duration::from_secs(1),
        "reconnected after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "reconnected after {waited:?}"
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

/// An installer that trusts `server`'s CA and the test signing key, installing into `root`.
fn installer_of(server: &FakeServer, root: &Path) -> deskfleet_guest::install::Installer {
    deskfleet_guest::install::Installer {
        client: ServerTrust::Pinned(server.pki().ca_der_fingerprint())
            .client()
            .unwrap()
            .http_client("test")
            .unwrap(),
        install_root: root.to_path_buf(),
        trusted_key: testing::signing_key(9).verifying_key(),
    }
}

#[tokio::test]
async fn download_errors_are_download_failed_and_leave_nothing() {
    use deskfleet_guest::ReasonCode;
    use deskfleet_guest::install::{InstallStep, MONITOR_PACKAGE, PackageOffer};

    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("agents");
    let installer = installer_of(&server, &root);
    let package = testing::signed_monitor_package("1.0.0", &testing::signing_key(9));
    let base = reqwest::Url::parse(&server.url()).unwrap();
    for url in ["/no/such/package", "http://127.0.0.1:9/closed-port"] {
        let available = testing::package_available(&package, "1.0.0", url);
        let offer = PackageOffer::parse(MONITOR_PACKAGE, &available, &base).unwrap();
        let mut steps = Vec::new();
        let error = installer
            .install(&offer, Some(CREDENTIAL), |step| steps.push(step))
            .await
            .unwrap_err();
        assert_eq!(error.code, ReasonCode::DownloadFailed, "{url}: {error}");
        assert!(!steps.contains(&InstallStep::Installing), "{steps:?}");
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{url}: left {left:?}");
    }
}

#[tokio::test]
async fn a_download_that_fails_for_a_passing_reason_is_tried_again() {
    use deskfleet_guest::ReasonCode;
    use deskfleet_guest::install::{MONITOR_PACKAGE, PackageOffer};

    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let installer = installer_of(&server, &dir.path().join("agents"));
    let package = testing::signed_monitor_package("1.0.0", &testing::signing_key(9));
    *server.shared.package.lock().unwrap() = package.archive.clone();
    let base = reqwest::Url::parse(&server.url()).unwrap();
    let url = format!("{}/packages/monitor.tar.gz", server.url());
    let available = testing::package_available(&package, "1.0.0", &url);
    let offer = PackageOffer::parse(MONITOR_PACKAGE, &available, &base).unwrap();

    // One 503 (a replica going away behind the balancer): the second try installs.
    server.shared.failing_downloads.store(1, Ordering::SeqCst);
    let installed = installer.install(&offer, Some(CREDENTIAL), |_| {}).await;
    assert!(installed.is_ok(), "{installed:?}");
    assert_eq!(server.shared.downloads.lock().unwrap().len(), 2);

    // A server that keeps failing fails the install after three tries.
    server.shared.downloads.lock().unwrap().clear();
    server.shared.failing_downloads.store(10, Ordering::SeqCst);
    let error = installer
        .install(&offer, Some(CREDENTIAL), |_| {})
        .await
        .unwrap_err();
    assert_eq!(error.code, ReasonCode::DownloadFailed, "{error}");
    assert!(error.reason.contains("503"), "{error}");
    assert_eq!(server.shared.downloads.lock().unwrap().len(), 3);
}

/// The CA file the guest keeps in its state directory.
fn kept_ca(dir: &Path) -> PathBuf {
    dir.join("state").join(deskfleet_guest::tls::SERVER_CA_FILE)
}

/// Waits until the fake server has seen `n` broken-off TLS handshakes.
async fn refused_handshakes(server: &FakeServer, n: usize) {
    let deadline = Instant::now() + WAIT;
    while server.shared.failed_handshakes.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the guest never tried to connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_ca_pinned_by_the_token_is_kept_and_trusted_on_the_next_start() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    // Only the secret goes out as the bearer, never the fingerprint.
    assert_eq!(server.expect_connect().await, format!("Bearer {TOKEN}"));
    let hello = server.expect_message().await;
    server.send(credential_reply(&hello.instance_uid));
    server.until(|m| m.agent_disconnect.is_some()).await;
    assert_eq!(
        server.expect_connect().await,
        format!("Bearer {CREDENTIAL}")
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();

    let kept = kept_ca(dir.path());
    let certs = deskfleet_guest::tls::read_certificates(&kept).unwrap();
    assert_eq!(certs, vec![server.pki().ca_der.clone()]);
    let mode = std::fs::metadata(&kept).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // Restarted with neither token nor fingerprint: the kept CA is the trust anchor.
    let mut again = config(&server, dir.path(), 9);
    again.enrollment_token = None;
    again.ca_fingerprint = None;
    let (shutdown, guest) = spawn_guest(again);
    assert_eq!(
        server.expect_connect().await,
        format!("Bearer {CREDENTIAL}")
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
    assert_eq!(server.shared.failed_handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_server_whose_chain_lacks_the_pinned_ca_is_refused_before_the_token_is_sent() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&server, dir.path(), 9);
    // The token of another server: its CA is not in this server's chain.
    let other = pki::Pki::new(&["127.0.0.1"]);
    config.ca_fingerprint = Some(other.ca_der_fingerprint());
    let (shutdown, guest) = spawn_guest(config);
    refused_handshakes(&server, 2).await;
    assert!(
        server.seen.try_recv().is_err(),
        "the guest must not talk to a server it cannot verify"
    );
    assert!(server.shared.attempts.lock().unwrap().is_empty());
    assert!(!kept_ca(dir.path()).exists());
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
    assert!(state_json(dir.path())["credential"].is_null());
}

#[tokio::test]
async fn a_leaf_for_another_name_is_refused_even_under_the_pinned_ca() {
    // The right CA, but a leaf that is not valid for 127.0.0.1.
    let mut server = FakeServer::start_with(Some(pki::Pki::new(&["fleet.example.test"]))).await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    refused_handshakes(&server, 2).await;
    assert!(server.seen.try_recv().is_err());
    assert!(!kept_ca(dir.path()).exists());
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_ca_file_is_trusted_and_another_ca_file_is_not() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();

    // The wrong CA file wins over the token's (right) fingerprint: refused.
    let other = pki::Pki::new(&["127.0.0.1"]);
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&wrong, &other.ca_pem).unwrap();
    let mut config_wrong = config(&server, dir.path(), 9);
    config_wrong.ca_cert = Some(wrong);
    let (shutdown, guest) = spawn_guest(config_wrong);
    refused_handshakes(&server, 1).await;
    assert!(server.seen.try_recv().is_err());
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();

    // The server's CA file, and a token without a fingerprint.
    let right = dir.path().join("ca.pem");
    std::fs::write(&right, &server.pki().ca_pem).unwrap();
    let mut config_right = config(&server, dir.path(), 9);
    config_right.ca_fingerprint = None;
    config_right.ca_cert = Some(right);
    let (shutdown, guest) = spawn_guest(config_right);
    assert_eq!(server.expect_connect().await, format!("Bearer {TOKEN}"));
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
    // Nothing was pinned: the CA came from the operator's file.
    assert!(!kept_ca(dir.path()).exists());
}

#[tokio::test]
async fn plain_http_is_refused_unless_allowed() {
    let mut server = FakeServer::start_with(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut refused = config(&server, dir.path(), 9);
    refused.allow_insecure_http = false;
    let error = deskfleet_guest::run(refused, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("--allow-insecure-http"),
        "{error}"
    );
    assert!(server.seen.try_recv().is_err());

    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    assert_eq!(server.expect_connect().await, format!("Bearer {TOKEN}"));
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------
// Upgrade, watch, rollback, uninstall
// ---------------------------------------------------------------------------------------

/// A stand-in monitor that exits with status 3 at once.
const EXITS_AT_ONCE: &str = "#!/bin/sh\necho 'about to fail' >&2\nexit 3\n";

fn signed(version: &str, script: &str) -> SignedPackage {
    testing::sign(
        testing::monitor_archive(version, script.as_bytes()),
        &testing::signing_key(9),
    )
}

fn is_status(m: &AgentToServer, status: PackageStatusEnum, version: &str) -> bool {
    monitor_status(m).is_some_and(|s| s.status() == status && s.server_offered_version == version)
}

fn agents_dir(dir: &Path) -> PathBuf {
    dir.join("state/agents/deskfleet-monitor")
}

fn versions_on_disk(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(agents_dir(dir))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until the monitor processes are exactly those under `version`'s directory.
async fn runs_only(dir: &Path, version: &str) {
    let root = agents_dir(dir);
    let deadline = Instant::now() + WAIT;
    loop {
        let all = processes_under(&root);
        let of_version = processes_under(&root.join(version));
        if !of_version.is_empty() && all.len() == of_version.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected only {version} to run; running: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A guest connected with its credential; its instance uid.
async fn enrolled(server: &mut FakeServer) -> Vec<u8> {
    server.expect_connect().await;
    let uid = server.expect_message().await.instance_uid;
    server.send(credential_reply(&uid));
    server.until(|m| m.agent_disconnect.is_some()).await;
    server.expect_connect().await;
    server.expect_message().await;
    uid
}

/// Offers `package` as `version` and waits for its final status: INSTALLED or
/// INSTALL_FAILED; every message on the way.
async fn offer_until_settled(
    server: &mut FakeServer,
    uid: &[u8],
    package: &SignedPackage,
    version: &str,
) -> Vec<AgentToServer> {
    server.serve(&package.archive);
    server.offer(uid, package, version);
    server
        .until(|m| {
            is_status(m, PackageStatusEnum::Installed, version)
                || is_status(m, PackageStatusEnum::InstallFailed, version)
        })
        .await
}

fn settled(messages: &[AgentToServer]) -> deskfleet_proto::opamp::PackageStatus {
    messages
        .iter()
        .rev()
        .find_map(monitor_status)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn an_upgrade_is_watched_then_confirmed_and_exactly_one_previous_version_is_kept() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    let uid = enrolled(&mut server).await;

    let v1 = testing::signed_monitor_package("1.0.0", &testing::signing_key(9));
    let done = offer_until_settled(&mut server, &uid, &v1, "1.0.0").await;
    assert_eq!(settled(&done).status(), PackageStatusEnum::Installed);
    runs_only(dir.path(), "1.0.0").await;

    // 2.0.0 beside 1.0.0: INSTALLING (watching) with 1.0.0 as what the guest has, and
    // INSTALLED 2.0.0 only once the window passed.
    let v2 = testing::signed_monitor_package("2.0.0", &testing::signing_key(9));
    let offered = Instant::now();
    let done = offer_until_settled(&mut server, &uid, &v2, "2.0.0").await;
    let confirmed_after = offered.elapsed();
    let last = settled(&done);
    assert_eq!(last.status(), PackageStatusEnum::Installed, "{last:?}");
    assert_eq!(last.agent_has_version, "2.0.0");
    assert_eq!(last.server_offered_hash, v2.content_hash.to_vec());
    assert!(
        confirmed_after >= WATCH,
        "confirmed after {confirmed_after:?}, before the watch window passed"
    );
    let watching = done
        .iter()
        .filter_map(monitor_status)
        .rfind(|s| s.status() == PackageStatusEnum::Installing)
        .expect("INSTALLING while watching");
    assert_eq!(watching.agent_has_version, "1.0.0");
    assert_eq!(watching.server_offered_version, "2.0.0");
    // Healthy at 2.0.0 was seen before the confirmation.
    assert!(done.iter().any(|m| {
        monitor_health(m)
            .is_some_and(|h| h.healthy && h.status == "running deskfleet-monitor/2.0.0")
    }));
    runs_only(dir.path(), "2.0.0").await;
    let state = state_json(dir.path());
    assert_eq!(state["package"]["version"], "2.0.0");
    assert_eq!(state["previous"]["version"], "1.0.0");
    assert!(state["watching"].is_null());
    assert_eq!(versions_on_disk(dir.path()), ["1.0.0", "2.0.0"]);

    // The next successful upgrade deletes 1.0.0 and keeps 2.0.0.
    let v3 = testing::signed_monitor_package("3.0.0", &testing::signing_key(9));
    let done = offer_until_settled(&mut server, &uid, &v3, "3.0.0").await;
    assert_eq!(settled(&done).status(), PackageStatusEnum::Installed);
    runs_only(dir.path(), "3.0.0").await;
    let deadline = Instant::now() + WAIT;
    while versions_on_disk(dir.path()) != ["2.0.0", "3.0.0"] {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            versions_on_disk(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state_json(dir.path())["previous"]["version"], "2.0.0");

    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

#[tokio::test]
async fn broken_upgrades_roll_back_by_themselves_within_seconds_with_their_reason() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&server, dir.path(), 9);
    // Long enough that "at once" and "at the window's end" are told apart.
    let window = Duration::from_secs(4);
    config.watch_window = window;
    let (shutdown, guest) = spawn_guest(config);
    let uid = enrolled(&mut server).await;
    let v1 = testing::signed_monitor_package("1.0.0", &testing::signing_key(9));
    offer_until_settled(&mut server, &uid, &v1, "1.0.0").await;
    runs_only(dir.path(), "1.0.0").await;

    // The agent exits at start.
    let offered = Instant::now();
    let done =
        offer_until_settled(&mut server, &uid, &signed("2.0.0", EXITS_AT_ONCE), "2.0.0").await;
    let failed_after = offered.elapsed();
    let status = settled(&done);
    assert_eq!(status.status(), PackageStatusEnum::InstallFailed);
    assert!(
        status.error_message.starts_with("agent-exited: ")
            && status.error_message.ends_with("; rolled back to 1.0.0"),
        "{}",
        status.error_message
    );
    assert!(
        status.error_message.contains("exit status: 3"),
        "{}",
        status.error_message
    );
    assert_eq!(status.agent_has_version, "1.0.0");
    assert!(failed_after < window, "rolled back after {failed_after:?}");
    // The old agent runs again and says so.
    runs_only(dir.path(), "1.0.0").await;
    server
        .until(|m| {
            monitor_health(m)
                .is_some_and(|h| h.healthy && h.status == "running deskfleet-monitor/1.0.0")
        })
        .await;
    let state = state_json(dir.path());
    assert_eq!(state["package"]["version"], "1.0.0");
    assert!(state["previous"].is_null());
    assert!(state["watching"].is_null());
    // Nothing was deleted.
    assert_eq!(versions_on_disk(dir.path()), ["1.0.0", "2.0.0"]);

    // The agent reports another version than its package's.
    let offered = Instant::now();
    let liar = signed("3.0.0", &testing::fake_monitor_script("1.0.0"));
    let done = offer_until_settled(&mut server, &uid, &liar, "3.0.0").await;
    let failed_after = offered.elapsed();
    let status = settled(&done);
    assert!(
        status.error_message.starts_with("version-mismatch: ")
            && status.error_message.contains("reports version 1.0.0")
            && status.error_message.ends_with("; rolled back to 1.0.0"),
        "{}",
        status.error_message
    );
    assert!(failed_after < window, "rolled back after {failed_after:?}");
    runs_only(dir.path(), "1.0.0").await;

    // The agent never reports: failed at the end of the window, not before.
    let offered = Instant::now();
    let silent = signed("4.0.0", testing::silent_monitor_script());
    let done = offer_until_settled(&mut server, &uid, &silent, "4.0.0").await;
    let failed_after = offered.elapsed();
    let status = settled(&done);
    assert!(
        status.error_message.starts_with("agent_not_started: ")
            && status.error_message.ends_with("; rolled back to 1.0.0"),
        "{}",
        status.error_message
    );
    assert!(
        failed_after >= window && failed_after < window + Duration::from_secs(4),
        "failed after {failed_after:?}"
    );
    runs_only(dir.path(), "1.0.0").await;

    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_first_install_that_fails_its_watch_leaves_nothing_running() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    let uid = enrolled(&mut server).await;
    let done =
        offer_until_settled(&mut server, &uid, &signed("1.0.0", EXITS_AT_ONCE), "1.0.0").await;
    let status = settled(&done);
    assert!(
        status.error_message.starts_with("agent-exited: ")
            && status.error_message.contains("no previous version"),
        "{}",
        status.error_message
    );
    assert_eq!(status.agent_has_version, "");
    assert!(state_json(dir.path())["package"].is_null());
    let msg = server.until(|m| m.health.is_some()).await;
    let health = msg.last().unwrap().health.as_ref().unwrap();
    assert!(
        !health
            .component_health_map
            .contains_key("deskfleet-monitor"),
        "{health:?}"
    );
    nothing_runs_under(&agents_dir(dir.path())).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_kept_previous_version_is_switched_back_to_without_a_download() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    let uid = enrolled(&mut server).await;
    let v1 = testing::signed_monitor_package("1.0.0", &testing::signing_key(9));
    let v2 = testing::signed_monitor_package("2.0.0", &testing::signing_key(9));
    offer_until_settled(&mut server, &uid, &v1, "1.0.0").await;
    offer_until_settled(&mut server, &uid, &v2, "2.0.0").await;
    runs_only(dir.path(), "2.0.0").await;
    assert_eq!(server.shared.downloads.lock().unwrap().len(), 2);

    // The rollback: offered 1.0.0 again, whatever the server would serve.
    server.serve(b"not a package");
    server.offer(&uid, &v1, "1.0.0");
    let done = server
        .until(|m| is_status(m, PackageStatusEnum::Installed, "1.0.0"))
        .await;
    assert!(
        done.iter()
            .filter_map(monitor_status)
            .all(|s| s.status() != PackageStatusEnum::Downloading),
        "nothing downloaded"
    );
    assert_eq!(server.shared.downloads.lock().unwrap().len(), 2);
    runs_only(dir.path(), "1.0.0").await;
    let state = state_json(dir.path());
    assert_eq!(state["package"]["version"], "1.0.0");
    assert_eq!(state["previous"]["version"], "2.0.0");
    assert_eq!(versions_on_disk(dir.path()), ["1.0.0", "2.0.0"]);

    // The kept version, but other bytes under its name: downloaded like any install.
    let other = testing::sign(
        testing::monitor_archive(
            "2.0.0",
            testing::fake_monitor_script("2.0.0")
                .replace("1.5", "2.5")
                .as_bytes(),
        ),
        &testing::signing_key(9),
    );
    let done = offer_until_settled(&mut server, &uid, &other, "2.0.0").await;
    assert_eq!(settled(&done).status(), PackageStatusEnum::Installed);
    assert_eq!(server.shared.downloads.lock().unwrap().len(), 3);

    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

#[tokio::test]
async fn uninstall_stops_the_agent_removes_every_version_and_keeps_the_connection() {
    use deskfleet_proto::opamp::{EMPTY_PACKAGES_HASH, PackagesAvailable};
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    let uid = enrolled(&mut server).await;
    let v1 = testing::signed_monitor_package("1.0.0", &testing::signing_key(9));
    let v2 = testing::signed_monitor_package("2.0.0", &testing::signing_key(9));
    offer_until_settled(&mut server, &uid, &v1, "1.0.0").await;
    offer_until_settled(&mut server, &uid, &v2, "2.0.0").await;
    runs_only(dir.path(), "2.0.0").await;

    let uninstall = ServerToAgent {
        instance_uid: uid.clone(),
        packages_available: Some(PackagesAvailable {
            packages: Default::default(),
            all_packages_hash: EMPTY_PACKAGES_HASH.to_vec(),
        }),
        ..Default::default()
    };
    server.send(uninstall.clone());
    let done = server
        .until(|m| {
            m.package_statuses.as_ref().is_some_and(|p| {
                p.server_provided_all_packages_hash == EMPTY_PACKAGES_HASH
                    && !p.packages.contains_key("deskfleet-monitor")
            })
        })
        .await;
    let statuses = done.last().unwrap().package_statuses.as_ref().unwrap();
    assert_eq!(statuses.error_message, "");
    nothing_runs_under(&dir.path().join("state/agents")).await;
    assert!(
        !agents_dir(dir.path()).exists(),
        "{:?}",
        versions_on_disk(dir.path())
    );
    let state = state_json(dir.path());
    assert!(state["package"].is_null() && state["previous"].is_null());
    // No monitor component any more, and the same connection goes on.
    let health = server.until(|m| m.health.is_some()).await;
    let health = health.last().unwrap().health.as_ref().unwrap();
    assert!(
        !health
            .component_health_map
            .contains_key("deskfleet-monitor")
    );
    assert!(health.healthy);
    server
        .until(|m| m.package_statuses.is_none() && m.health.is_none())
        .await;

    // Asked again (a reconnect would do that): the same answer.
    server.send(uninstall);
    server
        .until(|m| {
            m.package_statuses
                .as_ref()
                .is_some_and(|p| !p.packages.contains_key("deskfleet-monitor"))
        })
        .await;

    // And it can be installed again from scratch.
    let done = offer_until_settled(&mut server, &uid, &v1, "1.0.0").await;
    assert_eq!(settled(&done).status(), PackageStatusEnum::Installed);
    assert_eq!(settled(&done).agent_has_version, "1.0.0");
    runs_only(dir.path(), "1.0.0").await;

    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_guest_restarted_while_watching_watches_again_and_confirms() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server, dir.path(), 9);
    cfg.watch_window = Duration::from_secs(3);
    let (shutdown, guest) = spawn_guest(cfg.clone());
    let uid = enrolled(&mut server).await;
    let v1 = testing::signed_monitor_package("1.0.0", &testing::signing_key(9));
    let v2 = testing::signed_monitor_package("2.0.0", &testing::signing_key(9));
    offer_until_settled(&mut server, &uid, &v1, "1.0.0").await;

    server.serve(&v2.archive);
    server.offer(&uid, &v2, "2.0.0");
    // Watching (the INSTALLING that follows the switch names 1.0.0 as what it has).
    server
        .until(|m| {
            is_status(m, PackageStatusEnum::Installing, "2.0.0")
                && state_json(dir.path())["watching"].is_object()
        })
        .await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
    nothing_runs_under(&agents_dir(dir.path())).await;
    let state = state_json(dir.path());
    assert_eq!(state["package"]["version"], "2.0.0");
    assert_eq!(state["previous"]["version"], "1.0.0");

    // Back: it reports INSTALLING 2.0.0 at once, then INSTALLED after a whole window.
    let restarted = Instant::now();
    let (shutdown, guest) = spawn_guest(cfg);
    server.until(|m| m.agent_disconnect.is_some()).await;
    server.expect_connect().await;
    let first = server.expect_message().await;
    let status = monitor_status(&first).unwrap();
    assert_eq!(status.status(), PackageStatusEnum::Installing);
    assert_eq!(status.server_offered_version, "2.0.0");
    assert_eq!(status.server_offered_hash, v2.content_hash.to_vec());
    let done = server
        .until(|m| is_status(m, PackageStatusEnum::Installed, "2.0.0"))
        .await;
    assert!(restarted.elapsed() >= Duration::from_secs(3));
    assert_eq!(settled(&done).agent_has_version, "2.0.0");
    runs_only(dir.path(), "2.0.0").await;
    assert!(state_json(dir.path())["watching"].is_null());
    assert_eq!(server.shared.downloads.lock().unwrap().len(), 2);

    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

#[tokio::test]
async fn an_uninstall_that_cannot_remove_the_files_says_why() {
    use deskfleet_proto::opamp::{EMPTY_PACKAGES_HASH, PackagesAvailable};
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Where the versions' directory belongs, a file: it cannot be removed as one.
    std::fs::create_dir_all(dir.path().join("state/agents")).unwrap();
    std::fs::write(agents_dir(dir.path()), b"in the way").unwrap();
    let (shutdown, guest) = spawn_guest(config(&server, dir.path(), 9));
    let uid = enrolled(&mut server).await;
    server.send(ServerToAgent {
        instance_uid: uid,
        packages_available: Some(PackagesAvailable {
            packages: Default::default(),
            all_packages_hash: EMPTY_PACKAGES_HASH.to_vec(),
        }),
        ..Default::default()
    });
    let done = server.until(|m| monitor_status(m).is_some()).await;
    let msg = done.last().unwrap();
    let status = monitor_status(msg).unwrap();
    assert_eq!(status.status(), PackageStatusEnum::InstallFailed);
    assert!(
        status
            .error_message
            .starts_with("uninstall-failed: removing "),
        "{}",
        status.error_message
    );
    assert_eq!(
        msg.package_statuses
            .as_ref()
            .unwrap()
            .server_provided_all_packages_hash,
        EMPTY_PACKAGES_HASH
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

/// With several addresses (replicas without a balancer), a guest whose server refuses it
/// (503, as a draining replica does) or does not answer moves on to the next address at
/// once, not after its reconnect backoff, and enrolls through the one that answers.
#[tokio::test]
async fn a_guest_moves_to_the_next_server_address_when_one_does_not_answer() {
    let mut draining = FakeServer::start_with(None).await;
    draining.shared.refuse.store(usize::MAX, Ordering::SeqCst);
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut answering = FakeServer::start_with(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&answering, dir.path(), 9);
    cfg.set_servers(&format!("{},{gone},{}", draining.url(), answering.url()))
        .unwrap();
    // A backoff far longer than the test waits: only moving on at once can pass.
    cfg.reconnect = BackoffPolicy {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
        jitter: 0.0,
    };
    let (shutdown, guest) = spawn_guest(cfg);
    assert_eq!(answering.expect_connect().await, format!("Bearer {TOKEN}"));
    answering.expect_message().await;
    assert!(!draining.shared.attempts.lock().unwrap().is_empty());
    assert!(
        draining.seen.try_recv().is_err(),
        "the draining server never got a connection"
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, guest).await.unwrap().unwrap();
}

#[test]
fn server_address_lists_are_checked() {
    let key = testing::signing_key(9).verifying_key();
    let mut cfg = Config::new("https://a.example", None, key, "/tmp/unused").unwrap();
    cfg.set_servers(" https://a.example:8087 , https://b.example:8087,")
        .unwrap();
    assert_eq!(cfg.servers().len(), 2);
    assert_eq!(cfg.server.as_str(), "https://a.example:8087/");
    for bad in [
        "",
        ",",
        "https://a.example,http://b.example",
        "https://a,ftp://b",
    ] {
        assert!(cfg.set_servers(bad).is_err(), "{bad:?}");
    }
}
