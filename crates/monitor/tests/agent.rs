//! Black-box tests of the `deskfleet-monitor` binary as the guest daemon runs it: a child
//! process whose stdout is a pipe of JSON lines. Every wait is bounded, and a child left
//! over by a failing test is killed.
// Most tests need the Linux collector; elsewhere their helpers go unused.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deskfleet_monitor::{Health, Metrics, Report, Status};

const BIN: &str = env!("CARGO_BIN_EXE_deskfleet-monitor");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Generous: CI machines are shared, and a debug build starts slowly under load.
const DEADLINE: Duration = Duration::from_secs(20);

/// A running agent, killed on drop if it is still running.
struct Agent {
    child: Child,
}

impl Agent {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_remove("DESKFLEET_MONITOR_INTERVAL_MS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        Agent {
            child: command.spawn().expect("start the agent"),
        }
    }

    fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout is piped")
    }

    /// Waits for the exit, failing the test past `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {limit:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn parse(line: &str) -> Report {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a report: {line:?}: {e}"))
}

/// Reads lines on a thread (a blocking read cannot time out) until `stop` says so, then
/// drops the pipe: for the agent, that is the guest going away.
fn read_until(
    stdout: ChildStdout,
    stop: impl Fn(&[Report]) -> bool + Send + 'static,
) -> Receiver<Report> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let report = parse(&line);
            seen.push(report.clone());
            if sender.send(report).is_err() || stop(&seen) {
                break;
            }
        }
    });
    receiver
}

/// Collects what the reader sends until it finishes, failing the test past [`DEADLINE`].
fn collect(receiver: &Receiver<Report>) -> Vec<Report> {
    let deadline = Instant::now() + DEADLINE;
    let mut reports = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(report) => reports.push(report),
            Err(mpsc::RecvTimeoutError::Disconnected) => return reports,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no end of output within {DEADLINE:?}; got {reports:#?}")
            }
        }
    }
}

fn metrics_count(reports: &[Report]) -> usize {
    reports
        .iter()
        .filter(|r| matches!(r, Report::Metrics(_)))
        .count()
}

fn assert_percent(what: &str, value: f64) {
    assert!((0.0..=100.0).contains(&value), "{what} = {value}");
}

fn assert_first_health(health: &Health, pid: u32) {
    assert_eq!(health.agent, "deskfleet-monitor");
    assert_eq!(health.version, VERSION);
    assert_eq!(health.pid, pid);
    assert_eq!(health.status, Status::Running);
    let age = now_ms().saturating_sub(health.started_at_ms);
    assert!(age < 60_000, "started_at_ms is {age} ms ago");
}

/// The figures a user would be misled by if they were wrong.
#[cfg(target_os = "linux")]
fn assert_plausible(metrics: &Metrics) {
    assert_eq!(metrics.agent, "deskfleet-monitor");
    assert_eq!(metrics.version, VERSION);
    assert!(metrics.errors.is_empty(), "errors: {:?}", metrics.errors);
    let age = now_ms().saturating_sub(metrics.collected_at_ms);
    assert!(age < 60_000, "collected_at_ms is {age} ms ago");

    let cpu = metrics.cpu.as_ref().expect("cpu figures");
    assert!(cpu.cores >= 1);
    assert_percent("cpu.usage_percent", cpu.usage_percent);

    let memory = metrics.memory.as_ref().expect("memory figures");
    assert!(memory.total_bytes > 0);
    assert!(memory.available_bytes <= memory.total_bytes);
    assert!(memory.swap_free_bytes <= memory.swap_total_bytes);
    assert_percent("memory.used_percent", memory.used_percent);

    assert!(
        !metrics.disks.is_empty(),
        "no disk found; is / a pseudo filesystem here?"
    );
    for disk in &metrics.disks {
        assert!(disk.total_bytes > 0, "{disk:?}");
        assert!(disk.available_bytes <= disk.free_bytes, "{disk:?}");
        assert!(disk.free_bytes <= disk.total_bytes, "{disk:?}");
        assert_percent("disk.used_percent", disk.used_percent);
    }

    for interface in &metrics.network {
        assert_ne!(interface.interface, "lo");
        for rate in [interface.rx_bytes_per_sec, interface.tx_bytes_per_sec] {
            assert!(rate.is_some_and(|r| r >= 0.0), "{interface:?}");
        }
    }

    let load = metrics.load_average.expect("load average");
    assert!(load.iter().all(|l| *l >= 0.0), "{load:?}");
    assert!(metrics.uptime_secs.is_some_and(|u| u > 0.0));

    let own = metrics.agent_process.as_ref().expect("own footprint");
    assert!(own.rss_bytes > 0);
    // A sleeping agent with a few MiB resident: far more means a leak or a busy loop.
    assert!(own.rss_bytes < 64 * 1024 * 1024, "rss {}", own.rss_bytes);
    assert_percent("self.cpu_percent", own.cpu_percent);
}

#[test]
#[cfg(target_os = "linux")]
fn once_prints_health_then_plausible_metrics_and_exits() {
    let mut agent = Agent::spawn(&["--once"], &[]);
    let pid = agent.child.id();
    let reports = collect(&read_until(agent.take_stdout(), |_| false));
    assert_eq!(agent.wait(DEADLINE).code(), Some(0));

    let [Report::Health(health), Report::Metrics(metrics)] = reports.as_slice() else {
        panic!("expected a health and a metrics line, got {reports:#?}");
    };
    assert_first_health(health, pid);
    assert!(health.healthy && health.supported, "{health:?}");
    assert_eq!(health.reason, None);
    assert_plausible(metrics);
    // The first sample covers the short first window, not a whole interval.
    assert!(
        (200..5_000).contains(&metrics.interval_ms),
        "first window {} ms",
        metrics.interval_ms
    );
}

#[test]
#[cfg(not(target_os = "linux"))]
fn once_on_an_unsupported_platform_says_why() {
    let mut agent = Agent::spawn(&["--once"], &[]);
    let pid = agent.child.id();
    let reports = collect(&read_until(agent.take_stdout(), |_| false));
    assert_eq!(agent.wait(DEADLINE).code(), Some(0));
    let [Report::Health(health)] = reports.as_slice() else {
        panic!("expected one health line, got {reports:#?}");
    };
    assert_first_health(health, pid);
    assert!(!health.supported && !health.healthy);
    assert!(
        health
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("not yet supported"))
    );
}

#[test]
#[cfg(target_os = "linux")]
fn streams_samples_and_exits_cleanly_when_its_reader_goes_away() {
    let mut agent = Agent::spawn(&["--interval-ms", "200"], &[]);
    let pid = agent.child.id();
    let reports = collect(&read_until(agent.take_stdout(), |seen| {
        metrics_count(seen) >= 3
    }));
    // The pipe is closed now; the agent notices within its wait and exits 0.
    let status = agent.wait(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status:?}");

    let Some(Report::Health(health)) = reports.first() else {
        panic!("the first line is not health: {reports:#?}");
    };
    assert_first_health(health, pid);
    assert_eq!(metrics_count(&reports), 3);
    let samples: Vec<&Metrics> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Metrics(m) => Some(&**m),
            Report::Health(_) => None,
        })
        .collect();
    for metrics in &samples {
        assert_plausible(metrics);
    }
    // Later windows follow the interval, not the first window.
    for later in &samples[1..] {
        assert!(
            (150..2_000).contains(&later.interval_ms),
            "window {} ms for a 200 ms interval",
            later.interval_ms
        );
    }
    assert!(
        samples
            .windows(2)
            .all(|w| w[0].collected_at_ms <= w[1].collected_at_ms)
    );
}

#[test]
#[cfg(target_os = "linux")]
fn notices_its_reader_going_away_between_samples() {
    // With a minute between samples no write would fail for a minute: the agent has to see
    // the closed pipe while it waits.
    let mut agent = Agent::spawn(&["--interval-ms", "60000"], &[]);
    let reports = collect(&read_until(agent.take_stdout(), |seen| seen.len() >= 2));
    assert_eq!(reports.len(), 2);
    let status = agent.wait(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
#[cfg(target_os = "linux")]
fn the_interval_comes_from_the_environment_without_a_flag() {
    let mut agent = Agent::spawn(&[], &[("DESKFLEET_MONITOR_INTERVAL_MS", "200")]);
    // With the 10 s default the second sample would not come before the deadline.
    let reports = collect(&read_until(agent.take_stdout(), |seen| {
        metrics_count(seen) >= 2
    }));
    agent.wait(Duration::from_secs(5));
    let Some(Report::Metrics(second)) = reports.last() else {
        panic!("{reports:#?}");
    };
    assert!((150..2_000).contains(&second.interval_ms), "{second:?}");
}

#[test]
#[cfg(target_os = "linux")]
fn heartbeat_health_line_every_sixth_interval() {
    let mut agent = Agent::spawn(&["--interval-ms", "100"], &[]);
    let reports = collect(&read_until(agent.take_stdout(), |seen| {
        metrics_count(seen) >= 8
    }));
    agent.wait(Duration::from_secs(5));
    let kinds: String = reports
        .iter()
        .map(|r| match r {
            Report::Health(_) => 'h',
            Report::Metrics(_) => 'm',
        })
        .collect();
    // Start, the first sample, intervals 1-5, interval 6 with its heartbeat, interval 7.
    assert_eq!(kinds, "hmmmmmmhmm");
}

#[test]
#[cfg(unix)]
fn sigterm_ends_it_with_a_stopping_health_line() {
    let mut agent = Agent::spawn(&["--interval-ms", "60000"], &[]);
    let pid = agent.child.id();
    let receiver = read_until(agent.take_stdout(), |_| false);
    // Wait for the first line so the handlers are surely installed.
    let first = receiver.recv_timeout(DEADLINE).expect("a first line");
    assert!(matches!(first, Report::Health(_)), "{first:?}");

    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    // Well before the 60 s interval would have ended the wait.
    let status = agent.wait(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status:?}");

    let rest = collect(&receiver);
    let Some(Report::Health(last)) = rest.last() else {
        panic!("the last line is not health: {rest:#?}");
    };
    assert_eq!(last.status, Status::Stopping);
    assert_eq!(last.pid, pid);
}

#[test]
fn version_flag() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("deskfleet-monitor {VERSION}\n")
    );
}

#[test]
fn bad_arguments_exit_2_with_the_reason_on_stderr() {
    let output = Command::new(BIN)
        .args(["--interval-ms", "5"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "stdout is for reports only");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--interval-ms: 5 ms is outside"),
        "{stderr}"
    );
}

/// Lines written by 0.1.0. The guest must keep reading them, so every field keeps its name:
/// each line parses and serializes back to the same JSON.
#[test]
fn reports_from_0_1_0_still_parse_and_keep_their_shape() {
    let fixture = include_str!("fixtures/reports-v0.1.0.jsonl");
    let mut kinds = String::new();
    for line in fixture.lines() {
        let report = parse(line);
        kinds.push(match &report {
            Report::Health(_) => 'h',
            Report::Metrics(_) => 'm',
        });
        let original: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_value(&report).unwrap(), original, "{line}");
    }
    assert_eq!(kinds, "hmmhh");
}
