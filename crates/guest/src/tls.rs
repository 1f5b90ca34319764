//! How the guest trusts the server: one rustls `ClientConfig` shared by the OpAMP
//! WebSocket and the package downloads, so both connections always agree on whom they
//! talk to.
//!
//! The trust anchor is, first that applies:
//! 1. `--ca-cert FILE`: the certificates in that PEM file;
//! 2. `STATE_DIR/server-ca.pem`: the server's CA, kept from an earlier pinned contact;
//! 3. the CA fingerprint of the enrollment token (`DFE1<secret>.<sha256>`): **pinning**.
//!    The server's chain is accepted only if it contains a certificate whose SHA-256 is
//!    that fingerprint and the leaf verifies, for the server's name, against that one
//!    certificate as the only trust anchor. The CA is then written to
//!    `STATE_DIR/server-ca.pem` (0600) and trusted from then on (rule 2);
//! 4. the system's roots (a server with a certificate from a public CA).
//!
//! Plain `http://` sends the credential in the clear: it is refused unless the operator
//! asked for it (`--allow-insecure-http`).
//!
//! Only the ring provider is used; there is no OpenSSL anywhere.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deskfleet_proto::enrollment::Fingerprint;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The CA learnt by pinning, in the state directory.
pub const SERVER_CA_FILE: &str = "server-ca.pem";

/// TCP connect (and for the WebSocket, TLS and upgrade) must finish within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A package download that receives nothing for this long has failed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "refusing plain {scheme}:// to {url}: the desktop credential would cross the network unencrypted (use https://, or pass --allow-insecure-http)"
    )]
    InsecureHttp { scheme: String, url: String },
    #[error("cannot read the CA certificates in {path}: {reason}")]
    ReadCa { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    EmptyCa { path: PathBuf },
    #[error(
        "no usable root certificate in the system store (give --ca-cert, or a token with the CA fingerprint)"
    )]
    NoSystemRoots,
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// Where the guest's trust in the server comes from (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// The system's root store.
    System,
    /// The certificates of a PEM file.
    CaFile(PathBuf),
    /// The CA whose SHA-256 (of its DER) is this.
    Pinned(Fingerprint),
}

impl ServerTrust {
    /// Picks the trust anchor for a guest: `--ca-cert`, else the CA kept in the state
    /// directory, else the token's fingerprint, else the system roots.
    pub fn for_guest(
        ca_cert: Option<&Path>,
        state_dir: &Path,
        fingerprint: Option<Fingerprint>,
    ) -> ServerTrust {
        if let Some(path) = ca_cert {
            return ServerTrust::CaFile(path.to_owned());
        }
        let kept = state_dir.join(SERVER_CA_FILE);
        if kept.is_file() {
            return ServerTrust::CaFile(kept);
        }
        match fingerprint {
            Some(fingerprint) => ServerTrust::Pinned(fingerprint),
            None => ServerTrust::System,
        }
    }
}

impl ServerTrust {
    /// The client configuration for this trust.
    pub fn client(&self) -> Result<TlsClient, TlsError> {
        client_config(self)
    }
}

/// A built client configuration, and the pinning verifier when there is one (to learn
/// which CA it accepted).
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pin: Option<Arc<PinnedCaVerifier>>,
}

impl TlsClient {
    /// The CA certificate a pinning verifier accepted, once a handshake succeeded.
    pub fn pinned_ca(&self) -> Option<CertificateDer<'static>> {
        self.pin.as_ref().and_then(|pin| pin.accepted())
    }

    /// A reqwest client on this TLS configuration, with connect and read timeouts.
    pub fn http_client(&self, user_agent: &str) -> Result<reqwest::Client, TlsError> {
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(ClientConfig::clone(&self.config))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(user_agent)
            .build()?)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for `trust`.
pub fn client_config(trust: &ServerTrust) -> Result<TlsClient, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let (config, pin) = match trust {
        ServerTrust::Pinned(fingerprint) => {
            let pin = Arc::new(PinnedCaVerifier {
                fingerprint: *fingerprint,
                provider,
                accepted: Mutex::new(None),
            });
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(pin.clone())
                .with_no_client_auth();
            (config, Some(pin))
        }
        ServerTrust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(path)? {
                roots.add(cert).map_err(|e| TlsError::ReadCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            let config = builder.with_root_certificates(roots).with_no_client_auth();
            (config, None)
        }
        ServerTrust::System => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "skipping part of the system's certificate store");
            }
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
            let config = builder.with_root_certificates(roots).with_no_client_auth();
            (config, None)
        }
    };
    Ok(TlsClient {
        config: Arc::new(config),
        pin,
    })
}

/// Every certificate of a PEM file; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::ReadCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::EmptyCa {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The SHA-256 of a certificate's DER.
pub fn fingerprint(cert: &CertificateDer<'_>) -> Fingerprint {
    Sha256::digest(cert.as_ref()).into()
}

/// Refuses `http://` and `ws://` unless allowed.
pub fn check_scheme(server: &reqwest::Url, allow_insecure_http: bool) -> Result<(), TlsError> {
    match server.scheme() {
        "https" | "wss" => Ok(()),
        _ if allow_insecure_http => Ok(()),
        scheme => Err(TlsError::InsecureHttp {
            scheme: scheme.to_owned(),
            url: server.to_string(),
        }),
    }
}

/// What the guest connects with: the TLS configuration (none for an allowed plain
/// `http://` server) and where a pinned CA is kept.
#[derive(Debug, Clone)]
pub struct Transport {
    tls: Option<TlsClient>,
    state_dir: PathBuf,
    /// Whether the pinned CA is already in the state directory.
    kept: Arc<Mutex<bool>>,
}

impl Transport {
    /// Checks the scheme and builds the TLS configuration the guest's settings ask for.
    pub fn new(config: &Config) -> Result<Transport, TlsError> {
        for server in config.servers() {
            check_scheme(&server, config.allow_insecure_http)?;
        }
        let tls = match config.server.scheme() {
            "https" | "wss" => {
                let trust = ServerTrust::for_guest(
                    config.ca_cert.as_deref(),
                    &config.state_dir,
                    config.ca_fingerprint,
                );
                match &trust {
                    ServerTrust::Pinned(fp) => tracing::info!(
                        ca_sha256 = %hex::encode(fp),
                        "trusting the server's CA by the enrollment token's fingerprint"
                    ),
                    ServerTrust::CaFile(path) => {
                        tracing::info!(ca = %path.display(), "trusting the server's CA from a file")
                    }
                    ServerTrust::System => {
                        tracing::info!("trusting the server by the system's root certificates")
                    }
                }
                Some(client_config(&trust)?)
            }
            _ => {
                tracing::warn!(server = %config.server, "plain http: the credential travels unencrypted");
                None
            }
        };
        Ok(Transport {
            tls,
            state_dir: config.state_dir.clone(),
            kept: Arc::new(Mutex::new(false)),
        })
    }

    /// The rustls configuration for `wss://` (none for `ws://`).
    pub fn tls_config(&self) -> Option<Arc<ClientConfig>> {
        self.tls.as_ref().map(|tls| tls.config.clone())
    }

    /// The client for package downloads: the same trust as the WebSocket.
    pub fn http_client(&self) -> Result<reqwest::Client, TlsError> {
        let agent = concat!("deskfleet-guest/", env!("CARGO_PKG_VERSION"));
        match &self.tls {
            Some(tls) => tls.http_client(agent),
            None => Ok(reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .user_agent(agent)
                .build()?),
        }
    }

    /// After a handshake succeeded: keeps a CA accepted by pinning in the state
    /// directory, so that later starts trust it without the token.
    pub async fn keep_pinned_ca(&self) {
        let Some(ca) = self.tls.as_ref().and_then(TlsClient::pinned_ca) else {
            return;
        };
        if *self.kept.lock().expect("not poisoned") {
            return;
        }
        let path = self.state_dir.join(SERVER_CA_FILE);
        let pem = pem_certificate(&ca);
        let written = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                crate::state::write_atomically(&path, pem.as_bytes())
            })
            .await
            .expect("writing a file does not panic")
        };
        match written {
            Ok(()) => {
                *self.kept.lock().expect("not poisoned") = true;
                tracing::info!(path = %path.display(), ca_sha256 = %hex::encode(fingerprint(&ca)), "kept the server's CA");
            }
            // Pinning goes on working for this run; the next start pins again.
            Err(error) => tracing::warn!(%error, "cannot keep the server's CA"),
        }
    }
}

fn pem_certificate(cert: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Accepts a server whose chain holds the CA with the pinned fingerprint and whose leaf
/// verifies against that CA alone, for the name the guest connected to.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    fingerprint: Fingerprint,
    provider: Arc<CryptoProvider>,
    /// The CA of the last accepted chain.
    accepted: Mutex<Option<CertificateDer<'static>>>,
}

impl PinnedCaVerifier {
    fn accepted(&self) -> Option<CertificateDer<'static>> {
        self.accepted.lock().expect("not poisoned").clone()
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| fingerprint(cert) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's certificate chain has no CA with the enrollment token's fingerprint sha256:{}; refusing to talk to it",
                    hex::encode(self.fingerprint)
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified = webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        *self.accepted.lock().expect("not poisoned") = Some(ca.clone().into_owned());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trust_anchor_is_the_ca_file_then_the_kept_ca_then_the_fingerprint_then_the_system() {
        let dir = tempfile::tempdir().unwrap();
        let file = Path::new("/etc/deskfleet/ca.pem");
        let fp = Some([7; 32]);
        assert_eq!(
            ServerTrust::for_guest(Some(file), dir.path(), fp),
            ServerTrust::CaFile(file.to_owned())
        );
        assert_eq!(
            ServerTrust::for_guest(None, dir.path(), fp),
            ServerTrust::Pinned([7; 32])
        );
        assert_eq!(
            ServerTrust::for_guest(None, dir.path(), None),
            ServerTrust::System
        );
        let kept = dir.path().join(SERVER_CA_FILE);
        std::fs::write(&kept, "kept").unwrap();
        assert_eq!(
            ServerTrust::for_guest(None, dir.path(), fp),
            ServerTrust::CaFile(kept)
        );
    }

    #[test]
    fn plain_http_needs_the_operators_consent() {
        let plain = reqwest::Url::parse("http://127.0.0.1:8087").unwrap();
        assert!(matches!(
            check_scheme(&plain, false),
            Err(TlsError::InsecureHttp { .. })
        ));
        assert!(check_scheme(&plain, true).is_ok());
        let tls = reqwest::Url::parse("https://fleet.example").unwrap();
        assert!(check_scheme(&tls, false).is_ok());
    }

    #[test]
    fn a_kept_ca_reads_back_as_the_same_certificate() {
        let der = CertificateDer::from((0..=255u8).cycle().take(700).collect::<Vec<u8>>());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SERVER_CA_FILE);
        std::fs::write(&path, pem_certificate(&der)).unwrap();
        assert_eq!(read_certificates(&path).unwrap(), vec![der]);
    }
}
