//! The data directory holds secrets (the database with its credentials, the secrets key
//! file, the package-signing key, `bootstrap.json`), so it is private to the server's user:
//! the directory is 0700 and every file in it 0600.
//!
//! Three things keep it so: the binary sets its umask to 0077 first thing (every file it
//! or SQLite creates is private); the SQLite database file is created 0600 before SQLite
//! opens it (SQLite gives its `-wal` and `-shm` files the database file's mode); and on
//! every start the modes of the directory and of what is already in it are corrected, so
//! a data directory from an older version is fixed in place.

use crate::settings::Settings;
use anyhow::Context;
use std::path::Path;

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub const FILE_MODE: u32 = 0o600;

/// Makes every file and directory this process creates private to its user.
pub fn restrict_umask() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
}

/// Creates the data directory (0700) and, for the embedded database, its file (0600),
/// then corrects the modes of what is already there.
pub fn prepare_data_dir(settings: &Settings) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    if settings.database_url.is_none() {
        let db = dir.join(deskfleet_store::DATA_DIR_FILE);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
        match options.open(&db) {
            // SQLite takes an empty file for a new database.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", db.display())),
        }
    }
    secure_data_dir(dir)
}

/// Sets the directory to 0700 and every file in it (and in its subdirectories) to 0600.
pub fn secure_data_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let set = |path: &Path, mode: u32| -> anyhow::Result<()> {
            let meta = std::fs::symlink_metadata(path)
                .with_context(|| format!("reading {}", path.display()))?;
            if meta.file_type().is_symlink() || meta.permissions().mode() & 0o777 == mode {
                return Ok(());
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("making {} private", path.display()))
        };
        set(dir, DIR_MODE)?;
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                secure_data_dir(&path)?;
            } else if kind.is_file() {
                set(&path, FILE_MODE)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}
