//! From a monitor's metrics report (`crates/monitor/src/report.rs`, read here field by
//! field so that a report of any version parses) to Cloud Eye `AGT.ECS` points.
//!
//! Names and units follow Cloud Eye's agent metrics (`docs/ces.md`, "Metrics"); a figure
//! the report does not carry gives no point, never a made-up zero.

use deskfleet_core::clock::Millis;
use deskfleet_core::ids::DesktopId;
use deskfleet_core::metrics::{SeriesKey, mount_point_id};
use serde::Deserialize;

/// A collection time further than this from the time of receipt is not believed: the
/// point is stamped with the time of receipt instead.
pub const MAX_CLOCK_SKEW_MS: Millis = 10 * 60 * 1000;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[derive(Debug, Deserialize)]
struct Report {
    #[serde(default)]
    collected_at_ms: Option<i64>,
    #[serde(default)]
    cpu: Option<Cpu>,
    #[serde(default)]
    memory: Option<Memory>,
    #[serde(default)]
    disks: Vec<Disk>,
    #[serde(default)]
    network: Vec<Interface>,
    #[serde(default)]
    load_average: Option<[f64; 3]>,
}

#[derive(Debug, Deserialize)]
struct Cpu {
    usage_percent: f64,
    #[serde(default)]
    cores: u32,
    #[serde(default)]
    user_percent: Option<f64>,
    #[serde(default)]
    system_percent: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Memory {
    available_bytes: u64,
    used_percent: f64,
}

#[derive(Debug, Deserialize)]
struct Disk {
    mount_point: String,
    total_bytes: u64,
    free_bytes: u64,
    available_bytes: u64,
    used_percent: f64,
}

#[derive(Debug, Deserialize)]
struct Interface {
    #[serde(default)]
    rx_bytes_per_sec: Option<f64>,
    #[serde(default)]
    tx_bytes_per_sec: Option<f64>,
}

/// One value of a report, with what its series needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub key: SeriesKey,
    pub unit: &'static str,
    /// The mount path of a disk metric.
    pub origin: Option<String>,
    pub value: f64,
}

/// The metric names served, with their units, in the order a report yields them.
pub const METRICS: &[(&str, &str)] = &[
    ("cpu_usage", "%"),
    ("cpu_usage_idle", "%"),
    ("cpu_usage_user", "%"),
    ("cpu_usage_system", "%"),
    ("cpu_usage_other", "%"),
    ("load_average1", ""),
    ("load_average5", ""),
    ("load_average15", ""),
    ("mem_usedPercent", "%"),
    ("mem_available", "GB"),
    ("disk_usedPercent", "%"),
    ("disk_free", "GB"),
    ("disk_total", "GB"),
    ("disk_used", "GB"),
    ("net_bitSent", "bit/s"),
    ("net_bitRecv", "bit/s"),
];

/// The unit of a served metric.
pub fn unit_of(metric: &str) -> Option<&'static str> {
    METRICS.iter().find(|(m, _)| *m == metric).map(|(_, u)| *u)
}

/// Whether the metric has the `mount_point` dimension.
pub fn is_disk_metric(metric: &str) -> bool {
    metric.starts_with("disk_")
}

/// The samples of one report and the time they are stamped with; `None` if the report is
/// not a metrics report this server can read.
pub fn samples(
    desktop: &DesktopId,
    json: &str,
    received_at: Millis,
) -> Option<(Millis, Vec<Sample>)> {
    let report: Report = serde_json::from_str(json).ok()?;
    let at = report
        .collected_at_ms
        .filter(|t| (t - received_at).abs() <= MAX_CLOCK_SKEW_MS)
        .unwrap_or(received_at);
    let mut out = Vec::with_capacity(24);
    let mut push = |metric: &'static str, value: f64, mount: Option<&str>| {
        if !value.is_finite() {
            return;
        }
        out.push(Sample {
            key: SeriesKey {
                desktop: desktop.clone(),
                metric: metric.to_owned(),
                mount_point: mount.map(|m| mount_point_id(desktop, m)),
            },
            unit: unit_of(metric).unwrap_or(""),
            origin: mount.map(str::to_owned),
            value,
        });
    };
    let mut cores = 0;
    if let Some(cpu) = &report.cpu {
        cores = cpu.cores;
        push("cpu_usage", cpu.usage_percent, None);
        push("cpu_usage_idle", 100.0 - cpu.usage_percent, None);
        if let Some(user) = cpu.user_percent {
            push("cpu_usage_user", user, None);
        }
        if let Some(system) = cpu.system_percent {
            push("cpu_usage_system", system, None);
        }
        if let (Some(user), Some(system)) = (cpu.user_percent, cpu.system_percent) {
            push(
                "cpu_usage_other",
                (cpu.usage_percent - user - system).max(0.0),
                None,
            );
        }
    }
    // Cloud Eye's load average is per logical CPU.
    if let (Some(load), true) = (report.load_average, cores > 0) {
        let per_cpu = |v: f64| v / f64::from(cores);
        push("load_average1", per_cpu(load[0]), None);
        push("load_average5", per_cpu(load[1]), None);
        push("load_average15", per_cpu(load[2]), None);
    }
    if let Some(memory) = &report.memory {
        push("mem_usedPercent", memory.used_percent, None);
        push("mem_available", memory.available_bytes as f64 / GIB, None);
    }
    for disk in &report.disks {
        let mount = Some(disk.mount_point.as_str());
        push("disk_usedPercent", disk.used_percent, mount);
        push("disk_free", disk.available_bytes as f64 / GIB, mount);
        push("disk_total", disk.total_bytes as f64 / GIB, mount);
        push(
            "disk_used",
            disk.total_bytes.saturating_sub(disk.free_bytes) as f64 / GIB,
            mount,
        );
    }
    let rate = |f: fn(&Interface) -> Option<f64>| {
        let rates: Vec<f64> = report.network.iter().filter_map(f).collect();
        (!rates.is_empty()).then(|| rates.iter().sum::<f64>() * 8.0)
    };
    if let Some(sent) = rate(|i| i.tx_bytes_per_sec) {
        push("net_bitSent", sent, None);
    }
    if let Some(recv) = rate(|i| i.rx_bytes_per_sec) {
        push("net_bitRecv", recv, None);
    }
    Some((at, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"type":"metrics","agent":"deskfleet-monitor","version":"0.1.0",
        "collected_at_ms":1000000,"interval_ms":10000,
        "cpu":{"usage_percent":40.0,"cores":4,"user_percent":30.0,"system_percent":8.0},
        "memory":{"total_bytes":8589934592,"available_bytes":2147483648,"used_percent":75.0,
                  "swap_total_bytes":0,"swap_free_bytes":0},
        "disks":[{"mount_point":"/","filesystem":"ext4","device":"/dev/vda1",
                  "total_bytes":10737418240,"free_bytes":5368709120,
                  "available_bytes":4294967296,"used_percent":55.56}],
        "network":[{"interface":"eth0","rx_bytes":1,"tx_bytes":2,"rx_bytes_per_sec":100.0,
                    "tx_bytes_per_sec":null},
                   {"interface":"eth1","rx_bytes":1,"tx_bytes":2,"rx_bytes_per_sec":50.0,
                    "tx_bytes_per_sec":10.0}],
        "load_average":[2.0,1.0,0.5],"uptime_secs":5.0,"self":null}"#;

    fn value(samples: &[Sample], metric: &str) -> Option<f64> {
        samples
            .iter()
            .find(|s| s.key.metric == metric)
            .map(|s| s.value)
    }

    #[test]
    fn a_report_becomes_cloud_eye_points() {
        let desktop = DesktopId::parse("d-1").unwrap();
        let (at, samples) = samples(&desktop, LINE, 1_000_500).unwrap();
        assert_eq!(at, 1_000_000);
        assert_eq!(value(&samples, "cpu_usage"), Some(40.0));
        assert_eq!(value(&samples, "cpu_usage_idle"), Some(60.0));
        assert_eq!(value(&samples, "cpu_usage_user"), Some(30.0));
        assert_eq!(value(&samples, "cpu_usage_other"), Some(2.0));
        assert_eq!(value(&samples, "load_average1"), Some(0.5));
        assert_eq!(value(&samples, "mem_available"), Some(2.0));
        assert_eq!(value(&samples, "disk_total"), Some(10.0));
        assert_eq!(value(&samples, "disk_free"), Some(4.0));
        assert_eq!(value(&samples, "disk_used"), Some(5.0));
        assert_eq!(value(&samples, "net_bitRecv"), Some(1200.0));
        assert_eq!(value(&samples, "net_bitSent"), Some(80.0));
        let disk = samples
            .iter()
            .find(|s| s.key.metric == "disk_usedPercent")
            .unwrap();
        assert_eq!(disk.origin.as_deref(), Some("/"));
        let id = disk.key.mount_point.as_deref().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, mount_point_id(&desktop, "/"));
        assert_ne!(id, mount_point_id(&DesktopId::parse("d-2").unwrap(), "/"));
        assert_eq!(disk.unit, "%");
    }

    #[test]
    fn a_clock_far_off_is_not_believed_and_missing_figures_give_no_points() {
        let desktop = DesktopId::parse("d-1").unwrap();
        let line = r#"{"collected_at_ms":1,"cpu":null,"memory":null,"disks":[],"network":[]}"#;
        let (at, samples) = samples(&desktop, line, 5_000_000_000).unwrap();
        assert_eq!(at, 5_000_000_000);
        assert!(samples.is_empty());
        assert!(super::samples(&desktop, "not json", 0).is_none());
    }
}
