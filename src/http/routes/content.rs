//! Read endpoints: listings, dashboard and single articles, cached with ETags.

use crate::http::cache::Cached;
use crate::http::{AppState, params};
use crate::store::{ContentStore, Page, Paging, valid_slug};
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

/// A listing: its page from the cache, or computed with the filter's total
/// from the totals cache when another page of the same filter counted it.
async fn listing<F, T>(
    st: &AppState,
    headers: &HeaderMap,
    kind: &str,
    mut f: F,
    paging: impl Fn(&mut F) -> &mut Paging + Send + 'static,
    list: impl FnOnce(&dyn ContentStore, &F) -> crate::store::Result<Page<T>> + Send + 'static,
) -> Result<Response, ApiError>
where
    F: std::fmt::Debug + Clone + Send + 'static,
    T: Serialize + Send + 'static,
{
    let key = format!("{kind}:{f:?}");
    let mut unpaged = f.clone();
    *paging(&mut unpaged) = Paging::default();
    let total_key = format!("{kind}:{unpaged:?}");
    paging(&mut f).known_total = st.cache.total(&total_key);
    let (cache, generation_at_start) = (st.cache.clone(), st.cache.generation());
    cached(st, headers, key, move |s| {
        let page = list(s, &f)?;
        cache.put_total(generation_at_start, total_key, page.total);
        Ok(Some(page))
    })
    .await
}

pub async fn articles(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = params::article_filter(q.as_deref())?;
    listing(
        &st,
        &headers,
        "articles",
        f,
        |f| &mut f.paging,
        |s, f| s.list_articles(f),
    )
    .await
}

pub async fn trends(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = params::trend_filter(q.as_deref())?;
    listing(
        &st,
        &headers,
        "trends",
        f,
        |f| &mut f.paging,
        |s, f| s.list_trends(f),
    )
    .await
}

pub async fn newsletters(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = params::newsletter_filter(q.as_deref())?;
    listing(
        &st,
        &headers,
        "newsletters",
        f,
        |f| &mut f.paging,
        |s, f| s.list_newsletters(f),
    )
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
