//! Per-client state that must be global across replicas (failed-key counts
//! for throttling): in Redis when `redis.url` is set, in this process
//! otherwise. A Redis outage falls back to per-replica counting with a
//! warning and a failing `redis` check, never an error to the client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one Redis round trip may take before the local count is used.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Distinct clients counted locally before the oldest windows are dropped.
const LOCAL_MAX_KEYS: usize = 100_000;

/// State of the Redis link, logged when it changes.
#[derive(Debug, Clone, PartialEq)]
enum RedisState {
    Connected { since: String },
    Down { since: String, error: String },
}

/// Windowed counters keyed by client.
pub struct Counters {
    local: Mutex<HashMap<String, (u64, u64)>>,
    redis: Option<Redis>,
    prefix: String,
}

struct Redis {
    client: redis::Client,
    where_: String,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    state: Mutex<RedisState>,
    /// No reconnection attempt before this instant (after a failure).
    retry_at: Mutex<Option<Instant>>,
}

fn window_of(window: Duration) -> u64 {
    let secs = window.as_secs().max(1);
    crate::util::unix_now() / secs
}

impl Counters {
    /// `redis_url` empty: local only. An invalid URL is refused by config validation.
    /// Every Redis key starts with `prefix`.
    pub fn new(redis_url: &str, prefix: &str) -> Counters {
        let redis = (!redis_url.trim().is_empty())
            .then(|| redis::Client::open(redis_url.trim()).ok())
            .flatten()
            .map(|client| {
                let info = client.get_connection_info();
                Redis {
                    where_: format!("{}", info.addr()),
                    client,
                    conn: tokio::sync::Mutex::new(None),
                    state: Mutex::new(RedisState::Down {
                        since: crate::util::now(),
                        error: "not connected yet".into(),
                    }),
                    retry_at: Mutex::new(None),
                }
            });
        Counters {
            local: Mutex::new(HashMap::new()),
            redis,
            prefix: prefix.to_string(),
        }
    }

    /// Where Redis is (host:port), when configured.
    pub fn redis_address(&self) -> Option<&str> {
        self.redis.as_ref().map(|r| r.where_.as_str())
    }

    /// Add one to `key`'s count in the current `window` and return the new
    /// count, atomically: concurrent callers each see a different count.
    pub async fn hit(&self, key: &str, window: Duration) -> u64 {
        self.op(key, window, 1).await
    }

    /// `key`'s count in the current `window`.
    pub async fn count(&self, key: &str, window: Duration) -> u64 {
        self.op(key, window, 0).await
    }

    async fn op(&self, key: &str, window: Duration, delta: i64) -> u64 {
        let w = window_of(window);
        if let Some(r) = &self.redis
            && let Some(n) = r
                .op(&format!("{}:{key}", self.prefix), w, window, delta)
                .await
        {
            return n;
        }
        self.local_op(key, w, delta)
    }

    fn local_op(&self, key: &str, w: u64, delta: i64) -> u64 {
        let mut m = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= LOCAL_MAX_KEYS && !m.contains_key(key) {
            m.retain(|_, (win, _)| *win == w);
            if m.len() >= LOCAL_MAX_KEYS {
                m.clear();
            }
        }
        let e = m.entry(key.to_string()).or_insert((w, 0));
        if e.0 != w {
            *e = (w, 0);
        }
        e.1 = e.1.saturating_add_signed(delta);
        e.1
    }

    /// Round trip to Redis (PING), for the health check; `Err` says why not.
    pub async fn ping(&self) -> Option<Result<Duration, String>> {
        let r = self.redis.as_ref()?;
        let start = Instant::now();
        Some(
            r.with_conn(|mut c| async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .map(|_| ())
            })
            .await
            .map(|_| start.elapsed()),
        )
    }
}

impl Redis {
    fn set_state(&self, s: RedisState) {
        let mut cur = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let changed = std::mem::discriminant(&*cur) != std::mem::discriminant(&s);
        if changed {
            match &s {
                RedisState::Down { error, .. } => {
                    tracing::warn!(redis = %self.where_, error, "Redis unreachable: counting per replica until it is back")
                }
                RedisState::Connected { .. } => {
                    tracing::info!(redis = %self.where_, "Redis connected: counts shared by all replicas")
                }
            }
            *cur = s;
        }
    }

    fn fail(&self, error: String) -> String {
        self.set_state(RedisState::Down {
            since: crate::util::now(),
            error: error.clone(),
        });
        *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + Duration::from_secs(2));
        error
    }

    /// Run `f` on a connection (connecting if needed), bounded by [`REDIS_TIMEOUT`].
    async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = {
            let mut slot = self.conn.lock().await;
            if slot.is_none() {
                let wait = *self.retry_at.lock().unwrap_or_else(|p| p.into_inner());
                if wait.is_some_and(|t| Instant::now() < t) {
                    return Err("Redis is down; retrying shortly".into());
                }
                let connect = tokio::time::timeout(
                    REDIS_TIMEOUT * 4,
                    self.client.get_multiplexed_async_connection(),
                )
                .await;
                match connect {
                    Ok(Ok(c)) => *slot = Some(c),
                    Ok(Err(e)) => return Err(self.fail(format!("cannot connect: {e}"))),
                    Err(_) => return Err(self.fail("connection timed out".into())),
                }
            }
            slot.clone().expect("connected above")
        };
        match tokio::time::timeout(REDIS_TIMEOUT, f(conn)).await {
            Ok(Ok(v)) => {
                self.set_state(RedisState::Connected {
                    since: crate::util::now(),
                });
                Ok(v)
            }
            Ok(Err(e)) => {
                *self.conn.lock().await = None;
                Err(self.fail(e.to_string()))
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err(self.fail(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis())))
            }
        }
    }

    async fn op(&self, key: &str, w: u64, window: Duration, delta: i64) -> Option<u64> {
        let k = format!("{key}:{w}");
        let ttl = window.as_secs().max(1) * 2;
        self.with_conn(|mut c| async move {
            if delta != 0 {
                let (n,): (i64,) = redis::pipe()
                    .atomic()
                    .incr(&k, delta)
                    .expire(&k, ttl as i64)
                    .ignore()
                    .query_async(&mut c)
                    .await?;
                Ok(n.max(0) as u64)
            } else {
                let n: Option<i64> = redis::cmd("GET").arg(&k).query_async(&mut c).await?;
                Ok(n.unwrap_or(0).max(0) as u64)
            }
        })
        .await
        .ok()
    }
}
