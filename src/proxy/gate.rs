//! A capped upstream as one worker runs it: the shared caps of its servers, and this
//! worker's queue of requests waiting for a permit on one of them.
//!
//! A request takes a permit ([`Permit`]) only when it is its turn: nothing waits anywhere in the
//! instance, or it is this worker's oldest and no other worker shows an older ticket (see
//! `shared::line`). An older ticket that is not taken within [`PATIENCE`] (its worker hung)
//! is passed over, so one stuck worker cannot stall the others' queues.
//!
//! Permits given back during a loop turn go first to this worker's own waiting requests, in
//! their turn; what is still free at the end of the turn is passed on with one ring of the
//! bell, when another worker has a request waiting ([`Gate::pass_on`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::Upstream;
use crate::shared::{Bell, Cap, Line, RowKey, Shared};

/// How long a request lets an older one waiting in another worker take a free permit first.
const PATIENCE: Duration = Duration::from_millis(500);

/// A permit to send one request to a server; dropping it gives the permit back (and tells
/// its gate, which passes it on at the end of the loop turn).
#[derive(Debug)]
pub struct Permit {
    server: usize,
    cap: Cap,
    cell: usize,
    pid: u32,
    /// Its gate's "permits came back" flag.
    returned: Rc<Cell<bool>>,
}

impl Permit {
    /// The server it is for.
    pub fn server(&self) -> usize {
        self.server
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.cap.give_back(self.cell, self.pid);
        self.returned.set(true);
    }
}

/// A request waiting in this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    ticket: u64,
    /// The client connection whose request it is.
    conn: usize,
}

/// One capped upstream in this worker.
#[derive(Debug)]
pub struct Gate {
    line: Line,
    /// Per server of the upstream: its cap, if it has one.
    caps: Vec<Option<Cap>>,
    pid: u32,
    seat: usize,
    bell: &'static Bell,
    /// Requests waiting here, oldest first.
    waiting: VecDeque<Waiter>,
    /// An older ticket of another worker our oldest request let go first, and since when.
    deferred_to: Option<(u64, Instant)>,
    /// A permit came back since the last [`Gate::pass_on`].
    returned: Rc<Cell<bool>>,
}

impl Gate {
    /// The gate of `upstream` for worker process `pid` in seat `seat`; `None` when none of
    /// its servers is capped. Fails when the master did not make the rows it needs.
    pub fn open(
        upstream: &Upstream,
        shared: &'static Shared,
        pid: u32,
        seat: usize,
    ) -> Result<Option<Gate>, String> {
        if !upstream.is_capped() {
            return Ok(None);
        }
        let row = |key: RowKey| {
            let missing = || format!("no shared row for upstream {}", upstream.name);
            shared.find(key).ok_or_else(missing)
        };
        let line = shared.line(row(RowKey::line(&upstream.name))?);
        let mut caps = Vec::with_capacity(upstream.servers.len());
        for server in &upstream.servers {
            caps.push(match server.max_conns {
                0 => None,
                _ => Some(shared.cap(row(RowKey::cap(&upstream.name, &server.addr))?)),
            });
        }
        Ok(Some(Gate {
            line,
            caps,
            pid,
            seat,
            bell: &shared.bell,
            waiting: VecDeque::new(),
            deferred_to: None,
            returned: Rc::default(),
        }))
    }

    /// Whether `server` has room for one more request now (always, without a cap).
    pub fn has_room(&self, server: usize) -> bool {
        self.caps[server].is_none_or(|cap| cap.has_room())
    }

    /// A permit for `server`, if it has room; `Ok(None)` when it has no cap.
    pub fn take(&self, server: usize) -> Result<Option<Permit>, ()> {
        let Some(cap) = self.caps[server] else {
            return Ok(None);
        };
        // Workers look from different cells, so they rarely race for one.
        let cell = cap.take(self.pid, self.seat).ok_or(())?;
        Ok(Some(Permit {
            server,
            cap,
            cell,
            pid: self.pid,
            returned: Rc::clone(&self.returned),
        }))
    }

    /// Whether a request may take a permit now: one not yet queued (`ticket` none) when no
    /// request waits anywhere; a queued one when it is the oldest, or older ones elsewhere
    /// were given their [`PATIENCE`].
    pub fn turn(&mut self, ticket: Option<u64>, now: Instant) -> bool {
        let oldest_here = self.waiting.front().map(|w| w.ticket);
        if oldest_here != ticket {
            return false;
        }
        let Some(older) = self.line.oldest_elsewhere(self.seat) else {
            return true;
        };
        match ticket {
            Some(ticket) if older > ticket => true,
            None => false,
            Some(_) => match self.deferred_to {
                Some((deferred, since)) if deferred == older => {
                    now.saturating_duration_since(since) >= PATIENCE
                }
                _ => {
                    self.deferred_to = Some((older, now));
                    false
                }
            },
        }
    }

    /// At the end of a loop turn, after this worker's own waiting requests took what was
    /// theirs: wakes the other workers when permits came back during the turn, one is still
    /// free and a request waits elsewhere. One ring per turn, however many came back.
    pub fn pass_on(&self) {
        if self.returned.replace(false)
            && self.caps.iter().flatten().any(|cap| cap.has_room())
            && self.line.oldest_elsewhere(self.seat).is_some()
        {
            self.bell.ring();
        }
    }

    /// Queues the request of client connection `conn`; returns its ticket.
    pub fn join(&mut self, conn: usize) -> u64 {
        let ticket = self.line.ticket();
        self.waiting.push_back(Waiter { ticket, conn });
        self.publish();
        ticket
    }

    /// Takes `ticket` out of the queue (its request got a permit, timed out or was cancelled).
    pub fn leave(&mut self, ticket: u64) {
        // A request that gets its permit is almost always the first; cancelled ones are rare.
        if self.waiting.front().is_some_and(|w| w.ticket == ticket) {
            self.waiting.pop_front();
        } else if let Some(at) = self.waiting.iter().position(|w| w.ticket == ticket) {
            self.waiting.remove(at);
        }
        self.publish();
    }

    /// The connection whose request is the oldest waiting here, and its ticket.
    pub fn first_waiting(&self) -> Option<(usize, u64)> {
        self.waiting.front().map(|w| (w.conn, w.ticket))
    }

    /// Requests waiting here.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn publish(&self) {
        let head = self.waiting.front().map(|w| w.ticket);
        self.line.publish(self.seat, head, self.waiting.len());
    }
}
