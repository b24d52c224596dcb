//! What this replica shares with the others on one PostgreSQL database: the
//! change feed that keeps its read cache fresh, the scheduler role, and the
//! draining state of a rolling restart.

use super::AppState;
use crate::store::postgres::{ChangeEvent, Coordination};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, watch};

/// State of the change feed, for `/health/detailed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    /// One process (SQLite): nothing to listen to.
    Local,
    /// Waiting for the first connection.
    Starting,
    Listening {
        since: String,
    },
    /// Not listening: the cache is bypassed until the feed is back.
    Lost {
        since: String,
        reason: String,
    },
}

/// Replica-level state kept in [`AppState`].
pub struct ReplicaState {
    pub feed: Mutex<Feed>,
    /// Whether this replica runs the scheduled jobs (`None`: one process, always).
    pub leader: Mutex<Option<watch::Receiver<bool>>>,
    /// Set on SIGTERM: `/health/ready` answers 503 so load balancers stop sending.
    pub draining: AtomicBool,
}

impl Default for ReplicaState {
    fn default() -> Self {
        ReplicaState {
            feed: Mutex::new(Feed::Local),
            leader: Mutex::new(None),
            draining: AtomicBool::new(false),
        }
    }
}

impl ReplicaState {
    pub fn feed(&self) -> Feed {
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_feed(&self, f: Feed) {
        *self.feed.lock().unwrap_or_else(|p| p.into_inner()) = f;
    }

    /// `Some(true)` when this replica leads the scheduler, `None` without replicas.
    pub fn is_leader(&self) -> Option<bool> {
        self.leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| *r.borrow())
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Follow other replicas' writes: each notification drops this replica's
/// cached answers; while the feed is down the cache is bypassed, so a missed
/// notification can never leave a stale answer behind. Runs until aborted.
pub fn spawn_change_feed(st: &AppState, coord: Coordination) -> tokio::task::JoinHandle<()> {
    let st = st.clone();
    st.replicas.set_feed(Feed::Starting);
    st.cache.set_bypass(true);
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel(64);
        let listener = tokio::spawn(coord.listen(tx));
        while let Some(ev) = rx.recv().await {
            match ev {
                ChangeEvent::Listening => {
                    st.cache.set_bypass(false);
                    st.replicas.set_feed(Feed::Listening {
                        since: crate::util::now(),
                    });
                    tracing::info!("listening for other replicas' changes; read cache on");
                }
                ChangeEvent::Changed { delay } => {
                    st.cache.invalidate();
                    metrics::counter!("aica_cache_remote_invalidations_total").increment(1);
                    if let Some(d) = delay {
                        metrics::histogram!("aica_cache_invalidation_delay_seconds")
                            .record(d.as_secs_f64());
                    }
                }
                ChangeEvent::Lost(reason) => {
                    st.cache.set_bypass(true);
                    if !matches!(st.replicas.feed(), Feed::Lost { .. }) {
                        tracing::warn!(
                            reason,
                            "change feed lost: read cache bypassed until it is back"
                        );
                        st.replicas.set_feed(Feed::Lost {
                            since: crate::util::now(),
                            reason,
                        });
                    }
                }
            }
        }
        listener.abort();
    })
}

/// Take part in the scheduler election; returns the leadership flag.
pub fn spawn_election(
    st: &AppState,
    coord: Coordination,
    every: std::time::Duration,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    *st.replicas.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx.clone());
    let mut watch_rx = rx.clone();
    let task = tokio::spawn(async move {
        let lead = tokio::spawn(coord.lead(tx, every));
        while watch_rx.changed().await.is_ok() {
            metrics::gauge!("aica_scheduler_leader").set(if *watch_rx.borrow() {
                1.0
            } else {
                0.0
            });
        }
        lead.abort();
    });
    (rx, task)
}
