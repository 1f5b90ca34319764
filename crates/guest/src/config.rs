//! The guest's settings, as the binary's flags give them and as tests build them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use reqwest::Url;
use secrecy::SecretString;

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
}

/// Everything [`crate::run`] needs. Build it with [`Config::new`] and adjust the public
/// fields (tests shorten the timeouts and backoffs).
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's base URL (`http://host:port`, optionally with a path prefix).
    pub server: Url,
    /// The project's enrollment token (`DFE1…`); needed only until a credential is stored.
    pub enrollment_token: Option<SecretString>,
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
}

impl Config {
    /// Settings with every default: install root `state_dir/agents`, heartbeat 30 s,
    /// monitor interval 10 s, backoffs 1 s..60 s ±50 %.
    pub fn new(
        server: &str,
        enrollment_token: Option<SecretString>,
        trusted_key: VerifyingKey,
        state_dir: impl Into<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let state_dir = state_dir.into();
        let server = parse_server_url(server)?;
        Ok(Config {
            server,
            enrollment_token,
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
        })
    }

    /// The WebSocket URL of the OpAMP endpoint: `ws(s)://host[:port][/prefix]/v1/opamp`.
    pub fn opamp_url(&self) -> Url {
        opamp_url(&self.server)
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
    if matches!(url.scheme(), "https" | "wss") && !cfg!(feature = "tls") {
        return Err(bad(
            "this guest was built without TLS support (cargo feature `tls`)",
        ));
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
            // A TLS URL is refused up front by a guest built without TLS.
            let plain = base.starts_with("http:") || base.starts_with("ws:");
            assert_eq!(
                parse_server_url(base).is_ok(),
                plain || cfg!(feature = "tls"),
                "{base}"
            );
        }
    }

    #[test]
    fn server_url_is_checked() {
        for bad in ["ftp://h", "not a url", "http://h/?a=1", "unix:/tmp/s"] {
            assert!(parse_server_url(bad).is_err(), "{bad}");
        }
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
