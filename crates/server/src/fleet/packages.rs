//! Agent packages: the signing key, building and publishing the monitoring agent's
//! package, and the in-memory cache the download route serves from.
//!
//! A package is a gzip'd tar holding the agent binary and a `manifest.json`. Its SHA-256
//! is announced to guests, and its signature is ed25519 over that 32-byte digest, made
//! with the server's signing key (`DATA_DIR/package-signing.key`, public half in
//! `DATA_DIR/package-signing.pub`, both hex). Guests verify both before anything runs.

use crate::AppState;
use anyhow::{Context, anyhow};
use deskfleet_core::fleet::PackageMeta;
use deskfleet_core::store::StoreError;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The package name of the monitoring agent.
pub const MONITOR: &str = "deskfleet-monitor";
pub const SIGNING_KEY_FILE: &str = "package-signing.key";
pub const PUBLIC_KEY_FILE: &str = "package-signing.pub";

/// This machine's platform, as packages and guests name it (`linux-x86_64`).
pub fn host_platform() -> String {
    platform(std::env::consts::OS, std::env::consts::ARCH)
}

pub fn platform(os: &str, arch: &str) -> String {
    format!("{}-{}", os.to_ascii_lowercase(), arch.to_ascii_lowercase())
}

/// Loads the signing key of `dir`, creating it (mode 0600) on first use.
pub fn load_or_create_signing_key(dir: &Path) -> anyhow::Result<SigningKey> {
    let path = dir.join(SIGNING_KEY_FILE);
    let key = if path.exists() {
        SigningKey::from_bytes(&read_hex_key(&path)?)
    } else {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        crate::auth::files::write_private(
            &path,
            format!("{}\n", hex::encode(key.to_bytes())).as_bytes(),
        )?;
        key
    };
    std::fs::write(
        dir.join(PUBLIC_KEY_FILE),
        format!("{}\n", hex::encode(key.verifying_key().to_bytes())),
    )
    .context("writing the public signing key")?;
    Ok(key)
}

/// Reads a key file: 32 bytes written as 64 hex characters.
pub fn read_hex_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("{} must hold 64 hex characters", path.display()))
}

/// Reads a public key file (64 hex characters).
pub fn read_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    VerifyingKey::from_bytes(&read_hex_key(path)?).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Builds the package archive of an agent binary: `NAME` (0755) and `manifest.json`.
pub fn build_archive(name: &str, version: &str, binary: &[u8]) -> anyhow::Result<Vec<u8>> {
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "name": name, "version": version, "entrypoint": name,
    }))?;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, data, mode) in [
        (name, binary, 0o755),
        ("manifest.json", &manifest[..], 0o644),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, data)?;
    }
    Ok(tar.into_inner()?.finish()?)
}

/// Hashes and signs an archive into its metadata.
pub fn sign_archive(
    key: &SigningKey,
    name: &str,
    version: &str,
    platform: &str,
    archive: &[u8],
    now: i64,
) -> PackageMeta {
    let digest = Sha256::digest(archive);
    PackageMeta {
        withdrawn_at: None,
        id: uuid::Uuid::new_v4().simple().to_string(),
        name: name.to_string(),
        version: version.to_string(),
        platform: platform.to_string(),
        size: archive.len() as u64,
        sha256: hex::encode(digest),
        signature: hex::encode(key.sign(&digest).to_bytes()),
        created_at: now,
    }
}

/// Where the monitoring agent built from this workspace is: the configured path, or
/// beside this executable (or one directory up, as for test binaries in `deps/`).
pub fn find_monitor_binary(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured {
        return path.is_file().then(|| path.to_path_buf());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(MONITOR), dir.parent()?.join(MONITOR)]
        .into_iter()
        .find(|p| p.is_file())
}

/// The version a monitor binary reports (`deskfleet-monitor X.Y.Z`).
pub fn monitor_version(binary: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} --version printed {text:?}", binary.display()))
}

/// Publishes the monitoring agent built from this workspace, signed with the data
/// directory's key, unless that version is already published for this platform.
pub async fn publish_bundled_monitor(state: &AppState) -> anyhow::Result<Option<PackageMeta>> {
    let Some(binary) = find_monitor_binary(state.settings.packages.monitor_binary.as_deref())
    else {
        tracing::warn!(
            "no deskfleet-monitor binary beside the server; no package published (build the workspace's binaries, or set packages.monitor_binary)"
        );
        return Ok(None);
    };
    let version = monitor_version(&binary)?;
    let platform = host_platform();
    let latest = state.store.latest_package(MONITOR, &platform).await?;
    if latest.as_ref().is_some_and(|p| p.version == version) {
        return Ok(None);
    }
    // Guests trust the key that signed what is published. A replica without a key of its
    // own serves the packages from the database and publishes nothing; it never makes up
    // a key once the fleet has one.
    let key_path = state.settings.data_dir.join(SIGNING_KEY_FILE);
    if let Some(latest) = &latest
        && !key_path.exists()
    {
        tracing::warn!(
            bundled = %version, published = %latest.version,
            "no package-signing key in the data directory: the bundled monitoring agent is not published by this replica (packages are served from the database); publish it where {SIGNING_KEY_FILE} is, or copy that key here"
        );
        return Ok(None);
    }
    let key = load_or_create_signing_key(&state.settings.data_dir)?;
    if let Some(latest) = &latest
        && !signed_by(latest, &key.verifying_key())
    {
        tracing::error!(
            bundled = %version, published = %latest.version, key = %key_path.display(),
            "this data directory's package-signing key did not sign the packages already published, so guests would refuse what it signs: the bundled monitoring agent is not published; give this replica the fleet's {SIGNING_KEY_FILE}"
        );
        return Ok(None);
    }
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    let (meta, archive) = tokio::task::spawn_blocking({
        let (version, platform, now) = (version.clone(), platform.clone(), state.clock.now());
        move || -> anyhow::Result<_> {
            let archive = build_archive(MONITOR, &version, &bytes)?;
            Ok((
                sign_archive(&key, MONITOR, &version, &platform, &archive, now),
                archive,
            ))
        }
    })
    .await??;
    match state.store.publish_package(&meta, &archive).await {
        Ok(()) => {
            tracing::info!(version = %meta.version, platform = %meta.platform, size = meta.size, sha256 = %meta.sha256, "published the bundled monitoring agent");
            Ok(Some(meta))
        }
        // Another replica published the same version first.
        Err(StoreError::AlreadyExists(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Did `key` sign `package`?
fn signed_by(package: &PackageMeta, key: &VerifyingKey) -> bool {
    let (Ok(digest), Ok(signature)) = (
        hex::decode(&package.sha256),
        hex::decode(&package.signature),
    ) else {
        return false;
    };
    ed25519_dalek::Signature::from_slice(&signature)
        .is_ok_and(|signature| key.verify_strict(&digest, &signature).is_ok())
}

/// Package blobs, kept in memory once read (a package id never changes its bytes). The
/// latest package is asked of the store each time, so a newly published one (by the admin
/// command, in another process) is offered at once.
#[derive(Default)]
pub struct PackageCache {
    blobs: Mutex<HashMap<String, (PackageMeta, bytes::Bytes)>>,
}

impl PackageCache {
    pub async fn latest(
        &self,
        state: &AppState,
        platform: &str,
    ) -> Result<Option<PackageMeta>, StoreError> {
        state.store.latest_package(MONITOR, platform).await
    }

    pub async fn blob(
        &self,
        state: &AppState,
        id: &str,
    ) -> Result<Option<(PackageMeta, bytes::Bytes)>, StoreError> {
        if let Some(hit) = self.blobs.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(Some(hit.clone()));
        }
        let Some((meta, bytes)) = state.store.get_package(id).await? else {
            return Ok(None);
        };
        let entry = (meta, bytes::Bytes::from(bytes));
        self.blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), entry.clone());
        Ok(Some(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    #[test]
    fn archives_are_signed_over_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_signing_key(dir.path()).unwrap();
        // The key is stable across loads, and its public half is written beside it.
        assert_eq!(
            load_or_create_signing_key(dir.path()).unwrap().to_bytes(),
            key.to_bytes()
        );
        let public = read_public_key(&dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        let archive = build_archive(MONITOR, "1.2.3", b"#!/bin/sh\n").unwrap();
        let meta = sign_archive(&key, MONITOR, "1.2.3", "linux-x86_64", &archive, 0);
        let digest = Sha256::digest(&archive);
        assert_eq!(meta.sha256, hex::encode(digest));
        let sig =
            ed25519_dalek::Signature::from_slice(&hex::decode(&meta.signature).unwrap()).unwrap();
        assert!(public.verify(&digest, &sig).is_ok());
        let mut tampered = digest;
        tampered[0] ^= 1;
        assert!(public.verify(&tampered, &sig).is_err());
        // The archive holds the binary and the manifest.
        let mut names = vec![];
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
        for entry in ar.entries().unwrap() {
            names.push(entry.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(names, [MONITOR, "manifest.json"]);
    }

    #[test]
    fn only_the_key_that_signed_a_package_is_taken_for_its_signer() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_signing_key(dir.path()).unwrap();
        let other = SigningKey::from_bytes(&[7; 32]);
        let archive = build_archive(MONITOR, "1.2.3", b"#!/bin/sh\n").unwrap();
        let meta = sign_archive(&key, MONITOR, "1.2.3", "linux-x86_64", &archive, 0);
        assert!(signed_by(&meta, &key.verifying_key()));
        assert!(!signed_by(&meta, &other.verifying_key()));
        let garbled = PackageMeta {
            signature: "zz".into(),
            ..meta
        };
        assert!(!signed_by(&garbled, &key.verifying_key()));
    }
}
