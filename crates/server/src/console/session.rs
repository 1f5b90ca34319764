//! Console sessions: sign-in creates one, every request finds and checks it, sign-out
//! deletes it.
//!
//! The cookie holds 32 random bytes (base64url); the database holds only their SHA-256,
//! so a copy of the database signs no one in. A session ends when it has been idle for
//! `console.idle_timeout_secs` or lived `console.absolute_timeout_secs`, whichever comes
//! first, and at once when its user is disabled or loses its role. Its last use is
//! written at most once a minute (or each half idle timeout, if shorter), not on every
//! request.
//!
//! The cookie itself is [`super::cookie`]'s.

use super::cookie::{new_session_id, session_id};
use super::csrf;
use super::error::{ConsoleError, NoSession};
use crate::AppState;
use crate::auth::policy::{Api, grants};
use crate::auth::secrets::sha256_hex;
use crate::auth::{Caller, Principal};
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use deskfleet_core::clock::Millis;
use deskfleet_core::console::ConsoleSession;
use deskfleet_core::ids::{ProjectId, UserId};
use deskfleet_core::model::{Role, User};
use secrecy::{ExposeSecret, SecretString};

/// A session's last use is written when it is older than this (or than half the idle
/// timeout, when that is shorter, so that a session in use never idles out).
const TOUCH_EVERY_MS: Millis = 60_000;

/// The signed-in user of a console request.
#[derive(Debug, Clone)]
pub struct ConsoleUser {
    pub user_id: UserId,
    pub user_name: String,
    pub project: ProjectId,
    pub role: Role,
    /// The user's account.
    pub domain: deskfleet_core::model::Domain,
    /// The per-session token every form carries.
    pub csrf: String,
    /// The SHA-256 of the session id: the row to delete at sign-out.
    pub session_sha256: String,
}

impl ConsoleUser {
    /// Whether the role grants `api`: pages leave out the controls it does not.
    pub fn may(&self, api: Api) -> bool {
        grants(self.role, api)
    }

    /// The user as the API's authorisation sees a caller.
    pub fn principal(&self) -> Principal {
        Principal {
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            project_id: self.project.clone(),
            role: Some(self.role),
            expires_at: None,
            domain: self.domain.clone(),
        }
    }

    /// Authorises `api` exactly as the API would (project, role, throttle).
    pub fn authorize(&self, state: &AppState, api: Api) -> Result<ProjectId, ApiError> {
        let caller = Caller {
            principal: self.principal(),
            header_project: None,
        };
        state.authorize(&caller, self.project.as_str(), api)
    }
}

/// Creates the session of `user` on `project` and returns its id for the cookie.
pub async fn create(
    state: &AppState,
    user: &User,
    project: &ProjectId,
) -> Result<SecretString, ApiError> {
    let now = state.clock.now();
    let settings = &state.settings.console;
    // Stale rows go when someone signs in: bounded work, at the rate of sign-ins.
    let idle_ms = settings.idle_timeout_secs as i64 * 1000;
    state
        .store
        .delete_stale_console_sessions(now, now - idle_ms)
        .await?;
    let id = new_session_id();
    let session = ConsoleSession {
        user_id: user.id.clone(),
        project_id: project.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + settings.absolute_timeout_secs as i64 * 1000,
    };
    state
        .store
        .create_console_session(&sha256_hex(id.expose_secret()), &session)
        .await?;
    Ok(id)
}

/// The session of a request, checked: known, not expired, its user enabled and holding a
/// role on its project.
pub async fn load(state: &AppState, headers: &HeaderMap) -> Result<ConsoleUser, ConsoleError> {
    let id = session_id(headers).ok_or(ConsoleError::SignIn(NoSession::Missing))?;
    let sha = sha256_hex(id.expose_secret());
    let session = state
        .store
        .find_console_session(&sha)
        .await?
        .ok_or(ConsoleError::SignIn(NoSession::Missing))?;
    let now = state.clock.now();
    let idle_ms = state.settings.console.idle_timeout_secs as i64 * 1000;
    if now >= session.expires_at || now - session.last_seen_at >= idle_ms {
        state.store.delete_console_session(&sha).await?;
        return Err(ConsoleError::SignIn(NoSession::Expired));
    }
    let user = state
        .store
        .find_user_by_id(&session.user_id)
        .await?
        .filter(|u| !u.disabled);
    let role = match &user {
        Some(u) => state.store.find_role(&u.id, &session.project_id).await?,
        None => None,
    };
    let (Some(user), Some(role)) = (user, role) else {
        state.store.delete_console_session(&sha).await?;
        return Err(ConsoleError::SignIn(NoSession::Expired));
    };
    if now - session.last_seen_at >= TOUCH_EVERY_MS.min(idle_ms / 2) {
        state.store.touch_console_session(&sha, now).await?;
    }
    Ok(ConsoleUser {
        user_id: user.id,
        user_name: user.name,
        domain: user.domain,
        project: session.project_id,
        role,
        csrf: csrf::token_for(&id),
        session_sha256: sha,
    })
}

impl FromRequestParts<AppState> for ConsoleUser {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ConsoleError> {
        load(state, &parts.headers).await
    }
}
