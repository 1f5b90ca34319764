//! Profiles and the settings a command runs with.
//!
//! The config file is TOML at `$DESKFLEET_CONFIG_FILE`, else
//! `$XDG_CONFIG_HOME/deskfleet/config.toml`, else `~/.config/deskfleet/config.toml`, with
//! one `[profiles.NAME]` table per profile. A setting comes from the first of: flag,
//! `DESKFLEET_*` environment variable (clap merges those two), the profile, the server
//! data directory (`--data-dir`), the built-in default.

use crate::args::{Format, Global};
use crate::exit::usage;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

/// Seconds a request may take when nothing says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Format>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_insecure_http: Option<bool>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the config file is (it need not exist).
pub fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("DESKFLEET_CONFIG_FILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .context("neither XDG_CONFIG_HOME nor HOME is set: set DESKFLEET_CONFIG_FILE")?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("deskfleet").join("config.toml"))
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| usage(format!("config file {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file readable by its owner only: it holds secret keys.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self)?;
        let tmp = path.with_extension("toml.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// The profile named by `--profile`/`DESKFLEET_PROFILE`, else `default`. A named profile
/// must exist; a missing `default` is an empty one.
pub fn profile(global: &Global) -> anyhow::Result<(String, Profile)> {
    let path = config_path()?;
    let file = ConfigFile::load(&path)?;
    let name = global
        .profile
        .clone()
        .unwrap_or_else(|| DEFAULT_PROFILE.into());
    match file.profiles.get(&name) {
        Some(p) => Ok((name, p.clone())),
        None if global.profile.is_none() => Ok((name, Profile::default())),
        None => Err(usage(format!(
            "no profile {name:?} in {}: create it with `deskfleet configure --profile {name}`",
            path.display()
        ))),
    }
}

#[derive(Deserialize)]
struct BootstrapFile {
    project_id: String,
    access_key: String,
    secret_key: String,
}

/// Everything a command needs to reach the server.
pub struct Settings {
    pub endpoint: String,
    pub project_id: String,
    pub access_key: String,
    pub secret_key: String,
    pub ca_cert: Option<PathBuf>,
    pub timeout: Duration,
    pub retries: u32,
    pub allow_insecure_http: bool,
}

/// The output format: flag/env, else the profile's, else a table.
pub fn format(global: &Global, profile: &Profile) -> Format {
    global.output.or(profile.output).unwrap_or(Format::Table)
}

/// Layers flags/env over the profile over the data directory.
pub fn settings(global: &Global, profile: &Profile) -> anyhow::Result<Settings> {
    let data_dir = global.data_dir.clone().or_else(|| profile.data_dir.clone());
    let bootstrap = match &data_dir {
        Some(dir) => {
            let path = dir.join("bootstrap.json");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("reading {}: {e}", path.display())))?;
            Some(
                serde_json::from_str::<BootstrapFile>(&text)
                    .map_err(|e| usage(format!("{}: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let endpoint = match global.endpoint.clone().or_else(|| profile.endpoint.clone()) {
        Some(e) => e,
        None => match &data_dir {
            Some(dir) => endpoint_of(dir)?,
            None => {
                return Err(usage(
                    "no server given: pass --endpoint (or DESKFLEET_ENDPOINT), run `deskfleet configure`, or pass --data-dir",
                ));
            }
        },
    };
    let ca_cert = global
        .ca_cert
        .clone()
        .or_else(|| profile.ca_cert.clone())
        .or_else(|| {
            data_dir
                .as_ref()
                .map(|dir| dir.join("ca.pem"))
                .filter(|path| path.is_file())
        });
    let pick = |flag: &Option<String>,
                prof: &Option<String>,
                from: fn(&BootstrapFile) -> &String,
                name: &str|
     -> anyhow::Result<String> {
        flag.clone()
            .or_else(|| prof.clone())
            .or_else(|| bootstrap.as_ref().map(|b| from(b).clone()))
            .ok_or_else(|| {
                usage(format!(
                    "no {name} given: pass --{name}, set it in a profile (`deskfleet configure`), or pass --data-dir"
                ))
            })
    };
    Ok(Settings {
        project_id: pick(
            &global.project,
            &profile.project_id,
            |b| &b.project_id,
            "project",
        )?,
        access_key: pick(
            &global.access_key,
            &profile.access_key,
            |b| &b.access_key,
            "access-key",
        )?,
        secret_key: pick(
            &global.secret_key,
            &profile.secret_key,
            |b| &b.secret_key,
            "secret-key",
        )?,
        endpoint,
        ca_cert,
        timeout: Duration::from_secs(
            global
                .timeout_secs
                .or(profile.timeout_secs)
                .unwrap_or(DEFAULT_TIMEOUT_SECS)
                .max(1),
        ),
        retries: global
            .retries
            .or(profile.retries)
            .unwrap_or(deskfleet_client::DEFAULT_RETRIES),
        allow_insecure_http: global.allow_insecure_http
            || profile.allow_insecure_http.unwrap_or(false),
    })
}

/// The server's base URL from its data directory: `endpoint.url` (written by the
/// server with its scheme), else `listen.addr` of a server that predates it (plain http).
fn endpoint_of(dir: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(dir.join("endpoint.url")) {
        Ok(url) => Ok(url.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let path = dir.join("listen.addr");
            let addr = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("reading {} (no endpoint.url): {e}", path.display())))?;
            Ok(format!("http://{}", addr.trim()))
        }
        Err(e) => Err(e).context(format!("reading {}", dir.join("endpoint.url").display())),
    }
}

/// `deskfleet configure`: the values given by flags/env go into the profile; on a
/// terminal, the ones still missing are asked for (Enter keeps the current value).
pub fn configure(global: &Global, show: bool) -> anyhow::Result<String> {
    let path = config_path()?;
    let mut file = ConfigFile::load(&path)?;
    let name = global
        .profile
        .clone()
        .unwrap_or_else(|| DEFAULT_PROFILE.into());
    if show {
        let mut p = file
            .profiles
            .get(&name)
            .cloned()
            .ok_or_else(|| usage(format!("no profile {name:?} in {}", path.display())))?;
        p.secret_key = p.secret_key.map(|_| "(hidden)".into());
        return Ok(format!(
            "# {} [profiles.{name}]\n{}",
            path.display(),
            toml::to_string_pretty(&p)?
        ));
    }
    let mut p = file.profiles.get(&name).cloned().unwrap_or_default();
    let set = |slot: &mut Option<String>, v: &Option<String>| {
        if v.is_some() {
            slot.clone_from(v);
        }
    };
    set(&mut p.endpoint, &global.endpoint);
    set(&mut p.project_id, &global.project);
    set(&mut p.access_key, &global.access_key);
    set(&mut p.secret_key, &global.secret_key);
    if global.ca_cert.is_some() {
        p.ca_cert = global.ca_cert.clone().map(absolute);
    }
    if global.data_dir.is_some() {
        p.data_dir = global.data_dir.clone().map(absolute);
    }
    p.timeout_secs = global.timeout_secs.or(p.timeout_secs);
    p.retries = global.retries.or(p.retries);
    p.output = global.output.or(p.output);
    if global.allow_insecure_http {
        p.allow_insecure_http = Some(true);
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        ask("Endpoint (https://host:port)", &mut p.endpoint, false)?;
        ask("Project id", &mut p.project_id, false)?;
        ask("Access key", &mut p.access_key, false)?;
        ask("Secret key", &mut p.secret_key, true)?;
    }
    file.profiles.insert(name.clone(), p);
    file.save(&path)?;
    Ok(format!("profile {name:?} written to {}", path.display()))
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn ask(what: &str, slot: &mut Option<String>, secret: bool) -> anyhow::Result<()> {
    let shown = match slot {
        Some(_) if secret => " [keep current]".to_string(),
        Some(v) => format!(" [{v}]"),
        None => String::new(),
    };
    eprint!("{what}{shown}: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let line = line.trim();
    if !line.is_empty() {
        *slot = Some(line.to_string());
    }
    Ok(())
}
