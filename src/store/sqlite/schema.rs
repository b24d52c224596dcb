//! Embedded, ordered SQLite migrations tracked by `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: content, keys, audit
    r#"
    CREATE TABLE articles (
        id INTEGER PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        author TEXT NOT NULL,
        category TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('draft','published','archived')),
        published_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX articles_status_pub ON articles(status, published_at DESC, id DESC);
    CREATE INDEX articles_category_pub ON articles(category, status, published_at DESC);
    CREATE INDEX articles_author_pub ON articles(author, status, published_at DESC);
    CREATE TABLE article_tags (
        article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (tag, article_id)
    ) WITHOUT ROWID;
    CREATE INDEX article_tags_article ON article_tags(article_id);
    CREATE TABLE trends (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        period TEXT NOT NULL,
        score REAL NOT NULL,
        growth_pct REAL NOT NULL DEFAULT 0,
        mentions INTEGER NOT NULL DEFAULT 0,
        summary TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (name, period)
    );
    CREATE INDEX trends_period_score ON trends(period DESC, score DESC, id);
    CREATE INDEX trends_category ON trends(category, period DESC, score DESC);
    CREATE TABLE newsletters (
        id INTEGER PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('draft','scheduled','sent')),
        issued_at TEXT,
        recipients INTEGER NOT NULL DEFAULT 0,
        open_rate REAL NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX newsletters_status_issued ON newsletters(status, issued_at DESC, id DESC);
    CREATE INDEX newsletters_issued ON newsletters(issued_at DESC, id DESC);
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('editor','admin')),
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        client TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX audit_log_at ON audit_log(at);
    "#,
    // 2: anonymous refusals are aggregated per client and minute into one row with a count
    r#"
    ALTER TABLE audit_log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX audit_log_client_at ON audit_log(client, at);
    "#,
    // 3: runs of scheduled jobs, one row per job and tick (the claim that makes a tick run once)
    r#"
    CREATE TABLE job_runs (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        tick TEXT NOT NULL,
        replica TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT,
        detail TEXT,
        UNIQUE (job, tick)
    );
    "#,
];

/// The schema version this binary writes and expects.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The database's current schema version.
pub fn current_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Apply every missing migration, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> crate::store::Result<i64> {
    let found = current_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(crate::store::StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    Ok(SCHEMA_VERSION)
}
