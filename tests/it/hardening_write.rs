//! Regression tests for the write-side findings: committed writes answered as
//! written, tags kept whole, authentication first, roles fail closed, every
//! refusal audited, anonymous refusals bounded.

use crate::common::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

fn article(slug: &str) -> Value {
    json!({"slug": slug, "title": "T", "body": "B", "author": "Writer",
           "category": "c", "tags": ["x"], "status": "published"})
}

/// Finding 15: a create racing a delete of the same slug is answered 201 with
/// what it wrote (it was a 400 "article vanished after insert").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_racing_delete_answers_what_was_written() {
    // 600 concurrent clients from one address: lift the per-address cap.
    let app =
        std::sync::Arc::new(TestApp::start_with(&["server.max_connections_per_ip=5000"]).await);
    let key = app.key("ed", "editor");
    let mut tasks = Vec::new();
    for i in 0..300 {
        let slug = format!("race-{i}");
        let (a, k) = (app.clone(), key.clone());
        let s = slug.clone();
        tasks.push(tokio::spawn(async move {
            let r = a
                .send(Method::POST, "/api/articles", Some(&k), Some(&article(&s)))
                .await;
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
        let (a, k) = (app.clone(), key.clone());
        tokio::spawn(async move {
            // Delete as soon as the row exists, racing the create's read-back.
            for _ in 0..200 {
                let r = a
                    .send(
                        Method::DELETE,
                        &format!("/api/articles/{slug}"),
                        Some(&k),
                        None,
                    )
                    .await;
                if r.status() == 200 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        });
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 201, "create {i}: {body}");
        assert_eq!(body["slug"], format!("race-{i}"));
        assert_eq!(body["tags"], json!(["x"]));
    }
}

/// Finding 16: a tag holding a comma comes back whole, everywhere.
#[tokio::test]
async fn tags_with_commas_are_kept_whole() {
    let app = TestApp::start().await;
    let key = app.key("ed", "editor");
    let mut a = article("comma-tags");
    a["tags"] = json!(["c++,rust", "go"]);
    a["author"] = json!("Comma Tester");
    let r = app
        .send(Method::POST, "/api/articles", Some(&key), Some(&a))
        .await;
    assert_eq!(r.status(), 201);
    let want = json!(["c++,rust", "go"]);
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], want);
    assert_eq!(app.json("/api/articles/comma-tags").await.1["tags"], want);
    let (_, list) = app
        .json("/api/optimized/articles?author=Comma%20Tester")
        .await;
    assert_eq!(list["items"][0]["tags"], want);
    let (_, by_tag) = app.json("/api/optimized/articles?tag=c%2B%2B%2Crust").await;
    assert_eq!(by_tag["total"], 1);
}

/// Finding 17: the bearer scheme is case-insensitive (RFC 9110 §11.1).
#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let app = TestApp::start().await;
    let key = app.key("ed", "editor");
    for (i, scheme) in ["bearer", "BEARER", "Bearer"].iter().enumerate() {
        let r = app
            .client
            .post(format!("{}/api/articles", app.url))
            .header("authorization", format!("{scheme} {key}"))
            .json(&article(&format!("scheme-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{scheme}");
    }
}

/// Finding 17: authentication comes before parameter checks.
#[tokio::test]
async fn audit_log_authenticates_before_parsing() {
    let app = TestApp::start().await;
    assert_eq!(app.json("/api/audit?limit=abc").await.0, 401);
    let admin = app.key("boss", "admin");
    let r = app
        .send(Method::GET, "/api/audit?limit=abc", Some(&admin), None)
        .await;
    assert_eq!(r.status(), 400);
}

/// Finding 17: a key with a role this version does not know is denied and audited.
#[tokio::test]
async fn unknown_role_fails_closed() {
    let app = TestApp::start().await;
    let key = app.key("odd", "editor");
    let db = app.dir.path().join("data/aica_sys.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA ignore_check_constraints = ON; UPDATE api_keys SET role = 'superuser' WHERE name = 'odd';",
    )
    .unwrap();
    let r = app
        .send(
            Method::POST,
            "/api/articles",
            Some(&key),
            Some(&article("odd")),
        )
        .await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("superuser"),
        "{v}"
    );
    assert_eq!(app.json("/api/articles/odd").await.0, 404);
    let audit = app.store.recent_audit(5).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "odd" && e.outcome == "denied")
    );
}

/// Finding 17: refusals of authenticated requests are audited with their status.
#[tokio::test]
async fn refusals_with_a_valid_key_are_audited() {
    let app = TestApp::start_with(&["server.body_limit_bytes=4096"]).await;
    let key = app.key("ed", "editor");
    let k = Some(key.as_str());
    let post = |body: Vec<u8>, ct: &'static str| {
        app.client
            .post(format!("{}/api/articles", app.url))
            .bearer_auth(&key)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert_eq!(
        post(b"{".to_vec(), "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    let big = serde_json::to_vec(&json!({"body": "x".repeat(10_000)})).unwrap();
    assert_eq!(post(big, "application/json").await.unwrap().status(), 413);
    let good = serde_json::to_vec(&article("audited")).unwrap();
    assert_eq!(
        post(good.clone(), "text/plain").await.unwrap().status(),
        415
    );
    assert_eq!(
        post(good.clone(), "application/json")
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(post(good, "application/json").await.unwrap().status(), 409);
    let r = app
        .send(Method::DELETE, "/api/articles/missing", k, None)
        .await;
    assert_eq!(r.status(), 404);

    let audit = app.store.recent_audit(20).unwrap();
    for want in [
        "refused 400",
        "refused 413",
        "refused 415",
        "ok",
        "refused 409",
        "refused 404",
    ] {
        assert!(
            audit.iter().any(|e| e.actor == "ed" && e.outcome == want),
            "no audit row {want}: {audit:?}"
        );
    }
}

/// Finding 13: anonymous refusals are counted per client, action and minute,
/// not one row each.
#[tokio::test]
async fn anonymous_refusals_are_aggregated() {
    let app = TestApp::start().await;
    let before = app.store.recent_audit(100_000).unwrap().len();
    for i in 0..1000 {
        let r = app
            .send(
                Method::POST,
                "/api/articles",
                None,
                Some(&article(&format!("a{i}"))),
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    let audit = app.store.recent_audit(100_000).unwrap();
    let rows: Vec<_> = audit
        .iter()
        .filter(|e| e.actor == "anonymous" && e.action == "article.create")
        .collect();
    // At most one row per minute boundary crossed during the loop.
    assert!(audit.len() - before <= 3, "{} rows", audit.len() - before);
    assert_eq!(rows.iter().map(|e| e.count).sum::<i64>(), 1000);
    // The count is visible over HTTP too.
    let admin = app.key("boss", "admin");
    let r = app
        .send(Method::GET, "/api/audit?limit=5", Some(&admin), None)
        .await;
    let rows: Vec<Value> = r.json().await.unwrap();
    assert!(
        rows.iter().any(|e| e["count"].as_i64().unwrap_or(0) > 1),
        "{rows:?}"
    );
}

/// Second attack round: long values are not echoed whole, aggregated
/// anonymous rows do not name one target for many, and dates that would take
/// over the dashboard are refused.
#[tokio::test]
async fn echoes_targets_and_dates_stay_honest() {
    let app = TestApp::start().await;
    let key = app.key("ed", "editor");
    let r = app
        .send(
            Method::POST,
            "/api/articles",
            Some(&key),
            Some(&article(&"a".repeat(65_000))),
        )
        .await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        text.len() < 2_000 && text.contains("'slug'"),
        "{} bytes: {}",
        text.len(),
        &text[..200.min(text.len())]
    );
    for i in 0..5 {
        let r = app
            .send(
                Method::DELETE,
                &format!("/api/articles/slug-{i}"),
                None,
                None,
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    let audit = app.store.recent_audit(100).unwrap();
    let row = audit
        .iter()
        .find(|e| e.actor == "anonymous" && e.action == "article.delete")
        .unwrap();
    assert_eq!(row.count, 5);
    assert_eq!(row.target, "(several targets)");
    for (path, body) in [
        (
            "/api/trends",
            json!({"name": "p", "category": "c", "period": "9999-12-31", "score": 1}),
        ),
        (
            "/api/newsletters",
            json!({"slug": "n1", "title": "t", "body": "b", "status": "sent", "issued_at": "9999-01-01"}),
        ),
        (
            "/api/newsletters",
            json!({"slug": "n2", "title": "t", "body": "b", "status": "sent"}),
        ),
    ] {
        let r = app.send(Method::POST, path, Some(&key), Some(&body)).await;
        assert_eq!(r.status(), 400, "{body}");
    }
}
