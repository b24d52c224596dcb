//! AICA-SyS: the content platform and every operations task it needs, in one binary.
//!
//! See ARCHITECTURE.md for the codemap. In short: `cli` parses and dispatches,
//! `config` builds the typed settings, `store` owns the database, `http` and
//! `console` serve it, `telemetry` observes it, `ops` holds operational logic
//! (pid files, doctor checks, log reading) callable from CLI, HTTP and tests.

pub mod backup;
pub mod cli;
pub mod config;
pub mod console;
pub mod http;
pub mod ops;
pub mod store;
pub mod telemetry;
pub mod util;
pub mod web;
