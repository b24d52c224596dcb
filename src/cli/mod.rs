//! Command-line interface: the argument tree, dispatch, and exit codes.
//!
//! Exit codes: 0 all good; 1 a check failed or findings; 2 usage or configuration
//! error; 3 (`status` only) not running.

mod backup;
mod backup_pg;
mod config_cmd;
mod doctor;
mod keys;
mod lifecycle;
mod logs;
mod serve;

use crate::config::{self, LoadOptions, Loaded};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "aica",
    version,
    about = "AICA-SyS: the content platform and its operations in one binary"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Global {
    /// Working directory: where aica.toml, .env.production, data/, logs/ live.
    #[arg(long, global = true, env = "AICA_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Configuration file (default: DIR/aica.toml when it exists).
    #[arg(long, global = true, env = "AICA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. --set server.port=8080 (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run backend (:8000) and console (:3000) in the foreground (what a container runs).
    Serve(serve::ServeArgs),
    /// Start aica in the background and wait until it is ready.
    Up(serve::ServeArgs),
    /// Stop the background aica gracefully.
    Down(lifecycle::DownArgs),
    /// Stop, then start again.
    Restart(serve::ServeArgs),
    /// Is aica running? pid, uptime, version, ports, database, health.
    Status(lifecycle::StatusArgs),
    /// Manage API keys for the write API.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Read the structured logs across rotated files.
    Logs(logs::LogsArgs),
    /// Show or generate configuration.
    #[command(subcommand)]
    Config(config_cmd::ConfigCmd),
    /// Backups: create, list, verify, restore, prune, drill.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Diagnose why aica will not start: config, ports, directories, database, disk, pid file.
    Doctor(doctor::DoctorArgs),
}

/// A mistake in how aica was called or configured (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{message}\nTry: {hint}")]
pub struct UsageError {
    pub message: String,
    pub hint: String,
}

pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    UsageError {
        message: message.into(),
        hint: hint.into(),
    }
    .into()
}

/// A command that ran but whose outcome is a failure; `.0` is the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
pub struct Failed(pub u8, pub String);

impl Global {
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => std::env::current_dir()?,
        };
        if !dir.is_dir() {
            return Err(usage(
                format!("working directory {} does not exist", dir.display()),
                format!(
                    "mkdir -p {}  (or pass --dir to an existing directory)",
                    dir.display()
                ),
            ));
        }
        Ok(std::path::absolute(&dir)?)
    }

    /// Load the layered configuration, with `extra` overrides from command flags.
    pub fn load(&self, extra: &[String]) -> anyhow::Result<Loaded> {
        self.load_from(self.config.clone(), extra)
    }

    /// The same layers, with `config` as the configuration file.
    pub fn load_from(&self, config: Option<PathBuf>, extra: &[String]) -> anyhow::Result<Loaded> {
        let dir = self.dir()?;
        let mut overrides = self.set.clone();
        overrides.extend_from_slice(extra);
        let opts = LoadOptions {
            dir: dir.clone(),
            config_file: config,
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("AICA_") || k == "DATABASE_URL" || k == "REDIS_URL")
                .collect(),
            overrides,
        };
        config::load(&opts).map_err(|e| {
            usage(
                format!("configuration error: {e}"),
                "fix the value named above; 'aica config default' prints every setting with what it allows, 'aica doctor' checks the rest",
            )
        })
    }
}

/// Parse, run, and turn the result into an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_error(e),
    };
    // One-shot commands show warnings and errors on stderr (a restore moving a
    // damaged database aside, debris being removed); `serve` sets up its own logs.
    let one_shot = !matches!(cli.command, Command::Serve(_));
    let _log = one_shot.then(crate::telemetry::logging::init_cli);
    if one_shot {
        // `aica backup list | head` ends quietly, as Unix tools do, instead of
        // panicking on a closed pipe. (Sockets are unaffected: they use MSG_NOSIGNAL.)
        // SAFETY: called before the runtime starts any thread.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    if !one_shot {
        crate::util::limit_malloc_arenas(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if one_shot {
        // Output that cannot be written (stdout on a full disk, /dev/full) makes
        // `println!` panic: say what failed in one line, exit 1, no backtrace.
        std::panic::set_hook(Box::new(|info| {
            use std::io::Write;
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("internal error");
            let _ = writeln!(std::io::stderr(), "error: {msg}");
        }));
    }
    let result =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(run(cli))))
        {
            Ok(r) => r,
            Err(_) => return ExitCode::from(1),
        };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(f) = e.downcast_ref::<Failed>() {
                if !f.1.is_empty() {
                    eprintln!("{}", f.1);
                }
                return ExitCode::from(f.0);
            }
            let code = if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Help and version go to stdout (exit 0); a usage mistake ends with a
/// "Try:" line like every other usage error (exit 2).
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                2
            } else {
                0
            },
        );
    }
    let text = e.render().to_string();
    let command = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|u| {
            u.split_whitespace()
                .take_while(|w| !w.starts_with('[') && !w.starts_with('<'))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "aica".into());
    let body: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("For more information"))
        .collect();
    eprintln!("{}", body.join("\n").trim_end());
    eprintln!("Try: {command} --help");
    ExitCode::from(2)
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = cli.global;
    match cli.command {
        Command::Serve(a) => serve::run(&g, &a).await,
        Command::Up(a) => lifecycle::up(&g, &a).await,
        Command::Down(a) => lifecycle::down(&g, &a).await,
        Command::Restart(a) => lifecycle::restart(&g, &a).await,
        Command::Status(a) => lifecycle::status(&g, &a).await,
        Command::Keys(c) => tokio::task::spawn_blocking(move || keys::run(&g, c)).await?,
        Command::Logs(a) => logs::run(&g, &a).await,
        Command::Config(c) => config_cmd::run(&g, c),
        Command::Doctor(a) => doctor::run(&g, &a).await,
        Command::Backup(c) => backup::run(&g, c).await,
    }
}
