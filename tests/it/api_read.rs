//! The read API: listings, filters, ordering, totals, ETags, compression, cache.

use crate::common::TestApp;
use reqwest::header;

#[tokio::test]
async fn articles_page_filters_and_orders_stably() {
    let app = TestApp::start().await;
    let (s, all) = app.json("/api/optimized/articles?limit=100").await;
    assert_eq!(s, 200);
    let total = all["total"].as_i64().unwrap();
    assert!(
        total > 4000,
        "demo data should have thousands of published articles, got {total}"
    );
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    // Newest first, ties broken by id descending.
    for w in items.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let key = |x: &serde_json::Value| {
            (
                x["published_at"].as_str().unwrap().to_string(),
                x["id"].as_i64().unwrap(),
            )
        };
        assert!(key(a) > key(b), "order broken: {a} then {b}");
        assert_eq!(a["status"], "published");
    }
    // Paging: skip=50 starts at item 50 of the same order.
    let (_, page2) = app.json("/api/optimized/articles?limit=10&skip=50").await;
    assert_eq!(page2["items"][0]["id"], items[50]["id"]);
    assert_eq!(page2["total"], total);

    let (_, by_cat) = app
        .json("/api/optimized/articles?category=runtime&limit=100")
        .await;
    assert!(by_cat["total"].as_i64().unwrap() < total);
    assert!(
        by_cat["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["category"] == "runtime")
    );

    let (_, by_tag) = app.json("/api/optimized/articles?tag=Deno&limit=50").await;
    assert!(by_tag["total"].as_i64().unwrap() > 0);
    assert!(
        by_tag["items"].as_array().unwrap().iter().all(|a| a["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "deno"))
    );

    let (_, by_author) = app
        .json("/api/optimized/articles?author=Emi%20Kato&status=draft")
        .await;
    assert!(
        by_author["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["author"] == "Emi Kato" && a["status"] == "draft")
    );

    let from = items[20]["published_at"].as_str().unwrap();
    let to = items[10]["published_at"].as_str().unwrap();
    let (_, ranged) = app
        .json(&format!(
            "/api/optimized/articles?from={from}&to={to}&limit=100"
        ))
        .await;
    let n = ranged["total"].as_i64().unwrap();
    assert!(
        (11..=100).contains(&n),
        "range should hold items 10..=20, got {n}"
    );
}

#[tokio::test]
async fn trends_newsletters_dashboard_and_single_article() {
    let app = TestApp::start().await;
    let (s, t) = app
        .json("/api/optimized/trends?category=runtime&limit=5")
        .await;
    assert_eq!(s, 200);
    assert!(t["total"].as_i64().unwrap() > 100);
    assert!(
        t["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["category"] == "runtime")
    );

    let (s, n) = app
        .json("/api/optimized/newsletters?status=sent&limit=3")
        .await;
    assert_eq!(s, 200);
    assert_eq!(n["items"].as_array().unwrap().len(), 3);
    assert!(
        n["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "sent")
    );

    let (s, d) = app.json("/api/optimized/dashboard").await;
    assert_eq!(s, 200);
    assert!(d["articles"]["total"].as_i64().unwrap() >= 6000);
    assert_eq!(d["latest_articles"].as_array().unwrap().len(), 5);
    assert_eq!(d["top_trends"].as_array().unwrap().len(), 5);

    let slug = d["latest_articles"][0]["slug"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, a) = app.json(&format!("/api/articles/{slug}")).await;
    assert_eq!(s, 200);
    assert!(a["body"].as_str().unwrap().len() > 100);
    let (s, e) = app.json("/api/articles/no-such-article").await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["code"], "not_found");
}

#[tokio::test]
async fn etag_gives_304_and_cache_counts_hits() {
    let app = TestApp::start().await;
    let r = app.get("/api/optimized/articles?limit=5").await;
    let etag = r.headers()[header::ETAG].clone();
    let r2 = app
        .client
        .get(format!("{}/api/optimized/articles?limit=5", app.url))
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r2.status(), 304);
    assert_eq!(r2.headers()[header::ETAG], etag);
    let (_, stats) = app.json("/api/optimized/performance/stats").await;
    assert_eq!(stats["cache"]["misses"], 1);
    assert_eq!(stats["cache"]["hits"], 1);
    assert!(
        stats["requests"]["routes"]["/api/optimized/articles"]["count"]
            .as_u64()
            .unwrap()
            >= 2
    );
}

#[tokio::test]
async fn compresses_when_client_accepts() {
    let app = TestApp::start().await;
    for enc in ["gzip", "br"] {
        let r = app
            .client
            .get(format!("{}/api/optimized/articles?limit=50", app.url))
            .header(header::ACCEPT_ENCODING, enc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_ENCODING], enc);
    }
    let r = app.get("/api/optimized/articles?limit=50").await;
    assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn security_headers_and_request_id_on_every_answer() {
    let app = TestApp::start().await;
    for path in [
        "/health",
        "/api/optimized/articles",
        "/nope",
        "/api/optimized/articles?limit=0",
    ] {
        let r = app.get(path).await;
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert!(h.contains_key("content-security-policy"), "{path}");
        assert!(h.contains_key("referrer-policy"), "{path}");
        assert!(
            !h.contains_key("strict-transport-security"),
            "no HSTS without TLS: {path}"
        );
        assert_eq!(h["x-request-id"].len(), 16, "{path}");
    }
    // An incoming, well-formed request id is kept.
    let r = app
        .client
        .get(format!("{}/health", app.url))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");

    let tls = TestApp::start_with(&["server.public_url=https://aica.example.com"]).await;
    let r = tls.get("/health").await;
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
}

#[tokio::test]
async fn cors_allows_console_origin_only() {
    let app = TestApp::start().await;
    let ask = |origin: &'static str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/optimized/articles", app.url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let ok = ask("http://127.0.0.1:3000").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://127.0.0.1:3000"
    );
    let no = ask("https://evil.example").await.unwrap();
    assert!(no.headers().get("access-control-allow-origin").is_none());
}
