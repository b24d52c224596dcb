//! `/metrics` (Prometheus) and the performance statistics endpoints.

use crate::http::AppState;
use crate::http::auth::{self, Role};
use crate::web::error::ApiError;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;

pub async fn metrics(State(st): State<AppState>) -> Response {
    metrics::gauge!("aica_uptime_seconds").set(st.stats.uptime().as_secs_f64());
    let (store, dir) = (st.store.clone(), st.backups_dir.clone());
    // File-system reads and rendering, in one trip to the blocking pool.
    let body = tokio::task::spawn_blocking(move || {
        let size = match store.file_maintenance() {
            Some(m) => m.size_bytes().ok(),
            None => store.server_size_bytes().ok().flatten(),
        };
        if let Some(size) = size {
            metrics::gauge!("aica_db_size_bytes").set(size as f64);
        }
        let info = store.info();
        metrics::gauge!("aica_db_pool_max_connections").set(info.pool_max as f64);
        metrics::gauge!("aica_db_pool_connections", "state" => "idle").set(info.pool_idle as f64);
        metrics::gauge!("aica_db_pool_connections", "state" => "busy")
            .set(info.pool_open.saturating_sub(info.pool_idle) as f64);
        metrics::gauge!("aica_db_pool_waiting").set(info.pool_waiting as f64);
        crate::backup::publish_gauges(&dir);
        crate::telemetry::metrics::render()
    })
    .await
    .unwrap_or_default();
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

pub async fn stats(State(st): State<AppState>) -> Response {
    let snap = st.stats.snapshot();
    let (hits, misses) = st.cache.counts();
    let ratio = if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    };
    Json(json!({
        "requests": snap,
        "cache": {"hits": hits, "misses": misses, "hit_ratio": ratio, "entries": st.cache.entries()},
        "process": {
            "resident_memory_bytes": crate::util::rss_bytes(),
            "uptime_seconds": st.stats.uptime().as_secs_f64(),
        },
    }))
    .into_response()
}

pub async fn reset(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = auth::require(
        &st,
        &headers,
        addr,
        Role::Admin,
        "performance.reset",
        "performance stats".into(),
    )
    .await?;
    st.stats.reset();
    st.cache.reset_counts();
    auth::audit_ok(&st, &actor, "performance.reset", "performance stats".into()).await;
    Ok(Json(json!({"reset": true})).into_response())
}
