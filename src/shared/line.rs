//! One upstream's queue order across workers: tickets in arrival order, and each worker's
//! oldest waiting ticket.
//!
//! Requests wait in their own worker (a worker cannot hand a client socket to another), in
//! ticket order. A worker publishes the ticket at the head of its queue in its seat's column;
//! a freed permit goes to the oldest ticket anywhere, because a worker lets a request go only
//! when no other seat shows an older one. A worker left with a free permit at the end of its
//! loop turn rings the bell when any other seat has a request waiting, so that worker wakes
//! and takes its turn.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

/// A seat with nobody waiting.
const NOBODY: u64 = u64::MAX;

/// One upstream's row in the shared memory.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    pub(super) next_ticket: &'static AtomicU64,
    /// Per seat: the ticket at the head of that worker's queue, or [`NOBODY`].
    pub(super) heads: &'static [AtomicU64],
    /// Per seat: how many requests wait in that worker.
    pub(super) queued: &'static [AtomicU32],
    /// Seats at or past it have never been taken.
    pub(super) seats_high: &'static AtomicU32,
}

impl Line {
    /// A new ticket, later than every one before it.
    pub fn ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, SeqCst)
    }

    /// Publishes the state of seat `seat`'s queue: its head ticket and its length.
    pub fn publish(&self, seat: usize, head: Option<u64>, queued: usize) {
        self.queued[seat].store(queued as u32, SeqCst);
        self.heads[seat].store(head.unwrap_or(NOBODY), SeqCst);
    }

    /// The oldest ticket waiting in a seat other than `seat`.
    pub fn oldest_elsewhere(&self, seat: usize) -> Option<u64> {
        let seats = self.seats_high.load(SeqCst) as usize;
        let oldest = (0..seats)
            .filter(|&s| s != seat)
            .map(|s| self.heads[s].load(SeqCst))
            .min()
            .unwrap_or(NOBODY);
        (oldest != NOBODY).then_some(oldest)
    }

    /// Requests waiting in every worker together.
    pub fn queued(&self) -> u64 {
        let seats = self.seats_high.load(SeqCst) as usize;
        self.queued[..seats]
            .iter()
            .map(|q| u64::from(q.load(SeqCst)))
            .sum()
    }

    /// Forgets seat `seat`'s queue (the master, when its worker is gone).
    pub(super) fn clear_seat(&self, seat: usize) {
        self.publish(seat, None, 0);
    }

    /// Empties the row (the master, when no process uses it any more).
    pub(super) fn clear(&self) {
        for seat in 0..self.heads.len() {
            self.clear_seat(seat);
        }
        self.next_ticket.store(0, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leak<T>(items: impl Iterator<Item = T>) -> &'static [T] {
        Box::leak(items.collect::<Box<[T]>>())
    }

    #[test]
    fn the_oldest_ticket_elsewhere_is_seen_and_cleared_seats_are_not() {
        let line = Line {
            next_ticket: &leak(std::iter::once(AtomicU64::new(0)))[0],
            heads: leak((0..4).map(|_| AtomicU64::new(NOBODY))),
            queued: leak((0..4).map(|_| AtomicU32::new(0))),
            seats_high: &leak(std::iter::once(AtomicU32::new(3)))[0],
        };
        let (a, b, c) = (line.ticket(), line.ticket(), line.ticket());
        assert!(a < b && b < c);
        line.publish(0, Some(b), 2);
        line.publish(2, Some(a), 1);
        assert_eq!(line.oldest_elsewhere(0), Some(a));
        assert_eq!(line.oldest_elsewhere(2), Some(b));
        assert_eq!(line.queued(), 3);
        line.clear_seat(2);
        assert_eq!(line.oldest_elsewhere(0), None);
        assert_eq!(line.queued(), 2);
        // Seat 3 was never taken: it is not looked at.
        line.publish(3, Some(a), 1);
        assert_eq!(line.oldest_elsewhere(0), None);
    }
}
