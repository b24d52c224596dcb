//! `backup create`: one read snapshot of the live database, streamed page by
//! page (sqlite_dbpage) through tar into a multi-threaded zstd encoder, hashed on
//! the way; never a file copy, never an uncompressed staging copy.

use super::{
    BackupError, BackupInfo, BackupLock, Cancel, DB_MEMBER, EXT, FORMAT_VERSION, Kind,
    MANIFEST_MEMBER, Manifest, Member, Result, Sidecar, io,
};
use crate::config::Loaded;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to take and how.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub kind: Kind,
    pub note: Option<String>,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
    /// Checked at every page: a cancelled create removes its temporary file.
    pub cancel: Cancel,
}

/// A backup that was written, and what happened to its mirror copy.
#[derive(Debug, Clone)]
pub struct Created {
    pub info: BackupInfo,
    /// Why the mirror copy failed (the local backup is complete regardless).
    pub mirror_error: Option<String>,
}

/// Counts and hashes bytes on their way to the file.
pub(crate) struct Hashing<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The error a cancelled page read returns.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
struct Cancelled;

/// Reads database pages in order from `sqlite_dbpage`, hashing them.
struct Pages<'a> {
    rows: rusqlite::Rows<'a>,
    page_size: usize,
    buf: Vec<u8>,
    pos: usize,
    hasher: blake3::Hasher,
    bar: Option<indicatif::ProgressBar>,
    cancel: Cancel,
}

impl Read for Pages<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.cancel.is_cancelled() {
                // Not ErrorKind::Interrupted: io::copy would retry that forever.
                return Err(std::io::Error::other(Cancelled));
            }
            let row = self.rows.next().map_err(std::io::Error::other)?;
            let Some(row) = row else { return Ok(0) };
            let data = row.get_ref(0).map_err(std::io::Error::other)?;
            let bytes = data.as_blob().map_err(std::io::Error::other)?;
            if bytes.len() != self.page_size {
                return Err(std::io::Error::other(format!(
                    "page of {} bytes, expected {}",
                    bytes.len(),
                    self.page_size
                )));
            }
            self.buf.clear();
            self.buf.extend_from_slice(bytes);
            self.hasher.update(bytes);
            self.pos = 0;
            if let Some(b) = &self.bar {
                b.inc(1);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub(crate) fn header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64);
    h.set_entry_type(tar::EntryType::Regular);
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    members: &mut Vec<Member>,
    path: &str,
    bytes: &[u8],
) -> Result<()> {
    tar.append(&header(path, bytes.len() as u64), bytes)
        .map_err(io(format!("write {path} into the archive")))?;
    members.push(Member {
        path: path.into(),
        size: bytes.len() as u64,
        blake3: blake3::hash(bytes).to_hex().to_string(),
    });
    Ok(())
}

fn unique_name(dir: &Path, kind: Kind) -> String {
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let suffix = if kind == Kind::Manual {
        String::new()
    } else {
        format!("-{}", kind.as_str())
    };
    let mut name = format!("aica-{stamp}{suffix}.{EXT}");
    let mut i = 2;
    while dir.join(&name).exists() || super::sidecar_path(&dir.join(&name)).exists() {
        name = format!("aica-{stamp}{suffix}-{i}.{EXT}");
        i += 1;
    }
    name
}

/// Keys of `.env.production` (values are never read into the backup).
fn dotenv_keys(base: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(base.join(".env.production")) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            l.trim_start_matches("export ")
                .split_once('=')
                .map(|(k, _)| k.trim().to_string())
        })
        .collect()
}

fn uploads(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            // Two such names would be stored under one lossy name: skip, and say so.
            tracing::warn!(path = %e.path().display(),
                "upload skipped: its name is not valid UTF-8; rename it to keep it in backups");
            continue;
        };
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            uploads(&e.path(), &format!("{rel}/{name}"), out);
        } else if ft.is_file() {
            out.push((format!("{rel}/{name}"), e.path()));
        } else {
            tracing::warn!(path = %e.path().display(),
                "upload skipped: not a regular file or directory (a symlink, FIFO or device)");
        }
    }
}

/// Take a backup of `db` under `lock`. The archive is complete and fsynced,
/// then its sidecar is written, then the archive is renamed into place: a
/// listed archive always has its sidecar, and whatever an interruption leaves
/// (a temporary file, an orphan sidecar) is removed by the next lock holder.
pub fn create_locked(
    lock: &BackupLock,
    l: &Loaded,
    db: &crate::store::Backend,
    opts: &CreateOptions,
) -> Result<Created> {
    let start = Instant::now();
    let dir = lock.dir();
    if let crate::store::Backend::Sqlite(db) = db
        && !db.is_file()
    {
        return Err(BackupError::Refused(format!(
            "no database at {}; start aica once ('make up') or check database.url",
            db.display()
        )));
    }
    let name = unique_name(dir, opts.kind);
    let final_path = dir.join(&name);
    let tmp_path = dir.join(format!(".{name}.tmp"));
    let written = write_archive(l, db, opts, &name, &tmp_path, start).and_then(
        |(manifest, archive_size, archive_blake3)| {
            let sidecar = Sidecar {
                manifest,
                archive_size,
                archive_blake3,
                duration_secs: start.elapsed().as_secs_f64(),
                verification: None,
                drill: None,
                mirror: None,
            };
            super::write_sidecar(lock, &final_path, &sidecar)?;
            std::fs::rename(&tmp_path, &final_path).map_err(|e| {
                let _ = std::fs::remove_file(super::sidecar_path(&final_path));
                io(format!("rename into {}", final_path.display()))(e)
            })?;
            Ok(sidecar)
        },
    );
    let mut sidecar = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    let mut mirror_error = None;
    if let Some(mirror) = super::dest::mirror(&l.settings, &l.paths.base) {
        let same = super::dest::mirror_dir(&l.settings, &l.paths.base)
            .and_then(|m| m.canonicalize().ok())
            .is_some_and(|m| dir.canonicalize().is_ok_and(|d| d == m));
        let put = if same {
            Err(BackupError::Refused(format!(
                "backup.mirror_dir ({}) is the backup directory itself: there is no second copy",
                mirror.describe()
            )))
        } else {
            mirror.put(&final_path)
        };
        let check = match put {
            Ok(()) => {
                crate::check::Check::pass("mirror", format!("copied to {}", mirror.describe()))
            }
            Err(e) => {
                tracing::warn!(backup = name, mirror = mirror.describe(), error = %e, "mirror copy failed; the local backup is complete");
                mirror_error = Some(e.to_string());
                crate::check::Check::fail(
                    "mirror",
                    e.to_string(),
                    format!(
                        "free space on or remount {}, then 'aica backup create' again",
                        mirror.describe()
                    ),
                )
            }
        };
        sidecar.mirror = Some(check);
        super::write_sidecar(lock, &final_path, &sidecar)?;
    }
    Ok(Created {
        info: super::find(dir, Some(&name))?,
        mirror_error,
    })
}

/// An archive being written: tar over multi-threaded zstd over a hashing file writer.
pub(crate) struct ArchiveWriter {
    pub(crate) tar: tar::Builder<zstd::Encoder<'static, Hashing<BufWriter<File>>>>,
    pub(crate) members: Vec<Member>,
}

/// What the database part of an archive recorded, for the manifest.
pub(crate) struct DbFacts {
    pub engine: &'static str,
    pub source: String,
    pub server_version: Option<String>,
    pub schema_version: i64,
    pub page_size: u64,
    pub page_count: u64,
    pub tables: BTreeMap<String, i64>,
}

fn open_archive(l: &Loaded, tmp_path: &Path) -> Result<ArchiveWriter> {
    // Owner-only: an archive holds all the data and the API keys' hashes.
    let file = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
        0o600,
    )
    .open(tmp_path)
    .map_err(io(format!("create {}", tmp_path.display())))?;
    let out = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
        written: 0,
    };
    let mut enc =
        zstd::Encoder::new(out, l.settings.backup.zstd_level).map_err(io("start zstd"))?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    enc.multithread(workers).map_err(io("start zstd workers"))?;
    Ok(ArchiveWriter {
        tar: tar::Builder::new(enc),
        members: Vec::new(),
    })
}

/// The SQLite database: every page of one read snapshot, with its row counts.
fn append_sqlite(
    w: &mut ArchiveWriter,
    db: &Path,
    opts: &CreateOptions,
    name: &str,
) -> Result<DbFacts> {
    let tar = &mut w.tar;
    // One read transaction: every page and every count below come from one snapshot.
    let mut conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
    let page_size = tx.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))? as u64;
    let page_count = tx.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))? as u64;
    let schema_version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut tables = BTreeMap::new();
    {
        let names: Vec<String> = tx
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for t in names {
            let n: i64 = tx.query_row(
                &format!("SELECT COUNT(*) FROM \"{}\"", t.replace('"', "\"\"")),
                [],
                |r| r.get(0),
            )?;
            tables.insert(t, n);
        }
    }
    {
        let mut stmt = tx.prepare("SELECT data FROM sqlite_dbpage('main') ORDER BY pgno")?;
        let bar = progress_bar(opts, page_count, "pages", name);
        let mut pages = Pages {
            rows: stmt.query([])?,
            page_size: page_size as usize,
            buf: Vec::new(),
            pos: 0,
            hasher: blake3::Hasher::new(),
            bar,
            cancel: opts.cancel.clone(),
        };
        let size = page_size * page_count;
        tar.append(&header(DB_MEMBER, size), &mut pages).map_err(|e| match e.kind() {
            _ if e.get_ref().is_some_and(|i| i.is::<Cancelled>()) => BackupError::Cancelled,
            std::io::ErrorKind::UnexpectedEof => BackupError::Refused("the database changed size during the snapshot; this is a bug, please report it".into()),
            _ => io("stream database pages into the archive")(e),
        })?;
        if let Some(b) = &pages.bar {
            b.finish_and_clear();
        }
        w.members.push(Member {
            path: DB_MEMBER.into(),
            size,
            blake3: pages.hasher.finalize().to_hex().to_string(),
        });
    }
    tx.commit()?;
    drop(conn);
    Ok(DbFacts {
        engine: "sqlite",
        source: db.display().to_string(),
        server_version: None,
        schema_version,
        page_size,
        page_count,
        tables,
    })
}

/// A progress bar on a terminal when asked for.
pub(crate) fn progress_bar(
    opts: &CreateOptions,
    len: u64,
    unit: &str,
    name: &str,
) -> Option<indicatif::ProgressBar> {
    (opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let b = indicatif::ProgressBar::new(len);
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{eta}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(format!("backup {name}"));
        b
    })
}

fn write_archive(
    l: &Loaded,
    db: &crate::store::Backend,
    opts: &CreateOptions,
    name: &str,
    tmp_path: &Path,
    start: Instant,
) -> Result<(Manifest, u64, String)> {
    let mut w = open_archive(l, tmp_path)?;
    let facts = match db {
        crate::store::Backend::Sqlite(path) => append_sqlite(&mut w, path, opts, name)?,
        crate::store::Backend::Postgres(url) => {
            super::pg::append_dump(&mut w, url, opts, name, tmp_path)?
        }
    };
    let ArchiveWriter {
        mut tar,
        mut members,
    } = w;

    let toml = l.paths.base.join("aica.toml");
    if let Ok(bytes) = std::fs::read(&toml) {
        append_bytes(&mut tar, &mut members, "config/aica.toml", &bytes)?;
    }
    let secrets_excluded = dotenv_keys(&l.paths.base);
    if !secrets_excluded.is_empty() {
        let listing = format!(
            "# keys of .env.production; values are not in the backup\n{}\n",
            secrets_excluded.join("\n")
        );
        append_bytes(
            &mut tar,
            &mut members,
            "config/env.production.keys",
            listing.as_bytes(),
        )?;
    }
    let mut files = Vec::new();
    uploads(&l.paths.data.join("uploads"), "uploads", &mut files);
    for (rel, path) in files {
        let bytes = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
        append_bytes(&mut tar, &mut members, &rel, &bytes)?;
    }

    let now = time::OffsetDateTime::now_utc();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        engine: facts.engine.into(),
        server_version: facts.server_version,
        created_at: crate::util::fmt_time(now),
        created_unix: now.unix_timestamp(),
        kind: opts.kind,
        note: opts.note.clone(),
        source_path: facts.source,
        app_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: facts.schema_version,
        page_size: facts.page_size,
        page_count: facts.page_count,
        tables: facts.tables,
        members: members.clone(),
        secrets_excluded,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| io("encode manifest")(std::io::Error::other(e)))?;
    tar.append(&header(MANIFEST_MEMBER, json.len() as u64), json.as_slice())
        .map_err(io("write manifest"))?;
    let enc = tar.into_inner().map_err(io("finish tar"))?;
    let mut out = enc.finish().map_err(io("finish zstd"))?;
    out.flush().map_err(io("flush archive"))?;
    let Hashing {
        inner,
        hasher,
        written,
    } = out;
    let file = inner
        .into_inner()
        .map_err(|e| io("flush archive")(e.into_error()))?;
    file.sync_all()
        .map_err(io(format!("fsync {}", tmp_path.display())))?;
    tracing::info!(
        backup = name,
        bytes = written,
        secs = start.elapsed().as_secs_f64(),
        "backup written"
    );
    Ok((manifest, written, hasher.finalize().to_hex().to_string()))
}

/// Take a backup of the configured database under `lock`.
pub fn create(lock: &BackupLock, l: &Loaded, opts: &CreateOptions) -> Result<Created> {
    create_locked(lock, l, &l.paths.backend, opts)
}
