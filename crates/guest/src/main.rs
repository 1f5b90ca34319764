//! `deskfleet-guest`: parses the flags, sets up logging, and runs
//! [`deskfleet_guest::run`] until SIGTERM or SIGINT. Exit status 0 after a clean
//! shutdown, 1 when the guest cannot start (bad flags, unreadable state or key).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use deskfleet_guest::Config;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// The deskfleet guest daemon: enrolls this desktop with the deskfleet server, keeps an
/// OpAMP connection to it, and installs and supervises the signed monitoring agent.
#[derive(Debug, Parser)]
#[command(name = "deskfleet-guest", version)]
struct Args {
    /// The server's base URL, e.g. https://fleet.example:8087 (the content of the
    /// server's DATA_DIR/endpoint.url). Replicas without a load balancer: several URLs,
    /// comma-separated; the guest moves to the next when the one in use stops answering.
    #[arg(long)]
    server: String,
    /// File holding the project's enrollment token (DFE1...). Needed until this desktop
    /// has a credential. The token may also come from the environment variable
    /// DESKFLEET_ENROLLMENT_TOKEN.
    #[arg(long, value_name = "FILE", conflicts_with = "enrollment_token")]
    enrollment_token_file: Option<PathBuf>,
    /// The project's enrollment token on the command line. Any local user can read it
    /// (ps, /proc): prefer --enrollment-token-file or DESKFLEET_ENROLLMENT_TOKEN.
    #[arg(long, env = "DESKFLEET_ENROLLMENT_TOKEN", hide_env_values = true)]
    enrollment_token: Option<String>,
    /// PEM file with the CA certificate(s) to trust for the server. Without it the
    /// guest trusts the CA it kept in STATE_DIR/server-ca.pem, else the CA whose
    /// fingerprint the enrollment token carries, else the system's roots.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Talk to an http:// server: the credential then crosses the network unencrypted.
    #[arg(long)]
    allow_insecure_http: bool,
    /// File holding the server's package-signing ed25519 public key (64 hex characters).
    #[arg(long, value_name = "PUBKEY_FILE")]
    trusted_key: PathBuf,
    /// Directory for state.json (identity and credential, mode 0600).
    #[arg(long)]
    state_dir: PathBuf,
    /// Where packages are unpacked (default: STATE_DIR/agents).
    #[arg(long)]
    install_root: Option<PathBuf>,
    /// Seconds between heartbeats until the server sets an interval.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Sampling interval handed to the monitor, in milliseconds.
    #[arg(long, default_value_t = deskfleet_monitor::DEFAULT_INTERVAL_MS)]
    monitor_interval_ms: u64,
    /// Report this host name instead of the machine's (the server matches imported
    /// desktops by it; also lets several simulated desktops share one machine).
    #[arg(long, env = "DESKFLEET_GUEST_HOSTNAME")]
    hostname: Option<String>,
    /// Seconds a newly switched-to agent version is watched (started, healthy, at its
    /// version) before an upgrade or rollback is confirmed; a failure within them puts
    /// the previous version back.
    #[arg(long, env = "DESKFLEET_WATCH_WINDOW_SECS", default_value_t = deskfleet_guest::config::DEFAULT_WATCH_WINDOW.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    watch_window_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with the causes, not a backtrace: this is an operator's error.
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let trusted_key = deskfleet_guest::config::read_trusted_key(&args.trusted_key)?;
    let token = match &args.enrollment_token_file {
        Some(path) => Some(deskfleet_guest::config::read_enrollment_token(path)?),
        None => args
            .enrollment_token
            .filter(|t| !t.trim().is_empty())
            .map(SecretString::from),
    };
    let first = args.server.split(',').next().unwrap_or_default().trim();
    let mut config = Config::new(first, token, trusted_key, &args.state_dir)?;
    config.set_servers(&args.server)?;
    config.ca_cert = args.ca_cert;
    config.allow_insecure_http = args.allow_insecure_http;
    if let Some(root) = args.install_root {
        config.install_root = root;
    }
    if let Some(name) = args.hostname.filter(|n| !n.trim().is_empty()) {
        let mut host = deskfleet_guest::host::HostFacts::detect();
        host.host_name = name.trim().to_owned();
        config.host = Some(host);
    }
    config.heartbeat = std::time::Duration::from_secs(args.heartbeat_secs);
    config.monitor_interval = std::time::Duration::from_millis(args.monitor_interval_ms);
    config.watch_window = std::time::Duration::from_secs(args.watch_window_secs);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                wait_for_signal().await;
                tracing::info!("shutdown requested");
                shutdown.cancel();
            }
        });
        deskfleet_guest::run(config, shutdown)
            .await
            .context("the guest could not start")
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the guest");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
