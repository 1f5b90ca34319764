//! The command line: every command and flag, each with its sentence for `--help`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "deskfleet",
    version,
    about = "Install, upgrade and follow the monitoring agent on desktop fleets",
    long_about = "Install, upgrade and follow the monitoring agent on desktop fleets.\n\n\
        Settings come from flags, then DESKFLEET_* environment variables, then the profile \
        of the config file (`deskfleet configure`), then --data-dir. Exit codes: 0 success, \
        1 unexpected error, 2 usage or API error, 3 a job or an invocation failed, 4 the \
        server could not be reached or did not answer in time.",
    after_help = "See docs/cli.md for output formats, --query, profiles and exit codes."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone, Default)]
pub struct Global {
    /// Profile of the config file to use (default: "default").
    #[arg(long, env = "DESKFLEET_PROFILE", global = true)]
    pub profile: Option<String>,
    /// Server URL, e.g. https://fleet.example:8087 (default: the profile's, else
    /// DATA_DIR/endpoint.url).
    #[arg(long, env = "DESKFLEET_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// PEM file with CA certificates to trust for the server, besides the system's
    /// roots (default: the profile's, else DATA_DIR/ca.pem when there is one).
    #[arg(long, env = "DESKFLEET_CA_CERT", value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Send credentials over plain http to a host that is not a loopback address.
    #[arg(long, global = true)]
    pub allow_insecure_http: bool,
    /// Seconds a request may take, connection included (default 60).
    #[arg(long, env = "DESKFLEET_TIMEOUT_SECS", global = true)]
    pub timeout_secs: Option<u64>,
    /// How many times a request answered 429 or 503 is sent again, after the server's
    /// Retry-After or a doubling backoff from 0.5 s (default 3).
    #[arg(long, env = "DESKFLEET_RETRIES", global = true)]
    pub retries: Option<u32>,
    /// Project id the requests act on.
    #[arg(long, env = "DESKFLEET_PROJECT_ID", global = true)]
    pub project: Option<String>,
    /// Access key (AK) that signs the requests.
    #[arg(long, env = "DESKFLEET_ACCESS_KEY", global = true)]
    pub access_key: Option<String>,
    /// Secret key (SK) that signs the requests; prefer the environment or a profile to
    /// the command line, where `ps` shows it.
    #[arg(
        long,
        env = "DESKFLEET_SECRET_KEY",
        hide_env_values = true,
        global = true
    )]
    pub secret_key: Option<String>,
    /// Use the credentials, endpoint and CA of a server data directory (bootstrap.json,
    /// endpoint.url, ca.pem) for what flags, environment and profile leave unset.
    #[arg(long, env = "DESKFLEET_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Output format: aligned tables for people (default) or JSON for scripts.
    #[arg(short, long, env = "DESKFLEET_OUTPUT", global = true)]
    pub output: Option<Format>,
    /// Print only the selected fields: `a.b`, `list[]` (each element), `list[0]`,
    /// `{x,y.z}` (an object of those fields); e.g. `desktops[].{desktop_id,computer_name}`.
    #[arg(long, global = true, value_name = "EXPR")]
    pub query: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Aligned tables and `key: value` lines; colours only on a terminal.
    Table,
    /// Pretty-printed JSON, the API's own fields.
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Install the monitoring agent on desktops; prints the job id (one per 100 desktops).
    Install {
        #[command(flatten)]
        targets: Targets,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Upgrade the agent of desktops to a version (a Cloud Eye UPDATE invocation).
    Upgrade {
        #[command(flatten)]
        targets: Targets,
        /// The version to install (default: the newest published).
        #[arg(long)]
        version: Option<String>,
    },
    /// Undo upgrades (Cloud Eye ROLLBACK): of the given invocations, or each chosen
    /// desktop's newest UPDATE invocation.
    Rollback {
        #[command(flatten)]
        targets: Targets,
        /// An UPDATE invocation to undo; repeatable.
        #[arg(long = "invocation", value_name = "ID")]
        invocations: Vec<String>,
    },
    /// Remove the agent from desktops (an UNINSTALL invocation).
    Uninstall {
        #[command(flatten)]
        targets: Targets,
    },
    /// Follow, retry and cancel jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// List sub-jobs (one per desktop of a job).
    SubJobs {
        /// Only the sub-jobs of this job.
        #[arg(long)]
        job: Option<String>,
        /// Only sub-jobs in this status (WAITING, RUNNING, SUCCESS, FAILED); repeatable.
        #[arg(long)]
        status: Vec<String>,
    },
    /// List and show desktops.
    #[command(subcommand)]
    Desktops(DesktopsCommand),
    /// The agent of each desktop: install condition and Cloud Eye status.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Agent invocations (Cloud Eye tasks: install, upgrade, rollback, uninstall).
    #[command(subcommand)]
    Invocations(InvocationsCommand),
    /// A metric of one desktop over time (Cloud Eye metric data, namespace AGT.ECS).
    Metrics(MetricsArgs),
    /// The published versions of the monitoring agent.
    #[command(subcommand)]
    Packages(PackagesCommand),
    /// Tokens with which guests enroll desktops.
    #[command(subcommand)]
    EnrollmentTokens(EnrollmentTokensCommand),
    /// Write a profile of the config file: endpoint, project, keys, CA, timeout, output.
    Configure {
        /// Print the config file's path and the profile's settings (keys hidden) instead.
        #[arg(long)]
        show: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// Which desktops a command acts on: ids or names, and/or a selection.
#[derive(Args, Clone, Default)]
pub struct Targets {
    /// Desktop ids or computer names.
    #[arg(value_name = "DESKTOP")]
    pub desktops: Vec<String>,
    /// Every desktop of the project.
    #[arg(long)]
    pub all: bool,
    /// Desktops carrying this tag (KEY=VALUE, or KEY for any value); repeatable, all must match.
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: Vec<String>,
    /// Read desktop ids or names from a file, one a line (`-` for stdin; `#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct WaitArgs {
    /// Follow the jobs until they end: progress on stderr, then a summary; exit 3 if any
    /// desktop failed.
    #[arg(long)]
    pub wait: bool,
    /// Milliseconds between two looks at the jobs while waiting.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub poll_ms: u64,
}

#[derive(Subcommand)]
pub enum PackagesCommand {
    /// Every published version, newest first, and the one installs take by default.
    List,
}

#[derive(Subcommand)]
pub enum EnrollmentTokensCommand {
    /// Make a token; prints it once (the server keeps only its hash) with the guest's
    /// command line.
    Create {
        /// Bind the token to this imported desktop (id or computer name): the guest that
        /// presents it becomes that desktop. Without it, the token enrolls new desktops.
        #[arg(long)]
        desktop: Option<String>,
        /// Hours the token stays valid (default: the server's setting).
        #[arg(long)]
        ttl_hours: Option<u64>,
    },
    /// Take a token back, read from FILE (`-` for stdin) so that it stays off the
    /// command line (any local user can read command lines).
    Revoke {
        /// File holding the token, as it was created.
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// Show a job with its sub-jobs.
    Show {
        /// The job's id.
        job_id: String,
    },
    /// Follow running jobs to their end, like `install --wait`.
    Wait {
        /// The jobs' ids.
        #[arg(required = true)]
        job_ids: Vec<String>,
        /// Milliseconds between two looks at the jobs.
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        poll_ms: u64,
    },
    /// Send the failed sub-jobs of a job again; says which desktops were retried.
    Retry {
        /// The job's id.
        job_id: String,
    },
    /// Cancel the sub-jobs of a job not yet delivered; says which were cancelled.
    Cancel {
        /// The job's id.
        job_id: String,
    },
}

#[derive(Subcommand)]
pub enum DesktopsCommand {
    /// List the project's desktops, with connection state and tags.
    List {
        /// Only desktops whose computer name contains this.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show one desktop (by id or computer name).
    Show {
        /// Desktop id or computer name.
        desktop: String,
    },
}

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// The agent install condition of each desktop (Workspace ListAgents).
    List {
        /// Only desktops with (true) or without (false) the agent.
        #[arg(long)]
        installed: Option<bool>,
    },
    /// Cloud Eye agent status (ListAgentStatus) of desktops.
    Status {
        #[command(flatten)]
        targets: Targets,
        /// Only this agent status: none, running, stopped, fault, unknown.
        #[arg(long)]
        status: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum InvocationsCommand {
    /// List invocations, newest first, with their result message.
    List {
        /// Only those of this desktop (id or name).
        #[arg(long)]
        desktop: Option<String>,
        /// Only this invocation.
        #[arg(long)]
        id: Option<String>,
        /// Only this type: INSTALL, UPDATE, ROLLBACK, UNINSTALL, RETRY.
        #[arg(long = "type")]
        invocation_type: Option<String>,
        /// At most this many (1..=100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Run failed or timed-out invocations again (Cloud Eye RETRY).
    Retry {
        /// The invocations' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Args)]
pub struct MetricsArgs {
    /// Desktop id or computer name.
    pub desktop: String,
    /// Metric name, e.g. cpu_usage, mem_usedPercent, disk_usedPercent.
    #[arg(long, default_value = "cpu_usage")]
    pub metric: String,
    /// Seconds per point: 1 (raw), 60, 300, 1200, 3600, 14400, 86400.
    #[arg(long, default_value_t = 300)]
    pub period: u32,
    /// Statistic per point: average, max, min, sum, variance.
    #[arg(long, default_value = "average")]
    pub filter: String,
    /// How far back: a number with s, m, h or d (e.g. 90m, 2h, 7d).
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Namespace of the metric.
    #[arg(long, default_value = "AGT.ECS")]
    pub namespace: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and every flag (but clap's own help and version) says what it does.
    #[test]
    fn every_command_and_flag_has_a_sentence_of_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(format!("{here}: command"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg
                    .get_help()
                    .is_none_or(|h| h.to_string().trim().is_empty())
                {
                    missing.push(format!("{here}: {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &here, missing);
                }
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = vec![];
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "no help for: {missing:#?}");
    }
}
