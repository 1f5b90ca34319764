//! What each command does: one function per command, returning the exit code.

use crate::args::{
    AgentsCommand, Cli, Command, DesktopsCommand, EnrollmentTokensCommand, InvocationsCommand,
    JobCommand, MetricsArgs, PackagesCommand, Targets, WaitArgs,
};
use crate::config;
use crate::exit::{self, usage};
use crate::follow;
use crate::output::{Output, View};
use crate::query::Query;
use crate::targets::{self, BATCH};
use anyhow::Context;
use clap::CommandFactory;
use deskfleet_client::{
    AgentStatusQuery, CesRequest, Client, ClientOptions, Credentials, InvocationQuery, MetricQuery,
};
use deskfleet_proto::workspace::JobInfo;
use serde_json::{Value, json};
use std::time::Duration;

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let global = cli.global;
    // Commands that need no server and no profile.
    match &cli.command {
        Command::Completion { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "deskfleet", &mut out);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &out)?;
            return Ok(exit::OK);
        }
        Command::Configure { show } => {
            let text = config::configure(&global, *show)?;
            println_out(&text)?;
            return Ok(exit::OK);
        }
        _ => {}
    }
    let (_, profile) = config::profile(&global)?;
    let query = global.query.as_deref().map(Query::parse).transpose()?;
    let out = Output::new(config::format(&global, &profile), query);
    let settings = config::settings(&global, &profile)?;
    exit::set_timeout(settings.timeout.as_secs());
    let client = client(&settings)?;
    match cli.command {
        Command::Install { targets, wait } => install(&client, &out, &targets, &wait).await,
        Command::Upgrade { targets, version } => {
            invoke(&client, &out, "UPDATE", &targets, version.as_deref()).await
        }
        Command::Rollback {
            targets,
            invocations,
        } => rollback(&client, &out, &targets, invocations).await,
        Command::Invocations(InvocationsCommand::Retry { ids }) => {
            let mut answer = act_on_invocations(&client, "RETRY", &ids).await?;
            name_desktops(&client, &mut answer).await?;
            report_invocations(&out, "RETRY", answer)
        }
        Command::Uninstall { targets } => invoke(&client, &out, "UNINSTALL", &targets, None).await,
        Command::Job(JobCommand::Show { job_id }) => {
            let job = client.show_job(&job_id).await?;
            out.emit(&serde_json::to_value(&job)?, job_view())?;
            Ok(exit::OK)
        }
        Command::Job(JobCommand::Wait { job_ids, poll_ms }) => {
            wait_jobs(&client, &out, &job_ids, poll_ms).await
        }
        Command::Job(JobCommand::Retry { job_id }) => {
            job_action(&client, &out, &job_id, "retry").await
        }
        Command::Job(JobCommand::Cancel { job_id }) => {
            job_action(&client, &out, &job_id, "cancel").await
        }
        Command::SubJobs { job, status } => {
            let mut q: Vec<(String, String)> =
                status.into_iter().map(|s| ("status".into(), s)).collect();
            if let Some(job) = job {
                q.push(("job_id".into(), job));
            }
            let list = client.list_sub_jobs(&q).await?;
            out.emit(
                &serde_json::to_value(&list)?,
                View::Table {
                    rows: "jobs",
                    columns: SUB_JOB_COLUMNS,
                },
            )?;
            Ok(exit::OK)
        }
        Command::Desktops(DesktopsCommand::List { name }) => {
            let mut all = targets::list_all(&client).await?;
            if let Some(name) = name {
                all.retain(|d| d.computer_name.contains(&name));
            }
            let doc = json!({"total_count": all.len(), "desktops": all});
            out.emit(
                &doc,
                View::Table {
                    rows: "desktops",
                    columns: &[
                        ("ID", "desktop_id"),
                        ("NAME", "computer_name"),
                        ("ADDRESS", "ip_address"),
                        ("CONNECTION", "connection.state"),
                        ("LAST SEEN", "connection.last_seen_at"),
                        ("TAGS", "tags"),
                    ],
                },
            )?;
            Ok(exit::OK)
        }
        Command::Desktops(DesktopsCommand::Show { desktop }) => {
            let id = desktop_id(&client, &desktop).await?;
            let d = client.show_desktop(&id).await?;
            out.emit(&serde_json::to_value(&d)?, View::DetailAt("desktop"))?;
            Ok(exit::OK)
        }
        Command::Agents(AgentsCommand::List { installed }) => {
            let mut q: Vec<(String, String)> = installed
                .map(|i| ("is_installed".to_string(), i.to_string()))
                .into_iter()
                .collect();
            q.push(("limit".into(), "1000".into()));
            let list = client.list_agents(&q).await?;
            out.emit(
                &serde_json::to_value(&list)?,
                View::Table {
                    rows: "agents_condition",
                    columns: &[
                        ("ID", "desktop_id"),
                        ("NAME", "desktop_name"),
                        ("INSTALLED", "agent_info.0.is_installed"),
                        ("VERSION", "agent_info.0.agent_version"),
                        ("TASK", "task_status"),
                        ("CONNECTION", "connection.state"),
                    ],
                },
            )?;
            Ok(exit::OK)
        }
        Command::Agents(AgentsCommand::Status { targets, status }) => {
            agent_status(&client, &out, &targets, status).await
        }
        Command::Invocations(InvocationsCommand::List {
            desktop,
            id,
            invocation_type,
            limit,
        }) => {
            let instance_id = match desktop {
                Some(d) => Some(desktop_id(&client, &d).await?),
                None => None,
            };
            let request = CesRequest::list_invocations(&InvocationQuery {
                instance_id,
                invocation_id: id,
                invocation_type,
                offset: None,
                limit: Some(limit),
            });
            let doc = client.ces(&request).await?;
            out.emit(
                &doc,
                View::Table {
                    rows: "invocations",
                    columns: &[
                        ("INVOCATION", "invocation_id"),
                        ("DESKTOP", "instance_name"),
                        ("TYPE", "invocation_type"),
                        ("STATUS", "invocation_status"),
                        ("FROM", "current_version"),
                        ("TO", "target_version"),
                        ("RESULT", "result_msg"),
                    ],
                },
            )?;
            Ok(exit::OK)
        }
        Command::Metrics(args) => metrics(&client, &out, args).await,
        Command::Packages(PackagesCommand::List) => {
            let listed = client.list_agent_packages().await?;
            out.emit(
                &listed,
                View::Table {
                    rows: "packages",
                    columns: &[
                        ("VERSION", "version"),
                        ("PLATFORM", "platform"),
                        ("PUBLISHED", "published_at"),
                        ("WITHDRAWN", "withdrawn_at"),
                        ("SIZE", "size"),
                        ("SHA256", "sha256"),
                    ],
                },
            )?;
            Ok(exit::OK)
        }
        Command::EnrollmentTokens(EnrollmentTokensCommand::Create { desktop, ttl_hours }) => {
            let desktop = match desktop {
                Some(d) => Some(desktop_id(&client, &d).await?),
                None => None,
            };
            let mut created = client
                .create_enrollment_token(desktop.as_deref(), ttl_hours)
                .await?;
            // What to run on the desktop, with the token in a file rather than on its
            // command line.
            created["guest_command"] = json!(format!(
                "deskfleet-guest --server {} --enrollment-token-file TOKEN_FILE \
                 --trusted-key /etc/deskfleet/package-signing.pub --state-dir /var/lib/deskfleet-guest",
                client.endpoint().as_str().trim_end_matches('/')
            ));
            out.emit(&created, View::Detail)?;
            Ok(exit::OK)
        }
        Command::EnrollmentTokens(EnrollmentTokensCommand::Revoke { from_file }) => {
            let lines = targets::read_list(&from_file)?;
            let [token] = lines.as_slice() else {
                return Err(usage(format!(
                    "--from-file {}: expected one token, found {} lines",
                    from_file.display(),
                    lines.len()
                )));
            };
            let revoked = client.revoke_enrollment_token(token).await?;
            out.emit(&revoked, View::Detail)?;
            Ok(exit::OK)
        }
        Command::Completion { .. } | Command::Configure { .. } => Ok(exit::OK),
    }
}

fn println_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

fn client(s: &config::Settings) -> anyhow::Result<Client> {
    let mut options = ClientOptions {
        allow_insecure_http: s.allow_insecure_http,
        connect_timeout: deskfleet_client::DEFAULT_CONNECT_TIMEOUT.min(s.timeout),
        timeout: s.timeout,
        retries: s.retries,
        ..ClientOptions::default()
    };
    if let Some(path) = &s.ca_cert {
        options = options.with_ca_file(path)?;
    }
    Ok(Client::with_options(
        &s.endpoint,
        &s.project_id,
        Credentials::AkSk {
            access_key: s.access_key.clone(),
            secret_key: s.secret_key.clone(),
        },
        &options,
    )?)
}

const SUB_JOB_COLUMNS: &[(&str, &str)] = &[
    ("SUB-JOB", "id"),
    ("DESKTOP", "entities.desktop_name"),
    ("DESKTOP ID", "entities.desktop_id"),
    ("STATUS", "status"),
    ("PROGRESS", "process"),
    ("CODE", "error_code"),
    ("REASON", "fail_reason"),
];

fn job_view() -> View {
    View::Table {
        rows: "sub_jobs",
        columns: SUB_JOB_COLUMNS,
    }
}

/// A desktop id from an id or a computer name.
async fn desktop_id(client: &Client, id_or_name: &str) -> anyhow::Result<String> {
    Ok(targets::one(client, id_or_name).await?.desktop_id)
}

/// `install`: one job per 100 desktops; the ids first, then (with `--wait`) progress
/// and the summary.
async fn install(
    client: &Client,
    out: &Output,
    targets: &Targets,
    wait: &WaitArgs,
) -> anyhow::Result<u8> {
    let chosen = targets::resolve(client, targets).await?;
    let ids: Vec<String> = chosen.into_iter().map(|d| d.desktop_id).collect();
    let batches: Vec<&[String]> = ids.chunks(BATCH).collect();
    let mut job_ids = vec![];
    for (i, batch) in batches.iter().enumerate() {
        let job = client
            .batch_install_agent(batch)
            .await
            .with_context(|| format!("creating job {} of {}", i + 1, batches.len()))?;
        // The id first, before anything can go wrong while waiting.
        if out.json() {
            eprintln!("job {}", job.job_id);
        } else {
            out.line(&job.job_id)?;
        }
        job_ids.push(job.job_id);
    }
    if !wait.wait {
        if out.json() {
            out.emit(
                &json!({"job_id": job_ids[0], "job_ids": job_ids, "desktops": ids.len()}),
                View::Detail,
            )?;
        }
        return Ok(exit::OK);
    }
    wait_jobs(client, out, &job_ids, wait.poll_ms).await
}

async fn wait_jobs(
    client: &Client,
    out: &Output,
    job_ids: &[String],
    poll_ms: u64,
) -> anyhow::Result<u8> {
    let jobs = follow::follow(client, job_ids, Duration::from_millis(poll_ms.max(50))).await?;
    let doc = follow::summary(&jobs);
    if out.json() || out.query.is_some() {
        out.emit(&doc, View::Detail)?;
    } else {
        out.emit(
            &doc,
            View::Text(vec![
                follow::summary_lines(&doc, out.color)
                    .trim_end()
                    .to_string(),
            ]),
        )?;
    }
    Ok(if doc["status"] == "SUCCESS" {
        exit::OK
    } else {
        exit::JOB_FAILED
    })
}

/// `job retry` / `job cancel`: the job before and after, and what changed in words.
async fn job_action(client: &Client, out: &Output, job_id: &str, op: &str) -> anyhow::Result<u8> {
    let before = client.show_job(job_id).await?;
    client.job_action(job_id, op).await?;
    let after = client.show_job(job_id).await?;
    let (from, verb) = match op {
        "retry" => (&["FAILED"][..], "retried"),
        _ => (&["WAITING"][..], "cancelled"),
    };
    let changed: Vec<Value> = changes(&before, &after, from, op == "cancel");
    let mut lines = vec![];
    if changed.is_empty() {
        lines.push(match op {
            "retry" => format!("nothing to retry: job {job_id} has no failed sub-job"),
            _ => format!("nothing to cancel: job {job_id} has no sub-job waiting to be delivered"),
        });
    } else {
        lines.push(format!(
            "{} {} sub-job{} of job {job_id}:",
            verb,
            changed.len(),
            if changed.len() == 1 { "" } else { "s" }
        ));
        for c in &changed {
            lines.push(format!(
                "  {} ({}): {} -> {}",
                c["desktop_name"].as_str().unwrap_or("-"),
                c["desktop_id"].as_str().unwrap_or("-"),
                c["from"].as_str().unwrap_or("-"),
                c["to"].as_str().unwrap_or("-"),
            ));
        }
    }
    lines.push(format!("job {job_id} is now {}", after.status));
    let doc = json!({"job_id": job_id, "action": op, "changed": changed, "status": after.status});
    out.emit(&doc, View::Text(lines))?;
    Ok(exit::OK)
}

/// Sub-jobs that were in one of `from` before and are not any more (for a cancel: that
/// are now failed, as a cancel leaves them).
fn changes(before: &JobInfo, after: &JobInfo, from: &[&str], to_failed: bool) -> Vec<Value> {
    before
        .sub_jobs
        .iter()
        .filter(|b| from.contains(&b.status.as_str()))
        .filter_map(|b| {
            let a = after.sub_jobs.iter().find(|a| a.id == b.id)?;
            let moved = a.status != b.status && (!to_failed || a.status == "FAILED");
            moved.then(|| {
                json!({
                    "sub_job_id": b.id,
                    "desktop_id": b.entities.desktop_id,
                    "desktop_name": b.entities.desktop_name,
                    "from": b.status,
                    "to": a.status,
                })
            })
        })
        .collect()
}

/// `upgrade`, `rollback`, `uninstall`: Cloud Eye invocations, 100 desktops a call.
async fn invoke(
    client: &Client,
    out: &Output,
    kind: &str,
    targets: &Targets,
    version: Option<&str>,
) -> anyhow::Result<u8> {
    let chosen = targets::resolve(client, targets).await?;
    let names: std::collections::HashMap<String, String> = chosen
        .iter()
        .map(|d| (d.desktop_id.clone(), d.computer_name.clone()))
        .collect();
    let ids: Vec<String> = chosen.into_iter().map(|d| d.desktop_id).collect();
    let mut entries: Vec<Value> = vec![];
    for batch in ids.chunks(BATCH) {
        let request = CesRequest::create_invocations(kind, batch, version);
        let answer = client.ces(&request).await?;
        for mut e in answer["invocations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(name) = e["instance_id"].as_str().and_then(|id| names.get(id)) {
                e["instance_name"] = name.clone().into();
            }
            entries.push(e);
        }
    }
    report_invocations(out, kind, entries)
}

/// RETRY or ROLLBACK of existing invocations, 100 a call.
async fn act_on_invocations(
    client: &Client,
    kind: &str,
    ids: &[String],
) -> anyhow::Result<Vec<Value>> {
    let mut entries = vec![];
    for batch in ids.chunks(BATCH) {
        let answer = client
            .ces(&CesRequest::act_on_invocations(kind, batch))
            .await?;
        entries.extend(
            answer["invocations"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    Ok(entries)
}

/// Adds `instance_name` to the entries of a RETRY or ROLLBACK answer (which name only the
/// desktop's id), listing the project's desktops once if any entry needs it.
async fn name_desktops(client: &Client, entries: &mut [Value]) -> anyhow::Result<()> {
    if !entries
        .iter()
        .any(|e| e["instance_id"].is_string() && e["instance_name"].is_null())
    {
        return Ok(());
    }
    let names: std::collections::HashMap<String, String> = targets::list_all(client)
        .await?
        .into_iter()
        .map(|d| (d.desktop_id, d.computer_name))
        .collect();
    for e in entries.iter_mut() {
        if let Some(name) = e["instance_id"].as_str().and_then(|id| names.get(id)) {
            e["instance_name"] = name.clone().into();
        }
    }
    Ok(())
}

/// `rollback`: the invocations given, and for each chosen desktop its newest UPDATE
/// invocation (a desktop without one is reported, not sent).
async fn rollback(
    client: &Client,
    out: &Output,
    targets: &Targets,
    mut invocations: Vec<String>,
) -> anyhow::Result<u8> {
    let mut local_errors = vec![];
    let chosen_any = !targets.desktops.is_empty()
        || targets.all
        || !targets.tag.is_empty()
        || targets.from_file.is_some();
    if chosen_any {
        for d in targets::resolve(client, targets).await? {
            let list = client
                .ces(&CesRequest::list_invocations(&InvocationQuery {
                    instance_id: Some(d.desktop_id.clone()),
                    invocation_type: Some("UPDATE".into()),
                    limit: Some(100),
                    ..InvocationQuery::default()
                }))
                .await?;
            let newest = list["invocations"]
                .as_array()
                .into_iter()
                .flatten()
                .max_by_key(|i| i["create_time"].as_i64().unwrap_or_default());
            match newest.and_then(|i| i["invocation_id"].as_str()) {
                Some(id) => invocations.push(id.to_string()),
                None => local_errors.push(json!({
                    "instance_id": d.desktop_id,
                    "instance_name": d.computer_name,
                    "ret_status": "error",
                    "error_msg": "no UPDATE invocation to roll back on this desktop",
                })),
            }
        }
    } else if invocations.is_empty() {
        return Err(usage(
            "nothing to roll back: give --invocation ID, or desktops (ids, names, --all, --tag, --from-file)",
        ));
    }
    let mut entries = act_on_invocations(client, "ROLLBACK", &invocations).await?;
    name_desktops(client, &mut entries).await?;
    entries.extend(local_errors);
    report_invocations(out, "ROLLBACK", entries)
}

/// The per-target results of a batch-create; exit 3 when any target was refused.
fn report_invocations(out: &Output, kind: &str, entries: Vec<Value>) -> anyhow::Result<u8> {
    let failed = entries
        .iter()
        .filter(|e| e["ret_status"] != "successful")
        .count();
    let doc = json!({"invocation_type": kind, "invocations": entries});
    out.emit(
        &doc,
        View::Table {
            rows: "invocations",
            columns: &[
                ("DESKTOP", "instance_name"),
                ("DESKTOP ID", "instance_id"),
                ("INVOCATION", "invocation_id"),
                ("RESULT", "ret_status"),
                ("CODE", "error_code"),
                ("MESSAGE", "error_msg"),
            ],
        },
    )?;
    Ok(if failed == 0 {
        exit::OK
    } else {
        exit::JOB_FAILED
    })
}

async fn agent_status(
    client: &Client,
    out: &Output,
    targets: &Targets,
    status: Option<String>,
) -> anyhow::Result<u8> {
    let chosen = targets::resolve(client, targets).await?;
    let names: std::collections::HashMap<String, String> = chosen
        .iter()
        .map(|d| (d.desktop_id.clone(), d.computer_name.clone()))
        .collect();
    let ids: Vec<String> = chosen.into_iter().map(|d| d.desktop_id).collect();
    let mut rows = vec![];
    // The API takes up to 2,000 ids a call.
    for batch in ids.chunks(2000) {
        let request = CesRequest::agent_status(&AgentStatusQuery {
            instance_ids: batch.to_vec(),
            uniagent_status: None,
            extension_status: status.clone(),
        });
        let answer = client.ces(&request).await?;
        for mut e in answer["agent_status"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(name) = e["instance_id"].as_str().and_then(|id| names.get(id)) {
                e["instance_name"] = name.clone().into();
            }
            rows.push(e);
        }
    }
    out.emit(
        &json!({"agent_status": rows}),
        View::Table {
            rows: "agent_status",
            columns: &[
                ("DESKTOP", "instance_name"),
                ("DESKTOP ID", "instance_id"),
                ("UNIAGENT", "uniagent_status"),
                ("AGENT", "extensions.0.status"),
                ("VERSION", "extensions.0.version"),
            ],
        },
    )?;
    Ok(exit::OK)
}

/// `90s`, `15m`, `2h`, `7d` in milliseconds.
pub fn parse_since(text: &str) -> anyhow::Result<i64> {
    let bad = || {
        usage(format!(
            "--since {text:?}: give a number with s, m, h or d (e.g. 90m)"
        ))
    };
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(bad());
    }
    Ok(n * secs * 1000)
}

async fn metrics(client: &Client, out: &Output, args: MetricsArgs) -> anyhow::Result<u8> {
    let id = desktop_id(client, &args.desktop).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let request = CesRequest::metric_data(&MetricQuery {
        namespace: args.namespace,
        metric_name: args.metric,
        dimensions: vec![("instance_id".into(), id)],
        filter: args.filter.clone(),
        period: args.period,
        from_ms: now - parse_since(&args.since)?,
        to_ms: now,
    });
    let mut doc = client.ces(&request).await?;
    // A column per statistic would be empty but one: show the asked one as VALUE.
    if let Some(points) = doc["datapoints"].as_array_mut() {
        for p in points {
            p["value"] = p[args.filter.as_str()].clone();
        }
    }
    out.emit(
        &doc,
        View::Table {
            rows: "datapoints",
            columns: &[
                ("TIMESTAMP", "timestamp"),
                ("VALUE", "value"),
                ("UNIT", "unit"),
            ],
        },
    )?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_since() {
        assert_eq!(parse_since("90s").unwrap(), 90_000);
        assert_eq!(parse_since("2h").unwrap(), 7_200_000);
        assert_eq!(parse_since("7d").unwrap(), 604_800_000);
        for bad in ["", "h", "10", "-1h", "0m", "3w"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
