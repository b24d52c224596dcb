//! The bounded read cache (TTL, invalidated by writes) and ETag / 304 handling.

use super::error::ApiError;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moka::sync::Cache;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A serialised answer and its entity tag.
#[derive(Clone)]
pub struct Cached {
    body: Bytes,
    etag: HeaderValue,
}

impl Cached {
    pub fn new<T: Serialize>(value: &T) -> Result<Cached, ApiError> {
        let body = serde_json::to_vec(value).map_err(ApiError::internal)?;
        let hash = blake3::hash(&body);
        let etag = format!("\"{}\"", &hash.to_hex()[..32]);
        Ok(Cached {
            body: Bytes::from(body),
            etag: HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
        })
    }

    /// 304 when `If-None-Match` names our tag (or `*`), else 200 with the body.
    pub fn respond(&self, req: &HeaderMap) -> Response {
        let matches = req
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t.as_bytes() == self.etag.as_bytes());
        let cache_control = HeaderValue::from_static("no-cache");
        if matches {
            return (
                StatusCode::NOT_MODIFIED,
                [
                    (header::ETAG, self.etag.clone()),
                    (header::CACHE_CONTROL, cache_control),
                ],
            )
                .into_response();
        }
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ETAG, self.etag.clone()),
                (header::CACHE_CONTROL, cache_control),
            ],
            self.body.clone(),
        )
            .into_response()
    }
}

/// Read cache keyed by a canonical request description plus a write generation:
/// a write bumps the generation, so an answer computed before it is never served after it.
#[derive(Clone)]
pub struct ReadCache {
    cache: Option<Cache<(u64, String), Cached>>,
    generation: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
}

impl ReadCache {
    /// `max_entries == 0` or `ttl == 0` disables caching (every read is a miss).
    pub fn new(max_entries: u64, ttl: Duration) -> ReadCache {
        let cache = (max_entries > 0 && !ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build()
        });
        ReadCache {
            cache,
            generation: Arc::default(),
            hits: Arc::default(),
            misses: Arc::default(),
        }
    }

    /// The current generation; pass it to [`ReadCache::put`] after computing an answer.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        let generation_at_start = self.generation();
        let found = self
            .cache
            .as_ref()
            .and_then(|c| c.get(&(generation_at_start, key.to_string())));
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("aica_cache_hits_total").increment(1);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("aica_cache_misses_total").increment(1);
        }
        found
    }

    pub fn put(&self, generation_at_start: u64, key: String, value: Cached) {
        if let Some(c) = &self.cache {
            c.insert((generation_at_start, key), value);
        }
    }

    /// Called after every successful write.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(c) = &self.cache {
            c.invalidate_all();
        }
    }

    /// (hits, misses) since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub fn entries(&self) -> u64 {
        self.cache.as_ref().map(|c| c.entry_count()).unwrap_or(0)
    }

    pub fn reset_counts(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_generation_hides_older_answers() {
        let c = ReadCache::new(100, Duration::from_secs(60));
        let generation_at_start = c.generation();
        assert!(c.get("k").is_none());
        c.invalidate(); // a write lands while the read computes
        c.put(generation_at_start, "k".into(), Cached::new(&1).unwrap());
        assert!(c.get("k").is_none(), "stale answer served after a write");
        c.put(c.generation(), "k".into(), Cached::new(&2).unwrap());
        assert!(c.get("k").is_some());
        assert_eq!(c.counts(), (1, 2));
    }

    #[test]
    fn etag_match_gives_304() {
        let v = Cached::new(&serde_json::json!({"a": 1})).unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(v.respond(&h).status(), StatusCode::OK);
        h.insert(header::IF_NONE_MATCH, v.etag.clone());
        assert_eq!(v.respond(&h).status(), StatusCode::NOT_MODIFIED);
    }
}
