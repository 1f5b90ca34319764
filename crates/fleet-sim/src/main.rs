//! `deskfleet-fleet-sim`: opens many OpAMP WebSocket connections, each a simulated desktop
//! speaking the real protocol to a deskfleet server: it enrolls with an enrollment token,
//! and when offered a package it downloads it, verifies its SHA-256 and its ed25519
//! signature against the trusted key exactly as the guest does, and reports the install
//! steps and the agent's health. Nothing is executed. Used by `bench/fleet/run.sh`.
//!
//! It trusts the server exactly as the guest does, with the guest's own TLS code
//! (`deskfleet_guest::tls`): `--ca-cert`, else the CA fingerprint of the enrollment
//! token (pinning), else the system's roots; plain http only with `--allow-insecure-http`.
//!
//! It prints one JSON line when every desktop is connected (`{"event":"connected",...}`)
//! and a summary on SIGINT/SIGTERM or when `--duration-secs` ends.

use anyhow::{Context, anyhow};
use clap::Parser;
use deskfleet_guest::config::{opamp_url, parse_server_url, read_trusted_key};
use deskfleet_guest::host::HostFacts;
use deskfleet_guest::install::verify_package;
use deskfleet_guest::protocol::agent_description;
use deskfleet_guest::state::InstanceUid;
use deskfleet_guest::tls::{self, CONNECT_TIMEOUT, ServerTrust};
use deskfleet_proto::enrollment::EnrollmentToken;
use deskfleet_proto::opamp::{
    self as op, AgentCapabilities, AgentToServer, PackageStatusEnum, ServerToAgent,
    decode_ws_frame, encode_ws_frame,
};
use ed25519_dalek::VerifyingKey;
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Parser, Clone)]
struct Args {
    /// Server base URL, e.g. https://127.0.0.1:8087 (DATA_DIR/endpoint.url); several,
    /// comma-separated, as a guest takes them: desktop i starts on address i mod n and
    /// moves to the next when its connection fails or is lost.
    #[arg(long)]
    server: String,
    /// The enrollment token (DFE1<secret>[.<CA sha256>]).
    #[arg(long, env = "DESKFLEET_ENROLLMENT_TOKEN", hide_env_values = true)]
    enrollment_token: String,
    /// PEM file with the CA to trust for the server (default: pin the CA by the token's
    /// fingerprint, else the system's roots).
    #[arg(long)]
    ca_cert: Option<std::path::PathBuf>,
    /// Allow an http:// server.
    #[arg(long)]
    allow_insecure_http: bool,
    /// The server's package-signing public key (64 hex characters).
    #[arg(long)]
    trusted_key: std::path::PathBuf,
    #[arg(long, default_value_t = 1000)]
    desktops: usize,
    /// New connections opened per second.
    #[arg(long, default_value_t = 1000)]
    connect_rate: u32,
    #[arg(long, default_value = "sim")]
    hostname_prefix: String,
    /// Stop after this long (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
    /// Downloads in flight at once across all simulated desktops (they share this
    /// machine's descriptors and cores with the server; a real fleet spreads them over
    /// many machines).
    #[arg(long, default_value_t = 512)]
    max_concurrent_downloads: usize,
    /// Share (0.0..=1.0) of the desktops whose upgrades fail: offered a version while
    /// another one runs, they report the guest's rollback (`agent-exited: ...; rolled back
    /// to <previous>`) instead of `Installed`. First installs always succeed.
    #[arg(long, default_value_t = 0.0)]
    fail_upgrade_share: f64,
    /// How long a simulated install watches the new agent before reporting `Installed`
    /// (the guest's watch window), in milliseconds.
    #[arg(long, default_value_t = 0)]
    watch_ms: u64,
    /// Send a monitor metrics report (as the guest forwards it) every this many seconds
    /// once enrolled, each desktop at its own phase (0: none). Used by `bench/metrics`.
    #[arg(long, default_value_t = 0)]
    metrics_interval_secs: u64,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    enrolled: AtomicU64,
    offers: AtomicU64,
    verified: AtomicU64,
    /// Installs completed on a desktop (a verified package installed and watched); a
    /// download cut off by a lost connection before that is downloaded again.
    installed: AtomicU64,
    verify_failed: AtomicU64,
    download_failed: AtomicU64,
    /// Downloads tried again after a passing failure.
    download_retries: AtomicU64,
    /// Upgrades that failed on purpose (`--fail-upgrade-share`) and were rolled back.
    upgrade_failed: AtomicU64,
    uninstalled: AtomicU64,
    reconnects: AtomicU64,
    refused: AtomicU64,
    metrics_sent: AtomicU64,
}

struct Shared {
    downloads: tokio::sync::Semaphore,
    args: Args,
    /// The secret part of the token: the bearer.
    enrollment_secret: String,
    /// One per server address.
    opamp_urls: Vec<String>,
    /// For wss://; `None` for an allowed ws://.
    tls: Option<Arc<rustls::ClientConfig>>,
    key: VerifyingKey,
    http: reqwest::Client,
    counters: Counters,
}

/// The description a guest on this host would send, built by the guest's own code; each
/// simulated desktop has its own host name.
fn description(host: &str, uid: &[u8]) -> anyhow::Result<op::AgentDescription> {
    let uid =
        InstanceUid::from_bytes(uid).ok_or_else(|| anyhow!("instance uid must be 16 bytes"))?;
    let facts = HostFacts {
        host_name: host.to_string(),
        os_type: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
    };
    Ok(agent_description(&uid, &facts))
}

fn capabilities() -> u64 {
    AgentCapabilities::bits(&[
        AgentCapabilities::ReportsStatus,
        AgentCapabilities::AcceptsPackages,
        AgentCapabilities::ReportsPackageStatuses,
        AgentCapabilities::ReportsHealth,
        AgentCapabilities::AcceptsOpAmpConnectionSettings,
        AgentCapabilities::ReportsHeartbeat,
    ])
}

fn package_status(
    name: &str,
    offered: &str,
    has: &str,
    status: PackageStatusEnum,
    percent: Option<f64>,
    error: &str,
) -> op::PackageStatuses {
    let mut packages = BTreeMap::new();
    packages.insert(
        name.to_string(),
        op::PackageStatus {
            name: name.to_string(),
            agent_has_version: has.to_string(),
            server_offered_version: offered.to_string(),
            status: status as i32,
            error_message: error.to_string(),
            download_details: percent.map(|p| op::PackageDownloadDetails {
                download_percent: p,
                download_bytes_per_second: 0.0,
            }),
            ..Default::default()
        },
    );
    op::PackageStatuses {
        packages,
        ..Default::default()
    }
}

fn healthy(name: &str, version: &str) -> op::ComponentHealth {
    let mut map = BTreeMap::new();
    map.insert(
        name.to_string(),
        op::ComponentHealth {
            healthy: true,
            status: format!("running {name}/{version}"),
            ..Default::default()
        },
    );
    op::ComponentHealth {
        healthy: true,
        status: "running".into(),
        component_health_map: map,
        ..Default::default()
    }
}

/// Downloads an offered package and verifies it with the guest's own check
/// (`deskfleet_guest::install::verify_package`). The error is the guest's
/// `<reason-code>: <reason>`.
async fn fetch_and_verify(
    shared: &Shared,
    credential: &str,
    p: &op::PackageAvailable,
) -> Result<(), String> {
    let download_failed = |why: &str| format!("download_failed: {why}");
    let file = p
        .file
        .as_ref()
        .ok_or_else(|| download_failed("the offer has no file"))?;
    let _permit = shared
        .downloads
        .acquire()
        .await
        .map_err(|e| download_failed(&e.to_string()))?;
    // As the guest does: a download that failed for a passing reason (a lost connection,
    // 5xx, 429) is tried three times in all, 1 s and then 2 s apart (jittered).
    let mut attempt = 1;
    let bytes = loop {
        let (error, transient) = match shared
            .http
            .get(&file.download_url)
            .bearer_auth(credential)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => match response.bytes().await {
                Ok(bytes) => break bytes,
                Err(e) => (e.to_string(), true),
            },
            Ok(response) => {
                let status = response.status();
                let again = status.is_server_error() || status.as_u16() == 429;
                (format!("HTTP {status}"), again)
            }
            Err(e) => (e.to_string(), true),
        };
        if !transient || attempt == 3 {
            return Err(download_failed(&error));
        }
        shared
            .counters
            .download_retries
            .fetch_add(1, Ordering::Relaxed);
        let delay = Duration::from_secs(attempt).mul_f64(0.5 + rand::random::<f64>());
        tokio::time::sleep(delay).await;
        attempt += 1;
    };
    verify_package(&bytes, &file.content_hash, &file.signature, &shared.key)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One simulated desktop: connect, enroll, serve offers; reconnect on loss.
async fn desktop(shared: Arc<Shared>, index: usize) {
    let host = format!("{}-{index:05}", shared.args.hostname_prefix);
    let mut uid = uuid::Uuid::now_v7().as_bytes().to_vec();
    let mut credential: Option<String> = None;
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    // What is installed outlives a connection, as the guest keeps it on disk: an offer of
    // the installed version after a reconnect is answered, not installed again.
    let mut installed: Option<String> = None;
    let mut server = index % shared.opamp_urls.len();
    loop {
        let session = session(
            &shared,
            (index, &shared.opamp_urls[server]),
            &host,
            (&mut uid, &mut credential, &mut installed),
            (&mut first, &mut backoff),
        );
        match session.await {
            Ok(()) => return,
            Err(e) => {
                server = (server + 1) % shared.opamp_urls.len();
                shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                let jitter = rand::random::<f64>() + 0.5;
                tokio::time::sleep(backoff.mul_f64(jitter)).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                if shared.counters.reconnects.load(Ordering::Relaxed) < 20 {
                    eprintln!("{host}: {e:#}; reconnecting");
                }
            }
        }
    }
}

/// Whether desktop `index` is one of the `share` whose upgrades fail: spread over the
/// fleet, the same desktops on every run.
fn fails_upgrades(index: usize, share: f64) -> bool {
    let slot = (index as u64).wrapping_mul(7919) % 10_000;
    (slot as f64) < share.clamp(0.0, 1.0) * 10_000.0
}

async fn session(
    shared: &Shared,
    (index, opamp_url): (usize, &str),
    host: &str,
    (uid, credential, installed): (&mut Vec<u8>, &mut Option<String>, &mut Option<String>),
    (first, backoff): (&mut bool, &mut Duration),
) -> anyhow::Result<()> {
    let mut request = opamp_url.into_client_request()?;
    let bearer = credential
        .clone()
        .unwrap_or_else(|| shared.enrollment_secret.clone());
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {bearer}").parse()?);
    let connector = shared.tls.clone().map(tokio_tungstenite::Connector::Rustls);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(tokio_tungstenite::tungstenite::Error::Io(
                std::io::ErrorKind::TimedOut.into(),
            ))
        });
    let (mut ws, _) = match connected {
        Ok(ok) => ok,
        Err(e) => {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(anyhow!("connect: {e}"));
        }
    };
    if std::mem::take(first) {
        shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    }
    // A connection that was made starts the backoff over, as the guest's does.
    *backoff = Duration::from_secs(1);
    let mut seq = 0u64;
    let mut send = |msg: AgentToServer| {
        seq += 1;
        let mut msg = msg;
        msg.sequence_num = seq;
        Message::Binary(encode_ws_frame(&msg).into())
    };
    let base = AgentToServer {
        instance_uid: uid.clone(),
        capabilities: capabilities(),
        agent_description: Some(description(host, uid)?),
        ..Default::default()
    };
    ws.send(send(base)).await?;
    // A desktop heartbeats as a guest does, at the interval the server offers (OpAMP's
    // default until then): the server closes connections silent for three intervals.
    let mut every = Duration::from_secs(deskfleet_proto::opamp::DEFAULT_HEARTBEAT_INTERVAL_SECS);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let metrics_every = Duration::from_secs(shared.args.metrics_interval_secs.max(1));
    let mut metrics_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + metrics_every.mul_f64(rand::random::<f64>()),
        metrics_every,
    );
    let sends_metrics = shared.args.metrics_interval_secs > 0;
    loop {
        let frame = tokio::select! {
            _ = metrics_tick.tick(), if sends_metrics && credential.is_some() => {
                ws.send(send(AgentToServer {
                    instance_uid: uid.clone(),
                    custom_message: Some(metrics_report()),
                    ..Default::default()
                }))
                .await?;
                shared.counters.metrics_sent.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            frame = ws.next() => match frame {
                Some(frame) => frame,
                None => break,
            },
            _ = heartbeat.tick() => {
                ws.send(send(AgentToServer {
                    instance_uid: uid.clone(),
                    ..Default::default()
                }))
                .await?;
                continue;
            }
        };
        let Message::Binary(data) = frame? else {
            continue;
        };
        let reply: ServerToAgent = decode_ws_frame(&data).context("server frame")?;
        if let Some(err) = reply.error_response {
            return Err(anyhow!("server error: {}", err.error_message));
        }
        if let Some(id) = reply.agent_identification {
            *uid = id.new_instance_uid;
        }
        let offered_credential = reply
            .connection_settings
            .as_ref()
            .and_then(|c| c.offered_bearer())
            .map(str::to_string);
        let offered = reply.connection_settings.and_then(|c| c.opamp);
        if let Some(secs) = offered
            .as_ref()
            .map(|o| o.heartbeat_interval_seconds)
            .filter(|secs| *secs > 0)
            && Duration::from_secs(secs) != every
        {
            every = Duration::from_secs(secs);
            heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        }
        if let Some(offered_credential) = offered_credential {
            *credential = Some(offered_credential);
            shared.counters.enrolled.fetch_add(1, Ordering::Relaxed);
        }
        let Some(available) = reply.packages_available else {
            continue;
        };
        // UNINSTALL: the empty offer. The agent goes; the statuses say so under the
        // empty hash, and health no longer names a monitor.
        if available.packages.is_empty()
            && available.all_packages_hash == deskfleet_proto::opamp::EMPTY_PACKAGES_HASH
        {
            *installed = None;
            shared.counters.uninstalled.fetch_add(1, Ordering::Relaxed);
            ws.send(send(AgentToServer {
                instance_uid: uid.clone(),
                package_statuses: Some(op::PackageStatuses {
                    server_provided_all_packages_hash: available.all_packages_hash.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await?;
            continue;
        }
        for (name, p) in available.packages {
            shared.counters.offers.fetch_add(1, Ordering::Relaxed);
            let report = |status, percent, error: &str, has: &str| AgentToServer {
                instance_uid: uid.clone(),
                package_statuses: Some(package_status(
                    &name, &p.version, has, status, percent, error,
                )),
                ..Default::default()
            };
            if installed.as_deref() == Some(p.version.as_str()) {
                let mut msg = report(PackageStatusEnum::Installed, None, "", &p.version);
                msg.health = Some(healthy(&name, &p.version));
                ws.send(send(msg)).await?;
                continue;
            }
            ws.send(send(report(
                PackageStatusEnum::Downloading,
                Some(0.0),
                "",
                "",
            )))
            .await?;
            let cred = credential.clone().unwrap_or_default();
            match fetch_and_verify(shared, &cred, &p).await {
                Ok(()) => {
                    shared.counters.verified.fetch_add(1, Ordering::Relaxed);
                    ws.send(send(report(
                        PackageStatusEnum::Downloading,
                        Some(100.0),
                        "",
                        "",
                    )))
                    .await?;
                    ws.send(send(report(PackageStatusEnum::Installing, None, "", "")))
                        .await?;
                    if shared.args.watch_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(shared.args.watch_ms)).await;
                    }
                    let previous = installed.clone();
                    if let Some(previous) =
                        previous.filter(|_| fails_upgrades(index, shared.args.fail_upgrade_share))
                    {
                        // The guest's watch failed: the previous agent runs again.
                        shared
                            .counters
                            .upgrade_failed
                            .fetch_add(1, Ordering::Relaxed);
                        let reason = format!(
                            "agent-exited: the new agent exited during its watch window (simulated); rolled back to {previous}"
                        );
                        let mut msg =
                            report(PackageStatusEnum::InstallFailed, None, &reason, &previous);
                        msg.health = Some(healthy(&name, &previous));
                        ws.send(send(msg)).await?;
                        continue;
                    }
                    // Installed here whether or not the report reaches the server.
                    *installed = Some(p.version.clone());
                    shared.counters.installed.fetch_add(1, Ordering::Relaxed);
                    let mut done = report(PackageStatusEnum::Installed, None, "", &p.version);
                    done.health = Some(healthy(&name, &p.version));
                    ws.send(send(done)).await?;
                }
                Err(reason) => {
                    let counter = if reason.starts_with("download_failed") {
                        &shared.counters.download_failed
                    } else {
                        &shared.counters.verify_failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    ws.send(send(report(
                        PackageStatusEnum::InstallFailed,
                        None,
                        &reason,
                        "",
                    )))
                    .await?;
                }
            }
        }
    }
    Err(anyhow!("connection closed"))
}

/// A monitor metrics report with plausible, varying figures: a 2-core desktop with two
/// file systems and two interfaces (20 Cloud Eye points once stored).
fn metrics_report() -> op::CustomMessage {
    let r = || rand::random::<f64>();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let usage = 5.0 + 60.0 * r();
    let json = serde_json::json!({
        "type": "metrics", "agent": "deskfleet-monitor", "version": "0.1.0",
        "collected_at_ms": now, "interval_ms": 10_000,
        "cpu": {"usage_percent": usage, "cores": 2, "user_percent": usage * 0.7,
                "system_percent": usage * 0.2},
        "memory": {"total_bytes": 8_589_934_592u64,
                   "available_bytes": 2_000_000_000u64 + (r() * 4e9) as u64,
                   "used_percent": 20.0 + 60.0 * r(), "swap_total_bytes": 0, "swap_free_bytes": 0},
        "disks": [
            {"mount_point": "/", "filesystem": "ext4", "device": "/dev/vda1",
             "total_bytes": 42_949_672_960u64, "free_bytes": 20_000_000_000u64,
             "available_bytes": 18_000_000_000u64, "used_percent": 55.0 + r()},
            {"mount_point": "/home", "filesystem": "ext4", "device": "/dev/vdb1",
             "total_bytes": 107_374_182_400u64, "free_bytes": 80_000_000_000u64,
             "available_bytes": 75_000_000_000u64, "used_percent": 27.0 + r()}
        ],
        "network": [
            {"interface": "eth0", "rx_bytes": 1_000_000, "tx_bytes": 500_000,
             "rx_bytes_per_sec": 50_000.0 * r(), "tx_bytes_per_sec": 10_000.0 * r()},
            {"interface": "eth1", "rx_bytes": 1_000, "tx_bytes": 1_000,
             "rx_bytes_per_sec": 10.0 * r(), "tx_bytes_per_sec": 10.0 * r()}
        ],
        "load_average": [2.0 * r(), 1.5 * r(), r()], "uptime_secs": 3600.0,
        "self": {"rss_bytes": 2_200_000, "cpu_percent": 0.01}
    });
    op::CustomMessage {
        capability: deskfleet_guest::protocol::MONITOR_CAPABILITY.to_owned(),
        r#type: deskfleet_guest::protocol::METRICS_MESSAGE_TYPE.to_owned(),
        data: json.to_string().into_bytes(),
    }
}

fn summary(shared: &Shared, started: Instant, event: &str) -> String {
    let c = &shared.counters;
    format!(
        "{{\"event\":\"{event}\",\"elapsed_ms\":{},\"connected\":{},\"enrolled\":{},\"offers\":{},\"verified\":{},\"installed\":{},\"verify_failed\":{},\"download_failed\":{},\"download_retries\":{},\"upgrade_failed\":{},\"uninstalled\":{},\"reconnects\":{},\"refused\":{},\"metrics_sent\":{}}}",
        started.elapsed().as_millis(),
        c.connected.load(Ordering::Relaxed),
        c.enrolled.load(Ordering::Relaxed),
        c.offers.load(Ordering::Relaxed),
        c.verified.load(Ordering::Relaxed),
        c.installed.load(Ordering::Relaxed),
        c.verify_failed.load(Ordering::Relaxed),
        c.download_failed.load(Ordering::Relaxed),
        c.download_retries.load(Ordering::Relaxed),
        c.upgrade_failed.load(Ordering::Relaxed),
        c.uninstalled.load(Ordering::Relaxed),
        c.reconnects.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.metrics_sent.load(Ordering::Relaxed),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key = read_trusted_key(&args.trusted_key).context("reading the trusted key")?;
    let token = EnrollmentToken::parse(&args.enrollment_token).context("the enrollment token")?;
    let servers = args
        .server
        .split(',')
        .map(|s| parse_server_url(s.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    for server in &servers {
        tls::check_scheme(server, args.allow_insecure_http)?;
    }
    if servers.iter().any(|s| s.scheme() != servers[0].scheme()) {
        return Err(anyhow!("--server: every address must use one scheme"));
    }
    let tls = match servers[0].scheme() {
        "https" | "wss" => {
            let trust = match (&args.ca_cert, token.ca_fingerprint) {
                (Some(path), _) => ServerTrust::CaFile(path.clone()),
                (None, Some(fingerprint)) => ServerTrust::Pinned(fingerprint),
                (None, None) => ServerTrust::System,
            };
            Some(trust.client()?.config)
        }
        _ => None,
    };
    let mut http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(tls::READ_TIMEOUT);
    if let Some(config) = &tls {
        http = http.use_preconfigured_tls(rustls::ClientConfig::clone(config));
    }
    let downloads = tokio::sync::Semaphore::new(args.max_concurrent_downloads.max(1));
    let shared = Arc::new(Shared {
        downloads,
        key,
        http: http.build()?,
        counters: Counters::default(),
        enrollment_secret: token.secret,
        opamp_urls: servers.iter().map(|s| opamp_url(s).to_string()).collect(),
        tls,
        args,
    });
    let started = Instant::now();
    let total = shared.args.desktops;
    let gap = Duration::from_secs_f64(1.0 / f64::from(shared.args.connect_rate.max(1)));
    let spawner = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(gap);
            for i in 0..total {
                tick.tick().await;
                tokio::spawn(desktop(shared.clone(), i));
            }
        })
    };
    spawner.await?;
    loop {
        let enrolled = shared.counters.enrolled.load(Ordering::Relaxed) as usize;
        if enrolled >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{}", summary(&shared, started, "connected"));
    let until = std::pin::pin!(async {
        if shared.args.duration_secs > 0 {
            tokio::time::sleep(Duration::from_secs(shared.args.duration_secs)).await;
        } else {
            std::future::pending::<()>().await;
        }
    });
    let mut until = until;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = &mut until => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let verified = shared.counters.verified.load(Ordering::Relaxed);
                if verified != last {
                    last = verified;
                    println!("{}", summary(&shared, started, "progress"));
                }
            }
        }
    }
    println!("{}", summary(&shared, started, "done"));
    Ok(())
}
