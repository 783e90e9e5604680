//! The response cache one shoal instance shares across its workers (issue 16): upstream
//! responses of routes with `cache = true`, stored as files under `[cache] path` and served
//! from them with sendfile. Workers share it through the filesystem: an entry one worker
//! stores, every worker answers from.
//!
//! - `policy.rs`: RFC 9111 for a shared cache: what is stored, how it ages, when stale may
//!   serve.
//! - `entry.rs`: one stored response on disk, written whole or not at all.
//! - `store.rs`: the directory, and which file holds which key.
//! - `fill.rs`: storing an upstream's answer while it goes to the client.
//! - `serve.rs`: answering from an entry.
//! - `keep.rs`: the master's keeper, which holds the cache within `max_size`.
//! - `lock.rs`: one fetch per key at a time across the workers (request collapsing).
//! - `purge.rs`: removing entries by key prefix, for operators.

pub mod entry;
mod fill;
pub mod keep;
mod lock;
pub mod policy;
pub mod purge;
mod serve;
pub mod store;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fs::FileTimes;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{CacheStore, RouteCache};
use crate::http::conditional;
use crate::http::request::{Method, RequestHead};
use crate::stats::CacheEvent;
use entry::{Entry, Meta};
pub use fill::{Fill, Tee};
use lock::Locks;
use policy::{Directives, RequestFacts, Rules, Usable};
use serve::Hot;
pub use serve::{answer, Found};
use store::Store;

/// The largest body one entry holds; a longer response goes to its client unstored.
const MAX_ENTRY_BYTES: u64 = 1 << 30;

/// What every process of the instance counts together about the cache (in the shared
/// memory the master maps before it forks).
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Bytes on disk, which the master's keeper holds within `max_size`.
    pub bytes: &'static AtomicU64,
    /// Purges begun (`purge.rs`).
    pub purges: &'static AtomicU64,
}

impl Counts {
    fn purges(counts: Option<Counts>) -> u64 {
        counts.map_or(0, |counts| counts.purges.load(SeqCst))
    }
}

/// A worker's way into the cache.
#[derive(Debug)]
pub struct Cache {
    store: Store,
    /// This worker's locks of keys being fetched (none: the lock file could not be opened,
    /// and requests do not wait for each other).
    locks: Option<Rc<Locks>>,
    max_entry_bytes: u64,
    /// The instance's counts (none outside a master's workers).
    counts: Option<Counts>,
    /// What this worker's cache did, for its heartbeat.
    events: Rc<Events>,
    /// Small entries this worker answered from lately, kept in memory.
    hot: RefCell<HotMap>,
    /// The purge count when the copies in `hot` were checked: a purge since drops them all.
    purges_seen: Cell<u64>,
}

/// Small entries in a worker's memory, by key: at most [`HOT_MAX_BYTES`] of bodies, the
/// oldest loaded going first. A copy answers while it is fresh; another worker may store a
/// newer entry meanwhile, and either is a valid answer until it goes stale.
#[derive(Debug, Default)]
struct HotMap {
    entries: HashMap<Vec<u8>, Rc<Hot>>,
    order: VecDeque<Vec<u8>>,
    bytes: usize,
}

/// What a stale entry answering while it is refreshed says.
const STALE_WHILE_REVALIDATE: &[u8] = b"shoal; hit; detail=stale-while-revalidate";

/// Bodies up to this size are kept in memory once they answered.
const HOT_MAX_BODY_BYTES: u64 = 64 * 1024;
/// Memory a worker gives to such copies.
const HOT_MAX_BYTES: usize = 16 << 20;

impl HotMap {
    fn insert(&mut self, key: Vec<u8>, hot: Rc<Hot>) {
        while self.bytes + hot.body.len() > HOT_MAX_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= gone.body.len();
            }
        }
        self.bytes += hot.body.len();
        if let Some(replaced) = self.entries.insert(key.clone(), hot) {
            self.bytes -= replaced.body.len();
        } else {
            self.order.push_back(key);
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(gone) = self.entries.remove(key) {
            self.bytes -= gone.body.len();
            self.order.retain(|k| k != key);
        }
    }
}

/// A worker's count of cache events, shared with the fills under way.
#[derive(Debug, Default)]
pub struct Events([Cell<u64>; CacheEvent::ALL.len()]);

impl Events {
    fn count(&self, event: CacheEvent) {
        let cell = &self.0[event as usize];
        cell.set(cell.get() + 1);
    }
}

/// What the cache makes of a request on a caching route.
#[derive(Debug)]
pub enum Lookup {
    /// An entry answers it, with this `Cache-Status`.
    Hit(Found, &'static [u8]),
    /// Another request is fetching its key: ask again shortly, for at most this long.
    Wait(Duration),
    /// A stale entry answers it (within stale-while-revalidate), with this `Cache-Status`;
    /// then the upstream refreshes the entry in the background of the client's connection.
    Refresh(Found, &'static [u8], Box<Fill>),
    /// The upstream answers, and its answer may be stored.
    Forward(Box<Fill>),
}

/// Whether a request waited for another's fetch of its key (request collapsing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    No,
    /// It waited, and may wait on.
    Within,
    /// It waited its route's whole `cache_lock_timeout`: it goes upstream now.
    Out,
}

/// Why a request went upstream, as Cache-Status's `fwd` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// No entry.
    Miss,
    /// An entry for another variant of the `Vary` headers.
    VaryMiss,
    /// The entry is stale.
    Stale,
    /// A HEAD with no entry: it goes upstream as a HEAD, and is not stored.
    Method,
}

impl Forwarded {
    fn as_str(self) -> &'static str {
        match self {
            Forwarded::Miss | Forwarded::Method => "miss",
            Forwarded::VaryMiss => "vary-miss",
            Forwarded::Stale => "stale",
        }
    }
}

impl Cache {
    pub fn new(config: &CacheStore, counts: Option<Counts>) -> Cache {
        let locks = Locks::open(&config.path)
            .inspect_err(|e| {
                log::warn!(
                    "cache: cannot open the lock file in {}: {e}",
                    config.path.display()
                )
            })
            .ok();
        Cache {
            store: Store::new(&config.path),
            locks,
            max_entry_bytes: MAX_ENTRY_BYTES.min(config.max_size_bytes),
            counts,
            events: Rc::default(),
            hot: RefCell::default(),
            purges_seen: Cell::new(Counts::purges(counts)),
        }
    }

    /// The fresh copy of `key` this worker keeps in memory, if it fits the request's `Vary`
    /// headers; a stale one is dropped (the disk entry takes over).
    fn hot_hit(&self, key: &[u8], head: &RequestHead, buf: &[u8], now: u64) -> Option<Rc<Hot>> {
        let purges = Counts::purges(self.counts);
        if purges != self.purges_seen.get() {
            self.purges_seen.set(purges);
            *self.hot.borrow_mut() = HotMap::default();
        }
        let mut hot = Rc::clone(self.hot.borrow().entries.get(key)?);
        if !vary_matches(&hot.meta, head, buf) {
            let variant = variant_key(key, &hot.meta, head, buf);
            hot = Rc::clone(self.hot.borrow().entries.get(&variant)?);
            if !vary_matches(&hot.meta, head, buf) {
                return None;
            }
        }
        if hot.meta.freshness.usable(now) != Usable::Fresh {
            self.hot.borrow_mut().remove(&hot.meta.key);
            return None;
        }
        // The keeper orders files by their atime: a copy in memory still marks its file used.
        if now.saturating_sub(hot.noted.get()) >= 60 {
            hot.noted.set(now);
            let _ = std::fs::File::open(&hot.path)
                .and_then(|file| file.set_times(FileTimes::new().set_accessed(SystemTime::now())));
        }
        Some(hot)
    }

    /// A fresh entry read from disk: a small one is kept in memory from now on.
    fn keep_hot(&self, path: PathBuf, entry: Entry, now: u64) -> Found {
        if entry.body_len > HOT_MAX_BODY_BYTES {
            return Found::Disk(Box::new(entry));
        }
        let mut body = vec![0u8; entry.body_len as usize];
        if entry.file.read_exact_at(&mut body, entry.body_offset).is_err() {
            return Found::Disk(Box::new(entry));
        }
        let hot = Rc::new(Hot {
            meta: entry.meta,
            body: body.into(),
            path,
            noted: Cell::new(now),
        });
        self.hot
            .borrow_mut()
            .insert(hot.meta.key.clone(), Rc::clone(&hot));
        Found::Memory(hot)
    }

    /// What this worker's cache did since it started, in [`CacheEvent::ALL`] order.
    pub fn events(&self) -> [u64; CacheEvent::ALL.len()] {
        std::array::from_fn(|i| self.events.0[i].get())
    }

    /// Looks up the GET or HEAD request `head` (its bytes in `buf`), on a route caching as
    /// `route` says; `secure` and `host` complete its key; `waited`: whether it waited for
    /// another request's fetch of its key already.
    pub fn lookup(
        &self,
        route: &RouteCache,
        head: &RequestHead,
        buf: &[u8],
        (secure, host): (bool, Option<&[u8]>),
        waited: Waited,
    ) -> Lookup {
        let key = key(secure, host, head.target.of(buf));
        let now = unix_now();
        let hit_status: &'static [u8] = match waited {
            Waited::No => b"shoal; hit",
            Waited::Within | Waited::Out => b"shoal; hit; collapsed",
        };
        if let Some(hot) = self.hot_hit(&key, head, buf, now) {
            self.events.count(CacheEvent::Hit);
            return Lookup::Hit(Found::Memory(hot), hit_status);
        }
        let (mut path, mut hash) = self.store.locate(&key);
        let mut key = key;
        let mut opened = Entry::open(&path);
        // The entry is another variant of its `Vary` headers: this request's has its own.
        let variant = match &opened {
            Ok(Some(entry)) if entry.meta.key == key && !vary_matches(&entry.meta, head, buf) => {
                key = variant_key(&key, &entry.meta, head, buf);
                (path, hash) = self.store.locate(&key);
                opened = Entry::open(&path);
                true
            }
            _ => false,
        };
        let other_variant = match variant {
            true => Forwarded::VaryMiss,
            false => Forwarded::Miss,
        };
        let mut stale = None;
        let mut usable = Usable::Stale;
        let forwarded = match opened {
            Ok(Some(entry)) if entry.meta.key != key => other_variant,
            Ok(Some(entry)) if !vary_matches(&entry.meta, head, buf) => Forwarded::VaryMiss,
            Ok(Some(entry)) => {
                usable = entry.meta.freshness.usable(now);
                if usable == Usable::Fresh {
                    entry.note_use();
                    self.events.count(CacheEvent::Hit);
                    let found = self.keep_hot(path, entry, now);
                    return Lookup::Hit(found, hit_status);
                }
                stale = Some(entry);
                Forwarded::Stale
            }
            Ok(None) if head.method == Method::Head => Forwarded::Method,
            Ok(None) => other_variant,
            Err(e) => {
                log::debug!("cannot read the cache entry {}: {e}", path.display());
                Forwarded::Miss
            }
        };
        // One fetch per key at a time: the others wait for its entry, or, within
        // stale-while-revalidate, get the stale one at once.
        let lock = match (&self.locks, head.method) {
            (Some(locks), Method::Get) => match locks.try_lock(hash) {
                Some(held) => Some(held),
                None if usable == Usable::WhileRevalidating => {
                    let entry = stale.expect("a stale entry to be usable");
                    self.events.count(CacheEvent::Stale);
                    return Lookup::Hit(Found::Disk(Box::new(entry)), STALE_WHILE_REVALIDATE);
                }
                None if waited != Waited::Out => {
                    if waited == Waited::No {
                        self.events.count(CacheEvent::Collapsed);
                    }
                    return Lookup::Wait(route.lock_timeout);
                }
                None => None,
            },
            _ => None,
        };
        let mut directives = Directives::default();
        head.fields_named(buf, "cache-control")
            .for_each(|value| directives.add(value));
        let request = RequestFacts {
            get: head.method == Method::Get,
            authorization: head.field(buf, "authorization").is_some(),
            directives,
        };
        let rules = Rules {
            ttl: route.ttl.map(|ttl| ttl.as_secs()),
            stale_while_revalidate: route.stale_while_revalidate.as_secs(),
            stale_if_error: route.stale_if_error.as_secs(),
        };
        // Within stale-while-revalidate, the request that holds the lock refreshes the
        // entry in the background of its own answer.
        let refresh = match (&stale, &lock) {
            (Some(entry), Some(_)) if usable == Usable::WhileRevalidating => entry.try_clone().ok(),
            _ => None,
        };
        let fill = Fill {
            key,
            path,
            request,
            rules,
            forwarded,
            request_head: head.clone(),
            request_bytes: buf[..head.len].to_vec(),
            requested_at: unix_now(),
            max_entry_bytes: self.max_entry_bytes,
            counts: self.counts,
            purges_at_start: Counts::purges(self.counts),
            stale,
            lock,
            writer: None,
            answered: false,
            background: refresh.is_some().then(Box::default),
            events: Rc::clone(&self.events),
        };
        if let Some(entry) = refresh {
            self.events.count(CacheEvent::Stale);
            let found = Found::Disk(Box::new(entry));
            return Lookup::Refresh(found, STALE_WHILE_REVALIDATE, Box::new(fill));
        }
        self.events.count(CacheEvent::Miss);
        Lookup::Forward(Box::new(fill))
    }
}

/// The cache key: scheme, host (lower case, as the client sent it) and target (path and
/// query as received).
fn key(secure: bool, host: Option<&[u8]>, target: &[u8]) -> Vec<u8> {
    let scheme: &[u8] = if secure { b"https://" } else { b"http://" };
    let host = host.unwrap_or_default();
    let mut key = Vec::with_capacity(scheme.len() + host.len() + target.len());
    key.extend_from_slice(scheme);
    key.extend(host.iter().map(u8::to_ascii_lowercase));
    key.extend_from_slice(target);
    key
}

/// The request's value of the header `name`: its lines joined by ", " (empty if absent).
fn request_value(head: &RequestHead, buf: &[u8], name: &[u8]) -> Vec<u8> {
    let name = std::str::from_utf8(name).unwrap_or_default();
    let mut value = Vec::new();
    for (i, line) in head.fields_named(buf, name).enumerate() {
        if i > 0 {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(line.trim_ascii());
    }
    value
}

/// The key of the request's variant of `entry`, whose `Vary` names headers: the entry's key
/// and the request's values of those headers. It starts with the entry's key, so a purge of
/// a URL takes its variants too.
fn variant_key(key: &[u8], entry: &Meta, head: &RequestHead, buf: &[u8]) -> Vec<u8> {
    let mut variant = key.to_vec();
    for (name, _) in &entry.vary {
        variant.push(0);
        variant.extend_from_slice(name);
        variant.push(b'=');
        variant.extend_from_slice(&request_value(head, buf, name));
    }
    variant
}

/// The request sends the values the entry was stored for, for every header its `Vary` names.
fn vary_matches(meta: &Meta, head: &RequestHead, buf: &[u8]) -> bool {
    (meta.vary.iter()).all(|(name, value)| request_value(head, buf, name) == *value)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// An HTTP date as Unix seconds.
fn http_date(value: &[u8]) -> Option<u64> {
    let time = conditional::parse_date(value)?;
    Some(time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs()))
}
