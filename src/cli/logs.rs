//! `aica logs`: read, filter and follow the JSON logs across rotated files.

use super::{Global, usage};
use crate::ops::logread::{self, Filter};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct LogsArgs {
    /// Minimum level: trace, debug, info, warn, error.
    #[arg(long)]
    pub level: Option<String>,
    /// Only lines newer than this, e.g. 30m, 24h, 7d.
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines containing this text.
    #[arg(long)]
    pub grep: Option<String>,
    /// Keep printing new lines as they are written.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print the raw JSON lines.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &Global, a: &LogsArgs) -> anyhow::Result<u8> {
    let loaded = g.load(&[])?;
    let dir = loaded.paths.logs.clone();
    let min_level = match &a.level {
        None => 0,
        Some(l) => logread::level_rank(l).ok_or_else(|| {
            usage(
                format!("unknown level {l:?}"),
                "aica logs --level error (trace, debug, info, warn, error)",
            )
        })?,
    };
    let since = match &a.since {
        None => None,
        Some(s) => {
            let d =
                crate::util::parse_duration(s).map_err(|e| usage(e, "aica logs --since 24h"))?;
            let t = time::OffsetDateTime::now_utc()
                - time::Duration::try_from(d).unwrap_or(time::Duration::ZERO);
            Some(crate::util::fmt_time(t))
        }
    };
    let filter = Filter {
        min_level,
        since,
        grep: a.grep.clone(),
    };
    let files = if dir.is_dir() {
        logread::files(&dir)?
    } else {
        Vec::new()
    };
    if files.is_empty() && !a.follow {
        eprintln!(
            "no log files in {} yet; start aica with 'make up'",
            dir.display()
        );
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    let emit = |out: &mut std::io::StdoutLock, line: &str| -> std::io::Result<()> {
        if filter.keep(line) {
            let text = if a.json {
                line.to_string()
            } else {
                logread::pretty(line)
            };
            writeln!(out, "{text}")?;
        }
        Ok(())
    };
    let mut last: Option<(PathBuf, u64)> = None;
    for f in &files {
        let file = std::fs::File::open(f)?;
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        let mut pos = 0;
        while reader.read_line(&mut line)? > 0 {
            if line.ends_with('\n') {
                pos += line.len() as u64;
                if emit(&mut out, line.trim_end()).is_err() {
                    return Ok(0); // reader closed the pipe (e.g. | head)
                }
                line.clear();
            } else {
                break;
            }
        }
        last = Some((f.clone(), pos));
    }
    if !a.follow {
        return Ok(0);
    }
    drop(out);
    follow(&dir, last, emit_owned(filter, a.json)).await
}

fn emit_owned(filter: Filter, json: bool) -> impl Fn(&str) {
    move |line: &str| {
        if filter.keep(line) {
            let text = if json {
                line.to_string()
            } else {
                logread::pretty(line)
            };
            println!("{text}");
        }
    }
}

/// Print complete new lines as they appear, switching to a newer file on rotation.
async fn follow(
    dir: &std::path::Path,
    mut at: Option<(PathBuf, u64)>,
    emit: impl Fn(&str),
) -> anyhow::Result<u8> {
    let mut pending = String::new();
    loop {
        let newest = if dir.is_dir() {
            logread::files(dir)?.pop()
        } else {
            None
        };
        if let Some(newest) = newest {
            if at.as_ref().map(|(p, _)| p != &newest).unwrap_or(true) {
                if let Some((p, off)) = &at {
                    drain(p, *off, &mut pending, &emit)?;
                }
                pending.clear();
                at = Some((newest, 0));
            }
            if let Some((p, off)) = &mut at {
                *off = drain(p, *off, &mut pending, &emit)?;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn drain(
    path: &std::path::Path,
    offset: u64,
    pending: &mut String,
    emit: &impl Fn(&str),
) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let offset = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = String::new();
    let n = f.read_to_string(&mut buf)? as u64;
    pending.push_str(&buf);
    while let Some(i) = pending.find('\n') {
        let line: String = pending.drain(..=i).collect();
        emit(line.trim_end());
    }
    Ok(offset + n)
}
