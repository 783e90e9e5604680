//! What the master tells operators about itself: the snapshot behind `shoal status`.

use std::time::Instant;

use super::slots::{self, Life, Role, WorkerProc};
use super::{Master, Phase};
use crate::status::{MasterStatus, RestartReason, RetiringWorker, SlotStatus, Status, WorkerState};

impl Master {
    /// The master and every slot as they are now (reads each worker's RSS from /proc).
    pub(super) fn status(&self) -> Status {
        let now = Instant::now();
        let config = self.source.file.as_ref().map(|path| {
            std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string()
        });
        let state = match self.phase {
            Phase::Running => "running",
            Phase::Stopping { .. } => "stopping",
        };
        Status {
            master: MasterStatus {
                pid: std::process::id(),
                uptime_seconds: now.duration_since(self.started).as_secs(),
                config,
                generation: self.generation,
                state: state.to_string(),
            },
            workers: self
                .slots
                .iter()
                .map(|slot| self.slot_status(slot, now))
                .collect(),
        }
    }

    fn slot_status(&self, slot: &slots::Slot, now: Instant) -> SlotStatus {
        let ledger = self.ledgers.get(slot.index);
        let current = slot.current.as_ref();
        let empty = if slot.role == Role::Removing {
            WorkerState::Draining
        } else {
            WorkerState::Starting
        };
        SlotStatus {
            slot: slot.index,
            pid: current.map(|w| w.pid.as_raw() as u32),
            state: current.map_or(empty, state_of),
            uptime_seconds: current.map_or(0, |w| now.duration_since(w.started).as_secs()),
            rss_bytes: current.map_or(0, |w| slots::rss_bytes(w.pid)),
            requests: current.map_or(0, |w| w.counters.requests),
            active_connections: current.map_or(0, |w| w.counters.active),
            restarts: ledger.map_or(0, |l| l.restart_count()),
            last_restart: ledger.and_then(|l| l.last_restart),
            retiring: slot
                .retiring
                .iter()
                .map(|w| RetiringWorker {
                    pid: w.pid.as_raw() as u32,
                    state: state_of(w),
                    uptime_seconds: now.duration_since(w.started).as_secs(),
                    rss_bytes: slots::rss_bytes(w.pid),
                    requests: w.counters.requests,
                    active_connections: w.counters.active,
                })
                .collect(),
        }
    }
}

/// A worker's life as `status` names it.
fn state_of(worker: &WorkerProc) -> WorkerState {
    match worker.life {
        Life::Booting => WorkerState::Starting,
        Life::Serving | Life::Replaced => WorkerState::Running,
        Life::Draining { .. } => WorkerState::Draining,
        Life::Aborting { .. } => WorkerState::Hung,
        Life::Killed if worker.exit_reason == Some(RestartReason::Hung) => WorkerState::Hung,
        Life::Killed => WorkerState::Draining,
    }
}
