//! Finding 12: slow clients cannot hold connections or requests forever, one
//! client address cannot take every connection, and a stalled body is a 408.

use crate::common::TestApp;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_string()
}

/// Send one header byte every 200 ms until the server closes; returns when it did.
async fn trickle(addr: String) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut buf = [0u8; 256];
    for i in 0.. {
        let byte = head.get(i).copied().unwrap_or(b'a');
        if s.write_all(&[byte]).await.is_err() {
            break;
        }
        // Wait for the next tick or the server closing the connection.
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => break, // an answer (e.g. 408) also ends it
            Err(_) => {}
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never cut off");
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_senders_are_cut_off_and_health_stays_fast() {
    let app = TestApp::start_with(&[
        "server.header_read_timeout_secs=1",
        "server.max_connections_per_ip=1000",
    ])
    .await;
    let slow: Vec<_> = (0..200)
        .map(|_| tokio::spawn(trickle(addr(&app))))
        .collect();
    // While they trickle, /health answers quickly.
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(app.get("/health").await.status(), 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    for h in slow {
        let held = h.await.unwrap();
        assert!(
            held < Duration::from_secs(4),
            "a slow client held its connection {held:?}"
        );
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let app = TestApp::start_with(&["server.max_connections_per_ip=4"]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    // The fifth is closed at once, without an answer.
    let mut fifth = TcpStream::connect(addr(&app)).await.unwrap();
    let _ = fifth
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf))
        .await
        .expect("the over-limit connection was not closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // Closing one frees a slot.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        if let Ok(r) = c.get(format!("{}/health", app.url)).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "slot not freed");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_stalled_body_is_a_408() {
    let app = TestApp::start_with(&["server.body_read_timeout_secs=1"]).await;
    let key = app.key("ed", "editor");
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!(
        "POST /api/articles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"slug\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout_secs"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let audit = app.store.recent_audit(5).unwrap();
    assert!(
        audit.iter().any(|e| e.outcome == "refused 408"),
        "{audit:?}"
    );
}

/// Send `head` (and `body`, and then keep the connection open) and read the first answer.
async fn first_answer(app: &TestApp, head: &str, trickle: bool) -> (String, Duration) {
    let mut s = TcpStream::connect(addr(app)).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
        if trickle {
            // One byte every 300 ms: never idle long enough for a per-chunk timeout.
            let _ = s.write_all(b" ").await;
        }
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            _ => {}
        }
    }
    (String::from_utf8_lossy(&out).to_string(), start.elapsed())
}

#[tokio::test]
async fn bodies_are_not_read_before_the_request_is_allowed() {
    let app = TestApp::start_with(&["server.body_read_timeout_secs=2"]).await;
    let key = app.key("ed", "editor");
    // Anonymous: 401 at once, without inviting or reading the body.
    let (t, took) = first_answer(
        &app,
        "POST /api/articles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
        false,
    )
    .await;
    assert!(t.starts_with("HTTP/1.1 401"), "{t}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Declared too large: 413 at once.
    let (t, took) = first_answer(
        &app,
        &format!("POST /api/articles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 2000000000\r\n\r\n{{"),
        false,
    )
    .await;
    assert!(t.starts_with("HTTP/1.1 413"), "{t}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // A body trickling in forever: 408 after the total body time, not a 5xx after the request timeout.
    let (t, took) = first_answer(
        &app,
        &format!("POST /api/articles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"),
        true,
    )
    .await;
    assert!(t.starts_with("HTTP/1.1 408"), "{t}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    // Ambiguous or compressed bodies and doubled credentials are refused.
    for (extra, want) in [
        ("Content-Type: text/plain\r\n", "415"),
        ("Content-Encoding: gzip\r\n", "415"),
        (&format!("Authorization: Bearer {key}\r\n")[..], "401"),
    ] {
        let (t, _) = first_answer(
            &app,
            &format!("POST /api/articles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n{extra}Content-Length: 2\r\n\r\n{{}}"),
            false,
        )
        .await;
        assert!(t.starts_with(&format!("HTTP/1.1 {want}")), "{extra}: {t}");
    }
}
