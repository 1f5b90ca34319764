//! PostgreSQL stopped and started under load, on a private cluster of the test's own
//! (never the shared one): 503 while it is down, recovery without restarting the server.

use crate::harness::Server;
use crate::load::{Reads, fault_scenario};
use crate::{SETTINGS, is_root, skip};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Writes must be back this soon after the database is: the pool's acquire timeout
/// (5 s) bounds how long a call that began while it was down can wait.
const RECOVERY: Duration = Duration::from_secs(15);
/// Writes refused after the first before the cluster is started again (a refusal can
/// take up to the 5 s acquire timeout).
const REFUSALS: usize = 10;

/// A PostgreSQL cluster in a temporary directory, on a free port, run as `postgres`
/// (initdb refuses root); stopped for good when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    found.sort();
    found.pop()
}

impl Cluster {
    fn create() -> Result<Self, String> {
        let bin = postgres_bin().ok_or("no PostgreSQL binaries under /usr/lib/postgresql")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let owner = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or("no postgres user")?;
        std::os::unix::fs::chown(dir.path(), Some(owner), None).map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let cluster = Self { dir, bin, port };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )?;
        cluster.start()?;
        Ok(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// A fast shutdown: connections are cut, as when the database host goes away.
    fn stop(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_refuses_then_recovers_without_restart() {
    let name = "postgres_down_refuses_then_recovers_without_restart";
    if !is_root() {
        return skip(
            name,
            "needs root to run a private cluster as the postgres user",
        );
    }
    let cluster = match Cluster::create() {
        Ok(c) => c,
        Err(why) => return skip(name, &format!("cannot start a private PostgreSQL: {why}")),
    };
    let settings = format!("database_url = \"{}\"\n{SETTINGS}", cluster.url());
    let mut server = Server::start(&settings).await;
    fault_scenario(
        name,
        &mut server,
        || cluster.stop().expect("stop the private cluster"),
        || {},
        || cluster.start().expect("start the private cluster again"),
        Reads::MayBeRefused,
        RECOVERY,
        REFUSALS,
    )
    .await;
    drop(server);
}
