//! The run directory of a `aica serve` process: a lock file held for the life of
//! the process (so a stale pid file is always detectable) and a JSON pid file
//! describing it, written atomically.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
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
    /// A server holds the lock; its pid file (if readable).
    Running(Option<PidInfo>),
    /// A pid file is left from a process that is gone.
    Stale(Option<PidInfo>),
    NotRunning,
}

/// The lock a running server holds; dropping it removes the pid file.
pub struct RunLock {
    _lock: nix::fcntl::Flock<File>,
    pid_path: PathBuf,
}

fn lock_path(run_dir: &Path) -> PathBuf {
    run_dir.join("aica.lock")
}

pub fn pid_path(run_dir: &Path) -> PathBuf {
    run_dir.join("aica.pid")
}

fn open_lock(run_dir: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(run_dir)?;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(run_dir))
}

impl RunLock {
    /// Take the lock, or say who holds it.
    pub fn acquire(run_dir: &Path) -> Result<RunLock, Box<Option<PidInfo>>> {
        let file = open_lock(run_dir).map_err(|_| Box::new(None))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(RunLock {
                _lock: lock,
                pid_path: pid_path(run_dir),
            }),
            Err(_) => Err(Box::new(read_info(run_dir))),
        }
    }

    /// Publish the pid file (after the listeners are bound, so ports are real).
    pub fn publish(&self, info: &PidInfo) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
        crate::util::write_atomic(&self.pid_path, &json)
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_path);
    }
}

fn read_info(run_dir: &Path) -> Option<PidInfo> {
    let text = std::fs::read(pid_path(run_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Look at the run directory without disturbing a running server.
pub fn state(run_dir: &Path) -> RunState {
    let info = read_info(run_dir);
    if !lock_path(run_dir).exists() {
        return if pid_path(run_dir).exists() {
            RunState::Stale(info)
        } else {
            RunState::NotRunning
        };
    }
    let Ok(file) = open_lock(run_dir) else {
        return RunState::NotRunning;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Err(_) => RunState::Running(info),
        Ok(_free) => {
            if pid_path(run_dir).exists() {
                RunState::Stale(info)
            } else {
                RunState::NotRunning
            }
        }
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
        let lock = RunLock::acquire(d.path()).unwrap();
        lock.publish(&info(42)).unwrap();
        assert!(matches!(state(d.path()), RunState::Running(Some(ref i)) if i.pid == 42));
        assert_eq!(
            RunLock::acquire(d.path())
                .err()
                .and_then(|b| *b)
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
}
