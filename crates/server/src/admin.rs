//! Operator actions on the store, used by `deskfleet-server admin ...` and by the
//! bootstrap. They work directly on the database; no server needs to run.

use crate::auth::keyring::Keyring;
use crate::auth::secrets::{hash_password, new_access_key, random_alphanumeric, sha256_hex};
use anyhow::{Context, anyhow};
use deskfleet_core::clock::Millis;
use deskfleet_core::ids::{DesktopId, ProjectId, UserId};
use deskfleet_core::model::{AccessKey, AuthSubject, Desktop, NewDesktop, Project, User};
use deskfleet_core::store::{Store, StoreError};
use secrecy::SecretString;

pub async fn create_project(
    store: &dyn Store,
    domain_name: &str,
    name: &str,
) -> anyhow::Result<Project> {
    let domain = store
        .find_domain_by_name(domain_name)
        .await?
        .ok_or_else(|| anyhow!("domain {domain_name:?} does not exist"))?;
    Ok(store.create_project(&domain.id, name).await?)
}

/// Creates a user; generates a password when none is given. Returns the password.
pub async fn create_user(
    store: &dyn Store,
    domain_name: &str,
    name: &str,
    password: Option<String>,
) -> anyhow::Result<(User, String)> {
    let domain = store
        .find_domain_by_name(domain_name)
        .await?
        .ok_or_else(|| anyhow!("domain {domain_name:?} does not exist"))?;
    let password = password.unwrap_or_else(|| random_alphanumeric(24));
    let to_hash = password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&to_hash))
        .await?
        .map_err(|e| anyhow!("hashing the password: {e}"))?;
    let user = store.create_user(&domain.id, name, &hash).await?;
    Ok((user, password))
}

pub async fn find_user(store: &dyn Store, domain_name: &str, name: &str) -> anyhow::Result<User> {
    store
        .find_user(domain_name, name)
        .await?
        .ok_or_else(|| anyhow!("user {name:?} does not exist in domain {domain_name:?}"))
}

pub async fn find_project(store: &dyn Store, id: &str) -> anyhow::Result<Project> {
    let id = ProjectId::parse(id).map_err(|e| anyhow!("{e}"))?;
    // The command's trace belongs to the project it works on.
    crate::audit::note_project(&id);
    store
        .find_project(&id)
        .await?
        .ok_or_else(|| anyhow!("project {id} does not exist"))
}

/// Creates an AK/SK pair for `user` on `project`; returns (AK, SK). The SK is stored
/// sealed with `keyring`.
pub async fn create_access_key(
    store: &dyn Store,
    keyring: &Keyring,
    user: &UserId,
    project: &ProjectId,
    now: Millis,
) -> anyhow::Result<(String, String)> {
    let (access_key, secret_key) = new_access_key();
    let sealed = keyring.seal(&access_key, &SecretString::from(secret_key.clone()));
    store
        .create_access_key(&AccessKey {
            access_key: access_key.clone(),
            secret_key: sealed,
            user_id: user.clone(),
            project_id: project.clone(),
            created_at: now,
        })
        .await?;
    Ok((access_key, secret_key))
}

/// Registers the desktops of a JSON file (an array of `NewDesktop`).
pub async fn import_desktops(
    store: &dyn Store,
    project: &ProjectId,
    json: &[u8],
    now: Millis,
) -> anyhow::Result<Vec<Desktop>> {
    let desktops: Vec<NewDesktop> = serde_json::from_slice(json)
        .context("the file must hold a JSON array of {computer_name, ip_address, os_type, tags?, enterprise_project_id?}")?;
    for (i, d) in desktops.iter().enumerate() {
        if d.computer_name.is_empty() || d.computer_name.chars().count() > 55 {
            return Err(anyhow!(
                "desktop {i}: computer_name must be 1 to 55 characters"
            ));
        }
        if d.ip_address.parse::<std::net::IpAddr>().is_err() {
            return Err(anyhow!(
                "desktop {i}: ip_address {:?} is not an IP address",
                d.ip_address
            ));
        }
        if !matches!(d.os_type.as_str(), "Linux" | "Windows" | "Others") {
            return Err(anyhow!(
                "desktop {i}: os_type must be Linux, Windows or Others"
            ));
        }
    }
    Ok(store.import_desktops(project, &desktops, now).await?)
}

/// Creates an enrollment token for `project`, valid for `ttl_hours`, bound to `desktop`
/// (an imported desktop of the project) if given; returns the token.
pub async fn create_enrollment_token(
    store: &dyn Store,
    project: &ProjectId,
    desktop: Option<&str>,
    ttl_hours: u64,
    now: Millis,
) -> anyhow::Result<(String, Millis)> {
    if let Some(d) = desktop {
        DesktopId::parse(d.to_owned()).map_err(|e| anyhow!("--desktop: {e}"))?;
    }
    new_token(store, project, desktop, ttl_hours, now)
        .await
        .map_err(|e| match e {
            IssueError::NoSuchDesktop(d) => {
                anyhow!("desktop {d} does not exist in project {project}")
            }
            other => other.into(),
        })
}

/// Stores a new token's hash; the token and when it expires.
async fn new_token(
    store: &dyn Store,
    project: &ProjectId,
    desktop: Option<&str>,
    ttl_hours: u64,
    now: Millis,
) -> Result<(String, Millis), IssueError> {
    let bound = desktop
        .map(|d| DesktopId::parse(d.to_owned()).map_err(|_| IssueError::NoSuchDesktop(d.into())))
        .transpose()?;
    let token = format!("DFE1{}", random_alphanumeric(48));
    let expires_at = now + (ttl_hours as i64) * 3600 * 1000;
    store
        .create_enrollment_token(
            project,
            bound.as_ref(),
            &crate::auth::secrets::sha256_hex(&token),
            now,
            expires_at,
        )
        .await
        .map_err(|e| match (e, desktop) {
            (deskfleet_core::store::StoreError::NotFound, Some(d)) => {
                IssueError::NoSuchDesktop(d.to_owned())
            }
            (e, _) => IssueError::Store(e),
        })?;
    Ok((token, expires_at))
}

/// A token just made, ready to hand out.
pub struct IssuedToken {
    /// The token with the server's CA fingerprint when the server made its own CA.
    pub token: String,
    pub expires_at: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("desktop {0} does not exist in this project")]
    NoSuchDesktop(String),
    #[error(transparent)]
    Store(deskfleet_core::store::StoreError),
    #[error("reading the CA certificate (ca.pem) of the data directory: {0}")]
    CaFile(std::io::Error),
}

/// Creates an enrollment token (as [`create_enrollment_token`]) and composes it with the
/// fingerprint of the CA in `data_dir`, the way it is handed to a guest: the database
/// keeps the secret's hash only, and the fingerprint lets a guest verify the server on
/// first contact.
pub async fn issue_enrollment_token(
    store: &dyn Store,
    data_dir: &std::path::Path,
    project: &ProjectId,
    desktop: Option<&str>,
    ttl_hours: u64,
    now: Millis,
) -> Result<IssuedToken, IssueError> {
    let fingerprint = crate::tls::ca_fingerprint(data_dir).map_err(IssueError::CaFile)?;
    let (secret, expires_at) = new_token(store, project, desktop, ttl_hours, now).await?;
    Ok(IssuedToken {
        token: deskfleet_proto::enrollment::EnrollmentToken::compose(
            &secret,
            fingerprint.as_deref(),
        ),
        expires_at,
    })
}

/// Publishes a package archive, signed with the key in `signing_key` (hex seed file).
/// A version already published for that platform is refused.
pub async fn publish_package(
    store: &dyn Store,
    signing_key: &std::path::Path,
    name: &str,
    version: &str,
    platform: &str,
    archive: &[u8],
    now: Millis,
) -> anyhow::Result<deskfleet_core::fleet::PackageMeta> {
    check_package_version(version)?;
    check_archive_manifest(name, version, archive)?;
    refuse_published(store, name, version, platform).await?;
    let dir = signing_key.parent().unwrap_or(std::path::Path::new("."));
    let key = if signing_key
        .file_name()
        .is_some_and(|n| n == crate::fleet::packages::SIGNING_KEY_FILE)
    {
        crate::fleet::packages::load_or_create_signing_key(dir)?
    } else {
        ed25519_dalek::SigningKey::from_bytes(&crate::fleet::packages::read_hex_key(signing_key)?)
    };
    let meta = crate::fleet::packages::sign_archive(&key, name, version, platform, archive, now);
    store
        .publish_package(&meta, archive)
        .await
        .map_err(|e| match e {
            // Published by someone else between the check and now.
            StoreError::AlreadyExists(_) => already_published(name, version, platform),
            other => other.into(),
        })?;
    Ok(meta)
}

// ---- package versions ----

/// Publishes a bare agent binary as version `version`: builds the archive (the binary as
/// `NAME`, mode 0755, and `manifest.json`; `docs/packages.md`) and signs it like
/// [`publish_package`].
pub async fn publish_binary(
    store: &dyn Store,
    signing_key: &std::path::Path,
    name: &str,
    version: &str,
    platform: &str,
    binary: &[u8],
    now: Millis,
) -> anyhow::Result<deskfleet_core::fleet::PackageMeta> {
    check_package_version(version)?;
    if binary.is_empty() {
        return Err(anyhow!("the binary is empty; give the agent's executable"));
    }
    refuse_published(store, name, version, platform).await?;
    let archive = crate::fleet::packages::build_archive(name, version, binary)?;
    publish_package(store, signing_key, name, version, platform, &archive, now).await
}

/// The `manifest.json` of an archive published as it is must name the package and the
/// version it is published as: guests refuse one that does not (`docs/packages.md`).
fn check_archive_manifest(name: &str, version: &str, archive: &[u8]) -> anyhow::Result<()> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let entries = tar
        .entries()
        .context("the file is not a package archive (a tar.gz)")?;
    for entry in entries {
        let mut entry = entry.context("the file is not a package archive (a tar.gz)")?;
        let path = entry.path().map(|p| p.into_owned()).unwrap_or_default();
        if path
            .components()
            .map(|c| c.as_os_str())
            .ne(["manifest.json"])
        {
            continue;
        }
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut entry, 64 * 1024), &mut text)
            .context("reading the archive's manifest.json")?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&text).context("the archive's manifest.json is not JSON")?;
        let (m_name, m_version) = (manifest["name"].as_str(), manifest["version"].as_str());
        if m_name != Some(name) || m_version != Some(version) {
            return Err(anyhow!(
                "the archive's manifest.json names {}/{}, not {name}/{version}: guests would refuse it; publish it under the version its manifest names, or rebuild it",
                m_name.unwrap_or("(no name)"),
                m_version.unwrap_or("(no version)")
            ));
        }
        return Ok(());
    }
    Err(anyhow!(
        "the archive has no manifest.json at its top level (docs/packages.md); or publish the bare binary with --binary"
    ))
}

/// A version the guest can use as a directory name (it refuses others): 1 to 64 of
/// letters, digits, `.`, `-`, `_`, `+`, not starting with `.`.
fn check_package_version(version: &str) -> anyhow::Result<()> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && !version.starts_with('.')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "--version {version:?} is not a valid version: use 1 to 64 letters, digits, '.', '-', '_' or '+', not starting with '.' (e.g. 0.2.0)"
        ))
    }
}

fn already_published(name: &str, version: &str, platform: &str) -> anyhow::Error {
    anyhow!(
        "{name} {version} is already published for {platform}; a published version never changes its bytes: publish the new build under a new version (see `admin packages list`)"
    )
}

async fn refuse_published(
    store: &dyn Store,
    name: &str,
    version: &str,
    platform: &str,
) -> anyhow::Result<()> {
    match store.find_package_version(name, version, platform).await? {
        Some(_) => Err(already_published(name, version, platform)),
        None => Ok(()),
    }
}

/// Every published version of `name`, newest first, on every platform.
pub async fn list_packages(
    store: &dyn Store,
    name: &str,
) -> anyhow::Result<Vec<deskfleet_core::fleet::PackageMeta>> {
    Ok(store.list_packages(name).await?)
}

/// Withdraws (`Some(now)`) or restores (`None`) every platform's package of a version;
/// how many changed. A withdrawn version is no longer offered for installs and upgrades,
/// but stays downloadable for desktops that roll back to it.
pub async fn set_package_withdrawn(
    store: &dyn Store,
    name: &str,
    version: &str,
    at: Option<Millis>,
) -> anyhow::Result<u64> {
    if store
        .list_packages(name)
        .await?
        .iter()
        .all(|p| p.version != version)
    {
        return Err(anyhow!(
            "{name} {version} is not published (see `admin packages list`)"
        ));
    }
    Ok(store.set_package_withdrawn(name, version, at).await?)
}

// ---- taking things back ----
//
// Each is one store transaction that also moves the credential revision, so running
// servers drop their credential caches within about a second (see
// `crate::auth::revocation`).

/// A store error, with `NotFound` said in the operator's words.
fn not_found(e: StoreError, what: impl FnOnce() -> String) -> anyhow::Error {
    match e {
        StoreError::NotFound => anyhow!("{} does not exist", what()),
        other => other.into(),
    }
}

/// Deletes an access key: it then answers like an unknown key.
pub async fn delete_access_key(store: &dyn Store, access_key: &str) -> anyhow::Result<()> {
    store
        .delete_access_key(access_key)
        .await
        .map_err(|e| not_found(e, || format!("access key {access_key:?}")))
}

/// Lifts the bad-signature lock of an access key; false if it was not locked nor failing.
pub async fn unlock_access_key(store: &dyn Store, access_key: &str) -> anyhow::Result<bool> {
    if store.find_access_key(access_key).await?.is_none() {
        return Err(anyhow!("access key {access_key:?} does not exist"));
    }
    Ok(store
        .clear_auth_failures(&AuthSubject::AccessKey(access_key.to_string()))
        .await?)
}

/// Disables or enables a user: a disabled user can neither log in nor use its keys and
/// tokens.
pub async fn set_user_disabled(
    store: &dyn Store,
    user: &User,
    disabled: bool,
) -> anyhow::Result<()> {
    store
        .set_user_disabled(&user.id, disabled)
        .await
        .map_err(|e| not_found(e, || format!("user {:?}", user.name)))
}

/// Revokes every token of a user; returns how many there were.
pub async fn revoke_user_tokens(store: &dyn Store, user: &User) -> anyhow::Result<u64> {
    store
        .revoke_user_tokens(&user.id)
        .await
        .map_err(|e| not_found(e, || format!("user {:?}", user.name)))
}

/// Lifts the wrong-password lock of a user; false if it was not locked nor failing.
pub async fn unlock_user(store: &dyn Store, user: &User) -> anyhow::Result<bool> {
    Ok(store
        .clear_auth_failures(&AuthSubject::User(user.id.clone()))
        .await?)
}

/// Revokes an enrollment token, given its value.
/// `token` as printed by `enrollment-tokens create`, with or without its CA fingerprint.
pub async fn revoke_enrollment_token(store: &dyn Store, token: &str) -> anyhow::Result<()> {
    let token = deskfleet_proto::enrollment::EnrollmentToken::parse(token)
        .map_err(|e| anyhow::anyhow!("that is not an enrollment token: {e}"))?;
    store
        .revoke_enrollment_token(&sha256_hex(&token.secret))
        .await
        .map_err(|e| not_found(e, || "that enrollment token".to_string()))
}

/// Deletes a desktop of a project, with its credential, metrics and sub-jobs.
pub async fn delete_desktop(
    store: &dyn Store,
    project: &ProjectId,
    desktop: &str,
    now: Millis,
) -> anyhow::Result<()> {
    let id = DesktopId::parse(desktop).map_err(|e| anyhow!("{e}"))?;
    store
        .delete_desktop(project, &id, now)
        .await
        .map_err(|e| not_found(e, || format!("desktop {desktop} in project {project}")))
}
