//! Job and sub-job state machines.
//!
//! ```text
//! sub-job:  WAITING -> RUNNING -> SUCCESS | FAILED
//!           WAITING -> FAILED            (delivery timeout, cancel, or its leader failed)
//!           FAILED  -> WAITING           (retry)
//! job:      WAITING -> RUNNING -> SUCCESS | FAIL, derived from its sub-jobs
//! ```
//!
//! A sub-job for a desktop that already has an install in flight does not start a second
//! install: it *follows* the one in flight and ends with the same result.

use crate::ids::DesktopId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(format!(
                        "{other:?} is not one of {}",
                        [$($wire),+].join(", ")
                    )),
                }
            }
        }
    };
}

wire_enum!(
    /// A sub-job's status, as ListItaSubJobs documents it.
    SubJobStatus {
        Waiting => "WAITING",
        Running => "RUNNING",
        Success => "SUCCESS",
        Failed => "FAILED",
    }
);

wire_enum!(
    /// A job's status; terminal values are the ones clients (Terraform) wait for.
    JobStatus {
        Waiting => "WAITING",
        Running => "RUNNING",
        Success => "SUCCESS",
        Fail => "FAIL",
    }
);

wire_enum!(
    /// Where an install is; `process` (0..=100) follows it. Shown as `task_status`.
    Stage {
        Queued => "queued",
        Delivered => "delivered",
        Downloading => "downloading",
        Verifying => "verifying",
        Installing => "installing",
        Started => "started",
        Healthy => "healthy",
    }
);

impl SubJobStatus {
    pub const fn is_terminal(self) -> bool {
        matches!(self, SubJobStatus::Success | SubJobStatus::Failed)
    }
}

impl JobStatus {
    pub const fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Success | JobStatus::Fail)
    }
}

impl Stage {
    /// The lowest `process` value of this stage. Downloading spans 20..=59 with the
    /// download's own percentage mapped into it.
    pub const fn base_process(self) -> i32 {
        match self {
            Stage::Queued => 0,
            Stage::Delivered => 10,
            Stage::Downloading => 20,
            Stage::Verifying => 60,
            Stage::Installing => 70,
            Stage::Started => 90,
            Stage::Healthy => 100,
        }
    }

    /// `process` for this stage; `percent` is the stage's own progress (only downloading
    /// has one).
    pub fn process(self, percent: Option<u8>) -> i32 {
        match (self, percent) {
            (Stage::Downloading, Some(p)) => 20 + (i32::from(p.min(100)) * 39) / 100,
            _ => self.base_process(),
        }
    }
}

/// How many sub-jobs of a job are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub waiting: u32,
    pub running: u32,
    pub success: u32,
    pub failed: u32,
}

impl StatusCounts {
    pub fn total(&self) -> u32 {
        self.waiting + self.running + self.success + self.failed
    }

    pub fn add(&mut self, status: SubJobStatus) {
        match status {
            SubJobStatus::Waiting => self.waiting += 1,
            SubJobStatus::Running => self.running += 1,
            SubJobStatus::Success => self.success += 1,
            SubJobStatus::Failed => self.failed += 1,
        }
    }
}

/// The one rule for a job's status: SUCCESS when every sub-job succeeded, FAIL when all
/// are done and one failed, WAITING while none has started, RUNNING otherwise.
pub fn derive_job_status(c: StatusCounts) -> JobStatus {
    if c.waiting + c.running == 0 {
        if c.failed == 0 {
            JobStatus::Success
        } else {
            JobStatus::Fail
        }
    } else if c.running + c.success + c.failed == 0 {
        JobStatus::Waiting
    } else {
        JobStatus::Running
    }
}

/// `fail_reason` of a failed job: how many failed, and the most common cause.
pub fn job_fail_reason(counts: StatusCounts, first_failure: Option<(&str, &str)>) -> String {
    let mut reason = format!("{} of {} sub-jobs failed", counts.failed, counts.total());
    if let Some((code, why)) = first_failure {
        reason.push_str(&format!("; first failure {code}: {why}"));
    }
    reason
}

/// Most desktops one BatchInstallAgent call may name.
pub const MAX_DESKTOPS_PER_JOB: usize = 100;

/// Parses BatchInstallAgent's `desktop_ids`: 1..=100 entries, each a valid [`DesktopId`];
/// duplicates collapse to their first occurrence, order is kept.
pub fn install_targets(raw: Vec<String>) -> Result<Vec<DesktopId>, String> {
    if raw.is_empty() {
        return Err("desktop_ids must name at least one desktop".into());
    }
    if raw.len() > MAX_DESKTOPS_PER_JOB {
        return Err(format!(
            "desktop_ids names {} desktops; at most {MAX_DESKTOPS_PER_JOB} are allowed per request, split the list",
            raw.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::with_capacity(raw.len());
    for (i, value) in raw.into_iter().enumerate() {
        let id = DesktopId::parse(value).map_err(|e| format!("desktop_ids[{i}]: {}", e.reason))?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn install_targets_are_bounded_and_deduplicated() {
        let ids = |n: usize| (0..n).map(|i| format!("d{i}")).collect::<Vec<_>>();
        assert!(install_targets(vec![]).is_err());
        assert_eq!(install_targets(ids(100)).unwrap().len(), 100);
        assert!(install_targets(ids(101)).unwrap_err().contains("101"));
        let got = install_targets(vec!["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(
            got.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        let err = install_targets(vec!["ok".into(), "x".repeat(256)]).unwrap_err();
        assert!(err.starts_with("desktop_ids[1]"), "{err}");
    }

    #[test]
    fn statuses_round_trip_on_the_wire() {
        for s in SubJobStatus::ALL {
            assert_eq!(s.as_str().parse::<SubJobStatus>().unwrap(), *s);
        }
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        assert!(
            "done"
                .parse::<SubJobStatus>()
                .unwrap_err()
                .contains("WAITING")
        );
    }

    #[test]
    fn process_grows_with_the_stages() {
        let values: Vec<i32> = Stage::ALL.iter().map(|s| s.process(None)).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
        assert_eq!(Stage::Downloading.process(Some(100)), 59);
        assert_eq!(Stage::Healthy.process(None), 100);
    }

    proptest! {
        #[test]
        fn job_status_follows_its_sub_jobs(w in 0u32..5, r in 0u32..5, s in 0u32..5, f in 0u32..5) {
            prop_assume!(w + r + s + f > 0);
            let c = StatusCounts { waiting: w, running: r, success: s, failed: f };
            let status = derive_job_status(c);
            prop_assert_eq!(status.is_terminal(), w + r == 0);
            prop_assert_eq!(status == JobStatus::Success, w + r + f == 0);
            prop_assert_eq!(status == JobStatus::Waiting, r + s + f == 0);
        }
    }
}

// ---- operations and rollout control ----

wire_enum!(
    /// What a job does to the monitoring agent of each of its desktops.
    Operation {
        Install => "INSTALL",
        Update => "UPDATE",
        Rollback => "ROLLBACK",
        Uninstall => "UNINSTALL",
    }
);

impl Operation {
    /// Whether the operation puts a version of the agent in place (all but UNINSTALL).
    pub const fn installs(self) -> bool {
        !matches!(self, Operation::Uninstall)
    }
}

/// A rollout limit as asked: a count of targets, or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Count(u32),
    Percent(u32),
}

impl Limit {
    /// Parses `"10"` or `"10%"`. `min` is the smallest count or percentage allowed (1 for
    /// `max_concurrency`, 0 for `max_errors`); `field` names the field in messages.
    pub fn parse(field: &str, raw: &str, min: u32) -> Result<Limit, String> {
        let text = raw.trim();
        let (digits, percent) = match text.strip_suffix('%') {
            Some(d) => (d, true),
            None => (text, false),
        };
        let value: u32 = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().map_err(|_| {
                format!("{field} {raw:?} is too large; give at most 100000 or a percentage")
            })?
        } else {
            return Err(format!(
                "{field} must be a whole number of targets (\"10\") or a percentage of them (\"10%\"), not {raw:?}"
            ));
        };
        if percent {
            if value < min || value > 100 {
                return Err(format!(
                    "{field} percentage must be between {min}% and 100%, not {raw:?}"
                ));
            }
            Ok(Limit::Percent(value))
        } else {
            if value < min || value > 100_000 {
                return Err(format!(
                    "{field} must be between {min} and 100000 targets, not {raw:?}"
                ));
            }
            Ok(Limit::Count(value))
        }
    }

    /// `max_concurrency` as a number of targets of a job of `targets`: a percentage is
    /// rounded up, and is never below 1.
    pub fn concurrency_of(self, targets: u32) -> u32 {
        match self {
            Limit::Count(n) => n,
            Limit::Percent(p) => (u64::from(targets) * u64::from(p))
                .div_ceil(100)
                .max(1)
                .try_into()
                .unwrap_or(u32::MAX),
        }
    }

    /// `max_errors` as a number of failed targets of a job of `targets`: a percentage is
    /// rounded down. The rollout stops once MORE than this many targets failed.
    pub fn errors_of(self, targets: u32) -> u32 {
        match self {
            Limit::Count(n) => n,
            Limit::Percent(p) => ((u64::from(targets) * u64::from(p)) / 100)
                .try_into()
                .unwrap_or(u32::MAX),
        }
    }
}

/// A job's rollout limits, resolved to counts of its targets; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RolloutLimits {
    /// At most this many sub-jobs of the job RUNNING at once.
    pub max_concurrency: Option<u32>,
    /// Once more than this many sub-jobs of the job FAILED, the ones not started yet end
    /// FAILED with the stop code, and no more start.
    pub max_errors: Option<u32>,
}

impl RolloutLimits {
    /// Resolves the optional `max_concurrency` and `max_errors` fields of a request for a
    /// job of `targets` targets.
    pub fn resolve(
        max_concurrency: Option<&str>,
        max_errors: Option<&str>,
        targets: u32,
    ) -> Result<RolloutLimits, String> {
        Ok(RolloutLimits {
            max_concurrency: max_concurrency
                .map(|raw| {
                    Limit::parse("max_concurrency", raw, 1).map(|l| l.concurrency_of(targets))
                })
                .transpose()?,
            max_errors: max_errors
                .map(|raw| Limit::parse("max_errors", raw, 0).map(|l| l.errors_of(targets)))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod rollout_tests {
    use super::*;

    #[test]
    fn limits_are_counts_or_percentages_of_the_targets() {
        let l = RolloutLimits::resolve(Some("10%"), Some("10%"), 95).unwrap();
        assert_eq!(l.max_concurrency, Some(10)); // 9.5 rounded up
        assert_eq!(l.max_errors, Some(9)); // 9.5 rounded down
        let l = RolloutLimits::resolve(Some("1%"), Some("0"), 3).unwrap();
        assert_eq!((l.max_concurrency, l.max_errors), (Some(1), Some(0)));
        let l = RolloutLimits::resolve(Some("7"), None, 3).unwrap();
        assert_eq!((l.max_concurrency, l.max_errors), (Some(7), None));
        assert!(
            RolloutLimits::resolve(Some("0"), None, 3)
                .unwrap_err()
                .contains("max_concurrency")
        );
        assert!(RolloutLimits::resolve(Some("0%"), None, 3).is_err());
        assert!(RolloutLimits::resolve(None, Some("101%"), 3).is_err());
        assert!(
            RolloutLimits::resolve(None, Some("-1"), 3)
                .unwrap_err()
                .contains("\"-1\"")
        );
        assert!(RolloutLimits::resolve(None, Some("ten"), 3).is_err());
        assert!(RolloutLimits::resolve(None, Some("99999999999"), 3).is_err());
        assert_eq!(
            RolloutLimits::resolve(None, None, 3).unwrap(),
            RolloutLimits::default()
        );
    }

    #[test]
    fn operations_round_trip() {
        for o in Operation::ALL {
            assert_eq!(o.as_str().parse::<Operation>().unwrap(), *o);
        }
        assert!(!Operation::Uninstall.installs());
    }
}
