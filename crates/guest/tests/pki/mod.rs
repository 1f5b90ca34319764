//! A private CA and an https server for the fake OpAMP server, as the real server has:
//! a CA, a leaf for the names given, and the chain leaf + CA presented on every
//! handshake.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub struct Pki {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub acceptor: TlsAcceptor,
}

impl Pki {
    /// A new CA and a leaf valid for `names` (DNS names or IP addresses).
    pub fn new(names: &[&str]) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "deskfleet test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        let ca_der = ca.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca_der.clone()], key)
        .unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca_der,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }

    /// Lowercase hex SHA-256 of the CA's DER, as enrollment tokens carry it.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.ca_der_fingerprint())
    }

    pub fn ca_der_fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.ca_der.as_ref()).into()
    }
}

/// Serves `app` on `listener`, over TLS when an acceptor is given; counts the TLS
/// handshakes that failed (a client that refused the server's certificate).
pub async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    failed_handshakes: Arc<AtomicUsize>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        let failed = failed_handshakes.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => connection(TokioIo::new(tls), app).await,
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                },
                None => connection(TokioIo::new(tcp), app).await,
            }
        });
    }
}

async fn connection<I>(io: I, app: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            app.clone().oneshot(request)
        });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}
