//! Who is on the other end of a fleet request, told from its headers alone.
//!
//! Authentication is the first thing every `/v1/*` request goes through: the bearer is
//! read from `Authorization` and looked up before any body is read, gunzipped or
//! decoded, and before the request counts against admission. An unauthenticated peer
//! costs the server one hash and one indexed lookup, never a buffer.

use super::FleetAuth;
use crate::AppState;
use crate::auth::secrets::sha256_hex;
use crate::error::ApiError;
use axum::http::{HeaderMap, header};
use deskfleet_proto::error::ErrorCode;

/// Longer bearers are refused without a lookup: no credential or token is near this long.
const MAX_BEARER_LEN: usize = 512;

/// The JSON error of a fleet request, with `Retry-After` where it helps.
pub fn refuse(code: ErrorCode, message: impl Into<String>, retry_after: Option<u64>) -> ApiError {
    let mut error = match code {
        ErrorCode::Unauthenticated => ApiError::unauthenticated(&message.into()),
        code => ApiError::new(code).with_message(message),
    };
    error.retry_after_secs = retry_after;
    error
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()
        .and_then(deskfleet_proto::opamp::bearer_token)
        .filter(|s| s.len() <= MAX_BEARER_LEN)
}

/// Authenticates a fleet request from its headers: a desktop credential or an unexpired,
/// unspent enrollment token. Returns the SHA-256 of the bearer with who it is.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, FleetAuth), ApiError> {
    let Some(secret) = bearer(headers) else {
        return Err(refuse(
            ErrorCode::Unauthenticated,
            "send Authorization: Bearer <enrollment token or desktop credential>",
            None,
        ));
    };
    // An enrollment token may come as printed, with the CA fingerprint after a `.` that
    // only the guest needs: the credential is the secret before it.
    let secret = secret.split_once('.').map_or(secret, |(secret, _)| secret);
    let hash = sha256_hex(secret);
    let auth = if secret.starts_with("DFD1") {
        match state.store.find_desktop_by_credential(&hash).await? {
            Some(identity) => FleetAuth::Desktop(Box::new(identity)),
            None => {
                return Err(refuse(
                    ErrorCode::Unauthenticated,
                    "unknown desktop credential",
                    None,
                ));
            }
        }
    } else {
        match state
            .store
            .find_enrollment_token(&hash, state.clock.now())
            .await?
        {
            Some(grant) => FleetAuth::Enrollment {
                grant,
                token_sha256: hash.clone(),
            },
            None => {
                return Err(refuse(
                    ErrorCode::Unauthenticated,
                    "unknown, expired or spent enrollment token",
                    None,
                ));
            }
        }
    };
    Ok((hash, auth))
}
