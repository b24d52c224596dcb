//! Regression tests for what an outside review found in backups and restores:
//! the live database by another spelling, non-file targets, failed safety
//! snapshots, debris after kills, bare archives, the drill's environment,
//! shutdown during a scheduled backup, and state changed without evidence.

use crate::common::{Server, aica, aica_env, bin, integrity, rows, seeded, text, wait_for};
use aica::backup::{self, State};
use nix::sys::signal::Signal;
use rusqlite::Connection;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn list(dir: &Path) -> Vec<backup::BackupInfo> {
    backup::list(&dir.join("backups")).unwrap()
}

/// Run the binary from `cwd` (as an operator in a shell would), with `--dir`.
fn aica_in(cwd: &Path, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AICA_")) {
        cmd.env_remove(k);
    }
    cmd.output().unwrap()
}

/// The binary with every file write past `limit` bytes failing (EFBIG), as on a full volume.
fn aica_fsize_limited(dir: &Path, args: &[&str], limit: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin());
    cmd.arg("--dir").arg(dir).args(args).stdin(Stdio::null());
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::signal::signal(Signal::SIGXFSZ, nix::sys::signal::SigHandler::SigIgn)
                .map_err(std::io::Error::from)?;
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE, limit, limit)
                .map_err(std::io::Error::from)
        });
    }
    cmd.output().unwrap()
}

/// `aica backup restore NAME --yes --target TARGET` in `dir`.
fn restore_to(dir: &Path, name: &str, target: &str) -> Output {
    aica(
        dir,
        &["backup", "restore", name, "--yes", "--target", target],
    )
}

fn create_verified(dir: &Path) -> String {
    let o = aica(dir, &["backup", "create", "--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    list(dir)[0].name.clone()
}

fn side_files(db: &Path) -> Vec<bool> {
    ["-wal", "-shm"]
        .iter()
        .map(|s| {
            let mut p = db.as_os_str().to_owned();
            p.push(s);
            Path::new(&p).exists()
        })
        .collect()
}

#[test]
fn finding_1_the_live_database_is_refused_by_any_spelling_while_serving() {
    let d = seeded();
    let dir = d.path();
    let name = create_verified(dir);
    let db = dir.join("data/aica_sys.db");
    std::os::unix::fs::symlink(&db, dir.join("link.db")).unwrap();
    std::fs::hard_link(&db, dir.join("hard.db")).unwrap();
    let s = Server::start(dir, &["--set", "backup.schedule="], &[]);
    // Writes through the server leave committed transactions in the WAL.
    Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM articles WHERE id > 5500", [])
        .unwrap();
    let sides_before = side_files(&db);
    assert_eq!(
        sides_before,
        vec![true, true],
        "the server has the WAL open"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let abs = db.display().to_string();
    for (cwd, target) in [
        (dir, "data/aica_sys.db"),
        (dir, "./data/../data/aica_sys.db"),
        (elsewhere.path(), "data/aica_sys.db"),
        (elsewhere.path(), abs.as_str()),
        (dir, "link.db"),
    ] {
        let o = aica_in(
            cwd,
            dir,
            &["backup", "restore", "--latest", "--yes", "--target", target],
        );
        assert_eq!(o.status.code(), Some(1), "{target}: {}", text(&o));
        assert!(
            text(&o).contains("aica is running") && text(&o).contains("aica down"),
            "{target}: {}",
            text(&o)
        );
        assert_eq!(side_files(&db), sides_before, "{target}: -wal/-shm touched");
        assert_eq!(rows(&db), 5500, "{target}: live data changed");
    }
    // The preview the RUNBOOK offers works while the server runs, and changes nothing.
    let o = aica(dir, &["backup", "restore", "--latest", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&name) && text(&o).contains("live database"));
    assert_eq!(rows(&db), 5500);
    let (code, _) = crate::common::get(&format!("{}/health", s.backend)).unwrap();
    assert_eq!(code, 200);
}

#[test]
fn finding_2_a_target_that_is_not_a_file_is_refused_and_nothing_moves() {
    let d = seeded();
    let dir = d.path();
    create_verified(dir);
    std::fs::create_dir(dir.join("somedir")).unwrap();
    std::fs::write(dir.join("somedir/keep.txt"), "mine").unwrap();
    for target in ["somedir", "/dev/null"] {
        let o = restore_to(dir, "--latest", target);
        assert_eq!(o.status.code(), Some(2), "{target}: {}", text(&o));
        assert!(
            text(&o).contains("not a database file") && text(&o).contains("Try:"),
            "{}",
            text(&o)
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("somedir/keep.txt")).unwrap(),
        "mine"
    );
    let moved: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("unreadable"))
        .collect();
    assert!(moved.is_empty(), "something was moved aside: {moved:?}");
}

#[test]
fn finding_3_a_failed_safety_snapshot_refuses_and_changes_nothing() {
    let d = seeded();
    let dir = d.path();
    create_verified(dir);
    // A readable database much larger (and less compressible) than the backup:
    // extracting the backup fits under the limit, snapshotting the target does not.
    let other = dir.join("other.db");
    let c = Connection::open(&other).unwrap();
    c.execute_batch("CREATE TABLE blob (b BLOB); INSERT INTO blob VALUES (randomblob(48000000));")
        .unwrap();
    drop(c);
    let before = std::fs::read(&other).unwrap();
    let staged_size = std::fs::metadata(dir.join("data/aica_sys.db"))
        .unwrap()
        .len();
    let limit = staged_size + 16 * 1024 * 1024;
    assert!(
        limit < 48_000_000,
        "test premise: the snapshot must exceed the limit"
    );
    let o = aica_fsize_limited(
        dir,
        &[
            "backup", "restore", "--latest", "--yes", "--target", "other.db",
        ],
        limit,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("safety snapshot") && text(&o).contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&other).unwrap(), before, "target changed");
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("unreadable") || n.contains("restore-tmp")),
        "{names:?}"
    );
    assert_eq!(list(dir)[0].state, State::Verified, "the backup was blamed");
}

#[test]
fn finding_4_debris_of_dead_operations_is_reported_then_removed() {
    let d = seeded();
    let dir = d.path();
    create_verified(dir);
    let b = dir.join("backups");
    std::fs::write(
        b.join(".aica-20261128T000000Z.aicabak.tmp"),
        vec![7u8; 3 << 20],
    )
    .unwrap();
    std::fs::create_dir(b.join(".verify-dead1")).unwrap();
    std::fs::write(b.join(".verify-dead1/aica_sys.db"), vec![1u8; 1 << 20]).unwrap();
    std::fs::write(b.join("aica-20260101T000000Z.aicabak.json"), "{}").unwrap();
    let staged = dir.join("data/aica_sys.db.restore-tmp-4194999");
    std::fs::write(&staged, b"half").unwrap();
    std::fs::write(dir.join("data/aica_sys.db.restore-tmp-4194999-wal"), b"w").unwrap();
    std::fs::write(b.join(".staging"), format!("{}\n", staged.display())).unwrap();
    std::fs::create_dir_all(dir.join("run/drill-dead/data")).unwrap();

    let o = aica(dir, &["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "backup debris")
        .unwrap()
        .clone();
    assert_eq!(c["level"], "warn", "{c}");
    let observed = c["observed"].as_str().unwrap();
    assert!(
        observed.contains("6 left") || observed.contains(".tmp"),
        "{c}"
    );

    let o = aica(dir, &["backup", "tidy"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("interrupted"), "{}", text(&o));
    for p in [
        b.join(".aica-20261128T000000Z.aicabak.tmp"),
        b.join(".verify-dead1"),
        b.join("aica-20260101T000000Z.aicabak.json"),
        b.join(".staging"),
        staged.clone(),
        dir.join("data/aica_sys.db.restore-tmp-4194999-wal"),
        dir.join("run/drill-dead"),
    ] {
        assert!(!p.exists(), "{} was left", p.display());
    }
    assert_eq!(integrity(&dir.join("data/aica_sys.db")), "ok");
    assert_eq!(list(dir).len(), 1, "a real backup was removed");
    let o = aica(dir, &["doctor", "--json"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("no files left by interrupted"));
}

#[test]
fn finding_5_a_bare_archive_is_a_complete_backup() {
    let d = seeded();
    let src = d.path();
    std::fs::create_dir_all(src.join("data/uploads/img")).unwrap();
    std::fs::write(src.join("data/uploads/img/a.png"), b"png").unwrap();
    std::fs::write(src.join("aica.toml"), "[cache]\nttl_secs = 17\n").unwrap();
    let name = create_verified(src);
    // Disaster recovery: only the archive reaches the new machine.
    let new = tempfile::tempdir().unwrap();
    let nd = new.path();
    std::fs::create_dir_all(nd.join("backups")).unwrap();
    std::fs::copy(
        src.join("backups").join(&name),
        nd.join("backups").join(&name),
    )
    .unwrap();
    let o = aica(nd, &["backup", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"], "no sidecar");
    assert!(
        v[0]["created_at"].as_str().unwrap().starts_with("20"),
        "{v}"
    );
    let o = aica(nd, &["backup", "restore", "--latest", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("rebuilt the missing sidecar"),
        "{}",
        text(&o)
    );
    assert_eq!(rows(&nd.join("data/aica_sys.db")), 6000);
    assert_eq!(
        std::fs::read(nd.join("data/uploads/img/a.png")).unwrap(),
        b"png"
    );
    assert_eq!(
        std::fs::read_to_string(nd.join("aica.toml")).unwrap(),
        "[cache]\nttl_secs = 17\n"
    );
    let b = &list(nd)[0];
    assert_eq!(b.name, name);
    assert_eq!(b.state, State::Verified);
    assert!(b.ratio() > 1.0);
    // An existing aica.toml is kept unless asked.
    std::fs::write(nd.join("aica.toml"), "# mine\n").unwrap();
    let o = aica(nd, &["backup", "restore", &name, "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(nd.join("aica.toml")).unwrap(),
        "# mine\n"
    );
    let o = aica(nd, &["backup", "restore", &name, "--yes", "--with-config"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        std::fs::read_to_string(nd.join("aica.toml"))
            .unwrap()
            .contains("ttl_secs = 17")
    );
}

#[test]
fn finding_6_the_drill_never_inherits_the_parent_environment() {
    let d = seeded();
    let dir = d.path();
    create_verified(dir);
    let decoy = tempfile::tempdir().unwrap();
    let decoy_db = decoy.path().join("prod.db");
    let url = format!("sqlite://{}", decoy_db.display());
    let o = aica_env(
        dir,
        &["backup", "drill", "--json"],
        &[
            ("AICA_DATABASE_URL", url.as_str()),
            ("AICA_DATABASE_SEED_DEMO", "true"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        !decoy_db.exists(),
        "the drill's server opened the parent's database"
    );
}

#[test]
fn finding_6_shutdown_waits_for_a_scheduled_backup_and_leaves_nothing() {
    let d = seeded();
    let dir = d.path();
    // Make a backup take long enough to be caught in progress.
    let c = Connection::open(dir.join("data/aica_sys.db")).unwrap();
    c.execute_batch("CREATE TABLE filler (b BLOB);").unwrap();
    for _ in 0..150 {
        c.execute("INSERT INTO filler VALUES (randomblob(1000000))", [])
            .unwrap();
    }
    drop(c);
    let mut s = Server::start(dir, &["--set", "backup.schedule=* * * * *"], &[]);
    let lock = dir.join("backups/.lock");
    wait_for(
        "a scheduled backup in progress",
        Duration::from_secs(90),
        || aica::run::lock::holder(&lock).filter(|h| h.contains("scheduled backup")),
    );
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(60)), Some(0));
    // When the process is gone, so is everything it was doing.
    assert_eq!(aica::run::lock::holder(&lock), None);
    let left: Vec<String> = std::fs::read_dir(dir.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.') && n != ".lock")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for b in list(dir) {
        assert_ne!(b.state, State::NoSidecar, "{}", b.name);
    }
    assert!(!dir.join("run/aica.pid").exists());
}

#[test]
fn finding_7_failures_that_are_not_about_the_backup_leave_its_state_alone() {
    let d = seeded();
    let dir = d.path();
    let name = create_verified(dir);
    // An unwritable target.
    let o = restore_to(dir, &name, "/proc/aica-restore.db");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!text(&o).contains("corrupt"), "{}", text(&o));
    assert_eq!(list(dir)[0].state, State::Verified);
    // A full volume while verifying or restoring.
    let o = aica_fsize_limited(dir, &["backup", "verify", &name], 256 * 1024);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("ERROR") && !text(&o).contains("CORRUPT"),
        "{}",
        text(&o)
    );
    let o = aica_fsize_limited(
        dir,
        &["backup", "restore", &name, "--yes", "--target", "copy.db"],
        256 * 1024,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(list(dir)[0].state, State::Verified);
    // So prune keeps it: it is still the only verified backup.
    let o = aica(dir, &["backup", "prune"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(list(dir)[0].name, name);
    assert!(!dir.join("copy.db").exists() && !dir.join("copy.db.restore-tmp").exists());
}

#[test]
fn finding_8_targets_names_locks_mirrors_and_junk() {
    let d = seeded();
    let dir = d.path();
    let name = create_verified(dir);
    let archive = dir.join("backups").join(&name);
    let archive_bytes = std::fs::read(&archive).unwrap();

    // A target inside the backup store is refused; the archive stays as it was.
    let t = format!("backups/{name}");
    let o = restore_to(dir, &name, &t);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("inside the backup directory"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&archive).unwrap(), archive_bytes);

    // A bare file name is under --dir, whatever the current directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = aica_in(
        elsewhere.path(),
        dir,
        &["backup", "restore", &name, "--yes", "--target", "x.db"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(integrity(&dir.join("x.db")), "ok");
    assert!(!elsewhere.path().join("x.db").exists());

    // A sidecar that disagrees with the archive's own manifest fails
    // verification, is blamed (not the intact archive), and the fix works.
    let side = dir.join("backups").join(format!("{name}.json"));
    let good_side = std::fs::read(&side).unwrap();
    for field in ["rows", "hash"] {
        let mut v: serde_json::Value = serde_json::from_slice(&good_side).unwrap();
        if field == "rows" {
            v["manifest"]["tables"]["articles"] = serde_json::json!(1);
        } else {
            v["archive_blake3"] = serde_json::json!("0".repeat(64));
        }
        std::fs::write(&side, serde_json::to_vec(&v).unwrap()).unwrap();
        let o = aica(dir, &["backup", "verify", &name]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let t = text(&o);
        assert!(
            t.contains("MISMATCH") && t.contains("sidecar") && t.contains("Try: rm"),
            "{t}"
        );
        assert_eq!(
            list(dir)[0].state,
            State::Verified,
            "{field}: the archive was blamed"
        );
        let o = restore_to(dir, &name, "y.db");
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    }
    std::fs::remove_file(&side).unwrap();
    let o = aica(dir, &["backup", "verify", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A symlinked lock file is not followed.
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::remove_file(dir.join("backups/.lock")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("backups/.lock")).unwrap();
    let o = aica(dir, &["backup", "create"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not a regular file"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    std::fs::remove_file(dir.join("backups/.lock")).unwrap();

    // `serve` started during a restore names the restore.
    let l = aica::config::load(&aica::config::LoadOptions {
        dir: dir.to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    {
        let _restoring =
            aica::run::pidfile::RunLock::acquire(&l.paths.run, "backup restore").unwrap();
        let o = aica(dir, &["serve", "--port", "0", "--console-port", "0"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            text(&o).contains("backup restore") && !text(&o).contains("already running"),
            "{}",
            text(&o)
        );
    }

    // A mirror that cannot be written does not fail a complete local backup.
    std::fs::write(
        dir.join("offsite"),
        "a file where the mirror directory should be",
    )
    .unwrap();
    let o = aica(
        dir,
        &["--set", "backup.mirror_dir=offsite", "backup", "create"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("mirror failed"), "{}", text(&o));
    let newest = &list(dir)[0];
    assert_eq!(newest.state, State::Unverified);

    // Junk with the extension does not make verify --all fail forever.
    std::fs::write(dir.join("backups/junk.aicabak"), "not a backup").unwrap();
    let o = aica(dir, &["backup", "verify", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = aica(dir, &["backup", "list"]);
    assert!(text(&o).contains("ignored") && text(&o).contains("junk.aicabak"));
}

#[test]
fn attack_staging_list_is_not_trusted_and_dry_runs_remove_nothing() {
    let d = seeded();
    let dir = d.path();
    create_verified(dir);
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious.txt");
    std::fs::write(&precious, "p").unwrap();
    std::fs::create_dir(outside.path().join("pdir")).unwrap();
    let db = dir.join("data/aica_sys.db");
    let planted = dir.join("data/aica_sys.db.restore-tmp-4194998");
    std::fs::write(&planted, "half").unwrap();
    std::fs::write(
        dir.join("backups/.staging"),
        format!(
            "{}\n{}\n{}\n{}\n",
            precious.display(),
            outside.path().join("pdir").display(),
            db.display(),
            planted.display()
        ),
    )
    .unwrap();
    let o = aica(dir, &["backup", "prune", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(planted.exists(), "a dry run removed something");
    let o = aica(dir, &["backup", "verify", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(precious.exists() && outside.path().join("pdir").exists());
    assert_eq!(integrity(&db), "ok");
    assert!(!planted.exists(), "the real staged copy was left");
}

#[test]
fn attack_targets_that_are_not_databases_or_are_aicas_own_files() {
    let d = seeded();
    let dir = d.path();
    let name = create_verified(dir);
    std::fs::write(dir.join("aica.toml"), "[cache]\nttl_secs = 5\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "my notes").unwrap();
    let s = Server::start(dir, &["--set", "backup.schedule="], &[]);
    for t in [
        "aica.toml",
        "notes.txt",
        "run/aica.lock",
        "run/aica.pid",
        ".env.production",
    ] {
        let o = restore_to(dir, &name, t);
        assert_eq!(o.status.code(), Some(2), "{t}: {}", text(&o));
        assert!(text(&o).contains("Try:"), "{}", text(&o));
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("aica.toml")).unwrap(),
        "[cache]\nttl_secs = 5\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "my notes"
    );
    let (code, _) = crate::common::get(&format!("{}/health", s.backend)).unwrap();
    assert_eq!(code, 200);
    // A database another process has open (rollback-journal mode, idle: no
    // SQLite lock is held) is refused too.
    let app = dir.join("app.db");
    let c = Connection::open(&app).unwrap();
    c.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let o = restore_to(dir, &name, "app.db");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("open by process {}", std::process::id())),
        "{}",
        text(&o)
    );
    c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    // The dry run says the real restore will refuse while the server runs.
    let o = aica(dir, &["backup", "restore", &name, "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("will refuse"), "{}", text(&o));
}

#[test]
fn attack_restored_config_decides_where_the_data_goes() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("aica.toml"),
        "[database]\nurl = \"sqlite://store/custom.db\"\n[paths]\ndata_dir = \"store\"\n",
    )
    .unwrap();
    let o = aica(
        src.path(),
        &["keys", "create", "--role", "admin", "--name", "x"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    std::fs::create_dir_all(src.path().join("store/uploads")).unwrap();
    std::fs::write(src.path().join("store/uploads/a.txt"), "up").unwrap();
    let name = create_verified(src.path());
    let new = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(new.path().join("backups")).unwrap();
    std::fs::copy(
        src.path().join("backups").join(&name),
        new.path().join("backups").join(&name),
    )
    .unwrap();
    let o = aica(new.path(), &["backup", "restore", "--latest", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(rows(&new.path().join("store/custom.db")), 6000);
    assert_eq!(
        std::fs::read_to_string(new.path().join("store/uploads/a.txt")).unwrap(),
        "up"
    );
    assert!(!new.path().join("data/aica_sys.db").exists());
    let o = aica(new.path(), &["doctor"]);
    assert!(text(&o).contains("custom.db opens"), "{}", text(&o));
}

#[test]
fn attack_environment_failures_and_odd_layouts() {
    let d = seeded();
    let dir = d.path();
    let name = create_verified(dir);
    // A restore into a directory another restore is writing into waits its turn.
    let data = std::fs::File::open(dir.join("data")).unwrap();
    let held = nix::fcntl::Flock::lock(data, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let o = restore_to(dir, &name, "data/copy.db");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("another restore"), "{}", text(&o));
    drop(held);
    // A drill that fails because of its environment is inconclusive, not a failed backup.
    let o = aica_fsize_limited(dir, &["backup", "drill"], 512 * 1024);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("INCONCLUSIVE"), "{}", text(&o));
    assert!(
        list(dir)[0].drill.is_none(),
        "an inconclusive drill was recorded"
    );
    // A mirror that is the backup directory itself is no mirror.
    let o = aica(
        dir,
        &["--set", "backup.mirror_dir=backups/.", "backup", "create"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("backup.mirror_dir"), "{}", text(&o));
    // Uploads on another volume (a symlink) are not replaced by a directory.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("old.txt"), "old").unwrap();
    std::os::unix::fs::symlink(other.path(), dir.join("data/uploads")).unwrap();
    let o = aica(dir, &["backup", "restore", &name, "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("is a symlink"), "{}", text(&o));
    assert!(
        std::fs::symlink_metadata(dir.join("data/uploads"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(other.path().join("old.txt").exists());
    // Notes are one printable line.
    let o = aica(dir, &["backup", "create", "--note", "a\u{1b}[31mred\nline"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Argument mistakes end with a Try: line too.
    let o = aica(dir, &["backup", "restore", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("Try: aica backup restore --help"),
        "{}",
        text(&o)
    );
}

#[test]
fn attack2_overlapping_directories_are_refused_at_configuration() {
    let d = seeded();
    let dir = d.path();
    for (set, key) in [
        ("paths.backup_dir=data/uploads", "paths.backup_dir"),
        ("paths.backup_dir=data", "paths.backup_dir"),
        ("backup.mirror_dir=data/uploads", "backup.mirror_dir"),
        ("backup.mirror_dir=backups/sub", "backup.mirror_dir"),
        ("paths.data_dir=backups", "paths.backup_dir"),
        ("paths.run_dir=data", "paths.run_dir"),
    ] {
        let o = aica(dir, &["--set", set, "backup", "create"]);
        assert_eq!(o.status.code(), Some(2), "{set}: {}", text(&o));
        assert!(text(&o).contains(key), "{set}: {}", text(&o));
    }
    let o = aica(dir, &["--set", "paths.backup_dir=data/uploads", "doctor"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn attack2_odd_uploads_truncation_hard_links_and_occupied_staging_names() {
    let d = seeded();
    let dir = d.path();
    // Names that are not UTF-8 are skipped with a warning, not folded into one.
    use std::os::unix::ffi::OsStrExt;
    let up = dir.join("data/uploads");
    std::fs::create_dir_all(&up).unwrap();
    std::fs::write(up.join(std::ffi::OsStr::from_bytes(b"x\xff.txt")), "one").unwrap();
    std::fs::write(up.join(std::ffi::OsStr::from_bytes(b"x\xfe.txt")), "two").unwrap();
    std::fs::write(up.join("ok.txt"), "ok").unwrap();
    let o = aica(dir, &["backup", "create", "--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("not valid UTF-8"), "{}", text(&o));
    let older = list(dir)[0].name.clone();
    let o = aica(dir, &["backup", "create", "--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let newer = list(dir)[0].name.clone();
    // A truncated archive is corrupt whatever its sidecar says, and prune keeps the good one.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("backups").join(&newer))
        .unwrap();
    f.set_len(100_000).unwrap();
    drop(f);
    assert_eq!(list(dir)[0].state, State::Corrupt);
    let o = aica(
        dir,
        &[
            "--set",
            "backup.keep_daily=1",
            "--set",
            "backup.keep_weekly=0",
            "--set",
            "backup.keep_monthly=0",
            "backup",
            "prune",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        list(dir)
            .iter()
            .any(|b| b.name == older && b.state == State::Verified)
    );
    // A hard link of the live database is not a way around "restore by its own name".
    std::fs::hard_link(dir.join("data/aica_sys.db"), dir.join("hl.db")).unwrap();
    let o = restore_to(dir, &older, "hl.db");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("hard link"), "{}", text(&o));
    // Whatever already sits at the staging name is not the restore's to delete.
    let script = format!(
        "mkdir -p '{d}/dirt.db.restore-tmp-'$$/sub && echo keep > '{d}/dirt.db.restore-tmp-'$$/sub/keep && exec '{bin}' --dir '{d}' backup restore {older} --yes --target dirt.db",
        d = dir.display(),
        bin = bin().display()
    );
    let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    let kept: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("dirt.db.restore-tmp-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].path().join("sub/keep").exists());
    // An interrupted live restore is reported until it is finished.
    std::fs::write(dir.join("data/.restore-incomplete"), &older).unwrap();
    let o = aica(dir, &["doctor"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("was interrupted"), "{}", text(&o));
    let o = aica(dir, &["backup", "restore", &older, "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!dir.join("data/.restore-incomplete").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("data/uploads/ok.txt")).unwrap(),
        "ok"
    );
    // Output that cannot be written is an error, not a panic.
    let o = Command::new(bin())
        .arg("--dir")
        .arg(dir)
        .args(["backup", "list"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
}

#[test]
fn attack2_archive_members_must_be_plain_regular_files() {
    let d = seeded();
    let dir = d.path();
    let name = create_verified(dir);
    let sidecar = backup::read_sidecar(&dir.join("backups").join(&name)).unwrap();
    let raw =
        zstd::decode_all(std::fs::File::open(dir.join("backups").join(&name)).unwrap()).unwrap();
    let mut db = Vec::new();
    let mut a = tar::Archive::new(raw.as_slice());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == "db/aica_sys.db" {
            std::io::Read::read_to_end(&mut e, &mut db).unwrap();
        }
    }
    for (member, kind) in [
        ("uploads/link", tar::EntryType::Symlink),
        ("uploads/./a.txt", tar::EntryType::Regular),
    ] {
        let mut m = sidecar.manifest.clone();
        m.members.push(backup::Member {
            path: member.into(),
            size: 0,
            blake3: blake3::hash(b"").to_hex().to_string(),
        });
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(db.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        t.append_data(&mut h, "db/aica_sys.db", db.as_slice())
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o600);
        h.set_entry_type(kind);
        if kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.as_gnu_mut().unwrap().name[..member.len()].copy_from_slice(member.as_bytes());
        h.set_cksum();
        t.append(&h, &[][..]).unwrap();
        let json = serde_json::to_vec(&m).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(json.len() as u64);
        h.set_mode(0o600);
        t.append_data(&mut h, "manifest.json", json.as_slice())
            .unwrap();
        let bytes = zstd::encode_all(t.into_inner().unwrap().as_slice(), 3).unwrap();
        let crafted = "aica-20200101T000000Z-7.aicabak";
        std::fs::write(dir.join("backups").join(crafted), bytes).unwrap();
        let _ = std::fs::remove_file(dir.join("backups").join(format!("{crafted}.json")));
        let o = aica(dir, &["backup", "verify", crafted]);
        assert_eq!(o.status.code(), Some(1), "{member}: {}", text(&o));
        let t = text(&o);
        assert!(
            (t.contains("CORRUPT") || t.contains("UNREADABLE")) && t.contains(member),
            "{member}: {t}"
        );
    }
}

#[test]
fn attack2_a_damaged_target_is_moved_aside_untouched_with_its_wal() {
    let d = seeded();
    let dir = d.path();
    let name = create_verified(dir);
    // A database whose committed rows are still in its WAL, copied while open.
    let src = dir.join("src.db");
    let c = Connection::open(&src).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t (x BLOB); INSERT INTO t SELECT randomblob(3000) FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3);",
    )
    .unwrap();
    for i in 0..40 {
        c.execute("INSERT INTO t VALUES (randomblob(3000))", [])
            .unwrap();
        if i == 19 {
            // The first half in the main file, the second half only in the WAL.
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
    }
    let target = dir.join("damaged.db");
    std::fs::copy(&src, &target).unwrap();
    std::fs::copy(dir.join("src.db-wal"), dir.join("damaged.db-wal")).unwrap();
    drop(c);
    // Damage a page of the main file (the header stays a SQLite header).
    let mut bytes = std::fs::read(&target).unwrap();
    assert!(bytes.len() >= 8 * 4096, "{}", bytes.len());
    for page in 1..bytes.len() / 4096 {
        for b in &mut bytes[page * 4096 + 8..page * 4096 + 900] {
            *b = 0xAB;
        }
    }
    std::fs::write(&target, &bytes).unwrap();
    let wal_before = std::fs::read(dir.join("damaged.db-wal")).unwrap();
    let o = restore_to(dir, &name, "damaged.db");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("could not be read"), "{}", text(&o));
    let aside: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("damaged.db.unreadable-") && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        bytes,
        "the damaged file was modified"
    );
    let mut wal = aside[0].as_os_str().to_owned();
    wal.push("-wal");
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        wal_before,
        "its WAL was not kept whole"
    );
    assert_eq!(integrity(&target), "ok");
}
