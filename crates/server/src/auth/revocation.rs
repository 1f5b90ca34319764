//! Taking credentials back at once. The admin commands run in another process than the
//! server (and there may be several servers on one PostgreSQL database), so they cannot
//! reach a server's credential cache. Instead every revocation, disable, delete, lock,
//! unlock and role change moves the credential revision in the database (in the same
//! transaction), and each server polls it (`auth.revocation_poll_ms`, default every
//! second: one indexed single-row read) and drops its whole credential cache when it
//! moved. A revoked credential thus stops working within about a second on every replica.

use crate::AppState;
use crate::engine::Worker;
use async_trait::async_trait;
use deskfleet_core::store::StoreError;
use std::time::Duration;

pub struct RevocationWatcher {
    state: AppState,
}

impl RevocationWatcher {
    pub fn new(state: AppState) -> Self {
        Self { state }
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

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.step().await.map(u64::from)
    }
}
