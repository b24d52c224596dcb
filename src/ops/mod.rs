//! Operational logic shared by CLI, HTTP and tests: process lifecycle state,
//! doctor checks, and reading the structured logs.

pub mod doctor;
pub mod logread;
pub mod pidfile;
