//! Signals as readable events: the signals we handle are blocked and read from a signalfd.
//!
//! No handler ever runs, so nothing is async-signal-unsafe, and the fd fits in any poll
//! loop (the master's `poll`, a worker's mio registry). Signals of one kind coalesce while
//! pending, so readers must treat each as "at least one arrived".

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals shoal handles, blocked for the whole process tree and read from a signalfd.
pub const HANDLED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// A non-blocking signalfd for [`HANDLED`].
pub struct SignalReader {
    fd: SignalFd,
}

impl SignalReader {
    /// Blocks [`HANDLED`] in the calling thread and opens a signalfd for them.
    pub fn open() -> nix::Result<SignalReader> {
        let mut set = SigSet::empty();
        for signal in HANDLED {
            set.add(*signal);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(SignalReader { fd })
    }

    /// Every signal pending now, oldest first (without waiting).
    pub fn drain(&mut self) -> Vec<Signal> {
        let mut signals = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                signals.push(signal);
            }
        }
        signals
    }

    /// Waits up to `timeout` for a signal, then returns every pending one.
    pub fn wait(&mut self, timeout: Duration) -> Vec<Signal> {
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        // EINTR cannot happen for blocked signals; any other error just means "look now".
        let _ = poll(&mut fds, PollTimeout::from(millis));
        self.drain()
    }
}

impl AsRawFd for SignalReader {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for SignalReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
