//! Typed settings for every part of aica, their defaults and their validation.
//!
//! Layering (lowest to highest): built-in defaults < `aica.toml` < `.env.production`
//! < `AICA_*` environment < command-line flags. See [`load`] for how layers merge
//! and how the origin of every value is tracked.

mod load;
mod redact;

pub use load::{LoadOptions, Loaded, Source, load};
pub use redact::{Redactor, redact_url};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// All settings. Every field has a default, so an empty directory is a valid setup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub paths: PathSettings,
    pub cache: CacheSettings,
    pub logging: LoggingSettings,
    pub health: HealthSettings,
    pub console: ConsoleSettings,
    pub backup: BackupSettings,
    pub redis: RedisSettings,
    pub scheduler: SchedulerSettings,
}

/// Redis, for per-client state that must be global across replicas.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`; empty: per-replica state only.
    pub url: String,
    /// Prefix of every key aica writes, so deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: String::new(),
            key_prefix: "aica".into(),
        }
    }
}

/// The scheduler inside `aica serve` (one across replicas on PostgreSQL).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// How often a replica checks or tries to take the scheduler lock: the
    /// longest a dead leader's schedule waits for another replica.
    pub leader_check_secs: u64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            leader_check_secs: 5,
        }
    }
}

/// Backups: schedule, retention, mirror.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    /// Cron expression (UTC) for scheduled backups inside `aica serve`; empty disables.
    pub schedule: String,
    /// Verify each scheduled backup right after taking it.
    pub verify_scheduled: bool,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    /// Safety snapshots (taken before a restore) younger than this are never pruned.
    pub safety_keep_days: u32,
    /// `/health/detailed` warns when the newest verified backup is older.
    pub max_age_hours: u32,
    /// A second directory (an off-site mount) kept in sync by create and prune; empty: none.
    pub mirror_dir: String,
    /// zstd level, 1 (fast) to 19 (small).
    pub zstd_level: i32,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            schedule: "0 3 * * *".into(),
            verify_scheduled: true,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            safety_keep_days: 7,
            max_age_hours: 26,
            mirror_dir: String::new(),
            zstd_level: 3,
        }
    }
}

/// The backend HTTP listener and its request policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address both listeners bind to.
    pub host: String,
    /// Backend API port (0 picks a free port; the chosen one is written to the pid file).
    pub port: u16,
    /// Public URL of the backend; an `https://` URL turns on HSTS.
    pub public_url: String,
    /// Origins allowed by CORS (empty: the console's own origin).
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: u64,
    /// Requests running longer than this are answered 503.
    pub request_timeout_secs: u64,
    /// On SIGTERM, how long in-flight requests may take before the process exits.
    pub shutdown_grace_secs: u64,
    /// On SIGTERM, how long `/health/ready` answers 503 while the server still
    /// serves, so load balancers stop sending before connections close.
    pub drain_secs: u64,
    /// A client must send a request's headers within this time, else the connection is closed.
    pub header_read_timeout_secs: u64,
    /// A request body that pauses longer than this between chunks is answered 408.
    pub body_read_timeout_secs: u64,
    /// Open connections one client address may hold (on each port); more are closed at once.
    pub max_connections_per_ip: u32,
    /// Requests with a wrong API key one client address may make per minute
    /// (across replicas when redis.url is set); more are answered 429. 0: no limit.
    pub auth_failures_per_minute: u32,
}

/// The content database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or a plain path (relative paths are under the working
    /// directory), or `postgres://user:password@host:port/db` for replicas.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Fill an empty database with the demo data set on first start.
    pub seed_demo: bool,
}

/// Where state lives; relative paths are resolved against the working directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PathSettings {
    pub data_dir: String,
    pub log_dir: String,
    pub backup_dir: String,
    pub report_dir: String,
    pub run_dir: String,
}

/// The bounded read cache in front of the content queries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    pub ttl_secs: u64,
    pub max_entries: u64,
    /// Bytes of cached answers kept (body and key); 0 disables the cache.
    pub max_bytes: u64,
}

/// Structured logs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSettings {
    /// trace, debug, info, warn or error.
    pub level: String,
    /// Rotated daily files kept.
    pub retention_days: u64,
}

/// Thresholds for `/health/detailed` and `aica doctor`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    pub disk_warn_free_mib: u64,
    pub disk_fail_free_mib: u64,
    /// How often the server re-runs `PRAGMA quick_check` in the background.
    pub quick_check_interval_secs: u64,
}

/// The web console.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Console port (0 picks a free port).
    pub port: u16,
    /// Backend the console reports on (empty: this process's own backend).
    pub backend_url: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "127.0.0.1".into(),
            port: 8000,
            public_url: String::new(),
            cors_origins: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 10,
            drain_secs: 0,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            max_connections_per_ip: 256,
            auth_failures_per_minute: 20,
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://data/aica_sys.db".into(),
            pool_size: 8,
            seed_demo: true,
        }
    }
}

impl Default for PathSettings {
    fn default() -> Self {
        PathSettings {
            data_dir: "data".into(),
            log_dir: "logs".into(),
            backup_dir: "backups".into(),
            report_dir: "reports".into(),
            run_dir: "run".into(),
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl_secs: 30,
            max_entries: 10_000,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            level: "info".into(),
            retention_days: 14,
        }
    }
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            disk_warn_free_mib: 1024,
            disk_fail_free_mib: 100,
            quick_check_interval_secs: 600,
        }
    }
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            port: 3000,
            backend_url: String::new(),
        }
    }
}

/// A setting whose value is not allowed.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key} = {value:?}: {allowed}")]
pub struct InvalidSetting {
    pub key: String,
    pub value: String,
    pub allowed: String,
}

fn invalid(key: &str, value: impl ToString, allowed: &str) -> InvalidSetting {
    InvalidSetting {
        key: key.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

impl Settings {
    /// Check every value against what is allowed; the first problem names the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.server.host.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "server.host",
                &self.server.host,
                "an IP address such as 127.0.0.1 or 0.0.0.0",
            ));
        }
        if self.server.port != 0 && self.server.port == self.console.port {
            return Err(invalid(
                "console.port",
                self.console.port,
                "a port different from server.port",
            ));
        }
        let pu = &self.server.public_url;
        if !(pu.is_empty() || pu.starts_with("http://") || pu.starts_with("https://")) {
            return Err(invalid(
                "server.public_url",
                pu,
                "empty, or a URL starting with http:// or https://",
            ));
        }
        for o in &self.server.cors_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return Err(invalid(
                    "server.cors_origins",
                    o,
                    "origins like https://example.com (scheme, host, optional port, no trailing slash)",
                ));
            }
        }
        if !(1024..=1024 * 1024 * 1024).contains(&self.server.body_limit_bytes) {
            return Err(invalid(
                "server.body_limit_bytes",
                self.server.body_limit_bytes,
                "1024 to 1073741824",
            ));
        }
        if !(1..=3600).contains(&self.server.request_timeout_secs) {
            return Err(invalid(
                "server.request_timeout_secs",
                self.server.request_timeout_secs,
                "1 to 3600",
            ));
        }
        if self.server.shutdown_grace_secs > 600 {
            return Err(invalid(
                "server.shutdown_grace_secs",
                self.server.shutdown_grace_secs,
                "0 to 600",
            ));
        }
        for (k, v) in [
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs,
            ),
        ] {
            if !(1..=3600).contains(&v) {
                return Err(invalid(k, v, "1 to 3600"));
            }
        }
        if !(1..=100_000).contains(&self.server.max_connections_per_ip) {
            return Err(invalid(
                "server.max_connections_per_ip",
                self.server.max_connections_per_ip,
                "1 to 100000",
            ));
        }
        if let Some(url) = self.postgres_url() {
            if let Err(e) = crate::store::postgres::check_url(url) {
                // Not even a redacted echo: a password may sit in the query string.
                return Err(invalid(
                    "database.url",
                    "(hidden: it may hold a password)",
                    &e,
                ));
            }
        } else {
            let raw = self.database.url.trim();
            // libpq's `host=… password=… dbname=…` form would otherwise be taken
            // for a file name (and the password would end up in a path).
            let conninfo = raw.split_whitespace().any(|w| {
                w.split_once('=').is_some_and(|(k, _)| {
                    [
                        "host", "hostaddr", "port", "dbname", "user", "password", "sslmode",
                    ]
                    .contains(&k)
                })
            });
            if conninfo {
                return Err(invalid(
                    "database.url",
                    "(hidden: it may hold a password)",
                    "a URL: postgres://user:password@host:port/db (the key=value connection string form is not accepted), or sqlite://PATH",
                ));
            }
            self.sqlite_path_raw()?;
        }
        let r = self.redis.url.trim();
        if !r.is_empty() && (!r.starts_with("redis://") || redis::Client::open(r).is_err()) {
            return Err(invalid(
                "redis.url",
                redact_url(r),
                "empty, or redis://[user:password@]host:port[/db]",
            ));
        }
        let kp = &self.redis.key_prefix;
        if kp.is_empty()
            || kp.len() > 64
            || !kp
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(invalid(
                "redis.key_prefix",
                kp,
                "1 to 64 letters, digits, '-', '_', '.' or ':'",
            ));
        }
        if self.scheduler.leader_check_secs == 0 || self.scheduler.leader_check_secs > 300 {
            return Err(invalid(
                "scheduler.leader_check_secs",
                self.scheduler.leader_check_secs,
                "1 to 300 seconds",
            ));
        }
        if self.server.drain_secs > 600 {
            return Err(invalid(
                "server.drain_secs",
                self.server.drain_secs,
                "0 to 600 seconds",
            ));
        }
        if !(1..=64).contains(&self.database.pool_size) {
            return Err(invalid(
                "database.pool_size",
                self.database.pool_size,
                "1 to 64",
            ));
        }
        for (k, v) in [
            ("paths.data_dir", &self.paths.data_dir),
            ("paths.log_dir", &self.paths.log_dir),
            ("paths.backup_dir", &self.paths.backup_dir),
            ("paths.report_dir", &self.paths.report_dir),
            ("paths.run_dir", &self.paths.run_dir),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(k, v, "a directory path"));
            }
        }
        if self.cache.max_entries > 10_000_000 {
            return Err(invalid(
                "cache.max_entries",
                self.cache.max_entries,
                "0 (off) to 10000000",
            ));
        }
        if self.cache.max_bytes > 4 * 1024 * 1024 * 1024 {
            return Err(invalid(
                "cache.max_bytes",
                self.cache.max_bytes,
                "0 (off) to 4294967296",
            ));
        }
        if !LEVELS.contains(&self.logging.level.as_str()) {
            return Err(invalid(
                "logging.level",
                &self.logging.level,
                "one of trace, debug, info, warn, error",
            ));
        }
        if !(1..=3650).contains(&self.logging.retention_days) {
            return Err(invalid(
                "logging.retention_days",
                self.logging.retention_days,
                "1 to 3650",
            ));
        }
        if self.health.disk_fail_free_mib > self.health.disk_warn_free_mib {
            return Err(invalid(
                "health.disk_fail_free_mib",
                self.health.disk_fail_free_mib,
                "at most health.disk_warn_free_mib",
            ));
        }
        if self.health.quick_check_interval_secs < 10 {
            return Err(invalid(
                "health.quick_check_interval_secs",
                self.health.quick_check_interval_secs,
                "10 or more",
            ));
        }
        let b = &self.backup;
        if !b.schedule.trim().is_empty() && parse_cron(&b.schedule).is_err() {
            return Err(invalid(
                "backup.schedule",
                &b.schedule,
                "a cron expression such as \"0 3 * * *\" (minute hour day month weekday, UTC), or empty to disable",
            ));
        }
        if !(1..=19).contains(&b.zstd_level) {
            return Err(invalid("backup.zstd_level", b.zstd_level, "1 to 19"));
        }
        if b.keep_daily + b.keep_weekly + b.keep_monthly == 0 {
            return Err(invalid(
                "backup.keep_daily",
                b.keep_daily,
                "keep_daily, keep_weekly and keep_monthly may not all be 0",
            ));
        }
        if b.max_age_hours == 0 {
            return Err(invalid(
                "backup.max_age_hours",
                b.max_age_hours,
                "1 or more",
            ));
        }
        let bu = &self.console.backend_url;
        if !bu.is_empty() && !bu.starts_with("http://") {
            return Err(invalid(
                "console.backend_url",
                bu,
                "empty, or an http:// URL of the backend",
            ));
        }
        Ok(())
    }

    /// The PostgreSQL URL, when `database.url` names one.
    pub fn postgres_url(&self) -> Option<&str> {
        let url = self.database.url.trim();
        (url.starts_with("postgres://") || url.starts_with("postgresql://")).then_some(url)
    }

    fn sqlite_path_raw(&self) -> Result<&str, InvalidSetting> {
        let url = self.database.url.as_str();
        // SQLAlchemy spelling (the original's): sqlite:///relative, sqlite:////absolute.
        let path = if let Some(rest) = url.strip_prefix("sqlite:///") {
            rest
        } else if let Some(rest) = url.strip_prefix("sqlite://") {
            rest
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            rest
        } else if url.contains("://") {
            return Err(invalid(
                "database.url",
                redact_url(url),
                "sqlite://PATH, a plain file path, or postgres://user:password@host:port/db",
            ));
        } else {
            url
        };
        if path.is_empty() {
            return Err(invalid(
                "database.url",
                url,
                "sqlite://PATH with a non-empty path",
            ));
        }
        if path.contains('?') || path.contains('#') {
            return Err(invalid(
                "database.url",
                redact_url(url),
                "sqlite://PATH without query parameters (aica sets the connection options itself)",
            ));
        }
        Ok(path)
    }
}

/// A cron expression: five fields (minute precision) or six (with seconds first), UTC.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr.trim())
}

impl Settings {
    /// `backup.mirror_dir` resolved against `base`, when set.
    pub fn mirror_path(&self, base: &Path) -> Option<PathBuf> {
        let d = self.backup.mirror_dir.trim();
        (!d.is_empty()).then(|| base.join(d))
    }
}

/// Settings with every relative path resolved against the working directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub base: PathBuf,
    /// The SQLite file (the default location when the database is PostgreSQL).
    pub db: PathBuf,
    /// The database the configuration selects.
    pub backend: crate::store::Backend,
    pub data: PathBuf,
    pub logs: PathBuf,
    pub backups: PathBuf,
    pub reports: PathBuf,
    pub run: PathBuf,
}

impl Paths {
    /// Resolve `settings` (already validated) against `base`.
    pub fn resolve(settings: &Settings, base: &Path) -> Paths {
        let r = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let db = settings.sqlite_path_raw().unwrap_or("data/aica_sys.db");
        let backend = match settings.postgres_url() {
            Some(url) => crate::store::Backend::Postgres(url.to_string()),
            None => crate::store::Backend::Sqlite(r(db)),
        };
        Paths {
            base: base.to_path_buf(),
            db: r(db),
            backend,
            data: r(&settings.paths.data_dir),
            logs: r(&settings.paths.log_dir),
            backups: r(&settings.paths.backup_dir),
            reports: r(&settings.paths.report_dir),
            run: r(&settings.paths.run_dir),
        }
    }

    /// The pid file of a running `aica serve`.
    pub fn pid_file(&self) -> PathBuf {
        self.run.join("aica.pid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn postgres_url_selects_postgres_and_bad_ones_do_not_leak_password() {
        let mut s = Settings::default();
        s.database.url = "postgres://app:hunter2@db/aica".into();
        s.validate().unwrap();
        let p = Paths::resolve(&s, Path::new("/b"));
        assert_eq!(p.backend.name(), "postgres");
        assert!(!p.backend.describe().contains("hunter2"));
        s.database.url = "postgres://app:hunter2@db:notaport/aica".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("database.url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        s.database.url = "mysql://app:hunter2@db/aica".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("postgres://") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn bad_level_names_allowed_values() {
        let mut s = Settings::default();
        s.logging.level = "loud".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("logging.level") && e.contains("warn"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_under_base() {
        let p = Paths::resolve(&Settings::default(), Path::new("/srv/aica"));
        assert_eq!(p.db, Path::new("/srv/aica/data/aica_sys.db"));
        assert_eq!(p.pid_file(), Path::new("/srv/aica/run/aica.pid"));
        let mut s = Settings::default();
        s.database.url = "sqlite:///./aica_sys.db".into();
        assert_eq!(
            Paths::resolve(&s, Path::new("/b")).db,
            Path::new("/b/./aica_sys.db")
        );
        s.database.url = "sqlite:////var/lib/aica.db".into();
        assert_eq!(
            Paths::resolve(&s, Path::new("/b")).db,
            Path::new("/var/lib/aica.db")
        );
    }
}
