//! Backups of the PostgreSQL store, through the real binary: the same
//! commands and guarantees as on SQLite.

use crate::common::{Server, aica_env, get, text};
use crate::pg::TestDb;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn run(dir: &Path, db: &TestDb, args: &[&str]) -> (i32, String) {
    let o = aica_env(dir, args, &[("DATABASE_URL", db.url.as_str())]);
    (o.status.code().unwrap_or(-1), text(&o))
}

fn list(dir: &Path, db: &TestDb) -> Vec<Value> {
    let (code, out) = run(dir, db, &["backup", "list", "--json"]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(
        out.lines()
            .take_while(|l| !l.starts_with("ignored"))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    )
    .unwrap()
}

/// The demo data set, seeded through the CLI; returns its article count.
fn seed(d: &Path, db: &TestDb) -> i64 {
    let (code, out) = run(
        d,
        db,
        &["keys", "create", "--role", "admin", "--name", "ops"],
    );
    assert_eq!(code, 0, "{out}");
    let articles = db.scalar("SELECT COUNT(*) FROM articles");
    assert!(articles > 1000, "seeded: {articles}");
    articles
}

#[test]
fn create_verify_restore_and_drill_on_postgres() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let articles = seed(d, &db);

    let (code, out) = run(d, &db, &["backup", "create", "--verify"]);
    assert_eq!(code, 0, "{out}");
    let l = list(d, &db);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["state"], "verified", "{l:?}");
    let name = l[0]["name"].as_str().unwrap().to_string();
    let sidecar: Value = serde_json::from_slice(
        &std::fs::read(d.join("backups").join(format!("{name}.json"))).unwrap(),
    )
    .unwrap();
    let m = &sidecar["manifest"];
    assert_eq!(m["engine"], "postgres");
    assert_eq!(m["tables"]["articles"].as_i64(), Some(articles));
    assert!(m["members"].to_string().contains("db/aica.pgdump"), "{m}");
    assert!(
        m["server_version"].as_str().unwrap().starts_with("15"),
        "{m}"
    );
    // No scratch database is left behind by the verification.
    assert_eq!(left_behind(&db), Vec::<String>::new());

    // Changes after the backup, then a restore brings the backup's state back.
    db.exec("DELETE FROM articles WHERE id % 2 = 0");
    let after = db.scalar("SELECT COUNT(*) FROM articles");
    assert!(after < articles);
    let (code, out) = run(d, &db, &["backup", "restore", "--latest", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM articles"),
        after,
        "a dry run changes nothing"
    );

    // A serving replica makes the restore refuse, naming what to do.
    let server = Server::start(d, &[], &[("DATABASE_URL", db.url.as_str())]);
    let (code, out) = run(d, &db, &["backup", "restore", "--latest", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("replicas are serving") && out.contains("--disconnect-replicas"),
        "{out}"
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM articles"), after);

    let (code, out) = run(
        d,
        &db,
        &["backup", "restore", &name, "--yes", "--disconnect-replicas"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("_before_"), "{out}");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM articles"), articles);
    // The replica reconnects to the restored data by itself.
    let base = server.backend.clone();
    crate::common::wait_for(
        "the replica to serve the restored data",
        Duration::from_secs(30),
        || {
            let (s, body) = get(&format!("{base}/api/optimized/dashboard"))?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (s == 200 && v["articles"]["total"].as_i64() == Some(articles)).then_some(())
        },
    );
    drop(server);
    let l = list(d, &db);
    assert!(
        l.iter().any(|b| b["kind"] == "safety"),
        "a safety dump was taken: {l:?}"
    );

    let (code, out) = run(d, &db, &["backup", "drill", &name, "--json"]);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(out.trim_start_matches(|c| c != '{')).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["rto_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(left_behind(&db), Vec::<String>::new());
}

#[test]
fn a_postgres_backup_is_refused_by_a_sqlite_install_with_the_fix() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, out) = run(d, &db, &["backup", "create"]);
    assert_eq!(code, 0, "{out}");
    let o = aica_env(d, &["backup", "restore", "--latest", "--yes"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("PostgreSQL dump") && text(&o).contains("DATABASE_URL"),
        "{}",
        text(&o)
    );
    let o = aica_env(d, &["backup", "verify"], &[]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("needs the server"), "{}", text(&o));
}

/// Scratch databases of this machine whose process is gone (other tests'
/// operations in flight are alive; the sweep test's deliberate orphan is
/// named `…_abcdef`).
fn left_behind(db: &TestDb) -> Vec<String> {
    db.rows("SELECT datname::text, '' FROM pg_database WHERE datname LIKE 'aica\\_verify\\_%'")
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !n.ends_with("_abcdef"))
        .filter(|n| {
            let mut parts = n.trim_start_matches("aica_verify_").split('_');
            let pid: i32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            parts.next() == Some(host_id().as_str())
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
        })
        .collect()
}

/// This machine's host id as aica writes it into scratch database names:
/// host name, boot id and pid namespace (the test and aica share all three).
fn host_id() -> String {
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    blake3::hash(format!("{host}\n{}\n{ns}", boot.trim()).as_bytes()).to_hex()[..8].to_string()
}

#[test]
fn scratch_databases_of_dead_operations_are_reported_and_swept() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    // What a `kill -9` during verify leaves: a scratch database of a dead pid.
    let orphan = format!("aica_verify_{dead_pid}_{}_abcdef", host_id());
    // And one of a live process (this test): never touched.
    let alive = format!("aica_verify_{}_{}_fedcba", std::process::id(), host_id());
    db.exec(&format!("CREATE DATABASE {orphan}"));
    db.exec(&format!("CREATE DATABASE {alive}"));
    let (code, out) = run(d, &db, &["doctor"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&orphan) && out.contains("orphan"), "{out}");
    let (code, out) = run(d, &db, &["backup", "tidy"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 1 leftovers"), "{out}");
    let left = db.scalar(&format!(
        "SELECT COUNT(*) FROM pg_database WHERE datname = '{orphan}'"
    ));
    let kept = db.scalar(&format!(
        "SELECT COUNT(*) FROM pg_database WHERE datname = '{alive}'"
    ));
    db.exec(&format!("DROP DATABASE {alive}"));
    assert_eq!((left, kept), (0, 1));
}

#[test]
fn a_restore_onto_a_server_without_the_database_creates_it() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let articles = seed(d, &db);
    let (code, out) = run(d, &db, &["backup", "create"]);
    assert_eq!(code, 0, "{out}");
    // Disaster: the database is gone.
    db.drop_database();
    let (code, out) = run(d, &db, &["backup", "restore", "--latest", "--yes"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM articles"), articles);
}

#[test]
fn an_interrupted_restores_connection_limit_is_reported_and_put_back() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = db.url.rsplit('/').next().unwrap().to_string();
    // What a restore killed right after refusing new connections leaves.
    db.exec(&format!(
        "ALTER DATABASE {name} CONNECTION LIMIT 0; COMMENT ON DATABASE {name} IS 'aica: restore in progress; connection limit was 50'"
    ));
    let (code, out) = run(d, &db, &["doctor"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("connection limit 0") && out.contains("it was 50"),
        "{out}"
    );
    let (code, out) = run(d, &db, &["backup", "tidy"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        db.scalar(&format!(
            "SELECT datconnlimit::bigint FROM pg_database WHERE datname = '{name}'"
        )),
        50
    );
    let (code, out) = run(d, &db, &["doctor"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_restore_keeps_the_databases_owner_rights_and_settings() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = db.url.rsplit('/').next().unwrap().to_string();
    seed(d, &db);
    let (code, out) = run(d, &db, &["backup", "create"]);
    assert_eq!(code, 0, "{out}");
    db.exec(&format!(
        "REVOKE CONNECT ON DATABASE {name} FROM PUBLIC; ALTER DATABASE {name} SET work_mem = '7MB'; ALTER DATABASE {name} CONNECTION LIMIT 40"
    ));
    let (code, out) = run(d, &db, &["backup", "restore", "--latest", "--yes"]);
    assert_eq!(code, 0, "{out}");
    let public_connect = db.scalar(&format!(
        "SELECT has_database_privilege('public', '{name}', 'CONNECT')::int::bigint"
    ));
    let limit = db.scalar(&format!(
        "SELECT datconnlimit::bigint FROM pg_database WHERE datname = '{name}'"
    ));
    let work_mem = db.rows(&format!(
        "SELECT unnest(setconfig), '' FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{name}'"
    ));
    assert_eq!((public_connect, limit), (0, 40));
    assert!(
        work_mem.iter().any(|(kv, _)| kv == "work_mem=7MB"),
        "{work_mem:?}"
    );
}
