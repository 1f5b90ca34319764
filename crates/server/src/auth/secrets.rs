//! Generating and checking secrets: passwords (argon2id, stored as PHC strings), tokens and
//! access keys (random, tokens stored only as their SHA-256).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// A random string of `len` characters from `[A-Za-z0-9]`.
pub fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new token value. The `DFT1` prefix tells a deskfleet token from anything else.
pub fn new_token() -> String {
    format!("DFT1{}", random_alphanumeric(60))
}

/// A new AK/SK pair: 20 upper-case characters and 40 characters, like IAM's.
pub fn new_access_key() -> (String, String) {
    (
        random_alphanumeric(20).to_uppercase(),
        random_alphanumeric(40),
    )
}

pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Hashes a password; CPU-heavy, call from `spawn_blocking`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against its PHC string; CPU-heavy, call from `spawn_blocking`.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_tokens_differ() {
        let phc = hash_password("s3cret!").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("s3cret!", &phc));
        assert!(!verify_password("s3cret", &phc));
        assert!(!verify_password("s3cret!", "not a hash"));
        assert_ne!(new_token(), new_token());
        let (ak, sk) = new_access_key();
        assert_eq!((ak.len(), sk.len()), (20, 40));
        assert_eq!(sha256_hex("").len(), 64);
    }
}
