//! `aica backup create|list|verify|restore|prune|drill`.

use super::{Failed, Global, usage};
use crate::backup::{self, BackupError, BackupInfo, snapshot::CreateOptions};
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
        /// Restore to this file instead of the live database.
        #[arg(long)]
        target: Option<PathBuf>,
    },
    /// Delete backups outside the retention windows (backup.keep_*).
    Prune {
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore the newest backup into scratch, serve it, smoke-test it; report RTO and RPO.
    Drill {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn fail(e: BackupError) -> anyhow::Error {
    match e {
        BackupError::BadName(_) | BackupError::NotFound(_) => {
            usage(e.to_string(), "aica backup list")
        }
        BackupError::NoBackups(_) => Failed(1, format!("{e}\nTry: aica backup create")).into(),
        e => Failed(1, format!("error: {e}")).into(),
    }
}

fn age(unix: i64) -> String {
    if unix == 0 {
        return "-".into();
    }
    crate::util::human_secs((time::OffsetDateTime::now_utc().unix_timestamp() - unix).max(0) as u64)
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
            .map(|d| if d.ok { "pass" } else { "FAIL" })
            .unwrap_or("-");
        t.add_row(vec![
            b.name.clone(),
            b.created_at.clone(),
            age(b.created_unix),
            mib(b.size),
            format!("{:.1}x", b.ratio()),
            b.state.clone(),
            drill.into(),
            b.note.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
}

fn confirm(question: &str) -> bool {
    use std::io::{BufRead, Write};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes" | "YES")
}

pub async fn run(g: &Global, cmd: BackupCmd) -> anyhow::Result<u8> {
    let l = g.load(&[])?;
    let dir = l.paths.backups.clone();
    match cmd {
        BackupCmd::Create { note, verify } => {
            let opts = CreateOptions {
                kind: "manual".into(),
                note,
                progress: true,
            };
            let ll = l.clone();
            let b = tokio::task::spawn_blocking(move || backup::snapshot::create(&ll, &opts))
                .await?
                .map_err(fail)?;
            println!(
                "created {} ({}, {:.1}x smaller than the database)",
                b.name,
                mib(b.size),
                b.ratio()
            );
            if verify {
                let bb = b.clone();
                let d = dir.clone();
                tokio::task::spawn_blocking(move || {
                    let _lock = backup::BackupLock::acquire(&d, "verify")?;
                    backup::verify::verify(&bb, &d)
                })
                .await?
                .map_err(fail)?;
                println!("verified {}", b.name);
            }
            Ok(0)
        }
        BackupCmd::List { json } => {
            let list = backup::list(&dir).map_err(fail)?;
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
            Ok(0)
        }
        BackupCmd::Verify { name, all } => {
            let targets = if all {
                backup::list(&dir).map_err(fail)?
            } else {
                vec![backup::find(&dir, name.as_deref()).map_err(fail)?]
            };
            let d = dir.clone();
            let results = tokio::task::spawn_blocking(move || {
                let _lock = backup::BackupLock::acquire(&d, "verify")?;
                Ok::<_, BackupError>(
                    targets
                        .into_iter()
                        .map(|b| (b.name.clone(), backup::verify::verify(&b, &d).map(|_| ())))
                        .collect::<Vec<_>>(),
                )
            })
            .await?
            .map_err(fail)?;
            let mut bad = 0;
            for (name, r) in results {
                match r {
                    Ok(()) => println!("ok       {name}"),
                    Err(e) => {
                        bad += 1;
                        println!("CORRUPT  {name}: {e}");
                    }
                }
            }
            Ok(if bad > 0 { 1 } else { 0 })
        }
        BackupCmd::Restore {
            name,
            latest: _,
            dry_run,
            yes,
            target,
        } => {
            let b = backup::find(&dir, name.as_deref()).map_err(fail)?;
            let shown_target = target.clone().unwrap_or_else(|| l.paths.db.clone());
            if !dry_run && !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(usage(
                        format!(
                            "restoring {} over {} needs confirmation",
                            b.name,
                            shown_target.display()
                        ),
                        format!(
                            "aica backup restore {} --yes   (or --dry-run to only check)",
                            b.name.trim_end_matches(".aicabak")
                        ),
                    ));
                }
                if !confirm(&format!(
                    "Replace {} with backup {} (taken {})? A safety snapshot is taken first.",
                    shown_target.display(),
                    b.name,
                    b.created_at
                )) {
                    println!("restore cancelled; nothing changed");
                    return Ok(1);
                }
            }
            let ll = l.clone();
            let report = tokio::task::spawn_blocking(move || {
                backup::restore::restore(&ll, &b, target.as_deref(), dry_run)
            })
            .await?
            .map_err(fail)?;
            if dry_run {
                println!(
                    "dry run: {} verified; restoring it would replace {}. Nothing changed.",
                    report.backup,
                    report.target.display()
                );
            } else {
                println!(
                    "restored {} into {}",
                    report.backup,
                    report.target.display()
                );
                if let Some(s) = &report.safety_snapshot {
                    println!("the previous database is kept as safety snapshot {s}");
                }
                if let Some(p) = &report.moved_aside {
                    println!(
                        "the previous database could not be read; it was moved to {}",
                        p.display()
                    );
                }
            }
            for (t, n) in &report.tables {
                println!("  {t:<14} {n} rows");
            }
            Ok(0)
        }
        BackupCmd::Prune { dry_run } => {
            let ll = l.clone();
            let out = tokio::task::spawn_blocking(move || -> Result<_, BackupError> {
                let _lock = backup::BackupLock::acquire(&ll.paths.backups, "prune")?;
                let all = backup::list(&ll.paths.backups)?;
                let plan = backup::retention::plan(
                    &all,
                    &ll.settings.backup,
                    time::OffsetDateTime::now_utc().unix_timestamp(),
                );
                if !dry_run {
                    let mirror = backup::dest::mirror(&ll.settings, &ll.paths.base);
                    for d in plan.iter().filter(|d| !d.keep) {
                        let p = ll.paths.backups.join(&d.name);
                        std::fs::remove_file(backup::sidecar_path(&p)).ok();
                        std::fs::remove_file(&p)
                            .map_err(backup::io(format!("remove {}", p.display())))?;
                        if let Some(m) = &mirror {
                            m.delete(&d.name)?;
                        }
                    }
                }
                Ok(plan)
            })
            .await?
            .map_err(fail)?;
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
                    if r.ok { "PASSED" } else { "FAILED" },
                    r.backup
                );
                println!(
                    "  RTO {:.2} s (start to a restored server answering ready)",
                    r.rto_seconds
                );
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
