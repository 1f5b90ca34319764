//! Real processes on loopback: a `deskfleet-server` and `deskfleet-guest` daemons, each with
//! its own directory. The binaries are the workspace's own (`cargo build --workspace
//! --bins` builds them; `scripts/test` does so before the tests).

use deskfleet_client::{Client, Credentials};
use deskfleet_server::bootstrap::Bootstrap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A binary of this workspace, next to the test executable's directory.
pub fn bin(name: &str) -> PathBuf {
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
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub bootstrap: Bootstrap,
    pub endpoint: String,
    /// Kept across restarts so that guests find the server where they left it.
    listen: String,
    child: Option<Child>,
}

impl Server {
    /// Starts a server whose settings file holds `settings` (TOML).
    pub async fn start(settings: &str) -> Self {
        Self::start_with(settings, |_| {}).await
    }

    /// Like [`Server::start`], with `prepare` run on the (empty) data directory first:
    /// to mount a file system there, or to put a database in place.
    pub async fn start_with(settings: &str, prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        std::fs::write(dir.path().join("settings.toml"), settings).unwrap();
        let mut server = Self {
            dir,
            bootstrap: serde_json::from_str("{}").unwrap_or_else(|_| placeholder()),
            endpoint: String::new(),
            listen: "127.0.0.1:0".into(),
            child: None,
        };
        server.launch().await;
        server.bootstrap = serde_json::from_slice(
            &std::fs::read(server.dir.path().join("bootstrap.json")).unwrap(),
        )
        .unwrap();
        server
    }

    async fn launch(&mut self) {
        let addr_file = self.dir.path().join("listen.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(bin("deskfleet-server"))
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--listen", &self.listen, "--config"])
            .arg(self.dir.path().join("settings.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start deskfleet-server");
        self.child = Some(child);
        let addr = eventually(60, "server listening", || async {
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| !s.is_empty())
        })
        .await;
        self.listen = addr.trim().to_string();
        self.endpoint = format!("http://{}", addr.trim());
        let url = format!("{}/", self.endpoint);
        eventually(30, "server answering", || async {
            reqwest::get(&url).await.ok().map(|_| ())
        })
        .await;
    }

    /// SIGKILL, then start again on the same data directory (a new port).
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status, if the server process has ended.
    #[allow(dead_code)] // the fault tests use it
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// An unauthenticated GET of `path` (e.g. `/readyz`): status and body.
    #[allow(dead_code)] // the fault tests use it
    pub async fn get(&self, path: &str) -> Result<(u16, String), reqwest::Error> {
        let response = reqwest::get(format!("{}{path}", self.endpoint)).await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    pub fn client(&self) -> Client {
        Client::new(
            &self.endpoint,
            &self.bootstrap.project_id,
            Credentials::AkSk {
                access_key: self.bootstrap.access_key.clone(),
                secret_key: self.bootstrap.secret_key.clone(),
            },
        )
        .unwrap()
    }

    pub fn public_key(&self) -> PathBuf {
        self.dir.path().join("package-signing.pub")
    }

    /// Runs an admin command on this server's data directory; returns its JSON.
    pub fn admin(&self, args: &[&str]) -> serde_json::Value {
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

    pub fn enrollment_token(&self) -> String {
        let v = self.admin(&[
            "enrollment-tokens",
            "create",
            "--project",
            &self.bootstrap.project_id,
        ]);
        v["enrollment_token"].as_str().unwrap().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn placeholder() -> Bootstrap {
    Bootstrap {
        domain_name: String::new(),
        project_id: String::new(),
        project_name: String::new(),
        user_name: String::new(),
        password: String::new(),
        access_key: String::new(),
        secret_key: String::new(),
    }
}

pub struct Guest {
    pub state_dir: tempfile::TempDir,
    pub name: String,
    child: Option<Child>,
}

impl Guest {
    pub fn start(server: &Server, token: &str, name: &str) -> Self {
        let state_dir = tempfile::tempdir().unwrap();
        let mut guest = Self {
            state_dir,
            name: name.to_string(),
            child: None,
        };
        guest.launch(server, token);
        guest
    }

    pub fn launch(&mut self, server: &Server, token: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.path().join("guest.log"))
            .unwrap();
        let child = Command::new(bin("deskfleet-guest"))
            .args([
                "--server",
                &server.endpoint,
                "--enrollment-token",
                token,
                "--trusted-key",
            ])
            .arg(server.public_key())
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .args(["--monitor-interval-ms", "300", "--heartbeat-secs", "1"])
            .env("RUST_LOG", "info")
            // Each simulated desktop has its own host name, as real ones do.
            .env("DESKFLEET_GUEST_HOSTNAME", &self.name)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start deskfleet-guest");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the server has given this guest its desktop credential.
    pub async fn enrolled(&self) {
        let state = self.state_dir.path().join("state.json");
        eventually(30, "guest enrolled", || async {
            std::fs::read_to_string(&state)
                .ok()
                .filter(|s| s.contains("DFD1"))
                .map(|_| ())
        })
        .await;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.path().join("guest.log")).unwrap_or_default()
    }

    /// The monitoring agent processes started by this guest (children of its pid).
    pub fn monitor_pids(&self) -> Vec<u32> {
        let Some(parent) = self.pid() else {
            return vec![];
        };
        let mut pids = vec![];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                continue;
            };
            let ppid: u32 = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let comm = stat
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(c, _)| c)
                .unwrap_or("");
            if ppid == parent && comm.starts_with("deskfleet-monit") {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Stop the monitor children too: they are in the guest's process group only if it
        // set one, so kill them by parent.
        let children = self.monitor_pids();
        self.kill();
        for pid in children {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

impl Guest {
    /// A guest started from a copy of another's state directory (a cloned desktop image).
    pub fn cloned_from(original: &Guest, server: &Server, token: &str, name: &str) -> Self {
        let state_dir = tempfile::tempdir().unwrap();
        let state = std::fs::read(original.state_dir.path().join("state.json")).unwrap();
        std::fs::write(state_dir.path().join("state.json"), state).unwrap();
        let mut guest = Self {
            state_dir,
            name: name.to_string(),
            child: None,
        };
        guest.launch(server, token);
        guest
    }
}

pub fn now_ms() -> i64 {
    use deskfleet_core::clock::Clock;
    deskfleet_core::clock::SystemClock.now()
}
