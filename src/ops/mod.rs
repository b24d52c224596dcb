//! Operational logic shared by CLI, HTTP and tests: doctor checks and reading
//! the structured logs.

pub mod doctor;
pub mod logread;
