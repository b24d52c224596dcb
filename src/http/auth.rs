//! API-key authentication for writes, with every decision written to the audit trail.

use super::AppState;
use crate::store::{AuditEntry, ContentStore};
use crate::web::error::ApiError;
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
        count: 1,
    };
    // Anonymous clients cannot grow the trail without bound: their refusals are
    // counted per client, action and minute in one row.
    let res = if actor == ANONYMOUS {
        store.audit_aggregated(&entry)
    } else {
        store.audit(&entry)
    };
    if let Err(e) = res {
        tracing::error!(error = %e, action, "could not write audit entry");
    }
}

const ANONYMOUS: &str = "anonymous";

/// The key of `Authorization: Bearer <key>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let v = all.next()?.to_str().ok()?;
    if all.next().is_some() {
        return None; // two credentials: trust neither
    }
    let (scheme, token) = v.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
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
    let token = bearer(headers);
    let limit = st.settings.server.auth_failures_per_minute as u64;
    let throttle_key = format!("authfail:{client}");
    // Once a client's wrong keys in this minute reach the limit, its requests
    // with a key are refused before the key is looked at. Wrong keys are
    // counted after the check, so a client's valid traffic, however
    // concurrent, is never charged; a burst of wrong keys already in flight
    // when the limit is reached is still answered 401 (at most
    // server.max_connections_per_ip per replica; API keys are 192-bit random,
    // so this bounds noise, not guessing).
    let counted = limit > 0 && token.is_some();
    if counted && st.counters.count(&throttle_key, MINUTE).await >= limit {
        let retry = 60 - crate::util::unix_now() % 60;
        return Err(ApiError::too_many_requests(
            format!(
                "too many requests with a wrong API key from {client}; retry after {retry} s with a valid key"
            ),
            retry,
        ));
    }
    let res = st.with_store(move |store| {
        let Some(token) = token else {
            record(store, ANONYMOUS, action, &target, &client, "unauthenticated");
            return Err(ApiError::unauthorized(
                "this request needs an API key: send 'Authorization: Bearer <key>' (create one with 'aica keys create')",
            ));
        };
        let key = store.find_key(&crate::store::keys::hash(&token))?;
        let Some(key) = key else {
            record(store, ANONYMOUS, action, &target, &client, "unauthenticated");
            return Err(ApiError::unauthorized(WRONG_KEY));
        };
        // Fail closed: a role this version does not know grants nothing.
        let Some(role) = Role::parse(&key.role) else {
            tracing::error!(key = %key.name, role = %key.role, "API key has an unknown role; request denied");
            record(store, &key.name, action, &target, &client, "denied");
            return Err(ApiError::forbidden(format!(
                "key {:?} has the unknown role {:?}; an admin must replace it ('aica keys revoke', then 'aica keys create')",
                key.name, key.role
            )));
        };
        if role < need {
            record(store, &key.name, action, &target, &client, "denied");
            return Err(ApiError::forbidden(format!(
                "key {:?} has role {}, this request needs {}",
                key.name,
                role.as_str(),
                need.as_str()
            )));
        }
        Ok(Actor { name: key.name, client })
    })
    .await?;
    if counted && matches!(&res, Err(e) if e.message == WRONG_KEY) {
        st.counters.hit(&throttle_key, MINUTE).await;
    }
    res
}

const WRONG_KEY: &str = "the API key is unknown or revoked";
const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

/// Record a completed write.
pub async fn audit_ok(st: &AppState, actor: &Actor, action: &'static str, target: String) {
    audit_outcome(st, actor, action, target, "ok".into()).await
}

/// The audit outcome of an authenticated request: `ok`, `refused <status>` for
/// a client mistake (400, 404, 408, 409, 413, 415, 422), `failed <status>` for ours.
pub fn outcome<T>(result: &Result<T, ApiError>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) if e.status.is_client_error() => format!("refused {}", e.status.as_u16()),
        Err(e) => format!("failed {}", e.status.as_u16()),
    }
}

/// Record an outcome (see [`outcome`]) for an authenticated actor.
pub async fn audit_outcome(
    st: &AppState,
    actor: &Actor,
    action: &'static str,
    target: String,
    outcome: String,
) {
    let store = st.store.clone();
    let actor = actor.clone();
    let _ = tokio::task::spawn_blocking(move || {
        record(
            &*store,
            &actor.name,
            action,
            &target,
            &actor.client,
            &outcome,
        )
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    proptest! {
        /// Any Authorization header value (and any number of them) parses
        /// without a panic; a token comes out only from one `Bearer <token>`.
        #[test]
        fn any_authorization_header_parses(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..3)) {
            let mut h = HeaderMap::new();
            for v in &values {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    h.append(header::AUTHORIZATION, v);
                }
            }
            let n = h.get_all(header::AUTHORIZATION).iter().count();
            if let Some(t) = bearer(&h) {
                prop_assert_eq!(n, 1);
                prop_assert!(!t.is_empty());
            }
        }
    }
}
