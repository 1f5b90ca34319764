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
    pub tls: TlsSettings,
    pub http: HttpSettings,
    pub secrets: SecretsSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    /// The agents' time series (Cloud Eye metric API): ingest, roll-up, retention.
    pub metric_data: MetricDataSettings,
    /// The web console at `/console/` (docs/console.md).
    pub console: ConsoleSettings,
    /// The audit trail (`docs/audit.md`).
    pub audit: AuditSettings,
}

/// The web console's sign-in sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Serve the console.
    pub enabled: bool,
    /// A session unused for this long is signed out.
    pub idle_timeout_secs: u64,
    /// A session ends this long after sign-in, however much it is used.
    pub absolute_timeout_secs: u64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_secs: 30 * 60,
            absolute_timeout_secs: 12 * 60 * 60,
        }
    }
}

/// TLS on the one listener (API, `/v1/opamp`, package downloads).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Serve HTTPS. Turn off only behind a proxy that terminates TLS; a warning is logged.
    pub enabled: bool,
    /// An operator's certificate chain (PEM, leaf first); with `key_file`. When both are
    /// unset the server issues its own from a private CA in the data directory.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// More names (DNS or IP) for the certificate the server issues itself.
    pub extra_sans: Vec<String>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            cert_file: None,
            key_file: None,
            extra_sans: Vec::new(),
        }
    }
}

/// Bounds on what a connection may hold, in count, bytes and time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Open HTTP connections (WebSockets count under `fleet.max_connections` once
    /// upgraded). Kept below the descriptor limit; at the cap an idle connection is closed
    /// to make room, or the new one is refused.
    pub max_connections: usize,
    /// A TLS handshake must finish within this time.
    pub handshake_timeout_ms: u64,
    /// A request's headers must arrive within this time.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this time of its headers.
    pub body_read_timeout_ms: u64,
    /// A connection with no request in progress and no traffic is closed after this time.
    pub idle_timeout_ms: u64,
    /// Bytes of request bodies held, across all connections, before their signature is
    /// verified; beyond it such requests get 503 + Retry-After.
    pub unverified_body_budget_bytes: usize,
    /// How long shutdown waits for requests in progress before closing connections.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            unverified_body_budget_bytes: 32 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
        }
    }
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
pub struct SecretsSettings {
    /// The key-encryption key of the secret keys (SK) stored in the database: a file of 32
    /// random bytes, created (0600) on first start. Default `DATA_DIR/secrets.key`. Replicas
    /// on one PostgreSQL database must be given the same file.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// When set, `GET /metrics` requires `Authorization: Bearer <the file's content>`.
    /// The file is read on every scrape, so the token can be rotated without a restart.
    pub bearer_token_file: Option<PathBuf>,
    /// The job and sub-job gauges are counted from the store at most this often, however
    /// often `/metrics` is scraped (it is open by default: scrapes must not load the
    /// database).
    pub job_count_interval_ms: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            bearer_token_file: None,
            job_count_interval_ms: 1000,
        }
    }
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
    /// Consecutive wrong passwords after which a user's logins are locked.
    pub login_lockout_failures: u32,
    pub login_lockout_secs: u64,
    /// How often the credential revision is polled; caches are dropped when it moves, so
    /// a revocation takes effect within about this long on every replica.
    pub revocation_poll_ms: u64,
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
    /// How often the guests' last-seen times are written (in one statement for all of
    /// them); never more than half a heartbeat interval.
    pub last_seen_flush_ms: u64,
    /// On shutdown, how long a connection with an install in flight may take to finish
    /// it before it is closed anyway (idle connections are closed at once).
    pub drain_secs: u64,
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
            last_seen_flush_ms: 2_000,
            drain_secs: 30,
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
            tls: TlsSettings::default(),
            http: HttpSettings::default(),
            secrets: SecretsSettings::default(),
            log: LogSettings::default(),
            metrics: MetricsSettings::default(),
            metric_data: MetricDataSettings::default(),
            console: ConsoleSettings::default(),
            audit: AuditSettings::default(),
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
            login_lockout_failures: 5,
            login_lockout_secs: 5 * 60,
            revocation_poll_ms: 1000,
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

/// Whether `DESKFLEET_<KEY>` (already without its prefix, `__` turned into `.`) names one
/// of our settings: other `DESKFLEET_*` variables (`DESKFLEET_NEW_USER_PASSWORD`...) are
/// not. Compared without case: the documented form is upper case.
fn is_setting(key: &str) -> bool {
    static TOP_LEVEL: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| match serde_json::to_value(Settings::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        });
    let first = key.split('.').next().unwrap_or(key);
    TOP_LEVEL.iter().any(|k| k.eq_ignore_ascii_case(first))
}

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
                    .filter(|k| is_setting(k.as_str())),
            )
            .merge(overrides)
            .extract()
            .map_err(Box::new)
    }

    /// The settings as JSON for operators (`config show`), with secrets redacted: the
    /// password of the database URL. The secrets key file is shown by path only.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(url) = &self.database_url {
            value["database_url"] = serde_json::Value::String(redact_url(url));
        }
        value["secrets"]["key_file"] = serde_json::json!(self.secrets_key_file());
        value
    }

    /// The key-encryption key file in force: `secrets.key_file`, or `secrets.key` in the
    /// data directory.
    pub fn secrets_key_file(&self) -> PathBuf {
        self.secrets
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secrets.key"))
    }

    /// The database URL in force: the configured one, or SQLite in the data directory.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("deskfleet.db").display()),
        }
    }
}

/// A settings error as an operator needs it: every problem, each naming its key and, for
/// the environment, the variable to fix.
pub fn explain(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let from_env = e
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"));
            if from_env && !e.path.is_empty() {
                let var = format!("DESKFLEET_{}", e.path.join("__").to_uppercase());
                format!("{e} (environment variable {var})")
            } else {
                e.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `scheme://user:password@host/...` with the password replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{masked}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
// `figment::Jail` closures must return `figment::Error`, a large type.
#[allow(clippy::result_large_err)]
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

    fn no_flags() -> Serialized<serde_json::Value> {
        Serialized::globals(serde_json::json!({}))
    }

    #[test]
    fn defaults_hold_when_nothing_is_given() {
        figment::Jail::expect_with(|_jail| {
            let s = Settings::load(None, no_flags()).map_err(|e| *e)?;
            let d = Settings::default();
            assert_eq!(s.listen, d.listen);
            assert_eq!(s.max_body_bytes, 12 * 1024 * 1024);
            assert!(s.throttle.enabled);
            assert_eq!(s.auth.login_lockout_failures, 5);
            assert_eq!(s.auth.login_lockout_secs, 300);
            assert_eq!(s.secrets.key_file, None);
            Ok(())
        });
    }

    #[test]
    fn upper_case_environment_beats_the_file_and_flags_beat_both() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "settings.toml",
                "listen = \"127.0.0.1:1001\"\nmax_body_bytes = 10\n\
                 [throttle]\nwrites_per_minute = 1\nreads_per_minute = 9\n\
                 [auth]\nlogin_lockout_failures = 8\n",
            )?;
            jail.set_env("DESKFLEET_LISTEN", "127.0.0.1:1002");
            jail.set_env("DESKFLEET_MAX_BODY_BYTES", "20");
            jail.set_env("DESKFLEET_AUTH__MAX_CLOCK_SKEW_SECS", "7");
            jail.set_env("DESKFLEET_THROTTLE__WRITES_PER_MINUTE", "3");
            jail.set_env("DESKFLEET_THROTTLE__ENABLED", "false");
            jail.set_env("DESKFLEET_SECRETS__KEY_FILE", "/etc/deskfleet/kek");
            // Not a setting: other tools' variables share the prefix.
            jail.set_env("DESKFLEET_NEW_USER_PASSWORD", "whatever");

            let from_env =
                Settings::load(Some(Path::new("settings.toml")), no_flags()).map_err(|e| *e)?;
            assert_eq!(from_env.listen, "127.0.0.1:1002".parse().unwrap());
            assert_eq!(from_env.max_body_bytes, 20);
            assert_eq!(from_env.auth.max_clock_skew_secs, 7);
            assert_eq!(from_env.throttle.writes_per_minute, 3);
            assert!(!from_env.throttle.enabled);
            assert_eq!(
                from_env.secrets.key_file.as_deref(),
                Some(Path::new("/etc/deskfleet/kek"))
            );
            // The file still sets what the environment does not.
            assert_eq!(from_env.throttle.reads_per_minute, 9);
            assert_eq!(from_env.auth.login_lockout_failures, 8);

            let flags = Serialized::globals(serde_json::json!({"listen": "127.0.0.1:1003"}));
            let s = Settings::load(Some(Path::new("settings.toml")), flags).map_err(|e| *e)?;
            assert_eq!(s.listen, "127.0.0.1:1003".parse().unwrap());
            assert_eq!(s.max_body_bytes, 20);
            Ok(())
        });
    }

    #[test]
    fn lower_case_environment_still_works() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DESKFLEET_max_body_bytes", "33");
            let s = Settings::load(None, no_flags()).map_err(|e| *e)?;
            assert_eq!(s.max_body_bytes, 33);
            Ok(())
        });
    }

    #[test]
    fn an_invalid_environment_value_names_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DESKFLEET_THROTTLE__ENABLED", "nope");
            let err = explain(&Settings::load(None, no_flags()).unwrap_err());
            assert!(
                err.contains("environment variable DESKFLEET_THROTTLE__ENABLED"),
                "{err}"
            );
            assert!(err.contains("nope"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("DESKFLEET_AUTH__LOGIN_LOCKOUT_SECZ", "1");
            let err = Settings::load(None, no_flags())
                .unwrap_err()
                .to_string()
                .to_lowercase();
            assert!(err.contains("login_lockout_secz"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn redacted_settings_hide_the_database_password() {
        let s = Settings {
            database_url: Some("postgres://deskfleet:hunter2@db:5432/deskfleet".into()),
            ..Settings::default()
        };
        let shown = s.redacted().to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://deskfleet:***@db:5432/deskfleet"),
            "{shown}"
        );
        assert!(shown.contains("secrets.key"), "{shown}");
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
    }
}

/// The agents' time series: how reports are batched into the database, and how long each
/// resolution is kept (`docs/ces.md`, "Metrics").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricDataSettings {
    /// Reports waiting to be written, at most; beyond, new reports are dropped and counted
    /// (`deskfleet_metric_reports_dropped_total`), never blocking a guest's connection.
    pub queue_capacity: usize,
    /// Reports written in one transaction, at most.
    pub batch_max_reports: usize,
    /// How long a report may wait for its batch.
    pub flush_interval_ms: u64,
    /// Raw points are kept this long (then only their roll-ups).
    pub raw_retention_hours: u64,
    /// 5-minute roll-ups are kept this long.
    pub five_minute_retention_days: u64,
    /// 1-hour roll-ups are kept this long.
    pub one_hour_retention_days: u64,
    /// A bucket is rolled up once it ended this long ago; points arriving later than that
    /// for it stay raw points only.
    pub rollup_delay_secs: u64,
    /// How often the roll-up and retention worker takes a step.
    pub rollup_interval_ms: u64,
    /// Buckets of each tier rolled up (and time deleted) per step, at most: bounds the
    /// length of one roll-up transaction.
    pub rollup_buckets_per_step: u32,
    /// A minute of raw data is written this long after it ended, so that reports a little
    /// late still count in it; a report later than that is merged into the written row.
    pub minute_grace_secs: u64,
}

impl Default for MetricDataSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 20_000,
            batch_max_reports: 2_000,
            flush_interval_ms: 1_000,
            raw_retention_hours: 48,
            five_minute_retention_days: 30,
            one_hour_retention_days: 155,
            rollup_delay_secs: 60,
            rollup_interval_ms: 5_000,
            rollup_buckets_per_step: 1,
            minute_grace_secs: 5,
        }
    }
}

/// The audit trail: seals, retention and the file sink (`docs/audit.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Record traces (default true). `false` exists only to measure what auditing costs
    /// (bench/api); the server then warns at start and `deskfleet_audit_enabled` is 0.
    pub enabled: bool,
    /// How often the head of the chain is sealed (signed), if it moved.
    pub seal_interval_secs: u64,
    /// PostgreSQL: how often traces committed since are chained (given their `seq` and
    /// hashes). A trace is tamper-evident from then on; ListTraces shows it from its
    /// commit. SQLite chains each trace as it is written.
    pub chain_interval_ms: u64,
    /// Traces older than this are pruned (up to the newest seal among them). CTS keeps
    /// 7 days queryable; 30 are kept, as CTS's user lists look back 30 days.
    pub retention_days: u64,
    /// Where the seal key lives; default `DATA_DIR/trace-seal.key`, sealed with the
    /// secrets key.
    pub seal_key_file: Option<PathBuf>,
    /// A JSON-lines file every trace is appended to (with its chain fields) for a SIEM;
    /// unset: no file sink.
    pub file_sink: Option<PathBuf>,
    /// The file sink is rotated (`NAME.1`, `NAME.2`, ...) beyond this size.
    pub file_sink_max_bytes: u64,
    /// Rotated files kept.
    pub file_sink_keep: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            seal_interval_secs: 60,
            chain_interval_ms: 250,
            retention_days: 30,
            seal_key_file: None,
            file_sink: None,
            file_sink_max_bytes: 100 * 1024 * 1024,
            file_sink_keep: 5,
        }
    }
}
