//! `aica doctor`: one pass/warn/fail line per check, with the fix; exit 1 on any
//! fail, 2 when the database server cannot be reached.

use super::Global;
use crate::ops::doctor::{self, Check, Level};

#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &Global, a: &DoctorArgs) -> anyhow::Result<u8> {
    let checks: Vec<Check> = match g.load(&[]) {
        Ok(l) => tokio::task::spawn_blocking(move || doctor::run(&l)).await?,
        Err(e) => vec![doctor::config_failed(
            e.to_string().lines().next().unwrap_or_default(),
        )],
    };
    let worst = checks.iter().map(|c| c.level).max().unwrap_or(Level::Pass);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"status": worst, "checks": checks}))?
        );
    } else {
        for c in &checks {
            let tag = match c.level {
                Level::Pass => "PASS",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("{tag}  {:<16} {}", c.name, c.observed);
            if let Some(fix) = &c.fix {
                println!("      {:<16} fix: {fix}", "");
            }
        }
    }
    // 2: the database server cannot be reached (the environment); 1: any other failure.
    let unreachable = checks
        .iter()
        .any(|c| c.name == doctor::UNREACHABLE && c.level == Level::Fail);
    Ok(if unreachable {
        2
    } else if worst == Level::Fail {
        1
    } else {
        0
    })
}
