//! Removing entries by key prefix (`shoal cache purge PREFIX`, `DELETE /cache?prefix=` on
//! the admin listener): the master's keeper reads the key of every entry and removes those
//! that match.
//!
//! Workers must not answer from what was removed: before it removes anything, the keeper
//! moves the instance's purge count ([`super::Counts::purges`]), and a worker drops its
//! in-memory copies when it sees the count move. An entry whose fill began before a purge
//! and lands after it is removed by its writer (see `fill.rs`): its body may predate the
//! purge.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::unistd::{unlinkat, UnlinkatFlags};

use super::entry;
use super::keep::{walk, Kind};

/// The longest prefix taken.
pub const MAX_PREFIX_BYTES: usize = 4096;

/// Which keys a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefix {
    /// `/path...`: that target on every host and scheme.
    Target(Vec<u8>),
    /// `https://host/path...`: keys that start so (the host compared in lower case, as
    /// keys hold it).
    Url(Vec<u8>),
}

impl Prefix {
    /// Reads what an operator typed: `/images/`, or `https://shop.example/images/`.
    pub fn parse(text: &str) -> Result<Prefix, String> {
        let bytes = text.as_bytes();
        if text.is_empty() || bytes.len() > MAX_PREFIX_BYTES || bytes.iter().any(|b| b.is_ascii_control()) {
            return Err(format!(
                "a purge prefix is 1 to {MAX_PREFIX_BYTES} printable bytes"
            ));
        }
        if bytes[0] == b'/' {
            return Ok(Prefix::Target(bytes.to_vec()));
        }
        let scheme = ["http://", "https://"].into_iter().find(|scheme| {
            text.get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        });
        let Some(scheme) = scheme else {
            return Err(format!(
                "purge prefix {text:?}: start it with / (a path on every host) or with http:// or https://"
            ));
        };
        let rest = &text[scheme.len()..];
        let host_len = rest.find('/').unwrap_or(rest.len());
        let mut url = scheme.as_bytes().to_vec();
        url.extend(rest[..host_len].bytes().map(|b| b.to_ascii_lowercase()));
        url.extend_from_slice(&rest.as_bytes()[host_len..]);
        Ok(Prefix::Url(url))
    }

    /// Whether the entry of `key` (`scheme://host/target`) goes.
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Prefix::Url(url) => key.starts_with(url),
            Prefix::Target(target) => target_of(key).is_some_and(|t| t.starts_with(target)),
        }
    }
}

/// The target part of a key: from the first `/` after `://`.
fn target_of(key: &[u8]) -> Option<&[u8]> {
    let after_scheme = key.windows(3).position(|w| w == b"://")? + 3;
    let start = after_scheme + key[after_scheme..].iter().position(|&b| b == b'/')?;
    Some(&key[start..])
}

/// What a purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub removed: u64,
    pub bytes: u64,
}

/// Removes every entry in `dir` whose key `prefix` matches.
pub fn purge(dir: &Path, prefix: &Prefix) -> io::Result<Purged> {
    let mut purged = Purged::default();
    walk(dir, |_, at, name, kind, stat| {
        if kind == Kind::Entry
            && key_at(at, name).is_some_and(|key| prefix.matches(&key))
            && unlinkat(Some(at), name, UnlinkatFlags::NoRemoveDir).is_ok()
        {
            purged.removed += 1;
            purged.bytes += stat.st_size as u64;
        }
    })?;
    Ok(purged)
}

/// The key of the entry file `name` in the directory `at`, opened without following a link.
fn key_at(at: RawFd, name: &CStr) -> Option<Vec<u8>> {
    // Through the directory's descriptor: /proc/self/fd/N is the directory opened.
    let path = Path::new(&format!("/proc/self/fd/{at}")).join(OsStr::from_bytes(name.to_bytes()));
    let file = (File::options().read(true))
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    entry::read_key(&file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::{Entry, Meta, Writer};
    use crate::cache::policy::Freshness;
    use crate::cache::store::Store;

    #[test]
    fn a_prefix_is_a_path_on_every_host_or_the_start_of_a_url() {
        let path = Prefix::parse("/img/").unwrap();
        assert!(path.matches(b"http://a.example/img/1.png"));
        assert!(path.matches(b"https://b.example/img/"));
        assert!(!path.matches(b"https://b.example/im"));
        assert!(!path.matches(b"https://b.example/x/img/"));
        let url = Prefix::parse("HTTPS://Shop.Example/img/").unwrap();
        assert!(url.matches(b"https://shop.example/img/a?b=1"));
        assert!(!url.matches(b"http://shop.example/img/a"), "another scheme");
        assert!(!url.matches(b"https://shop.example.org/img/a"));
        assert!(Prefix::parse("https://shop.example")
            .unwrap()
            .matches(b"https://shop.example/"));
        assert!(
            Prefix::parse("https://shop.example")
                .unwrap()
                .matches(b"https://shop.example.org/"),
            "a prefix, as typed"
        );
        for bad in ["", "img/", "ftp://x/", "/a\nb"] {
            assert!(Prefix::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn store(dir: &Path, key: &str, body: &[u8]) -> std::path::PathBuf {
        let meta = Meta {
            key: key.as_bytes().to_vec(),
            status: 200,
            reason: Vec::new(),
            lines: Vec::new(),
            freshness: Freshness {
                stored_at: 0,
                initial_age: 0,
                lifetime: 60,
                stale_while_revalidate: 0,
                stale_if_error: 0,
            },
            vary: Vec::new(),
        };
        let (path, _) = Store::new(dir).locate(key.as_bytes());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut writer = Writer::create(path.parent().unwrap(), &meta, 1 << 20).unwrap();
        writer.write(body).unwrap();
        writer.commit(&path).unwrap();
        path
    }

    #[test]
    fn a_purge_removes_the_matching_entries_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let gone = [
            store(dir.path(), "https://a.example/img/1", b"one"),
            store(dir.path(), "http://b.example/img/2?x", b"two"),
        ];
        let kept = [
            store(dir.path(), "https://a.example/css/1", b"three"),
            store(dir.path(), "https://a.example/im", b"four"),
        ];
        let purged = purge(dir.path(), &Prefix::parse("/img/").unwrap()).unwrap();
        assert_eq!(purged.removed, 2);
        assert!(purged.bytes > 6);
        assert!(gone.iter().all(|p| !p.exists()));
        assert!(kept.iter().all(|p| Entry::open(p).unwrap().is_some()));
        let all = purge(dir.path(), &Prefix::parse("https://A.example").unwrap()).unwrap();
        assert_eq!(all.removed, 2);
        assert!(kept.iter().all(|p| !p.exists()));
    }
}
