//! State every process of one shoal instance shares: each capped upstream server's permits
//! ([`Cap`]), each capped upstream's queue order ([`Line`]), the workers' seats in it, the
//! bell they ring each other with, the TLS session ticket keys ([`Tickets`]), and the
//! guards' tables: request rate buckets ([`Rates`]) and connections per client ([`Conns`]).
//! docs/decisions/0004 and 0007 say why it is built this way.
//!
//! The master creates it before its first fork, so every worker inherits the mapping; a new
//! master in a binary upgrade maps the same memfd, so old and new workers count together.
//! Rows are found by a key made of the upstream's name (and the server's address), so a
//! reload that keeps a server keeps its count. Every value in it is an atomic; everything a
//! process holds names its pid, so the master can give back what a dead worker held.

mod cap;
mod conns;
mod line;
mod rates;
pub mod tickets;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::Instant;

use crate::sys::{self, SharedMemory};
pub use cap::Cap;
pub use conns::{Conns, Hold, Taken, MAX_PER_KEY as MAX_CONNECTIONS_PER_CLIENT};
pub use line::Line;
pub use rates::{key_of as limit_key, Rate, Rates, Verdict};
pub use tickets::{TicketKey, TicketKeys, Tickets};

/// The highest `max_conns` (cells in a server's row).
pub const MAX_CONNS: u32 = 4096;
/// Worker processes that can wait in queues at once (all generations together).
pub const SEATS: usize = 1024;
/// Rows: capped servers and capped upstreams, of every config still in use.
pub const ROWS: usize = 1024;

const MAGIC: u64 = u64::from_le_bytes(*b"shoal/q1");
const SEATS_HIGH_AT: usize = 8;
const SEATS_AT: usize = 64;
const KEYS_AT: usize = SEATS_AT + 4 * SEATS;
const TICKETS_AT: usize = KEYS_AT + 8 * ROWS;
/// The response cache's bytes on disk, as the workers and the master's keeper count them.
const CACHE_BYTES_AT: usize = TICKETS_AT + 8 * tickets::WORDS;
/// Purges of the response cache begun so far.
const CACHE_PURGES_AT: usize = CACHE_BYTES_AT + 8;
/// A random word the limits' keys are hashed with (0 until a master writes it).
const LIMITS_SEED_AT: usize = CACHE_PURGES_AT + 8;
/// Which regions of the connections table were ever used.
const CONNS_USED_AT: usize = LIMITS_SEED_AT + 8;
const ROWS_AT: usize = 16 * 1024;
const _: () = assert!(CONNS_USED_AT + 8 * conns::USED_WORDS <= ROWS_AT);
/// A row's fields come first, its cells (or seats' columns) from this offset.
const ROW_BODY_AT: usize = 64;
const ROW_BYTES: usize = ROW_BODY_AT + 4 * MAX_CONNS as usize;
/// The memfd's size before the limits' tables were added at its end (binaries from before
/// issue 17). A new master adopts a memfd of this size and grows it: every offset before it
/// is the same in both layouts, so old and new workers share caps, queues and keys.
const LEN_BEFORE_LIMITS: usize = ROWS_AT + ROWS * ROW_BYTES;
/// The request rate buckets.
const RATES_AT: usize = LEN_BEFORE_LIMITS;
/// The connections per client.
const CONNS_AT: usize = RATES_AT + 8 * rates::WORDS;
/// The memfd's size (sparse: only rows and table pages in use ever get pages).
const LEN: usize = CONNS_AT + 8 * conns::CELLS;
const _: () = assert!(RATES_AT % 4096 == 0 && CONNS_AT % 4096 == 0);
/// Keys of lines have this bit set; keys of caps do not; 0 is no key.
const LINE_BIT: u64 = 1 << 63;

/// What a row is for, by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey(u64);

impl RowKey {
    /// The key of server `addr` (as the config writes it) of upstream `upstream`.
    pub fn cap(upstream: &str, addr: &impl std::fmt::Display) -> RowKey {
        let hash = fnv(&[b"cap", upstream.as_bytes(), addr.to_string().as_bytes()]);
        RowKey((hash & !LINE_BIT).max(1))
    }

    /// The key of upstream `upstream`'s queue.
    pub fn line(upstream: &str) -> RowKey {
        RowKey(fnv(&[b"line", upstream.as_bytes()]) | LINE_BIT)
    }

    fn is_line(self) -> bool {
        self.0 & LINE_BIT != 0
    }
}

/// FNV-1a over `parts`, each followed by a NUL (so parts cannot run into each other).
fn fnv(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|part| part.iter().chain(&[0]))
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// What [`Shared::reclaim`] gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Upstream permits (cells of caps).
    pub permits: u32,
    /// Client connections counted under `limit_connections`.
    pub connections: u32,
}

/// The limits' time: nanoseconds of `CLOCK_MONOTONIC`, which every process of the machine
/// reads alike (the buckets in the shared memory hold such times), read from a process's
/// `Instant`s (which std takes from the same clock) against one reading of both.
#[derive(Debug, Clone, Copy)]
pub struct LimitClock {
    at: Instant,
    nanos: u64,
}

impl LimitClock {
    /// Reads `CLOCK_MONOTONIC` on both sides of an `Instant`, until the two readings are
    /// within 20 µs of each other (a process preempted in between would put its buckets'
    /// times off by as long), and takes their middle.
    pub fn new() -> LimitClock {
        let read = || {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .expect("CLOCK_MONOTONIC is always there");
            (now.tv_sec() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(now.tv_nsec() as u64)
        };
        let mut best = None;
        for _ in 0..10 {
            let (before, at, after) = (read(), Instant::now(), read());
            let gap = after.saturating_sub(before);
            if best.is_none_or(|(best_gap, _)| gap < best_gap) {
                best = Some((
                    gap,
                    LimitClock {
                        at,
                        nanos: before + gap / 2,
                    },
                ));
            }
            if gap < 20_000 {
                break;
            }
        }
        best.expect("read at least once").1
    }

    /// `now` in nanoseconds of `CLOCK_MONOTONIC`.
    pub fn nanos(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.at) {
            Some(after) => self.nanos.saturating_add(after.as_nanos() as u64),
            None => (self.nanos).saturating_sub(self.at.duration_since(now).as_nanos() as u64),
        }
    }
}

impl Default for LimitClock {
    fn default() -> LimitClock {
        LimitClock::new()
    }
}

/// The eventfd a worker writes to when it gives back a permit another worker's request waits
/// for. Every worker polls it (edge-triggered: each write wakes every poller, and nobody
/// needs to read it).
#[derive(Debug)]
pub struct Bell(File);

impl Bell {
    pub fn ring(&self) {
        // Fails only when the counter is full, which 2^64 - 2 rings would take.
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// The instance's shared state, as one process maps it.
#[derive(Debug)]
pub struct Shared {
    memory: &'static SharedMemory,
    pub bell: Bell,
}

impl Shared {
    /// New, empty shared state (a master's first start).
    pub fn create() -> io::Result<&'static Shared> {
        let memory = SharedMemory::create("shoal-shared", LEN)?;
        memory.u64s(0, 1)[0].store(MAGIC, SeqCst);
        let bell = Bell(File::from(sys::eventfd()?));
        let shared: &'static Shared = Box::leak(Box::new(Shared { memory, bell }));
        shared.seed_limits()?;
        Ok(shared)
    }

    /// The shared state of the master this one upgrades, from the fds it passed; `None`
    /// unless they are a memfd of the right size (or of the size before the limits' tables,
    /// which it grows) and layout, and an eventfd.
    pub fn adopt(memfd: RawFd, eventfd: RawFd) -> Option<&'static Shared> {
        let memory = SharedMemory::adopt(memfd, LEN, &[LEN_BEFORE_LIMITS])?;
        if memory.u64s(0, 1)[0].load(SeqCst) != MAGIC {
            return None;
        }
        let bell = Bell(File::from(sys::adopt_eventfd(eventfd)?));
        let shared: &'static Shared = Box::leak(Box::new(Shared { memory, bell }));
        shared.seed_limits().ok()?;
        Some(shared)
    }

    /// Writes the limits' seed if no master has (a new memfd, or one an older binary made).
    fn seed_limits(&self) -> io::Result<()> {
        let seed = self.limits_seed();
        if seed.load(SeqCst) == 0 {
            let mut random = [0u8; 8];
            sys::random_bytes(&mut random)?;
            let _ = seed.compare_exchange(0, u64::from_le_bytes(random).max(1), SeqCst, SeqCst);
        }
        Ok(())
    }

    fn limits_seed(&self) -> &'static AtomicU64 {
        &self.memory.u64s(LIMITS_SEED_AT, 1)[0]
    }

    /// The request rate buckets (`limit_requests`).
    pub fn rates(&self) -> Rates {
        Rates {
            words: self.memory.u64s(RATES_AT, rates::WORDS),
        }
    }

    /// The connections counted per client (`limit_connections`).
    pub fn conns(&self) -> Conns {
        Conns {
            cells: self.memory.u64s(CONNS_AT, conns::CELLS),
            used: self.memory.u64s(CONNS_USED_AT, conns::USED_WORDS),
        }
    }

    /// What the keys of a limit declared at `scope` (a text naming its server and route,
    /// the same across reloads of the same config) are hashed from, with the instance's
    /// secret seed first: a client cannot pick values that land on another's bucket.
    pub fn limit_scope(&self, scope: &str) -> u64 {
        let seed = self.limits_seed().load(SeqCst).to_le_bytes();
        fnv(&[&seed, scope.as_bytes()])
    }

    /// The memfd and the eventfd, in that order (to pass to a new master, or keep in a
    /// forked worker).
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.memory.fd().as_fd(), self.bell.as_fd()]
    }

    /// The TLS session ticket keys.
    pub fn tickets(&self) -> Tickets {
        Tickets {
            words: self.memory.u64s(TICKETS_AT, tickets::WORDS),
        }
    }

    /// The response cache's bytes on disk: workers add what they store and take off what
    /// they replace; the master's keeper sets it from a count of the directory.
    pub fn cache_bytes(&self) -> &'static AtomicU64 {
        &self.memory.u64s(CACHE_BYTES_AT, 1)[0]
    }

    /// Purges of the response cache begun so far: the master's keeper adds one before it
    /// removes anything, and workers drop their in-memory copies when it moves.
    pub fn cache_purges(&self) -> &'static AtomicU64 {
        &self.memory.u64s(CACHE_PURGES_AT, 1)[0]
    }

    fn keys(&self) -> &'static [AtomicU64] {
        self.memory.u64s(KEYS_AT, ROWS)
    }

    fn seats(&self) -> &'static [AtomicU32] {
        self.memory.u32s(SEATS_AT, SEATS)
    }

    fn seats_high(&self) -> &'static AtomicU32 {
        &self.memory.u32s(SEATS_HIGH_AT, 1)[0]
    }

    /// The row of `key`, if there is one.
    pub fn find(&self, key: RowKey) -> Option<usize> {
        self.keys().iter().position(|k| k.load(SeqCst) == key.0)
    }

    /// The row of `key`, made (empty) if there is none. `None` when every row is taken.
    pub fn claim(&self, key: RowKey) -> Option<usize> {
        self.find(key).or_else(|| {
            self.keys()
                .iter()
                .position(|k| k.compare_exchange(0, key.0, SeqCst, SeqCst).is_ok())
        })
    }

    /// Every row in use, with its key.
    pub fn rows(&self) -> impl Iterator<Item = (usize, RowKey)> + '_ {
        self.keys()
            .iter()
            .enumerate()
            .map(|(i, k)| (i, RowKey(k.load(SeqCst))))
            .filter(|(_, key)| key.0 != 0)
    }

    /// Empties row `row` and makes it free for another key (the master, once no process of
    /// the instance uses it).
    pub fn free(&self, row: usize) {
        let key = RowKey(self.keys()[row].load(SeqCst));
        if key.is_line() {
            self.line(row).clear();
        } else {
            self.cap(row).clear();
        }
        self.keys()[row].store(0, SeqCst);
    }

    /// Row `row` as a server's cap.
    pub fn cap(&self, row: usize) -> Cap {
        let at = ROWS_AT + row * ROW_BYTES;
        let fields = self.memory.u32s(at, 2);
        Cap {
            cap: &fields[0],
            span: &fields[1],
            cells: self.memory.u32s(at + ROW_BODY_AT, MAX_CONNS as usize),
        }
    }

    /// Row `row` as an upstream's queue line.
    pub fn line(&self, row: usize) -> Line {
        let at = ROWS_AT + row * ROW_BYTES;
        let heads_at = at + ROW_BODY_AT;
        Line {
            next_ticket: &self.memory.u64s(at, 1)[0],
            heads: self.memory.u64s(heads_at, SEATS),
            queued: self.memory.u32s(heads_at + 8 * SEATS, SEATS),
            seats_high: self.seats_high(),
        }
    }

    /// Takes a seat for process `pid` (a worker, as it boots).
    pub fn take_seat(&self, pid: u32) -> Option<usize> {
        let seat = self
            .seats()
            .iter()
            .position(|s| s.compare_exchange(0, pid, SeqCst, SeqCst).is_ok())?;
        self.seats_high().fetch_max(seat as u32 + 1, SeqCst);
        Some(seat)
    }

    /// Gives back everything held by processes `gone` says are dead: their cells in every
    /// cap, their queues in every line, their seats, the client connections they counted.
    pub fn reclaim(&self, gone: impl Fn(u32) -> bool) -> Reclaimed {
        let mut freed = Reclaimed {
            permits: 0,
            connections: self.conns().reclaim(&gone),
        };
        let rows: Vec<(usize, RowKey)> = self.rows().collect();
        for (row, key) in &rows {
            if !key.is_line() {
                freed.permits += self.cap(*row).reclaim(&gone);
            }
        }
        for (seat, holder) in self.seats().iter().enumerate() {
            let pid = holder.load(SeqCst);
            if pid == 0 || !gone(pid) {
                continue;
            }
            for (row, _) in rows.iter().filter(|(_, key)| key.is_line()) {
                self.line(*row).clear_seat(seat);
            }
            holder.store(0, SeqCst);
        }
        freed
    }

    /// Permits held by process `pid`, over every server.
    pub fn held_by(&self, pid: u32) -> u32 {
        self.rows()
            .filter(|(_, key)| !key.is_line())
            .map(|(row, _)| self.cap(row).held_by(pid))
            .sum()
    }

    /// Every pid that holds a seat (every worker process using the shared state).
    pub fn seat_holders(&self) -> Vec<u32> {
        let seats = self.seats_high().load(SeqCst) as usize;
        self.seats()[..seats]
            .iter()
            .map(|s| s.load(SeqCst))
            .filter(|&pid| pid != 0)
            .collect()
    }
}

/// New shared state with rows for `servers` (upstream name, address, `max_conns`; 0 makes
/// only the upstream's line) and a seat for this process, for tests of its users.
#[cfg(test)]
pub fn for_tests<'a>(servers: impl IntoIterator<Item = (&'a str, String, u32)>) -> (&'static Shared, usize) {
    let shared = Shared::create().expect("shared state");
    for (upstream, addr, max_conns) in servers {
        shared.claim(RowKey::line(upstream)).expect("a row");
        if max_conns > 0 {
            let row = shared.claim(RowKey::cap(upstream, &addr)).expect("a row");
            shared.cap(row).set_cap(max_conns);
        }
    }
    let seat = shared.take_seat(std::process::id()).expect("a seat");
    (shared, seat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn rows_are_found_by_key_and_freed_rows_come_back_empty() {
        let shared = Shared::create().unwrap();
        let web = RowKey::cap("app", &"127.0.0.1:3000");
        let queue = RowKey::line("app");
        assert_ne!(web, RowKey::cap("app", &"127.0.0.1:3001"));
        assert_ne!(web, RowKey::cap("api", &"127.0.0.1:3000"));
        let row = shared.claim(web).unwrap();
        assert_eq!(shared.claim(web), Some(row));
        let line_row = shared.claim(queue).unwrap();
        assert_ne!(row, line_row);
        shared.cap(row).set_cap(2);
        shared.cap(row).take(42, 0).unwrap();
        assert_eq!(shared.rows().count(), 2);
        shared.free(row);
        assert_eq!(shared.find(web), None);
        let again = shared.claim(RowKey::cap("other", &"127.0.0.1:1")).unwrap();
        assert_eq!(again, row, "the freed row is reused");
        assert_eq!((shared.cap(again).cap(), shared.cap(again).in_flight()), (0, 0));
    }

    #[test]
    fn a_dead_workers_cells_queue_and_seat_are_given_back() {
        let shared = Shared::create().unwrap();
        let cap = shared.cap(shared.claim(RowKey::cap("app", &"127.0.0.1:3000")).unwrap());
        let line = shared.line(shared.claim(RowKey::line("app")).unwrap());
        cap.set_cap(4);
        let (dead, alive) = (1001, 1002);
        let dead_seat = shared.take_seat(dead).unwrap();
        let alive_seat = shared.take_seat(alive).unwrap();
        cap.take(dead, 0).unwrap();
        cap.take(dead, 0).unwrap();
        cap.take(alive, 0).unwrap();
        let ticket = line.ticket();
        line.publish(dead_seat, Some(ticket), 3);
        assert_eq!(line.oldest_elsewhere(alive_seat), Some(ticket));
        assert_eq!(shared.seat_holders(), vec![dead, alive]);
        assert_eq!(shared.reclaim(|pid| pid == dead).permits, 2);
        assert_eq!(cap.in_flight(), 1);
        assert_eq!(line.oldest_elsewhere(alive_seat), None);
        assert_eq!(line.queued(), 0);
        assert_eq!(shared.seat_holders(), vec![alive]);
        assert_eq!(shared.take_seat(1003), Some(dead_seat), "the seat is free again");
    }

    #[test]
    fn a_memfd_from_before_the_limits_is_adopted_grown_and_keeps_its_rows() {
        let memory = SharedMemory::create("old layout", LEN_BEFORE_LIMITS).unwrap();
        memory.u64s(0, 1)[0].store(MAGIC, SeqCst);
        let bell = Bell(File::from(sys::eventfd().unwrap()));
        let old: &'static Shared = Box::leak(Box::new(Shared { memory, bell }));
        let key = RowKey::cap("app", &"127.0.0.1:3000");
        let cap = old.cap(old.claim(key).unwrap());
        cap.set_cap(3);
        cap.take(42, 0).unwrap();
        let [memfd, bell] = old.fds();
        let memfd = nix::unistd::dup(memfd.as_raw_fd()).unwrap();
        let bell = nix::unistd::dup(bell.as_raw_fd()).unwrap();
        let new = Shared::adopt(memfd, bell).expect("an older layout is adopted");
        let row = new.find(key).expect("the old master's row");
        assert_eq!((new.cap(row).cap(), new.cap(row).in_flight()), (1 + 2, 1));
        assert_ne!(new.limits_seed().load(SeqCst), 0, "seeded on adoption");
        // The grown part works, and the old mapping still sees what the new one changes.
        let rate = Rate {
            interval_nanos: 1_000_000_000,
            burst: 0,
        };
        let client = limit_key(new.limit_scope("server a"), b"192.0.2.7");
        assert_eq!(
            new.rates().take(client, rate, 5),
            Verdict::Within { ahead_nanos: 0 }
        );
        assert!(matches!(new.rates().take(client, rate, 6), Verdict::Over { .. }));
        assert!(matches!(new.conns().take(client, 1, 77), Taken::Held(_)));
        new.cap(row).take(43, 0).unwrap();
        assert_eq!(old.cap(row).in_flight(), 2);
    }

    #[test]
    fn limit_scopes_are_seeded_per_instance_and_stable_within_one() {
        let (a, b) = (Shared::create().unwrap(), Shared::create().unwrap());
        assert_eq!(a.limit_scope("server x"), a.limit_scope("server x"));
        assert_ne!(a.limit_scope("server x"), a.limit_scope("server y"));
        assert_ne!(a.limit_scope("server x"), b.limit_scope("server x"));
    }

    #[test]
    fn a_dead_workers_counted_connections_are_reclaimed_with_its_permits() {
        let shared = Shared::create().unwrap();
        let key = limit_key(shared.limit_scope("s"), b"198.51.100.1");
        for pid in [11, 11, 12] {
            assert!(matches!(shared.conns().take(key, 5, pid), Taken::Held(_)));
        }
        let freed = shared.reclaim(|pid| pid == 11);
        assert_eq!(
            freed,
            Reclaimed {
                permits: 0,
                connections: 2
            }
        );
        assert_eq!(shared.conns().count(key), 1);
    }

    #[test]
    fn the_limit_clock_reads_instants_as_monotonic_nanoseconds() {
        let clock = LimitClock::new();
        let now = Instant::now();
        let later = now + std::time::Duration::from_millis(1500);
        assert_eq!(clock.nanos(later) - clock.nanos(now), 1_500_000_000);
        let other = LimitClock::new();
        let apart = other.nanos(now).abs_diff(clock.nanos(now));
        assert!(
            apart < 50_000_000,
            "two readings of the clock agree ({apart} ns apart)"
        );
    }

    #[test]
    fn a_second_mapping_sees_the_same_state() {
        let shared = Shared::create().unwrap();
        let key = RowKey::cap("app", &"127.0.0.1:3000");
        shared.cap(shared.claim(key).unwrap()).set_cap(3);
        let [memfd, bell] = shared.fds();
        let memfd = nix::unistd::dup(memfd.as_raw_fd()).unwrap();
        let bell = nix::unistd::dup(bell.as_raw_fd()).unwrap();
        let adopted = Shared::adopt(memfd, bell).expect("adopted");
        assert_eq!(adopted.cap(adopted.find(key).unwrap()).cap(), 3);
        let not_ours = SharedMemory::create("other", LEN).unwrap();
        let fd = nix::unistd::dup(not_ours.fd().as_raw_fd()).unwrap();
        let bell = nix::unistd::dup(shared.bell.as_fd().as_raw_fd()).unwrap();
        assert!(Shared::adopt(fd, bell).is_none(), "no magic: not shared state");
    }
}
