//! The run directory of an `aica serve` process: `aica.lock`, held for the life
//! of the process (so a stale pid file is always detectable), and `aica.pid`, a
//! JSON description of the server written atomically. A restore of the live
//! database holds the same lock, so a server cannot start half-way through it.

use super::lock::{HeldLock, LockError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a running server tells the world about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PidInfo {
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    /// Unix seconds, for uptime.
    pub started_unix: i64,
    pub backend: String,
    pub console: String,
    pub database: String,
    pub log_dir: String,
}

/// State of the run directory as seen from outside.
#[derive(Debug)]
pub enum RunState {
    /// Someone holds the lock: a server (with its pid file, if readable) or a restore.
    Running {
        info: Option<PidInfo>,
        holder: String,
    },
    /// A pid file is left from a process that is gone.
    Stale(Option<PidInfo>),
    NotRunning,
}

/// The run lock is held by someone else.
#[derive(Debug)]
pub struct RunBusy {
    pub info: Option<Box<PidInfo>>,
    pub holder: String,
}

impl std::fmt::Display for RunBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.info {
            Some(i) => write!(
                f,
                "aica is running (pid {}, backend http://{}, database {})",
                i.pid, i.backend, i.database
            ),
            None => write!(f, "the run lock is held by {}", self.holder),
        }
    }
}

/// The lock a running server (or a restore) holds; dropping it removes the
/// pid file it published.
pub struct RunLock {
    _lock: HeldLock,
    pid_path: PathBuf,
    published: std::cell::Cell<bool>,
}

fn lock_path(run_dir: &Path) -> PathBuf {
    run_dir.join("aica.lock")
}

pub fn pid_path(run_dir: &Path) -> PathBuf {
    run_dir.join("aica.pid")
}

impl RunLock {
    /// Take the lock for `what` ("serve", "backup restore"), or say who holds it.
    pub fn acquire(run_dir: &Path, what: &str) -> Result<RunLock, RunBusy> {
        match HeldLock::acquire(&lock_path(run_dir), what) {
            Ok(lock) => Ok(RunLock {
                _lock: lock,
                pid_path: pid_path(run_dir),
                published: std::cell::Cell::new(false),
            }),
            Err(LockError::Held { holder, .. }) => {
                let info = read_info(run_dir)
                    .filter(|_| holder.contains("(serve)"))
                    .map(Box::new);
                Err(RunBusy { info, holder })
            }
            Err(e) => Err(RunBusy {
                info: None,
                holder: e.to_string(),
            }),
        }
    }

    /// Publish the pid file (after the listeners are bound, so ports are real).
    pub fn publish(&self, info: &PidInfo) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
        crate::util::write_atomic(&self.pid_path, &json)?;
        self.published.set(true);
        Ok(())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if self.published.get() {
            let _ = std::fs::remove_file(&self.pid_path);
        }
    }
}

fn read_info(run_dir: &Path) -> Option<PidInfo> {
    let text = std::fs::read(pid_path(run_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Look at the run directory without disturbing a running server.
pub fn state(run_dir: &Path) -> RunState {
    let info = read_info(run_dir);
    match super::lock::holder(&lock_path(run_dir)) {
        Some(holder) => RunState::Running {
            info: info.filter(|_| holder.contains("(serve)")),
            holder,
        },
        None if pid_path(run_dir).exists() => RunState::Stale(info),
        None => RunState::NotRunning,
    }
}

/// Remove a stale pid file; returns what it said.
pub fn clean_stale(run_dir: &Path) -> Option<PidInfo> {
    let info = read_info(run_dir);
    let _ = std::fs::remove_file(pid_path(run_dir));
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: u32) -> PidInfo {
        PidInfo {
            pid,
            version: "t".into(),
            started_at: "now".into(),
            started_unix: 0,
            backend: "127.0.0.1:1".into(),
            console: "127.0.0.1:2".into(),
            database: "db".into(),
            log_dir: "logs".into(),
        }
    }

    #[test]
    fn lock_detects_running_and_stale() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(state(d.path()), RunState::NotRunning));
        let lock = RunLock::acquire(d.path(), "serve").unwrap();
        lock.publish(&info(42)).unwrap();
        assert!(
            matches!(state(d.path()), RunState::Running { info: Some(ref i), .. } if i.pid == 42)
        );
        assert_eq!(
            RunLock::acquire(d.path(), "serve")
                .err()
                .and_then(|b| b.info)
                .map(|i| i.pid),
            Some(42)
        );
        drop(lock);
        assert!(matches!(state(d.path()), RunState::NotRunning));
        // A crash leaves the pid file without a lock holder.
        crate::util::write_atomic(&pid_path(d.path()), &serde_json::to_vec(&info(7)).unwrap())
            .unwrap();
        assert!(matches!(state(d.path()), RunState::Stale(Some(ref i)) if i.pid == 7));
        assert_eq!(clean_stale(d.path()).map(|i| i.pid), Some(7));
        assert!(matches!(state(d.path()), RunState::NotRunning));
    }

    #[test]
    fn a_restore_holding_the_lock_is_named_as_such() {
        let d = tempfile::tempdir().unwrap();
        let _restore = RunLock::acquire(d.path(), "backup restore").unwrap();
        let busy = RunLock::acquire(d.path(), "serve").err().unwrap();
        assert!(busy.info.is_none());
        assert!(busy.to_string().contains("backup restore"), "{busy}");
        // Dropping a lock that never published leaves no pid file behind, and removes none.
        assert!(!pid_path(d.path()).exists());
    }
}
