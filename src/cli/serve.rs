//! `aica serve`: backend and console in the foreground, with graceful shutdown.

use super::{Failed, Global};
use crate::console::{self, ConsoleState};
use crate::http::{self, AppState};
use crate::run::pidfile::{PidInfo, RunLock};
use crate::telemetry;
use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// Flags shared by `serve`, `up` and `restart`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address to bind (server.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Backend port (server.port; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Console port (console.port; 0 picks a free one).
    #[arg(long)]
    pub console_port: Option<u16>,
}

impl ServeArgs {
    pub fn overrides(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(h) = &self.host {
            v.push(format!("server.host={h}"));
        }
        if let Some(p) = self.port {
            v.push(format!("server.port={p}"));
        }
        if let Some(p) = self.console_port {
            v.push(format!("console.port={p}"));
        }
        v
    }
}

async fn bind(host: &str, port: u16, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((host, port)).await.map_err(|e| {
        super::usage(
            format!("cannot listen on {host}:{port} ({key}): {e}"),
            format!("'aica doctor' shows what holds the port; or choose another: --set {key}=PORT"),
        )
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

pub async fn run(g: &Global, a: &ServeArgs) -> anyhow::Result<u8> {
    let loaded = g.load(&a.overrides())?;
    let (s, paths) = (&loaded.settings, &loaded.paths);
    let lock = RunLock::acquire(&paths.run, "serve").map_err(|busy| {
        let hint = if busy.info.is_some() {
            "aica status, or aica down to stop it"
        } else {
            "wait for that operation to finish (aica status shows it), then start again"
        };
        Failed(
            1,
            format!(
                "cannot start in {}: {busy}\nTry: {hint}",
                paths.base.display()
            ),
        )
    })?;
    let redactor = crate::config::Redactor::new(&loaded.secrets);
    let _log = telemetry::logging::init_server(
        &paths.logs,
        &s.logging.level,
        s.logging.retention_days as usize,
        redactor,
    )?;
    telemetry::metrics::handle();
    let upkeep = telemetry::metrics::spawn_upkeep();

    let backend_listener = bind(&s.server.host, s.server.port, "server.port").await?;
    let console_listener = bind(&s.server.host, s.console.port, "console.port").await?;
    let backend_addr: SocketAddr = backend_listener.local_addr()?;
    let console_addr: SocketAddr = console_listener.local_addr()?;

    // Uploads live under the data directory whatever the database is.
    std::fs::create_dir_all(&paths.data)
        .with_context(|| format!("cannot create {}", paths.data.display()))?;
    let (pool, seed) = (s.database.pool_size, s.database.seed_demo);
    let opened = crate::store::open(&paths.backend, pool, seed)
        .await
        .with_context(|| {
            format!(
                "cannot open the {} database {}",
                paths.backend.name(),
                paths.backend.describe()
            )
        })?;
    let store = opened.store;
    let state = AppState::new(store.clone(), s.clone(), paths);
    // Replicas on PostgreSQL: follow each other's writes, elect one scheduler.
    let mut replica_tasks = Vec::new();
    let mut leader = None;
    if let Some(coord) = opened.coordination {
        replica_tasks.push(http::replicas::spawn_change_feed(&state, coord.clone()));
        let every = Duration::from_secs(s.scheduler.leader_check_secs);
        let (rx, task) = http::replicas::spawn_election(&state, coord, every);
        replica_tasks.push(task);
        leader = Some(rx);
    }

    // Integrity in the background: at start, then every interval.
    let qc_state = state.clone();
    let qc_every = Duration::from_secs(s.health.quick_check_interval_secs);
    let qc_task = tokio::spawn(async move {
        loop {
            qc_state.refresh_quick_check().await;
            tokio::time::sleep(qc_every).await;
        }
    });

    let (tx, rx) = tokio::sync::watch::channel(false);
    let backup_task = (!s.backup.schedule.trim().is_empty()).then(|| {
        let gate = crate::backup::schedule::Gate {
            store: store.clone(),
            leader: leader.clone(),
        };
        tokio::spawn(crate::backup::schedule::run(
            loaded.clone(),
            gate,
            rx.clone(),
        ))
    });

    let local = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        } else {
            a
        }
    };
    let backend_url = if s.console.backend_url.is_empty() {
        format!("http://{}", local(backend_addr))
    } else {
        s.console.backend_url.clone()
    };
    let now = time::OffsetDateTime::now_utc();
    lock.publish(&PidInfo {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: crate::util::fmt_time(now),
        started_unix: now.unix_timestamp(),
        backend: local(backend_addr).to_string(),
        console: local(console_addr).to_string(),
        database: paths.backend.describe(),
        log_dir: paths.logs.display().to_string(),
    })
    .with_context(|| format!("cannot write pid file in {}", paths.run.display()))?;
    tracing::info!(backend = %backend_addr, console = %console_addr, database = %paths.backend.describe(), version = env!("CARGO_PKG_VERSION"), "aica serving");

    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let limits = crate::web::limits(&s.server);
    let backend = tokio::spawn(http::serve(
        backend_listener,
        http::app(state.clone()),
        limits,
        wait(rx.clone()),
    ));
    let console = tokio::spawn(http::serve(
        console_listener,
        console::app(ConsoleState::new(backend_url)),
        limits,
        wait(rx),
    ));

    shutdown_signal().await;
    // Rolling restarts: say "not ready" first and keep serving while load
    // balancers notice, then stop accepting and finish what is in flight.
    state.replicas.start_draining();
    let drain = Duration::from_secs(s.server.drain_secs);
    if !drain.is_zero() {
        tracing::info!(
            drain_secs = drain.as_secs(),
            "shutdown requested: /health/ready answers 503 while draining"
        );
        tokio::select! {
            _ = tokio::time::sleep(drain) => {}
            _ = shutdown_signal() => tracing::warn!("second signal: draining cut short"),
        }
    }
    tracing::info!("shutdown: no new connections, finishing in-flight requests");
    let _ = tx.send(true);
    let grace = Duration::from_secs(s.server.shutdown_grace_secs);
    if tokio::time::timeout(grace, async {
        let _ = backend.await;
        let _ = console.await;
    })
    .await
    .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish within the grace period"
        );
    }
    qc_task.abort();
    upkeep.abort();
    if let Some(t) = backup_task {
        // A scheduled backup in progress is cancelled and waited for: nothing
        // may outlive the run lock and the pid file.
        let _ = t.await;
    }
    for t in replica_tasks {
        t.abort();
    }
    let st = store.clone();
    let done =
        tokio::task::spawn_blocking(move || st.file_maintenance().map(|m| m.checkpoint())).await;
    match done {
        Ok(Some(Ok(()))) => tracing::info!("WAL checkpointed"),
        Ok(Some(Err(e))) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint task failed"),
    }
    tracing::info!("aica stopped");
    drop(lock);
    Ok(0)
}
