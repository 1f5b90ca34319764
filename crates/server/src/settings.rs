//! The server's settings: one typed struct, layered defaults < TOML file < environment
//! (`DESKFLEET_*`, nested with `__`) < command-line flags. Unknown keys are refused so that
//! a typo is an error, not a silently ignored setting.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free one (written to `DATA_DIR/listen.addr`).
    pub listen: SocketAddr,
    /// Where the embedded database, `bootstrap.json` and `listen.addr` live.
    pub data_dir: PathBuf,
    /// `postgres://...` to use PostgreSQL; unset means SQLite in `data_dir`.
    pub database_url: Option<String>,
    pub jobs: JobSettings,
    pub auth: AuthSettings,
    pub throttle: ThrottleSettings,
    pub bootstrap: BootstrapSettings,
    pub fleet: FleetSettings,
    pub packages: PackageSettings,
    /// Largest accepted request body (the gateway's limit is 12 MB).
    pub max_body_bytes: usize,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
}

/// How the server writes its log (to stderr); what it logs is `RUST_LOG`'s business.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the spans the event happened in.
    Json,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// When set, `GET /metrics` requires `Authorization: Bearer <the file's content>`.
    /// The file is read on every scrape, so the token can be rotated without a restart.
    pub bearer_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// A sub-job not picked up by its desktop within this time fails (desktop offline).
    pub delivery_timeout_ms: u64,
    /// A picked-up sub-job silent for this long fails.
    pub execution_timeout_ms: u64,
    /// How often the timeout sweep runs.
    pub sweep_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Lifetime of tokens from `POST /v3/auth/tokens`.
    pub token_ttl_secs: u64,
    /// Largest accepted distance between `X-Sdk-Date` and the server clock.
    pub max_clock_skew_secs: u64,
    /// Consecutive bad signatures after which an access key is locked.
    pub lockout_failures: u32,
    pub lockout_secs: u64,
    /// How long a verified credential (key or token, with its role) is cached.
    pub credential_cache_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    pub enabled: bool,
    /// Per user and API, for POST/PUT/DELETE APIs.
    pub writes_per_minute: u32,
    /// Per user and API, for GET APIs.
    pub reads_per_minute: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSettings {
    /// Open fleet connections beyond which new ones get 503 + Retry-After.
    pub max_connections: usize,
    /// New fleet connections admitted per second; beyond, 503 + Retry-After.
    pub max_new_connections_per_sec: u32,
    /// Heartbeat interval offered to guests.
    pub heartbeat_secs: u64,
    /// How often waiting work is looked for (it is also handed out at once when a job is
    /// created on this replica).
    pub schedule_interval_ms: u64,
    /// Metrics from one desktop are stored at most this often.
    pub metrics_min_interval_ms: u64,
    /// Lifetime of enrollment tokens created without `--ttl-hours`.
    pub enrollment_token_ttl_hours: u64,
    /// Base URL guests download packages from; by default the `Host` they connected to.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackageSettings {
    /// On start, publish the `deskfleet-monitor` built beside the server (signed with the
    /// data directory's key) unless that version is already published.
    pub publish_bundled_monitor: bool,
    /// Where that binary is, if not beside the server executable.
    pub monitor_binary: Option<PathBuf>,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_new_connections_per_sec: 2_000,
            heartbeat_secs: 30,
            schedule_interval_ms: 500,
            metrics_min_interval_ms: 5_000,
            enrollment_token_ttl_hours: 30 * 24,
            public_url: None,
        }
    }
}

impl Default for PackageSettings {
    fn default() -> Self {
        Self {
            publish_bundled_monitor: true,
            monitor_binary: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapSettings {
    pub domain_name: String,
    /// Named after a region so that the SDK's region mode (`GET /v3/projects?name=REGION`)
    /// finds it.
    pub project_name: String,
    pub user_name: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8087)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            jobs: JobSettings::default(),
            auth: AuthSettings::default(),
            throttle: ThrottleSettings::default(),
            bootstrap: BootstrapSettings::default(),
            fleet: FleetSettings::default(),
            packages: PackageSettings::default(),
            max_body_bytes: 12 * 1024 * 1024,
            log: LogSettings::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            delivery_timeout_ms: 10 * 60 * 1000,
            execution_timeout_ms: 10 * 60 * 1000,
            sweep_interval_ms: 1000,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            token_ttl_secs: 24 * 3600,
            max_clock_skew_secs: 15 * 60,
            lockout_failures: 5,
            lockout_secs: 5 * 60,
            credential_cache_secs: 30,
        }
    }
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            writes_per_minute: 100,
            reads_per_minute: 200,
        }
    }
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            domain_name: "deskfleet".into(),
            project_name: "cn-north-4".into(),
            user_name: "admin".into(),
        }
    }
}

/// Top-level keys read from the environment; other `DESKFLEET_*` variables are not ours.
const ENV_KEYS: [&str; 12] = [
    "listen",
    "data_dir",
    "database_url",
    "jobs",
    "auth",
    "throttle",
    "bootstrap",
    "fleet",
    "packages",
    "max_body_bytes",
    "log",
    "metrics",
];

impl Settings {
    /// Layers the sources; `overrides` are the command-line flags that were given.
    pub fn load(
        file: Option<&Path>,
        overrides: Serialized<serde_json::Value>,
    ) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(
                Env::prefixed("DESKFLEET_")
                    .split("__")
                    .filter(|k| ENV_KEYS.iter().any(|key| k.as_str().starts_with(key))),
            )
            .merge(overrides)
            .extract()
            .map_err(Box::new)
    }

    /// The database URL in force: the configured one, or SQLite in the data directory.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("deskfleet.db").display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("settings.toml");
        std::fs::write(
            &file,
            "max_body_bytes = 10\n[jobs]\ndelivery_timeout_ms = 5\n",
        )
        .unwrap();
        let flags = Serialized::globals(serde_json::json!({"max_body_bytes": 20}));
        let s = Settings::load(Some(&file), flags).unwrap();
        assert_eq!(s.max_body_bytes, 20);
        assert_eq!(s.jobs.delivery_timeout_ms, 5);
        assert_eq!(
            s.jobs.execution_timeout_ms,
            JobSettings::default().execution_timeout_ms
        );

        std::fs::write(&file, "delivery_timeout = 5\n").unwrap();
        let err =
            Settings::load(Some(&file), Serialized::globals(serde_json::json!({}))).unwrap_err();
        assert!(err.to_string().contains("delivery_timeout"), "{err}");
    }
}
