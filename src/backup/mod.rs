//! Backups you can trust: consistent online snapshots streamed into zstd
//! archives with a manifest, verification, atomic restore, retention, drills.
//!
//! An archive `aica-<UTC time>[-kind].aicabak` is a zstd-compressed tar holding
//! `db/aica_sys.db`, the configuration (secrets excluded), uploads, and
//! `manifest.json` last. Beside it, `<archive>.json` (the sidecar) holds a copy of
//! the manifest, the archive's BLAKE3, and the recorded verification and drill
//! results. Both are written under temporary names, fsynced and renamed; only an
//! archive with its sidecar is listed as a backup.

pub mod dest;
pub mod drill;
mod lock;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod snapshot;
pub mod verify;

pub use lock::BackupLock;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FORMAT_VERSION: u32 = 1;
pub const EXT: &str = "aicabak";
/// Path of the database inside an archive.
pub const DB_MEMBER: &str = "db/aica_sys.db";
pub const MANIFEST_MEMBER: &str = "manifest.json";

/// Why a backup operation failed; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no backup named {0:?}; 'aica backup list' shows the names")]
    NotFound(String),
    #[error(
        "{0:?} is not a backup name (expected aica-YYYYMMDDTHHMMSSZ[-kind].{EXT}, no directories)"
    )]
    BadName(String),
    #[error("there are no backups in {0}; take one with 'aica backup create'")]
    NoBackups(PathBuf),
    #[error("backup {name} is corrupt: {detail}")]
    Corrupt { name: String, detail: String },
    #[error(
        "backup {name} was written by a newer aica (format {format}, schema {schema}); this aica reads format {FORMAT_VERSION} and schema {supported}: upgrade aica to use it"
    )]
    TooNew {
        name: String,
        format: u32,
        schema: i64,
        supported: i64,
    },
    #[error(
        "another backup operation is running ({0}); wait for it, or remove the stale lock if that process is gone"
    )]
    Locked(String),
    #[error("{0}")]
    Refused(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// One file inside an archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// What a backup holds, written into the archive and copied into the sidecar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub created_at: String,
    pub created_unix: i64,
    /// `manual`, `scheduled` or `safety`.
    pub kind: String,
    pub note: Option<String>,
    pub source_path: String,
    pub app_version: String,
    pub schema_version: i64,
    pub page_size: u64,
    pub page_count: u64,
    pub tables: BTreeMap<String, i64>,
    pub members: Vec<Member>,
    /// Keys of `.env.production` whose values were left out of the backup.
    pub secrets_excluded: Vec<String>,
}

/// Result of a verification or drill, as recorded in the sidecar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub ok: bool,
    pub at: String,
    pub detail: String,
}

/// The sidecar file next to each archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sidecar {
    pub manifest: Manifest,
    pub archive_size: u64,
    pub archive_blake3: String,
    pub duration_secs: f64,
    pub verification: Option<Check>,
    pub drill: Option<Check>,
}

/// A backup as listed.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub name: String,
    pub path: PathBuf,
    pub created_at: String,
    pub created_unix: i64,
    pub kind: String,
    pub note: Option<String>,
    pub size: u64,
    pub db_size: u64,
    /// `verified`, `unverified`, `corrupt`, `safety snapshot`, `no sidecar`.
    pub state: String,
    pub verification: Option<Check>,
    pub drill: Option<Check>,
}

impl BackupInfo {
    pub fn verified(&self) -> bool {
        self.verification.as_ref().is_some_and(|v| v.ok)
    }
    pub fn ratio(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            self.db_size as f64 / self.size as f64
        }
    }
}

/// Check a user-given name; accepts it with or without the extension.
pub fn parse_name(name: &str) -> Result<String> {
    let n = name.strip_suffix(&format!(".{EXT}")).unwrap_or(name);
    let ok = n.starts_with("aica-")
        && n.len() <= 80
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(BackupError::BadName(name.chars().take(100).collect()));
    }
    Ok(format!("{n}.{EXT}"))
}

pub fn sidecar_path(archive: &Path) -> PathBuf {
    let mut p = archive.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

pub fn read_sidecar(archive: &Path) -> Option<Sidecar> {
    let bytes = std::fs::read(sidecar_path(archive)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write_sidecar(archive: &Path, s: &Sidecar) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(s).map_err(|e| io("encode sidecar")(std::io::Error::other(e)))?;
    crate::util::write_atomic(&sidecar_path(archive), &json)
        .map_err(io(format!("write {}", sidecar_path(archive).display())))
}

fn info(path: PathBuf, s: Sidecar) -> BackupInfo {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let state = match (&s.verification, s.manifest.kind.as_str()) {
        (Some(v), _) if !v.ok => "corrupt",
        (_, "safety") => "safety snapshot",
        (Some(_), _) => "verified",
        (None, _) => "unverified",
    };
    BackupInfo {
        name,
        path,
        created_at: s.manifest.created_at.clone(),
        created_unix: s.manifest.created_unix,
        kind: s.manifest.kind.clone(),
        note: s.manifest.note.clone(),
        size: s.archive_size,
        db_size: s.manifest.page_size * s.manifest.page_count,
        state: state.into(),
        verification: s.verification,
        drill: s.drill,
    }
}

/// Every backup in `dir`, newest first. Archives without a readable sidecar are
/// listed as `no sidecar` (an interrupted create leaves none: it never renames).
pub fn list(dir: &Path) -> Result<Vec<BackupInfo>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(format!("read {}", dir.display()))(e)),
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if !name.ends_with(&format!(".{EXT}")) || name.starts_with('.') {
            continue;
        }
        match read_sidecar(&path) {
            Some(s) => out.push(info(path, s)),
            None => {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(BackupInfo {
                    name,
                    path,
                    created_at: String::new(),
                    created_unix: 0,
                    kind: "unknown".into(),
                    note: None,
                    size,
                    db_size: 0,
                    state: "no sidecar".into(),
                    verification: None,
                    drill: None,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        b.created_unix
            .cmp(&a.created_unix)
            .then(b.name.cmp(&a.name))
    });
    Ok(out)
}

/// Find a backup by name (`None` = the newest non-safety backup).
pub fn find(dir: &Path, name: Option<&str>) -> Result<BackupInfo> {
    let all = list(dir)?;
    match name {
        Some(n) => {
            let file = parse_name(n)?;
            all.into_iter()
                .find(|b| b.name == file)
                .ok_or_else(|| BackupError::NotFound(n.to_string()))
        }
        None => all
            .into_iter()
            .find(|b| b.kind != "safety" && b.state != "no sidecar")
            .ok_or_else(|| BackupError::NoBackups(dir.to_path_buf())),
    }
}

/// The newest verified backup, for health and metrics.
pub fn newest_verified(dir: &Path) -> Option<BackupInfo> {
    list(dir)
        .ok()?
        .into_iter()
        .find(|b| b.verified() && b.kind != "safety")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(
            parse_name("aica-20261128T120000Z").unwrap(),
            "aica-20261128T120000Z.aicabak"
        );
        assert_eq!(
            parse_name("aica-20261128T120000Z-safety.aicabak").unwrap(),
            "aica-20261128T120000Z-safety.aicabak"
        );
        for bad in [
            "../aica-1",
            "aica-1/../../x",
            "/etc/passwd",
            "backup.tar",
            "aica-1.aicabak/x",
            "",
        ] {
            assert!(
                matches!(parse_name(bad), Err(BackupError::BadName(_))),
                "{bad}"
            );
        }
    }
}
