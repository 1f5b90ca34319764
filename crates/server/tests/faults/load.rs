//! A steady load of signed writes and reads on a server, with every answer recorded, and
//! the checks and figures common to the fault tests.

use crate::harness::{Server, bin, eventually};
use deskfleet_client::{Client, RawResponse};
use deskfleet_proto::error::ErrorCode;
use reqwest::Method;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Kind {
    /// 200; the write's job id.
    Ok(Option<String>),
    /// 503 `WKS.00000503` with a `Retry-After`.
    Refused,
    /// Anything else (a 500, a transport error: the server died): always a failure.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub at: Instant,
    pub kind: Kind,
}

/// Writers and a reader running until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    pub writes: Arc<Mutex<Vec<Outcome>>>,
    pub reads: Arc<Mutex<Vec<Outcome>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn classify(raw: Result<RawResponse, deskfleet_client::ClientError>) -> Kind {
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => return Kind::Failed(format!("transport: {e:?}")),
    };
    let body: serde_json::Value = serde_json::from_slice(&raw.body).unwrap_or_default();
    match raw.status {
        200 => Kind::Ok(body["job_id"].as_str().map(str::to_owned)),
        503 => {
            let retry_after = raw
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if body["error_code"] == ErrorCode::StorageUnavailable.code()
                && retry_after.is_some_and(|s| s > 0)
            {
                Kind::Refused
            } else {
                Kind::Failed(format!(
                    "503 without the storage code or Retry-After: {body}"
                ))
            }
        }
        status => Kind::Failed(format!("{status}: {body}")),
    }
}

impl Load {
    pub fn start(client: Client, desktops: Vec<String>, writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let body = serde_json::to_vec(&serde_json::json!({ "desktop_ids": desktops })).unwrap();
        for _ in 0..writers {
            let (client, stop, writes, body) =
                (client.clone(), stop.clone(), writes.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let raw = client
                        .send_v2(
                            Method::POST,
                            &["desktops", "agents"],
                            &[],
                            Some(body.clone()),
                            &[],
                        )
                        .await;
                    let kind = classify(raw);
                    let pause = if matches!(kind, Kind::Ok(_)) { 20 } else { 100 };
                    writes.lock().unwrap().push(Outcome {
                        at: Instant::now(),
                        kind,
                    });
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }));
        }
        let (stop2, reads2) = (stop.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                let raw = client
                    .send_v2(Method::GET, &["desktops"], &[], None, &[])
                    .await;
                reads2.lock().unwrap().push(Outcome {
                    at: Instant::now(),
                    kind: classify(raw),
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
        Self {
            stop,
            writes,
            reads,
            tasks,
        }
    }

    pub async fn stop(self) -> (Vec<Outcome>, Vec<Outcome>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let writes = self.writes.lock().unwrap().clone();
        let reads = self.reads.lock().unwrap().clone();
        (writes, reads)
    }

    fn count(&self, since: Instant, f: &impl Fn(&Kind) -> bool) -> usize {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.at >= since && f(&o.kind))
            .count()
    }

    /// Waits until `n` writes answered after `since` match `f`; on timeout, fails with
    /// the last answers.
    pub async fn wait_writes(
        &self,
        secs: u64,
        what: &str,
        since: Instant,
        n: usize,
        f: impl Fn(&Kind) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.count(since, &f) < n {
            if Instant::now() > deadline {
                let last: Vec<Kind> = {
                    let writes = self.writes.lock().unwrap();
                    writes
                        .iter()
                        .rev()
                        .take(5)
                        .map(|o| o.kind.clone())
                        .collect()
                };
                panic!("{what}: not reached within {secs} s; last answers: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// [`Load::wait_writes`], failing at once, with its exit status and the end of its log,
/// if the server process ends meanwhile.
async fn wait_or_died(
    load: &Load,
    server: &mut Server,
    secs: u64,
    what: &str,
    since: Instant,
    n: usize,
    f: impl Fn(&Kind) -> bool + Copy,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while load.count(since, &f) < n {
        if let Some(status) = server.exited() {
            let log = server.log();
            let tail = &log[log.len().saturating_sub(4000)..];
            panic!("{what}: the server died ({status:?}); its log ends with:\n{tail}");
        }
        if Instant::now() > deadline {
            load.wait_writes(0, what, since, n, f).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Imports `n` desktops with the admin command (beside the running server, on the
/// database of its settings); returns their ids.
pub async fn import_desktops(server: &Server, n: usize) -> Vec<String> {
    let file = server.dir.path().join("desktops.json");
    let desktops: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"computer_name": format!("pc-{i}"), "ip_address": format!("10.0.0.{}", i + 1), "os_type": "Linux"}))
        .collect();
    std::fs::write(&file, serde_json::to_vec(&desktops).unwrap()).unwrap();
    let out = std::process::Command::new(bin("deskfleet-server"))
        .arg("--data-dir")
        .arg(server.dir.path())
        .arg("--config")
        .arg(server.dir.path().join("settings.toml"))
        .args([
            "admin",
            "desktops",
            "import",
            "--project",
            &server.bootstrap.project_id,
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = server.client().list_desktops(&[]).await.unwrap();
    list.desktops.into_iter().map(|d| d.desktop_id).collect()
}

/// What a fault did, as printed and documented.
#[derive(Debug)]
#[allow(dead_code)] // printed with Debug
pub struct Figures {
    /// From the injection to the repair.
    pub fault_lasted: Duration,
    pub writes_refused: usize,
    pub reads_ok_during_fault: usize,
    pub reads_refused_during_fault: usize,
    pub recovery: Duration,
    pub acknowledged: usize,
    pub lost: usize,
}

/// How reads must fare while the fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Every read succeeds.
    Served,
    /// Reads may be refused with 503 (never fail otherwise).
    MayBeRefused,
}

/// Runs the whole scenario on a started server: load, `inject`, then `escalate` once the
/// first write was refused, `refusals` more writes refused after the first (the fault
/// lasts that long), `repair`, recovery, nothing acknowledged lost.
#[allow(clippy::too_many_arguments)]
pub async fn fault_scenario(
    name: &str,
    server: &mut Server,
    inject: impl FnOnce(),
    escalate: impl FnOnce(),
    repair: impl FnOnce(),
    reads: Reads,
    recovery_limit: Duration,
    refusals: usize,
) -> Figures {
    let desktops = import_desktops(server, 5).await;
    let client = server.client();
    let load = Load::start(client.clone(), desktops, 3);
    let started = Instant::now();
    load.wait_writes(
        60,
        "writes acknowledged before the fault",
        started,
        10,
        |k| matches!(k, Kind::Ok(_)),
    )
    .await;

    inject();
    let fault_at = Instant::now();
    wait_or_died(
        &load,
        server,
        90,
        "writes refused during the fault",
        fault_at,
        1,
        |k| matches!(k, Kind::Refused),
    )
    .await;
    let refused_at = Instant::now();
    escalate();
    // Let the fault last: more refusals, and readiness reports it.
    wait_or_died(
        &load,
        server,
        90,
        "more writes refused",
        refused_at,
        refusals,
        |k| matches!(k, Kind::Refused),
    )
    .await;
    eventually(30, "/readyz reports the fault", || async {
        matches!(server.get("/readyz").await, Ok((503, _))).then_some(())
    })
    .await;
    let (status, _) = server
        .get("/healthz")
        .await
        .expect("the server answers /healthz");
    assert_eq!(status, 200, "/healthz while the storage is broken");
    assert!(
        server.exited().is_none(),
        "{name}: the server died: {}",
        server.log()
    );

    repair();
    let repaired_at = Instant::now();
    wait_or_died(
        &load,
        server,
        recovery_limit.as_secs() + 30,
        "writes acknowledged after the repair",
        repaired_at,
        1,
        |k| matches!(k, Kind::Ok(_)),
    )
    .await;
    let recovered_at = load
        .writes
        .lock()
        .unwrap()
        .iter()
        .find(|o| o.at >= repaired_at && matches!(o.kind, Kind::Ok(_)))
        .map(|o| o.at)
        .unwrap();
    eventually(30, "/readyz ready again", || async {
        matches!(server.get("/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    let (writes, read_log) = load.stop().await;
    assert!(
        server.exited().is_none(),
        "{name}: the server died: {}",
        server.log()
    );

    let failed: Vec<_> = writes
        .iter()
        .chain(&read_log)
        .filter_map(|o| match &o.kind {
            Kind::Failed(why) => Some(why.clone()),
            _ => None,
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{name}: answers other than 200 or 503 WKS.00000503 + Retry-After: {failed:?}\n{}",
        server.log()
    );
    let during = |o: &&Outcome| o.at >= refused_at && o.at < repaired_at;
    let reads_ok = read_log
        .iter()
        .filter(during)
        .filter(|o| matches!(o.kind, Kind::Ok(_)))
        .count();
    let reads_refused = read_log
        .iter()
        .filter(during)
        .filter(|o| matches!(o.kind, Kind::Refused))
        .count();
    if reads == Reads::Served {
        assert_eq!(
            reads_refused, 0,
            "{name}: reads refused while only writes should be"
        );
        assert!(reads_ok > 0, "{name}: no read answered during the fault");
    }
    let acked: Vec<String> = writes
        .iter()
        .filter_map(|o| match &o.kind {
            Kind::Ok(Some(id)) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let mut lost = Vec::new();
    for id in &acked {
        if client.show_job(id).await.is_err() {
            lost.push(id.clone());
        }
    }
    let figures = Figures {
        fault_lasted: repaired_at - fault_at,
        writes_refused: writes
            .iter()
            .filter(|o| matches!(o.kind, Kind::Refused))
            .count(),
        reads_ok_during_fault: reads_ok,
        reads_refused_during_fault: reads_refused,
        recovery: recovered_at - repaired_at,
        acknowledged: acked.len(),
        lost: lost.len(),
    };
    println!("FIGURES {name}: {figures:?}");
    eprintln!("FIGURES {name}: {figures:?}");
    assert!(lost.is_empty(), "{name}: acknowledged jobs lost: {lost:?}");
    assert!(
        figures.recovery <= recovery_limit,
        "{name}: writes came back only after {:?}",
        figures.recovery
    );
    figures
}
