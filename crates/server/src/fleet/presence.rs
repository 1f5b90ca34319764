//! When each desktop's guest was last seen, written in batches.
//!
//! Every message of a guest (a heartbeat included) counts as seeing it. Writing that per
//! message would cost one transaction per heartbeat of every desktop: 10,000 desktops
//! on a 30 s heartbeat are over 300 transactions a second for nothing. Instead sessions
//! note the time in memory ([`LastSeen::seen`]) and the [`LastSeenFlusher`] writes all of
//! it in one statement every `fleet.last_seen_flush_ms` (at most half a heartbeat
//! interval, so that a desktop's stored last-seen time is never a whole interval behind).
//! Connects and disconnects are written at once by the session (see `session.rs`).
//!
//! What is lost if the server dies between two flushes is at most a few seconds of
//! last-seen times; the desktops concerned then look offline a little earlier, never
//! online for longer.

use crate::AppState;
use crate::engine::Worker;
use async_trait::async_trait;
use deskfleet_core::clock::Millis;
use deskfleet_core::ids::DesktopId;
use deskfleet_core::presence::{Freshness, window_ms};
use deskfleet_core::store::StoreError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The last-seen times noted since the last flush.
#[derive(Default)]
pub struct LastSeen {
    pending: Mutex<HashMap<DesktopId, Millis>>,
}

impl LastSeen {
    /// Notes that `desktop`'s guest was seen at `at`.
    pub fn seen(&self, desktop: &DesktopId, at: Millis) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(desktop) {
            Some(t) => *t = (*t).max(at),
            None => {
                pending.insert(desktop.clone(), at);
            }
        }
    }

    /// Takes what was noted, leaving nothing.
    fn take(&self) -> Vec<(DesktopId, Millis)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending).into_iter().collect()
    }

    /// Puts back what a failed flush took, unless newer times were noted meanwhile.
    fn put_back(&self, seen: Vec<(DesktopId, Millis)>) {
        for (desktop, at) in seen {
            self.seen(&desktop, at);
        }
    }

    /// Writes everything noted so far in one statement; returns how many desktops.
    pub async fn flush(&self, state: &AppState) -> Result<u64, StoreError> {
        let seen = self.take();
        if seen.is_empty() {
            return Ok(0);
        }
        let n = seen.len() as u64;
        match state.store.record_last_seen(&seen).await {
            Ok(_) => {
                metrics::counter!("deskfleet_fleet_last_seen_written_total").increment(n);
                Ok(n)
            }
            Err(e) => {
                self.put_back(seen);
                Err(e)
            }
        }
    }
}

impl AppState {
    /// Now, and the freshness window (three heartbeat intervals) that decides whether a
    /// desktop is online.
    pub fn freshness(&self) -> Freshness {
        Freshness {
            now: self.clock.now(),
            window_ms: window_ms(self.settings.fleet.heartbeat_secs),
        }
    }
}

/// How often noted last-seen times are written: `fleet.last_seen_flush_ms`, but at most
/// half a heartbeat interval.
pub fn flush_interval(state: &AppState) -> Duration {
    let fleet = &state.settings.fleet;
    let half_heartbeat = fleet.heartbeat_secs.max(1) * 500;
    Duration::from_millis(fleet.last_seen_flush_ms.clamp(10, half_heartbeat))
}

/// Writes the noted last-seen times on its interval.
pub struct LastSeenFlusher {
    state: AppState,
}

impl LastSeenFlusher {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[async_trait]
impl Worker for LastSeenFlusher {
    fn name(&self) -> &'static str {
        "last-seen-flusher"
    }

    fn interval(&self) -> Duration {
        flush_interval(&self.state)
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.state.fleet.last_seen.flush(&self.state).await
    }
}
