//! Request statistics behind `/api/optimized/performance/stats`: totals, error
//! rate, latency percentiles overall and per route template, request rate.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Latencies are recorded in microseconds, up to one hour, 3 significant digits.
fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Default)]
struct Inner {
    total: u64,
    server_errors: u64,
    client_errors: u64,
    overall: Option<Histogram<u64>>,
    routes: HashMap<String, (u64, u64, Histogram<u64>)>,
    /// (second since start, requests in that second), last 60 seconds.
    window: VecDeque<(u64, u64)>,
    since: Option<Instant>,
}

/// Thread-safe collector; one short lock per request.
pub struct Stats {
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct Latency {
    pub count: u64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct RouteStats {
    #[serde(flatten)]
    pub latency: Latency,
    pub errors: u64,
}

/// A point-in-time copy, as served to clients.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct Snapshot {
    pub total_requests: u64,
    pub server_errors: u64,
    pub client_errors: u64,
    /// 5xx answers over all answers.
    pub error_rate: f64,
    pub requests_per_second_1m: f64,
    pub since_seconds: f64,
    pub latency: Latency,
    pub routes: BTreeMap<String, RouteStats>,
}

fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        count: h.len(),
        avg_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        let now = Instant::now();
        Stats {
            started: now,
            inner: Mutex::new(Inner {
                since: Some(now),
                ..Default::default()
            }),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Record one answered request.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, 3_600_000_000);
        let sec = self.started.elapsed().as_secs();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.total += 1;
        let is_err = status >= 500;
        if is_err {
            g.server_errors += 1;
        } else if status >= 400 {
            g.client_errors += 1;
        }
        let _ = g.overall.get_or_insert_with(new_hist).record(us);
        if let Some(r) = g.routes.get_mut(route) {
            r.0 += 1;
            r.1 += is_err as u64;
            let _ = r.2.record(us);
        } else {
            let mut h = new_hist();
            let _ = h.record(us);
            g.routes.insert(route.to_string(), (1, is_err as u64, h));
        }
        match g.window.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => {
                g.window.push_back((sec, 1));
                while g.window.front().is_some_and(|(s, _)| *s + 60 <= sec) {
                    g.window.pop_front();
                }
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let since = g.since.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        let now_sec = self.started.elapsed().as_secs();
        let recent: u64 = g
            .window
            .iter()
            .filter(|(s, _)| *s + 60 > now_sec)
            .map(|(_, n)| n)
            .sum();
        let span = since.clamp(1.0, 60.0);
        Snapshot {
            total_requests: g.total,
            server_errors: g.server_errors,
            client_errors: g.client_errors,
            error_rate: if g.total == 0 {
                0.0
            } else {
                g.server_errors as f64 / g.total as f64
            },
            requests_per_second_1m: recent as f64 / span,
            since_seconds: since,
            latency: g.overall.as_ref().map(latency).unwrap_or_default(),
            routes: g
                .routes
                .iter()
                .map(|(k, (_, e, h))| {
                    (
                        k.clone(),
                        RouteStats {
                            latency: latency(h),
                            errors: *e,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn reset(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = Inner {
            since: Some(Instant::now()),
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_resets() {
        let s = Stats::new();
        for i in 1..=100 {
            s.record("/health", 200, Duration::from_millis(i));
        }
        s.record("/x", 500, Duration::from_millis(1));
        s.record("/x", 404, Duration::from_millis(1));
        let snap = s.snapshot();
        assert_eq!(snap.total_requests, 102);
        assert_eq!(snap.server_errors, 1);
        assert_eq!(snap.client_errors, 1);
        let h = &snap.routes["/health"].latency;
        assert!((49.0..=51.0).contains(&h.p50_ms), "{h:?}");
        assert!((94.0..=96.0).contains(&h.p95_ms), "{h:?}");
        assert!(snap.requests_per_second_1m > 0.0);
        s.reset();
        assert_eq!(s.snapshot().total_requests, 0);
    }
}
