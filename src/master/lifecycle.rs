//! What the master does on operator signals: stop, reload, reopen logs, scale.

use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::sys::signal::{kill, Signal};

use super::admin::Admin;
use super::listeners::{self, Listener, Spare};
use super::slots::{Life, Role, Slot};
use super::{caps, privileges, Attempt, Master, Phase, Readiness};
use crate::channel::Command;
use crate::config::Address;
use crate::control::Outcome;
use crate::status::RestartReason;
use crate::sys;

/// Time a fast stop gives workers before SIGKILL.
const FAST_STOP_GRACE: Duration = Duration::from_secs(2);

impl Master {
    /// Graceful stop (workers drain within shutdown_timeout) or fast stop (they quit now).
    pub(super) fn begin_stop(&mut self, why: &str, fast: bool) {
        match self.phase {
            Phase::Stopping { fast: true, .. } => return,
            Phase::Stopping { .. } if !fast => return,
            _ => {}
        }
        let now = Instant::now();
        let (worker_signal, kill_at, how) = if fast {
            (Signal::SIGINT, now + FAST_STOP_GRACE, "fast stop")
        } else {
            let grace = self.config.supervisor.shutdown_timeout + Duration::from_secs(1);
            (Signal::SIGTERM, now + grace, "graceful stop")
        };
        info!("{why}: {how}");
        self.decide_reloads(Outcome::Abandoned, format!("the master is stopping ({why})"));
        if let Some(upgrade) = &self.upgrade {
            let attempt = upgrade.attempt;
            self.decide(
                attempt,
                Outcome::Abandoned,
                format!("the master is stopping ({why})"),
            );
        }
        self.notifier.notify("STOPPING=1");
        self.phase = Phase::Stopping { fast, kill_at };
        for slot in &mut self.slots {
            for worker in slot.workers_mut() {
                let _ = kill(worker.pid, worker_signal);
                worker.life = Life::Draining { deadline: kill_at };
            }
        }
    }

    /// A reload that cannot go ahead: the running config stays.
    fn refuse_reload(&mut self, attempt: Attempt, why: impl std::fmt::Display) -> Attempt {
        error!("reload failed, keeping the running config: {why}");
        self.reloads.failed += 1;
        self.decide(attempt, Outcome::Refused, why);
        attempt
    }

    /// HUP (or `reload` on the control socket): re-read the config; if valid, start new
    /// workers with it and drain the old ones. The attempt is decided at once when refused,
    /// else once the new workers all serve or are rolled back.
    pub(super) fn reload(&mut self) -> Attempt {
        let attempt = self.next_attempt();
        if self.phase != Phase::Running {
            self.decide(attempt, Outcome::Abandoned, "the master is stopping");
            return attempt;
        }
        // systemd hears RELOADING=1 for every HUP, and READY=1 once it is settled (at once
        // when the new config is refused).
        self.notifier.reloading();
        self.readiness = Readiness::Reloading;
        let mut config = match self.source.load() {
            Ok(config) => config,
            Err(e) => return self.refuse_reload(attempt, e),
        };
        let handed_over = privileges::adopt_worker_identity(&mut config).and_then(|()| {
            privileges::hand_over_logs(&config)
                .and_then(|()| privileges::prepare_cache(&config))
                .map_err(|(e, path)| format!("{}: {e}", path.display()))
        });
        if let Err(e) = handed_over {
            return self.refuse_reload(attempt, e);
        }
        privileges::fit_open_files(&mut config, sys::raise_nofile_limit());
        let addresses = config.listeners();
        // Addresses none of our sockets is on yet must be free: a taken one refuses the reload.
        let fresh = addresses.iter().map(|(addr, _)| addr.clone()).filter(|addr| {
            !self.shared.contains(addr)
                && !self
                    .slots
                    .iter()
                    .any(|s| s.listeners.iter().any(|l| l.addr == *addr))
        });
        if let Err(e) = listeners::refuse_taken(fresh) {
            return self.refuse_reload(attempt, e);
        }
        // New unix sockets are bound now (one for every slot); a reload refused later keeps
        // them for the next attempt.
        if let Err(e) = listeners::bind_unix(&addresses, &mut self.shared, |path| config.unix_access(path)) {
            return self.refuse_reload(attempt, e);
        }
        let active = self.slots.iter().filter(|s| s.role == Role::Active).count();
        let mut sockets = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            // Duplicates of the running sockets, so a failed bind leaves everything as it was.
            let mut spare = Spare::default();
            for listener in self.slots.get(index).map_or(&[][..], |s| &s.listeners[..]) {
                if let Ok(socket) = listener.socket.try_clone() {
                    spare.put(Listener {
                        socket,
                        addr: listener.addr.clone(),
                        server: listener.server,
                    });
                }
            }
            match listeners::slot_sockets(&addresses, &mut spare, &self.shared) {
                Ok(bound) => sockets.push(bound),
                Err(e) => return self.refuse_reload(attempt, e),
            }
        }
        // `[admin] listen` may have changed: `Some` is the endpoint to switch to, bound
        // before anything else changes so that a failure leaves everything as it was.
        let new_admin = match (config.admin, &self.admin) {
            (Some(addr), Some(admin)) if admin.addr == addr => None,
            (Some(addr), _) => match Admin::open(addr, None) {
                Ok(admin) => Some(Some(admin)),
                Err(e) => {
                    let e = listeners::BindError::of(addr, e);
                    return self.refuse_reload(attempt, format!("{e} ([admin] listen)"));
                }
            },
            (None, _) => Some(None),
        };
        if let Some(admin) = new_admin {
            self.admin = admin;
        }
        if let Some(path) = &config.error_log {
            if let Err(e) = sys::redirect_stderr(path) {
                error!("reload: cannot open error log {}: {e}", path.display());
            }
        }
        let unconfigured: Vec<Address> = (self.shared.iter().map(|(addr, _)| addr))
            .filter(|addr| !addresses.iter().any(|(configured, _)| configured == *addr))
            .cloned()
            .collect();
        for addr in unconfigured {
            match addr {
                // Closed once the old workers are gone; the file stays until a bind replaces it.
                Address::Unix(_) => {
                    self.shared.remove(&addr);
                    info!("reload: {addr} is no longer configured: it closes with the old workers");
                }
                Address::Tcp(_) => warn!(
                    "reload: {addr} came by socket activation and is no longer configured; \
                     its connections will wait unanswered"
                ),
            }
        }
        info!(
            "reloading: {} workers with the new config (was {active})",
            config.workers
        );
        // Last, as it changes the caps the running workers share: a refusal leaves them.
        if let Err(e) = caps::prepare(self.shared_state, &config) {
            return self.refuse_reload(attempt, e);
        }
        self.previous = Some(std::mem::replace(&mut self.config, config));
        self.generation += 1;
        // Upstream indices may mean other servers now; the new worker 0 probes afresh.
        self.health.clear();
        self.steering.clear();
        let now = Instant::now();
        for (index, bound) in sockets.into_iter().enumerate() {
            match self.slots.get_mut(index) {
                Some(slot) => {
                    slot.listeners = bound;
                    slot.role = Role::Active;
                }
                None => self.slots.push(Slot::new(index, bound, now)),
            }
            self.replace(index, RestartReason::Reload);
        }
        for index in self.config.workers..self.slots.len() {
            self.remove_slot(index);
        }
        self.reloading.push(attempt);
        attempt
    }

    /// A reload's new workers cannot boot: kill them and put the old ones back.
    pub(super) fn roll_back_reload(&mut self) {
        for slot in &mut self.slots {
            let Some(at) = slot.retiring.iter().position(|w| w.life == Life::Replaced) else {
                continue;
            };
            if let Some(new) = slot.current.take() {
                let _ = kill(new.pid, Signal::SIGKILL);
                let mut dead = new;
                dead.life = Life::Killed;
                slot.retiring.push(dead);
            }
            let mut old = slot.retiring.remove(at);
            old.life = Life::Serving;
            slot.current = Some(old);
            slot.role = Role::Active;
        }
        self.steering.clear();
        // The old config's caps again (its rows still exist: its workers use them).
        if let Err(e) = caps::prepare(self.shared_state, &self.config) {
            error!("rolling back a reload: {e}");
        }
    }

    /// USR1: reopen the error log here and every log in the workers.
    pub(super) fn reopen_logs(&mut self) {
        // Rotated files are created again here, owned by the workers' user, before they reopen.
        if let Err((e, path)) = privileges::hand_over_logs(&self.config) {
            error!("cannot create log file {} for the workers: {e}", path.display());
        }
        if let Some(path) = &self.config.error_log {
            if let Err(e) = sys::redirect_stderr(path) {
                error!("cannot reopen error log {}: {e}", path.display());
            }
        }
        info!("reopening log files");
        for slot in &self.slots {
            for worker in slot.workers() {
                let _ = worker.channel.command(Command::ReopenLogs);
            }
        }
    }

    /// TTIN: one more worker (reviving a slot being removed, if there is one).
    pub(super) fn scale_up(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(slot) = self.slots.iter_mut().find(|s| s.role == Role::Removing) {
            slot.role = Role::Active;
            self.config.workers += 1;
            info!("scaling up: slot {} kept", slot.index);
            return;
        }
        let index = self.slots.len();
        match listeners::slot_sockets(&self.config.listeners(), &mut Spare::default(), &self.shared) {
            Ok(bound) => {
                self.slots.push(Slot::new(index, bound, Instant::now()));
                self.config.workers += 1;
                info!("scaling up: slot {index} added");
            }
            Err(e) => error!("scaling up failed: {e}"),
        }
    }

    /// TTOU: one fewer worker; the last active slot stops receiving new connections, its
    /// worker accepts what is queued and drains, then its sockets close.
    pub(super) fn scale_down(&mut self) {
        let active: Vec<usize> = self
            .slots
            .iter()
            .filter(|s| s.role == Role::Active)
            .map(|s| s.index)
            .collect();
        match active.last() {
            Some(&index) if active.len() > 1 && self.phase == Phase::Running => {
                self.config.workers -= 1;
                info!("scaling down: slot {index} drains and goes away");
                self.remove_slot(index);
            }
            _ => warn!("scaling down refused: at least one worker must remain"),
        }
    }

    fn remove_slot(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.role = Role::Removing;
        if let Some(mut worker) = slot.current.take() {
            worker.life = Life::Replaced;
            slot.retiring.push(worker);
        }
        // Steering must exclude the slot before its worker is told to drain, so nothing new
        // lands in a queue about to close; retire_replaced sends the drain after steer ran.
        self.steer();
    }
}
