//! Download, verification and unpacking of a package.
//!
//! The order is the security property: the archive is streamed into a temporary file
//! while it is hashed, then its SHA-256 is compared with the offered `content_hash` and
//! the ed25519 signature (over that 32-byte digest) is checked against the trusted key.
//! Only a package that passes both is opened as a tar; one that fails is deleted. The
//! verification itself ([`verify_package`], [`verify_digest`]) is pure, so a load
//! generator or a test can call it on bytes.
//!
//! Unpacking refuses anything that could write outside the version directory: absolute
//! paths, `..`, links and device files. A version is unpacked into a staging directory
//! first and renamed into place whole.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use deskfleet_proto::opamp::PackageAvailable;
use ed25519_dalek::{Signature, VerifyingKey};
use futures_util::StreamExt;
use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::state::InstalledPackage;

/// The only package this guest installs.
pub const MONITOR_PACKAGE: &str = "deskfleet-monitor";

/// A larger download is refused: the monitor is a few MiB, and a desktop's disk is not
/// the place to find out what a runaway server sends.
pub const MAX_PACKAGE_BYTES: u64 = 256 * 1024 * 1024;

/// Unpacked size limit (a gzip bomb stops here).
pub const MAX_UNPACKED_BYTES: u64 = 1024 * 1024 * 1024;

/// How many times a download that failed for a passing reason is tried in all, and the
/// first wait between two tries (then twice as long).
const DOWNLOAD_ATTEMPTS: u32 = 3;
const DOWNLOAD_RETRY: Duration = Duration::from_secs(1);
/// A download that receives nothing for this long has failed.
pub const DOWNLOAD_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The file in a package that names it.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The `<reason-code>` of an `INSTALL_FAILED` error message; the server maps each to a
/// task error code (`docs/fleet-protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    DownloadFailed,
    ChecksumMismatch,
    BadSignature,
    /// ENOSPC (or a quota).
    NoSpace,
    /// EACCES or EPERM.
    NoPermission,
    InstallFailed,
    /// No health line within the start timeout (or the watch window), or it could not
    /// be started at all.
    AgentNotStarted,
    /// The new agent exited during the watch window.
    AgentExited,
    /// The new agent still reported itself unhealthy when the watch window ended.
    AgentUnhealthy,
    /// The new agent reports another version than the package it came in.
    VersionMismatch,
    /// The agent could not be stopped or its files removed.
    UninstallFailed,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 11] = [
        ReasonCode::DownloadFailed,
        ReasonCode::ChecksumMismatch,
        ReasonCode::BadSignature,
        ReasonCode::NoSpace,
        ReasonCode::NoPermission,
        ReasonCode::InstallFailed,
        ReasonCode::AgentNotStarted,
        ReasonCode::AgentExited,
        ReasonCode::AgentUnhealthy,
        ReasonCode::VersionMismatch,
        ReasonCode::UninstallFailed,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::DownloadFailed => "download_failed",
            ReasonCode::ChecksumMismatch => "checksum_mismatch",
            ReasonCode::BadSignature => "bad_signature",
            ReasonCode::NoSpace => "no_space",
            ReasonCode::NoPermission => "no_permission",
            ReasonCode::InstallFailed => "install_failed",
            ReasonCode::AgentNotStarted => "agent_not_started",
            // The codes of the upgrade watch and of uninstall are spelled with hyphens,
            // as the server <-> guest contract names them (docs/fleet-protocol.md).
            ReasonCode::AgentExited => "agent-exited",
            ReasonCode::AgentUnhealthy => "agent-unhealthy",
            ReasonCode::VersionMismatch => "version-mismatch",
            ReasonCode::UninstallFailed => "uninstall-failed",
        }
    }
}

/// Why an install failed. `Display` is the `error_message` reported to the server:
/// `<reason-code>: <human reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.as_str())]
pub struct InstallError {
    pub code: ReasonCode,
    pub reason: String,
    /// A failure that may not happen again (the connection to the server was lost, or
    /// it answered 5xx or 429): the download is tried again before the install fails.
    pub transient: bool,
}

impl InstallError {
    pub fn new(code: ReasonCode, reason: impl Into<String>) -> InstallError {
        InstallError {
            code,
            reason: reason.into(),
            transient: false,
        }
    }

    fn transient(self) -> InstallError {
        InstallError {
            transient: true,
            ..self
        }
    }

    /// A filesystem error while `doing` something: a full disk is `no_space`, a refused
    /// access `no_permission`, anything else `install_failed`.
    pub fn io(doing: &str, error: &io::Error) -> InstallError {
        InstallError::new(io_reason(error), format!("{doing}: {error}"))
    }
}

fn io_reason(error: &io::Error) -> ReasonCode {
    // The tar crate wraps OS errors and keeps only their kind, so look at both.
    match (error.kind(), error.raw_os_error()) {
        (io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded, _) => ReasonCode::NoSpace,
        (io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem, _) => {
            ReasonCode::NoPermission
        }
        // ENOSPC, EDQUOT (Linux numbering) in case the kind was lost on the way.
        (_, Some(28 | 122)) => ReasonCode::NoSpace,
        // EPERM, EACCES.
        (_, Some(1 | 13)) => ReasonCode::NoPermission,
        _ => ReasonCode::InstallFailed,
    }
}

// ---------------------------------------------------------------------------------------
// The offer
// ---------------------------------------------------------------------------------------

/// A package offer from `packages_available`, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageOffer {
    pub name: String,
    pub version: String,
    /// Absolute; a relative `download_url` is resolved against the server's base URL.
    pub download_url: Url,
    pub content_hash: [u8; 32],
    pub signature: [u8; 64],
    /// `PackageAvailable.hash`: identifies this offer (the server's choice of bytes).
    pub offer_hash: Vec<u8>,
    /// Extra headers the server asked to send with the download (not `Authorization`,
    /// which is always the guest's own credential).
    pub headers: Vec<(String, String)>,
}

impl PackageOffer {
    /// Checks an offer before anything is downloaded: a version that could not be a
    /// directory name, a hash that is not a SHA-256 or a missing signature fails here.
    pub fn parse(
        name: &str,
        available: &PackageAvailable,
        server: &Url,
    ) -> Result<PackageOffer, InstallError> {
        if !is_safe_version(&available.version) {
            return Err(InstallError::new(
                ReasonCode::InstallFailed,
                format!(
                    "offered version {:?} is not a valid version (letters, digits, '.', '-', '_', '+')",
                    available.version
                ),
            ));
        }
        let file = available.file.as_ref().ok_or_else(|| {
            InstallError::new(
                ReasonCode::DownloadFailed,
                "the offer has no file to download",
            )
        })?;
        let download_url = server.join(&file.download_url).map_err(|e| {
            InstallError::new(
                ReasonCode::DownloadFailed,
                format!("bad download url {:?}: {e}", file.download_url),
            )
        })?;
        if !matches!(download_url.scheme(), "http" | "https") {
            return Err(InstallError::new(
                ReasonCode::DownloadFailed,
                format!("download url {download_url} is not http(s)"),
            ));
        }
        let content_hash: [u8; 32] = file.content_hash.as_slice().try_into().map_err(|_| {
            InstallError::new(
                ReasonCode::ChecksumMismatch,
                format!(
                    "the offered content hash is {} bytes, not a 32-byte SHA-256",
                    file.content_hash.len()
                ),
            )
        })?;
        let signature: [u8; 64] = file.signature.as_slice().try_into().map_err(|_| {
            InstallError::new(
                ReasonCode::BadSignature,
                format!(
                    "the offered signature is {} bytes, not a 64-byte ed25519 signature",
                    file.signature.len()
                ),
            )
        })?;
        let headers = file
            .headers
            .iter()
            .flat_map(|h| &h.headers)
            .filter(|h| !h.key.eq_ignore_ascii_case("authorization"))
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect();
        Ok(PackageOffer {
            name: name.to_owned(),
            version: available.version.clone(),
            download_url,
            content_hash,
            signature,
            offer_hash: available.hash.clone(),
            headers,
        })
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.content_hash)
    }
}

/// A version string that is safe as one path component.
pub fn is_safe_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && !version.starts_with('.')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

// ---------------------------------------------------------------------------------------
// Verification (pure)
// ---------------------------------------------------------------------------------------

/// Checks a whole package in memory: its SHA-256 must equal `content_hash`, and
/// `signature` must be the trusted key's ed25519 signature over that 32-byte digest.
/// Returns the digest.
pub fn verify_package(
    bytes: &[u8],
    content_hash: &[u8],
    signature: &[u8],
    trusted_key: &VerifyingKey,
) -> Result<[u8; 32], InstallError> {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    verify_digest(&digest, content_hash, signature, trusted_key)?;
    Ok(digest)
}

/// [`verify_package`] for a digest computed elsewhere (while streaming a download).
pub fn verify_digest(
    digest: &[u8; 32],
    content_hash: &[u8],
    signature: &[u8],
    trusted_key: &VerifyingKey,
) -> Result<(), InstallError> {
    if digest.as_slice() != content_hash {
        return Err(InstallError::new(
            ReasonCode::ChecksumMismatch,
            format!(
                "the package's sha256 is {}, the server announced {}",
                hex::encode(digest),
                hex::encode(content_hash)
            ),
        ));
    }
    let signature: [u8; 64] = signature.try_into().map_err(|_| {
        InstallError::new(
            ReasonCode::BadSignature,
            format!(
                "the signature is {} bytes, not a 64-byte ed25519 signature",
                signature.len()
            ),
        )
    })?;
    // Strict verification also refuses malleable signatures and weak keys.
    trusted_key
        .verify_strict(digest, &Signature::from_bytes(&signature))
        .map_err(|_| {
            InstallError::new(
                ReasonCode::BadSignature,
                "the package is not signed by the trusted package-signing key",
            )
        })
}

// ---------------------------------------------------------------------------------------
// Download
// ---------------------------------------------------------------------------------------

/// Reports of download progress go out at most every 10 percentage points or every
/// 500 ms, whichever comes first, so a fast download is not a flood of messages and a
/// slow one still shows life.
#[derive(Debug, Clone)]
pub struct ProgressThrottle {
    last_percent: Option<f64>,
    last_at: Option<Instant>,
}

impl ProgressThrottle {
    pub const STEP_PERCENT: f64 = 10.0;
    pub const INTERVAL: Duration = Duration::from_millis(500);

    pub fn new() -> ProgressThrottle {
        ProgressThrottle {
            last_percent: None,
            last_at: None,
        }
    }

    /// Whether `percent` observed at `now` should be reported; records it if so.
    pub fn should_report(&mut self, percent: f64, now: Instant) -> bool {
        let due = match (self.last_percent, self.last_at) {
            (Some(last), Some(at)) => {
                percent >= last + Self::STEP_PERCENT
                    || (percent > last && now.duration_since(at) >= Self::INTERVAL)
            }
            _ => true,
        };
        if due {
            self.last_percent = Some(percent);
            self.last_at = Some(now);
        }
        due
    }
}

impl Default for ProgressThrottle {
    fn default() -> Self {
        ProgressThrottle::new()
    }
}

/// A downloaded, not yet verified package. Dropping it deletes the file.
#[derive(Debug)]
pub struct Downloaded {
    pub file: tempfile::NamedTempFile,
    pub digest: [u8; 32],
    pub size: u64,
}

/// Streams the offer's file into a temporary file in `dir`, hashing it on the way.
/// `on_progress` gets percentages above 0 and below 100 (throttled): 0 is reported by
/// the caller when it starts, 100 is left for "verifying".
pub async fn download(
    client: &reqwest::Client,
    offer: &PackageOffer,
    bearer: Option<&str>,
    dir: &Path,
    mut on_progress: impl FnMut(f64),
) -> Result<Downloaded, InstallError> {
    let failed = |reason: String| InstallError::new(ReasonCode::DownloadFailed, reason);
    let tmp = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || -> Result<_, InstallError> {
            fs::create_dir_all(&dir).map_err(|e| {
                InstallError::io(&format!("creating the install root {}", dir.display()), &e)
            })?;
            tempfile::Builder::new()
                .prefix(".download-")
                .suffix(".tar.gz")
                .tempfile_in(&dir)
                .map_err(|e| {
                    InstallError::io(
                        &format!("creating a download file in {}", dir.display()),
                        &e,
                    )
                })
        })
        .await
        .map_err(|e| InstallError::new(ReasonCode::InstallFailed, e.to_string()))??
    };
    let std_file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| InstallError::io("opening the download file", &e))?;
    let mut file = tokio::fs::File::from_std(std_file);

    let mut request = client.get(offer.download_url.clone());
    for (key, value) in &offer.headers {
        request = request.header(key, value);
    }
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.map_err(|e| {
        failed(format!("GET {}: {}", offer.download_url, error_chain(&e))).transient()
    })?;
    let status = response.status();
    if !status.is_success() {
        let error = failed(format!("GET {} answered HTTP {status}", offer.download_url));
        let again = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        return Err(if again { error.transient() } else { error });
    }
    let total = response.content_length();
    if let Some(total) = total
        && total > MAX_PACKAGE_BYTES
    {
        return Err(failed(format!(
            "the package is {total} bytes, more than the {MAX_PACKAGE_BYTES} allowed"
        )));
    }

    let mut stream = response.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut throttle = ProgressThrottle::new();
    // 0 % was reported when the install began; count it for the throttle.
    throttle.should_report(0.0, Instant::now());
    loop {
        let chunk = match tokio::time::timeout(DOWNLOAD_STALL_TIMEOUT, stream.next()).await {
            Err(_) => {
                return Err(failed(format!(
                    "no data for {} s after {received} bytes",
                    DOWNLOAD_STALL_TIMEOUT.as_secs()
                ))
                .transient());
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(failed(format!(
                    "reading the package after {received} bytes: {}",
                    error_chain(&e)
                ))
                .transient());
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        received += chunk.len() as u64;
        if received > MAX_PACKAGE_BYTES {
            return Err(failed(format!(
                "the package is larger than the {MAX_PACKAGE_BYTES} bytes allowed"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| InstallError::io("writing the download file", &e))?;
        if let Some(total) = total.filter(|t| *t > 0) {
            let percent = (received as f64 * 100.0 / total as f64).min(99.9);
            if throttle.should_report(percent, Instant::now()) {
                on_progress(percent);
            }
        }
    }
    if let Some(total) = total
        && received != total
    {
        return Err(failed(format!(
            "the connection ended after {received} of {total} bytes"
        ))
        .transient());
    }
    file.flush()
        .await
        .map_err(|e| InstallError::io("writing the download file", &e))?;
    file.sync_all()
        .await
        .map_err(|e| InstallError::io("writing the download file", &e))?;
    Ok(Downloaded {
        file: tmp,
        digest: hasher.finalize().into(),
        size: received,
    })
}

/// `error: cause: cause`, since reqwest's top-level message alone rarely says why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// Unpacking (blocking)
// ---------------------------------------------------------------------------------------

/// `manifest.json` at the root of a package.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// Path of the executable, relative to the package root.
    pub entrypoint: String,
}

/// The relative path an archive entry may be written to, or why it may not.
pub fn safe_entry_path(path: &Path) -> Result<PathBuf, InstallError> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(InstallError::new(
                    ReasonCode::InstallFailed,
                    format!(
                        "the archive entry {} points outside the package directory",
                        path.display()
                    ),
                ));
            }
        }
    }
    Ok(clean)
}

/// Unpacks a gzip'd tar into `dest` (an existing, empty directory). Regular files and
/// directories only; every path must stay inside `dest`.
pub fn unpack_archive(reader: impl Read, dest: &Path) -> Result<(), InstallError> {
    let bad = |reason: String| InstallError::new(ReasonCode::InstallFailed, reason);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    let mut unpacked: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("the package is not a tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("reading the archive: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| bad(format!("an archive entry has an unreadable path: {e}")))?
            .into_owned();
        let relative = safe_entry_path(&raw_path)?;
        let kind = entry.header().entry_type();
        if relative.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(bad(format!(
                "the archive entry {:?} has no file name",
                raw_path
            )));
        }
        let target = dest.join(&relative);
        if kind.is_dir() {
            fs::create_dir_all(&target)
                .map_err(|e| InstallError::io(&format!("creating {}", target.display()), &e))?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            unpacked = unpacked.saturating_add(entry.size());
            if unpacked > MAX_UNPACKED_BYTES {
                return Err(bad(format!(
                    "the package unpacks to more than {MAX_UNPACKED_BYTES} bytes"
                )));
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| InstallError::io(&format!("creating {}", parent.display()), &e))?;
            }
            entry
                .unpack(&target)
                .map_err(|e| InstallError::io(&format!("unpacking {}", relative.display()), &e))?;
        } else if kind.is_pax_global_extensions() {
            continue;
        } else {
            // Links could point anywhere; devices and FIFOs have no business here.
            return Err(bad(format!(
                "the archive entry {} is a {kind:?}, not a regular file or directory",
                relative.display()
            )));
        }
    }
    Ok(())
}

/// Unpacks a verified archive file into `install_root/<name>/<version>/`, checks its
/// manifest against the offer, makes the entrypoint executable and returns the record
/// to persist. The version directory appears whole or not at all.
pub fn install_archive(
    archive: &Path,
    install_root: &Path,
    offer: &PackageOffer,
) -> Result<InstalledPackage, InstallError> {
    let package_dir = install_root.join(&offer.name);
    fs::create_dir_all(&package_dir)
        .map_err(|e| InstallError::io(&format!("creating {}", package_dir.display()), &e))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".staging-{}-", offer.version))
        .tempdir_in(&package_dir)
        .map_err(|e| {
            InstallError::io(
                &format!("creating a staging directory in {}", package_dir.display()),
                &e,
            )
        })?;
    let reader = fs::File::open(archive)
        .map_err(|e| InstallError::io("opening the downloaded package", &e))?;
    unpack_archive(io::BufReader::new(reader), staging.path())?;

    let manifest = read_manifest(staging.path())?;
    if manifest.name != offer.name || manifest.version != offer.version {
        return Err(InstallError::new(
            ReasonCode::InstallFailed,
            format!(
                "the package's manifest names {}/{}, but {}/{} was offered",
                manifest.name, manifest.version, offer.name, offer.version
            ),
        ));
    }
    let entrypoint = safe_entry_path(Path::new(&manifest.entrypoint))?;
    let staged_entrypoint = staging.path().join(&entrypoint);
    let meta = fs::symlink_metadata(&staged_entrypoint).map_err(|e| {
        InstallError::new(
            ReasonCode::InstallFailed,
            format!(
                "the manifest's entrypoint {} is not in the package: {e}",
                manifest.entrypoint
            ),
        )
    })?;
    if !meta.is_file() {
        return Err(InstallError::new(
            ReasonCode::InstallFailed,
            format!("the entrypoint {} is not a file", manifest.entrypoint),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&staged_entrypoint, fs::Permissions::from_mode(0o755))
            .map_err(|e| InstallError::io("making the entrypoint executable", &e))?;
    }

    let final_dir = package_dir.join(&offer.version);
    // The same version may be there already (a reinstall of a broken monitor): move it
    // aside first, since a rename cannot replace a non-empty directory. A monitor still
    // running from it keeps its open executable.
    let mut previous = None;
    if fs::symlink_metadata(&final_dir).is_ok() {
        let aside = package_dir.join(format!(
            ".old-{}-{:016x}",
            offer.version,
            rand::random::<u64>()
        ));
        fs::rename(&final_dir, &aside)
            .map_err(|e| InstallError::io(&format!("moving aside {}", final_dir.display()), &e))?;
        previous = Some(aside);
    }
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, &final_dir) {
        let _ = fs::remove_dir_all(&staged);
        if let Some(aside) = &previous {
            let _ = fs::rename(aside, &final_dir);
        }
        return Err(InstallError::io(
            &format!("moving the package into {}", final_dir.display()),
            &e,
        ));
    }
    if let Some(aside) = previous {
        let _ = fs::remove_dir_all(aside);
    }
    Ok(InstalledPackage {
        name: offer.name.clone(),
        version: offer.version.clone(),
        sha256: offer.sha256_hex(),
        path: final_dir.join(entrypoint),
    })
}

fn read_manifest(dir: &Path) -> Result<Manifest, InstallError> {
    let text = fs::read(dir.join(MANIFEST_FILE)).map_err(|e| {
        InstallError::new(
            ReasonCode::InstallFailed,
            format!("the package has no {MANIFEST_FILE}: {e}"),
        )
    })?;
    serde_json::from_slice(&text).map_err(|e| {
        InstallError::new(
            ReasonCode::InstallFailed,
            format!("the package's {MANIFEST_FILE} is invalid: {e}"),
        )
    })
}

/// Deletes the version directories of `name` other than those in `keep`, and leftovers
/// of interrupted installs. Best effort: a failure only costs disk space.
pub fn remove_other_versions(install_root: &Path, name: &str, keep: &[&str]) {
    let Ok(entries) = fs::read_dir(install_root.join(name)) else {
        return;
    };
    for entry in entries.flatten() {
        if !keep.iter().any(|k| entry.file_name() == *k)
            && let Err(error) = fs::remove_dir_all(entry.path())
        {
            tracing::debug!(path = %entry.path().display(), %error, "cannot remove an old package directory");
        }
    }
}

/// Removes every installed version of `name` (uninstall). A directory that is already
/// gone is success.
pub fn remove_package(install_root: &Path, name: &str) -> Result<(), InstallError> {
    let dir = install_root.join(name);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InstallError::new(
            ReasonCode::UninstallFailed,
            format!("removing {}: {e}", dir.display()),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The whole install
// ---------------------------------------------------------------------------------------

/// Where an install is, as reported to the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InstallStep {
    /// `DOWNLOADING` with this percentage (below 100).
    Downloading(f64),
    /// `DOWNLOADING` at 100 %: the hash and signature are being checked.
    Verifying,
    /// `INSTALLING`: verified, being unpacked.
    Installing,
}

/// Everything an install needs besides the offer.
#[derive(Debug, Clone)]
pub struct Installer {
    pub client: reqwest::Client,
    pub install_root: PathBuf,
    pub trusted_key: VerifyingKey,
}

impl Installer {
    /// Download, verify, unpack. Nothing is unpacked unless both checks pass, and the
    /// download is deleted whatever happens.
    pub async fn install(
        &self,
        offer: &PackageOffer,
        bearer: Option<&str>,
        mut progress: impl FnMut(InstallStep),
    ) -> Result<InstalledPackage, InstallError> {
        let mut attempt = 1;
        let downloaded = loop {
            let downloaded = download(&self.client, offer, bearer, &self.install_root, |percent| {
                progress(InstallStep::Downloading(percent))
            })
            .await;
            match downloaded {
                Ok(downloaded) => break downloaded,
                // A server behind a balancer may have gone between the offer and the
                // download: ask again (the next request may reach another replica).
                Err(error) if error.transient && attempt < DOWNLOAD_ATTEMPTS => {
                    let delay =
                        crate::backoff::jittered(DOWNLOAD_RETRY * attempt, 0.5, &mut rand::rng());
                    tracing::warn!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "download failed; trying again");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        progress(InstallStep::Verifying);
        if let Err(error) = verify_digest(
            &downloaded.digest,
            &offer.content_hash,
            &offer.signature,
            &self.trusted_key,
        ) {
            // Deleted now, not whenever the value happens to be dropped.
            let _ = downloaded.file.close();
            return Err(error);
        }
        progress(InstallStep::Installing);
        let root = self.install_root.clone();
        let offer = offer.clone();
        tokio::task::spawn_blocking(move || {
            let installed = install_archive(downloaded.file.path(), &root, &offer);
            let _ = downloaded.file.close();
            installed
        })
        .await
        .map_err(|e| InstallError::new(ReasonCode::InstallFailed, e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn key() -> ed25519_dalek::SigningKey {
        testing::signing_key(1)
    }

    #[test]
    fn a_signed_package_verifies() {
        let package = testing::signed_monitor_package("1.2.3", &key());
        let digest = verify_package(
            &package.archive,
            &package.content_hash,
            &package.signature,
            &key().verifying_key(),
        )
        .unwrap();
        assert_eq!(digest, package.content_hash);
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_mismatch() {
        let package = testing::signed_monitor_package("1.2.3", &key());
        for at in [0, package.archive.len() / 2, package.archive.len() - 1] {
            let mut bytes = package.archive.clone();
            bytes[at] ^= 0x01;
            let error = verify_package(
                &bytes,
                &package.content_hash,
                &package.signature,
                &key().verifying_key(),
            )
            .unwrap_err();
            assert_eq!(error.code, ReasonCode::ChecksumMismatch, "byte {at}");
            assert!(error.to_string().starts_with("checksum_mismatch: "));
        }
    }

    #[test]
    fn another_key_or_a_bad_signature_is_bad_signature() {
        let package = testing::signed_monitor_package("1.2.3", &key());
        let other = testing::signing_key(2).verifying_key();
        let error = verify_package(
            &package.archive,
            &package.content_hash,
            &package.signature,
            &other,
        )
        .unwrap_err();
        assert_eq!(error.code, ReasonCode::BadSignature);

        let mut signature = package.signature;
        signature[10] ^= 0x80;
        let error = verify_package(
            &package.archive,
            &package.content_hash,
            &signature,
            &key().verifying_key(),
        )
        .unwrap_err();
        assert_eq!(error.code, ReasonCode::BadSignature);
        assert!(error.to_string().starts_with("bad_signature: "));

        // The signature must be over the digest, not over the archive bytes.
        use ed25519_dalek::Signer;
        let over_bytes = key().sign(&package.archive).to_bytes();
        assert_eq!(
            verify_package(
                &package.archive,
                &package.content_hash,
                &over_bytes,
                &key().verifying_key()
            )
            .unwrap_err()
            .code,
            ReasonCode::BadSignature
        );

        assert_eq!(
            verify_package(
                &package.archive,
                &package.content_hash,
                &[],
                &key().verifying_key()
            )
            .unwrap_err()
            .code,
            ReasonCode::BadSignature
        );
    }

    #[test]
    fn reason_codes_are_the_documented_words() {
        let words: Vec<&str> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            words,
            [
                "download_failed",
                "checksum_mismatch",
                "bad_signature",
                "no_space",
                "no_permission",
                "install_failed",
                "agent_not_started",
                "agent-exited",
                "agent-unhealthy",
                "version-mismatch",
                "uninstall-failed",
            ]
        );
    }

    #[test]
    fn io_errors_map_to_space_and_permission_codes() {
        let code = |e: io::Error| InstallError::io("x", &e).code;
        assert_eq!(code(io::Error::from_raw_os_error(28)), ReasonCode::NoSpace);
        assert_eq!(
            code(io::Error::from_raw_os_error(13)),
            ReasonCode::NoPermission
        );
        assert_eq!(
            code(io::Error::from_raw_os_error(1)),
            ReasonCode::NoPermission
        );
        assert_eq!(
            code(io::Error::new(io::ErrorKind::StorageFull, "wrapped")),
            ReasonCode::NoSpace
        );
        assert_eq!(
            code(io::Error::new(io::ErrorKind::PermissionDenied, "wrapped")),
            ReasonCode::NoPermission
        );
        assert_eq!(
            code(io::Error::from_raw_os_error(5)),
            ReasonCode::InstallFailed
        );
    }

    fn offer(version: &str, package: &testing::SignedPackage) -> PackageOffer {
        let available = testing::package_available(package, version, "http://h/p");
        PackageOffer::parse(
            MONITOR_PACKAGE,
            &available,
            &Url::parse("http://h").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_verified_package_installs_into_its_version_directory() {
        let dir = tempfile::tempdir().unwrap();
        let package = testing::signed_monitor_package("1.2.3", &key());
        let archive = dir.path().join("p.tar.gz");
        fs::write(&archive, &package.archive).unwrap();
        let root = dir.path().join("agents");
        let installed = install_archive(&archive, &root, &offer("1.2.3", &package)).unwrap();
        assert_eq!(
            installed.path,
            root.join("deskfleet-monitor/1.2.3/deskfleet-monitor")
        );
        assert_eq!(installed.sha256, hex::encode(package.content_hash));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&installed.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "executable: {mode:o}");
        }
        // Installing the same version again replaces it and leaves no staging behind.
        install_archive(&archive, &root, &offer("1.2.3", &package)).unwrap();
        let names: Vec<_> = fs::read_dir(root.join("deskfleet-monitor"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["1.2.3"]);
    }

    #[test]
    fn a_manifest_for_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let package = testing::signed_monitor_package("1.2.3", &key());
        let archive = dir.path().join("p.tar.gz");
        fs::write(&archive, &package.archive).unwrap();
        let root = dir.path().join("agents");
        let error = install_archive(&archive, &root, &offer("9.9.9", &package)).unwrap_err();
        assert_eq!(error.code, ReasonCode::InstallFailed);
        assert!(!root.join("deskfleet-monitor/9.9.9").exists());
        assert!(!root.join("deskfleet-monitor/1.2.3").exists());
    }

    #[test]
    fn path_traversal_is_refused_and_nothing_escapes() {
        for evil in [
            "../escaped",
            "a/../../escaped",
            "/tmp/deskfleet-guest-escaped-abs",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("pkg");
            fs::create_dir(&dest).unwrap();
            let archive = testing::archive_with_raw_entry(evil, b"pwned");
            let error = unpack_archive(&archive[..], &dest).unwrap_err();
            assert_eq!(error.code, ReasonCode::InstallFailed, "{evil}");
            assert!(error.reason.contains("outside"), "{evil}: {error}");
            assert!(!dir.path().join("escaped").exists(), "{evil}");
            assert!(!Path::new("/tmp/deskfleet-guest-escaped-abs").exists());
        }
    }

    #[test]
    fn links_in_an_archive_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = testing::archive_with_symlink("deskfleet-monitor", "/bin/sh");
        let error = unpack_archive(&archive[..], dir.path()).unwrap_err();
        assert_eq!(error.code, ReasonCode::InstallFailed);
        assert!(fs::symlink_metadata(dir.path().join("deskfleet-monitor")).is_err());
    }

    #[test]
    fn entry_paths_are_normalised_or_refused() {
        assert_eq!(
            safe_entry_path(Path::new("./a/./b")).unwrap(),
            PathBuf::from("a/b")
        );
        assert!(safe_entry_path(Path::new("a/../b")).is_err());
        assert!(safe_entry_path(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn offers_are_checked_before_any_download() {
        let package = testing::signed_monitor_package("1.2.3", &key());
        let server = Url::parse("http://srv:8087/base/").unwrap();
        let mut available = testing::package_available(&package, "1.2.3", "/v1/packages/abc");
        let parsed = PackageOffer::parse(MONITOR_PACKAGE, &available, &server).unwrap();
        assert_eq!(
            parsed.download_url.as_str(),
            "http://srv:8087/v1/packages/abc"
        );

        for bad in ["../1", "", "1/2", ".hidden", "a b"] {
            available.version = bad.into();
            let error = PackageOffer::parse(MONITOR_PACKAGE, &available, &server).unwrap_err();
            assert_eq!(error.code, ReasonCode::InstallFailed, "{bad:?}");
        }
        available.version = "1.2.3".into();
        available.file.as_mut().unwrap().signature.clear();
        let error = PackageOffer::parse(MONITOR_PACKAGE, &available, &server).unwrap_err();
        assert_eq!(error.code, ReasonCode::BadSignature);
        available.file.as_mut().unwrap().signature = package.signature.to_vec();
        available.file.as_mut().unwrap().content_hash = vec![1; 20];
        let error = PackageOffer::parse(MONITOR_PACKAGE, &available, &server).unwrap_err();
        assert_eq!(error.code, ReasonCode::ChecksumMismatch);
    }

    #[test]
    fn progress_is_throttled_to_ten_points_or_half_a_second() {
        let start = Instant::now();
        let mut throttle = ProgressThrottle::new();
        assert!(throttle.should_report(0.0, start));
        assert!(!throttle.should_report(5.0, start));
        assert!(throttle.should_report(10.0, start));
        assert!(!throttle.should_report(19.9, start + Duration::from_millis(100)));
        assert!(throttle.should_report(11.0, start + Duration::from_millis(600)));
        // Time alone does not report a percentage that did not move.
        assert!(!throttle.should_report(11.0, start + Duration::from_secs(5)));
        let reported = (0..=1000)
            .map(|i| i as f64 / 10.0)
            .filter(|p| throttle.should_report(*p, start + Duration::from_secs(5)))
            .count();
        assert!(reported <= 10, "{reported} reports for one fast download");
    }
}
