//! API-key authentication for writes, with every decision written to the audit trail.

use super::AppState;
use super::error::ApiError;
use crate::store::{AuditEntry, ContentStore};
use axum::http::{HeaderMap, header};
use std::net::SocketAddr;

/// Roles, weakest first; a stronger role may do what a weaker one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Editor,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

/// Who made a request, for the audit trail.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub client: String,
}

/// The stored form of a key: its BLAKE3 hash (keys are 190-bit random, so a fast hash is enough).
pub fn hash_key(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

fn record(
    store: &dyn ContentStore,
    actor: &str,
    action: &str,
    target: &str,
    client: &str,
    outcome: &str,
) {
    let entry = AuditEntry {
        at: crate::util::now(),
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        client: client.into(),
        outcome: outcome.into(),
    };
    if let Err(e) = store.audit(&entry) {
        tracing::error!(error = %e, action, "could not write audit entry");
    }
}

/// Check the bearer key for `need`; failures are audited and answered 401/403.
pub async fn require(
    st: &AppState,
    headers: &HeaderMap,
    addr: SocketAddr,
    need: Role,
    action: &'static str,
    target: String,
) -> Result<Actor, ApiError> {
    let client = addr.ip().to_string();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || {
        let Some(token) = token else {
            record(&*store, "anonymous", action, &target, &client, "unauthenticated");
            return Err(ApiError::unauthorized(
                "this request needs an API key: send 'Authorization: Bearer <key>' (create one with 'aica keys create')",
            ));
        };
        let key = store.find_key(&hash_key(&token))?;
        let Some(key) = key else {
            record(&*store, "anonymous", action, &target, &client, "unauthenticated");
            return Err(ApiError::unauthorized("the API key is unknown or revoked"));
        };
        let role = Role::parse(&key.role).unwrap_or(Role::Editor);
        if role < need {
            record(&*store, &key.name, action, &target, &client, "denied");
            return Err(ApiError::forbidden(format!(
                "key {:?} has role {}, this request needs {}",
                key.name,
                role.as_str(),
                need.as_str()
            )));
        }
        Ok(Actor { name: key.name, client })
    })
    .await?
}

/// Record a completed write.
pub async fn audit_ok(st: &AppState, actor: &Actor, action: &'static str, target: String) {
    let store = st.store.clone();
    let actor = actor.clone();
    let _ = tokio::task::spawn_blocking(move || {
        record(&*store, &actor.name, action, &target, &actor.client, "ok")
    })
    .await;
}
