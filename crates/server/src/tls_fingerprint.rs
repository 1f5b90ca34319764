//! The fingerprint of the server's private CA, as enrollment tokens carry it
//! (`docs/fleet-protocol.md`, "Enrollment tokens").

use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

/// The private CA's certificate in the data directory.
pub const CA_FILE: &str = "ca.pem";

/// Lowercase hex SHA-256 of the DER of the first certificate in `DATA_DIR/ca.pem`;
/// `None` when there is no such file (the operator brought a certificate from a public
/// CA, or TLS is off).
pub fn ca_fingerprint(data_dir: &Path) -> std::io::Result<Option<String>> {
    let pem = match std::fs::read_to_string(data_dir.join(CA_FILE)) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let der = first_certificate_der(&pem).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{CA_FILE} holds no PEM certificate"),
        )
    })?;
    Ok(Some(hex::encode(Sha256::digest(der))))
}

fn first_certificate_der(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let len = pem[start..].find(END)?;
    let body: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_hashes_the_der_of_the_first_certificate() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ca_fingerprint(dir.path()).unwrap(), None);
        let der = b"not really DER, but bytes all the same";
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n{}\n-----END CERTIFICATE-----\n",
            &b64[..20],
            &b64[20..]
        );
        std::fs::write(dir.path().join(CA_FILE), pem).unwrap();
        assert_eq!(
            ca_fingerprint(dir.path()).unwrap().unwrap(),
            hex::encode(Sha256::digest(der))
        );
        std::fs::write(dir.path().join(CA_FILE), "garbage").unwrap();
        assert!(ca_fingerprint(dir.path()).is_err());
    }
}
