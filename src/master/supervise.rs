//! The verbs of the master's loop that watch workers: spawn, read reports, reap, enforce
//! deadlines, recycle, retire and steer.

use std::rc::Rc;
use std::time::Instant;

use log::{error, info, warn};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::slots::{self, Life, Role, Verdict, WorkerProc};
use super::tally::Labels;
use super::{spawn, Master, MasterError, Phase};
use crate::channel::{Command, Received, Report};
use crate::control::Outcome;
use crate::status::RestartReason;
use crate::sys;
use crate::worker::ListenSocket;

/// How a worker process ended.
enum Ending {
    Exited(i32),
    Signaled(Signal),
}

impl Master {
    /// Starts a worker in every slot that needs one and whose backoff has passed.
    pub(super) fn spawn_missing(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let now = Instant::now();
        for index in 0..self.slots.len() {
            if self.slots[index].ready_to_spawn(now) {
                self.spawn_into(index);
            }
        }
    }

    /// Forks a worker with the current config into slot `index` (as its current worker).
    pub(super) fn spawn_into(&mut self, index: usize) -> bool {
        let now = Instant::now();
        match spawn::spawn_worker(&self.slots[index], &self.config, self.shared_state) {
            Ok(mut worker) => {
                info!("worker {index} started (pid {})", worker.pid);
                worker.labels = Rc::new(Labels::of(&self.config));
                // A new worker learns the verdicts so far before it serves its first request.
                for (&(upstream, server), &up) in &self.health {
                    let _ = worker.channel.command(Command::Health { upstream, server, up });
                }
                self.slots[index].current = Some(worker);
                true
            }
            Err(e) => {
                error!("fork() failed while spawning worker {index}: {e}");
                self.slots[index].not_before = now + slots::backoff(1);
                false
            }
        }
    }

    /// Reads every worker's reports: heartbeats, boot failures, health verdicts.
    pub(super) fn read_reports(&mut self) {
        let now = Instant::now();
        let mut verdicts = Vec::new();
        for slot in &mut self.slots {
            let index = slot.index;
            for worker in slot.workers_mut() {
                absorb_reports(index, worker, now, &mut verdicts);
            }
        }
        for (upstream, server, up) in verdicts {
            self.share_health(upstream, server, up);
        }
    }

    /// Records a health verdict and tells every worker (each keeps its own balancer).
    fn share_health(&mut self, upstream: u32, server: u32, up: bool) {
        let described = self.config.upstreams.get(upstream as usize).and_then(|u| {
            let addr = &u.servers.get(server as usize)?.addr;
            Some(format!("upstream {} server {addr}", u.name))
        });
        let Some(described) = described else { return };
        if up {
            info!("{described} is healthy again (health check)");
        } else {
            warn!("{described} failed its health check: no new requests go to it");
        }
        self.health.insert((upstream, server), up);
        let command = Command::Health { upstream, server, up };
        for slot in &self.slots {
            for worker in slot.workers() {
                let _ = worker.channel.command(command);
            }
        }
    }

    /// Reaps exited workers (and a failed upgrade child) and decides what each exit means.
    pub(super) fn reap_exited(&mut self) -> Result<(), MasterError> {
        loop {
            let (pid, ending) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Ending::Exited(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, Ending::Signaled(signal)),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return Ok(()),
                Ok(_) => continue,
                Err(e) => {
                    error!("waitpid() failed while reaping workers: {e}");
                    return Ok(());
                }
            };
            if self.upgrade.as_ref().is_some_and(|u| u.pid == pid) {
                let how = match ending {
                    Ending::Exited(code) => format!("exit code {code}"),
                    Ending::Signaled(signal) => format!("killed by {signal}"),
                };
                let why =
                    format!("the new master (pid {pid}) exited before it was ready ({how}; see its log)");
                self.upgrade_failed(&why);
                continue;
            }
            let Some(index) = self.slots.iter().position(|s| s.workers().any(|w| w.pid == pid)) else {
                continue;
            };
            let mut worker = self.slots[index].take(pid).expect("found above");
            self.reclaim_from(pid);
            // What it said just before exiting (a last beat, why it cannot boot) is still queued.
            let mut verdicts = Vec::new();
            absorb_reports(index, &mut worker, Instant::now(), &mut verdicts);
            for (upstream, server, up) in verdicts {
                self.share_health(upstream, server, up);
            }
            self.ledgers
                .slot(index)
                .counted
                .add(&worker.counters, &worker.labels);
            self.after_exit(index, worker, ending)?;
        }
    }

    fn after_exit(&mut self, index: usize, worker: WorkerProc, ending: Ending) -> Result<(), MasterError> {
        let now = Instant::now();
        let planned = matches!(worker.life, Life::Draining { .. } | Life::Replaced)
            || matches!(self.phase, Phase::Stopping { .. });
        match ending {
            Ending::Exited(crate::worker::EXIT_FATAL) if worker.life == Life::Booting => {
                let message = worker.boot_error.clone().unwrap_or_else(|| "exit code 2".into());
                return self.boot_failed(index, message);
            }
            Ending::Exited(0) if planned => info!("worker {index} (pid {}) finished draining", worker.pid),
            Ending::Exited(code) => warn!("worker {index} (pid {}) exited with code {code}", worker.pid),
            Ending::Signaled(signal) => warn!("worker {index} (pid {}) killed by {signal}", worker.pid),
        }
        if planned || self.slots[index].current.is_some() {
            return Ok(());
        }
        let reason = worker.exit_reason.unwrap_or(RestartReason::Crash);
        self.ledgers.slot(index).note_restart(reason);
        self.slots[index].note_death(&worker, now);
        self.deaths.push_back(now);
        let window = self.config.supervisor.restart_window;
        while self
            .deaths
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.deaths.pop_front();
        }
        if self.deaths.len() > self.config.supervisor.restart_limit as usize {
            self.kill_all(Signal::SIGKILL);
            return Err(MasterError::CrashLoop {
                deaths: self.deaths.len(),
                window,
            });
        }
        Ok(())
    }

    /// A worker exited with code 2 before its first beat. During a reload the old workers
    /// stay; otherwise nothing can be served and the master stops.
    fn boot_failed(&mut self, index: usize, message: String) -> Result<(), MasterError> {
        if let Some(previous) = self.previous.take() {
            error!("reload failed: worker {index} cannot start with the new config: {message}; keeping the old workers");
            self.decide_reloads(
                Outcome::RolledBack,
                format!("worker {index} cannot start with the new config: {message}; the old workers keep serving"),
            );
            self.config = previous;
            self.generation = self.generation.saturating_sub(1);
            self.reloads.failed += 1;
            self.roll_back_reload();
            return Ok(());
        }
        self.kill_all(Signal::SIGKILL);
        Err(MasterError::WorkerBoot { slot: index, message })
    }

    /// Hung workers get SIGABRT then SIGKILL; drains past their deadline get SIGKILL.
    pub(super) fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        let policy = self.config.supervisor.clone();
        for slot in &mut self.slots {
            let index = slot.index;
            for worker in slot.workers_mut() {
                let signal = match worker.life {
                    Life::Aborting { kill_at } | Life::Draining { deadline: kill_at } if now >= kill_at => {
                        warn!(
                            "worker {index} (pid {}) did not exit in time: SIGKILL",
                            worker.pid
                        );
                        worker.life = Life::Killed;
                        Signal::SIGKILL
                    }
                    _ if slots::assess(worker, 0, now, &policy) == Verdict::Hung => {
                        warn!(
                            "worker {index} (pid {}) sent no heartbeat for {:?}: SIGABRT",
                            worker.pid, policy.heartbeat_timeout
                        );
                        worker.life = Life::Aborting {
                            kill_at: now + slots::ABORT_GRACE,
                        };
                        worker.exit_reason = Some(RestartReason::Hung);
                        Signal::SIGABRT
                    }
                    _ => continue,
                };
                let _ = kill(worker.pid, signal);
            }
        }
    }

    /// Recycles one bloated, old or worn worker at a time: successor first, then drain.
    pub(super) fn recycle(&mut self) {
        let busy = self
            .slots
            .iter()
            .any(|s| s.retiring.iter().any(|w| w.life == Life::Replaced));
        if self.phase != Phase::Running || busy {
            return;
        }
        let now = Instant::now();
        let policy = &self.config.supervisor;
        // The longest-running due worker goes first, and never one younger than a second:
        // a limit every fresh worker already exceeds must not recycle one slot in a loop.
        let due = self
            .slots
            .iter()
            .filter_map(|slot| {
                let worker = slot.current.as_ref().filter(|_| slot.role == Role::Active)?;
                if now.duration_since(worker.started) < slots::YOUNG {
                    return None;
                }
                let rss = if policy.max_worker_rss_bytes > 0 {
                    slots::rss_bytes(worker.pid)
                } else {
                    0
                };
                match slots::assess(worker, rss, now, policy) {
                    Verdict::Fine | Verdict::Hung => None,
                    verdict => Some((worker.started, slot.index, verdict)),
                }
            })
            .min_by_key(|(started, _, _)| *started)
            .map(|(_, index, verdict)| (index, verdict));
        if let Some((index, verdict)) = due {
            info!("worker {index} recycling ({verdict:?}): starting its successor first");
            let reason = match verdict {
                Verdict::Bloated { .. } => RestartReason::Rss,
                Verdict::Old => RestartReason::Age,
                _ => RestartReason::Requests,
            };
            self.replace(index, reason);
        }
    }

    /// Moves slot `index`'s current worker to retiring and starts a successor.
    pub(super) fn replace(&mut self, index: usize, reason: RestartReason) {
        if let Some(mut old) = self.slots[index].current.take() {
            old.life = Life::Replaced;
            old.exit_reason = Some(reason);
            self.slots[index].retiring.push(old);
            self.ledgers.slot(index).note_restart(reason);
        }
        self.spawn_into(index);
    }

    /// Replaced workers drain once their successor beats (or their slot is going away).
    pub(super) fn retire_replaced(&mut self) {
        let now = Instant::now();
        let deadline = now + self.config.supervisor.shutdown_timeout;
        for slot in &mut self.slots {
            let successor_ready = slot.current.as_ref().is_some_and(|w| w.life == Life::Serving);
            if !(successor_ready || slot.role == Role::Removing) {
                continue;
            }
            for worker in slot.retiring.iter_mut().filter(|w| w.life == Life::Replaced) {
                let _ = worker.channel.command(Command::Drain);
                worker.life = Life::Draining { deadline };
            }
        }
        let all_serving = self
            .slots
            .iter()
            .filter(|s| s.role == Role::Active)
            .all(|s| s.current.as_ref().is_some_and(|w| w.life == Life::Serving));
        if self.previous.is_some() && all_serving {
            info!("reload complete: every worker runs the new config");
            self.previous = None;
            self.reloads.ok += 1;
            let workers = match self.config.workers {
                1 => "1 worker".to_string(),
                n => format!("{n} workers"),
            };
            let message = format!("generation {} serves with {workers}", self.generation);
            self.decide_reloads(Outcome::Serving, message);
        }
    }

    /// Closes removed slots at the end of the table once their workers have exited.
    pub(super) fn prune_removed_slots(&mut self) {
        while self
            .slots
            .last()
            .is_some_and(|s| s.role == Role::Removing && s.workers().next().is_none())
        {
            let slot = self.slots.pop().expect("checked above");
            info!("slot {} removed; its sockets are closed", slot.index);
        }
    }

    /// Sends new connections only to slots with a live worker, per address group. The
    /// program is always explicit (never the kernel's hash over the whole group), so sockets
    /// outside the table (left over by a binary upgrade) never receive new connections.
    pub(super) fn steer(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let targets: Vec<u32> = self
            .slots
            .iter()
            .filter(|s| s.accepting())
            .map(|s| s.index as u32)
            .collect();
        let Some(first) = self.slots.first() else { return };
        for listener in &first.listeners {
            // A shared socket (socket-activated, or unix) is one queue for every slot: nothing
            // to steer.
            let ListenSocket::Tcp(socket) = &listener.socket else {
                continue;
            };
            if self.steering.get(&listener.addr) == Some(&targets) || self.shared.contains(&listener.addr) {
                continue;
            }
            if let Err(e) = sys::steer(socket, &targets) {
                warn!(
                    "setsockopt(SO_ATTACH_REUSEPORT_CBPF) failed on {}: {e}",
                    listener.addr
                );
            }
            self.steering.insert(listener.addr.clone(), targets.clone());
        }
    }

    /// Sends `signal` to every worker.
    pub(super) fn kill_all(&mut self, signal: Signal) {
        for slot in &self.slots {
            for worker in slot.workers() {
                let _ = kill(worker.pid, signal);
            }
        }
    }
}

/// Applies what `worker` (of slot `index`) reported since the last look; health verdicts
/// are collected into `verdicts` for the master to share.
fn absorb_reports(index: usize, worker: &mut WorkerProc, now: Instant, verdicts: &mut Vec<(u32, u32, bool)>) {
    while let Ok(Received::Message(report)) = worker.channel.next_report() {
        match report {
            Report::Beat(counters) => {
                worker.last_beat = now;
                worker.counters = *counters;
                if worker.life == Life::Booting {
                    worker.life = Life::Serving;
                }
            }
            Report::BootFailed(message) => {
                error!("worker {index} (pid {}) cannot start: {message}", worker.pid);
                worker.boot_error = Some(message);
            }
            Report::Health { upstream, server, up } => verdicts.push((upstream, server, up)),
        }
    }
}
