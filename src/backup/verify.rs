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

/// Hashes every byte read through it.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Write the database member to `out` while hashing it; decompression stays on
/// this thread, hashing and writing run on another (the two overlap). Fsyncs.
fn extract(entry: &mut impl Read, out: &Path, name: &str) -> Result<(u64, String)> {
    let file = std::fs::File::create(out).map_err(io(format!("create {}", out.display())))?;
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
                read_err = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .join()
        .map_err(|_| BackupError::Refused("the extraction thread panicked".into()))?;
    if let Some(e) = read_err {
        return Err(corrupt(name, format!("{DB_MEMBER}: {e}")));
    }
    written.map_err(io(format!("write {}", out.display())))
}

/// Verify `b`, extracting its database to `db_out` (fsynced). Does not record.
pub fn check(b: &BackupInfo, db_out: &Path) -> Result<Verified> {
    let name = b.name.as_str();
    let sidecar = super::read_sidecar(&b.path);
    if let Some(s) = &sidecar
        && (s.manifest.format_version > FORMAT_VERSION
            || s.manifest.schema_version > crate::store::SCHEMA_VERSION)
    {
        return Err(BackupError::TooNew {
            name: name.into(),
            format: s.manifest.format_version,
            schema: s.manifest.schema_version,
            supported: crate::store::SCHEMA_VERSION,
        });
    }
    let expected_hash = sidecar.as_ref().map(|s| s.archive_blake3.clone());
    let file = std::fs::File::open(&b.path).map_err(io(format!("open {}", b.path.display())))?;
    // The archive is hashed as it is decompressed: one read of the file.
    let reader = HashingReader {
        inner: file,
        hasher: blake3::Hasher::new(),
    };
    let dec = zstd::Decoder::new(reader)
        .map_err(|e| corrupt(name, format!("not a zstd archive: {e}")))?;
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
        let (size, hash) = if path == DB_MEMBER {
            extract(&mut entry, db_out, name)?
        } else {
            let mut h = blake3::Hasher::new();
            let size = std::io::copy(&mut entry, &mut h)
                .map_err(|e| corrupt(name, format!("{path}: {e}")))?;
            (size, h.finalize().to_hex().to_string())
        };
        hashes.insert(path, (size, hash));
    }
    // Hash the rest of the file (tar padding, zstd epilogue) and compare.
    let mut rest = archive.into_inner().finish().into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(io(format!("read {}", b.path.display())))?;
    let actual = rest.hasher.finalize().to_hex().to_string();
    if let Some(expected) = expected_hash
        && actual != expected
    {
        return Err(corrupt(
            name,
            format!("archive checksum {actual} differs from the recorded {expected}"),
        ));
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
