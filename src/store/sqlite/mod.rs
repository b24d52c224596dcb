//! The SQLite store: a pooled, WAL-mode embedded database (one process).

mod keys;
mod queries;
pub mod schema;

use super::{
    BackendInfo, ContentStore, FileMaintenance, KeyStore, Result, SchemaStatus, StoreError, seed,
};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Opens pooled connections with the pragmas every connection needs.
#[derive(Debug)]
struct Manager {
    path: PathBuf,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = rusqlite::Error;

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        configure(&conn)?;
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        conn.execute_batch("")
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // 1 MiB page cache per pooled connection (SQLite's default is 2 MiB): the
    // OS page cache holds the file anyway, and RSS stays bounded with the pool.
    // A WAL that grew under sustained load is cut back to 16 MiB when it resets.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -1024; \
         PRAGMA journal_size_limit = 16777216;",
    )?;
    Ok(())
}

/// The SQLite implementation of [`ContentStore`].
pub struct SqliteStore {
    pool: r2d2::Pool<Manager>,
    path: PathBuf,
    /// (device, inode) of the database file when it was opened.
    identity: Option<(u64, u64)>,
}

fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Reads the schema from the database file (not a constant like `SELECT 1`).
const PING_SQL: &str = "SELECT count(*) FROM sqlite_schema";

impl SqliteStore {
    /// Create (if needed), migrate and, when `seed_demo` and empty, fill the database.
    pub fn open(path: &Path, pool_size: u32, seed_demo: bool) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Invalid(format!(
                    "cannot create database directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        {
            let mut conn = Connection::open(path)?;
            configure(&conn)?;
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if mode != "wal" {
                tracing::warn!(mode, "database is not in WAL mode");
            }
            schema::migrate(&mut conn)?;
            if seed_demo {
                queries::seed_if_empty(&mut conn, seed::demo)?;
            }
        }
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(pool_size)) // idle connections let /health ping without a thread hop
            .connection_timeout(Duration::from_secs(10))
            .build(Manager {
                path: path.to_path_buf(),
            })?;
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
            identity: file_identity(path).ok(),
        })
    }

    /// Open an existing database read-only for diagnosis, without migrating.
    pub fn quick_check_file(path: &Path) -> Result<Option<String>> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        quick_check(&conn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>> {
        Ok(self.pool.get()?)
    }

    /// Run `f` with a connection, recording its duration in the DB histogram.
    pub(super) fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut c = self.conn()?;
        let out = f(&mut c);
        metrics::histogram!("aica_db_query_duration_seconds", "op" => op)
            .record(start.elapsed().as_secs_f64());
        out
    }
}

fn quick_check(conn: &Connection) -> Result<Option<String>> {
    let first: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    Ok(if first == "ok" { None } else { Some(first) })
}

impl ContentStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn info(&self) -> BackendInfo {
        let state = self.pool.state();
        BackendInfo {
            backend: "sqlite",
            location: self.path.display().to_string(),
            version: rusqlite::version().to_string(),
            pool_max: self.pool.max_size(),
            pool_open: state.connections,
            pool_idle: state.idle_connections,
            pool_waiting: 0,
        }
    }

    fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        self.with("ping", |c| {
            Ok(c.prepare_cached(PING_SQL)?
                .query_row([], |r| r.get::<_, i64>(0))?)
        })?;
        Ok(start.elapsed())
    }

    fn try_ping(&self) -> Option<Result<Duration>> {
        let start = Instant::now();
        let conn = self.pool.try_get()?;
        let res = conn
            .prepare_cached(PING_SQL)
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)));
        Some(res.map(|_| start.elapsed()).map_err(StoreError::from))
    }

    fn schema_status(&self) -> Result<SchemaStatus> {
        let current = self.with("schema", |c| Ok(schema::current_version(c)?))?;
        Ok(SchemaStatus {
            current,
            expected: schema::SCHEMA_VERSION,
        })
    }

    fn list_articles(
        &self,
        f: &super::ArticleFilter,
    ) -> Result<super::Page<super::ArticleSummary>> {
        self.with("list_articles", |c| queries::list_articles(c, f))
    }
    fn get_article(&self, slug: &str) -> Result<Option<super::Article>> {
        self.with("get_article", |c| queries::get_article(c, slug))
    }
    fn create_article(&self, i: &super::ArticleInput) -> Result<super::Article> {
        self.with("write_article", |c| queries::create_article(c, i))
    }
    fn update_article(
        &self,
        slug: &str,
        i: &super::ArticleInput,
    ) -> Result<Option<super::Article>> {
        self.with("write_article", |c| queries::update_article(c, slug, i))
    }
    fn delete_article(&self, slug: &str) -> Result<bool> {
        self.with("write_article", |c| {
            queries::delete(c, "articles", "slug", &slug)
        })
    }
    fn list_trends(&self, f: &super::TrendFilter) -> Result<super::Page<super::Trend>> {
        self.with("list_trends", |c| queries::list_trends(c, f))
    }
    fn create_trend(&self, i: &super::TrendInput) -> Result<super::Trend> {
        self.with("write_trend", |c| queries::create_trend(c, i))
    }
    fn update_trend(&self, id: i64, i: &super::TrendInput) -> Result<Option<super::Trend>> {
        self.with("write_trend", |c| queries::update_trend(c, id, i))
    }
    fn delete_trend(&self, id: i64) -> Result<bool> {
        self.with("write_trend", |c| queries::delete(c, "trends", "id", &id))
    }
    fn list_newsletters(
        &self,
        f: &super::NewsletterFilter,
    ) -> Result<super::Page<super::Newsletter>> {
        self.with("list_newsletters", |c| queries::list_newsletters(c, f))
    }
    fn create_newsletter(&self, i: &super::NewsletterInput) -> Result<super::Newsletter> {
        self.with("write_newsletter", |c| queries::create_newsletter(c, i))
    }
    fn update_newsletter(
        &self,
        id: i64,
        i: &super::NewsletterInput,
    ) -> Result<Option<super::Newsletter>> {
        self.with("write_newsletter", |c| queries::update_newsletter(c, id, i))
    }
    fn delete_newsletter(&self, id: i64) -> Result<bool> {
        self.with("write_newsletter", |c| {
            queries::delete(c, "newsletters", "id", &id)
        })
    }
    fn dashboard(&self) -> Result<super::Dashboard> {
        self.with("dashboard", queries::dashboard)
    }
    fn claim_run(&self, job: &str, tick: &str) -> Result<bool> {
        let replica = format!("pid {}", std::process::id());
        self.with("jobs", |c| queries::claim_run(c, job, tick, &replica))
    }
    fn finish_run(&self, job: &str, tick: &str, outcome: &str, detail: &str) -> Result<()> {
        self.with("jobs", |c| {
            queries::finish_run(c, job, tick, outcome, detail)
        })
    }
    fn recent_runs(&self, job: &str, limit: u32) -> Result<Vec<super::JobRun>> {
        self.with("jobs", |c| queries::recent_runs(c, job, limit))
    }
    fn file_maintenance(&self) -> Option<&dyn FileMaintenance> {
        Some(self)
    }
}

impl KeyStore for SqliteStore {
    fn create_key(&self, k: &super::NewApiKey) -> Result<()> {
        self.with("keys", |c| keys::create(c, k))
    }
    fn find_key(&self, hash: &str) -> Result<Option<super::ApiKey>> {
        self.with("keys", |c| keys::find(c, hash))
    }
    fn list_keys(&self) -> Result<Vec<super::ApiKey>> {
        self.with("keys", keys::list)
    }
    fn revoke_key(&self, name: &str) -> Result<bool> {
        self.with("keys", |c| keys::revoke(c, name))
    }
    fn audit(&self, e: &super::AuditEntry) -> Result<()> {
        self.with("audit", |c| keys::audit(c, e))
    }
    fn audit_aggregated(&self, e: &super::AuditEntry) -> Result<()> {
        self.with("audit", |c| keys::audit_aggregated(c, e))
    }
    fn recent_audit(&self, limit: u32) -> Result<Vec<super::AuditEntry>> {
        self.with("audit", |c| keys::recent_audit(c, limit))
    }
}

impl FileMaintenance for SqliteStore {
    fn quick_check(&self) -> Result<Option<String>> {
        self.with("quick_check", |c| quick_check(c))
    }
    fn checkpoint(&self) -> Result<()> {
        self.with("checkpoint", |c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
    fn size_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }
    fn file_replaced(&self) -> Result<Option<String>> {
        let Some(opened) = self.identity else {
            return Ok(None);
        };
        let p = self.path.display();
        Ok(match file_identity(&self.path) {
            Ok(now) if now == opened => None,
            Ok(_) => Some(format!(
                "{p} is not the file this server opened (it was replaced, e.g. by a restore or a copy); \
                 the server still uses the old one: restart aica"
            )),
            Err(e) => Some(format!(
                "{p} cannot be read ({e}); the server still uses the file it opened, \
                 which was deleted or moved: restore it or restart aica"
            )),
        })
    }
}

/// SQLite errors are classified here, so nothing above the store sees rusqlite.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode as C;
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                C::DatabaseBusy | C::DatabaseLocked => StoreError::Busy(e.to_string()),
                C::CannotOpen
                | C::NotADatabase
                | C::ReadOnly
                | C::DiskFull
                | C::SystemIoFailure
                | C::PermissionDenied => StoreError::Unavailable(e.to_string()),
                _ => StoreError::Internal(e.to_string()),
            },
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> StoreError {
        StoreError::Unavailable(format!("no database connection: {e}"))
    }
}
