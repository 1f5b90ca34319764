//! Taking credentials back at once. The admin commands run in another process than the
//! server (and there may be several servers on one PostgreSQL database), so they cannot
//! reach a server's credential cache. Instead every revocation, disable, delete, lock,
//! unlock and role change moves the credential revision in the database (in the same
//! transaction), and each server reads it and drops its whole credential cache when it
//! moved. On PostgreSQL the same transaction sends `NOTIFY deskfleet_credentials`, so
//! every replica reads the revision as soon as the change commits; the poll
//! (`auth.revocation_poll_ms`, default every second: one indexed single-row read) remains
//! for SQLite, where an admin command is another process, and for a lost listener
//! connection. A revoked credential thus stops working at once on every PostgreSQL
//! replica, and within about a second on SQLite.

use crate::AppState;
use crate::engine::Worker;
use async_trait::async_trait;
use deskfleet_core::store::{Signal, StoreError, Subscription};
use std::time::Duration;

pub struct RevocationWatcher {
    state: AppState,
    /// Credential changes signalled by any replica or admin command (PostgreSQL), if the
    /// store can tell.
    signal: tokio::sync::Mutex<Option<Box<dyn Subscription>>>,
}

impl RevocationWatcher {
    pub fn new(state: AppState) -> Self {
        let signal = state.store.subscribe(Signal::Credentials);
        Self {
            state,
            signal: tokio::sync::Mutex::new(signal),
        }
    }

    /// Reads the revision; drops the cache if it moved. Returns whether it did.
    pub async fn step(&self) -> Result<bool, StoreError> {
        let revision = self.state.store.credential_revision().await?;
        let mut seen = self
            .state
            .auth
            .revision
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The first reading has nothing to compare with: what was cached before it may
        // predate a change, so it drops the cache too.
        let moved = *seen != Some(revision);
        if moved {
            self.state.auth.drop_cache();
            tracing::debug!(revision, "credentials changed; cache dropped");
        }
        *seen = Some(revision);
        Ok(moved)
    }
}

#[async_trait]
impl Worker for RevocationWatcher {
    fn name(&self) -> &'static str {
        "revocation-watcher"
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.state.settings.auth.revocation_poll_ms.max(10))
    }

    async fn wait(&self, interval: Duration) {
        let mut signal = self.signal.lock().await;
        let _ = tokio::time::timeout(interval, crate::engine::raised(signal.as_mut())).await;
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.step().await.map(u64::from)
    }
}
