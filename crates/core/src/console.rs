//! What the web console asks of the store beyond the API's reads: its sign-in sessions,
//! a fleet summary counted in SQL, a sorted and filtered page of desktops, and a page of
//! jobs with their sub-job counts. Each query is bounded by its page: a fleet of 10,000
//! desktops is never loaded to render 50.

use crate::clock::Millis;
use crate::ids::{ProjectId, UserId};
use crate::model::Job;

/// A console sign-in, stored under the SHA-256 of the random id its cookie carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub created_at: Millis,
    /// When a request last used it (moved forward at most about once a minute).
    pub last_seen_at: Millis,
    /// The absolute end: it is refused from then on, whatever its use.
    pub expires_at: Millis,
}

/// Which connection state a desktop must be in (see [`crate::presence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceFilter {
    Online,
    Offline,
    Never,
}

/// Which state a desktop's agent must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentFilterState {
    /// It reported an agent.
    Installed,
    /// No agent reported.
    Missing,
    /// Its latest reported agent is unhealthy, or its latest finished work failed.
    Failing,
    /// Work is waiting or running for it.
    Busy,
}

/// A column the desktops table sorts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesktopSort {
    Name,
    Address,
    LastSeen,
    Version,
    Created,
}

/// The desktops table's query: all filters AND together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopQuery {
    /// Case-insensitive substring of the computer name or the IP address.
    pub search: Option<String>,
    pub presence: Option<PresenceFilter>,
    pub agent: Option<AgentFilterState>,
    /// Exact agent version.
    pub version: Option<String>,
    /// A tag `key` (any value) or `key=value`.
    pub tag: Option<(String, Option<String>)>,
    pub sort: DesktopSort,
    pub descending: bool,
    /// Now and the freshness window, to tell online from offline.
    pub now: Millis,
    pub window_ms: Millis,
}

/// The fleet overview, counted by the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSummary {
    pub total: u64,
    pub online: u64,
    pub offline: u64,
    /// Desktops whose guest never connected.
    pub never: u64,
    pub with_agent: u64,
    /// Desktops by reported agent version, the most common first.
    pub by_version: Vec<(String, u64)>,
    /// Desktops failing now: an unhealthy agent, or their latest finished work failed.
    pub failing: u64,
    /// Jobs still WAITING or RUNNING.
    pub active_jobs: u64,
}

/// A job with its sub-jobs counted by status, for the jobs list and its live progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    pub job: Job,
    pub waiting: u64,
    pub running: u64,
    pub success: u64,
    pub failed: u64,
}

impl JobProgress {
    /// Finished sub-jobs of all, in percent (0 for a job without sub-jobs).
    pub fn percent(&self) -> u64 {
        let total = self.waiting + self.running + self.success + self.failed;
        if total == 0 {
            return 0;
        }
        (self.success + self.failed) * 100 / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;
    use crate::job::{JobStatus, Operation, RolloutLimits};

    fn progress(waiting: u64, running: u64, success: u64, failed: u64) -> JobProgress {
        JobProgress {
            job: Job {
                id: JobId::parse("j1").unwrap(),
                project_id: ProjectId::parse("p1").unwrap(),
                job_type: "t".into(),
                status: JobStatus::Running,
                created_at: 0,
                begin_time: None,
                end_time: None,
                error_code: None,
                fail_reason: None,
                sub_jobs_total: 0,
                operation: Operation::Install,
                limits: RolloutLimits::default(),
            },
            waiting,
            running,
            success,
            failed,
        }
    }

    #[test]
    fn percent_counts_finished_sub_jobs() {
        assert_eq!(progress(0, 0, 0, 0).percent(), 0);
        assert_eq!(progress(1, 1, 1, 1).percent(), 50);
        assert_eq!(progress(0, 0, 2, 1).percent(), 100);
    }
}
