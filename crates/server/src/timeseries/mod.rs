//! The agents' time series: reports from the fleet go into a bounded queue, a worker
//! writes them in batches (one transaction per batch), and another rolls them up and
//! applies retention, one bounded step at a time.
//!
//! The OpAMP session only ever offers a report to the queue: when the queue is full the
//! report is dropped and counted (`deskfleet_metric_reports_dropped_total{reason="full"}`),
//! so a slow database never holds a guest's connection up. A batch the store refuses is
//! dropped and counted too (`reason="store"`): metrics are samples, and the next report
//! of the desktop comes seconds later.

pub mod report;

use crate::AppState;
use crate::engine::Worker;
use async_trait::async_trait;
use deskfleet_core::clock::Millis;
use deskfleet_core::ids::DesktopId;
use deskfleet_core::metrics::{LatestReport, MetricBatch, NewSeries, Point, RetentionPolicy};
use deskfleet_core::store::StoreError;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// A report waiting for its batch.
#[derive(Debug, Clone)]
pub struct Queued {
    pub desktop: DesktopId,
    pub json: String,
    pub received_at: Millis,
}

/// The bounded queue between the fleet's sessions and the ingest worker.
pub struct IngestQueue {
    queue: Mutex<VecDeque<Queued>>,
    capacity: usize,
    batch: usize,
    /// Wakes the worker early when a full batch is waiting.
    ready: tokio::sync::Notify,
}

impl IngestQueue {
    pub fn new(capacity: usize, batch: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            batch: batch.max(1),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Queues a report; false (and counted) when the queue is full. Never waits.
    pub fn offer(&self, report: Queued) -> bool {
        let len = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if queue.len() >= self.capacity {
                drop(queue);
                metrics::counter!("deskfleet_metric_reports_dropped_total", "reason" => "full")
                    .increment(1);
                return false;
            }
            queue.push_back(report);
            queue.len()
        };
        metrics::gauge!("deskfleet_metric_queue_depth").set(len as f64);
        if len >= self.batch {
            self.ready.notify_one();
        }
        true
    }

    /// Takes up to one batch of reports, oldest first.
    fn take(&self) -> Vec<Queued> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let n = queue.len().min(self.batch);
        let out: Vec<_> = queue.drain(..n).collect();
        metrics::gauge!("deskfleet_metric_queue_depth").set(queue.len() as f64);
        out
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Series ids remembered as written, at most; the set is forgotten when full (the store
/// ignores a series written twice, so forgetting costs one redundant insert each).
const KNOWN_SERIES_MAX: usize = 2_000_000;

/// Writes the queued reports, one transaction per batch.
pub struct IngestWorker {
    state: AppState,
    /// Series this replica has written (or seen written) already.
    known: Mutex<HashSet<i64>>,
}

impl IngestWorker {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// Turns a batch of reports into what the store writes.
    fn batch(&self, reports: Vec<Queued>, now: Millis) -> (MetricBatch, Vec<i64>) {
        let mut latest: HashMap<DesktopId, LatestReport> = HashMap::new();
        let mut points: HashMap<(i64, Millis), Point> = HashMap::new();
        let mut series: HashMap<i64, NewSeries> = HashMap::new();
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for q in reports {
            if let Some((at, samples)) = report::samples(&q.desktop, &q.json, q.received_at) {
                for s in samples {
                    let id = s.key.id();
                    points.insert(
                        (id, at),
                        Point {
                            series: id,
                            at,
                            value: s.value,
                        },
                    );
                    if !known.contains(&id) {
                        series.entry(id).or_insert(NewSeries {
                            key: s.key,
                            unit: s.unit,
                            origin: s.origin,
                        });
                    }
                }
            }
            let newer = latest
                .get(&q.desktop)
                .is_none_or(|l| l.received_at <= q.received_at);
            if newer {
                latest.insert(
                    q.desktop.clone(),
                    LatestReport {
                        desktop: q.desktop,
                        json: q.json,
                        received_at: q.received_at,
                    },
                );
            }
        }
        let new_ids = series.keys().copied().collect();
        let batch = MetricBatch {
            now,
            series: series.into_values().collect(),
            points: points.into_values().collect(),
            latest: latest.into_values().collect(),
        };
        (batch, new_ids)
    }

    /// Writes one batch of what is queued; returns the points written.
    pub async fn step(&self) -> Result<u64, StoreError> {
        let reports = self.state.metric_queue.take();
        if reports.is_empty() {
            return Ok(0);
        }
        let count = reports.len() as u64;
        let (batch, new_ids) = self.batch(reports, self.state.clock.now());
        match self.state.store.ingest_metrics(&batch).await {
            Ok(written) => {
                let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
                if known.len() + new_ids.len() > KNOWN_SERIES_MAX {
                    known.clear();
                }
                known.extend(new_ids);
                metrics::counter!("deskfleet_metric_points_written_total").increment(written);
                Ok(written)
            }
            Err(e) => {
                metrics::counter!("deskfleet_metric_reports_dropped_total", "reason" => "store")
                    .increment(count);
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Worker for IngestWorker {
    fn name(&self) -> &'static str {
        "metric-ingest"
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.state.settings.metric_data.flush_interval_ms.max(10))
    }

    async fn wait(&self, interval: Duration) {
        if self.state.metric_queue.len() >= self.state.metric_queue.batch {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = self.state.metric_queue.ready.notified() => {}
        }
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.step().await
    }
}

/// Rolls raw points up into 5-minute and 1-hour buckets and deletes what is past its
/// retention, in bounded steps.
pub struct RollupWorker {
    state: AppState,
}

impl RollupWorker {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    pub fn policy(&self) -> RetentionPolicy {
        policy(&self.state.settings.metric_data)
    }

    pub async fn step(&self) -> Result<u64, StoreError> {
        let out = self
            .state
            .store
            .roll_up_metrics(&self.policy(), self.state.clock.now())
            .await?;
        if out.rolled_up + out.deleted > 0 {
            tracing::debug!(
                rolled_up = out.rolled_up,
                deleted = out.deleted,
                "metric roll-up step"
            );
        }
        metrics::counter!("deskfleet_metric_rollup_rows_total").increment(out.rolled_up);
        metrics::counter!("deskfleet_metric_deleted_rows_total").increment(out.deleted);
        Ok(out.rolled_up + out.deleted)
    }
}

/// The store's retention policy from the settings.
pub fn policy(s: &crate::settings::MetricDataSettings) -> RetentionPolicy {
    const HOUR: Millis = 3_600_000;
    let ms = |hours: u64| {
        Millis::try_from(hours)
            .unwrap_or(Millis::MAX)
            .saturating_mul(HOUR)
    };
    RetentionPolicy {
        raw_ms: ms(s.raw_retention_hours),
        five_minutes_ms: ms(s.five_minute_retention_days.saturating_mul(24)),
        one_hour_ms: ms(s.one_hour_retention_days.saturating_mul(24)),
        rollup_delay_ms: Millis::try_from(s.rollup_delay_secs)
            .unwrap_or(0)
            .saturating_mul(1000),
        buckets_per_step: s.rollup_buckets_per_step.max(1),
    }
}

#[async_trait]
impl Worker for RollupWorker {
    fn name(&self) -> &'static str {
        "metric-rollup"
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.state.settings.metric_data.rollup_interval_ms.max(10))
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.step().await
    }
}
