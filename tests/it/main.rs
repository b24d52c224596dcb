//! Integration tests: the real app on an injected listener, and the real binary.

mod api_read;
mod api_write;
mod backup;
mod backup_pg;
mod backup_safety;
mod bad_input;
mod common;
mod contract;
mod deploy;
mod hardening;
mod hardening_write;
mod health_metrics;
mod layers;
mod lifecycle;
mod memory;
mod pg;
mod replicas;
mod shared_state;
mod slow_clients;
