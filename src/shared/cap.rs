//! One upstream server's concurrency cap for the whole instance: a row of cells, one per
//! request allowed in flight.
//!
//! A cell is free, blocked (not part of the cap now), or held by the pid of the worker whose
//! request uses it. Taking a permit is one compare-and-swap of a free cell to the worker's pid,
//! so the count and its owner change together: the cap can never be overshot, and when a
//! worker dies the master frees exactly the cells that name it. When a reload lowers the cap
//! below what is held, held cells are marked surplus: they become blocked when given back,
//! and no cell is taken while one of them is held, so the server never sees a new request
//! over the new cap.
//!
//! Invariant, kept by every operation: among the cells below `span`, the free ones plus the
//! held ones not marked surplus number exactly `cap`.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

/// A cell no request holds.
const FREE: u32 = 0;
/// A cell outside the cap.
const BLOCKED: u32 = u32::MAX;
/// On a held cell: the cap was lowered, so the cell is blocked when given back.
const SURPLUS: u32 = 1 << 31;

/// One server's row in the shared memory.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    pub(super) cap: &'static AtomicU32,
    /// Cells at or past it have never been part of the cap (and are not looked at).
    pub(super) span: &'static AtomicU32,
    pub(super) cells: &'static [AtomicU32],
}

/// Who holds a cell, if anyone.
fn holder(value: u32) -> Option<u32> {
    (value != FREE && value != BLOCKED).then_some(value & !SURPLUS)
}

/// A held cell over a lowered cap.
fn is_surplus(value: u32) -> bool {
    value != BLOCKED && value & SURPLUS != 0
}

impl Cap {
    /// Takes a free cell for `pid`, looking from `start` on (workers start at different
    /// places so they rarely race for one cell). Returns the cell's index. Nothing is taken
    /// while a surplus cell is held: the requests over a lowered cap finish first.
    pub fn take(&self, pid: u32, start: usize) -> Option<usize> {
        let cells = self.live();
        if cells.iter().any(|c| is_surplus(c.load(SeqCst))) {
            return None;
        }
        let start = start % cells.len().max(1);
        (start..cells.len()).chain(0..start).find(|&i| {
            cells[i].load(SeqCst) == FREE && cells[i].compare_exchange(FREE, pid, SeqCst, SeqCst).is_ok()
        })
    }

    /// The cells below the span.
    fn live(&self) -> &'static [AtomicU32] {
        &self.cells[..self.span.load(SeqCst) as usize]
    }

    /// Gives back cell `index`, held by `pid`.
    pub fn give_back(&self, index: usize, pid: u32) {
        let cell = &self.cells[index];
        let _ = cell.fetch_update(SeqCst, SeqCst, |value| {
            debug_assert_eq!(
                holder(value),
                Some(pid),
                "cell {index} given back by a non-holder"
            );
            Some(if value & SURPLUS != 0 { BLOCKED } else { FREE })
        });
    }

    /// True when [`Cap::take`] would find a cell now.
    pub fn has_room(&self) -> bool {
        let cells = self.live();
        cells.iter().any(|c| c.load(SeqCst) == FREE) && !cells.iter().any(|c| is_surplus(c.load(SeqCst)))
    }

    /// Requests in flight on the server (cells held, surplus included).
    pub fn in_flight(&self) -> u32 {
        self.live()
            .iter()
            .filter(|c| holder(c.load(SeqCst)).is_some())
            .count() as u32
    }

    /// Cells held by `pid`.
    pub fn held_by(&self, pid: u32) -> u32 {
        self.live()
            .iter()
            .filter(|c| holder(c.load(SeqCst)) == Some(pid))
            .count() as u32
    }

    /// The cap now.
    pub fn cap(&self) -> u32 {
        self.cap.load(SeqCst)
    }

    /// Frees every cell whose holder `gone` says is dead. Returns how many it freed.
    pub fn reclaim(&self, gone: impl Fn(u32) -> bool) -> u32 {
        let mut freed = 0;
        for cell in self.live() {
            let reclaimed = cell.fetch_update(SeqCst, SeqCst, |value| {
                let dead = holder(value).is_some_and(&gone);
                dead.then_some(if value & SURPLUS != 0 { BLOCKED } else { FREE })
            });
            freed += u32::from(reclaimed.is_ok());
        }
        freed
    }

    /// Changes the cap (the master, at a reload). A raise first unmarks surplus cells, then
    /// frees blocked ones, then widens the span; a cut first blocks free cells, then marks
    /// held ones surplus (their requests finish; no new one starts until they have).
    pub fn set_cap(&self, new: u32) {
        let old = self.cap.load(SeqCst);
        let mut need = new.abs_diff(old);
        let passes: [fn(u32) -> Option<u32>; 2] = if new > old {
            [
                |v| is_surplus(v).then_some(v & !SURPLUS),
                |v| (v == BLOCKED).then_some(FREE),
            ]
        } else {
            [
                |v| (v == FREE).then_some(BLOCKED),
                |v| holder(v).filter(|_| !is_surplus(v)).map(|_| v | SURPLUS),
            ]
        };
        for pass in passes {
            for cell in self.live() {
                if need == 0 {
                    break;
                }
                need -= u32::from(cell.fetch_update(SeqCst, SeqCst, pass).is_ok());
            }
        }
        let mut span = self.span.load(SeqCst) as usize;
        while new > old && need > 0 && span < self.cells.len() {
            self.cells[span].store(FREE, SeqCst);
            span += 1;
            need -= 1;
            self.span.store(span as u32, SeqCst);
        }
        self.cap.store(new, SeqCst);
    }

    /// Empties the row (the master, when no process uses it any more).
    pub(super) fn clear(&self) {
        let span = self.span.swap(0, SeqCst) as usize;
        for cell in &self.cells[..span] {
            cell.store(FREE, SeqCst);
        }
        self.cap.store(0, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row in plain memory (the atomics do not care where they live).
    fn row(cells: usize) -> Cap {
        let leak = |n: usize| &*Box::leak((0..n).map(|_| AtomicU32::new(0)).collect::<Box<[_]>>());
        Cap {
            cap: &leak(1)[0],
            span: &leak(1)[0],
            cells: leak(cells),
        }
    }

    /// The row's invariant: free cells plus unmarked held ones make the cap.
    fn assert_invariant(cap: &Cap) {
        let span = cap.span.load(SeqCst) as usize;
        let counted = cap.cells[..span]
            .iter()
            .map(|c| c.load(SeqCst))
            .filter(|&v| v == FREE || (v != BLOCKED && v & SURPLUS == 0))
            .count();
        assert_eq!(counted as u32, cap.cap(), "cells {:?}", &cap.cells[..span]);
    }

    #[test]
    fn the_cap_is_never_overshot_and_cells_come_back() {
        let cap = row(16);
        cap.set_cap(2);
        let a = cap.take(100, 0).expect("first");
        let b = cap.take(200, 5).expect("second");
        assert_ne!(a, b);
        assert_eq!(cap.take(300, 0), None, "at the cap");
        assert!(!cap.has_room());
        assert_eq!(cap.in_flight(), 2);
        cap.give_back(a, 100);
        assert!(cap.has_room());
        assert_eq!(cap.take(300, 0), Some(a));
        assert_invariant(&cap);
    }

    #[test]
    fn a_dead_holders_cells_are_reclaimed_and_no_other() {
        let cap = row(16);
        cap.set_cap(3);
        cap.take(100, 0).unwrap();
        cap.take(100, 0).unwrap();
        cap.take(200, 0).unwrap();
        assert_eq!(cap.reclaim(|pid| pid == 100), 2);
        assert_eq!(cap.in_flight(), 1);
        assert_eq!(cap.reclaim(|pid| pid == 100), 0);
        assert_invariant(&cap);
    }

    #[test]
    fn lowering_the_cap_lets_held_requests_finish_without_new_ones() {
        let cap = row(16);
        cap.set_cap(4);
        let held: Vec<usize> = (0..4).map(|i| cap.take(100 + i, 0).unwrap()).collect();
        cap.set_cap(2);
        assert_invariant(&cap);
        assert_eq!(cap.in_flight(), 4, "running requests are not cut");
        cap.give_back(held[0], 100);
        cap.give_back(held[1], 101);
        assert_eq!(cap.take(500, 0), None, "two still run: no room under a cap of 2");
        cap.give_back(held[2], 102);
        assert!(cap.take(500, 0).is_some(), "one runs: room for one more");
        assert_eq!(cap.take(501, 0), None);
        assert_invariant(&cap);
        // A dead holder of a surplus cell leaves it blocked, not free.
        cap.set_cap(1);
        assert_eq!(cap.reclaim(|pid| pid == 103 || pid == 500), 2);
        assert_eq!(cap.in_flight(), 0);
        assert!(cap.take(600, 0).is_some());
        assert_eq!(cap.take(601, 0), None);
        assert_invariant(&cap);
    }

    #[test]
    fn raising_the_cap_unmarks_surplus_then_unblocks_then_widens() {
        let cap = row(16);
        cap.set_cap(3);
        let held: Vec<usize> = (0..3).map(|i| cap.take(100 + i, 0).unwrap()).collect();
        cap.set_cap(1);
        cap.give_back(held[0], 100);
        cap.set_cap(2);
        assert_invariant(&cap);
        assert_eq!(cap.take(200, 0), None, "two still held under a cap of 2");
        cap.set_cap(6);
        assert_invariant(&cap);
        assert_eq!((0..10).filter_map(|i| cap.take(300 + i, 0)).count(), 4);
        assert_invariant(&cap);
    }

    #[test]
    fn racing_takers_share_exactly_the_cap() {
        let cap = row(64);
        cap.set_cap(5);
        let (taken, turn) = (AtomicU32::new(0), std::sync::Barrier::new(4));
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let (cap, taken, turn) = (&cap, &taken, &turn);
                scope.spawn(move || {
                    for round in 0..200 {
                        // All four race to take whatever they can, then hold it.
                        turn.wait();
                        let mine: Vec<usize> =
                            std::iter::from_fn(|| cap.take(t + 1, t as usize + round)).collect();
                        taken.fetch_add(mine.len() as u32, SeqCst);
                        turn.wait();
                        assert_eq!(taken.load(SeqCst), 5, "round {round}");
                        turn.wait();
                        if t == 0 {
                            taken.store(0, SeqCst);
                        }
                        for i in mine {
                            cap.give_back(i, t + 1);
                        }
                    }
                });
            }
        });
        assert_eq!(cap.in_flight(), 0);
        assert_invariant(&cap);
    }
}
