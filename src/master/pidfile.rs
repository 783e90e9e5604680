//! The pid file: written when the master starts, removed when it exits, unless a newer
//! master (binary upgrade) has taken it over.

use std::io;
use std::path::{Path, PathBuf};

/// A written pid file; dropping it removes the file if it still names this process.
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
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
