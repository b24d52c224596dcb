//! Health endpoints in the `application/health+json` shape: every check reports
//! what it observed; a component that is not configured is absent, never "pass".

use crate::http::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Pass,
    Warn,
    Fail,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// Collects checks and computes the overall status (the worst one).
struct Report {
    checks: Map<String, Value>,
    worst: Level,
}

impl Report {
    fn new() -> Report {
        Report {
            checks: Map::new(),
            worst: Level::Pass,
        }
    }

    fn add(&mut self, key: &str, level: Level, mut fields: Value) {
        self.worst = self.worst.max(level);
        fields["status"] = json!(level.as_str());
        fields["time"] = json!(crate::util::now());
        self.checks.insert(key.into(), json!([fields]));
    }

    fn into_response(self, extra: Value) -> Response {
        let status = if self.worst == Level::Fail {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        let mut body = json!({
            "status": self.worst.as_str(),
            "version": env!("CARGO_PKG_VERSION"),
            "serviceId": "aica-backend",
            "checks": Value::Object(self.checks),
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/health+json"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

async fn ping(st: &AppState, r: &mut Report) {
    let store = st.store.clone();
    // An idle pooled connection answers the schema read in microseconds: no thread hop needed.
    let res = match store.try_ping() {
        Some(res) => Ok(res),
        None => tokio::task::spawn_blocking(move || store.ping()).await,
    };
    match res {
        Ok(Ok(d)) => r.add(
            "database:responseTime",
            Level::Pass,
            json!({"componentType": "datastore", "observedValue": d.as_secs_f64() * 1000.0, "observedUnit": "ms"}),
        ),
        Ok(Err(e)) => r.add("database:responseTime", Level::Fail, json!({"componentType": "datastore", "output": e.to_string()})),
        Err(e) => r.add("database:responseTime", Level::Fail, json!({"componentType": "datastore", "output": e.to_string()})),
    }
}

/// `/health`: the process answers and the database answers a query that reads its schema.
pub async fn health(State(st): State<AppState>) -> Response {
    let mut r = Report::new();
    ping(&st, &mut r).await;
    r.into_response(json!({}))
}

/// `/health/live`: the process is up and serving (for restart decisions only).
pub async fn live() -> Response {
    let mut r = Report::new();
    r.add(
        "process:uptime",
        Level::Pass,
        json!({"componentType": "system", "observedUnit": "s"}),
    );
    r.into_response(json!({}))
}

/// `/health/ready`: the database is reachable and migrated to this version's schema.
pub async fn ready(State(st): State<AppState>) -> Response {
    let mut r = Report::new();
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.schema_status()).await {
        Ok(Ok(s)) => {
            let level = if s.is_current() {
                Level::Pass
            } else {
                Level::Fail
            };
            r.add(
                "database:schemaVersion",
                level,
                json!({"componentType": "datastore", "observedValue": s.current, "expected": s.expected}),
            );
        }
        Ok(Err(e)) => r.add(
            "database:schemaVersion",
            Level::Fail,
            json!({"componentType": "datastore", "output": e.to_string()}),
        ),
        Err(e) => r.add(
            "database:schemaVersion",
            Level::Fail,
            json!({"componentType": "datastore", "output": e.to_string()}),
        ),
    }
    r.into_response(json!({}))
}

/// `/health/detailed`: round-trip, integrity, disk, memory, uptime, version.
pub async fn detailed(State(st): State<AppState>) -> Response {
    let mut r = Report::new();
    ping(&st, &mut r).await;

    let qc = st
        .quick_check
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match qc {
        Some(q) => {
            let (level, value) = match &q.problem {
                None => (Level::Pass, "ok".to_string()),
                Some(p) => (Level::Fail, p.clone()),
            };
            r.add(
                "database:integrity",
                level,
                json!({"componentType": "datastore", "observedValue": value, "checkedAt": q.at, "durationMs": q.took_ms}),
            );
        }
        None => r.add(
            "database:integrity",
            Level::Warn,
            json!({"componentType": "datastore", "output": "quick_check has not completed yet"}),
        ),
    }

    let store = st.store.clone();
    if let Ok(Ok(size)) = tokio::task::spawn_blocking(move || store.size_bytes()).await {
        metrics::gauge!("aica_db_size_bytes").set(size as f64);
        r.add(
            "database:size",
            Level::Pass,
            json!({"componentType": "datastore", "observedValue": size, "observedUnit": "bytes"}),
        );
    }

    // The file at the configured path must be the one we have open: a file
    // replaced under a running server (a copy, a restore) is not what it serves.
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.file_replaced()).await {
        Ok(Ok(None)) => r.add(
            "database:file",
            Level::Pass,
            json!({"componentType": "datastore", "observedValue": "same file as opened"}),
        ),
        Ok(Ok(Some(problem))) => r.add(
            "database:file",
            Level::Fail,
            json!({"componentType": "datastore", "output": problem}),
        ),
        Ok(Err(e)) => r.add(
            "database:file",
            Level::Fail,
            json!({"componentType": "datastore", "output": e.to_string()}),
        ),
        Err(e) => r.add(
            "database:file",
            Level::Fail,
            json!({"componentType": "datastore", "output": e.to_string()}),
        ),
    }

    let h = &st.settings.health;
    match crate::util::free_disk_bytes(&st.data_dir) {
        Ok(free) => {
            let mib = free / (1024 * 1024);
            let level = if mib < h.disk_fail_free_mib {
                Level::Fail
            } else if mib < h.disk_warn_free_mib {
                Level::Warn
            } else {
                Level::Pass
            };
            r.add(
                "disk:free",
                level,
                json!({"componentType": "system", "observedValue": free, "observedUnit": "bytes",
                       "path": st.data_dir.display().to_string(),
                       "warnBelowMiB": h.disk_warn_free_mib, "failBelowMiB": h.disk_fail_free_mib}),
            );
        }
        Err(e) => r.add(
            "disk:free",
            Level::Warn,
            json!({"componentType": "system", "output": format!("cannot read free space: {e}")}),
        ),
    }

    let dir = st.backups_dir.clone();
    let newest = tokio::task::spawn_blocking(move || crate::backup::newest_verified(&dir))
        .await
        .ok()
        .flatten();
    let max_age = st.settings.backup.max_age_hours as i64 * 3600;
    match newest {
        Some(b) => {
            let age = time::OffsetDateTime::now_utc().unix_timestamp() - b.created_unix;
            let level = if age > max_age { Level::Warn } else { Level::Pass };
            r.add(
                "backup:age",
                level,
                json!({"componentType": "system", "observedValue": age, "observedUnit": "s",
                       "backup": b.name, "warnAboveSeconds": max_age}),
            );
        }
        None => r.add(
            "backup:age",
            Level::Warn,
            json!({"componentType": "system", "output": "no verified backup yet: run 'aica backup create --verify'"}),
        ),
    }

    if let Some(rss) = crate::util::rss_bytes() {
        r.add(
            "process:memory",
            Level::Pass,
            json!({"componentType": "system", "observedValue": rss, "observedUnit": "bytes"}),
        );
    }
    let up = st.stats.uptime().as_secs_f64();
    r.add(
        "process:uptime",
        Level::Pass,
        json!({"componentType": "system", "observedValue": up, "observedUnit": "s"}),
    );
    r.into_response(json!({ "backend": st.store.backend() }))
}
