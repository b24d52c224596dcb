//! The read cache (TTL, invalidated by writes, bounded in bytes and entries)
//! and ETag / 304 handling.

use crate::web::error::ApiError;
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
        let mut body = serde_json::to_vec(value).map_err(ApiError::internal)?;
        // The serialiser grows by doubling: without this an entry can hold twice
        // the bytes it is weighed at.
        body.shrink_to_fit();
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
pub struct ReadCache(Arc<Inner>);

struct Inner {
    cache: Option<Cache<(u64, String), Cached>>,
    /// Listing totals per filter (without paging), under the same generation
    /// rule: every page of one filter shares its count.
    totals: Option<Cache<(u64, String), i64>>,
    max_entries: u64,
    /// Bytes inserted since the allocator was last asked to return free memory.
    churn: AtomicU64,
    generation: AtomicU64,
    /// Set while changes made by other replicas might go unnoticed (their
    /// notifications are not arriving): every read goes to the database.
    bypass: std::sync::atomic::AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ReadCache {
    /// `max_entries == 0`, `max_bytes == 0` or `ttl == 0` disables caching
    /// (every read is a miss). Entries weigh their body and key in bytes.
    pub fn new(max_entries: u64, max_bytes: u64, ttl: Duration) -> ReadCache {
        let cache = (max_entries > 0 && max_bytes > 0 && !ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &(u64, String), v: &Cached| {
                    u32::try_from(weight(k, v)).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build()
        });
        let totals = cache.is_some().then(|| {
            Cache::builder()
                .max_capacity(max_entries.min(10_000))
                .time_to_live(ttl)
                .build()
        });
        ReadCache(Arc::new(Inner {
            cache,
            totals,
            max_entries,
            churn: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            bypass: std::sync::atomic::AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }))
    }

    /// Run [`ReadCache::run_maintenance`] every second on the current tokio
    /// runtime (if any), so expired answers are freed even when nobody reads.
    /// The task ends when the last handle to the cache is dropped.
    pub fn spawn_upkeep(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.0.cache.is_none() {
            return;
        }
        let weak = Arc::downgrade(&self.0);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let c = ReadCache(inner);
                let _ = tokio::task::spawn_blocking(move || c.run_maintenance()).await;
            }
        });
    }

    /// The current generation; pass it to [`ReadCache::put`] after computing an answer.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        if self.bypassed() {
            self.0.misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("aica_cache_misses_total").increment(1);
            return None;
        }
        let generation_at_start = self.generation();
        let found = self
            .0
            .cache
            .as_ref()
            .and_then(|c| c.get(&(generation_at_start, key.to_string())));
        if found.is_some() {
            self.0.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("aica_cache_hits_total").increment(1);
        } else {
            self.0.misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("aica_cache_misses_total").increment(1);
        }
        found
    }

    pub fn put(&self, generation_at_start: u64, key: String, value: Cached) {
        if self.bypassed() {
            return;
        }
        if let Some(c) = &self.0.cache
            && c.entry_count() < self.0.max_entries
        {
            self.0
                .churn
                .fetch_add(value.body.len() as u64, Ordering::Relaxed);
            c.insert((generation_at_start, key), value);
        }
    }

    /// Evict expired and over-capacity entries now. moka only does this during
    /// maintenance, which otherwise runs only as a side effect of cache calls:
    /// the server calls this periodically so memory is freed on an idle server.
    pub fn run_maintenance(&self) {
        if let Some(c) = &self.0.cache {
            c.run_pending_tasks();
        }
        // Evicted answers are freed, but glibc keeps freed heap pages resident
        // (measured: 5,000 distinct listings left RSS 20 MiB above the cache
        // bound). After enough churn, hand free pages back to the kernel.
        if self.0.churn.load(Ordering::Relaxed) >= TRIM_AFTER_BYTES {
            self.0.churn.store(0, Ordering::Relaxed);
            release_free_memory();
        }
    }

    /// Bytes held by cached entries (bodies and keys, as weighed).
    pub fn weighted_bytes(&self) -> u64 {
        self.0
            .cache
            .as_ref()
            .map(|c| c.weighted_size())
            .unwrap_or(0)
    }

    /// The cached total of the listing `key` (a filter without paging), if
    /// computed in the current generation.
    pub fn total(&self, key: &str) -> Option<i64> {
        if self.bypassed() {
            return None;
        }
        let t = self.0.totals.as_ref()?;
        t.get(&(self.generation(), key.to_string()))
    }

    /// Remember a listing total computed in `generation_at_start`.
    pub fn put_total(&self, generation_at_start: u64, key: String, total: i64) {
        if self.bypassed() {
            return;
        }
        if let Some(t) = &self.0.totals {
            t.insert((generation_at_start, key), total);
        }
    }

    /// Serve nothing from the cache (and keep nothing) while `on`; turning it
    /// on or off also drops what is cached.
    pub fn set_bypass(&self, on: bool) {
        self.0.bypass.store(on, Ordering::Release);
        self.invalidate();
    }

    pub fn bypassed(&self) -> bool {
        self.0.bypass.load(Ordering::Acquire)
    }

    /// Called after every successful write.
    pub fn invalidate(&self) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(c) = &self.0.cache {
            c.invalidate_all();
        }
        if let Some(t) = &self.0.totals {
            t.invalidate_all();
        }
    }

    /// (hits, misses) since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.0.hits.load(Ordering::Relaxed),
            self.0.misses.load(Ordering::Relaxed),
        )
    }

    pub fn entries(&self) -> u64 {
        self.0.cache.as_ref().map(|c| c.entry_count()).unwrap_or(0)
    }

    pub fn reset_counts(&self) {
        self.0.hits.store(0, Ordering::Relaxed);
        self.0.misses.store(0, Ordering::Relaxed);
    }
}

/// Bytes of cache churn after which free heap memory is returned to the kernel.
const TRIM_AFTER_BYTES: u64 = 2 * 1024 * 1024;

/// Return free heap pages to the kernel (glibc only; elsewhere a no-op).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds as free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What an entry costs: body, key, entity tag and a fixed overhead for the
/// entry's bookkeeping.
fn weight(k: &(u64, String), v: &Cached) -> usize {
    const OVERHEAD: usize = 160;
    v.body.len() + k.1.len() + v.etag.len() + OVERHEAD
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Any If-None-Match value is answered 200 or 304, never a panic.
        #[test]
        fn any_if_none_match_is_answered(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let v = Cached::new(&serde_json::json!({"a": 1})).unwrap();
            let mut h = HeaderMap::new();
            if let Ok(x) = HeaderValue::from_bytes(&raw) {
                h.insert(header::IF_NONE_MATCH, x);
            }
            let s = v.respond(&h).status();
            prop_assert!(s == StatusCode::OK || s == StatusCode::NOT_MODIFIED);
        }
    }

    use super::*;

    #[test]
    fn write_generation_hides_older_answers() {
        let c = ReadCache::new(100, 1 << 20, Duration::from_secs(60));
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
    fn bytes_bound_holds() {
        let c = ReadCache::new(1_000_000, 64 * 1024, Duration::from_secs(60));
        let big = Cached::new(&"x".repeat(4000)).unwrap();
        for i in 0..1000 {
            c.put(c.generation(), format!("k{i}"), big.clone());
        }
        c.run_maintenance();
        assert!(c.weighted_bytes() <= 64 * 1024, "{}", c.weighted_bytes());
        assert!(c.entries() < 20, "{}", c.entries());
    }

    #[test]
    fn expired_entries_are_freed_by_maintenance() {
        let c = ReadCache::new(100, 1 << 20, Duration::from_millis(50));
        c.put(c.generation(), "k".into(), Cached::new(&1).unwrap());
        c.run_maintenance();
        assert_eq!(c.entries(), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            c.run_maintenance();
            if c.entries() == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "expired entry kept");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(c.weighted_bytes(), 0);
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
