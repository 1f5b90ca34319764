//! The `deskfleet` binary against a real `deskfleet-server` over TLS (and, for a
//! successful install, a real `deskfleet-guest`): output formats, `--query`, exit codes,
//! progress on stderr, timeouts, a closed pipe, profiles, target selection and splitting.
//! The server and guest binaries are the workspace's own (`cargo build --workspace
//! --bins` builds them; `scripts/test` does so before the tests).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Sub-jobs of desktops that never connect fail after 4 s; the sweep and the scheduler
/// look often, so failures come quickly.
const SETTINGS: &str = "[jobs]\ndelivery_timeout_ms = 4000\nexecution_timeout_ms = 60000\nsweep_interval_ms = 100\n\
                        [fleet]\nschedule_interval_ms = 100\nmetrics_min_interval_ms = 0\n";

/// A binary of this workspace, next to the test executable's directory.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, for at most `secs` seconds.
fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Server {
    dir: tempfile::TempDir,
    /// The CLI's own config directory (XDG_CONFIG_HOME), empty unless a test writes it.
    config: tempfile::TempDir,
    project: String,
    child: Child,
}

impl Server {
    fn start() -> Self {
        Self::start_with(SETTINGS)
    }

    /// A server whose settings file holds `settings` (TOML).
    fn start_with(settings: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("settings.toml"), settings).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(bin("deskfleet-server"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(dir.path().join("settings.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start deskfleet-server");
        let addr = eventually(60, "server listening", || {
            std::fs::read_to_string(dir.path().join("listen.addr"))
                .ok()
                .filter(|s| !s.trim().is_empty())
        });
        eventually(30, "server accepting", || {
            std::net::TcpStream::connect(addr.trim()).ok()
        });
        let bootstrap: serde_json::Value = eventually(30, "bootstrap.json", || {
            serde_json::from_slice(&std::fs::read(dir.path().join("bootstrap.json")).ok()?).ok()
        });
        assert!(
            std::fs::read_to_string(dir.path().join("endpoint.url"))
                .unwrap()
                .starts_with("https://"),
            "the tests speak TLS"
        );
        Server {
            project: bootstrap["project_id"].as_str().unwrap().to_string(),
            dir,
            config: tempfile::tempdir().unwrap(),
            child,
        }
    }

    fn data_dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn endpoint(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("endpoint.url"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn admin(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(bin("deskfleet-server"))
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("admin")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Imports desktops `name-0..n` tagged `group=<group>`; returns their ids.
    fn import(&self, prefix: &str, n: usize, group: &str) -> Vec<String> {
        let desktops: Vec<_> = (0..n)
            .map(|i| {
                serde_json::json!({"computer_name": format!("{prefix}-{i}"),
                    "ip_address": format!("10.1.{}.{}", i / 250, i % 250 + 1), "os_type": "Linux",
                    "tags": [{"key": "group", "value": group}]})
            })
            .collect();
        let file = self.dir.path().join(format!("import-{prefix}.json"));
        std::fs::write(&file, serde_json::to_vec(&desktops).unwrap()).unwrap();
        let created = self.admin(&[
            "desktops",
            "import",
            "--project",
            &self.project,
            file.to_str().unwrap(),
        ]);
        created
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["desktop_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// `deskfleet` with only what the test gives it (no inherited settings).
    fn cli(&self) -> Command {
        self.command(env!("CARGO_BIN_EXE_deskfleet"))
    }

    /// `program` with the environment of [`Server::cli`].
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for var in [
            "DESKFLEET_ENDPOINT",
            "DESKFLEET_DATA_DIR",
            "DESKFLEET_CA_CERT",
            "DESKFLEET_PROFILE",
            "DESKFLEET_PROJECT_ID",
            "DESKFLEET_ACCESS_KEY",
            "DESKFLEET_SECRET_KEY",
            "DESKFLEET_OUTPUT",
            "DESKFLEET_TIMEOUT_SECS",
            "DESKFLEET_RETRIES",
            "DESKFLEET_CONFIG_FILE",
            "NO_COLOR",
        ] {
            c.env_remove(var);
        }
        c.env("XDG_CONFIG_HOME", self.config.path());
        c
    }

    /// `deskfleet --data-dir DIR ARGS...`
    fn run(&self, args: &[&str]) -> Output {
        self.cli()
            .args(["--data-dir", self.data_dir()])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

#[test]
fn tables_by_default_json_on_demand_and_query_selects_fields() {
    let server = Server::start();
    server.import("desk", 3, "lab");

    let table = server.run(&["desktops", "list"]);
    assert_eq!(code(&table), 0, "{}", stderr(&table));
    let text = stdout(&table);
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ID "), "{text}");
    let name_col = header.find("NAME").unwrap();
    for line in lines.clone() {
        // Aligned: every row's name starts under the header's.
        assert_eq!(&line[name_col..name_col + 5], "desk-", "{text}");
    }
    assert_eq!(lines.count(), 3);
    assert!(text.contains("group=lab"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colours off a terminal: {text:?}"
    );

    let doc = json(&server.run(&["-o", "json", "desktops", "list"]));
    assert_eq!(doc["total_count"], 3);
    assert_eq!(doc["desktops"].as_array().unwrap().len(), 3);

    let names = json(&server.run(&[
        "-o",
        "json",
        "--query",
        "desktops[].computer_name",
        "desktops",
        "list",
    ]));
    let mut names: Vec<String> = serde_json::from_value(names).unwrap();
    names.sort();
    assert_eq!(names, ["desk-0", "desk-1", "desk-2"]);

    // A selection of objects is a table for people, with the chosen fields as columns.
    let picked = server.run(&[
        "--query",
        "desktops[].{computer_name,ip_address}",
        "desktops",
        "list",
    ]);
    let text = stdout(&picked);
    assert!(text.starts_with("COMPUTER_NAME  IP_ADDRESS\n"), "{text}");
    assert!(text.contains("desk-1         10.1.0.2\n"), "{text}");

    // A desktop is found by its name too.
    let shown = server.run(&["desktops", "show", "desk-1"]);
    assert_eq!(code(&shown), 0, "{}", stderr(&shown));
    assert!(
        stdout(&shown).contains("\ncomputer_name:"),
        "{}",
        stdout(&shown)
    );

    let bad = server.run(&["--query", "desktops[x]", "desktops", "list"]);
    assert_eq!(code(&bad), 2);
    assert!(stderr(&bad).contains("integer index"), "{}", stderr(&bad));
}

/// Runs `deskfleet --data-dir DIR ARGS` on a pseudo-terminal (util-linux `script`), as a
/// person at a terminal would; returns what the terminal showed.
fn on_terminal(server: &Server, args: &str, no_color: bool) -> String {
    let line = format!(
        "{} --data-dir {} {args}",
        env!("CARGO_BIN_EXE_deskfleet"),
        server.data_dir()
    );
    let mut c = server.command("script");
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let out = c.args(["-qec", &line, "/dev/null"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colours_only_on_a_terminal_and_never_with_no_color() {
    let server = Server::start();
    server.import("desk", 2, "lab");
    let shown = on_terminal(&server, "desktops list", false);
    assert!(shown.contains("\x1b[1mID "), "a bold header: {shown:?}");
    assert!(shown.contains("desk-1"), "{shown:?}");
    let plain = on_terminal(&server, "desktops list", true);
    assert!(plain.contains("desk-1"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
    // Off a terminal (a pipe), no colours either: see the table test.

    // Progress is one line rewritten in place; the summary's status is red.
    let shown = on_terminal(&server, "install desk-0 --wait --poll-ms 100", false);
    assert!(
        shown.contains("\r\x1b[2Kprogress: 0/1 done, 0 failed"),
        "{shown:?}"
    );
    assert!(
        shown.contains("\r\x1b[2Kprogress: 0/1 done, 1 failed"),
        "{shown:?}"
    );
    assert!(shown.contains("\x1b[31mFAIL\x1b[0m 0 of 1"), "{shown:?}");
}

#[test]
fn a_failed_job_exits_3_with_progress_on_stderr_and_each_reason_and_retry_and_cancel_say_what_changed()
 {
    let server = Server::start();
    server.import("wks", 2, "lab");

    let out = server.run(&["install", "wks-0", "--wait", "--poll-ms", "100"]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let job = text.lines().next().unwrap().trim().to_string();
    assert_eq!(job.len(), 32, "the job id comes first: {text}");
    let progress = stderr(&out);
    assert!(
        progress.contains("progress: 0/1 done, 0 failed, 0 running, 1 waiting"),
        "{progress}"
    );
    assert!(
        progress.contains("progress: 0/1 done, 1 failed, 0 running, 0 waiting"),
        "{progress}"
    );
    assert!(
        text.contains("FAIL 0 of 1 desktops succeeded, 1 failed"),
        "{text}"
    );
    let failed_row = text
        .lines()
        .find(|l| l.starts_with("wks-0"))
        .unwrap_or_else(|| panic!("a row for the failed desktop: {text}"));
    assert!(
        failed_row.split_whitespace().count() > 3,
        "with a reason: {failed_row}"
    );

    // Another job, still waiting: nothing to retry, then its sub-job is cancelled once.
    let second = stdout(&server.run(&["install", "wks-1"]))
        .trim()
        .to_string();
    let retry = server.run(&["job", "retry", &second]);
    assert_eq!(code(&retry), 0, "{}", stderr(&retry));
    assert!(
        stdout(&retry).contains("nothing to retry"),
        "{}",
        stdout(&retry)
    );
    let cancel = server.run(&["job", "cancel", &second]);
    assert!(
        stdout(&cancel).contains("cancelled 1 sub-job of job"),
        "{}",
        stdout(&cancel)
    );
    assert!(stdout(&cancel).contains("wks-1"), "{}", stdout(&cancel));
    let again = server.run(&["job", "cancel", &second]);
    assert!(
        stdout(&again).contains("nothing to cancel"),
        "{}",
        stdout(&again)
    );

    // The failed job: its sub-job is sent again.
    let retry = server.run(&["-o", "json", "job", "retry", &job]);
    let doc = json(&retry);
    assert_eq!(doc["changed"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["changed"][0]["from"], "FAILED");

    // The cancelled install is a CANCELED invocation: not retried, exit 3, with the reason.
    let out = server.run(&[
        "-o",
        "json",
        "--query",
        "invocations[0].{invocation_id,invocation_status}",
        "invocations",
        "list",
        "--desktop",
        "wks-1",
    ]);
    let doc = json(&out);
    assert_eq!(doc["invocation_status"], "CANCELED", "{doc}");
    let out = server.run(&[
        "invocations",
        "retry",
        doc["invocation_id"].as_str().unwrap(),
    ]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let row = text.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("wks-1 ") && row.contains(" invocationmgr.0007 "),
        "{text}"
    );
}

#[test]
fn more_than_100_desktops_are_split_into_jobs_followed_together() {
    let server = Server::start();
    server.import("big", 230, "big");
    server.import("other", 2, "small");

    let out = server.run(&[
        "-o",
        "json",
        "install",
        "--tag",
        "group=big",
        "--wait",
        "--poll-ms",
        "200",
    ]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let doc = json(&out);
    let jobs = doc["jobs"].as_array().unwrap();
    let sizes: Vec<u64> = jobs
        .iter()
        .map(|j| j["sub_jobs_total"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [100, 100, 30]);
    assert_eq!(doc["total"], 230);
    assert_eq!(doc["failed"], 230);
    assert_eq!(doc["failures"].as_array().unwrap().len(), 230);
    // The ids went to stderr first (JSON mode keeps stdout one document).
    let err = stderr(&out);
    for j in jobs {
        assert!(
            err.contains(&format!("job {}", j["id"].as_str().unwrap())),
            "{err}"
        );
    }
    assert!(err.contains("progress: 0/230 done"), "{err}");

    // Names, a file and --all.
    let list = server.dir.path().join("targets.txt");
    std::fs::write(&list, "# two desktops\nother-0\n\nother-1  # by name\n").unwrap();
    let out = server.run(&[
        "-o",
        "json",
        "install",
        "--from-file",
        list.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["desktops"], 2);
    let out = server.run(&["-o", "json", "install", "--all"]);
    assert_eq!(json(&out)["job_ids"].as_array().unwrap().len(), 3);
    assert_eq!(json(&out)["desktops"], 232);

    let out = server.run(&["install", "no-such-desk", "other-0"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no desktop with the id or name \"no-such-desk\""));
    let out = server.run(&["install"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no desktop chosen"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_successful_install_exits_0() {
    let server = Server::start();
    let token = server.admin(&["enrollment-tokens", "create", "--project", &server.project]);
    let state = tempfile::tempdir().unwrap();
    let token_file = state.path().join("token");
    std::fs::write(&token_file, token["enrollment_token"].as_str().unwrap()).unwrap();
    let mut guest = Command::new(bin("deskfleet-guest"))
        .args(["--server", &server.endpoint(), "--trusted-key"])
        .arg(server.dir.path().join("package-signing.pub"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--monitor-interval-ms", "300", "--heartbeat-secs", "1"])
        .args(["--watch-window-secs", "1"])
        .arg("--enrollment-token-file")
        .arg(&token_file)
        .env("DESKFLEET_GUEST_HOSTNAME", "desk-ok")
        .env_remove("DESKFLEET_ENROLLMENT_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guest_pid = guest.id();
    eventually(60, "desktop enrolled", || {
        let out = server.run(&["-o", "json", "--query", "total_count", "desktops", "list"]);
        (json(&out) == 1).then_some(())
    });
    let out = server.run(&["install", "desk-ok", "--wait", "--poll-ms", "200"]);
    // Cloud Eye's view of the same desktop: its guest runs, and so does the agent.
    let status = eventually(30, "agent running", || {
        let out = server.run(&["-o", "json", "agents", "status", "desk-ok"]);
        let doc = json(&out);
        (doc["agent_status"][0]["extensions"][0]["status"] == "running").then_some(doc)
    });
    let table = server.run(&["agents", "status", "--all"]);
    // The guest, then the agent it started (a child of the guest).
    let monitors = children_of(guest_pid);
    let _ = guest.kill();
    let _ = guest.wait();
    for pid in monitors {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("SUCCESS 1 of 1 desktops succeeded, 0 failed"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("progress: 1/1 done"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        status["agent_status"][0]["uniagent_status"], "running",
        "{status}"
    );
    assert_eq!(
        status["agent_status"][0]["instance_name"], "desk-ok",
        "{status}"
    );
    let text = stdout(&table);
    assert!(text.starts_with("DESKTOP "), "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with("desk-ok "),
        "{text}"
    );
}

/// The processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after its `)`.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && pid != 0 && pid != parent {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn api_errors_show_code_message_and_detail_and_exit_2() {
    let server = Server::start();
    let out = server.run(&["job", "show", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("error: WKS."), "{err}");
    assert!(err.contains("(HTTP 404)"), "{err}");
    assert!(
        err.contains("detail: job 0123456789abcdef0123456789abcdef does not exist"),
        "{err}"
    );
    assert!(err.contains("request id:"), "{err}");

    // Credentials the server refuses are an API error too.
    let out = server.run(&["--secret-key", "wrong", "desktops", "list"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("(HTTP 401)"), "{}", stderr(&out));
}

#[test]
fn a_throttled_request_is_sent_again_after_retry_after() {
    // 60 reads a minute: a burst of 60, then one a second (Retry-After: 1).
    let server = Server::start_with(&format!("{SETTINGS}[throttle]\nreads_per_minute = 60\n"));
    let throttled = eventually(30, "the allowance spent", || {
        let out = server.run(&["--retries", "0", "desktops", "list"]);
        (code(&out) != 0).then_some(out)
    });
    assert_eq!(code(&throttled), 2, "{}", stderr(&throttled));
    assert!(
        stderr(&throttled).contains("APIGW.0308 (HTTP 429)"),
        "{}",
        stderr(&throttled)
    );
    // At once again, with the default retries: refused first, then let through.
    let started = Instant::now();
    let out = server.run(&["desktops", "list"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(stdout(&out).starts_with("ID "), "{}", stdout(&out));
}

#[test]
fn an_unreachable_server_exits_4() {
    let server = Server::start();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = server.run(&[
        "--endpoint",
        &format!("https://127.0.0.1:{port}"),
        "desktops",
        "list",
    ]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("could not reach the server"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_server_is_trusted_through_ca_cert_only() {
    let server = Server::start();
    let bootstrap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(server.dir.path().join("bootstrap.json")).unwrap())
            .unwrap();
    let run = |extra: &[&str]| {
        server
            .cli()
            .args(["--endpoint", &server.endpoint()])
            .args(["--project", bootstrap["project_id"].as_str().unwrap()])
            .args(["--access-key", bootstrap["access_key"].as_str().unwrap()])
            .env(
                "DESKFLEET_SECRET_KEY",
                bootstrap["secret_key"].as_str().unwrap(),
            )
            .args(extra)
            .args(["desktops", "list"])
            .output()
            .unwrap()
    };
    // The server's private CA is not among the system's roots: the handshake fails.
    let out = run(&[]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    let ca = server.dir.path().join("ca.pem");
    let out = run(&["--ca-cert", ca.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A CA file without certificates is the caller's mistake.
    let bad = server.dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let out = run(&["--ca-cert", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("CA certificates"), "{}", stderr(&out));
}

#[test]
fn a_server_that_never_answers_times_out_with_exit_4() {
    let server = Server::start();
    // Accepts connections and never says a word: not even the TLS handshake ends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = vec![];
        for c in listener.incoming().take(8) {
            conns.push(c);
        }
        conns
    });
    let started = Instant::now();
    let out = server.run(&[
        "--endpoint",
        &format!("https://127.0.0.1:{port}"),
        "--timeout-secs",
        "1",
        "desktops",
        "list",
    ]);
    let took = started.elapsed();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not answer within 1 s"),
        "{}",
        stderr(&out)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    drop(held);
}

#[test]
fn a_closed_pipe_ends_quietly_with_exit_0() {
    let server = Server::start();
    // JSON of 300 desktops is far more than a pipe holds, so the writer meets the close.
    server.import("pipe", 300, "lab");
    let mut child = server
        .cli()
        .args([
            "--data-dir",
            server.data_dir(),
            "-o",
            "json",
            "desktops",
            "list",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: the pipe is closed, as `| head -1` does.
    assert_eq!(first.trim(), "{");
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn profiles_are_written_by_configure_and_flags_and_env_win_over_them() {
    let server = Server::start();
    server.import("desk", 1, "lab");
    let bootstrap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(server.dir.path().join("bootstrap.json")).unwrap())
            .unwrap();
    let ca = server.dir.path().join("ca.pem");
    let out = server
        .cli()
        .args([
            "configure",
            "--profile",
            "lab",
            "--endpoint",
            &server.endpoint(),
        ])
        .args(["--project", bootstrap["project_id"].as_str().unwrap()])
        .args(["--access-key", bootstrap["access_key"].as_str().unwrap()])
        .args(["--secret-key", bootstrap["secret_key"].as_str().unwrap()])
        .args(["--ca-cert", ca.to_str().unwrap(), "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let file = server.config.path().join("deskfleet/config.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("[profiles.lab]"), "{text}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "it holds a secret key");
    }
    // The profile alone is enough (its output setting too: JSON).
    let out = server
        .cli()
        .args(["--profile", "lab", "desktops", "list"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["total_count"], 1);
    let shown = server
        .cli()
        .args(["configure", "--profile", "lab", "--show"])
        .output()
        .unwrap();
    assert!(stdout(&shown).contains("(hidden)"), "{}", stdout(&shown));
    assert!(!stdout(&shown).contains(bootstrap["secret_key"].as_str().unwrap()));

    // A flag, then the environment, win over the profile: both point at a closed port.
    let closed = "https://127.0.0.1:9";
    let out = server
        .cli()
        .args(["--profile", "lab", "--endpoint", closed, "desktops", "list"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let out = server
        .cli()
        .env("DESKFLEET_ENDPOINT", closed)
        .args(["--profile", "lab", "desktops", "list"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let out = server
        .cli()
        .env("DESKFLEET_PROFILE", "lab")
        .args(["-o", "table", "desktops", "list"])
        .output()
        .unwrap();
    assert!(stdout(&out).starts_with("ID "), "{}", stdout(&out));

    let out = server
        .cli()
        .args(["--profile", "nope", "desktops", "list"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no profile \"nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, mark) in [
        ("bash", "_deskfleet()"),
        ("zsh", "#compdef deskfleet"),
        ("fish", "complete -c deskfleet"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_deskfleet"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0);
        let text = stdout(&out);
        assert!(text.contains(mark), "{shell}: {text}");
        assert!(text.contains("install"), "{shell}");
    }
}

#[test]
fn plain_http_to_a_remote_host_is_refused_without_allow_insecure_http() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_deskfleet"))
            .args(["--project", "p", "--access-key", "ak", "--secret-key", "sk"])
            .args(args)
            .env_remove("DESKFLEET_DATA_DIR")
            .env_remove("DESKFLEET_PROFILE")
            .env("DESKFLEET_CONFIG_FILE", "/nonexistent/deskfleet.toml")
            .output()
            .unwrap()
    };
    // `.invalid` never resolves: if the refusal were missing the command would fail
    // later, on name resolution, with another message.
    let out = run(&[
        "--endpoint",
        "http://deskfleet.invalid:8087",
        "agents",
        "list",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("refusing plain http"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("--allow-insecure-http"),
        "{}",
        stderr(&out)
    );

    // Allowed, it goes on to the network, and fails there instead.
    let out = run(&[
        "--endpoint",
        "http://deskfleet.invalid:8087",
        "--allow-insecure-http",
        "agents",
        "list",
    ]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("refusing plain http"),
        "{}",
        stderr(&out)
    );
}

#[path = "../../server/tests/fleet/monitor_build.rs"]
mod monitor_build;

/// A `deskfleet-guest` enrolled as `name`, watching upgrades for 1 s; stopped, with the
/// agents it started, when dropped.
struct Guest {
    child: Child,
    state: tempfile::TempDir,
}

impl Guest {
    fn start(server: &Server, name: &str) -> Self {
        let token = server.admin(&["enrollment-tokens", "create", "--project", &server.project]);
        let state = tempfile::tempdir().unwrap();
        let token_file = state.path().join("token");
        std::fs::write(&token_file, token["enrollment_token"].as_str().unwrap()).unwrap();
        let child = Command::new(bin("deskfleet-guest"))
            .args(["--server", &server.endpoint(), "--trusted-key"])
            .arg(server.dir.path().join("package-signing.pub"))
            .arg("--state-dir")
            .arg(state.path())
            .args(["--monitor-interval-ms", "300", "--heartbeat-secs", "1"])
            .args(["--watch-window-secs", "1"])
            .arg("--enrollment-token-file")
            .arg(&token_file)
            .env("DESKFLEET_GUEST_HOSTNAME", name)
            .env_remove("DESKFLEET_ENROLLMENT_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Guest { child, state }
    }

    /// The agent processes this guest runs.
    fn monitors(&self) -> Vec<u32> {
        children_of(self.child.id())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let monitors = self.monitors();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in monitors {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// `invocations list -o json` of `args`: (desktop name, type, status, from, to) of each,
/// newest first.
fn invocations(server: &Server, args: &[&str]) -> Vec<[String; 5]> {
    let out = server.run(&[&["-o", "json", "invocations", "list"], args].concat());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            [
                "instance_name",
                "invocation_type",
                "invocation_status",
                "current_version",
                "target_version",
            ]
            .map(|k| i[k].as_str().unwrap_or("-").to_string())
        })
        .collect()
}

/// The telescope (status, version) of each desktop, as `agents status` shows it.
fn telescope(server: &Server, targets: &[&str]) -> Vec<(String, String)> {
    let out = server.run(&[&["-o", "json", "agents", "status"], targets].concat());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)["agent_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let ext = &a["extensions"][0];
            (
                ext["status"].as_str().unwrap().to_string(),
                ext["version"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

#[test]
fn upgrade_rollback_uninstall_and_invocations_list_on_real_guests() {
    let new_monitor = monitor_build::monitor_built_as("0.2.0");
    let server = Server::start_with(&format!(
        "{SETTINGS}[packages]\npublish_bundled_monitor = false\n"
    ));
    let publish = |binary: &Path, version: &str| {
        server.admin(&[
            "packages",
            "publish",
            "--binary",
            binary.to_str().unwrap(),
            "--version",
            version,
        ])
    };
    publish(&bin("deskfleet-monitor"), "0.1.0");
    let guests = [
        Guest::start(&server, "cli-a"),
        Guest::start(&server, "cli-b"),
    ];
    eventually(60, "desktops enrolled", || {
        let out = server.run(&["-o", "json", "--query", "total_count", "desktops", "list"]);
        (json(&out) == 2).then_some(())
    });
    let started = Instant::now();

    // An UPDATE needs an agent: each desktop is refused, exit 3.
    let out = server.run(&["upgrade", "--all"]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("invocationmgr.0005").count(), 2, "{text}");
    // Nothing to roll back: a usage error.
    let out = server.run(&["rollback"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to roll back"),
        "{}",
        stderr(&out)
    );

    let out = server.run(&["install", "--all", "--wait", "--poll-ms", "200"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let both = |status: &str, version: &str| -> Vec<(String, String)> {
        vec![(status.into(), version.into()); 2]
    };
    eventually(30, "both agents run 0.1.0", || {
        (telescope(&server, &["--all"]) == both("running", "0.1.0")).then_some(())
    });

    // `upgrade` without --version: the newest published.
    publish(&new_monitor, "0.2.0");
    let out = server.run(&["upgrade", "cli-a", "cli-b"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("DESKTOP "), "{text}");
    assert!(
        rows[1].starts_with("cli-a ") && rows[1].contains(" successful"),
        "{text}"
    );
    assert!(
        rows[2].starts_with("cli-b ") && rows[2].contains(" successful"),
        "{text}"
    );
    let updates = eventually(60, "both UPDATEs succeeded", || {
        let list = invocations(&server, &["--type", "UPDATE"]);
        list.iter().all(|i| i[2] == "SUCCEEDED").then_some(list)
    });
    assert_eq!(updates.len(), 2);
    for i in &updates {
        assert_eq!(i[1..], ["UPDATE", "SUCCEEDED", "0.1.0", "0.2.0"], "{i:?}");
    }
    eventually(30, "both agents run 0.2.0", || {
        (telescope(&server, &["--all"]) == both("running", "0.2.0")).then_some(())
    });

    // Rolled back by desktop (its newest UPDATE) and by invocation id.
    let out = server.run(&["rollback", "cli-a"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let row = text.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("cli-a ") && row.contains(" successful "),
        "{text}"
    );
    let out = server.run(&[
        "-o",
        "json",
        "--query",
        "invocations[0].invocation_id",
        "invocations",
        "list",
        "--desktop",
        "cli-b",
        "--type",
        "UPDATE",
    ]);
    let b_update = json(&out).as_str().unwrap().to_string();
    let out = server.run(&["-o", "json", "rollback", "--invocation", &b_update]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let answer = json(&out);
    assert_eq!(answer["invocation_type"], "ROLLBACK", "{answer}");
    assert_eq!(
        answer["invocations"][0]["ret_status"], "successful",
        "{answer}"
    );
    assert_ne!(answer["invocations"][0]["invocation_id"], b_update.as_str());
    eventually(60, "both ROLLBACKs done", || {
        let list = invocations(&server, &["--type", "ROLLBACK"]);
        (list.len() == 2 && list.iter().all(|i| i[2] == "ROLLBACKED")).then_some(())
    });
    for i in invocations(&server, &["--type", "ROLLBACK"]) {
        assert_eq!(
            i[1..],
            ["ROLLBACK", "ROLLBACKED", "0.2.0", "0.1.0"],
            "{i:?}"
        );
    }
    for i in invocations(&server, &["--type", "UPDATE"]) {
        assert_eq!(i[2], "ROLLBACKED", "{i:?}");
    }
    eventually(30, "both agents run 0.1.0 again", || {
        (telescope(&server, &["--all"]) == both("running", "0.1.0")).then_some(())
    });
    // Rolled back once only: exit 3 with the reason.
    let out = server.run(&["rollback", "cli-a"]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("invocationmgr.0008"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("already rolled back"),
        "{}",
        stdout(&out)
    );

    // Uninstall one desktop: its agent is gone, its guest stays, the other is untouched.
    let monitor_b = guests[1].monitors();
    assert_eq!(monitor_b.len(), 1, "{monitor_b:?}");
    let out = server.run(&["uninstall", "cli-b"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("cli-b "), "{}", stdout(&out));
    eventually(30, "the UNINSTALL succeeded", || {
        let list = invocations(&server, &["--desktop", "cli-b", "--type", "UNINSTALL"]);
        (list.len() == 1 && list[0][2] == "SUCCEEDED").then_some(())
    });
    eventually(30, "cli-b has no agent", || {
        (telescope(&server, &["cli-b"]) == [("none".to_string(), "-".to_string())]).then_some(())
    });
    assert!(guests[1].monitors().is_empty());
    assert!(!Path::new(&format!("/proc/{}", monitor_b[0])).exists());
    assert!(
        !guests[1]
            .state
            .path()
            .join("agents/deskfleet-monitor")
            .exists(),
        "the agent's files are removed"
    );
    assert_eq!(
        telescope(&server, &["cli-a"]),
        [("running".to_string(), "0.1.0".to_string())]
    );
    let out = server.run(&["-o", "json", "agents", "status", "cli-b"]);
    assert_eq!(json(&out)["agent_status"][0]["uniagent_status"], "running");

    // The Workspace side says the same: only cli-a has the agent.
    let out = server.run(&[
        "-o",
        "json",
        "--query",
        "agents_condition[].desktop_name",
        "agents",
        "list",
        "--installed",
        "true",
    ]);
    assert_eq!(json(&out), serde_json::json!(["cli-a"]), "{}", stderr(&out));
    let out = server.run(&[
        "-o",
        "json",
        "--query",
        "agents_condition[].desktop_name",
        "agents",
        "list",
        "--installed",
        "false",
    ]);
    assert_eq!(json(&out), serde_json::json!(["cli-b"]), "{}", stderr(&out));

    // The whole history as a table, newest first.
    let out = server.run(&["invocations", "list"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].starts_with("INVOCATION ") && rows[0].contains(" RESULT"),
        "{text}"
    );
    // 2 INSTALL, 2 UPDATE, 2 ROLLBACK, 1 UNINSTALL.
    assert_eq!(rows.len(), 8, "{text}");
    assert!(
        rows[1].contains(" cli-b ") && rows[1].contains(" UNINSTALL "),
        "{text}"
    );
    assert!(text.contains("the agent was removed"), "{text}");
    assert!(text.contains("rolled back to 0.1.0"), "{text}");
    eprintln!(
        "upgrade, rollback and uninstall through the CLI: {:?}",
        started.elapsed()
    );
}

#[test]
fn packages_list_and_enrollment_tokens_create_and_revoke() {
    let server = Server::start();
    let ids = server.import("enr", 1, "lab");

    // The versions an install can name, the default among them.
    let listed = json(&server.run(&["-o", "json", "packages", "list"]));
    let packages = listed["packages"].as_array().unwrap();
    let offered: Vec<&str> = packages
        .iter()
        .filter(|p| p["withdrawn_at"].is_null())
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    match offered.first() {
        Some(newest) => assert_eq!(listed["default_version"], *newest, "{listed}"),
        None => assert!(listed["default_version"].is_null(), "{listed}"),
    }
    let table = server.run(&["packages", "list"]);
    assert_eq!(code(&table), 0, "{}", stderr(&table));
    assert!(stdout(&table).starts_with("VERSION"), "{}", stdout(&table));

    // A token bound to a desktop named by its computer name, with the guest's command.
    let created = json(&server.run(&[
        "-o",
        "json",
        "enrollment-tokens",
        "create",
        "--desktop",
        "enr-0",
        "--ttl-hours",
        "2",
    ]));
    let token = created["enrollment_token"].as_str().unwrap();
    assert!(token.starts_with("DFE1"), "{created}");
    assert_eq!(created["desktop_id"], ids[0].as_str());
    let command = created["guest_command"].as_str().unwrap();
    assert!(
        command.contains(&server.endpoint()) && command.contains("--enrollment-token-file"),
        "{command}"
    );
    assert!(
        !command.contains(token),
        "the token stays off command lines: {command}"
    );

    // Taken back from a file; a second time there is nothing to take back.
    let file = server.dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let file = file.to_str().unwrap();
    let revoked = json(&server.run(&[
        "-o",
        "json",
        "enrollment-tokens",
        "revoke",
        "--from-file",
        file,
    ]));
    assert_eq!(revoked["revoked"], true);
    let again = server.run(&["enrollment-tokens", "revoke", "--from-file", file]);
    assert_eq!(code(&again), 2, "{}", stderr(&again));
    assert!(stderr(&again).contains("WKS.0202"), "{}", stderr(&again));

    // A desktop the project does not have, and a bad lifetime: refused, nothing made.
    let unknown = server.run(&[
        "enrollment-tokens",
        "create",
        "--desktop",
        "no-such-desktop",
    ]);
    assert_eq!(code(&unknown), 2, "{}", stderr(&unknown));
    let long = server.run(&["enrollment-tokens", "create", "--ttl-hours", "100000"]);
    assert_eq!(code(&long), 2, "{}", stderr(&long));
    assert!(
        stderr(&long).contains("ttl_hours must be 1 to 8760"),
        "{}",
        stderr(&long)
    );
}
