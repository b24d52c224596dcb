//! The outermost layer of both faces: request id, protocol checks, timeout,
//! panic guard, RED metrics, statistics, the access log line, JSON bodies for
//! every error, and security headers. Everything a handler (or a panic, or a
//! layer such as CORS or compression) answers passes through it.

use super::error::{InternalDetail, error_body};
use super::security::SecurityHeaders;
use crate::telemetry::stats::Stats;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request target (path and query) we read; longer ones get a JSON 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

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

/// The `method` label: the standard methods by name, anything invented as `other`,
/// so clients cannot create label values.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Metric names of one face (the backend uses `http_*`, the console `console_http_*`).
#[derive(Clone, Copy, Debug)]
pub struct MetricNames {
    pub requests: &'static str,
    pub duration: &'static str,
    pub in_flight: &'static str,
}

impl MetricNames {
    pub const API: MetricNames = MetricNames {
        requests: "http_requests_total",
        duration: "http_request_duration_seconds",
        in_flight: "http_requests_in_flight",
    };
    pub const CONSOLE: MetricNames = MetricNames {
        requests: "console_http_requests_total",
        duration: "console_http_request_duration_seconds",
        in_flight: "console_http_requests_in_flight",
    };
}

/// Metric handles per (route, method, status), registered once: the label set is
/// bounded by the route table and the method list, and the hot path does no
/// allocation or registry lookup.
pub struct RouteMetrics {
    names: MetricNames,
    in_flight: metrics::Gauge,
    routes: RwLock<HashMap<String, Vec<Handles>>>,
}

struct Handles {
    method: &'static str,
    duration: metrics::Histogram,
    by_status: Vec<(u16, metrics::Counter)>,
}

impl RouteMetrics {
    pub fn new(names: MetricNames) -> RouteMetrics {
        RouteMetrics {
            names,
            in_flight: metrics::gauge!(names.in_flight),
            routes: RwLock::default(),
        }
    }

    fn record(&self, method: &'static str, route: &str, status: u16, took: Duration) {
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
                    method,
                    duration: metrics::histogram!(self.names.duration, "method" => method, "route" => route.to_string()),
                    by_status: Vec::new(),
                });
                per_route.len() - 1
            }
        };
        let h = &mut per_route[i];
        if !h.by_status.iter().any(|(s, _)| *s == status) {
            let c = metrics::counter!(self.names.requests, "method" => method, "route" => route.to_string(), "status" => status.to_string());
            h.by_status.push((status, c));
        }
        h.duration.record(secs);
        if let Some((_, c)) = h.by_status.iter().find(|(s, _)| *s == status) {
            c.increment(1);
        }
    }
}

/// Counts a request in the in-flight gauge until dropped (also on cancellation).
struct InFlight<'a>(&'a metrics::Gauge);
impl<'a> InFlight<'a> {
    fn start(g: &'a metrics::Gauge) -> InFlight<'a> {
        g.increment(1.0);
        InFlight(g)
    }
}
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What the observing layer of one face needs.
pub struct ObserverConfig {
    pub stats: Arc<Stats>,
    pub metrics: Arc<RouteMetrics>,
    pub security: SecurityHeaders,
    /// Requests running longer are answered 503.
    pub request_timeout: Duration,
}

/// Shared handle to an [`ObserverConfig`].
#[derive(Clone)]
pub struct Observer(Arc<ObserverConfig>);

impl Observer {
    pub fn new(config: ObserverConfig) -> Observer {
        Observer(Arc::new(config))
    }

    /// Wrap `router` (routes and fallback, with every face-specific layer already
    /// applied) in the panic guard and, outside it, the observing layer.
    pub fn wrap(&self, router: Router) -> Router {
        // One `layer` call: axum boxes each call per route.
        router.layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(self.clone(), observe))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
    }
}

/// A panic becomes a 500 whose detail (the panic message) the observing layer
/// logs with the request id; the client sees our generic error.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    let mut resp = (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(error_body(
            "internal",
            "internal error; the server log has the details under this request id",
            None,
        )),
    )
        .into_response();
    resp.extensions_mut()
        .insert(InternalDetail(format!("handler panicked: {what}")));
    resp
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host` header.
fn bad_host(req: &Request) -> bool {
    req.version() == Version::HTTP_11 && req.headers().get_all(header::HOST).iter().count() != 1
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(error_body(code, message, None))).into_response()
}

/// Wraps every route. Labels use the route template, never the raw path.
async fn observe(State(ob): State<Observer>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let ob = &*ob.0;
    let _guard = InFlight::start(&ob.metrics.in_flight);
    let rid = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(valid_incoming)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(rid.clone()));
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());

    let mut resp = if bad_host(&req) {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "an HTTP/1.1 request needs exactly one Host header (RFC 9112 section 3.2)",
        )
    } else if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > MAX_URI_BYTES {
        refuse(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the request target is longer than 8 KiB; send fewer or shorter query parameters",
        )
    } else {
        match tokio::time::timeout(ob.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took too long and was abandoned; retry later",
            ),
        }
    };
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        resp = json_error(resp, &rid).await;
    }
    let took = start.elapsed();
    ob.metrics.record(method, &route, status.as_u16(), took);
    ob.stats.record(&route, status.as_u16(), took);
    let latency_ms = took.as_secs_f64() * 1000.0;
    if let Some(InternalDetail(detail)) = resp.extensions_mut().remove::<InternalDetail>() {
        tracing::error!(request_id = %rid, method, route, status = status.as_u16(), latency_ms, detail, "request failed");
    } else {
        tracing::info!(request_id = %rid, method, route, status = status.as_u16(), latency_ms, "request");
    }
    ob.security.apply(resp.headers_mut());
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    resp
}

fn default_error(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::NOT_FOUND => (
            "not_found",
            "no such resource; see README.md for the routes",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not accept that method; the Allow header lists the ones it does",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than server.body_limit_bytes allows",
        ),
        StatusCode::NOT_ACCEPTABLE => (
            "not_acceptable",
            "Accept-Encoding refuses every encoding this server has (identity, gzip, br); allow one of them",
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "the request body stopped arriving; send it without pauses",
        ),
        s if s.is_server_error() => ("internal", "internal error"),
        _ => (
            "bad_request",
            "the request was refused; see README.md for the API",
        ),
    }
}

/// Give every error answer our JSON shape with the request id in it: errors
/// that came without a body of ours (405 from the router, 406 from compression,
/// 413 from the body limit) get one; our own JSON errors (small, buffered) get
/// the id added; JSON documents that are not errors (a failing health report)
/// and HTML pages (the console) are left as they are.
async fn json_error(resp: Response, rid: &str) -> Response {
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoded = resp.headers().contains_key(header::CONTENT_ENCODING);
    if ct.starts_with("text/html") && !encoded {
        return resp;
    }
    let is_json = ct.starts_with("application/") && ct.contains("json") && !encoded;
    let (mut parts, body) = resp.into_parts();
    let parsed = if is_json {
        axum::body::to_bytes(body, 64 * 1024)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    } else {
        None
    };
    let mut value = match parsed {
        Some(v) => v,
        None => {
            let (code, message) = default_error(status);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            error_body(code, message, None)
        }
    };
    if let Some(e) = value.get_mut("error").and_then(|e| e.as_object_mut()) {
        e.insert(
            "request_id".into(),
            serde_json::Value::String(rid.to_string()),
        );
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    let body = serde_json::to_vec(&value).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any incoming x-request-id is either kept as it is (short, plain) or replaced.
        #[test]
        fn any_request_id_header_is_checked(raw in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(v) = HeaderValue::from_bytes(&raw)
                && let Some(id) = valid_incoming(&v)
            {
                prop_assert!(id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            }
            prop_assert_eq!(new_request_id().len(), 16);
        }
    }
}
