//! Writing a backup file without risking what it backs up.
//!
//! `pullpassd backup --to FILE` must never destroy data it was not asked
//! to: the target is refused when it resolves (symlinks followed, the
//! parent directory canonicalized, and by device and inode when it exists)
//! to one of the server's own files (the live database, its `-wal`, `-shm`
//! or `-journal`, the master key file) or to the data directory; and the
//! copy is written to a temporary file beside the target, synced, and only
//! then renamed over it (the directory synced too). A copy that fails
//! leaves the old target as it was and no partial file.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::startup::StartupError;

/// A path the server owns, and what it is (for the refusal's message).
#[derive(Debug, Clone)]
pub struct Protected {
    /// The path as configured.
    pub path: PathBuf,
    /// What it is: `the live database`, `the master key file`, …
    pub what: String,
}

impl Protected {
    /// `path`, described as `what`.
    pub fn new(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Self { path: path.into(), what: what.into() }
    }

    /// An SQLite database and the files SQLite keeps beside it.
    pub fn database(path: &Path, what: &str) -> Vec<Self> {
        vec![
            Self::new(path, what.to_owned()),
            Self::new(sidecar(path, "-wal"), format!("the write-ahead log of {what}")),
            Self::new(sidecar(path, "-shm"), format!("the shared-memory index of {what}")),
            Self::new(sidecar(path, "-journal"), format!("the rollback journal of {what}")),
        ]
    }
}

/// `path` with `suffix` appended to its file name.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where `path` really is: canonical when it exists (symlinks followed),
/// else (a dangling symlink's target resolved the same way) its canonical
/// parent directory joined with its file name. `None` when not even the
/// parent exists.
fn resolve(path: &Path) -> Option<PathBuf> {
    resolve_within(path, 40)
}

fn resolve_within(path: &Path, links_left: u32) -> Option<PathBuf> {
    if let Ok(real) = std::fs::canonicalize(path) {
        return Some(real);
    }
    if let Ok(link) = std::fs::read_link(path) {
        let next = path.parent().unwrap_or(Path::new(".")).join(link);
        return if links_left == 0 { None } else { resolve_within(&next, links_left - 1) };
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name()?;
    std::fs::canonicalize(parent).ok().map(|p| p.join(name))
}

/// The device and inode of an existing file (symlinks followed).
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Refuses a target that is, or leads to, one of `protected`, or a
/// directory.
pub fn refuse_protected(target: &Path, protected: &[Protected]) -> Result<(), StartupError> {
    let resolved = resolve(target);
    let id = identity(target);
    for p in protected {
        let same_path = resolved.is_some() && resolved == resolve(&p.path);
        let same_file = id.is_some() && id == identity(&p.path);
        if same_path || same_file {
            let real = resolved.as_deref().unwrap_or(target);
            let via = if real == target { String::new() } else { format!(" (it resolves to {})", real.display()) };
            return Err(StartupError(format!(
                "refusing to write the backup to {}{via}: that is {}, which writing the backup there would destroy; choose a file outside the data directory",
                target.display(),
                p.what
            )));
        }
    }
    if target.is_dir() {
        return Err(StartupError(format!("{} is a directory; --to takes a file name", target.display())));
    }
    Ok(())
}

/// A temporary file beside the target that becomes the target on
/// [`Staged::commit`], and is removed (with any SQLite sidecars) if
/// dropped before.
#[derive(Debug)]
pub struct Staged {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staged {
    /// Creates an empty temporary file (mode 0600: a backup holds sealed
    /// secrets and token hashes) in the target's directory.
    pub fn create(target: &Path) -> Result<Self, StartupError> {
        let name = target
            .file_name()
            .ok_or_else(|| StartupError(format!("{} names no file", target.display())))?
            .to_string_lossy()
            .into_owned();
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(StartupError(format!(
                "cannot write {}: the directory {} does not exist",
                target.display(),
                dir.display()
            )));
        }
        let mut attempt = 0u32;
        loop {
            let temp = dir.join(format!(".{name}.{}-{attempt}.partial", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp) {
                Ok(_) => return Ok(Self { temp, target: target.to_owned(), committed: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => {
                    return Err(StartupError(format!("cannot create a temporary file in {}: {e}", dir.display())));
                }
            }
        }
    }

    /// Where the copy is to be written.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Syncs the copy, renames it over the target and syncs the directory:
    /// the target is the old file or the whole new one, never a mix.
    pub fn commit(mut self) -> Result<(), StartupError> {
        let fail =
            |what: &str, e: std::io::Error| StartupError(format!("cannot {what} {}: {e}", self.target.display()));
        File::open(&self.temp).and_then(|f| f.sync_all()).map_err(|e| fail("sync the copy for", e))?;
        std::fs::rename(&self.temp, &self.target).map_err(|e| fail("move the copy to", e))?;
        self.committed = true;
        let dir = match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| fail("sync the directory of", e))?;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(sidecar(&self.temp, suffix));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_reaching_a_protected_file_by_any_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let db = data.join("pullpass.db");
        std::fs::write(&db, b"db").unwrap();
        let mut protected = Protected::database(&db, "the live database");
        protected.push(Protected::new(&data, "the data directory"));
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let hard = dir.path().join("hard.db");
        std::fs::hard_link(&db, &hard).unwrap();
        let dotted = data.join("..").join("data").join("pullpass.db-wal");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(data.join("pullpass.db-shm"), &dangling).unwrap();
        for (target, what) in [
            (dangling, "the shared-memory index"),
            (db.clone(), "the live database"),
            (link, "the live database"),
            (hard, "the live database"),
            (dotted, "the write-ahead log of the live database"),
            (data.join("pullpass.db-shm"), "the shared-memory index"),
            (data.clone(), "the data directory"),
        ] {
            let refused = refuse_protected(&target, &protected).unwrap_err().0;
            assert!(refused.contains(what), "{target:?}: {refused}");
        }
        assert!(refuse_protected(&dir.path().join("backup.db"), &protected).is_ok());
        assert!(refuse_protected(&data.join("backup.db"), &protected).is_ok());
    }

    #[test]
    fn an_uncommitted_stage_leaves_the_target_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("backup.db");
        std::fs::write(&target, b"old").unwrap();
        {
            let staged = Staged::create(&target).unwrap();
            std::fs::write(staged.path(), b"half").unwrap();
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let staged = Staged::create(&target).unwrap();
        std::fs::write(staged.path(), b"new").unwrap();
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
