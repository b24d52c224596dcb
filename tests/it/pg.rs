//! PostgreSQL for tests: a database of its own per test (dropped afterwards),
//! on the server named by `AICA_TEST_POSTGRES_URL` (default 127.0.0.1:5432).
//! An unreachable server skips the test, except under `CI=true`, where it fails.

use std::time::Duration;

fn admin_url() -> String {
    std::env::var("AICA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Run `f` on a fresh current-thread runtime in its own thread (usable from
/// anywhere, including `Drop` inside an async test).
fn on_own_runtime<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .unwrap()
}

async fn admin(url: String) -> Result<tokio_postgres::Client, String> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    cfg.connect_timeout(Duration::from_secs(3));
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

/// A database created for one test and dropped when this is dropped.
pub struct TestDb {
    pub url: String,
    name: String,
}

impl TestDb {
    /// `None` (after saying why) when no PostgreSQL server is reachable and CI is not set.
    pub fn create() -> Option<TestDb> {
        let admin_url = admin_url();
        let name = format!("aica_test_{}", super::common::rand_hex());
        let (u, n) = (admin_url.clone(), name.clone());
        let res = on_own_runtime(move || {
            Box::pin(async move {
                let c = admin(u).await?;
                c.batch_execute(&format!("CREATE DATABASE {n}"))
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        if let Err(e) = res {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL at {admin_url} is required under CI=true: {e}");
            }
            eprintln!(
                "skipped: PostgreSQL at {admin_url} is not reachable ({e}); set AICA_TEST_POSTGRES_URL"
            );
            return None;
        }
        let url = url_for(&admin_url, &name);
        Some(TestDb { url, name })
    }

    /// Run `f` with a connection to this test's database.
    fn with_client<T: Send + 'static>(
        &self,
        f: impl FnOnce(
            tokio_postgres::Client,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
        + Send
        + 'static,
    ) -> T {
        let u = self.url.clone();
        on_own_runtime(move || Box::pin(async move { f(admin(u).await.unwrap()).await }))
    }

    /// Run SQL on this test's database.
    pub fn exec(&self, sql: &str) {
        let sql = sql.to_string();
        self.with_client(move |c| Box::pin(async move { c.batch_execute(&sql).await.unwrap() }))
    }

    /// First column of the first row of `sql`, as i64.
    pub fn scalar(&self, sql: &str) -> i64 {
        let sql = sql.to_string();
        self.with_client(move |c| {
            Box::pin(async move { c.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) })
        })
    }

    /// Drop the database now (a disaster); the name is still cleaned up after.
    pub fn drop_database(&self) {
        let (u, n) = (admin_url(), self.name.clone());
        on_own_runtime(move || {
            Box::pin(async move {
                let c = admin(u).await.unwrap();
                c.batch_execute(&format!("DROP DATABASE {n} WITH (FORCE)"))
                    .await
                    .unwrap();
            })
        })
    }

    /// Rows of two text columns.
    pub fn rows(&self, sql: &str) -> Vec<(String, String)> {
        let sql = sql.to_string();
        self.with_client(move |c| {
            Box::pin(async move {
                let rows = c.query(&sql, &[]).await.unwrap();
                rows.iter().map(|r| (r.get(0), r.get(1))).collect()
            })
        })
    }
}

/// `admin_url` with its database name replaced by `db`.
fn url_for(admin_url: &str, db: &str) -> String {
    let (base, _) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let cut = base
        .rfind('/')
        .filter(|&i| i > "postgres://".len())
        .unwrap_or(base.len());
    format!("{}/{db}", &base[..cut])
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (u, n) = (admin_url(), self.name.clone());
        on_own_runtime(move || {
            Box::pin(async move {
                if let Ok(c) = admin(u).await {
                    // Also what a restore renamed aside (`<name>_before_<time>`).
                    let names: Vec<String> = c
                        .query(
                            "SELECT datname::text FROM pg_database WHERE datname LIKE $1",
                            &[&format!("{n}%")],
                        )
                        .await
                        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                        .unwrap_or_default();
                    for d in names {
                        let _ = c
                            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"))
                            .await;
                    }
                }
            })
        });
    }
}

/// A PostgreSQL server of the test's own (initdb in a temp dir, run as the
/// `postgres` system user), for what the shared server must not suffer: a
/// restart, password authentication. Stopped and removed on drop.
pub struct OwnCluster {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    pub port: u16,
}

/// Fail under CI=true, else say why and skip.
fn unavailable(why: String) -> Option<OwnCluster> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

impl OwnCluster {
    /// A new cluster whose superuser `aica` has `password` (host logins need it).
    pub fn start(password: &str) -> Option<OwnCluster> {
        let mut bins: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .collect();
        bins.sort();
        let Some(bin) = bins.pop() else {
            return unavailable("no PostgreSQL server binaries under /usr/lib/postgresql".into());
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), password).unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        if !chown.success() {
            return unavailable("cannot hand a temp dir to the postgres user".into());
        }
        let data = dir.path().join("data");
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "aica",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", dir.path().join("pw").display()))
            .output()
            .unwrap();
        if !out.status.success() {
            return unavailable(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = OwnCluster { dir, bin, port };
        c.ctl("start");
        Some(c)
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            data.display()
        );
        let mut cmd = std::process::Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "30"]);
        if action == "start" {
            cmd.args(["-o", &opts]);
        } else {
            cmd.args(["-m", "fast"]);
        }
        let out = cmd.arg(action).output().unwrap();
        assert!(
            out.status.success() || action == "stop",
            "pg_ctl {action}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop the server (fast shutdown: sessions are disconnected).
    pub fn stop(&self) {
        self.ctl("stop");
    }

    /// Start it again on the same port and data.
    pub fn restart(&self) {
        self.ctl("start");
    }

    pub fn url(&self, password: &str) -> String {
        format!(
            "postgres://aica:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let mut cmd = std::process::Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = cmd.output();
    }
}
