//! The write API: keys and roles, create/update/delete, audit trail, cache invalidation.

use crate::common::TestApp;
use reqwest::Method;
use serde_json::json;

fn article(slug: &str) -> serde_json::Value {
    json!({"slug": slug, "title": "Hello TypeScript", "body": "Body text.", "author": "Test Author",
           "category": "language", "tags": ["TypeScript", "testing"], "status": "published"})
}

#[tokio::test]
async fn writes_need_a_key_of_the_right_role_and_are_audited() {
    let app = TestApp::start().await;
    let url = "/api/articles";

    let r = app
        .send(Method::POST, url, None, Some(&article("no-key")))
        .await;
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("aica keys create")
    );

    let r = app
        .send(
            Method::POST,
            url,
            Some("aica_wrong"),
            Some(&article("bad-key")),
        )
        .await;
    assert_eq!(r.status(), 401);

    let editor = app.key("ed", "editor");
    let r = app
        .send(
            Method::POST,
            url,
            Some(&editor),
            Some(&article("first-post")),
        )
        .await;
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["tags"], json!(["testing", "typescript"]));
    assert!(created["published_at"].is_string());

    // Editors may not reset stats (admin only).
    let reset = "/api/optimized/performance/reset";
    let r = app.send(Method::POST, reset, Some(&editor), None).await;
    assert_eq!(r.status(), 403);
    let admin = app.key("boss", "admin");
    let r = app.send(Method::POST, reset, Some(&admin), None).await;
    assert_eq!(r.status(), 200);

    let audit = app.store.recent_audit(10).unwrap();
    let find = |actor: &str, action: &str, outcome: &str| {
        audit.iter().any(|e| {
            e.actor == actor
                && e.action == action
                && e.outcome == outcome
                && e.client == "127.0.0.1"
        })
    };
    assert!(find("anonymous", "article.create", "unauthenticated"));
    assert!(find("ed", "article.create", "ok"));
    assert!(find("ed", "performance.reset", "denied"));
    assert!(find("boss", "performance.reset", "ok"));
    assert!(audit.iter().any(|e| e.target == "article first-post"));

    // Admins can read the audit log over HTTP; editors cannot.
    let r = app
        .send(Method::GET, "/api/audit?limit=3", Some(&admin), None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Vec<serde_json::Value>>().await.unwrap().len(), 3);
    let r = app
        .send(Method::GET, "/api/audit", Some(&editor), None)
        .await;
    assert_eq!(r.status(), 403);

    // A revoked key stops working.
    assert!(app.store.revoke_key("ed").unwrap());
    let r = app
        .send(
            Method::POST,
            url,
            Some(&editor),
            Some(&article("after-revoke")),
        )
        .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn update_delete_and_cache_invalidation() {
    let app = TestApp::start().await;
    let key = app.key("ed", "editor");
    let list = "/api/optimized/articles?author=Cache%20Tester";
    let (_, before) = app.json(list).await;
    assert_eq!(before["total"], 0);
    let (_, again) = app.json(list).await; // now cached
    assert_eq!(again["total"], 0);

    let mut a = article("cache-test");
    a["author"] = json!("Cache Tester");
    let r = app
        .send(Method::POST, "/api/articles", Some(&key), Some(&a))
        .await;
    assert_eq!(r.status(), 201);
    let (_, after) = app.json(list).await;
    assert_eq!(after["total"], 1, "a write must invalidate cached listings");

    // Conflict on duplicate slug.
    let r = app
        .send(Method::POST, "/api/articles", Some(&key), Some(&a))
        .await;
    assert_eq!(r.status(), 409);

    a["title"] = json!("Renamed");
    a["slug"] = json!("cache-test-2");
    let r = app
        .send(
            Method::PUT,
            "/api/articles/cache-test",
            Some(&key),
            Some(&a),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (s, got) = app.json("/api/articles/cache-test-2").await;
    assert_eq!((s, got["title"].as_str()), (200, Some("Renamed")));
    assert_eq!(app.json("/api/articles/cache-test").await.0, 404);

    let r = app
        .send(
            Method::DELETE,
            "/api/articles/cache-test-2",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.json("/api/articles/cache-test-2").await.0, 404);
    let r = app
        .send(
            Method::DELETE,
            "/api/articles/cache-test-2",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.status(), 404);

    // Trends and newsletters.
    let t = json!({"name": "Oxc", "category": "tooling", "period": "2026-11-23", "score": 42.5});
    let r = app
        .send(Method::POST, "/api/trends", Some(&key), Some(&t))
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let (_, found) = app.json("/api/optimized/trends?name=Oxc").await;
    assert_eq!(found["total"], 1);
    let r = app
        .send(
            Method::DELETE,
            &format!("/api/trends/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);

    let n = json!({"slug": "special-issue", "title": "Special", "body": "Hi", "status": "draft"});
    let r = app
        .send(Method::POST, "/api/newsletters", Some(&key), Some(&n))
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let mut n2 = n.clone();
    n2["status"] = json!("sent");
    n2["issued_at"] = json!("2026-11-20");
    let r = app
        .send(
            Method::PUT,
            &format!("/api/newsletters/{id}"),
            Some(&key),
            Some(&n2),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["issued_at"],
        "2026-11-20T00:00:00Z"
    );
}
