//! `backup restore`: verify first, take a safety snapshot of what is replaced,
//! write the restored database beside the live one, fsync, integrity-check it
//! (all inside verification), then rename it
//! into place. Refuses while the server runs (and holds the run lock meanwhile,
//! so the server cannot start half-way).

use super::snapshot::{CreateOptions, create_locked};
use super::{BackupError, BackupInfo, Result, io};
use crate::config::Loaded;
use crate::ops::pidfile::RunLock;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub target: PathBuf,
    pub dry_run: bool,
    /// The safety snapshot of the replaced database, if there was one.
    pub safety_snapshot: Option<String>,
    /// Where an unreadable old database was moved instead of snapshotting it.
    pub moved_aside: Option<PathBuf>,
    pub tables: std::collections::BTreeMap<String, i64>,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Checkpoint the database at `db` so no WAL is left to be replayed onto the new file.
fn settle(db: &Path) -> rusqlite::Result<()> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);
    Ok(())
}

pub fn restore(
    l: &Loaded,
    b: &BackupInfo,
    target: Option<&Path>,
    dry_run: bool,
) -> Result<RestoreReport> {
    let target = target
        .map(Path::to_path_buf)
        .unwrap_or_else(|| l.paths.db.clone());
    let live = target == l.paths.db;
    let _run = if live {
        Some(RunLock::acquire(&l.paths.run).map_err(|info| {
            let pid = (*info).map(|i| i.pid.to_string()).unwrap_or_else(|| "?".into());
            BackupError::Refused(format!(
                "aica is running (pid {pid}) and serving {}; a restore must not swap the file under it.\nTry: aica down && aica backup restore {} --yes && aica up",
                target.display(),
                b.name.trim_end_matches(".aicabak")
            ))
        })?)
    } else {
        None
    };
    let _lock = super::BackupLock::acquire(&l.paths.backups, "restore")?;
    let dir = target.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    // Extract beside the target so the final rename is atomic (same file system).
    let staged = sibling(&target, ".restore-tmp");
    let _ = std::fs::remove_file(&staged);
    let verified = super::verify::check(b, &staged);
    super::verify::record(b, &verified)?;
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    let mut report = RestoreReport {
        backup: b.name.clone(),
        target: target.clone(),
        dry_run,
        safety_snapshot: None,
        moved_aside: None,
        tables: verified.manifest.tables.clone(),
    };
    if dry_run {
        let _ = std::fs::remove_file(&staged);
        return Ok(report);
    }
    if target.exists() {
        let settled = settle(&target);
        let snap = settled.map_err(BackupError::from).and_then(|_| {
            create_locked(
                l,
                &target,
                &CreateOptions {
                    kind: "safety".into(),
                    note: Some(format!("before restoring {}", b.name)),
                    progress: false,
                },
            )
        });
        match snap {
            Ok(s) => report.safety_snapshot = Some(s.name),
            Err(e) => {
                // The old file cannot be read as a database: keep it whole, aside.
                let aside = sibling(
                    &target,
                    &format!(
                        ".unreadable-{}",
                        time::OffsetDateTime::now_utc().unix_timestamp()
                    ),
                );
                tracing::warn!(error = %e, aside = %aside.display(), "safety snapshot failed; moving the old database aside");
                std::fs::rename(&target, &aside)
                    .map_err(io(format!("move {} aside", target.display())))?;
                report.moved_aside = Some(aside);
            }
        }
    }
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(&target, suffix));
    }
    std::fs::rename(&staged, &target).map_err(io(format!(
        "move the restored database into {}",
        target.display()
    )))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("fsync {}", dir.display())))?;
    tracing::info!(backup = b.name, target = %target.display(), "restored");
    Ok(report)
}
