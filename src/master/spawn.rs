//! Forking a worker into a slot, and the child's first steps before its event loop.

use std::os::fd::AsRawFd;

use nix::sys::signal::Signal;
use nix::unistd::{getppid, Pid};

use super::slots::Slot;
use crate::config::Config;
use crate::sys::{self, Forked, SignalReader};
use crate::worker;

/// Forks a worker for slot `index`. Returns the child's pid in the master; never returns
/// in the child, which runs the worker and exits with its code.
pub fn spawn_worker(
    index: usize,
    slots: &mut [Slot],
    config: &Config,
    signals: &SignalReader,
) -> nix::Result<Pid> {
    let master = Pid::this();
    match sys::fork()? {
        Forked::Parent(pid) => Ok(pid),
        Forked::Child => {
            // The child's copy of the master state is dismantled here: it keeps only its own
            // slot's sockets and closes the master's signalfd (the worker opens its own). The
            // copy is never dropped: the child leaves through process::exit.
            let _ = nix::unistd::close(signals.as_raw_fd());
            let mine = std::mem::take(&mut slots[index].listeners);
            for slot in slots.iter_mut() {
                slot.listeners.clear();
            }
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
            if getppid() != master {
                std::process::exit(1);
            }
            sys::name_process(&format!("shoal: worker {index}"));
            let listeners = mine.into_iter().map(|l| (l.socket, l.server)).collect();
            let code = worker::run(index, listeners, config);
            std::process::exit(code)
        }
    }
}
