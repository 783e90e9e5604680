//! The slot table: which worker runs in which slot, and what to do about each.
//!
//! A slot owns its listening sockets for life; workers come and go in it. Decisions are
//! pure functions of the slot and the clock, so they are tested without processes.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::listeners::Listener;

/// A worker that lived less than this is said to have died young, and its slot backs off.
pub const YOUNG: Duration = Duration::from_secs(1);
/// First respawn delay after a young death; doubles with each young death in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest respawn delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What is in a slot right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupant {
    /// No worker; one may be spawned from `not_before` on.
    Vacant { not_before: Instant },
    /// A worker is running.
    Running { pid: Pid, since: Instant },
    /// A worker was asked to stop and has not exited yet.
    Stopping { pid: Pid },
}

/// One worker slot.
#[derive(Debug)]
pub struct Slot {
    /// Position in the table; also the worker's number in logs and its process name.
    pub index: usize,
    /// The slot's listening sockets, one per configured address.
    pub listeners: Vec<Listener>,
    /// Who is in it.
    pub occupant: Occupant,
    /// Young deaths in a row, for the backoff.
    pub young_deaths: u32,
}

impl Slot {
    /// An empty slot ready to spawn at once.
    pub fn new(index: usize, listeners: Vec<Listener>, now: Instant) -> Slot {
        Slot {
            index,
            listeners,
            occupant: Occupant::Vacant { not_before: now },
            young_deaths: 0,
        }
    }

    /// The running or stopping worker's pid.
    pub fn pid(&self) -> Option<Pid> {
        match self.occupant {
            Occupant::Running { pid, .. } | Occupant::Stopping { pid } => Some(pid),
            Occupant::Vacant { .. } => None,
        }
    }

    /// Records that the worker exited at `now` and decides when the next may start.
    pub fn vacate(&mut self, now: Instant) {
        let died_young = match self.occupant {
            Occupant::Running { since, .. } => now.duration_since(since) < YOUNG,
            _ => false,
        };
        self.young_deaths = if died_young { self.young_deaths + 1 } else { 0 };
        self.occupant = Occupant::Vacant {
            not_before: now + backoff(self.young_deaths),
        };
    }

    /// True when the slot is empty and its backoff has passed.
    pub fn ready_to_spawn(&self, now: Instant) -> bool {
        matches!(self.occupant, Occupant::Vacant { not_before } if not_before <= now)
    }
}

/// Respawn delay after `young_deaths` young deaths in a row.
pub fn backoff(young_deaths: u32) -> Duration {
    match young_deaths {
        0 => Duration::ZERO,
        n => FIRST_BACKOFF
            .saturating_mul(1 << (n - 1).min(16))
            .min(MAX_BACKOFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn young_deaths_back_off_old_ones_do_not() {
        let t0 = Instant::now();
        let mut slot = Slot::new(0, Vec::new(), t0);
        let pid = Pid::from_raw(42);
        slot.occupant = Occupant::Running { pid, since: t0 };
        slot.vacate(t0 + Duration::from_millis(10));
        assert_eq!(slot.young_deaths, 1);
        assert!(!slot.ready_to_spawn(t0 + Duration::from_millis(50)));
        assert!(slot.ready_to_spawn(t0 + Duration::from_millis(110)));
        slot.occupant = Occupant::Running { pid, since: t0 };
        slot.vacate(t0 + Duration::from_secs(5));
        assert_eq!(slot.young_deaths, 0);
        assert!(slot.ready_to_spawn(t0 + Duration::from_secs(5)));
    }
}
