//! API key records and the audit trail.

use super::model::{ApiKey, AuditEntry, NewApiKey};
use super::{Result, StoreError};
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
    c.prepare_cached("INSERT INTO audit_log (at, actor, action, target, client, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![e.at, e.actor, e.action, e.target, e.client, e.outcome])?;
    Ok(())
}

pub fn recent_audit(c: &mut Connection, limit: u32) -> Result<Vec<AuditEntry>> {
    let mut stmt = c.prepare(
        "SELECT at, actor, action, target, client, outcome FROM audit_log ORDER BY id DESC LIMIT ?1",
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
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
