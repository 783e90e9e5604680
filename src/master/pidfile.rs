//! The pid file: written when the master starts, removed when it exits.

use std::io;
use std::path::{Path, PathBuf};

/// A written pid file; dropping it removes the file.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes the current process id to `path` (replacing a stale file).
    pub fn write(path: &Path) -> io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
