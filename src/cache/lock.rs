//! Request collapsing: while one request for a key is fetched, the others for that key, in
//! any worker, wait for its entry instead of going upstream too (nginx's `proxy_cache_lock`).
//!
//! A key's lock is one byte of `<cache path>/.locks`, taken with an open file description
//! lock (`F_OFD_SETLK`): the kernel arbitrates between workers, and releases a lock when its
//! holder unlocks it or dies, so a crashed worker never wedges a key. Each worker opens the
//! file itself (OFD locks of one open file do not exclude each other), and also remembers
//! which locks it holds, since two of its own connections share that open file. Keys share
//! bytes by hash (2^20 of them): a rare collision only makes a request wait its turn.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

/// Bytes of the lock file keys are spread over.
const SLOTS: u64 = 1 << 20;

/// One worker's locks.
#[derive(Debug)]
pub struct Locks {
    file: File,
    held: RefCell<HashSet<u64>>,
}

/// A key's lock, held until dropped.
#[derive(Debug)]
pub struct Held {
    locks: Rc<Locks>,
    slot: u64,
}

impl Locks {
    /// Opens the lock file in the cache directory `dir` (made if missing).
    pub fn open(dir: &Path) -> io::Result<Rc<Locks>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(".locks"))?;
        Ok(Rc::new(Locks {
            file,
            held: RefCell::default(),
        }))
    }

    /// The lock of the key whose hash is `hash`, unless someone holds it.
    pub fn try_lock(self: &Rc<Self>, hash: u64) -> Option<Held> {
        let slot = hash % SLOTS;
        if self.held.borrow().contains(&slot) || !self.set(slot, libc::F_WRLCK).ok()? {
            return None;
        }
        self.held.borrow_mut().insert(slot);
        Some(Held {
            locks: Rc::clone(self),
            slot,
        })
    }

    /// Sets or clears the lock on `slot`'s byte: `Ok(false)` when another holds it.
    fn set(&self, slot: u64, kind: libc::c_int) -> io::Result<bool> {
        let range = libc::flock {
            l_type: kind as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: slot as libc::off_t,
            l_len: 1,
            l_pid: 0,
        };
        match fcntl(self.file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&range)) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.locks.set(self.slot, libc::F_UNLCK);
        self.locks.held.borrow_mut().remove(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_once_across_open_files_and_within_one() {
        let dir = tempfile::tempdir().unwrap();
        let (worker_a, worker_b) = (Locks::open(dir.path()).unwrap(), Locks::open(dir.path()).unwrap());
        let held = worker_a.try_lock(42).expect("free at first");
        assert!(
            worker_a.try_lock(42).is_none(),
            "another connection of the same worker waits"
        );
        assert!(worker_b.try_lock(42).is_none(), "another worker waits");
        assert!(worker_b.try_lock(43).is_some(), "other keys are free");
        drop(held);
        assert!(
            worker_b.try_lock(42 + SLOTS).is_some(),
            "free once dropped (the same slot)"
        );
    }

    #[test]
    fn a_dead_holder_s_locks_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let other = Locks::open(dir.path()).unwrap();
        // Locked and never unlocked, as by a worker killed while it fetched.
        assert!(other.set(7, libc::F_WRLCK).unwrap());
        let mine = Locks::open(dir.path()).unwrap();
        assert!(mine.try_lock(7).is_none());
        drop(other); // its open file closes, as at a worker's death
        assert!(mine.try_lock(7).is_some(), "the kernel released it");
    }
}
