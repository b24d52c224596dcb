//! One factory for both stores: the configured database URL decides which.

use super::postgres::{Coordination, PgStore};
use super::{ContentStore, Result, SqliteStore};
use std::path::PathBuf;
use std::sync::Arc;

/// Which database the configuration selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (one process).
    Sqlite(PathBuf),
    /// A PostgreSQL server (any number of replicas); the URL may hold a password.
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Where the data is, safe to print (the password redacted).
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite(p) => p.display().to_string(),
            Backend::Postgres(url) => match super::postgres::parse_url(url) {
                Ok(c) => super::postgres::describe(&c),
                Err(e) => e.to_string(),
            },
        }
    }
}

/// An open store and, on PostgreSQL, what replicas coordinate through.
pub struct Opened {
    pub store: Arc<dyn ContentStore>,
    pub coordination: Option<Coordination>,
}

/// This process's id among replicas: host name and pid.
pub fn replica_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    format!("{host}:{}", std::process::id())
}

/// Open (create, migrate, seed if asked) the configured store. Call on a tokio runtime.
pub async fn open(backend: &Backend, pool_size: u32, seed_demo: bool) -> Result<Opened> {
    match backend {
        Backend::Sqlite(path) => {
            let path = path.clone();
            let store =
                tokio::task::spawn_blocking(move || SqliteStore::open(&path, pool_size, seed_demo))
                    .await
                    .map_err(|e| super::StoreError::Internal(format!("open task failed: {e}")))??;
            Ok(Opened {
                store: Arc::new(store),
                coordination: None,
            })
        }
        Backend::Postgres(url) => {
            let store = PgStore::open(url, pool_size, seed_demo, replica_id()).await?;
            let coordination = Some(store.coordination());
            Ok(Opened {
                store: Arc::new(store),
                coordination,
            })
        }
    }
}
