//! Read endpoints: listings, dashboard and single articles, cached with ETags.

use crate::http::cache::Cached;
use crate::http::{AppState, params};
use crate::store::{ContentStore, valid_slug};
use crate::web::error::ApiError;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;

/// Serve from the cache, or compute on a blocking thread, cache, and serve.
async fn cached<T, F>(
    st: &AppState,
    headers: &HeaderMap,
    key: String,
    f: F,
) -> Result<Response, ApiError>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&dyn ContentStore) -> Result<Option<T>, ApiError> + Send + 'static,
{
    if let Some(hit) = st.cache.get(&key) {
        return Ok(hit.respond(headers));
    }
    let generation_at_start = st.cache.generation();
    let value = st.with_store(f).await??;
    let Some(value) = value else {
        return Err(ApiError::not_found("no item with that key"));
    };
    let c = Cached::new(&value)?;
    st.cache.put(generation_at_start, key, c.clone());
    Ok(c.respond(headers))
}

pub async fn articles(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = params::article_filter(q.as_deref())?;
    let key = format!("articles:{f:?}");
    cached(&st, &headers, key, move |s| Ok(Some(s.list_articles(&f)?))).await
}

pub async fn trends(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = params::trend_filter(q.as_deref())?;
    let key = format!("trends:{f:?}");
    cached(&st, &headers, key, move |s| Ok(Some(s.list_trends(&f)?))).await
}

pub async fn newsletters(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = params::newsletter_filter(q.as_deref())?;
    let key = format!("newsletters:{f:?}");
    cached(&st, &headers, key, move |s| {
        Ok(Some(s.list_newsletters(&f)?))
    })
    .await
}

pub async fn dashboard(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    params::Query::parse(q.as_deref(), &[])?;
    cached(&st, &headers, "dashboard".into(), |s| {
        Ok(Some(s.dashboard()?))
    })
    .await
}

pub async fn article(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(slug): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    params::Query::parse(q.as_deref(), &[])?;
    if !valid_slug(&slug) {
        return Err(ApiError::bad_request(
            "an article slug is 1 to 120 characters of a-z, 0-9 and '-'",
        ));
    }
    let key = format!("article:{slug}");
    cached(&st, &headers, key, move |s| {
        s.get_article(&slug)?
            .map(Some)
            .ok_or_else(|| ApiError::not_found(format!("no article with slug {slug:?}")))
    })
    .await
}
