//! Tracing setup: JSON lines into daily-rotated files under `logs/`, readable
//! lines on stderr when it is a terminal, and redaction of known secrets.

use crate::config::Redactor;
use std::io::{IsTerminal, Write};
use std::path::Path;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// File name prefix and suffix of the rotated logs: `aica.YYYY-MM-DD.log`.
pub const LOG_PREFIX: &str = "aica";
pub const LOG_SUFFIX: &str = "log";
/// Symlink to the current day's file.
pub const LOG_LATEST: &str = "aica.log";

/// Keeps the background log writer alive; dropping it flushes.
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// A writer that redacts known secrets before bytes reach the file.
#[derive(Clone)]
struct Redacting<W> {
    inner: W,
    redactor: std::sync::Arc<Redactor>,
}

struct RedactingWriter<W: Write> {
    inner: W,
    redactor: std::sync::Arc<Redactor>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = self.redactor.redact(&text);
        self.inner.write_all(clean.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Redacting<W> {
    type Writer = RedactingWriter<W::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.inner.make_writer(),
            redactor: self.redactor.clone(),
        }
    }
}

fn filter(level: &str) -> EnvFilter {
    // Our own events at `level`; noisy dependencies only from warn.
    EnvFilter::new(format!("warn,aica={level}"))
}

/// Logging for `aica serve`: JSON file (rotated daily, `retention` files kept) plus stderr on a terminal.
pub fn init_server(
    dir: &Path,
    level: &str,
    retention: usize,
    redactor: Redactor,
) -> anyhow::Result<LogGuard> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
    let appender = Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix(LOG_PREFIX)
        .filename_suffix(LOG_SUFFIX)
        .max_log_files(retention.max(1))
        .latest_symlink(LOG_LATEST)
        .build(dir)
        .map_err(|e| anyhow::anyhow!("cannot open log file in {}: {e}", dir.display()))?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(8 * 1024)
        // Batch lines into few write(2) calls: the worker flushes whenever its queue drains.
        .finish(std::io::BufWriter::with_capacity(64 * 1024, appender));
    let redactor = std::sync::Arc::new(redactor);
    let file = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(Redacting {
            inner: writer,
            redactor: redactor.clone(),
        })
        .with_filter(filter(level));
    let stderr = (std::io::stderr().is_terminal() || std::env::var_os("AICA_LOG_STDERR").is_some())
        .then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(Redacting {
                    inner: std::io::stderr,
                    redactor,
                })
                .with_target(false)
                .with_filter(filter(level))
        });
    tracing_subscriber::registry()
        .with(file)
        .with(stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("logging already initialised: {e}"))?;
    Ok(LogGuard(Some(guard)))
}

/// Logging for one-shot commands: warnings and errors on stderr only.
pub fn init_cli() -> LogGuard {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .with_env_filter(filter("warn"))
        .try_init();
    LogGuard(None)
}
