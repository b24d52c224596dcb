//! Small helpers shared across modules: timestamps and durations.

use time::OffsetDateTime;

const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// A UTC time as `2026-01-31T09:00:00Z` (sortable as text).
/// Never panics: a time that cannot be shown in UTC gives an empty string.
pub fn fmt_time(t: OffsetDateTime) -> String {
    t.checked_to_offset(time::UtcOffset::UTC)
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

/// Now, formatted with [`fmt_time`]; formatted once per second per thread.
pub fn now() -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let t = OffsetDateTime::now_utc();
    let sec = t.unix_timestamp();
    LAST.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != sec {
            *c = (sec, fmt_time(t));
        }
        c.1.clone()
    })
}

/// Parse `24h`, `30m`, `7d`, `90s` (humantime syntax) into a duration.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); use forms like 90s, 30m, 24h, 7d"))
}

/// Replace `path` atomically: `fill` writes a temp file beside it, which is
/// fsynced and renamed over `path` (then the directory is fsynced). On failure
/// the temp file is removed and `path` is untouched.
pub fn replace_file(
    path: &std::path::Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        fill(&mut f)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// [`replace_file`] with these bytes.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    replace_file(path, |f| f.write_all(bytes))
}

/// Seconds as `3d 4h`, `2h 5m`, `42s`.
pub fn human_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Free bytes on the volume holding `dir`.
pub fn free_disk_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Resident set size of this process, from `/proc/self/statm` (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Cap glibc's malloc arenas (one per thread by default, up to 8 per core):
/// a server with many short-lived blocking threads otherwise keeps tens of MiB
/// of free memory spread over arenas (measured with 16 concurrent clients of
/// distinct listings: 88 MiB peak RSS with the default, 79 MiB with two arenas;
/// with the fastest compression level as well, 47 MiB). No-op elsewhere.
pub fn limit_malloc_arenas(n: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
