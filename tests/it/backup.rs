//! Backups: round trip, consistency under a busy writer, crash safety under
//! SIGKILL, corruption, bad input, a full disk, prune, drill, metrics.

use crate::common::{Server, aica, integrity, rows, seeded, text, wait_for};
use aica::backup::{self, Cancel, Kind, State, snapshot::CreateOptions};
use aica::config::{LoadOptions, Loaded, load};
use nix::sys::signal::Signal;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

fn loaded(dir: &Path, sets: &[&str]) -> Loaded {
    load(&LoadOptions {
        dir: dir.to_path_buf(),
        overrides: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    backup::list(&dir.join("backups"))
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect()
}

#[test]
fn create_list_verify_restore_round_trip() {
    let d = seeded();
    let dir = d.path();
    std::fs::write(
        dir.join(".env.production"),
        "STRIPE_SECRET_KEY=sk_live_canary_123\n",
    )
    .unwrap();
    let mut s = Server::start(dir, &["--set", "backup.schedule="], &[]);
    // Backups are taken while the server serves.
    let o = aica(
        dir,
        &["backup", "create", "--note", "before change", "--verify"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = aica(dir, &["backup", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b = &list[0];
    assert_eq!(b["state"], "verified");
    assert_eq!(b["note"], "before change");
    let name = b["name"].as_str().unwrap().to_string();
    // Secrets are not in the archive: only the key names.
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("backups/{name}.json"))).unwrap())
            .unwrap();
    assert_eq!(
        sidecar["manifest"]["secrets_excluded"],
        serde_json::json!(["STRIPE_SECRET_KEY"])
    );
    let raw = zstd::decode_all(std::fs::File::open(dir.join(format!("backups/{name}"))).unwrap())
        .unwrap();
    assert!(
        !raw.windows(10).any(|w| w == b"sk_live_ca"),
        "secret value inside the archive"
    );

    // Restore refuses while the server runs and says how to stop it.
    let o = aica(dir, &["backup", "restore", &name, "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("aica down"), "{}", text(&o));

    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));
    // Without --yes and without a terminal it asks for --yes.
    let o = aica(dir, &["backup", "restore", &name]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("Try:") && text(&o).contains("--yes"));
    let db = dir.join("data/aica_sys.db");
    Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM articles WHERE id % 2 = 0", [])
        .unwrap();
    let o = aica(dir, &["backup", "restore", "--latest", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(rows(&db), 3000, "dry run changed the database");
    let o = aica(dir, &["backup", "restore", &name, "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(rows(&db), 6000);
    assert_eq!(integrity(&db), "ok");
    let list = backup::list(&dir.join("backups")).unwrap();
    let safety = list
        .iter()
        .find(|b| b.kind == Kind::Safety)
        .expect("safety snapshot");
    assert_eq!(safety.state, State::Safety);
    // The safety snapshot holds the state that was replaced.
    let scratch = tempfile::tempdir().unwrap();
    let v = backup::verify::check(
        safety,
        &scratch.path().join("s.db"),
        None,
        &Cancel::default(),
    )
    .unwrap();
    assert_eq!(v.manifest.tables["articles"], 3000);
}

#[test]
fn backups_under_a_busy_writer_are_consistent_prefixes() {
    let d = seeded();
    let l = loaded(d.path(), &[]);
    let db = l.paths.db.clone();
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE seq (n INTEGER PRIMARY KEY)")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, acked, db) = (stop.clone(), acked.clone(), db.clone());
        std::thread::spawn(move || {
            let c = Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            c.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                c.execute("INSERT INTO seq (n) VALUES (?1)", [n]).unwrap();
                acked.store(n, Ordering::Release);
            }
        })
    };
    wait_for("writer running", Duration::from_secs(10), || {
        (acked.load(Ordering::Acquire) > 100).then_some(())
    });
    let mut taken = Vec::new();
    for _ in 0..20 {
        let before = acked.load(Ordering::Acquire);
        let lock = backup::BackupLock::acquire(&l, "test").unwrap();
        let b = backup::snapshot::create(
            &lock,
            &l,
            &CreateOptions {
                kind: Kind::Manual,
                note: None,
                progress: false,
                cancel: Cancel::default(),
            },
        )
        .unwrap()
        .info;
        taken.push((b, before));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let final_acked = acked.load(Ordering::Acquire);
    for (b, before) in taken {
        let scratch = tempfile::tempdir().unwrap();
        let v = backup::verify::check(&b, &scratch.path().join("r.db"), None, &Cancel::default())
            .unwrap();
        let c = Connection::open(&v.db).unwrap();
        let (count, max): (i64, Option<i64>) = c
            .query_row("SELECT COUNT(*), MAX(n) FROM seq", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let max = max.unwrap_or(0);
        assert_eq!(count, max, "{}: rows are not a gap-free prefix", b.name);
        assert!(
            max >= before,
            "{}: lost acknowledged rows ({max} < {before})",
            b.name
        );
        assert!(max <= final_acked);
    }
}

#[test]
fn killed_backups_and_restores_never_damage_or_list_partial_files() {
    let d = seeded();
    let dir = d.path();
    let db = dir.join("data/aica_sys.db");
    let o = aica(dir, &["backup", "create"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let good = names(dir)[0].clone();
    Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM articles WHERE id > 5000", [])
        .unwrap();
    for (i, delay_ms) in [0u64, 3, 10, 25, 50, 100, 200].into_iter().enumerate() {
        let args: Vec<&str> = match i % 3 {
            0 => vec!["backup", "create"],
            1 => vec!["backup", "restore", &good, "--yes"],
            _ => vec!["backup", "verify", &good],
        };
        let mut child = std::process::Command::new(crate::common::bin())
            .arg("--dir")
            .arg(dir)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms)); // the kill point, not synchronisation
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            integrity(&db),
            "ok",
            "live database damaged after killing {args:?} at {delay_ms} ms"
        );
        let n = rows(&db);
        assert!(
            n == 5000 || n == 6000,
            "live database is neither the old nor the restored one: {n} rows"
        );
        for b in backup::list(&dir.join("backups")).unwrap() {
            assert_ne!(
                b.state,
                State::NoSidecar,
                "partial archive listed after a kill: {}",
                b.name
            );
            let scratch = tempfile::tempdir().unwrap();
            backup::verify::check(&b, &scratch.path().join("k.db"), None, &Cancel::default())
                .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        }
    }
    // The next operation removes whatever the killed ones left behind.
    let o = aica(dir, &["backup", "tidy"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let leftovers: Vec<String> = ["backups", "data", "run"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(dir.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| {
            n.contains(".tmp")
                || n.starts_with(".verify-")
                || n == ".staging"
                || n.starts_with("drill-")
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn a_flipped_byte_is_reported_corrupt_and_refused() {
    let d = seeded();
    let dir = d.path();
    assert_eq!(aica(dir, &["backup", "create"]).status.code(), Some(0));
    let name = names(dir)[0].clone();
    let path = dir.join("backups").join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let o = aica(dir, &["backup", "verify", &name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("CORRUPT"));
    let list = backup::list(&dir.join("backups")).unwrap();
    assert_eq!(list[0].state, State::Corrupt);
    let before = std::fs::read(dir.join("data/aica_sys.db")).unwrap();
    let o = aica(dir, &["backup", "restore", &name, "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("corrupt"), "{}", text(&o));
    assert_eq!(
        std::fs::read(dir.join("data/aica_sys.db")).unwrap(),
        before,
        "a refused restore changed the database"
    );
}

#[test]
fn bad_names_strange_files_and_newer_backups_get_clear_errors() {
    let d = seeded();
    let dir = d.path();
    for bad in ["../../etc/passwd", "aica-x/../../y", "nope"] {
        let o = aica(dir, &["backup", "restore", bad, "--yes"]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains("Try: aica backup list"), "{}", text(&o));
    }
    let o = aica(dir, &["backup", "verify", "aica-20990101T000000Z"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no backup named"));
    let o = aica(dir, &["backup", "restore", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("aica backup create"), "{}", text(&o));

    std::fs::create_dir_all(dir.join("backups")).unwrap();
    std::fs::write(dir.join("backups/notes.txt"), "not a backup").unwrap();
    std::fs::write(
        dir.join("backups/aica-20200101T000000Z.aicabak"),
        "junk, not zstd",
    )
    .unwrap();
    let o = aica(dir, &["backup", "list"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains("no sidecar") && !text(&o).contains("notes.txt"));
    let o = aica(dir, &["backup", "verify", "aica-20200101T000000Z"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not a zstd archive") || text(&o).contains("corrupt"),
        "{}",
        text(&o)
    );

    assert_eq!(aica(dir, &["backup", "create"]).status.code(), Some(0));
    let name = backup::list(&dir.join("backups"))
        .unwrap()
        .into_iter()
        .find(|b| b.state == State::Unverified)
        .unwrap()
        .name;
    let side = dir.join(format!("backups/{name}.json"));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&side).unwrap()).unwrap();
    v["manifest"]["schema_version"] = serde_json::json!(99);
    std::fs::write(&side, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = aica(dir, &["backup", "restore", &name, "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("newer aica"), "{}", text(&o));
}

#[test]
fn a_full_disk_fails_cleanly_and_leaves_nothing_listed() {
    use std::os::unix::process::CommandExt;
    let d = seeded();
    let dir = d.path();
    let before = std::fs::read(dir.join("data/aica_sys.db")).unwrap();
    // RLIMIT_FSIZE makes every write past 64 KiB fail with EFBIG, as a full volume would.
    let mut cmd = std::process::Command::new(crate::common::bin());
    cmd.arg("--dir").arg(dir).args(["backup", "create"]);
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::signal(Signal::SIGXFSZ, nix::sys::signal::SigHandler::SigIgn)
                .map_err(std::io::Error::from)?;
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_FSIZE,
                64 * 1024,
                64 * 1024,
            )
            .map_err(std::io::Error::from)
        });
    }
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("File too large") || text(&o).contains("write"),
        "{}",
        text(&o)
    );
    assert!(names(dir).is_empty(), "a failed backup is listed");
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".lock")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert_eq!(std::fs::read(dir.join("data/aica_sys.db")).unwrap(), before);
}

#[test]
fn prune_mirror_drill_metrics_and_health() {
    let d = seeded();
    let dir = d.path();
    let sets = [
        "--set",
        "backup.mirror_dir=offsite",
        "--set",
        "backup.keep_daily=1",
        "--set",
        "backup.keep_weekly=0",
        "--set",
        "backup.keep_monthly=0",
    ];
    for _ in 0..3 {
        let mut args = vec!["backup", "create"];
        args.extend_from_slice(&sets);
        let o = aica(dir, &args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let all = names(dir);
    assert_eq!(all.len(), 3);
    for n in &all {
        assert!(dir.join("offsite").join(n).exists(), "{n} not mirrored");
    }
    let mut args = vec!["backup", "verify", &all[1]];
    args.extend_from_slice(&sets);
    assert_eq!(aica(dir, &args).status.code(), Some(0));
    let mut args = vec!["backup", "prune"];
    args.extend_from_slice(&sets);
    let o = aica(dir, &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Kept: the newest (daily) and the newest verified.
    let kept = names(dir);
    assert_eq!(kept, vec![all[0].clone(), all[1].clone()], "{}", text(&o));
    assert!(
        !dir.join("offsite").join(&all[2]).exists(),
        "prune left the mirror copy"
    );

    let o = aica(dir, &["backup", "drill", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["ok"], true);
    assert!(r["rto_seconds"].as_f64().unwrap() > 0.0);
    assert!(std::path::Path::new(r["report_markdown"].as_str().unwrap()).exists());
    let list = backup::list(&dir.join("backups")).unwrap();
    assert!(list[0].drill.as_ref().is_some_and(|c| c.ok()));

    let mut s = Server::start(dir, &["--set", "backup.schedule="], &[]);
    let (_, m) = crate::common::get(&format!("{}/metrics", s.backend)).unwrap();
    let line = m
        .lines()
        .find(|l| l.starts_with("aica_backup_last_success_timestamp_seconds"))
        .expect("backup metric");
    assert!(
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 1.7e9
    );
    assert!(m.contains("aica_backup_last_size_bytes"));
    let (_, h) = crate::common::get(&format!("{}/health/detailed", s.backend)).unwrap();
    let h: serde_json::Value = serde_json::from_str(&h).unwrap();
    assert_eq!(h["checks"]["backup:age"][0]["status"], "pass", "{h}");
    s.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
}

#[test]
fn scheduled_backups_run_inside_serve() {
    let d = seeded();
    let dir = d.path();
    // Every minute: the test waits (with a deadline) for the first scheduled backup.
    let mut s = Server::start(dir, &["--set", "backup.schedule=* * * * *"], &[]);
    let b = wait_for("scheduled backup", Duration::from_secs(90), || {
        backup::list(&dir.join("backups"))
            .ok()?
            .into_iter()
            .find(|b| b.kind == Kind::Scheduled && b.state == State::Verified)
    });
    assert!(b.name.ends_with("-scheduled.aicabak"));
    // The counter moves right after the sidecar is written: wait for it too.
    wait_for("success counter", Duration::from_secs(10), || {
        let (_, m) = crate::common::get(&format!("{}/metrics", s.backend))?;
        m.contains(r#"aica_backups_total{result="success"} 1"#)
            .then_some(())
    });
    s.signal(Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(30));
}

#[test]
fn a_second_backup_operation_says_who_holds_the_lock() {
    let d = seeded();
    let l = loaded(d.path(), &[]);
    let _held = backup::BackupLock::acquire(&l, "test holder").unwrap();
    let o = aica(d.path(), &["backup", "create"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("another backup operation is running")
            && t.contains(&format!("pid {}", std::process::id()))
            && t.contains("test holder")
            && t.contains("do not delete the lock file")
            && !t.contains("remove the stale lock"),
        "{t}"
    );
    assert!(names(d.path()).is_empty());
}
