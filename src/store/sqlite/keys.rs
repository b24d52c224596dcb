//! API key records and the audit trail in SQLite.

use crate::store::keys::{SEVERAL_TARGETS, minute_start};
use crate::store::model::{ApiKey, AuditEntry, NewApiKey};
use crate::store::{Result, StoreError};
use crate::util::now;
use rusqlite::{Connection, OptionalExtension, Row, params};

fn key(r: &Row) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        name: r.get(0)?,
        role: r.get(1)?,
        prefix: r.get(2)?,
        created_at: r.get(3)?,
        last_used_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

const COLS: &str = "name, role, prefix, created_at, last_used_at, revoked_at";

pub fn create(c: &mut Connection, k: &NewApiKey) -> Result<()> {
    c.execute(
        "INSERT INTO api_keys (name, role, prefix, key_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![k.name, k.role, k.prefix, k.hash, now()],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(format!("a key named {:?} already exists", k.name))
        }
        e => e.into(),
    })?;
    Ok(())
}

pub fn find(c: &mut Connection, hash: &str) -> Result<Option<ApiKey>> {
    let found = c
        .prepare_cached(&format!(
            "SELECT {COLS} FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL"
        ))?
        .query_row([hash], key)
        .optional()?;
    if let Some(k) = &found {
        c.execute(
            "UPDATE api_keys SET last_used_at = ?1 WHERE name = ?2",
            params![now(), k.name],
        )?;
    }
    Ok(found)
}

pub fn list(c: &mut Connection) -> Result<Vec<ApiKey>> {
    let mut stmt = c.prepare(&format!(
        "SELECT {COLS} FROM api_keys ORDER BY created_at, name"
    ))?;
    let rows = stmt
        .query_map([], key)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn revoke(c: &mut Connection, name: &str) -> Result<bool> {
    let n = c.execute(
        "UPDATE api_keys SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
        params![now(), name],
    )?;
    Ok(n > 0)
}

pub fn audit(c: &mut Connection, e: &AuditEntry) -> Result<()> {
    insert_audit(c, e)
}

fn insert_audit(c: &Connection, e: &AuditEntry) -> Result<()> {
    c.prepare_cached("INSERT INTO audit_log (at, actor, action, target, client, outcome, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
        .execute(params![e.at, e.actor, e.action, e.target, e.client, e.outcome, e.count.max(1)])?;
    Ok(())
}

/// Like [`audit`], but counted into the row of the same actor, client, action and
/// outcome written in the same minute, if there is one: a client hammering the
/// API without a key adds at most one row per action and minute. A row that
/// counts attempts on different targets says `(several targets)`.
pub fn audit_aggregated(c: &mut Connection, e: &AuditEntry) -> Result<()> {
    let Some(minute_start) = minute_start(&e.at) else {
        return audit(c, e);
    };
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n = tx
        .prepare_cached(
            "UPDATE audit_log SET count = count + 1, \
             target = CASE WHEN target = ?6 THEN target ELSE ?7 END \
             WHERE id = (SELECT id FROM audit_log \
             WHERE client = ?1 AND at >= ?2 AND actor = ?3 AND action = ?4 AND outcome = ?5 \
             ORDER BY id DESC LIMIT 1)",
        )?
        .execute(params![
            e.client,
            minute_start,
            e.actor,
            e.action,
            e.outcome,
            e.target,
            SEVERAL_TARGETS
        ])?;
    if n == 0 {
        insert_audit(&tx, e)?;
    }
    tx.commit()?;
    Ok(())
}

pub fn recent_audit(c: &mut Connection, limit: u32) -> Result<Vec<AuditEntry>> {
    let mut stmt = c.prepare(
        "SELECT at, actor, action, target, client, outcome, count FROM audit_log ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([limit], |r| {
            Ok(AuditEntry {
                at: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                target: r.get(3)?,
                client: r.get(4)?,
                outcome: r.get(5)?,
                count: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
