//! Process-level primitives of the core layer: exclusive locks that name their
//! holder, the server's pid file, and child `aica` processes started with an
//! environment built for them. Nothing here depends on any other aica module
//! except `util`.

pub mod child;
pub mod lock;
pub mod pidfile;
