//! Reading aica's JSON log lines across rotated files, with level, time and text filters.

use crate::telemetry::logging::{LOG_PREFIX, LOG_SUFFIX};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Log files in `dir`, oldest first (rotated names sort by date).
pub fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{LOG_PREFIX}.")) && n.ends_with(&format!(".{LOG_SUFFIX}"))
            })
        })
        .collect();
    out.sort();
    Ok(out)
}

pub fn level_rank(level: &str) -> Option<u8> {
    match level.to_ascii_lowercase().as_str() {
        "trace" => Some(0),
        "debug" => Some(1),
        "info" => Some(2),
        "warn" | "warning" => Some(3),
        "error" => Some(4),
        _ => None,
    }
}

/// Which lines to keep.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub min_level: u8,
    /// RFC 3339 lower bound on `timestamp`.
    pub since: Option<String>,
    pub grep: Option<String>,
}

impl Filter {
    /// Keep `line`? Non-JSON lines are kept only without level/since filters.
    pub fn keep(&self, line: &str) -> bool {
        if let Some(g) = &self.grep
            && !line.contains(g.as_str())
        {
            return false;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return self.min_level == 0 && self.since.is_none();
        };
        let level = v["level"].as_str().and_then(level_rank).unwrap_or(2);
        if level < self.min_level {
            return false;
        }
        if let Some(since) = &self.since
            && v["timestamp"].as_str().is_none_or(|t| t < since.as_str())
        {
            return false;
        }
        true
    }
}

/// A JSON line as `TIME LEVEL message key=value ...` for people.
pub fn pretty(line: &str) -> String {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let ts = map.get("timestamp").and_then(Value::as_str).unwrap_or("");
    let ts = ts.get(..19).unwrap_or(ts).replace('T', " ");
    let level = map.get("level").and_then(Value::as_str).unwrap_or("");
    let msg = map.get("message").and_then(Value::as_str).unwrap_or("");
    let mut out = format!("{ts} {level:>5} {msg}");
    for (k, v) in &map {
        if matches!(k.as_str(), "timestamp" | "level" | "message" | "target") {
            continue;
        }
        match v {
            Value::String(s) => out.push_str(&format!(" {k}={s}")),
            other => out.push_str(&format!(" {k}={other}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_level_time_and_text() {
        let f = Filter {
            min_level: 4,
            since: Some("2026-01-02T00:00:00Z".into()),
            grep: None,
        };
        assert!(f.keep(r#"{"timestamp":"2026-01-02T10:00:00.1Z","level":"ERROR","message":"x"}"#));
        assert!(!f.keep(r#"{"timestamp":"2026-01-02T10:00:00.1Z","level":"INFO","message":"x"}"#));
        assert!(!f.keep(r#"{"timestamp":"2026-01-01T10:00:00.1Z","level":"ERROR","message":"x"}"#));
        let g = Filter {
            grep: Some("abc".into()),
            ..Default::default()
        };
        assert!(g.keep("xx abc"));
        assert!(!g.keep("xx"));
    }

    #[test]
    fn pretty_prints_fields() {
        let p = pretty(
            r#"{"timestamp":"2026-01-02T10:00:00.123Z","level":"INFO","message":"request","status":200,"route":"/health"}"#,
        );
        assert_eq!(
            p,
            "2026-01-02 10:00:00  INFO request route=/health status=200"
        );
    }
}
