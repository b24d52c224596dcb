//! `aica config default|show`: a commented sample, and the effective settings with their origins.

use super::Global;
use crate::config::{Settings, Source, redact_url};
use clap::Subcommand;
use comfy_table::Table;

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print a commented aica.toml with every setting at its default.
    Default,
    /// Print the effective settings, where each came from, secrets redacted.
    Show {
        #[arg(long)]
        json: bool,
    },
}

/// One line of help per setting; `config default` fails its test if one is missing.
pub const HELP: &[(&str, &str)] = &[
    (
        "server.host",
        "Address both listeners bind to (0.0.0.0 in a container).",
    ),
    (
        "server.port",
        "Backend API port; 0 picks a free port (written to run/aica.pid).",
    ),
    (
        "server.public_url",
        "Public URL of the backend; an https:// URL turns on HSTS.",
    ),
    (
        "server.cors_origins",
        "Origins allowed by CORS; empty allows the console's own origin.",
    ),
    (
        "server.body_limit_bytes",
        "Largest request body accepted (1024 to 1073741824).",
    ),
    (
        "server.request_timeout_secs",
        "Requests running longer are answered 503 (1 to 3600).",
    ),
    (
        "server.shutdown_grace_secs",
        "On SIGTERM, how long in-flight requests may finish (0 to 600).",
    ),
    (
        "server.header_read_timeout_secs",
        "A client must send a request's headers within this time, else the connection closes (1 to 3600).",
    ),
    (
        "server.body_read_timeout_secs",
        "A request body pausing longer than this is answered 408 (1 to 3600).",
    ),
    (
        "server.auth_failures_per_minute",
        "Requests with a wrong API key one client may make per minute (shared across replicas via redis.url); more get 429. 0: no limit.",
    ),
    (
        "server.drain_secs",
        "On SIGTERM, /health/ready answers 503 this long while serving on, so load balancers stop sending (0 to 600).",
    ),
    (
        "server.max_connections_per_ip",
        "Open connections one client address may hold per port; more are closed at once (1 to 100000).",
    ),
    (
        "database.url",
        "sqlite://PATH, sqlite:///relative/path or a plain path (one process), or postgres://user:password@host:port/db (any number of replicas). DATABASE_URL sets it too.",
    ),
    (
        "database.pool_size",
        "Database connections in the pool (1 to 64).",
    ),
    (
        "database.seed_demo",
        "Fill an empty database with the demo data set on first start.",
    ),
    (
        "paths.data_dir",
        "Data directory; relative paths are under the working directory.",
    ),
    (
        "paths.log_dir",
        "JSON logs, rotated daily: aica.YYYY-MM-DD.log, aica.log links to today's.",
    ),
    ("paths.backup_dir", "Backups."),
    (
        "paths.report_dir",
        "Reports written by operations commands.",
    ),
    ("paths.run_dir", "Pid and lock file of the running server."),
    (
        "cache.ttl_secs",
        "How long a cached read answer lives; 0 disables the cache.",
    ),
    (
        "cache.max_entries",
        "Most cached answers kept; 0 disables the cache.",
    ),
    (
        "cache.max_bytes",
        "Bytes of cached answers kept (bodies and keys); 0 disables the cache.",
    ),
    ("logging.level", "trace, debug, info, warn or error."),
    (
        "logging.retention_days",
        "Daily log files kept (1 to 3650).",
    ),
    (
        "health.disk_warn_free_mib",
        "/health/detailed warns below this much free disk.",
    ),
    (
        "health.disk_fail_free_mib",
        "/health/detailed fails below this much free disk.",
    ),
    (
        "health.quick_check_interval_secs",
        "How often PRAGMA quick_check runs in the background (10 or more).",
    ),
    ("console.port", "Web console port; 0 picks a free port."),
    (
        "redis.url",
        "redis://[user:password@]host:port[/db] for state shared by replicas (failed-login throttling); empty: per replica. REDIS_URL sets it too.",
    ),
    (
        "redis.key_prefix",
        "Prefix of every Redis key aica writes, so deployments can share one Redis.",
    ),
    (
        "scheduler.leader_check_secs",
        "How often replicas check or take the scheduler lock: the longest a dead leader's jobs wait (1 to 300).",
    ),
    (
        "backup.schedule",
        "Cron expression (UTC) for backups inside aica serve; empty disables.",
    ),
    (
        "backup.verify_scheduled",
        "Verify each scheduled backup right after taking it.",
    ),
    (
        "backup.keep_daily",
        "Prune keeps the newest backup of each of this many recent days.",
    ),
    (
        "backup.keep_weekly",
        "... and of this many recent ISO weeks.",
    ),
    ("backup.keep_monthly", "... and of this many recent months."),
    (
        "backup.safety_keep_days",
        "Safety snapshots (taken before a restore) younger than this are kept.",
    ),
    (
        "backup.max_age_hours",
        "/health/detailed warns when the newest verified backup is older.",
    ),
    (
        "backup.mirror_dir",
        "Second destination (an off-site mount) kept in sync by create and prune; empty: none.",
    ),
    ("backup.zstd_level", "zstd compression level, 1 to 19."),
    (
        "console.backend_url",
        "Backend the console reports on; empty means this process's own backend.",
    ),
];

/// The commented sample configuration.
pub fn sample() -> String {
    let defaults = toml::Value::try_from(Settings::default()).expect("defaults serialise");
    let mut out = String::from(
        "# aica.toml: every setting with its default.\n\
         # Precedence: defaults < aica.toml < .env.production < AICA_<SECTION>_<KEY> env < --set section.key=value\n",
    );
    for (section, table) in defaults.as_table().into_iter().flatten() {
        out.push_str(&format!("\n[{section}]\n"));
        for (key, value) in table.as_table().into_iter().flatten() {
            let full = format!("{section}.{key}");
            let help = HELP
                .iter()
                .find(|(k, _)| *k == full)
                .map(|(_, h)| *h)
                .unwrap_or("");
            out.push_str(&format!(
                "# {help}\n# env: AICA_{}_{}\n{key} = {value}\n",
                section.to_uppercase(),
                key.to_uppercase()
            ));
        }
    }
    out
}

pub fn run(g: &Global, cmd: ConfigCmd) -> anyhow::Result<u8> {
    match cmd {
        ConfigCmd::Default => {
            print!("{}", sample());
            Ok(0)
        }
        ConfigCmd::Show { json } => {
            let l = g.load(&[])?;
            let redactor = crate::config::Redactor::new(&l.secrets);
            let value = toml::Value::try_from(&l.settings)?;
            let mut rows = Vec::new();
            for (section, table) in value.as_table().into_iter().flatten() {
                for (key, v) in table.as_table().into_iter().flatten() {
                    let full = format!("{section}.{key}");
                    let shown = redactor.redact(&redact_url(&v.to_string()));
                    let source = l.sources.get(&full).cloned().unwrap_or(Source::Default);
                    rows.push((full, shown, source.to_string()));
                }
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(k, v, s)| serde_json::json!({"key": k, "value": v, "source": s}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "settings": v,
                        "database": {"backend": l.paths.backend.name(), "location": l.paths.backend.describe()},
                        "dotenv_keys_not_used": l.foreign_dotenv_keys,
                    }))?
                );
                return Ok(0);
            }
            let mut t = Table::new();
            t.set_header(vec!["setting", "value", "source"]);
            for (k, v, s) in rows {
                t.add_row(vec![k, v, s]);
            }
            println!("{t}");
            println!(
                "database: {} at {}",
                l.paths.backend.name(),
                l.paths.backend.describe()
            );
            if !l.foreign_dotenv_keys.is_empty() {
                println!(
                    ".env.production keys aica does not use (values hidden, kept out of logs): {}",
                    l.foreign_dotenv_keys.join(", ")
                );
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sample_covers_every_setting_and_loads_as_defaults() {
        let s = super::sample();
        let parsed: crate::config::Settings = toml::from_str(&s).unwrap();
        assert_eq!(parsed, crate::config::Settings::default());
        for line in s
            .lines()
            .filter(|l| l.starts_with("# ") && !l.starts_with("# env"))
        {
            assert!(line.len() > 3, "setting without help: {s}");
        }
        let keys = s
            .lines()
            .filter(|l| l.contains(" = ") && !l.starts_with('#'))
            .count();
        assert_eq!(keys, super::HELP.len());
    }
}
