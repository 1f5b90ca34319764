//! OpAMP (Open Agent Management Protocol) wire messages and their framing.
//!
//! The structs below are written by hand as `prost` messages and mirror
//! `proto/opamp/v1/opamp.proto` and `proto/opamp/v1/anyvalue.proto` of the
//! open-telemetry/opamp-spec repository at commit f56c7ae (tag v0.18.0 plus
//! `ComponentHealth.attributes`). Field numbers, scalar types and enum values are facts
//! of the wire and must never be renumbered; Rust names follow what `prost-build` would
//! generate (`TlsCertificate` for `TLSCertificate`, enum prefixes stripped).
//!
//! Choices that are ours, not the spec's:
//! - every `map<..>` is a `BTreeMap`, so one message always encodes to the same bytes
//!   (stable hashes, stable fixtures);
//! - `Debug` of [`Header`] and [`TlsCertificate`] redacts header values and private keys,
//!   because those carry credentials and messages get logged.
//!
//! Transport framing: over WebSocket every binary message is a varint header (always 0)
//! followed by the protobuf bytes ([`encode_ws_frame`], [`decode_ws_frame`]); over plain
//! HTTP the body is the bare protobuf with [`CONTENT_TYPE`].

use std::collections::BTreeMap;
use std::fmt;

/// `Content-Type` of a plain-HTTP OpAMP request and response. A server tells a plain
/// HTTP exchange from a WebSocket upgrade by this header.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// Request header in which an HTTP client should repeat its instance uid, as a
/// canonical UUID string.
pub const INSTANCE_UID_HEADER: &str = "OpAMP-Instance-UID";

/// Default URL path of the OpAMP endpoint (both transports).
pub const DEFAULT_PATH: &str = "/v1/opamp";

/// Default TCP port of an OpAMP server.
pub const DEFAULT_PORT: u16 = 4320;

/// Length in bytes of `instance_uid` and `new_instance_uid` (a UUID, v7 recommended).
pub const INSTANCE_UID_LEN: usize = 16;

/// The only WebSocket frame header this protocol revision defines.
pub const WS_HEADER: u64 = 0;

/// Size limit the spec recommends as default for any received or sent message.
pub const RECOMMENDED_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Heartbeat (and HTTP polling) interval when the server offers none.
pub const DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 30;

/// `all_packages_hash` of a `PackagesAvailable` that offers no package at all: the SHA-256
/// of the empty string. The server sends it to have the monitoring agent uninstalled; the
/// guest echoes it in `PackageStatuses.server_provided_all_packages_hash` once the agent is
/// gone (`docs/fleet-protocol.md`).
pub const EMPTY_PACKAGES_HASH: [u8; 32] = [
    227, 176, 196, 66, 152, 252, 28, 20, 154, 251, 244, 200, 153, 111, 185, 36, 39, 174, 65, 228,
    100, 155, 147, 76, 164, 149, 153, 27, 120, 82, 184, 85,
];

// ---------------------------------------------------------------------------------------
// Top-level messages
// ---------------------------------------------------------------------------------------

/// Everything an agent sends: a status report, a heartbeat, or its goodbye.
/// Sub-messages that did not change since the last report may be left out.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgentToServer {
    /// Identity of the running agent instance; [`INSTANCE_UID_LEN`] bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub instance_uid: Vec<u8>,
    /// Grows by one per message; a gap tells the server it may have lost state.
    #[prost(uint64, tag = "2")]
    pub sequence_num: u64,
    #[prost(message, optional, tag = "3")]
    pub agent_description: Option<AgentDescription>,
    /// [`AgentCapabilities`] bits; always set.
    #[prost(uint64, tag = "4")]
    pub capabilities: u64,
    #[prost(message, optional, tag = "5")]
    pub health: Option<ComponentHealth>,
    #[prost(message, optional, tag = "6")]
    pub effective_config: Option<EffectiveConfig>,
    #[prost(message, optional, tag = "7")]
    pub remote_config_status: Option<RemoteConfigStatus>,
    #[prost(message, optional, tag = "8")]
    pub package_statuses: Option<PackageStatuses>,
    /// Present only in the last message before the agent goes away.
    #[prost(message, optional, tag = "9")]
    pub agent_disconnect: Option<AgentDisconnect>,
    /// [`AgentToServerFlags`] bits.
    #[prost(uint64, tag = "10")]
    pub flags: u64,
    #[prost(message, optional, tag = "11")]
    pub connection_settings_request: Option<ConnectionSettingsRequest>,
    #[prost(message, optional, tag = "12")]
    pub custom_capabilities: Option<CustomCapabilities>,
    #[prost(message, optional, tag = "13")]
    pub custom_message: Option<CustomMessage>,
    #[prost(message, optional, tag = "14")]
    pub available_components: Option<AvailableComponents>,
    #[prost(message, optional, tag = "15")]
    pub connection_settings_status: Option<ConnectionSettingsStatus>,
}

/// Bits of [`AgentToServer::flags`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AgentToServerFlags {
    Unspecified = 0,
    /// The agent asks the server to assign it an instance uid (sent back in
    /// [`AgentIdentification`]).
    RequestInstanceUid = 0x1,
}

/// Everything a server sends to one agent: an answer to each [`AgentToServer`], or a
/// message of its own initiative (WebSocket only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerToAgent {
    /// Echo of the agent's instance uid.
    #[prost(bytes = "vec", tag = "1")]
    pub instance_uid: Vec<u8>,
    /// When set, every other field except `instance_uid` stays unset.
    #[prost(message, optional, tag = "2")]
    pub error_response: Option<ServerErrorResponse>,
    #[prost(message, optional, tag = "3")]
    pub remote_config: Option<AgentRemoteConfig>,
    #[prost(message, optional, tag = "4")]
    pub connection_settings: Option<ConnectionSettingsOffers>,
    #[prost(message, optional, tag = "5")]
    pub packages_available: Option<PackagesAvailable>,
    /// [`ServerToAgentFlags`] bits.
    #[prost(uint64, tag = "6")]
    pub flags: u64,
    /// [`ServerCapabilities`] bits; required in the first message, may be 0 after.
    #[prost(uint64, tag = "7")]
    pub capabilities: u64,
    #[prost(message, optional, tag = "8")]
    pub agent_identification: Option<AgentIdentification>,
    /// Sent alone (with `instance_uid` and `capabilities` at most).
    #[prost(message, optional, tag = "9")]
    pub command: Option<ServerToAgentCommand>,
    #[prost(message, optional, tag = "10")]
    pub custom_capabilities: Option<CustomCapabilities>,
    #[prost(message, optional, tag = "11")]
    pub custom_message: Option<CustomMessage>,
}

/// Bits of [`ServerToAgent::flags`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServerToAgentFlags {
    Unspecified = 0,
    /// Resend every sub-message, including those omitted as unchanged.
    ReportFullState = 0x1,
    /// Resend `available_components` with the full component list, not only its hash.
    ReportAvailableComponents = 0x2,
}

/// Bits of [`ServerToAgent::capabilities`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServerCapabilities {
    Unspecified = 0,
    /// Mandatory for every server.
    AcceptsStatus = 0x1,
    OffersRemoteConfig = 0x2,
    AcceptsEffectiveConfig = 0x4,
    OffersPackages = 0x8,
    AcceptsPackagesStatus = 0x10,
    OffersConnectionSettings = 0x20,
    AcceptsConnectionSettingsRequest = 0x40,
}

/// Bits of [`AgentToServer::capabilities`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AgentCapabilities {
    Unspecified = 0,
    /// Mandatory for every agent.
    ReportsStatus = 0x1,
    AcceptsRemoteConfig = 0x2,
    ReportsEffectiveConfig = 0x4,
    AcceptsPackages = 0x8,
    ReportsPackageStatuses = 0x10,
    ReportsOwnTraces = 0x20,
    ReportsOwnMetrics = 0x40,
    ReportsOwnLogs = 0x80,
    AcceptsOpAmpConnectionSettings = 0x100,
    AcceptsOtherConnectionSettings = 0x200,
    AcceptsRestartCommand = 0x400,
    ReportsHealth = 0x800,
    ReportsRemoteConfig = 0x1000,
    ReportsHeartbeat = 0x2000,
    ReportsAvailableComponents = 0x4000,
    ReportsConnectionSettingsStatus = 0x8000,
}

// ---------------------------------------------------------------------------------------
// Errors and commands
// ---------------------------------------------------------------------------------------

/// Why the server could not process the last [`AgentToServer`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerErrorResponse {
    #[prost(enumeration = "ServerErrorResponseType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub error_message: String,
    #[prost(oneof = "server_error_response::Details", tags = "3")]
    pub details: Option<server_error_response::Details>,
}

/// The `Details` oneof of [`ServerErrorResponse`].
pub mod server_error_response {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Details {
        /// Only meaningful with [`super::ServerErrorResponseType::Unavailable`].
        #[prost(message, tag = "3")]
        RetryInfo(super::RetryInfo),
    }
}

/// Kind of a [`ServerErrorResponse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServerErrorResponseType {
    /// Do not retry.
    Unknown = 0,
    /// The message was malformed; do not retry it.
    BadRequest = 1,
    /// Overloaded: disconnect and retry later (after `retry_info` or with backoff).
    Unavailable = 2,
}

/// How long the agent should wait before retrying after `Unavailable`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct RetryInfo {
    #[prost(uint64, tag = "1")]
    pub retry_after_nanoseconds: u64,
}

/// An order for the agent.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ServerToAgentCommand {
    #[prost(enumeration = "CommandType", tag = "1")]
    pub r#type: i32,
}

/// What a [`ServerToAgentCommand`] orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CommandType {
    Restart = 0,
}

/// Server-side override of the agent's identity.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct AgentIdentification {
    /// The agent must switch to this uid ([`INSTANCE_UID_LEN`] bytes) from now on.
    #[prost(bytes = "vec", tag = "1")]
    pub new_instance_uid: Vec<u8>,
}

/// Marker carried by the agent's last message on a connection.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct AgentDisconnect {}

// ---------------------------------------------------------------------------------------
// Status reporting
// ---------------------------------------------------------------------------------------

/// What the agent is and where it runs, as OpenTelemetry resource attributes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgentDescription {
    /// Attributes that together identify the agent (`service.name`,
    /// `service.instance.id`, ...).
    #[prost(message, repeated, tag = "1")]
    pub identifying_attributes: Vec<KeyValue>,
    /// Descriptive attributes (`os.type`, `host.name`, ...).
    #[prost(message, repeated, tag = "2")]
    pub non_identifying_attributes: Vec<KeyValue>,
}

/// Health of the agent or of one of its components, nested to any depth.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ComponentHealth {
    #[prost(bool, tag = "1")]
    pub healthy: bool,
    /// Unix epoch nanoseconds when the component started; 0 when not running.
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(string, tag = "3")]
    pub last_error: String,
    /// Agent-defined status word.
    #[prost(string, tag = "4")]
    pub status: String,
    /// Unix epoch nanoseconds when this status was observed.
    #[prost(fixed64, tag = "5")]
    pub status_time_unix_nano: u64,
    #[prost(btree_map = "string, message", tag = "6")]
    pub component_health_map: BTreeMap<String, ComponentHealth>,
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
}

/// The configuration the agent actually runs with.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct EffectiveConfig {
    #[prost(message, optional, tag = "1")]
    pub config_map: Option<AgentConfigMap>,
}

/// Outcome of the last remote config the agent received.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct RemoteConfigStatus {
    /// `config_hash` of the [`AgentRemoteConfig`] this status is about.
    #[prost(bytes = "vec", tag = "1")]
    pub last_remote_config_hash: Vec<u8>,
    #[prost(enumeration = "RemoteConfigStatuses", tag = "2")]
    pub status: i32,
    #[prost(string, tag = "3")]
    pub error_message: String,
}

/// Progress of applying a remote config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RemoteConfigStatuses {
    Unset = 0,
    Applied = 1,
    Applying = 2,
    Failed = 3,
}

/// Outcome of the last connection settings offer the agent received.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ConnectionSettingsStatus {
    /// `hash` of the [`ConnectionSettingsOffers`] this status is about.
    #[prost(bytes = "vec", tag = "1")]
    pub last_connection_settings_hash: Vec<u8>,
    #[prost(enumeration = "ConnectionSettingsStatuses", tag = "2")]
    pub status: i32,
    #[prost(string, tag = "3")]
    pub error_message: String,
}

/// Progress of applying offered connection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ConnectionSettingsStatuses {
    Unset = 0,
    Applied = 1,
    Applying = 2,
    Failed = 3,
}

/// State of every package the agent has or was offered.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PackageStatuses {
    /// Keyed by package name (equal to [`PackageStatus::name`]).
    #[prost(btree_map = "string, message", tag = "1")]
    pub packages: BTreeMap<String, PackageStatus>,
    /// `all_packages_hash` of the last [`PackagesAvailable`] the agent received.
    #[prost(bytes = "vec", tag = "2")]
    pub server_provided_all_packages_hash: Vec<u8>,
    /// An error about the offer as a whole, not about one package.
    #[prost(string, tag = "3")]
    pub error_message: String,
}

/// State of one package on the agent: what it has, what it was offered, how far along.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PackageStatus {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub agent_has_version: String,
    #[prost(bytes = "vec", tag = "3")]
    pub agent_has_hash: Vec<u8>,
    #[prost(string, tag = "4")]
    pub server_offered_version: String,
    #[prost(bytes = "vec", tag = "5")]
    pub server_offered_hash: Vec<u8>,
    #[prost(enumeration = "PackageStatusEnum", tag = "6")]
    pub status: i32,
    #[prost(string, tag = "7")]
    pub error_message: String,
    /// Only while [`PackageStatusEnum::Downloading`].
    #[prost(message, optional, tag = "8")]
    pub download_details: Option<PackageDownloadDetails>,
}

/// Progress of a package download.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PackageDownloadDetails {
    #[prost(double, tag = "1")]
    pub download_percent: f64,
    #[prost(double, tag = "2")]
    pub download_bytes_per_second: f64,
}

/// Where a package is in its install life cycle. Note that 0 means installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PackageStatusEnum {
    Installed = 0,
    InstallPending = 1,
    Installing = 2,
    InstallFailed = 3,
    Downloading = 4,
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// A configuration offered by the server.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct AgentRemoteConfig {
    #[prost(message, optional, tag = "1")]
    pub config: Option<AgentConfigMap>,
    /// Server-chosen hash of `config`; the agent echoes it in [`RemoteConfigStatus`].
    #[prost(bytes = "vec", tag = "2")]
    pub config_hash: Vec<u8>,
}

/// A configuration as named files or sections (a single one may use the key "").
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct AgentConfigMap {
    #[prost(btree_map = "string, message", tag = "1")]
    pub config_map: BTreeMap<String, AgentConfigFile>,
}

/// One configuration file or section.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct AgentConfigFile {
    #[prost(bytes = "vec", tag = "1")]
    pub body: Vec<u8>,
    /// MIME type of `body`, e.g. `text/yaml`; optional.
    #[prost(string, tag = "2")]
    pub content_type: String,
}

// ---------------------------------------------------------------------------------------
// Connection settings
// ---------------------------------------------------------------------------------------

/// `Bearer <token>` (the scheme without regard to case, as HTTP has it) to the token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl ConnectionSettingsOffers {
    /// The bearer credential the offer's OpAMP `Authorization` header carries: how a
    /// server hands an enrolled agent its own credential.
    pub fn offered_bearer(&self) -> Option<&str> {
        self.opamp
            .as_ref()?
            .headers
            .iter()
            .flat_map(|h| &h.headers)
            .filter(|h| h.key.eq_ignore_ascii_case("authorization"))
            .find_map(|h| bearer_token(&h.value))
    }
}

/// The server's offer of new connection settings, per destination class. An unset
/// field means "keep what you have".
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConnectionSettingsOffers {
    /// Hash over all settings, including the ones omitted as unchanged.
    #[prost(bytes = "vec", tag = "1")]
    pub hash: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub opamp: Option<OpAmpConnectionSettings>,
    #[prost(message, optional, tag = "3")]
    pub own_metrics: Option<TelemetryConnectionSettings>,
    #[prost(message, optional, tag = "4")]
    pub own_traces: Option<TelemetryConnectionSettings>,
    #[prost(message, optional, tag = "5")]
    pub own_logs: Option<TelemetryConnectionSettings>,
    #[prost(btree_map = "string, message", tag = "6")]
    pub other_connections: BTreeMap<String, OtherConnectionSettings>,
}

/// How to reach the OpAMP server itself (endpoint, auth headers, client certificate,
/// heartbeat period).
#[derive(Clone, PartialEq, prost::Message)]
pub struct OpAmpConnectionSettings {
    /// `ws(s)://` or `http(s)://` URL; never empty.
    #[prost(string, tag = "1")]
    pub destination_endpoint: String,
    #[prost(message, optional, tag = "2")]
    pub headers: Option<Headers>,
    #[prost(message, optional, tag = "3")]
    pub certificate: Option<TlsCertificate>,
    /// Heartbeat period, and the polling period of an HTTP client; 0 disables heartbeats.
    #[prost(uint64, tag = "4")]
    pub heartbeat_interval_seconds: u64,
    #[prost(message, optional, tag = "5")]
    pub tls: Option<TlsConnectionSettings>,
    #[prost(message, optional, tag = "6")]
    pub proxy: Option<ProxyConnectionSettings>,
}

/// Where and how the agent sends its own telemetry (an OTLP/HTTP URL).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TelemetryConnectionSettings {
    #[prost(string, tag = "1")]
    pub destination_endpoint: String,
    #[prost(message, optional, tag = "2")]
    pub headers: Option<Headers>,
    #[prost(message, optional, tag = "3")]
    pub certificate: Option<TlsCertificate>,
    #[prost(message, optional, tag = "4")]
    pub tls: Option<TlsConnectionSettings>,
    #[prost(message, optional, tag = "5")]
    pub proxy: Option<ProxyConnectionSettings>,
}

/// Settings for an agent-specific named destination.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OtherConnectionSettings {
    #[prost(string, tag = "1")]
    pub destination_endpoint: String,
    #[prost(message, optional, tag = "2")]
    pub headers: Option<Headers>,
    #[prost(message, optional, tag = "3")]
    pub certificate: Option<TlsCertificate>,
    /// Free-form, interpreted by the agent.
    #[prost(btree_map = "string, string", tag = "4")]
    pub other_settings: BTreeMap<String, String>,
    #[prost(message, optional, tag = "5")]
    pub tls: Option<TlsConnectionSettings>,
    #[prost(message, optional, tag = "6")]
    pub proxy: Option<ProxyConnectionSettings>,
}

/// TLS client options for one connection.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct TlsConnectionSettings {
    #[prost(string, tag = "1")]
    pub ca_pem_contents: String,
    #[prost(bool, tag = "2")]
    pub include_system_ca_certs_pool: bool,
    #[prost(bool, tag = "3")]
    pub insecure_skip_verify: bool,
    /// e.g. "1.2"; empty means the client default.
    #[prost(string, tag = "4")]
    pub min_version: String,
    #[prost(string, tag = "5")]
    pub max_version: String,
    #[prost(string, repeated, tag = "6")]
    pub cipher_suites: Vec<String>,
}

/// A proxy to go through, with the headers for its `CONNECT`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ProxyConnectionSettings {
    #[prost(string, tag = "1")]
    pub url: String,
    #[prost(message, optional, tag = "2")]
    pub connect_headers: Option<Headers>,
}

/// HTTP headers to send, typically `Authorization`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Headers {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<Header>,
}

/// One HTTP header. `Debug` hides the value: it is usually a credential.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
#[prost(skip_debug)]
pub struct Header {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("key", &self.key)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// A PEM client certificate with its private key. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
#[prost(skip_debug)]
pub struct TlsCertificate {
    #[prost(bytes = "vec", tag = "1")]
    pub cert: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub private_key: Vec<u8>,
    /// The issuing CA, when CA-signed.
    #[prost(bytes = "vec", tag = "3")]
    pub ca_cert: Vec<u8>,
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("cert", &String::from_utf8_lossy(&self.cert))
            .field("private_key", &"<redacted>")
            .field("ca_cert", &String::from_utf8_lossy(&self.ca_cert))
            .finish()
    }
}

/// The agent asks the server to make it connection settings (the CSR flow).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ConnectionSettingsRequest {
    #[prost(message, optional, tag = "1")]
    pub opamp: Option<OpAmpConnectionSettingsRequest>,
}

/// Request for new OpAMP connection settings.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct OpAmpConnectionSettingsRequest {
    #[prost(message, optional, tag = "1")]
    pub certificate_request: Option<CertificateRequest>,
}

/// A certificate signing request; the answer comes as
/// [`OpAmpConnectionSettings::certificate`].
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct CertificateRequest {
    /// PEM-encoded CSR.
    #[prost(bytes = "vec", tag = "1")]
    pub csr: Vec<u8>,
}

// ---------------------------------------------------------------------------------------
// Packages
// ---------------------------------------------------------------------------------------

/// The complete set of packages the server wants the agent to have.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct PackagesAvailable {
    /// Keyed by package name.
    #[prost(btree_map = "string, message", tag = "1")]
    pub packages: BTreeMap<String, PackageAvailable>,
    /// Aggregate hash of the set; echoed back in [`PackageStatuses`].
    #[prost(bytes = "vec", tag = "2")]
    pub all_packages_hash: Vec<u8>,
}

/// One package offered for download.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct PackageAvailable {
    #[prost(enumeration = "PackageType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(message, optional, tag = "3")]
    pub file: Option<DownloadableFile>,
    /// Identifies this package version; a different hash means reinstall.
    #[prost(bytes = "vec", tag = "4")]
    pub hash: Vec<u8>,
}

/// Whether a package is the agent itself or an add-on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PackageType {
    TopLevel = 0,
    Addon = 1,
}

/// A file to fetch with HTTP GET (range requests should be supported for resumes).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct DownloadableFile {
    #[prost(string, tag = "1")]
    pub download_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content_hash: Vec<u8>,
    /// Optional detached signature of the content.
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
    /// Headers for the GET, e.g. `Authorization`.
    #[prost(message, optional, tag = "4")]
    pub headers: Option<Headers>,
}

// ---------------------------------------------------------------------------------------
// Custom messages and components
// ---------------------------------------------------------------------------------------

/// Custom capabilities (reverse-FQDN names) one side supports.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct CustomCapabilities {
    #[prost(string, repeated, tag = "1")]
    pub capabilities: Vec<String>,
}

/// An opaque message belonging to a custom capability.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct CustomMessage {
    #[prost(string, tag = "1")]
    pub capability: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// The components built into the agent, or only their hash until the server asks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AvailableComponents {
    #[prost(btree_map = "string, message", tag = "1")]
    pub components: BTreeMap<String, ComponentDetails>,
    #[prost(bytes = "vec", tag = "2")]
    pub hash: Vec<u8>,
}

/// One component, with nested sub-components.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ComponentDetails {
    #[prost(message, repeated, tag = "1")]
    pub metadata: Vec<KeyValue>,
    #[prost(btree_map = "string, message", tag = "2")]
    pub sub_component_map: BTreeMap<String, ComponentDetails>,
}

// ---------------------------------------------------------------------------------------
// Attribute values (anyvalue.proto)
// ---------------------------------------------------------------------------------------

/// An attribute value of any kind; no value at all means null.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<any_value::Value>,
}

/// The `value` oneof of [`AnyValue`].
pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        ArrayValue(super::ArrayValue),
        #[prost(message, tag = "6")]
        KvlistValue(super::KeyValueList),
        #[prost(bytes = "vec", tag = "7")]
        BytesValue(Vec<u8>),
    }
}

/// A list of values (wrapped because a oneof cannot be repeated).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

/// A list of key-value pairs used as a value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

/// A named attribute.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

impl AnyValue {
    /// A string value.
    pub fn string(value: impl Into<String>) -> Self {
        Self {
            value: Some(any_value::Value::StringValue(value.into())),
        }
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }
}

impl KeyValue {
    /// A string-valued attribute.
    pub fn string(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: Some(AnyValue::string(value)),
        }
    }

    /// The value, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        self.value.as_ref().and_then(AnyValue::as_str)
    }
}

impl AgentDescription {
    /// The first string value under `key`, looking in the identifying attributes
    /// first, then in the non-identifying ones.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.identifying_attributes
            .iter()
            .chain(&self.non_identifying_attributes)
            .filter(|kv| kv.key == key)
            .find_map(KeyValue::as_str)
    }
}

// ---------------------------------------------------------------------------------------
// Bit flags
// ---------------------------------------------------------------------------------------

/// An enum whose values are single bits of a `uint64` bit set (capabilities, flags).
pub trait BitFlag: Copy {
    /// The bit as a mask (0 for the `Unspecified` value).
    fn bit(self) -> u64;
}

/// Whether `bits` has `flag` set. `Unspecified` is never "set".
pub fn has_capability<F: BitFlag>(bits: u64, flag: F) -> bool {
    let mask = flag.bit();
    mask != 0 && bits & mask == mask
}

macro_rules! bit_flags {
    ($ty:ident: $($variant:ident),+ $(,)?) => {
        impl $ty {
            /// Every bit this protocol revision defines, lowest first.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// Union of the defined bits; the others are reserved and must be sent as 0.
            pub const KNOWN_BITS: u64 = 0 $(| ($ty::$variant as u64))+;

            /// This value as a mask.
            pub const fn bit(self) -> u64 {
                self as u64
            }

            /// The bit set holding exactly `set`.
            pub fn bits(set: &[$ty]) -> u64 {
                set.iter().fold(0, |acc, flag| acc | flag.bit())
            }

            /// The defined bits present in `bits`, lowest first; unknown bits are dropped.
            pub fn from_bits(bits: u64) -> Vec<$ty> {
                Self::ALL.iter().copied().filter(|flag| bits & flag.bit() != 0).collect()
            }
        }

        impl BitFlag for $ty {
            fn bit(self) -> u64 {
                $ty::bit(self)
            }
        }
    };
}

bit_flags!(AgentCapabilities:
    ReportsStatus, AcceptsRemoteConfig, ReportsEffectiveConfig, AcceptsPackages,
    ReportsPackageStatuses, ReportsOwnTraces, ReportsOwnMetrics, ReportsOwnLogs,
    AcceptsOpAmpConnectionSettings, AcceptsOtherConnectionSettings, AcceptsRestartCommand,
    ReportsHealth, ReportsRemoteConfig, ReportsHeartbeat, ReportsAvailableComponents,
    ReportsConnectionSettingsStatus,
);
bit_flags!(ServerCapabilities:
    AcceptsStatus, OffersRemoteConfig, AcceptsEffectiveConfig, OffersPackages,
    AcceptsPackagesStatus, OffersConnectionSettings, AcceptsConnectionSettingsRequest,
);
bit_flags!(AgentToServerFlags: RequestInstanceUid);
bit_flags!(ServerToAgentFlags: ReportFullState, ReportAvailableComponents);

// ---------------------------------------------------------------------------------------
// WebSocket framing
// ---------------------------------------------------------------------------------------

/// Why a WebSocket message is not a valid OpAMP frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("empty websocket message: an OpAMP frame starts with a varint header")]
    Empty,
    #[error("malformed OpAMP frame header: not a valid varint")]
    MalformedHeader,
    #[error("unsupported OpAMP frame header {0}: this protocol revision only defines 0")]
    UnsupportedHeader(u64),
    #[error("malformed OpAMP protobuf payload")]
    Payload(#[from] prost::DecodeError),
}

/// One binary WebSocket message: the varint header 0, then `msg` as protobuf.
pub fn encode_ws_frame(msg: &impl prost::Message) -> Vec<u8> {
    let mut frame = Vec::with_capacity(1 + msg.encoded_len());
    put_varint(WS_HEADER, &mut frame);
    // Encoding fails only when the buffer cannot grow, which a Vec always can.
    msg.encode(&mut frame)
        .expect("a Vec<u8> grows to fit any message");
    frame
}

/// Parses one binary WebSocket message. The header must be a varint equal to 0; the
/// rest (possibly empty) is the protobuf message. Apply the size limit before calling.
pub fn decode_ws_frame<M: prost::Message + Default>(data: &[u8]) -> Result<M, FrameError> {
    if data.is_empty() {
        return Err(FrameError::Empty);
    }
    let (header, payload) = split_varint(data).ok_or(FrameError::MalformedHeader)?;
    if header != WS_HEADER {
        return Err(FrameError::UnsupportedHeader(header));
    }
    Ok(M::decode(payload)?)
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a base-128 varint off the front of `data`: at most 10 bytes, and the tenth may
/// only carry the 64th bit.
fn split_varint(data: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &data[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_empty_packages_hash_is_the_sha256_of_nothing() {
        use sha2::Digest;
        assert_eq!(sha2::Sha256::digest(b"").as_slice(), &EMPTY_PACKAGES_HASH);
    }

    fn uid(fill: u8) -> Vec<u8> {
        vec![fill; INSTANCE_UID_LEN]
    }

    fn headers() -> Headers {
        Headers {
            headers: vec![Header {
                key: "Authorization".into(),
                value: "Bearer secret-token".into(),
            }],
        }
    }

    fn tls() -> TlsConnectionSettings {
        TlsConnectionSettings {
            ca_pem_contents: "ca_pem_contents".into(),
            include_system_ca_certs_pool: true,
            insecure_skip_verify: true,
            min_version: "min_version".into(),
            max_version: "max_version".into(),
            cipher_suites: vec!["cipher_suites".into(), "cipher_suites".into()],
        }
    }

    fn certificate() -> TlsCertificate {
        TlsCertificate {
            cert: b"cert".to_vec(),
            private_key: b"PRIVATE KEY MATERIAL".to_vec(),
            ca_cert: b"ca_cert".to_vec(),
        }
    }

    fn proxy() -> ProxyConnectionSettings {
        ProxyConnectionSettings {
            url: "url".into(),
            connect_headers: Some(headers()),
        }
    }

    fn every_any_value() -> Vec<KeyValue> {
        use any_value::Value;
        let kv = |key: &str, v: Value| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
        };
        vec![
            kv("string_value", Value::StringValue("string_value".into())),
            kv("bool_value", Value::BoolValue(true)),
            kv("int_value", Value::IntValue(-42)),
            kv("double_value", Value::DoubleValue(2.5)),
            kv(
                "array_value",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue::string("string_value"), AnyValue { value: None }],
                }),
            ),
            kv(
                "kvlist_value",
                Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue::string("string_value", "string_value")],
                }),
            ),
            kv("bytes_value", Value::BytesValue(vec![0, 1, 2, 255])),
            KeyValue {
                key: "null".into(),
                value: None,
            },
        ]
    }

    fn config_map() -> AgentConfigMap {
        AgentConfigMap {
            config_map: BTreeMap::from([
                (
                    "".into(),
                    AgentConfigFile {
                        body: b"body".to_vec(),
                        content_type: "content_type".into(),
                    },
                ),
                (
                    "extra.yaml".into(),
                    AgentConfigFile {
                        body: b"k: v\n".to_vec(),
                        content_type: "content_type".into(),
                    },
                ),
            ]),
        }
    }

    fn custom_message() -> CustomMessage {
        CustomMessage {
            capability: "capability".into(),
            r#type: "type".into(),
            data: vec![9, 8, 7],
        }
    }

    fn custom_capabilities() -> CustomCapabilities {
        CustomCapabilities {
            capabilities: vec!["capabilities".into(), "capabilities".into()],
        }
    }

    /// An AgentToServer with every field of every nested message set. String fields hold
    /// their own field name, which makes a field swapped in a cross-check obvious.
    fn full_agent_to_server() -> AgentToServer {
        let leaf_health = ComponentHealth {
            healthy: false,
            start_time_unix_nano: 0,
            last_error: "last_error".into(),
            status: "status".into(),
            status_time_unix_nano: 1_700_000_000_000_000_001,
            component_health_map: BTreeMap::new(),
            attributes: vec![KeyValue::string("string_value", "string_value")],
        };
        let mid_health = ComponentHealth {
            healthy: true,
            start_time_unix_nano: 1_600_000_000_000_000_000,
            last_error: "last_error".into(),
            status: "status".into(),
            status_time_unix_nano: 1_700_000_000_000_000_000,
            component_health_map: BTreeMap::from([("leaf".into(), leaf_health)]),
            attributes: every_any_value(),
        };
        AgentToServer {
            instance_uid: uid(0x11),
            sequence_num: 7,
            agent_description: Some(AgentDescription {
                identifying_attributes: vec![
                    KeyValue::string("service.name", "deskfleet-monitor"),
                    KeyValue::string("service.instance.id", "desktop-1"),
                ],
                non_identifying_attributes: every_any_value(),
            }),
            capabilities: AgentCapabilities::KNOWN_BITS,
            health: Some(ComponentHealth {
                component_health_map: BTreeMap::from([
                    ("mid".into(), mid_health.clone()),
                    ("other".into(), ComponentHealth::default()),
                ]),
                ..mid_health
            }),
            effective_config: Some(EffectiveConfig {
                config_map: Some(config_map()),
            }),
            remote_config_status: Some(RemoteConfigStatus {
                last_remote_config_hash: vec![0xaa; 32],
                status: RemoteConfigStatuses::Failed as i32,
                error_message: "error_message".into(),
            }),
            package_statuses: Some(PackageStatuses {
                packages: BTreeMap::from([(
                    "name".into(),
                    PackageStatus {
                        name: "name".into(),
                        agent_has_version: "agent_has_version".into(),
                        agent_has_hash: vec![1; 32],
                        server_offered_version: "server_offered_version".into(),
                        server_offered_hash: vec![2; 32],
                        status: PackageStatusEnum::Downloading as i32,
                        error_message: "error_message".into(),
                        download_details: Some(PackageDownloadDetails {
                            download_percent: 42.5,
                            download_bytes_per_second: 1_048_576.0,
                        }),
                    },
                )]),
                server_provided_all_packages_hash: vec![3; 32],
                error_message: "error_message".into(),
            }),
            agent_disconnect: Some(AgentDisconnect {}),
            flags: AgentToServerFlags::RequestInstanceUid.bit(),
            connection_settings_request: Some(ConnectionSettingsRequest {
                opamp: Some(OpAmpConnectionSettingsRequest {
                    certificate_request: Some(CertificateRequest {
                        csr: b"csr".to_vec(),
                    }),
                }),
            }),
            custom_capabilities: Some(custom_capabilities()),
            custom_message: Some(custom_message()),
            available_components: Some(AvailableComponents {
                components: BTreeMap::from([(
                    "receivers".into(),
                    ComponentDetails {
                        metadata: vec![KeyValue::string("code.namespace", "x")],
                        sub_component_map: BTreeMap::from([(
                            "otlp".into(),
                            ComponentDetails {
                                metadata: every_any_value(),
                                sub_component_map: BTreeMap::new(),
                            },
                        )]),
                    },
                )]),
                hash: vec![4; 32],
            }),
            connection_settings_status: Some(ConnectionSettingsStatus {
                last_connection_settings_hash: vec![5; 32],
                status: ConnectionSettingsStatuses::Applying as i32,
                error_message: "error_message".into(),
            }),
        }
    }

    /// A ServerToAgent with every field set. The spec forbids sending `error_response`
    /// or `command` together with the rest; the codec does not care, and this fixture
    /// is about the codec.
    fn full_server_to_agent() -> ServerToAgent {
        let telemetry = |endpoint: &str| TelemetryConnectionSettings {
            destination_endpoint: endpoint.into(),
            headers: Some(headers()),
            certificate: Some(certificate()),
            tls: Some(tls()),
            proxy: Some(proxy()),
        };
        ServerToAgent {
            instance_uid: uid(0x22),
            error_response: Some(ServerErrorResponse {
                r#type: ServerErrorResponseType::Unavailable as i32,
                error_message: "error_message".into(),
                details: Some(server_error_response::Details::RetryInfo(RetryInfo {
                    retry_after_nanoseconds: 30_000_000_000,
                })),
            }),
            remote_config: Some(AgentRemoteConfig {
                config: Some(config_map()),
                config_hash: vec![6; 32],
            }),
            connection_settings: Some(ConnectionSettingsOffers {
                hash: vec![7; 32],
                opamp: Some(OpAmpConnectionSettings {
                    destination_endpoint: "wss://fleet.example:4320/v1/opamp".into(),
                    headers: Some(headers()),
                    certificate: Some(certificate()),
                    heartbeat_interval_seconds: 15,
                    tls: Some(tls()),
                    proxy: Some(proxy()),
                }),
                own_metrics: Some(telemetry("https://otlp.example/v1/metrics")),
                own_traces: Some(telemetry("https://otlp.example/v1/traces")),
                own_logs: Some(telemetry("https://otlp.example/v1/logs")),
                other_connections: BTreeMap::from([(
                    "exporter".into(),
                    OtherConnectionSettings {
                        destination_endpoint: "destination_endpoint".into(),
                        headers: Some(headers()),
                        certificate: Some(certificate()),
                        other_settings: BTreeMap::from([
                            ("a".into(), "1".into()),
                            ("b".into(), "2".into()),
                        ]),
                        tls: Some(tls()),
                        proxy: Some(proxy()),
                    },
                )]),
            }),
            packages_available: Some(PackagesAvailable {
                packages: BTreeMap::from([
                    (
                        "deskfleet-monitor".into(),
                        PackageAvailable {
                            r#type: PackageType::TopLevel as i32,
                            version: "version".into(),
                            file: Some(DownloadableFile {
                                download_url: "https://fleet.example/packages/m.tar.gz".into(),
                                content_hash: vec![8; 32],
                                signature: b"signature".to_vec(),
                                headers: Some(headers()),
                            }),
                            hash: vec![9; 32],
                        },
                    ),
                    (
                        "plugin".into(),
                        PackageAvailable {
                            r#type: PackageType::Addon as i32,
                            version: "version".into(),
                            file: None,
                            hash: vec![10; 32],
                        },
                    ),
                ]),
                all_packages_hash: vec![11; 32],
            }),
            flags: ServerToAgentFlags::KNOWN_BITS,
            capabilities: ServerCapabilities::KNOWN_BITS,
            agent_identification: Some(AgentIdentification {
                new_instance_uid: uid(0x33),
            }),
            command: Some(ServerToAgentCommand {
                r#type: CommandType::Restart as i32,
            }),
            custom_capabilities: Some(custom_capabilities()),
            custom_message: Some(custom_message()),
        }
    }

    #[test]
    fn agent_to_server_round_trips_with_every_field_set() {
        let msg = full_agent_to_server();
        let bytes = msg.encode_to_vec();
        let back = AgentToServer::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, msg);
        // BTreeMap keeps map entries sorted, so re-encoding gives the same bytes.
        assert_eq!(back.encode_to_vec(), bytes);
    }

    #[test]
    fn server_to_agent_round_trips_with_every_field_set() {
        let msg = full_server_to_agent();
        let bytes = msg.encode_to_vec();
        let back = ServerToAgent::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.encode_to_vec(), bytes);
    }

    #[test]
    fn enum_getters_read_the_wire_values() {
        let s2a = full_server_to_agent();
        let err = s2a.error_response.as_ref().unwrap();
        assert_eq!(err.r#type(), ServerErrorResponseType::Unavailable);
        assert_eq!(s2a.command.unwrap().r#type(), CommandType::Restart);
        let a2s = full_agent_to_server();
        assert_eq!(
            a2s.remote_config_status.unwrap().status(),
            RemoteConfigStatuses::Failed
        );
        let pkg = &a2s.package_statuses.unwrap().packages["name"];
        assert_eq!(pkg.status(), PackageStatusEnum::Downloading);
    }

    #[test]
    fn agent_to_server_wire_bytes_are_pinned() {
        let msg = AgentToServer {
            instance_uid: (1..=16).collect(),
            sequence_num: 1,
            capabilities: AgentCapabilities::ReportsStatus.bit(),
            ..Default::default()
        };
        let mut expected = vec![
            1 << 3 | 2, // field 1 instance_uid, length-delimited
            16,
        ];
        expected.extend(1..=16u8);
        expected.extend([
            2 << 3, // field 2 sequence_num, varint
            1,
            4 << 3, // field 4 capabilities, varint
            1,
        ]);
        assert_eq!(msg.encode_to_vec(), expected);

        let mut frame = vec![0]; // WebSocket header 0
        frame.extend(&expected);
        assert_eq!(encode_ws_frame(&msg), frame);
        assert_eq!(decode_ws_frame::<AgentToServer>(&frame).unwrap(), msg);
    }

    #[test]
    fn fixed64_multibyte_varint_and_flags_are_pinned() {
        let msg = AgentToServer {
            health: Some(ComponentHealth {
                healthy: true,
                start_time_unix_nano: 0x0102_0304_0506_0708,
                ..Default::default()
            }),
            capabilities: AgentCapabilities::bits(&[
                AgentCapabilities::ReportsStatus,
                AgentCapabilities::ReportsHeartbeat,
            ]),
            flags: AgentToServerFlags::RequestInstanceUid.bit(),
            ..Default::default()
        };
        let expected = vec![
            4 << 3, // field 4 capabilities = 0x2001, varint in two 7-bit groups
            0x81,
            0x40,
            5 << 3 | 2, // field 5 health, length-delimited, 11 bytes
            11,
            1 << 3, // ComponentHealth field 1 healthy = true
            1,
            2 << 3 | 1, // ComponentHealth field 2 start_time_unix_nano, fixed64 little-endian
            0x08,
            0x07,
            0x06,
            0x05,
            0x04,
            0x03,
            0x02,
            0x01,
            10 << 3, // field 10 flags = RequestInstanceUid
            1,
        ];
        assert_eq!(msg.encode_to_vec(), expected);
    }

    #[test]
    fn server_to_agent_wire_bytes_are_pinned() {
        let msg = ServerToAgent {
            instance_uid: uid(0xaa),
            remote_config: Some(AgentRemoteConfig {
                config: Some(AgentConfigMap {
                    config_map: BTreeMap::from([(
                        "a.yaml".into(),
                        AgentConfigFile {
                            body: b"k: v".to_vec(),
                            content_type: "text/yaml".into(),
                        },
                    )]),
                }),
                config_hash: vec![0xde, 0xad],
            }),
            flags: ServerToAgentFlags::ReportFullState.bit(),
            capabilities: ServerCapabilities::bits(&[
                ServerCapabilities::AcceptsStatus,
                ServerCapabilities::OffersRemoteConfig,
            ]),
            ..Default::default()
        };
        let mut expected = vec![1 << 3 | 2, 16]; // field 1 instance_uid
        expected.extend([0xaa; 16]);
        expected.extend([3 << 3 | 2, 35]); // field 3 remote_config (AgentRemoteConfig)
        expected.extend([1 << 3 | 2, 29]); //   field 1 config (AgentConfigMap)
        expected.extend([1 << 3 | 2, 27]); //     field 1 config_map entry
        expected.extend([1 << 3 | 2, 6]); //        entry key
        expected.extend(b"a.yaml");
        expected.extend([2 << 3 | 2, 17]); //       entry value (AgentConfigFile)
        expected.extend([1 << 3 | 2, 4]); //          field 1 body
        expected.extend(b"k: v");
        expected.extend([2 << 3 | 2, 9]); //          field 2 content_type
        expected.extend(b"text/yaml");
        expected.extend([2 << 3 | 2, 2, 0xde, 0xad]); // field 2 config_hash
        expected.extend([6 << 3, 1]); // field 6 flags = ReportFullState
        expected.extend([7 << 3, 3]); // field 7 capabilities = AcceptsStatus|OffersRemoteConfig
        assert_eq!(msg.encode_to_vec(), expected);
        assert_eq!(ServerToAgent::decode(expected.as_slice()).unwrap(), msg);
    }

    #[test]
    fn unknown_fields_from_a_newer_peer_are_skipped() {
        let msg = AgentToServer {
            instance_uid: uid(1),
            sequence_num: 3,
            ..Default::default()
        };
        let mut bytes = msg.encode_to_vec();
        // Field 99, varint: tag 99 << 3 = 792 = 0x98 0x06 as a varint; value 5.
        bytes.extend([0x98, 0x06, 5]);
        assert_eq!(AgentToServer::decode(bytes.as_slice()).unwrap(), msg);
    }

    #[test]
    fn ws_frame_round_trips_both_directions() {
        let a2s = full_agent_to_server();
        let frame = encode_ws_frame(&a2s);
        assert_eq!(frame[0], 0);
        assert_eq!(decode_ws_frame::<AgentToServer>(&frame).unwrap(), a2s);

        let s2a = full_server_to_agent();
        let frame = encode_ws_frame(&s2a);
        assert_eq!(decode_ws_frame::<ServerToAgent>(&frame).unwrap(), s2a);
    }

    #[test]
    fn ws_frame_with_empty_payload_is_an_empty_message() {
        let frame = encode_ws_frame(&ServerToAgent::default());
        assert_eq!(frame, [0]);
        assert_eq!(
            decode_ws_frame::<ServerToAgent>(&frame).unwrap(),
            ServerToAgent::default()
        );
    }

    #[test]
    fn ws_frame_rejects_a_non_zero_header() {
        let mut frame = vec![1];
        frame.extend(full_agent_to_server().encode_to_vec());
        assert!(matches!(
            decode_ws_frame::<AgentToServer>(&frame),
            Err(FrameError::UnsupportedHeader(1))
        ));

        // A multi-byte header is read whole: 300 = 0xAC 0x02.
        assert!(matches!(
            decode_ws_frame::<AgentToServer>(&[0xac, 0x02, 0x08, 0x01]),
            Err(FrameError::UnsupportedHeader(300))
        ));

        let mut max = Vec::new();
        put_varint(u64::MAX, &mut max);
        assert_eq!(max.len(), 10);
        assert!(matches!(
            decode_ws_frame::<AgentToServer>(&max),
            Err(FrameError::UnsupportedHeader(u64::MAX))
        ));
    }

    #[test]
    fn ws_frame_rejects_garbage() {
        assert!(matches!(
            decode_ws_frame::<AgentToServer>(&[]),
            Err(FrameError::Empty)
        ));
        // The varint never ends.
        assert!(matches!(
            decode_ws_frame::<AgentToServer>(&[0x80, 0x80, 0x80]),
            Err(FrameError::MalformedHeader)
        ));
        // Longer than a u64 can be.
        assert!(matches!(
            decode_ws_frame::<AgentToServer>(&[0xff; 11]),
            Err(FrameError::MalformedHeader)
        ));
        assert!(matches!(
            decode_ws_frame::<AgentToServer>(&[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02
            ]),
            Err(FrameError::MalformedHeader)
        ));
        // A good header, then a length-delimited field claiming more bytes than exist.
        assert!(matches!(
            decode_ws_frame::<AgentToServer>(&[0x00, 0x0a, 0x10, 0x01]),
            Err(FrameError::Payload(_))
        ));
        // A good header, then a wire type protobuf does not have (7).
        assert!(matches!(
            decode_ws_frame::<AgentToServer>(&[0x00, 0xff, 0xff]),
            Err(FrameError::Payload(_))
        ));
    }

    #[test]
    fn varint_header_round_trips() {
        for value in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(value, &mut buf);
            buf.push(0x42);
            assert_eq!(split_varint(&buf), Some((value, &[0x42][..])));
        }
        // A zero header written in two bytes still reads as 0.
        assert_eq!(split_varint(&[0x80, 0x00]), Some((0, &[][..])));
    }

    #[test]
    fn capability_bits() {
        let bits = AgentCapabilities::bits(&[
            AgentCapabilities::ReportsStatus,
            AgentCapabilities::AcceptsPackages,
            AgentCapabilities::ReportsHeartbeat,
        ]);
        assert_eq!(bits, 0x2009);
        assert!(has_capability(bits, AgentCapabilities::AcceptsPackages));
        assert!(!has_capability(
            bits,
            AgentCapabilities::AcceptsRemoteConfig
        ));
        assert!(!has_capability(bits, AgentCapabilities::Unspecified));
        assert_eq!(
            AgentCapabilities::from_bits(bits | 1 << 40),
            [
                AgentCapabilities::ReportsStatus,
                AgentCapabilities::AcceptsPackages,
                AgentCapabilities::ReportsHeartbeat,
            ]
        );
        // Sixteen agent capabilities and seven server ones, packed from bit 0 up: a
        // renumbered or forgotten variant breaks these.
        assert_eq!(AgentCapabilities::KNOWN_BITS, 0xffff);
        assert_eq!(ServerCapabilities::KNOWN_BITS, 0x7f);
        assert_eq!(ServerToAgentFlags::KNOWN_BITS, 0x3);
        assert_eq!(AgentToServerFlags::KNOWN_BITS, 0x1);
        assert!(has_capability(
            0x3,
            ServerToAgentFlags::ReportAvailableComponents
        ));
    }

    #[test]
    fn agent_description_lookup_prefers_identifying_attributes() {
        let desc = AgentDescription {
            identifying_attributes: vec![
                KeyValue {
                    key: "service.version".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(3)),
                    }),
                },
                KeyValue::string("service.name", "deskfleet-monitor"),
            ],
            non_identifying_attributes: vec![
                KeyValue::string("service.name", "shadowed"),
                KeyValue::string("service.version", "1.2.3"),
                KeyValue::string("host.name", "desk-1"),
            ],
        };
        assert_eq!(desc.get_str("service.name"), Some("deskfleet-monitor"));
        assert_eq!(desc.get_str("host.name"), Some("desk-1"));
        // A non-string value is skipped in favour of a later string one.
        assert_eq!(desc.get_str("service.version"), Some("1.2.3"));
        assert_eq!(desc.get_str("os.type"), None);
    }

    #[test]
    fn debug_output_hides_credentials() {
        let offer = full_server_to_agent().connection_settings.unwrap();
        let shown = format!("{offer:?}");
        assert!(shown.contains("Authorization"));
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY MATERIAL"), "{shown}");
        assert!(!shown.contains("80, 82, 73, 86"), "{shown}"); // b"PRIV" as a byte list
        assert!(shown.contains("<redacted>"));
    }
}
