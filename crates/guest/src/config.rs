//! The guest's settings, as the binary's flags give them and as tests build them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deskfleet_proto::enrollment::{EnrollmentToken, Fingerprint};
use ed25519_dalek::VerifyingKey;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use crate::backoff::BackoffPolicy;
use crate::host::HostFacts;

/// Default time between heartbeats when the server does not set one.
pub const DEFAULT_HEARTBEAT: Duration =
    Duration::from_secs(deskfleet_proto::opamp::DEFAULT_HEARTBEAT_INTERVAL_SECS);

/// Default sampling interval handed to the monitor (`--interval-ms`).
pub const DEFAULT_MONITOR_INTERVAL: Duration =
    Duration::from_millis(deskfleet_monitor::DEFAULT_INTERVAL_MS);

/// A started monitor that has not written a health line by then is `agent_not_started`.
pub const DEFAULT_MONITOR_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a monitor asked to stop (SIGTERM, stdout closed) gets before it is killed.
pub const DEFAULT_MONITOR_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a newly switched-to agent version is watched (started, healthy, at its
/// version) before the switch is confirmed; a failure within it puts the previous
/// version back (`--watch-window-secs`).
pub const DEFAULT_WATCH_WINDOW: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("server url {url:?}: {reason}")]
    ServerUrl { url: String, reason: String },
    #[error("cannot read the trusted key file {path}: {source}")]
    ReadTrustedKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trusted key: {0}")]
    TrustedKey(String),
    #[error("enrollment token: {0}")]
    EnrollmentToken(deskfleet_proto::enrollment::TokenError),
    #[error("cannot read the enrollment token file {path}: {source}")]
    ReadEnrollmentToken {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Everything [`crate::run`] needs. Build it with [`Config::new`] and adjust the public
/// fields (tests shorten the timeouts and backoffs).
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's base URL (`https://host:port`, optionally with a path prefix).
    pub server: Url,
    /// Further addresses of the same deployment (replicas on one database, without a
    /// load balancer): when the one in use stops answering, the guest moves to the next,
    /// in order, wrapping around. Same scheme as `server`.
    pub fallback_servers: Vec<Url>,
    /// The secret part of the project's enrollment token (`DFE1…`, without the CA
    /// fingerprint): the bearer credential until the desktop has its own.
    pub enrollment_token: Option<SecretString>,
    /// The CA fingerprint the enrollment token carried (`DFE1….<sha256>`): pins the
    /// server's CA on first contact when nothing else says whom to trust.
    pub ca_fingerprint: Option<Fingerprint>,
    /// Trust the certificates of this PEM file for the server (`--ca-cert`).
    pub ca_cert: Option<PathBuf>,
    /// Talk to an `http://` server (`--allow-insecure-http`); refused otherwise.
    pub allow_insecure_http: bool,
    /// The server's package-signing key: nothing it did not sign is ever run.
    pub trusted_key: VerifyingKey,
    /// Holds `state.json` (identity, credential, installed package).
    pub state_dir: PathBuf,
    /// Packages are unpacked under `install_root/<name>/<version>/`.
    pub install_root: PathBuf,
    /// Heartbeat interval until the server sets one.
    pub heartbeat: Duration,
    /// Passed to the monitor as `--interval-ms`; also the metrics forwarding rate limit.
    pub monitor_interval: Duration,
    pub monitor_start_timeout: Duration,
    pub monitor_stop_timeout: Duration,
    /// Reconnects to the server.
    pub reconnect: BackoffPolicy,
    /// Restarts of a monitor that died.
    pub monitor_restart: BackoffPolicy,
    /// The facts reported in `agent_description`; detected from the machine when `None`.
    pub host: Option<HostFacts>,
    /// The watch window of an upgrade or rollback ([`DEFAULT_WATCH_WINDOW`]).
    pub watch_window: Duration,
}

impl Config {
    /// Settings with every default: install root `state_dir/agents`, heartbeat 30 s,
    /// monitor interval 10 s, backoffs 1 s..60 s ±50 %, plain http refused. The
    /// enrollment token is split into its secret and its CA fingerprint.
    pub fn new(
        server: &str,
        enrollment_token: Option<SecretString>,
        trusted_key: VerifyingKey,
        state_dir: impl Into<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let state_dir = state_dir.into();
        let server = parse_server_url(server)?;
        let token = enrollment_token
            .map(|token| EnrollmentToken::parse(token.expose_secret()))
            .transpose()
            .map_err(ConfigError::EnrollmentToken)?;
        Ok(Config {
            server,
            fallback_servers: Vec::new(),
            ca_fingerprint: token.as_ref().and_then(|t| t.ca_fingerprint),
            enrollment_token: token.map(|t| SecretString::from(t.secret)),
            ca_cert: None,
            allow_insecure_http: false,
            trusted_key,
            install_root: state_dir.join("agents"),
            state_dir,
            heartbeat: DEFAULT_HEARTBEAT,
            monitor_interval: DEFAULT_MONITOR_INTERVAL,
            monitor_start_timeout: DEFAULT_MONITOR_START_TIMEOUT,
            monitor_stop_timeout: DEFAULT_MONITOR_STOP_TIMEOUT,
            reconnect: BackoffPolicy::default(),
            monitor_restart: BackoffPolicy::default(),
            host: None,
            watch_window: DEFAULT_WATCH_WINDOW,
        })
    }

    /// The WebSocket URL of the OpAMP endpoint: `ws(s)://host[:port][/prefix]/v1/opamp`.
    pub fn opamp_url(&self) -> Url {
        opamp_url(&self.server)
    }

    /// Every address, the first one first.
    pub fn servers(&self) -> Vec<Url> {
        std::iter::once(self.server.clone())
            .chain(self.fallback_servers.iter().cloned())
            .collect()
    }

    /// Sets the addresses from a comma-separated list (`--server a,b,c`): the first is
    /// `server`, the others `fallback_servers`; all must share the first one's scheme, as
    /// one transport serves them all.
    pub fn set_servers(&mut self, list: &str) -> Result<(), ConfigError> {
        let mut urls = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_server_url);
        let first = urls.next().ok_or_else(|| ConfigError::ServerUrl {
            url: list.to_owned(),
            reason: "no address given".into(),
        })??;
        let rest = urls.collect::<Result<Vec<_>, _>>()?;
        if let Some(other) = rest.iter().find(|u| u.scheme() != first.scheme()) {
            return Err(ConfigError::ServerUrl {
                url: other.to_string(),
                reason: format!(
                    "every address must use the first one's scheme ({})",
                    first.scheme()
                ),
            });
        }
        self.server = first;
        self.fallback_servers = rest;
        Ok(())
    }
}

/// Accepts `http(s)://` (the usual form) and `ws(s)://` base URLs.
pub fn parse_server_url(server: &str) -> Result<Url, ConfigError> {
    let bad = |reason: &str| ConfigError::ServerUrl {
        url: server.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(server).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(bad("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a base url has no query or fragment"));
    }
    Ok(url)
}

/// See [`Config::opamp_url`].
pub fn opamp_url(server: &Url) -> Url {
    let mut url = server.clone();
    let scheme = match server.scheme() {
        "https" | "wss" => "wss",
        _ => "ws",
    };
    // Switching between these special schemes cannot fail.
    let _ = url.set_scheme(scheme);
    let prefix = server.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{}", deskfleet_proto::opamp::DEFAULT_PATH));
    url
}

/// Reads an enrollment token from a file (`--enrollment-token-file`): the first line,
/// without surrounding whitespace.
pub fn read_enrollment_token(path: &Path) -> Result<SecretString, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::ReadEnrollmentToken {
            path: path.to_owned(),
            source,
        })?;
    Ok(SecretString::from(text.trim().to_owned()))
}

/// Reads a file holding the ed25519 public key as 64 hex characters.
pub fn read_trusted_key(path: &Path) -> Result<VerifyingKey, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadTrustedKey {
        path: path.to_owned(),
        source,
    })?;
    parse_trusted_key(&text)
}

/// 64 hex characters, surrounding whitespace allowed.
pub fn parse_trusted_key(text: &str) -> Result<VerifyingKey, ConfigError> {
    let text = text.trim();
    let bytes: [u8; 32] = hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ConfigError::TrustedKey(format!(
                "expected 64 hex characters (an ed25519 public key), got {} characters",
                text.len()
            ))
        })?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| ConfigError::TrustedKey("not a valid ed25519 public key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opamp_url_follows_the_scheme_and_keeps_a_prefix() {
        let cases = [
            ("http://127.0.0.1:8087", "ws://127.0.0.1:8087/v1/opamp"),
            ("http://127.0.0.1:8087/", "ws://127.0.0.1:8087/v1/opamp"),
            ("https://fleet.example", "wss://fleet.example/v1/opamp"),
            (
                "https://fleet.example/df/",
                "wss://fleet.example/df/v1/opamp",
            ),
            ("ws://h:1", "ws://h:1/v1/opamp"),
        ];
        for (base, want) in cases {
            let url = Url::parse(base).unwrap();
            assert_eq!(opamp_url(&url).as_str(), want, "{base}");
            assert!(parse_server_url(base).is_ok(), "{base}");
        }
    }

    #[test]
    fn server_url_is_checked() {
        for bad in ["ftp://h", "not a url", "http://h/?a=1", "unix:/tmp/s"] {
            assert!(parse_server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_is_split_into_bearer_secret_and_fingerprint() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let hash = "ab".repeat(32);
        let token = SecretString::from(format!("DFE1secret.{hash}"));
        let config = Config::new("https://h:1", Some(token), key, "/tmp/x").unwrap();
        assert_eq!(
            config.enrollment_token.unwrap().expose_secret(),
            "DFE1secret"
        );
        assert_eq!(config.ca_fingerprint, Some([0xab; 32]));
        assert!(!config.allow_insecure_http);
        let bad = SecretString::from("DFE1secret.nothex".to_owned());
        assert!(Config::new("https://h:1", Some(bad), key, "/tmp/x").is_err());
    }

    #[test]
    fn trusted_key_is_64_hex_characters() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let text = format!("{}\n", hex::encode(key.as_bytes()));
        assert_eq!(parse_trusted_key(&text).unwrap(), key);
        assert!(parse_trusted_key(&text[..63]).is_err());
        assert!(parse_trusted_key(&format!("{}00", text.trim())).is_err());
        assert!(parse_trusted_key("zz").is_err());
    }
}
