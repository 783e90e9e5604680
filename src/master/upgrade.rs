//! Binary upgrade (USR2): the running master starts the executable on disk and hands it the
//! listening sockets; the new master signals readiness over a pipe once all its workers beat,
//! and only then does the old one drain and exit. A new binary that fails leaves the old one
//! serving.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::activation::SHARED_FDS_VAR;
use super::admin::INHERITED_ADMIN_VAR;
use super::caps::{self, SHARED_STATE_VAR};
use super::listeners::{self, INHERITED_FDS_VAR};
use super::slots::{Life, Role};
use super::{Attempt, Master, Phase};
use crate::control::Outcome;
use crate::sys;

/// Environment variable with the fd the new master writes one byte to when it is ready.
pub const READY_FD_VAR: &str = "SHOAL_READY_FD";
/// How long a new master has to get all its workers beating.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// An upgrade in progress, seen from the old master.
pub struct Upgrade {
    pub pid: Pid,
    /// The attempt whose verdict this upgrade decides.
    pub attempt: Attempt,
    /// Read end of the readiness pipe.
    pub ready: File,
    deadline: Instant,
}

/// The old master waiting for us (the new master) to be ready.
pub struct Handoff {
    pipe: File,
}

impl Handoff {
    /// The readiness pipe passed in [`READY_FD_VAR`], if this process is an upgrade.
    pub fn inherited() -> Option<Handoff> {
        let fd: i32 = std::env::var(READY_FD_VAR).ok()?.parse().ok()?;
        // Our own children must not see the variables of this upgrade.
        std::env::remove_var(READY_FD_VAR);
        std::env::remove_var(INHERITED_FDS_VAR);
        let pipe = sys::adopt_pipe(fd)?;
        Some(Handoff { pipe })
    }
}

impl Master {
    /// USR2 (or `upgrade` on the control socket): start the executable on disk with our
    /// sockets. The attempt is decided at once when refused, else once the new master is
    /// ready or has failed.
    pub(super) fn start_upgrade(&mut self) -> Attempt {
        let attempt = self.next_attempt();
        if self.upgrade.is_some() || self.phase != Phase::Running || self.handoff.is_some() {
            let why = "binary upgrade refused: one is already in progress, this master is not yet \
                       serving as a new one, or it is stopping";
            warn!("{why}");
            self.decide(attempt, Outcome::Refused, why);
            return attempt;
        }
        match self.spawn_new_master(attempt) {
            Ok(upgrade) => {
                info!(
                    "binary upgrade: new master started (pid {}); waiting for it to be ready",
                    upgrade.pid
                );
                self.upgrade = Some(upgrade);
            }
            Err(e) => {
                error!("binary upgrade failed, still serving: {e}");
                let why = format!("cannot start the new binary: {e}; the old master keeps serving");
                self.decide(attempt, Outcome::Refused, why);
            }
        }
        attempt
    }

    fn spawn_new_master(&self, attempt: Attempt) -> std::io::Result<Upgrade> {
        let exe = std::env::current_exe()?;
        // /proc/self/exe names a replaced binary "<path> (deleted)"; the path is what we want.
        let exe = exe.to_string_lossy().trim_end_matches(" (deleted)").to_string();
        let (ready_read, ready_write) = nix::unistd::pipe()?;
        let slots = self.slots.iter().filter(|s| s.role == Role::Active);
        let fds = listeners::describe_for_upgrade(slots.map(|s| &s.listeners[..]), &self.shared);
        // Each slot's own sockets (TCP), and the shared ones once.
        let own = (self.slots.iter().flat_map(|s| s.listeners.iter()))
            .filter(|l| !self.shared.contains(&l.addr))
            .map(|l| l.socket.as_fd());
        let mut sockets: Vec<BorrowedFd> = own
            .chain(self.shared.iter().map(|(_, socket)| socket.as_fd()))
            .collect();
        let mut command = Command::new(&exe);
        command
            .args(std::env::args_os().skip(1))
            .env(INHERITED_FDS_VAR, fds)
            .env(SHARED_FDS_VAR, self.shared.describe_for_upgrade())
            .env(SHARED_STATE_VAR, caps::describe_for_upgrade(self.shared_state))
            .env(READY_FD_VAR, ready_write.as_raw_fd().to_string())
            .envs(self.notifier.successor_env());
        // The admin endpoint's socket goes along, so scrapes are never refused meanwhile.
        if let Some(admin) = &self.admin {
            let value = format!("{}@{}", admin.listener().as_raw_fd(), admin.addr);
            command.env(INHERITED_ADMIN_VAR, value);
            sockets.push(admin.listener().as_fd());
        }
        // The master is single-threaded, so clearing close-on-exec for the spawn races nobody.
        let mut fds = sockets;
        fds.extend(self.shared_state.fds());
        for fd in &fds {
            sys::set_cloexec(fd, false)?;
        }
        let child = command.spawn();
        for fd in &fds {
            let _ = sys::set_cloexec(fd, true);
        }
        drop(ready_write);
        let child = child?;
        let ready = File::from(ready_read);
        nix::fcntl::fcntl(
            ready.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(Upgrade {
            pid: Pid::from_raw(child.id() as i32),
            attempt,
            ready,
            deadline: Instant::now() + READY_TIMEOUT,
        })
    }

    /// Old master: the new one said it is ready (stop gracefully), or it failed.
    pub(super) fn watch_upgrade(&mut self) {
        let Some(upgrade) = &mut self.upgrade else { return };
        let mut byte = [0u8; 1];
        match upgrade.ready.read(&mut byte) {
            Ok(1) => {
                info!(
                    "binary upgrade: new master (pid {}) is serving; draining the old workers",
                    upgrade.pid
                );
                self.notifier.hand_over(upgrade.pid.as_raw() as u32);
                let (pid, attempt) = (upgrade.pid, upgrade.attempt);
                self.upgrade = None;
                let message = format!("the new master (pid {pid}) serves; the old one drains and exits");
                self.decide(attempt, Outcome::Serving, message);
                // The new master answers scrapes and probes from here on (it has the socket).
                self.admin = None;
                self.begin_stop("binary upgrade complete", false);
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= upgrade.deadline {
                    let pid = upgrade.pid;
                    let _ = kill(pid, Signal::SIGTERM);
                    self.upgrade_failed(&format!("the new master (pid {pid}) was not ready in time"));
                }
            }
            Err(e) => self.upgrade_failed(&format!("readiness pipe: {e}")),
        }
    }

    pub(super) fn upgrade_failed(&mut self, why: &str) {
        error!("binary upgrade failed, still serving: {why}");
        if let Some(upgrade) = self.upgrade.take() {
            let message = format!("{why}; the old master keeps serving");
            self.decide(upgrade.attempt, Outcome::RolledBack, message);
        }
    }

    /// New master: tell the old one we are ready once every worker has beaten.
    pub(super) fn announce_ready(&mut self) {
        if self.handoff.is_none() {
            return;
        }
        let all_serving = self
            .slots
            .iter()
            .filter(|s| s.role == Role::Active)
            .all(|s| s.current.as_ref().is_some_and(|w| w.life == Life::Serving));
        if all_serving {
            if let Some(mut handoff) = self.handoff.take() {
                // The pid file changes hands only now: a failed upgrade leaves the old one's.
                self.write_pid_file();
                let _ = handoff.pipe.write_all(b"1");
                info!("binary upgrade: ready; the old master may stop");
            }
        }
    }
}
