//! Facts about the machine the guest runs on, as reported in `agent_description`.

use std::net::IpAddr;

/// What the server learns about this desktop at enrollment (`docs/fleet-protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// `host.name`: matched case-insensitively against imported desktops' computer names.
    pub host_name: String,
    /// `os.type`: `linux`, `windows`, `macos`, ... (Rust's `std::env::consts::OS`).
    pub os_type: String,
    /// `host.arch`: `x86_64`, `aarch64`, ... (Rust's `std::env::consts::ARCH`). The
    /// server picks the package platform as `<os.type>-<host.arch>` in these same words.
    pub arch: String,
    /// `host.ip`: the machine's non-loopback addresses, IPv4 first.
    pub ips: Vec<IpAddr>,
}

impl HostFacts {
    /// Reads the facts of this machine. Never fails: a fact that cannot be read is
    /// reported as `unknown` (host name) or left out (addresses).
    pub fn detect() -> HostFacts {
        let host_name = gethostname::gethostname()
            .into_string()
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        let ips = match if_addrs::get_if_addrs() {
            Ok(interfaces) => interfaces.into_iter().map(|i| i.ip()).collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot list network interfaces; reporting no address");
                Vec::new()
            }
        };
        HostFacts {
            host_name,
            os_type: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            ips: reportable_ips(ips),
        }
    }

    /// `host.ip`: comma-separated, no spaces.
    pub fn ip_list(&self) -> String {
        self.ips
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Drops loopback and unspecified addresses and duplicates; IPv4 before IPv6, each kept
/// in the order the system listed them.
pub fn reportable_ips(ips: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut kept: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if ip.is_loopback() || ip.is_unspecified() || kept.contains(&ip) {
            continue;
        }
        kept.push(ip);
    }
    // A stable sort keeps the system's order within each family.
    kept.sort_by_key(IpAddr::is_ipv6);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_duplicates_are_left_out() {
        let ips = [
            "127.0.0.1",
            "fe80::1",
            "10.0.0.7",
            "::1",
            "10.0.0.7",
            "0.0.0.0",
            "192.168.1.2",
        ]
        .map(|s| s.parse::<IpAddr>().unwrap());
        let facts = HostFacts {
            host_name: "h".into(),
            os_type: "linux".into(),
            arch: "x86_64".into(),
            ips: reportable_ips(ips),
        };
        assert_eq!(facts.ip_list(), "10.0.0.7,192.168.1.2,fe80::1");
    }

    #[test]
    fn detect_reports_this_machine() {
        let facts = HostFacts::detect();
        assert!(!facts.host_name.is_empty());
        assert_eq!(facts.os_type, std::env::consts::OS);
        assert!(facts.ips.iter().all(|ip| !ip.is_loopback()));
    }
}
