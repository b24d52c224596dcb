//! What replicas on one PostgreSQL database share beyond rows: change
//! notifications (`LISTEN/NOTIFY`, so every replica's read cache drops what a
//! write made stale) and the scheduler's leadership (a session advisory lock,
//! released by the server when its holder's connection ends).

use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};

/// The channel writes notify on (inside their transaction, so delivery follows commit).
pub const CHANGES_CHANNEL: &str = "aica_changes";
/// How often the listening connection proves it is alive, and how long it may
/// take: the longest a silently dead feed can leave a stale answer cached.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Key of the scheduler's advisory lock ("aica" + 2).
pub const SCHEDULER_LOCK: i64 = 0x6169_6361_0002;

/// What the change listener reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeEvent {
    /// Listening (again): anything may have changed while we were not.
    Listening,
    /// Another replica committed a write; `delay` is commit-to-delivery, when known.
    Changed { delay: Option<Duration> },
    /// The listening connection was lost: notifications may be missed until `Listening`.
    Lost(String),
}

/// Cross-replica coordination for one PostgreSQL database.
#[derive(Clone)]
pub struct Coordination {
    config: tokio_postgres::Config,
    /// This replica's id, carried by its notifications so it ignores its own.
    replica: String,
}

/// Payload of a change notification: `<replica> <unix millis at commit time>`.
pub fn change_payload(replica: &str) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{replica} {ms}")
}

fn delay_since(payload: &str) -> Option<Duration> {
    let ms: u128 = payload.rsplit(' ').next()?.parse().ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis();
    Some(Duration::from_millis(now.saturating_sub(ms) as u64))
}

/// Wait between reconnection attempts: doubles from 200 ms up to 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(5000))
}

impl Coordination {
    pub fn new(config: tokio_postgres::Config, replica: String) -> Coordination {
        Coordination { config, replica }
    }

    /// Listen for changes until `events` is closed, reconnecting after any loss.
    pub async fn listen(self, events: mpsc::Sender<ChangeEvent>) {
        let mut attempt = 0;
        loop {
            let reason = match self.listen_once(&events, &mut attempt).await {
                Ok(()) => return, // the receiver is gone
                Err(e) => e,
            };
            if events.send(ChangeEvent::Lost(reason)).await.is_err() {
                return;
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn listen_once(
        &self,
        events: &mpsc::Sender<ChangeEvent>,
        attempt: &mut u32,
    ) -> Result<(), String> {
        let (client, mut conn) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| format!("cannot connect: {}", super::message(&e)))?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = stream.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            return "listener stopped".to_string();
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return e.to_string(),
                }
            }
            "connection closed by the server".to_string()
        });
        let listen = client
            .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
            .await;
        if let Err(e) = listen {
            driver.abort();
            return Err(format!("LISTEN failed: {e}"));
        }
        *attempt = 0;
        if events.send(ChangeEvent::Listening).await.is_err() {
            driver.abort();
            return Ok(());
        }
        // A connection can die silently (a firewall dropping idle flows): a
        // round trip every HEARTBEAT, answered within HEARTBEAT, proves it
        // alive; otherwise the feed is lost and the cache bypassed.
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                payload = rx.recv() => {
                    let Some(payload) = payload else { break };
                    if payload.split(' ').next() == Some(self.replica.as_str()) {
                        continue;
                    }
                    let ev = ChangeEvent::Changed {
                        delay: delay_since(&payload),
                    };
                    if events.send(ev).await.is_err() {
                        driver.abort();
                        return Ok(());
                    }
                }
                _ = beat.tick() => {
                    match tokio::time::timeout(HEARTBEAT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            driver.abort();
                            return Err(format!("heartbeat failed: {}", super::message(&e)));
                        }
                        Err(_) => {
                            driver.abort();
                            return Err(format!(
                                "no heartbeat answer within {} ms",
                                HEARTBEAT.as_millis()
                            ));
                        }
                    }
                }
            }
        }
        drop(client);
        Err(driver
            .await
            .unwrap_or_else(|e| format!("listener task failed: {e}")))
    }

    /// Hold the scheduler lock whenever possible; `leader` says whether this
    /// replica holds it. Checks every `every`; a replica that dies loses the
    /// lock when the server sees its connection end, and another takes it at
    /// its next check. Returns when `leader` has no receivers.
    pub async fn lead(self, leader: watch::Sender<bool>, every: Duration) {
        let mut attempt = 0;
        loop {
            let res = self.lead_once(&leader, every, &mut attempt).await;
            leader.send_replace(false);
            match res {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "scheduler lock connection lost; retrying"),
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn lead_once(
        &self,
        leader: &watch::Sender<bool>,
        every: Duration,
        attempt: &mut u32,
    ) -> Result<(), String> {
        let (client, conn) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| format!("cannot connect: {}", super::message(&e)))?;
        let driver = tokio::spawn(conn);
        *attempt = 0;
        // A leader that stops answering (SIGSTOP, a hung host) must lose the
        // lock: the server ends a session idle for three checks (PostgreSQL 14+).
        let idle_ms = (every * 3).as_millis().max(3000);
        if let Err(e) = client
            .batch_execute(&format!("SET idle_session_timeout = {idle_ms}"))
            .await
        {
            tracing::warn!(error = %super::message(&e), "cannot bound the scheduler session's idle time; a hung leader keeps the lock until its connection dies");
        }
        let res = async {
            loop {
                if leader.is_closed() {
                    return Ok(());
                }
                let held = if *leader.borrow() {
                    // Still connected means still holding: the lock is the session's.
                    client.simple_query("SELECT 1").await.map(|_| true)
                } else {
                    client
                        .query_one("SELECT pg_try_advisory_lock($1)", &[&SCHEDULER_LOCK])
                        .await
                        .map(|r| r.get::<_, bool>(0))
                };
                let held = held.map_err(|e| super::message(&e))?;
                if held != *leader.borrow() {
                    tracing::info!(leader = held, "scheduler leadership changed");
                }
                leader.send_replace(held);
                tokio::time::sleep(every).await;
            }
        }
        .await;
        driver.abort();
        res
    }
}
