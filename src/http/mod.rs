//! The backend HTTP API: `app(state) -> Router`, served from an injected listener.
//!
//! Only this module and `console` know about axum; handlers call the core
//! (`store`, `telemetry`) and map its errors through [`error::ApiError`].

pub mod auth;
pub mod cache;
pub mod params;
pub mod replicas;
mod routes;

pub use crate::web::error;
pub use crate::web::serve::{Limits, serve};

use crate::config::Settings;
use crate::store::ContentStore;
use crate::telemetry::stats::Stats;
use crate::web::{MetricNames, Observer, ObserverConfig, RouteMetrics, SecurityHeaders};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

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
    pub quick_check: Arc<Mutex<Option<QuickCheck>>>,
    /// Request id, metrics, stats, logs, error shape and panic guard of this face.
    pub observer: Observer,
    /// Change feed, scheduler role and draining state (see [`replicas`]).
    pub replicas: replicas::ReplicaState,
    /// Per-client counts shared by replicas (Redis) or kept here.
    pub counters: crate::shared::Counters,
    /// One permit per pooled connection: database work waits here (async)
    /// rather than on a blocking thread, so a burst cannot pile up threads.
    db_permits: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn ContentStore>,
        settings: Settings,
        paths: &crate::config::Paths,
    ) -> AppState {
        let data_dir = paths.data.clone();
        let pool_size = settings.database.pool_size.max(1) as usize;
        let stats = Arc::new(Stats::new());
        let observer = Observer::new(ObserverConfig {
            stats: stats.clone(),
            metrics: Arc::new(RouteMetrics::new(MetricNames::API)),
            security: SecurityHeaders {
                csp: SecurityHeaders::API_CSP,
                hsts: settings.server.public_url.starts_with("https://"),
            },
            request_timeout: Duration::from_secs(settings.server.request_timeout_secs),
        });
        let cache = cache::ReadCache::new(
            settings.cache.max_entries,
            settings.cache.max_bytes,
            Duration::from_secs(settings.cache.ttl_secs),
        );
        cache.spawn_upkeep();
        let counters =
            crate::shared::Counters::new(&settings.redis.url, &settings.redis.key_prefix);
        AppState(Arc::new(Shared {
            store,
            cache,
            stats,
            settings: Arc::new(settings),
            data_dir,
            backups_dir: paths.backups.clone(),
            quick_check: Arc::default(),
            observer,
            replicas: replicas::ReplicaState::default(),
            counters,
            db_permits: Arc::new(tokio::sync::Semaphore::new(pool_size)),
        }))
    }

    /// Run `f` with the store on a blocking thread, once a pooled connection is free.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn ContentStore) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        // The semaphore is never closed, so acquiring only fails if it were.
        let _permit = self.db_permits.acquire().await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store)).await
    }

    /// Run `PRAGMA quick_check` now and remember the result for `/health/detailed`.
    pub async fn refresh_quick_check(&self) {
        let store = self.store.clone();
        let start = std::time::Instant::now();
        if store.file_maintenance().is_none() {
            return;
        }
        let res = tokio::task::spawn_blocking(move || {
            store
                .file_maintenance()
                .map(|m| m.quick_check())
                .unwrap_or(Ok(None))
        })
        .await;
        let problem = match res {
            Ok(Ok(p)) => p,
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

/// Compress successful answers only: error bodies stay plain JSON, so the
/// observing layer can add the request id to them.
fn compress_when() -> impl Predicate {
    DefaultPredicate::new().and(
        |status: axum::http::StatusCode,
         _: axum::http::Version,
         _: &axum::http::HeaderMap,
         _: &axum::http::Extensions| status.is_success(),
    )
}

/// Content negotiation before the handler: writes are never negotiated (their
/// answer is small JSON, and a refused encoding must not turn a committed write
/// into a 406); a read whose `Accept-Encoding` refuses everything we have gets
/// our JSON 406 without running the handler.
async fn negotiate(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        req.headers_mut().remove(header::ACCEPT_ENCODING);
        return next.run(req).await;
    }
    if let Some(ae) = req.headers().get(header::ACCEPT_ENCODING)
        && !encodable(ae).await
    {
        return axum::response::IntoResponse::into_response(error::ApiError::new(
            axum::http::StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "Accept-Encoding refuses every encoding this server has (identity, gzip, br); allow one of them",
        ));
    }
    next.run(req).await
}

/// Whether the compression layer can satisfy `accept_encoding`: asks the same
/// layer (tower-http's negotiation) with an empty response. Only a header with a
/// zero weight can refuse everything, so others skip the probe.
async fn encodable(accept_encoding: &HeaderValue) -> bool {
    use tower::{Layer, ServiceExt};
    if !accept_encoding
        .as_bytes()
        .to_ascii_lowercase()
        .windows(3)
        .any(|w| w == b"q=0")
    {
        return true;
    }
    let probe = compression().layer(tower::service_fn(|_: axum::http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(axum::http::Response::new(axum::body::Body::empty()))
    }));
    let mut req = axum::http::Request::new(());
    req.headers_mut()
        .insert(header::ACCEPT_ENCODING, accept_encoding.clone());
    probe
        .oneshot(req)
        .await
        .map(|r| r.status() != axum::http::StatusCode::NOT_ACCEPTABLE)
        .unwrap_or(true)
}

fn compression() -> CompressionLayer<impl Predicate> {
    // The fastest level: brotli's default keeps megabytes of state per
    // response stream (measured: 16 clients asking br took RSS from 40 to 63 MiB).
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .quality(tower_http::CompressionLevel::Fastest)
        .compress_when(compress_when())
}

/// A compressed answer is another representation: its entity tag may not be
/// the strong tag of the identity bytes, so it becomes weak (`W/"..."`);
/// `If-None-Match` compares weakly, so revalidation still gets its 304.
async fn weak_etag_when_encoded<B>(mut r: axum::http::Response<B>) -> axum::http::Response<B> {
    if r.headers().contains_key(header::CONTENT_ENCODING)
        && let Some(tag) = r.headers().get(header::ETAG).cloned()
        && !tag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(tag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            r.headers_mut().insert(header::ETAG, v);
        }
    }
    r
}

/// The backend application.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// The backend with `extra` routes merged into its route table, under the same
/// layers (tests use it to add a route that panics).
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let body_limit = state.settings.server.body_limit_bytes as usize;
    let body_timeout = Duration::from_secs(state.settings.server.body_read_timeout_secs);
    let cors = cors(&state.settings);
    let observer = state.observer.clone();
    // One `layer` call: axum boxes each layer per route, so stacking them in a
    // single ServiceBuilder costs one box and one clone per request.
    // Outermost first; the observing layer and its panic guard go around all of it.
    let stack = tower::ServiceBuilder::new()
        .layer(cors)
        .layer(axum::middleware::from_fn(negotiate))
        .layer(axum::middleware::map_response(weak_etag_when_encoded))
        .layer(compression())
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(DefaultBodyLimit::max(body_limit));
    let router = routes::routes().merge(extra).layer(stack).with_state(state);
    observer.wrap(router)
}
