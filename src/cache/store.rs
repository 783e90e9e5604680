//! The cache's directory: 256 subdirectories named by the first byte of a key's SHA-256
//! (`00` to `ff`, so no directory grows past what the filesystem lists quickly), and in them
//! one entry file per key, named by the next 15 bytes in hex.
//!
//! The master makes the directory at start and at each reload ([`prepare`]) and gives it to
//! the workers' user; workers only create, rename and remove files in it.

use std::io;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{digest, SHA256};

/// Makes `dir` and its 256 subdirectories where missing, owned by `owner` (uid, gid) when
/// given. A subdirectory that is not one (a link the workers' user put there) is an error:
/// the master never follows a link it does not own, nor gives its target away.
pub fn prepare(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let chown = |path: &Path| match owner {
        Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
        None => Ok(()),
    };
    chown(dir)?;
    for byte in 0..=255u8 {
        let sub = dir.join(format!("{byte:02x}"));
        match std::fs::create_dir(&sub) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ if !std::fs::symlink_metadata(&sub)?.is_dir() => {
                let why = format!("{} is not a directory (a link?)", sub.display());
                return Err(io::Error::new(io::ErrorKind::InvalidData, why));
            }
            _ => chown(&sub)?,
        }
    }
    Ok(())
}

/// Where a worker finds and puts entries.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    /// The entry file of `key`, and a 64-bit hash of it (for its lock).
    pub fn locate(&self, key: &[u8]) -> (PathBuf, u64) {
        let hash = digest(&SHA256, key);
        let bytes = hash.as_ref();
        let hex: String = bytes[..16].iter().map(|byte| format!("{byte:02x}")).collect();
        let short = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        (self.dir.join(&hex[..2]).join(&hex[2..]), short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_prepared_subdirectories() {
        let dir = tempfile::tempdir().expect("a test directory");
        let cache = dir.path().join("cache");
        prepare(&cache, None).expect("prepared");
        prepare(&cache, None).expect("prepared again, as at a reload");
        assert_eq!(std::fs::read_dir(&cache).expect("listed").count(), 256);
        let store = Store::new(&cache);
        let (path, hash) = store.locate(b"https://example.com/");
        assert!(path.parent().expect("a subdirectory").is_dir(), "{path:?}");
        assert_eq!(path.file_name().expect("a name").len(), 30);
        assert_eq!(
            store.locate(b"https://example.com/"),
            (path.clone(), hash),
            "the same key, the same file and lock"
        );
        assert_ne!(
            store.locate(b"http://example.com/").0,
            path,
            "the scheme is part of the key"
        );
    }

    #[test]
    fn a_link_in_place_of_a_subdirectory_is_refused() {
        let dir = tempfile::tempdir().expect("a test directory");
        let cache = dir.path().join("cache");
        prepare(&cache, None).expect("prepared");
        std::fs::remove_dir(cache.join("ab")).unwrap();
        std::os::unix::fs::symlink("/etc", cache.join("ab")).unwrap();
        let refused = prepare(&cache, None).expect_err("a link");
        assert!(refused.to_string().contains("ab is not a directory"), "{refused}");
    }
}
