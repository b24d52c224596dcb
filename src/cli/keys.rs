//! `aica keys create|list|revoke`: API keys for the write API.

use super::{Failed, Global, usage};
use crate::store::{ContentStore, NewApiKey, ROLES};
use anyhow::Context;
use clap::Subcommand;
use comfy_table::Table;
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a key; it is printed once and only its hash is stored.
    Create {
        /// editor (content writes) or admin (also stats reset and audit log).
        #[arg(long)]
        role: String,
        /// A unique name, shown in the audit trail.
        #[arg(long)]
        name: String,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by name; requests with it get 401 from then on.
    Revoke { name: String },
}

/// Open the configured store. Runs on a blocking thread of the runtime
/// (see [`run`]): the PostgreSQL store's connections live on that runtime.
fn open(g: &Global) -> anyhow::Result<Arc<dyn ContentStore>> {
    let l = g.load(&[])?;
    let b = &l.paths.backend;
    let opened = tokio::runtime::Handle::current()
        .block_on(crate::store::open(b, 1, l.settings.database.seed_demo))
        .with_context(|| format!("cannot open the {} database {}", b.name(), b.describe()))?;
    Ok(opened.store)
}

/// Call from a blocking thread (`spawn_blocking`): store calls block.
pub fn run(g: &Global, cmd: KeysCmd) -> anyhow::Result<u8> {
    match cmd {
        KeysCmd::Create { role, name } => {
            if !ROLES.contains(&role.as_str()) {
                return Err(usage(
                    format!("unknown role {role:?}"),
                    format!("aica keys create --role editor --name {name}"),
                ));
            }
            let name = name.trim().to_string();
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                return Err(usage(
                    "a key name is 1 to 64 printable characters",
                    "aica keys create --role editor --name alice",
                ));
            }
            let store = open(g)?;
            let key = crate::store::keys::generate();
            let entry = NewApiKey {
                name: name.clone(),
                role: role.clone(),
                prefix: crate::store::keys::prefix(&key),
                hash: crate::store::keys::hash(&key),
            };
            store.create_key(&entry).map_err(|e| match e {
                crate::store::StoreError::Conflict(m) => {
                    usage(m, "choose another --name, or 'aica keys revoke NAME' first")
                }
                e => e.into(),
            })?;
            println!("{key}");
            eprintln!(
                "created {role} key {name:?}. This is the only time the key is shown: store it now."
            );
            eprintln!(
                "use it as:  curl -H 'Authorization: Bearer {}…' …",
                &key[..12]
            );
            Ok(0)
        }
        KeysCmd::List { json } => {
            let keys = open(g)?.list_keys()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(0);
            }
            let mut t = Table::new();
            t.set_header(vec![
                "name",
                "role",
                "prefix",
                "created",
                "last used",
                "state",
            ]);
            for k in &keys {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                t.add_row(vec![
                    &k.name,
                    &k.role,
                    &k.prefix,
                    &k.created_at,
                    k.last_used_at.as_deref().unwrap_or("never"),
                    state,
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        KeysCmd::Revoke { name } => {
            if open(g)?.revoke_key(&name)? {
                println!("revoked key {name:?}");
                Ok(0)
            } else {
                Err(Failed(
                    1,
                    format!("no active key named {name:?}\nTry: aica keys list"),
                )
                .into())
            }
        }
    }
}
