//! Health endpoints in the `application/health+json` shape: every check reports
//! what it observed; a component that is not configured is absent, never "pass".

use crate::check::{Check, Level};
use crate::http::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Collects checks (the shared [`Check`], plus health+json details) and
/// computes the overall status (the worst one).
struct Report {
    entries: Vec<(Check, Value)>,
}

impl Report {
    fn new() -> Report {
        Report {
            entries: Vec::new(),
        }
    }

    fn add(&mut self, check: Check, detail: Value) {
        self.entries.push((check, detail));
    }

    fn into_response(self, extra: Value) -> Response {
        let worst = crate::check::worst(self.entries.iter().map(|(c, _)| c));
        let status = if worst == Level::Fail {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        let mut checks = Map::new();
        for (c, mut fields) in self.entries {
            fields["status"] = json!(c.level.as_str());
            fields["time"] = json!(c.at);
            if c.level != Level::Pass {
                fields["output"] = json!(c.observed);
            }
            if let Some(fix) = &c.fix {
                fields["fix"] = json!(fix);
            }
            checks.insert(c.name, json!([fields]));
        }
        let mut body = json!({
            "status": worst.as_str(),
            "version": env!("CARGO_PKG_VERSION"),
            "serviceId": "aica-backend",
            "checks": Value::Object(checks),
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

const DB_FIX: &str = "aica doctor; aica logs --level error --since 1h";

async fn ping(st: &AppState, r: &mut Report) {
    let store = st.store.clone();
    // An idle pooled connection answers the schema read in microseconds: no thread hop needed.
    let res = match store.try_ping() {
        Some(res) => Ok(res),
        None => tokio::task::spawn_blocking(move || store.ping()).await,
    };
    match res {
        Ok(Ok(d)) => {
            let ms = d.as_secs_f64() * 1000.0;
            r.add(
                Check::pass("database:responseTime", format!("{ms:.3} ms")),
                json!({"componentType": "datastore", "observedValue": ms, "observedUnit": "ms"}),
            )
        }
        Ok(Err(e)) => r.add(
            Check::fail("database:responseTime", e.to_string(), DB_FIX),
            json!({"componentType": "datastore"}),
        ),
        Err(e) => r.add(
            Check::fail("database:responseTime", e.to_string(), DB_FIX),
            json!({"componentType": "datastore"}),
        ),
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
        Check::pass("process:uptime", "serving"),
        json!({"componentType": "system", "observedUnit": "s"}),
    );
    r.into_response(json!({}))
}

/// `/health/ready`: the database is reachable and migrated to this version's
/// schema, and the replica is not draining for a shutdown.
pub async fn ready(State(st): State<AppState>) -> Response {
    let mut r = Report::new();
    if st.replicas.is_draining() {
        r.add(
            Check::fail(
                "server:draining",
                "shutting down: finishing in-flight requests, send new ones to another replica",
                "none needed: this replica is being stopped or restarted",
            ),
            json!({"componentType": "system"}),
        );
        return r.into_response(json!({}));
    }
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.schema_status()).await {
        Ok(Ok(s)) => {
            let observed = format!(
                "schema version {} (this aica expects {})",
                s.current, s.expected
            );
            let c = if s.is_current() {
                Check::pass("database:schemaVersion", observed)
            } else {
                Check::fail(
                    "database:schemaVersion",
                    observed,
                    "restart aica to migrate, or restore a backup made by this version",
                )
            };
            r.add(
                c,
                json!({"componentType": "datastore", "observedValue": s.current, "expected": s.expected}),
            );
        }
        Ok(Err(e)) => r.add(
            Check::fail("database:schemaVersion", e.to_string(), DB_FIX),
            json!({"componentType": "datastore"}),
        ),
        Err(e) => r.add(
            Check::fail("database:schemaVersion", e.to_string(), DB_FIX),
            json!({"componentType": "datastore"}),
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
            let (c, value) = match &q.problem {
                None => (
                    Check::pass("database:integrity", "quick_check ok"),
                    "ok".to_string(),
                ),
                Some(p) => (
                    Check::fail(
                        "database:integrity",
                        p.clone(),
                        "restore the newest verified backup (aica down && make restore && aica up); keep the damaged file",
                    ),
                    p.clone(),
                ),
            };
            r.add(
                c,
                json!({"componentType": "datastore", "observedValue": value, "checkedAt": q.at, "durationMs": q.took_ms}),
            );
        }
        None if st.store.file_maintenance().is_none() => {}
        None => r.add(
            Check::warn(
                "database:integrity",
                "quick_check has not completed yet",
                "wait for the background check (health.quick_check_interval_secs)",
            ),
            json!({"componentType": "datastore"}),
        ),
    }

    if st.store.file_maintenance().is_some() {
        file_checks(&st, &mut r).await;
    }
    backend_checks(&st, &mut r);
    redis_check(&st, &mut r).await;

    let h = &st.settings.health;
    match crate::util::free_disk_bytes(&st.data_dir) {
        Ok(free) => {
            let mib = free / (1024 * 1024);
            let observed = format!("{mib} MiB free on the volume of {}", st.data_dir.display());
            let fix =
                "free space (old logs, old backups: aica backup prune) or move paths.data_dir";
            let c = if mib < h.disk_fail_free_mib {
                Check::fail("disk:free", observed, fix)
            } else if mib < h.disk_warn_free_mib {
                Check::warn("disk:free", observed, fix)
            } else {
                Check::pass("disk:free", observed)
            };
            r.add(
                c,
                json!({"componentType": "system", "observedValue": free, "observedUnit": "bytes",
                       "path": st.data_dir.display().to_string(),
                       "warnBelowMiB": h.disk_warn_free_mib, "failBelowMiB": h.disk_fail_free_mib}),
            );
        }
        Err(e) => r.add(
            Check::warn(
                "disk:free",
                format!("cannot read free space: {e}"),
                "check that paths.data_dir exists",
            ),
            json!({"componentType": "system"}),
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
            let observed = format!(
                "newest verified backup {} is {} old",
                b.name,
                crate::util::human_secs(age.max(0) as u64)
            );
            let c = if age > max_age {
                Check::warn(
                    "backup:age",
                    observed,
                    "aica backup create --verify; check backup.schedule and the log of scheduled backups",
                )
            } else {
                Check::pass("backup:age", observed)
            };
            r.add(
                c,
                json!({"componentType": "system", "observedValue": age, "observedUnit": "s",
                       "backup": b.name, "warnAboveSeconds": max_age}),
            );
        }
        None => r.add(
            Check::warn(
                "backup:age",
                "no verified backup yet",
                "aica backup create --verify",
            ),
            json!({"componentType": "system"}),
        ),
    }

    if let Some(rss) = crate::util::rss_bytes() {
        r.add(
            Check::pass("process:memory", format!("{rss} bytes resident")),
            json!({"componentType": "system", "observedValue": rss, "observedUnit": "bytes"}),
        );
    }
    let up = st.stats.uptime().as_secs_f64();
    r.add(
        Check::pass("process:uptime", crate::util::human_secs(up as u64)),
        json!({"componentType": "system", "observedValue": up, "observedUnit": "s"}),
    );
    r.into_response(json!({ "backend": st.store.backend() }))
}

/// Size and identity of an embedded database file.
async fn file_checks(st: &AppState, r: &mut Report) {
    let store = st.store.clone();
    let size =
        tokio::task::spawn_blocking(move || store.file_maintenance().map(|m| m.size_bytes())).await;
    if let Ok(Some(Ok(size))) = size {
        metrics::gauge!("aica_db_size_bytes").set(size as f64);
        r.add(
            Check::pass("database:size", format!("{size} bytes")),
            json!({"componentType": "datastore", "observedValue": size, "observedUnit": "bytes"}),
        );
    }
    // The file at the configured path must be the one we have open: a file
    // replaced under a running server (a copy, a restore) is not what it serves.
    let store = st.store.clone();
    let replaced = tokio::task::spawn_blocking(move || {
        store
            .file_maintenance()
            .map(|m| m.file_replaced())
            .unwrap_or(Ok(None))
    })
    .await;
    match replaced {
        Ok(Ok(None)) => r.add(
            Check::pass("database:file", "same file as opened"),
            json!({"componentType": "datastore", "observedValue": "same file as opened"}),
        ),
        Ok(Ok(Some(problem))) => r.add(
            Check::fail(
                "database:file",
                problem,
                "restart aica so it opens the file at the configured path (aica restart)",
            ),
            json!({"componentType": "datastore"}),
        ),
        Ok(Err(e)) => r.add(
            Check::fail("database:file", e.to_string(), DB_FIX),
            json!({"componentType": "datastore"}),
        ),
        Err(e) => r.add(
            Check::fail("database:file", e.to_string(), DB_FIX),
            json!({"componentType": "datastore"}),
        ),
    }
}

/// Pool, server, change feed and scheduler role.
fn backend_checks(st: &AppState, r: &mut Report) {
    use crate::http::replicas::Feed;
    let info = st.store.info();
    let pool = format!(
        "{} of {} connections open, {} idle, {} waiting",
        info.pool_open, info.pool_max, info.pool_idle, info.pool_waiting
    );
    let c = if info.pool_waiting > 0 {
        Check::warn(
            "database:pool",
            pool,
            "requests wait for a connection: raise database.pool_size or add replicas",
        )
    } else {
        Check::pass("database:pool", pool)
    };
    r.add(
        c,
        json!({"componentType": "datastore", "backend": info.backend, "location": info.location,
               "version": info.version, "max": info.pool_max, "open": info.pool_open,
               "idle": info.pool_idle, "waiting": info.pool_waiting}),
    );
    match st.replicas.feed() {
        Feed::Local => {}
        Feed::Starting => r.add(
            Check::warn(
                "cache:invalidation",
                "connecting to the change feed; read cache bypassed meanwhile",
                "wait a moment; if it lasts, aica doctor",
            ),
            json!({"componentType": "component"}),
        ),
        Feed::Listening { since } => r.add(
            Check::pass(
                "cache:invalidation",
                format!("listening for other replicas' writes since {since}"),
            ),
            json!({"componentType": "component", "since": since}),
        ),
        Feed::Lost { since, reason } => r.add(
            Check::warn(
                "cache:invalidation",
                format!("change feed lost since {since} ({reason}); read cache bypassed, answers stay fresh"),
                "check the connection to PostgreSQL (aica doctor); it reconnects by itself",
            ),
            json!({"componentType": "component", "since": since}),
        ),
    }
    if let Some(leader) = st.replicas.is_leader() {
        let role = if leader {
            "leader: runs the scheduled jobs"
        } else {
            "standby: another replica runs the scheduled jobs"
        };
        r.add(
            Check::pass("scheduler:role", role),
            json!({"componentType": "component", "observedValue": leader}),
        );
    }
}

/// Redis, when configured: a round trip now; a failure means per-replica counts.
async fn redis_check(st: &AppState, r: &mut Report) {
    let Some(res) = st.counters.ping().await else {
        return;
    };
    let addr = st.counters.redis_address().unwrap_or_default().to_string();
    match res {
        Ok(d) => {
            let ms = d.as_secs_f64() * 1000.0;
            r.add(
                Check::pass("redis", format!("{addr} answers in {ms:.2} ms")),
                json!({"componentType": "datastore", "observedValue": ms, "observedUnit": "ms"}),
            )
        }
        Err(e) => r.add(
            Check::fail(
                "redis",
                format!("{addr}: {e}; limits are counted per replica until it is back"),
                "start Redis or fix redis.url (REDIS_URL); aica reconnects by itself",
            ),
            json!({"componentType": "datastore"}),
        ),
    }
}
