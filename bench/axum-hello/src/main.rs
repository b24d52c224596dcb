//! Bare axum "hello" server: the ceiling aica's /health is compared against.

use axum::{Router, routing::get};

#[tokio::main]
async fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "0".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    let app = Router::new().route(
        "/health",
        get(|| async { ([("content-type", "application/json")], r#"{"status":"pass"}"#) }),
    );
    axum::serve(listener, app).await.unwrap();
}
