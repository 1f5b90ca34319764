//! The session cookie: its name and flags, reading it from a request, setting and clearing
//! it.
//!
//! The cookie is `__Host-`prefixed, which obliges `Secure`, `Path=/` and no `Domain`: no
//! other host or path can plant or shadow it. Only the console reads it (the API
//! authenticates with signatures and tokens, never with cookies).

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

/// The session cookie's name.
pub const COOKIE: &str = "__Host-deskfleet-console";

/// The session id from the request's cookies, if any.
pub fn session_id(headers: &HeaderMap) -> Option<SecretString> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| SecretString::from(value.to_owned()))
}

/// A new random session id.
pub fn new_session_id() -> SecretString {
    SecretString::from(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(id: &SecretString, max_age_secs: u64) -> HeaderValue {
    let value = format!(
        "{COOKIE}={}; Path=/; Max-Age={max_age_secs}; Secure; HttpOnly; SameSite=Strict",
        id.expose_secret()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| clear_cookie())
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-deskfleet-console=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
    )
}
