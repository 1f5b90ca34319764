//! The watch of a newly switched-to agent version, as a pure state machine.
//!
//! After an upgrade (or a rollback) switches to version V, the guest watches the agent
//! for a window (`Config::watch_window`, default 15 s). The watch passes only when the
//! window has passed and, by then, the agent
//! - was started and is still running (it never exited),
//! - wrote at least one health line, the last one healthy,
//! - reported the version it was packaged as (V).
//!
//! It fails at once when the agent exits, cannot be started, or reports another
//! version; at the end of the window when it never wrote a health line or its last one
//! was unhealthy. The verdict carries the reason code of the contract
//! (`docs/fleet-protocol.md`). The IO (starting, stopping, putting the previous version
//! back) is the agent's (`agent.rs`); this file only decides.

use std::time::Duration;

use tokio::time::Instant;

use crate::install::{InstallError, MONITOR_PACKAGE, ReasonCode};

/// Where a watch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep watching until [`Watch::deadline`].
    Watching,
    /// The window passed with the agent running, healthy, at its version.
    Passed,
    /// The agent failed the watch: put the previous version back.
    Failed(InstallError),
}

/// One watch of version `expected`.
#[derive(Debug, Clone)]
pub struct Watch {
    expected: String,
    window: Duration,
    deadline: Instant,
    saw_health: bool,
    last_healthy: bool,
    last_error: String,
    failed: Option<InstallError>,
}

impl Watch {
    pub fn new(expected: impl Into<String>, window: Duration, now: Instant) -> Watch {
        Watch {
            expected: expected.into(),
            window,
            deadline: now + window,
            saw_health: false,
            last_healthy: false,
            last_error: String::new(),
            failed: None,
        }
    }

    /// The version being watched.
    pub fn expected(&self) -> &str {
        &self.expected
    }

    /// When the window ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The verdict so far, without new facts.
    pub fn verdict(&self, now: Instant) -> Verdict {
        if let Some(error) = &self.failed {
            return Verdict::Failed(error.clone());
        }
        if now < self.deadline {
            return Verdict::Watching;
        }
        let window = format_window(self.window);
        if !self.saw_health {
            return self.fail(
                ReasonCode::AgentNotStarted,
                format!(
                    "{MONITOR_PACKAGE} {} wrote no health report within the {window} watch window",
                    self.expected
                ),
            );
        }
        if !self.last_healthy {
            let why = if self.last_error.is_empty() {
                "no reason given".to_owned()
            } else {
                self.last_error.clone()
            };
            return self.fail(
                ReasonCode::AgentUnhealthy,
                format!(
                    "{MONITOR_PACKAGE} {} still reported itself unhealthy at the end of the {window} watch window ({why})",
                    self.expected
                ),
            );
        }
        Verdict::Passed
    }

    /// A health line: `version` as the agent reports it.
    pub fn on_health(
        &mut self,
        version: &str,
        healthy: bool,
        last_error: &str,
        now: Instant,
    ) -> Verdict {
        if self.failed.is_none() {
            if version != self.expected {
                self.failed = Some(InstallError::new(
                    ReasonCode::VersionMismatch,
                    format!(
                        "the package is {MONITOR_PACKAGE} {} but its agent reports version {version}",
                        self.expected
                    ),
                ));
            } else {
                self.saw_health = true;
                self.last_healthy = healthy;
                self.last_error = last_error.to_owned();
            }
        }
        self.verdict(now)
    }

    /// The agent exited (`how`: its exit status, as the supervisor tells it).
    pub fn on_exit(&mut self, how: &str, now: Instant) -> Verdict {
        if self.failed.is_none() {
            self.failed = Some(InstallError::new(
                ReasonCode::AgentExited,
                format!(
                    "{MONITOR_PACKAGE} {} exited during the watch window: {how}",
                    self.expected
                ),
            ));
        }
        self.verdict(now)
    }

    /// The agent could not be started at all.
    pub fn on_spawn_failed(&mut self, why: &str, now: Instant) -> Verdict {
        if self.failed.is_none() {
            self.failed = Some(InstallError::new(ReasonCode::AgentNotStarted, why));
        }
        self.verdict(now)
    }

    fn fail(&self, code: ReasonCode, reason: String) -> Verdict {
        Verdict::Failed(InstallError::new(code, reason))
    }
}

fn format_window(window: Duration) -> String {
    if window.subsec_millis() == 0 {
        format!("{} s", window.as_secs())
    } else {
        format!("{} ms", window.as_millis())
    }
}

/// The `error_message` of a failed watch: `<reason-code>: <reason>; rolled back to
/// <previous>` (or that there was nothing to roll back to).
pub fn rolled_back(error: InstallError, previous: Option<&str>) -> InstallError {
    let tail = match previous {
        Some(version) => format!("rolled back to {version}"),
        None => "no previous version to roll back to; the agent is stopped".to_owned(),
    };
    InstallError::new(error.code, format!("{}; {tail}", error.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(15);

    fn code(verdict: Verdict) -> ReasonCode {
        match verdict {
            Verdict::Failed(e) => e.code,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_healthy_agent_at_its_version_passes_only_when_the_window_has_passed() {
        let t0 = Instant::now();
        let mut watch = Watch::new("0.2.0", WINDOW, t0);
        assert_eq!(watch.verdict(t0), Verdict::Watching);
        assert_eq!(
            watch.on_health("0.2.0", true, "", t0 + Duration::from_secs(1)),
            Verdict::Watching
        );
        assert_eq!(
            watch.verdict(t0 + WINDOW - Duration::from_millis(1)),
            Verdict::Watching
        );
        assert_eq!(watch.verdict(t0 + WINDOW), Verdict::Passed);
        assert_eq!(watch.deadline(), t0 + WINDOW);
    }

    #[test]
    fn another_version_fails_at_once_as_version_mismatch() {
        let t0 = Instant::now();
        let mut watch = Watch::new("0.3.0", WINDOW, t0);
        let verdict = watch.on_health("0.1.0", true, "", t0);
        let Verdict::Failed(error) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(error.code, ReasonCode::VersionMismatch);
        assert!(error.to_string().starts_with("version-mismatch: "));
        assert!(error.reason.contains("0.1.0") && error.reason.contains("0.3.0"));
        // A later good line does not undo it.
        assert_eq!(
            code(watch.on_health("0.3.0", true, "", t0 + WINDOW)),
            ReasonCode::VersionMismatch
        );
    }

    #[test]
    fn an_exit_fails_at_once_even_after_a_good_health_line() {
        let t0 = Instant::now();
        let mut watch = Watch::new("0.2.0", WINDOW, t0);
        watch.on_health("0.2.0", true, "", t0);
        let verdict = watch.on_exit("exit status: 1", t0 + Duration::from_secs(2));
        let Verdict::Failed(error) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(error.code, ReasonCode::AgentExited);
        assert!(error.reason.contains("exit status: 1"));
    }

    #[test]
    fn silence_is_not_started_and_unhealthy_is_unhealthy_at_the_deadline() {
        let t0 = Instant::now();
        let watch = Watch::new("0.2.0", WINDOW, t0);
        assert_eq!(
            watch.verdict(t0 + Duration::from_secs(14)),
            Verdict::Watching
        );
        assert_eq!(
            code(watch.verdict(t0 + WINDOW)),
            ReasonCode::AgentNotStarted
        );

        let mut watch = Watch::new("0.2.0", WINDOW, t0);
        assert_eq!(
            watch.on_health("0.2.0", false, "cannot read /proc", t0),
            Verdict::Watching
        );
        let Verdict::Failed(error) = watch.verdict(t0 + WINDOW) else {
            panic!()
        };
        assert_eq!(error.code, ReasonCode::AgentUnhealthy);
        assert!(error.reason.contains("cannot read /proc"));

        // Unhealthy first, healthy by the end: passes.
        let mut watch = Watch::new("0.2.0", WINDOW, t0);
        watch.on_health("0.2.0", false, "warming up", t0);
        watch.on_health("0.2.0", true, "", t0 + Duration::from_secs(3));
        assert_eq!(watch.verdict(t0 + WINDOW), Verdict::Passed);
    }

    #[test]
    fn a_spawn_failure_is_not_started() {
        let t0 = Instant::now();
        let mut watch = Watch::new("0.2.0", WINDOW, t0);
        assert_eq!(
            code(watch.on_spawn_failed("cannot start /x: permission denied", t0)),
            ReasonCode::AgentNotStarted
        );
    }

    #[test]
    fn the_rolled_back_message_names_the_previous_version() {
        let error = InstallError::new(ReasonCode::AgentExited, "it died");
        assert_eq!(
            rolled_back(error.clone(), Some("0.1.0")).to_string(),
            "agent-exited: it died; rolled back to 0.1.0"
        );
        assert!(
            rolled_back(error, None)
                .to_string()
                .starts_with("agent-exited: it died; no previous version")
        );
    }
}
