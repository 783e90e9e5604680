//! One stored response on disk: a file named by its key's hash, holding a small header, the
//! metadata (key, status, header lines, how it ages, the request headers its `Vary` names)
//! and the body, which is sent from the file with sendfile.
//!
//! An entry is written into a file no name points to (`O_TMPFILE`) and only then linked in
//! under a temporary name and renamed over its place: a reader opens a whole entry or none,
//! whatever happens to the writer (killed mid-write, a full disk). On a filesystem without
//! `O_TMPFILE` the file is made under its temporary name from the start (the keeper removes
//! what a killed writer leaves). A file whose size does not
//! add up to what its header says (a power cut after the rename, before the data reached the
//! disk) is not an entry: [`Entry::open`] refuses it, and it is fetched again.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::fcntl::AtFlags;

use super::policy::Freshness;

/// The first bytes of every entry file; another version's files are not entries.
const MAGIC: &[u8; 8] = b"shoalC01";
/// MAGIC, the metadata's length (u32) and the body's length (u64).
const HEADER_BYTES: usize = 8 + 4 + 8;
/// The largest metadata block read: a key and a head within their own limits fit.
const MAX_META_BYTES: usize = 256 * 1024;

/// The metadata of a stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The full key (scheme, host, target): two keys with one hash never answer for each other.
    pub key: Vec<u8>,
    pub status: u16,
    /// The upstream's reason phrase (empty: the standard one).
    pub reason: Vec<u8>,
    /// The end-to-end header lines as relayed, each `Name: value\r\n`.
    pub lines: Vec<u8>,
    pub freshness: Freshness,
    /// The request headers named by the response's `Vary` and the values this response was
    /// chosen for (names lower case, values as sent, several lines joined by ", ").
    pub vary: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An entry opened for reading: its metadata, and the file its body is read from.
#[derive(Debug)]
pub struct Entry {
    pub meta: Meta,
    pub file: File,
    /// Where the body starts in the file, and its length.
    pub body_offset: u64,
    pub body_len: u64,
    /// When it was last used (its atime), for the keeper's least-recently-used order.
    pub used: SystemTime,
}

impl Entry {
    /// Opens the entry at `path`: `Ok(None)` when there is none, or what is there is not a
    /// whole entry of this version.
    pub fn open(path: &Path) -> io::Result<Option<Entry>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut header = [0u8; HEADER_BYTES];
        if file.read_exact_at(&mut header, 0).is_err() || &header[..8] != MAGIC {
            return Ok(None);
        }
        let meta_len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
        let body_len = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        let body_offset = (HEADER_BYTES + meta_len) as u64;
        let stat = file.metadata()?;
        if meta_len > MAX_META_BYTES || stat.len() != body_offset.saturating_add(body_len) {
            return Ok(None);
        }
        let used = stat.accessed().unwrap_or(SystemTime::UNIX_EPOCH);
        let mut encoded = vec![0u8; meta_len];
        file.read_exact_at(&mut encoded, HEADER_BYTES as u64)?;
        Ok(Meta::decode(&encoded).map(|meta| Entry {
            meta,
            file,
            body_offset,
            body_len,
            used,
        }))
    }

    /// A second handle on the same entry (one answers a client while the other is
    /// revalidated).
    pub fn try_clone(&self) -> io::Result<Entry> {
        Ok(Entry {
            meta: self.meta.clone(),
            file: self.file.try_clone()?,
            ..*self
        })
    }

    /// Notes that it answered a request, for the keeper's order: its atime, set at most
    /// once a minute (mounts with `noatime` or `relatime` keep it from reads alone).
    pub fn note_use(&self) {
        let now = SystemTime::now();
        if now
            .duration_since(self.used)
            .is_ok_and(|since| since < NOTE_USE_EVERY)
        {
            return;
        }
        let times = std::fs::FileTimes::new().set_accessed(now);
        if let Err(e) = self.file.set_times(times) {
            log::debug!("cannot note the use of a cache entry: {e}");
        }
    }
}

/// The key of the entry in `file`, read from its metadata alone (for a purge, which looks
/// at every entry): `None` when the file is not an entry of this version.
pub fn read_key(file: &File) -> Option<Vec<u8>> {
    let mut start = [0u8; HEADER_BYTES + 4];
    file.read_exact_at(&mut start, 0).ok()?;
    if &start[..8] != MAGIC {
        return None;
    }
    let meta_len = u32::from_le_bytes(start[8..12].try_into().ok()?) as usize;
    let key_len = u32::from_le_bytes(start[HEADER_BYTES..].try_into().ok()?) as usize;
    if meta_len > MAX_META_BYTES || key_len + 4 > meta_len {
        return None;
    }
    let mut key = vec![0u8; key_len];
    file.read_exact_at(&mut key, start.len() as u64).ok()?;
    Some(key)
}

/// How stale an entry's last-use time may get before a use is noted again.
const NOTE_USE_EVERY: Duration = Duration::from_secs(60);

/// An entry being written: the header and metadata first, then the body as it arrives;
/// [`Writer::commit`] puts it in place, dropping it leaves nothing behind.
#[derive(Debug)]
pub struct Writer {
    file: File,
    /// Bytes written so far.
    written: u64,
    body_offset: u64,
    /// The body may not grow past this.
    max_body_bytes: u64,
    /// The file's temporary name, when it has one from the start (no `O_TMPFILE`).
    named: Option<PathBuf>,
}

impl Writer {
    /// Starts an entry for `meta` in `dir` (a directory of the cache, on the filesystem of
    /// the entry's final place).
    pub fn create(dir: &Path, meta: &Meta, max_body_bytes: u64) -> io::Result<Writer> {
        let unnamed = writable().custom_flags(libc::O_TMPFILE).open(dir);
        match unnamed {
            Ok(file) => Writer::start(file, None, meta, max_body_bytes),
            // EISDIR and EOPNOTSUPP are what kernels and filesystems without it say.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EOPNOTSUPP)) => {
                Writer::create_named(dir, meta, max_body_bytes)
            }
            Err(e) => Err(e),
        }
    }

    /// Starts an entry in a file under a temporary name in `dir`.
    fn create_named(dir: &Path, meta: &Meta, max_body_bytes: u64) -> io::Result<Writer> {
        let name = temporary_name(dir);
        let file = writable().create_new(true).open(&name)?;
        Writer::start(file, Some(name), meta, max_body_bytes)
    }

    fn start(file: File, named: Option<PathBuf>, meta: &Meta, max_body_bytes: u64) -> io::Result<Writer> {
        let mut writer = Writer {
            file,
            written: 0,
            body_offset: 0,
            max_body_bytes,
            named,
        };
        let encoded = meta.encode();
        let mut start = Vec::with_capacity(HEADER_BYTES + encoded.len());
        start.extend_from_slice(MAGIC);
        start.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        start.extend_from_slice(&0u64.to_le_bytes()); // the body's length, set at commit
        start.extend_from_slice(&encoded);
        // (Dropped on failure, the writer removes a named file.)
        writer.file.write_all_at(&start, 0)?;
        writer.written = start.len() as u64;
        writer.body_offset = writer.written;
        Ok(writer)
    }

    /// Appends `bytes` to the body.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.body_len() + bytes.len() as u64 > self.max_body_bytes {
            return Err(io::Error::new(
                ErrorKind::FileTooLarge,
                "over the cache's entry size",
            ));
        }
        self.file.write_all_at(bytes, self.written)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn body_len(&self) -> u64 {
        self.written - self.body_offset
    }

    /// Bytes the entry takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.written
    }

    /// Puts the entry at `path`, replacing any there (readers that opened the old one keep
    /// reading it whole). Returns the bytes of the entry it replaced (0 for none).
    pub fn commit(mut self, path: &Path) -> io::Result<u64> {
        self.file.write_all_at(&self.body_len().to_le_bytes(), 12)?;
        let temporary = match self.named.take() {
            Some(named) => named,
            None => {
                let temporary = temporary_name(path.parent().unwrap_or(path));
                // linkat(2) of an O_TMPFILE by its /proc path needs no privilege
                // (AT_EMPTY_PATH does).
                let proc_path = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
                nix::unistd::linkat(None, &proc_path, None, &temporary, AtFlags::AT_SYMLINK_FOLLOW)?;
                temporary
            }
        };
        let replaced = std::fs::metadata(path).map_or(0, |old| old.len());
        std::fs::rename(&temporary, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })?;
        Ok(replaced)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(named) = &self.named {
            let _ = std::fs::remove_file(named);
        }
    }
}

fn writable() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(0o600);
    options
}

/// A name in `dir` no other writer uses (`.tmp-<pid>-<n>`); the sweep removes any left by a
/// writer killed before its rename.
fn temporary_name(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{}-{n}", std::process::id()))
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.key.len() + self.lines.len());
        put_bytes(&mut out, &self.key);
        out.extend_from_slice(&self.status.to_le_bytes());
        put_bytes(&mut out, &self.reason);
        put_bytes(&mut out, &self.lines);
        let f = &self.freshness;
        for n in [
            f.stored_at,
            f.initial_age,
            f.lifetime,
            f.stale_while_revalidate,
            f.stale_if_error,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(self.vary.len() as u32).to_le_bytes());
        for (name, value) in &self.vary {
            put_bytes(&mut out, name);
            put_bytes(&mut out, value);
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Meta> {
        let input = &mut bytes;
        let key = take_bytes(input)?;
        let status = u16::from_le_bytes(take(input, 2)?.try_into().ok()?);
        let reason = take_bytes(input)?;
        let lines = take_bytes(input)?;
        let mut numbers = [0u64; 5];
        for n in &mut numbers {
            *n = take_u64(input)?;
        }
        let [stored_at, initial_age, lifetime, stale_while_revalidate, stale_if_error] = numbers;
        let count = u32::from_le_bytes(take(input, 4)?.try_into().ok()?);
        let vary = (0..count)
            .map(|_| Some((take_bytes(input)?, take_bytes(input)?)))
            .collect::<Option<Vec<_>>>()?;
        input.is_empty().then_some(Meta {
            key,
            status,
            reason,
            lines,
            freshness: Freshness {
                stored_at,
                initial_age,
                lifetime,
                stale_while_revalidate,
                stale_if_error,
            },
            vary,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (taken, rest) = input.split_at_checked(n)?;
    *input = rest;
    Some(taken)
}

fn take_u64(input: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(input, 8)?.try_into().ok()?))
}

fn take_bytes(input: &mut &[u8]) -> Option<Vec<u8>> {
    let len = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
    Some(take(input, len)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            key: b"https://shop.example/a?b=1".to_vec(),
            status: 200,
            reason: Vec::new(),
            lines: b"Content-Type: text/plain\r\nETag: \"1\"\r\n".to_vec(),
            freshness: Freshness {
                stored_at: 1_800_000_000,
                initial_age: 3,
                lifetime: 60,
                stale_while_revalidate: 30,
                stale_if_error: 600,
            },
            vary: vec![(b"accept-language".to_vec(), b"de, en".to_vec())],
        }
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("a test directory")
    }

    #[test]
    fn a_committed_entry_opens_with_its_metadata_and_body() {
        let dir = dir();
        let path = dir.path().join("entry");
        let mut writer = Writer::create(dir.path(), &meta(), 1 << 20).expect("a writer");
        writer.write(b"hello, ").expect("written");
        writer.write(b"world").expect("written");
        assert_eq!(
            Entry::open(&path).expect("opened").map(|e| e.body_len),
            None,
            "nothing before commit"
        );
        writer.commit(&path).expect("committed");
        let entry = Entry::open(&path).expect("opened").expect("an entry");
        assert_eq!(entry.meta, meta());
        let mut body = vec![0u8; entry.body_len as usize];
        entry
            .file
            .read_exact_at(&mut body, entry.body_offset)
            .expect("the body");
        assert_eq!(body, b"hello, world");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("listed")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(names, ["entry"], "no temporary name left");
    }

    #[test]
    fn a_dropped_writer_leaves_nothing_and_a_commit_replaces_whole() {
        let dir = dir();
        let path = dir.path().join("entry");
        let mut first = Writer::create(dir.path(), &meta(), 1 << 20).expect("a writer");
        first.write(b"old").expect("written");
        first.commit(&path).expect("committed");
        let reader = Entry::open(&path).expect("opened").expect("the old entry");
        let mut abandoned = Writer::create(dir.path(), &meta(), 1 << 20).expect("a writer");
        abandoned.write(b"half").expect("written");
        drop(abandoned);
        let mut second = Writer::create(dir.path(), &meta(), 1 << 20).expect("a writer");
        second.write(b"new body").expect("written");
        second.commit(&path).expect("committed");
        assert_eq!(
            Entry::open(&path)
                .expect("opened")
                .expect("the new entry")
                .body_len,
            8
        );
        let mut old = [0u8; 3];
        reader
            .file
            .read_exact_at(&mut old, reader.body_offset)
            .expect("the old body");
        assert_eq!(&old, b"old", "a reader of the old entry reads it whole");
        assert_eq!(std::fs::read_dir(dir.path()).expect("listed").count(), 1);
    }

    #[test]
    fn without_o_tmpfile_the_entry_is_written_under_a_temporary_name() {
        let dir = dir();
        let path = dir.path().join("entry");
        let names = || -> Vec<String> {
            let mut names: Vec<_> = (std::fs::read_dir(dir.path()).expect("listed"))
                .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let mut dropped = Writer::create_named(dir.path(), &meta(), 1 << 20).expect("a writer");
        dropped.write(b"half").expect("written");
        assert!(names()[0].starts_with(".tmp-"), "{:?}", names());
        drop(dropped);
        assert!(
            names().is_empty(),
            "a dropped writer leaves nothing: {:?}",
            names()
        );
        let mut writer = Writer::create_named(dir.path(), &meta(), 1 << 20).expect("a writer");
        writer.write(b"whole").expect("written");
        writer.commit(&path).expect("committed");
        assert_eq!(names(), ["entry"]);
        let entry = Entry::open(&path).expect("opened").expect("an entry");
        assert_eq!((entry.meta, entry.body_len), (meta(), 5));
        assert_eq!(read_key(&entry.file), Some(meta().key));
    }

    #[test]
    fn what_is_not_a_whole_entry_is_none() {
        let dir = dir();
        let path = dir.path().join("entry");
        assert!(Entry::open(&path).expect("no error").is_none(), "missing");
        std::fs::write(&path, b"garbage").expect("written");
        assert!(Entry::open(&path).expect("no error").is_none(), "not an entry");
        let mut writer = Writer::create(dir.path(), &meta(), 1 << 20).expect("a writer");
        writer.write(b"0123456789").expect("written");
        writer.commit(&path).expect("committed");
        let file = OpenOptions::new().write(true).open(&path).expect("opened");
        let full = file.metadata().expect("stat").len();
        file.set_len(full - 1).expect("truncated");
        assert!(
            Entry::open(&path).expect("no error").is_none(),
            "a truncated body"
        );
        file.set_len(full + 1).expect("extended");
        assert!(Entry::open(&path).expect("no error").is_none(), "a longer file");
    }

    #[test]
    fn the_body_stops_at_the_entry_size() {
        let dir = dir();
        let mut writer = Writer::create(dir.path(), &meta(), 10).expect("a writer");
        writer.write(b"0123456789").expect("up to the limit");
        let over = writer.write(b"x").expect_err("over the limit");
        assert_eq!(over.kind(), ErrorKind::FileTooLarge);
    }

    #[test]
    fn metadata_survives_every_truncation_as_none_not_a_panic() {
        let encoded = meta().encode();
        assert_eq!(Meta::decode(&encoded), Some(meta()));
        for cut in 0..encoded.len() {
            assert_eq!(Meta::decode(&encoded[..cut]), None, "cut at {cut}");
        }
    }
}
