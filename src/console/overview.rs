//! The overview page: health and key figures, fetched live from the backend.

use super::ConsoleState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    status: String,
    backend: String,
    error: Option<String>,
    figures: Vec<(String, String)>,
    checks: Vec<(String, String, String)>,
    generated: String,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_f64)
}

fn check_value(detail: &Value, key: &str) -> Option<f64> {
    detail
        .get("checks")?
        .get(key)?
        .get(0)?
        .get("observedValue")?
        .as_f64()
}

pub async fn page(State(st): State<ConsoleState>) -> Response {
    let mut view = Overview {
        status: "fail".into(),
        backend: st.backend.clone(),
        error: None,
        figures: Vec::new(),
        checks: Vec::new(),
        generated: crate::util::now(),
    };
    match st.fetch("/health/detailed").await {
        Ok((_, detail, _)) => {
            view.status = detail
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("fail")
                .to_string();
            if let Some(checks) = detail.get("checks").and_then(Value::as_object) {
                for (k, v) in checks {
                    let c = &v[0];
                    let observed = match (&c["observedValue"], c["observedUnit"].as_str()) {
                        (Value::Null, _) => c["output"].as_str().unwrap_or("").to_string(),
                        (v, Some(u)) => format!("{v} {u}"),
                        (v, None) => v.to_string(),
                    };
                    view.checks.push((
                        k.clone(),
                        c["status"].as_str().unwrap_or("?").to_string(),
                        observed,
                    ));
                }
            }
            let mib = |b: f64| format!("{:.1} MiB", b / 1_048_576.0);
            if let Some(size) = check_value(&detail, "database:size") {
                view.figures.push(("Database size".into(), mib(size)));
            }
            if let Some(up) = check_value(&detail, "process:uptime") {
                view.figures
                    .push(("Uptime".into(), crate::util::human_secs(up as u64)));
            }
        }
        Err(e) => view.error = Some(e),
    }
    if let Ok((_, stats, _)) = st.fetch("/api/optimized/performance/stats").await {
        let r = &stats["requests"];
        if let Some(v) = num(r, &["requests_per_second_1m"]) {
            view.figures
                .insert(0, ("Request rate (1 min)".into(), format!("{v:.1} req/s")));
        }
        if let Some(v) = num(r, &["latency", "p95_ms"]) {
            view.figures
                .insert(1, ("Latency p95".into(), format!("{v:.2} ms")));
        }
        if let Some(v) = num(r, &["error_rate"]) {
            view.figures.insert(
                2,
                ("Error rate (5xx)".into(), format!("{:.2} %", v * 100.0)),
            );
        }
        if let Some(v) = num(&stats, &["cache", "hit_ratio"]) {
            view.figures
                .push(("Cache hit ratio".into(), format!("{:.1} %", v * 100.0)));
        }
    }
    let code = if view.status == "fail" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    match view.render() {
        Ok(html) => (code, Html(html)).into_response(),
        Err(e) => crate::web::error::ApiError::internal(e).into_response(),
    }
}
