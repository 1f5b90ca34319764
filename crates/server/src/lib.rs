//! The deskfleet server: the Workspace-compatible `/v2` API, the IAM-style `/v3` API, and
//! the job engine that drives installs to an end.
//!
//! Shape: [`Application::build`] connects the store, bootstraps an empty one, and binds
//! the listener; [`Application::run`] serves until its shutdown token is cancelled, then
//! drains in-flight requests and stops the workers. Tests build the real application on
//! port 0 with a token they control.
//!
//! Handlers are thin (routes/*): they extract, authorise, convert DTOs to domain types,
//! call the store, and convert back. SQL lives only in `deskfleet-store`.

pub mod admin;
pub mod auth;
pub mod bootstrap;
pub mod engine;
pub mod error;
mod extract;
pub mod fleet;
pub mod observe;
pub mod routes;
pub mod settings;
pub mod wire;

use anyhow::Context;
use deskfleet_core::clock::{Clock, SystemClock};
use deskfleet_core::store::Store;
use settings::Settings;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Shared state of the handlers and workers; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub auth: auth::AuthState,
    pub fleet: fleet::Fleet,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, settings: Settings, clock: Arc<dyn Clock>) -> Self {
        Self(Arc::new(Inner {
            store,
            settings,
            clock,
            auth: auth::AuthState::default(),
            fleet: fleet::Fleet::default(),
        }))
    }
}

/// A built server, bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Credentials created on first start, to be shown once.
    pub bootstrap: Option<bootstrap::Bootstrap>,
}

impl Application {
    /// Opens the store (creating the data directory), bootstraps it if empty, and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
        let store = deskfleet_store::connect(&settings.effective_database_url())
            .await
            .context("opening the database")?;
        let state = AppState::new(store, settings, Arc::new(SystemClock));
        let bootstrap = bootstrap::bootstrap_if_empty(&state).await?;
        if state.settings.packages.publish_bundled_monitor {
            fleet::packages::publish_bundled_monitor(&state)
                .await
                .context("publishing the bundled monitoring agent")?;
        }
        let listener = TcpListener::bind(state.settings.listen)
            .await
            .with_context(|| format!("binding {}", state.settings.listen))?;
        let addr = listener.local_addr()?;
        std::fs::write(
            state.settings.data_dir.join("listen.addr"),
            addr.to_string(),
        )
        .context("writing listen.addr")?;
        Ok(Self {
            listener,
            state,
            bootstrap,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled; then stops accepting, lets in-flight requests
    /// finish, and stops the workers.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let workers = engine::spawn_workers(self.state.clone(), shutdown.child_token());
        let app = routes::router(self.state.clone());
        tracing::info!(addr = %self.local_addr(), backend = self.state.store.backend(), "serving");
        let signal = shutdown.clone();
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await
            .context("serving")?;
        shutdown.cancel();
        workers.join().await;
        tracing::info!("stopped");
        Ok(())
    }
}
