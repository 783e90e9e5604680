//! Client connections per client address for the whole instance (`limit_connections`): how
//! many connections each key (a server and a client address) holds in every worker together.
//!
//! A cell per connection counted, as a server's permits are (`cap.rs`): a cell is free (0)
//! or holds the key's tag and the pid of the worker whose connection it counts, written by
//! one compare-and-swap, so the count and its owner change together and the master frees
//! exactly the cells of a dead worker. A key's cells are all in the one region its hash
//! names; its count is the cells there with its tag.
//!
//! Taking a cell looks whether the key is under its limit, takes a free cell, then counts
//! again and gives the cell back if the key went over meanwhile. That makes the limit exact
//! without a lock: of the connections let through, the one whose second count began last
//! saw every other one's cell (each was taken before its own second count began, and is
//! still held), so it would have seen the key over its limit. Racing takers may both give
//! back and both be refused, which errs the safe way.
//!
//! A region whose cells are all taken by other keys cannot count a connection: it is let
//! through uncounted ([`Taken::Full`]), so an innocent client is not refused for the table's
//! sake; that needs 512 connections held at once by the keys of one region.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Regions of the table (a key's hash picks one).
pub const REGIONS: usize = 512;
/// Cells per region (one page): the connections its keys may hold together.
pub const REGION_CELLS: usize = 512;
/// Cells in the table (2 MiB): connections counted at once, all keys together.
pub const CELLS: usize = REGIONS * REGION_CELLS;
/// The highest `limit_connections`: a key may take up to half a region.
pub const MAX_PER_KEY: u32 = (REGION_CELLS / 2) as u32;
/// Words of the bitmap of regions ever used (the master's reclaim looks only at those).
pub const USED_WORDS: usize = REGIONS / 64;
/// Bits of a cell for the pid (Linux pids are below 2^22, `PID_MAX_LIMIT`); the rest are
/// the key's tag.
const PID_BITS: u32 = 22;
const PID_MASK: u64 = (1 << PID_BITS) - 1;

/// The table in the shared memory.
#[derive(Debug, Clone, Copy)]
pub struct Conns {
    pub(super) cells: &'static [AtomicU64],
    pub(super) used: &'static [AtomicU64],
}

/// A counted connection's cell, to give back when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    cell: usize,
    value: u64,
}

/// What [`Conns::take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The connection is counted in this cell.
    Held(Hold),
    /// The key holds its limit already: the connection is refused.
    Over,
    /// The key's region has no free cell: the connection goes uncounted.
    Full,
}

impl Conns {
    /// Counts a connection of `key` (a hash: `rates::key_of`) for worker `pid`, unless `key`
    /// holds `limit` connections already.
    pub fn take(&self, key: u64, limit: u32, pid: u32) -> Taken {
        let (region, tag) = split(key);
        self.used[region / 64].fetch_or(1 << (region % 64), SeqCst);
        let cells = self.region(region);
        let mut held = 0;
        for cell in cells {
            held += u32::from(tag_of(cell.load(SeqCst)) == Some(tag));
        }
        if held >= limit {
            return Taken::Over;
        }
        debug_assert!(u64::from(pid) <= PID_MASK && pid != 0, "pid {pid}");
        let value = tag << PID_BITS | (u64::from(pid) & PID_MASK);
        // Workers start at different cells so they rarely race for one.
        let start = pid as usize % REGION_CELLS;
        let Some(index) = (start..REGION_CELLS).chain(0..start).find(|&i| {
            cells[i].load(SeqCst) == 0 && cells[i].compare_exchange(0, value, SeqCst, SeqCst).is_ok()
        }) else {
            return Taken::Full;
        };
        let hold = Hold {
            cell: region * REGION_CELLS + index,
            value,
        };
        let counted = cells
            .iter()
            .filter(|c| tag_of(c.load(SeqCst)) == Some(tag))
            .count();
        if counted > limit as usize {
            self.give_back(hold);
            return Taken::Over;
        }
        Taken::Held(hold)
    }

    /// Gives back a connection's cell (it closed). A cell the master reclaimed meanwhile
    /// (its worker was taken for dead) is left alone.
    pub fn give_back(&self, hold: Hold) {
        let _ = self.cells[hold.cell].compare_exchange(hold.value, 0, SeqCst, SeqCst);
    }

    /// Connections `key` holds, in every worker.
    pub fn count(&self, key: u64) -> u32 {
        let (region, tag) = split(key);
        let cells = self.region(region);
        cells
            .iter()
            .filter(|c| tag_of(c.load(SeqCst)) == Some(tag))
            .count() as u32
    }

    /// Frees every cell whose worker `gone` says is dead. Returns how many it freed.
    pub fn reclaim(&self, gone: impl Fn(u32) -> bool) -> u32 {
        let mut freed = 0;
        for region in (0..REGIONS).filter(|&r| self.used[r / 64].load(SeqCst) & (1 << (r % 64)) != 0) {
            for cell in self.region(region) {
                let reclaimed = cell.fetch_update(SeqCst, SeqCst, |value| {
                    (value != 0 && gone((value & PID_MASK) as u32)).then_some(0)
                });
                freed += u32::from(reclaimed.is_ok());
            }
        }
        freed
    }

    /// Connections counted for worker `pid`, over every key.
    pub fn held_by(&self, pid: u32) -> u32 {
        let mut held = 0;
        for region in (0..REGIONS).filter(|&r| self.used[r / 64].load(SeqCst) & (1 << (r % 64)) != 0) {
            for cell in self.region(region) {
                let value = cell.load(SeqCst);
                held += u32::from(value != 0 && value & PID_MASK == u64::from(pid));
            }
        }
        held
    }

    fn region(&self, region: usize) -> &'static [AtomicU64] {
        &self.cells[region * REGION_CELLS..(region + 1) * REGION_CELLS]
    }
}

/// A key's region (its low bits) and tag (its high bits).
fn split(key: u64) -> (usize, u64) {
    (key as usize % REGIONS, key >> PID_BITS)
}

/// The tag of a held cell.
fn tag_of(value: u64) -> Option<u64> {
    (value != 0).then_some(value >> PID_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::rates::key_of;

    fn table() -> Conns {
        let leak = |n: usize| &*Box::leak((0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>());
        Conns {
            cells: leak(CELLS),
            used: leak(USED_WORDS),
        }
    }

    fn held(taken: Taken) -> Hold {
        match taken {
            Taken::Held(hold) => hold,
            other => panic!("not held: {other:?}"),
        }
    }

    #[test]
    fn a_key_holds_at_most_its_limit_and_gets_cells_back() {
        let conns = table();
        let (a, b) = (key_of(1, b"192.0.2.1"), key_of(1, b"192.0.2.2"));
        let holds: Vec<Hold> = (0..3).map(|i| held(conns.take(a, 3, 100 + i))).collect();
        assert_eq!(conns.take(a, 3, 100), Taken::Over);
        assert_eq!(conns.count(a), 3);
        held(conns.take(b, 3, 100));
        assert_eq!(conns.count(b), 1, "another client, another count");
        conns.give_back(holds[1]);
        assert_eq!(conns.count(a), 2);
        held(conns.take(a, 3, 102));
        assert_eq!(conns.take(a, 3, 102), Taken::Over);
        // A lower limit (a reload) refuses until enough have closed.
        assert_eq!(conns.take(a, 2, 100), Taken::Over);
    }

    #[test]
    fn a_dead_workers_cells_are_reclaimed_and_no_other() {
        let conns = table();
        let key = key_of(2, b"2001:db8::1");
        for pid in [500, 500, 501] {
            held(conns.take(key, 10, pid));
        }
        held(conns.take(key_of(2, b"other"), 10, 500));
        assert_eq!(conns.held_by(500), 3);
        assert_eq!(conns.reclaim(|pid| pid == 500), 3);
        assert_eq!(conns.count(key), 1);
        assert_eq!(conns.held_by(500), 0);
        assert_eq!(conns.reclaim(|pid| pid == 500), 0);
    }

    #[test]
    fn a_cell_reclaimed_then_taken_again_is_not_given_back_by_its_old_holder() {
        let conns = table();
        let key = key_of(3, b"x");
        let old = held(conns.take(key, 5, 700));
        conns.reclaim(|pid| pid == 700);
        let new = held(conns.take(key, 5, 700 + REGION_CELLS as u32));
        assert_eq!(old.cell, new.cell, "the same cell, for another worker");
        conns.give_back(old);
        assert_eq!(conns.count(key), 1);
    }

    #[test]
    fn a_full_region_lets_connections_through_uncounted() {
        let conns = table();
        // Keys of region 9 with tags apart (the tag is the hash's high bits).
        let region_of = |i: u64| i << 32 | 9;
        // Keys of one region, each at its limit, fill it.
        for i in 0..(REGION_CELLS / 256) as u64 {
            for _ in 0..256 {
                held(conns.take(region_of(i + 1), 256, 42));
            }
        }
        assert_eq!(conns.take(region_of(99), 256, 42), Taken::Full);
        assert_eq!(conns.take(region_of(1), 256, 42), Taken::Over);
        // Other regions are not affected.
        held(conns.take(region_of(1) + 1, 256, 42));
        assert_eq!(conns.count(region_of(1)), 256);
    }

    #[test]
    fn a_hundred_thousand_clients_fit_in_the_fixed_table() {
        let conns = table();
        let keys: Vec<u64> = (0..100_000u32).map(|i| key_of(4, &i.to_be_bytes())).collect();
        let holds: Vec<Taken> = keys.iter().map(|&key| conns.take(key, 20, 77)).collect();
        assert!(holds.iter().all(|t| matches!(t, Taken::Held(_))));
        assert_eq!(conns.held_by(77), 100_000);
        for taken in holds {
            let Taken::Held(hold) = taken else { unreachable!() };
            conns.give_back(hold);
        }
        assert_eq!(conns.held_by(77), 0);
        let busy = key_of(4, b"busy");
        for _ in 0..20 {
            held(conns.take(busy, 20, 77));
        }
        assert_eq!(conns.take(busy, 20, 78), Taken::Over);
    }

    #[test]
    fn racing_workers_never_hold_more_than_the_limit() {
        let conns = table();
        let key = key_of(5, b"racer");
        let (at_once, turn) = (AtomicU64::new(0), std::sync::Barrier::new(4));
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let (conns, at_once, turn) = (&conns, &at_once, &turn);
                scope.spawn(move || {
                    for round in 0..300 {
                        turn.wait();
                        let mine: Vec<Hold> = (0..5)
                            .filter_map(|_| match conns.take(key, 7, 1000 + t) {
                                Taken::Held(hold) => Some(hold),
                                _ => None,
                            })
                            .collect();
                        at_once.fetch_add(mine.len() as u64, SeqCst);
                        turn.wait();
                        let total = at_once.load(SeqCst);
                        assert!(total <= 7, "round {round}: {total} held");
                        assert_eq!(u64::from(conns.count(key)), total);
                        turn.wait();
                        if t == 0 {
                            at_once.store(0, SeqCst);
                        }
                        mine.into_iter().for_each(|hold| conns.give_back(hold));
                    }
                });
            }
        });
        assert_eq!(conns.count(key), 0);
    }
}
