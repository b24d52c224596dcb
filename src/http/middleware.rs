//! Per-request plumbing: request id, timeout, RED metrics, statistics, the
//! access log line, JSON bodies for every error, and security headers.

use super::AppState;
use super::error::{InternalDetail, error_body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served, for handlers that want it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn valid_incoming(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| s.to_string())
}

/// Metric handles per (route, method, status), registered once: the label set is
/// bounded by the route table, and the hot path does no allocation or registry lookup.
#[derive(Default)]
pub struct RouteMetrics {
    routes: RwLock<HashMap<String, Vec<Handles>>>,
}

struct Handles {
    method: Method,
    duration: metrics::Histogram,
    by_status: Vec<(u16, metrics::Counter)>,
}

impl RouteMetrics {
    fn record(&self, method: &Method, route: &str, status: u16, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        {
            let map = self.routes.read().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = map
                .get(route)
                .and_then(|v| v.iter().find(|h| h.method == method))
                && let Some((_, c)) = h.by_status.iter().find(|(s, _)| *s == status)
            {
                h.duration.record(secs);
                c.increment(1);
                return;
            }
        }
        let mut map = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let per_route = map.entry(route.to_string()).or_default();
        let i = match per_route.iter().position(|h| h.method == method) {
            Some(i) => i,
            None => {
                per_route.push(Handles {
                    method: method.clone(),
                    duration: metrics::histogram!("http_request_duration_seconds", "method" => method.to_string(), "route" => route.to_string()),
                    by_status: Vec::new(),
                });
                per_route.len() - 1
            }
        };
        let h = &mut per_route[i];
        if !h.by_status.iter().any(|(s, _)| *s == status) {
            let c = metrics::counter!("http_requests_total", "method" => method.to_string(), "route" => route.to_string(), "status" => status.to_string());
            h.by_status.push((status, c));
        }
        h.duration.record(secs);
        if let Some((_, c)) = h.by_status.iter().find(|(s, _)| *s == status) {
            c.increment(1);
        }
    }
}

static IN_FLIGHT: std::sync::OnceLock<metrics::Gauge> = std::sync::OnceLock::new();

/// Counts a request in `http_requests_in_flight` until dropped (also on cancellation).
struct InFlight(&'static metrics::Gauge);
impl InFlight {
    fn start() -> InFlight {
        let g = IN_FLIGHT.get_or_init(|| metrics::gauge!("http_requests_in_flight"));
        g.increment(1.0);
        InFlight(g)
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Wraps every route. Labels use the route template, never the raw path.
pub async fn observe(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let _guard = InFlight::start();
    let rid = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(valid_incoming)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(rid.clone()));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());

    let mut resp = match tokio::time::timeout(st.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(error_body(
                "timeout",
                "the request took too long and was abandoned; retry later",
                None,
            )),
        )
            .into_response(),
    };
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        resp = json_error(resp, &rid).await;
    }
    let took = start.elapsed();
    st.route_metrics
        .record(&method, &route, status.as_u16(), took);
    st.stats.record(&route, status.as_u16(), took);
    let latency_ms = took.as_secs_f64() * 1000.0;
    if let Some(InternalDetail(detail)) = resp.extensions_mut().remove::<InternalDetail>() {
        tracing::error!(request_id = %rid, method = %method, route, status = status.as_u16(), latency_ms, detail, "request failed");
    } else {
        tracing::info!(request_id = %rid, method = %method, route, status = status.as_u16(), latency_ms, "request");
    }
    st.security.apply(resp.headers_mut());
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    resp
}

/// Give every error answer our JSON shape with the request id in it: errors
/// that came without JSON (405 from the router, 413 from the body limit) get a
/// body; our own JSON errors (small, buffered) get the id added.
async fn json_error(resp: Response, rid: &str) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/") && v.contains("json"));
    let (mut parts, body) = resp.into_parts();
    let mut value = if is_json {
        axum::body::to_bytes(body, 64 * 1024)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    } else {
        None
    }
    .unwrap_or_else(|| {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => (
                "not_found",
                "no such resource; see README.md for the API routes",
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "this route does not accept that method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "payload_too_large",
                "the request body is larger than server.body_limit_bytes allows",
            ),
            s if s.is_server_error() => ("internal", "internal error"),
            s => ("bad_request", s.canonical_reason().unwrap_or("bad request")),
        };
        error_body(code, message, None)
    });
    if let Some(e) = value.get_mut("error").and_then(|e| e.as_object_mut()) {
        e.insert(
            "request_id".into(),
            serde_json::Value::String(rid.to_string()),
        );
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::to_vec(&value).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}
