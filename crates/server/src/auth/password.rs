//! The one password check, shared by `POST /v3/auth/tokens` and the console's sign-in.
//!
//! Password guessing is bounded as signature guessing is: after
//! `auth.login_lockout_failures` wrong passwords in a row a user's logins are refused for
//! `auth.login_lockout_secs`, the right password included. The counters live in the
//! database, so every replica (and both ways in) counts together, and
//! `admin users unlock` lifts a lock.

use crate::AppState;
use crate::auth::secrets::verify_password;
use crate::auth::{count_failure, secs_until};
use crate::error::ApiError;
use deskfleet_core::model::{AuthSubject, Lockout, User};

/// Password checks (argon2) that may run at once, in this process: each takes 19 MiB and
/// tens of milliseconds of a core, and anyone may ask for one.
static PASSWORD_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// How long a login waits for its turn before it is refused as busy.
const PASSWORD_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a login was refused. Each way in words it in its own dialect.
#[derive(Debug)]
pub enum LoginRefused {
    /// Unknown user or wrong password: the caller is not told which.
    BadCredentials,
    /// Too many wrong passwords; try again in this many seconds.
    Locked { secs: i64 },
    /// Too many password checks are running; try again shortly.
    Busy,
    /// The right password of a disabled user.
    Disabled,
    /// The store failed.
    Store(ApiError),
}

impl From<deskfleet_core::store::StoreError> for LoginRefused {
    fn from(e: deskfleet_core::store::StoreError) -> Self {
        LoginRefused::Store(e.into())
    }
}

/// Checks `password` for the user `user_name` of the domain `domain_name`, counting a
/// wrong one against the user's lockout; returns the user.
pub async fn check_password(
    state: &AppState,
    domain_name: &str,
    user_name: &str,
    password: String,
) -> Result<User, LoginRefused> {
    let Some(user) = state.store.find_user(domain_name, user_name).await? else {
        count_failure("bad_password");
        return Err(LoginRefused::BadCredentials);
    };
    // The request's trace (if it has one) names the user who tried, whatever the outcome.
    crate::audit::note_login_user(&user);
    let subject = AuthSubject::User(user.id.clone());
    let failures = state.store.auth_failures(&subject).await?;
    let now = state.clock.now();
    if let Some(until) = failures.and_then(|f| f.locked_at(now)) {
        count_failure("user_locked");
        tracing::info!(user = %user.name, "login refused: user locked");
        return Err(LoginRefused::Locked {
            secs: secs_until(until, now),
        });
    }
    let hash = user.password_hash.clone();
    // Checking a password costs argon2's memory (19 MiB) and tens of milliseconds of a
    // core, and anyone may ask: only a few run at once, the others wait their turn, and a
    // turn that does not come in time is refused, not a pile of hashes.
    let Ok(Ok(_turn)) = tokio::time::timeout(PASSWORD_CHECK_WAIT, PASSWORD_CHECKS.acquire()).await
    else {
        metrics::counter!("deskfleet_password_checks_refused_total").increment(1);
        return Err(LoginRefused::Busy);
    };
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| LoginRefused::Store(ApiError::internal(&e)))?;
    if !ok {
        count_failure("bad_password");
        let lockout = Lockout {
            failures: state.settings.auth.login_lockout_failures,
            lock_ms: state.settings.auth.login_lockout_secs as i64 * 1000,
        };
        let after = state
            .store
            .record_auth_failure(&subject, state.clock.now(), lockout)
            .await?;
        if after.locked_until.is_some() && after.failures == lockout.failures {
            crate::audit::note_lockout("the user");
            tracing::warn!(user = %user.name, "user locked after repeated wrong passwords");
        } else {
            tracing::info!(user = %user.name, "wrong password");
        }
        return Err(LoginRefused::BadCredentials);
    }
    if failures.is_some() {
        state.store.clear_auth_failures(&subject).await?;
    }
    if user.disabled {
        count_failure("user_disabled");
        return Err(LoginRefused::Disabled);
    }
    Ok(user)
}
