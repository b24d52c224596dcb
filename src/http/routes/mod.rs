//! The route table of the backend.

mod content;
mod health;
mod perf;
mod write;

use super::AppState;
use axum::Router;
use axum::routing::{get, post, put};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/detailed", get(health::detailed))
        .route("/metrics", get(perf::metrics))
        .route("/api/optimized/articles", get(content::articles))
        .route("/api/optimized/trends", get(content::trends))
        .route("/api/optimized/newsletters", get(content::newsletters))
        .route("/api/optimized/dashboard", get(content::dashboard))
        .route("/api/optimized/performance/stats", get(perf::stats))
        .route("/api/optimized/performance/reset", post(perf::reset))
        .route("/api/articles", post(write::create_article))
        .route(
            "/api/articles/{slug}",
            get(content::article)
                .put(write::update_article)
                .delete(write::delete_article),
        )
        .route("/api/trends", post(write::create_trend))
        .route(
            "/api/trends/{id}",
            put(write::update_trend).delete(write::delete_trend),
        )
        .route("/api/newsletters", post(write::create_newsletter))
        .route(
            "/api/newsletters/{id}",
            put(write::update_newsletter).delete(write::delete_newsletter),
        )
        .route("/api/audit", get(write::audit_log))
        .fallback(|| async {
            crate::web::error::ApiError::not_found(
                "no such resource; see README.md for the API routes",
            )
        })
}
