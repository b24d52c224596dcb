//! `backup verify`: archive checksum, every member's checksum, the sidecar
//! against the archive's own manifest, a full `PRAGMA integrity_check` of the
//! extracted database, row counts against the manifest. The result is recorded
//! in the sidecar only when it is evidence about the backup: a full disk or an
//! unwritable scratch directory is reported as what it is and changes nothing.

use super::{
    BackupError, BackupInfo, BackupLock, Cancel, DB_MEMBER, FORMAT_VERSION, MANIFEST_MEMBER,
    Manifest, Result, Sidecar, io,
};
use crate::check::Check;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A verified archive and where its database was extracted.
pub struct Verified {
    pub manifest: Manifest,
    pub db: PathBuf,
    /// PostgreSQL: the scratch database the dump was restored into (dropped
    /// when this is dropped, unless kept).
    pub scratch: Option<super::pg::Scratch>,
}

fn corrupt(name: &str, detail: impl Into<String>) -> BackupError {
    BackupError::Corrupt {
        name: name.into(),
        detail: detail.into(),
    }
}

/// SQLite saying the extracted file is damaged is evidence; anything else
/// (cannot create a file, disk full) is not.
fn db_error(name: &str, e: rusqlite::Error) -> BackupError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            corrupt(name, format!("the database in the archive is damaged: {e}"))
        }
        _ => BackupError::Db(e),
    }
}

/// Reads the archive file, hashing every byte, and remembers a read error of
/// the file itself (a disk problem) so it is not mistaken for a damaged archive.
struct ArchiveReader {
    file: std::fs::File,
    hasher: blake3::Hasher,
    read_error: Arc<Mutex<Option<std::io::Error>>>,
}

impl Read for ArchiveReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.file.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                let msg = e.to_string();
                *self.read_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Err(std::io::Error::new(kind, msg))
            }
        }
    }
}

/// Turns an error met while decoding into corruption, unless the file itself failed to read.
struct Classify {
    name: String,
    path: PathBuf,
    read_error: Arc<Mutex<Option<std::io::Error>>>,
}

impl Classify {
    fn err(&self, what: &str, e: impl std::fmt::Display) -> BackupError {
        if let Some(re) = self
            .read_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return io(format!("read {}", self.path.display()))(re);
        }
        corrupt(&self.name, format!("{what}: {e}"))
    }
}

/// Write a member to `out` while hashing it; decompression stays on this
/// thread, hashing and writing run on another (the two overlap). Fsyncs.
fn extract(
    entry: &mut impl Read,
    out: &Path,
    what: &str,
    classify: &Classify,
    cancel: &Cancel,
) -> Result<(u64, String)> {
    // Never truncate or follow what is already there.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(out)
        .map_err(io(format!("create {}", out.display())))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let writer = std::thread::spawn(move || -> std::io::Result<(u64, String)> {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut h = blake3::Hasher::new();
        let mut size = 0u64;
        for chunk in rx {
            h.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)?;
        }
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((size, h.finalize().to_hex().to_string()))
    });
    let mut read_err = None;
    loop {
        if cancel.is_cancelled() {
            read_err = Some(BackupError::Cancelled);
            break;
        }
        let mut buf = vec![0u8; 1 << 20];
        match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.send(buf).is_err() {
                    break;
                }
            }
            Err(e) => {
                read_err = Some(classify.err(what, e));
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .join()
        .map_err(|_| BackupError::Refused("the extraction thread panicked".into()))?;
    if let Some(e) = read_err {
        return Err(e);
    }
    written.map_err(io(format!("write {}", out.display())))
}

/// Where a non-database member may be extracted: `config/aica.toml` and files
/// under `uploads/`, with plain path components only (no `..`, no absolute paths).
fn extractable(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    // Judged on the text: `Path::components` would hide `a/./b` and `a//b`.
    let plain = path
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    (plain && (path == "config/aica.toml" || path.starts_with("uploads/"))).then_some(p)
}

/// Paths aica writes into an archive: the database, the configuration, uploads.
fn allowed_member(path: &str) -> bool {
    path == DB_MEMBER
        || path == super::PG_DUMP_MEMBER
        || path == "config/aica.toml"
        || path == "config/env.production.keys"
        || (path.starts_with("uploads/") && extractable(path).is_some())
}

fn too_new(name: &str, m: &Manifest) -> Option<BackupError> {
    (m.format_version > FORMAT_VERSION || m.schema_version > crate::store::SCHEMA_VERSION).then(
        || BackupError::TooNew {
            name: name.into(),
            format: m.format_version,
            schema: m.schema_version,
            supported: crate::store::SCHEMA_VERSION,
        },
    )
}

/// What one pass over an archive found.
struct Pass {
    manifest: Manifest,
    hashes: BTreeMap<String, (u64, String)>,
    archive_blake3: String,
    archive_size: u64,
}

/// Read `path` once: hash it, hash (or extract) every member, parse the manifest.
fn pass(
    name: &str,
    path: &Path,
    db_out: Option<&Path>,
    extra_out: Option<&Path>,
    cancel: &Cancel,
) -> Result<Pass> {
    let file = std::fs::File::open(path).map_err(io(format!("open {}", path.display())))?;
    let read_error = Arc::new(Mutex::new(None));
    let classify = Classify {
        name: name.into(),
        path: path.to_path_buf(),
        read_error: read_error.clone(),
    };
    let reader = ArchiveReader {
        file,
        hasher: blake3::Hasher::new(),
        read_error,
    };
    let dec = zstd::Decoder::new(reader).map_err(|e| classify.err("not a zstd archive", e))?;
    let mut archive = tar::Archive::new(dec);
    let mut hashes: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let entries = archive
        .entries()
        .map_err(|e| classify.err("not a tar archive", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| classify.err("unreadable entry", e))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(corrupt(
                name,
                format!(
                    "member {:?} is not a regular file ({:?}); aica writes only regular files",
                    entry
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    entry.header().entry_type()
                ),
            ));
        }
        let member = entry
            .path()
            .map_err(|e| corrupt(name, e.to_string()))?
            .to_string_lossy()
            .to_string();
        if member == MANIFEST_MEMBER {
            let mut text = Vec::new();
            (&mut entry)
                .take(16 << 20)
                .read_to_end(&mut text)
                .map_err(|e| classify.err("manifest", e))?;
            manifest = Some(
                serde_json::from_slice(&text)
                    .map_err(|e| corrupt(name, format!("manifest: {e}")))?,
            );
            continue;
        }
        let out = match (member.as_str(), db_out, extra_out) {
            (DB_MEMBER | super::PG_DUMP_MEMBER, Some(db), _) => Some(db.to_path_buf()),
            (m, _, Some(dir)) => extractable(m).map(|p| dir.join(p)),
            _ => None,
        };
        let (size, hash) = match out {
            Some(out) => {
                if let Some(parent) = out.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io(format!("create {}", parent.display())))?;
                }
                extract(&mut entry, &out, &member, &classify, cancel)?
            }
            None => {
                let mut h = blake3::Hasher::new();
                let size =
                    std::io::copy(&mut entry, &mut h).map_err(|e| classify.err(&member, e))?;
                (size, h.finalize().to_hex().to_string())
            }
        };
        hashes.insert(member, (size, hash));
    }
    // Hash the rest of the file (tar padding, zstd epilogue).
    let mut rest = archive.into_inner().finish().into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(io(format!("read {}", path.display())))?;
    let archive_size = std::fs::metadata(path)
        .map_err(io(format!("stat {}", path.display())))?
        .len();
    let manifest =
        manifest.ok_or_else(|| corrupt(name, "the archive has no manifest (truncated?)"))?;
    Ok(Pass {
        manifest,
        hashes,
        archive_blake3: rest.hasher.finalize().to_hex().to_string(),
        archive_size,
    })
}

/// The bytes of one member of the archive at `path` (at most 1 MiB), if present.
/// Reads until the member is found; used to peek at a backup's configuration.
pub fn read_member(path: &Path, member: &str) -> Result<Option<Vec<u8>>> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(io(format!("open {name}")))?;
    let dec =
        zstd::Decoder::new(file).map_err(|e| corrupt(&name, format!("not a zstd archive: {e}")))?;
    let mut archive = tar::Archive::new(dec);
    let entries = archive
        .entries()
        .map_err(|e| corrupt(&name, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(&name, format!("unreadable entry: {e}")))?;
        let this = entry
            .path()
            .map(|p| p.to_string_lossy() == member)
            .unwrap_or(false);
        if this {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(1 << 20)
                .read_to_end(&mut bytes)
                .map_err(|e| corrupt(&name, format!("{member}: {e}")))?;
            return Ok(Some(bytes));
        }
        std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| corrupt(&name, format!("unreadable entry: {e}")))?;
    }
    Ok(None)
}

/// A sidecar rebuilt from the archive alone (state: unverified).
pub fn read_archive(path: &Path) -> Result<Sidecar> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let p = pass(&name, path, None, None, &Cancel::default())?;
    Ok(Sidecar {
        manifest: p.manifest,
        archive_size: p.archive_size,
        archive_blake3: p.archive_blake3,
        duration_secs: 0.0,
        verification: None,
        drill: None,
        mirror: None,
    })
}

/// Verify `b`, extracting its database to `db_out` (fsynced) and, when
/// `extra_out` is given, its configuration and uploads under it. Does not record.
pub fn check(
    b: &BackupInfo,
    db_out: &Path,
    extra_out: Option<&Path>,
    cancel: &Cancel,
) -> Result<Verified> {
    check_with(b, db_out, extra_out, None, cancel)
}

/// [`check`], with the PostgreSQL server (`database.url`) a dump is restored
/// into for its row counts; a PostgreSQL backup cannot be verified without one.
pub fn check_with(
    b: &BackupInfo,
    db_out: &Path,
    extra_out: Option<&Path>,
    server: Option<&str>,
    cancel: &Cancel,
) -> Result<Verified> {
    let name = b.name.as_str();
    let sidecar = super::read_sidecar(&b.path).ok_or_else(|| {
        BackupError::Refused(format!(
            "backup {name} has no readable sidecar; any locked backup operation rebuilds it from the archive (try: aica backup verify {name})"
        ))
    })?;
    if let Some(e) = too_new(name, &sidecar.manifest) {
        return Err(e);
    }
    let p = pass(name, &b.path, Some(db_out), extra_out, cancel)?;
    // First the archive against its own manifest (evidence about the archive),
    // then the sidecar against the archive (evidence about the sidecar).
    let manifest = p.manifest;
    if let Some(e) = too_new(name, &manifest) {
        return Err(e);
    }
    for m in &manifest.members {
        if !allowed_member(&m.path) {
            return Err(corrupt(
                name,
                format!("member path {:?} is not one aica writes", m.path),
            ));
        }
        match p.hashes.get(&m.path) {
            None => return Err(corrupt(name, format!("member {} is missing", m.path))),
            Some((size, hash)) if *size != m.size || *hash != m.blake3 => {
                return Err(corrupt(
                    name,
                    format!("member {} does not match its checksum", m.path),
                ));
            }
            _ => {}
        }
    }
    if let Some(extra) = p
        .hashes
        .keys()
        .find(|k| !manifest.members.iter().any(|m| &m.path == *k))
    {
        return Err(corrupt(
            name,
            format!("member {extra} is not in the manifest"),
        ));
    }
    if manifest.engine == "postgres" {
        if !p.hashes.contains_key(super::PG_DUMP_MEMBER) {
            return Err(corrupt(name, "the archive holds no database dump"));
        }
        let server = server.ok_or_else(|| {
            BackupError::Refused(format!(
                "{name} holds a PostgreSQL dump: verifying it restores it into a scratch database, which needs the server; set DATABASE_URL (database.url) to a PostgreSQL server"
            ))
        })?;
        let scratch = super::pg::restore_into_scratch(
            name,
            server,
            db_out,
            &manifest,
            "aica_verify",
            cancel,
        )?;
        sidecar_agrees(b, &sidecar, &p.archive_blake3, &manifest)?;
        return Ok(Verified {
            manifest,
            db: db_out.to_path_buf(),
            scratch: Some(scratch),
        });
    }
    if manifest.engine != "sqlite" {
        return Err(BackupError::TooNew {
            name: name.into(),
            format: manifest.format_version,
            schema: manifest.schema_version,
            supported: crate::store::SCHEMA_VERSION,
        });
    }
    if !p.hashes.contains_key(DB_MEMBER) {
        return Err(corrupt(name, "the archive holds no database"));
    }
    let conn = Connection::open_with_flags(db_out, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| db_error(name, e))?;
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| db_error(name, e))?;
    if result != "ok" {
        return Err(corrupt(name, format!("integrity_check: {result}")));
    }
    for (table, want) in &manifest.tables {
        let got: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM \"{}\"", table.replace('"', "\"\"")),
                [],
                |r| r.get(0),
            )
            .map_err(|e| db_error(name, e))?;
        if got != *want {
            return Err(corrupt(
                name,
                format!("table {table} has {got} rows, the manifest says {want}"),
            ));
        }
    }
    // Leave a self-contained file: no WAL next to it.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(|e| db_error(name, e))?;
    drop(conn);
    sidecar_agrees(b, &sidecar, &p.archive_blake3, &manifest)?;
    Ok(Verified {
        manifest,
        db: db_out.to_path_buf(),
        scratch: None,
    })
}

/// The sidecar against the archive: a difference blames the sidecar.
fn sidecar_agrees(
    b: &BackupInfo,
    sidecar: &super::Sidecar,
    archive_blake3: &str,
    manifest: &Manifest,
) -> Result<()> {
    let name = b.name.as_str();
    let mismatch = if archive_blake3 != sidecar.archive_blake3 {
        Some(format!(
            "archive checksum {} differs from the recorded {}",
            archive_blake3, sidecar.archive_blake3
        ))
    } else if *manifest != sidecar.manifest {
        Some(
            "the sidecar's copy of the manifest differs from the manifest inside the archive"
                .into(),
        )
    } else {
        None
    };
    if let Some(detail) = mismatch {
        return Err(BackupError::SidecarMismatch {
            name: name.into(),
            detail,
            sidecar: super::sidecar_path(&b.path).display().to_string(),
        });
    }
    Ok(())
}

/// Record a verification in the sidecar, but only when it is evidence about
/// the backup (it passed, or the archive is damaged). Returns whether it did.
pub fn record(lock: &BackupLock, b: &BackupInfo, outcome: &Result<Verified>) -> Result<bool> {
    let check = match outcome {
        Ok(v) if v.scratch.is_some() => Check::pass(
            "verification",
            format!(
                "checksums ok; restored into a scratch database with the row counts of all {} tables",
                v.manifest.tables.len()
            ),
        ),
        Ok(v) => Check::pass(
            "verification",
            format!(
                "checksums, integrity_check and row counts of {} tables ok",
                v.manifest.tables.len()
            ),
        ),
        Err(e) if e.is_evidence() => Check::fail(
            "verification",
            e.to_string(),
            "take a new backup ('aica backup create --verify') and check the backup volume",
        ),
        Err(_) => return Ok(false),
    };
    let Some(mut sidecar) = super::read_sidecar(&b.path) else {
        return Ok(false);
    };
    sidecar.verification = Some(check);
    super::write_sidecar(lock, &b.path, &sidecar)?;
    Ok(true)
}

/// Verify and record, extracting into a scratch directory in the backup
/// directory that is removed after (or by the next lock holder after a kill).
pub fn verify(lock: &BackupLock, b: &BackupInfo, cancel: &Cancel) -> Result<Verified> {
    let scratch = tempfile::Builder::new()
        .prefix(".verify-")
        .tempdir_in(lock.dir())
        .map_err(io(format!(
            "create scratch dir in {}",
            lock.dir().display()
        )))?;
    let outcome = check_with(
        b,
        &scratch.path().join("aica_sys.db"),
        None,
        lock.server(),
        cancel,
    );
    record(lock, b, &outcome)?;
    outcome
}
