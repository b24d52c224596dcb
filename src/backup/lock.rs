//! One backup operation at a time: an flock on `backups/.lock` naming its
//! holder. Taking the lock also tidies what interrupted operations left behind
//! (temporary archives, verify scratch, restore staging, drill scratch) and
//! rebuilds missing sidecars from their archives, and says so in the log.

use super::{BackupError, Result, io};
use crate::config::Loaded;
use crate::run::lock::{HeldLock, LockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Held for the duration of a create, verify, restore, prune or drill; the
/// operations that need it take it as a parameter.
#[derive(Debug)]
pub struct BackupLock {
    _held: HeldLock,
    dir: PathBuf,
    /// The PostgreSQL server (`database.url`) when that is the store.
    server: Option<String>,
}

/// Something an interrupted operation left behind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Debris {
    pub path: PathBuf,
    pub bytes: u64,
}

const STAGING: &str = ".staging";

fn size_of(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.len()
    }
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".tmp") || name.starts_with(".verify-"))
}

/// The names a restore stages under: `<target>.restore-tmp-<pid>` and
/// `.restore-files.tmp-<pid>`. Only paths named so are ever removed from the
/// staging list: the list is a file anyone could edit, so it is not trusted.
pub(crate) const STAGED_DB: &str = ".restore-tmp-";
pub(crate) const STAGED_FILES: &str = ".restore-files.tmp-";

fn is_staged_name(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let pid_suffix = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    p.is_absolute()
        && (name
            .rsplit_once(STAGED_DB)
            .is_some_and(|(db, rest)| !db.is_empty() && pid_suffix(rest))
            || name.strip_prefix(STAGED_FILES).is_some_and(pid_suffix))
}

/// The staging pid is not a running process (a live restore's files are its own).
fn staged_pid_dead(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let pid = name.rsplit('-').next().unwrap_or_default();
    pid.parse::<u32>()
        .is_ok_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
}

/// Paths a restore registered before creating them beside its target.
fn staged(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(dir.join(STAGING))
        .unwrap_or_default()
        .lines()
        .map(|l| PathBuf::from(l.trim()))
        .filter(|p| {
            let ok = is_staged_name(p) && staged_pid_dead(p);
            if !ok && !p.as_os_str().is_empty() {
                tracing::warn!(path = %p.display(), "ignoring a path in backups/.staging that aica does not stage");
            }
            ok
        })
        .collect()
}

pub(crate) fn with_sqlite_siblings(p: &Path) -> Vec<PathBuf> {
    let mut v = vec![p.to_path_buf()];
    for s in ["-wal", "-shm", "-journal"] {
        let mut q = p.as_os_str().to_owned();
        q.push(s);
        v.push(PathBuf::from(q));
    }
    v
}

/// What interrupted operations left behind, without touching anything.
/// Only meaningful while nobody holds the lock (doctor checks that first).
pub fn debris(l: &Loaded) -> Vec<Debris> {
    let mut out = Vec::new();
    let mut push = |p: PathBuf| {
        if std::fs::symlink_metadata(&p).is_ok() {
            out.push(Debris {
                bytes: size_of(&p),
                path: p,
            });
        }
    };
    let dir = &l.paths.backups;
    let mut dirs = vec![dir.clone()];
    if let Some(m) = super::dest::mirror_dir(&l.settings, &l.paths.base) {
        dirs.push(m);
    }
    for d in &dirs {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let orphan_sidecar = name
                .strip_suffix(".json")
                .is_some_and(|a| a.ends_with(".aicabak") && !d.join(a).exists());
            if is_temp_name(&name) || orphan_sidecar {
                push(e.path());
            }
        }
    }
    for p in staged(dir) {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(STAGED_FILES))
        {
            push(p);
        } else {
            for q in with_sqlite_siblings(&p) {
                // A staged database copy is a file; never remove a directory in its place.
                if std::fs::symlink_metadata(&q).is_ok_and(|m| m.is_file()) {
                    push(q);
                }
            }
        }
    }
    for e in std::fs::read_dir(&l.paths.run)
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("drill-") {
            push(e.path());
        }
    }
    out
}

impl BackupLock {
    /// Take the lock for `what`, clean up after dead holders and rebuild missing sidecars.
    pub fn acquire(l: &Loaded, what: &str) -> Result<BackupLock> {
        let lock = Self::acquire_for_preview(l, what)?;
        lock.sweep(l);
        Ok(lock)
    }

    /// Take the lock for a dry run: sidecars are rebuilt (that derives
    /// metadata) but nothing is removed.
    pub fn acquire_for_preview(l: &Loaded, what: &str) -> Result<BackupLock> {
        let dir = l.paths.backups.clone();
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let held = HeldLock::acquire(&dir.join(".lock"), what).map_err(|e| match e {
            LockError::Held { holder, .. } => BackupError::Locked(holder),
            e => BackupError::Refused(e.to_string()),
        })?;
        let server = match &l.paths.backend {
            crate::store::Backend::Postgres(url) => Some(url.clone()),
            crate::store::Backend::Sqlite(_) => None,
        };
        let lock = BackupLock {
            _held: held,
            dir,
            server,
        };
        lock.rebuild_sidecars();
        Ok(lock)
    }

    /// The backup directory this lock guards.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PostgreSQL server when that is the configured store.
    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    fn sweep(&self, l: &Loaded) {
        // Scratch databases of dead operations of this machine (PostgreSQL).
        if let Some(url) = &self.server
            && let Err(e) = super::pg::sweep(url).and_then(|_| super::pg::repair(url))
        {
            tracing::warn!(error = %e, "could not look for what interrupted operations left on the database server");
        }
        for d in debris(l) {
            let res = if d.path.is_dir() {
                std::fs::remove_dir_all(&d.path)
            } else {
                std::fs::remove_file(&d.path)
            };
            match res {
                Ok(()) => tracing::warn!(
                    path = %d.path.display(),
                    mib = format!("{:.1}", d.bytes as f64 / 1_048_576.0),
                    "removed what an interrupted backup operation left behind"
                ),
                Err(e) => tracing::warn!(path = %d.path.display(), error = %e,
                    "cannot remove what an interrupted backup operation left behind; remove it by hand"),
            }
        }
        let _ = std::fs::remove_file(self.dir.join(STAGING));
    }

    /// Give every archive without a sidecar one, from the manifest inside it.
    fn rebuild_sidecars(&self) {
        let Ok(all) = super::list(&self.dir) else {
            return;
        };
        for b in all.iter().filter(|b| b.state == super::State::NoSidecar) {
            match super::verify::read_archive(&b.path) {
                Ok(s) => match super::write_sidecar(self, &b.path, &s) {
                    Ok(()) => tracing::warn!(
                        backup = b.name,
                        "rebuilt the missing sidecar from the archive's own manifest (state: unverified)"
                    ),
                    Err(e) => {
                        tracing::warn!(backup = b.name, error = %e, "cannot rebuild the sidecar")
                    }
                },
                Err(e) => tracing::warn!(
                    backup = b.name,
                    error = %e,
                    "archive has no sidecar and its manifest cannot be read; it cannot be restored (move it out of the backup directory)"
                ),
            }
        }
    }

    /// Record `path` (and its SQLite side files) as created by this operation,
    /// before creating it, so the next holder removes it if this one dies.
    pub fn stage(&self, path: &Path) -> Result<()> {
        let file = self.dir.join(STAGING);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .map_err(io(format!("open {}", file.display())))?;
        writeln!(f, "{}", path.display())
            .and_then(|_| f.sync_data())
            .map_err(io(format!("write {}", file.display())))
    }

    /// Everything staged is gone or in place: forget it.
    pub fn unstage(&self) {
        let _ = std::fs::remove_file(self.dir.join(STAGING));
    }
}

/// Remove `path` and its SQLite side files (for staged copies).
pub(crate) fn remove_with_siblings(path: &Path) {
    for p in with_sqlite_siblings(path) {
        let _ = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_staged_names_are_trusted() {
        for ok in [
            "/srv/aica/data/aica_sys.db.restore-tmp-123",
            "/x/.restore-files.tmp-9",
        ] {
            assert!(is_staged_name(Path::new(ok)), "{ok}");
        }
        for bad in [
            "/srv/aica/data/aica_sys.db",
            "/srv/aica/data/aica_sys.db-wal",
            "/etc/passwd",
            "relative.restore-tmp-1",
            "/x/.restore-tmp-1",
            "/x/a.restore-tmp-",
            "/x/a.restore-tmp-1/../../etc",
            "/x/.restore-files.tmp-",
        ] {
            assert!(!is_staged_name(Path::new(bad)), "{bad}");
        }
    }
}
