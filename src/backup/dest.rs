//! Where copies of backups go besides `backups/`: today a second directory (an
//! off-site mount); an object store implements the same trait later.

use super::{Result, io};
use crate::config::Settings;
use std::path::{Path, PathBuf};

/// A place that holds copies of archives and their sidecars.
pub trait Destination: Send + Sync {
    /// Copy `archive` and its sidecar in, atomically (temp name, fsync, rename).
    fn put(&self, archive: &Path) -> Result<()>;
    /// Remove the named archive and its sidecar (no error if absent).
    fn delete(&self, name: &str) -> Result<()>;
    fn describe(&self) -> String;
}

/// A directory on a (usually mounted) file system.
pub struct LocalDir(pub PathBuf);

fn copy_atomic(src: &Path, dst: &Path) -> std::io::Result<()> {
    crate::util::replace_file(dst, |f| {
        std::io::copy(&mut std::fs::File::open(src)?, f).map(|_| ())
    })
}

impl Destination for LocalDir {
    fn put(&self, archive: &Path) -> Result<()> {
        std::fs::create_dir_all(&self.0)
            .map_err(io(format!("create mirror {}", self.0.display())))?;
        let name = archive.file_name().unwrap_or_default();
        copy_atomic(archive, &self.0.join(name))
            .map_err(io(format!("copy to mirror {}", self.0.display())))?;
        let side = super::sidecar_path(archive);
        let side_name = side.file_name().unwrap_or_default().to_owned();
        copy_atomic(&side, &self.0.join(side_name))
            .map_err(io(format!("copy sidecar to mirror {}", self.0.display())))
    }

    fn delete(&self, name: &str) -> Result<()> {
        for p in [self.0.join(name), super::sidecar_path(&self.0.join(name))] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("remove {}", p.display()))(e)),
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// The configured mirror directory, if any; a relative path is under `base`.
pub fn mirror_dir(s: &Settings, base: &Path) -> Option<PathBuf> {
    s.mirror_path(base)
}

/// The configured mirror, if any.
pub fn mirror(s: &Settings, base: &Path) -> Option<Box<dyn Destination>> {
    mirror_dir(s, base).map(|d| Box::new(LocalDir(d)) as Box<dyn Destination>)
}
