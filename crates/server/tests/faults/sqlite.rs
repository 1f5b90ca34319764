//! SQLite under a full disk and under immutable database files.

use crate::harness::Server;
use crate::load::{Reads, fault_scenario};
use crate::{SETTINGS, is_root, skip};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Writes must be back this soon after the repair.
const RECOVERY: Duration = Duration::from_secs(10);
/// Writes refused after the first before the repair: with 3 writers trying again every
/// 100 ms, the fault lasts about 3 s.
const REFUSALS: usize = 90;

fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A tmpfs mounted by the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(on: &Path, size: &str) -> Result<Self, String> {
        run(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                format!("size={size}").as_ref(),
                "tmpfs".as_ref(),
                on.as_os_str(),
            ],
        )?;
        Ok(Self(on.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l".as_ref(), self.0.as_os_str()]);
    }
}

/// Files made immutable by the test, made mutable again when dropped.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: Vec<PathBuf>) -> Result<Self, String> {
        let this = Self(Vec::new());
        let mut this = this;
        for file in files {
            run("chattr", &["+i".as_ref(), file.as_os_str()])?;
            this.0.push(file);
        }
        Ok(this)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = run("chattr", &["-i".as_ref(), file.as_os_str()]);
        }
    }
}

/// Whether this machine lets the test mount a tmpfs.
fn can_mount() -> Result<(), String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    Tmpfs::mount(scratch.path(), "1m").map(drop)
}

/// Whether `chattr +i` works on the file system of `dir`.
fn can_chattr(dir: &Path) -> Result<(), String> {
    let probe = dir.join("chattr-probe");
    std::fs::write(&probe, b"").map_err(|e| e.to_string())?;
    let result = Immutable::set(vec![probe.clone()]).map(drop);
    let _ = std::fs::remove_file(&probe);
    result
}

/// Fills the file system of `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.flush();
    path
}

fn db_files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    suffixes
        .iter()
        .map(|s| dir.join(format!("{}{s}", deskfleet_store::DATA_DIR_FILE)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_refuses_writes_then_recovers() {
    let name = "sqlite_disk_full_refuses_writes_then_recovers";
    if !is_root() {
        return skip(name, "needs root to mount a tmpfs");
    }
    if let Err(why) = can_mount() {
        return skip(name, &format!("cannot mount a tmpfs: {why}"));
    }
    let mut mount = None;
    let mut server = Server::start_with(SETTINGS, |dir| {
        mount = Some(Tmpfs::mount(dir, "24m").expect("mount the data directory's tmpfs"));
    })
    .await;
    let dir = server.dir.path().to_owned();
    let filler = std::cell::RefCell::new(None);
    fault_scenario(
        name,
        &mut server,
        || *filler.borrow_mut() = Some(fill(&dir)),
        || {},
        || std::fs::remove_file(filler.borrow().as_ref().unwrap()).unwrap(),
        Reads::Served,
        RECOVERY,
        REFUSALS,
    )
    .await;
    drop(server);
    drop(mount);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_immutable_database_and_wal_refuse_writes_then_recover() {
    let name = "sqlite_immutable_database_and_wal_refuse_writes_then_recover";
    if !is_root() {
        return skip(name, "needs root for chattr +i");
    }
    let mut server = Server::start(SETTINGS).await;
    let dir = server.dir.path().to_owned();
    if let Err(why) = can_chattr(&dir) {
        return skip(name, &format!("chattr +i does not work here: {why}"));
    }
    let files = db_files(&dir, &["", "-wal"]);
    let guard = std::cell::RefCell::new(None);
    fault_scenario(
        name,
        &mut server,
        || *guard.borrow_mut() = Some(Immutable::set(files).expect("chattr +i")),
        || {},
        || drop(guard.borrow_mut().take()),
        Reads::Served,
        RECOVERY,
        REFUSALS,
    )
    .await;
}

/// With the WAL index (`-shm`) immutable too, SQLite would take a SIGBUS touching its
/// memory map; the store refuses reads and writes instead, and the process lives.
///
/// The index is made immutable once the database and the WAL are and a write has been
/// refused: from then on nothing commits, so nothing is in the middle of writing the
/// index. Made immutable under a transaction that already passed the store's check, the
/// index would still trap (the window docs/operations.md describes, which no check in
/// the process can close); this test is about the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_immutable_wal_index_refuses_without_killing_the_server() {
    let name = "sqlite_immutable_wal_index_refuses_without_killing_the_server";
    if !is_root() {
        return skip(name, "needs root for chattr +i");
    }
    let mut server = Server::start(SETTINGS).await;
    let dir = server.dir.path().to_owned();
    if let Err(why) = can_chattr(&dir) {
        return skip(name, &format!("chattr +i does not work here: {why}"));
    }
    let files = db_files(&dir, &["", "-wal"]);
    let index = db_files(&dir, &["-shm"]);
    let guard = std::cell::RefCell::new(None);
    let index_guard = std::cell::RefCell::new(None);
    fault_scenario(
        name,
        &mut server,
        || *guard.borrow_mut() = Some(Immutable::set(files).expect("chattr +i")),
        || *index_guard.borrow_mut() = Some(Immutable::set(index).expect("chattr +i -shm")),
        || {
            drop(index_guard.borrow_mut().take());
            drop(guard.borrow_mut().take());
        },
        Reads::MayBeRefused,
        RECOVERY,
        REFUSALS,
    )
    .await;
}
