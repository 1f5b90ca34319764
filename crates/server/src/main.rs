//! `deskfleet-server`: runs the server, or an admin command on its database.

/// The server allocates and frees across threads all the time (a request's values are
/// built on a runtime worker and dropped on the SQLite writer's thread, and the other way
/// round); mimalloc does that without the arena locks of the system allocator
/// (`bench/api/RESULTS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use deskfleet_core::clock::{Clock, SystemClock};
use deskfleet_core::model::Role;
use deskfleet_server::auth::policy::Denial;
use deskfleet_server::settings::{self, Settings};
use deskfleet_server::{Application, wire};
use deskfleet_server::{admin, audit, auth};
use figment::providers::Serialized;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "deskfleet-server", version, about = "The deskfleet server")]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// A TOML settings file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The server's certificate chain (PEM, leaf first), instead of one issued by the
    /// data directory's own CA; with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct DbArgs {
    /// Data directory (embedded SQLite database, bootstrap.json, listen.addr).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// `postgres://...` to use PostgreSQL instead of the embedded SQLite.
    #[arg(long, global = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Operator commands on the database.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The settings in force.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective settings (defaults < file < environment < flags) as JSON, with
    /// secrets redacted.
    Show,
}

#[derive(Subcommand)]
enum AdminCommand {
    #[command(subcommand)]
    Projects(ProjectsCommand),
    #[command(subcommand)]
    Users(UsersCommand),
    #[command(subcommand, name = "access-keys")]
    AccessKeys(AccessKeysCommand),
    #[command(subcommand)]
    Desktops(DesktopsCommand),
    #[command(subcommand, name = "enrollment-tokens")]
    EnrollmentTokens(EnrollmentTokensCommand),
    #[command(subcommand)]
    Packages(PackagesCommand),
    /// The audit trail: verify its chain and seals, export it, seal its head.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Decode the `encoded_authorization_message` of a 403 answer.
    DecodeAuthorizationMessage { message: String },
    /// Copy the SQLite database, consistently, while the server runs (mode 0600).
    Backup {
        /// The new file to write; an existing file is never overwritten.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the whole chain and check the seals; names the first trace altered, deleted
    /// or inserted and every seal that does not hold. Exit status 1 if anything is wrong.
    Verify {
        /// A trusted public seal key (64 hex); repeatable. Default: DATA_DIR/trace-seal.pub.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
    },
    /// Write the traces as JSON lines (each with seq, prev_hash, hash) to stdout.
    Export {
        /// Only traces after this time (epoch ms or RFC 3339), exclusive.
        #[arg(long)]
        from: Option<String>,
        /// Only traces before this time (epoch ms or RFC 3339), exclusive.
        #[arg(long)]
        to: Option<String>,
    },
    /// Seal the head of the chain now (the server does so every audit.seal_interval_secs).
    Seal,
}

#[derive(Subcommand)]
enum ProjectsCommand {
    /// Create a project; prints it as JSON.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "deskfleet")]
        domain: String,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user with a role on a project; prints the user and its password as JSON.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        project: String,
        /// admin or readonly
        #[arg(long)]
        role: Role,
        /// Generated when omitted.
        #[arg(long, env = "DESKFLEET_NEW_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long, default_value = "deskfleet")]
        domain: String,
    },
    /// Give an existing user a role on a project.
    Grant {
        #[arg(long)]
        name: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        role: Role,
        #[arg(long, default_value = "deskfleet")]
        domain: String,
    },
    /// Disable a user: its logins, keys and tokens stop working (within about 1 s on
    /// every running server).
    Disable(UserArgs),
    /// Enable a disabled user again.
    Enable(UserArgs),
    /// Revoke every token of a user.
    RevokeTokens(UserArgs),
    /// Lift the lock that wrong passwords put on a user.
    Unlock(UserArgs),
}

#[derive(Args)]
struct UserArgs {
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "deskfleet")]
    domain: String,
}

#[derive(Subcommand)]
enum AccessKeysCommand {
    /// Create an AK/SK pair for a user on a project; prints it as JSON.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        project: String,
        #[arg(long, default_value = "deskfleet")]
        domain: String,
    },
    /// Delete an access key; it then answers like an unknown key.
    Delete { access_key: String },
    /// Lift the lock that bad signatures put on an access key.
    Unlock { access_key: String },
}

#[derive(Subcommand)]
enum DesktopsCommand {
    /// Register desktops from a JSON array; prints the created desktops as JSON.
    Import {
        #[arg(long)]
        project: String,
        file: PathBuf,
    },
    /// Delete a desktop with its credential, metrics and sub-jobs.
    Delete {
        #[arg(long)]
        project: String,
        desktop_id: String,
    },
}

#[derive(Subcommand)]
enum EnrollmentTokensCommand {
    /// Create a project-scoped enrollment token for desktop guests; prints it as JSON.
    Create {
        #[arg(long)]
        project: String,
        /// Lifetime; default `fleet.enrollment_token_ttl_hours` (30 days).
        #[arg(long)]
        ttl_hours: Option<u64>,
        /// Bind the token to this imported desktop: it claims that desktop, once, and
        /// nothing else. Without it the token only enrolls new desktops.
        #[arg(long)]
        desktop: Option<String>,
    },
    /// Revoke an enrollment token (given as printed by `create`).
    Revoke {
        /// Read from the environment so that it stays out of the process list.
        #[arg(long, env = "DESKFLEET_ENROLLMENT_TOKEN", hide_env_values = true)]
        token: String,
    },
}

#[derive(Subcommand)]
enum PackagesCommand {
    /// Publish an agent package (a tar.gz with the binary and manifest.json, or a bare
    /// binary with --binary, packaged here), signed with the data directory's
    /// package-signing key (or --signing-key); prints it as JSON. A version that is
    /// already published is refused.
    Publish {
        /// A package archive (tar.gz with manifest.json); or use --binary.
        #[arg(required_unless_present = "binary", conflicts_with = "binary")]
        file: Option<PathBuf>,
        /// The agent's executable: the archive and its manifest are built from it.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        #[arg(long, default_value = "deskfleet-monitor")]
        name: String,
        #[arg(long)]
        version: String,
        /// e.g. linux-x86_64 (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        /// Hex ed25519 seed file; default DATA_DIR/package-signing.key.
        #[arg(long)]
        signing_key: Option<PathBuf>,
    },
    /// Every published version, newest first: version, platform, size, sha256, when it
    /// was published and withdrawn; as JSON.
    List {
        #[arg(long, default_value = "deskfleet-monitor")]
        name: String,
    },
    /// Stop offering a version for installs and upgrades (it stays downloadable for
    /// rollbacks).
    Withdraw {
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "deskfleet-monitor")]
        name: String,
    },
    /// Offer a withdrawn version again.
    Restore {
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "deskfleet-monitor")]
        name: String,
    },
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut flags = serde_json::Map::new();
    if let Some(dir) = &cli.db.data_dir {
        flags.insert("data_dir".into(), serde_json::json!(dir));
    }
    if let Some(url) = &cli.db.database_url {
        flags.insert("database_url".into(), serde_json::json!(url));
    }
    if let Some(listen) = &cli.listen {
        flags.insert("listen".into(), serde_json::json!(listen));
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        flags.insert(
            "tls".into(),
            serde_json::json!({"cert_file": cert, "key_file": key}),
        );
    }
    Settings::load(
        cli.config.as_deref(),
        Serialized::globals(serde_json::Value::Object(flags)),
    )
    .map_err(|e| anyhow::anyhow!("invalid settings: {}", settings::explain(&e)))
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run_admin(settings: Settings, command: AdminCommand, path: String) -> anyhow::Result<()> {
    if let AdminCommand::DecodeAuthorizationMessage { message } = &command {
        let denial = Denial::decode(message).map_err(anyhow::Error::msg)?;
        return print_json(&denial);
    }
    if let AdminCommand::Backup { to } = &command {
        let bytes = deskfleet_store::backup(&settings.effective_database_url(), to)
            .await
            .context("backing up the database")?;
        return print_json(&serde_json::json!({"backup": to, "bytes": bytes}));
    }
    if settings.database_url.is_none() {
        auth::files::prepare_data_dir(&settings)?;
    }
    let store = deskfleet_store::connect(&settings.effective_database_url())
        .await
        .context("opening the database")?;
    let keyring = auth::keyring::open_keyring(&settings, store.as_ref()).await?;
    let store = store.as_ref();
    let now = SystemClock.now();
    if let AdminCommand::Audit(audit) = command {
        return run_audit(&settings, &keyring, store, audit, now).await;
    }
    let Some(scope) = audit::admin::scope(&path, now) else {
        return run_change(store, &keyring, command, &settings, now).await;
    };
    let outcome = scope
        .run(run_change(store, &keyring, command, &settings, now))
        .await;
    audit::admin::finish(store, &scope, &outcome, now).await?;
    outcome
}

/// The path of an admin command below `admin` (`users create`), from the parsed
/// arguments, so that it is always the command tree's own name.
fn admin_path(matches: &clap::ArgMatches) -> Option<String> {
    let (name, admin) = matches.subcommand()?;
    if name != "admin" {
        return None;
    }
    let (first, sub) = admin.subcommand()?;
    Some(match sub.subcommand_name() {
        Some(second) => format!("{first} {second}"),
        None => first.to_owned(),
    })
}

/// A time argument: epoch milliseconds or RFC 3339.
fn time_arg(v: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| anyhow::anyhow!("{v:?} is neither epoch milliseconds nor an RFC 3339 time"))
}

async fn run_audit(
    settings: &Settings,
    keyring: &auth::keyring::Keyring,
    store: &dyn deskfleet_core::store::Store,
    command: AuditCommand,
    now: i64,
) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { public_keys } => {
            let mut trusted = Vec::new();
            for k in &public_keys {
                let bytes: [u8; 32] = hex::decode(k.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| anyhow::anyhow!("--public-key must be 64 hex characters"))?;
                trusted.push(ed25519_dalek::VerifyingKey::from_bytes(&bytes)?);
            }
            if trusted.is_empty() {
                let path = settings.data_dir.join(audit::seal::SEAL_PUBLIC_FILE);
                trusted.push(
                    deskfleet_server::fleet::packages::read_public_key(&path).with_context(
                        || "no --public-key given and no trace-seal.pub in the data directory",
                    )?,
                );
            }
            let report = audit::admin::verify(store, &trusted).await?;
            print_json(&report)?;
            if !report.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::Export { from, to } => {
            let from = from.as_deref().map(time_arg).transpose()?;
            let to = to.as_deref().map(time_arg).transpose()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            audit::export::export(store, from, to, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            Ok(())
        }
        AuditCommand::Seal => {
            let key = audit::seal::load_or_create_seal_key(settings, keyring)?;
            let seal = audit::seal::seal_head(store, &key, now).await?;
            print_json(&serde_json::json!({ "sealed": seal }))
        }
    }
}

async fn run_change(
    store: &dyn deskfleet_core::store::Store,
    keyring: &auth::keyring::Keyring,
    command: AdminCommand,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<()> {
    match command {
        AdminCommand::Projects(ProjectsCommand::Create { name, domain }) => {
            let p = admin::create_project(store, &domain, &name).await?;
            print_json(
                &serde_json::json!({"project_id": p.id, "name": p.name, "domain_name": p.domain.name}),
            )
        }
        AdminCommand::Users(UsersCommand::Create {
            name,
            project,
            role,
            password,
            domain,
        }) => {
            let project = admin::find_project(store, &project).await?;
            let (user, password) = admin::create_user(store, &domain, &name, password).await?;
            store.grant_role(&user.id, &project.id, role).await?;
            print_json(&serde_json::json!({
                "user_id": user.id, "user_name": user.name, "domain_name": user.domain.name,
                "password": password, "project_id": project.id, "role": role,
            }))
        }
        AdminCommand::Users(UsersCommand::Grant {
            name,
            project,
            role,
            domain,
        }) => {
            let project = admin::find_project(store, &project).await?;
            let user = admin::find_user(store, &domain, &name).await?;
            store.grant_role(&user.id, &project.id, role).await?;
            print_json(
                &serde_json::json!({"user_name": user.name, "project_id": project.id, "role": role}),
            )
        }
        AdminCommand::AccessKeys(AccessKeysCommand::Create {
            user,
            project,
            domain,
        }) => {
            let project = admin::find_project(store, &project).await?;
            let user = admin::find_user(store, &domain, &user).await?;
            let (ak, sk) =
                admin::create_access_key(store, keyring, &user.id, &project.id, now).await?;
            print_json(&serde_json::json!({
                "access_key": ak, "secret_key": sk, "user_name": user.name, "project_id": project.id,
            }))
        }
        AdminCommand::Desktops(DesktopsCommand::Import { project, file }) => {
            let project = admin::find_project(store, &project).await?;
            let json =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let desktops = admin::import_desktops(store, &project.id, &json, now).await?;
            print_json(
                &desktops
                    .into_iter()
                    .map(|d| {
                        // Just imported: never connected, whatever the window.
                        let fresh = deskfleet_core::presence::Freshness {
                            now,
                            window_ms: deskfleet_core::presence::window_ms(
                                settings.fleet.heartbeat_secs,
                            ),
                        };
                        wire::simple_desktop(d, fresh)
                    })
                    .collect::<Vec<_>>(),
            )
        }
        AdminCommand::EnrollmentTokens(EnrollmentTokensCommand::Create {
            project,
            ttl_hours,
            desktop,
        }) => {
            let project = admin::find_project(store, &project).await?;
            let ttl = ttl_hours.unwrap_or(settings.fleet.enrollment_token_ttl_hours);
            let issued = admin::issue_enrollment_token(
                store,
                &settings.data_dir,
                &project.id,
                desktop.as_deref(),
                ttl,
                now,
            )
            .await?;
            let (token, expires_at) = (issued.token, issued.expires_at);
            print_json(&serde_json::json!({
                "enrollment_token": token, "project_id": project.id, "expires_at": wire::api_time(expires_at),
                "desktop_id": desktop,
            }))
        }
        AdminCommand::Packages(PackagesCommand::Publish {
            file,
            binary,
            name,
            version,
            platform,
            signing_key,
        }) => {
            let key = signing_key.unwrap_or_else(|| {
                settings
                    .data_dir
                    .join(deskfleet_server::fleet::packages::SIGNING_KEY_FILE)
            });
            let platform =
                platform.unwrap_or_else(deskfleet_server::fleet::packages::host_platform);
            let meta = match (file, binary) {
                (_, Some(binary)) => {
                    let bytes = std::fs::read(&binary)
                        .with_context(|| format!("reading --binary {}", binary.display()))?;
                    admin::publish_binary(store, &key, &name, &version, &platform, &bytes, now)
                        .await?
                }
                (Some(file), None) => {
                    let archive = std::fs::read(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    admin::publish_package(store, &key, &name, &version, &platform, &archive, now)
                        .await?
                }
                (None, None) => anyhow::bail!("give a package archive or --binary PATH"),
            };
            print_json(&serde_json::json!({
                "package_id": meta.id, "name": meta.name, "version": meta.version, "platform": meta.platform,
                "size": meta.size, "sha256": meta.sha256, "signature": meta.signature,
            }))
        }
        AdminCommand::Packages(PackagesCommand::List { name }) => {
            let packages = admin::list_packages(store, &name).await?;
            print_json(
                &packages
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "package_id": p.id, "name": p.name, "version": p.version,
                            "platform": p.platform, "size": p.size, "sha256": p.sha256,
                            "published_at": wire::api_time(p.created_at),
                            "withdrawn_at": p.withdrawn_at.map(wire::api_time),
                        })
                    })
                    .collect::<Vec<_>>(),
            )
        }
        AdminCommand::Packages(PackagesCommand::Withdraw { version, name }) => {
            let n = admin::set_package_withdrawn(store, &name, &version, Some(now)).await?;
            print_json(&serde_json::json!({
                "name": name, "version": version, "withdrawn": true, "packages": n,
            }))
        }
        AdminCommand::Packages(PackagesCommand::Restore { version, name }) => {
            let n = admin::set_package_withdrawn(store, &name, &version, None).await?;
            print_json(&serde_json::json!({
                "name": name, "version": version, "withdrawn": false, "packages": n,
            }))
        }
        AdminCommand::AccessKeys(AccessKeysCommand::Delete { access_key }) => {
            admin::delete_access_key(store, &access_key).await?;
            print_json(&serde_json::json!({"access_key": access_key, "deleted": true}))
        }
        AdminCommand::AccessKeys(AccessKeysCommand::Unlock { access_key }) => {
            let was_locked = admin::unlock_access_key(store, &access_key).await?;
            print_json(&serde_json::json!({"access_key": access_key, "unlocked": was_locked}))
        }
        AdminCommand::Users(UsersCommand::Disable(u)) => {
            let user = admin::find_user(store, &u.domain, &u.name).await?;
            admin::set_user_disabled(store, &user, true).await?;
            print_json(
                &serde_json::json!({"user_name": user.name, "user_id": user.id, "disabled": true}),
            )
        }
        AdminCommand::Users(UsersCommand::Enable(u)) => {
            let user = admin::find_user(store, &u.domain, &u.name).await?;
            admin::set_user_disabled(store, &user, false).await?;
            print_json(
                &serde_json::json!({"user_name": user.name, "user_id": user.id, "disabled": false}),
            )
        }
        AdminCommand::Users(UsersCommand::RevokeTokens(u)) => {
            let user = admin::find_user(store, &u.domain, &u.name).await?;
            let n = admin::revoke_user_tokens(store, &user).await?;
            print_json(
                &serde_json::json!({"user_name": user.name, "user_id": user.id, "revoked_tokens": n}),
            )
        }
        AdminCommand::Users(UsersCommand::Unlock(u)) => {
            let user = admin::find_user(store, &u.domain, &u.name).await?;
            let was_locked = admin::unlock_user(store, &user).await?;
            print_json(
                &serde_json::json!({"user_name": user.name, "user_id": user.id, "unlocked": was_locked}),
            )
        }
        AdminCommand::EnrollmentTokens(EnrollmentTokensCommand::Revoke { token }) => {
            admin::revoke_enrollment_token(store, &token).await?;
            print_json(&serde_json::json!({"revoked": true}))
        }
        AdminCommand::Desktops(DesktopsCommand::Delete {
            project,
            desktop_id,
        }) => {
            let project = admin::find_project(store, &project).await?;
            admin::delete_desktop(store, &project.id, &desktop_id, now).await?;
            print_json(
                &serde_json::json!({"desktop_id": desktop_id, "project_id": project.id, "deleted": true}),
            )
        }
        AdminCommand::DecodeAuthorizationMessage { .. }
        | AdminCommand::Backup { .. }
        | AdminCommand::Audit(_) => Ok(()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before anything is created: every file and directory of this process is private.
    auth::files::restrict_umask();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let path = admin_path(&matches).unwrap_or_default();
    let settings = settings(&cli)?;
    deskfleet_server::observe::init_logging(&settings.log);
    match cli.command {
        Some(Command::Admin(command)) => return run_admin(settings, command, path).await,
        Some(Command::Config(ConfigCommand::Show)) => return print_json(&settings.redacted()),
        None => {}
    }
    // Before anything is measured, so that nothing recorded while building is lost.
    deskfleet_server::observe::prometheus();

    let app = Application::build(settings).await?;
    if let Some(b) = &app.bootstrap {
        println!(
            "deskfleet: first start; created these credentials (shown once, also in {}):",
            app.state()
                .settings
                .data_dir
                .join("bootstrap.json")
                .display()
        );
        print_json(b)?;
    }
    println!("deskfleet-server listening on {}", app.endpoint());

    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
    });
    app.run(shutdown).await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use deskfleet_server::audit::catalog::{ADMIN, ADMIN_READ_ONLY};

    #[test]
    fn every_admin_command_that_writes_leaves_a_trace() {
        let cli = Cli::command();
        let admin = cli.find_subcommand("admin").expect("an admin command");
        let mut leaves = Vec::new();
        for c in admin.get_subcommands() {
            if c.has_subcommands() {
                for leaf in c.get_subcommands() {
                    leaves.push(format!("{} {}", c.get_name(), leaf.get_name()));
                }
            } else {
                leaves.push(c.get_name().to_owned());
            }
        }
        assert!(leaves.contains(&"users create".to_owned()), "{leaves:?}");
        let unknown: Vec<&String> = leaves
            .iter()
            .filter(|l| {
                !ADMIN.iter().any(|(p, _, _)| p == l)
                    && !ADMIN_READ_ONLY.iter().any(|(p, _)| p == l)
            })
            .collect();
        assert!(
            unknown.is_empty(),
            "admin commands neither traced nor listed as read-only: {unknown:?}"
        );
        for (p, _, _) in ADMIN {
            assert!(leaves.iter().any(|l| l == p), "{p} is not an admin command");
        }
    }

    #[test]
    fn the_admin_path_is_the_command_trees_own() {
        let m = Cli::command()
            .try_get_matches_from([
                "deskfleet-server",
                "admin",
                "users",
                "unlock",
                "--name",
                "x",
            ])
            .unwrap();
        assert_eq!(admin_path(&m).as_deref(), Some("users unlock"));
        let m = Cli::command()
            .try_get_matches_from(["deskfleet-server", "admin", "audit", "seal"])
            .unwrap();
        assert_eq!(admin_path(&m).as_deref(), Some("audit seal"));
    }
}
