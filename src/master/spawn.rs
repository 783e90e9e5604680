//! Forking a worker into a slot, and the child's first steps before its event loop.

use std::os::fd::AsRawFd;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::{getppid, Pid};

use super::slots::{Slot, WorkerProc};
use crate::channel::{self, Report};
use crate::config::Config;
use crate::shared::Shared;
use crate::sys::{self, Forked};
use crate::worker;

/// Forks a worker for `slot`, sharing `shared`. Returns its record in the master; never returns in the child,
/// which runs the worker and exits with its code.
pub fn spawn_worker(slot: &Slot, config: &Config, shared: &'static Shared) -> std::io::Result<WorkerProc> {
    let (master_end, worker_end) = channel::pair()?;
    let master = Pid::this();
    match sys::fork()? {
        Forked::Parent(pid) => Ok(WorkerProc::new(pid, master_end, Instant::now())),
        Forked::Child => {
            let listeners: Vec<_> = slot
                .listeners
                .iter()
                .filter_map(|l| Some((l.socket.try_clone().ok()?, l.addr.clone())))
                .collect();
            // Keep only our slot's sockets and our channel end; everything else of the
            // master's (other slots, other channels, the signalfd) is closed here. The
            // master's structures are never dropped: the child leaves through process::exit.
            let mut keep: Vec<_> = listeners.iter().map(|(s, _)| s.as_raw_fd()).collect();
            keep.push(worker_end.as_raw_fd());
            // The shared memory stays mapped without its fd; the bell is polled.
            keep.push(shared.bell.as_fd().as_raw_fd());
            sys::close_fds_except(&keep);
            // Before the death signal: the kernel clears it whenever the credentials change.
            if let Some(run_as) = &config.user {
                if let Err(e) = sys::drop_privileges(run_as.uid, run_as.gid) {
                    let why = format!("cannot run as user {}: {e}", run_as.user);
                    let _ = worker_end.report(&Report::BootFailed(why));
                    std::process::exit(worker::EXIT_FATAL);
                }
            }
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
            if getppid() != master {
                std::process::exit(1);
            }
            sys::name_process(&format!("shoal: worker {}", slot.index));
            let code = worker::run(slot.index, listeners, worker_end, config, shared);
            std::process::exit(code)
        }
    }
}
