//! Backups you can trust: consistent online snapshots streamed into zstd
//! archives with a manifest, verification, atomic restore, retention, drills.
//!
//! An archive `aica-<UTC time>[-kind][-N].aicabak` is a zstd-compressed tar
//! holding `db/aica_sys.db`, the configuration (secrets excluded), uploads, and
//! `manifest.json` last, so an archive on its own is a complete backup. Beside
//! it, `<archive>.json` (the sidecar) holds a copy of the manifest, the
//! archive's BLAKE3, and the recorded verification and drill results; a
//! missing sidecar is rebuilt from the archive by the next operation that
//! holds the backup lock. Every operation that changes the backup store takes
//! a [`BackupLock`] and the functions that need it take the lock as a
//! parameter, so the compiler keeps the rule.

pub mod dest;
pub mod drill;
mod lock;
pub mod pg;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod snapshot;
pub mod verify;

pub use lock::{BackupLock, Debris, debris};

use crate::check::{Check, Level};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub const FORMAT_VERSION: u32 = 1;
pub const EXT: &str = "aicabak";
/// Path of the database inside an archive.
pub const DB_MEMBER: &str = "db/aica_sys.db";
/// Path of a PostgreSQL dump (`pg_dump --format=custom`) inside an archive.
pub const PG_DUMP_MEMBER: &str = "db/aica.pgdump";
pub const MANIFEST_MEMBER: &str = "manifest.json";

/// Why a backup operation failed; each message names the fix. Only
/// [`BackupError::Corrupt`] is evidence about a backup and may change its state.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no backup named {0:?}; 'aica backup list' shows the names")]
    NotFound(String),
    #[error(
        "{0:?} is not a backup name (expected aica-YYYYMMDDTHHMMSSZ[-kind][-N].{EXT}, no directories)"
    )]
    BadName(String),
    #[error("there are no usable backups in {0}; take one with 'aica backup create'")]
    NoBackups(PathBuf),
    #[error("backup {name} is corrupt: {detail}")]
    Corrupt { name: String, detail: String },
    #[error(
        "the sidecar of {name} disagrees with its archive ({detail}); the archive itself passes its own manifest, checksums and integrity check, so the sidecar is what is damaged.\nTry: rm {sidecar} && aica backup verify {name}   (the sidecar is rebuilt from the archive)"
    )]
    SidecarMismatch {
        name: String,
        detail: String,
        sidecar: String,
    },
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
        "another backup operation is running: {0}. Wait for it to finish; the lock is released when that process exits (do not delete the lock file: that would let two operations run at once)"
    )]
    Locked(String),
    #[error("{0}")]
    Refused(String),
    #[error("cancelled (the server is shutting down); nothing was kept")]
    Cancelled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
}

impl BackupError {
    /// Is this evidence that the backup itself is damaged?
    pub fn is_evidence(&self) -> bool {
        matches!(self, BackupError::Corrupt { .. })
    }
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// Set from another thread to stop a long backup operation at the next page.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Manual,
    Scheduled,
    /// Taken by a restore of what it replaces.
    Safety,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Manual => "manual",
            Kind::Scheduled => "scheduled",
            Kind::Safety => "safety",
        }
    }
}

/// What is known about a backup, from its sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    #[serde(rename = "verified")]
    Verified,
    #[serde(rename = "unverified")]
    Unverified,
    /// A verification found evidence of damage (checksum, integrity, manifest).
    #[serde(rename = "corrupt")]
    Corrupt,
    #[serde(rename = "safety snapshot")]
    Safety,
    /// The archive has no sidecar yet; the next locked operation rebuilds it.
    #[serde(rename = "no sidecar")]
    NoSidecar,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Verified => "verified",
            State::Unverified => "unverified",
            State::Corrupt => "corrupt",
            State::Safety => "safety snapshot",
            State::NoSidecar => "no sidecar",
        }
    }
}

/// A parsed archive name: `aica-<stamp>[-kind][-N].aicabak`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    pub file: String,
    pub stamp: String,
    pub kind: Kind,
    /// 1 for the first backup of a second, 2.. for the next ones.
    pub seq: u32,
}

impl BackupName {
    /// Parse a user-given or listed name (with or without the extension).
    pub fn parse(name: &str) -> Result<BackupName> {
        let bad = || BackupError::BadName(name.chars().take(100).collect());
        let n = name.strip_suffix(&format!(".{EXT}")).unwrap_or(name);
        let rest = n.strip_prefix("aica-").ok_or_else(bad)?;
        let stamp = rest.get(..16).ok_or_else(bad)?;
        let ok_stamp = stamp.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
        if !ok_stamp
            || time::PrimitiveDateTime::parse(
                stamp,
                time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
            )
            .is_err()
        {
            return Err(bad());
        }
        let mut kind = Kind::Manual;
        let mut seq = 1;
        let mut parts = rest[16..].split('-');
        if parts.next() != Some("") {
            return Err(bad());
        }
        let mut parts = parts.peekable();
        if let Some(k) = parts.peek().copied()
            && !k.bytes().all(|b| b.is_ascii_digit())
        {
            kind = match k {
                "scheduled" => Kind::Scheduled,
                "safety" => Kind::Safety,
                "manual" => Kind::Manual,
                _ => return Err(bad()),
            };
            parts.next();
        }
        if let Some(s) = parts.next() {
            seq = s
                .parse()
                .ok()
                .filter(|n| (2..1_000_000).contains(n))
                .ok_or_else(bad)?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(BackupName {
            file: format!("{n}.{EXT}"),
            stamp: stamp.to_string(),
            kind,
            seq,
        })
    }

    fn created_unix(&self) -> i64 {
        time::PrimitiveDateTime::parse(
            &self.stamp,
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
        )
        .map(|t| t.assume_utc().unix_timestamp())
        .unwrap_or(0)
    }
}

/// Check a user-given name; accepts it with or without the extension.
pub fn parse_name(name: &str) -> Result<String> {
    BackupName::parse(name).map(|n| n.file)
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
    /// Which database the backup holds: `sqlite` (a page-for-page file) or
    /// `postgres` (a `pg_dump --format=custom` of one snapshot).
    #[serde(default = "sqlite_engine")]
    pub engine: String,
    /// PostgreSQL: the server's version when the dump was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    pub created_at: String,
    pub created_unix: i64,
    pub kind: Kind,
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

fn sqlite_engine() -> String {
    "sqlite".into()
}

/// Read a recorded check, also in the form of sidecars written before checks
/// were unified (`{ok, at, detail}`).
fn recorded<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Check>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Any {
        Now(Check),
        Before {
            ok: bool,
            at: String,
            detail: String,
        },
    }
    Ok(Option::<Any>::deserialize(d)?.map(|a| match a {
        Any::Now(c) => c,
        Any::Before { ok, at, detail } => Check {
            name: "recorded".into(),
            level: if ok { Level::Pass } else { Level::Fail },
            observed: detail,
            fix: None,
            at,
        },
    }))
}

/// The sidecar file next to each archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sidecar {
    pub manifest: Manifest,
    pub archive_size: u64,
    pub archive_blake3: String,
    pub duration_secs: f64,
    #[serde(default, deserialize_with = "recorded")]
    pub verification: Option<Check>,
    #[serde(default, deserialize_with = "recorded")]
    pub drill: Option<Check>,
    /// The copy to `backup.mirror_dir`, when one is configured.
    #[serde(default, deserialize_with = "recorded")]
    pub mirror: Option<Check>,
}

/// A backup as listed.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub name: String,
    pub path: PathBuf,
    pub created_at: String,
    pub created_unix: i64,
    pub kind: Kind,
    pub note: Option<String>,
    pub size: u64,
    pub db_size: u64,
    pub state: State,
    pub verification: Option<Check>,
    pub drill: Option<Check>,
    #[serde(skip)]
    order: (String, u32),
}

/// Backups dated more than this far ahead of the clock are not trusted as newest.
pub const FUTURE_SLACK_SECS: i64 = 300;

impl BackupInfo {
    /// Dated in the future (a wrong clock when it was taken, or a foreign archive)?
    pub fn from_the_future(&self, now_unix: i64) -> bool {
        self.created_unix > now_unix + FUTURE_SLACK_SECS
    }
    pub fn verified(&self) -> bool {
        self.state == State::Verified
    }
    /// Can it be restored (as far as anyone knows)?
    pub fn usable(&self) -> bool {
        matches!(self.state, State::Verified | State::Unverified)
    }
    pub fn ratio(&self) -> f64 {
        if self.size == 0 || self.db_size == 0 {
            0.0
        } else {
            self.db_size as f64 / self.size as f64
        }
    }
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

/// Write the sidecar of `archive` (atomically). Needs the lock: sidecars hold
/// recorded state, and two writers would lose one another's results.
pub fn write_sidecar(_lock: &BackupLock, archive: &Path, s: &Sidecar) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(s).map_err(|e| io("encode sidecar")(std::io::Error::other(e)))?;
    crate::util::write_atomic(&sidecar_path(archive), &json)
        .map_err(io(format!("write {}", sidecar_path(archive).display())))
}

fn info(path: PathBuf, n: BackupName, s: Option<Sidecar>, file_size: u64) -> BackupInfo {
    let Some(s) = s else {
        return BackupInfo {
            name: n.file.clone(),
            path,
            created_at: crate::util::fmt_time(
                time::OffsetDateTime::from_unix_timestamp(n.created_unix())
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            ),
            created_unix: n.created_unix(),
            kind: n.kind,
            note: None,
            size: file_size,
            db_size: 0,
            state: State::NoSidecar,
            verification: None,
            drill: None,
            order: (n.stamp, n.seq),
        };
    };
    // A file whose size is not the recorded one is damaged (truncated, or
    // replaced), whatever an older verification said.
    let size_ok = file_size == s.archive_size;
    let state = match (&s.verification, s.manifest.kind) {
        _ if !size_ok => State::Corrupt,
        (Some(v), _) if v.level == Level::Fail => State::Corrupt,
        (_, Kind::Safety) => State::Safety,
        (Some(_), _) => State::Verified,
        (None, _) => State::Unverified,
    };
    BackupInfo {
        name: n.file,
        path,
        created_at: s.manifest.created_at.clone(),
        created_unix: s.manifest.created_unix,
        kind: s.manifest.kind,
        note: s.manifest.note.clone(),
        size: file_size,
        db_size: s.manifest.page_size * s.manifest.page_count,
        state,
        verification: s.verification,
        drill: s.drill,
        order: (n.stamp, n.seq),
    }
}

/// Every backup in `dir`, newest first (by time, then by the sequence number
/// of backups taken in the same second). Files whose names are not backup
/// names are not listed (see [`ignored`]).
pub fn list(dir: &Path) -> Result<Vec<BackupInfo>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(format!("read {}", dir.display()))(e)),
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.ends_with(&format!(".{EXT}")) || name.starts_with('.') {
            continue;
        }
        let Ok(n) = BackupName::parse(name) else {
            continue;
        };
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(info(path.clone(), n, read_sidecar(&path), size));
    }
    out.sort_by(|a, b| {
        (b.created_unix, &b.order.0, b.order.1).cmp(&(a.created_unix, &a.order.0, a.order.1))
    });
    Ok(out)
}

/// `*.aicabak` files in `dir` that are not backups aica made (wrong name, not a file).
pub fn ignored(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let junk = name.ends_with(&format!(".{EXT}"))
                && !name.starts_with('.')
                && (BackupName::parse(&name).is_err() || !e.file_type().is_ok_and(|t| t.is_file()));
            junk.then_some(name)
        })
        .collect();
    v.sort();
    v
}

/// Find a backup by name, or the newest usable non-safety backup (`None`).
pub fn find(dir: &Path, name: Option<&str>) -> Result<BackupInfo> {
    let all = list(dir)?;
    match name {
        Some(n) => {
            let file = parse_name(n)?;
            all.into_iter()
                .find(|b| b.name == file)
                .ok_or_else(|| BackupError::NotFound(n.to_string()))
        }
        None => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            for b in all.iter().filter(|b| b.from_the_future(now)) {
                tracing::warn!(
                    backup = b.name,
                    created_at = b.created_at,
                    "backup is dated in the future (a wrong clock?); not taken as the newest: name it explicitly to use it"
                );
            }
            all.into_iter()
                .find(|b| b.kind != Kind::Safety && b.usable() && !b.from_the_future(now))
                .ok_or_else(|| BackupError::NoBackups(dir.to_path_buf()))
        }
    }
}

/// The newest verified backup, for health and metrics.
pub fn newest_verified(dir: &Path) -> Option<BackupInfo> {
    list(dir)
        .ok()?
        .into_iter()
        .find(|b| b.verified() && b.kind != Kind::Safety)
}

/// Set the backup gauges from the newest good backup in `dir` (any process may have made it).
pub fn publish_gauges(dir: &Path) {
    let newest = list(dir)
        .ok()
        .and_then(|l| l.into_iter().find(|b| b.kind != Kind::Safety && b.usable()));
    if let Some(b) = newest {
        metrics::gauge!("aica_backup_last_success_timestamp_seconds").set(b.created_unix as f64);
        metrics::gauge!("aica_backup_last_size_bytes").set(b.size as f64);
        if let Some(s) = read_sidecar(&b.path) {
            metrics::gauge!("aica_backup_last_duration_seconds").set(s.duration_secs);
        }
    }
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
        let n = BackupName::parse("aica-20261128T120000Z-safety-3.aicabak").unwrap();
        assert_eq!((n.kind, n.seq), (Kind::Safety, 3));
        let n = BackupName::parse("aica-20261128T120000Z-2").unwrap();
        assert_eq!((n.kind, n.seq), (Kind::Manual, 2));
        for bad in [
            "../aica-1",
            "aica-1/../../x",
            "/etc/passwd",
            "backup.tar",
            "aica-1.aicabak/x",
            "aica-junk.aicabak",
            "aica-20261328T120000Z",
            "aica-20261128T120000Z-what",
            "aica-20261128T120000Z-2-3",
            "",
        ] {
            assert!(
                matches!(parse_name(bad), Err(BackupError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn same_second_backups_list_newest_first() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "aica-20261128T120000Z.aicabak",
            "aica-20261128T120000Z-2.aicabak",
            "aica-20261128T120000Z-10.aicabak",
            "aica-20261128T115959Z.aicabak",
            "junk.aicabak",
        ] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        let names: Vec<String> = list(d.path())
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(
            names,
            [
                "aica-20261128T120000Z-10.aicabak",
                "aica-20261128T120000Z-2.aicabak",
                "aica-20261128T120000Z.aicabak",
                "aica-20261128T115959Z.aicabak"
            ]
        );
        assert_eq!(ignored(d.path()), ["junk.aicabak"]);
    }
}
