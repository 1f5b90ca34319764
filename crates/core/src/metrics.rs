//! The agents' time series (Cloud Eye namespace `AGT.ECS`): what a series is, how it is
//! named, and the aggregates the store keeps and answers with.
//!
//! A series is one metric of one desktop, plus a mount point for the disk metrics. Its id
//! is derived from that key (a hash), so writers never look an id up before they write,
//! and two server replicas writing the same series agree on its id.
//!
//! Every stored value is kept as an [`Aggregate`] (count, sum, sum of squares, min, max):
//! a raw point is an aggregate of one value, and roll-ups merge aggregates, so every
//! statistic Cloud Eye asks for (average, max, min, sum, variance) comes from any tier.

use crate::clock::Millis;
use crate::ids::DesktopId;
use sha2::{Digest, Sha256};

/// The one namespace stored.
pub const NAMESPACE: &str = "AGT.ECS";

/// The dimension naming the desktop (level 0).
pub const DIM_INSTANCE: &str = "instance_id";

/// The dimension naming the file system of a disk metric (level 1).
pub const DIM_MOUNT_POINT: &str = "mount_point";

/// Length of the roll-up tiers, in milliseconds.
pub const FIVE_MINUTES_MS: Millis = 300_000;
pub const ONE_HOUR_MS: Millis = 3_600_000;

/// What a series is: a desktop's metric, and for disk metrics the mount point's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub desktop: DesktopId,
    pub metric: String,
    /// The 32-hex id of the mount point (see [`mount_point_id`]); `None` for metrics
    /// without that dimension.
    pub mount_point: Option<String>,
}

impl SeriesKey {
    /// The series id: the first 63 bits of the SHA-256 of `desktop \0 metric \0 mount`.
    pub fn id(&self) -> i64 {
        let mut h = Sha256::new();
        h.update(self.desktop.as_str().as_bytes());
        h.update([0]);
        h.update(self.metric.as_bytes());
        h.update([0]);
        h.update(self.mount_point.as_deref().unwrap_or("").as_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(bytes) >> 1) as i64
    }
}

/// The `mount_point` dimension value of a desktop's file system: 32 lower-case hex digits,
/// the first half of the SHA-256 of `desktop id \0 mount path`. Stable for as long as the
/// desktop keeps its id and the file system its path; it says nothing of the path.
pub fn mount_point_id(desktop: &DesktopId, path: &str) -> String {
    let mut h = Sha256::new();
    h.update(desktop.as_str().as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// A series to create if it does not exist yet.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSeries {
    pub key: SeriesKey,
    pub unit: &'static str,
    /// The mount path behind `key.mount_point`, kept so an operator can resolve the id.
    pub origin: Option<String>,
}

/// One raw row of a series: the values reported in one minute (the agent's collection
/// period), `minute.at` being the minute's start. Writing a minute already stored merges
/// the two.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub series: i64,
    pub minute: Aggregate,
}

/// The raw data's period: Cloud Eye's agent collects once a minute.
pub const ONE_MINUTE_MS: Millis = 60_000;

/// The latest report of a desktop, as the monitor API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestReport {
    pub desktop: DesktopId,
    pub json: String,
    pub received_at: Millis,
}

/// What one ingest transaction writes: series first seen, the points, and the latest
/// report of each desktop in the batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricBatch {
    /// When the batch is written (the series' creation time).
    pub now: Millis,
    pub series: Vec<NewSeries>,
    pub points: Vec<Point>,
    pub latest: Vec<LatestReport>,
}

/// Statistics of the values of one bucket starting at `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    pub at: Millis,
    pub count: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub min: f64,
    pub max: f64,
}

impl Aggregate {
    pub fn of(at: Millis, value: f64) -> Self {
        Self {
            at,
            count: 1,
            sum: value,
            sum_sq: value * value,
            min: value,
            max: value,
        }
    }

    /// Adds `other`'s values to this bucket.
    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn average(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Population variance (the values of the bucket are all the values there are).
    pub fn variance(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        (self.sum_sq / n - mean * mean).max(0.0)
    }
}

/// Where a query reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Raw data: one aggregate per series and minute.
    Raw,
    /// 5-minute roll-ups (and raw points not rolled up yet, bucketed alike).
    FiveMinutes,
    /// 1-hour roll-ups (and the finer data not rolled up yet, in finer buckets).
    OneHour,
}

/// A series as ListMetrics shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInfo {
    pub desktop: DesktopId,
    pub metric: String,
    pub mount_point: Option<String>,
    pub unit: String,
}

impl SeriesInfo {
    /// The paging key, `AGT.ECS.metric.instance_id:desktop[.mount_point:id]`; series are
    /// listed in the order of this key.
    pub fn marker(&self) -> String {
        let mut m = format!(
            "{NAMESPACE}.{}.{DIM_INSTANCE}:{}",
            self.metric,
            self.desktop.as_str()
        );
        if let Some(mp) = &self.mount_point {
            m.push_str(&format!(".{DIM_MOUNT_POINT}:{mp}"));
        }
        m
    }
}

/// Which series ListMetrics lists, from where, in what order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesFilter {
    pub metric: Option<String>,
    pub desktop: Option<DesktopId>,
    pub mount_point: Option<String>,
    /// Only series after (`descending`: before) this `(metric, desktop, mount_point)`.
    pub after: Option<(String, String, String)>,
    pub descending: bool,
    pub limit: u32,
}

/// Retention and roll-up, as the roll-up worker applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub raw_ms: Millis,
    pub five_minutes_ms: Millis,
    pub one_hour_ms: Millis,
    /// A bucket is rolled up once it ended this long ago (late points wait that long).
    pub rollup_delay_ms: Millis,
    /// At most this many buckets of each tier are rolled up, and at most this much time
    /// of each table deleted, per step.
    pub buckets_per_step: u32,
}

/// What one roll-up step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupOutcome {
    pub rolled_up: u64,
    pub deleted: u64,
}
