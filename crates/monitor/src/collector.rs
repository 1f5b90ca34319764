//! Reads the system: `/proc` files and statvfs. Everything else in the crate is pure.

use std::fs;
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::procfs::{self, CpuTimes, FsStats, NetCounters, ParseError};
use crate::report::{Cpu, Health, Metrics, SelfUsage, Status};
use crate::{AGENT_NAME, MIN_WINDOW, VERSION};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why this machine cannot be monitored, or `None` when it can.
///
/// Only Linux is supported: every figure comes from `/proc`. Elsewhere the agent still runs
/// and sends health lines with this reason, so the fleet sees it installed but not useful.
pub fn unsupported_reason() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some(format!(
            "metrics are not yet supported on {}: the collector reads Linux /proc",
            std::env::consts::OS
        ));
    }
    match fs::read_to_string("/proc/stat") {
        Ok(_) => None,
        Err(e) => Some(format!(
            "/proc/stat is not readable ({e}): is /proc mounted?"
        )),
    }
}

/// The health line for this process.
pub fn health(started_at_ms: u64, status: Status) -> Health {
    let reason = unsupported_reason();
    Health {
        agent: AGENT_NAME.to_owned(),
        version: VERSION.to_owned(),
        healthy: reason.is_none(),
        pid: std::process::id(),
        started_at_ms,
        supported: reason.is_none(),
        status,
        reason,
    }
}

/// The counters that rates and percentages are computed from, read at one instant.
struct Reading {
    at: Instant,
    cpu: Option<CpuTimes>,
    self_ticks: Option<u64>,
    network: Option<Vec<NetCounters>>,
}

impl Reading {
    fn take(errors: &mut Vec<String>) -> Self {
        // The two CPU files are read back to back so the agent's ticks and the machine's
        // cover the same window.
        let self_ticks = read("/proc/self/stat", errors)
            .and_then(|text| parsed(procfs::parse_stat_cpu_ticks(&text), errors));
        let cpu = read("/proc/stat", errors)
            .and_then(|text| parsed(procfs::parse_cpu_times(&text), errors));
        let at = Instant::now();
        let network = read("/proc/net/dev", errors)
            .and_then(|text| parsed(procfs::parse_net_dev(&text), errors));
        Reading {
            at,
            cpu,
            self_ticks,
            network,
        }
    }
}

fn read(path: &'static str, errors: &mut Vec<String>) -> Option<String> {
    fs::read_to_string(path)
        .map_err(|e| errors.push(format!("{path}: {e}")))
        .ok()
}

fn parsed<T>(result: Result<T, ParseError>, errors: &mut Vec<String>) -> Option<T> {
    result.map_err(|e| errors.push(e.to_string())).ok()
}

#[cfg(target_os = "linux")]
fn statvfs(mount_point: &str) -> Result<FsStats, String> {
    let stats = rustix::fs::statvfs(mount_point).map_err(|e| e.to_string())?;
    Ok(FsStats {
        // Linux reports f_frsize; a zero would mean an old driver that only sets f_bsize.
        fragment_size: if stats.f_frsize > 0 {
            stats.f_frsize
        } else {
            stats.f_bsize
        },
        blocks: stats.f_blocks,
        blocks_free: stats.f_bfree,
        blocks_available: stats.f_bavail,
    })
}

#[cfg(not(target_os = "linux"))]
fn statvfs(_mount_point: &str) -> Result<FsStats, String> {
    Err("statvfs is only used on Linux".to_owned())
}

/// Samples the desktop. Holds the previous counter reading, so each [`Collector::sample`]
/// reports rates and percentages over the window since the previous one (or since
/// [`Collector::new`] for the first).
pub struct Collector {
    previous: Reading,
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector {
    /// Takes the baseline reading. Its errors are not kept: the first sample reads the same
    /// sources and reports what still fails.
    pub fn new() -> Self {
        Collector {
            previous: Reading::take(&mut Vec::new()),
        }
    }

    /// One sample. Blocks until at least [`MIN_WINDOW`] has passed since the previous
    /// reading: with fewer clock ticks than that in the window, the CPU percentages would be
    /// noise, and "no ticks" must never come out as a fake 0%.
    ///
    /// On an unsupported platform it reads nothing and returns the reason in `errors`.
    pub fn sample(&mut self) -> Metrics {
        let mut errors = Vec::new();
        let mut metrics = Metrics {
            agent: AGENT_NAME.to_owned(),
            version: VERSION.to_owned(),
            collected_at_ms: 0,
            interval_ms: 0,
            cpu: None,
            memory: None,
            disks: Vec::new(),
            network: Vec::new(),
            load_average: None,
            uptime_secs: None,
            agent_process: None,
            errors: Vec::new(),
        };
        if !cfg!(target_os = "linux") {
            metrics.collected_at_ms = now_ms();
            metrics.errors = unsupported_reason().into_iter().collect();
            return metrics;
        }

        let since = self.previous.at.elapsed();
        if since < MIN_WINDOW {
            thread::sleep(MIN_WINDOW - since);
        }
        let now = Reading::take(&mut errors);
        let previous = std::mem::replace(&mut self.previous, now);
        let now = &self.previous;
        let window = now.at.saturating_duration_since(previous.at);
        metrics.collected_at_ms = now_ms();
        metrics.interval_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);

        if let (Some(before), Some(after)) = (&previous.cpu, &now.cpu) {
            match procfs::cpu_usage_percent(before, after) {
                Some(usage_percent) => {
                    let modes = procfs::cpu_mode_percents(before, after);
                    metrics.cpu = Some(Cpu {
                        usage_percent,
                        cores: after.cores,
                        user_percent: modes.map(|m| m.0),
                        system_percent: modes.map(|m| m.1),
                    });
                }
                None => errors.push("/proc/stat: no CPU time elapsed in the window".to_owned()),
            }
        }

        if let Some(after) = &now.network {
            metrics.network =
                procfs::network_rates(previous.network.as_deref(), after, window.as_secs_f64());
        }

        metrics.memory = read("/proc/meminfo", &mut errors)
            .and_then(|text| parsed(procfs::parse_meminfo(&text), &mut errors));
        metrics.load_average = read("/proc/loadavg", &mut errors)
            .and_then(|text| parsed(procfs::parse_loadavg(&text), &mut errors));
        metrics.uptime_secs = read("/proc/uptime", &mut errors)
            .and_then(|text| parsed(procfs::parse_uptime(&text), &mut errors));

        if let Some(mounts) = read("/proc/self/mounts", &mut errors) {
            for mount in procfs::real_mounts(&mounts) {
                match statvfs(&mount.mount_point) {
                    Ok(stats) => metrics.disks.extend(procfs::disk_usage(&mount, stats)),
                    Err(e) => errors.push(format!("statvfs {}: {e}", mount.mount_point)),
                }
            }
        }

        let rss = read("/proc/self/status", &mut errors)
            .and_then(|text| parsed(procfs::parse_status_rss(&text), &mut errors));
        let self_cpu = match (previous.self_ticks, now.self_ticks, &previous.cpu, &now.cpu) {
            (Some(then), Some(ticks), Some(before), Some(after)) => ticks
                .checked_sub(then)
                .and_then(|spent| procfs::self_cpu_percent(spent, before, after)),
            _ => None,
        };
        if let (Some(rss_bytes), Some(cpu_percent)) = (rss, self_cpu) {
            metrics.agent_process = Some(SelfUsage {
                rss_bytes,
                cpu_percent,
            });
        }

        metrics.errors = errors;
        metrics
    }
}
