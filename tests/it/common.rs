//! Test harness: the real app on an injected port-0 listener, or the real binary,
//! each with a fresh temporary directory.

use aica::config::{LoadOptions, load};
use aica::http::{self, AppState};
use aica::store::{ContentStore, NewApiKey};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Poll `cond` until it returns Some or the deadline passes (then panic with `what`).
pub fn wait_for<T>(what: &str, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The backend app in this process, on 127.0.0.1:0.
pub struct TestApp {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn ContentStore>,
    pub client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(&[]).await
    }

    pub async fn start_with(overrides: &[&str]) -> TestApp {
        Self::start_routes(overrides, axum::Router::new()).await
    }

    /// The app with `extra` routes in its route table, under the same layers.
    pub async fn start_routes(overrides: &[&str], extra: axum::Router<AppState>) -> TestApp {
        aica::telemetry::metrics::handle();
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&LoadOptions {
            dir: dir.path().to_path_buf(),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap();
        let opened = aica::store::open(&loaded.paths.backend, 4, true)
            .await
            .unwrap();
        let store = opened.store;
        let state = AppState::new(store.clone(), loaded.settings.clone(), &loaded.paths);
        if let Some(coord) = opened.coordination {
            aica::http::replicas::spawn_change_feed(&state, coord);
        }
        state.refresh_quick_check().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limits = aica::web::limits(&loaded.settings.server);
        tokio::spawn(http::serve(
            listener,
            http::app_with(state, extra),
            limits,
            async {
                let _ = rx.await;
            },
        ));
        TestApp {
            url,
            dir,
            store,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            _shutdown: tx,
        }
    }

    pub fn key(&self, name: &str, role: &str) -> String {
        let key = format!("aica_test_{name}_{}", rand_hex());
        self.store
            .create_key(&NewApiKey {
                name: name.into(),
                role: role.into(),
                prefix: key[..12].into(),
                hash: aica::store::keys::hash(&key),
            })
            .unwrap();
        key
    }

    /// Send `method path`, with a bearer key and a JSON body when given.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    pub async fn json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.get(path).await;
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or_default())
    }
}

pub fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_aica"))
}

/// Settings from the outer environment that a test must not inherit.
fn outer_setting(k: &str) -> bool {
    k.starts_with("AICA_") || k == "DATABASE_URL" || k == "REDIS_URL"
}

/// Run the binary to completion in `dir`, with no AICA_* from the outer environment.
pub fn aica(dir: &Path, args: &[&str]) -> Output {
    aica_env(dir, args, &[])
}

pub fn aica_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("--dir").arg(dir).args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| outer_setting(k)) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The real binary running `serve` on free ports in a temp dir.
pub struct Server {
    pub child: Child,
    pub backend: String,
    pub console: String,
}

impl Server {
    pub fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("--dir")
            .arg(dir)
            .args(["serve", "--port", "0", "--console-port", "0"])
            .args(extra);
        for (k, _) in std::env::vars().filter(|(k, _)| outer_setting(k)) {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let pid = child.id();
        let info: serde_json::Value = wait_for("pid file", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("aica serve exited early: {status}");
            }
            let text = std::fs::read(dir.join("run/aica.pid")).ok()?;
            let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
            (v["pid"].as_u64() == Some(pid as u64)).then_some(v)
        });
        Server {
            child,
            backend: format!("http://{}", info["backend"].as_str().unwrap()),
            console: format!("http://{}", info["console"].as_str().unwrap()),
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Wait for exit with a deadline; returns the exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let child = &mut self.child;
        wait_for("server exit", deadline, || child.try_wait().unwrap()).code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Blocking GET for tests that drive the binary: (status, body).
pub fn get(url: &str) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?
            .get(url)
            .send()
            .await
            .ok()?;
        let s = r.status().as_u16();
        Some((s, r.text().await.ok()?))
    })
}

/// A fresh working directory with the demo database created (by `keys create`).
pub fn seeded() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let o = aica(
        d.path(),
        &["keys", "create", "--role", "admin", "--name", "seed"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    d
}

/// `PRAGMA integrity_check` of the database at `db`.
pub fn integrity(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Rows in `articles` of the database at `db`.
pub fn rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM articles", [], |r| r.get(0))
        .unwrap()
}
