//! Bad input to every endpoint: a 4xx with a JSON error that says what is wrong,
//! never a 5xx, never a panic; plus a property test over query parameters.

use crate::common::TestApp;
use proptest::prelude::*;
use reqwest::Method;

async fn expect_4xx(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> u16 {
    let mut req = app
        .client
        .request(method.clone(), format!("{}{path}", app.url));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some((ct, b)) = body {
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        req = req.body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r
        .json()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON: {e}"));
    assert!(
        (400..500).contains(&status),
        "{method} {path}: expected 4xx, got {status}: {v}"
    );
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.len() > 10, "{method} {path}: unclear message {v}");
    assert!(
        v["error"]["code"].is_string() && v["error"]["request_id"].is_string(),
        "{v}"
    );
    status
}

#[tokio::test]
async fn bad_queries_and_paths_get_clear_4xx() {
    let app = TestApp::start().await;
    for path in [
        "/api/optimized/articles?limit=-1",
        "/api/optimized/articles?limit=101",
        "/api/optimized/articles?limit=99999999999999999999999",
        "/api/optimized/articles?limit=ten",
        "/api/optimized/articles?skip=-5",
        "/api/optimized/articles?colour=red",
        "/api/optimized/articles?status=live",
        "/api/optimized/articles?from=yesterday",
        "/api/optimized/articles?from=2026-02-01&to=2026-01-01",
        "/api/optimized/articles?category=%FF%FE",
        "/api/optimized/articles?limit=1&limit=2",
        "/api/optimized/trends?limit=0",
        "/api/optimized/trends?status=sent",
        "/api/optimized/newsletters?status=%27%20OR%201%3D1--",
        "/api/optimized/dashboard?x=1",
        "/api/articles/..%2F..%2Fetc%2Fpasswd",
        "/api/articles/%2e%2e",
        "/api/articles/x'%20OR%201=1--",
        "/api/articles/%FF",
        "/api/articles/UPPER",
        "/api/articles/a?x=1",
        "/no/such/route",
    ] {
        expect_4xx(&app, Method::GET, path, None, None).await;
    }
    // SQL metacharacters in a filter are only text: a 200 with no rows, tables intact.
    let (s, v) = app
        .json("/api/optimized/articles?category=%27%3B%20DROP%20TABLE%20articles%3B--")
        .await;
    assert_eq!((s, v["total"].as_i64()), (200, Some(0)));
    assert!(
        app.json("/api/optimized/articles").await.1["total"]
            .as_i64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn bad_bodies_get_clear_4xx_and_write_nothing() {
    let app = TestApp::start_with(&["server.body_limit_bytes=4096"]).await;
    let key = app.key("ed", "editor");
    let k = Some(key.as_str());
    let json = "application/json";
    let good =
        r#"{"slug":"ok-slug","title":"T","body":"B","author":"A","category":"c","status":"draft"}"#;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (json, br#"{"slug":"#.to_vec(), 400),
        (json, br#"{"slug":5,"title":"T","body":"B","author":"A","category":"c","status":"draft"}"#.to_vec(), 422),
        (json, br#"{"slug":"ok","title":"T","body":"B","author":"A","category":"c","status":"draft","admin":true}"#.to_vec(), 422),
        (json, br#"{"slug":"ok","title":"T","body":"B","author":"A","category":"c","status":"live"}"#.to_vec(), 400),
        (json, br#"{"slug":"../../x","title":"T","body":"B","author":"A","category":"c","status":"draft"}"#.to_vec(), 400),
        (json, br#"{"slug":"ok","title":"","body":"B","author":"A","category":"c","status":"draft"}"#.to_vec(), 400),
        (json, vec![0xff, 0xfe, 0x7b, 0x7d], 400),
        (json, format!(r#"{{"slug":"big","title":"T","body":"{}","author":"A","category":"c","status":"draft"}}"#, "x".repeat(10_000)).into_bytes(), 413),
        ("text/plain", good.as_bytes().to_vec(), 415),
        ("", good.as_bytes().to_vec(), 415),
    ];
    for (ct, body, want) in cases {
        let got = expect_4xx(
            &app,
            Method::POST,
            "/api/articles",
            k,
            Some((ct, body.clone())),
        )
        .await;
        assert_eq!(
            got,
            want,
            "body {:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    for path in [
        "/api/trends/abc",
        "/api/trends/-1",
        "/api/trends/99999999999999999999999",
        "/api/newsletters/0",
    ] {
        expect_4xx(&app, Method::PUT, path, k, Some((json, b"{}".to_vec()))).await;
        expect_4xx(&app, Method::DELETE, path, k, None).await;
    }
    let bad_trend = br#"{"name":"X","category":"c","period":"2026-13-45","score":5}"#.to_vec();
    expect_4xx(
        &app,
        Method::POST,
        "/api/trends",
        k,
        Some((json, bad_trend)),
    )
    .await;
    let nan_score = br#"{"name":"X","category":"c","period":"2026-01-05","score":1e999}"#.to_vec();
    expect_4xx(
        &app,
        Method::POST,
        "/api/trends",
        k,
        Some((json, nan_score)),
    )
    .await;
    expect_4xx(&app, Method::DELETE, "/health", None, None).await;
    // Nothing was written by any of it.
    let (_, v) = app
        .json("/api/optimized/articles?status=draft&author=A")
        .await;
    assert_eq!(v["total"], 0);
}

fn query_part() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("skip".to_string()),
        Just("limit".to_string()),
        Just("category".to_string()),
        Just("tag".to_string()),
        Just("author".to_string()),
        Just("status".to_string()),
        Just("from".to_string()),
        Just("to".to_string()),
        "[a-z%0-9]{1,8}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[ -~]{0,30}".prop_map(|s| percent_encoding::utf8_percent_encode(
            &s,
            percent_encoding::NON_ALPHANUMERIC
        )
        .to_string()),
        proptest::collection::vec(any::<u8>(), 0..12)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect::<String>()),
        Just("2026-01-31".to_string()),
    ];
    (key, value).prop_map(|(k, v)| format!("{k}={v}"))
}

#[test]
fn any_query_string_is_answered_without_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(TestApp::start());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..Default::default()
    });
    let routes = ["articles", "trends", "newsletters", "dashboard"];
    let strategy = (
        0..routes.len(),
        proptest::collection::vec(query_part(), 0..5),
    );
    runner
        .run(&strategy, |(route, parts)| {
            let path = format!("/api/optimized/{}?{}", routes[route], parts.join("&"));
            let (status, body) = rt.block_on(async {
                let r = app.get(&path).await;
                let s = r.status().as_u16();
                (s, r.json::<serde_json::Value>().await.ok())
            });
            prop_assert!(status == 200 || status == 400, "{} -> {}", path, status);
            let body = body.unwrap_or_default();
            if status == 400 {
                prop_assert!(body["error"]["message"].is_string(), "{} -> {}", path, body);
            } else {
                prop_assert!(body.is_object(), "{} -> {}", path, body);
            }
            Ok(())
        })
        .unwrap();
}
