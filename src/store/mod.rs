//! The content store: the interface every backend implements, its types and errors.
//!
//! Two backends: [`sqlite`] (embedded, one process) and [`postgres`] (any number
//! of replicas). Everything above this module talks to `dyn ContentStore`, opened
//! by [`open`] from the configured URL. Neither backend's error or connection
//! types cross this boundary: each maps them to [`StoreError`] inside. What only
//! an embedded file has (quick_check, checkpoint, file size) is the optional
//! [`FileMaintenance`] capability; what only a shared server has (change
//! notifications, leader election) is [`postgres::Coordination`].

pub mod keys;
mod model;
mod open;
pub mod postgres;
mod seed;
mod sqlite;

#[cfg(test)]
pub use model::test_strategies;
pub use model::*;
pub use open::{Backend, Opened, open};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use sqlite::schema::SCHEMA_VERSION;

use std::time::Duration;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// Another writer holds the database; retrying shortly may succeed.
    #[error("database busy: {0}")]
    Busy(String),
    /// The database cannot be reached (no pooled connection, file unreadable).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a damaged database; the detail is for the log.
    #[error("database error: {0}")]
    Internal(String),
    #[error(
        "the database schema is version {found}, newer than this aica (version {supported}); upgrade aica or restore an older backup"
    )]
    SchemaTooNew { found: i64, supported: i64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Schema state as seen by the readiness probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SchemaStatus {
    pub current: i64,
    pub expected: i64,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.current == self.expected
    }
}

/// What health, metrics and doctor show about the backend.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackendInfo {
    pub backend: &'static str,
    /// Where the data is: the file, or the server URL with its password redacted.
    pub location: String,
    /// The server's version (PostgreSQL), or the linked library's (SQLite).
    pub version: String,
    pub pool_max: u32,
    /// Connections open in the pool.
    pub pool_open: u32,
    /// Open connections not in use.
    pub pool_idle: u32,
    /// Requests waiting for a connection.
    pub pool_waiting: u32,
}

/// API keys and the audit trail.
pub trait KeyStore: Send + Sync {
    fn create_key(&self, key: &NewApiKey) -> Result<()>;
    /// The unrevoked key with this hash; records its use.
    fn find_key(&self, hash: &str) -> Result<Option<ApiKey>>;
    fn list_keys(&self) -> Result<Vec<ApiKey>>;
    fn revoke_key(&self, name: &str) -> Result<bool>;
    fn audit(&self, entry: &AuditEntry) -> Result<()>;
    /// Audit, counting repeats (same actor, client, action, outcome, minute) in one row.
    fn audit_aggregated(&self, entry: &AuditEntry) -> Result<()>;
    fn recent_audit(&self, limit: u32) -> Result<Vec<AuditEntry>>;
}

/// File-level care of an embedded database (SQLite only).
pub trait FileMaintenance: Send + Sync {
    /// `PRAGMA quick_check`: `Ok(None)` when clean, else the first problem.
    fn quick_check(&self) -> Result<Option<String>>;
    /// Checkpoint and truncate the WAL, as done at shutdown.
    fn checkpoint(&self) -> Result<()>;
    /// Size of the database files on disk in bytes.
    fn size_bytes(&self) -> Result<u64>;
    /// `Some(problem)` when the database file at the configured path is no longer
    /// the one this store has open (deleted, or replaced by a rename).
    fn file_replaced(&self) -> Result<Option<String>>;
}

/// Everything the service needs from a database. Methods block: callers on
/// an async runtime run them on a blocking thread (`AppState::with_store`).
pub trait ContentStore: KeyStore {
    /// Short name of the backend ("sqlite", "postgres").
    fn backend(&self) -> &'static str;
    /// Pool state, server version and where the data is.
    fn info(&self) -> BackendInfo;
    /// A round trip that reads the database (its schema); returns how long it took.
    fn ping(&self) -> Result<Duration>;
    /// The same round trip only if it cannot block (an idle connection is at
    /// hand); `None` otherwise. Lets `/health` answer without a thread hop.
    fn try_ping(&self) -> Option<Result<Duration>> {
        None
    }
    fn schema_status(&self) -> Result<SchemaStatus>;

    fn list_articles(&self, f: &ArticleFilter) -> Result<Page<ArticleSummary>>;
    fn get_article(&self, slug: &str) -> Result<Option<Article>>;
    fn create_article(&self, input: &ArticleInput) -> Result<Article>;
    fn update_article(&self, slug: &str, input: &ArticleInput) -> Result<Option<Article>>;
    fn delete_article(&self, slug: &str) -> Result<bool>;

    fn list_trends(&self, f: &TrendFilter) -> Result<Page<Trend>>;
    fn create_trend(&self, input: &TrendInput) -> Result<Trend>;
    fn update_trend(&self, id: i64, input: &TrendInput) -> Result<Option<Trend>>;
    fn delete_trend(&self, id: i64) -> Result<bool>;

    fn list_newsletters(&self, f: &NewsletterFilter) -> Result<Page<Newsletter>>;
    fn create_newsletter(&self, input: &NewsletterInput) -> Result<Newsletter>;
    fn update_newsletter(&self, id: i64, input: &NewsletterInput) -> Result<Option<Newsletter>>;
    fn delete_newsletter(&self, id: i64) -> Result<bool>;

    fn dashboard(&self) -> Result<Dashboard>;

    /// Record that this process runs `job` for the scheduled time `tick`;
    /// `false` when another process already claimed that tick (it ran or runs it).
    fn claim_run(&self, job: &str, tick: &str) -> Result<bool>;
    /// Record how a claimed run ended.
    fn finish_run(&self, job: &str, tick: &str, outcome: &str, detail: &str) -> Result<()>;
    /// The latest runs of `job`, newest first.
    fn recent_runs(&self, job: &str, limit: u32) -> Result<Vec<JobRun>>;

    /// Bytes the database takes on its server (`None`: an embedded file, see
    /// [`FileMaintenance::size_bytes`]).
    fn server_size_bytes(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// The embedded file's maintenance, when the data is an embedded file.
    fn file_maintenance(&self) -> Option<&dyn FileMaintenance> {
        None
    }
}
