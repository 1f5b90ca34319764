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
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod console;
pub mod engine;
pub mod error;
pub(crate) mod extract;
pub mod fleet;
pub mod observe;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod settings;
pub mod timeseries;
pub mod tls;
pub mod wire;

use anyhow::Context;
use deskfleet_core::clock::{Clock, SystemClock};
use deskfleet_core::store::Store;
use settings::Settings;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `host:port` for URLs: an unspecified listen address is reached on loopback here.
fn endpoint_host(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        other => other.to_string(),
    }
}

/// Re-reads the certificate on every SIGHUP; open connections keep theirs.
fn reload_on_sighup(certificates: Arc<tls::Certificates>, shutdown: CancellationToken) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; certificates are read at start only");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = hangups.recv() => match certificates.reload() {
                    Ok(()) => tracing::info!("certificate reloaded"),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "certificate reload failed; keeping the one in use"),
                },
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (certificates, shutdown);
}

/// Shared state of the handlers and workers; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub auth: auth::AuthState,
    pub fleet: fleet::Fleet,
    /// Bytes of request bodies that may be held before their signature is verified.
    pub body_budget: auth::BodyBudget,
    /// Seals and opens the secret keys stored in the database.
    pub keyring: auth::keyring::Keyring,
    /// When the job gauges of `/metrics` were last counted.
    pub job_gauges: observe::JobGauges,
    /// Metric reports waiting to be written (see [`timeseries`]).
    pub metric_queue: timeseries::IngestQueue,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// New work waits for desktops (a job was created or retried): this replica's
    /// scheduler delivers it now, and every other replica is told (PostgreSQL) to do the
    /// same for the desktops connected to it.
    pub fn work_queued(&self) {
        self.fleet.wake.notify_one();
        self.store.raise(deskfleet_core::store::Signal::Work);
    }

    pub fn new(
        store: Arc<dyn Store>,
        settings: Settings,
        clock: Arc<dyn Clock>,
        keyring: auth::keyring::Keyring,
    ) -> Self {
        let settings_metric_data = settings.metric_data.clone();
        Self(Arc::new(Inner {
            store,
            clock,
            auth: auth::AuthState::default(),
            fleet: fleet::Fleet::default(),
            body_budget: auth::BodyBudget::new(settings.http.unverified_body_budget_bytes),
            settings,
            keyring,
            job_gauges: observe::JobGauges::default(),
            metric_queue: timeseries::IngestQueue::new(
                settings_metric_data.queue_capacity,
                settings_metric_data.batch_max_reports,
            ),
        }))
    }
}

/// A built server, bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// The certificate served, when TLS is on.
    certificates: Option<Arc<tls::Certificates>>,
    /// Credentials created on first start, to be shown once.
    pub bootstrap: Option<bootstrap::Bootstrap>,
    /// Signs the head of the audit trail.
    seal_key: ed25519_dalek::SigningKey,
}

impl Application {
    /// Opens the store (creating the data directory), bootstraps it if empty, and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        auth::files::prepare_data_dir(&settings)?;
        let store = deskfleet_store::connect(&settings.effective_database_url())
            .await
            .context("opening the database")?;
        let keyring = auth::keyring::open_keyring(&settings, store.as_ref()).await?;
        let state = AppState::new(store, settings, Arc::new(SystemClock), keyring);
        let seal_key = audit::seal::load_or_create_seal_key(&state.settings, &state.keyring)
            .context("loading the audit seal key")?;
        metrics::gauge!("deskfleet_audit_enabled")
            .set(f64::from(u8::from(state.settings.audit.enabled)));
        if !state.settings.audit.enabled {
            tracing::warn!(
                "AUDITING IS OFF (audit.enabled = false): changes and refusals leave no trace; \
                 this setting exists only to measure the cost of auditing"
            );
        }
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
        let certificates = if state.settings.tls.enabled {
            let files = tls::prepare(&state.settings, addr).context("preparing TLS")?;
            Some(Arc::new(tls::Certificates::load(files)?))
        } else {
            tracing::warn!(
                "TLS is off (tls.enabled = false): credentials and packages travel in clear \
                 unless a proxy in front terminates TLS"
            );
            None
        };
        let dir = &state.settings.data_dir;
        let scheme = if certificates.is_some() {
            "https"
        } else {
            "http"
        };
        std::fs::write(
            dir.join(tls::ENDPOINT_FILE),
            format!("{scheme}://{}", endpoint_host(addr)),
        )
        .context("writing endpoint.url")?;
        auth::files::secure_data_dir(&state.settings.data_dir)?;
        // Last: tools wait for listen.addr and find endpoint.url beside it.
        std::fs::write(dir.join("listen.addr"), addr.to_string()).context("writing listen.addr")?;
        Ok(Self {
            listener,
            state,
            certificates,
            bootstrap,
            seal_key,
        })
    }

    /// The server's base URL, as written to `DATA_DIR/endpoint.url`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.certificates.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", endpoint_host(self.local_addr()))
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
    /// finish, and stops the workers. With TLS on, SIGHUP re-reads the certificate.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = &self.state;
        let workers = engine::spawn_workers(
            vec![
                Box::new(engine::TimeoutSweeper::new(state.clone())),
                Box::new(engine::StatisticsKeeper::new(state.clone())),
                Box::new(auth::revocation::RevocationWatcher::new(state.clone())),
                Box::new(fleet::Scheduler::new(state.clone())),
                Box::new(fleet::presence::LastSeenFlusher::new(state.clone())),
                Box::new(timeseries::IngestWorker::new(state.clone())),
                Box::new(timeseries::RollupWorker::new(state.clone())),
                Box::new(audit::seal::ChainWorker::new(state.clone())),
                Box::new(audit::seal::SealWorker::new(
                    state.clone(),
                    self.seal_key.clone(),
                )),
            ],
            shutdown.child_token(),
        );
        let app = routes::router(self.state.clone());
        let endpoint = self.endpoint();
        tracing::info!(%endpoint, backend = self.state.store.backend(), "serving");
        let acceptor = self.certificates.as_ref().map(|certs| {
            reload_on_sighup(certs.clone(), shutdown.clone());
            tokio_rustls::TlsAcceptor::from(certs.server_config())
        });
        let limits = serve::Limits::from_settings(&self.state.settings.http);
        serve::serve(self.listener, acceptor, app, limits, shutdown.clone()).await;
        let drain = Duration::from_secs(self.state.settings.fleet.drain_secs);
        self.state.fleet.close_sessions(drain).await;
        // The goodbyes are written; what was noted of the guests since the last flush
        // goes too, so that a clean restart loses no last-seen time.
        if let Err(e) = self.state.fleet.last_seen.flush(&self.state).await {
            tracing::warn!(error = %e, "last-seen times could not be written at shutdown");
        }
        shutdown.cancel();
        workers.join().await;
        // What the sessions queued last, and the minutes still open, are written before
        // the process goes.
        let ingest = timeseries::IngestWorker::new(self.state.clone());
        if let Err(e) = ingest.flush().await {
            tracing::warn!(error = %e, "metric reports lost at shutdown");
        }
        tracing::info!("stopped");
        Ok(())
    }
}
