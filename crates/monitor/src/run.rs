//! The agent's loop: the order and cadence of the lines it writes, and how it stops.
//!
//! Waiting is behind the [`Waiter`] trait so the cadence is tested with a scripted waiter
//! and no real time; the real one ([`system_waiter`]) sleeps in poll(2) on a signal
//! self-pipe and on stdout, so SIGTERM/SIGINT and the guest closing its end of the pipe wake
//! the agent at once instead of at the next sample.

use std::io::{self, Write};
use std::time::Instant;

use crate::collector::{Collector, health, unsupported_reason};
use crate::report::{Report, Status};
use crate::settings::Settings;
use crate::{FIRST_WINDOW, HEARTBEAT_EVERY};

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The deadline passed.
    Elapsed,
    /// SIGTERM or SIGINT.
    Shutdown,
    /// Nobody reads stdout any more: the guest died or closed the pipe.
    OutputClosed,
}

/// Blocks until a deadline or until something ends the agent.
pub trait Waiter {
    fn wait_until(&mut self, deadline: Instant) -> Wake;
}

/// How [`run`] ended. All three are clean exits (status 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `--once` wrote its lines.
    Completed,
    /// Asked to stop; a last health line with status `stopping` was written (if it could be).
    Shutdown,
    /// Stdout was closed (broken pipe).
    OutputClosed,
}

/// Stops the loop early: a clean exit, or a write error other than a broken pipe.
enum Halt {
    Exit(Exit),
    Io(io::Error),
}

fn emit<W: Write>(out: &mut W, report: &Report) -> Result<(), Halt> {
    // One write per line, so a reader never sees half an object between two reads.
    let mut line = serde_json::to_vec(report).map_err(|e| Halt::Io(e.into()))?;
    line.push(b'\n');
    out.write_all(&line)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Halt::Exit(Exit::OutputClosed),
            _ => Halt::Io(e),
        })
}

fn wait<W: Write, S: Waiter>(
    out: &mut W,
    waiter: &mut S,
    deadline: Instant,
    started_at_ms: u64,
) -> Result<(), Halt> {
    match waiter.wait_until(deadline) {
        Wake::Elapsed => Ok(()),
        Wake::OutputClosed => Err(Halt::Exit(Exit::OutputClosed)),
        Wake::Shutdown => {
            // Tell the guest this exit is deliberate. If it is gone already, that is fine.
            let stopping = Report::Health(health(started_at_ms, Status::Stopping));
            match emit(out, &stopping) {
                Ok(()) | Err(Halt::Exit(_)) => Err(Halt::Exit(Exit::Shutdown)),
                Err(error) => Err(error),
            }
        }
    }
}

/// Runs the agent: a health line, the first metrics after [`FIRST_WINDOW`], then metrics
/// every `settings.interval` with a health line every [`HEARTBEAT_EVERY`] intervals.
///
/// On a platform without a collector only the health lines are written. Returns `Err` only
/// for a write error other than a broken pipe.
pub fn run<W: Write, S: Waiter>(
    settings: &Settings,
    started_at_ms: u64,
    out: &mut W,
    waiter: &mut S,
) -> io::Result<Exit> {
    match run_until_halted(settings, started_at_ms, out, waiter) {
        Ok(exit) | Err(Halt::Exit(exit)) => Ok(exit),
        Err(Halt::Io(error)) => Err(error),
    }
}

fn run_until_halted<W: Write, S: Waiter>(
    settings: &Settings,
    started_at_ms: u64,
    out: &mut W,
    waiter: &mut S,
) -> Result<Exit, Halt> {
    emit(out, &Report::Health(health(started_at_ms, Status::Running)))?;

    // The baseline is taken before the first wait, so the first sample's rates cover that
    // short window instead of being zeros or missing.
    let mut collector = if unsupported_reason().is_none() {
        let mut collector = Collector::new();
        wait(out, waiter, Instant::now() + FIRST_WINDOW, started_at_ms)?;
        emit(out, &Report::Metrics(Box::new(collector.sample())))?;
        Some(collector)
    } else {
        None
    };
    if settings.once {
        return Ok(Exit::Completed);
    }

    let mut next = Instant::now() + settings.interval;
    let mut ticks: u64 = 0;
    loop {
        wait(out, waiter, next, started_at_ms)?;
        ticks += 1;
        if ticks.is_multiple_of(HEARTBEAT_EVERY) {
            emit(out, &Report::Health(health(started_at_ms, Status::Running)))?;
        }
        if let Some(collector) = collector.as_mut() {
            emit(out, &Report::Metrics(Box::new(collector.sample())))?;
        }
        // Deadlines advance by whole intervals so samples do not drift by the time each one
        // takes; after a stall (suspend, a slow statvfs) the missed ones are skipped rather
        // than sent in a burst.
        next += settings.interval;
        let now = Instant::now();
        if next <= now {
            next = now + settings.interval;
        }
    }
}

/// Sleeps; nothing but the deadline ends a wait. For platforms without poll(2).
#[derive(Debug, Default)]
pub struct SleepWaiter;

impl Waiter for SleepWaiter {
    fn wait_until(&mut self, deadline: Instant) -> Wake {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        Wake::Elapsed
    }
}

#[cfg(unix)]
pub use unix::SignalWaiter;

/// The waiter for this platform: [`SignalWaiter`] on Unix (it installs the SIGTERM and
/// SIGINT handlers, so call it once), [`SleepWaiter`] elsewhere, where Ctrl-C's default
/// action ends the process.
#[cfg(unix)]
pub fn system_waiter() -> io::Result<impl Waiter> {
    SignalWaiter::install()
}

/// The waiter for this platform: [`SleepWaiter`] here, where Ctrl-C's default action ends
/// the process.
#[cfg(not(unix))]
pub fn system_waiter() -> io::Result<impl Waiter> {
    Ok(SleepWaiter)
}

#[cfg(unix)]
mod unix {
    use std::io;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::io::Errno;
    use signal_hook::consts::{SIGINT, SIGTERM};

    use super::{Waiter, Wake};

    /// Waits in poll(2) on two things besides the clock:
    ///
    /// - a self-pipe that signal-hook's handler writes to on SIGTERM/SIGINT (the handler does
    ///   nothing else, so all the real work happens here, outside signal context);
    /// - stdout, asking for no events: poll still reports POLLERR/POLLHUP when the reading
    ///   end of the pipe has gone, which is how a dead guest is noticed between samples.
    ///
    /// A write that blocks because the guest stopped reading without closing the pipe is not
    /// interrupted; the guest then has to SIGKILL, which it must be ready to do anyway.
    pub struct SignalWaiter {
        signals: UnixStream,
        watch_stdout: bool,
    }

    impl SignalWaiter {
        /// Installs the handlers. The registrations live as long as the process.
        pub fn install() -> io::Result<Self> {
            let (signals, wake) = UnixStream::pair()?;
            signal_hook::low_level::pipe::register(SIGINT, wake.try_clone()?)?;
            signal_hook::low_level::pipe::register(SIGTERM, wake)?;
            Ok(SignalWaiter {
                signals,
                watch_stdout: true,
            })
        }
    }

    impl Waiter for SignalWaiter {
        fn wait_until(&mut self, deadline: Instant) -> Wake {
            let stdout = io::stdout();
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Wake::Elapsed;
                }
                // Intervals are capped far below Timespec's range; the fallback is for form.
                let timeout = Timespec::try_from(remaining).unwrap_or(Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
                let mut fds = [
                    PollFd::new(&self.signals, PollFlags::IN),
                    PollFd::new(&stdout, PollFlags::empty()),
                ];
                let watched = if self.watch_stdout { 2 } else { 1 };
                match poll(&mut fds[..watched], Some(&timeout)) {
                    Ok(0) | Err(Errno::INTR) => continue,
                    Ok(_) => {}
                    Err(_) => {
                        // poll cannot fail with valid fds and a valid timeout; if it does,
                        // sleeping keeps the cadence, signals then take the default action.
                        std::thread::sleep(remaining.min(Duration::from_secs(1)));
                        continue;
                    }
                }
                if fds[0].revents().contains(PollFlags::IN) {
                    return Wake::Shutdown;
                }
                let out = fds[1].revents();
                if self.watch_stdout && out.intersects(PollFlags::ERR | PollFlags::HUP) {
                    return Wake::OutputClosed;
                }
                if self.watch_stdout && out.contains(PollFlags::NVAL) {
                    // poll cannot watch this stdout (macOS says NVAL for ttys and
                    // /dev/null); a closed pipe will still show up as a failed write.
                    self.watch_stdout = false;
                }
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;

    /// Answers waits from a script, instantly.
    struct Scripted(VecDeque<Wake>);

    impl Waiter for Scripted {
        fn wait_until(&mut self, _deadline: Instant) -> Wake {
            self.0.pop_front().unwrap_or(Wake::Shutdown)
        }
    }

    fn settings(once: bool) -> Settings {
        Settings {
            interval: Duration::from_millis(100),
            once,
        }
    }

    /// `h`, `s` (stopping health) or `m` for each line.
    fn kinds(out: &[u8]) -> String {
        String::from_utf8_lossy(out)
            .lines()
            .map(|line| match serde_json::from_str::<Report>(line) {
                Ok(Report::Health(h)) if h.status == Status::Stopping => 's',
                Ok(Report::Health(_)) => 'h',
                Ok(Report::Metrics(_)) => 'm',
                Err(e) => panic!("not a report: {line}: {e}"),
            })
            .collect()
    }

    #[test]
    fn once_writes_health_then_metrics() {
        let mut out = Vec::new();
        let mut waiter = Scripted(VecDeque::from([Wake::Elapsed]));
        let exit = run(&settings(true), 1, &mut out, &mut waiter).unwrap();
        assert_eq!(exit, Exit::Completed);
        assert_eq!(kinds(&out), "hm");
    }

    #[test]
    fn heartbeat_every_sixth_interval_and_stopping_line_on_shutdown() {
        let mut out = Vec::new();
        // The first-window wait, then 7 intervals, then SIGTERM.
        let mut waiter = Scripted(VecDeque::from(vec![Wake::Elapsed; 8]));
        let exit = run(&settings(false), 1, &mut out, &mut waiter).unwrap();
        assert_eq!(exit, Exit::Shutdown);
        // Start (health, first sample), ticks 1-5, tick 6 with its heartbeat, tick 7, stop.
        assert_eq!(kinds(&out), ["hm", "mmmmm", "hm", "m", "s"].concat());
    }

    #[test]
    fn closed_output_while_waiting_is_a_clean_exit() {
        let mut out = Vec::new();
        let mut waiter = Scripted(VecDeque::from([Wake::Elapsed, Wake::OutputClosed]));
        let exit = run(&settings(false), 1, &mut out, &mut waiter).unwrap();
        assert_eq!(exit, Exit::OutputClosed);
        assert_eq!(kinds(&out), "hm");
    }

    /// Accepts `lines` writes, then fails every write with `kind`.
    struct Failing {
        lines: usize,
        kind: io::ErrorKind,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.lines == 0 {
                return Err(self.kind.into());
            }
            self.lines -= 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn broken_pipe_is_a_clean_exit_and_other_write_errors_are_not() {
        let mut waiter = Scripted(VecDeque::from(vec![Wake::Elapsed; 3]));
        let mut out = Failing {
            lines: 2,
            kind: io::ErrorKind::BrokenPipe,
        };
        let exit = run(&settings(false), 1, &mut out, &mut waiter).unwrap();
        assert_eq!(exit, Exit::OutputClosed);

        let mut waiter = Scripted(VecDeque::from(vec![Wake::Elapsed; 3]));
        let mut out = Failing {
            lines: 1,
            kind: io::ErrorKind::StorageFull,
        };
        let error = run(&settings(false), 1, &mut out, &mut waiter).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    }
}
