//! Integration tests: the real app on an injected listener, and the real binary.

mod api_read;
mod api_write;
mod backup;
mod backup_safety;
mod bad_input;
mod common;
mod hardening;
mod hardening_write;
mod health_metrics;
mod layers;
mod lifecycle;
mod memory;
mod slow_clients;
