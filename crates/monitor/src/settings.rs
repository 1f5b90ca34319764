//! Command line and environment, layered: default < `DESKFLEET_MONITOR_INTERVAL_MS` < flags.
//!
//! Hand-parsed (three flags do not justify an argument-parsing dependency on every desktop),
//! but strict like the rest of deskfleet's settings: an unknown flag or a bad value is an
//! error, never ignored.

use std::time::Duration;

use thiserror::Error;

use crate::{AGENT_NAME, DEFAULT_INTERVAL_MS, MAX_INTERVAL, MIN_WINDOW};

/// The environment variable that sets the interval when `--interval-ms` is not given.
pub const INTERVAL_ENV: &str = "DESKFLEET_MONITOR_INTERVAL_MS";

/// How the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Time between samples (after the first, which comes after [`crate::FIRST_WINDOW`]).
    pub interval: Duration,
    /// Print one health and one metrics line, then exit.
    pub once: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: Duration::from_millis(DEFAULT_INTERVAL_MS),
            once: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Settings),
    /// `--version`: print `deskfleet-monitor <version>`.
    Version,
    /// `--help`.
    Help,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    #[error("unknown argument {0:?}")]
    UnknownArgument(String),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{source_name}: {value:?} is not a whole number of milliseconds")]
    NotANumber {
        source_name: &'static str,
        value: String,
    },
    #[error(
        "{source_name}: {value} ms is outside {min}..={max} ms",
        min = MIN_WINDOW.as_millis(),
        max = MAX_INTERVAL.as_millis()
    )]
    OutOfRange {
        source_name: &'static str,
        value: u64,
    },
}

/// The text `--help` prints.
pub fn usage() -> String {
    format!(
        "{AGENT_NAME} {version}: writes this desktop's CPU, memory, disk and network figures \
         to stdout as newline-delimited JSON\n\n\
         usage: {AGENT_NAME} [--interval-ms N] [--once]\n\n\
         \x20 --interval-ms N  milliseconds between samples (default {DEFAULT_INTERVAL_MS}, \
         env {INTERVAL_ENV}, {min}..={max})\n\
         \x20 --once           print one health and one metrics line, then exit\n\
         \x20 --version        print the version\n\
         \x20 --help           print this text\n",
        version = crate::VERSION,
        min = MIN_WINDOW.as_millis(),
        max = MAX_INTERVAL.as_millis(),
    )
}

fn interval(source_name: &'static str, value: &str) -> Result<Duration, SettingsError> {
    let ms: u64 = value
        .trim()
        .parse()
        .map_err(|_| SettingsError::NotANumber {
            source_name,
            value: value.to_owned(),
        })?;
    let interval = Duration::from_millis(ms);
    // A floor keeps a typo from turning the agent into a busy loop on a user's desktop; a
    // ceiling keeps deadline arithmetic far from overflow.
    if interval < MIN_WINDOW || interval > MAX_INTERVAL {
        return Err(SettingsError::OutOfRange {
            source_name,
            value: ms,
        });
    }
    Ok(interval)
}

/// Parses the arguments (without the program name) and the value of [`INTERVAL_ENV`].
pub fn parse_command<I>(args: I, env_interval: Option<&str>) -> Result<Command, SettingsError>
where
    I: IntoIterator<Item = String>,
{
    let mut settings = Settings::default();
    let mut flag_interval = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--version" | "-V" => return Ok(Command::Version),
            "--help" | "-h" => return Ok(Command::Help),
            "--once" => settings.once = true,
            "--interval-ms" => {
                let value = args
                    .next()
                    .ok_or(SettingsError::MissingValue("--interval-ms"))?;
                flag_interval = Some(interval("--interval-ms", &value)?);
            }
            other => match other.strip_prefix("--interval-ms=") {
                Some(value) => flag_interval = Some(interval("--interval-ms", value)?),
                None => return Err(SettingsError::UnknownArgument(arg)),
            },
        }
    }
    // The environment is only looked at when no flag overrides it, so a stale variable
    // cannot stop an agent that its parent configured explicitly.
    settings.interval = match (flag_interval, env_interval.filter(|v| !v.trim().is_empty())) {
        (Some(flag), _) => flag,
        (None, Some(value)) => interval(INTERVAL_ENV, value)?,
        (None, None) => settings.interval,
    };
    Ok(Command::Run(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: Option<&str>) -> Result<Command, SettingsError> {
        parse_command(args.iter().map(|a| a.to_string()), env)
    }

    fn run(interval_ms: u64, once: bool) -> Command {
        Command::Run(Settings {
            interval: Duration::from_millis(interval_ms),
            once,
        })
    }

    #[test]
    fn defaults_to_ten_seconds() {
        assert_eq!(parse(&[], None), Ok(run(10_000, false)));
    }

    #[test]
    fn flag_beats_env_beats_default() {
        assert_eq!(parse(&[], Some("2000")), Ok(run(2_000, false)));
        assert_eq!(
            parse(&["--interval-ms", "500", "--once"], Some("2000")),
            Ok(run(500, true))
        );
        assert_eq!(
            parse(&["--interval-ms=300"], Some("2000")),
            Ok(run(300, false))
        );
        assert_eq!(parse(&[], Some("")), Ok(run(10_000, false)));
    }

    #[test]
    fn version_and_help() {
        assert_eq!(parse(&["--version"], None), Ok(Command::Version));
        assert_eq!(parse(&["--once", "-h"], None), Ok(Command::Help));
        assert!(usage().contains("--interval-ms"));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            parse(&["--verbose"], None),
            Err(SettingsError::UnknownArgument("--verbose".into()))
        );
        assert_eq!(
            parse(&["--interval-ms"], None),
            Err(SettingsError::MissingValue("--interval-ms"))
        );
        assert!(matches!(
            parse(&["--interval-ms", "ten"], None),
            Err(SettingsError::NotANumber { .. })
        ));
        assert!(matches!(
            parse(&["--interval-ms", "5"], None),
            Err(SettingsError::OutOfRange { value: 5, .. })
        ));
        assert!(matches!(
            parse(&[], Some("-1")),
            Err(SettingsError::NotANumber {
                source_name: INTERVAL_ENV,
                ..
            })
        ));
        // A flag overrides a broken variable instead of failing on it.
        assert_eq!(
            parse(&["--interval-ms", "500"], Some("-1")),
            Ok(run(500, false))
        );
        let message = parse(&["--interval-ms", "999999999999"], None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("100..=86400000"), "{message}");
    }
}
