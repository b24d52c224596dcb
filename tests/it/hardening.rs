//! Regression tests for the HTTP hardening findings: dates out of range, panics,
//! refused encodings, invented methods, protocol checks, errors on both ports.

use crate::common::TestApp;
use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{Read, Write};

fn article(slug: &str) -> Value {
    json!({"slug": slug, "title": "T", "body": "B", "author": "Hardening",
           "category": "c", "tags": ["x"], "status": "published"})
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let rid = r
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let v: Value = r.json().await.expect("error body is JSON");
    assert_eq!(v["error"]["request_id"].as_str(), rid.as_deref(), "{v}");
    (s, v)
}

/// Finding 9: a date whose UTC time leaves year 0001..9999 is a 400 naming the
/// parameter or field (it was a panic and an anonymous 500).
#[tokio::test]
async fn out_of_range_dates_are_400_naming_the_parameter() {
    let app = TestApp::start().await;
    for route in ["articles", "trends", "newsletters"] {
        for key in ["from", "to"] {
            let path = format!("/api/optimized/{route}?{key}=9999-12-31T23:59:59-01:00");
            let (s, v) = error_of(app.get(&path).await).await;
            let msg = v["error"]["message"].as_str().unwrap();
            assert_eq!(s, 400, "{path}: {v}");
            assert!(
                msg.contains(&format!("\"{key}\"")) && msg.contains("9999"),
                "{msg}"
            );
        }
    }
    let key = app.key("ed", "editor");
    let late = "9999-12-31T23:59:59-01:00";
    let mut a = article("late");
    a["published_at"] = json!(late);
    let t = json!({"name": "X", "category": "c", "period": late, "score": 1});
    let n = json!({"slug": "late", "title": "T", "body": "B", "status": "sent", "issued_at": late});
    for (path, body, field) in [
        ("/api/articles", a, "published_at"),
        ("/api/trends", t, "period"),
        ("/api/newsletters", n, "issued_at"),
    ] {
        let r = app.send(Method::POST, path, Some(&key), Some(&body)).await;
        let (s, v) = error_of(r).await;
        assert_eq!(s, 400, "{path}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }
}

/// Log lines captured in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

fn assert_observed(h: &reqwest::header::HeaderMap) {
    assert!(h.contains_key("x-request-id"), "{h:?}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.contains_key("content-security-policy"), "{h:?}");
}

/// Finding 10: a panic's 500 carries the request id and security headers, has
/// our JSON shape, and is counted in /metrics and the stats (backend).
#[tokio::test]
async fn a_panic_is_observed_like_any_answer() {
    let boom = axum::Router::new().route(
        "/boom",
        get(|| async {
            if true {
                panic!("test panic");
            }
            ""
        }),
    );
    // This test runs on one thread, so a thread-local subscriber sees the server's log lines.
    let logs = LogBuffer::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .json()
            .with_writer(logs.clone())
            .finish(),
    );
    let app = TestApp::start_routes(&[], boom).await;
    let r = app.get("/boom").await;
    assert_eq!(r.status(), 500);
    assert_observed(r.headers());
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let (_, v) = error_of(r).await;
    assert_eq!(v["error"]["code"], "internal");
    assert!(
        !v.to_string().contains("test panic"),
        "panic text leaked: {v}"
    );
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("handler panicked: test panic"))
        .unwrap_or_else(|| panic!("no log line for the panic in:\n{text}"));
    assert!(
        line.contains(&rid),
        "log line without the request id: {line}"
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("http_requests_total")
            && l.contains(r#"route="/boom""#)
            && l.contains(r#"status="500""#)),
        "panic not counted in /metrics"
    );
    let (_, stats) = app.json("/api/optimized/performance/stats").await;
    assert_eq!(stats["requests"]["server_errors"], 1, "{stats}");
    assert_eq!(stats["requests"]["routes"]["/boom"]["count"], 1, "{stats}");
}

/// Finding 10 and 17 on the console port: panics, 405 and 404 get our JSON
/// shape, request id and security headers.
#[tokio::test]
async fn console_errors_are_json_with_request_id() {
    use aica::console::{ConsoleState, app_with};
    let boom = axum::Router::new().route(
        "/boom",
        get(|| async {
            if true {
                panic!("console test panic");
            }
            ""
        }),
    );
    let router = app_with(ConsoleState::new("http://127.0.0.1:9".into()), boom);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(aica::web::serve(
        listener,
        router,
        aica::web::Limits::default(),
        async {
            let _ = rx.await;
        },
    ));
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    for (method, path, want) in [
        (Method::GET, "/boom", 500),
        (Method::POST, "/", 405),
        (Method::GET, "/nope", 404),
    ] {
        let r = c
            .request(method.clone(), format!("{url}{path}"))
            .send()
            .await
            .unwrap();
        assert_observed(r.headers());
        let (s, v) = error_of(r).await;
        assert_eq!(s, want, "{method} {path}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10, "{v}");
    }
}

/// Finding 11: a refused encoding never turns a committed write into a 406;
/// a read gets our JSON 406 instead of the listing.
#[tokio::test]
async fn refused_encodings_do_not_hide_committed_writes() {
    let app = TestApp::start().await;
    let key = app.key("ed", "editor");
    let refuse = "identity;q=0, *;q=0";
    let r = app
        .client
        .post(format!("{}/api/articles", app.url))
        .bearer_auth(&key)
        .header("accept-encoding", refuse)
        .json(&article("negotiated"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["slug"], "negotiated");
    let r = app
        .client
        .delete(format!("{}/api/articles/negotiated", app.url))
        .bearer_auth(&key)
        .header("accept-encoding", refuse)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.json("/api/articles/negotiated").await.0, 404);

    let r = app
        .client
        .get(format!("{}/api/optimized/articles", app.url))
        .header("accept-encoding", refuse)
        .send()
        .await
        .unwrap();
    assert_observed(r.headers());
    let (s, v) = error_of(r).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (406, Some("not_acceptable"))
    );
    assert!(v.get("items").is_none());
}

/// Finding 14: invented methods share one `method` label value.
#[tokio::test]
async fn invented_methods_share_one_label() {
    let app = TestApp::start().await;
    for i in 0..20 {
        let m = Method::from_bytes(format!("XDDK{i}EYONGTJO").as_bytes()).unwrap();
        let r = app
            .client
            .request(m, format!("{}/health", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("XDDK"), "invented method became a label");
    assert!(metrics.contains(r#"method="other""#));
}

/// Raw HTTP/1 exchange: send `req`, read until the server closes.
fn raw(url: &str, req: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Finding 17: HTTP/1.1 needs exactly one Host header (RFC 9112 §3.2).
#[tokio::test]
async fn host_header_is_required_once() {
    let app = TestApp::start().await;
    let url = app.url.clone();
    let (none, two, ok10) = tokio::task::spawn_blocking(move || {
        (
            raw(&url, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"),
            raw(
                &url,
                "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            ),
            raw(&url, "GET /health HTTP/1.0\r\n\r\n"),
        )
    })
    .await
    .unwrap();
    for resp in [&none, &two] {
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(
            resp.contains("Host header") && resp.contains("request_id"),
            "{resp}"
        );
    }
    assert!(ok10.starts_with("HTTP/1.0 200"), "{ok10}");
}

/// Finding 17: a long query is a JSON 414, whether our layer (over 8 KiB) or
/// hyper (over 64 KiB, before routing) refuses it.
#[tokio::test]
async fn long_query_is_a_json_414() {
    let app = TestApp::start().await;
    let r = app
        .get(&format!(
            "/api/optimized/articles?category={}",
            "x".repeat(20_000)
        ))
        .await;
    assert_observed(r.headers());
    let (s, v) = error_of(r).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (414, Some("uri_too_long"))
    );

    let url = app.url.clone();
    let resp = tokio::task::spawn_blocking(move || {
        let q = "x".repeat(100 * 1024);
        raw(
            &url,
            &format!("GET /api/optimized/articles?category={q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    })
    .await
    .unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 414"),
        "{}",
        &resp[..resp.len().min(300)]
    );
    assert!(
        resp.contains("\"uri_too_long\"") && resp.contains("x-request-id"),
        "{resp}"
    );
    assert!(resp.contains("x-content-type-options: nosniff"), "{resp}");
}

/// Finding 17: CORS preflight answers are observed too.
#[tokio::test]
async fn preflight_has_request_id_and_security_headers() {
    let app = TestApp::start().await;
    let r = app
        .client
        .request(Method::OPTIONS, format!("{}/api/articles", app.url))
        .header("origin", "http://127.0.0.1:3000")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_observed(r.headers());
}

/// Finding 17: /health/detailed notices a database file replaced under the server.
#[tokio::test]
async fn replaced_database_file_fails_detailed_health() {
    let app = TestApp::start().await;
    let (s, v) = app.json("/health/detailed").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["checks"]["database:file"][0]["status"], "pass");
    let db = app.dir.path().join("data/aica_sys.db");
    let copy = app.dir.path().join("data/copy.db");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::rename(&copy, &db).unwrap();
    let (s, v) = app.json("/health/detailed").await;
    assert_eq!(s, 503, "{v}");
    let c = &v["checks"]["database:file"][0];
    assert_eq!(c["status"], "fail");
    assert!(c["output"].as_str().unwrap().contains("restart"), "{c}");
}

/// Finding 17: /health reads the database (its schema), so a damaged file fails it.
#[tokio::test]
async fn health_reads_the_database_file() {
    let app = TestApp::start().await;
    assert_eq!(app.json("/health").await.0, 200);
    let db = app.dir.path().join("data/aica_sys.db");
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(0).unwrap();
    let (s, v) = app.json("/health").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(
        v["checks"]["database:responseTime"][0]["status"], "fail",
        "{v}"
    );
}

/// A compressed representation carries a weak entity tag (not the strong tag
/// of the identity bytes), and revalidating with it still gets a 304.
#[tokio::test]
async fn compressed_answers_have_weak_etags() {
    let app = TestApp::start().await;
    let url = format!("{}/api/optimized/articles?limit=50", app.url);
    let plain = app.client.get(&url).send().await.unwrap();
    let strong = plain.headers()["etag"].to_str().unwrap().to_string();
    assert!(!strong.starts_with("W/"), "{strong}");
    for enc in ["gzip", "br"] {
        let r = app
            .client
            .get(&url)
            .header("accept-encoding", enc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], enc);
        let tag = r.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(tag, format!("W/{strong}"));
        let again = app
            .client
            .get(&url)
            .header("accept-encoding", enc)
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }
}
