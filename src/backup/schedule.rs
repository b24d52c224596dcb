//! Scheduled backups inside `aica serve`: a cron expression (UTC), each run
//! logged, counted in `aica_backups_total{result}`, and verified if configured.

use crate::config::Loaded;
use std::time::Duration;

/// Take (and verify) one scheduled backup; returns its name.
pub fn run_once(l: &Loaded) -> super::Result<String> {
    let _lock = super::BackupLock::acquire(&l.paths.backups, "scheduled backup")?;
    let opts = super::snapshot::CreateOptions {
        kind: "scheduled".into(),
        note: None,
        progress: false,
    };
    let b = super::snapshot::create_locked(l, &l.paths.db, &opts)?;
    if l.settings.backup.verify_scheduled {
        super::verify::verify(&b, &l.paths.backups)?;
    }
    Ok(b.name)
}

/// Run forever: sleep until the next cron time, back up, repeat.
pub async fn run(l: Loaded) {
    let expr = l.settings.backup.schedule.trim().to_string();
    let Ok(cron) = expr.parse::<croner::Cron>() else {
        tracing::error!(
            schedule = expr,
            "backup.schedule is not a cron expression; scheduled backups are off"
        );
        return;
    };
    tracing::info!(schedule = expr, "scheduled backups on (UTC)");
    loop {
        let now = chrono::Utc::now();
        let Ok(next) = cron.find_next_occurrence(&now, false) else {
            tracing::error!(
                schedule = expr,
                "no next time for backup.schedule; scheduled backups stop"
            );
            return;
        };
        let wait = (next - now).to_std().unwrap_or(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
        let ll = l.clone();
        let start = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || run_once(&ll)).await {
            Ok(Ok(name)) => {
                metrics::counter!("aica_backups_total", "result" => "success").increment(1);
                tracing::info!(
                    backup = name,
                    secs = start.elapsed().as_secs_f64(),
                    "scheduled backup done"
                );
            }
            Ok(Err(e)) => {
                metrics::counter!("aica_backups_total", "result" => "failure").increment(1);
                tracing::error!(error = %e, "scheduled backup failed");
            }
            Err(e) => {
                metrics::counter!("aica_backups_total", "result" => "failure").increment(1);
                tracing::error!(error = %e, "scheduled backup task failed");
            }
        }
    }
}
