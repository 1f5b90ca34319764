//! One desktop's OpAMP session: identifies the desktop (enrollment, clones), turns its
//! reports into sub-job progress, and hands it work.
//!
//! A `Session` is owned by exactly one task (a WebSocket connection, or the HTTP polling
//! entry of one agent), so its state needs no lock. Everything durable goes through the
//! store; everything here can be rebuilt from it when a guest reconnects.

use super::{Fleet, FleetAuth, MONITOR_CAPABILITY, Push, new_credential};
use crate::AppState;
use crate::fleet::packages::{MONITOR, platform};
use deskfleet_core::clock::Millis;
use deskfleet_core::fleet::{
    Claim, DesktopFacts, DesktopIdentity, Enrollment, PackageMeta, SubJobReport,
};
use deskfleet_core::ids::{DesktopId, SubJobId};
use deskfleet_core::job::{Operation, Stage};
use deskfleet_core::model::{AgentState, Outcome, SubJob};
use deskfleet_core::store::StoreError;
use deskfleet_proto::error::TaskErrorCode;
use deskfleet_proto::opamp::{
    self as op, AgentCapabilities, AgentToServer, PackageStatusEnum, ServerCapabilities,
    ServerToAgent, ServerToAgentFlags, has_capability,
};
use tokio::sync::mpsc;

/// Work handed to this session and not finished yet.
#[derive(Debug, Clone)]
struct Offer {
    sub_job: SubJobId,
    operation: Operation,
    /// The package put in place; for UNINSTALL, none (the empty offer).
    package: Option<PackageMeta>,
    stage: Stage,
    process: i32,
    /// When the sub-job started (was claimed), for the install duration.
    started_at: Millis,
    /// Whether the package was offered on this connection yet.
    announced: bool,
}

pub struct Session {
    state: AppState,
    auth: FleetAuth,
    conn_id: u64,
    /// The base URL guests download packages from.
    base_url: String,
    push: Option<mpsc::Sender<Push>>,
    desktop: Option<DesktopIdentity>,
    instance_uid: Vec<u8>,
    last_seq: Option<u64>,
    capabilities: u64,
    platform: String,
    replied: bool,
    current: Option<Offer>,
    /// The monitoring agent as last reported: (version, healthy).
    agent: Option<(String, bool)>,
    last_metrics_at: Millis,
    /// Set when the session identifies: look for work in the answer.
    look_for_work: bool,
    /// When this session's connection was recorded as holding the desktop; taken when
    /// the disconnect is recorded, so that it is recorded once.
    connected_at: Option<Millis>,
    /// When the guest's last message arrived on this session.
    last_seen: Millis,
}

fn fleet(state: &AppState) -> &Fleet {
    &state.fleet
}

impl Session {
    pub fn new(
        state: AppState,
        auth: FleetAuth,
        base_url: String,
        push: Option<mpsc::Sender<Push>>,
    ) -> Self {
        let conn_id = fleet(&state).next_conn_id();
        Self {
            state,
            auth,
            conn_id,
            base_url,
            push,
            desktop: None,
            instance_uid: Vec::new(),
            last_seq: None,
            capabilities: 0,
            platform: String::new(),
            replied: false,
            current: None,
            agent: None,
            last_metrics_at: 0,
            look_for_work: false,
            connected_at: None,
            last_seen: 0,
        }
    }

    pub fn instance_uid(&self) -> &[u8] {
        &self.instance_uid
    }

    /// Has this desktop an install (or uninstall) in flight on this connection?
    pub fn busy(&self) -> bool {
        self.current.is_some()
    }

    pub fn desktop_id(&self) -> Option<&DesktopId> {
        self.desktop.as_ref().map(|d| &d.desktop.id)
    }

    /// Handles one message and builds the answer.
    pub async fn handle(&mut self, msg: AgentToServer) -> Result<ServerToAgent, StoreError> {
        let mut reply = ServerToAgent {
            instance_uid: msg.instance_uid.clone(),
            ..Default::default()
        };
        if !self.replied {
            reply.capabilities = ServerCapabilities::bits(&[
                ServerCapabilities::AcceptsStatus,
                ServerCapabilities::OffersPackages,
                ServerCapabilities::AcceptsPackagesStatus,
                ServerCapabilities::OffersConnectionSettings,
            ]);
            self.replied = true;
        }
        if msg.instance_uid.len() != op::INSTANCE_UID_LEN {
            reply.error_response = Some(op::ServerErrorResponse {
                r#type: op::ServerErrorResponseType::BadRequest as i32,
                error_message: format!("instance_uid must be {} bytes", op::INSTANCE_UID_LEN),
                details: None,
            });
            return Ok(reply);
        }
        // A gap in the sequence means we missed state: ask for all of it.
        if let Some(last) = self.last_seq
            && msg.sequence_num != last.wrapping_add(1)
        {
            reply.flags |= ServerToAgentFlags::ReportFullState.bit();
        }
        self.last_seq = Some(msg.sequence_num);
        if msg.capabilities != 0 {
            self.capabilities = msg.capabilities;
        }
        if let Some(description) = &msg.agent_description {
            let os = description.get_str("os.type").unwrap_or("unknown");
            let arch = description.get_str("host.arch").unwrap_or("unknown");
            self.platform = platform(os, arch);
        }

        if self.desktop.is_none() {
            let Some(description) = &msg.agent_description else {
                reply.flags |= ServerToAgentFlags::ReportFullState.bit();
                return Ok(reply);
            };
            self.identify(&msg.instance_uid, facts(description), &mut reply)
                .await?;
            self.resume_running_work().await?;
            self.look_for_work = true;
        } else if msg.instance_uid != self.instance_uid && reply.agent_identification.is_none() {
            // The agent switched to the uid we assigned it.
            self.instance_uid = msg.instance_uid.clone();
        } else if let Some(description) = &msg.agent_description
            && let Some(d) = &self.desktop
        {
            let facts = facts(description);
            if d.hostname.as_deref() != Some(facts.hostname.as_str()) {
                self.state
                    .store
                    .record_desktop_facts(&d.desktop.id, &facts, self.state.clock.now())
                    .await?;
            }
        }

        // Any message of the guest, a heartbeat included, shows it alive.
        if let Some(desktop) = self.desktop_id() {
            let now = self.state.clock.now();
            fleet(&self.state).last_seen.seen(desktop, now);
            self.last_seen = now;
        }

        if msg.agent_disconnect.is_some() {
            self.close().await;
            return Ok(reply);
        }
        if let Some(statuses) = &msg.package_statuses {
            if self
                .current
                .as_ref()
                .is_some_and(|o| o.operation == Operation::Uninstall)
            {
                self.on_uninstall_status(statuses).await?;
            } else if let Some(status) = statuses.packages.get(MONITOR) {
                self.on_package_status(status).await?;
            }
        }
        if let Some(health) = &msg.health {
            self.on_health(health).await?;
        }
        if let Some(custom) = &msg.custom_message
            && custom.capability == MONITOR_CAPABILITY
            && custom.r#type == "metrics"
        {
            self.on_metrics(&custom.data).await?;
        }
        // Pushed (WebSocket) sessions look for work when they identify and when the
        // scheduler wakes them, not on every heartbeat; polled (HTTP) ones on every poll.
        if self.push.is_none() || std::mem::take(&mut self.look_for_work) {
            self.deliver(&mut reply).await?;
        }
        Ok(reply)
    }

    /// Establishes which desktop this is: enrolls it, or recognises it by its credential,
    /// giving a cloned desktop an identity of its own.
    ///
    /// A clone is told from a reconnect by what it says of itself: a cloned image comes up
    /// under another host name (or, when two copies run under one name at once, from
    /// another address). The same host reconnecting, even while its old connection has
    /// not timed out yet, takes its identity over.
    async fn identify(
        &mut self,
        uid: &[u8],
        facts: DesktopFacts,
        reply: &mut ServerToAgent,
    ) -> Result<(), StoreError> {
        let store = &self.state.store;
        let now = self.state.clock.now();
        let uid_hex = hex::encode(uid);
        let same_host = |identity: &DesktopIdentity| {
            identity
                .hostname
                .as_deref()
                .is_none_or(|n| n.eq_ignore_ascii_case(&facts.hostname))
        };
        let same_address = |identity: &DesktopIdentity| {
            facts.ip_addresses.is_empty()
                || facts.ip_addresses.contains(&identity.desktop.ip_address)
        };
        let identity = match &self.auth {
            // An enrollment token never takes over an existing desktop: a uid the project
            // already knows (a clone, or someone who read it in a log) gets a new one.
            // Only a desktop-bound token claims an imported desktop, and only its own.
            FleetAuth::Enrollment {
                grant,
                token_sha256,
            } => {
                let project = grant.project.clone();
                let claim = grant.desktop.clone().map(|desktop| Claim {
                    desktop,
                    token_sha256: token_sha256.clone(),
                });
                let known = store
                    .find_desktop_by_instance_uid(&project, &uid_hex)
                    .await?
                    .is_some();
                if known {
                    tracing::warn!(instance_uid = %uid_hex, hostname = %facts.hostname, "an enrollment presented a known instance uid; enrolling it under a new one");
                }
                return self
                    .enroll(project, uid, known, claim, facts, reply, now)
                    .await;
            }
            FleetAuth::Desktop(identity) => (**identity).clone(),
        };
        let live_elsewhere = fleet(&self.state).desktop_is_live(&identity.desktop.id, self.conn_id);
        if !same_host(&identity) || (live_elsewhere && !same_address(&identity)) {
            tracing::warn!(desktop_id = %identity.desktop.id, hostname = %facts.hostname, "cloned desktop detected; enrolling it as a new desktop");
            return self
                .enroll(
                    identity.desktop.project_id.clone(),
                    uid,
                    true,
                    None,
                    facts,
                    reply,
                    now,
                )
                .await;
        }
        store
            .record_desktop_facts(&identity.desktop.id, &facts, now)
            .await?;
        self.instance_uid = uid.to_vec();
        self.register(identity).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn enroll(
        &mut self,
        project: deskfleet_core::ids::ProjectId,
        uid: &[u8],
        new_uid: bool,
        claim: Option<Claim>,
        facts: DesktopFacts,
        reply: &mut ServerToAgent,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (credential, credential_sha256) = new_credential();
        let offer_hash = hex::decode(&credential_sha256).unwrap_or_default();
        let mut new_uid = new_uid;
        let mut attempt = 0;
        let scope = crate::audit::enrollment_scope(
            &self.state,
            &project,
            &facts,
            claim.as_ref().map(|c| c.desktop.as_str()),
        );
        let (uid, enrolled) = loop {
            attempt += 1;
            let uid = if new_uid {
                uuid::Uuid::now_v7().as_bytes().to_vec()
            } else {
                uid.to_vec()
            };
            let enrollment = Enrollment {
                instance_uid: hex::encode(&uid),
                facts: facts.clone(),
                credential_sha256: credential_sha256.clone(),
                claim: claim.clone(),
            };
            match scope
                .run(self.state.store.enroll_desktop(&project, &enrollment, now))
                .await
            {
                Ok(enrolled) => break (uid, enrolled),
                // The uid was taken since we looked (a concurrent enrollment of the same
                // uid): a fresh one, once. A spent claim fails the same way every time.
                Err(StoreError::AlreadyExists(_)) if !new_uid && attempt == 1 => new_uid = true,
                Err(e) => {
                    crate::audit::enrollment_failed(&self.state, &scope, &e.to_string()).await;
                    return Err(e);
                }
            }
        };
        if new_uid {
            reply.agent_identification = Some(op::AgentIdentification {
                new_instance_uid: uid.clone(),
            });
        }
        let uid_hex = hex::encode(&uid);
        tracing::info!(desktop_id = %enrolled.desktop.id, hostname = %facts.hostname, matched_import = enrolled.matched_import, "desktop enrolled");
        // OpAMP lets a server offer connection settings only to agents that accept them;
        // an agent that does not keeps using its enrollment token.
        let accepts_settings = has_capability(
            self.capabilities,
            AgentCapabilities::AcceptsOpAmpConnectionSettings,
        );
        reply.connection_settings = accepts_settings.then(|| op::ConnectionSettingsOffers {
            hash: offer_hash,
            opamp: Some(op::OpAmpConnectionSettings {
                headers: Some(op::Headers {
                    headers: vec![op::Header {
                        key: "Authorization".into(),
                        value: format!("Bearer {credential}"),
                    }],
                }),
                heartbeat_interval_seconds: self.state.settings.fleet.heartbeat_secs,
                ..Default::default()
            }),
            ..Default::default()
        });
        self.instance_uid = uid;
        let identity = DesktopIdentity {
            desktop: enrolled.desktop,
            instance_uid: Some(uid_hex.clone()),
            hostname: Some(facts.hostname),
        };
        self.register(identity).await
    }

    /// Registers this connection as the desktop's, here and in the store (the desktop is
    /// online from now on).
    async fn register(&mut self, identity: DesktopIdentity) -> Result<(), StoreError> {
        let stale_after =
            std::time::Duration::from_secs(3 * self.state.settings.fleet.heartbeat_secs.max(1));
        fleet(&self.state).register(
            &identity.desktop.id,
            self.conn_id,
            self.push.clone(),
            stale_after,
        );
        let now = self.state.clock.now();
        let desktop = identity.desktop.id.clone();
        self.desktop = Some(identity);
        self.state.store.record_connected(&desktop, now).await?;
        self.connected_at = Some(now);
        self.last_seen = now;
        Ok(())
    }

    /// Unregisters this session and records the disconnect (its connection ended: the
    /// guest closed it or said goodbye, it went idle, or the server is shutting down).
    pub async fn close(&mut self) {
        if let Some(write) = self.unregister() {
            write.await;
        }
    }

    /// [`Session::close`] for a caller that cannot wait: the write runs on its own task.
    pub fn close_detached(&mut self) {
        if let Some(write) = self.unregister() {
            tokio::spawn(write);
        }
    }

    /// Unregisters this session; the store write of the disconnect, once.
    fn unregister(&mut self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let d = self.desktop.as_ref()?;
        fleet(&self.state).unregister(&d.desktop.id, self.conn_id);
        let connected_at = self.connected_at.take()?;
        let (store, desktop) = (self.state.store.clone(), d.desktop.id.clone());
        let (now, last_seen) = (self.state.clock.now(), self.last_seen);
        Some(async move {
            match store
                .record_disconnected(&desktop, connected_at, now, last_seen)
                .await
            {
                Ok(true) => tracing::info!(desktop_id = %desktop, "desktop offline"),
                // Another connection holds it now: it stays online.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(desktop_id = %desktop, error = %e, "the disconnect could not be recorded; the desktop goes offline once it has not been seen for three heartbeat intervals")
                }
            }
        })
    }

    /// After a reconnect (or a server restart), work this desktop already runs is offered
    /// again; the guest recognises what it has and reports where it is.
    async fn resume_running_work(&mut self) -> Result<(), StoreError> {
        let Some(desktop) = self.desktop_id().cloned() else {
            return Ok(());
        };
        if let Some(sub) = self.state.store.running_sub_job(&desktop).await? {
            metrics::counter!("deskfleet_fleet_work_resumed_total").increment(1);
            let started_at = sub.begin_time.unwrap_or_else(|| self.state.clock.now());
            self.offer_for(&sub, sub.stage, sub.process, started_at)
                .await?;
        }
        Ok(())
    }

    /// Makes the offer of a sub-job: its target version of the monitor package (the newest
    /// published when it has none recorded), or the empty offer of an UNINSTALL. A
    /// version not published for this desktop's platform fails the sub-job.
    async fn offer_for(
        &mut self,
        sub: &SubJob,
        stage: Stage,
        process: i32,
        started_at: Millis,
    ) -> Result<bool, StoreError> {
        let sub_job = sub.id.clone();
        let offer = |package| Offer {
            sub_job: sub.id.clone(),
            operation: sub.operation,
            package,
            stage,
            process,
            started_at,
            announced: false,
        };
        if !sub.operation.installs() {
            self.current = Some(offer(None));
            return Ok(true);
        }
        let platform = if self.platform.is_empty() {
            super::packages::host_platform()
        } else {
            self.platform.clone()
        };
        let package = match &sub.target_version {
            Some(version) => {
                self.state
                    .store
                    .find_package_version(MONITOR, version, &platform)
                    .await?
            }
            None => {
                fleet(&self.state)
                    .packages
                    .latest(&self.state, &platform)
                    .await?
            }
        };
        match package {
            Some(package) => {
                self.current = Some(offer(Some(package)));
                Ok(true)
            }
            None => {
                let reason = match &sub.target_version {
                    Some(version) => format!(
                        "{MONITOR} {version} is not published for platform {platform}; publish it with `deskfleet-server admin packages publish`, or choose another version"
                    ),
                    None => format!(
                        "no {MONITOR} package is published for platform {platform}; publish one with `deskfleet-server admin packages publish`"
                    ),
                };
                self.finish(
                    sub_job,
                    started_at,
                    Outcome::Failed {
                        code: TaskErrorCode::InstallFailed.code().into(),
                        reason,
                    },
                )
                .await?;
                Ok(false)
            }
        }
    }

    /// Hands the desktop its next install, if it has none in flight here.
    pub async fn deliver(&mut self, reply: &mut ServerToAgent) -> Result<(), StoreError> {
        let Some(desktop) = self.desktop_id().cloned() else {
            return Ok(());
        };
        // A draining replica claims nothing new: its desktops take new work from the
        // replica they reconnect to.
        if self.current.is_none()
            && has_capability(self.capabilities, AgentCapabilities::AcceptsPackages)
            && !fleet(&self.state).shutdown.is_cancelled()
        {
            let now = self.state.clock.now();
            let execute_by = now + self.state.settings.jobs.execution_timeout_ms as i64;
            if let Some(sub) = self
                .state
                .store
                .claim_desktop_work(&desktop, now, execute_by)
                .await?
            {
                tracing::info!(desktop_id = %desktop, sub_job = %sub.id, "install delivered");
                let started_at = sub.begin_time.unwrap_or(now);
                self.offer_for(
                    &sub,
                    Stage::Delivered,
                    Stage::Delivered.process(None),
                    started_at,
                )
                .await?;
                // Already running the offered version, healthily: done, nothing to install.
                if let (Some(offer), Some((version, true))) = (&self.current, &self.agent)
                    && offer
                        .package
                        .as_ref()
                        .is_some_and(|p| &p.version == version)
                {
                    let sub_job = offer.sub_job.clone();
                    self.current = None;
                    self.finish(sub_job, started_at, Outcome::Success).await?;
                    return Ok(());
                }
            }
        }
        // Offered once per connection: after a reconnect (or a server restart) the guest
        // is told again, and reports where it is with the package.
        if let Some(offer) = &self.current
            && !offer.announced
        {
            reply.packages_available = Some(match &offer.package {
                Some(package) => self.packages_available(package),
                // UNINSTALL: nothing is to be installed.
                None => op::PackagesAvailable {
                    packages: std::collections::BTreeMap::new(),
                    all_packages_hash: op::EMPTY_PACKAGES_HASH.to_vec(),
                },
            });
            if let Some(offer) = &mut self.current {
                offer.announced = true;
            }
        }
        Ok(())
    }

    fn packages_available(&self, p: &PackageMeta) -> op::PackagesAvailable {
        let content_hash = hex::decode(&p.sha256).unwrap_or_default();
        let file = op::DownloadableFile {
            download_url: format!("{}/v1/packages/{}", self.base_url, p.id),
            content_hash: content_hash.clone(),
            signature: hex::decode(&p.signature).unwrap_or_default(),
            headers: None,
        };
        let mut packages = std::collections::BTreeMap::new();
        packages.insert(
            MONITOR.to_string(),
            op::PackageAvailable {
                r#type: op::PackageType::TopLevel as i32,
                version: p.version.clone(),
                file: Some(file),
                hash: content_hash.clone(),
            },
        );
        op::PackagesAvailable {
            packages,
            all_packages_hash: content_hash,
        }
    }

    async fn on_package_status(&mut self, status: &op::PackageStatus) -> Result<(), StoreError> {
        let Some(offer) = &self.current else {
            return Ok(());
        };
        let Some(package) = &offer.package else {
            return Ok(());
        };
        if !status.server_offered_version.is_empty()
            && status.server_offered_version != package.version
        {
            return Ok(()); // about an older offer
        }
        let (stage, percent) = match PackageStatusEnum::try_from(status.status) {
            Ok(PackageStatusEnum::Downloading) => {
                let pct = status
                    .download_details
                    .as_ref()
                    .map(|d| d.download_percent)
                    .unwrap_or(0.0);
                if pct >= 100.0 {
                    (Stage::Verifying, None)
                } else {
                    (Stage::Downloading, Some(pct.clamp(0.0, 100.0) as u8))
                }
            }
            Ok(PackageStatusEnum::Installing) => (Stage::Installing, None),
            // The guest reports Installed once the new version passed its watch window
            // (started, healthy, reporting the version it was packaged as): done.
            Ok(PackageStatusEnum::Installed) if status.agent_has_version == package.version => {
                let (sub_job, started_at) = (offer.sub_job.clone(), offer.started_at);
                let version = package.version.clone();
                self.current = None;
                self.record_agent(Some((version.clone(), true))).await?;
                tracing::info!(desktop_id = ?self.desktop_id(), %version, "agent installed and watched; done");
                return self.finish(sub_job, started_at, Outcome::Success).await;
            }
            // A failure is only believed once the offer was made on this connection: the
            // full state a guest sends on reconnect still carries an older failure.
            Ok(PackageStatusEnum::InstallFailed) if !offer.announced => return Ok(()),
            Ok(PackageStatusEnum::InstallFailed) => {
                let (code, reason) = task_error(&status.error_message);
                let (sub_job, started_at) = (offer.sub_job.clone(), offer.started_at);
                self.current = None;
                tracing::info!(desktop_id = ?self.desktop_id(), %code, %reason, "install failed");
                return self
                    .finish(
                        sub_job,
                        started_at,
                        Outcome::Failed {
                            code: code.into(),
                            reason,
                        },
                    )
                    .await;
            }
            _ => return Ok(()),
        };
        self.progress(stage, stage.process(percent)).await
    }

    async fn progress(&mut self, stage: Stage, process: i32) -> Result<(), StoreError> {
        let Some(offer) = &mut self.current else {
            return Ok(());
        };
        if process <= offer.process {
            return Ok(());
        }
        offer.stage = stage;
        offer.process = process;
        let execute_by =
            self.state.clock.now() + self.state.settings.jobs.execution_timeout_ms as i64;
        let report = SubJobReport::Progress {
            sub_job: offer.sub_job.clone(),
            stage,
            process,
            execute_by,
        };
        self.report(report).await
    }

    async fn on_health(&mut self, health: &op::ComponentHealth) -> Result<(), StoreError> {
        let Some(component) = health.component_health_map.get(MONITOR) else {
            return Ok(());
        };
        let version = component
            .status
            .strip_prefix("running ")
            .and_then(|s| s.strip_prefix(MONITOR))
            .and_then(|s| s.strip_prefix('/'))
            .map(str::to_string);
        // A monitor that is not running (starting, restarting, stopped) reports no version:
        // it is the known agent, unhealthy, not "no news".
        let known = || {
            self.agent.as_ref().map(|(v, _)| v.clone()).or_else(|| {
                let d = self.desktop.as_ref()?;
                d.desktop.agent.as_ref().map(|a| a.version.clone())
            })
        };
        let reported = match version {
            Some(v) => Some((v, component.healthy)),
            None => known().map(|v| (v, false)),
        };
        if reported.is_some() && reported != self.agent {
            self.record_agent(reported).await?;
        }
        // A health line alone no longer ends work: the guest's Installed does (it watched
        // the new version first).
        if let Some(offer) = &self.current
            && offer.stage == Stage::Started
            && !component.last_error.is_empty()
            && !component.healthy
        {
            tracing::debug!(error = %component.last_error, "agent not healthy yet");
        }
        Ok(())
    }

    /// Records the monitoring agent as the guest reports it: `(version, healthy)`, or
    /// `None` once it is uninstalled.
    async fn record_agent(&mut self, agent: Option<(String, bool)>) -> Result<(), StoreError> {
        if let Some(desktop) = self.desktop_id().cloned() {
            let state = agent.as_ref().map(|(version, healthy)| AgentState {
                version: version.clone(),
                healthy: *healthy,
                reported_at: self.state.clock.now(),
            });
            self.state
                .store
                .record_agent_state(&desktop, state.as_ref())
                .await?;
        }
        self.agent = agent;
        Ok(())
    }

    /// The guest's package statuses while an UNINSTALL is offered: no monitor entry under
    /// the empty hash is done; a monitor entry InstallFailed under it is the failure.
    async fn on_uninstall_status(
        &mut self,
        statuses: &op::PackageStatuses,
    ) -> Result<(), StoreError> {
        let Some(offer) = &self.current else {
            return Ok(());
        };
        if statuses.server_provided_all_packages_hash != op::EMPTY_PACKAGES_HASH {
            return Ok(()); // about an earlier offer
        }
        let (sub_job, started_at) = (offer.sub_job.clone(), offer.started_at);
        match statuses.packages.get(MONITOR) {
            None => {
                self.current = None;
                self.record_agent(None).await?;
                tracing::info!(desktop_id = ?self.desktop_id(), "agent uninstalled");
                self.finish(sub_job, started_at, Outcome::Success).await
            }
            Some(status)
                if offer.announced
                    && PackageStatusEnum::try_from(status.status)
                        == Ok(PackageStatusEnum::InstallFailed) =>
            {
                let (code, reason) = task_error(&status.error_message);
                self.current = None;
                tracing::info!(desktop_id = ?self.desktop_id(), %code, %reason, "uninstall failed");
                self.finish(
                    sub_job,
                    started_at,
                    Outcome::Failed {
                        code: code.into(),
                        reason,
                    },
                )
                .await
            }
            Some(_) => Ok(()),
        }
    }

    async fn on_metrics(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let now = self.state.clock.now();
        let min_gap = self.state.settings.fleet.metrics_min_interval_ms as i64;
        let Some(desktop) = self.desktop_id().cloned() else {
            return Ok(());
        };
        if now - self.last_metrics_at < min_gap || data.len() > 64 * 1024 {
            return Ok(());
        }
        let Ok(json) = std::str::from_utf8(data) else {
            return Ok(());
        };
        if serde_json::from_str::<serde_json::Value>(json).is_err() {
            return Ok(());
        }
        self.last_metrics_at = now;
        // Queued, never awaited: the ingest worker writes the time series and the latest
        // report in batches (a full queue drops the report and counts it).
        self.state.metric_queue.offer(crate::timeseries::Queued {
            desktop,
            json: json.to_owned(),
            received_at: now,
        });
        Ok(())
    }

    /// Records the end of a sub-job, and how long it took from its start.
    async fn finish(
        &self,
        sub_job: SubJobId,
        started_at: Millis,
        outcome: Outcome,
    ) -> Result<(), StoreError> {
        let label = match outcome {
            Outcome::Success => "success",
            Outcome::Failed { .. } => "failed",
        };
        self.report(SubJobReport::Finish { sub_job, outcome })
            .await?;
        let secs = (self.state.clock.now() - started_at).max(0) as f64 / 1000.0;
        metrics::histogram!("deskfleet_install_duration_seconds", "outcome" => label).record(secs);
        Ok(())
    }

    async fn report(&self, report: SubJobReport) -> Result<(), StoreError> {
        let state = &self.state;
        fleet(state)
            .reports
            .write(&state.store, &state.clock, report)
            .await
    }
}

/// The desktop's facts from its OpAMP description.
fn facts(d: &op::AgentDescription) -> DesktopFacts {
    let os_type = match d
        .get_str("os.type")
        .unwrap_or("")
        .to_ascii_lowercase()
        .as_str()
    {
        "linux" => "Linux",
        "windows" => "Windows",
        _ => "Others",
    };
    DesktopFacts {
        hostname: d
            .get_str("host.name")
            .unwrap_or("unknown")
            .chars()
            .take(55)
            .collect(),
        os_type: os_type.to_string(),
        ip_addresses: d
            .get_str("host.ip")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
            .map(str::to_string)
            .collect(),
    }
}

/// Maps the guest's `<reason-code>: <reason>` to a task error code.
pub fn task_error(message: &str) -> (&'static str, String) {
    let (tag, reason) = message
        .split_once(':')
        .map(|(t, r)| (t.trim(), r.trim()))
        .unwrap_or(("", message.trim()));
    let code = match tag {
        "download_failed" => TaskErrorCode::DownloadFailed,
        "checksum_mismatch" => TaskErrorCode::ChecksumMismatch,
        "bad_signature" => TaskErrorCode::BadSignature,
        "no_space" | "no_permission" => TaskErrorCode::NoSpaceOrPermission,
        "agent_not_started" => TaskErrorCode::AgentNotStarted,
        "agent-exited" => TaskErrorCode::AgentExited,
        "agent-unhealthy" => TaskErrorCode::AgentUnhealthy,
        "version-mismatch" => TaskErrorCode::VersionMismatch,
        "uninstall-failed" => TaskErrorCode::UninstallFailed,
        _ => TaskErrorCode::InstallFailed,
    };
    let reason = if reason.is_empty() {
        "the install failed on the desktop".to_string()
    } else {
        reason.chars().take(255).collect()
    };
    (code.code(), reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_reasons_map_to_task_codes() {
        assert_eq!(
            task_error("checksum_mismatch: sha256 differs").0,
            "WKS.00990005"
        );
        assert_eq!(
            task_error("bad_signature: not signed by the trusted key").0,
            "WKS.00990006"
        );
        assert_eq!(task_error("no_permission: /opt").0, "WKS.00990007");
        assert_eq!(task_error("no_space: disk full").0, "WKS.00990007");
        assert_eq!(task_error("download_failed: 404").0, "WKS.00990004");
        assert_eq!(task_error("agent_not_started: no health").0, "WKS.00990009");
        let (code, reason) = task_error("something odd");
        assert_eq!((code, reason.as_str()), ("WKS.00990008", "something odd"));
    }

    #[test]
    fn watch_and_uninstall_reasons_map_to_their_own_codes_and_keep_the_guests_words() {
        let (code, reason) = task_error(
            "agent-exited: deskfleet-monitor 0.9.0 exited (exit status: 3); rolled back to 0.1.0",
        );
        assert_eq!(code, "WKS.00990021");
        assert_eq!(
            reason,
            "deskfleet-monitor 0.9.0 exited (exit status: 3); rolled back to 0.1.0"
        );
        assert_eq!(
            task_error("agent-unhealthy: still unhealthy; rolled back to 0.1.0").0,
            "WKS.00990022"
        );
        let (code, reason) = task_error(
            "version-mismatch: the package is deskfleet-monitor 0.3.0 but its agent reports version 0.1.0; rolled back to 0.2.0",
        );
        assert_eq!(code, "WKS.00990023");
        assert!(reason.ends_with("rolled back to 0.2.0"), "{reason}");
        assert_eq!(
            task_error("uninstall-failed: removing /x: permission denied").0,
            "WKS.00990024"
        );
        // Every code the guest can report has its own task code, distinct from the
        // catch-all.
        for tag in [
            "agent-exited",
            "agent-unhealthy",
            "version-mismatch",
            "uninstall-failed",
        ] {
            assert_ne!(task_error(&format!("{tag}: x")).0, "WKS.00990008", "{tag}");
        }
    }

    #[test]
    fn facts_come_from_the_description() {
        let d = op::AgentDescription {
            identifying_attributes: vec![op::KeyValue::string("service.name", "deskfleet-guest")],
            non_identifying_attributes: vec![
                op::KeyValue::string("host.name", "wks-7"),
                op::KeyValue::string("os.type", "linux"),
                op::KeyValue::string("host.ip", "10.0.0.7, fe80::1,bogus"),
            ],
        };
        let f = facts(&d);
        assert_eq!(f.hostname, "wks-7");
        assert_eq!(f.os_type, "Linux");
        assert_eq!(f.ip_addresses, ["10.0.0.7", "fe80::1"]);
    }
}
