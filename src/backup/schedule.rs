//! Scheduled backups inside `aica serve`: a cron expression (UTC), each run
//! logged, counted in `aica_backups_total{result}`, and verified if configured.
//! Across replicas a tick runs once: only the scheduler leader tries, and it
//! first claims the tick in the database (a unique row per job and tick).

use super::Cancel;
use crate::config::Loaded;
use crate::store::ContentStore;
use std::sync::Arc;
use std::time::Duration;

/// The job's name in the run history.
pub const JOB: &str = "backup";

/// Who may run a tick: the leader (if there are replicas) that claims it first.
pub struct Gate {
    pub store: Arc<dyn ContentStore>,
    /// `None` for one process; otherwise whether this replica leads.
    pub leader: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Gate {
    /// Whether this process runs the tick at `tick`; records the claim.
    async fn admit(&self, tick: &str) -> bool {
        if let Some(l) = &self.leader
            && !*l.borrow()
        {
            tracing::debug!(
                tick,
                "not the scheduler leader: another replica runs this backup"
            );
            return false;
        }
        let (store, t) = (self.store.clone(), tick.to_string());
        match tokio::task::spawn_blocking(move || store.claim_run(JOB, &t)).await {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => {
                tracing::info!(tick, "scheduled backup already claimed by another replica");
                false
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, tick, "cannot record the scheduled backup run; skipping this tick");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "claim task failed");
                false
            }
        }
    }

    async fn finish(&self, tick: &str, outcome: &str, detail: String) {
        let (store, t, o) = (self.store.clone(), tick.to_string(), outcome.to_string());
        let res = tokio::task::spawn_blocking(move || store.finish_run(JOB, &t, &o, &detail)).await;
        if !matches!(res, Ok(Ok(()))) {
            tracing::warn!(tick, "cannot record how the scheduled backup ended");
        }
    }
}

/// Take (and verify) one scheduled backup; returns its name.
pub fn run_once(l: &Loaded, cancel: &Cancel) -> super::Result<String> {
    let lock = super::BackupLock::acquire(l, "scheduled backup")?;
    let opts = super::snapshot::CreateOptions {
        kind: super::Kind::Scheduled,
        note: None,
        progress: false,
        cancel: cancel.clone(),
    };
    let b = super::snapshot::create(&lock, l, &opts)?.info;
    if l.settings.backup.verify_scheduled {
        super::verify::verify(&lock, &b, cancel)?;
    }
    Ok(b.name)
}

async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let ok = stop.wait_for(|s| *s).await.is_ok();
    if !ok {
        // The sender is gone: nobody can ask us to stop any more.
        std::future::pending::<()>().await;
    }
}

/// Run until `stop` turns true: sleep until the next cron time, back up,
/// repeat. A backup running when `stop` turns is cancelled and waited for,
/// so nothing outlives the server's lock and pid file.
pub async fn run(l: Loaded, gate: Gate, mut stop: tokio::sync::watch::Receiver<bool>) {
    let expr = l.settings.backup.schedule.trim().to_string();
    let Ok(cron) = crate::config::parse_cron(&expr) else {
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
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => return,
        }
        let tick = next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if !gate.admit(&tick).await {
            // Past the tick, so the next occurrence is the following one.
            continue;
        }
        let (ll, cancel) = (l.clone(), Cancel::default());
        let c = cancel.clone();
        let start = std::time::Instant::now();
        let mut job = tokio::task::spawn_blocking(move || run_once(&ll, &c));
        let res = tokio::select! {
            r = &mut job => r,
            _ = stopped(&mut stop) => {
                tracing::warn!("shutdown: cancelling the scheduled backup in progress");
                cancel.cancel();
                let r = job.await;
                tracing::warn!(outcome = ?r.as_ref().map(|r| r.as_ref().map_err(|e| e.to_string())), "scheduled backup stopped for shutdown");
                return;
            }
        };
        match res {
            Ok(Ok(name)) => {
                gate.finish(&tick, "success", name.clone()).await;
                metrics::counter!("aica_backups_total", "result" => "success").increment(1);
                tracing::info!(
                    backup = name,
                    secs = start.elapsed().as_secs_f64(),
                    "scheduled backup done"
                );
            }
            Ok(Err(e)) => {
                gate.finish(&tick, "failure", e.to_string()).await;
                metrics::counter!("aica_backups_total", "result" => "failure").increment(1);
                tracing::error!(error = %e, "scheduled backup failed");
            }
            Err(e) => {
                gate.finish(&tick, "failure", e.to_string()).await;
                metrics::counter!("aica_backups_total", "result" => "failure").increment(1);
                tracing::error!(error = %e, "scheduled backup task failed");
            }
        }
    }
}
