//! `backup verify`: archive checksum, every member's checksum, a full
//! `PRAGMA integrity_check` of the extracted database, row counts against the
//! manifest. The result is recorded in the sidecar, so `list` shows it.

use super::{
    BackupError, BackupInfo, Check, DB_MEMBER, FORMAT_VERSION, MANIFEST_MEMBER, Manifest, Result,
    Sidecar, io,
};
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A verified archive and where its database was extracted.
pub struct Verified {
    pub manifest: Manifest,
    pub db: PathBuf,
}

fn corrupt(name: &str, detail: impl Into<String>) -> BackupError {
    BackupError::Corrupt {
        name: name.into(),
        detail: detail.into(),
    }
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Verify `b`, extracting its database to `db_out` (fsynced). Does not record.
pub fn check(b: &BackupInfo, db_out: &Path) -> Result<Verified> {
    let name = b.name.as_str();
    let sidecar = super::read_sidecar(&b.path);
    if let Some(s) = &sidecar {
        if s.manifest.format_version > FORMAT_VERSION
            || s.manifest.schema_version > crate::store::SCHEMA_VERSION
        {
            return Err(BackupError::TooNew {
                name: name.into(),
                format: s.manifest.format_version,
                schema: s.manifest.schema_version,
                supported: crate::store::SCHEMA_VERSION,
            });
        }
        let actual = hash_file(&b.path).map_err(io(format!("read {}", b.path.display())))?;
        if actual != s.archive_blake3 {
            return Err(corrupt(
                name,
                format!(
                    "archive checksum {actual} differs from the recorded {}",
                    s.archive_blake3
                ),
            ));
        }
    }
    let file = std::fs::File::open(&b.path).map_err(io(format!("open {}", b.path.display())))?;
    let dec =
        zstd::Decoder::new(file).map_err(|e| corrupt(name, format!("not a zstd archive: {e}")))?;
    let mut archive = tar::Archive::new(dec);
    let mut hashes: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let entries = archive
        .entries()
        .map_err(|e| corrupt(name, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(name, format!("unreadable entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| corrupt(name, e.to_string()))?
            .to_string_lossy()
            .to_string();
        if path == MANIFEST_MEMBER {
            let mut text = Vec::new();
            entry
                .read_to_end(&mut text)
                .map_err(|e| corrupt(name, e.to_string()))?;
            manifest = Some(
                serde_json::from_slice(&text)
                    .map_err(|e| corrupt(name, format!("manifest: {e}")))?,
            );
            continue;
        }
        let mut h = blake3::Hasher::new();
        let mut size = 0u64;
        let mut out = if path == DB_MEMBER {
            Some(
                std::fs::File::create(db_out)
                    .map_err(io(format!("create {}", db_out.display())))?,
            )
        } else {
            None
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| corrupt(name, format!("{path}: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
            if let Some(f) = out.as_mut() {
                f.write_all(&buf[..n])
                    .map_err(io(format!("write {}", db_out.display())))?;
            }
        }
        if let Some(f) = out {
            f.sync_all()
                .map_err(io(format!("fsync {}", db_out.display())))?;
        }
        hashes.insert(path, (size, h.finalize().to_hex().to_string()));
    }
    let manifest =
        manifest.ok_or_else(|| corrupt(name, "the archive has no manifest (truncated?)"))?;
    if manifest.format_version > FORMAT_VERSION
        || manifest.schema_version > crate::store::SCHEMA_VERSION
    {
        return Err(BackupError::TooNew {
            name: name.into(),
            format: manifest.format_version,
            schema: manifest.schema_version,
            supported: crate::store::SCHEMA_VERSION,
        });
    }
    for m in &manifest.members {
        match hashes.get(&m.path) {
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
    if !hashes.contains_key(DB_MEMBER) {
        return Err(corrupt(name, "the archive holds no database"));
    }
    let conn = Connection::open_with_flags(db_out, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let result: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if result != "ok" {
        return Err(corrupt(name, format!("integrity_check: {result}")));
    }
    for (table, want) in &manifest.tables {
        let got: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM \"{}\"", table.replace('"', "\"\"")),
            [],
            |r| r.get(0),
        )?;
        if got != *want {
            return Err(corrupt(
                name,
                format!("table {table} has {got} rows, the manifest says {want}"),
            ));
        }
    }
    // Leave a self-contained file: no WAL next to it.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);
    Ok(Verified {
        manifest,
        db: db_out.to_path_buf(),
    })
}

/// Record a verification result in the sidecar (creating it from the manifest if missing).
pub fn record(b: &BackupInfo, outcome: &Result<Verified>) -> Result<()> {
    let check = Check {
        ok: outcome.is_ok(),
        at: crate::util::now(),
        detail: match outcome {
            Ok(v) => format!(
                "checksums, integrity_check and row counts of {} tables ok",
                v.manifest.tables.len()
            ),
            Err(e) => e.to_string(),
        },
    };
    let sidecar = match (super::read_sidecar(&b.path), outcome) {
        (Some(mut s), _) => {
            s.verification = Some(check);
            s
        }
        (None, Ok(v)) => Sidecar {
            manifest: v.manifest.clone(),
            archive_size: std::fs::metadata(&b.path).map(|m| m.len()).unwrap_or(0),
            archive_blake3: hash_file(&b.path).map_err(io("hash archive"))?,
            duration_secs: 0.0,
            verification: Some(check),
            drill: None,
        },
        (None, Err(_)) => return Ok(()),
    };
    super::write_sidecar(&b.path, &sidecar)
}

/// Verify and record, extracting into a scratch directory that is removed after.
pub fn verify(b: &BackupInfo, scratch_parent: &Path) -> Result<Verified> {
    std::fs::create_dir_all(scratch_parent)
        .map_err(io(format!("create {}", scratch_parent.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix(".verify-")
        .tempdir_in(scratch_parent)
        .map_err(io(format!(
            "create scratch dir in {}",
            scratch_parent.display()
        )))?;
    let outcome = check(b, &scratch.path().join("aica_sys.db"));
    record(b, &outcome)?;
    outcome
}
