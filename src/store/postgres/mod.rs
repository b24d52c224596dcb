//! The PostgreSQL store: any number of replicas on one database. A
//! deadpool-managed pool of tokio-postgres connections, driven from the
//! blocking threads the service already runs store calls on.

pub mod coord;
mod keys;
mod queries;
mod schema;

pub use coord::{ChangeEvent, Coordination};

use super::{
    BackendInfo, ContentStore, JobRun, KeyStore, Result, SchemaStatus, StoreError, model::*, seed,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// A driver error as a person should read it: the server's own message
/// ("password authentication failed for user ...") rather than "db error".
pub fn message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// Map a driver error to a store error: nothing above the store sees tokio-postgres.
pub(crate) fn err(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState as S;
    let text = message(&e);
    let Some(c) = e.code() else {
        // No SQLSTATE: the connection failed or closed.
        return StoreError::Unavailable(format!("database connection: {text}"));
    };
    let busy = [
        S::T_R_SERIALIZATION_FAILURE,
        S::T_R_DEADLOCK_DETECTED,
        S::LOCK_NOT_AVAILABLE,
    ];
    let unavailable = [
        S::ADMIN_SHUTDOWN,
        S::CRASH_SHUTDOWN,
        S::CANNOT_CONNECT_NOW,
        S::TOO_MANY_CONNECTIONS,
        S::INVALID_PASSWORD,
        S::INVALID_AUTHORIZATION_SPECIFICATION,
        S::INVALID_CATALOG_NAME,
    ];
    if busy.contains(c) {
        StoreError::Busy(text)
    } else if *c == S::UNIQUE_VIOLATION {
        StoreError::Conflict(text)
    } else if unavailable.contains(c) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Internal(text)
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError as P;
    match e {
        P::Backend(e) => err(e),
        P::Timeout(_) => {
            StoreError::Unavailable("no database connection became free in time".into())
        }
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// Where a PostgreSQL URL points, for messages: `host:port/db as user`, never the password.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{} as {}",
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)")
    )
}

/// Parse a `postgres://` URL; the error never repeats the URL (it may hold a password).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    url.parse::<tokio_postgres::Config>().map_err(|e| {
        StoreError::Invalid(format!("database.url is not a valid PostgreSQL URL: {e}"))
    })
}

/// Check a `postgres://` URL as configuration: it parses, its host is not
/// half a password (an unencoded `@`), and it does not ask for TLS, which this
/// build does not have. The message never repeats the URL.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    let c = parse_url(url).map_err(|e| e.to_string())?;
    let hosts = c.get_hosts();
    if hosts
        .iter()
        .any(|h| matches!(h, tokio_postgres::config::Host::Tcp(h) if h.contains('@')))
    {
        return Err(
            "the host contains '@': a password holding '@', ':' or '/' must be percent-encoded (@ is %40, : is %3A, / is %2F)"
                .into(),
        );
    }
    if matches!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Require) {
        return Err(
            "sslmode=require: TLS to PostgreSQL is not built into this aica yet; use a private network with sslmode=disable or prefer, or a TLS-terminating proxy next to aica"
                .into(),
        );
    }
    Ok(())
}

/// Every password in a `postgres://` URL, wherever and however often it is
/// written (userinfo, one or more `?password=`), decoded, for redaction.
pub fn url_passwords(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(u) = url::Url::parse(url) {
        if let Some(p) = u.password() {
            out.push(
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .to_string(),
            );
        }
        for (k, v) in u.query_pairs() {
            if k == "password" {
                out.push(v.to_string());
            }
        }
    }
    if let Some(p) = parse_url(url)
        .ok()
        .and_then(|c| c.get_password().map(<[u8]>::to_vec))
    {
        out.push(String::from_utf8_lossy(&p).to_string());
    }
    out.retain(|p| !p.is_empty());
    out.dedup();
    out
}

/// The PostgreSQL implementation of [`ContentStore`].
pub struct PgStore {
    pool: Pool,
    /// Connections whose commits do not wait for the disk
    /// (`synchronous_commit = off`), for records whose loss in a server crash
    /// costs a line, not data: key use and the audit trail. The same
    /// durability SQLite's `synchronous = NORMAL` gives every commit; content
    /// writes keep PostgreSQL's full synchronous commit on `pool`.
    relaxed: Pool,
    rt: tokio::runtime::Handle,
    config: tokio_postgres::Config,
    where_: String,
    version: String,
    /// This process's id in change notifications and job runs.
    replica: String,
    /// Longest a single store call may take (connection wait included).
    op_timeout: Duration,
}

impl PgStore {
    /// Connect, migrate (once across replicas, under an advisory lock) and,
    /// when `seed_demo` and empty, fill the database. Must be called on a
    /// tokio runtime: its connections run there.
    pub async fn open(
        url: &str,
        pool_size: u32,
        seed_demo: bool,
        replica: String,
    ) -> Result<PgStore> {
        let mut config = parse_url(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("aica");
        }
        // Bounded waits on the server side too: a lock held by a stopped
        // replica, or a runaway statement, must not hold this replica's pool.
        let limits = "-c lock_timeout=5000 -c statement_timeout=15000 -c idle_in_transaction_session_timeout=30000";
        let options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {limits}"),
            _ => limits.to_string(),
        };
        config.options(&options);
        let where_ = describe(&config);
        let build = |cfg: tokio_postgres::Config, size: u32| {
            let mgr = Manager::from_config(
                cfg,
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(mgr)
                .max_size(size.max(1) as usize)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(5)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))
        };
        let pool = build(config.clone(), pool_size)?;
        let mut relaxed_config = config.clone();
        relaxed_config.options(format!("{options} -c synchronous_commit=off"));
        let relaxed = build(relaxed_config, (pool_size / 2).max(2))?;
        let mut c = pool.get().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {where_}: {}",
                pool_err(e)
            ))
        })?;
        let version: String = c
            .query_one("SHOW server_version", &[])
            .await
            .map_err(err)?
            .get(0);
        // Another replica may be migrating or seeding: wait for it, unbounded.
        c.batch_execute("SET lock_timeout = 0; SET statement_timeout = 0")
            .await
            .map_err(err)?;
        c.execute("SELECT pg_advisory_lock($1)", &[&schema::MIGRATE_LOCK])
            .await
            .map_err(err)?;
        let res = async {
            schema::migrate(&mut c).await?;
            if seed_demo {
                queries::seed_if_empty(&mut c, seed::demo).await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        let _ = c
            .execute("SELECT pg_advisory_unlock($1)", &[&schema::MIGRATE_LOCK])
            .await;
        let _ = c
            .batch_execute("RESET lock_timeout; RESET statement_timeout")
            .await;
        res?;
        drop(c);
        // Connections idle for a minute are closed: a burst must not keep
        // server connections other replicas need (max_connections is shared).
        let weak = [pool.weak(), relaxed.weak()];
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                for w in &weak {
                    let Some(pool) = w.upgrade() else { return };
                    pool.retain(|_, m| m.last_used() < Duration::from_secs(60));
                }
            }
        });
        Ok(PgStore {
            pool,
            relaxed,
            rt: tokio::runtime::Handle::current(),
            config,
            where_,
            version,
            replica,
            op_timeout: Duration::from_secs(30),
        })
    }

    /// Cross-replica coordination on this database.
    pub fn coordination(&self) -> Coordination {
        Coordination::new(self.config.clone(), self.replica.clone())
    }

    /// Run one store operation on the runtime from this (blocking) thread,
    /// recording its duration in the DB histogram.
    fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run_on(&self.pool, op, f)
    }

    /// [`PgStore::run`] on a connection of `pool`.
    fn run_on<T, F, Fut>(&self, pool: &Pool, op: &'static str, f: F) -> Result<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let out = self.rt.block_on(async {
            let work = async {
                let c = pool.get().await.map_err(pool_err)?;
                f(c).await
            };
            tokio::time::timeout(self.op_timeout, work)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "the database did not answer within {} s",
                        self.op_timeout.as_secs()
                    )))
                })
        });
        metrics::histogram!("aica_db_query_duration_seconds", "op" => op)
            .record(start.elapsed().as_secs_f64());
        out
    }

    /// Tell the other replicas that content changed, after the write
    /// committed and before it is acknowledged. Not inside the write's
    /// transaction: a transaction that NOTIFYs holds the notification queue's
    /// lock through its commit, so every write would wait for the previous
    /// one's disk flush (measured: writes capped at the disk's ~1,300
    /// flushes/s). Sent on the relaxed pool; if it cannot be sent, the other
    /// replicas' cached answers expire within cache.ttl_secs (logged).
    fn notify<T>(&self, res: Result<T>, changed: impl Fn(&T) -> bool) -> Result<T> {
        if let Ok(v) = &res
            && changed(v)
        {
            // A broken connection is replaced by the pool: a few tries on
            // fresh ones before giving up.
            let mut sent = Ok(0);
            for attempt in 0..3 {
                let payload = coord::change_payload(&self.replica);
                sent = self.run_on(&self.relaxed, "notify", |c| async move {
                    c.execute(
                        "SELECT pg_notify($1, $2)",
                        &[&coord::CHANGES_CHANNEL, &payload],
                    )
                    .await
                    .map_err(err)
                });
                if sent.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            if let Err(e) = sent {
                metrics::counter!("aica_change_notify_failures_total").increment(1);
                tracing::error!(error = %e, "write committed but other replicas could not be told; their cached answers expire within cache.ttl_secs");
            }
        }
        res
    }
}

impl KeyStore for PgStore {
    fn create_key(&self, k: &NewApiKey) -> Result<()> {
        self.run("keys", |c| async move { keys::create(&c, k).await })
    }
    fn find_key(&self, hash: &str) -> Result<Option<ApiKey>> {
        self.run_on(&self.relaxed, "keys", |c| async move {
            keys::find(&c, hash).await
        })
    }
    fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.run("keys", |c| async move { keys::list(&c).await })
    }
    fn revoke_key(&self, name: &str) -> Result<bool> {
        self.run("keys", |c| async move { keys::revoke(&c, name).await })
    }
    fn audit(&self, e: &AuditEntry) -> Result<()> {
        self.run_on(&self.relaxed, "audit", |c| async move {
            keys::audit(&c, e).await
        })
    }
    fn audit_aggregated(&self, e: &AuditEntry) -> Result<()> {
        self.run_on(&self.relaxed, "audit", |mut c| async move {
            keys::audit_aggregated(&mut c, e).await
        })
    }
    fn recent_audit(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        self.run(
            "audit",
            |c| async move { keys::recent_audit(&c, limit).await },
        )
    }
}

impl ContentStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn info(&self) -> BackendInfo {
        let s = self.pool.status();
        BackendInfo {
            backend: "postgres",
            location: self.where_.clone(),
            version: self.version.clone(),
            pool_max: s.max_size as u32,
            pool_open: s.size as u32,
            pool_idle: s.available as u32,
            pool_waiting: s.waiting as u32,
        }
    }

    fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        self.run("ping", |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
                )
                .await
                .map_err(err)?;
            c.query_one(&stmt, &[]).await.map_err(err)?;
            Ok(())
        })?;
        Ok(start.elapsed())
    }

    fn schema_status(&self) -> Result<SchemaStatus> {
        let current = self.run(
            "schema",
            |c| async move { schema::current_version(&c).await },
        )?;
        Ok(SchemaStatus {
            current,
            expected: super::SCHEMA_VERSION,
        })
    }

    fn list_articles(&self, f: &ArticleFilter) -> Result<Page<ArticleSummary>> {
        self.run("list_articles", |c| async move {
            queries::list_articles(&c, f).await
        })
    }
    fn get_article(&self, slug: &str) -> Result<Option<Article>> {
        self.run("get_article", |c| async move {
            queries::get_article(&c, slug).await
        })
    }
    fn create_article(&self, i: &ArticleInput) -> Result<Article> {
        let res = self.run("write_article", |mut c| async move {
            queries::create_article(&mut c, i).await
        });
        self.notify(res, |_| true)
    }
    fn update_article(&self, slug: &str, i: &ArticleInput) -> Result<Option<Article>> {
        let res = self.run("write_article", |mut c| async move {
            queries::update_article(&mut c, slug, i).await
        });
        self.notify(res, Option::is_some)
    }
    fn delete_article(&self, slug: &str) -> Result<bool> {
        let res = self.run("write_article", |mut c| async move {
            queries::delete(&mut c, "articles", "slug", &slug).await
        });
        self.notify(res, |d| *d)
    }
    fn list_trends(&self, f: &TrendFilter) -> Result<Page<Trend>> {
        self.run("list_trends", |c| async move {
            queries::list_trends(&c, f).await
        })
    }
    fn create_trend(&self, i: &TrendInput) -> Result<Trend> {
        let res = self.run("write_trend", |mut c| async move {
            queries::create_trend(&mut c, i).await
        });
        self.notify(res, |_| true)
    }
    fn update_trend(&self, id: i64, i: &TrendInput) -> Result<Option<Trend>> {
        let res = self.run("write_trend", |mut c| async move {
            queries::update_trend(&mut c, id, i).await
        });
        self.notify(res, Option::is_some)
    }
    fn delete_trend(&self, id: i64) -> Result<bool> {
        let res = self.run("write_trend", |mut c| async move {
            queries::delete(&mut c, "trends", "id", &id).await
        });
        self.notify(res, |d| *d)
    }
    fn list_newsletters(&self, f: &NewsletterFilter) -> Result<Page<Newsletter>> {
        self.run("list_newsletters", |c| async move {
            queries::list_newsletters(&c, f).await
        })
    }
    fn create_newsletter(&self, i: &NewsletterInput) -> Result<Newsletter> {
        let res = self.run("write_newsletter", |mut c| async move {
            queries::create_newsletter(&mut c, i).await
        });
        self.notify(res, |_| true)
    }
    fn update_newsletter(&self, id: i64, i: &NewsletterInput) -> Result<Option<Newsletter>> {
        let res = self.run("write_newsletter", |mut c| async move {
            queries::update_newsletter(&mut c, id, i).await
        });
        self.notify(res, Option::is_some)
    }
    fn delete_newsletter(&self, id: i64) -> Result<bool> {
        let res = self.run("write_newsletter", |mut c| async move {
            queries::delete(&mut c, "newsletters", "id", &id).await
        });
        self.notify(res, |d| *d)
    }
    fn server_size_bytes(&self) -> Result<Option<u64>> {
        self.run("size", |c| async move {
            let n: i64 = c
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await
                .map_err(err)?
                .get(0);
            Ok(Some(n.max(0) as u64))
        })
    }
    fn dashboard(&self) -> Result<Dashboard> {
        self.run("dashboard", |c| async move { queries::dashboard(&c).await })
    }

    fn claim_run(&self, job: &str, tick: &str) -> Result<bool> {
        let replica = self.replica.clone();
        self.run("jobs", |c| async move {
            queries::claim_run(&c, job, tick, &replica).await
        })
    }
    fn finish_run(&self, job: &str, tick: &str, outcome: &str, detail: &str) -> Result<()> {
        self.run("jobs", |c| async move {
            queries::finish_run(&c, job, tick, outcome, detail).await
        })
    }
    fn recent_runs(&self, job: &str, limit: u32) -> Result<Vec<JobRun>> {
        self.run("jobs", |c| async move {
            queries::recent_runs(&c, job, limit).await
        })
    }
}

/// What a read-only look at a PostgreSQL database shows (for `aica doctor`).
#[derive(Debug, Clone)]
pub struct Probe {
    pub server_version: String,
    /// aica's schema version in the database (0: not created yet).
    pub schema: i64,
    pub round_trip: Duration,
}

/// Connect once, read the server version and aica's schema version; change nothing.
pub async fn probe(url: &str) -> Result<Probe> {
    let mut config = parse_url(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let where_ = describe(&config);
    let (client, conn) = config.connect(NoTls).await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL at {where_}: {}",
            message(&e)
        ))
    })?;
    let driver = tokio::spawn(conn);
    let res = async {
        let start = Instant::now();
        client.simple_query("SELECT 1").await.map_err(err)?;
        let round_trip = start.elapsed();
        let server_version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(err)?
            .get(0);
        let schema = schema::current_version(&client).await?;
        Ok(Probe {
            server_version,
            schema,
            round_trip,
        })
    }
    .await;
    driver.abort();
    res
}
