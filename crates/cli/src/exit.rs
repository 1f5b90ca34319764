//! Exit codes and how errors are told to the operator.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also: the reader of stdout went away, e.g. `| head`) |
//! | 1 | unexpected error (an answer the CLI cannot read, a local I/O failure) |
//! | 2 | usage or API error: bad flags or config, or the server refused the request |
//! | 3 | a job or an invocation failed (at least one desktop did not succeed) |
//! | 4 | the server could not be reached, or did not answer in time |

use deskfleet_client::ClientError;
use std::process::ExitCode;

pub const OK: u8 = 0;
pub const UNEXPECTED: u8 = 1;
pub const USAGE_OR_API: u8 = 2;
pub const JOB_FAILED: u8 = 3;
pub const UNREACHABLE: u8 = 4;

static TIMEOUT_SECS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The request timeout in force, for the message of a timeout.
pub fn set_timeout(secs: u64) {
    let _ = TIMEOUT_SECS.set(secs);
}

/// A mistake of the caller found before or without the server: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// The reader of stdout went away: stop quietly.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints `e` on stderr in the operator's words and returns its exit code.
pub fn report(e: &anyhow::Error, default_timeout_secs: u64) -> ExitCode {
    let timeout_secs = TIMEOUT_SECS.get().copied().unwrap_or(default_timeout_secs);
    if is_broken_pipe(e) {
        return ExitCode::from(OK);
    }
    let client = e.chain().find_map(|c| c.downcast_ref::<ClientError>());
    let (code, text) = match client {
        Some(ClientError::Api {
            status,
            request_id,
            body,
            text,
        }) => {
            let mut out = match body {
                Some(b) => {
                    let mut s = format!("error: {} (HTTP {status}): {}", b.error_code, b.error_msg);
                    if let Some(d) = &b.error_detail {
                        s.push_str(&format!("\n  detail: {d}"));
                    }
                    s
                }
                None => format!("error: HTTP {status}: {}", text.trim()),
            };
            if let Some(id) = request_id {
                out.push_str(&format!("\n  request id: {id}"));
            }
            if *status == 404 && body.as_ref().is_some_and(|b| b.error_code == "APIGW.0101") {
                out.push_str("\n  hint: this server does not offer that API (an older server?)");
            }
            (USAGE_OR_API, with_context(e, out))
        }
        Some(c) if c.is_timeout() => (
            UNREACHABLE,
            format!(
                "error: the server did not answer within {timeout_secs} s (--timeout-secs): {}",
                source_chain(c)
            ),
        ),
        Some(c) if c.is_unreachable() => (
            UNREACHABLE,
            format!("error: could not reach the server: {}", source_chain(c)),
        ),
        Some(ClientError::InsecureHttp(url)) => (
            USAGE_OR_API,
            format!(
                "error: refusing plain http to {url}: the signed requests would cross the network unencrypted; use https, or pass --allow-insecure-http"
            ),
        ),
        Some(ClientError::Ca(_) | ClientError::Endpoint(_)) => {
            (USAGE_OR_API, format!("error: {e:#}"))
        }
        Some(_) => (UNEXPECTED, format!("error: {e:#}")),
        None if e.chain().any(|c| c.downcast_ref::<Usage>().is_some()) => {
            (USAGE_OR_API, format!("error: {e:#}"))
        }
        None => (UNEXPECTED, format!("error: {e:#}")),
    };
    eprintln!("{text}");
    ExitCode::from(code)
}

/// The context the command added around a client error (e.g. "creating job 2 of 3").
fn with_context(e: &anyhow::Error, text: String) -> String {
    let outer: Vec<String> = e
        .chain()
        .take_while(|c| c.downcast_ref::<ClientError>().is_none())
        .map(ToString::to_string)
        .collect();
    if outer.is_empty() {
        text
    } else {
        format!("{text}\n  while: {}", outer.join(": "))
    }
}

/// A transport error with its causes (reqwest hides the useful part in `source`).
fn source_chain(e: &ClientError) -> String {
    let mut parts = vec![];
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p: &String| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}
