//! The server's TLS identity: its certificate chain and key, either an operator's own
//! (`tls.cert_file`, `tls.key_file`) or issued by a private CA that the server makes in its
//! data directory on first start (as k3s and Elastic Fleet Server do).
//!
//! With its own CA the server keeps `ca.pem` (the CA certificate clients trust) and
//! `ca.key`, and issues itself a fresh leaf (`tls.crt`, `tls.key`) at every start, so that
//! a changed host name, listen address or `tls.extra_sans` is covered without an
//! operator's step. Clients trust the CA, never the leaf, so a re-issued leaf is
//! invisible to them. Keys are written with mode 0600.
//!
//! The certificate in use can be replaced while the server runs ([`Certificates::reload`],
//! on SIGHUP): new handshakes get the new one, open connections keep theirs.

use crate::settings::Settings;
use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The CA certificate clients are given (`--ca-cert`, the SDK's `ssl_ca_cert`).
pub const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
/// The certificate chain (leaf, then CA) and key the server presents.
const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";
/// The server's full base URL, `https://host:port` (or `http://` with TLS off).
pub const ENDPOINT_FILE: &str = "endpoint.url";

/// Lifetime of the private CA and of the leaves it issues.
const CA_VALIDITY_DAYS: i64 = 10 * 365;
const LEAF_VALIDITY_DAYS: i64 = 365;

/// Where the chain and key in use are read from.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes sure a certificate and key exist for `settings`, issuing them from the data
/// directory's CA when the operator brought none. `listen` is the bound address.
pub fn prepare(settings: &Settings, listen: SocketAddr) -> anyhow::Result<CertificateFiles> {
    match (&settings.tls.cert_file, &settings.tls.key_file) {
        (Some(cert), Some(key)) => Ok(CertificateFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => {
            let dir = &settings.data_dir;
            let ca = own_ca(dir)?;
            let names = subject_alt_names(listen, &settings.tls.extra_sans);
            issue_leaf(&ca, &names, dir)?;
            Ok(CertificateFiles {
                cert: dir.join(CERT_FILE),
                key: dir.join(KEY_FILE),
            })
        }
        _ => bail!("tls.cert_file and tls.key_file must be given together"),
    }
}

/// The lowercase hex SHA-256 of the DER of the CA certificate in `data_dir/ca.pem`, or
/// `None` when there is none (an operator's certificate from a public CA). Enrollment
/// tokens carry it, so that a new desktop can verify the server from its first packet.
pub fn ca_fingerprint(data_dir: &Path) -> std::io::Result<Option<String>> {
    let path = data_dir.join(CA_CERT_FILE);
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let der = CertificateDer::from_pem_slice(&pem).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    Ok(Some(hex::encode(Sha256::digest(der.as_ref()))))
}

/// The private CA of the data directory, made on first use.
struct OwnCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn own_ca(dir: &Path) -> anyhow::Result<OwnCa> {
    let key_path = dir.join(CA_KEY_FILE);
    let cert_path = dir.join(CA_CERT_FILE);
    let key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => KeyPair::from_pem(&pem)
            .with_context(|| format!("reading the CA key {}", key_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().context("generating the CA key")?;
            crate::auth::files::write_private(&key_path, key.serialize_pem().as_bytes())?;
            // A new key makes any old CA certificate useless.
            let _ = std::fs::remove_file(&cert_path);
            key
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading the CA key {}", key_path.display()));
        }
    };
    let params = ca_params(&key);
    let pem = match std::fs::read_to_string(&cert_path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pem = params
                .self_signed(&key)
                .context("signing the CA certificate")?
                .pem();
            crate::auth::files::write_private(&cert_path, pem.as_bytes())?;
            tracing::info!(path = %cert_path.display(), "created a private certificate authority");
            pem
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", cert_path.display())),
    };
    Ok(OwnCa {
        issuer: Issuer::new(params, key),
        pem,
    })
}

/// The CA's parameters, derived from its key alone, so that the issuer named in a leaf
/// always matches the subject of `ca.pem` without parsing it back.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let id = &hex::encode(Sha256::digest(key.public_key_raw()))[..16];
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("deskfleet CA {id}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "deskfleet");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY_DAYS);
    params
}

/// Valid from yesterday (clocks differ) to `days` from now, in whole days.
fn set_validity(params: &mut CertificateParams, days: i64) {
    use chrono::Datelike;
    let at = |offset: i64| {
        let d = chrono::Utc::now().date_naive() + chrono::TimeDelta::days(offset);
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = at(-1);
    params.not_after = at(days);
}

/// The names the leaf is valid for: loopback, the host name, the listen address (every
/// interface's address when listening on all of them) and the configured extras.
fn subject_alt_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = gethostname::gethostname().into_string()
        && !host.is_empty()
    {
        names.push(host);
    }
    if listen.ip().is_unspecified() {
        if let Ok(interfaces) = if_addrs::get_if_addrs() {
            names.extend(interfaces.into_iter().map(|i| i.ip().to_string()));
        }
    } else {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn issue_leaf(ca: &OwnCa, names: &[String], dir: &Path) -> anyhow::Result<()> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .with_context(|| format!("{n:?} is not a valid host name for a certificate")),
        })
        .collect::<anyhow::Result<_>>()?;
    params
        .distinguished_name
        .push(DnType::CommonName, "deskfleet server");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_VALIDITY_DAYS);
    let key = KeyPair::generate().context("generating the server key")?;
    let leaf = params
        .signed_by(&key, &ca.issuer)
        .context("issuing the server certificate")?;
    // Key first: a chain on disk never names a key that is not there yet.
    crate::auth::files::write_private(&dir.join(KEY_FILE), key.serialize_pem().as_bytes())?;
    crate::auth::files::write_private(
        &dir.join(CERT_FILE),
        format!("{}{}", leaf.pem(), ca.pem).as_bytes(),
    )?;
    Ok(())
}

/// The certificate the server presents, replaceable while it runs.
#[derive(Debug)]
pub struct Certificates {
    files: CertificateFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    pub fn load(files: CertificateFiles) -> anyhow::Result<Self> {
        let current = RwLock::new(Arc::new(read_certified_key(&files)?));
        Ok(Self { files, current })
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = read_certified_key(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// A rustls configuration that serves HTTP/1.1 with these certificates.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn read_certified_key(files: &CertificateFiles) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate {}", files.cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the private key {}", files.key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).with_context(|| {
        format!(
            "{} and {} do not make a usable certificate and key",
            files.cert.display(),
            files.key.display()
        )
    })?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_ca_issues_a_leaf_for_the_listen_address_and_keeps_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            data_dir: dir.path().to_path_buf(),
            ..Settings::default()
        };
        let files = prepare(&settings, "127.0.0.2:1".parse().unwrap()).unwrap();
        let fingerprint = ca_fingerprint(dir.path()).unwrap().expect("a CA");
        let certs = Certificates::load(files.clone()).unwrap();
        assert_eq!(certs.current.read().unwrap().cert.len(), 2, "leaf and CA");

        // A second start re-issues the leaf under the same CA.
        let again = prepare(&settings, "127.0.0.2:1".parse().unwrap()).unwrap();
        assert_eq!(ca_fingerprint(dir.path()).unwrap().unwrap(), fingerprint);
        Certificates::load(again).unwrap();

        use std::os::unix::fs::PermissionsExt;
        for file in [CA_KEY_FILE, KEY_FILE] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let names = subject_alt_names("127.0.0.2:1".parse().unwrap(), &["fleet.example".into()]);
        assert!(names.contains(&"127.0.0.2".to_string()));
        assert!(names.contains(&"fleet.example".to_string()));
    }

    #[test]
    fn a_cert_without_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            data_dir: dir.path().to_path_buf(),
            tls: crate::settings::TlsSettings {
                cert_file: Some(dir.path().join("x.crt")),
                ..Default::default()
            },
            ..Settings::default()
        };
        let err = prepare(&settings, "127.0.0.1:1".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("together"), "{err}");
    }
}
