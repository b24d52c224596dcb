//! One backup operation at a time: an flock on `backups/.lock`, with the holder named.

use super::{BackupError, Result, io};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Held for the duration of a create, verify, restore, prune or drill.
pub struct BackupLock {
    _lock: nix::fcntl::Flock<File>,
}

impl BackupLock {
    pub fn acquire(dir: &Path, what: &str) -> Result<BackupLock> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let holder = format!(
                    "pid {} ({what}) since {}",
                    std::process::id(),
                    crate::util::now()
                );
                let _ = lock.set_len(0);
                let _ = lock.seek(SeekFrom::Start(0));
                let _ = lock.write_all(holder.as_bytes());
                Ok(BackupLock { _lock: lock })
            }
            Err((mut f, _)) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                Err(BackupError::Locked(if holder.is_empty() {
                    "holder unknown".into()
                } else {
                    holder
                }))
            }
        }
    }
}
