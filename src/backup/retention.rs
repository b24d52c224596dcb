//! `backup prune`: which backups retention keeps and why. A pure function of
//! the list, the settings and the time, so it is tested without files.

use super::{BackupInfo, BackupLock, Kind, Result, State, io};
use crate::config::{BackupSettings, Loaded};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    pub name: String,
    pub keep: bool,
    pub reason: String,
}

fn day(unix: i64) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN)
}

/// Decide for every backup (newest first in `all`).
pub fn plan(all: &[BackupInfo], s: &BackupSettings, now_unix: i64) -> Vec<Decision> {
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let regular: Vec<&BackupInfo> = all
        .iter()
        .filter(|b| {
            b.kind != Kind::Safety && b.state != State::NoSidecar && !b.from_the_future(now_unix)
        })
        .collect();
    if let Some(b) = regular.iter().find(|b| b.verified()) {
        reasons
            .entry(b.name.clone())
            .or_default()
            .push("newest verified".into());
    }
    let mut bucket = |label: &str, keep: u32, key: &dyn Fn(&BackupInfo) -> String| {
        let mut seen = BTreeSet::new();
        for b in regular.iter().filter(|b| b.state != State::Corrupt) {
            if seen.len() as u32 >= keep {
                break;
            }
            if seen.insert(key(b)) {
                reasons
                    .entry(b.name.clone())
                    .or_default()
                    .push(format!("{label} {}", key(b)));
            }
        }
    };
    bucket("daily", s.keep_daily, &|b| day(b.created_unix).to_string());
    bucket("weekly", s.keep_weekly, &|b| {
        let d = day(b.created_unix);
        let (y, w, _) = d.to_iso_week_date();
        format!("{y}-W{w:02}")
    });
    bucket("monthly", s.keep_monthly, &|b| {
        let d = day(b.created_unix);
        format!("{}-{:02}", d.year(), d.month() as u8)
    });
    let safety_limit = now_unix - s.safety_keep_days as i64 * 86_400;
    all.iter()
        .map(|b| {
            let (keep, reason) = if b.from_the_future(now_unix) {
                (
                    true,
                    format!("dated in the future ({}): check the clock; kept, but it fills no retention slot", b.created_at),
                )
            } else if b.state == State::NoSidecar {
                (
                    true,
                    "no sidecar and no readable manifest: not a usable backup; move it out of the backup directory".to_string(),
                )
            } else if b.kind == Kind::Safety {
                if b.created_unix >= safety_limit {
                    (
                        true,
                        format!("safety snapshot younger than {} days", s.safety_keep_days),
                    )
                } else {
                    (false, "old safety snapshot".into())
                }
            } else if let Some(r) = reasons.get(&b.name) {
                (true, r.join(", "))
            } else {
                (false, "outside the retention windows".into())
            };
            Decision {
                name: b.name.clone(),
                keep,
                reason,
            }
        })
        .collect()
}

/// Apply the plan under `lock` (or only compute it, for a dry run). An
/// archive is removed before its sidecar, so an interruption leaves at most an
/// orphan sidecar, which the next lock holder removes.
pub fn prune(lock: &BackupLock, l: &Loaded, dry_run: bool) -> Result<Vec<Decision>> {
    let all = super::list(lock.dir())?;
    let plan = plan(
        &all,
        &l.settings.backup,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    );
    if !dry_run {
        let mirror = super::dest::mirror(&l.settings, &l.paths.base);
        for d in plan.iter().filter(|d| !d.keep) {
            let p = lock.dir().join(&d.name);
            std::fs::remove_file(&p).map_err(io(format!("remove {}", p.display())))?;
            let _ = std::fs::remove_file(super::sidecar_path(&p));
            if let Some(m) = &mirror
                && let Err(e) = m.delete(&d.name)
            {
                tracing::warn!(backup = d.name, error = %e, "cannot remove the mirror copy");
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str, unix: i64, kind: &str, verified: Option<bool>) -> BackupInfo {
        let kind = match kind {
            "safety" => Kind::Safety,
            _ => Kind::Manual,
        };
        BackupInfo {
            name: name.into(),
            path: name.into(),
            created_at: String::new(),
            created_unix: unix,
            kind,
            note: None,
            size: 1,
            db_size: 1,
            state: match verified {
                Some(false) => State::Corrupt,
                Some(true) => State::Verified,
                None => State::Unverified,
            },
            verification: verified.map(|ok| {
                crate::check::Check::new(
                    "verification",
                    if ok {
                        crate::check::Level::Pass
                    } else {
                        crate::check::Level::Fail
                    },
                    "",
                    None,
                )
            }),
            drill: None,
            order: (String::new(), 1),
        }
    }

    #[test]
    fn keeps_daily_weekly_monthly_and_newest_verified() {
        let now = 1_800_000_000;
        let day = 86_400;
        // Two a day for 60 days, newest first; only an old one is verified.
        let mut all: Vec<BackupInfo> = (0..120)
            .map(|i| b(&format!("b{i:03}"), now - i * day / 2, "manual", None))
            .collect();
        all[100] = b("b100", now - 50 * day, "manual", Some(true));
        all.push(b("safety-new", now - day, "safety", None));
        all.push(b("safety-old", now - 30 * day, "safety", None));
        all.sort_by_key(|b| std::cmp::Reverse(b.created_unix));
        let s = BackupSettings {
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 3,
            safety_keep_days: 7,
            ..Default::default()
        };
        let plan = plan(&all, &s, now);
        let kept: Vec<&Decision> = plan.iter().filter(|d| d.keep).collect();
        let get = |n: &str| plan.iter().find(|d| d.name == n).unwrap();
        assert!(get("b100").keep && get("b100").reason.contains("newest verified"));
        assert!(get("b000").keep && get("b000").reason.contains("daily"));
        // now is 08:00: b001 (20:00 the day before) is that day's newest, b002 (08:00) is not.
        assert!(
            get("b001").keep && !get("b002").keep,
            "only the newest backup of a day is kept"
        );
        assert!(get("safety-new").keep);
        assert!(!get("safety-old").keep);
        // 7 daily (some also weekly/monthly) + a few weekly/monthly + newest verified + 1 safety.
        assert!(kept.len() >= 9 && kept.len() <= 16, "{}", kept.len());
    }

    #[test]
    fn a_backup_from_the_future_fills_no_slot_and_is_kept() {
        let now = 1_800_000_000;
        let all = vec![
            b("future", now + 86_400 * 365, "manual", Some(true)),
            b("today", now - 60, "manual", Some(true)),
            b("yesterday", now - 86_400, "manual", None),
        ];
        let s = BackupSettings {
            keep_daily: 1,
            keep_weekly: 1,
            keep_monthly: 1,
            ..Default::default()
        };
        let plan = plan(&all, &s, now);
        let get = |n: &str| plan.iter().find(|d| d.name == n).unwrap();
        assert!(get("future").keep && get("future").reason.contains("future"));
        assert!(get("today").keep, "{:?}", get("today"));
        assert!(get("today").reason.contains("newest verified"));
    }

    #[test]
    fn corrupt_backups_do_not_fill_retention_slots() {
        let all = vec![
            b("new-corrupt", 100_000, "manual", Some(false)),
            b("older", 10, "manual", None),
        ];
        let s = BackupSettings {
            keep_daily: 1,
            keep_weekly: 0,
            keep_monthly: 0,
            ..Default::default()
        };
        let plan = plan(&all, &s, 100_000);
        assert!(!plan[0].keep);
        assert!(plan[1].keep);
    }
}
