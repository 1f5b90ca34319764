//! The guest's side of OpAMP as pure functions: building every [`AgentToServer`] it
//! sends, and reading a [`ServerToAgent`] into [`Directives`]. No IO here, so a load
//! generator can simulate thousands of guests with these and a WebSocket.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deskfleet_proto::opamp::{
    AgentCapabilities, AgentDescription, AgentDisconnect, AgentToServer, ComponentHealth,
    ConnectionSettingsStatus, ConnectionSettingsStatuses, CustomCapabilities, CustomMessage,
    KeyValue, PackageDownloadDetails, PackageStatus, PackageStatusEnum, PackageStatuses,
    ServerErrorResponseType, ServerToAgent, ServerToAgentFlags, has_capability,
    server_error_response,
};
use reqwest::Url;
use secrecy::SecretString;

use crate::host::HostFacts;
use crate::install::{InstallError, InstallStep, MONITOR_PACKAGE, PackageOffer, ReasonCode};
use crate::state::{InstalledPackage, InstanceUid};

/// `service.name` of the guest.
pub const SERVICE_NAME: &str = "deskfleet-guest";

/// The custom capability under which monitor metrics travel.
pub const MONITOR_CAPABILITY: &str = "io.deskfleet.monitor";

/// `CustomMessage.type` of a metrics sample.
pub const METRICS_MESSAGE_TYPE: &str = "metrics";

/// What the guest can do, sent in every message.
pub const CAPABILITIES: u64 = AgentCapabilities::ReportsStatus.bit()
    | AgentCapabilities::AcceptsPackages.bit()
    | AgentCapabilities::ReportsPackageStatuses.bit()
    | AgentCapabilities::ReportsHealth.bit()
    | AgentCapabilities::AcceptsOpAmpConnectionSettings.bit()
    | AgentCapabilities::ReportsHeartbeat.bit()
    | AgentCapabilities::ReportsConnectionSettingsStatus.bit();

/// Nanoseconds since the Unix epoch, as OpAMP timestamps are.
pub fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Everything the guest reports about itself besides its description: what a full-state
/// message carries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    /// The guest's health, with the monitor under [`MONITOR_PACKAGE`].
    pub health: ComponentHealth,
    pub packages: PackageStatuses,
    /// Outcome of the last connection settings offer, once there was one.
    pub connection_settings: Option<ConnectionSettingsStatus>,
}

/// `agent_description`: identifying `service.name`, `service.instance.id` and
/// `service.version`; non-identifying `host.name`, `os.type`, `host.arch`, `host.ip`.
pub fn agent_description(uid: &InstanceUid, host: &HostFacts) -> AgentDescription {
    AgentDescription {
        identifying_attributes: vec![
            KeyValue::string("service.name", SERVICE_NAME),
            KeyValue::string("service.instance.id", uid.to_hex()),
            KeyValue::string("service.version", env!("CARGO_PKG_VERSION")),
        ],
        non_identifying_attributes: vec![
            KeyValue::string("host.name", &host.host_name),
            KeyValue::string("os.type", &host.os_type),
            KeyValue::string("host.arch", &host.arch),
            KeyValue::string("host.ip", host.ip_list()),
        ],
    }
}

/// Numbers messages and stamps them with the instance uid and capabilities.
/// `sequence_num` grows by one per message, across reconnects.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    instance_uid: InstanceUid,
    next_sequence: u64,
}

impl MessageBuilder {
    pub fn new(instance_uid: InstanceUid) -> MessageBuilder {
        MessageBuilder {
            instance_uid,
            next_sequence: 1,
        }
    }

    pub fn instance_uid(&self) -> InstanceUid {
        self.instance_uid
    }

    /// After `agent_identification.new_instance_uid`: every later message uses it.
    pub fn set_instance_uid(&mut self, uid: InstanceUid) {
        self.instance_uid = uid;
    }

    /// The sequence number the next message will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    fn base(&mut self) -> AgentToServer {
        let sequence_num = self.next_sequence;
        self.next_sequence += 1;
        AgentToServer {
            instance_uid: self.instance_uid.as_bytes().to_vec(),
            sequence_num,
            capabilities: CAPABILITIES,
            ..Default::default()
        }
    }

    /// Everything: the first message on a connection, and the answer to
    /// `ReportFullState`.
    pub fn full_state(&mut self, host: &HostFacts, status: &Status) -> AgentToServer {
        let mut msg = self.base();
        msg.agent_description = Some(agent_description(&self.instance_uid, host));
        msg.health = Some(status.health.clone());
        msg.package_statuses = Some(status.packages.clone());
        msg.connection_settings_status = status.connection_settings.clone();
        msg.custom_capabilities = Some(CustomCapabilities {
            capabilities: vec![MONITOR_CAPABILITY.to_owned()],
        });
        msg
    }

    /// Nothing changed, but the guest is alive.
    pub fn heartbeat(&mut self) -> AgentToServer {
        self.base()
    }

    pub fn health(&mut self, health: &ComponentHealth) -> AgentToServer {
        AgentToServer {
            health: Some(health.clone()),
            ..self.base()
        }
    }

    /// Package statuses are always sent whole (OpAMP has no partial form).
    pub fn package_statuses(&mut self, packages: &PackageStatuses) -> AgentToServer {
        AgentToServer {
            package_statuses: Some(packages.clone()),
            ..self.base()
        }
    }

    /// One metrics sample from the monitor: its JSON line as is.
    pub fn metrics(&mut self, json: Vec<u8>) -> AgentToServer {
        AgentToServer {
            custom_message: Some(CustomMessage {
                capability: MONITOR_CAPABILITY.to_owned(),
                r#type: METRICS_MESSAGE_TYPE.to_owned(),
                data: json,
            }),
            ..self.base()
        }
    }

    /// The last message on a connection.
    pub fn disconnect(&mut self) -> AgentToServer {
        AgentToServer {
            agent_disconnect: Some(AgentDisconnect {}),
            ..self.base()
        }
    }
}

/// The first message a guest sends on a connection (a load generator's entry point):
/// sequence number `sequence_num`, full state.
pub fn first_message(
    uid: InstanceUid,
    sequence_num: u64,
    host: &HostFacts,
    status: &Status,
) -> AgentToServer {
    let mut builder = MessageBuilder {
        instance_uid: uid,
        next_sequence: sequence_num,
    };
    builder.full_state(host, status)
}

// ---------------------------------------------------------------------------------------
// Statuses
// ---------------------------------------------------------------------------------------

fn offered(offer: Option<&PackageOffer>) -> (String, Vec<u8>) {
    offer
        .map(|o| (o.version.clone(), o.offer_hash.clone()))
        .unwrap_or_default()
}

fn has(installed: Option<&InstalledPackage>) -> (String, Vec<u8>) {
    installed
        .map(|p| {
            (
                p.version.clone(),
                hex::decode(&p.sha256).unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

/// `INSTALLED`: what the guest has, and (when known) the offer it answers.
pub fn installed_status(
    installed: &InstalledPackage,
    offer: Option<&PackageOffer>,
) -> PackageStatus {
    let (agent_has_version, agent_has_hash) = has(Some(installed));
    let (server_offered_version, server_offered_hash) = offered(offer);
    PackageStatus {
        name: installed.name.clone(),
        agent_has_version,
        agent_has_hash,
        server_offered_version,
        server_offered_hash,
        status: PackageStatusEnum::Installed as i32,
        error_message: String::new(),
        download_details: None,
    }
}

/// `INSTALLED` after a watch passed: `installed` answers the offer of
/// `offered_version` (whose `PackageAvailable.hash` was `offered_hash`).
pub fn confirmed_status(
    installed: &InstalledPackage,
    offered_version: &str,
    offered_hash: &[u8],
) -> PackageStatus {
    PackageStatus {
        server_offered_version: offered_version.to_owned(),
        server_offered_hash: offered_hash.to_vec(),
        ..installed_status(installed, None)
    }
}

/// `INSTALLING` while a switched-to version is watched: `has` is the version it would
/// roll back to (the one that ran before the switch).
pub fn watching_status(
    name: &str,
    has: Option<&InstalledPackage>,
    offered_version: &str,
    offered_hash: &[u8],
) -> PackageStatus {
    let (agent_has_version, agent_has_hash) = self::has(has);
    PackageStatus {
        name: name.to_owned(),
        agent_has_version,
        agent_has_hash,
        server_offered_version: offered_version.to_owned(),
        server_offered_hash: offered_hash.to_vec(),
        status: PackageStatusEnum::Installing as i32,
        error_message: String::new(),
        download_details: None,
    }
}

/// `DOWNLOADING` (with percent; 100 while verifying) or `INSTALLING`.
pub fn progress_status(
    installed: Option<&InstalledPackage>,
    offer: &PackageOffer,
    step: InstallStep,
) -> PackageStatus {
    let (agent_has_version, agent_has_hash) = has(installed);
    let (status, download_details) = match step {
        InstallStep::Downloading(percent) => (
            PackageStatusEnum::Downloading,
            Some(PackageDownloadDetails {
                download_percent: percent,
                download_bytes_per_second: 0.0,
            }),
        ),
        InstallStep::Verifying => (
            PackageStatusEnum::Downloading,
            Some(PackageDownloadDetails {
                download_percent: 100.0,
                download_bytes_per_second: 0.0,
            }),
        ),
        InstallStep::Installing => (PackageStatusEnum::Installing, None),
    };
    PackageStatus {
        name: offer.name.clone(),
        agent_has_version,
        agent_has_hash,
        server_offered_version: offer.version.clone(),
        server_offered_hash: offer.offer_hash.clone(),
        status: status as i32,
        error_message: String::new(),
        download_details,
    }
}

/// `INSTALL_FAILED` with `error_message` = `<reason-code>: <human reason>`.
pub fn failed_status(
    name: &str,
    installed: Option<&InstalledPackage>,
    offered_version: &str,
    offered_hash: &[u8],
    error: &InstallError,
) -> PackageStatus {
    let (agent_has_version, agent_has_hash) = has(installed);
    PackageStatus {
        name: name.to_owned(),
        agent_has_version,
        agent_has_hash,
        server_offered_version: offered_version.to_owned(),
        server_offered_hash: offered_hash.to_vec(),
        status: PackageStatusEnum::InstallFailed as i32,
        error_message: error.to_string(),
        download_details: None,
    }
}

// ---------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------

/// The monitor's component health from one of its health lines.
pub fn monitor_health(report: &deskfleet_monitor::Health, now: SystemTime) -> ComponentHealth {
    let running = report.status == deskfleet_monitor::Status::Running;
    let word = if running { "running" } else { "stopping" };
    ComponentHealth {
        healthy: report.healthy && running,
        start_time_unix_nano: report.started_at_ms.saturating_mul(1_000_000),
        last_error: if report.healthy {
            String::new()
        } else {
            report
                .reason
                .clone()
                .unwrap_or_else(|| "the monitor reports itself unhealthy".to_owned())
        },
        status: format!("{word} {MONITOR_PACKAGE}/{}", report.version),
        status_time_unix_nano: unix_nanos(now),
        ..Default::default()
    }
}

/// The monitor's component health while it is not running (starting, restarting).
pub fn monitor_down(status: String, last_error: String, now: SystemTime) -> ComponentHealth {
    ComponentHealth {
        healthy: false,
        start_time_unix_nano: 0,
        last_error,
        status,
        status_time_unix_nano: unix_nanos(now),
        ..Default::default()
    }
}

/// The guest's own health: healthy when each component is; the monitor under
/// [`MONITOR_PACKAGE`].
pub fn guest_health(
    started: SystemTime,
    monitor: Option<&ComponentHealth>,
    now: SystemTime,
) -> ComponentHealth {
    let healthy = monitor.is_none_or(|m| m.healthy);
    ComponentHealth {
        healthy,
        start_time_unix_nano: unix_nanos(started),
        last_error: match monitor {
            Some(m) if !m.healthy => format!("{MONITOR_PACKAGE}: {}", m.last_error),
            _ => String::new(),
        },
        status: if healthy { "running" } else { "degraded" }.to_owned(),
        status_time_unix_nano: unix_nanos(now),
        component_health_map: monitor
            .map(|m| BTreeMap::from([(MONITOR_PACKAGE.to_owned(), m.clone())]))
            .unwrap_or_default(),
        attributes: Vec::new(),
    }
}

/// Whether two healths say the same thing, ignoring when they were observed: a
/// repeated health line does not need to be forwarded.
pub fn same_health(a: &ComponentHealth, b: &ComponentHealth) -> bool {
    let strip = |h: &ComponentHealth| {
        let mut h = h.clone();
        h.status_time_unix_nano = 0;
        for component in h.component_health_map.values_mut() {
            component.status_time_unix_nano = 0;
        }
        h
    };
    strip(a) == strip(b)
}

// ---------------------------------------------------------------------------------------
// Reading the server
// ---------------------------------------------------------------------------------------

/// What a [`ServerToAgent`] asks of the guest.
#[derive(Debug, Default)]
pub struct Directives {
    /// `ReportFullState`: send everything again.
    pub report_full_state: bool,
    /// Clone detected: switch to this uid.
    pub new_instance_uid: Option<InstanceUid>,
    /// `new_instance_uid` was present but not 16 bytes (ignored).
    pub bad_instance_uid: bool,
    /// The desktop credential from `connection_settings.opamp.headers`.
    pub credential: Option<SecretString>,
    /// `connection_settings.hash`, when OpAMP connection settings were offered.
    pub connection_settings_hash: Option<Vec<u8>>,
    /// A new heartbeat interval (0 from the server means "keep yours").
    pub heartbeat: Option<Duration>,
    pub packages: Option<OfferedPackages>,
    pub error: Option<ServerError>,
}

/// `packages_available`, sorted into what this guest can act on.
#[derive(Debug)]
pub struct OfferedPackages {
    pub all_packages_hash: Vec<u8>,
    /// The `deskfleet-monitor` offer, or why it cannot even be tried.
    pub monitor: Option<Result<PackageOffer, RejectedOffer>>,
    /// Names of other packages, which this guest does not install.
    pub others: Vec<(String, String)>,
}

/// An offer that failed its shape checks (bad hash length, no signature...).
#[derive(Debug)]
pub struct RejectedOffer {
    pub version: String,
    pub offer_hash: Vec<u8>,
    pub error: InstallError,
}

/// `error_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerError {
    /// Overloaded: disconnect and retry later.
    Unavailable {
        retry_after: Option<Duration>,
    },
    /// The last message was malformed; do not resend it.
    BadRequest(String),
    Unknown(String),
}

/// Reads a server message. `server` resolves relative download URLs.
pub fn interpret(msg: &ServerToAgent, server: &Url) -> Directives {
    let mut directives = Directives {
        report_full_state: has_capability(msg.flags, ServerToAgentFlags::ReportFullState),
        ..Default::default()
    };
    if let Some(error) = &msg.error_response {
        directives.error = Some(match error.r#type() {
            ServerErrorResponseType::Unavailable => ServerError::Unavailable {
                retry_after: error.details.as_ref().map(
                    |server_error_response::Details::RetryInfo(info)| {
                        Duration::from_nanos(info.retry_after_nanoseconds)
                    },
                ),
            },
            ServerErrorResponseType::BadRequest => {
                ServerError::BadRequest(error.error_message.clone())
            }
            ServerErrorResponseType::Unknown => ServerError::Unknown(error.error_message.clone()),
        });
    }
    if let Some(identification) = &msg.agent_identification {
        match InstanceUid::from_bytes(&identification.new_instance_uid) {
            Some(uid) => directives.new_instance_uid = Some(uid),
            None => directives.bad_instance_uid = true,
        }
    }
    if let Some(offers) = &msg.connection_settings
        && let Some(opamp) = &offers.opamp
    {
        directives.connection_settings_hash = Some(offers.hash.clone());
        directives.credential = offers
            .offered_bearer()
            .map(|token| SecretString::from(token.to_owned()));
        if opamp.heartbeat_interval_seconds > 0 {
            directives.heartbeat = Some(Duration::from_secs(opamp.heartbeat_interval_seconds));
        }
    }
    if let Some(available) = &msg.packages_available {
        let mut offered = OfferedPackages {
            all_packages_hash: available.all_packages_hash.clone(),
            monitor: None,
            others: Vec::new(),
        };
        for (name, package) in &available.packages {
            if name == MONITOR_PACKAGE {
                offered.monitor =
                    Some(PackageOffer::parse(name, package, server).map_err(|error| {
                        RejectedOffer {
                            version: package.version.clone(),
                            offer_hash: package.hash.clone(),
                            error,
                        }
                    }));
            } else {
                offered.others.push((name.clone(), package.version.clone()));
            }
        }
        directives.packages = Some(offered);
    }
    directives
}

/// The status reported for a package this guest does not install.
pub fn unsupported_package_status(name: &str, version: &str) -> PackageStatus {
    PackageStatus {
        name: name.to_owned(),
        server_offered_version: version.to_owned(),
        status: PackageStatusEnum::InstallFailed as i32,
        error_message: InstallError::new(
            ReasonCode::InstallFailed,
            format!("this guest installs only {MONITOR_PACKAGE}, not {name}"),
        )
        .to_string(),
        ..Default::default()
    }
}

/// `connection_settings_status` after an offer was applied (or could not be).
pub fn connection_settings_status(
    hash: Vec<u8>,
    failure: Option<String>,
) -> ConnectionSettingsStatus {
    ConnectionSettingsStatus {
        last_connection_settings_hash: hash,
        status: if failure.is_some() {
            ConnectionSettingsStatuses::Failed
        } else {
            ConnectionSettingsStatuses::Applied
        } as i32,
        error_message: failure.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use deskfleet_proto::opamp::{
        AgentIdentification, ConnectionSettingsOffers, Header, Headers, OpAmpConnectionSettings,
        RetryInfo, ServerErrorResponse, decode_ws_frame, encode_ws_frame,
    };
    use secrecy::ExposeSecret;

    use super::*;
    use crate::testing;

    fn host() -> HostFacts {
        HostFacts {
            host_name: "wks-7".into(),
            os_type: "linux".into(),
            arch: "x86_64".into(),
            ips: vec!["10.0.0.7".parse().unwrap(), "fe80::1".parse().unwrap()],
        }
    }

    fn uid() -> InstanceUid {
        InstanceUid::from_bytes(&[0x11; 16]).unwrap()
    }

    fn server() -> Url {
        Url::parse("http://127.0.0.1:8087").unwrap()
    }

    #[test]
    fn first_message_carries_the_full_state() {
        let started = UNIX_EPOCH + Duration::from_secs(1000);
        let monitor = monitor_down(
            "starting deskfleet-monitor/1.0.0".into(),
            String::new(),
            started,
        );
        let status = Status {
            health: guest_health(started, Some(&monitor), started),
            packages: PackageStatuses {
                packages: BTreeMap::from([(
                    MONITOR_PACKAGE.to_owned(),
                    installed_status(
                        &InstalledPackage {
                            name: MONITOR_PACKAGE.into(),
                            version: "1.0.0".into(),
                            sha256: "ab".repeat(32),
                            path: "/x".into(),
                        },
                        None,
                    ),
                )]),
                ..Default::default()
            },
            connection_settings: None,
        };
        let mut builder = MessageBuilder::new(uid());
        let msg = builder.full_state(&host(), &status);
        // Through the wire and back, as the server sees it.
        let msg: AgentToServer = decode_ws_frame(&encode_ws_frame(&msg)).unwrap();
        assert_eq!(msg.instance_uid, vec![0x11; 16]);
        assert_eq!(msg.sequence_num, 1);
        for cap in [
            AgentCapabilities::ReportsStatus,
            AgentCapabilities::AcceptsPackages,
            AgentCapabilities::ReportsPackageStatuses,
            AgentCapabilities::ReportsHealth,
            AgentCapabilities::AcceptsOpAmpConnectionSettings,
            AgentCapabilities::ReportsHeartbeat,
            AgentCapabilities::ReportsConnectionSettingsStatus,
        ] {
            assert!(has_capability(msg.capabilities, cap), "{cap:?}");
        }
        assert!(!has_capability(
            msg.capabilities,
            AgentCapabilities::AcceptsRemoteConfig
        ));
        let desc = msg.agent_description.as_ref().unwrap();
        assert_eq!(desc.get_str("service.name"), Some("deskfleet-guest"));
        assert_eq!(
            desc.get_str("service.instance.id"),
            Some("11111111111111111111111111111111")
        );
        assert_eq!(desc.get_str("host.name"), Some("wks-7"));
        assert_eq!(desc.get_str("os.type"), Some("linux"));
        assert_eq!(desc.get_str("host.arch"), Some("x86_64"));
        assert_eq!(desc.get_str("host.ip"), Some("10.0.0.7,fe80::1"));
        assert!(
            desc.identifying_attributes
                .iter()
                .any(|kv| kv.key == "service.instance.id")
        );
        assert!(
            desc.non_identifying_attributes
                .iter()
                .any(|kv| kv.key == "host.name")
        );
        let health = msg.health.as_ref().unwrap();
        assert!(!health.healthy);
        assert_eq!(
            health.component_health_map[MONITOR_PACKAGE].status,
            "starting deskfleet-monitor/1.0.0"
        );
        let package = &msg.package_statuses.as_ref().unwrap().packages[MONITOR_PACKAGE];
        assert_eq!(package.status(), PackageStatusEnum::Installed);
        assert_eq!(package.agent_has_version, "1.0.0");
        assert_eq!(
            msg.custom_capabilities.unwrap().capabilities,
            [MONITOR_CAPABILITY]
        );

        let heartbeat = builder.heartbeat();
        assert_eq!(heartbeat.sequence_num, 2);
        assert_eq!(
            heartbeat,
            AgentToServer {
                instance_uid: vec![0x11; 16],
                sequence_num: 2,
                capabilities: CAPABILITIES,
                ..Default::default()
            }
        );
        let metrics = builder.metrics(b"{}".to_vec());
        assert_eq!(metrics.sequence_num, 3);
        let custom = metrics.custom_message.unwrap();
        assert_eq!(
            (custom.capability.as_str(), custom.r#type.as_str()),
            ("io.deskfleet.monitor", "metrics")
        );
        let bye = builder.disconnect();
        assert_eq!(bye.sequence_num, 4);
        assert!(bye.agent_disconnect.is_some());

        assert_eq!(first_message(uid(), 41, &host(), &status).sequence_num, 41);
    }

    #[test]
    fn monitor_health_lines_become_the_status_the_server_parses() {
        let line = r#"{"type":"health","agent":"deskfleet-monitor","version":"2.0.1","healthy":true,"pid":7,"started_at_ms":1700000000000,"supported":true,"status":"running"}"#;
        let deskfleet_monitor::Report::Health(report) = serde_json::from_str(line).unwrap() else {
            panic!("a health line")
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_005);
        let health = monitor_health(&report, now);
        assert!(health.healthy);
        assert_eq!(health.status, "running deskfleet-monitor/2.0.1");
        assert_eq!(health.start_time_unix_nano, 1_700_000_000_000_000_000);
        let guest = guest_health(now, Some(&health), now);
        assert!(guest.healthy);
        assert_eq!(guest.component_health_map[MONITOR_PACKAGE], health);

        let mut unsupported = report.clone();
        unsupported.healthy = false;
        unsupported.reason = Some("no /proc".into());
        let health = monitor_health(&unsupported, now);
        assert!(!health.healthy);
        assert_eq!(health.last_error, "no /proc");
        let guest = guest_health(now, Some(&health), now);
        assert!(!guest.healthy);
        assert!(guest.last_error.contains("no /proc"));

        let mut stopping = report;
        stopping.status = deskfleet_monitor::Status::Stopping;
        assert!(!monitor_health(&stopping, now).healthy);
    }

    #[test]
    fn same_health_ignores_only_the_observation_time() {
        let now = UNIX_EPOCH + Duration::from_secs(5);
        let later = now + Duration::from_secs(60);
        let a = guest_health(now, Some(&monitor_down("s".into(), "e".into(), now)), now);
        let b = guest_health(
            now,
            Some(&monitor_down("s".into(), "e".into(), later)),
            later,
        );
        assert!(same_health(&a, &b));
        let c = guest_health(
            now,
            Some(&monitor_down("s".into(), "other".into(), now)),
            now,
        );
        assert!(!same_health(&a, &c));
    }

    #[test]
    fn package_statuses_follow_the_install_steps() {
        let package = testing::signed_monitor_package("1.2.3", &testing::signing_key(1));
        let available = testing::package_available(&package, "1.2.3", "/p");
        let offer = PackageOffer::parse(MONITOR_PACKAGE, &available, &server()).unwrap();
        let s = progress_status(None, &offer, InstallStep::Downloading(42.0));
        assert_eq!(s.status(), PackageStatusEnum::Downloading);
        assert_eq!(s.download_details.unwrap().download_percent, 42.0);
        assert_eq!(s.server_offered_version, "1.2.3");
        let s = progress_status(None, &offer, InstallStep::Verifying);
        assert_eq!(s.status(), PackageStatusEnum::Downloading);
        assert_eq!(s.download_details.unwrap().download_percent, 100.0);
        let s = progress_status(None, &offer, InstallStep::Installing);
        assert_eq!(s.status(), PackageStatusEnum::Installing);
        let error = InstallError::new(ReasonCode::BadSignature, "not signed");
        let s = failed_status(MONITOR_PACKAGE, None, "1.2.3", &offer.offer_hash, &error);
        assert_eq!(s.status(), PackageStatusEnum::InstallFailed);
        assert_eq!(s.error_message, "bad_signature: not signed");
    }

    fn credential_offer(value: &str, heartbeat: u64) -> ServerToAgent {
        ServerToAgent {
            connection_settings: Some(ConnectionSettingsOffers {
                hash: vec![9; 16],
                opamp: Some(OpAmpConnectionSettings {
                    headers: Some(Headers {
                        headers: vec![Header {
                            key: "authorization".into(),
                            value: value.into(),
                        }],
                    }),
                    heartbeat_interval_seconds: heartbeat,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn enrollment_reply_yields_the_credential_and_heartbeat() {
        let d = interpret(&credential_offer("Bearer DFD1abc", 15), &server());
        assert_eq!(d.credential.unwrap().expose_secret(), "DFD1abc");
        assert_eq!(d.heartbeat, Some(Duration::from_secs(15)));
        assert_eq!(d.connection_settings_hash, Some(vec![9; 16]));
        assert!(!d.report_full_state);
        assert!(d.packages.is_none());

        // 0 keeps the guest's interval; a header that is not a bearer is no credential.
        let d = interpret(&credential_offer("Basic eDp5", 0), &server());
        assert!(d.credential.is_none());
        assert_eq!(d.heartbeat, None);
    }

    #[test]
    fn clone_detection_yields_a_new_uid() {
        let mut msg = credential_offer("Bearer DFD1new", 0);
        msg.agent_identification = Some(AgentIdentification {
            new_instance_uid: vec![0x22; 16],
        });
        msg.flags = ServerToAgentFlags::ReportFullState.bit();
        let d = interpret(&msg, &server());
        assert_eq!(d.new_instance_uid, InstanceUid::from_bytes(&[0x22; 16]));
        assert_eq!(d.credential.unwrap().expose_secret(), "DFD1new");
        assert!(d.report_full_state);

        msg.agent_identification = Some(AgentIdentification {
            new_instance_uid: vec![0x22; 3],
        });
        let d = interpret(&msg, &server());
        assert!(d.new_instance_uid.is_none());
        assert!(d.bad_instance_uid);
    }

    #[test]
    fn package_offers_are_sorted_out() {
        let package = testing::signed_monitor_package("1.2.3", &testing::signing_key(1));
        let mut msg = testing::offer_message(&[1; 16], &package, "1.2.3", "/v1/packages/p1");
        let d = interpret(&msg, &server());
        let packages = d.packages.unwrap();
        let offer = packages.monitor.unwrap().unwrap();
        assert_eq!(offer.version, "1.2.3");
        assert_eq!(
            offer.download_url.as_str(),
            "http://127.0.0.1:8087/v1/packages/p1"
        );
        assert_eq!(offer.content_hash, package.content_hash);
        assert_eq!(packages.all_packages_hash, package.content_hash.to_vec());

        let available = msg.packages_available.as_mut().unwrap();
        let mut other = available.packages[MONITOR_PACKAGE].clone();
        other.version = "0.1".into();
        available.packages.insert("something-else".into(), other);
        available
            .packages
            .get_mut(MONITOR_PACKAGE)
            .unwrap()
            .file
            .as_mut()
            .unwrap()
            .signature = vec![0; 10];
        let d = interpret(&msg, &server());
        let packages = d.packages.unwrap();
        let rejected = packages.monitor.unwrap().unwrap_err();
        assert_eq!(rejected.error.code, ReasonCode::BadSignature);
        assert_eq!(rejected.version, "1.2.3");
        assert_eq!(
            packages.others,
            [("something-else".to_owned(), "0.1".to_owned())]
        );
    }

    #[test]
    fn unavailable_carries_its_retry_time() {
        let msg = ServerToAgent {
            error_response: Some(ServerErrorResponse {
                r#type: ServerErrorResponseType::Unavailable as i32,
                error_message: "busy".into(),
                details: Some(server_error_response::Details::RetryInfo(RetryInfo {
                    retry_after_nanoseconds: 5_000_000_000,
                })),
            }),
            ..Default::default()
        };
        assert_eq!(
            interpret(&msg, &server()).error,
            Some(ServerError::Unavailable {
                retry_after: Some(Duration::from_secs(5))
            })
        );
        let msg = ServerToAgent {
            error_response: Some(ServerErrorResponse {
                r#type: ServerErrorResponseType::BadRequest as i32,
                error_message: "bad".into(),
                details: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            interpret(&msg, &server()).error,
            Some(ServerError::BadRequest("bad".into()))
        );
        assert!(
            interpret(&ServerToAgent::default(), &server())
                .error
                .is_none()
        );
    }
}
