//! `shoal stop | quit | reload | reopen | upgrade`: signals to a running master, found
//! through its pid file.

use std::fmt;
use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What an operator asks a running master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Graceful stop (SIGTERM).
    Stop,
    /// Graceful stop (SIGQUIT), as nginx names it.
    Quit,
    /// Re-read the config (SIGHUP).
    Reload,
    /// Reopen log files (SIGUSR1).
    Reopen,
    /// Binary upgrade (SIGUSR2).
    Upgrade,
}

impl Action {
    /// The signal that carries the action.
    pub fn signal(self) -> Signal {
        match self {
            Action::Stop => Signal::SIGTERM,
            Action::Quit => Signal::SIGQUIT,
            Action::Reload => Signal::SIGHUP,
            Action::Reopen => Signal::SIGUSR1,
            Action::Upgrade => Signal::SIGUSR2,
        }
    }
}

/// Why a signal could not be delivered.
#[derive(Debug)]
pub enum ControlError {
    /// The pid file could not be read.
    ReadPidFile(std::io::Error),
    /// The pid file does not hold a process id.
    BadPidFile(String),
    /// kill() failed (typically: no such process, a stale pid file).
    Kill(Pid, nix::Error),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::ReadPidFile(e) => write!(f, "cannot read the pid file: {e}"),
            ControlError::BadPidFile(text) => write!(f, "the pid file holds `{text}`, not a process id"),
            ControlError::Kill(pid, e) => write!(f, "kill() failed for master pid {pid}: {e}"),
        }
    }
}

/// Sends `action`'s signal to the master whose pid is in `pid_file`; returns that pid.
pub fn send(action: Action, pid_file: &Path) -> Result<Pid, ControlError> {
    let text = std::fs::read_to_string(pid_file).map_err(ControlError::ReadPidFile)?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| ControlError::BadPidFile(text.trim().to_string()))?;
    if pid <= 1 {
        return Err(ControlError::BadPidFile(text.trim().to_string()));
    }
    let pid = Pid::from_raw(pid);
    kill(pid, action.signal()).map_err(|e| ControlError::Kill(pid, e))?;
    Ok(pid)
}
