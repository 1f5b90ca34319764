//! The monitor child process: start it, read its report lines, restart it when it dies,
//! stop it gracefully.
//!
//! One [`Supervisor`] per installed version. It owns the child; the agent only sees
//! [`MonitorEvent`]s tagged with the supervisor's generation, so events from a supervisor
//! that is being replaced are recognised as stale and dropped.
//!
//! The child runs in a process group of its own, and stopping it signals the whole group:
//! whatever the agent started (a helper, a shell's not-yet-exec'd fork) ends with it
//! instead of outliving the version it belonged to.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use deskfleet_monitor::Report;
use deskfleet_proto::opamp::ComponentHealth;
use futures_util::StreamExt;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::install::MONITOR_PACKAGE;
use crate::protocol::{monitor_down, monitor_health};
use crate::state::InstalledPackage;

/// A longer stdout line is dropped: reports are a few KiB.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// A child that ran this long before dying was healthy enough: the next restart starts
/// from the initial backoff again.
pub const STABLE_RUN: Duration = Duration::from_secs(60);

/// What the supervisor tells the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum MonitorEvent {
    /// A health line from the monitor, as the `deskfleet-monitor` component's health,
    /// with the version the monitor reports.
    Health {
        health: ComponentHealth,
        version: String,
    },
    /// The monitor is not running (it died, or could not be started: `spawned` is then
    /// false); a restart is scheduled.
    Down {
        health: ComponentHealth,
        spawned: bool,
    },
    /// One metrics line, as JSON bytes; at most one per monitor interval.
    Metrics(Vec<u8>),
    /// No health line came within the start timeout (reported once).
    NotStarted(String),
}

/// How the child is run.
#[derive(Debug, Clone)]
pub struct SuperviseSettings {
    /// `--interval-ms`, and the metrics forwarding rate.
    pub interval: Duration,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub restart: BackoffPolicy,
}

/// A running supervisor.
#[derive(Debug)]
pub struct Supervisor {
    pub generation: u64,
    pub package: InstalledPackage,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Starts the child now and keeps it running until [`Supervisor::stop`].
    pub fn start(
        package: InstalledPackage,
        generation: u64,
        settings: SuperviseSettings,
        events: mpsc::Sender<(u64, MonitorEvent)>,
    ) -> Supervisor {
        let cancel = CancellationToken::new();
        let run = Run {
            package: package.clone(),
            generation,
            settings,
            events,
            cancel: cancel.clone(),
            started: Instant::now(),
            saw_health: false,
            not_started_reported: false,
            last_metrics: None,
        };
        Supervisor {
            generation,
            package,
            cancel,
            task: tokio::spawn(run.supervise()),
        }
    }

    /// Stops the child gracefully (stdout closed and SIGTERM, then SIGKILL after the
    /// stop timeout) and waits for it to be gone.
    pub async fn stop(self) {
        self.cancel.cancel();
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "monitor supervisor task failed");
        }
    }
}

struct Run {
    package: InstalledPackage,
    generation: u64,
    settings: SuperviseSettings,
    events: mpsc::Sender<(u64, MonitorEvent)>,
    cancel: CancellationToken,
    started: Instant,
    saw_health: bool,
    not_started_reported: bool,
    last_metrics: Option<Instant>,
}

/// How one run of the child ended.
enum Ended {
    Cancelled,
    Exited(ExitStatus),
    WaitFailed(std::io::Error),
    /// It closed its output but did not exit within the stop timeout; it was killed.
    Lingered,
}

impl Run {
    async fn supervise(mut self) {
        let mut backoff = Backoff::new(self.settings.restart);
        loop {
            let launched = Instant::now();
            let (last_error, spawned) = match self.spawn() {
                Ok(child) => match self.watch(child).await {
                    Ended::Cancelled => return,
                    Ended::Exited(status) => (format!("{MONITOR_PACKAGE} exited ({status})"), true),
                    Ended::WaitFailed(error) => {
                        (format!("cannot wait for {MONITOR_PACKAGE}: {error}"), true)
                    }
                    Ended::Lingered => (
                        format!("{MONITOR_PACKAGE} closed its output without exiting; killed"),
                        true,
                    ),
                },
                Err(error) => (
                    format!("cannot start {}: {error}", self.package.path.display()),
                    false,
                ),
            };
            if launched.elapsed() >= STABLE_RUN {
                backoff.reset();
            }
            let delay = backoff.next_delay(&mut rand::rng());
            tracing::warn!(error = %last_error, retry_in_ms = delay.as_millis() as u64, "monitor is down; restarting");
            let health = monitor_down(
                format!("restarting {MONITOR_PACKAGE}/{}", self.package.version),
                last_error,
                SystemTime::now(),
            );
            if !self.send(MonitorEvent::Down { health, spawned }).await {
                return;
            }
            let until = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(until) => break,
                    _ = tokio::time::sleep_until(self.start_deadline()), if self.deadline_armed() => {
                        if !self.report_not_started().await {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut command = Command::new(&self.package.path);
        command
            .arg("--interval-ms")
            .arg(self.settings.interval.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // The monitor's diagnostics go where the guest's own logs go.
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        if let Some(dir) = self.package.path.parent() {
            command.current_dir(dir);
        }
        let child = command.spawn()?;
        tracing::info!(pid = child.id(), version = %self.package.version, "monitor started");
        Ok(child)
    }

    fn start_deadline(&self) -> Instant {
        self.started + self.settings.start_timeout
    }

    fn deadline_armed(&self) -> bool {
        !self.saw_health && !self.not_started_reported
    }

    async fn report_not_started(&mut self) -> bool {
        self.not_started_reported = true;
        let reason = format!(
            "{MONITOR_PACKAGE} {} wrote no health report within {} s of its start",
            self.package.version,
            self.settings.start_timeout.as_secs()
        );
        tracing::warn!(%reason, "monitor did not start");
        self.send(MonitorEvent::NotStarted(reason)).await
    }

    /// False once the agent is gone (nobody to report to: stop).
    async fn send(&self, event: MonitorEvent) -> bool {
        self.events.send((self.generation, event)).await.is_ok()
    }

    /// Reads the child's lines until it exits or the supervisor is cancelled.
    async fn watch(&mut self, mut child: Child) -> Ended {
        let Some(stdout) = child.stdout.take() else {
            return self.stop_child(child).await;
        };
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
        let mut bad_lines: u64 = 0;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    // Closing our end of its stdout is the monitor's own cue to exit.
                    drop(lines);
                    return self.stop_child(child).await;
                }
                line = lines.next() => match line {
                    Some(Ok(line)) => {
                        if !self.on_line(line, &mut bad_lines).await {
                            drop(lines);
                            return self.stop_child(child).await;
                        }
                    }
                    Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                        tracing::warn!(max = MAX_LINE_BYTES, "monitor wrote an over-long line; dropped");
                    }
                    Some(Err(LinesCodecError::Io(error))) => {
                        tracing::warn!(%error, "cannot read the monitor's output");
                        break;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(self.start_deadline()), if self.deadline_armed() => {
                    if !self.report_not_started().await {
                        drop(lines);
                        return self.stop_child(child).await;
                    }
                }
            }
        }
        // Its stdout closed: it is exiting (or has closed stdout and lingers, which is
        // as good as dead to us).
        let group = child.id();
        let ended = tokio::select! {
            status = child.wait() => match status {
                Ok(status) => Ended::Exited(status),
                Err(error) => Ended::WaitFailed(error),
            },
            _ = self.cancel.cancelled() => return self.stop_child(child).await,
            _ = tokio::time::sleep(self.settings.stop_timeout) => {
                self.stop_child(child).await;
                Ended::Lingered
            }
        };
        // A crashed agent's helpers go with it, before the next start.
        sweep_group(group);
        ended
    }

    /// False when the agent is gone.
    async fn on_line(&mut self, line: String, bad_lines: &mut u64) -> bool {
        match serde_json::from_str::<Report>(&line) {
            Ok(Report::Health(report)) => {
                self.saw_health = true;
                if report.version != self.package.version {
                    tracing::warn!(installed = %self.package.version, reported = %report.version, "monitor reports another version than the one installed");
                }
                self.send(MonitorEvent::Health {
                    health: monitor_health(&report, SystemTime::now()),
                    version: report.version.clone(),
                })
                .await
            }
            Ok(Report::Metrics(_)) => {
                // Samples come every interval (the first one sooner); the 10 % slack
                // keeps a sample that arrives a hair early from being dropped.
                let now = Instant::now();
                let due = self
                    .last_metrics
                    .is_none_or(|at| now.duration_since(at) >= self.settings.interval.mul_f64(0.9));
                if due {
                    self.last_metrics = Some(now);
                    // Metrics are droppable; never let them hold up the supervisor.
                    match self
                        .events
                        .try_send((self.generation, MonitorEvent::Metrics(line.into_bytes())))
                    {
                        Err(mpsc::error::TrySendError::Closed(_)) => return false,
                        Err(mpsc::error::TrySendError::Full(_)) | Ok(()) => {}
                    }
                }
                true
            }
            Err(error) => {
                *bad_lines += 1;
                // The first, then one in a hundred: a broken monitor must not flood logs.
                if *bad_lines % 100 == 1 {
                    tracing::warn!(%error, bad_lines = *bad_lines, "monitor wrote a line that is not a report");
                }
                true
            }
        }
    }

    /// SIGTERM to its group, then SIGKILL after the stop timeout; what is left of the
    /// group once the child is gone is killed too.
    async fn stop_child(&self, mut child: Child) -> Ended {
        let group = child.id();
        terminate(&child);
        match tokio::time::timeout(self.settings.stop_timeout, child.wait()).await {
            Ok(Ok(status)) => {
                tracing::info!(%status, "monitor stopped");
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot wait for the monitor"),
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.settings.stop_timeout.as_millis() as u64,
                    "monitor did not stop in time; killing it"
                );
                let _ = child.kill().await;
            }
        }
        sweep_group(group);
        Ended::Cancelled
    }
}

/// The process group `leader` led (its id is the group's id), as a `Pid`.
#[cfg(unix)]
fn group_of(leader: Option<u32>) -> Option<rustix::process::Pid> {
    leader
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
}

/// Kills what is left of the group once its leader was reaped. The group id cannot name
/// anyone else meanwhile: it stays in use as long as any member lives, and the kernel
/// does not hand out a process id that is still some group's id.
#[cfg(unix)]
fn sweep_group(leader: Option<u32>) {
    use rustix::process::{Signal, kill_process_group};
    if let Some(group) = group_of(leader) {
        match kill_process_group(group, Signal::KILL) {
            Ok(()) => tracing::debug!("signalled what the monitor left in its process group"),
            Err(rustix::io::Errno::SRCH) => {}
            Err(error) => tracing::debug!(%error, "cannot signal the monitor's process group"),
        }
    }
}

#[cfg(not(unix))]
fn sweep_group(_leader: Option<u32>) {}

#[cfg(unix)]
fn terminate(child: &Child) {
    use rustix::process::{Signal, kill_process_group};
    // `id()` is None once the child was reaped; then there is nothing to signal.
    if let Some(group) = group_of(child.id())
        && let Err(error) = kill_process_group(group, Signal::TERM)
    {
        tracing::debug!(%error, "cannot send SIGTERM to the monitor");
    }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) {
    // No SIGTERM: the closed stdout is the only cue; the timeout then kills it.
}

#[cfg(all(test, unix))]
mod tests {
    use std::path::Path;

    use super::*;

    fn script(dir: &Path, body: &str) -> InstalledPackage {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("deskfleet-monitor");
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        InstalledPackage {
            name: MONITOR_PACKAGE.into(),
            version: "1.2.3".into(),
            sha256: String::new(),
            path,
        }
    }

    fn settings() -> SuperviseSettings {
        SuperviseSettings {
            interval: Duration::from_millis(1000),
            start_timeout: Duration::from_millis(500),
            stop_timeout: Duration::from_millis(500),
            restart: BackoffPolicy {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(200),
                jitter: 0.0,
            },
        }
    }

    async fn next(rx: &mut mpsc::Receiver<(u64, MonitorEvent)>) -> MonitorEvent {
        let (generation, event) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .expect("the supervisor is alive");
        assert_eq!(generation, 7);
        event
    }

    #[tokio::test]
    async fn health_and_rate_limited_metrics_are_forwarded() {
        let dir = tempfile::tempdir().unwrap();
        let package = script(dir.path(), &crate::testing::fake_monitor_script("1.2.3"));
        let (tx, mut rx) = mpsc::channel(64);
        let supervisor = Supervisor::start(package, 7, settings(), tx);
        let MonitorEvent::Health { health, version } = next(&mut rx).await else {
            panic!("health first")
        };
        assert_eq!(version, "1.2.3");
        assert!(health.healthy);
        assert_eq!(health.status, "running deskfleet-monitor/1.2.3");
        assert!(health.start_time_unix_nano > 0);
        let MonitorEvent::Metrics(data) = next(&mut rx).await else {
            panic!("then metrics")
        };
        let value: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(value["type"], "metrics");
        // The script writes a line every 200 ms; the interval is 1 s: about one in five.
        let started = Instant::now();
        let mut forwarded = 0;
        while started.elapsed() < Duration::from_millis(2100) {
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                forwarded += 1;
            }
        }
        assert!((1..=3).contains(&forwarded), "{forwarded} metrics in 2.1 s");
        supervisor.stop().await;
    }

    #[tokio::test]
    async fn a_dying_monitor_is_restarted_and_reported_down() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("starts");
        let body = format!(
            "#!/bin/sh\necho x >> {}\necho '{{\"type\":\"health\",\"agent\":\"deskfleet-monitor\",\"version\":\"1.2.3\",\"healthy\":true,\"pid\":1,\"started_at_ms\":1,\"supported\":true,\"status\":\"running\"}}'\nexit 3\n",
            count.display()
        );
        let package = script(dir.path(), &body);
        let (tx, mut rx) = mpsc::channel(64);
        let supervisor = Supervisor::start(package, 7, settings(), tx);
        let mut downs = 0;
        while downs < 3 {
            if let MonitorEvent::Down { health: h, spawned } = next(&mut rx).await {
                assert!(spawned);
                assert!(!h.healthy);
                assert_eq!(h.status, "restarting deskfleet-monitor/1.2.3");
                assert!(h.last_error.contains("exit status: 3"), "{}", h.last_error);
                downs += 1;
            }
        }
        supervisor.stop().await;
        let starts = std::fs::read_to_string(&count).unwrap().lines().count();
        assert!(starts >= 3, "{starts} starts");
    }

    const HEALTH_LINE: &str = r#"{"type":"health","agent":"deskfleet-monitor","version":"1.2.3","healthy":true,"pid":1,"started_at_ms":1,"supported":true,"status":"running"}"#;

    /// Pids of the processes whose command line holds `marker`.
    fn running_with(marker: &str) -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|entry| {
                std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
            })
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[tokio::test]
    async fn stopping_the_monitor_ends_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("helper-{}", std::process::id());
        // A helper that outlives its parent unless its process group is signalled (it
        // runs a command after `sleep`, so the shell stays and keeps the marker). The
        // monitor reports health only once the helper has started: until then the
        // forked shell still carries the parent's command line.
        let ready = dir.path().join("helper-ready");
        let ready = ready.display();
        let body = format!(
            "#!/bin/sh\nsh -c 'touch {ready}; sleep 3600; :' {marker} &\nwhile [ ! -e {ready} ]; do sleep 0.01; done\necho '{HEALTH_LINE}'\nwhile :; do sleep 0.1; done\n"
        );
        let package = script(dir.path(), &body);
        let (tx, mut rx) = mpsc::channel(64);
        let supervisor = Supervisor::start(package, 7, settings(), tx);
        assert!(matches!(next(&mut rx).await, MonitorEvent::Health { .. }));
        assert!(!running_with(&marker).is_empty(), "the helper runs");
        supervisor.stop().await;
        // SIGKILL is delivered when the helper is next scheduled: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running_with(&marker).is_empty() {
            assert!(Instant::now() < deadline, "the helper outlived the monitor");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_monitor_that_closes_its_output_and_lingers_is_killed_and_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("starts");
        let body = format!(
            "#!/bin/sh\necho x >> {}\necho '{HEALTH_LINE}'\nexec >&-\nexec sleep 3600\n",
            count.display()
        );
        let package = script(dir.path(), &body);
        let (tx, mut rx) = mpsc::channel(64);
        let supervisor = Supervisor::start(package, 7, settings(), tx);
        let mut downs = 0;
        while downs < 2 {
            if let MonitorEvent::Down { health, spawned } = next(&mut rx).await {
                assert!(spawned);
                assert!(
                    health
                        .last_error
                        .contains("closed its output without exiting"),
                    "{}",
                    health.last_error
                );
                downs += 1;
            }
        }
        supervisor.stop().await;
        let starts = std::fs::read_to_string(&count).unwrap().lines().count();
        assert!(starts >= 2, "{starts} starts");
    }

    #[tokio::test]
    async fn a_silent_monitor_is_not_started_and_stop_kills_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // Ignores SIGTERM, so only the kill after the stop timeout ends it.
        let body = format!(
            "#!/bin/sh\ntrap '' TERM\necho $$ > {}\nwhile :; do sleep 0.1; done\n",
            pid_file.display()
        );
        let package = script(dir.path(), &body);
        let (tx, mut rx) = mpsc::channel(64);
        let supervisor = Supervisor::start(package, 7, settings(), tx);
        let MonitorEvent::NotStarted(reason) = next(&mut rx).await else {
            panic!("not started")
        };
        assert!(reason.contains("no health report"), "{reason}");
        let begun = Instant::now();
        supervisor.stop().await;
        assert!(begun.elapsed() < Duration::from_secs(3));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The process is gone (reaped by tokio after the kill).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
