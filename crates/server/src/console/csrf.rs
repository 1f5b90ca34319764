//! Cross-site request forgery: every POST of the console must come from its own pages.
//!
//! Two independent checks. (1) [`check_origin`], run on every POST before any handler
//! (`super::page::same_origin_posts`): a POST whose `Sec-Fetch-Site` is not `same-origin`,
//! or whose `Origin` is not this host, is refused. (2) [`check`], run by
//! `super::page::Form`: a signed-in POST must carry the session's CSRF token in a hidden
//! field, compared in constant time. The token is the SHA-256 of a fixed label and
//! the session id, so it needs no storage and is worthless without the cookie.

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::header;
use deskfleet_proto::error::ErrorCode;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// The hidden field that carries the token.
pub const FIELD: &str = "csrf_token";

/// The CSRF token of a session.
pub fn token_for(session_id: &SecretString) -> String {
    crate::auth::secrets::sha256_hex(&format!(
        "deskfleet-console-csrf\0{}",
        session_id.expose_secret()
    ))
}

/// Whether `given` is the session's token, `expected`.
pub fn check(expected: &str, given: Option<&str>) -> Result<(), ApiError> {
    let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())));
    if ok {
        Ok(())
    } else {
        Err(forged(
            "the form's security token is missing or out of date; reload the page and try again",
        ))
    }
}

fn forged(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::Forbidden)
        .with_message("The request was refused as a possible cross-site request forgery.")
        .with_detail(detail)
}

/// Refuses a request that a browser says came from another site, or whose `Origin` is
/// not the host it was sent to.
pub fn check_origin(request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(forged("the form was sent from another site"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or("");
        if host.is_empty() || origin_host != host {
            return Err(forged("the form's origin is not this server"));
        }
    }
    Ok(())
}
