//! The real binary: up/status/down, graceful shutdown, logs, secrets, config, doctor, console, keys.

use crate::common::{Server, aica, aica_env, get, text, wait_for};
use nix::sys::signal::Signal;
use std::time::Duration;

/// Stops a background aica started by a test, even when the test fails.
struct Down<'a>(&'a std::path::Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = aica(self.0, &["down"]);
    }
}

#[test]
fn up_status_down_and_stale_pid_file() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let o = aica(dir, &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("not running"));

    let _guard = Down(dir);
    let o = aica(dir, &["up", "--port", "0", "--console-port", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("aica is up"));
    assert!(dir.join("data/aica_sys.db").exists());

    let o = aica(dir, &["up", "--port", "0", "--console-port", "0"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains("already running"), "{}", text(&o));

    // Integrity is "warn" until the first background quick_check completes; the
    // whole status stays "warn" until a verified backup exists.
    let v: serde_json::Value = wait_for("integrity pass", Duration::from_secs(30), || {
        let o = aica(dir, &["status", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["health"]["checks"]["database:integrity"][0]["status"] == "pass").then_some(v)
    });
    assert_eq!(v["health"]["status"], "warn");
    assert_eq!(v["health"]["checks"]["backup:age"][0]["status"], "warn");
    assert_eq!(v["running"], true);
    let backend = v["process"]["backend"].as_str().unwrap().to_string();
    assert_eq!(get(&format!("http://{backend}/health")).unwrap().0, 200);

    let o = aica(dir, &["down"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        get(&format!("http://{backend}/health")).is_none(),
        "still answering after down"
    );
    assert_eq!(aica(dir, &["status"]).status.code(), Some(3));

    // A crash leaves a pid file nobody holds: status says stale, up cleans it.
    std::fs::write(dir.join("run/aica.pid"), r#"{"pid":999999,"version":"0","started_at":"x","started_unix":0,"backend":"127.0.0.1:1","console":"127.0.0.1:2","database":"d","log_dir":"l"}"#).unwrap();
    let o = aica(dir, &["status"]);
    assert!(text(&o).contains("stale"), "{}", text(&o));
    let o = aica(dir, &["up", "--port", "0", "--console-port", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("removed stale pid file (pid 999999"),
        "{}",
        text(&o)
    );
    assert_eq!(aica(dir, &["down"]).status.code(), Some(0));
}

#[test]
fn sigterm_finishes_gracefully_and_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Server::start(d.path(), &[], &[]);
    assert_eq!(
        get(&format!("{}/api/optimized/articles", s.backend))
            .unwrap()
            .0,
        200
    );
    let o = aica(
        d.path(),
        &["keys", "create", "--role", "editor", "--name", "w"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(
        !d.path().join("run/aica.pid").exists(),
        "pid file left behind"
    );
    let wal = d.path().join("data/aica_sys.db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "WAL not checkpointed at shutdown");
}

#[test]
fn secrets_never_reach_logs_or_config_output() {
    let d = tempfile::tempdir().unwrap();
    let canary = "canary-7f3a9c-SECRET";
    std::fs::write(
        d.path().join(".env.production"),
        format!("STRIPE_SECRET_KEY={canary}\nAICA_LOGGING_LEVEL=debug\n"),
    )
    .unwrap();
    let mut s = Server::start(d.path(), &[], &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        for _ in 0..3 {
            let _ = c
                .post(format!("{}/api/articles", s.backend))
                .bearer_auth(canary)
                .body("{}")
                .send()
                .await;
            let _ = c
                .get(format!(
                    "{}/api/optimized/articles?author={canary}",
                    s.backend
                ))
                .send()
                .await;
            let _ = c.get(format!("{}/{canary}", s.backend)).send().await;
        }
    });
    let o = aica(d.path(), &["config", "show"]);
    assert!(
        !text(&o).contains(canary),
        "config show leaked: {}",
        text(&o)
    );
    assert!(text(&o).contains("STRIPE_SECRET_KEY"));
    s.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
    let mut seen = 0;
    for e in std::fs::read_dir(d.path().join("logs")).unwrap() {
        let p = e.unwrap().path();
        let body = std::fs::read_to_string(&p).unwrap_or_default();
        seen += body.lines().count();
        assert!(
            !body.contains(canary),
            "{} contains the canary",
            p.display()
        );
    }
    assert!(seen > 5, "expected request logs, got {seen} lines");
}

#[test]
fn logs_command_filters_and_reports_bad_flags() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Server::start(d.path(), &[], &[]);
    assert_eq!(get(&format!("{}/health", s.backend)).unwrap().0, 200);
    assert_eq!(
        get(&format!("{}/api/optimized/articles?limit=0", s.backend))
            .unwrap()
            .0,
        400
    );
    // Logs are written by a background thread: wait until the request line is there.
    wait_for("request in log", Duration::from_secs(10), || {
        let o = aica(
            d.path(),
            &["logs", "--grep", "/api/optimized/articles", "--json"],
        );
        (!o.stdout.is_empty()).then_some(())
    });
    let o = aica(
        d.path(),
        &[
            "logs",
            "--json",
            "--since",
            "1h",
            "--grep",
            "\"route\":\"/health\"",
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l["route"], "/health");
        assert_eq!(l["status"], 200);
        assert_eq!(l["request_id"].as_str().unwrap().len(), 16);
    }
    let o = aica(d.path(), &["logs", "--level", "error"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("route=/health"),
        "info lines shown at --level error"
    );
    let o = aica(d.path(), &["logs"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("INFO request"),
        "{}",
        text(&o)
    );

    let o = aica(d.path(), &["logs", "--level", "loud"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("Try:"), "{}", text(&o));
    let o = aica(d.path(), &["logs", "--since", "yesterday"]);
    assert_eq!(o.status.code(), Some(2));
    s.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let o = aica_env(d.path(), &["serve"], &[("AICA_SERVER_PORT", "eighty")]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("server.port")
            && t.contains("eighty")
            && t.contains("AICA_SERVER_PORT")
            && t.contains("Try:"),
        "{t}"
    );

    std::fs::write(d.path().join("aica.toml"), "[logging]\nlevel = \"loud\"\n").unwrap();
    let o = aica(d.path(), &["serve"]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("logging.level") && t.contains("aica.toml") && t.contains("warn"),
        "{t}"
    );
    assert!(
        !d.path().join("data").exists(),
        "nothing may be created by a failed start"
    );

    std::fs::write(d.path().join("aica.toml"), "[server]\nport = 8100\n").unwrap();
    let o = aica(d.path(), &["config", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let port = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "server.port")
        .unwrap()
        .clone();
    assert_eq!(port["value"], "8100");
    assert!(
        port["source"].as_str().unwrap().ends_with("aica.toml:2:1"),
        "{port}"
    );

    let o = aica(d.path(), &["config", "default"]);
    let parsed: toml::Table = toml::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert!(parsed.contains_key("server"));
}

#[test]
fn doctor_finds_busy_port_and_corrupt_database() {
    let d = tempfile::tempdir().unwrap();
    let o = aica(
        d.path(),
        &[
            "doctor",
            "--set",
            "server.port=0",
            "--set",
            "console.port=0",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("PASS  database"));

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let o = aica(
        d.path(),
        &[
            "doctor",
            "--set",
            &format!("server.port={port}"),
            "--set",
            "console.port=0",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("FAIL  backend port") && t.contains("fix:"),
        "{t}"
    );

    std::fs::create_dir_all(d.path().join("data")).unwrap();
    std::fs::write(
        d.path().join("data/aica_sys.db"),
        b"this is not a database at all, just text",
    )
    .unwrap();
    let o = aica(
        d.path(),
        &[
            "doctor",
            "--json",
            "--set",
            "server.port=0",
            "--set",
            "console.port=0",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let db = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database")
        .unwrap()
        .clone();
    assert_eq!(db["level"], "fail");
    assert!(db["fix"].as_str().unwrap().contains("restore"));

    let o = aica_env(d.path(), &["doctor"], &[("AICA_CACHE_TTL_SECS", "-3")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("FAIL  config") && text(&o).contains("cache.ttl_secs"),
        "{}",
        text(&o)
    );
}

#[test]
fn console_reports_backend_health_for_real() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Server::start(d.path(), &[], &[]);
    let (code, body) = get(&format!("{}/api/health", s.console)).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["checks"]["backend:health"][0]["backend"]["status"],
        "pass"
    );
    let (code, page) = get(&format!("{}/", s.console)).unwrap();
    assert_eq!(code, 200);
    assert!(
        page.contains("AICA-SyS") && page.contains("Database size") && page.contains("Latency p95"),
        "{page}"
    );
    s.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));

    // A console pointed at a backend that is down says so with 503.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let s2 = Server::start(
        d2.path(),
        &["--set", &format!("console.backend_url=http://{closed}")],
        &[],
    );
    let (code, body) = get(&format!("{}/api/health", s2.console)).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    assert_eq!(get(&format!("{}/", s2.console)).unwrap().0, 503);
}

#[test]
fn keys_are_shown_once_and_stored_hashed() {
    let d = tempfile::tempdir().unwrap();
    let o = aica(
        d.path(),
        &["keys", "create", "--role", "admin", "--name", "ops"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let key = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(key.starts_with("aica_") && key.len() > 40, "{key}");
    let o = aica(
        d.path(),
        &["keys", "create", "--role", "admin", "--name", "ops"],
    );
    assert_eq!(o.status.code(), Some(2));
    let o = aica(
        d.path(),
        &["keys", "create", "--role", "root", "--name", "x"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("Try: aica keys create --role editor"));
    let o = aica(d.path(), &["keys", "list"]);
    assert!(text(&o).contains("ops") && !text(&o).contains(&key));
    let db = std::fs::read(d.path().join("data/aica_sys.db")).unwrap();
    assert!(
        !db.windows(key.len()).any(|w| w == key.as_bytes()),
        "key stored in plain text"
    );
    assert_eq!(
        aica(d.path(), &["keys", "revoke", "ops"]).status.code(),
        Some(0)
    );
    assert_eq!(
        aica(d.path(), &["keys", "revoke", "ops"]).status.code(),
        Some(1)
    );
}

#[test]
fn logs_follow_prints_new_lines_as_they_come() {
    use std::io::{BufRead, BufReader};
    let d = tempfile::tempdir().unwrap();
    let mut s = Server::start(d.path(), &[], &[]);
    let mut follow = std::process::Command::new(crate::common::bin())
        .arg("--dir")
        .arg(d.path())
        .args(["logs", "--follow", "--json", "--grep", "follow-marker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The request id is echoed into the log line; send until the follower shows it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let line = wait_for("followed line", Duration::from_secs(20), || {
        rt.block_on(
            c.get(format!("{}/health", s.backend))
                .header("x-request-id", "follow-marker")
                .send(),
        )
        .unwrap();
        rx.recv_timeout(Duration::from_millis(300)).ok()
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["request_id"], "follow-marker");
    let _ = follow.kill();
    let _ = follow.wait();
    s.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
}

#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::common::bin())
        .arg("--dir")
        .arg(d.path())
        .args(["config", "default"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away, like `| head -0`
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{:?}: {err}",
        out.status
    );
}

#[test]
fn make_uses_cargos_target_directory() {
    let t = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("make")
        .args(["-n", "up"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", t.path())
        .output()
        .expect("make is installed (.ci/run installs it)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("{}/release/aica up", t.path().display())),
        "{out}"
    );
}
