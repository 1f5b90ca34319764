//! The guest's persisted identity: `STATE_DIR/state.json`.
//!
//! ```json
//! {
//!   "format": 1,
//!   "instance_uid": "0195f3c2a1b47c3d8e9f00112233aabb",
//!   "credential": "DFD1…",
//!   "package": {
//!     "name": "deskfleet-monitor",
//!     "version": "0.1.0",
//!     "sha256": "<64 hex>",
//!     "path": "/var/lib/deskfleet/agents/deskfleet-monitor/0.2.0/deskfleet-monitor"
//!   },
//!   "previous": { "name": "deskfleet-monitor", "version": "0.1.0", … },
//!   "watching": { "offer_hash": "<hex>", "restore_previous": null }
//! }
//! ```
//!
//! `credential` and `package` are `null` until the server issued one and a package was
//! installed. `package` is the version that runs; `previous` the one it replaced, kept on
//! disk until the next successful upgrade so that a failed upgrade or an explicit rollback
//! can switch back to it. `watching` is set from the moment the guest switched to
//! `package` until its watch window passed: a guest that restarts with it set starts
//! `package` and watches it again for a whole window (passing confirms it, failing puts
//! `previous` back and restores `restore_previous` as the kept version). Files written by
//! older guests (no `previous`, no `watching`) read as "none". The file is mode 0600 (it holds the credential) and is replaced atomically
//! (temporary file in the same directory, fsync, rename, fsync of the directory): a crash
//! leaves either the old or the new file, never a torn one. A file that exists but cannot
//! be read is an error, never a reason to make up a new identity: a new uid would enroll
//! the desktop a second time.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use deskfleet_proto::opamp::INSTANCE_UID_LEN;

/// The file name inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// The `format` this guest writes; a file with a greater one is refused.
pub const STATE_FORMAT: u32 = 1;

/// The agent's OpAMP instance uid: 16 bytes (a UUID v7 when the guest made it), shown and
/// stored as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceUid([u8; INSTANCE_UID_LEN]);

impl InstanceUid {
    /// A fresh UUID v7: time-ordered, so uids in the server's tables sort by birth.
    pub fn generate() -> InstanceUid {
        InstanceUid(*uuid::Uuid::now_v7().as_bytes())
    }

    /// Exactly [`INSTANCE_UID_LEN`] bytes, as they travel in OpAMP messages.
    pub fn from_bytes(bytes: &[u8]) -> Option<InstanceUid> {
        bytes.try_into().ok().map(InstanceUid)
    }

    pub fn parse_hex(text: &str) -> Option<InstanceUid> {
        hex::decode(text)
            .ok()
            .and_then(|bytes| InstanceUid::from_bytes(&bytes))
    }

    pub fn as_bytes(&self) -> &[u8; INSTANCE_UID_LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for InstanceUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InstanceUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceUid({})", self.to_hex())
    }
}

/// The package the guest installed and runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    /// Lowercase hex SHA-256 of the package archive it was installed from.
    pub sha256: String,
    /// The executable to run (the manifest's entrypoint, inside the version directory).
    pub path: PathBuf,
}

/// An upgrade (or rollback) that switched to `GuestState::package` and is still being
/// watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watching {
    /// Hex of the offer's `PackageAvailable.hash`, reported back as
    /// `server_offered_hash`.
    pub offer_hash: String,
    /// The kept previous version before the switch: it is the kept one again if the
    /// watch fails.
    pub restore_previous: Option<InstalledPackage>,
}

/// Everything the guest must remember across restarts.
#[derive(Debug, Clone)]
pub struct GuestState {
    pub instance_uid: InstanceUid,
    /// The desktop credential (`DFD1…`), once the server issued one.
    pub credential: Option<SecretString>,
    /// The version that runs.
    pub package: Option<InstalledPackage>,
    /// The version `package` replaced, kept for a rollback.
    pub previous: Option<InstalledPackage>,
    /// Set while `package` is being watched after a switch.
    pub watching: Option<Watching>,
}

impl GuestState {
    /// A new identity with no credential and nothing installed.
    pub fn fresh() -> GuestState {
        GuestState {
            instance_uid: InstanceUid::generate(),
            credential: None,
            package: None,
            previous: None,
            watching: None,
        }
    }
}

/// The JSON shape of `state.json`.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    instance_uid: String,
    credential: Option<String>,
    package: Option<InstalledPackage>,
    #[serde(default)]
    previous: Option<InstalledPackage>,
    #[serde(default)]
    watching: Option<Watching>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{path} is not a valid deskfleet guest state file ({reason}); fix or remove it (removing it enrolls this desktop again)"
    )]
    Corrupt { path: PathBuf, reason: String },
}

/// Reads and writes `state.json` in one directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> StateStore {
        StateStore { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state, or `None` when there is no state file yet.
    pub fn load(&self) -> Result<Option<GuestState>, StateError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.clone(),
            reason,
        };
        let file: StateFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if file.format > STATE_FORMAT {
            return Err(corrupt(format!(
                "format {} is newer than this guest's {STATE_FORMAT}",
                file.format
            )));
        }
        let instance_uid = InstanceUid::parse_hex(&file.instance_uid)
            .ok_or_else(|| corrupt("instance_uid is not 32 hex characters".into()))?;
        Ok(Some(GuestState {
            instance_uid,
            credential: file.credential.map(SecretString::from),
            package: file.package,
            previous: file.previous,
            watching: file.watching,
        }))
    }

    /// The saved state, or a fresh identity saved right away (so that a guest that dies
    /// before its first connection comes back with the same uid).
    pub fn load_or_create(&self) -> Result<GuestState, StateError> {
        if let Some(state) = self.load()? {
            return Ok(state);
        }
        let state = GuestState::fresh();
        self.save(&state)?;
        Ok(state)
    }

    /// Replaces `state.json` atomically, mode 0600; creates the directory (0700) if needed.
    pub fn save(&self, state: &GuestState) -> Result<(), StateError> {
        let file = StateFile {
            format: STATE_FORMAT,
            instance_uid: state.instance_uid.to_hex(),
            credential: state
                .credential
                .as_ref()
                .map(|c| c.expose_secret().to_owned()),
            package: state.package.clone(),
            previous: state.previous.clone(),
            watching: state.watching.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&file).expect("the state serializes to JSON");
        json.push(b'\n');
        create_private_dir(&self.dir).map_err(|source| StateError::Io {
            action: "create the state directory",
            path: self.dir.clone(),
            source,
        })?;
        write_atomically(&self.path(), &json)
    }
}

/// `mkdir -p` with mode 0700 for the directories it creates.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Temporary file (0600) beside `path`, write, fsync, rename over `path`, fsync the
/// directory so the rename itself survives a power cut.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io_err = |action: &'static str| {
        let path = path.to_owned();
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    };
    // tempfile creates the file 0600 and removes it if anything below fails.
    let mut tmp = tempfile::Builder::new()
        .prefix(".state.json.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err("create a temporary file for"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err("set the mode of"))?;
    }
    tmp.write_all(bytes).map_err(io_err("write"))?;
    tmp.as_file().sync_all().map_err(io_err("sync"))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .map_err(io_err("replace"))?;
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync the directory of"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed() -> InstalledPackage {
        InstalledPackage {
            name: "deskfleet-monitor".into(),
            version: "1.2.3".into(),
            sha256: "ab".repeat(32),
            path: "/x/deskfleet-monitor/1.2.3/deskfleet-monitor".into(),
        }
    }

    #[test]
    fn state_round_trips_and_keeps_the_uid() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("nested/state"));
        assert!(store.load().unwrap().is_none());
        let first = store.load_or_create().unwrap();
        let again = store.load_or_create().unwrap();
        assert_eq!(first.instance_uid, again.instance_uid);
        assert!(again.credential.is_none());

        let mut state = again;
        state.credential = Some(SecretString::from("DFD1secret"));
        state.package = Some(installed());
        store.save(&state).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.instance_uid, first.instance_uid);
        assert_eq!(back.credential.unwrap().expose_secret(), "DFD1secret");
        assert_eq!(back.package, Some(installed()));
    }

    #[test]
    fn file_format_is_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let state = GuestState {
            instance_uid: InstanceUid::from_bytes(&[0xab; 16]).unwrap(),
            credential: Some(SecretString::from("DFD1x")),
            package: Some(installed()),
            previous: None,
            watching: Some(Watching {
                offer_hash: "cd".repeat(32),
                restore_previous: None,
            }),
        };
        store.save(&state).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "format": 1,
                "instance_uid": "ab".repeat(16),
                "credential": "DFD1x",
                "package": {
                    "name": "deskfleet-monitor",
                    "version": "1.2.3",
                    "sha256": "ab".repeat(32),
                    "path": "/x/deskfleet-monitor/1.2.3/deskfleet-monitor",
                },
                "previous": null,
                "watching": {"offer_hash": "cd".repeat(32), "restore_previous": null},
            })
        );
    }

    #[cfg(unix)]
    #[test]
    fn state_file_is_private_and_replaced_without_leftovers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let store = StateStore::new(&state_dir);
        let mut state = store.load_or_create().unwrap();
        for i in 0..3 {
            state.credential = Some(SecretString::from(format!("DFD1-{i}")));
            store.save(&state).unwrap();
        }
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let names: Vec<String> = fs::read_dir(&state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STATE_FILE]);
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.credential.unwrap().expose_secret(), "DFD1-2");
    }

    #[test]
    fn save_replaces_the_file_instead_of_rewriting_it() {
        // A reader that opened the old file (or a crash in the middle of the write) must
        // see the old bytes whole: the new state goes to a new inode that is renamed over
        // the old name. Writing in place would change what the open handle reads.
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut state = store.load_or_create().unwrap();
        let before = fs::read(store.path()).unwrap();
        let mut old = fs::File::open(store.path()).unwrap();
        state.credential = Some(SecretString::from("DFD1new"));
        state.package = Some(installed());
        store.save(&state).unwrap();
        let mut old_bytes = Vec::new();
        old.read_to_end(&mut old_bytes).unwrap();
        assert_eq!(old_bytes, before);
        assert_ne!(fs::read(store.path()).unwrap(), before);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        fs::write(store.path(), b"{\"instance_uid\": \"zz\"").unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
        assert!(matches!(
            store.load_or_create(),
            Err(StateError::Corrupt { .. })
        ));
        fs::write(
            store.path(),
            br#"{"format":1,"instance_uid":"abcd","credential":null,"package":null}"#,
        )
        .unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
        fs::write(
            store.path(),
            format!(
                r#"{{"format":2,"instance_uid":"{}","credential":null,"package":null}}"#,
                "00".repeat(16)
            ),
        )
        .unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn a_file_of_an_older_guest_reads_with_nothing_kept_and_no_watch() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let old = serde_json::json!({
            "format": 1,
            "instance_uid": "ab".repeat(16),
            "credential": "DFD1x",
            "package": installed(),
        });
        fs::write(store.path(), serde_json::to_vec(&old).unwrap()).unwrap();
        let state = store.load().unwrap().unwrap();
        assert_eq!(state.package, Some(installed()));
        assert_eq!(state.previous, None);
        assert_eq!(state.watching, None);
    }

    #[test]
    fn the_kept_version_and_the_watch_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut state = store.load_or_create().unwrap();
        let mut older = installed();
        older.version = "1.0.0".into();
        state.package = Some(installed());
        state.previous = Some(older.clone());
        state.watching = Some(Watching {
            offer_hash: "ef".repeat(32),
            restore_previous: Some(older),
        });
        store.save(&state).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.previous, state.previous);
        assert_eq!(back.watching, state.watching);
    }

    #[test]
    fn debug_hides_the_credential() {
        let state = GuestState {
            credential: Some(SecretString::from("DFD1topsecret")),
            ..GuestState::fresh()
        };
        let shown = format!("{state:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
    }

    #[test]
    fn generated_uids_are_distinct_v7() {
        let a = InstanceUid::generate();
        let b = InstanceUid::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[6] >> 4, 7, "UUID version nibble");
        assert_eq!(InstanceUid::parse_hex(&a.to_hex()), Some(a));
        assert_eq!(a.to_hex().len(), 32);
    }
}
