//! Signed test packages, for this crate's tests and for load generators (feature
//! `testing`). Keys come from fixed seeds, so runs are reproducible.

use std::collections::BTreeMap;

use deskfleet_proto::opamp::{
    DownloadableFile, PackageAvailable, PackageType, PackagesAvailable, ServerToAgent,
};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::install::{MANIFEST_FILE, MONITOR_PACKAGE};

/// A deterministic signing key: 32 copies of `seed`.
pub fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A package archive with its announced hash and signature.
#[derive(Debug, Clone)]
pub struct SignedPackage {
    pub archive: Vec<u8>,
    pub content_hash: [u8; 32],
    /// ed25519 over `content_hash`, as the server signs.
    pub signature: [u8; 64],
}

/// Hashes and signs an archive the way the server does.
pub fn sign(archive: Vec<u8>, key: &SigningKey) -> SignedPackage {
    let content_hash: [u8; 32] = Sha256::digest(&archive).into();
    let signature = key.sign(&content_hash).to_bytes();
    SignedPackage {
        archive,
        content_hash,
        signature,
    }
}

/// A tar.gz of `(path, bytes, mode)` regular files.
pub fn build_archive(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, data, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, *data)
            .expect("appending to an in-memory tar");
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .expect("finishing an in-memory tar.gz")
}

/// The `manifest.json` of a monitor package.
pub fn manifest(version: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": MONITOR_PACKAGE,
        "version": version,
        "entrypoint": MONITOR_PACKAGE,
    }))
    .expect("a manifest serializes")
}

/// A `deskfleet-monitor` package whose entrypoint is `entrypoint` (mode 0755).
pub fn monitor_archive(version: &str, entrypoint: &[u8]) -> Vec<u8> {
    build_archive(&[
        (MONITOR_PACKAGE, entrypoint, 0o755),
        (MANIFEST_FILE, &manifest(version), 0o644),
    ])
}

/// A signed package holding [`fake_monitor_script`].
pub fn signed_monitor_package(version: &str, key: &SigningKey) -> SignedPackage {
    sign(
        monitor_archive(version, fake_monitor_script(version).as_bytes()),
        key,
    )
}

/// A `/bin/sh` stand-in for the monitor: one health line, then a metrics line every
/// 200 ms, in the exact shape of `deskfleet_monitor::Report`.
pub fn fake_monitor_script(version: &str) -> String {
    format!(
        r#"#!/bin/sh
now=$(date +%s)000
echo '{{"type":"health","agent":"deskfleet-monitor","version":"{version}","healthy":true,"pid":'$$',"started_at_ms":'$now',"supported":true,"status":"running"}}'
while :; do
  echo '{{"type":"metrics","agent":"deskfleet-monitor","version":"{version}","collected_at_ms":'$now',"interval_ms":200,"cpu":{{"usage_percent":1.5,"cores":2}},"memory":null,"disks":[],"network":[],"load_average":null,"uptime_secs":null,"self":null}}'
  sleep 0.2
done
"#
    )
}

/// A monitor that starts but never reports health (for `agent_not_started`).
pub fn silent_monitor_script() -> &'static str {
    "#!/bin/sh\nexec sleep 3600\n"
}

/// The `PackageAvailable` the server would send for `package`.
pub fn package_available(package: &SignedPackage, version: &str, url: &str) -> PackageAvailable {
    PackageAvailable {
        r#type: PackageType::TopLevel as i32,
        version: version.to_owned(),
        file: Some(DownloadableFile {
            download_url: url.to_owned(),
            content_hash: package.content_hash.to_vec(),
            signature: package.signature.to_vec(),
            headers: None,
        }),
        hash: package.content_hash.to_vec(),
    }
}

/// A `ServerToAgent` offering `deskfleet-monitor`.
pub fn offer_message(
    instance_uid: &[u8],
    package: &SignedPackage,
    version: &str,
    url: &str,
) -> ServerToAgent {
    ServerToAgent {
        instance_uid: instance_uid.to_vec(),
        packages_available: Some(PackagesAvailable {
            packages: BTreeMap::from([(
                MONITOR_PACKAGE.to_owned(),
                package_available(package, version, url),
            )]),
            all_packages_hash: package.content_hash.to_vec(),
        }),
        ..Default::default()
    }
}

/// A tar.gz with one regular file whose stored name is `raw_name` verbatim (`../x`,
/// `/abs`): the tar crate's own builder refuses to write such names.
pub fn archive_with_raw_entry(raw_name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    let name = raw_name.as_bytes();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    finish_raw(header, data)
}

/// A tar.gz with one symlink `name -> target`.
pub fn archive_with_symlink(name: &str, target: &str) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_path(name).expect("a plain name");
    header.set_link_name(target).expect("a plain target");
    header.set_size(0);
    header.set_mode(0o777);
    header.set_cksum();
    finish_raw(header, &[])
}

fn finish_raw(header: tar::Header, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut raw = header.as_bytes().to_vec();
    raw.extend_from_slice(data);
    raw.resize(raw.len().div_ceil(512) * 512, 0);
    raw.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).expect("writing to memory");
    gz.finish().expect("finishing in memory")
}
