//! The web console on :3000: an overview page and `/api/health`, both built from
//! real calls to the backend over HTTP, so the console can also run apart from it.
//! New pages go in `pages` next to `overview`.

mod overview;

use crate::telemetry::stats::Stats;
use crate::web::error::ApiError;
use crate::web::{MetricNames, Observer, ObserverConfig, RouteMetrics, SecurityHeaders};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What console handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    /// Base URL of the backend, without trailing slash.
    pub backend: String,
    pub client: reqwest::Client,
}

impl ConsoleState {
    pub fn new(backend: String) -> ConsoleState {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .expect("an HTTP client without TLS always builds");
        ConsoleState {
            backend: backend.trim_end_matches('/').to_string(),
            client,
        }
    }

    /// GET a backend path; returns (HTTP status, JSON body, round trip) or why it failed.
    pub async fn fetch(&self, path: &str) -> Result<(u16, Value, Duration), String> {
        let start = Instant::now();
        let resp = self
            .client
            .get(format!("{}{path}", self.backend))
            .send()
            .await
            .map_err(|e| format!("backend unreachable at {}: {e}", self.backend))?;
        let status = resp.status().as_u16();
        let body = resp
            .json::<Value>()
            .await
            .map_err(|e| format!("backend sent no JSON: {e}"))?;
        Ok((status, body, start.elapsed()))
    }
}

/// `/api/health`: the console is up and the backend's `/health` passes.
async fn api_health(axum::extract::State(st): axum::extract::State<ConsoleState>) -> Response {
    let now = crate::util::now();
    let (status, check) = match st.fetch("/health").await {
        Ok((code, body, took)) => {
            let s = body
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("fail")
                .to_string();
            let s = if code >= 500 { "fail".to_string() } else { s };
            (
                s.clone(),
                json!({"status": s, "observedValue": took.as_secs_f64() * 1000.0, "observedUnit": "ms",
                               "httpStatus": code, "time": now, "backend": body}),
            )
        }
        Err(e) => (
            "fail".into(),
            json!({"status": "fail", "output": e, "time": now}),
        ),
    };
    let code = if status == "fail" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": status,
        "serviceId": "aica-console",
        "version": env!("CARGO_PKG_VERSION"),
        "checks": { "console:process": [{"status": "pass", "time": now}], "backend:health": [check] },
    });
    let mut resp = (code, Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/health+json"),
    );
    resp
}

/// The console application, under the same observing layer and panic guard as
/// the backend (its own statistics and `console_http_*` metrics).
pub fn app(state: ConsoleState) -> Router {
    app_with(state, Router::new())
}

/// The console with `extra` routes added (tests use it to add a route that panics).
pub fn app_with(state: ConsoleState, extra: Router<ConsoleState>) -> Router {
    let router = Router::new()
        .route("/", get(overview::page))
        .route("/api/health", get(api_health))
        .merge(extra)
        .fallback(|| async {
            ApiError::not_found("no such console page; the console has / and /api/health")
        })
        .with_state(state);
    observer().wrap(router)
}

fn observer() -> Observer {
    Observer::new(ObserverConfig {
        stats: Arc::new(Stats::new()),
        metrics: Arc::new(RouteMetrics::new(MetricNames::CONSOLE)),
        security: SecurityHeaders {
            csp: SecurityHeaders::CONSOLE_CSP,
            hsts: false,
        },
        request_timeout: Duration::from_secs(30),
    })
}
