//! The enrollment token as an operator copies it: `DFE1<secret>[.<ca-sha256>]`.
//!
//! The part before the dot is the secret the server knows (by its hash) and the only part
//! a guest ever sends, as `Authorization: Bearer DFE1<secret>`. The optional part after
//! the dot is the lowercase hex SHA-256 of the DER of the server's private CA
//! certificate: it lets a guest that is given nothing but the server's URL and this token
//! verify the server on first contact (as k3s join tokens `K10<ca-hash>::<secret>` do).

/// Every enrollment secret starts with this.
pub const TOKEN_PREFIX: &str = "DFE1";

/// Separates the secret from the CA fingerprint. Never part of a secret (those are
/// alphanumeric).
pub const FINGERPRINT_SEPARATOR: char = '.';

/// A SHA-256 fingerprint: 32 bytes, written as 64 lowercase hex characters.
pub type Fingerprint = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("an enrollment token starts with {TOKEN_PREFIX}")]
    Prefix,
    #[error("the CA fingerprint after the '.' must be 64 hex characters (a SHA-256)")]
    Fingerprint,
}

/// An enrollment token split into what is sent and what is checked.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// `DFE1<secret>`: the bearer credential.
    pub secret: String,
    /// SHA-256 of the DER of the CA certificate the server's chain must contain.
    pub ca_fingerprint: Option<Fingerprint>,
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("secret", &"[redacted]")
            .field("ca_fingerprint", &self.ca_fingerprint.map(hex::encode))
            .finish()
    }
}

impl EnrollmentToken {
    /// Parses `DFE1<secret>` or `DFE1<secret>.<64 hex>`; surrounding whitespace (a
    /// trailing newline in a token file) is ignored.
    pub fn parse(text: &str) -> Result<EnrollmentToken, TokenError> {
        let text = text.trim();
        if !text.starts_with(TOKEN_PREFIX) || text.len() == TOKEN_PREFIX.len() {
            return Err(TokenError::Prefix);
        }
        let (secret, ca_fingerprint) = match text.split_once(FINGERPRINT_SEPARATOR) {
            None => (text, None),
            Some((secret, hash)) => (secret, Some(parse_fingerprint(hash)?)),
        };
        Ok(EnrollmentToken {
            secret: secret.to_owned(),
            ca_fingerprint,
        })
    }

    /// The token as printed for the operator.
    pub fn compose(secret: &str, ca_fingerprint_hex: Option<&str>) -> String {
        match ca_fingerprint_hex {
            Some(hash) => format!("{secret}{FINGERPRINT_SEPARATOR}{hash}"),
            None => secret.to_owned(),
        }
    }
}

/// 64 hex characters (either case) to 32 bytes.
pub fn parse_fingerprint(text: &str) -> Result<Fingerprint, TokenError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(TokenError::Fingerprint);
    }
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(TokenError::Fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_token_splits_into_secret_and_fingerprint() {
        let token = EnrollmentToken::parse(&format!("DFE1abc.{HASH}\n")).unwrap();
        assert_eq!(token.secret, "DFE1abc");
        assert_eq!(hex::encode(token.ca_fingerprint.unwrap()), HASH);
        let plain = EnrollmentToken::parse("DFE1abc").unwrap();
        assert_eq!(plain.secret, "DFE1abc");
        assert_eq!(plain.ca_fingerprint, None);
    }

    #[test]
    fn compose_and_parse_agree() {
        let text = EnrollmentToken::compose("DFE1xyz", Some(HASH));
        assert_eq!(text, format!("DFE1xyz.{HASH}"));
        let token = EnrollmentToken::parse(&text).unwrap();
        assert_eq!(token.secret, "DFE1xyz");
        assert_eq!(EnrollmentToken::compose("DFE1xyz", None), "DFE1xyz");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "DFE1",
            "DFD1abc",
            "abc",
            "DFE1abc.",
            "DFE1abc.zz",
            &format!("DFE1abc.{HASH}00"),
        ] {
            assert!(EnrollmentToken::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = EnrollmentToken::parse("DFE1topsecret").unwrap();
        assert!(!format!("{token:?}").contains("topsecret"));
    }
}
