//! `backup restore`: resolve the target once into a [`Target`] that knows its
//! identity, make sure nothing has it open, verify the backup into a staged
//! copy beside the target, take a safety snapshot of what is replaced, then
//! rename the staged copy into place. A failure before the rename changes
//! nothing; an interruption leaves only staged files, which the next backup
//! operation removes.

use super::snapshot::{CreateOptions, create_locked};
use super::{BackupError, BackupInfo, BackupLock, Cancel, Kind, Result, io};
use crate::config::Loaded;
use crate::run::pidfile::RunLock;
use rusqlite::{Connection, OpenFlags};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub target: PathBuf,
    pub dry_run: bool,
    /// The safety snapshot of the replaced database, if there was one.
    pub safety_snapshot: Option<String>,
    /// Where an unreadable old database was moved (with its -wal and -shm).
    pub moved_aside: Option<PathBuf>,
    pub tables: std::collections::BTreeMap<String, i64>,
    /// Files restored under `uploads/` (live restores only).
    pub uploads: Option<usize>,
    /// What happened to `aica.toml` (live restores only).
    pub config: Option<String>,
    /// A warning that did not stop the restore (a failed mirror copy of the safety snapshot).
    pub warning: Option<String>,
    /// The database is in place but the files beside it could not be restored.
    pub files_error: Option<String>,
}

fn refused(msg: impl Into<String>) -> BackupError {
    BackupError::Refused(msg.into())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// `p` (absolute) with symlinks and `..` resolved; the part that does not
/// exist yet is appended as plain names.
fn real_path(p: &Path) -> Result<PathBuf> {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(c) => {
                return Ok(rest.iter().rev().fold(c, |acc: PathBuf, n| acc.join(n)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let name = existing.file_name().map(|n| n.to_os_string()).ok_or_else(|| {
                    refused(format!(
                        "{} goes through '..' of a directory that does not exist; give a plain path",
                        p.display()
                    ))
                })?;
                rest.push(name);
                existing = match existing.parent() {
                    Some(parent) => parent.to_path_buf(),
                    None => return Err(refused(format!("{} cannot be resolved", p.display()))),
                };
            }
            Err(e) => return Err(io(format!("resolve {}", p.display()))(e)),
        }
    }
}

/// Does the file start with the SQLite header?
fn is_sqlite(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| &head == b"SQLite format 3\0")
}

/// Another process with `file` open (any mode), found through `/proc/*/fd`.
fn open_by(file: &Path) -> Option<u32> {
    let m = std::fs::metadata(file).ok()?;
    let me = std::process::id();
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        for fd in std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::metadata(fd.path()).is_ok_and(|f| f.dev() == m.dev() && f.ino() == m.ino())
            {
                return Some(pid);
            }
        }
    }
    None
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn kind_of(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// In the data directory while a live restore has replaced the database but
/// not yet the uploads and configuration; holds the backup's name.
pub const INCOMPLETE: &str = ".restore-incomplete";

/// Where a restore writes, resolved once from what the user typed: relative
/// paths are under `--dir` (not the current directory), symlinks and `..` are
/// resolved, and whether it is the live database is decided by file identity
/// (device and inode), never by spelling.
#[derive(Debug, Clone)]
pub struct Target {
    path: PathBuf,
    live: bool,
    exists: bool,
}

impl Target {
    pub fn resolve(l: &Loaded, given: Option<&Path>) -> Result<Target> {
        let raw = match given {
            Some(g) if g.is_absolute() => g.to_path_buf(),
            Some(g) => l.paths.base.join(g),
            None => l.paths.db.clone(),
        };
        let what = if given.is_some() {
            format!("--target {}", raw.display())
        } else {
            format!("the database path {} (database.url)", raw.display())
        };
        if let Ok(m) = std::fs::symlink_metadata(&raw)
            && m.file_type().is_symlink()
            && std::fs::metadata(&raw).is_err()
        {
            return Err(refused(format!(
                "{what} is a symlink to something that does not exist ({}); nothing was changed. Fix or remove the link, or give another path",
                std::fs::read_link(&raw)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )));
        }
        let path = real_path(&raw)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if ["-wal", "-shm", "-journal"]
            .iter()
            .any(|s| name.ends_with(s))
        {
            return Err(refused(format!(
                "{} is a SQLite side file, not a database; give the database file itself",
                path.display()
            )));
        }
        let meta = std::fs::metadata(&path).ok();
        let example = l.paths.base.join("restored.db");
        if let Some(m) = &meta
            && !m.file_type().is_file()
        {
            return Err(refused(format!(
                "{what} is {}, not a database file; nothing was changed. Give a file path, e.g. {}",
                kind_of(m),
                example.display()
            )));
        }
        let own = [
            l.paths.base.join("aica.toml"),
            l.paths.base.join(".env.production"),
        ];
        for f in own {
            if path == real_path(&f)? {
                return Err(refused(format!(
                    "{what} is aica's own {}; a restore never writes there",
                    f.display()
                )));
            }
        }
        for (dir, what) in [
            (Some(l.paths.run.clone()), "the run directory"),
            (Some(l.paths.logs.clone()), "the log directory"),
            (Some(l.paths.reports.clone()), "the report directory"),
            (Some(l.paths.backups.clone()), "the backup directory"),
            (
                super::dest::mirror_dir(&l.settings, &l.paths.base),
                "the backup mirror",
            ),
        ] {
            if let Some(dir) = dir
                && path.starts_with(real_path(&dir)?)
            {
                return Err(refused(format!(
                    "{} is inside {what} ({}); a restore never writes there. Choose a path outside it",
                    raw.display(),
                    dir.display()
                )));
            }
        }
        if let Some(m) = &meta
            && m.len() > 0
            && !is_sqlite(&path)
        {
            return Err(refused(format!(
                "{what} exists and is not a SQLite database; a restore only replaces databases. Nothing was changed. Give a new file path, e.g. {}",
                example.display()
            )));
        }
        let db = real_path(&l.paths.db)?;
        let live = path == db || same_file(&path, &db);
        if live && path != db {
            return Err(refused(format!(
                "{what} is a hard link of the live database {}; a restore replaces the database by its own name, so omit --target",
                db.display()
            )));
        }
        Ok(Target {
            path,
            live,
            exists: meta.is_some(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Is this the database the server of this deployment uses?
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Make sure nothing uses the target: hold the run lock for the live
    /// database, and refuse a file another process has open as SQLite.
    pub fn exclusive(&self, l: &Loaded, backup: &str) -> Result<Exclusive<'_>> {
        let run = if self.live {
            Some(RunLock::acquire(&l.paths.run, "backup restore").map_err(|busy| {
                refused(format!(
                    "{busy}; a restore must not swap {} under it.\nTry: aica down && aica backup restore {} --yes && aica up",
                    self.path.display(),
                    backup.trim_end_matches(".aicabak")
                ))
            })?)
        } else {
            None
        };
        // Restores into one directory, from any deployment, one at a time.
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let dir_file = std::fs::File::open(dir).map_err(io(format!("open {}", dir.display())))?;
        let dir_lock =
            nix::fcntl::Flock::lock(dir_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                .map_err(|_| {
                    refused(format!(
                        "another restore is writing into {} right now; wait for it to finish",
                        dir.display()
                    ))
                })?;
        let sqlite_pid = sqlite_user(&self.path).map(|p| p as u32);
        if let Some(pid) = sqlite_pid.or_else(|| open_by(&self.path)) {
            return Err(refused(format!(
                "{} is open by process {pid}; stop that process before restoring over it. Nothing was changed",
                self.path.display()
            )));
        }
        Ok(Exclusive {
            target: self,
            _run: run,
            _dir: dir_lock,
        })
    }
}

/// A target nobody else uses, for as long as this lives.
pub struct Exclusive<'a> {
    target: &'a Target,
    _run: Option<RunLock>,
    _dir: nix::fcntl::Flock<std::fs::File>,
}

/// The pid of another process holding a SQLite lock on `db`: a reader or
/// writer in WAL mode holds the `-shm` lock bytes, one in rollback mode the
/// database's lock bytes.
fn sqlite_user(db: &Path) -> Option<i32> {
    let probe = |file: &Path, start: i64, len: i64| -> Option<i32> {
        let f = std::fs::File::open(file).ok()?;
        // SAFETY: flock is a plain C struct; zeroed is a valid value.
        let mut fl: nix::libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = nix::libc::F_WRLCK as i16;
        fl.l_whence = nix::libc::SEEK_SET as i16;
        fl.l_start = start;
        fl.l_len = len;
        nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETLK(&mut fl)).ok()?;
        (fl.l_type != nix::libc::F_UNLCK as i16).then_some(fl.l_pid)
    };
    // WAL-index lock bytes 120..136 (write, checkpoint, recover, readers, DMS).
    probe(&sibling(db, "-shm"), 120, 16).or_else(|| probe(db, 0x4000_0000, 512))
}

/// Is the file at `db` a database that opens and passes `quick_check`?
/// `Ok(false)` only on evidence that it is damaged; other errors are returned.
fn readable(db: &Path) -> Result<bool> {
    let damaged = |e: &rusqlite::Error| {
        matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    };
    // Read-only: a probe must not checkpoint a WAL into a damaged file.
    let conn = match Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(c) => c,
        Err(e) if damaged(&e) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    match conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)) {
        Ok(s) => Ok(s == "ok"),
        Err(e) if damaged(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Checkpoint everything into the database file and empty its WAL.
fn settle(db: &Path) -> Result<()> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(refused(format!(
            "{} is busy (another connection keeps its WAL in use); nothing was changed",
            db.display()
        )));
    }
    Ok(())
}

/// Verify `b` without changing the target (the server may keep running).
pub fn preview(lock: &BackupLock, b: &BackupInfo, target: &Target) -> Result<RestoreReport> {
    let v = super::verify::verify(lock, b, &Cancel::default())?;
    Ok(RestoreReport {
        backup: b.name.clone(),
        target: target.path.clone(),
        dry_run: true,
        safety_snapshot: None,
        moved_aside: None,
        tables: v.manifest.tables,
        uploads: None,
        config: None,
        warning: None,
        files_error: None,
    })
}

/// Restore `b` over the target. `with_config` replaces an existing `aica.toml`.
pub fn restore(
    lock: &BackupLock,
    l: &Loaded,
    b: &BackupInfo,
    ex: &Exclusive<'_>,
    with_config: bool,
) -> Result<RestoreReport> {
    let target = ex.target;
    let path = &target.path;
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let pid = std::process::id();
    let staged = sibling(path, &format!("{}{pid}", super::lock::STAGED_DB));
    let extra = target.live.then(|| {
        l.paths
            .data
            .join(format!("{}{pid}", super::lock::STAGED_FILES))
    });
    // Never overwrite or delete what is already at a staging name.
    for p in std::iter::once(&staged).chain(&extra) {
        if let Some(q) = super::lock::with_sqlite_siblings(p)
            .into_iter()
            .find(|q| std::fs::symlink_metadata(q).is_ok())
        {
            return Err(refused(format!(
                "{} already exists and is not this restore's; move it away (aica backup tidy removes leftovers of dead restores). Nothing was changed",
                q.display()
            )));
        }
    }
    for p in std::iter::once(&staged).chain(&extra) {
        lock.stage(p)?;
    }
    let cleanup = || {
        for p in std::iter::once(&staged).chain(&extra) {
            super::lock::remove_with_siblings(p);
        }
        lock.unstage();
    };
    let result = swap(lock, l, b, target, &staged, extra.as_deref(), with_config);
    cleanup();
    result
}

fn swap(
    lock: &BackupLock,
    l: &Loaded,
    b: &BackupInfo,
    target: &Target,
    staged: &Path,
    extra: Option<&Path>,
    with_config: bool,
) -> Result<RestoreReport> {
    let path = &target.path;
    let verified = super::verify::check(b, staged, extra, &Cancel::default());
    super::verify::record(lock, b, &verified)?;
    let verified = verified?;
    let mut report = RestoreReport {
        backup: b.name.clone(),
        target: path.clone(),
        dry_run: false,
        safety_snapshot: None,
        moved_aside: None,
        tables: verified.manifest.tables.clone(),
        uploads: None,
        config: None,
        warning: None,
        files_error: None,
    };
    if target.exists && path.exists() {
        if readable(path)? {
            settle(path)?;
            let snap = create_locked(
                lock,
                l,
                &crate::store::Backend::Sqlite(path.to_path_buf()),
                &CreateOptions {
                    kind: Kind::Safety,
                    note: Some(format!("before restoring {}", b.name)),
                    progress: false,
                    cancel: Cancel::default(),
                },
            )
            .map_err(|e| {
                refused(format!(
                    "the safety snapshot of {} failed, so nothing was changed: {e}",
                    path.display()
                ))
            })?;
            report.safety_snapshot = Some(snap.info.name);
            report.warning = snap
                .mirror_error
                .map(|e| format!("mirror copy of the safety snapshot failed: {e}"));
            let wal = sibling(path, "-wal");
            if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(refused(format!(
                    "{} holds transactions written after the safety snapshot; something writes to the database. Nothing was changed",
                    wal.display()
                )));
            }
            for s in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(sibling(path, s));
            }
        } else {
            // Damaged beyond reading: keep it whole (with its WAL), aside.
            let aside = sibling(
                path,
                &format!(
                    ".unreadable-{}",
                    time::OffsetDateTime::now_utc().unix_timestamp()
                ),
            );
            tracing::warn!(old = %path.display(), aside = %aside.display(),
                "the database being replaced fails to open or check; moving it aside instead of snapshotting it");
            std::fs::rename(path, &aside).map_err(io(format!("move {} aside", path.display())))?;
            for s in ["-wal", "-shm"] {
                let from = sibling(path, s);
                if from.exists() {
                    std::fs::rename(&from, sibling(&aside, s))
                        .map_err(io(format!("move {} aside", from.display())))?;
                }
            }
            report.moved_aside = Some(aside);
        }
    }
    // Between the database and the files a crash would leave a mix: the
    // marker says so (aica doctor reports it) until both are in place.
    let marker = l.paths.data.join(INCOMPLETE);
    if extra.is_some() {
        std::fs::create_dir_all(&l.paths.data)
            .map_err(io(format!("create {}", l.paths.data.display())))?;
        crate::util::write_atomic(&marker, b.name.as_bytes())
            .map_err(io(format!("write {}", marker.display())))?;
    }
    std::fs::rename(staged, path).map_err(io(format!(
        "move the restored database into {}",
        path.display()
    )))?;
    fsync_dir(path)?;
    if let Some(extra) = extra {
        match restore_files(l, extra, with_config, &mut report) {
            Ok(()) => {
                let _ = std::fs::remove_file(&marker);
            }
            Err(e) => {
                report.files_error = Some(format!(
                    "the database was restored, but the uploads and configuration were not: {e}"
                ))
            }
        }
    }
    tracing::info!(backup = b.name, target = %path.display(), "restored");
    Ok(report)
}

fn fsync_dir(file: &Path) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("fsync {}", dir.display())))
}

/// Put the backup's uploads in place of the current ones (which are in the
/// safety snapshot), and its `aica.toml` where there is none (or when asked).
fn restore_files(
    l: &Loaded,
    extra: &Path,
    with_config: bool,
    report: &mut RestoreReport,
) -> Result<()> {
    let uploads = l.paths.data.join("uploads");
    let new = extra.join("uploads");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    std::fs::create_dir_all(&l.paths.data)
        .map_err(io(format!("create {}", l.paths.data.display())))?;
    if std::fs::symlink_metadata(&uploads).is_ok_and(|m| m.file_type().is_symlink()) {
        // Another volume: never replace the link with a directory.
        let kept = l.paths.data.join(format!("uploads.restored-{now}"));
        if new.exists() {
            std::fs::rename(&new, &kept).map_err(io(format!("keep {}", kept.display())))?;
        }
        report.uploads = Some(walk_count(&kept));
        report.warning = Some(format!(
            "{} is a symlink; the backup's uploads were put in {} instead: move them into place by hand",
            uploads.display(),
            kept.display()
        ));
        return restore_config(l, extra, with_config, report);
    }
    if !new.exists() {
        std::fs::create_dir_all(&new).map_err(io(format!("create {}", new.display())))?;
    }
    // One atomic exchange: the old uploads end up in the staging directory
    // (removed with it; they are in the safety snapshot), never half of each.
    if uploads.exists() {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &new,
            nix::fcntl::AT_FDCWD,
            &uploads,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| {
            io(format!(
                "exchange {} with the backup's uploads",
                uploads.display()
            ))(e.into())
        })?;
    } else {
        std::fs::rename(&new, &uploads)
            .map_err(io(format!("move uploads into {}", uploads.display())))?;
    }
    let count = walk_count(&uploads);
    fsync_dir(&uploads)?;
    report.uploads = Some(count);
    restore_config(l, extra, with_config, report)
}

fn restore_config(
    l: &Loaded,
    extra: &Path,
    with_config: bool,
    report: &mut RestoreReport,
) -> Result<()> {
    let toml = extra.join("config/aica.toml");
    let live_toml = l.paths.base.join("aica.toml");
    report.config = Some(if !toml.exists() {
        "the backup holds no aica.toml; the current configuration is unchanged".into()
    } else if live_toml.exists() && !with_config {
        "kept the current aica.toml; the backup's copy was not applied (--with-config applies it)"
            .into()
    } else {
        let bytes = std::fs::read(&toml).map_err(io(format!("read {}", toml.display())))?;
        crate::util::write_atomic(&live_toml, &bytes)
            .map_err(io(format!("write {}", live_toml.display())))?;
        format!("restored {}", live_toml.display())
    });
    Ok(())
}

fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk_count(&e.path())
            } else {
                1
            }
        })
        .sum()
}
