//! `aica backup create|list|verify|restore|prune|drill`.

use super::{Failed, Global, usage};
use crate::backup::restore::Target;
use crate::backup::{self, BackupError, BackupInfo, BackupLock, Cancel, Kind, State};
use crate::config::Loaded;
use clap::Subcommand;
use comfy_table::Table;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Take a consistent online backup of the live database (the server may keep running).
    Create {
        #[arg(long)]
        note: Option<String>,
        /// Verify it right away (checksums, integrity_check, row counts).
        #[arg(long)]
        verify: bool,
    },
    /// Newest first: name, time, age, size, ratio, state, note.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Check checksums, integrity and row counts; the result shows in `list`.
    Verify {
        /// Backup name (default: the newest).
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Replace the database with a verified backup (a safety snapshot is taken first).
    Restore {
        name: Option<String>,
        /// Use the newest backup.
        #[arg(long, conflicts_with = "name")]
        latest: bool,
        /// Verify and show what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation (for scripts).
        #[arg(long)]
        yes: bool,
        /// Restore to this file instead of the live database (relative to --dir).
        #[arg(long)]
        target: Option<PathBuf>,
        /// Also replace an existing aica.toml with the backup's copy (a missing one is always restored).
        #[arg(long)]
        with_config: bool,
        /// PostgreSQL: end the sessions of running replicas at the switch (they
        /// reconnect to the restored data); without it a restore refuses while they serve.
        #[arg(long)]
        disconnect_replicas: bool,
    },
    /// Delete backups outside the retention windows (backup.keep_*).
    Prune {
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove what interrupted backup operations left behind (every backup command but dry runs does this first).
    Tidy,
    /// Restore the newest backup into scratch, serve it, smoke-test it; report RTO and RPO.
    Drill {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn fail(e: BackupError) -> anyhow::Error {
    match e {
        BackupError::BadName(_) | BackupError::NotFound(_) => {
            usage(e.to_string(), "aica backup list")
        }
        BackupError::NoBackups(_) => Failed(1, format!("{e}\nTry: aica backup create")).into(),
        e => Failed(1, format!("error: {e}")).into(),
    }
}

fn age(unix: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if unix == 0 {
        return "-".into();
    }
    if unix > now + backup::FUTURE_SLACK_SECS {
        return format!(
            "IN THE FUTURE ({})",
            crate::util::human_secs((unix - now) as u64)
        );
    }
    crate::util::human_secs((now - unix).max(0) as u64)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1_048_576.0)
}

fn print_list(list: &[BackupInfo]) {
    let mut t = Table::new();
    t.set_header(vec![
        "name", "created", "age", "size", "ratio", "state", "drill", "note",
    ]);
    for b in list {
        let drill = b
            .drill
            .as_ref()
            .map(|d| if d.ok() { "pass" } else { "FAIL" })
            .unwrap_or("-");
        let ratio = if b.ratio() > 0.0 {
            format!("{:.1}x", b.ratio())
        } else {
            "-".into()
        };
        t.add_row(vec![
            b.name.clone(),
            b.created_at.clone(),
            age(b.created_unix),
            mib(b.size),
            ratio,
            b.state.as_str().into(),
            drill.into(),
            b.note
                .as_deref()
                .unwrap_or_default()
                .chars()
                .flat_map(|c| {
                    if c.is_control() {
                        c.escape_default().collect::<Vec<_>>()
                    } else {
                        vec![c]
                    }
                })
                .collect::<String>(),
        ]);
    }
    println!("{t}");
}

pub(super) fn confirm(question: &str) -> bool {
    use std::io::{BufRead, Write};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes" | "YES")
}

/// Run blocking backup work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

fn lock(l: &Loaded, what: &str) -> anyhow::Result<BackupLock> {
    BackupLock::acquire(l, what).map_err(fail)
}

fn create(l: &Loaded, note: Option<String>, verify: bool) -> anyhow::Result<u8> {
    if let Some(n) = &note
        && (n.chars().count() > 500 || n.chars().any(char::is_control))
    {
        return Err(usage(
            "--note must be at most 500 characters on one line, without control characters",
            "aica backup create --note \"before the 1.4 deploy\"",
        ));
    }
    let lock = lock(l, "create")?;
    let opts = backup::snapshot::CreateOptions {
        kind: Kind::Manual,
        note,
        progress: true,
        cancel: Cancel::default(),
    };
    let c = backup::snapshot::create(&lock, l, &opts).map_err(fail)?;
    let b = c.info;
    if b.ratio() > 0.0 {
        println!(
            "created {} ({}, {:.1}x smaller than the database)",
            b.name,
            mib(b.size),
            b.ratio()
        );
    } else {
        println!("created {} ({})", b.name, mib(b.size));
    }
    if let Some(e) = c.mirror_error {
        eprintln!(
            "warning: the local backup is complete, but its copy to the mirror failed: {e}\nTry: check that backup.mirror_dir is a writable directory on another volume (mounted, with free space), then 'aica backup create' again"
        );
    }
    if verify {
        backup::verify::verify(&lock, &b, &Cancel::default()).map_err(fail)?;
        println!("verified {}", b.name);
    }
    Ok(0)
}

fn verify(l: &Loaded, name: Option<String>, all: bool) -> anyhow::Result<u8> {
    let lock = lock(l, "verify")?;
    let targets = if all {
        backup::list(lock.dir()).map_err(fail)?
    } else {
        vec![backup::find(lock.dir(), name.as_deref()).map_err(fail)?]
    };
    let mut bad = 0;
    for b in targets {
        if b.state == State::NoSidecar {
            bad += 1;
            println!(
                "UNREADABLE {}: no sidecar and no readable manifest; it cannot be restored. Move it out of {}",
                b.name,
                lock.dir().display()
            );
            continue;
        }
        match backup::verify::verify(&lock, &b, &Cancel::default()) {
            Ok(_) => println!("ok       {}", b.name),
            Err(e) if e.is_evidence() => {
                bad += 1;
                println!("CORRUPT  {}: {e}", b.name);
            }
            Err(e @ BackupError::SidecarMismatch { .. }) => {
                bad += 1;
                println!("MISMATCH {}: {e}", b.name);
            }
            Err(e) => {
                bad += 1;
                println!(
                    "ERROR    {}: {e} (the backup's state is unchanged: this says nothing about the backup)",
                    b.name
                );
            }
        }
    }
    Ok(if bad > 0 { 1 } else { 0 })
}

pub(super) struct RestoreArgs {
    pub name: Option<String>,
    pub dry_run: bool,
    pub yes: bool,
    pub target: Option<PathBuf>,
    pub with_config: bool,
    pub disconnect_replicas: bool,
}

/// The settings a restore of the live database must use: when the backup's
/// `aica.toml` is going to be installed (there is none, or --with-config), its
/// paths decide where the database and uploads go, so the restored data is
/// where the restored configuration looks for it.
fn settings_for_restore(
    g: &Global,
    l: &Loaded,
    b: &BackupInfo,
    a: &RestoreArgs,
) -> anyhow::Result<Loaded> {
    let installs = a.target.is_none()
        && (a.with_config || !l.paths.base.join("aica.toml").exists())
        && backup::read_sidecar(&b.path).is_some_and(|s| {
            s.manifest
                .members
                .iter()
                .any(|m| m.path == "config/aica.toml")
        });
    if !installs {
        return Ok(l.clone());
    }
    let Some(bytes) = backup::verify::read_member(&b.path, "config/aica.toml").map_err(fail)?
    else {
        return Ok(l.clone());
    };
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-restore-config-")
        .tempfile_in(&l.paths.backups)?;
    std::fs::write(tmp.path(), &bytes)?;
    let l2 = g
        .load_from(Some(tmp.path().to_path_buf()), &[])
        .map_err(|e| {
            usage(
                format!(
                    "the aica.toml inside {} cannot be used by this aica: {e:#}",
                    b.name
                ),
                format!(
                    "write an aica.toml first, then aica backup restore {} --yes",
                    b.name.trim_end_matches(".aicabak")
                ),
            )
        })?;
    if l2.paths.db != l.paths.db || l2.paths.data != l.paths.data {
        println!(
            "the backup's aica.toml puts the database at {} and uploads under {}; restoring there",
            l2.paths.db.display(),
            l2.paths.data.display()
        );
    }
    if l2.paths.run != l.paths.run
        && let crate::run::pidfile::RunState::Running { info, holder } =
            crate::run::pidfile::state(&l.paths.run)
    {
        return Err(Failed(
            1,
            format!(
                "{} is running from {} ({holder}); stop it first.\nTry: aica down",
                info.map(|i| format!("aica (pid {})", i.pid))
                    .unwrap_or_else(|| "something".into()),
                l.paths.run.display()
            ),
        )
        .into());
    }
    Ok(l2)
}

fn restore(g: &Global, l: &Loaded, a: RestoreArgs) -> anyhow::Result<u8> {
    let lock = if a.dry_run {
        BackupLock::acquire_for_preview(l, "restore --dry-run").map_err(fail)?
    } else {
        lock(l, "restore")?
    };
    let b = backup::find(lock.dir(), a.name.as_deref()).map_err(fail)?;
    let engine = backup::read_sidecar(&b.path)
        .map(|s| s.manifest.engine)
        .unwrap_or_else(|| "sqlite".into());
    match (engine.as_str(), &l.paths.backend) {
        ("postgres", crate::store::Backend::Postgres(url)) => {
            return super::backup_pg::restore(l, &lock, &b, &a, url);
        }
        ("postgres", _) => {
            return Err(usage(
                format!(
                    "{} holds a PostgreSQL dump, and this aica is configured for SQLite",
                    b.name
                ),
                "DATABASE_URL=postgres://user:password@host:5432/db aica backup restore NAME",
            ));
        }
        (_, crate::store::Backend::Postgres(_)) if a.target.is_none() => {
            return Err(usage(
                format!(
                    "{} holds a SQLite database, and this aica is configured for PostgreSQL (database.url)",
                    b.name
                ),
                format!(
                    "aica backup restore {} --target restored.db   (restores it to a SQLite file)",
                    b.name.trim_end_matches(".aicabak")
                ),
            ));
        }
        _ => {}
    }
    let l = &settings_for_restore(g, l, &b, &a)?;
    let target = Target::resolve(l, a.target.as_deref()).map_err(|e| {
        usage(
            e.to_string(),
            "aica backup restore NAME --target /path/to/new-file.db   (or no --target for the live database)",
        )
    })?;
    if a.dry_run {
        let r = backup::restore::preview(&lock, &b, &target).map_err(fail)?;
        println!(
            "dry run: {} verified; restoring it would replace {}{}. Nothing changed.",
            r.backup,
            r.target.display(),
            if target.is_live() {
                " (the live database)"
            } else {
                ""
            }
        );
        for (t, n) in &r.tables {
            println!("  {t:<14} {n} rows");
        }
        if target.is_live()
            && let crate::run::pidfile::RunState::Running { holder, .. } =
                crate::run::pidfile::state(&l.paths.run)
        {
            println!(
                "note: the run lock is held by {holder}; the restore itself will refuse until it stops (aica down)"
            );
        }
        return Ok(0);
    }
    let ex = target.exclusive(l, &b.name).map_err(fail)?;
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(usage(
                format!(
                    "restoring {} over {} needs confirmation",
                    b.name,
                    target.path().display()
                ),
                format!(
                    "aica backup restore {} --yes   (or --dry-run to only check)",
                    b.name.trim_end_matches(".aicabak")
                ),
            ));
        }
        if !confirm(&format!(
            "Replace {} with backup {} (taken {})? A safety snapshot is taken first.",
            target.path().display(),
            b.name,
            b.created_at
        )) {
            println!("restore cancelled; nothing changed");
            return Ok(1);
        }
    }
    let r = backup::restore::restore(&lock, l, &b, &ex, a.with_config).map_err(fail)?;
    println!("restored {} into {}", r.backup, r.target.display());
    if let Some(s) = &r.safety_snapshot {
        println!("the previous database is kept as safety snapshot {s}");
    }
    if let Some(p) = &r.moved_aside {
        println!(
            "the previous database could not be read; it was moved (with its -wal and -shm) to {}",
            p.display()
        );
    }
    if let Some(n) = r.uploads {
        println!("uploads: {n} files restored");
    }
    if let Some(c) = &r.config {
        println!("config: {c}");
    }
    if let Some(w) = &r.warning {
        eprintln!("warning: {w}");
    }
    for (t, n) in &r.tables {
        println!("  {t:<14} {n} rows");
    }
    if let Some(e) = &r.files_error {
        return Err(Failed(
            1,
            format!(
                "error: {e}\nTry: aica doctor, then aica backup restore {} --yes again",
                r.backup.trim_end_matches(".aicabak")
            ),
        )
        .into());
    }
    Ok(0)
}

fn prune(l: &Loaded, dry_run: bool) -> anyhow::Result<u8> {
    let lock = if dry_run {
        BackupLock::acquire_for_preview(l, "prune --dry-run").map_err(fail)?
    } else {
        lock(l, "prune")?
    };
    let out = backup::retention::prune(&lock, l, dry_run).map_err(fail)?;
    let deleted = out.iter().filter(|d| !d.keep).count();
    for d in &out {
        println!(
            "{} {}  ({})",
            if d.keep {
                "keep  "
            } else if dry_run {
                "would delete"
            } else {
                "deleted"
            },
            d.name,
            d.reason
        );
    }
    println!(
        "{} kept, {} {}",
        out.len() - deleted,
        deleted,
        if dry_run {
            "would be deleted (dry run)"
        } else {
            "deleted"
        }
    );
    Ok(0)
}

pub async fn run(g: &Global, cmd: BackupCmd) -> anyhow::Result<u8> {
    let l = g.load(&[])?;
    match cmd {
        BackupCmd::Create { note, verify } => blocking(move || create(&l, note, verify)).await,
        BackupCmd::List { json } => {
            let dir = &l.paths.backups;
            let list = backup::list(dir).map_err(fail)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!(
                    "no backups in {} yet; take one with 'aica backup create'",
                    dir.display()
                );
            } else {
                print_list(&list);
            }
            let ignored = backup::ignored(dir);
            if !ignored.is_empty() {
                eprintln!("ignored (not backups aica made): {}", ignored.join(", "));
            }
            Ok(0)
        }
        BackupCmd::Verify { name, all } => blocking(move || verify(&l, name, all)).await,
        BackupCmd::Restore {
            name,
            latest: _,
            dry_run,
            yes,
            target,
            with_config,
            disconnect_replicas,
        } => {
            let a = RestoreArgs {
                name,
                dry_run,
                yes,
                target,
                with_config,
                disconnect_replicas,
            };
            let g = g.clone();
            blocking(move || restore(&g, &l, a)).await
        }
        BackupCmd::Prune { dry_run } => blocking(move || prune(&l, dry_run)).await,
        BackupCmd::Tidy => {
            blocking(move || {
                // Scratch databases of dead operations (PostgreSQL) count too.
                let orphans = || match &l.paths.backend {
                    crate::store::Backend::Postgres(url) => backup::pg::leftovers(url)
                        .map(|v| {
                            v.into_iter()
                                .filter(|(_, _, orphan)| *orphan)
                                .map(|(_, b, _)| b.max(0) as u64)
                                .collect()
                        })
                        .unwrap_or_default(),
                    crate::store::Backend::Sqlite(_) => Vec::new(),
                };
                let (before, dbs_before) = (backup::debris(&l), orphans());
                let lock = lock(&l, "tidy")?;
                let (left, dbs_left) = (backup::debris(&l), orphans());
                drop(lock);
                let bytes = |files: &[backup::Debris], dbs: &[u64]| {
                    files.iter().map(|d| d.bytes).sum::<u64>() + dbs.iter().sum::<u64>()
                };
                let freed = bytes(&before, &dbs_before).saturating_sub(bytes(&left, &dbs_left));
                let (n_before, n_left) =
                    (before.len() + dbs_before.len(), left.len() + dbs_left.len());
                println!(
                    "removed {} leftovers of interrupted operations ({}); {} could not be removed",
                    n_before - n_left.min(n_before),
                    mib(freed),
                    n_left
                );
                Ok(if n_left == 0 { 0 } else { 1 })
            })
            .await
        }
        BackupCmd::Drill { name, json } => {
            let exe = std::env::current_exe()?;
            let r = backup::drill::drill(&l, name.as_deref(), &exe)
                .await
                .map_err(fail)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "drill {}: backup {}",
                    if r.ok {
                        "PASSED"
                    } else if r.inconclusive {
                        "INCONCLUSIVE (the environment failed, not the backup; its state is unchanged)"
                    } else {
                        "FAILED"
                    },
                    r.backup
                );
                if r.rto_seconds > 0.0 {
                    println!(
                        "  RTO {:.2} s (start to a restored server answering ready)",
                        r.rto_seconds
                    );
                } else {
                    println!("  RTO not measured: the restored server never answered ready");
                }
                println!(
                    "  RPO {} (age of the backup)",
                    crate::util::human_secs(r.rpo_seconds.max(0) as u64)
                );
                for s in &r.smoke {
                    println!(
                        "  {} {} -> {} ({})",
                        if s.ok { "ok  " } else { "FAIL" },
                        s.request,
                        s.status,
                        s.detail
                    );
                }
                if let Some(e) = &r.error {
                    println!("  error: {e}");
                }
                println!("  report: {}", r.report_markdown.display());
            }
            Ok(if r.ok { 0 } else { 1 })
        }
    }
}
