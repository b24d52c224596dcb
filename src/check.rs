//! One `Check` for every place aica reports what it observed: `aica doctor`,
//! the health endpoints and the recorded verification and drill results of a
//! backup. A check never says `pass` about something it did not look at.

use serde::{Deserialize, Serialize};

/// How a check came out; ordered so the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Pass,
    Warn,
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// A named observation, its level, and for anything but `pass` the fix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub level: Level,
    /// What was observed: a value with its unit, or what went wrong.
    pub observed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// When it was observed (UTC).
    pub at: String,
}

impl Check {
    pub fn new(
        name: impl Into<String>,
        level: Level,
        observed: impl Into<String>,
        fix: Option<String>,
    ) -> Check {
        Check {
            name: name.into(),
            level,
            observed: observed.into(),
            fix,
            at: crate::util::now(),
        }
    }
    pub fn pass(name: impl Into<String>, observed: impl Into<String>) -> Check {
        Check::new(name, Level::Pass, observed, None)
    }
    pub fn warn(
        name: impl Into<String>,
        observed: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(name, Level::Warn, observed, Some(fix.into()))
    }
    pub fn fail(
        name: impl Into<String>,
        observed: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(name, Level::Fail, observed, Some(fix.into()))
    }
    pub fn ok(&self) -> bool {
        self.level == Level::Pass
    }
}

/// The worst level among `checks` (`pass` when there are none).
pub fn worst<'a>(checks: impl IntoIterator<Item = &'a Check>) -> Level {
    checks
        .into_iter()
        .map(|c| c.level)
        .max()
        .unwrap_or(Level::Pass)
}
