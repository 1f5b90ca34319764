//! The job engine's background work, under one supervisor.
//!
//! Every worker implements [`Worker`]: a name, an interval, and one public `step` that does
//! a bounded amount of work. The supervisor runs each step on its interval until the
//! shutdown token is cancelled; a failed step is logged and retried with backoff, never
//! fatal. Tests call `step` directly to drive the engine deterministically.

use crate::AppState;
use async_trait::async_trait;
use deskfleet_core::store::{Expired, StoreError, Subscription};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[async_trait]
pub trait Worker: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn interval(&self) -> Duration;
    /// Waits before the next step; a worker may end the wait early when it is told there
    /// is work.
    async fn wait(&self, interval: Duration) {
        tokio::time::sleep(interval).await;
    }
    /// One unit of work; returns how many items it changed, for logs.
    async fn run_step(&self) -> Result<u64, StoreError>;
}

/// Waits until `subscription`'s signal is raised; forever without one (the store cannot
/// tell: the worker's own interval decides).
pub async fn raised(subscription: Option<&mut Box<dyn Subscription>>) {
    match subscription {
        Some(s) => s.raised().await,
        None => std::future::pending().await,
    }
}

/// Ends sub-jobs that passed their delivery or execution deadline, so that nothing stays
/// WAITING or RUNNING forever.
pub struct TimeoutSweeper {
    state: AppState,
}

impl TimeoutSweeper {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    pub async fn step(&self) -> Result<Expired, StoreError> {
        let expired = self
            .state
            .store
            .expire_overdue(self.state.clock.now())
            .await?;
        if expired.total() > 0 {
            tracing::info!(
                undelivered = expired.undelivered,
                silent = expired.silent,
                followers = expired.followers,
                "sub-jobs timed out"
            );
        }
        Ok(expired)
    }
}

#[async_trait]
impl Worker for TimeoutSweeper {
    fn name(&self) -> &'static str {
        "timeout-sweeper"
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.state.settings.jobs.sweep_interval_ms.max(10))
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.step().await.map(|e| e.total())
    }
}

/// The running workers; [`Workers::join`] waits for them after shutdown was signalled.
pub struct Workers(JoinSet<()>);

impl Workers {
    pub async fn join(mut self) {
        while self.0.join_next().await.is_some() {}
    }
}

/// Runs each of `workers` under [`supervise`] until `shutdown`. The application names
/// them (the sweeper here, the fleet's scheduler, the revocation watcher), so that the
/// engine depends on no feature that brings a worker.
pub fn spawn_workers(workers: Vec<Box<dyn Worker>>, shutdown: CancellationToken) -> Workers {
    let mut set = JoinSet::new();
    for worker in workers {
        set.spawn(supervise(worker, shutdown.clone()));
    }
    Workers(set)
}

/// Runs `worker` until `shutdown`. A step is never interrupted midway: cancellation is
/// only observed between steps, so a store transaction always completes or rolls back on
/// its own terms.
async fn supervise(worker: Box<dyn Worker>, shutdown: CancellationToken) {
    let mut backoff = worker.interval();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = worker.wait(backoff) => {}
        }
        match worker.run_step().await {
            Ok(_) => backoff = worker.interval(),
            Err(e) => {
                backoff = (backoff * 2).min(Duration::from_secs(30));
                tracing::warn!(worker = worker.name(), error = %e, retry_in_ms = backoff.as_millis() as u64, "worker step failed");
            }
        }
    }
    tracing::debug!(worker = worker.name(), "worker stopped");
}

/// Keeps the database's query planner statistics in step with the tables' growth
/// (`Store::refresh_statistics`; PostgreSQL only), every few seconds.
pub struct StatisticsKeeper {
    state: AppState,
}

impl StatisticsKeeper {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[async_trait]
impl Worker for StatisticsKeeper {
    fn name(&self) -> &'static str {
        "statistics"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.state.store.refresh_statistics().await
    }
}
