//! Secret keys at rest. The SK of an AK/SK pair must be available in clear to check HMAC
//! signatures, so it cannot be hashed like a password; instead it is sealed with a
//! key-encryption key (KEK) that lives outside the database, in the file named by the
//! `secrets.key_file` setting (by default `DATA_DIR/secrets.key`: 32 random bytes, mode
//! 0600, created on first start). A dump or backup of the database alone yields no usable
//! secret key. Replicas sharing one PostgreSQL database are given the same file.
//!
//! Stored form: `v1:` + base64(nonce || ciphertext) with ChaCha20-Poly1305, the access key
//! as associated data (a sealed SK copied onto another AK's row does not open). The store
//! keeps the string as it is; sealing and opening happen only here.
//!
//! On start [`open_keyring`] brings the database in line with the key file: SKs still in
//! clear (databases from before encryption) are sealed in place, and every sealed SK must
//! open, so a wrong or missing key file stops the start with a clear message instead of
//! failing signatures one by one.

use crate::settings::Settings;
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use deskfleet_core::store::Store;
use secrecy::{ExposeSecret, SecretString};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The key file's name in the data directory when `secrets.key_file` is not set.
/// The prefix of a sealed secret of this version.
const V1: &str = "v1:";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// The key-encryption key. Never printed: `Debug` shows only where it came from.
#[derive(Clone)]
pub struct Keyring {
    cipher: ChaCha20Poly1305,
    path: PathBuf,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why a stored secret key could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the stored secret key is not encrypted")]
    NotSealed,
    #[error("the stored secret key is not a valid v1 encoding")]
    Malformed,
    #[error("the stored secret key does not decrypt with this key file")]
    WrongKey,
}

impl Keyring {
    pub fn new(key: &[u8; KEY_LEN], path: PathBuf) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            path,
        }
    }

    /// Where the key was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a stored value is sealed (as opposed to a secret key still in clear).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(V1)
    }

    /// Seals the secret key of `access_key` for storage.
    pub fn seal(&self, access_key: &str, secret: &SecretString) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: access_key.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{V1}{}", BASE64.encode(out))
    }

    /// Opens what [`Keyring::seal`] stored for `access_key`.
    pub fn open(&self, access_key: &str, stored: &str) -> Result<SecretString, OpenError> {
        let encoded = stored.strip_prefix(V1).ok_or(OpenError::NotSealed)?;
        let raw = BASE64.decode(encoded).map_err(|_| OpenError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: access_key.as_bytes(),
                },
            )
            .map_err(|_| OpenError::WrongKey)?;
        let plain = String::from_utf8(plain).map_err(|_| OpenError::Malformed)?;
        Ok(SecretString::from(plain))
    }
}

fn read_key(path: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the secrets key file {}", path.display()))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        anyhow!(
            "the secrets key file {} must hold exactly {KEY_LEN} bytes, not {} \
             (create one with: head -c 32 /dev/urandom > FILE; chmod 600 FILE)",
            path.display(),
            bytes.len()
        )
    })
}

fn create_key(path: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    let key: [u8; KEY_LEN] = rand::random();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating the secrets key file {}", path.display()))?;
    file.write_all(&key)?;
    file.sync_all()?;
    Ok(key)
}

/// Loads the key file named by the settings (creating it when neither it nor any sealed
/// secret exists yet), checks that every sealed secret key opens with it, and seals the
/// secret keys still stored in clear. Safe to run from several processes at once.
pub async fn open_keyring(settings: &Settings, store: &dyn Store) -> anyhow::Result<Keyring> {
    let path = settings.secrets_key_file();
    let keys = store
        .list_access_keys()
        .await
        .context("reading the access keys")?;
    let any_sealed = keys.iter().any(|k| Keyring::is_sealed(&k.secret_key));
    let key = if path.exists() {
        read_key(&path)?
    } else if any_sealed {
        bail!(
            "the database holds encrypted secret keys but the secrets key file {} does not \
             exist: restore the key file the database was encrypted with (every replica \
             needs the same file), or point secrets.key_file at it",
            path.display()
        );
    } else {
        match create_key(&path) {
            Ok(key) => {
                tracing::info!(path = %path.display(), "created the secrets key file");
                key
            }
            // Another process sharing the data directory created it first.
            Err(_) if path.exists() => read_key(&path)?,
            Err(e) => return Err(e),
        }
    };
    let keyring = Keyring::new(&key, path.clone());
    let mut sealed_now = 0u32;
    for k in &keys {
        if Keyring::is_sealed(&k.secret_key) {
            keyring.open(&k.access_key, &k.secret_key).map_err(|e| {
                anyhow!(
                    "the secret key of access key {} cannot be read with the secrets key file \
                     {} ({e}): this is not the key file the database was encrypted with; \
                     restore the right one or point secrets.key_file at it",
                    k.access_key,
                    path.display()
                )
            })?;
        } else {
            let secret = SecretString::from(k.secret_key.clone());
            let sealed = keyring.seal(&k.access_key, &secret);
            if store
                .replace_secret_key(&k.access_key, &k.secret_key, &sealed)
                .await?
            {
                sealed_now += 1;
            }
        }
    }
    if sealed_now > 0 {
        tracing::info!(
            count = sealed_now,
            "encrypted secret keys that were stored in clear"
        );
    }
    Ok(keyring)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(byte: u8) -> Keyring {
        Keyring::new(&[byte; KEY_LEN], PathBuf::from("k"))
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_access_key() {
        let k = keyring(1);
        let secret = SecretString::from("s3cr3t-s3cr3t".to_string());
        let sealed = k.seal("AK1", &secret);
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("s3cr3t"));
        assert_ne!(sealed, k.seal("AK1", &secret), "a fresh nonce each time");
        assert_eq!(
            k.open("AK1", &sealed).unwrap().expose_secret(),
            "s3cr3t-s3cr3t"
        );
        assert!(matches!(k.open("AK2", &sealed), Err(OpenError::WrongKey)));
        assert!(matches!(
            keyring(2).open("AK1", &sealed),
            Err(OpenError::WrongKey)
        ));
        assert!(matches!(k.open("AK1", "s3cr3t"), Err(OpenError::NotSealed)));
        assert!(matches!(k.open("AK1", "v1:!!"), Err(OpenError::Malformed)));
        assert!(matches!(
            k.open("AK1", "v1:AAAA"),
            Err(OpenError::Malformed)
        ));
        assert!(!format!("{k:?}").contains("1, 1"));
    }
}
