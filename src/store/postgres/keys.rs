//! API key records and the audit trail on PostgreSQL.

use super::err;
use crate::store::keys::{SEVERAL_TARGETS, minute_start};
use crate::store::model::{ApiKey, AuditEntry, NewApiKey};
use crate::store::{Result, StoreError};
use crate::util::now;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

fn key(r: &Row) -> Result<ApiKey> {
    Ok(ApiKey {
        name: r.try_get(0).map_err(err)?,
        role: r.try_get(1).map_err(err)?,
        prefix: r.try_get(2).map_err(err)?,
        created_at: r.try_get(3).map_err(err)?,
        last_used_at: r.try_get(4).map_err(err)?,
        revoked_at: r.try_get(5).map_err(err)?,
    })
}

const COLS: &str = "name, role, prefix, created_at, last_used_at, revoked_at";

pub async fn create(c: &impl GenericClient, k: &NewApiKey) -> Result<()> {
    c.execute(
        "INSERT INTO api_keys (name, role, prefix, key_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[&k.name, &k.role, &k.prefix, &k.hash, &now()],
    )
    .await
    .map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            StoreError::Conflict(format!("a key named {:?} already exists", k.name))
        } else {
            err(e)
        }
    })?;
    Ok(())
}

/// The unrevoked key with this hash. Its use is recorded at most once a
/// minute per key. Runs on a relaxed connection (see `PgStore::relaxed`).
pub async fn find(c: &impl GenericClient, hash: &str) -> Result<Option<ApiKey>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {COLS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
        ))
        .await
        .map_err(err)?;
    let Some(row) = c.query_opt(&stmt, &[&hash]).await.map_err(err)? else {
        return Ok(None);
    };
    let mut k = key(&row)?;
    let minute_ago =
        crate::util::fmt_time(time::OffsetDateTime::now_utc() - time::Duration::seconds(60));
    if k.last_used_at
        .as_deref()
        .is_none_or(|t| t < minute_ago.as_str())
    {
        let now = now();
        c.execute(
            "UPDATE api_keys SET last_used_at = $2 WHERE key_hash = $1",
            &[&hash, &now],
        )
        .await
        .map_err(err)?;
        k.last_used_at = Some(now);
    }
    Ok(Some(k))
}

pub async fn list(c: &impl GenericClient) -> Result<Vec<ApiKey>> {
    c.query(
        &format!("SELECT {COLS} FROM api_keys ORDER BY created_at, name"),
        &[],
    )
    .await
    .map_err(err)?
    .iter()
    .map(key)
    .collect()
}

pub async fn revoke(c: &impl GenericClient, name: &str) -> Result<bool> {
    let n = c
        .execute(
            "UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
            &[&now(), &name],
        )
        .await
        .map_err(err)?;
    Ok(n > 0)
}

pub async fn audit(c: &impl GenericClient, e: &AuditEntry) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO audit_log (at, actor, action, target, client, outcome, count) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(err)?;
    c.execute(
        &stmt,
        &[
            &e.at,
            &e.actor,
            &e.action,
            &e.target,
            &e.client,
            &e.outcome,
            &e.count.max(1),
        ],
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// Like [`audit`], counted into the row of the same actor, client, action and
/// outcome in the same minute. A transaction-scoped advisory lock on the client
/// serialises replicas counting the same client, so they share one row.
pub async fn audit_aggregated(c: &mut deadpool_postgres::Client, e: &AuditEntry) -> Result<()> {
    let Some(minute_start) = minute_start(&e.at) else {
        return audit(&*c, e).await;
    };
    let tx = c.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&e.client])
        .await
        .map_err(err)?;
    let stmt = tx
        .prepare_cached(
            "UPDATE audit_log SET count = count + 1, \
             target = CASE WHEN target = $6 THEN target ELSE $7 END \
             WHERE id = (SELECT id FROM audit_log \
             WHERE client = $1 AND at >= $2 AND actor = $3 AND action = $4 AND outcome = $5 \
             ORDER BY id DESC LIMIT 1)",
        )
        .await
        .map_err(err)?;
    let n = tx
        .execute(
            &stmt,
            &[
                &e.client,
                &minute_start,
                &e.actor,
                &e.action,
                &e.outcome,
                &e.target,
                &SEVERAL_TARGETS,
            ],
        )
        .await
        .map_err(err)?;
    if n == 0 {
        audit(&tx, e).await?;
    }
    tx.commit().await.map_err(err)?;
    Ok(())
}

pub async fn recent_audit(c: &impl GenericClient, limit: u32) -> Result<Vec<AuditEntry>> {
    let rows = c
        .query(
            "SELECT at, actor, action, target, client, outcome, count FROM audit_log ORDER BY id DESC LIMIT $1",
            &[&(limit as i64)],
        )
        .await
        .map_err(err)?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at: r.try_get(0).map_err(err)?,
                actor: r.try_get(1).map_err(err)?,
                action: r.try_get(2).map_err(err)?,
                target: r.try_get(3).map_err(err)?,
                client: r.try_get(4).map_err(err)?,
                outcome: r.try_get(5).map_err(err)?,
                count: r.try_get(6).map_err(err)?,
            })
        })
        .collect()
}
