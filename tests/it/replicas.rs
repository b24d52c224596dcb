//! Replicas on one PostgreSQL database: three real `aica serve` processes,
//! each in its own directory, sharing only the database (as containers do).

use crate::common::{Server, aica_env, get, text, wait_for};
use crate::pg::{OwnCluster, TestDb};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A replica's directory and process.
struct Replica {
    dir: tempfile::TempDir,
    server: Server,
}

fn env(url: &str) -> [(&'static str, &str); 2] {
    [
        ("AICA_DATABASE_URL", url),
        ("AICA_DATABASE_SEED_DEMO", "false"),
    ]
}

fn start(url: &str, extra: &[&str]) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path(), url, extra);
    Replica { dir, server }
}

fn start_in(dir: &std::path::Path, url: &str, extra: &[&str]) -> Server {
    let e = env(url);
    Server::start(dir, extra, &e)
}

/// An editor key, created through the CLI against the shared database.
fn editor_key(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let e = env(url);
    let o = aica_env(
        dir.path(),
        &["keys", "create", "--role", "editor", "--name", "w"],
        &e,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string()
}

fn detailed_check(base: &str, name: &str) -> Option<String> {
    let (_, body) = get(&format!("{base}/health/detailed"))?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["checks"][name][0]["status"].as_str().map(str::to_string)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn article(slug: &str) -> Value {
    json!({"slug": slug, "title": "Replicated", "body": "Body.", "author": "R",
           "category": "language", "status": "published"})
}

async fn newest_slug(c: &reqwest::Client, base: &str) -> Option<(String, i64)> {
    let v: Value = c
        .get(format!("{base}/api/optimized/articles?limit=1"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some((
        v["items"][0]["slug"].as_str()?.to_string(),
        v["total"].as_i64()?,
    ))
}

#[test]
fn writes_through_one_replica_are_read_through_the_others() {
    let Some(db) = TestDb::create() else { return };
    let key = editor_key(&db.url);
    let reps: Vec<Replica> = (0..3).map(|_| start(&db.url, &[])).collect();
    let bases: Vec<String> = reps.iter().map(|r| r.server.backend.clone()).collect();
    for b in &bases {
        wait_for("change feed", Duration::from_secs(20), || {
            (detailed_check(b, "cache:invalidation")? == "pass").then_some(())
        });
    }
    let rt = runtime();
    let c = client();
    let delays = rt.block_on(async {
        let mut delays = Vec::new();
        for i in 0..15 {
            // Every replica has the listing cached before the write.
            for b in &bases {
                newest_slug(&c, b).await;
                newest_slug(&c, b).await;
            }
            let slug = format!("replicated-{i}");
            let writer = &bases[i % 3];
            let r = c
                .post(format!("{writer}/api/articles"))
                .bearer_auth(&key)
                .json(&article(&slug))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let acked = Instant::now();
            for b in bases.iter().filter(|b| *b != writer) {
                loop {
                    if newest_slug(&c, b).await.is_some_and(|(s, _)| s == slug) {
                        break;
                    }
                    assert!(
                        acked.elapsed() < Duration::from_secs(2),
                        "{b} still serves a listing without {slug} 2 s after the write was acknowledged"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                delays.push(acked.elapsed());
            }
        }
        delays
    });
    let max = delays.iter().max().unwrap();
    eprintln!(
        "cross-replica staleness after an acknowledged write: max {:.1} ms over {} reads",
        max.as_secs_f64() * 1000.0,
        delays.len()
    );

    // 1,000 writes spread over the three, 16 at a time: nothing lost, nothing twice.
    let next = Arc::new(AtomicU64::new(0));
    let created = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, bases, key, next) = (c.clone(), bases.clone(), key.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u64;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= 1000 {
                        return ok;
                    }
                    let base = &bases[n as usize % 3];
                    let r = c
                        .post(format!("{base}/api/articles"))
                        .bearer_auth(&key)
                        .json(&article(&format!("bulk-{n}")))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201, "write {n} through {base}");
                    ok += 1;
                }
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    assert_eq!(created, 1000);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM articles WHERE slug LIKE 'bulk-%'"),
        1000
    );
    assert_eq!(db.scalar("SELECT COUNT(DISTINCT slug) FROM articles"), 1015);
    rt.block_on(async {
        for b in &bases {
            assert_eq!(
                newest_slug(&c, b).await.unwrap().1,
                1015,
                "total through {b}"
            );
        }
    });
    drop(reps);
}

/// A backup every 2 s, the leader checked every second.
const SCHEDULED: [&str; 6] = [
    "--set",
    "backup.schedule=*/2 * * * * *",
    "--set",
    "scheduler.leader_check_secs=1",
    "--set",
    "backup.verify_scheduled=false",
];

/// `(tick, replica)` rows of the scheduled backup job, oldest first.
fn runs(db: &TestDb) -> Vec<(String, String)> {
    db.rows("SELECT tick, replica FROM job_runs WHERE job = 'backup' ORDER BY tick")
}

#[test]
fn a_scheduled_job_runs_once_per_tick_and_moves_when_its_replica_dies() {
    let Some(db) = TestDb::create() else { return };
    let extra = SCHEDULED;
    let mut reps: Vec<Replica> = (0..3).map(|_| start(&db.url, &extra)).collect();
    let first = wait_for("three ticks", Duration::from_secs(30), || {
        let r = runs(&db);
        (r.len() >= 3).then_some(r)
    });
    let leader = first[0].1.clone();
    assert!(
        first.iter().all(|(_, r)| *r == leader),
        "one replica runs every tick: {first:?}"
    );
    // Every replica saw the ticks; only the leader acted on them.
    let pid: u32 = leader.rsplit(':').next().unwrap().parse().unwrap();
    let idx = reps
        .iter()
        .position(|r| r.server.child.id() == pid)
        .expect("leader is one of ours");
    for (i, r) in reps.iter().enumerate() {
        let (_, body) = get(&format!("{}/health/detailed", r.server.backend)).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        let leads = v["checks"]["scheduler:role"][0]["observedValue"].as_bool();
        assert_eq!(leads, Some(i == idx), "replica {i}: {body}");
    }

    let killed_at = Instant::now();
    let dead = reps.remove(idx);
    dead.server.signal(nix::sys::signal::Signal::SIGKILL);
    let before = runs(&db).len();
    let after = wait_for(
        "another replica to take over",
        Duration::from_secs(20),
        || {
            let r = runs(&db);
            r.iter()
                .skip(before)
                .find(|(_, rep)| *rep != leader)
                .cloned()
        },
    );
    let took = killed_at.elapsed();
    eprintln!(
        "scheduler takeover after kill -9: {:.1} s (check every 1 s, tick every 2 s)",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    // From the takeover on, one replica and consecutive ticks.
    let later = wait_for("two more ticks", Duration::from_secs(20), || {
        let r = runs(&db);
        let pos = r.iter().position(|x| *x == after)?;
        (r.len() >= pos + 3).then(|| r[pos..].to_vec())
    });
    assert!(later.iter().all(|(_, r)| *r == after.1), "{later:?}");
    for w in later.windows(2) {
        let t = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert_eq!(
            t(&w[1].0) - t(&w[0].0),
            time::Duration::seconds(2),
            "a tick was skipped or doubled: {later:?}"
        );
    }
    drop(dead);
}

#[test]
fn a_rolling_restart_under_load_fails_no_request() {
    let Some(db) = TestDb::create() else { return };
    let extra = ["--set", "server.drain_secs=1"];
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers: Vec<Server> = dirs
        .iter()
        .map(|d| start_in(d.path(), &db.url, &extra))
        .collect();
    // A load balancer as Kubernetes runs one: send only to replicas whose
    // readiness probe (polled every 100 ms) passes.
    let pool: Arc<std::sync::Mutex<Vec<(String, bool)>>> = Arc::new(std::sync::Mutex::new(
        servers.iter().map(|s| (s.backend.clone(), true)).collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime();
    let prober = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let urls: Vec<String> = pool
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(u, _)| u.clone())
                    .collect();
                for u in urls {
                    let ready = get(&format!("{u}/health/ready")).is_some_and(|(s, _)| s == 200);
                    for e in pool.lock().unwrap().iter_mut().filter(|(x, _)| *x == u) {
                        e.1 = ready;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..8)
        .map(|w| {
            let (pool, stop, ok, failed) = (pool.clone(), stop.clone(), ok.clone(), failed.clone());
            let c = client();
            rt.spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let target = {
                        let p = pool.lock().unwrap();
                        let ready: Vec<&String> =
                            p.iter().filter(|(_, r)| *r).map(|(u, _)| u).collect();
                        if ready.is_empty() {
                            None
                        } else {
                            Some(ready[(n + w) % ready.len()].clone())
                        }
                    };
                    let Some(t) = target else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let r = c
                        .get(format!(
                            "{t}/api/optimized/articles?limit=5&skip={}",
                            n % 50
                        ))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("{t}: {}", r.status());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("{t}: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for i in 0..3 {
        let old = servers[i].backend.clone();
        servers[i].signal(nix::sys::signal::Signal::SIGTERM);
        // Not ready at once, while still serving.
        wait_for("readiness to turn 503", Duration::from_secs(1), || {
            get(&format!("{old}/health/ready")).and_then(|(s, _)| (s == 503).then_some(()))
        });
        assert_eq!(servers[i].wait_exit(Duration::from_secs(20)), Some(0));
        let new = start_in(dirs[i].path(), &db.url, &extra);
        {
            let mut p = pool.lock().unwrap();
            p.retain(|(u, _)| *u != old);
            p.push((new.backend.clone(), false));
        }
        wait_for(
            "the new replica to be ready",
            Duration::from_secs(20),
            || {
                pool.lock()
                    .unwrap()
                    .iter()
                    .any(|(u, r)| *u == new.backend && *r)
                    .then_some(())
            },
        );
        servers[i] = new;
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for l in load {
            l.await.unwrap();
        }
    });
    prober.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rolling restart of 3 replicas: {ok} requests served, {failed} failed");
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(failed, 0);
}

#[test]
fn unreachable_postgres_is_a_clear_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://aica:s3cretpw@127.0.0.1:{port}/aica");
    let dir = tempfile::tempdir().unwrap();
    let e = [("DATABASE_URL", url.as_str())];
    let o = aica_env(dir.path(), &["doctor"], &e);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{port}")) && !out.contains("s3cretpw"),
        "{out}"
    );
    let o = aica_env(
        dir.path(),
        &["serve", "--port", "0", "--console-port", "0"],
        &e,
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
    assert!(
        !out.contains("s3cretpw") && !out.contains("panicked"),
        "{out}"
    );
    let o = aica_env(dir.path(), &["config", "show"], &e);
    let out = text(&o);
    assert!(
        out.contains("postgres at 127.0.0.1") && !out.contains("s3cretpw"),
        "{out}"
    );
}

#[test]
fn a_database_with_a_newer_schema_is_refused() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let e = env(&db.url);
    let o = aica_env(dir.path(), &["keys", "list"], &e);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    db.exec("INSERT INTO aica_schema (version, applied_at) VALUES (99, 'future')");
    let o = aica_env(
        dir.path(),
        &["serve", "--port", "0", "--console-port", "0"],
        &e,
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("schema is version 99"), "{out}");
    let o = aica_env(dir.path(), &["doctor"], &e);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("newer than this aica supports"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_wrong_password_is_a_clear_error_with_the_password_redacted() {
    let Some(pg) = OwnCluster::start("right-pw") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("wrong-pw");
    let e = [("DATABASE_URL", url.as_str())];
    let o = aica_env(dir.path(), &["doctor"], &e);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("password authentication failed"), "{out}");
    assert!(
        !out.contains("wrong-pw") && !out.contains("right-pw"),
        "{out}"
    );
}

#[test]
fn postgres_restarted_while_serving_gives_503_then_recovers_by_itself() {
    let Some(pg) = OwnCluster::start("pw") else {
        return;
    };
    let mut r = start(&pg.url("pw"), &[]);
    let base = r.server.backend.clone();
    let fresh = |i: usize| format!("{base}/api/optimized/articles?limit=3&skip={i}");
    assert_eq!(get(&fresh(0)).unwrap().0, 200);
    pg.stop();
    // Uncached reads (a new page each time) fail with 503 while the database is down.
    let (status, body) = get(&fresh(1)).unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(get(&format!("{base}/health/ready")).unwrap().0, 503);
    pg.restart();
    let mut i = 2;
    wait_for("reads to recover", Duration::from_secs(30), || {
        i += 1;
        (get(&fresh(i))?.0 == 200).then_some(())
    });
    assert_eq!(get(&format!("{base}/health/ready")).unwrap().0, 200);
    wait_for(
        "the change feed to come back",
        Duration::from_secs(30),
        || (detailed_check(&base, "cache:invalidation")? == "pass").then_some(()),
    );
    assert!(
        r.server.child.try_wait().unwrap().is_none(),
        "the replica kept running"
    );
    r.server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(r.server.wait_exit(Duration::from_secs(20)), Some(0));
    drop(r.dir);
}

#[test]
fn a_libpq_key_value_string_is_refused_not_taken_for_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = [(
        "DATABASE_URL",
        "host=127.0.0.1 port=5432 user=postgres password=kvsecret dbname=app",
    )];
    for args in [
        &["doctor"][..],
        &["serve", "--port", "0", "--console-port", "0"],
        &["config", "show"],
    ] {
        let o = aica_env(dir.path(), args, &e);
        let out = text(&o);
        // doctor reports it as its failing `config` check (exit 1); the others are usage errors.
        let want = if args[0] == "doctor" { 1 } else { 2 };
        assert_eq!(o.status.code(), Some(want), "{args:?}: {out}");
        assert!(
            out.contains("postgres://user:password@host:port/db"),
            "{out}"
        );
        assert!(!out.contains("kvsecret"), "{out}");
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.contains("kvsecret")), "{names:?}");
}

#[test]
fn a_row_locked_by_a_stuck_session_costs_a_write_5_s_not_the_replica() {
    let Some(db) = TestDb::create() else { return };
    let key = editor_key(&db.url);
    let r = start(&db.url, &[]);
    let base = r.server.backend.clone();
    let rt = runtime();
    let c = client();
    rt.block_on(async {
        let s = c
            .post(format!("{base}/api/articles"))
            .bearer_auth(&key)
            .json(&article("locked"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, 201);
    });
    // Another session holds the row, as a stopped replica mid-transaction would.
    let (holder, conn) = rt
        .block_on(tokio_postgres::connect(&db.url, tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(conn);
    rt.block_on(
        holder.batch_execute("BEGIN; SELECT * FROM articles WHERE slug = 'locked' FOR UPDATE"),
    )
    .unwrap();
    let started = Instant::now();
    let status = rt.block_on(async {
        c.put(format!("{base}/api/articles/locked"))
            .bearer_auth(&key)
            .json(&article("locked"))
            .send()
            .await
            .unwrap()
            .status()
    });
    let took = started.elapsed();
    assert_eq!(status, 503);
    assert!(
        took < Duration::from_secs(10),
        "the lock wait took {took:?}"
    );
    // Meanwhile the replica answers everything else.
    assert_eq!(get(&format!("{base}/health/ready")).unwrap().0, 200);
    assert_eq!(
        get(&format!("{base}/api/optimized/articles?limit=2"))
            .unwrap()
            .0,
        200
    );
    drop(holder);
}

#[test]
fn a_stopped_scheduler_leader_loses_the_schedule_to_another_replica() {
    let Some(db) = TestDb::create() else { return };
    let extra = SCHEDULED;
    let reps: Vec<Replica> = (0..2).map(|_| start(&db.url, &extra)).collect();
    let first = wait_for("a tick", Duration::from_secs(30), || {
        runs(&db).first().cloned()
    });
    let pid: u32 = first.1.rsplit(':').next().unwrap().parse().unwrap();
    let leader = reps
        .iter()
        .find(|r| r.server.child.id() == pid)
        .expect("one of ours");
    // SIGSTOP: the process keeps its database session (and the kernel its TCP
    // connection), so only the server's idle-session timeout frees the lock.
    leader.server.signal(nix::sys::signal::Signal::SIGSTOP);
    let stopped_at = Instant::now();
    let before = runs(&db).len();
    let other = wait_for(
        "another replica to run a tick",
        Duration::from_secs(30),
        || {
            runs(&db)
                .into_iter()
                .skip(before)
                .find(|(_, r)| *r != first.1)
        },
    );
    eprintln!(
        "takeover from a stopped leader: {:.1} s",
        stopped_at.elapsed().as_secs_f64()
    );
    leader.server.signal(nix::sys::signal::Signal::SIGCONT);
    assert_ne!(other.1, first.1);
}

#[test]
fn every_password_in_the_url_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://postgres@127.0.0.1:5432/db?password=s3cretA&password=t0pB";
    let o = aica_env(
        dir.path(),
        &["config", "show", "--json"],
        &[("DATABASE_URL", url)],
    );
    let out = text(&o);
    assert!(!out.contains("s3cretA") && !out.contains("t0pB"), "{out}");
    let bad = format!("{url}&sslmode=require");
    let o = aica_env(
        dir.path(),
        &["config", "show"],
        &[("DATABASE_URL", bad.as_str())],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("sslmode") && !out.contains("s3cretA") && !out.contains("t0pB"),
        "{out}"
    );
}

/// A TCP proxy to PostgreSQL that can silently stop forwarding on the
/// connection that sent `LISTEN` (a firewall dropping an idle flow).
struct FeedProxy {
    port: u16,
    freeze: Arc<AtomicBool>,
}

impl FeedProxy {
    fn start(upstream: std::net::SocketAddr) -> FeedProxy {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let freeze = Arc::new(AtomicBool::new(false));
        let f = freeze.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let listening = Arc::new(AtomicBool::new(false));
                for (mut from, mut to, up) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    ),
                    (server, client, false),
                ] {
                    let (f, listening) = (f.clone(), listening.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            if up && buf[..n].windows(6).any(|w| w == b"LISTEN") {
                                listening.store(true, Ordering::SeqCst);
                            }
                            // Frozen: the bytes are swallowed, the socket stays open.
                            if listening.load(Ordering::SeqCst) && f.load(Ordering::SeqCst) {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        FeedProxy { port, freeze }
    }
}

#[test]
fn a_silently_dead_change_feed_bypasses_the_cache_within_two_seconds() {
    let Some(db) = TestDb::create() else { return };
    let key = editor_key(&db.url);
    let proxy = FeedProxy::start("127.0.0.1:5432".parse().unwrap());
    let via_proxy = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    if via_proxy == db.url {
        eprintln!("skipped: AICA_TEST_POSTGRES_URL is not on 127.0.0.1:5432");
        return;
    }
    let a = start(&db.url, &[]);
    let b = start(&via_proxy, &[]);
    let (ua, ub) = (a.server.backend.clone(), b.server.backend.clone());
    wait_for("B's change feed", Duration::from_secs(20), || {
        (detailed_check(&ub, "cache:invalidation")? == "pass").then_some(())
    });
    let rt = runtime();
    let c = client();
    rt.block_on(async {
        newest_slug(&c, &ub).await;
        newest_slug(&c, &ub).await;
    });
    proxy.freeze.store(true, Ordering::SeqCst);
    let frozen = Instant::now();
    wait_for(
        "B to notice its feed is dead",
        Duration::from_secs(5),
        || (detailed_check(&ub, "cache:invalidation")? == "warn").then_some(()),
    );
    let noticed = frozen.elapsed();
    assert!(
        noticed < Duration::from_secs(3),
        "noticed after {noticed:?}"
    );
    rt.block_on(async {
        let r = c
            .post(format!("{ua}/api/articles"))
            .bearer_auth(&key)
            .json(&article("while-the-feed-is-dead"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        // B's notification is lost in the proxy, yet B answers fresh at once.
        let (slug, _) = newest_slug(&c, &ub).await.unwrap();
        assert_eq!(slug, "while-the-feed-is-dead");
    });
    eprintln!(
        "a silently dead feed was noticed after {:.1} s",
        noticed.as_secs_f64()
    );
}
