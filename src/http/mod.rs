//! The backend HTTP API: `app(state) -> Router`, served from an injected listener.
//!
//! Only this module and `console` know about axum; handlers call the core
//! (`store`, `telemetry`) and map its errors through [`error::ApiError`].

pub mod auth;
pub mod cache;
pub mod error;
pub mod middleware;
pub mod params;
mod routes;

use crate::config::Settings;
use crate::store::ContentStore;
use crate::telemetry::stats::Stats;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// Result of the last background `PRAGMA quick_check`.
#[derive(Debug, Clone)]
pub struct QuickCheck {
    /// `None` = ok, `Some(problem)` otherwise.
    pub problem: Option<String>,
    pub at: String,
    pub took_ms: f64,
}

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ContentStore>,
    pub cache: cache::ReadCache,
    pub stats: Arc<Stats>,
    pub settings: Arc<Settings>,
    /// Directory whose volume `/health/detailed` reports free space for.
    pub data_dir: PathBuf,
    pub request_timeout: Duration,
    pub quick_check: Arc<Mutex<Option<QuickCheck>>>,
}

impl AppState {
    pub fn new(store: Arc<dyn ContentStore>, settings: Settings, data_dir: PathBuf) -> AppState {
        AppState {
            store,
            cache: cache::ReadCache::new(
                settings.cache.max_entries,
                Duration::from_secs(settings.cache.ttl_secs),
            ),
            stats: Arc::new(Stats::new()),
            request_timeout: Duration::from_secs(settings.server.request_timeout_secs),
            settings: Arc::new(settings),
            data_dir,
            quick_check: Arc::default(),
        }
    }

    /// Run `PRAGMA quick_check` now and remember the result for `/health/detailed`.
    pub async fn refresh_quick_check(&self) {
        let store = self.store.clone();
        let start = std::time::Instant::now();
        let res = tokio::task::spawn_blocking(move || store.quick_check()).await;
        let problem = match res {
            Ok(Ok(p)) => p,
            Ok(Err(crate::store::StoreError::Unsupported(_))) => return,
            Ok(Err(e)) => Some(format!("quick_check could not run: {e}")),
            Err(e) => Some(format!("quick_check task failed: {e}")),
        };
        if let Some(p) = &problem {
            tracing::error!(problem = %p, "database quick_check found a problem");
        }
        *self.quick_check.lock().unwrap_or_else(|p| p.into_inner()) = Some(QuickCheck {
            problem,
            at: crate::util::now(),
            took_ms: start.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

fn cors(settings: &Settings) -> CorsLayer {
    let mut origins: Vec<HeaderValue> = settings
        .server
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        let p = settings.console.port;
        for host in ["127.0.0.1", "localhost"] {
            if let Ok(v) = HeaderValue::from_str(&format!("http://{host}:{p}")) {
                origins.push(v);
            }
        }
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
        ])
        .expose_headers([header::ETAG, HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(600))
}

/// Security headers for every answer; `csp` differs between API and console.
pub fn security_headers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    csp: &'static str,
    hsts: bool,
) -> Router<S> {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    let mut r = router
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(header::CONTENT_SECURITY_POLICY, csp));
    if hsts {
        r = r.layer(set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ));
    }
    r
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("handler panicked");
    let body = error::error_body("internal", "internal error", None);
    axum::response::IntoResponse::into_response((
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(body),
    ))
}

/// The backend application.
pub fn app(state: AppState) -> Router {
    let hsts = state.settings.server.public_url.starts_with("https://");
    let body_limit = state.settings.server.body_limit_bytes as usize;
    let cors = cors(&state.settings);
    let router = routes::routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CompressionLayer::new().gzip(true).br(true))
        .layer(cors);
    security_headers(router, "default-src 'none'; frame-ancestors 'none'", hsts)
}

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting
/// and let in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
