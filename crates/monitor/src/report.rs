//! The lines the agent writes on stdout, one JSON object per line.
//!
//! These types are the contract with the guest daemon, which deserializes them by depending
//! on this crate. Adding an optional field is compatible; renaming or removing one is not,
//! and `tests/fixtures/*.jsonl` (lines from older versions) must keep parsing.

use serde::{Deserialize, Serialize};

/// One line of output, tagged by `"type"`: `"health"` or `"metrics"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Report {
    Health(Health),
    Metrics(Box<Metrics>),
}

/// Where the agent is in its life. Serialized lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started or still going; sent first and then as a heartbeat.
    Running,
    /// Asked to stop (SIGTERM/SIGINT); the last line the agent writes.
    Stopping,
}

/// Sent once at start, every [`crate::HEARTBEAT_EVERY`] intervals after that, and once more
/// when the agent is asked to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Always [`crate::AGENT_NAME`].
    pub agent: String,
    /// The agent's `CARGO_PKG_VERSION`; the guest compares it with the version it installed.
    pub version: String,
    /// True when the agent can do its job: running on a supported platform.
    pub healthy: bool,
    pub pid: u32,
    /// Wall-clock start of the process, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// False on platforms without a collector (anything but Linux, for now): such an agent
    /// sends health lines only, never metrics.
    pub supported: bool,
    pub status: Status,
    /// Why `supported` (and so `healthy`) is false. Absent when supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One sample of the desktop and of the agent itself.
///
/// A figure that could not be read is `null` (or missing from a list), never a made-up
/// zero, and the reason is in `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub agent: String,
    pub version: String,
    /// Wall-clock time of the sample, milliseconds since the Unix epoch.
    pub collected_at_ms: u64,
    /// The measured window, in milliseconds, that the rates and CPU percentages cover: about
    /// [`crate::FIRST_WINDOW`] for the first sample, about the configured interval after it.
    pub interval_ms: u64,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    /// Real, local filesystems, one per device (pseudo and remote filesystems are skipped).
    pub disks: Vec<Disk>,
    /// Every interface but `lo`.
    pub network: Vec<NetworkInterface>,
    /// 1, 5 and 15 minute load averages.
    pub load_average: Option<[f64; 3]>,
    pub uptime_secs: Option<f64>,
    /// The agent's own footprint.
    #[serde(rename = "self")]
    pub agent_process: Option<SelfUsage>,
    /// What could not be read in this sample, as `"<source>: <cause>"`. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// Busy share of all cores over the window, 0..=100.
    pub usage_percent: f64,
    /// Online cores.
    pub cores: u32,
    /// User-mode share (`user` ticks, `nice` excluded), 0..=100. Absent from older agents
    /// and when it could not be computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_percent: Option<f64>,
    /// Kernel-mode share (`system` ticks, interrupts excluded), 0..=100. Absent as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    /// What the kernel estimates can be allocated without swapping (`MemAvailable`).
    pub available_bytes: u64,
    /// `(total - available) / total`, 0..=100.
    pub used_percent: f64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub mount_point: String,
    /// The filesystem type, e.g. `ext4`.
    pub filesystem: String,
    /// The mounted source, e.g. `/dev/vda1`.
    pub device: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Free to unprivileged users (excludes the root reserve).
    pub available_bytes: u64,
    /// As `df` computes it: `used / (used + available)`, 0..=100.
    pub used_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub interface: String,
    /// Counters since the interface came up.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Over the window; `null` the first time an interface is seen or after its counters
    /// went backwards (interface re-created).
    pub rx_bytes_per_sec: Option<f64>,
    pub tx_bytes_per_sec: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfUsage {
    /// Resident memory (`VmRSS`).
    pub rss_bytes: u64,
    /// The agent's share of the whole machine's CPU over the window, 0..=100, on the same
    /// scale as [`Cpu::usage_percent`] (multiply by `cores` for "percent of one core").
    /// Counted in clock ticks (10 ms at the usual 100 Hz), so an agent that used less than
    /// a tick in the window reads 0.
    pub cpu_percent: f64,
}
