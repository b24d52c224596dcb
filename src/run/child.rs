//! Child `aica` processes get an environment built for them: the parent's
//! `AICA_*` settings (which may name the production database) never leak into
//! a child that must run on other data, such as the drill's restored copy.

use std::ffi::OsString;

/// Variables a child keeps: what a process needs to run, nothing that configures aica.
const KEEP: [&str; 8] = [
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "USER",
    "RUST_BACKTRACE",
];

/// The environment for a child that must not inherit aica's configuration.
pub fn clean_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| k.to_str().is_some_and(|k| KEEP.contains(&k)))
        .collect()
}

/// A `tokio` command for `exe` with [`clean_env`], that dies with its parent
/// (so a killed drill never leaves a server running on scratch data).
pub fn isolated(exe: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.env_clear().envs(clean_env()).kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    cmd
}

#[cfg(test)]
mod tests {
    #[test]
    fn aica_settings_do_not_reach_the_child() {
        // SAFETY: this test is the only one that touches this variable.
        unsafe { std::env::set_var("AICA_DATABASE_URL", "sqlite:///prod.db") };
        let env = super::clean_env();
        assert!(
            env.iter()
                .all(|(k, _)| !k.to_string_lossy().starts_with("AICA_"))
        );
        assert!(env.iter().any(|(k, _)| k == "PATH"));
    }
}
