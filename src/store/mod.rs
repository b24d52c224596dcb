//! The content store: the interface every backend implements, its types and errors.
//!
//! Only [`sqlite`] exists today. Everything above this module talks to
//! `dyn ContentStore`, so a PostgreSQL store for multi-replica deployments can be
//! added without touching HTTP or CLI code. Operations that only make sense for an
//! embedded SQLite file say so and return [`StoreError::Unsupported`] elsewhere.

pub mod keys;
mod model;
mod queries;
mod schema;
mod seed;
mod sqlite;

#[cfg(test)]
pub use model::test_strategies;
pub use model::*;
pub use schema::SCHEMA_VERSION;
pub use sqlite::SqliteStore;

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
    #[error("{0} is only available for the SQLite store")]
    Unsupported(&'static str),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// Everything the service needs from a database.
pub trait ContentStore: Send + Sync {
    /// Short name of the backend ("sqlite").
    fn backend(&self) -> &'static str;
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

    fn create_key(&self, key: &NewApiKey) -> Result<()>;
    /// The unrevoked key with this hash; records its use.
    fn find_key(&self, hash: &str) -> Result<Option<ApiKey>>;
    fn list_keys(&self) -> Result<Vec<ApiKey>>;
    fn revoke_key(&self, name: &str) -> Result<bool>;
    fn audit(&self, entry: &AuditEntry) -> Result<()>;
    /// Audit, counting repeats (same actor, client, action, outcome, minute) in one row.
    fn audit_aggregated(&self, entry: &AuditEntry) -> Result<()>;
    fn recent_audit(&self, limit: u32) -> Result<Vec<AuditEntry>>;

    /// `PRAGMA quick_check` (SQLite only): `Ok(None)` when clean, else the first problem.
    fn quick_check(&self) -> Result<Option<String>>;
    /// Checkpoint and truncate the WAL (SQLite only), as done at shutdown.
    fn checkpoint(&self) -> Result<()>;
    /// Size of the database files on disk in bytes (SQLite only).
    fn size_bytes(&self) -> Result<u64>;
    /// `Some(problem)` when the database file at the configured path is no longer
    /// the one this store has open (deleted, or replaced by a rename) (SQLite only).
    fn file_replaced(&self) -> Result<Option<String>> {
        Ok(None)
    }
}
