//! A client that writes HTTP/1.1 by hand over TLS (or plain TCP), so that tests can send
//! what no well-behaved client would: broken headers, lies about lengths, half a body.

use crate::harness::Server;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

pub struct Raw {
    stream: Pin<Box<dyn Stream>>,
    leaf: Option<Vec<u8>>,
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

fn tls_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl Raw {
    /// A TLS connection that trusts the server's own CA.
    pub async fn connect(server: &Server) -> std::io::Result<Raw> {
        Self::connect_as(server, "127.0.0.1").await
    }

    pub async fn connect_as(server: &Server, name: &str) -> std::io::Result<Raw> {
        Self::connect_with_ca(server, &server.dir.path().join("ca.pem"), name).await
    }

    pub async fn connect_with_ca(server: &Server, ca: &Path, name: &str) -> std::io::Result<Raw> {
        let tcp = TcpStream::connect(server.addr()).await?;
        let connector = tokio_rustls::TlsConnector::from(tls_config(ca));
        let name = ServerName::try_from(name.to_string()).unwrap();
        let tls = connector.connect(name, tcp).await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        Ok(Raw {
            stream: Box::pin(tls),
            leaf,
        })
    }

    /// A plain TCP connection.
    pub async fn plain(server: &Server) -> Raw {
        Raw {
            stream: Box::pin(TcpStream::connect(server.addr()).await.unwrap()),
            leaf: None,
        }
    }

    /// The DER of the certificate the server presented.
    pub fn peer_leaf(&self) -> Vec<u8> {
        self.leaf.clone().expect("a TLS connection")
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        // A peer that stopped reading is fine: the test looks at what comes back.
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// Writes `bytes` unless the server stops taking them for `patience`.
    pub async fn write_for(&mut self, bytes: &[u8], patience: Duration) {
        let _ = tokio::time::timeout(patience, self.write(bytes)).await;
    }

    /// Sends `request` and reads one answer; `None` when the connection ends without one.
    pub async fn send(&mut self, request: &[u8]) -> Option<Answer> {
        self.write(request).await;
        self.read_answer(Duration::from_secs(10)).await
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .expect("an answer")
    }

    /// A request signed with the bootstrap admin's key, on `/v2/{project}{path}`. With
    /// `declared`, only the head is sent, declaring that many body bytes.
    pub async fn signed(
        &mut self,
        server: &Server,
        method: &str,
        path: &str,
        body: &[u8],
        declared: Option<usize>,
    ) -> Option<Answer> {
        let head = signed_head(server, method, path, body, declared);
        self.write(head.as_bytes()).await;
        if declared.is_none() {
            self.write(body).await;
        }
        self.read_answer(Duration::from_secs(10)).await
    }

    /// Reads one response, head and `Content-Length` body.
    pub async fn read_answer(&mut self, patience: Duration) -> Option<Answer> {
        tokio::time::timeout(patience, self.read_answer_inner())
            .await
            .ok()
            .flatten()
    }

    async fn read_answer_inner(&mut self) -> Option<Answer> {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Answer {
            status,
            headers,
            body,
        })
    }

    /// Whether the server closes the connection (EOF or reset) within `patience`.
    pub async fn closed_within(&mut self, patience: Duration) -> bool {
        let mut sink = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut sink)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// Keeps sending `piece` every `every` until the server closes, for at most `patience`.
    pub async fn trickle_until_closed(
        &mut self,
        piece: &[u8],
        every: Duration,
        patience: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            if self.stream.write_all(piece).await.is_err() || self.stream.flush().await.is_err() {
                return true;
            }
            if self.closed_within(every).await {
                return true;
            }
        }
        false
    }
}

/// Whether the server closes a plain TCP connection within `patience`.
pub async fn tcp_closed_within(stream: &mut TcpStream, patience: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn signed_head(
    server: &Server,
    method: &str,
    path: &str,
    body: &[u8],
    declared: Option<usize>,
) -> String {
    let b = &server.bootstrap;
    let path = format!("/v2/{}{path}", b.project_id);
    let host = server.addr().to_string();
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Host".to_string(), host),
        ("X-Project-Id".to_string(), b.project_id.clone()),
    ];
    let signed = deskfleet_proto::sign::sign(
        &b.access_key,
        &b.secret_key,
        method,
        &path,
        &[],
        &headers,
        body,
        chrono::Utc::now(),
    );
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in &signed.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\n\r\n",
        declared.unwrap_or(body.len())
    ));
    head
}

/// The head of an upload of `length` bytes with no credential.
pub fn unsigned_upload_head(length: usize) -> String {
    format!(
        "POST /v2/p/desktops/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// The head of an upload of `length` bytes under a known access key whose signature was
/// computed over another body, so it can only fail once the body is in.
pub fn badly_signed_upload_head(server: &Server, length: usize) -> String {
    signed_head(server, "POST", "/desktops/agents", b"{}", Some(length))
}
