//! AICA-SyS: the content platform and every operations task it needs, in one binary.
//!
//! See ARCHITECTURE.md for the codemap and the layers. In short: `cli` parses and
//! dispatches; `http` and `console` are the two faces; `backup` and `ops` are
//! services; `config`, `store`, `shared`, `telemetry`, `run`, `check` and `util` are the
//! core, which never imports from the layers above it.

pub mod backup;
pub mod check;
pub mod cli;
pub mod config;
pub mod console;
pub mod http;
pub mod ops;
pub mod run;
pub mod shared;
pub mod store;
pub mod telemetry;
pub mod util;
pub mod web;
