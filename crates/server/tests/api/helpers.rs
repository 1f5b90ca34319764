//! A real server on port 0 with its own SQLite database, and clients for it. The server
//! speaks https with the CA it created in its data directory (unless a test turns TLS
//! off); every client here trusts that CA.

use deskfleet_client::{Client, ClientOptions, Credentials};
use deskfleet_server::Application;
use deskfleet_server::bootstrap::Bootstrap;
use deskfleet_server::settings::Settings;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    /// The listening address, for tests that speak raw TCP.
    #[allow(dead_code)]
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT` (`http://` with TLS off), from `DATA_DIR/endpoint.url`.
    endpoint: String,
    pub bootstrap: Bootstrap,
    pub settings: Settings,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..Settings::default()
        };
        settings.jobs.sweep_interval_ms = 50;
        configure(&mut settings);
        let app = Application::build(settings.clone()).await.expect("build");
        let addr = app.local_addr();
        let bootstrap = app.bootstrap.clone().expect("a new data dir bootstraps");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        let endpoint = endpoint_in(&settings.data_dir);
        Self {
            addr,
            endpoint,
            bootstrap,
            settings,
            shutdown,
            server,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Transport options trusting the server's CA (`DATA_DIR/ca.pem`).
    pub fn options(&self) -> ClientOptions {
        let ca = self.settings.data_dir.join("ca.pem");
        let options = ClientOptions::default();
        if ca.is_file() {
            options.with_ca_file(&ca).expect("the CA file reads")
        } else {
            options
        }
    }

    /// A plain reqwest client for hand-made requests, trusting the server's CA.
    pub fn http(&self) -> reqwest::Client {
        self.options().http_client().expect("an HTTP client")
    }

    pub fn project(&self) -> &str {
        &self.bootstrap.project_id
    }

    /// The bootstrap admin, signing with AK/SK.
    pub fn admin(&self) -> Client {
        self.client(&self.bootstrap.access_key, &self.bootstrap.secret_key)
    }

    pub fn client(&self, ak: &str, sk: &str) -> Client {
        Client::with_options(
            &self.endpoint(),
            self.project(),
            Credentials::AkSk {
                access_key: ak.into(),
                secret_key: sk.into(),
            },
            &self.options(),
        )
        .unwrap()
    }

    pub fn token_client(&self, token: &str) -> Client {
        Client::with_options(
            &self.endpoint(),
            self.project(),
            Credentials::Token(token.into()),
            &self.options(),
        )
        .unwrap()
    }

    /// Registers `n` desktops in the bootstrap project; returns their ids.
    pub async fn import_desktops(&self, n: usize) -> Vec<String> {
        self.import_desktops_into(self.project(), n).await
    }

    pub async fn import_desktops_into(&self, project: &str, n: usize) -> Vec<String> {
        let json = serde_json::to_vec(
            &(0..n)
                .map(|i| {
                    serde_json::json!({
                        "computer_name": format!("wks-{i:04}"),
                        "ip_address": format!("10.0.{}.{}", i / 250, i % 250 + 1),
                        "os_type": "Linux",
                    })
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let store = self.store().await;
        let project = deskfleet_core::ids::ProjectId::parse(project).unwrap();
        deskfleet_server::admin::import_desktops(store.as_ref(), &project, &json, now())
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id.into_string())
            .collect()
    }

    /// A second connection to the same database, as the admin command would open.
    pub async fn store(&self) -> std::sync::Arc<dyn deskfleet_core::store::Store> {
        deskfleet_store::connect(&self.settings.effective_database_url())
            .await
            .unwrap()
    }

    /// The key-encryption key of this server's secret keys, as the admin command loads it.
    pub async fn keyring(&self) -> deskfleet_server::auth::keyring::Keyring {
        let store = self.store().await;
        deskfleet_server::auth::keyring::open_keyring(&self.settings, store.as_ref())
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }
}

/// The endpoint a server running on `data_dir` wrote there (for tests that build one
/// by hand).
pub fn endpoint_in(data_dir: &std::path::Path) -> String {
    std::fs::read_to_string(data_dir.join("endpoint.url"))
        .expect("the server writes endpoint.url")
        .trim()
        .to_string()
}

pub fn now() -> i64 {
    use deskfleet_core::clock::Clock;
    deskfleet_core::clock::SystemClock.now()
}

/// Polls `check` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {secs} s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
