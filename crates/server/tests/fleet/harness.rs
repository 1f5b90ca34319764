//! Real processes on loopback: a `deskfleet-server` and `deskfleet-guest` daemons, each with
//! its own directory. The binaries are the workspace's own (`cargo build --workspace
//! --bins` builds them; `scripts/test` does so before the tests).
//!
//! The server speaks https with the CA it creates in its data directory; API clients
//! trust that CA (`ca.pem`). Guests are given what an operator gives a desktop: the
//! server's URL and the enrollment token (in a file, or in the environment), and no CA:
//! they pin the server's CA by the token's fingerprint. [`GuestOptions`] varies that.

use deskfleet_client::{Client, ClientOptions, Credentials};
use deskfleet_server::bootstrap::Bootstrap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

/// The CA of each server this test process started, by `host:port`: hand-made clients
/// ([`http_for`], [`open_ws`]) trust the server a URL names, as an operator's client is
/// given that server's `ca.pem`.
static TRUST: LazyLock<Mutex<HashMap<String, PathBuf>>> = LazyLock::new(Default::default);

fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Remembers that the server at `endpoint` is verified with `ca`.
fn trust(endpoint: &str, ca: PathBuf) {
    TRUST.lock().unwrap().insert(authority(endpoint), ca);
}

fn ca_for(url: &str) -> Option<PathBuf> {
    TRUST
        .lock()
        .unwrap()
        .get(&authority(url))
        .filter(|ca| ca.is_file())
        .cloned()
}

/// Transport options that trust the CA of the server `url` points at.
pub fn options_for(url: &str) -> ClientOptions {
    match ca_for(url) {
        Some(ca) => ClientOptions::default().with_ca_file(&ca).unwrap(),
        None => ClientOptions::default(),
    }
}

/// A reqwest client for hand-made requests to the server `url` points at.
#[allow(dead_code, reason = "not every test binary sharing this file uses it")]
pub fn http_for(url: &str) -> reqwest::Client {
    options_for(url).http_client().unwrap()
}
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A binary of this workspace, next to the test executable's directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub bootstrap: Bootstrap,
    pub endpoint: String,
    /// Kept across restarts so that guests find the server where they left it.
    listen: String,
    child: Option<Child>,
}

impl Server {
    /// Starts a server whose settings file holds `settings` (TOML).
    pub async fn start(settings: &str) -> Self {
        Self::start_with(settings, |_| {}).await
    }

    /// Like [`Server::start`], with `prepare` run on the (empty) data directory first:
    /// to mount a file system there, or to put a database in place.
    pub async fn start_with(settings: &str, prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        std::fs::write(dir.path().join("settings.toml"), settings).unwrap();
        let mut server = Self {
            dir,
            bootstrap: serde_json::from_str("{}").unwrap_or_else(|_| placeholder()),
            endpoint: String::new(),
            listen: "127.0.0.1:0".into(),
            child: None,
        };
        server.launch().await;
        server.bootstrap = serde_json::from_slice(
            &std::fs::read(server.dir.path().join("bootstrap.json")).unwrap(),
        )
        .unwrap();
        server
    }

    async fn launch(&mut self) {
        let addr_file = self.dir.path().join("listen.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(bin("deskfleet-server"))
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--listen", &self.listen, "--config"])
            .arg(self.dir.path().join("settings.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start deskfleet-server");
        self.child = Some(child);
        let addr = eventually(60, "server listening", || async {
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| !s.is_empty())
        })
        .await;
        self.listen = addr.trim().to_string();
        self.endpoint = std::fs::read_to_string(self.dir.path().join("endpoint.url"))
            .expect("endpoint.url is written with listen.addr")
            .trim()
            .to_string();
        trust(&self.endpoint, self.ca_cert());
        let listen = self.listen.clone();
        eventually(30, "server accepting", || async {
            tokio::net::TcpStream::connect(&listen)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }

    /// SIGKILL, then start again on the same data directory (a new port).
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    /// Starts the server again on its data directory (a new port), once it has stopped.
    #[allow(
        dead_code,
        reason = "used by the hostile-client suite, which shares this file"
    )]
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server still runs");
        self.launch().await;
    }

    /// The server process's id.
    #[allow(
        dead_code,
        reason = "used by the hostile-client suite, which shares this file"
    )]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// The address the server listens on.
    #[allow(
        dead_code,
        reason = "used by the hostile-client suite, which shares this file"
    )]
    pub fn addr(&self) -> std::net::SocketAddr {
        self.listen.parse().expect("listen.addr holds host:port")
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status, if the server process has ended.
    #[allow(dead_code)] // the fault tests use it
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// An unauthenticated GET of `path` (e.g. `/readyz`): status and body.
    #[allow(dead_code)] // the fault tests use it
    pub async fn get(&self, path: &str) -> Result<(u16, String), reqwest::Error> {
        let response = self
            .http()
            .get(format!("{}{path}", self.endpoint))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    pub fn client(&self) -> Client {
        Client::with_options(
            &self.endpoint,
            &self.bootstrap.project_id,
            Credentials::AkSk {
                access_key: self.bootstrap.access_key.clone(),
                secret_key: self.bootstrap.secret_key.clone(),
            },
            &self.options(),
        )
        .unwrap()
    }

    /// The server's private CA (absent with TLS off or an operator's certificate).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Transport options that trust the server's CA.
    pub fn options(&self) -> ClientOptions {
        let options = ClientOptions::default();
        if self.ca_cert().is_file() {
            options.with_ca_file(&self.ca_cert()).unwrap()
        } else {
            options
        }
    }

    /// A plain reqwest client for hand-made requests, trusting the server's CA.
    #[allow(dead_code, reason = "not every test binary sharing this file uses it")]
    pub fn http(&self) -> reqwest::Client {
        self.options().http_client().unwrap()
    }

    pub fn public_key(&self) -> PathBuf {
        self.dir.path().join("package-signing.pub")
    }

    /// Runs an admin command on this server's data directory; returns its JSON.
    pub fn admin(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(bin("deskfleet-server"))
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("admin")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn enrollment_token(&self) -> String {
        let v = self.admin(&[
            "enrollment-tokens",
            "create",
            "--project",
            &self.bootstrap.project_id,
        ]);
        v["enrollment_token"].as_str().unwrap().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn placeholder() -> Bootstrap {
    Bootstrap {
        domain_name: String::new(),
        project_id: String::new(),
        project_name: String::new(),
        user_name: String::new(),
        password: String::new(),
        access_key: String::new(),
        secret_key: String::new(),
    }
}

/// How a guest is told about its server.
#[derive(Debug, Clone, Default)]
pub struct GuestOptions {
    /// Pass `--ca-cert DATA_DIR/ca.pem` instead of relying on the token's fingerprint.
    pub ca_cert: bool,
    /// Hand the token over in `DESKFLEET_ENROLLMENT_TOKEN` instead of a token file.
    pub token_in_env: bool,
    /// Pass `--allow-insecure-http` (a server with TLS off).
    pub allow_insecure_http: bool,
    /// `--watch-window-secs` (default [`WATCH_WINDOW_SECS`]).
    pub watch_window_secs: Option<u64>,
}

/// The watch window of upgrades in these tests (the guest's default is 15 s).
pub const WATCH_WINDOW_SECS: u64 = 2;

pub struct Guest {
    pub state_dir: tempfile::TempDir,
    pub name: String,
    pub options: GuestOptions,
    child: Option<Child>,
}

impl Guest {
    pub fn start(server: &Server, token: &str, name: &str) -> Self {
        Self::start_with(server, token, name, GuestOptions::default())
    }

    pub fn start_with(server: &Server, token: &str, name: &str, options: GuestOptions) -> Self {
        let state_dir = tempfile::tempdir().unwrap();
        let mut guest = Self {
            state_dir,
            name: name.to_string(),
            options,
            child: None,
        };
        guest.launch(server, token);
        guest
    }

    pub fn launch(&mut self, server: &Server, token: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.path().join("guest.log"))
            .unwrap();
        let mut command = Command::new(bin("deskfleet-guest"));
        command
            .args(["--server", &server.endpoint, "--trusted-key"])
            .arg(server.public_key())
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .args(["--monitor-interval-ms", "300", "--heartbeat-secs", "1"])
            .arg("--watch-window-secs")
            .arg(
                self.options
                    .watch_window_secs
                    .unwrap_or(WATCH_WINDOW_SECS)
                    .to_string(),
            )
            .env("RUST_LOG", "info")
            .env_remove("DESKFLEET_ENROLLMENT_TOKEN")
            // Each simulated desktop has its own host name, as real ones do.
            .env("DESKFLEET_GUEST_HOSTNAME", &self.name);
        // The token never goes on the command line, where `ps` shows it.
        if self.options.token_in_env {
            command.env("DESKFLEET_ENROLLMENT_TOKEN", token);
        } else {
            let file = self.state_dir.path().join("enrollment-token");
            std::fs::write(&file, format!("{token}\n")).unwrap();
            command.arg("--enrollment-token-file").arg(file);
        }
        if self.options.ca_cert {
            command.arg("--ca-cert").arg(server.ca_cert());
        }
        if self.options.allow_insecure_http {
            command.arg("--allow-insecure-http");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start deskfleet-guest");
        self.child = Some(child);
    }

    /// Waits for the guest process to exit by itself; its exit status.
    #[allow(dead_code, reason = "not every test binary sharing this file uses it")]
    pub async fn exited(&mut self, secs: u64) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the guest was started");
        eventually(secs, "guest exited", || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the server has given this guest its desktop credential.
    pub async fn enrolled(&self) {
        let state = self.state_dir.path().join("state.json");
        eventually(30, "guest enrolled", || async {
            std::fs::read_to_string(&state)
                .ok()
                .filter(|s| s.contains("DFD1"))
                .map(|_| ())
        })
        .await;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.path().join("guest.log")).unwrap_or_default()
    }

    /// The monitoring agent processes started by this guest (children of its pid).
    pub fn monitor_pids(&self) -> Vec<u32> {
        let Some(parent) = self.pid() else {
            return vec![];
        };
        let mut pids = vec![];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                continue;
            };
            let ppid: u32 = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let comm = stat
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(c, _)| c)
                .unwrap_or("");
            if ppid == parent && comm.starts_with("deskfleet-monit") {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Stop the monitor children too: they are in the guest's process group only if it
        // set one, so kill them by parent.
        let children = self.monitor_pids();
        self.kill();
        for pid in children {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

impl Guest {
    /// A guest started from a copy of another's state directory (a cloned desktop image).
    pub fn cloned_from(original: &Guest, server: &Server, token: &str, name: &str) -> Self {
        let state_dir = tempfile::tempdir().unwrap();
        let state = std::fs::read(original.state_dir.path().join("state.json")).unwrap();
        std::fs::write(state_dir.path().join("state.json"), state).unwrap();
        let mut guest = Self {
            state_dir,
            name: name.to_string(),
            options: original.options.clone(),
            child: None,
        };
        guest.launch(server, token);
        guest
    }
}

pub fn now_ms() -> i64 {
    use deskfleet_core::clock::Clock;
    deskfleet_core::clock::SystemClock.now()
}

impl Server {
    /// Asks the server to stop (SIGTERM) and waits for it to exit, at most `secs`
    /// seconds; returns how long that took, or `None` if it did not exit in time (it is
    /// then killed).
    pub fn terminate(&mut self, secs: u64) -> Option<Duration> {
        let mut child = self.child.take()?;
        let started = std::time::Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        while started.elapsed() < Duration::from_secs(secs) {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// An enrollment token bound to one imported desktop.
    pub fn desktop_enrollment_token(&self, desktop_id: &str) -> String {
        let v = self.admin(&[
            "enrollment-tokens",
            "create",
            "--project",
            &self.bootstrap.project_id,
            "--desktop",
            desktop_id,
        ]);
        assert_eq!(v["desktop_id"], desktop_id);
        v["enrollment_token"].as_str().unwrap().to_string()
    }

    pub fn opamp_url(&self) -> String {
        format!("{}/v1/opamp", self.endpoint)
    }
}

impl Guest {
    /// What the guest stored of its identity: (instance uid in hex, credential).
    pub fn identity(&self) -> (String, Option<String>) {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.state_dir.path().join("state.json")).unwrap(),
        )
        .unwrap();
        (
            v["instance_uid"].as_str().unwrap().to_string(),
            v["credential"].as_str().map(str::to_string),
        )
    }
}

/// A server in this process (port 0, its own data directory), for tests that look at
/// its fleet state or stop it with a token they hold.
pub struct Local {
    pub state: deskfleet_server::AppState,
    pub endpoint: String,
    pub bootstrap: Bootstrap,
    pub shutdown: tokio_util::sync::CancellationToken,
    _server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Local {
    pub async fn start(configure: impl FnOnce(&mut deskfleet_server::settings::Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = deskfleet_server::settings::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        settings.packages.publish_bundled_monitor = false;
        configure(&mut settings);
        let app = deskfleet_server::Application::build(settings)
            .await
            .expect("build the server");
        let endpoint = app.endpoint();
        trust(&endpoint, dir.path().join("ca.pem"));
        let bootstrap = app.bootstrap.clone().expect("a new data dir bootstraps");
        let state = app.state().clone();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        Self {
            state,
            endpoint,
            bootstrap,
            shutdown,
            _server: server,
            _dir: dir,
        }
    }

    pub async fn enrollment_token(&self) -> String {
        let project =
            deskfleet_core::ids::ProjectId::parse(self.bootstrap.project_id.clone()).unwrap();
        deskfleet_server::admin::create_enrollment_token(
            self.state.store.as_ref(),
            &project,
            None,
            1,
            now_ms(),
        )
        .await
        .unwrap()
        .0
    }

    pub fn opamp_url(&self) -> String {
        format!("{}/v1/opamp", self.endpoint)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A hand-driven OpAMP WebSocket client: it sends only what a test tells it to.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the OpAMP WebSocket at `opamp_url` with `bearer`; the refusal's status and body
/// otherwise.
pub async fn open_ws(opamp_url: &str, bearer: &str) -> Result<Ws, (u16, String)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = opamp_url.replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    let connector = ca_for(opamp_url).map(|ca| {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(config))
    });
    match tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(e) => Err((0, e.to_string())),
    }
}
