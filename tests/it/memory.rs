//! Finding 13: anonymous reads cannot grow memory without bound. The real binary
//! answers 5,000 distinct uncached listings (100 at a time, br, gzip and
//! identity) and stays under 64 MiB resident;
//! expired cache entries are freed on an idle server.

use crate::common::{Server, wait_for};
use std::time::Duration;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

#[test]
fn distinct_listings_stay_under_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--set", "backup.schedule=", "--set", "cache.ttl_secs=3"],
        &[],
    );
    let base = server.backend.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let peak = rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut peak: f64 = 0.0;
        for batch in 0..50 {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..100 {
                let (c, url) = (client.clone(), base.clone());
                let skip = batch * 100 + i;
                set.spawn(async move {
                    let r = c
                        .get(format!(
                            "{url}/api/optimized/articles?limit=100&skip={skip}"
                        ))
                        // Compressed answers too: brotli's state per stream was the
                        // largest cost under concurrent clients.
                        .header("accept-encoding", ["br", "gzip", "identity"][i % 3])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap().len()
                });
            }
            while let Some(n) = set.join_next().await {
                assert!(n.unwrap() > 0);
            }
            peak = peak.max(rss_mib(server.child.id()));
        }
        peak
    });
    let after = rss_mib(server.child.id());
    let threads = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .unwrap_or_default()
        .to_string();
    eprintln!("RSS after 5,000 distinct listings: {after:.1} MiB (peak {peak:.1} MiB), {threads}");
    assert!(peak < 64.0, "peak RSS {peak:.1} MiB");

    // Expired entries are evicted without further reads.
    let stats = format!("{}/api/optimized/performance/stats", server.backend);
    wait_for(
        "expired cache entries freed",
        Duration::from_secs(15),
        || {
            let (_, body) = crate::common::get(&stats)?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["cache"]["entries"].as_u64()? <= 1).then_some(())
        },
    );
    eprintln!(
        "RSS after the cache TTL: {:.1} MiB",
        rss_mib(server.child.id())
    );
}
