//! The guest's state machine and [`run`]: identity, what is installed and offered, the
//! monitor's health, and the reconnect loop around [`crate::connection::session`].
//!
//! Everything here runs on one task. Installs and the monitor supervisor run on their own
//! tasks and report through channels, so a slow download never stops the guest from
//! answering the server, and a connection drop never interrupts an install: its
//! progress is kept and reported in the full state of the next connection.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use deskfleet_proto::opamp::{
    AgentToServer, ComponentHealth, ConnectionSettingsStatus, EMPTY_PACKAGES_HASH, PackageStatus,
    PackageStatusEnum, PackageStatuses, ServerToAgent,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, jittered};
use crate::config::{Config, opamp_url};
use crate::connection::{self, SessionEnd};
use crate::host::HostFacts;
use crate::install::{
    InstallError, InstallStep, Installer, MONITOR_PACKAGE, PackageOffer, ReasonCode,
    remove_other_versions, remove_package,
};
use crate::protocol::{self, Directives, MessageBuilder, ServerError, Status};
use crate::state::{GuestState, InstalledPackage, StateError, StateStore, Watching};
use crate::supervise::{MonitorEvent, SuperviseSettings, Supervisor};
use crate::tls::Transport;
use crate::watch::{Verdict, Watch, rolled_back};

/// How long a starting guest waits for the monitor's first health line before its
/// first connection, so that the first message already says whether the monitor runs.
const FIRST_HEALTH_WAIT: Duration = Duration::from_secs(2);

/// More immediate reconnects in a row than this (a server that keeps handing out new
/// credentials) fall back to the backoff.
const MAX_IMMEDIATE_RECONNECTS: u32 = 3;

/// Why the guest could not run at all. Everything after startup is retried instead.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "no desktop credential is stored in {0} and no enrollment token was given (--enrollment-token-file, DESKFLEET_ENROLLMENT_TOKEN or --enrollment-token)"
    )]
    NoEnrollmentToken(PathBuf),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Runs the guest until `shutdown` is cancelled: connects, reconnects forever, installs
/// what the server offers, supervises the monitor. On shutdown it says goodbye to the
/// server, stops the monitor gracefully and returns `Ok`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), GuestError> {
    let mut agent = Agent::start(config).await?;
    agent.wait_for_first_health(&shutdown).await;
    let servers = agent.config.servers();
    let transport = agent.transport.clone();
    let mut backoff = Backoff::new(agent.config.reconnect);
    let mut immediate_reconnects = 0;
    // Which address is in use, and how many in a row failed since one last answered: the
    // next address is tried at once, and the backoff applies once all of them failed.
    let mut current = 0;
    let mut failed_in_a_row = 0;
    while !shutdown.is_cancelled() {
        let url = opamp_url(&servers[current]);
        agent.current_server = servers[current].clone();
        let bearer = agent.bearer();
        tracing::debug!(url = %url, with_credential = agent.state.credential.is_some(), "connecting");
        let connected = tokio::select! {
            _ = shutdown.cancelled() => break,
            connected = connection::connect(&url, bearer.expose_secret(), &transport) => connected,
        };
        let (delay, unanswered) = match connected {
            Ok(ws) => {
                tracing::info!(url = %url, instance_uid = %agent.state.instance_uid, "connected");
                let outcome = connection::session(&mut agent, ws, &shutdown).await;
                if outcome.server_answered {
                    backoff.reset();
                    failed_in_a_row = 0;
                }
                match outcome.end {
                    SessionEnd::Shutdown => break,
                    SessionEnd::Reconnect if immediate_reconnects < MAX_IMMEDIATE_RECONNECTS => {
                        immediate_reconnects += 1;
                        tracing::info!("reconnecting with the new credential");
                        continue;
                    }
                    SessionEnd::Reconnect => (backoff.next_delay(&mut rand::rng()), false),
                    SessionEnd::RetryAfter(after) => {
                        let delay = backoff.next_delay(&mut rand::rng());
                        let delay = after.map_or(delay, |after| delay.max(after_jittered(after)));
                        tracing::warn!(
                            retry_in_ms = delay.as_millis() as u64,
                            "server unavailable"
                        );
                        (delay, true)
                    }
                    SessionEnd::Lost(reason) => {
                        let delay = backoff.next_delay(&mut rand::rng());
                        tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "connection lost");
                        (delay, true)
                    }
                }
            }
            Err(error) => {
                let delay = backoff.next_delay(&mut rand::rng());
                let delay = error
                    .retry_after()
                    .map_or(delay, |after| delay.max(after_jittered(after)));
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot connect");
                (delay, true)
            }
        };
        immediate_reconnects = 0;
        let delay = if unanswered && servers.len() > 1 {
            failed_in_a_row += 1;
            current = (current + 1) % servers.len();
            if failed_in_a_row < servers.len() {
                tracing::info!(next = %servers[current], "trying the next server address");
                Duration::ZERO
            } else {
                failed_in_a_row = 0;
                delay
            }
        } else {
            delay
        };
        if !agent.idle(delay, &shutdown).await {
            break;
        }
    }
    agent.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// `Retry-After` is a floor: never sooner, and spread over up to a quarter more so that
/// every refused guest does not come back in the same second.
fn after_jittered(after: Duration) -> Duration {
    after + jittered(after / 8, 1.0, &mut rand::rng())
}

/// What the session should do after a server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handled {
    Continue,
    Reconnect,
    RetryAfter(Option<Duration>),
}

pub(crate) enum Event {
    Install {
        id: u64,
        step: InstallStep,
    },
    InstallDone {
        id: u64,
        result: Result<InstalledPackage, InstallError>,
    },
    Monitor {
        generation: u64,
        event: MonitorEvent,
    },
    /// The watch window of the switched-to version ended.
    WatchDeadline,
}

/// The watch of the version the guest switched to (`docs/fleet-protocol.md`, "Upgrade,
/// watch window and rollback").
struct ActiveWatch {
    watch: Watch,
    /// The supervisor of the watched version.
    generation: u64,
    /// The offer it answers, reported back in the package status.
    offered_version: String,
    offered_hash: Vec<u8>,
}

/// What an install task reports, tagged with its id.
enum InstallUpdate {
    Step(InstallStep),
    Done(Result<InstalledPackage, InstallError>),
}

struct InstallTask {
    id: u64,
    offer: PackageOffer,
    task: JoinHandle<()>,
}

pub(crate) struct Agent {
    config: Config,
    /// The server address in use (relative download URLs resolve against it).
    current_server: reqwest::Url,
    transport: Transport,
    store: StateStore,
    state: GuestState,
    host: HostFacts,
    builder: MessageBuilder,
    installer: Installer,
    started: SystemTime,
    heartbeat: Duration,

    /// The monitor package's status, and the statuses of packages we refused.
    packages: PackageStatuses,
    connection_settings: Option<ConnectionSettingsStatus>,
    /// The monitor component's health; `None` while nothing is installed.
    monitor_health: Option<ComponentHealth>,
    /// Whether the current monitor wrote a health line yet.
    monitor_reported: bool,
    /// The health last sent, to skip repeating an unchanged one.
    sent_health: Option<ComponentHealth>,
    /// The offer the current install or installed version answers.
    last_offer: Option<PackageOffer>,

    install: Option<InstallTask>,
    next_install_id: u64,
    install_tx: mpsc::Sender<(u64, InstallUpdate)>,
    install_rx: mpsc::Receiver<(u64, InstallUpdate)>,

    supervisor: Option<Supervisor>,
    /// Set while the version switched to is watched.
    watch: Option<ActiveWatch>,
    next_generation: u64,
    monitor_tx: mpsc::Sender<(u64, MonitorEvent)>,
    monitor_rx: mpsc::Receiver<(u64, MonitorEvent)>,
    /// Monitors being stopped in the background after a new version started.
    retiring: Vec<JoinHandle<()>>,

    connected: bool,
    outbox: Vec<AgentToServer>,
}

impl Agent {
    /// Loads (or creates) the identity and starts the installed monitor, if any.
    async fn start(config: Config) -> Result<Agent, GuestError> {
        let store = StateStore::new(&config.state_dir);
        let state = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.load_or_create())
                .await
                .expect("loading the state does not panic")?
        };
        if state.credential.is_none() && config.enrollment_token.is_none() {
            return Err(GuestError::NoEnrollmentToken(config.state_dir.clone()));
        }
        // One TLS configuration for the WebSocket and the downloads.
        let transport = Transport::new(&config)?;
        let client = transport.http_client()?;
        let installer = Installer {
            client,
            install_root: config.install_root.clone(),
            trusted_key: config.trusted_key,
        };
        let host = match &config.host {
            Some(host) => host.clone(),
            None => tokio::task::spawn_blocking(HostFacts::detect)
                .await
                .expect("reading host facts does not panic"),
        };
        tracing::info!(instance_uid = %state.instance_uid, host_name = %host.host_name, enrolled = state.credential.is_some(), "guest starting");
        let (install_tx, install_rx) = mpsc::channel(64);
        let (monitor_tx, monitor_rx) = mpsc::channel(64);
        let mut agent = Agent {
            transport,
            builder: MessageBuilder::new(state.instance_uid),
            heartbeat: config.heartbeat,
            store,
            host,
            installer,
            started: SystemTime::now(),
            packages: PackageStatuses::default(),
            connection_settings: None,
            monitor_health: None,
            monitor_reported: false,
            sent_health: None,
            last_offer: None,
            install: None,
            next_install_id: 1,
            install_tx,
            install_rx,
            supervisor: None,
            current_server: config.server.clone(),
            watch: None,
            next_generation: 1,
            monitor_tx,
            monitor_rx,
            retiring: Vec::new(),
            connected: false,
            outbox: Vec::new(),
            state,
            config,
        };
        match (agent.state.package.clone(), agent.state.watching.clone()) {
            (Some(package), Some(watching)) => {
                // Restarted while watching a switch: watch it again, for a whole window.
                tracing::info!(version = %package.version, "resuming the watch of an upgrade interrupted by a restart");
                let offered_hash = hex::decode(&watching.offer_hash).unwrap_or_default();
                let version = package.version.clone();
                agent.start_watched(package, version, offered_hash);
            }
            (Some(package), None) => {
                agent.set_package_status(protocol::installed_status(&package, None));
                agent.start_monitor(package);
            }
            (None, _) => {
                if agent.state.previous.is_none() {
                    // Nothing is installed: files left by an interrupted uninstall go.
                    let root = agent.config.install_root.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || remove_package(&root, MONITOR_PACKAGE))
                            .await;
                }
            }
        }
        Ok(agent)
    }

    /// The secret for `Authorization: Bearer`: the credential once enrolled.
    fn bearer(&self) -> SecretString {
        match (&self.state.credential, &self.config.enrollment_token) {
            (Some(credential), _) => credential.clone(),
            (None, Some(token)) => token.clone(),
            // `start` refused to run without either.
            (None, None) => SecretString::from(String::new()),
        }
    }

    pub(crate) fn heartbeat(&self) -> Option<Duration> {
        (!self.heartbeat.is_zero()).then_some(self.heartbeat)
    }

    pub(crate) fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
        // Whatever was queued belongs to the old connection; the next one starts with
        // the full state.
        self.outbox.clear();
    }

    pub(crate) fn take_outbox(&mut self) -> Vec<AgentToServer> {
        std::mem::take(&mut self.outbox)
    }

    fn status(&self) -> Status {
        let now = SystemTime::now();
        Status {
            health: protocol::guest_health(self.started, self.monitor_health.as_ref(), now),
            packages: self.packages.clone(),
            connection_settings: self.connection_settings.clone(),
        }
    }

    pub(crate) fn full_state_message(&mut self) -> AgentToServer {
        let status = self.status();
        self.sent_health = Some(status.health.clone());
        self.builder.full_state(&self.host, &status)
    }

    pub(crate) fn disconnect_message(&mut self) -> AgentToServer {
        self.builder.disconnect()
    }

    pub(crate) fn push_heartbeat(&mut self) {
        if self.connected {
            let msg = self.builder.heartbeat();
            self.outbox.push(msg);
        }
    }

    fn push_full_state(&mut self) {
        if self.connected {
            let msg = self.full_state_message();
            self.outbox.push(msg);
        }
    }

    fn push_packages(&mut self) {
        if self.connected {
            let msg = self.builder.package_statuses(&self.packages);
            self.outbox.push(msg);
        }
    }

    /// Sends the health if it changed since it was last sent (or `force`).
    fn push_health(&mut self, force: bool) {
        if !self.connected {
            return;
        }
        let health = self.status().health;
        if !force
            && self
                .sent_health
                .as_ref()
                .is_some_and(|sent| protocol::same_health(sent, &health))
        {
            return;
        }
        let msg = self.builder.health(&health);
        self.sent_health = Some(health);
        self.outbox.push(msg);
    }

    fn set_package_status(&mut self, status: deskfleet_proto::opamp::PackageStatus) {
        self.packages.packages.insert(status.name.clone(), status);
    }

    // -----------------------------------------------------------------------------------
    // Waiting
    // -----------------------------------------------------------------------------------

    pub(crate) async fn next_event(&mut self) -> Option<Event> {
        // Both senders are held by `self`, so neither channel ever closes.
        let deadline = self.watch.as_ref().map(|w| w.watch.deadline());
        tokio::select! {
            Some((id, update)) = self.install_rx.recv() => Some(match update {
                InstallUpdate::Step(step) => Event::Install { id, step },
                InstallUpdate::Done(result) => Event::InstallDone { id, result },
            }),
            Some((generation, event)) = self.monitor_rx.recv() => Some(Event::Monitor { generation, event }),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                Some(Event::WatchDeadline)
            }
        }
    }

    /// Waits `delay` while still handling install and monitor events. False on shutdown.
    async fn idle(&mut self, delay: Duration, shutdown: &CancellationToken) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep_until(until) => return true,
                Some(event) = self.next_event() => self.handle_event(event).await,
            }
        }
    }

    async fn wait_for_first_health(&mut self, shutdown: &CancellationToken) {
        if self.supervisor.is_none() {
            return;
        }
        let until = Instant::now() + FIRST_HEALTH_WAIT;
        while !self.monitor_reported {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(until) => return,
                Some(event) = self.next_event() => self.handle_event(event).await,
            }
        }
    }

    /// On shutdown: abandon an install in flight, stop the monitor gracefully.
    async fn stop(&mut self) {
        if let Some(install) = self.install.take() {
            install.task.abort();
        }
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.stop().await;
        }
        for task in self.retiring.drain(..) {
            let _ = task.await;
        }
    }

    // -----------------------------------------------------------------------------------
    // The server
    // -----------------------------------------------------------------------------------

    pub(crate) async fn handle_server_message(&mut self, msg: ServerToAgent) -> Handled {
        let directives = protocol::interpret(&msg, &self.current_server);
        self.apply(directives).await
    }

    async fn apply(&mut self, d: Directives) -> Handled {
        if let Some(error) = &d.error {
            match error {
                ServerError::Unavailable { retry_after } => {
                    return Handled::RetryAfter(*retry_after);
                }
                ServerError::BadRequest(message) => {
                    tracing::warn!(%message, "the server could not use our last message");
                }
                ServerError::Unknown(message) => {
                    tracing::warn!(%message, "the server reports an error");
                }
            }
        }
        if d.bad_instance_uid {
            tracing::warn!("the server sent a new instance uid that is not 16 bytes; ignored");
        }

        // Identity first: a clone gets its new uid and credential in one message, and
        // both must be on disk before either is used.
        let mut identity_changed = false;
        if let Some(uid) = d.new_instance_uid
            && uid != self.state.instance_uid
        {
            tracing::warn!(old = %self.state.instance_uid, new = %uid, "the server assigned a new instance uid (cloned desktop); adopting it");
            self.state.instance_uid = uid;
            self.builder.set_instance_uid(uid);
            identity_changed = true;
        }
        let mut new_credential = false;
        if let Some(credential) = d.credential {
            let same = self
                .state
                .credential
                .as_ref()
                .is_some_and(|c| c.expose_secret() == credential.expose_secret());
            if !same {
                tracing::info!("the server issued a desktop credential");
                self.state.credential = Some(credential);
                new_credential = true;
                identity_changed = true;
            }
        }
        let mut save_failure = None;
        if identity_changed && let Err(error) = self.save_state().await {
            // Keep going with it in memory: it works until this process ends.
            tracing::error!(%error, "cannot persist the new identity");
            save_failure = Some(error.to_string());
        }
        if let Some(hash) = d.connection_settings_hash {
            self.connection_settings =
                Some(protocol::connection_settings_status(hash, save_failure));
        }
        if let Some(heartbeat) = d.heartbeat {
            self.heartbeat = heartbeat;
        }

        if let Some(offered) = d.packages {
            let uninstall = offered.monitor.is_none()
                && offered.others.is_empty()
                && offered.all_packages_hash.as_slice() == EMPTY_PACKAGES_HASH.as_slice();
            self.packages.server_provided_all_packages_hash = offered.all_packages_hash;
            if uninstall {
                self.uninstall().await;
            }
            let mut changed = false;
            for (name, version) in &offered.others {
                tracing::warn!(package = %name, "offered a package this guest does not install");
                self.set_package_status(protocol::unsupported_package_status(name, version));
                changed = true;
            }
            match offered.monitor {
                Some(Ok(offer)) => self.consider_offer(offer).await,
                Some(Err(rejected)) => {
                    tracing::warn!(error = %rejected.error, "refusing a malformed package offer");
                    let status = protocol::failed_status(
                        MONITOR_PACKAGE,
                        self.state.package.as_ref(),
                        &rejected.version,
                        &rejected.offer_hash,
                        &rejected.error,
                    );
                    self.set_package_status(status);
                    changed = true;
                }
                None => {}
            }
            if changed {
                self.push_packages();
            }
        }

        if new_credential {
            // The next connection's first message is the full state anyway.
            return Handled::Reconnect;
        }
        if d.report_full_state || identity_changed {
            self.push_full_state();
        }
        Handled::Continue
    }

    async fn save_state(&self) -> Result<(), StateError> {
        let store = self.store.clone();
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || store.save(&state))
            .await
            .expect("saving the state does not panic")
    }

    /// An offer of `deskfleet-monitor`: start installing it unless it is in flight,
    /// being watched, or already installed and running; switch back without a download
    /// when it is the kept previous version.
    async fn consider_offer(&mut self, offer: PackageOffer) {
        if let Some(install) = &self.install {
            if same_package(&install.offer, &offer) {
                return; // The server repeats its offer until it hears progress.
            }
            tracing::info!(old = %install.offer.version, new = %offer.version, "a different package was offered; abandoning the install in flight");
            if let Some(install) = self.install.take() {
                install.task.abort();
            }
        }
        if let Some(active) = &self.watch {
            let watched = self.state.package.as_ref();
            if active.offered_version == offer.version
                && watched.is_some_and(|p| p.sha256 == offer.sha256_hex())
            {
                // The same offer again (a reconnect): still watching.
                let status = protocol::watching_status(
                    MONITOR_PACKAGE,
                    self.state.previous.as_ref(),
                    &active.offered_version,
                    &active.offered_hash,
                );
                self.last_offer = Some(offer);
                self.set_package_status(status);
                self.push_packages();
                return;
            }
            tracing::info!(watched = %active.offered_version, new = %offer.version, "another version was offered while watching; putting the previous one back first");
            self.end_watch_with_rollback(None).await;
        }
        if let Some(previous) = self.state.previous.clone()
            && previous.version == offer.version
            && previous.sha256 == offer.sha256_hex()
            && previous.path.is_file()
        {
            tracing::info!(version = %offer.version, "the offered version is the kept previous one; switching back without a download");
            self.last_offer = Some(offer.clone());
            self.switch_to(previous, &offer).await;
            return;
        }
        if let Some(installed) = &self.state.package
            && installed.version == offer.version
            && installed.sha256 == offer.sha256_hex()
            && self.monitor_runs()
        {
            tracing::info!(version = %offer.version, "offered version already installed and running");
            let status = protocol::installed_status(installed, Some(&offer));
            self.last_offer = Some(offer);
            self.set_package_status(status);
            self.push_packages();
            self.push_health(true);
            return;
        }
        self.start_install(offer);
    }

    /// Running and healthy, or just started and not yet known to be otherwise.
    fn monitor_runs(&self) -> bool {
        self.supervisor.is_some()
            && self.monitor_health.as_ref().is_some_and(|h| {
                h.healthy || (!self.monitor_reported && h.status.starts_with("starting "))
            })
    }

    fn start_install(&mut self, offer: PackageOffer) {
        let id = self.next_install_id;
        self.next_install_id += 1;
        tracing::info!(version = %offer.version, url = %offer.download_url, "installing");
        let status = protocol::progress_status(
            self.state.package.as_ref(),
            &offer,
            InstallStep::Downloading(0.0),
        );
        self.set_package_status(status);
        self.push_packages();

        let installer = self.installer.clone();
        let bearer = self.bearer();
        let tx = self.install_tx.clone();
        let task_offer = offer.clone();
        let task = tokio::spawn(async move {
            let progress_tx = tx.clone();
            let result = installer
                .install(&task_offer, Some(bearer.expose_secret()), |step| {
                    // Progress is droppable; the outcome below is not.
                    let _ = progress_tx.try_send((id, InstallUpdate::Step(step)));
                })
                .await;
            let _ = tx.send((id, InstallUpdate::Done(result))).await;
        });
        self.last_offer = Some(offer.clone());
        self.install = Some(InstallTask { id, offer, task });
    }

    // -----------------------------------------------------------------------------------
    // Installs and the monitor
    // -----------------------------------------------------------------------------------

    pub(crate) async fn handle_event(&mut self, event: Event) {
        match event {
            Event::Install { id, step } => {
                let Some(install) = self.install.as_ref().filter(|i| i.id == id) else {
                    return;
                };
                let status =
                    protocol::progress_status(self.state.package.as_ref(), &install.offer, step);
                self.set_package_status(status);
                self.push_packages();
            }
            Event::InstallDone { id, result } => {
                if self.install.as_ref().is_none_or(|i| i.id != id) {
                    return;
                }
                let Some(install) = self.install.take() else {
                    return;
                };
                match result {
                    Ok(package) => self.switch_to(package, &install.offer).await,
                    Err(error) => self.install_failed(&install.offer, error),
                }
            }
            Event::Monitor { generation, event } => {
                if self.supervisor.as_ref().map(|s| s.generation) != Some(generation) {
                    return; // From a monitor that is being replaced.
                }
                let verdict = match (&mut self.watch, &event) {
                    (Some(active), event) if active.generation == generation => {
                        let now = Instant::now();
                        match event {
                            MonitorEvent::Health { health, version } => active.watch.on_health(
                                version,
                                health.healthy,
                                &health.last_error,
                                now,
                            ),
                            MonitorEvent::Down {
                                health,
                                spawned: true,
                            } => active.watch.on_exit(&health.last_error, now),
                            MonitorEvent::Down {
                                health,
                                spawned: false,
                            } => active.watch.on_spawn_failed(&health.last_error, now),
                            _ => Verdict::Watching,
                        }
                    }
                    _ => Verdict::Watching,
                };
                self.monitor_event(event);
                if let Verdict::Failed(error) = verdict {
                    self.end_watch_with_rollback(Some(error)).await;
                }
            }
            Event::WatchDeadline => {
                let Some(active) = &self.watch else {
                    return;
                };
                match active.watch.verdict(Instant::now()) {
                    Verdict::Watching => {}
                    Verdict::Passed => self.confirm_watch().await,
                    Verdict::Failed(error) => self.end_watch_with_rollback(Some(error)).await,
                }
            }
        }
    }

    /// Switches to `package` (just installed beside the running version, or the kept
    /// previous one) and starts watching it. The version that ran becomes the kept
    /// previous one; the switch is on disk before the new agent starts.
    async fn switch_to(&mut self, package: InstalledPackage, offer: &PackageOffer) {
        let old_current = self.state.package.clone();
        let old_previous = self.state.previous.clone();
        let old_watching = self.state.watching.clone();
        // Reinstalling the version that runs replaced its files: the kept one stays.
        let new_previous = match &old_current {
            Some(current) if current.version != package.version => Some(current.clone()),
            _ => old_previous.clone(),
        };
        self.state.package = Some(package.clone());
        self.state.previous = new_previous;
        self.state.watching = Some(Watching {
            offer_hash: hex::encode(&offer.offer_hash),
            restore_previous: old_previous.clone(),
        });
        if let Err(error) = self.save_state().await {
            // Not recorded means not switched: a restart would not know it.
            self.state.package = old_current;
            self.state.previous = old_previous;
            self.state.watching = old_watching;
            let error = match &error {
                StateError::Io { source, .. } => {
                    InstallError::io("recording the installed package", source)
                }
                other => InstallError::new(ReasonCode::InstallFailed, other.to_string()),
            };
            self.install_failed(offer, error);
            return;
        }
        tracing::info!(version = %package.version, path = %package.path.display(), previous = ?self.state.previous.as_ref().map(|p| &p.version), "switched; watching the new version");
        self.start_watched(package, offer.version.clone(), offer.offer_hash.clone());
    }

    /// Starts `package` under watch (the state already says so) and reports `INSTALLING`.
    fn start_watched(
        &mut self,
        package: InstalledPackage,
        offered_version: String,
        offered_hash: Vec<u8>,
    ) {
        let status = protocol::watching_status(
            MONITOR_PACKAGE,
            self.state.previous.as_ref(),
            &offered_version,
            &offered_hash,
        );
        self.set_package_status(status);
        self.push_packages();
        self.retire_monitor();
        let expected = package.version.clone();
        let generation = self.start_monitor(package);
        self.watch = Some(ActiveWatch {
            watch: Watch::new(expected, self.config.watch_window, Instant::now()),
            generation,
            offered_version,
            offered_hash,
        });
        self.push_health(false);
    }

    /// Stops the running monitor in the background: the old one gets its graceful stop
    /// while the new one starts and the connection keeps being served.
    fn retire_monitor(&mut self) {
        if let Some(old) = self.supervisor.take() {
            self.retiring.retain(|task| !task.is_finished());
            self.retiring.push(tokio::spawn(old.stop()));
        }
    }

    /// The watch passed: the switch is confirmed, reported `INSTALLED`, and only the
    /// version that runs and the kept previous one stay on disk.
    async fn confirm_watch(&mut self) {
        let Some(active) = self.watch.take() else {
            return;
        };
        self.state.watching = None;
        if let Err(error) = self.save_state().await {
            // A restart would watch it once more; nothing worse.
            tracing::error!(%error, "cannot record the confirmed upgrade");
        }
        let Some(package) = self.state.package.clone() else {
            return;
        };
        tracing::info!(version = %package.version, "watch passed; upgrade confirmed");
        self.set_package_status(protocol::confirmed_status(
            &package,
            &active.offered_version,
            &active.offered_hash,
        ));
        self.push_packages();
        self.push_health(true);
        let root = self.config.install_root.clone();
        let previous = self.state.previous.as_ref().map(|p| p.version.clone());
        tokio::task::spawn_blocking(move || {
            let mut keep = vec![package.version.as_str()];
            keep.extend(previous.as_deref());
            remove_other_versions(&root, &package.name, &keep)
        });
    }

    /// The watched version failed (`Some(error)`, reported as `INSTALL_FAILED`) or is
    /// abandoned for another offer (`None`): stop it, make the kept previous version
    /// current again and start it. Nothing is deleted.
    async fn end_watch_with_rollback(&mut self, error: Option<InstallError>) {
        let Some(active) = self.watch.take() else {
            return;
        };
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.stop().await;
        }
        let failed = self.state.package.take();
        let target = self.state.previous.take();
        let restore = self
            .state
            .watching
            .take()
            .and_then(|w| w.restore_previous)
            .filter(|p| target.as_ref().is_none_or(|t| t.version != p.version));
        self.state.package = target.clone();
        self.state.previous = restore;
        if let Err(error) = self.save_state().await {
            tracing::error!(%error, "cannot record the rollback");
        }
        if let Some(error) = error {
            let error = rolled_back(error, target.as_ref().map(|t| t.version.as_str()));
            tracing::warn!(version = ?failed.as_ref().map(|p| &p.version), %error, "watch failed; rolled back");
            let status = protocol::failed_status(
                MONITOR_PACKAGE,
                target.as_ref(),
                &active.offered_version,
                &active.offered_hash,
                &error,
            );
            self.set_package_status(status);
            self.push_packages();
        }
        match target {
            Some(target) => {
                self.start_monitor(target);
            }
            None => {
                self.monitor_health = None;
                self.monitor_reported = false;
            }
        }
        self.push_health(false);
    }

    /// `PackagesAvailable` with no package and the empty hash: stop the agent, remove
    /// every installed version, and say so (`docs/fleet-protocol.md`, "Uninstall").
    async fn uninstall(&mut self) {
        tracing::info!("uninstalling the monitor");
        if let Some(install) = self.install.take() {
            install.task.abort();
        }
        self.watch = None;
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.stop().await;
        }
        for task in self.retiring.drain(..) {
            let _ = task.await;
        }
        self.monitor_health = None;
        self.monitor_reported = false;
        self.last_offer = None;
        self.state.package = None;
        self.state.previous = None;
        self.state.watching = None;
        // Recorded first: a guest restarted from here removes what is left.
        let saved = self.save_state().await.map_err(|e| {
            InstallError::new(
                ReasonCode::UninstallFailed,
                format!("recording the uninstall: {e}"),
            )
        });
        let root = self.config.install_root.clone();
        let removed = tokio::task::spawn_blocking(move || remove_package(&root, MONITOR_PACKAGE))
            .await
            .unwrap_or_else(|e| {
                Err(InstallError::new(
                    ReasonCode::UninstallFailed,
                    e.to_string(),
                ))
            });
        match saved.and(removed) {
            Ok(()) => {
                tracing::info!("monitor uninstalled");
                self.packages.packages.remove(MONITOR_PACKAGE);
            }
            Err(error) => {
                tracing::warn!(%error, "uninstall failed");
                self.set_package_status(PackageStatus {
                    name: MONITOR_PACKAGE.to_owned(),
                    status: PackageStatusEnum::InstallFailed as i32,
                    error_message: error.to_string(),
                    ..Default::default()
                });
            }
        }
        self.push_packages();
        self.push_health(true);
    }

    fn install_failed(&mut self, offer: &PackageOffer, error: InstallError) {
        tracing::warn!(version = %offer.version, %error, "install failed");
        let status = protocol::failed_status(
            &offer.name,
            self.state.package.as_ref(),
            &offer.version,
            &offer.offer_hash,
            &error,
        );
        self.set_package_status(status);
        self.push_packages();
    }

    /// Starts a supervisor for `package`; its generation.
    fn start_monitor(&mut self, package: InstalledPackage) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.monitor_health = Some(protocol::monitor_down(
            format!("starting {MONITOR_PACKAGE}/{}", package.version),
            String::new(),
            SystemTime::now(),
        ));
        self.monitor_reported = false;
        let settings = SuperviseSettings {
            interval: self.config.monitor_interval,
            start_timeout: self.config.monitor_start_timeout,
            stop_timeout: self.config.monitor_stop_timeout,
            restart: self.config.monitor_restart,
        };
        self.supervisor = Some(Supervisor::start(
            package,
            generation,
            settings,
            self.monitor_tx.clone(),
        ));
        generation
    }

    fn monitor_event(&mut self, event: MonitorEvent) {
        match event {
            MonitorEvent::Down { health, .. } => {
                self.monitor_health = Some(health);
                self.push_health(false);
            }
            MonitorEvent::Health { health, .. } => {
                self.monitor_reported = true;
                self.monitor_health = Some(health);
                self.push_health(false);
            }
            MonitorEvent::Metrics(json) => {
                if self.connected {
                    let msg = self.builder.metrics(json);
                    self.outbox.push(msg);
                }
            }
            MonitorEvent::NotStarted(reason) => {
                // A switch is judged by its watch; a monitor started with the guest is
                // described by its health (`starting`, then `restarting`).
                tracing::warn!(%reason, "the monitor has not reported yet");
            }
        }
    }
}

/// The same package, by version and content.
fn same_package(a: &PackageOffer, b: &PackageOffer) -> bool {
    a.name == b.name && a.version == b.version && a.content_hash == b.content_hash
}
