//! `deskfleet`: install agents and follow jobs from a terminal. It talks to a deskfleet
//! server over the same signed API as the official SDKs.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use deskfleet_client::{Client, Credentials};
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
    /// Server URL, e.g. http://127.0.0.1:8087 (default: from DATA_DIR/listen.addr).
    #[arg(long, env = "DESKFLEET_ENDPOINT", global = true)]
    endpoint: Option<String>,
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
    /// Use the credentials and endpoint of a server data directory (bootstrap.json).
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
        (None, Some(dir)) => format!(
            "http://{}",
            std::fs::read_to_string(dir.join("listen.addr"))?.trim()
        ),
        (None, None) => bail!("give --endpoint (or DESKFLEET_ENDPOINT) or --data-dir"),
    };
    let pick = |flag: &Option<String>, from: fn(&BootstrapFile) -> &String, name: &str| {
        flag.clone()
            .or_else(|| bootstrap.as_ref().map(|b| from(b).clone()))
            .with_context(|| format!("give --{name} or --data-dir"))
    };
    let project = pick(&cli.project, |b| &b.project_id, "project")?;
    let access_key = pick(&cli.access_key, |b| &b.access_key, "access-key")?;
    let secret_key = pick(&cli.secret_key, |b| &b.secret_key, "secret-key")?;
    Ok(Client::new(
        &endpoint,
        &project,
        Credentials::AkSk {
            access_key,
            secret_key,
        },
    )?)
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
