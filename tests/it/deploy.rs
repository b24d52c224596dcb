//! deploy/: `deploy/check.sh` passes (promtool config, rules and alert unit
//! tests, kubernetes-validate, checkov, the Dockerfile builds like `make
//! build`), with the metrics named by the alert rules and the dashboard
//! compared against a scrape of the real binary.
//!
//! A missing tool (promtool, amtool, the blackbox exporter, deploy/.venv) skips
//! the test, except under `CI=true`, where it fails; `.ci/run` installs them.

use crate::common::{Server, aica, get, text, wait_for};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// deploy/check.sh's exit code when a tool it needs is missing.
const MISSING_TOOL: i32 = 77;

fn check_sh() -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/check.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script);
    cmd
}

#[test]
fn deploy_checks_pass_against_a_live_scrape() {
    let tools = check_sh().arg("--check-tools").output().unwrap();
    if tools.status.code() == Some(MISSING_TOOL) {
        let why = text(&tools);
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI=true needs every tool of deploy/check.sh:\n{why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    assert_eq!(tools.status.code(), Some(0), "{}", text(&tools));

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    // A verified backup taken beside the running server (as the CronJob does):
    // the server's backup gauges, which the rules and the dashboard use, come
    // from the newest one.
    let o = aica(dir.path(), &["backup", "create", "--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // RED series, database queries, a cache miss and a hit, an unmatched route.
    for (path, want) in [
        ("/health", 200),
        ("/health/ready", 200),
        ("/api/optimized/articles?limit=5", 200),
        ("/api/optimized/articles?limit=5", 200),
        ("/no-such-route", 404),
    ] {
        let got = get(&format!("{}{path}", server.backend)).map(|(s, _)| s);
        assert_eq!(got, Some(want), "GET {path}");
    }
    let scrape = wait_for(
        "a scrape with the backup gauges",
        Duration::from_secs(30),
        || {
            let (status, body) = get(&format!("{}/metrics", server.backend))?;
            (status == 200 && body.contains("aica_backup_last_success_timestamp_seconds"))
                .then_some(body)
        },
    );
    drop(server);

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &scrape).unwrap();
    let out = check_sh()
        .arg("--metrics")
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "deploy/check.sh --metrics <scrape> failed:\n{}",
        text(&out)
    );
}
