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

/// Result of the last background `PRAGMA quick_check`.
#[derive(Debug, Clone)]
pub struct QuickCheck {
    /// `None` = ok, `Some(problem)` otherwise.
    pub problem: Option<String>,
    pub at: String,
    pub took_ms: f64,
}

/// Everything handlers share: one `Arc`, so the per-request clone is one increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields behind [`AppState`].
pub struct Shared {
    pub store: Arc<dyn ContentStore>,
    pub cache: cache::ReadCache,
    pub stats: Arc<Stats>,
    pub settings: Arc<Settings>,
    /// Directory whose volume `/health/detailed` reports free space for.
    pub data_dir: PathBuf,
    /// Where backups are, for the backup age check and metrics.
    pub backups_dir: PathBuf,
    pub request_timeout: Duration,
    pub quick_check: Arc<Mutex<Option<QuickCheck>>>,
    pub security: SecurityHeaders,
    pub route_metrics: Arc<middleware::RouteMetrics>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn ContentStore>,
        settings: Settings,
        paths: &crate::config::Paths,
    ) -> AppState {
        let data_dir = paths.data.clone();
        let settings_hsts = settings.server.public_url.starts_with("https://");
        AppState(Arc::new(Shared {
            store,
            cache: cache::ReadCache::new(
                settings.cache.max_entries,
                Duration::from_secs(settings.cache.ttl_secs),
            ),
            stats: Arc::new(Stats::new()),
            request_timeout: Duration::from_secs(settings.server.request_timeout_secs),
            settings: Arc::new(settings),
            data_dir,
            backups_dir: paths.backups.clone(),
            quick_check: Arc::default(),
            security: SecurityHeaders {
                csp: SecurityHeaders::API_CSP,
                hsts: settings_hsts,
            },
            route_metrics: Arc::default(),
        }))
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
#[derive(Clone, Copy, Debug)]
pub struct SecurityHeaders {
    pub csp: &'static str,
    /// Send HSTS (only when the public URL is https).
    pub hsts: bool,
}

impl SecurityHeaders {
    /// The API serves JSON only: nothing may be loaded or framed.
    pub const API_CSP: &'static str = "default-src 'none'; frame-ancestors 'none'";

    /// Add each header the response does not set itself.
    pub fn apply(&self, h: &mut axum::http::HeaderMap) {
        let mut set = |name: HeaderName, value: &'static str| {
            h.entry(name).or_insert(HeaderValue::from_static(value));
        };
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(header::X_FRAME_OPTIONS, "DENY");
        set(header::REFERRER_POLICY, "no-referrer");
        set(header::CONTENT_SECURITY_POLICY, self.csp);
        if self.hsts {
            set(
                header::STRICT_TRANSPORT_SECURITY,
                "max-age=31536000; includeSubDomains",
            );
        }
    }

    /// Wrap a whole router (used by the console; the backend applies them in its middleware).
    pub fn layer<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router.layer(axum::middleware::map_response(
            move |mut r: axum::response::Response| async move {
                self.apply(r.headers_mut());
                r
            },
        ))
    }
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
    let body_limit = state.settings.server.body_limit_bytes as usize;
    let cors = cors(&state.settings);
    // One `layer` call: axum boxes each layer per route, so stacking them in a
    // single ServiceBuilder costs one box and one clone per request, not five.
    // Outermost first.
    let stack = tower::ServiceBuilder::new()
        .layer(cors)
        .layer(CompressionLayer::new().gzip(true).br(true))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ));
    routes::routes().layer(stack).with_state(state)
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
