//! The agents' time series: reports from the fleet go into a bounded queue, a worker
//! writes them in batches (one transaction per batch), and another rolls them up and
//! applies retention, one bounded step at a time.
//!
//! Raw data is kept at the agent's one-minute collection period, as Cloud Eye's: the
//! worker folds each report's values into the open minute of their series (count, sum,
//! sum of squares, min, max, held in memory: at most the series count times the minutes
//! still open, counted in `deskfleet_metric_open_minutes`) and writes a minute once it
//! has closed and a grace for late reports has passed, one row per series and minute.
//! A report later than that opens the minute again; the store merges it into the row
//! already written, as it does for what is flushed at shutdown.
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
use deskfleet_core::metrics::{
    Aggregate, LatestReport, MetricBatch, NewSeries, ONE_MINUTE_MS, Point, RetentionPolicy,
};
use deskfleet_core::store::StoreError;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
    /// The minutes not written yet, by the minute's start, then series.
    open: Mutex<OpenMinutes>,
}

/// Minutes of values not written yet.
#[derive(Default)]
struct OpenMinutes {
    minutes: BTreeMap<Millis, HashMap<i64, Aggregate>>,
    /// Series-minutes held, over all minutes.
    held: usize,
}

impl OpenMinutes {
    fn add(&mut self, series: i64, at: Millis, value: f64) {
        let minute = at.div_euclid(ONE_MINUTE_MS) * ONE_MINUTE_MS;
        let one = Aggregate::of(minute, value);
        let held = &mut self.held;
        self.minutes
            .entry(minute)
            .or_default()
            .entry(series)
            .and_modify(|a| a.merge(&one))
            .or_insert_with(|| {
                *held += 1;
                one
            });
    }

    /// Takes at most `max` series-minutes of the minutes starting before `before`,
    /// oldest first.
    fn take(&mut self, before: Millis, max: usize) -> Vec<Point> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(mut entry) = self.minutes.first_entry() else {
                break;
            };
            if *entry.key() >= before {
                break;
            }
            let series = entry.get_mut();
            let n = (max - out.len()).min(series.len());
            let keys: Vec<i64> = series.keys().take(n).copied().collect();
            for id in keys {
                if let Some(minute) = series.remove(&id) {
                    out.push(Point { series: id, minute });
                }
            }
            if series.is_empty() {
                entry.remove();
            }
        }
        self.held -= out.len();
        out
    }
}

/// Series-minutes written in one transaction, at most.
const MINUTES_PER_WRITE: usize = 50_000;

impl IngestQueue {
    pub fn new(capacity: usize, batch: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            batch: batch.max(1),
            ready: tokio::sync::Notify::new(),
            open: Mutex::new(OpenMinutes::default()),
        }
    }

    /// Series-minutes held in memory, not written yet.
    pub fn open_minutes(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).held
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

    /// Folds a batch of reports into the open minutes and takes what the store writes:
    /// the minutes closed before `closed_before` (at most [`MINUTES_PER_WRITE`]), new
    /// series and the latest reports.
    fn batch(
        &self,
        reports: Vec<Queued>,
        now: Millis,
        closed_before: Millis,
    ) -> (MetricBatch, Vec<i64>) {
        let mut latest: HashMap<DesktopId, LatestReport> = HashMap::new();
        let mut series: HashMap<i64, NewSeries> = HashMap::new();
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let mut open = self
            .state
            .metric_queue
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for q in reports {
            if let Some((at, samples)) = report::samples(&q.desktop, &q.json, q.received_at) {
                for s in samples {
                    let id = s.key.id();
                    if !s.value.is_finite() {
                        continue;
                    }
                    open.add(id, at, s.value);
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
        let points = open.take(closed_before, MINUTES_PER_WRITE);
        metrics::gauge!("deskfleet_metric_open_minutes").set(open.held as f64);
        let new_ids = series.keys().copied().collect();
        let batch = MetricBatch {
            now,
            series: series.into_values().collect(),
            points,
            latest: latest.into_values().collect(),
        };
        (batch, new_ids)
    }

    /// Writes one batch of what is queued and the minutes that have closed; returns the
    /// minute rows written.
    pub async fn step(&self) -> Result<u64, StoreError> {
        let now = self.state.clock.now();
        let grace = Millis::try_from(self.state.settings.metric_data.minute_grace_secs)
            .unwrap_or(Millis::MAX / 2_000)
            .saturating_mul(1000);
        // A minute starting before this ended at least `grace` ago.
        let closed_before = now.saturating_sub(grace).saturating_sub(ONE_MINUTE_MS);
        self.write(closed_before).await
    }

    /// Writes what is queued and every open minute, closed or not (at shutdown: nothing
    /// held in memory is lost; a minute written again later is merged by the store).
    pub async fn flush(&self) -> Result<u64, StoreError> {
        let mut written = 0;
        loop {
            written += self.write(Millis::MAX).await?;
            if self.state.metric_queue.is_empty() && self.state.metric_queue.open_minutes() == 0 {
                return Ok(written);
            }
        }
    }

    async fn write(&self, closed_before: Millis) -> Result<u64, StoreError> {
        let reports = self.state.metric_queue.take();
        let count = reports.len() as u64;
        let (batch, new_ids) = self.batch(reports, self.state.clock.now(), closed_before);
        if batch.points.is_empty() && batch.series.is_empty() && batch.latest.is_empty() {
            return Ok(0);
        }
        let minutes = batch.points.len() as u64;
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
                metrics::counter!("deskfleet_metric_minutes_dropped_total").increment(minutes);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_minutes_fold_values_and_give_closed_minutes_oldest_first() {
        let mut open = OpenMinutes::default();
        let m = 1_735_689_600_000; // a minute's start
        open.add(1, m + 5_000, 10.0);
        open.add(1, m + 59_999, 20.0);
        open.add(2, m, 3.0);
        open.add(1, m + 60_000, 7.0);
        assert_eq!(open.held, 3, "one per series and minute");
        // Nothing has ended before the first minute's start.
        assert!(open.take(m, 10).is_empty());
        // The first minute, at most one series-minute at a time.
        let first = open.take(m + 60_000, 1);
        let second = open.take(m + 60_000, 10);
        assert_eq!((first.len(), second.len(), open.held), (1, 1, 1));
        let mut both = [first, second].concat();
        both.sort_by_key(|p| p.series);
        let a = both[0].minute;
        assert_eq!(
            (both[0].series, a.at, a.count, a.sum, a.sum_sq, a.min, a.max),
            (1, m, 2, 30.0, 500.0, 10.0, 20.0)
        );
        assert_eq!((both[1].series, both[1].minute.count), (2, 1));
        // The next minute only once it is before the bound.
        assert!(open.take(m + 60_000, 10).is_empty());
        let last = open.take(Millis::MAX, 10);
        assert_eq!(
            (last.len(), last[0].minute.at, last[0].minute.sum, open.held),
            (1, m + 60_000, 7.0, 0)
        );
        // A late value opens its minute again.
        open.add(1, m + 1, 1.0);
        assert_eq!(open.take(m + 60_000, 10)[0].minute.at, m);
    }
}
