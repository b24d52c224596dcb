//! Health endpoints, performance stats and the Prometheus exposition (checked by promtool).

use crate::common::TestApp;
use std::io::Write;
use std::process::{Command, Stdio};

#[tokio::test]
async fn health_endpoints_report_what_they_observe() {
    let app = TestApp::start().await;
    let r = app.get("/health").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/health+json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "pass");
    let ping = &v["checks"]["database:responseTime"][0];
    assert_eq!(ping["observedUnit"], "ms");
    assert!(ping["observedValue"].as_f64().unwrap() > 0.0);

    assert_eq!(app.json("/health/live").await.0, 200);
    let (s, ready) = app.json("/health/ready").await;
    assert_eq!((s, &ready["status"]), (200, &serde_json::json!("pass")));

    let (s, d) = app.json("/health/detailed").await;
    assert_eq!(s, 200);
    for key in [
        "database:responseTime",
        "database:integrity",
        "database:size",
        "disk:free",
        "process:memory",
        "process:uptime",
    ] {
        assert!(
            d["checks"][key][0]["status"].is_string(),
            "missing {key}: {d}"
        );
    }
    assert_eq!(d["checks"]["database:integrity"][0]["observedValue"], "ok");
    assert!(
        d["checks"]["disk:free"][0]["observedValue"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        d["checks"]["process:memory"][0]["observedValue"]
            .as_u64()
            .unwrap()
            > 1_000_000
    );
    // Nothing that is not configured shows up as passing.
    for absent in ["redis", "stripe", "cache:redis"] {
        assert!(
            !d["checks"]
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.contains(absent))
        );
    }
}

#[tokio::test]
async fn readiness_fails_when_schema_is_not_current() {
    let app = TestApp::start().await;
    let db = app.dir.path().join("data/aica_sys.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.pragma_update(None, "user_version", 0).unwrap();
    let (s, v) = app.json("/health/ready").await;
    assert_eq!(s, 503);
    assert_eq!(v["status"], "fail");
    assert_eq!(v["checks"]["database:schemaVersion"][0]["observedValue"], 0);
    // /health (liveness of the DB connection) still passes.
    assert_eq!(app.json("/health").await.0, 200);
}

#[tokio::test]
async fn performance_stats_reflect_traffic() {
    let app = TestApp::start().await;
    for _ in 0..20 {
        app.get("/health").await;
    }
    app.get("/api/optimized/articles?limit=0").await;
    let (_, s) = app.json("/api/optimized/performance/stats").await;
    let r = &s["requests"];
    assert!(r["total_requests"].as_u64().unwrap() >= 21);
    assert_eq!(r["server_errors"], 0);
    assert!(r["client_errors"].as_u64().unwrap() >= 1);
    let h = &r["routes"]["/health"];
    assert_eq!(h["count"], 20);
    for p in ["avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"] {
        assert!(h[p].as_f64().unwrap() > 0.0, "{p}: {h}");
    }
    assert!(s["process"]["resident_memory_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn metrics_pass_promtool_and_labels_stay_bounded() {
    let app = TestApp::start().await;
    app.get("/api/optimized/articles?limit=3").await;
    app.get("/api/articles/some-slug").await;
    for i in 0..50 {
        app.get(&format!("/random/{i}/path-{i}")).await;
    }
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_requests_in_flight",
        "aica_cache_misses_total",
        "aica_db_query_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "aica_build_info",
    ] {
        assert!(body.contains(name), "metric {name} missing");
    }
    assert!(body.contains(r#"route="/api/articles/{slug}""#));
    assert!(body.contains(r#"route="unmatched""#));
    assert!(!body.contains("/random/"), "raw paths leaked into labels");
    assert!(!body.contains("some-slug"));

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: install it with 'apt-get install prometheus' (.ci/run does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
