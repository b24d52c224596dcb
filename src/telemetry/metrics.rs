//! The process-wide Prometheus registry and its exposition.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Install the global recorder once and describe every metric aica emits.
/// Returns `None` if another recorder was installed first (metrics then go there).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .expect("buckets are not empty");
            let handle = builder.install_recorder().ok()?;
            describe();
            let process = metrics_process::Collector::default();
            process.describe();
            let _ = PROCESS.set(process);
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route template."
    );
    describe_gauge!("http_requests_in_flight", "HTTP requests being served now.");
    describe_counter!(
        "console_http_requests_total",
        "Console HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        "console_http_request_duration_seconds",
        Unit::Seconds,
        "Console HTTP request latency by method and route template."
    );
    describe_gauge!(
        "console_http_requests_in_flight",
        "Console HTTP requests being served now."
    );
    describe_counter!(
        "aica_http_parse_errors_total",
        "Requests whose head could not be parsed (answered 400, 414 or 431 before routing)."
    );
    describe_counter!(
        "aica_connections_refused_total",
        "Connections closed at accept because their client address held server.max_connections_per_ip."
    );
    describe_counter!("aica_cache_hits_total", "Read cache hits.");
    describe_counter!("aica_cache_misses_total", "Read cache misses.");
    describe_histogram!(
        "aica_db_query_duration_seconds",
        Unit::Seconds,
        "Database operation latency by operation."
    );
    describe_gauge!(
        "aica_db_size_bytes",
        Unit::Bytes,
        "Size of the database: its files on disk (SQLite) or pg_database_size (PostgreSQL)."
    );
    describe_gauge!(
        "aica_build_info",
        "Build information; the value is always 1."
    );
    describe_gauge!(
        "aica_uptime_seconds",
        Unit::Seconds,
        "Seconds since the server started."
    );
    describe_gauge!(
        "aica_backup_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the newest backup that is not known to be corrupt."
    );
    describe_gauge!(
        "aica_backup_last_duration_seconds",
        Unit::Seconds,
        "How long the newest backup took to write."
    );
    describe_gauge!(
        "aica_backup_last_size_bytes",
        Unit::Bytes,
        "Size of the newest backup archive."
    );
    describe_counter!(
        "aica_backups_total",
        "Scheduled backups run by this server, by result."
    );
    describe_gauge!(
        "aica_db_pool_max_connections",
        "Largest number of pooled database connections (database.pool_size)."
    );
    describe_gauge!(
        "aica_db_pool_connections",
        "Pooled database connections by state (idle, busy)."
    );
    describe_gauge!(
        "aica_db_pool_waiting",
        "Requests waiting for a pooled database connection."
    );
    describe_counter!(
        "aica_cache_remote_invalidations_total",
        "Read cache flushes caused by another replica's write (PostgreSQL change feed)."
    );
    describe_counter!(
        "aica_change_notify_failures_total",
        "Writes that committed but whose change notification to other replicas could not be sent."
    );
    describe_histogram!(
        "aica_cache_invalidation_delay_seconds",
        Unit::Seconds,
        "From another replica's commit to this replica dropping its cached answers."
    );
    describe_gauge!(
        "aica_scheduler_leader",
        "1 when this replica runs the scheduled jobs, 0 when another one does."
    );
    metrics::gauge!("aica_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Histogram samples accumulate until upkeep drains them into buckets: run it
/// every few seconds so memory stays flat however long nobody scrapes.
pub fn spawn_upkeep() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            if let Some(h) = handle() {
                h.run_upkeep();
            }
        }
    })
}

/// Collect process figures and render the text exposition format.
pub fn render() -> String {
    let Some(h) = handle() else {
        return String::new();
    };
    if let Some(p) = PROCESS.get() {
        p.collect();
    }
    h.run_upkeep();
    h.render()
}
