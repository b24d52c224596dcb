//! `backup drill`: the monthly restore test and quarterly DR drill. Restore the
//! newest backup into a scratch directory, verify it, start a real server on it,
//! run smoke requests, stop it, and report the measured RTO and RPO. The
//! drill holds the backup lock throughout; its server gets an environment
//! built for it (never the parent's `AICA_*`, which may name production) and
//! dies with the drill.

use super::{BackupError, BackupInfo, BackupLock, Cancel, Result, io};
use crate::check::Check;
use crate::config::Loaded;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct Smoke {
    pub request: String,
    pub status: u16,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub backup: String,
    pub backup_created_at: String,
    pub started_at: String,
    pub ok: bool,
    /// The drill could not run for reasons that are not about the backup (a
    /// full scratch volume, a server that could not start); nothing is recorded.
    pub inconclusive: bool,
    /// Seconds from the start of the drill to a restored server answering ready.
    pub rto_seconds: f64,
    /// Age of the backup used, in seconds, at the start of the drill.
    pub rpo_seconds: i64,
    pub verify_seconds: f64,
    pub smoke: Vec<Smoke>,
    pub error: Option<String>,
    pub report_markdown: PathBuf,
    pub report_json: PathBuf,
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    match client.get(url).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or_default())
        }
        Err(e) => (0, serde_json::json!({ "error": e.to_string() })),
    }
}

/// Start `exe serve` on the restored copy, wait for ready, run the smoke requests.
async fn serve_and_smoke(
    exe: &Path,
    scratch: &Path,
    db_url: Option<&str>,
    b: &BackupInfo,
    start: Instant,
    report: &mut DrillReport,
) -> Result<()> {
    let manifest = super::read_sidecar(&b.path).map(|s| s.manifest);
    let mut cmd = crate::run::child::isolated(exe);
    if let Some(url) = db_url {
        // A PostgreSQL drill: the server runs on the scratch database (in its
        // environment, not on a command line that shows the password).
        cmd.env("DATABASE_URL", url);
    }
    let mut child = cmd
        .arg("--dir")
        .arg(scratch)
        .args([
            "serve",
            "--port",
            "0",
            "--console-port",
            "0",
            "--set",
            "database.seed_demo=false",
            "--set",
            "backup.schedule=",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(io(format!("start {}", exe.display())))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| BackupError::Refused(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let backend = loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BackupError::Refused(format!(
                "the restored server exited during start ({status}); see {}/logs",
                scratch.display()
            )));
        }
        if let Some(info) = std::fs::read(scratch.join("run/aica.pid"))
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::run::pidfile::PidInfo>(&b).ok())
        {
            let url = format!("http://{}", info.backend);
            if get(&client, &format!("{url}/health/ready")).await.0 == 200 {
                break url;
            }
        }
        if Instant::now() > deadline {
            return Err(BackupError::Refused(
                "the restored server did not become ready within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    report.rto_seconds = start.elapsed().as_secs_f64();
    let (s, v) = get(&client, &format!("{backend}/health")).await;
    report.smoke.push(Smoke {
        request: "GET /health".into(),
        status: s,
        ok: s == 200 && v["status"] == "pass",
        detail: format!("status {}", v["status"]),
    });
    let (s, v) = get(&client, &format!("{backend}/api/optimized/dashboard")).await;
    let want = manifest
        .as_ref()
        .and_then(|m| m.tables.get("articles").copied());
    let got = v["articles"]["total"].as_i64();
    report.smoke.push(Smoke {
        request: "GET /api/optimized/dashboard".into(),
        status: s,
        ok: s == 200 && got.is_some() && got == want,
        detail: format!("articles {got:?}, manifest {want:?}"),
    });
    let (s, v) = get(
        &client,
        &format!("{backend}/api/optimized/articles?limit=5"),
    )
    .await;
    let n = v["items"].as_array().map(|a| a.len()).unwrap_or(0);
    report.smoke.push(Smoke {
        request: "GET /api/optimized/articles?limit=5".into(),
        status: s,
        ok: s == 200,
        detail: format!("{n} items"),
    });
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(st)) if st.success() => {}
        other => report.smoke.push(Smoke {
            request: "SIGTERM".into(),
            status: 0,
            ok: false,
            detail: format!("server did not stop cleanly: {other:?}"),
        }),
    }
    Ok(())
}

/// Errors are not Clone (they hold io::Error): keep the message and whether it is evidence.
fn clone_err(e: &BackupError) -> BackupError {
    match e {
        BackupError::Corrupt { name, detail } => BackupError::Corrupt {
            name: name.clone(),
            detail: detail.clone(),
        },
        other => BackupError::Refused(other.to_string()),
    }
}

fn markdown(r: &DrillReport) -> String {
    let mut s = format!(
        "# Backup drill {}\n\nResult: **{}**\n\n| | |\n|---|---|\n| backup | {} (taken {}) |\n| RTO (start → restored server ready) | {:.2} s |\n| RPO (age of the backup) | {} |\n| verify + extract | {:.2} s |\n\n## Smoke requests\n\n| request | status | ok | detail |\n|---|---|---|---|\n",
        r.started_at,
        if r.ok {
            "PASS"
        } else if r.inconclusive {
            "INCONCLUSIVE (the environment failed, not the backup)"
        } else {
            "FAIL"
        },
        r.backup,
        r.backup_created_at,
        r.rto_seconds,
        crate::util::human_secs(r.rpo_seconds.max(0) as u64),
        r.verify_seconds
    );
    for m in &r.smoke {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            m.request,
            m.status,
            if m.ok { "yes" } else { "NO" },
            m.detail
        ));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("\n## Error\n\n{e}\n"));
    }
    s
}

/// Run the drill on the newest backup (or `name`), write reports, record the result.
pub async fn drill(l: &Loaded, name: Option<&str>, exe: &Path) -> Result<DrillReport> {
    let start = Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let ll = l.clone();
    let lock = tokio::task::spawn_blocking(move || BackupLock::acquire(&ll, "drill"))
        .await
        .map_err(|e| BackupError::Refused(e.to_string()))??;
    let b = super::find(lock.dir(), name)?;
    let stamp = crate::util::fmt_time(now).replace(':', "");
    let mut report = DrillReport {
        backup: b.name.clone(),
        backup_created_at: b.created_at.clone(),
        started_at: crate::util::fmt_time(now),
        ok: false,
        inconclusive: false,
        rto_seconds: 0.0,
        rpo_seconds: now.unix_timestamp() - b.created_unix,
        verify_seconds: 0.0,
        smoke: Vec::new(),
        error: None,
        report_markdown: l.paths.reports.join(format!("drill-{stamp}.md")),
        report_json: l.paths.reports.join(format!("drill-{stamp}.json")),
    };
    // Scratch on the run volume (not /tmp, which may be too small for a
    // restored copy); a killed drill's scratch is removed by the next lock holder.
    std::fs::create_dir_all(&l.paths.run)
        .map_err(io(format!("create {}", l.paths.run.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("drill-")
        .tempdir_in(&l.paths.run)
        .map_err(io(format!(
            "create a scratch directory in {}",
            l.paths.run.display()
        )))?;
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data).map_err(io("create scratch data dir"))?;
    let (lock, verified) = {
        let bi = b.clone();
        let db = data.join("aica_sys.db");
        let (lock, v) = tokio::task::spawn_blocking(move || {
            let v = super::verify::check_with(&bi, &db, None, lock.server(), &Cancel::default());
            let recorded = super::verify::record(&lock, &bi, &v);
            (lock, recorded.and(v))
        })
        .await
        .map_err(|e| BackupError::Refused(e.to_string()))?;
        report.verify_seconds = start.elapsed().as_secs_f64();
        (lock, v)
    };
    let outcome = match &verified {
        Ok(v) => {
            let url = v.scratch.as_ref().map(|s| s.url.as_str());
            serve_and_smoke(exe, scratch.path(), url, &b, start, &mut report).await
        }
        Err(_) => Err(verified
            .as_ref()
            .err()
            .map(clone_err)
            .unwrap_or(BackupError::Cancelled)),
    };
    // A PostgreSQL scratch database is dropped here, after its server stopped.
    drop(verified);
    report.ok = outcome.is_ok() && !report.smoke.is_empty() && report.smoke.iter().all(|s| s.ok);
    if let Err(e) = &outcome {
        report.error = Some(e.to_string());
        // Only evidence about the backup, or a server that answered wrongly, fails it.
        report.inconclusive = !e.is_evidence() && report.smoke.is_empty();
    }
    std::fs::create_dir_all(&l.paths.reports)
        .map_err(io(format!("create {}", l.paths.reports.display())))?;
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| io("encode report")(std::io::Error::other(e)))?;
    crate::util::write_atomic(&report.report_json, &json).map_err(io("write drill report"))?;
    crate::util::write_atomic(&report.report_markdown, markdown(&report).as_bytes())
        .map_err(io("write drill report"))?;
    if let Some(mut s) = super::read_sidecar(&b.path).filter(|_| !report.inconclusive) {
        let observed = format!(
            "RTO {:.2} s, RPO {} s",
            report.rto_seconds, report.rpo_seconds
        );
        s.drill = Some(if report.ok {
            Check::pass("drill", observed)
        } else {
            Check::fail(
                "drill",
                format!("{observed}; {}", report.error.clone().unwrap_or_default()),
                format!("see {}", report.report_markdown.display()),
            )
        });
        super::write_sidecar(&lock, &b.path, &s)?;
    }
    drop(lock);
    Ok(report)
}
