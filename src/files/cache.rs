//! A bounded per-worker cache of small files, so the hottest requests touch no file at all.
//!
//! Entries are revalidated against the disk at most once per [`REVALIDATE`] interval, so a
//! replaced file is served fresh within that time; memory stays under the byte budget by
//! evicting the least recently used entries.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use std::cell::OnceCell;

use super::representation::{self, Coding, Content, Describe, Identity, Representation};
use crate::http::encoding;

/// How long a cached entry is trusted without looking at the disk.
pub const REVALIDATE: Duration = Duration::from_secs(1);
/// Bytes of file content one worker keeps in memory.
pub const BUDGET_BYTES: u64 = 32 * 1024 * 1024;

/// A resource's variants as found on disk, keyed by the request path they answer.
#[derive(Debug, Clone)]
pub struct Resource {
    pub identity: Rc<Representation>,
    pub gzip: Option<Rc<Representation>>,
    pub brotli: Option<Rc<Representation>>,
    /// Shoal's own compressed forms, when it may make them (`compress` on the route, a
    /// compressible type, an identity in memory): shared by the resource's copies, so each
    /// is made once per version of the file, at the first request that wants it.
    pub made: Option<Rc<Made>>,
}

/// The compressed forms shoal makes of a file, by `encoding::CODINGS` position.
#[derive(Debug)]
pub struct Made {
    /// The file's name (its Content-Type) and the route's Cache-Control.
    pub name: Box<str>,
    pub cache_control: Option<Box<str>>,
    pub forms: [OnceCell<Option<Rc<Representation>>>; 2],
}

impl Resource {
    /// The representation for `coding`: the sibling on disk, else shoal's own (made now if
    /// this is the first request for it).
    pub fn encoded(&self, coding: encoding::Coding) -> Option<&Rc<Representation>> {
        let (sibling, files_coding, at) = match coding {
            encoding::Coding::Brotli => (&self.brotli, Coding::Brotli, 0),
            encoding::Coding::Gzip => (&self.gzip, Coding::Gzip, 1),
        };
        if sibling.is_some() {
            return sibling.as_ref();
        }
        let made = self.made.as_ref()?;
        let describe = Describe {
            name: &made.name,
            coding: files_coding,
            cache_control: made.cache_control.as_deref(),
            varies: true,
        };
        made.forms[at]
            .get_or_init(|| representation::compressed(&self.identity, coding, &describe).map(Rc::new))
            .as_ref()
    }

    /// Whether a representation for `coding` exists or can be made.
    pub fn offers(&self, coding: encoding::Coding) -> bool {
        let sibling = match coding {
            encoding::Coding::Brotli => &self.brotli,
            encoding::Coding::Gzip => &self.gzip,
        };
        sibling.is_some() || self.made.is_some()
    }

    /// What the disk looked like when this resource was built: identities of each variant.
    pub fn fingerprint(&self) -> [Option<Identity>; 3] {
        let id = |rep: &Option<Rc<Representation>>| rep.as_ref().map(|r| r.identity);
        [Some(self.identity.identity), id(&self.gzip), id(&self.brotli)]
    }

    /// True when every variant is in memory (only such resources are cached).
    pub fn in_memory(&self) -> bool {
        [Some(&self.identity), self.gzip.as_ref(), self.brotli.as_ref()]
            .into_iter()
            .flatten()
            .all(|rep| matches!(rep.content, Content::Memory(_)))
    }

    fn cost_bytes(&self) -> u64 {
        [Some(&self.identity), self.gzip.as_ref(), self.brotli.as_ref()]
            .into_iter()
            .flatten()
            .map(|rep| rep.identity.size + rep.headers.len() as u64)
            .sum::<u64>()
    }
}

struct Entry {
    resource: Resource,
    /// What the entry counts against the budget: its bytes and its key's.
    cost: u64,
    checked: Instant,
    used: Instant,
}

/// Freshness of a cached entry.
pub enum Lookup<'a> {
    /// Checked recently: serve it.
    Fresh(&'a Resource),
    /// Older than [`REVALIDATE`]: the caller checks the disk, then calls `confirm` or `insert`.
    Stale(&'a Resource),
    Missing,
}

/// Small-file cache for one route, sharing nothing with other workers.
#[derive(Default)]
pub struct FileCache {
    entries: HashMap<Box<str>, Entry>,
    used_bytes: u64,
}

impl FileCache {
    /// Looks `key` up and marks it used.
    pub fn get(&mut self, key: &str, now: Instant) -> Lookup<'_> {
        match self.entries.get_mut(key) {
            Some(entry) => {
                entry.used = now;
                if now.duration_since(entry.checked) < REVALIDATE {
                    Lookup::Fresh(&entry.resource)
                } else {
                    Lookup::Stale(&entry.resource)
                }
            }
            None => Lookup::Missing,
        }
    }

    /// Records that a stale entry was found unchanged on disk.
    pub fn confirm(&mut self, key: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.checked = now;
        }
    }

    /// Stores `resource` under `key` if it is small enough, evicting the least recently
    /// used entries to stay within the budget.
    pub fn insert(&mut self, key: &str, resource: Resource, now: Instant, budget_bytes: u64) {
        self.remove(key);
        let cost = resource.cost_bytes() + key.len() as u64;
        if !resource.in_memory() || cost > budget_bytes / 8 {
            return;
        }
        while self.used_bytes + cost > budget_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        self.used_bytes += cost;
        self.entries.insert(
            key.into(),
            Entry {
                resource,
                cost,
                checked: now,
                used: now,
            },
        );
    }

    /// Drops `key` if present.
    pub fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.used_bytes -= entry.cost;
        }
    }
}
