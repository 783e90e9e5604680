//! The master: binds the slots' sockets, forks workers, and supervises them.
//!
//! It is single-threaded for life (fork stays safe) and never touches traffic. Its loop is
//! one screen of named steps; signals arrive through a signalfd, never a handler.

mod listeners;
mod pidfile;
mod slots;
mod spawn;

use std::fmt;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::Config;
use crate::sys::{self, SignalReader};
use pidfile::PidFile;
use slots::{Occupant, Slot};

/// How long workers get to finish in-flight requests on stop before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The master wakes at least this often even when nothing happens.
const TICK: Duration = Duration::from_millis(500);

/// Why the master stopped with a failure.
#[derive(Debug)]
pub enum MasterError {
    /// Binding a listening socket failed.
    Bind(listeners::BindError),
    /// Opening the signalfd failed.
    Signals(nix::Error),
    /// Writing the pid file failed.
    PidFile(std::io::Error, std::path::PathBuf),
    /// A worker exited with the fatal-boot code 2: respawning cannot help.
    WorkerBoot { slot: usize },
}

impl MasterError {
    /// The process exit code: 2 for boot and config failures, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        2
    }
}

impl fmt::Display for MasterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterError::Bind(e) => write!(f, "{e}"),
            MasterError::Signals(e) => write!(f, "signalfd() failed while starting the master: {e}"),
            MasterError::PidFile(e, path) => write!(f, "cannot write pid file {}: {e}", path.display()),
            MasterError::WorkerBoot { slot } => {
                write!(f, "worker {slot} could not start (exit code 2); not respawning")
            }
        }
    }
}

impl std::error::Error for MasterError {}

/// Where the master is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping { kill_at: Instant },
}

/// Runs the master until a stop signal and every worker has exited.
pub fn run(config: Config) -> Result<(), MasterError> {
    let open_files = sys::raise_nofile_limit();
    let addresses = config.listeners();
    let now = Instant::now();
    let mut slots = Vec::with_capacity(config.workers);
    for index in 0..config.workers {
        let bound = listeners::bind_slot(&addresses).map_err(MasterError::Bind)?;
        slots.push(Slot::new(index, bound, now));
    }
    let signals = SignalReader::open().map_err(MasterError::Signals)?;
    let pid_file = match &config.pid_file {
        Some(path) => Some(PidFile::write(path).map_err(|e| MasterError::PidFile(e, path.clone()))?),
        None => None,
    };
    for (addr, _) in &addresses {
        info!("listening on http://{addr}/ with {} workers", config.workers);
    }
    log::debug!("open files limit: {open_files}");
    sys::name_process("shoal: master");
    let mut master = Master {
        config,
        slots,
        signals,
        phase: Phase::Running,
    };
    let result = master.supervise();
    drop(pid_file);
    result
}

struct Master {
    config: Config,
    slots: Vec<Slot>,
    signals: SignalReader,
    phase: Phase,
}

impl Master {
    fn supervise(&mut self) -> Result<(), MasterError> {
        loop {
            if self.phase == Phase::Running {
                self.spawn_missing();
            }
            let signals = self.signals.wait(self.next_wake());
            self.handle_signals(&signals);
            self.reap_exited()?;
            match self.phase {
                Phase::Stopping { .. } if self.slots.iter().all(|s| s.pid().is_none()) => {
                    info!("all workers stopped; bye");
                    return Ok(());
                }
                Phase::Stopping { kill_at } if Instant::now() >= kill_at => self.kill_stragglers(),
                _ => {}
            }
        }
    }

    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        self.slots
            .iter()
            .filter_map(|slot| match slot.occupant {
                Occupant::Vacant { not_before } => Some(not_before.saturating_duration_since(now)),
                _ => None,
            })
            .fold(TICK, Duration::min)
    }

    fn handle_signals(&mut self, signals: &[Signal]) {
        for signal in signals {
            match signal {
                Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => self.begin_stop(*signal),
                Signal::SIGCHLD => {}
                other => info!("ignoring {other} (not supported yet)"),
            }
        }
    }

    fn begin_stop(&mut self, signal: Signal) {
        if self.phase != Phase::Running {
            return;
        }
        info!("{signal} received: stopping workers");
        self.phase = Phase::Stopping {
            kill_at: Instant::now() + STOP_GRACE,
        };
        for slot in &mut self.slots {
            if let Occupant::Running { pid, .. } = slot.occupant {
                if let Err(e) = kill(pid, Signal::SIGTERM) {
                    warn!("kill(SIGTERM) failed for worker {} (pid {pid}): {e}", slot.index);
                }
                slot.occupant = Occupant::Stopping { pid };
            }
        }
    }

    fn kill_stragglers(&mut self) {
        for slot in &self.slots {
            if let Some(pid) = slot.pid() {
                warn!("worker {} (pid {pid}) did not stop in time: SIGKILL", slot.index);
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    fn reap_exited(&mut self) -> Result<(), MasterError> {
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Some(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    warn!("worker pid {pid} killed by {signal}");
                    (pid, None)
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return Ok(()),
                Ok(_) => continue,
                Err(e) => {
                    error!("waitpid() failed while reaping workers: {e}");
                    return Ok(());
                }
            };
            let Some(slot) = self.slots.iter_mut().find(|s| s.pid() == Some(pid)) else {
                continue;
            };
            let expected = matches!(slot.occupant, Occupant::Stopping { .. });
            slot.vacate(Instant::now());
            match code {
                Some(2) if !expected => return Err(MasterError::WorkerBoot { slot: slot.index }),
                Some(code) if !expected => warn!("worker {} (pid {pid}) exited with {code}", slot.index),
                _ => {}
            }
        }
    }

    fn spawn_missing(&mut self) {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            if !self.slots[index].ready_to_spawn(now) {
                continue;
            }
            match spawn::spawn_worker(index, &mut self.slots, &self.config, &self.signals) {
                Ok(pid) => {
                    info!("worker {index} started (pid {pid})");
                    self.slots[index].occupant = Occupant::Running { pid, since: now };
                }
                Err(e) => {
                    error!("fork() failed while spawning worker {index}: {e}");
                    self.slots[index].vacate(now);
                }
            }
        }
    }
}
