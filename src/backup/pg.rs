//! Backups of the PostgreSQL store with the same archive, sidecar and
//! guarantees as SQLite's: `pg_dump --format=custom` of one exported snapshot
//! (the manifest's row counts come from the same snapshot), verified by a
//! restore into a scratch database whose row counts must match, restored by
//! building a fresh database and swapping names in one transaction.

use super::snapshot::{ArchiveWriter, CreateOptions, DbFacts, header};
use super::{BackupError, Manifest, Member, PG_DUMP_MEMBER, Result, io};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio_postgres::NoTls;

fn refused(m: impl Into<String>) -> BackupError {
    BackupError::Refused(m.into())
}

fn pg_err(what: &str) -> impl FnOnce(tokio_postgres::Error) -> BackupError + '_ {
    move |e| {
        refused(format!(
            "PostgreSQL: {what}: {}",
            crate::store::postgres::message(&e)
        ))
    }
}

fn config(url: &str) -> Result<tokio_postgres::Config> {
    let mut c = crate::store::postgres::parse_url(url).map_err(|e| refused(e.to_string()))?;
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(10));
    }
    c.application_name("aica-backup");
    Ok(c)
}

/// Run `f` on the runtime this blocking thread belongs to (or, outside any
/// runtime, on a small one of its own).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(f),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds")
            .block_on(f),
    }
}

async fn connect(c: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, conn) = c.connect(NoTls).await.map_err(|e| {
        refused(format!(
            "cannot connect to PostgreSQL at {}: {}",
            crate::store::postgres::describe(c),
            crate::store::postgres::message(&e)
        ))
    })?;
    tokio::spawn(conn);
    Ok(client)
}

/// Major version of a `server_version` or `--version` text (`15.20 (Debian…)` → 15).
fn major(v: &str) -> Option<u32> {
    v.split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// The client tool `name` able to talk to a server of `server_major`: the
/// matching `/usr/lib/postgresql/<major>/bin`, else the newest installed, else
/// PATH; refused (naming both versions) when older than the server.
fn tool(name: &str, server_version: &str) -> Result<PathBuf> {
    let want = major(server_version).unwrap_or(0);
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m: u32 = e.file_name().to_str()?.parse().ok()?;
            let p = e.path().join("bin").join(name);
            p.exists().then_some((m, p))
        })
        .collect();
    candidates.sort();
    let path = candidates
        .iter()
        .find(|(m, _)| *m == want)
        .or(candidates.last())
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| PathBuf::from(name));
    let out = Command::new(&path).arg("--version").output().map_err(|e| {
        refused(format!(
            "{name} is needed for PostgreSQL backups and was not found ({e}); install the PostgreSQL {want} client tools (Debian: apt-get install postgresql-client-{want})"
        ))
    })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let have = major(&text).unwrap_or(0);
    if have < want {
        return Err(refused(format!(
            "{name} is version {have} ({text}) but the server runs PostgreSQL {server_version}: a dump tool older than the server cannot read it; install the PostgreSQL {want} client tools"
        )));
    }
    Ok(path)
}

/// libpq connection options without the password (which goes in PGPASSWORD,
/// not on a command line that `ps` shows).
fn conninfo(c: &tokio_postgres::Config, dbname: &str) -> (String, Option<String>) {
    let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut parts = vec![format!("dbname={}", q(dbname))];
    if let Some(h) = c.get_hosts().first() {
        let h = match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        parts.push(format!("host={}", q(&h)));
    }
    if let Some(p) = c.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = c.get_user() {
        parts.push(format!("user={}", q(u)));
    }
    parts.push("connect_timeout=10".into());
    let pw = c
        .get_password()
        .map(|p| String::from_utf8_lossy(p).to_string());
    (parts.join(" "), pw)
}

/// Run a PostgreSQL client tool; the error carries the end of its stderr.
fn run_tool(mut cmd: Command, pw: Option<&str>, what: &str, cancel: &super::Cancel) -> Result<()> {
    cmd.env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::null());
    if let Some(p) = pw {
        cmd.env("PGPASSWORD", p);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io(format!("start {what}")))?;
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.take(64 * 1024).read_to_string(&mut s);
        }
        s
    });
    let status = loop {
        if cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BackupError::Cancelled);
        }
        match child.try_wait().map_err(io(format!("wait for {what}")))? {
            Some(s) => break s,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let err = reader.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(refused(format!(
            "{what} failed ({status}): {}",
            tail.join(" | ")
        )));
    }
    Ok(())
}

/// Base tables of aica's schema, with row counts, as this transaction sees them.
async fn counts(tx: &tokio_postgres::Client) -> Result<BTreeMap<String, i64>> {
    let names: Vec<String> = tx
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .await
        .map_err(pg_err("list tables"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = BTreeMap::new();
    for t in names {
        let n: i64 = tx
            .query_one(
                &format!("SELECT COUNT(*) FROM \"{}\"", t.replace('"', "\"\"")),
                &[],
            )
            .await
            .map_err(pg_err("count rows"))?
            .get(0);
        out.insert(t, n);
    }
    Ok(out)
}

/// Dump the database at `url` into the archive as [`PG_DUMP_MEMBER`]. The dump
/// is spooled next to the archive's temporary file (removed after, or by the
/// next lock holder) because a tar member's size must be known before its bytes.
pub(crate) fn append_dump(
    w: &mut ArchiveWriter,
    url: &str,
    opts: &CreateOptions,
    name: &str,
    tmp_path: &Path,
) -> Result<DbFacts> {
    let cfg = config(url)?;
    let where_ = crate::store::postgres::describe(&cfg);
    let spool = PathBuf::from(format!("{}.pgdump", tmp_path.display()));
    let _cleanup = RemoveOnDrop(spool.clone());
    let (server_version, schema_version, tables) = block_on(async {
        let client = connect(&cfg).await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(pg_err("begin snapshot"))?;
        let snapshot: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(pg_err("export snapshot"))?
            .get(0);
        let server_version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(pg_err("server version"))?
            .get(0);
        let tables = counts(&client).await?;
        let schema_version = if tables.contains_key("aica_schema") {
            client
                .query_one("SELECT COALESCE(MAX(version), 0) FROM aica_schema", &[])
                .await
                .map_err(pg_err("schema version"))?
                .get(0)
        } else {
            0
        };
        // The exporting transaction stays open while pg_dump reads its snapshot.
        let dump = tool("pg_dump", &server_version)?;
        let (info, pw) = conninfo(&cfg, cfg.get_dbname().unwrap_or("postgres"));
        let mut cmd = Command::new(dump);
        cmd.args([
            "--format=custom",
            "--compress=0",
            "--no-owner",
            "--no-privileges",
        ])
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--file={}", spool.display()))
        .arg(format!("--dbname={info}"));
        let cancel = opts.cancel.clone();
        let res =
            tokio::task::spawn_blocking(move || run_tool(cmd, pw.as_deref(), "pg_dump", &cancel))
                .await
                .map_err(|e| refused(format!("pg_dump task: {e}")))?;
        let _ = client.batch_execute("COMMIT").await;
        res?;
        Ok::<_, BackupError>((server_version, schema_version, tables))
    })?;
    let file = std::fs::File::open(&spool).map_err(io(format!("open {}", spool.display())))?;
    let size = file
        .metadata()
        .map_err(io(format!("stat {}", spool.display())))?
        .len();
    let mut hashed = HashingReader {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
        cancel: opts.cancel.clone(),
    };
    w.tar
        .append(&header(PG_DUMP_MEMBER, size), &mut hashed)
        .map_err(|e| {
            if opts.cancel.is_cancelled() {
                BackupError::Cancelled
            } else {
                io("write the dump into the archive")(e)
            }
        })?;
    w.members.push(Member {
        path: PG_DUMP_MEMBER.into(),
        size,
        blake3: hashed.hasher.finalize().to_hex().to_string(),
    });
    tracing::info!(backup = name, database = %where_, bytes = size, "PostgreSQL dump archived");
    Ok(DbFacts {
        engine: "postgres",
        source: where_,
        server_version: Some(server_version),
        schema_version,
        page_size: 0,
        page_count: 0,
        tables,
    })
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hasher: blake3::Hasher,
    cancel: super::Cancel,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A database created on the server for a verification, a drill or a
/// restore; dropped on drop unless [`Scratch::keep`] was called.
pub struct Scratch {
    server: tokio_postgres::Config,
    pub name: String,
    /// A URL for the scratch database (with the server's credentials).
    pub url: String,
    keep: bool,
}

impl Scratch {
    /// Keep the database (it became the live one).
    pub fn keep(mut self) -> String {
        self.keep = true;
        self.name.clone()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let (cfg, name) = (self.server.clone(), self.name.clone());
        // Drop may run anywhere: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let c = connect(&cfg).await.ok()?;
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote(&name)
                ))
                .await
                .ok()
            })
        })
        .join();
    }
}

/// `url` with its database replaced by `db`.
fn url_for(url: &str, db: &str) -> Result<String> {
    let mut u = url::Url::parse(url).map_err(|e| refused(format!("database.url: {e}")))?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

/// Restore the dump at `dump` into a new database `<prefix>_<random>` on the
/// server of `url` and check every table's row count against `manifest`.
/// A count that differs is evidence (corrupt); anything else is an error.
pub fn restore_into_scratch(
    backup: &str,
    url: &str,
    dump: &Path,
    manifest: &Manifest,
    prefix: &str,
    cancel: &super::Cancel,
) -> Result<Scratch> {
    let cfg = config(url)?;
    let admin = admin_config(&cfg, cfg.get_dbname().unwrap_or("postgres"));
    let name = scratch_name(prefix);
    let server_version = block_on(async {
        let c = connect(&admin).await?;
        c.batch_execute(&format!("CREATE DATABASE {}", quote(&name)))
            .await
            .map_err(|e| {
                refused(format!(
                    "cannot create a scratch database to restore into ({e}); the role in database.url needs CREATEDB"
                ))
            })?;
        let v: String = c
            .query_one("SHOW server_version", &[])
            .await
            .map_err(pg_err("server version"))?
            .get(0);
        Ok::<_, BackupError>(v)
    })?;
    let scratch = Scratch {
        server: admin,
        url: url_for(url, &name)?,
        name: name.clone(),
        keep: false,
    };
    let restore = tool("pg_restore", &server_version)?;
    let (info, pw) = conninfo(&cfg, &name);
    let mut cmd = Command::new(restore);
    cmd.args([
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
    ])
    .arg(format!("--dbname={info}"))
    .arg(dump);
    run_tool(cmd, pw.as_deref(), "pg_restore", cancel)?;
    let mut scfg = cfg.clone();
    scfg.dbname(&name);
    let got = block_on(async {
        let c = connect(&scfg).await?;
        counts(&c).await
    })?;
    for (table, want) in &manifest.tables {
        let have = got.get(table).copied();
        if have != Some(*want) {
            return Err(BackupError::Corrupt {
                name: backup.into(),
                detail: format!(
                    "restored table {table} has {} rows, the manifest says {want}",
                    have.map(|n| n.to_string()).unwrap_or_else(|| "no".into())
                ),
            });
        }
    }
    Ok(scratch)
}

/// What a PostgreSQL restore did.
#[derive(Debug, Clone)]
pub struct Swapped {
    /// The live database's name (now holding the restored data).
    pub database: String,
    /// The name the replaced database was kept under (`None`: there was none).
    pub previous: Option<String>,
}

fn quote(n: &str) -> String {
    format!("\"{}\"", n.replace('"', "\"\""))
}

/// The maintenance connection of the server of `cfg` (not its database, which
/// is renamed while we are connected).
fn admin_config(cfg: &tokio_postgres::Config, live: &str) -> tokio_postgres::Config {
    let mut admin = cfg.clone();
    admin.dbname(if live == "postgres" {
        "template1"
    } else {
        "postgres"
    });
    admin
}

/// A connection to the maintenance database of the server of `url`, and the
/// name of the live database.
async fn admin(url: &str) -> Result<(tokio_postgres::Client, String)> {
    let cfg = config(url)?;
    let live = cfg.get_dbname().unwrap_or("postgres").to_string();
    Ok((connect(&admin_config(&cfg, &live)).await?, live))
}

/// Take this session's lock on restoring `live`; `false` when a restore holds it.
async fn restore_lock(c: &tokio_postgres::Client, live: &str) -> Result<bool> {
    Ok(c.query_one(
        "SELECT pg_try_advisory_lock(hashtext('aica restore ' || $1))",
        &[&live],
    )
    .await
    .map_err(pg_err("restore lock"))?
    .get(0))
}

/// Held for the whole of a restore: one restore per database at a time,
/// whichever machine or directory it runs from (a session advisory lock on
/// the server, released when this is dropped or the process dies).
pub struct RestoreGuard {
    _client: tokio_postgres::Client,
}

pub fn restore_guard(url: &str) -> Result<RestoreGuard> {
    block_on(async {
        let (c, live) = admin(url).await?;
        if !restore_lock(&c, &live).await? {
            return Err(refused(format!(
                "another restore of database {live:?} is running (from this or another machine); wait for it to finish"
            )));
        }
        Ok(RestoreGuard { _client: c })
    })
}

/// Sessions other than ours on the database of `url`: `(count, their application names)`.
pub fn connected_sessions(url: &str) -> Result<(i64, String)> {
    block_on(async {
        let (c, live) = admin(url).await?;
        let r = c
            .query_one(
                "SELECT COUNT(*), COALESCE(string_agg(DISTINCT COALESCE(NULLIF(application_name, ''), '?') || '@' || COALESCE(client_addr::text, 'local'), ', '), '') \
                 FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&live],
            )
            .await
            .map_err(pg_err("list sessions"))?;
        Ok((r.get(0), r.get(1)))
    })
}

/// Marks a live database whose new connections a restore refused: the
/// comment holds the connection limit to put back if the restore dies.
const RESTORING: &str = "aica: restore in progress; connection limit was ";

/// What the switch copies from the replaced database to the restored one
/// (a dump holds neither): owner, connection limit, access rights, settings.
async fn properties(c: &tokio_postgres::Client, db: &str) -> Result<Vec<String>> {
    let Some(r) = c
        .query_opt(
            "SELECT pg_get_userbyid(datdba)::text, datconnlimit, COALESCE(datacl::text[], '{}') FROM pg_database WHERE datname = $1",
            &[&db],
        )
        .await
        .map_err(pg_err("read the database's properties"))?
    else {
        return Ok(Vec::new());
    };
    let (owner, acl): (String, Vec<String>) = (r.get(0), r.get(2));
    let mut out = vec![format!("OWNER TO {}", quote(&owner))];
    // A limit an interrupted restore set to 0 is not the database's own.
    let limit: i32 = interrupted_limit(c, db).await?.unwrap_or(r.get(1));
    out.push(format!("CONNECTION LIMIT {limit}"));
    let settings = c
        .query(
            "SELECT unnest(setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = $1 AND s.setrole = 0",
            &[&db],
        )
        .await
        .map_err(pg_err("read the database's settings"))?;
    for row in settings {
        let kv: String = row.get(0);
        if let Some((k, v)) = kv.split_once('=') {
            out.push(format!("SET {} = '{}'", quote(k), v.replace('\'', "''")));
        }
    }
    // Access rights: `grantee=privileges/grantor` items; `c` connect, `C` create, `T` temp.
    if !acl.is_empty() {
        out.push("REVOKE ALL ON DATABASE".into());
        for item in &acl {
            let Some((grantee, rest)) = item.split_once('=') else {
                continue;
            };
            let privs = rest.split('/').next().unwrap_or_default();
            let who = if grantee.is_empty() {
                "PUBLIC".to_string()
            } else {
                quote(grantee.trim_matches('"'))
            };
            for (ch, name) in [('c', "CONNECT"), ('C', "CREATE"), ('T', "TEMPORARY")] {
                if privs.contains(ch) {
                    out.push(format!("GRANT {name} ON DATABASE TO {who}"));
                }
            }
        }
    }
    Ok(out)
}

/// The properties of [`properties`] as statements on database `db`.
fn apply(props: &[String], db: &str) -> String {
    let q = quote(db);
    props
        .iter()
        .map(|p| {
            if p == "REVOKE ALL ON DATABASE" {
                format!("REVOKE ALL ON DATABASE {q} FROM PUBLIC;")
            } else if let Some(rest) = p.strip_prefix("GRANT ") {
                let (what, who) = rest
                    .split_once(" ON DATABASE TO ")
                    .unwrap_or((rest, "PUBLIC"));
                format!("GRANT {what} ON DATABASE {q} TO {who};")
            } else {
                format!("ALTER DATABASE {q} {p};")
            }
        })
        .collect()
}

/// Make `restored` the live database of `url`. In one transaction on the
/// maintenance database, the live one is renamed to `<db>_before_<time>` and
/// the restored one into its name, taking over the old one's owner,
/// connection limit, access rights and settings (a missing live database is
/// simply created by the rename). Before that, new connections to the live
/// database are refused (connection limit 0, with the old limit in a comment
/// so an interrupted restore can be repaired: see [`repair`]) and, with
/// `disconnect`, every other session is ended, so nothing writes to the old
/// data after the switch: its safety dump, taken after, holds every
/// acknowledged write. On failure nothing is switched, the restored data is
/// kept as `<db>_restored_<time>` and the error says exactly what to do.
pub fn swap(url: &str, restored: Scratch, disconnect: bool) -> Result<Swapped> {
    let cfg = config(url)?;
    let live = cfg
        .get_dbname()
        .ok_or_else(|| refused("database.url names no database"))?
        .to_string();
    let stamp = crate::util::fmt_time(time::OffsetDateTime::now_utc())
        .replace([':', '-'], "")
        .to_lowercase();
    let previous = format!("{live}_before_{stamp}");
    let kept = format!("{live}_restored_{stamp}");
    let restored_name = restored.name.clone();
    let res = block_on(async {
        let c = connect(&admin_config(&cfg, &live)).await?;
        let props = properties(&c, &live).await?;
        let Some(limit) = props.iter().find_map(|p| {
            p.strip_prefix("CONNECTION LIMIT ")
                .and_then(|n| n.parse::<i32>().ok())
        }) else {
            // Nothing to replace (a new server): the restored database takes the name.
            c.batch_execute(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote(&restored_name),
                quote(&live)
            ))
            .await
            .map_err(pg_err("rename the restored database"))?;
            return Ok(None);
        };
        c.batch_execute(&format!(
            "COMMENT ON DATABASE {q} IS '{RESTORING}{limit}'; ALTER DATABASE {q} CONNECTION LIMIT 0",
            q = quote(&live)
        ))
        .await
        .map_err(pg_err("stop new connections"))?;
        let mut last = String::new();
        for _ in 0..5 {
            if disconnect {
                c.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&live],
                )
                .await
                .map_err(pg_err("end sessions"))?;
            }
            let switched = c
                .batch_execute(&format!(
                    "BEGIN; ALTER DATABASE {old} RENAME TO {prev}; ALTER DATABASE {new} RENAME TO {old}; \
                     {props} ALTER DATABASE {prev} CONNECTION LIMIT {limit}; COMMENT ON DATABASE {prev} IS NULL; COMMIT;",
                    old = quote(&live),
                    prev = quote(&previous),
                    new = quote(&restored_name),
                    props = apply(&props, &live),
                ))
                .await;
            match switched {
                Ok(()) => return Ok(Some(previous.clone())),
                Err(e) => {
                    let _ = c.batch_execute("ROLLBACK").await;
                    last = crate::store::postgres::message(&e);
                    if !disconnect {
                        break;
                    }
                }
            }
        }
        let _ = c
            .batch_execute(&format!(
                "ALTER DATABASE {q} CONNECTION LIMIT {limit}; COMMENT ON DATABASE {q} IS NULL",
                q = quote(&live)
            ))
            .await;
        // Out of the scratch namespace, so no sweep takes it for an orphan.
        let renamed = c
            .batch_execute(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote(&restored_name),
                quote(&kept)
            ))
            .await
            .is_ok();
        let holder = if renamed { &kept } else { &restored_name };
        Err(refused(format!(
            "the restored data is complete in database {holder:?}, but the switch failed: {last}.\nTry: stop every session on {live:?} (kubectl scale deployment aica-sys-backend --replicas=0, or docker compose stop backend) and run the restore again; or switch by hand in psql on the server: ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {};",
            quote(&live),
            quote(&previous),
            quote(holder),
            quote(&live)
        )))
    });
    // Kept either way: live now, or for the switch the error describes.
    restored.keep();
    res.map(|previous| Swapped {
        database: live,
        previous,
    })
}

/// Put back the connection limit of a live database whose restore died
/// after refusing new connections (its comment names the old limit), when no
/// restore of it is running. Returns the repaired database's name.
pub fn repair(url: &str) -> Result<Option<String>> {
    block_on(async {
        let (c, live) = admin(url).await?;
        let Some(limit) = interrupted_limit(&c, &live).await? else {
            return Ok(None);
        };
        if !restore_lock(&c, &live).await? {
            return Ok(None); // a restore is running: the limit is its doing
        }
        c.batch_execute(&format!(
            "ALTER DATABASE {q} CONNECTION LIMIT {limit}; COMMENT ON DATABASE {q} IS NULL",
            q = quote(&live)
        ))
        .await
        .map_err(pg_err("put back the connection limit"))?;
        tracing::warn!(database = %live, limit, "put back the connection limit an interrupted restore left at 0");
        Ok(Some(live))
    })
}

/// The limit a dead restore left in the live database's comment, if any.
async fn interrupted_limit(c: &tokio_postgres::Client, live: &str) -> Result<Option<i32>> {
    let comment: Option<String> = c
        .query_opt(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&live],
        )
        .await
        .map_err(pg_err("read the database's comment"))?
        .and_then(|r| r.get(0));
    Ok(comment
        .as_deref()
        .and_then(|t| t.strip_prefix(RESTORING))
        .and_then(|n| n.trim().parse().ok()))
}

/// Whether the live database refuses connections because a restore died
/// (doctor): `Some(old limit)`.
pub fn interrupted_restore(url: &str) -> Result<Option<i32>> {
    block_on(async {
        let (c, live) = admin(url).await?;
        interrupted_limit(&c, &live).await
    })
}

/// Name of a scratch database: `<prefix>_<pid>_<host>_<random>`, so a later
/// backup operation on the same machine can tell an orphan (its process is
/// gone) from one in use.
fn scratch_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{:06x}",
        std::process::id(),
        host_id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// Who can judge a pid: this host name, boot and pid namespace (containers
/// sharing a host name but not a pid namespace get different ids).
fn host_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    blake3::hash(format!("{host}\n{}\n{ns}", boot.trim()).as_bytes()).to_hex()[..8].to_string()
}

/// Databases an interrupted operation left on the server, and restores' kept
/// copies: `(name, bytes, orphan of a dead process on this machine)`.
pub fn leftovers(url: &str) -> Result<Vec<(String, i64, bool)>> {
    let cfg = config(url)?;
    let live = cfg.get_dbname().unwrap_or("postgres").to_string();
    let rows = block_on(async {
        let c = connect(&admin_config(&cfg, &live)).await?;
        c.query(
            "SELECT datname::text, pg_database_size(datname) FROM pg_database \
             WHERE datname LIKE 'aica\\_verify\\_%' OR datname LIKE $1 OR datname LIKE $2 ORDER BY 1",
            &[
                &format!("{}\\_before\\_%", live.replace('_', "\\_")),
                &format!("{}\\_restored\\_%", live.replace('_', "\\_")),
            ],
        )
        .await
        .map_err(pg_err("list databases"))
    })?;
    let me = host_id();
    Ok(rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let orphan = name
                .strip_prefix("aica_verify_")
                .and_then(|rest| {
                    let mut parts = rest.split('_');
                    let pid: i32 = parts.next()?.parse().ok()?;
                    let host = parts.next()?;
                    Some(host == me && !pid_alive(pid))
                })
                .unwrap_or(false);
            (name, r.get(1), orphan)
        })
        .collect())
}

fn pid_alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Drop the scratch databases of dead processes of this machine; returns their names.
pub fn sweep(url: &str) -> Result<Vec<String>> {
    let orphans: Vec<String> = leftovers(url)?
        .into_iter()
        .filter(|(_, _, orphan)| *orphan)
        .map(|(n, _, _)| n)
        .collect();
    if orphans.is_empty() {
        return Ok(orphans);
    }
    block_on(async {
        let (c, _) = admin(url).await?;
        for n in &orphans {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote(n)
            ))
            .await
            .map_err(pg_err("drop a scratch database"))?;
            tracing::warn!(database = %n, "dropped the scratch database of an interrupted backup operation");
        }
        Ok(orphans)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn majors_and_conninfo() {
        assert_eq!(super::major("15.20 (Debian 15.20-0+deb12u1)"), Some(15));
        assert_eq!(super::major("pg_dump (PostgreSQL) 16.1"), Some(16));
        let c = crate::store::postgres::parse_url("postgres://u:p'w@h:5433/db").unwrap();
        let (info, pw) = super::conninfo(&c, "other");
        assert_eq!(
            info,
            "dbname='other' host='h' port=5433 user='u' connect_timeout=10"
        );
        assert_eq!(pw.as_deref(), Some("p'w"));
    }
}
