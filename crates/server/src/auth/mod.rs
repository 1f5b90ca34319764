//! Authentication and authorisation of `/v2` calls.
//!
//! A request is authenticated either by an `SDK-HMAC-SHA256` signature (AK/SK, as the
//! official SDKs send it) or by an `X-Auth-Token` from `POST /v3/auth/tokens`. The
//! middleware [`authenticate`] buffers the body (the signature covers its exact bytes),
//! verifies the credential and leaves a [`Caller`] in the request's extensions. Each
//! handler then calls [`AppState::authorize`] with its [`Api`], which checks the project,
//! the role and the throttle.

pub mod files;
pub mod keyring;
pub mod password;
pub mod policy;
pub mod revocation;
pub mod secrets;
pub mod throttle;

use crate::AppState;
use crate::error::{ApiError, current_request_id};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use deskfleet_core::clock::Millis;
use deskfleet_core::ids::{ProjectId, UserId};
use deskfleet_core::model::{AuthSubject, Lockout, Role};
use deskfleet_proto::error::ErrorCode;
use deskfleet_proto::sign::{self, SignError};
use http::HeaderMap;
use policy::{Api, Denial, grants};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Who is calling, as established by a verified credential.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    pub user_name: String,
    /// The project the key or token is bound to.
    pub project_id: ProjectId,
    /// The user's role on that project, if any.
    pub role: Option<Role>,
    /// For tokens: when it stops working.
    pub expires_at: Option<Millis>,
    /// The user's account (for the audit trail).
    pub domain: deskfleet_core::model::Domain,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The `X-Project-Id` header, when sent (the SDK always sends it with AK/SK).
    pub header_project: Option<String>,
}

/// A verified credential as cached: who it is, the secret key for AK/SK, the failures
/// recorded against it when it was read, and when that was.
#[derive(Clone)]
struct CachedCredential {
    principal: Principal,
    secret: Option<SecretString>,
    failures: deskfleet_core::model::AuthFailures,
    at: Instant,
}

/// The credential cache, per process. It is dropped whole whenever the credential revision
/// in the database moves (see [`revocation`]), so a revocation made by any process takes
/// effect within one poll; `auth.credential_cache_secs` bounds it besides.
#[derive(Debug, Default)]
pub struct AuthState {
    cache: Mutex<HashMap<String, CachedCredential>>,
    /// Bumped each time the cache is dropped: a lookup that started before a drop does
    /// not put what it read (maybe before the revocation) back in.
    epoch: AtomicU64,
    /// The credential revision last seen in the database.
    pub(crate) revision: Mutex<Option<i64>>,
    pub throttle: throttle::Throttle,
}

impl std::fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedCredential")
            .field("principal", &self.principal)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// Forgets every cached credential.
    pub fn drop_cache(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        cache.clear();
    }

    fn forget(&self, key: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(key);
    }
}

/// Counts a refused authentication, by why.
pub(crate) fn count_failure(reason: &'static str) {
    metrics::counter!("deskfleet_auth_failures_total", "reason" => reason).increment(1);
}

/// Seconds from `now` until `until`, rounded up, for messages.
pub(crate) fn secs_until(until: Millis, now: Millis) -> i64 {
    ((until - now).max(0) + 999) / 1000
}

const BODY_CHECK_INLINE_BYTES: usize = 64 * 1024;

/// Middleware for authenticated routes: check the credential in the headers, then read
/// the body within its bounds, then verify the signature over it; insert [`Caller`].
///
/// Nothing of the body is read before the headers name a live credential: a token is
/// checked whole, a signature as far as it can be without the body (well-formed, a known
/// access key, a fresh `X-Sdk-Date`). A body that is then read before its signature is
/// verified counts against the shared [`BodyBudget`].
pub async fn authenticate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let (caller, body) =
        if let Some(token) = parts.headers.get("x-auth-token") {
            let token = token
                .to_str()
                .map_err(|_| ApiError::unauthenticated("decrypt token fail"))?;
            let principal = state.authenticate_token(token).await?;
            let body = state.read_request_body(body, &parts.headers, true).await?;
            (principal, body)
        } else if let Some(authorization) = parts.headers.get(http::header::AUTHORIZATION) {
            let authorization = authorization
                .to_str()
                .map_err(|_| malformed_authorization())?
                .to_string();
            let (parsed, credential) = state
                .precheck_signature(&authorization, &parts.headers)
                .await?;
            let body = state.read_request_body(body, &parts.headers, false).await?;
            let principal = state
                .verify_signature(
                    &authorization,
                    parsed,
                    credential,
                    &parts.method,
                    &parts.uri,
                    &parts.headers,
                    body.clone(),
                )
                .await?;
            (principal, body)
        } else {
            return Err(ApiError::unauthenticated("x-auth-token not found").with_detail(
            "send an SDK-HMAC-SHA256 Authorization header (AK/SK) or an X-Auth-Token header",
        ));
        };
    let caller = Caller {
        principal: caller,
        header_project: parts
            .headers
            .get("x-project-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    crate::audit::note_principal(&caller.principal);
    crate::audit::note_request_body(&body);
    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Reads a whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // The only failure of a local, in-memory body is hitting the limit; a broken
        // connection surfaces the same way and the client is gone anyway.
        tracing::debug!(error = %e, "request body refused");
        body_too_large(limit)
    })
}

fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(ErrorCode::BodyTooLarge)
        .with_detail(format!("the request body must be at most {limit} bytes"))
}

/// Bodies up to this size are read without drawing on the [`BodyBudget`].
const UNMETERED_BODY_BYTES: u64 = 64 * 1024;

/// The bytes of request bodies that may be held, across all connections, before their
/// signature is verified. Without it, callers who know an access key but not its secret
/// could make the server hold `max_body_bytes` per connection.
#[derive(Debug)]
pub struct BodyBudget(std::sync::Arc<tokio::sync::Semaphore>);

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        Self(std::sync::Arc::new(tokio::sync::Semaphore::new(
            bytes.min(tokio::sync::Semaphore::MAX_PERMITS),
        )))
    }

    fn take(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        self.0.clone().try_acquire_many_owned(bytes).ok()
    }
}

impl AppState {
    /// Reads the request body within `max_body_bytes`, `http.body_read_timeout_ms` and,
    /// for a caller not yet verified, the shared [`BodyBudget`].
    pub(crate) async fn read_request_body(
        &self,
        body: Body,
        headers: &HeaderMap,
        verified: bool,
    ) -> Result<Bytes, ApiError> {
        let limit = self.settings.max_body_bytes;
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(body_too_large(limit));
        }
        let _held = match declared {
            _ if verified => None,
            Some(n) if n <= UNMETERED_BODY_BYTES => None,
            // A body of unknown length may be as large as the limit.
            _ => {
                let bytes = declared.map_or(limit, |n| n as usize);
                Some(self.body_budget.take(bytes).ok_or_else(|| {
                    metrics::counter!("deskfleet_http_body_budget_refusals_total").increment(1);
                    let mut e = ApiError::new(ErrorCode::Unavailable).with_detail(
                        "too many large request bodies are being received; retry shortly",
                    );
                    e.retry_after_secs = Some(1);
                    e
                })?)
            }
        };
        let deadline = std::time::Duration::from_millis(self.settings.http.body_read_timeout_ms);
        tokio::time::timeout(deadline, read_body(body, limit))
            .await
            .unwrap_or_else(|_| {
                Err(
                    ApiError::new(ErrorCode::RequestTimeout).with_detail(format!(
                        "the request body did not arrive within {} ms",
                        deadline.as_millis()
                    )),
                )
            })
    }

    /// What can be checked of a signed request before its body is read: a well-formed
    /// header, a known, unlocked access key, a fresh `X-Sdk-Date`. Returns the parsed
    /// header and the key's credential, for [`Self::verify_signature`] once the body is in.
    async fn precheck_signature<'a>(
        &self,
        authorization: &'a str,
        headers: &HeaderMap,
    ) -> Result<(sign::Authorization<'a>, CachedCredential), ApiError> {
        let parsed = parse_signature_header(authorization)?;
        let credential = self.access_key_credential(parsed.access_key).await?;
        let now = self.clock.now();
        if let Some(until) = credential.failures.locked_at(now) {
            count_failure("locked");
            return Err(ak_locked(secs_until(until, now)));
        }
        self.check_sdk_date(headers)?;
        Ok((parsed, credential))
    }

    fn check_sdk_date(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let date = headers
            .get("x-sdk-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                count_failure("missing_date");
                ApiError::unauthenticated("verify aksk signature fail")
                    .with_detail("the X-Sdk-Date header (yyyyMMddTHHmmssZ) is missing")
            })?;
        let date = sign::parse_sdk_date(date).map_err(|_| {
            count_failure("bad_date");
            ApiError::unauthenticated("verify aksk signature fail")
                .with_detail("X-Sdk-Date must look like 20250101T000000Z (UTC)")
        })?;
        let skew = (self.clock.now() - date.timestamp_millis()).abs() / 1000;
        let max_skew = self.settings.auth.max_clock_skew_secs as i64;
        if skew > max_skew {
            count_failure("clock_skew");
            return Err(ApiError::unauthenticated("verify aksk signature fail").with_detail(format!(
                "X-Sdk-Date is {skew} s away from the server's clock; at most {max_skew} s are allowed: check the client's clock"
            )));
        }
        Ok(())
    }
}

fn parse_signature_header(authorization: &str) -> Result<sign::Authorization<'_>, ApiError> {
    sign::parse_authorization(authorization).map_err(|e| {
        count_failure("malformed");
        match e {
            SignError::UnsupportedAlgorithm(alg) => {
                ApiError::unauthenticated("verify aksk signature fail").with_detail(format!(
                    "signing algorithm {alg} is not supported; use SDK-HMAC-SHA256"
                ))
            }
            _ => malformed_authorization(),
        }
    })
}

fn unknown_access_key() -> ApiError {
    ApiError::unauthenticated("Get secretKey failed")
        .with_detail("the access key (AK) is unknown; check the AK the client uses")
}

fn user_disabled() -> ApiError {
    ApiError::unauthenticated("the user is disabled")
        .with_detail("the user of this credential was disabled by an administrator")
}

fn ak_locked(secs: i64) -> ApiError {
    ApiError::unauthenticated("AK access failed to reach the limit,forbidden").with_detail(format!(
        "too many requests with a wrong signature; this access key is locked for {secs} more seconds"
    ))
}

fn malformed_authorization() -> ApiError {
    ApiError::unauthenticated("verify aksk signature fail").with_detail(
        "the Authorization header must read: SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<names>, Signature=<64 hex>",
    )
}

impl AppState {
    pub(crate) async fn authenticate_token(&self, token: &str) -> Result<Principal, ApiError> {
        let key = format!("token:{}", secrets::sha256_hex(token));
        let principal = match self.cached(&key) {
            Some(c) => c.principal,
            None => {
                let epoch = self.auth.epoch.load(Ordering::SeqCst);
                let Some(record) = self.store.find_token(&key["token:".len()..]).await? else {
                    count_failure("bad_token");
                    return Err(ApiError::unauthenticated("decrypt token fail"));
                };
                let user = self
                    .store
                    .find_user_by_id(&record.user_id)
                    .await?
                    .ok_or_else(|| ApiError::unauthenticated("decrypt token fail"))?;
                if user.disabled {
                    count_failure("user_disabled");
                    return Err(user_disabled());
                }
                let role = self.store.find_role(&user.id, &record.project_id).await?;
                let principal = Principal {
                    domain: user.domain.clone(),
                    user_id: user.id,
                    user_name: user.name,
                    project_id: record.project_id,
                    role,
                    expires_at: Some(record.expires_at),
                };
                self.cache(
                    epoch,
                    key,
                    CachedCredential {
                        principal: principal.clone(),
                        secret: None,
                        failures: Default::default(),
                        at: Instant::now(),
                    },
                );
                principal
            }
        };
        if let Some(expires_at) = principal.expires_at
            && expires_at <= self.clock.now()
        {
            count_failure("expired_token");
            return Err(ApiError::unauthenticated(&format!(
                "token expires, expires_at: {}",
                crate::wire::iam_time(expires_at)
            ))
            .with_detail("get a new token from POST /v3/auth/tokens"));
        }
        Ok(principal)
    }

    /// The principal, secret key and failures of an access key, from the cache or the
    /// database.
    async fn access_key_credential(&self, access_key: &str) -> Result<CachedCredential, ApiError> {
        let key = format!("ak:{access_key}");
        if let Some(c) = self.cached(&key) {
            return Ok(c);
        }
        let epoch = self.auth.epoch.load(Ordering::SeqCst);
        let Some(found) = self.store.find_access_key(access_key).await? else {
            count_failure("unknown_key");
            return Err(unknown_access_key());
        };
        let Some(user) = self.store.find_user_by_id(&found.user_id).await? else {
            count_failure("unknown_key");
            return Err(unknown_access_key());
        };
        if user.disabled {
            count_failure("user_disabled");
            return Err(user_disabled());
        }
        let secret = self
            .keyring
            .open(&found.access_key, &found.secret_key)
            .map_err(|e| {
                ApiError::internal(&format!(
                    "the secret key of access key {access_key} cannot be opened: {e}"
                ))
            })?;
        let role = self.store.find_role(&user.id, &found.project_id).await?;
        let failures = self
            .store
            .auth_failures(&AuthSubject::AccessKey(access_key.to_string()))
            .await?
            .unwrap_or_default();
        let credential = CachedCredential {
            principal: Principal {
                domain: user.domain.clone(),
                user_id: user.id,
                user_name: user.name,
                project_id: found.project_id,
                role,
                expires_at: None,
            },
            secret: Some(secret),
            failures,
            at: Instant::now(),
        };
        self.cache(epoch, key, credential.clone());
        Ok(credential)
    }

    /// Verifies the signature over the body, for a request that passed
    /// [`Self::precheck_signature`] with `parsed` and `credential`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's parts and what the precheck found; a struct would only rename them"
    )]
    async fn verify_signature(
        &self,
        authorization: &str,
        parsed: sign::Authorization<'_>,
        credential: CachedCredential,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Principal, ApiError> {
        let access_key = parsed.access_key.to_string();
        let principal = credential.principal;
        let secret = credential
            .secret
            .ok_or_else(|| ApiError::internal(&"an access key was cached without its secret"))?;

        // The signature covers the body's hash; hashing megabytes belongs off the runtime.
        // Small bodies are checked in place; a large body's hash is computed off the async
        // runtime, which needs owned copies of what the check reads.
        let result = if body.len() < BODY_CHECK_INLINE_BYTES {
            sign::verify(
                method,
                uri,
                headers,
                &body,
                &parsed,
                secret.expose_secret().as_bytes(),
            )
        } else {
            let (method, uri, headers) = (method.clone(), uri.clone(), headers.clone());
            let authorization = authorization.to_string();
            tokio::task::spawn_blocking(move || {
                sign::parse_authorization(&authorization).and_then(|auth| {
                    sign::verify(
                        &method,
                        &uri,
                        &headers,
                        &body,
                        &auth,
                        secret.expose_secret().as_bytes(),
                    )
                })
            })
            .await
            .map_err(|e| ApiError::internal(&e))?
        };
        match result {
            Ok(()) => {
                if credential.failures.failures > 0 {
                    self.auth.forget(&format!("ak:{access_key}"));
                    self.store
                        .clear_auth_failures(&AuthSubject::AccessKey(access_key))
                        .await?;
                }
                Ok(principal)
            }
            Err(SignError::MissingSignedHeader(name)) => {
                count_failure("unsigned_header");
                Err(ApiError::unauthenticated("verify aksk signature fail")
                    .with_detail(format!("the {name} header must be signed")))
            }
            Err(SignError::MissingHeader(name)) => {
                count_failure("missing_header");
                Err(ApiError::unauthenticated("verify aksk signature fail")
                    .with_detail(format!("the signed header {name} is not in the request")))
            }
            Err(_) => {
                count_failure("bad_signature");
                self.record_signature_failure(&access_key).await?;
                Err(ApiError::unauthenticated("verify aksk signature fail").with_detail(
                    "the signature does not match; check the secret key (SK) and that nothing rewrote the request",
                ))
            }
        }
    }

    fn cached(&self, key: &str) -> Option<CachedCredential> {
        let ttl = std::time::Duration::from_secs(self.settings.auth.credential_cache_secs);
        let cache = self.auth.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|c| c.at.elapsed() < ttl).cloned()
    }

    /// Caches what a lookup that started at `epoch` read, unless the cache was dropped
    /// since (what it read may predate a revocation).
    fn cache(&self, epoch: u64, key: String, credential: CachedCredential) {
        let mut cache = self.auth.cache.lock().unwrap_or_else(|p| p.into_inner());
        if self.auth.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(key, credential);
    }

    /// Counts a bad signature of `access_key` in the database, where every replica and the
    /// admin command see it; locks the key at `auth.lockout_failures`.
    async fn record_signature_failure(&self, access_key: &str) -> Result<(), ApiError> {
        self.auth.forget(&format!("ak:{access_key}"));
        let lockout = Lockout {
            failures: self.settings.auth.lockout_failures,
            lock_ms: self.settings.auth.lockout_secs as i64 * 1000,
        };
        let now = self.clock.now();
        let failures = self
            .store
            .record_auth_failure(
                &AuthSubject::AccessKey(access_key.to_string()),
                now,
                lockout,
            )
            .await?;
        if failures.locked_at(now).is_some() && failures.failures == lockout.failures {
            crate::audit::note_lockout("the access key");
            tracing::warn!(
                access_key,
                "access key locked after repeated bad signatures"
            );
        }
        Ok(())
    }

    /// Checks that `caller` may call `api` on the path's project, and takes one request
    /// from its throttle. Returns the project.
    pub fn authorize(
        &self,
        caller: &Caller,
        path_project: &str,
        api: Api,
    ) -> Result<ProjectId, ApiError> {
        let p = &caller.principal;
        let deny = |reason: String| {
            let denial = Denial {
                decision: "deny".into(),
                action: api.action().into(),
                api: api.name().into(),
                user_id: p.user_id.to_string(),
                user_name: p.user_name.clone(),
                project_id: path_project.to_string(),
                role: p.role.map(|r| r.to_string()),
                reason: reason.clone(),
                request_id: current_request_id(),
            };
            let mut e = ApiError::new(ErrorCode::Forbidden).with_detail(reason);
            e.encoded_authorization_message = Some(denial.encode());
            e
        };
        if p.project_id.as_str() != path_project {
            return Err(deny(format!(
                "the credential is scoped to another project than {path_project}; use a credential of that project"
            )));
        }
        if let Some(header) = &caller.header_project
            && header != path_project
        {
            return Err(ApiError::invalid(format!(
                "the X-Project-Id header ({header}) must equal the project in the path ({path_project})"
            )));
        }
        match p.role {
            Some(role) if grants(role, api) => {}
            Some(role) => {
                return Err(deny(format!(
                    "role {role} does not grant {}; ask an administrator for the admin role",
                    api.action()
                )));
            }
            None => {
                return Err(deny(format!(
                    "user {} has no role on this project",
                    p.user_name
                )));
            }
        }
        let throttle = &self.settings.throttle;
        if throttle.enabled {
            let limit = match api.access() {
                policy::Access::Read | policy::Access::Audit => throttle.reads_per_minute,
                policy::Access::Write => throttle.writes_per_minute,
            };
            if let Err(retry_after) =
                self.auth
                    .throttle
                    .check(p.user_id.as_str(), api.name(), limit, Instant::now())
            {
                let mut e = ApiError::new(ErrorCode::Throttled).with_detail(format!(
                    "{} allows {limit} requests per minute per user; retry after {retry_after} s",
                    api.name()
                ));
                e.retry_after_secs = Some(retry_after);
                return Err(e);
            }
        }
        let project =
            ProjectId::parse(path_project).map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(project)
    }
}
