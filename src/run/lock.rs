//! An exclusive `flock` on a file that also records who holds it. The kernel
//! releases an flock when its holder exits, so such a lock is never stale and
//! must never be deleted by hand (that would break mutual exclusion).

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{holder} (lock {path})")]
    Held { path: PathBuf, holder: String },
    #[error("cannot open the lock file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the lock file {0} is not a regular file (a symlink, directory or device); aica will not follow or overwrite it. Remove it (rm {0}) once you know what it is"
    )]
    NotRegular(PathBuf),
}

/// An exclusive lock, held until dropped.
#[derive(Debug)]
pub struct HeldLock {
    _file: Flock<File>,
    path: PathBuf,
}

fn open(path: &Path) -> Result<File, LockError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(nix::libc::ELOOP) {
                LockError::NotRegular(path.to_path_buf())
            } else {
                LockError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let ft = file
        .metadata()
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .file_type();
    if !ft.is_file() || ft.is_fifo() || ft.is_socket() {
        return Err(LockError::NotRegular(path.to_path_buf()));
    }
    Ok(file)
}

impl HeldLock {
    /// Take the lock at `path` without waiting; `what` names the holder for others
    /// ("serve", "backup restore"). Fails with the current holder's description.
    pub fn acquire(path: &Path, what: &str) -> Result<HeldLock, LockError> {
        // Another process may be probing the lock (`aica status`, `doctor`) for
        // a few microseconds: retry briefly before calling it held.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        loop {
            match HeldLock::try_acquire(path, what) {
                Err(LockError::Held { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    fn try_acquire(path: &Path, what: &str) -> Result<HeldLock, LockError> {
        let file = open(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                let holder = format!(
                    "pid {} ({what}) since {}",
                    std::process::id(),
                    crate::util::now()
                );
                let _ = f.set_len(0);
                let _ = f.seek(SeekFrom::Start(0));
                let _ = f.write_all(holder.as_bytes());
                let _ = f.sync_data();
                Ok(HeldLock {
                    _file: f,
                    path: path.to_path_buf(),
                })
            }
            Err((mut f, _)) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = holder.trim();
                Err(LockError::Held {
                    path: path.to_path_buf(),
                    holder: if holder.is_empty() {
                        "another process (holder unknown)".into()
                    } else {
                        holder.chars().take(200).collect()
                    },
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds the lock at `path` right now, if anyone. Probes with a shared
/// lock for an instant and writes nothing.
pub fn holder(path: &Path) -> Option<String> {
    if std::fs::symlink_metadata(path).is_err() {
        return None;
    }
    let mut file = match open(path) {
        Ok(f) => f,
        Err(e) => return Some(e.to_string()),
    };
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err(_) => Some(if text.trim().is_empty() {
            "another process (holder unknown)".into()
        } else {
            text.trim().chars().take(200).collect()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_the_first_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        let a = HeldLock::acquire(&p, "first job").unwrap();
        let e = HeldLock::acquire(&p, "second").unwrap_err().to_string();
        assert!(
            e.contains("first job") && e.contains(&std::process::id().to_string()),
            "{e}"
        );
        assert!(holder(&p).unwrap().contains("first job"));
        drop(a);
        assert!(holder(&p).is_none());
        HeldLock::acquire(&p, "again").unwrap();
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("precious.txt");
        std::fs::write(&victim, b"keep me").unwrap();
        let p = d.path().join(".lock");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let e = HeldLock::acquire(&p, "x").unwrap_err();
        assert!(matches!(e, LockError::NotRegular(_)), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }
}
