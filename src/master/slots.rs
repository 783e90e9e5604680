//! The slot table: which workers run in which slot, and what to do about each.
//!
//! A slot owns its listening sockets for life; workers come and go in it. A slot has at most
//! one `current` worker (the one that should be accepting) and any number of `retiring` ones
//! (replaced or draining). Every decision is a pure function of a record and the clock, so
//! it is unit-tested without processes.

use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::listeners::Listener;
use super::tally::Labels;
use crate::channel::{Counters, End};
use crate::config::Supervisor;
use crate::status::RestartReason;

/// A worker that lived less than this is said to have died young, and its slot backs off.
pub const YOUNG: Duration = Duration::from_secs(1);
/// First respawn delay after a young death; doubles with each young death in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest respawn delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Time between SIGABRT to a hung worker and SIGKILL.
pub const ABORT_GRACE: Duration = Duration::from_millis(500);

/// Where a worker process is in its life, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Forked; no heartbeat yet.
    Booting,
    /// Beating and accepting.
    Serving,
    /// A successor is booting in its slot; it keeps serving until the successor beats.
    Replaced,
    /// Told to drain; SIGKILL at the deadline.
    Draining { deadline: Instant },
    /// Hung: SIGABRT sent; SIGKILL at `kill_at`.
    Aborting { kill_at: Instant },
    /// SIGKILL sent; waiting to reap it.
    Killed,
}

/// One worker process.
#[derive(Debug)]
pub struct WorkerProc {
    pub pid: Pid,
    /// The master's end of the worker's channel.
    pub channel: End,
    pub started: Instant,
    pub last_beat: Instant,
    pub counters: Counters,
    /// What the indices in `counters` name: the routes and upstreams of its config.
    pub labels: Rc<Labels>,
    pub life: Life,
    /// Fraction (0 to 0.1) taken off the age and request limits so workers spread out.
    pub jitter: f64,
    /// Why it could not start, if it said so before exiting.
    pub boot_error: Option<String>,
    /// Why the master decided to replace it (hung, recycled, reloaded), once it has.
    pub exit_reason: Option<RestartReason>,
}

impl WorkerProc {
    /// A worker just forked at `now`.
    pub fn new(pid: Pid, channel: End, now: Instant) -> WorkerProc {
        // Any spread will do; the pid and the clock differ between workers.
        let seed = (pid.as_raw() as u64).wrapping_mul(2_654_435_761) ^ now.elapsed().subsec_nanos() as u64;
        WorkerProc {
            pid,
            channel,
            started: now,
            last_beat: now,
            counters: Counters::default(),
            labels: Rc::default(),
            life: Life::Booting,
            jitter: (seed % 1000) as f64 / 10_000.0,
            boot_error: None,
            exit_reason: None,
        }
    }
}

/// What the master should do about a current worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// No heartbeat within heartbeat_timeout.
    Hung,
    /// Resident memory over max_worker_rss.
    Bloated {
        rss_bytes: u64,
    },
    /// Older than max_worker_age (jittered).
    Old,
    /// Served more than max_requests (jittered).
    Worn,
}

/// Judges a worker from its record, its resident memory and the clock.
pub fn assess(worker: &WorkerProc, rss_bytes: u64, now: Instant, policy: &Supervisor) -> Verdict {
    let silent = now.saturating_duration_since(worker.last_beat);
    if matches!(worker.life, Life::Booting | Life::Serving | Life::Replaced)
        && silent > policy.heartbeat_timeout
    {
        return Verdict::Hung;
    }
    if worker.life != Life::Serving {
        return Verdict::Fine;
    }
    let keep = 1.0 - worker.jitter;
    if policy.max_worker_rss_bytes > 0 && rss_bytes > policy.max_worker_rss_bytes {
        Verdict::Bloated { rss_bytes }
    } else if !policy.max_worker_age.is_zero()
        && now.saturating_duration_since(worker.started) > policy.max_worker_age.mul_f64(keep)
    {
        Verdict::Old
    } else if policy.max_requests > 0 && worker.counters.requests as f64 > policy.max_requests as f64 * keep {
        Verdict::Worn
    } else {
        Verdict::Fine
    }
}

/// Whether a slot takes part in serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Active,
    /// Being scaled away: its worker drains, then its sockets close.
    Removing,
}

/// One worker slot.
#[derive(Debug)]
pub struct Slot {
    /// Position in the table; also the worker's number in logs and its process name.
    pub index: usize,
    /// The slot's listening sockets, one per configured address.
    pub listeners: Vec<Listener>,
    pub role: Role,
    /// The worker that should be accepting.
    pub current: Option<WorkerProc>,
    /// Replaced or draining workers still finishing their requests.
    pub retiring: Vec<WorkerProc>,
    /// No spawn before this (crash backoff).
    pub not_before: Instant,
    /// Young deaths in a row, for the backoff.
    pub young_deaths: u32,
}

impl Slot {
    /// An empty slot ready to spawn at once.
    pub fn new(index: usize, listeners: Vec<Listener>, now: Instant) -> Slot {
        Slot {
            index,
            listeners,
            role: Role::Active,
            current: None,
            retiring: Vec::new(),
            not_before: now,
            young_deaths: 0,
        }
    }

    /// Every worker process in the slot.
    pub fn workers(&self) -> impl Iterator<Item = &WorkerProc> {
        self.current.iter().chain(self.retiring.iter())
    }

    /// Every worker process in the slot, mutably.
    pub fn workers_mut(&mut self) -> impl Iterator<Item = &mut WorkerProc> {
        self.current.iter_mut().chain(self.retiring.iter_mut())
    }

    /// Removes the worker with `pid` from the slot, if it is here.
    pub fn take(&mut self, pid: Pid) -> Option<WorkerProc> {
        if self.current.as_ref().is_some_and(|w| w.pid == pid) {
            return self.current.take();
        }
        let at = self.retiring.iter().position(|w| w.pid == pid)?;
        Some(self.retiring.remove(at))
    }

    /// Records that the current worker died at `now` and when the next may start.
    pub fn note_death(&mut self, worker: &WorkerProc, now: Instant) {
        let young = now.duration_since(worker.started) < YOUNG;
        self.young_deaths = if young { self.young_deaths + 1 } else { 0 };
        self.not_before = now + backoff(self.young_deaths);
    }

    /// True when the slot needs a worker and its backoff has passed.
    pub fn ready_to_spawn(&self, now: Instant) -> bool {
        self.role == Role::Active && self.current.is_none() && self.not_before <= now
    }

    /// True when new connections should be steered to this slot.
    pub fn accepting(&self) -> bool {
        self.role == Role::Active
            && self
                .current
                .as_ref()
                .is_some_and(|w| matches!(w.life, Life::Booting | Life::Serving))
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

/// Resident set size of `pid` in bytes, from /proc (0 if it cannot be read).
pub fn rss_bytes(pid: Pid) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel;

    fn worker(now: Instant) -> WorkerProc {
        let (end, _) = channel::pair().unwrap();
        let mut w = WorkerProc::new(Pid::from_raw(42), end, now);
        w.jitter = 0.0;
        w.life = Life::Serving;
        w
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn verdicts_follow_the_policy() {
        let t0 = Instant::now();
        let policy = Supervisor {
            max_worker_rss_bytes: 1000,
            max_worker_age: Duration::from_secs(60),
            max_requests: 100,
            ..Supervisor::default()
        };
        let mut w = worker(t0);
        assert_eq!(
            assess(&w, 10, t0 + Duration::from_secs(1), &policy),
            Verdict::Fine
        );
        assert_eq!(
            assess(&w, 5000, t0, &policy),
            Verdict::Bloated { rss_bytes: 5000 }
        );
        w.last_beat = t0 + Duration::from_secs(61);
        assert_eq!(
            assess(&w, 10, t0 + Duration::from_secs(62), &policy),
            Verdict::Old
        );
        w.started = t0 + Duration::from_secs(61);
        w.counters.requests = 101;
        assert_eq!(
            assess(&w, 10, t0 + Duration::from_secs(62), &policy),
            Verdict::Worn
        );
        assert_eq!(
            assess(&w, 10, t0 + Duration::from_secs(67), &policy),
            Verdict::Hung
        );
    }

    #[test]
    fn only_serving_workers_are_recycled_but_any_live_one_can_hang() {
        let t0 = Instant::now();
        let policy = Supervisor {
            max_worker_rss_bytes: 1,
            ..Supervisor::default()
        };
        let mut w = worker(t0);
        w.life = Life::Booting;
        assert_eq!(assess(&w, 5000, t0, &policy), Verdict::Fine);
        assert_eq!(assess(&w, 0, t0 + Duration::from_secs(6), &policy), Verdict::Hung);
        w.life = Life::Draining { deadline: t0 };
        assert_eq!(
            assess(&w, 5000, t0 + Duration::from_secs(6), &policy),
            Verdict::Fine
        );
    }

    #[test]
    fn zero_limits_are_off_and_jitter_recycles_earlier() {
        let t0 = Instant::now();
        let off = Supervisor {
            max_worker_rss_bytes: 0,
            ..Supervisor::default()
        };
        let w = worker(t0);
        assert_eq!(assess(&w, u64::MAX, t0, &off), Verdict::Fine);
        let policy = Supervisor {
            max_requests: 1000,
            ..Supervisor::default()
        };
        let mut w = worker(t0);
        w.counters.requests = 950;
        assert_eq!(assess(&w, 0, t0, &policy), Verdict::Fine);
        w.jitter = 0.1;
        assert_eq!(assess(&w, 0, t0, &policy), Verdict::Worn);
    }

    #[test]
    fn young_deaths_back_off_old_ones_do_not() {
        let t0 = Instant::now();
        let mut slot = Slot::new(0, Vec::new(), t0);
        let w = worker(t0);
        slot.note_death(&w, t0 + Duration::from_millis(10));
        assert_eq!(slot.young_deaths, 1);
        assert!(!slot.ready_to_spawn(t0 + Duration::from_millis(50)));
        assert!(slot.ready_to_spawn(t0 + Duration::from_millis(110)));
        slot.note_death(&w, t0 + Duration::from_secs(5));
        assert_eq!(slot.young_deaths, 0);
        assert!(slot.ready_to_spawn(t0 + Duration::from_secs(5)));
    }
}
