//! Observability: JSON file logs, the Prometheus registry, and request statistics.

pub mod logging;
pub mod metrics;
pub mod stats;
