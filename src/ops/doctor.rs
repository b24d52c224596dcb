//! `aica doctor`: each reason aica might not start, checked for real, with the fix.

pub use crate::check::{Check, Level};
use crate::config::Loaded;
use crate::run::pidfile::{self, RunState};
use std::net::TcpListener;
use std::path::Path;

fn check(name: &str, level: Level, observed: impl Into<String>, fix: Option<String>) -> Check {
    Check::new(name, level, observed, fix)
}

/// The configuration could not be loaded: the one check that stops the rest.
pub fn config_failed(error: &str) -> Check {
    check(
        "config",
        Level::Fail,
        error,
        Some("fix the setting named above; 'aica config default' lists every setting".into()),
    )
}

/// Run every check against loaded settings.
pub fn run(l: &Loaded) -> Vec<Check> {
    let mut out = vec![check(
        "config",
        Level::Pass,
        format!(
            "settings parse and validate ({} from files, environment or flags)",
            l.sources
                .values()
                .filter(|s| **s != crate::config::Source::Default)
                .count()
        ),
        None,
    )];
    out.push(dotenv(&l.paths.base));
    let running = match pidfile::state(&l.paths.run) {
        RunState::Running { info, holder } => {
            out.push(check(
                "pid file",
                Level::Pass,
                match &info {
                    Some(i) => format!("aica is running (pid {})", i.pid),
                    None => format!("the run lock is held by {holder}"),
                },
                None,
            ));
            info
        }
        RunState::Stale(info) => {
            let pid = info
                .map(|i| i.pid.to_string())
                .unwrap_or_else(|| "?".into());
            out.push(check(
                "pid file",
                Level::Warn,
                format!("stale pid file from pid {pid}, which is no longer running"),
                Some("'aica up' removes it on start; or delete run/aica.pid".into()),
            ));
            None
        }
        RunState::NotRunning => {
            out.push(check(
                "pid file",
                Level::Pass,
                "aica is not running; no stale pid file",
                None,
            ));
            None
        }
    };
    let s = &l.settings;
    for (name, key, port, published) in [
        (
            "backend port",
            "server.port",
            s.server.port,
            running.as_ref().map(|i| i.backend.clone()),
        ),
        (
            "console port",
            "console.port",
            s.console.port,
            running.as_ref().map(|i| i.console.clone()),
        ),
    ] {
        out.push(port_check(name, key, &s.server.host, port, published));
    }
    for (name, dir) in [
        ("data dir", &l.paths.data),
        ("log dir", &l.paths.logs),
        ("backup dir", &l.paths.backups),
        ("run dir", &l.paths.run),
    ] {
        out.push(writable(name, dir));
    }
    out.push(match &l.paths.backend {
        crate::store::Backend::Sqlite(db) => database(db),
        crate::store::Backend::Postgres(url) => postgres(url),
    });
    if let crate::store::Backend::Postgres(url) = &l.paths.backend
        && let Ok(found) = crate::backup::pg::leftovers(url)
    {
        out.push(postgres_leftovers(&found));
        if let Ok(Some(limit)) = crate::backup::pg::interrupted_restore(url) {
            out.push(check(
                "restore",
                Level::Fail,
                format!(
                    "a restore died after refusing new connections to the database (connection limit 0; it was {limit}): roles that are not superusers cannot connect"
                ),
                Some(format!(
                    "'aica backup tidy' puts it back when no restore is running (or in psql: ALTER DATABASE <db> CONNECTION LIMIT {limit}; COMMENT ON DATABASE <db> IS NULL)"
                )),
            ));
        }
    }
    out.push(backup_debris(l));
    out.push(interrupted_restore(l));
    out.push(disk(
        &l.paths.data,
        s.health.disk_warn_free_mib,
        s.health.disk_fail_free_mib,
    ));
    out
}

fn dotenv(base: &Path) -> Check {
    let p = base.join(".env.production");
    match std::fs::metadata(&p) {
        Err(_) => check(
            ".env.production",
            Level::Pass,
            "not present (optional; defaults, aica.toml and AICA_* apply)",
            None,
        ),
        Ok(m) => {
            use std::os::unix::fs::PermissionsExt;
            if m.permissions().mode() & 0o004 != 0 {
                check(
                    ".env.production",
                    Level::Warn,
                    "present and readable by every user on this machine",
                    Some(format!("chmod 600 {}", p.display())),
                )
            } else {
                check(
                    ".env.production",
                    Level::Pass,
                    "present, readable only by its owner and group",
                    None,
                )
            }
        }
    }
}

fn port_check(name: &str, key: &str, host: &str, port: u16, published: Option<String>) -> Check {
    if port == 0 {
        return check(
            name,
            Level::Pass,
            format!("{key} = 0: a free port is chosen at start"),
            None,
        );
    }
    if let Some(addr) = published.filter(|a| a.ends_with(&format!(":{port}"))) {
        return check(
            name,
            Level::Pass,
            format!("{addr} is served by the running aica"),
            None,
        );
    }
    match TcpListener::bind((host, port)) {
        Ok(_) => check(name, Level::Pass, format!("{host}:{port} is free"), None),
        Err(e) => check(
            name,
            Level::Fail,
            format!("cannot bind {host}:{port}: {e}"),
            Some(format!(
                "stop what holds it (ss -ltnp 'sport = :{port}') or choose another port: --set {key}=PORT"
            )),
        ),
    }
}

fn writable(name: &str, dir: &Path) -> Check {
    let probe = dir.join(format!(".aica-doctor-{}", std::process::id()));
    let res = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe));
    match res {
        Ok(()) => check(
            name,
            Level::Pass,
            format!("{} is writable", dir.display()),
            None,
        ),
        Err(e) => check(
            name,
            Level::Fail,
            format!("{} is not writable: {e}", dir.display()),
            Some(format!(
                "chown/chmod {} for the user running aica, or point the paths.* setting elsewhere",
                dir.display()
            )),
        ),
    }
}

/// Name of the check that fails when the database server cannot be reached
/// (`aica doctor` exits 2 for it: the environment, not this machine's setup).
pub const UNREACHABLE: &str = "database server";

/// A read-only look at the PostgreSQL database: reachable, version, schema.
/// Runs on a blocking thread of the runtime.
fn postgres(url: &str) -> Check {
    let probe = tokio::runtime::Handle::current().block_on(crate::store::postgres::probe(url));
    let expected = crate::store::SCHEMA_VERSION;
    match probe {
        Ok(p) if p.schema > expected => check(
            "database",
            Level::Fail,
            format!(
                "PostgreSQL {} has aica schema version {}, newer than this aica supports ({expected})",
                p.server_version, p.schema
            ),
            Some("upgrade aica to the version the other replicas run, or restore a backup made by this version".into()),
        ),
        Ok(p) => check(
            "database",
            Level::Pass,
            format!(
                "PostgreSQL {} answers in {:.1} ms, schema version {}{}",
                p.server_version,
                p.round_trip.as_secs_f64() * 1000.0,
                p.schema,
                if p.schema < expected { " (migrated on next start)" } else { "" }
            ),
            None,
        ),
        Err(e @ crate::store::StoreError::Unavailable(_)) => check(
            UNREACHABLE,
            Level::Fail,
            e.to_string(),
            Some("start PostgreSQL or fix host, port, user and password in database.url (DATABASE_URL); 'pg_isready -h HOST -p PORT' tells whether it listens".into()),
        ),
        Err(e) => check(
            "database",
            Level::Fail,
            e.to_string(),
            Some("check database.url and the server's log".into()),
        ),
    }
}

/// Scratch databases of interrupted backup operations, and the databases
/// restores renamed aside: full copies of the data that only a person may drop.
fn postgres_leftovers(found: &[(String, i64, bool)]) -> Check {
    if found.is_empty() {
        return check(
            "database copies",
            Level::Pass,
            "no scratch or replaced databases on the server",
            None,
        );
    }
    let total: i64 = found.iter().map(|(_, b, _)| b).sum();
    let names: Vec<String> = found
        .iter()
        .map(|(n, b, orphan)| {
            format!(
                "{n} ({:.0} MiB{})",
                *b as f64 / 1_048_576.0,
                if *orphan { ", orphan" } else { "" }
            )
        })
        .collect();
    check(
        "database copies",
        Level::Warn,
        format!(
            "{} copies on the server take {:.0} MiB: {}",
            found.len(),
            total as f64 / 1_048_576.0,
            names.join(", ")
        ),
        Some(
            "orphans (scratch of dead operations of this machine) go with the next 'aica backup tidy'; other aica_verify_* copies belong to operations elsewhere (drop them once those are done); <db>_before_<time> is the data a restore replaced: keep it until 'aica backup list' shows a safety backup of it; <db>_restored_<time> holds a restore whose switch failed: switch to it or drop it"
                .into(),
        ),
    )
}

fn database(db: &Path) -> Check {
    if !db.exists() {
        return check(
            "database",
            Level::Pass,
            format!(
                "{} does not exist yet; it is created and migrated on first start",
                db.display()
            ),
            None,
        );
    }
    let res = crate::store::SqliteStore::quick_check_file(db).and_then(|problem| {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        Ok((problem, v))
    });
    match res {
        Ok((None, v)) if v <= crate::store::SCHEMA_VERSION => {
            check("database", Level::Pass, format!("{} opens, quick_check ok, schema version {v}", db.display()), None)
        }
        Ok((None, v)) => check(
            "database",
            Level::Fail,
            format!("{} has schema version {v}, newer than this aica supports ({})", db.display(), crate::store::SCHEMA_VERSION),
            Some("upgrade aica, or restore a backup made by this version".into()),
        ),
        Ok((Some(problem), _)) => check(
            "database",
            Level::Fail,
            format!("{} fails quick_check: {problem}", db.display()),
            Some("restore the newest verified backup ('make restore'); keep the damaged file for analysis".into()),
        ),
        Err(e) => check(
            "database",
            Level::Fail,
            format!("{} cannot be opened as SQLite: {e}", db.display()),
            Some("check the file is an aica database and readable; restore a backup if it is damaged".into()),
        ),
    }
}

/// A live restore that replaced the database but died before the uploads and
/// configuration were in place leaves a marker naming the backup.
fn interrupted_restore(l: &Loaded) -> Check {
    let marker = l.paths.data.join(crate::backup::restore::INCOMPLETE);
    match std::fs::read_to_string(&marker) {
        Ok(name) => {
            let name = name.trim().trim_end_matches(".aicabak").to_string();
            check(
                "restore",
                Level::Fail,
                format!(
                    "a restore of {name} was interrupted after the database was replaced: uploads and aica.toml may still be the old ones"
                ),
                Some(format!(
                    "aica backup restore {name} --yes   (finishes it; the old state is in the safety snapshot)"
                )),
            )
        }
        Err(_) => check("restore", Level::Pass, "no interrupted restore", None),
    }
}

/// What interrupted backup operations left behind (temporary archives, verify
/// and drill scratch, staged restores), unless one is running right now.
fn backup_debris(l: &Loaded) -> Check {
    if let Some(holder) = crate::run::lock::holder(&l.paths.backups.join(".lock")) {
        return check(
            "backup debris",
            Level::Pass,
            format!("a backup operation is running ({holder}); its temporary files are in use"),
            None,
        );
    }
    let debris = crate::backup::debris(l);
    if debris.is_empty() {
        return check(
            "backup debris",
            Level::Pass,
            "no files left by interrupted backup operations",
            None,
        );
    }
    let bytes: u64 = debris.iter().map(|d| d.bytes).sum();
    let list: Vec<String> = debris
        .iter()
        .take(5)
        .map(|d| d.path.display().to_string())
        .collect();
    check(
        "backup debris",
        Level::Warn,
        format!(
            "{} left by interrupted backup operations ({:.1} MiB): {}{}",
            debris.len(),
            bytes as f64 / 1_048_576.0,
            list.join(", "),
            if debris.len() > 5 { ", ..." } else { "" }
        ),
        Some(
            "aica backup tidy (every backup command except dry runs also removes them first)"
                .into(),
        ),
    )
}

fn disk(dir: &Path, warn_mib: u64, fail_mib: u64) -> Check {
    let probe = if dir.exists() {
        dir
    } else {
        dir.parent().unwrap_or(Path::new("/"))
    };
    match crate::util::free_disk_bytes(probe) {
        Ok(free) => {
            let mib = free / (1024 * 1024);
            let msg = format!("{mib} MiB free on the volume of {}", dir.display());
            let fix = Some(
                "free space (old logs, old backups: 'du -sh logs backups') or move paths.data_dir"
                    .to_string(),
            );
            if mib < fail_mib {
                check("disk", Level::Fail, msg, fix)
            } else if mib < warn_mib {
                check("disk", Level::Warn, msg, fix)
            } else {
                check("disk", Level::Pass, msg, None)
            }
        }
        Err(e) => check(
            "disk",
            Level::Warn,
            format!("cannot read free space of {}: {e}", probe.display()),
            None,
        ),
    }
}
