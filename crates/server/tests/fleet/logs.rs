//! The real `deskfleet-server` binary's log: JSON lines that carry each request's id, and
//! text without colour escapes when stderr is a pipe.

use crate::harness::{Server, bin, eventually};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn json_logs_carry_the_request_id_of_each_request() {
    let server = Server::start("[log]\nformat = \"json\"\n").await;
    let url = format!(
        "{}/v2/{}/desktops",
        server.endpoint, server.bootstrap.project_id
    );
    // Unsigned: a 401, which the access log records at info.
    let r = crate::harness::http_for(&url)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();

    let line = eventually(10, "the request's access line", || async {
        server.log().lines().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let in_request = v["spans"]
                .as_array()?
                .iter()
                .any(|s| s["request_id"] == id.as_str());
            (in_request && v["fields"]["message"] == "request answered").then_some(v)
        })
    })
    .await;
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["fields"]["status"], 401, "{line}");
    assert_eq!(
        line["fields"]["route"], "/v2/{project_id}/desktops",
        "{line}"
    );
    assert_eq!(line["span"]["name"], "request", "{line}");
    assert_eq!(line["span"]["request_id"], id.as_str(), "{line}");
    assert_eq!(line["span"]["method"], "GET", "{line}");

    // Every line the server wrote is one JSON object.
    let log = server.log();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }
    assert!(!log.contains('\u{1b}'), "escape codes in JSON logs");
}

/// Runs the server with stderr on a pipe until it logs that it serves; returns its lines.
fn log_until_serving(envs: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(bin("deskfleet-server"));
    command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        // Only the pipe and `envs` decide here, not what whoever runs the tests has set.
        .env_remove("NO_COLOR")
        .env_remove("DESKFLEET_LOG__FORMAT")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start deskfleet-server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    // Every level of the server's start is on the way to this line.
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.iter().any(|l: &String| l.contains("serving")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("no \"serving\" line ({e}):\n{}", log.join("\n"));
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    log.extend(rx.try_iter());
    log
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_escapes() {
    let log = log_until_serving(&[]).join("\n");
    assert!(!log.contains('\u{1b}'), "escape codes on a pipe:\n{log}");
    let serving = log.lines().find(|l| l.contains("serving")).unwrap();
    assert!(serving.contains(" INFO "), "{serving}");
    assert!(
        serving.contains("backend=") && serving.contains("sqlite"),
        "{serving}"
    );
}

#[test]
fn the_log_format_can_be_set_from_the_environment() {
    let log = log_until_serving(&[("DESKFLEET_LOG__FORMAT", "json")]);
    for line in &log {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(
        log.iter().any(|l| l.contains("\"message\":\"serving\"")),
        "{log:?}"
    );
}
