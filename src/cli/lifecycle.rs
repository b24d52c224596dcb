//! `aica up`, `down`, `restart`, `status`: the background server's lifecycle.

use super::serve::ServeArgs;
use super::{Failed, Global};
use crate::run::pidfile::{self, PidInfo, RunState};
use comfy_table::Table;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct DownArgs {
    /// Seconds to wait for a graceful stop.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Poll `cond` every 50 ms until it yields a value or `deadline` passes.
async fn wait_until<T, F, Fut>(deadline: Duration, mut cond: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = cond().await {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("an HTTP client without TLS always builds")
}

async fn get_status(url: &str) -> Option<(u16, serde_json::Value)> {
    let r = client().get(url).send().await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.json().await.unwrap_or_default()))
}

fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn child_args(g: &Global, a: &ServeArgs, dir: &std::path::Path) -> Vec<String> {
    let mut v = vec!["--dir".to_string(), dir.display().to_string()];
    if let Some(c) = &g.config {
        v.push("--config".into());
        v.push(dir.join(c).display().to_string());
    }
    for s in &g.set {
        v.push("--set".into());
        v.push(s.clone());
    }
    v.push("serve".into());
    v.extend(
        a.overrides()
            .into_iter()
            .flat_map(|o| ["--set".to_string(), o]),
    );
    v
}

pub async fn up(g: &Global, a: &ServeArgs) -> anyhow::Result<u8> {
    let loaded = g.load(&a.overrides())?;
    let paths = &loaded.paths;
    match pidfile::state(&paths.run) {
        RunState::Running { info: Some(i), .. } => {
            println!(
                "aica is already running (pid {}, backend http://{})",
                i.pid, i.backend
            );
            return Ok(0);
        }
        RunState::Running { info: None, holder } => {
            return Err(Failed(
                1,
                format!(
                    "cannot start: the run lock is held by {holder}\nTry: wait for it to finish, then aica up"
                ),
            )
            .into());
        }
        RunState::Stale(info) => {
            pidfile::clean_stale(&paths.run);
            let pid = info
                .map(|i| i.pid.to_string())
                .unwrap_or_else(|| "?".into());
            println!("removed stale pid file (pid {pid} is no longer running)");
        }
        RunState::NotRunning => {}
    }
    std::fs::create_dir_all(&paths.logs)?;
    let out_path = paths.logs.join("aica.out");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(child_args(g, a, &paths.base))
        .current_dir(&paths.base)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let run = paths.run.clone();
    let ready = wait_until(Duration::from_secs(120), || {
        let exited = child.try_wait().ok().flatten();
        let run = run.clone();
        async move {
            if let Some(status) = exited {
                return Some(Err(status));
            }
            let RunState::Running {
                info: Some(info), ..
            } = pidfile::state(&run)
            else {
                return None;
            };
            if info.pid != pid {
                return None;
            }
            match get_status(&format!("http://{}/health/ready", info.backend)).await {
                Some((200, _)) => Some(Ok(info)),
                _ => None,
            }
        }
    })
    .await;
    match ready {
        Some(Ok(info)) => {
            println!("aica is up (pid {})", info.pid);
            println!("  backend  http://{}", info.backend);
            println!("  console  http://{}", info.console);
            println!("  database {}", info.database);
            println!("  logs     {}/aica.log  (aica logs, make logs)", info.log_dir);
            Ok(0)
        }
        Some(Err(status)) => Err(Failed(
            1,
            format!(
                "aica exited during start ({status}). Last lines of {}:\n{}\nTry: aica doctor",
                out_path.display(),
                tail(&out_path, 15)
            ),
        )
        .into()),
        None => Err(Failed(
            1,
            format!(
                "aica (pid {pid}) did not become ready within 120 s; it is still running.\nLast lines of {}:\n{}\nTry: aica logs --level warn, then aica down",
                out_path.display(),
                tail(&out_path, 15)
            ),
        )
        .into()),
    }
}

pub async fn down(g: &Global, a: &DownArgs) -> anyhow::Result<u8> {
    let loaded = g.load(&[])?;
    let run = loaded.paths.run.clone();
    let info = match pidfile::state(&run) {
        RunState::NotRunning => {
            println!("aica is not running");
            return Ok(0);
        }
        RunState::Stale(info) => {
            pidfile::clean_stale(&run);
            let pid = info
                .map(|i| i.pid.to_string())
                .unwrap_or_else(|| "?".into());
            println!("aica is not running (removed stale pid file of pid {pid})");
            return Ok(0);
        }
        RunState::Running { info: None, holder } => {
            return Err(Failed(
                1,
                format!(
                    "the run lock in {} is held by {holder}, which is not a server aica down can stop\nTry: wait for it to finish (aica status)",
                    run.display()
                ),
            )
            .into());
        }
        RunState::Running {
            info: Some(info), ..
        } => info,
    };
    let pid = nix::unistd::Pid::from_raw(info.pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| Failed(1, format!("cannot signal pid {}: {e}", info.pid)))?;
    let stopped = wait_until(Duration::from_secs(a.timeout), || {
        let run = run.clone();
        async move { (!matches!(pidfile::state(&run), RunState::Running { .. })).then_some(()) }
    })
    .await;
    match stopped {
        Some(()) => {
            println!("aica stopped (pid {})", info.pid);
            Ok(0)
        }
        None => Err(Failed(
            1,
            format!("aica (pid {}) did not stop within {} s\nTry: aica down --timeout 120, or kill -9 {}", info.pid, a.timeout, info.pid),
        )
        .into()),
    }
}

pub async fn restart(g: &Global, a: &ServeArgs) -> anyhow::Result<u8> {
    down(g, &DownArgs { timeout: 60 }).await?;
    up(g, a).await
}

fn uptime(info: &PidInfo) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    crate::util::human_secs((now - info.started_unix).max(0) as u64)
}

pub async fn status(g: &Global, a: &StatusArgs) -> anyhow::Result<u8> {
    let loaded = g.load(&[])?;
    let state = pidfile::state(&loaded.paths.run);
    let mut busy = None;
    let (info, stale) = match state {
        RunState::Running { info: Some(i), .. } => (Some(i), None),
        RunState::Running { info: None, holder } => {
            busy = Some(holder);
            (None, None)
        }
        RunState::Stale(i) => (None, Some(i)),
        RunState::NotRunning => (None, None),
    };
    let health = match &info {
        Some(i) => get_status(&format!("http://{}/health/detailed", i.backend)).await,
        None => None,
    };
    let health_status = health
        .as_ref()
        .map(|(_, b)| b["status"].as_str().unwrap_or("fail").to_string())
        .unwrap_or_else(|| {
            if info.is_some() {
                "unreachable".into()
            } else {
                "-".into()
            }
        });
    let code = match (&info, health_status.as_str()) {
        (None, _) => 3,
        (Some(_), "pass") | (Some(_), "warn") => 0,
        _ => 1,
    };
    if a.json {
        let v = serde_json::json!({
            "running": info.is_some(),
            "stale_pid_file": stale.is_some(),
            "run_lock_holder": busy,
            "process": info,
            "uptime": info.as_ref().map(uptime),
            "health": health.map(|(_, b)| b),
            "database": loaded.paths.backend.describe(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(code);
    }
    let mut t = Table::new();
    *t.style_mut() = comfy_table::presets::NOTHING;
    match &info {
        Some(i) => {
            t.add_row(vec!["state", "running"]);
            t.add_row(vec!["pid", &i.pid.to_string()]);
            t.add_row(vec!["uptime", &uptime(i)]);
            t.add_row(vec!["version", &i.version]);
            t.add_row(vec!["backend", &format!("http://{}", i.backend)]);
            t.add_row(vec!["console", &format!("http://{}", i.console)]);
            t.add_row(vec!["database", &i.database]);
            t.add_row(vec!["health", &health_status]);
        }
        None => {
            t.add_row(vec!["state", "not running"]);
            if let Some(h) = &busy {
                t.add_row(vec!["run lock", &format!("held by {h}")]);
            }
            if let Some(s) = &stale {
                let pid = s
                    .as_ref()
                    .map(|i| i.pid.to_string())
                    .unwrap_or_else(|| "?".into());
                t.add_row(vec![
                    "pid file",
                    &format!("stale (pid {pid} is gone); 'aica up' cleans it"),
                ]);
            }
            t.add_row(vec!["database", &loaded.paths.backend.describe()]);
            t.add_row(vec!["start", "make up  (or aica up)"]);
        }
    }
    println!("{t}");
    Ok(code)
}
