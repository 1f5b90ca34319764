//! `deskfleet`: install agents and follow jobs from a terminal. It talks to a deskfleet
//! server over the same signed API as the official SDKs.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use deskfleet_client::{Client, ClientOptions, Credentials};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "deskfleet",
    version,
    about = "Install agents on desktop fleets"
)]
struct Cli {
    /// Server URL, e.g. https://fleet.example:8087 (default: DATA_DIR/endpoint.url).
    #[arg(long, env = "DESKFLEET_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// PEM file with CA certificates to trust for the server, besides the system's
    /// roots (default: DATA_DIR/ca.pem when there is one).
    #[arg(long, env = "DESKFLEET_CA_CERT", value_name = "FILE", global = true)]
    ca_cert: Option<PathBuf>,
    /// Send credentials over plain http to a host that is not a loopback address.
    #[arg(long, global = true)]
    allow_insecure_http: bool,
    /// Seconds a request may take, connection included.
    #[arg(long, default_value_t = 60, global = true)]
    timeout_secs: u64,
    #[arg(long, env = "DESKFLEET_PROJECT_ID", global = true)]
    project: Option<String>,
    #[arg(long, env = "DESKFLEET_ACCESS_KEY", global = true)]
    access_key: Option<String>,
    #[arg(
        long,
        env = "DESKFLEET_SECRET_KEY",
        hide_env_values = true,
        global = true
    )]
    secret_key: Option<String>,
    /// Use the credentials, endpoint and CA of a server data directory (bootstrap.json,
    /// endpoint.url, ca.pem).
    #[arg(long, env = "DESKFLEET_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the monitoring agent on desktops; prints the job id.
    Install {
        desktop_ids: Vec<String>,
        /// Wait for the job to finish and print it.
        #[arg(long)]
        wait: bool,
    },
    #[command(subcommand)]
    Job(JobCommand),
    /// List sub-jobs.
    SubJobs {
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        status: Vec<String>,
    },
    #[command(subcommand)]
    Desktops(DesktopsCommand),
    /// Agent install state of each desktop.
    Agents {
        #[arg(long)]
        installed: Option<bool>,
    },
}

#[derive(Subcommand)]
enum JobCommand {
    Show { job_id: String },
    Retry { job_id: String },
    Cancel { job_id: String },
}

#[derive(Subcommand)]
enum DesktopsCommand {
    List,
    Show { desktop_id: String },
}

#[derive(Deserialize)]
struct BootstrapFile {
    project_id: String,
    access_key: String,
    secret_key: String,
}

fn client(cli: &Cli) -> anyhow::Result<Client> {
    let bootstrap = match &cli.data_dir {
        Some(dir) => {
            let path = dir.join("bootstrap.json");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(serde_json::from_str::<BootstrapFile>(&text)?)
        }
        None => None,
    };
    let endpoint = match (&cli.endpoint, &cli.data_dir) {
        (Some(e), _) => e.clone(),
        (None, Some(dir)) => endpoint_of(dir)?,
        (None, None) => bail!("give --endpoint (or DESKFLEET_ENDPOINT) or --data-dir"),
    };
    let ca_cert = cli.ca_cert.clone().or_else(|| {
        cli.data_dir
            .as_ref()
            .map(|dir| dir.join("ca.pem"))
            .filter(|path| path.is_file())
    });
    let mut options = ClientOptions {
        allow_insecure_http: cli.allow_insecure_http,
        connect_timeout: deskfleet_client::DEFAULT_CONNECT_TIMEOUT
            .min(Duration::from_secs(cli.timeout_secs)),
        timeout: Duration::from_secs(cli.timeout_secs),
        ..ClientOptions::default()
    };
    if let Some(path) = &ca_cert {
        options = options.with_ca_file(path)?;
    }
    let pick = |flag: &Option<String>, from: fn(&BootstrapFile) -> &String, name: &str| {
        flag.clone()
            .or_else(|| bootstrap.as_ref().map(|b| from(b).clone()))
            .with_context(|| format!("give --{name} or --data-dir"))
    };
    let project = pick(&cli.project, |b| &b.project_id, "project")?;
    let access_key = pick(&cli.access_key, |b| &b.access_key, "access-key")?;
    let secret_key = pick(&cli.secret_key, |b| &b.secret_key, "secret-key")?;
    let client = Client::with_options(
        &endpoint,
        &project,
        Credentials::AkSk {
            access_key,
            secret_key,
        },
        &options,
    );
    match client {
        Err(deskfleet_client::ClientError::InsecureHttp(url)) => bail!(
            "refusing plain http to {url}: the signed requests would cross the network unencrypted; use https, or pass --allow-insecure-http"
        ),
        other => Ok(other?),
    }
}

/// The server's base URL from its data directory: `endpoint.url` (written by the
/// server with its scheme), else `listen.addr` of a server that predates it (plain http).
fn endpoint_of(dir: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(dir.join("endpoint.url")) {
        Ok(url) => Ok(url.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let path = dir.join("listen.addr");
            let addr = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (no endpoint.url)", path.display()))?;
            Ok(format!("http://{}", addr.trim()))
        }
        Err(e) => Err(e).context(format!("reading {}", dir.join("endpoint.url").display())),
    }
}

fn print(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = client(&cli)?;
    match cli.command {
        Command::Install { desktop_ids, wait } => {
            let job = client.batch_install_agent(&desktop_ids).await?;
            if !wait {
                return print(&job);
            }
            loop {
                let info = client.show_job(&job.job_id).await?;
                if matches!(info.status.as_str(), "SUCCESS" | "FAIL") {
                    return print(&info);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Command::Job(JobCommand::Show { job_id }) => print(&client.show_job(&job_id).await?),
        Command::Job(JobCommand::Retry { job_id }) => {
            print(&client.job_action(&job_id, "retry").await?)
        }
        Command::Job(JobCommand::Cancel { job_id }) => {
            print(&client.job_action(&job_id, "cancel").await?)
        }
        Command::SubJobs { job, status } => {
            let mut query: Vec<(String, String)> =
                status.into_iter().map(|s| ("status".into(), s)).collect();
            if let Some(job) = job {
                query.push(("job_id".into(), job));
            }
            print(&client.list_sub_jobs(&query).await?)
        }
        Command::Desktops(DesktopsCommand::List) => print(&client.list_desktops(&[]).await?),
        Command::Desktops(DesktopsCommand::Show { desktop_id }) => {
            print(&client.show_desktop(&desktop_id).await?)
        }
        Command::Agents { installed } => {
            let query: Vec<(String, String)> = installed
                .map(|i| ("is_installed".to_string(), i.to_string()))
                .into_iter()
                .collect();
            print(&client.list_agents(&query).await?)
        }
    }
}
