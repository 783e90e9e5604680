//! Keeping the cache within `[cache] max_size`: a thread of the master, the cache's keeper,
//! looks at the shared count of bytes on disk every second; over the limit, and every few
//! minutes regardless (to correct what a killed worker or a hand left behind), it lists the
//! directory and removes the least recently used entries until a tenth is free, and
//! temporary files a writer left over a minute ago. Workers never wait for it: they only add
//! to and take from the count, and note a use on an entry (its atime, at most once a minute).
//! The keeper also carries out the purges operators ask for (`purge.rs`), in the order
//! asked, as soon as they are asked.
//!
//! A thread rather than the master's loop: listing a large directory takes longer than the
//! master may go without supervising. It shares only [`Between`] with the master's loop, and
//! takes no lock a forked worker could need (no logging, no stdio): a fork while it works
//! leaves the worker nothing held.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::purge::{self, Prefix, Purged};
use super::Counts;
use crate::config::CacheStore;

/// How often the keeper looks at the count.
const TICK: Duration = Duration::from_secs(1);
/// How often it lists the directory even when the count is within the limit.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(300);
/// A temporary file older than this belongs to a writer that is gone.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// The master's handle on its keeper thread.
#[derive(Debug)]
pub struct Keeper {
    shared: Arc<(Mutex<Between>, Condvar)>,
}

/// What the master and its keeper pass each other.
#[derive(Debug, Default)]
struct Between {
    /// The cache the config in force has.
    store: Option<CacheStore>,
    /// What the last sweep that did anything found, for the master to log: the keeper never
    /// writes a log line itself, since a fork of the master while it held the log's lock
    /// would leave the worker unable to write one.
    report: Option<String>,
    /// Entries removed to stay within `max_size`, since the master started.
    evicted: u64,
    /// Purges asked, by the master's number for each, not yet begun.
    purges: Vec<(u64, Prefix)>,
    /// Purges done, for the master to answer.
    purged: Vec<(u64, Result<Purged, String>)>,
}

/// What the keeper has to say to the master.
#[derive(Debug, Default)]
pub struct Tended {
    /// A line for the log.
    pub report: Option<String>,
    /// The purges done since the last call, by the master's numbers.
    pub purged: Vec<(u64, Result<Purged, String>)>,
}

impl Keeper {
    /// Starts the keeper over the instance's shared `counts`; it does nothing until
    /// [`Keeper::tend`] gives it a cache.
    pub fn start(counts: Counts) -> io::Result<Keeper> {
        let shared = Arc::new((Mutex::new(Between::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        thread::Builder::new()
            .name("cache keeper".into())
            .spawn(move || keep(&theirs, counts))?;
        Ok(Keeper { shared })
    }

    /// Gives the keeper the cache the config in force has (none: it rests), and takes what
    /// it has to say since the last call.
    pub fn tend(&self, store: Option<&CacheStore>) -> Tended {
        let mut between = lock(&self.shared.0);
        if between.store.as_ref() != store {
            between.store = store.cloned();
        }
        Tended {
            report: between.report.take(),
            purged: std::mem::take(&mut between.purged),
        }
    }

    /// Asks for the entries `prefix` matches to be removed; [`Keeper::tend`] brings the
    /// answer, numbered `number`.
    pub fn purge(&self, number: u64, prefix: Prefix) {
        lock(&self.shared.0).purges.push((number, prefix));
        self.shared.1.notify_one();
    }

    /// Entries removed to stay within `max_size`, since the master started.
    pub fn evictions(&self) -> u64 {
        lock(&self.shared.0).evicted
    }
}

fn lock(shared: &Mutex<Between>) -> std::sync::MutexGuard<'_, Between> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn keep((shared, asked): &(Mutex<Between>, Condvar), counts: Counts) {
    let bytes = counts.bytes;
    let mut last: Option<(CacheStore, Instant)> = None;
    loop {
        let (store, purges) = {
            let between = lock(shared);
            let (mut between, _) = asked
                .wait_timeout_while(between, TICK, |b| b.purges.is_empty())
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (between.store.clone(), std::mem::take(&mut between.purges))
        };
        for (number, prefix) in purges {
            let purged = match &store {
                Some(store) => purge_now(store, &prefix, counts),
                None => Err("the config in force has no [cache]".to_string()),
            };
            lock(shared).purged.push((number, purged));
        }
        let Some(store) = store else {
            continue;
        };
        let due = match &last {
            Some((swept, at)) => *swept != store || at.elapsed() >= FULL_SWEEP_EVERY,
            None => true,
        };
        if !due && bytes.load(Relaxed) <= store.max_size_bytes {
            continue;
        }
        let mut removed = 0;
        let report = match sweep(&store.path, store.max_size_bytes, SystemTime::now()) {
            Ok(swept) => {
                removed = swept.removed as u64;
                bytes.store(swept.kept_bytes, Relaxed);
                (swept.removed > 0).then(|| {
                    format!(
                        "cache: removed {} least recently used entries ({} bytes) to stay within max_size; {} bytes kept",
                        swept.removed, swept.removed_bytes, swept.kept_bytes
                    )
                })
            }
            Err(e) => Some(format!("cache: cannot list {}: {e}", store.path.display())),
        };
        if report.is_some() {
            let mut between = lock(shared);
            between.report = report;
            between.evicted += removed;
        }
        last = Some((store, Instant::now()));
    }
}

/// Removes the entries `prefix` matches, first telling the workers a purge began.
fn purge_now(store: &CacheStore, prefix: &Prefix, counts: Counts) -> Result<Purged, String> {
    counts.purges.fetch_add(1, SeqCst);
    let purged = purge::purge(&store.path, prefix)
        .map_err(|e| format!("cannot list {}: {e}", store.path.display()))?;
    let _ = (counts.bytes).fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(purged.bytes)));
    Ok(purged)
}

/// What a sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub kept_bytes: u64,
    pub removed: usize,
    pub removed_bytes: u64,
}

/// One entry file as the sweep sees it: its name in the subdirectory `sub`.
struct Found {
    sub: usize,
    name: CString,
    bytes: u64,
    /// Its atime, seconds and nanoseconds.
    used: (i64, i64),
}

/// Lists `dir`'s entries; over `max_bytes`, removes the least recently used (by atime) until
/// a tenth of `max_bytes` is free. Removes abandoned temporary files too.
///
/// Only the 256 subdirectories and the names shoal makes are looked at, and every step is
/// relative to a subdirectory opened without following links: the workers' user owns them
/// and could put a link to another directory in place of one, which the keeper (running as
/// the master, root) must never list or empty.
pub fn sweep(dir: &Path, max_bytes: u64, now: SystemTime) -> io::Result<Swept> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    let mut found = Vec::new();
    let subs = walk(dir, |sub, at, name, kind, stat| match kind {
        Kind::Temporary if now - stat.st_mtime >= ABANDONED_AFTER.as_secs() as i64 => {
            let _ = unlinkat(Some(at), name, UnlinkatFlags::NoRemoveDir);
        }
        Kind::Entry => found.push(Found {
            sub,
            name: name.to_owned(),
            bytes: stat.st_size as u64,
            used: (stat.st_atime, stat.st_atime_nsec),
        }),
        Kind::Temporary | Kind::Other => {}
    })?;
    let mut swept = Swept {
        kept_bytes: found.iter().map(|f| f.bytes).sum(),
        ..Swept::default()
    };
    if swept.kept_bytes <= max_bytes {
        return Ok(swept);
    }
    let target = max_bytes - max_bytes / 10;
    found.sort_by_key(|f| f.used);
    for oldest in found {
        if swept.kept_bytes <= target {
            break;
        }
        let at = Some(subs[oldest.sub].as_raw_fd());
        if unlinkat(at, oldest.name.as_c_str(), UnlinkatFlags::NoRemoveDir).is_ok() {
            swept.kept_bytes -= oldest.bytes;
            swept.removed += 1;
            swept.removed_bytes += oldest.bytes;
        }
    }
    Ok(swept)
}

/// Calls `visit(sub, at, name, kind, stat)` for each regular file with a name shoal makes in
/// the subdirectories of `dir`: `sub` numbers the subdirectory in the list returned (kept
/// open, to act on the files after the walk), `at` is its descriptor. Subdirectories are
/// opened without following links, and every step is relative to one (see [`sweep`]).
pub(super) fn walk(
    dir: &Path,
    mut visit: impl FnMut(usize, RawFd, &CStr, Kind, &FileStat),
) -> io::Result<Vec<Dir>> {
    let mut subs = Vec::new();
    for byte in 0..=255u8 {
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let mut listing = match Dir::open(&dir.join(format!("{byte:02x}")), flags, Mode::empty()) {
            Ok(listing) => listing,
            // The first one missing: the directory itself may be gone (say so); any other
            // is skipped.
            Err(e) if byte == 0 && !dir.is_dir() => return Err(e.into()),
            Err(_) => continue,
        };
        let at = listing.as_raw_fd();
        for file in listing.iter().flatten() {
            let name = file.file_name();
            let kind = Kind::of(name.to_bytes());
            if kind == Kind::Other {
                continue;
            }
            let Ok(stat) = fstatat(Some(at), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if stat.st_mode & libc::S_IFMT == libc::S_IFREG {
                visit(subs.len(), at, name, kind, &stat);
            }
        }
        subs.push(listing);
    }
    Ok(subs)
}

/// What a name in a subdirectory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// 30 lower-case hex digits (`store::Store::locate`).
    Entry,
    /// `.tmp-<pid>-<n>` (`entry::Writer::commit`).
    Temporary,
    Other,
}

impl Kind {
    fn of(name: &[u8]) -> Kind {
        let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if name.len() == 30 && name.iter().all(hex) {
            Kind::Entry
        } else if name.starts_with(b".tmp-") {
            Kind::Temporary
        } else {
            Kind::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::UNIX_EPOCH;

    use super::*;

    /// An entry name: 30 hex digits ending in `tail`.
    fn named(tail: &str) -> String {
        format!("{tail:0>30}")
    }

    /// A file of `bytes` bytes in `dir/sub`, last used `used_secs` after the epoch.
    fn entry(dir: &Path, sub: &str, name: &str, bytes: usize, used_secs: u64) -> PathBuf {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        let path = dir.join(sub).join(name);
        std::fs::write(&path, vec![0u8; bytes]).unwrap();
        let used = UNIX_EPOCH + Duration::from_secs(used_secs);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_times(std::fs::FileTimes::new().set_accessed(used))
            .unwrap();
        path
    }

    #[test]
    fn the_least_recently_used_go_until_a_tenth_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = entry(dir.path(), "00", &named("a"), 400, 1_000);
        let middle = entry(dir.path(), "01", &named("b"), 400, 2_000);
        let newest = entry(dir.path(), "ff", &named("c"), 400, 3_000);
        let within = sweep(dir.path(), 1_200, SystemTime::now()).unwrap();
        assert_eq!(
            within,
            Swept {
                kept_bytes: 1_200,
                removed: 0,
                removed_bytes: 0
            }
        );
        let over = sweep(dir.path(), 1_000, SystemTime::now()).unwrap();
        assert_eq!(
            over,
            Swept {
                kept_bytes: 800,
                removed: 1,
                removed_bytes: 400
            },
            "900 is the target"
        );
        assert!(!oldest.exists() && middle.exists() && newest.exists());
        let tight = sweep(dir.path(), 500, SystemTime::now()).unwrap();
        assert_eq!(tight.kept_bytes, 400);
        assert!(!middle.exists() && newest.exists());
    }

    #[test]
    fn abandoned_temporary_files_go_and_fresh_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let abandoned = entry(dir.path(), "00", ".tmp-1-0", 10, 0);
        let writing = entry(dir.path(), "00", ".tmp-1-1", 10, 0);
        let later = SystemTime::now() + ABANDONED_AFTER;
        std::fs::File::options()
            .write(true)
            .open(&writing)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let swept = sweep(dir.path(), 1 << 20, later).unwrap();
        assert_eq!(swept.kept_bytes, 0, "temporary files are not entries");
        assert!(!abandoned.exists() && writing.exists());
    }

    #[test]
    fn only_shoal_s_names_in_real_subdirectories_are_touched() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        // A link in place of a subdirectory (the workers' user could make one) into a
        // directory holding what looks like entries: never listed, never emptied.
        let outside = entry(elsewhere.path(), "x", &named("1"), 1_000, 0);
        std::os::unix::fs::symlink(elsewhere.path().join("x"), dir.path().join("00")).unwrap();
        let foreign = entry(dir.path(), "01", "not-an-entry", 1_000, 0);
        let stray = entry(dir.path(), "zz", &named("2"), 1_000, 0);
        let own = entry(dir.path(), "02", &named("3"), 1_000, 0);
        let swept = sweep(dir.path(), 10, SystemTime::now()).unwrap();
        assert_eq!(
            swept,
            Swept {
                kept_bytes: 0,
                removed: 1,
                removed_bytes: 1_000
            }
        );
        assert!(outside.exists() && foreign.exists() && stray.exists() && !own.exists());
    }
}
