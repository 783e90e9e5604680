//! Spilling: bytes a slow peer has not taken yet, written to a temporary file that no name
//! points to (`O_TMPFILE`; created and unlinked at once where the filesystem lacks it), then
//! sent from it as the peer takes them. The file goes when its last byte is sent, or with
//! the connection: nothing is ever left on disk, whatever happens to the worker.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where temporary files are made, and how big one may grow.
#[derive(Debug)]
pub struct SpillDir {
    dir: PathBuf,
    max_file_bytes: u64,
}

impl SpillDir {
    /// Temporary files of at most `max_file_bytes` in `dir`, which must be a directory the
    /// process may write: one is made and dropped now to prove it.
    pub fn open(dir: &Path, max_file_bytes: u64) -> io::Result<SpillDir> {
        let spill_dir = SpillDir {
            dir: dir.to_path_buf(),
            max_file_bytes,
        };
        spill_dir.create()?;
        Ok(spill_dir)
    }

    /// A new temporary file, readable and writable, unlinked.
    fn create(&self) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).mode(0o600);
        match options.clone().custom_flags(libc::O_TMPFILE).open(&self.dir) {
            // The filesystem cannot make nameless files: make one with a name nobody else
            // can have, and remove the name at once.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                self.create_named(options)
            }
            made => made,
        }
    }

    fn create_named(&self, mut options: OpenOptions) -> io::Result<File> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            ".shoal-spill-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(name);
        let file = options
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(file)
    }
}

/// One temporary file of pending bytes: `[sent, written)` is still to go.
#[derive(Debug)]
pub struct Spill {
    pub file: File,
    pub sent: u64,
    pub written: u64,
    /// It reached its size limit, or a write failed: it takes no more bytes.
    pub full: bool,
    max_file_bytes: u64,
}

impl Spill {
    /// A new spill in `dir`.
    pub fn create(dir: &SpillDir) -> io::Result<Spill> {
        Ok(Spill {
            file: dir.create()?,
            sent: 0,
            written: 0,
            full: false,
            max_file_bytes: dir.max_file_bytes,
        })
    }

    /// Appends `bytes` whole, or nothing (and takes no more from then on).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.full {
            return Err(io::ErrorKind::StorageFull.into());
        }
        if self.written + bytes.len() as u64 > self.max_file_bytes {
            self.full = true;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "max_temp_file_bytes reached",
            ));
        }
        if let Err(e) = self.file.write_all_at(bytes, self.written) {
            self.full = true;
            return Err(e);
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes still to send.
    pub fn pending(&self) -> u64 {
        self.written - self.sent
    }
}
