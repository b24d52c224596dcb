//! `aica backup restore` of a PostgreSQL backup: verify by restoring into a
//! fresh database, switch names in one transaction (or say exactly what to
//! switch), then dump the replaced database, which nothing can write any more,
//! as the safety snapshot.

use super::backup::{RestoreArgs, confirm, fail};
use super::{Failed, usage};
use crate::backup::{self, BackupInfo, BackupLock, Cancel, Kind};
use crate::config::Loaded;
use std::io::IsTerminal;

pub(super) fn restore(
    l: &Loaded,
    lock: &BackupLock,
    b: &BackupInfo,
    a: &RestoreArgs,
    url: &str,
) -> anyhow::Result<u8> {
    if a.target.is_some() {
        return Err(usage(
            "--target names a SQLite file; a PostgreSQL backup is restored into the database of database.url",
            "point DATABASE_URL at the database to restore into, then aica backup restore NAME",
        ));
    }
    let where_ = crate::store::Backend::Postgres(url.into()).describe();
    let _one_at_a_time = if a.dry_run {
        None
    } else {
        Some(backup::pg::restore_guard(url).map_err(fail)?)
    };
    let (replicas, from) = backup::pg::connected_sessions(url).map_err(fail)?;
    if a.dry_run {
        let v = backup::verify::verify(lock, b, &Cancel::default()).map_err(fail)?;
        println!(
            "dry run: {} verified (restored into a scratch database, row counts match); restoring it would replace the database {where_}. Nothing changed.",
            b.name
        );
        for (t, n) in &v.manifest.tables {
            println!("  {t:<14} {n} rows");
        }
        if replicas > 0 {
            println!(
                "note: {replicas} sessions are connected ({from}); the restore will refuse unless they are stopped or --disconnect-replicas is given"
            );
        }
        return Ok(0);
    }
    if replicas > 0 && !a.disconnect_replicas {
        return Err(Failed(
            1,
            format!(
                "error: {replicas} sessions are connected to {where_} ({from}): replicas are serving it.\nTry: stop them first (kubectl scale deployment aica-sys-backend --replicas=0, docker compose stop backend, or aica down), or add --disconnect-replicas to end their sessions at the switch (they reconnect to the restored data)"
            ),
        )
        .into());
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(usage(
                format!("restoring {} over {where_} needs confirmation", b.name),
                format!(
                    "aica backup restore {} --yes   (or --dry-run to only check)",
                    b.name.trim_end_matches(".aicabak")
                ),
            ));
        }
        if !confirm(&format!(
            "Replace the database {where_} with backup {} (taken {})? A safety dump is taken first.",
            b.name, b.created_at
        )) {
            println!("restore cancelled; nothing changed");
            return Ok(1);
        }
    }
    // 1. Verify: the dump is restored into a fresh database whose row counts must match.
    let mut v = backup::verify::verify(lock, b, &Cancel::default()).map_err(fail)?;
    let fresh = v
        .scratch
        .take()
        .ok_or_else(|| anyhow::anyhow!("verification kept no restored database"))?;
    // 2. The switch: nothing writes to the old data after it.
    let swapped = backup::pg::swap(url, fresh, a.disconnect_replicas).map_err(fail)?;
    println!("restored {} into {where_}", b.name);
    // 3. The replaced database, kept under its new name, dumped as the safety snapshot.
    if let Some(previous) = &swapped.previous {
        let old = url::Url::parse(url)
            .map(|mut u| {
                u.set_path(&format!("/{previous}"));
                u.to_string()
            })
            .unwrap_or_default();
        let safety = backup::snapshot::create_locked(
            lock,
            l,
            &crate::store::Backend::Postgres(old),
            &backup::snapshot::CreateOptions {
                kind: Kind::Safety,
                note: Some(format!("before restoring {}", b.name)),
                progress: false,
                cancel: Cancel::default(),
            },
        );
        match safety {
            Ok(s) => println!(
                "the previous database is kept as database {previous:?} and as safety dump {}",
                s.info.name
            ),
            Err(e) => eprintln!(
                "warning: the previous data is intact in database {previous:?}, but its safety dump failed: {e}\nTry: aica backup create (with DATABASE_URL naming {previous:?}) before dropping it"
            ),
        }
    }
    for (t, n) in &v.manifest.tables {
        println!("  {t:<14} {n} rows");
    }
    Ok(0)
}
