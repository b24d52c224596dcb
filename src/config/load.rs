//! Merging the configuration layers and remembering where each value came from.

use super::{Paths, Settings};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use toml::{Table, Value};

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    /// A file, with the line and column (1-based) where the key is written.
    File {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    DotEnv(String),
    Env(String),
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Source::DotEnv(k) => write!(f, ".env.production ({k})"),
            Source::Env(k) => write!(f, "environment ({k})"),
            Source::Flag => write!(f, "command line"),
        }
    }
}

/// What to read. `env` is passed in (not read here) so tests stay hermetic.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Working directory: home of `aica.toml`, `.env.production` and relative paths.
    pub dir: PathBuf,
    /// An explicit config file (must exist); otherwise `DIR/aica.toml` if present.
    pub config_file: Option<PathBuf>,
    /// The process environment (only `AICA_*` keys are used).
    pub env: Vec<(String, String)>,
    /// `section.key=value` overrides from the command line.
    pub overrides: Vec<String>,
}

/// The effective settings and their provenance.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub paths: Paths,
    /// `section.key` → where its value came from.
    pub sources: BTreeMap<String, Source>,
    /// Keys of `.env.production` that are not aica settings (values kept secret).
    pub foreign_dotenv_keys: Vec<String>,
    /// Values that must never be shown: foreign `.env.production` values, URL passwords.
    pub secrets: Vec<String>,
}

/// A configuration that cannot be used; the message names the key, where it
/// was set (file, line and column; variable; flag) and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column} is not valid TOML: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("unknown setting {key:?} in {origin}; known settings: {known}")]
    Unknown {
        key: String,
        origin: String,
        known: String,
    },
    #[error("{key} from {origin}: {message}")]
    Type {
        key: String,
        origin: String,
        message: String,
    },
    #[error("invalid setting {key} = {value} (set by {origin}): allowed is {allowed}")]
    Invalid {
        key: String,
        value: String,
        origin: Source,
        allowed: String,
    },
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// Where each `section.key` of a TOML file is written (line, column).
fn key_positions(text: &str) -> BTreeMap<String, (usize, usize)> {
    let mut out = BTreeMap::new();
    let Ok(table) = toml::de::DeTable::parse(text) else {
        return out;
    };
    for (section, value) in table.get_ref() {
        if let toml::de::DeValue::Table(inner) = value.get_ref() {
            for (key, _) in inner {
                let pos = line_col(text, key.span().start);
                out.insert(format!("{}.{}", section.get_ref(), key.get_ref()), pos);
            }
        }
    }
    out
}

/// Words for a serde range error ("expected u16").
fn allowed_for(message: &str) -> String {
    for (ty, range) in [
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number from 0 to 18446744073709551615"),
        ("i32", "a whole number from -2147483648 to 2147483647"),
    ] {
        if message.contains(&format!("expected {ty}")) {
            return range.into();
        }
    }
    message.to_string()
}

/// Environment variables that configure aica without being settings.
const NON_SETTING_ENV: [&str; 3] = ["AICA_CONFIG", "AICA_DIR", "AICA_LOG_STDERR"];

/// Read every layer, merge, type-check and validate.
pub fn load(opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let defaults = Value::try_from(Settings::default()).expect("defaults serialise");
    let defaults = defaults.as_table().expect("settings is a table").clone();
    let mut flat: BTreeMap<String, (Value, Source)> = BTreeMap::new();
    for (section, table) in &defaults {
        for (key, value) in table.as_table().expect("sections are tables") {
            flat.insert(format!("{section}.{key}"), (value.clone(), Source::Default));
        }
    }
    let known = || flat_keys(&defaults);

    // aica.toml
    let file = match &opts.config_file {
        Some(p) => Some(opts.dir.join(p)),
        None => Some(opts.dir.join("aica.toml")).filter(|p| p.exists()),
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = line_col(&text, e.span().map(|s| s.start).unwrap_or(0));
            ConfigError::Parse {
                path: path.clone(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let positions = key_positions(&text);
        for (section, value) in table {
            let Some(inner) = value.as_table() else {
                return Err(ConfigError::Unknown {
                    key: section,
                    origin: path.display().to_string(),
                    known: known(),
                });
            };
            for (key, v) in inner {
                let full = format!("{section}.{key}");
                let (line, column) = positions.get(&full).copied().unwrap_or((1, 1));
                let source = Source::File {
                    path: path.clone(),
                    line,
                    column,
                };
                let origin = source.to_string();
                let Some(slot) = flat.get_mut(&full) else {
                    return Err(ConfigError::Unknown {
                        key: full,
                        origin,
                        known: known(),
                    });
                };
                if std::mem::discriminant(&slot.0) != std::mem::discriminant(v) {
                    return Err(ConfigError::Type {
                        message: format!("expected {}, got {}", type_name(&slot.0), type_name(v)),
                        key: full,
                        origin,
                    });
                }
                *slot = (v.clone(), source);
            }
        }
    }

    // .env.production
    let mut secrets = Vec::new();
    let mut foreign = Vec::new();
    let dotenv = opts.dir.join(".env.production");
    if dotenv.exists() {
        let parse = |e: dotenvy::Error| {
            let line = match &e {
                dotenvy::Error::LineParse(_, idx) => *idx + 1,
                _ => 1,
            };
            ConfigError::Parse {
                path: dotenv.clone(),
                line,
                column: 1,
                message: e.to_string(),
            }
        };
        let iter = dotenvy::from_path_iter(&dotenv).map_err(parse)?;
        for item in iter {
            let (k, v) = item.map_err(parse)?;
            let key = if k == "DATABASE_URL" {
                Some("database.url".to_string())
            } else {
                env_key(&k)
            };
            match key {
                Some(key) => set_str(&mut flat, &key, &v, Source::DotEnv(k), &known)?,
                None => {
                    if !NON_SETTING_ENV.contains(&k.as_str()) && !v.is_empty() {
                        secrets.push(v);
                    }
                    foreign.push(k);
                }
            }
        }
    }

    // The conventional DATABASE_URL / REDIS_URL (a platform sets them), below AICA_*.
    for (k, v) in &opts.env {
        let key = match k.as_str() {
            "DATABASE_URL" => "database.url",
            "REDIS_URL" => "redis.url",
            _ => continue,
        };
        set_str(&mut flat, key, v, Source::Env(k.clone()), &known)?;
    }

    // AICA_* environment
    for (k, v) in &opts.env {
        if NON_SETTING_ENV.contains(&k.as_str()) {
            continue;
        }
        if let Some(key) = env_key(k) {
            set_str(&mut flat, &key, v, Source::Env(k.clone()), &known)?;
        }
    }

    // --set section.key=value
    for o in &opts.overrides {
        let Some((k, v)) = o.split_once('=') else {
            return Err(ConfigError::Type {
                key: o.clone(),
                origin: "command line".into(),
                message: "expected section.key=value, for example server.port=8080".into(),
            });
        };
        set_str(&mut flat, k.trim(), v.trim(), Source::Flag, &known)?;
    }

    let mut merged = Table::new();
    let mut sources = BTreeMap::new();
    let values: BTreeMap<String, Value> = flat
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    for (full, (value, source)) in flat {
        let (section, key) = full.split_once('.').expect("flat keys have a dot");
        merged
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("section table")
            .insert(key.to_string(), value);
        sources.insert(full, source);
    }
    let settings: Settings = match Value::Table(merged).try_into() {
        Ok(s) => s,
        Err(e) => return Err(locate(&defaults, &values, &sources, e)),
    };
    if let Err(e) = settings.validate() {
        return Err(ConfigError::Invalid {
            origin: sources.get(&e.key).cloned().unwrap_or(Source::Default),
            key: e.key,
            value: e.value,
            allowed: e.allowed,
        });
    }
    for url in [&settings.database.url, &settings.redis.url] {
        if let Some(pw) = super::redact::url_password(url) {
            secrets.push(pw.to_string());
        }
    }
    if let Some(url) = settings.postgres_url() {
        secrets.extend(crate::store::postgres::url_passwords(url));
    }
    let paths = Paths::resolve(&settings, &opts.dir);
    if let Some((key, value, allowed)) = overlapping(&settings, &paths) {
        return Err(ConfigError::Invalid {
            origin: sources.get(key).cloned().unwrap_or(Source::Default),
            key: key.into(),
            value,
            allowed,
        });
    }
    Ok(Loaded {
        settings,
        paths,
        sources,
        foreign_dotenv_keys: foreign,
        secrets,
    })
}

/// The merged settings do not deserialise (a value out of its type's range):
/// find the key by trying each value alone on top of the defaults.
fn locate(
    defaults: &Table,
    values: &BTreeMap<String, Value>,
    sources: &BTreeMap<String, Source>,
    whole: toml::de::Error,
) -> ConfigError {
    for (full, value) in values {
        let Some((section, key)) = full.split_once('.') else {
            continue;
        };
        let mut t = defaults.clone();
        if let Some(sec) = t.get_mut(section).and_then(Value::as_table_mut) {
            sec.insert(key.to_string(), value.clone());
        }
        if let Err(e) = Value::Table(t).try_into::<Settings>() {
            return ConfigError::Invalid {
                key: full.clone(),
                value: value.to_string(),
                origin: sources.get(full).cloned().unwrap_or(Source::Default),
                allowed: allowed_for(e.message()),
            };
        }
    }
    ConfigError::Type {
        key: "settings".into(),
        origin: "merged configuration".into(),
        message: whole.message().to_string(),
    }
}

/// `p` with symlinks resolved where it exists, `.` and `..` resolved by text elsewhere.
fn normal(p: &std::path::Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    match (out.parent(), out.file_name()) {
        (Some(parent), Some(name)) if parent != out => normal(parent).join(name),
        _ => out,
    }
}

/// Directories that must not overlap: a restore replaces `data/uploads`, so
/// backups (and their mirror) may not live there, and aica's own directories
/// may not hold the data. Returns the offending key, its value and the rule.
fn overlapping(s: &Settings, p: &Paths) -> Option<(&'static str, String, String)> {
    let within = |a: &PathBuf, b: &PathBuf| a.starts_with(b) || b.starts_with(a);
    let data = normal(&p.data);
    let backups = normal(&p.backups);
    let db_dir = normal(p.db.parent().unwrap_or(&p.base));
    if within(&backups, &data) {
        return Some((
            "paths.backup_dir",
            s.paths.backup_dir.clone(),
            "a directory that neither contains nor lies inside paths.data_dir (a restore replaces data/uploads)".into(),
        ));
    }
    let mirror = super::Settings::mirror_path(s, &p.base).map(|m| normal(&m));
    if let Some(m) = &mirror
        && (within(m, &data) || m.starts_with(&backups))
    {
        return Some((
            "backup.mirror_dir",
            s.backup.mirror_dir.clone(),
            "a directory outside paths.data_dir and outside paths.backup_dir (a second copy on another volume)".into(),
        ));
    }
    for (key, dir) in [
        ("paths.run_dir", &p.run),
        ("paths.log_dir", &p.logs),
        ("paths.report_dir", &p.reports),
    ] {
        let d = normal(dir);
        if data.starts_with(&d) || db_dir.starts_with(&d) || d == backups {
            return Some((
                key,
                d.display().to_string(),
                "a directory of its own, not holding paths.data_dir, the database or the backups"
                    .into(),
            ));
        }
    }
    if db_dir.starts_with(&backups) {
        return Some((
            "database.url",
            p.db.display().to_string(),
            "a database outside paths.backup_dir".into(),
        ));
    }
    None
}

/// `AICA_SERVER_BODY_LIMIT_BYTES` → `server.body_limit_bytes`.
fn env_key(k: &str) -> Option<String> {
    let rest = k.strip_prefix("AICA_")?;
    let (section, key) = rest.split_once('_')?;
    Some(format!("{}.{}", section.to_lowercase(), key.to_lowercase()))
}

fn flat_keys(defaults: &Table) -> String {
    let mut v = Vec::new();
    for (s, t) in defaults {
        for k in t.as_table().into_iter().flat_map(|t| t.keys()) {
            v.push(format!("{s}.{k}"));
        }
    }
    v.join(", ")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "true or false",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

/// Set a value given as text, converting it to the type of the default.
fn set_str(
    flat: &mut BTreeMap<String, (Value, Source)>,
    key: &str,
    raw: &str,
    source: Source,
    known: &dyn Fn() -> String,
) -> Result<(), ConfigError> {
    let origin = source.to_string();
    let Some(slot) = flat.get_mut(key) else {
        return Err(ConfigError::Unknown {
            key: key.to_string(),
            origin,
            known: known(),
        });
    };
    let bad = |message: String| ConfigError::Type {
        key: key.to_string(),
        origin: origin.clone(),
        message,
    };
    let value = match &slot.0 {
        Value::Integer(_) => Value::Integer(
            raw.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad(format!("expected a whole number, got {raw:?}")))?,
        ),
        Value::Boolean(_) => Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad(format!("expected true or false, got {raw:?}"))),
        }),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    };
    *slot = (value, source);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn opts(dir: &Path) -> LoadOptions {
        LoadOptions {
            dir: dir.to_path_buf(),
            ..Default::default()
        }
    }

    #[test]
    fn layers_apply_in_order_with_sources() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("aica.toml"),
            "[server]\nport = 8100\nrequest_timeout_secs = 5\n[cache]\nttl_secs = 7\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join(".env.production"),
            "AICA_SERVER_PORT=8200\nAICA_CACHE_TTL_SECS=9\nSTRIPE_SECRET_KEY=sk_live_canary\n",
        )
        .unwrap();
        let mut o = opts(d.path());
        o.env = vec![
            ("AICA_SERVER_PORT".into(), "8300".into()),
            ("PATH".into(), "/bin".into()),
        ];
        o.overrides = vec!["server.port=8400".into()];
        let l = load(&o).unwrap();
        assert_eq!(l.settings.server.port, 8400);
        assert_eq!(l.sources["server.port"], Source::Flag);
        assert_eq!(l.settings.cache.ttl_secs, 9);
        assert_eq!(
            l.sources["cache.ttl_secs"],
            Source::DotEnv("AICA_CACHE_TTL_SECS".into())
        );
        assert_eq!(l.settings.server.request_timeout_secs, 5);
        assert!(matches!(
            l.sources["server.request_timeout_secs"],
            Source::File {
                line: 3,
                column: 1,
                ..
            }
        ));
        assert_eq!(l.sources["server.host"], Source::Default);
        assert_eq!(l.foreign_dotenv_keys, vec!["STRIPE_SECRET_KEY".to_string()]);
        assert_eq!(l.secrets, vec!["sk_live_canary".to_string()]);
    }

    #[test]
    fn errors_name_key_value_and_origin() {
        let d = tempfile::tempdir().unwrap();
        let mut o = opts(d.path());
        o.env = vec![("AICA_SERVER_PORT".into(), "eighty".into())];
        let e = load(&o).unwrap_err().to_string();
        assert!(
            e.contains("server.port") && e.contains("eighty") && e.contains("AICA_SERVER_PORT"),
            "{e}"
        );

        o.env = vec![("AICA_SERVER_PROT".into(), "1".into())];
        let e = load(&o).unwrap_err().to_string();
        assert!(
            e.contains("server.prot") && e.contains("server.port"),
            "{e}"
        );

        o.env = vec![("AICA_LOGGING_LEVEL".into(), "loud".into())];
        let e = load(&o).unwrap_err().to_string();
        assert!(
            e.contains("logging.level") && e.contains("AICA_LOGGING_LEVEL"),
            "{e}"
        );

        std::fs::write(d.path().join("aica.toml"), "[server]\nport = \"x\"\n").unwrap();
        let e = load(&opts(d.path())).unwrap_err().to_string();
        assert!(e.contains("server.port") && e.contains("integer"), "{e}");

        std::fs::write(d.path().join("aica.toml"), "[server\n").unwrap();
        let e = load(&opts(d.path())).unwrap_err().to_string();
        assert!(e.contains("aica.toml:1:") && e.contains("TOML"), "{e}");

        // A value out of its type's range names the key, where it was set and the range.
        let mut o = opts(d.path());
        std::fs::remove_file(d.path().join("aica.toml")).unwrap();
        o.overrides = vec!["server.port=70000".into()];
        let e = load(&o).unwrap_err().to_string();
        assert!(
            e.contains("server.port = 70000")
                && e.contains("command line")
                && e.contains("0 to 65535"),
            "{e}"
        );
        std::fs::write(
            d.path().join("aica.toml"),
            "# ports\n[server]\nhost = \"127.0.0.1\"\n  port = 70000\n",
        )
        .unwrap();
        let e = load(&opts(d.path())).unwrap_err().to_string();
        assert!(e.contains("aica.toml:4:3") && e.contains("65535"), "{e}");
        std::fs::write(
            d.path().join("aica.toml"),
            "[server]\nrequest_timeout_secs = 0\n",
        )
        .unwrap();
        let e = load(&opts(d.path())).unwrap_err().to_string();
        assert!(
            e.contains("aica.toml:2:1") && e.contains("1 to 3600"),
            "{e}"
        );
    }

    #[test]
    fn database_url_from_dotenv_and_password_is_secret() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(".env.production"),
            "DATABASE_URL=sqlite:///./x.db\n",
        )
        .unwrap();
        let l = load(&opts(d.path())).unwrap();
        assert_eq!(l.paths.db, d.path().join("./x.db"));
        assert!(l.secrets.is_empty());
    }
}
