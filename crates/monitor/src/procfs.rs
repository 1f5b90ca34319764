//! Parsers for the Linux `/proc` files the collector reads, and the delta arithmetic on
//! their counters.
//!
//! Every function here is pure: it takes the file's text (or earlier parsed values) and
//! never touches the filesystem, so each is tested on committed fixture text and compiles on
//! every platform. Formats are those of proc(5).

use std::collections::HashSet;

use thiserror::Error;

use crate::report::{Disk, Memory, NetworkInterface};

/// A `/proc` file did not have the shape proc(5) describes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("{file}: no {what}")]
    Missing {
        file: &'static str,
        what: &'static str,
    },
    #[error("{file}: malformed {what}: {text:?}")]
    Malformed {
        file: &'static str,
        what: &'static str,
        text: String,
    },
}

/// Aggregate CPU time from `/proc/stat`, in clock ticks (`USER_HZ`) summed over all cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + idle + iowait + irq + softirq + steal. `guest` and
    /// `guest_nice` are left out because the kernel already counts them in user and nice.
    pub total: u64,
    /// idle + iowait: time no task was running.
    pub idle: u64,
    /// Time in user mode (guest time included, as the kernel counts it), `nice` excluded.
    pub user: u64,
    /// Time in kernel mode (`irq` and `softirq` excluded).
    pub system: u64,
    /// Number of `cpuN` lines: the online cores.
    pub cores: u32,
}

/// Byte counters of one interface from `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetCounters {
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One line of `/proc/self/mounts`, with its octal escapes (`\040` for a space...) decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub device: String,
    pub mount_point: String,
    pub filesystem: String,
}

/// The figures of statvfs(3) that a [`Disk`] is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// Fragment size: the unit of the block counts.
    pub fragment_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
}

fn number<T: std::str::FromStr>(
    file: &'static str,
    what: &'static str,
    text: &str,
) -> Result<T, ParseError> {
    text.parse().map_err(|_| ParseError::Malformed {
        file,
        what,
        text: text.to_owned(),
    })
}

/// Rounds to two decimals: the precision anyone reads a percentage or a rate at, and it
/// keeps the lines short.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// `part / whole` as a percentage clamped to 0..=100, or `None` when `whole` is zero.
pub fn percent(part: f64, whole: f64) -> Option<f64> {
    if whole > 0.0 && part.is_finite() {
        Some(round2((part / whole * 100.0).clamp(0.0, 100.0)))
    } else {
        None
    }
}

/// Parses `/proc/stat`: the aggregate `cpu` line and the count of `cpuN` lines.
pub fn parse_cpu_times(stat: &str) -> Result<CpuTimes, ParseError> {
    const FILE: &str = "/proc/stat";
    let mut aggregate = None;
    let mut cores = 0u32;
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => aggregate = Some(fields.collect::<Vec<_>>()),
            Some(name)
                if name.len() > 3
                    && name.starts_with("cpu")
                    && name[3..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                cores += 1;
            }
            _ => {}
        }
    }
    let fields = aggregate.ok_or(ParseError::Missing {
        file: FILE,
        what: "aggregate cpu line",
    })?;
    if fields.len() < 4 {
        return Err(ParseError::Malformed {
            file: FILE,
            what: "cpu line",
            text: fields.join(" "),
        });
    }
    let mut ticks = [0u64; 8];
    // Fields past `idle` appeared over kernel versions (iowait 2.5.41, steal 2.6.11): an
    // absent one counts as zero time.
    for (slot, field) in ticks.iter_mut().zip(&fields) {
        *slot = number(FILE, "cpu ticks", field)?;
    }
    let [user, _nice, system, idle, iowait, ..] = ticks;
    Ok(CpuTimes {
        total: ticks.iter().fold(0u64, |sum, t| sum.saturating_add(*t)),
        idle: idle.saturating_add(iowait),
        user,
        system,
        cores,
    })
}

/// Busy percentage of all cores between two `/proc/stat` readings, or `None` if no time
/// elapsed or the counters went backwards (which they do not, short of a kernel bug).
pub fn cpu_usage_percent(before: &CpuTimes, after: &CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let idle = after.idle.checked_sub(before.idle)?;
    // Idle can advance more than total when cores go offline between readings.
    let busy = total.saturating_sub(idle);
    percent(busy as f64, total as f64)
}

/// The user-mode and kernel-mode shares of all cores between two readings, or `None` as
/// for [`cpu_usage_percent`].
pub fn cpu_mode_percents(before: &CpuTimes, after: &CpuTimes) -> Option<(f64, f64)> {
    let total = after.total.checked_sub(before.total)?;
    let user = after.user.checked_sub(before.user)?;
    let system = after.system.checked_sub(before.system)?;
    Some((
        percent(user as f64, total as f64)?,
        percent(system as f64, total as f64)?,
    ))
}

/// The agent's share of the whole machine's CPU: its own ticks over all cores' ticks in the
/// same window. Both count in `USER_HZ`, so no clock-rate constant is needed.
pub fn self_cpu_percent(self_ticks: u64, before: &CpuTimes, after: &CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    percent(self_ticks as f64, total as f64)
}

/// Parses `/proc/meminfo` (values in kB) into the report's memory figures.
pub fn parse_meminfo(meminfo: &str) -> Result<Memory, ParseError> {
    const FILE: &str = "/proc/meminfo";
    let field = |key: &'static str| -> Result<Option<u64>, ParseError> {
        for line in meminfo.lines() {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            if name.trim() == key {
                let value = rest.split_whitespace().next().unwrap_or("");
                let kib: u64 = number(FILE, key, value)?;
                return Ok(Some(kib.saturating_mul(1024)));
            }
        }
        Ok(None)
    };
    let required = |key: &'static str| -> Result<u64, ParseError> {
        field(key)?.ok_or(ParseError::Missing {
            file: FILE,
            what: key,
        })
    };
    let total_bytes = required("MemTotal")?;
    // MemAvailable exists since Linux 3.14; before it, free + buffers + page cache is the
    // usual estimate.
    let available_bytes = match field("MemAvailable")? {
        Some(available) => available,
        None => required("MemFree")?
            .saturating_add(field("Buffers")?.unwrap_or(0))
            .saturating_add(field("Cached")?.unwrap_or(0)),
    };
    let available_bytes = available_bytes.min(total_bytes);
    let used_percent = percent((total_bytes - available_bytes) as f64, total_bytes as f64).ok_or(
        ParseError::Malformed {
            file: FILE,
            what: "MemTotal",
            text: "0 kB".to_owned(),
        },
    )?;
    Ok(Memory {
        total_bytes,
        available_bytes,
        used_percent,
        swap_total_bytes: field("SwapTotal")?.unwrap_or(0),
        swap_free_bytes: field("SwapFree")?.unwrap_or(0),
    })
}

/// Parses `/proc/net/dev`, leaving out the loopback interface `lo`.
pub fn parse_net_dev(net_dev: &str) -> Result<Vec<NetCounters>, ParseError> {
    const FILE: &str = "/proc/net/dev";
    let mut interfaces = Vec::new();
    // The first two lines are column headers.
    for line in net_dev.lines().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        // Old kernels print `eth0:123` with no space, so split on the colon, not on blanks.
        let Some((name, counters)) = line.rsplit_once(':') else {
            return Err(ParseError::Malformed {
                file: FILE,
                what: "interface line",
                text: line.to_owned(),
            });
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let counters: Vec<&str> = counters.split_whitespace().collect();
        // 8 receive columns, then 8 transmit columns: bytes lead each group.
        if counters.len() < 16 {
            return Err(ParseError::Malformed {
                file: FILE,
                what: "interface line",
                text: line.to_owned(),
            });
        }
        interfaces.push(NetCounters {
            interface: name.to_owned(),
            rx_bytes: number(FILE, "rx bytes", counters[0])?,
            tx_bytes: number(FILE, "tx bytes", counters[8])?,
        });
    }
    Ok(interfaces)
}

/// Joins two `/proc/net/dev` readings into report entries with per-second rates over
/// `elapsed_secs`. An interface missing from `before`, or whose counters went backwards,
/// gets `None` rates rather than a made-up figure.
pub fn network_rates(
    before: Option<&[NetCounters]>,
    after: &[NetCounters],
    elapsed_secs: f64,
) -> Vec<NetworkInterface> {
    let rate = |now: u64, then: Option<u64>| -> Option<f64> {
        let delta = now.checked_sub(then?)?;
        (elapsed_secs > 0.0).then(|| round2(delta as f64 / elapsed_secs))
    };
    after
        .iter()
        .map(|now| {
            let then = before.and_then(|b| b.iter().find(|c| c.interface == now.interface));
            NetworkInterface {
                interface: now.interface.clone(),
                rx_bytes: now.rx_bytes,
                tx_bytes: now.tx_bytes,
                rx_bytes_per_sec: rate(now.rx_bytes, then.map(|t| t.rx_bytes)),
                tx_bytes_per_sec: rate(now.tx_bytes, then.map(|t| t.tx_bytes)),
            }
        })
        .collect()
}

/// Decodes the octal escapes the kernel writes for space, tab, newline and backslash.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match escape {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                // Three octal digits can exceed a byte (\777); keep such text as it is.
                match u8::try_from(value) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 4;
                    }
                    Err(_) => {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses every line of `/proc/self/mounts`; lines with fewer than three fields are skipped.
pub fn parse_mounts(mounts: &str) -> Vec<MountEntry> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some(MountEntry {
                device: unescape_mount_field(fields.next()?),
                mount_point: unescape_mount_field(fields.next()?),
                filesystem: unescape_mount_field(fields.next()?),
            })
        })
        .collect()
}

/// Kernel and virtual filesystems: no disk behind them, or (squashfs, erofs: snap and image
/// mounts) read-only images that are always 100% full and mean nothing to an operator.
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "cpuset",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fuse.snapfuse",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nfsd",
    "nsfs",
    "pipefs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sockfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "xenfs",
];

/// Network filesystems: statvfs on an unreachable server blocks (as `df` does), which would
/// stall every other figure, so they are not sampled.
const REMOTE_FILESYSTEMS: &[&str] = &[
    "9p",
    "afs",
    "ceph",
    "cifs",
    "fuse.sshfs",
    "glusterfs",
    "lustre",
    "nfs",
    "nfs4",
    "smb3",
    "smbfs",
];

/// Whether a mount is one the disk report skips: a pseudo or remote filesystem, or an
/// overlay/rootfs anywhere but `/` (container layers; at `/` it *is* the container's disk).
pub fn is_skipped_filesystem(filesystem: &str, mount_point: &str) -> bool {
    match filesystem {
        "overlay" | "rootfs" => mount_point != "/",
        other => PSEUDO_FILESYSTEMS.contains(&other) || REMOTE_FILESYSTEMS.contains(&other),
    }
}

/// The mounts worth a disk entry, in mount order: skipped filesystems removed; when a mount
/// point was mounted over, only the last (visible) mount; and one entry per block device
/// (bind mounts and btrfs subvolumes repeat the same device and the same figures).
pub fn real_mounts(mounts: &str) -> Vec<MountEntry> {
    let mut visible: Vec<MountEntry> = Vec::new();
    for entry in parse_mounts(mounts) {
        visible.retain(|earlier| earlier.mount_point != entry.mount_point);
        visible.push(entry);
    }
    let mut devices = HashSet::new();
    visible
        .into_iter()
        .filter(|m| !is_skipped_filesystem(&m.filesystem, &m.mount_point))
        .filter(|m| !m.device.starts_with('/') || devices.insert(m.device.clone()))
        .collect()
}

/// A report entry from statvfs figures, or `None` for a filesystem with no blocks.
pub fn disk_usage(mount: &MountEntry, stats: FsStats) -> Option<Disk> {
    let unit = stats.fragment_size;
    let total_bytes = stats.blocks.saturating_mul(unit);
    if total_bytes == 0 {
        return None;
    }
    let free_bytes = stats.blocks_free.saturating_mul(unit).min(total_bytes);
    let available_bytes = stats.blocks_available.saturating_mul(unit).min(free_bytes);
    let used = total_bytes - free_bytes;
    // `df` divides by used + available so the root reserve does not count as free space.
    let used_percent = percent(used as f64, (used + available_bytes) as f64).unwrap_or(100.0);
    Some(Disk {
        mount_point: mount.mount_point.clone(),
        filesystem: mount.filesystem.clone(),
        device: mount.device.clone(),
        total_bytes,
        free_bytes,
        available_bytes,
        used_percent,
    })
}

/// Parses `/proc/loadavg`: the 1, 5 and 15 minute averages.
pub fn parse_loadavg(loadavg: &str) -> Result<[f64; 3], ParseError> {
    const FILE: &str = "/proc/loadavg";
    let mut fields = loadavg.split_whitespace();
    let mut averages = [0.0; 3];
    for slot in &mut averages {
        let field = fields.next().ok_or(ParseError::Missing {
            file: FILE,
            what: "load average",
        })?;
        *slot = number(FILE, "load average", field)?;
    }
    Ok(averages)
}

/// Parses `/proc/uptime`: seconds since boot.
pub fn parse_uptime(uptime: &str) -> Result<f64, ParseError> {
    const FILE: &str = "/proc/uptime";
    let field = uptime
        .split_whitespace()
        .next()
        .ok_or(ParseError::Missing {
            file: FILE,
            what: "uptime",
        })?;
    number(FILE, "uptime", field)
}

/// Parses `VmRSS` (resident memory) out of `/proc/<pid>/status`, in bytes.
pub fn parse_status_rss(status: &str) -> Result<u64, ParseError> {
    const FILE: &str = "/proc/self/status";
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .ok_or(ParseError::Missing {
            file: FILE,
            what: "VmRSS",
        })?;
    let kib: u64 = number(FILE, "VmRSS", line.split_whitespace().next().unwrap_or(""))?;
    Ok(kib.saturating_mul(1024))
}

/// Parses user + system CPU time, in clock ticks, out of `/proc/<pid>/stat`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64, ParseError> {
    const FILE: &str = "/proc/self/stat";
    // The command name (field 2) is in parentheses and may itself hold spaces and ')', so
    // fields are counted from the last ')'.
    let rest = stat
        .rfind(')')
        .map(|at| &stat[at + 1..])
        .ok_or(ParseError::Missing {
            file: FILE,
            what: "command name",
        })?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (proc(5)).
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        return Err(ParseError::Malformed {
            file: FILE,
            what: "stat line",
            text: stat.trim_end().to_owned(),
        });
    };
    let utime: u64 = number(FILE, "utime", utime)?;
    let stime: u64 = number(FILE, "stime", stime)?;
    Ok(utime.saturating_add(stime))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/fixtures/", $name))
        };
    }

    #[test]
    fn cpu_usage_leaves_guest_time_out_of_the_total() {
        let before = parse_cpu_times(fixture!("proc_stat_before.txt")).unwrap();
        let after = parse_cpu_times(fixture!("proc_stat_after.txt")).unwrap();
        assert_eq!(
            before,
            CpuTimes {
                total: 10_000,
                idle: 8_200,
                user: 1_000,
                system: 500,
                cores: 4
            }
        );
        assert_eq!(after.total, 11_500);
        // 1500 ticks passed, 800 idle: 700 busy. Counting guest time again would say 51.52.
        assert_eq!(cpu_usage_percent(&before, &after), Some(46.67));
        // 400 of them in user mode, 200 in kernel mode.
        assert_eq!(cpu_mode_percents(&before, &after), Some((26.67, 13.33)));
        // The agent's 15 ticks of those 1500 are 1% of the machine.
        assert_eq!(self_cpu_percent(15, &before, &after), Some(1.0));
    }

    #[test]
    fn cpu_usage_is_none_without_elapsed_ticks_or_with_counters_going_back() {
        let times = parse_cpu_times(fixture!("proc_stat_before.txt")).unwrap();
        assert_eq!(cpu_usage_percent(&times, &times), None);
        let after = parse_cpu_times(fixture!("proc_stat_after.txt")).unwrap();
        assert_eq!(cpu_usage_percent(&after, &times), None);
        assert_eq!(self_cpu_percent(1, &times, &times), None);
    }

    #[test]
    fn cpu_times_from_an_old_kernel_without_iowait_columns() {
        let times = parse_cpu_times("cpu  10 0 10 80\ncpu0 10 0 10 80\n").unwrap();
        assert_eq!(
            times,
            CpuTimes {
                total: 100,
                idle: 80,
                user: 10,
                system: 10,
                cores: 1
            }
        );
    }

    #[test]
    fn cpu_times_errors_name_the_file() {
        let missing = parse_cpu_times("intr 1 2 3\n").unwrap_err();
        assert_eq!(missing.to_string(), "/proc/stat: no aggregate cpu line");
        assert!(matches!(
            parse_cpu_times("cpu 1 2 x 4\n"),
            Err(ParseError::Malformed { .. })
        ));
        assert!(matches!(
            parse_cpu_times("cpu 1 2\n"),
            Err(ParseError::Malformed { .. })
        ));
    }

    #[test]
    fn meminfo_in_bytes_with_used_share_from_available() {
        let memory = parse_meminfo(fixture!("meminfo.txt")).unwrap();
        assert_eq!(
            memory,
            Memory {
                total_bytes: 16_318_876 * 1024,
                available_bytes: 11_234_560 * 1024,
                used_percent: 31.16,
                swap_total_bytes: 2_097_148 * 1024,
                swap_free_bytes: 1_048_576 * 1024,
            }
        );
    }

    #[test]
    fn meminfo_before_linux_3_14_estimates_available() {
        let memory = parse_meminfo(fixture!("meminfo_before_3_14.txt")).unwrap();
        assert_eq!(
            memory.available_bytes,
            (1_012_696 + 204_800 + 1_806_336) * 1024
        );
        assert_eq!(memory.used_percent, 25.28);
        assert_eq!(memory.swap_total_bytes, 0);
    }

    #[test]
    fn meminfo_without_a_total_is_an_error() {
        assert_eq!(
            parse_meminfo("MemFree: 10 kB\n"),
            Err(ParseError::Missing {
                file: "/proc/meminfo",
                what: "MemTotal"
            })
        );
        assert!(parse_meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB\n").is_err());
    }

    #[test]
    fn net_dev_skips_loopback_and_reads_byte_columns() {
        let counters = parse_net_dev(fixture!("net_dev_before.txt")).unwrap();
        assert_eq!(
            counters,
            vec![
                NetCounters {
                    interface: "enp3s0".into(),
                    rx_bytes: 987_654_321,
                    tx_bytes: 123_456_789,
                },
                NetCounters {
                    interface: "wlp2s0".into(),
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
            ]
        );
    }

    #[test]
    fn net_dev_without_a_space_after_the_colon() {
        let text = "h1\nh2\n  eth0:1234 5 0 0 0 0 0 0 5678 6 0 0 0 0 0 0\n";
        let counters = parse_net_dev(text).unwrap();
        assert_eq!(counters[0].rx_bytes, 1234);
        assert_eq!(counters[0].tx_bytes, 5678);
        assert!(parse_net_dev("h1\nh2\n  eth0: 1 2 3\n").is_err());
    }

    #[test]
    fn network_rates_over_the_window() {
        let before = parse_net_dev(fixture!("net_dev_before.txt")).unwrap();
        let after = parse_net_dev(fixture!("net_dev_after.txt")).unwrap();
        let rates = network_rates(Some(&before), &after, 2.0);
        let names: Vec<_> = rates.iter().map(|r| r.interface.as_str()).collect();
        assert_eq!(names, ["enp3s0", "wlp2s0", "docker0"]);
        // 1 000 000 bytes in, 50 000 out, over 2 s.
        assert_eq!(rates[0].rx_bytes_per_sec, Some(500_000.0));
        assert_eq!(rates[0].tx_bytes_per_sec, Some(25_000.0));
        assert_eq!(rates[0].rx_bytes, 988_654_321);
        // An idle interface is a real zero...
        assert_eq!(rates[1].rx_bytes_per_sec, Some(0.0));
        // ...a new one has no rate yet.
        assert_eq!(rates[2].rx_bytes_per_sec, None);
        assert_eq!(rates[2].tx_bytes, 9012);
    }

    #[test]
    fn network_rates_after_a_counter_reset_or_without_a_window() {
        let before = [NetCounters {
            interface: "eth0".into(),
            rx_bytes: 1_000,
            tx_bytes: 10,
        }];
        let after = [NetCounters {
            interface: "eth0".into(),
            rx_bytes: 50,
            tx_bytes: 20,
        }];
        let rates = network_rates(Some(&before), &after, 1.0);
        assert_eq!(rates[0].rx_bytes_per_sec, None);
        assert_eq!(rates[0].tx_bytes_per_sec, Some(10.0));
        assert_eq!(network_rates(None, &after, 1.0)[0].tx_bytes_per_sec, None);
        assert_eq!(
            network_rates(Some(&before), &after, 0.0)[0].tx_bytes_per_sec,
            None
        );
    }

    fn mount_points(entries: &[MountEntry]) -> Vec<(&str, &str, &str)> {
        entries
            .iter()
            .map(|m| {
                (
                    m.mount_point.as_str(),
                    m.filesystem.as_str(),
                    m.device.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn desktop_mounts_keep_real_local_disks_once() {
        let mounts = real_mounts(fixture!("mounts_desktop.txt"));
        // Gone: kernel filesystems, tmpfs, the snap squashfs, the docker layer, the NFS
        // share, the FUSE helpers, the second mount of the root device, and the USB stick
        // that /media/usb was mounted over.
        assert_eq!(
            mount_points(&mounts),
            [
                ("/", "ext4", "/dev/nvme0n1p2"),
                ("/boot/efi", "vfat", "/dev/nvme0n1p1"),
                ("/mnt/data disk", "xfs", "/dev/sda1"),
                ("/media/usb", "vfat", "/dev/sdc1"),
            ]
        );
    }

    #[test]
    fn container_mounts_keep_the_overlay_root() {
        let mounts = real_mounts(fixture!("mounts_container.txt"));
        assert_eq!(
            mount_points(&mounts),
            [
                ("/", "overlay", "overlay"),
                ("/etc/resolv.conf", "ext4", "/dev/vda1"),
            ]
        );
    }

    #[test]
    fn mount_fields_are_unescaped() {
        let entries =
            parse_mounts("/dev/sda1 /a\\040b\\011c\\012d\\134e ext4 rw 0 0\nshort line\n");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].mount_point, "/a b\tc\nd\\e");
        // Not an escape: kept as written.
        assert_eq!(unescape_mount_field("\\777x\\04"), "\\777x\\04");
    }

    #[test]
    fn pseudo_and_remote_filesystems_are_skipped() {
        for (filesystem, mount_point) in [
            ("proc", "/proc"),
            ("tmpfs", "/"),
            ("overlay", "/var/lib/docker/x/merged"),
            ("rootfs", "/rootfs"),
            ("nfs4", "/home"),
            ("squashfs", "/snap/x/1"),
        ] {
            assert!(
                is_skipped_filesystem(filesystem, mount_point),
                "{filesystem}"
            );
        }
        for (filesystem, mount_point) in [
            ("ext4", "/"),
            ("overlay", "/"),
            ("btrfs", "/home"),
            ("xfs", "/data"),
            ("vfat", "/boot/efi"),
            ("zfs", "/tank"),
        ] {
            assert!(
                !is_skipped_filesystem(filesystem, mount_point),
                "{filesystem}"
            );
        }
    }

    #[test]
    fn disk_usage_like_df() {
        let mount = MountEntry {
            device: "/dev/vda1".into(),
            mount_point: "/".into(),
            filesystem: "ext4".into(),
        };
        let disk = disk_usage(
            &mount,
            FsStats {
                fragment_size: 4096,
                blocks: 1_000,
                blocks_free: 300,
                blocks_available: 250,
            },
        )
        .unwrap();
        assert_eq!(disk.total_bytes, 4_096_000);
        assert_eq!(disk.free_bytes, 1_228_800);
        assert_eq!(disk.available_bytes, 1_024_000);
        // 700 used of the 950 blocks a user can have: the 50-block root reserve is not free.
        assert_eq!(disk.used_percent, 73.68);
        let empty = FsStats {
            fragment_size: 4096,
            blocks: 0,
            blocks_free: 0,
            blocks_available: 0,
        };
        assert_eq!(disk_usage(&mount, empty), None);
        let full_reserve = FsStats {
            fragment_size: 1,
            blocks: 10,
            blocks_free: 10,
            blocks_available: 0,
        };
        assert_eq!(
            disk_usage(&mount, full_reserve).unwrap().used_percent,
            100.0
        );
    }

    #[test]
    fn loadavg_and_uptime() {
        assert_eq!(
            parse_loadavg(fixture!("loadavg.txt")),
            Ok([0.52, 0.58, 0.59])
        );
        assert!(parse_loadavg("0.1 0.2\n").is_err());
        assert_eq!(parse_uptime(fixture!("uptime.txt")), Ok(350_735.47));
        assert!(parse_uptime("").is_err());
    }

    #[test]
    fn own_rss_and_cpu_ticks() {
        assert_eq!(
            parse_status_rss(fixture!("self_status.txt")),
            Ok(2_396 * 1024)
        );
        assert!(parse_status_rss("Name:\tx\n").is_err());
        // The command name holds ") " and must not shift the fields: utime 37 + stime 12.
        assert_eq!(parse_stat_cpu_ticks(fixture!("self_stat.txt")), Ok(49));
        assert!(parse_stat_cpu_ticks("42 (x) S 1 2 3").is_err());
        assert!(parse_stat_cpu_ticks("no name").is_err());
    }

    /// Writes a mount field the way the kernel's `mangle` does.
    fn kernel_escape(field: &str) -> String {
        field
            .chars()
            .map(|c| match c {
                ' ' => "\\040".to_owned(),
                '\t' => "\\011".to_owned(),
                '\n' => "\\012".to_owned(),
                '\\' => "\\134".to_owned(),
                other => other.to_string(),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn escaped_mount_points_round_trip(path in "/[a-z \\t\\n\\\\é0-7]{0,24}") {
            let line = format!("/dev/sda1 {} ext4 rw 0 0\n", kernel_escape(&path));
            let entries = parse_mounts(&line);
            prop_assert_eq!(entries.len(), 1);
            prop_assert_eq!(&entries[0].mount_point, &path);
        }

        #[test]
        fn cpu_percentages_stay_in_range(
            before in any::<[u32; 4]>(),
            delta in any::<[u16; 4]>(),
            own in any::<u16>(),
        ) {
            let line = |t: [u64; 4]| format!("cpu {} {} {} {}\ncpu0 0 0 0 0\n", t[0], t[1], t[2], t[3]);
            let b = before.map(u64::from);
            let mut a = b;
            for (slot, d) in a.iter_mut().zip(delta) {
                *slot += u64::from(d);
            }
            let before = parse_cpu_times(&line(b)).unwrap();
            let after = parse_cpu_times(&line(a)).unwrap();
            for value in [
                cpu_usage_percent(&before, &after),
                self_cpu_percent(u64::from(own), &before, &after),
                cpu_mode_percents(&before, &after).map(|m| m.0),
                cpu_mode_percents(&before, &after).map(|m| m.1),
            ].into_iter().flatten() {
                prop_assert!((0.0..=100.0).contains(&value), "{value}");
            }
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,200}") {
            let _ = parse_cpu_times(&text);
            let _ = parse_meminfo(&text);
            let _ = parse_net_dev(&text);
            let _ = real_mounts(&text);
            let _ = parse_loadavg(&text);
            let _ = parse_uptime(&text);
            let _ = parse_status_rss(&text);
            let _ = parse_stat_cpu_ticks(&text);
        }
    }
}
