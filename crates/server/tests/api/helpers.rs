//! A real server on port 0 with its own SQLite database, and clients for it.

use deskfleet_client::{Client, Credentials};
use deskfleet_server::Application;
use deskfleet_server::bootstrap::Bootstrap;
use deskfleet_server::settings::Settings;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub addr: SocketAddr,
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
        Self {
            addr,
            bootstrap,
            settings,
            shutdown,
            server,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn project(&self) -> &str {
        &self.bootstrap.project_id
    }

    /// The bootstrap admin, signing with AK/SK.
    pub fn admin(&self) -> Client {
        self.client(&self.bootstrap.access_key, &self.bootstrap.secret_key)
    }

    pub fn client(&self, ak: &str, sk: &str) -> Client {
        Client::new(
            &self.endpoint(),
            self.project(),
            Credentials::AkSk {
                access_key: ak.into(),
                secret_key: sk.into(),
            },
        )
        .unwrap()
    }

    pub fn token_client(&self, token: &str) -> Client {
        Client::new(
            &self.endpoint(),
            self.project(),
            Credentials::Token(token.into()),
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

/// The endpoint of a server built by hand on `addr` (for tests that restart one).
pub fn endpoint_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
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
