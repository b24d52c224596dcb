//! Web plumbing shared by both faces (the backend API in `http` and the console
//! in `console`): the JSON error shape, security headers, the observing layer
//! with its panic guard, and the HTTP/1 server loop with its timeouts and
//! per-client connection cap. Neither face imports the other.

pub mod error;
pub mod observe;
mod parse_errors;
pub mod security;
pub mod serve;

pub use observe::{MetricNames, Observer, ObserverConfig, RouteMetrics};
pub use security::SecurityHeaders;
pub use serve::{Limits, serve};

/// Connection limits from the `[server]` settings (both listeners use them).
pub fn limits(s: &crate::config::ServerSettings) -> Limits {
    Limits {
        header_read_timeout: std::time::Duration::from_secs(s.header_read_timeout_secs),
        max_connections_per_ip: s.max_connections_per_ip as usize,
    }
}
