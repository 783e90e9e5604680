//! The master: binds the slots' sockets, forks workers, and supervises them.
//!
//! It is single-threaded for life (fork stays safe) and never touches traffic. Its loop is
//! one screen of named steps; signals arrive through a signalfd, reports through each
//! worker's channel, and every decision about a worker is `slots::assess`.

mod activation;
mod admin;
mod caps;
mod control_socket;
mod endpoint;
mod ledger;
mod lifecycle;
mod listeners;
mod observe;
mod owner;
mod pidfile;
mod preflight;
mod privileges;
mod purge;
mod slots;
mod spawn;
mod supervise;
mod tally;
mod upgrade;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use log::info;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use crate::cache::{self, keep::Keeper};
use crate::config::{Address, Config, Source};
use crate::control::{Outcome, Verdict};
use crate::sys::{self, SignalReader};
use admin::Admin;
use control_socket::{ControlSocket, Reply, Request};
use ledger::Ledgers;
use listeners::Spare;
use pidfile::PidFile;
use slots::Slot;
use upgrade::{Handoff, Upgrade};

pub use preflight::{preflight, PreflightError};

/// The master wakes at least this often even when nothing happens.
const TICK: Duration = Duration::from_millis(200);

/// Why the master stopped with a failure.
#[derive(Debug)]
pub enum MasterError {
    /// Binding a listening socket failed.
    Bind(listeners::BindError),
    /// Sockets handed over by systemd (LISTEN_FDS) are unusable or not configured.
    Activation(activation::ActivationError),
    /// Opening the signalfd failed.
    Signals(nix::Error),
    /// Binding the control socket or opening the error log failed.
    File(std::io::Error, std::path::PathBuf),
    /// The pid file names a running master, or cannot be written.
    PidFile(pidfile::PidFileError),
    /// Binding the admin endpoint's address failed.
    Admin(listeners::BindError),
    /// A worker could not start (it exited with code 2): respawning cannot help.
    WorkerBoot { slot: usize, message: String },
    /// Too many unexpected worker deaths in the restart window.
    CrashLoop { deaths: usize, window: Duration },
    /// Root without `user`, or a `user` the master cannot switch to.
    Privileges(String),
    /// The shared state (concurrency caps) cannot be made, or the config needs too much of it.
    SharedState(String),
}

impl MasterError {
    /// The process exit code: 2 for boot and config failures, 1 for runtime ones.
    pub fn exit_code(&self) -> u8 {
        match self {
            MasterError::CrashLoop { .. } => 1,
            _ => 2,
        }
    }
}

impl fmt::Display for MasterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterError::Bind(e) => write!(f, "{e}"),
            MasterError::Activation(e) => write!(f, "{e}"),
            MasterError::Signals(e) => write!(f, "signalfd() failed while starting the master: {e}"),
            MasterError::File(e, path) => write!(f, "cannot write {}: {e}", path.display()),
            MasterError::PidFile(e) => write!(f, "{e}"),
            MasterError::Admin(e) => write!(f, "{e} ([admin] listen)"),
            MasterError::Privileges(why) => write!(f, "{why}"),
            MasterError::SharedState(why) => write!(f, "{why}"),
            MasterError::WorkerBoot { slot, message } => {
                write!(f, "worker {slot} cannot start: {message}")
            }
            MasterError::CrashLoop { deaths, window } => write!(
                f,
                "giving up: {deaths} unexpected worker deaths within {}s (restart_limit)",
                window.as_secs()
            ),
        }
    }
}

impl std::error::Error for MasterError {}

/// Where the master is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stopping: workers drain (or quit at once when `fast`), SIGKILL at the deadline.
    Stopping {
        fast: bool,
        kill_at: Instant,
    },
}

/// What systemd was last told about readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Started; not every worker beats yet.
    Booting,
    Ready,
    /// A reload is under way (RELOADING=1 sent); READY=1 follows once it settles.
    Reloading,
}

/// One reload or binary upgrade, as an operator asked for it (a signal or the control
/// socket); the control socket's clients wait for their attempt's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt(u64);

/// Reloads since the master started, by outcome.
#[derive(Debug, Default, Clone, Copy)]
struct Reloads {
    /// The new config's workers all serve.
    ok: u64,
    /// Refused (bad config, a bind failure) or rolled back (its workers could not boot).
    failed: u64,
}

/// Runs the master until a stop signal and every worker has exited.
pub fn run(mut config: Config, source: Source) -> Result<(), MasterError> {
    // Named first, so that another instance reading our pid file knows us at once.
    sys::name_process(pidfile::MASTER_NAME);
    privileges::adopt_worker_identity(&mut config).map_err(MasterError::Privileges)?;
    privileges::hand_over_logs(&config).map_err(|(e, path)| MasterError::File(e, path))?;
    privileges::prepare_cache(&config).map_err(|(e, path)| MasterError::File(e, path))?;
    if let Some(path) = &config.error_log {
        sys::redirect_stderr(path).map_err(|e| MasterError::File(e, path.clone()))?;
    }
    let nofile = sys::raise_nofile_limit();
    let shared_state = caps::open(config.tls_ticket_rotation).map_err(|e| {
        MasterError::SharedState(format!("cannot make the shared state (memfd, eventfd): {e}"))
    })?;
    caps::prepare(shared_state, &config).map_err(MasterError::SharedState)?;
    let addresses = config.listeners();
    let mut shared = activation::take_from_env(&addresses).map_err(MasterError::Activation)?;
    let mut spare = Spare::inherited();
    let inherited_admin = admin::inherited();
    let handoff = Handoff::inherited();
    // A fresh start claims the pid file before binding anything: a live master named there
    // means this config already runs. A new master in a binary upgrade takes the file over
    // only once it serves (`announce_ready`).
    let pid_file = match (&config.pid_file, &handoff) {
        (Some(path), None) => Some(PidFile::claim(path).map_err(MasterError::PidFile)?),
        _ => None,
    };
    let fresh = addresses
        .iter()
        .map(|(addr, _)| addr.clone())
        .filter(|addr| !spare.holds(addr) && !shared.contains(addr));
    listeners::refuse_taken(fresh).map_err(MasterError::Bind)?;
    listeners::bind_unix(&addresses, &mut shared, |path| config.unix_access(path))
        .map_err(MasterError::Bind)?;
    let now = Instant::now();
    let mut slots = Vec::with_capacity(config.workers);
    for index in 0..config.workers {
        let sockets = listeners::slot_sockets(&addresses, &mut spare, &shared).map_err(MasterError::Bind)?;
        slots.push(Slot::new(index, sockets, now));
    }
    drop(spare.into_leftovers());
    let admin = match config.admin {
        Some(addr) => Some(
            Admin::open(addr, inherited_admin)
                .map_err(|e| MasterError::Admin(listeners::BindError::of(addr, e)))?,
        ),
        None => None,
    };
    let signals = SignalReader::open().map_err(MasterError::Signals)?;
    // After the signals are blocked: the thread inherits the mask, so every signal still
    // reaches the master's loop.
    let counts = cache::Counts {
        bytes: shared_state.cache_bytes(),
        purges: shared_state.cache_purges(),
    };
    let cache_keeper = Keeper::start(counts)
        .map_err(|e| MasterError::SharedState(format!("cannot start the cache's keeper thread: {e}")))?;
    let control = match (&config.pid_file, &handoff) {
        (Some(path), None) => Some(
            ControlSocket::bind(path).map_err(|e| MasterError::File(e, crate::status::socket_path(path)))?,
        ),
        _ => None,
    };
    for (addr, _) in &addresses {
        let (url, sockets) = match addr {
            Address::Unix(_) => (addr.to_string(), "one unix socket shared by all"),
            Address::Tcp(_) if shared.contains(addr) => (
                format!("http://{addr}/"),
                "socket activation: one socket shared by all",
            ),
            Address::Tcp(_) => (format!("http://{addr}/"), "one SO_REUSEPORT socket each"),
        };
        info!("listening on {url} with {} workers ({sockets})", config.workers);
    }
    privileges::fit_open_files(&mut config, nofile);
    let notifier = sys::Notifier::from_env();
    let now = Instant::now();
    let mut master = Master {
        notifier,
        readiness: Readiness::Booting,
        next_watchdog: now,
        source,
        config,
        previous: None,
        slots,
        signals,
        phase: Phase::Running,
        deaths: VecDeque::new(),
        health: BTreeMap::new(),
        steering: HashMap::new(),
        shared,
        upgrade: None,
        handoff,
        pid_file,
        control,
        admin,
        reloads: Reloads::default(),
        attempts: 0,
        reloading: Vec::new(),
        verdicts: Vec::new(),
        started: now,
        generation: 0,
        ledgers: Ledgers::default(),
        shared_state,
        next_shared_sweep: now,
        cache_keeper,
    };
    master.supervise()
}

/// The master's whole state.
struct Master {
    /// systemd's notification socket, if it started us.
    notifier: sys::Notifier,
    readiness: Readiness,
    next_watchdog: Instant,
    source: Source,
    config: Config,
    /// The config before the last reload, kept until the new one's workers are serving.
    previous: Option<Config>,
    slots: Vec<Slot>,
    signals: SignalReader,
    phase: Phase,
    /// Times of recent unexpected worker deaths, for the restart limit.
    deaths: VecDeque<Instant>,
    /// Active health verdicts per (upstream, server), replayed to every new worker.
    health: BTreeMap<(u32, u32), bool>,
    /// Steering last applied per address (slot indices), to change it only when needed.
    steering: HashMap<Address, Vec<u32>>,
    /// Sockets handed over already listening (socket activation), shared by every slot.
    shared: activation::Shared,
    /// A binary upgrade in progress (we are the old master).
    upgrade: Option<Upgrade>,
    /// The old master waiting for us to be ready (we are the new master).
    handoff: Option<Handoff>,
    pid_file: Option<PidFile>,
    /// The socket `shoal status` asks, beside the pid file (none without a pid file).
    control: Option<ControlSocket>,
    /// `/metrics` and `/healthz`, when `[admin] listen` is set.
    admin: Option<Admin>,
    reloads: Reloads,
    /// Reload and upgrade attempts numbered so far.
    attempts: u64,
    /// Reload attempts under way (new workers booting); one outcome settles them all.
    reloading: Vec<Attempt>,
    /// Verdicts reached and not yet given to the operators waiting for them.
    verdicts: Vec<(Attempt, Verdict)>,
    started: Instant,
    /// Reloads adopted so far (a reload rolled back is taken back).
    generation: u64,
    /// Each slot's restarts, by slot number.
    ledgers: Ledgers,
    /// What all workers of the instance share: upstream servers' caps and queues.
    shared_state: &'static crate::shared::Shared,
    next_shared_sweep: Instant,
    /// The thread that holds the response cache within its `max_size`.
    cache_keeper: Keeper,
}

impl Master {
    fn supervise(&mut self) -> Result<(), MasterError> {
        loop {
            self.spawn_missing();
            self.steer();
            let signals = self.wait();
            self.handle_signals(&signals);
            self.read_reports();
            self.reap_exited()?;
            self.answer_operators();
            self.enforce_deadlines();
            self.recycle();
            self.retire_replaced();
            self.prune_removed_slots();
            self.watch_upgrade();
            self.sweep_shared_state();
            self.rotate_tickets();
            self.tend_cache();
            self.announce_ready();
            self.deliver_verdicts();
            self.notify_service_manager();
            if self.finished() {
                info!("all workers stopped; bye");
                return Ok(());
            }
        }
    }

    /// Waits for a signal, a worker report, the upgrade pipe, an operator, or the next tick.
    fn wait(&mut self) -> Vec<Signal> {
        let now = Instant::now();
        let timeout = self
            .slots
            .iter()
            .filter(|s| s.current.is_none())
            .map(|s| s.not_before.saturating_duration_since(now))
            .fold(TICK, Duration::min);
        {
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            for slot in &self.slots {
                fds.extend(
                    slot.workers()
                        .map(|w| PollFd::new(w.channel.as_fd(), PollFlags::POLLIN)),
                );
            }
            if let Some(upgrade) = &self.upgrade {
                fds.push(PollFd::new(upgrade.ready.as_fd(), PollFlags::POLLIN));
            }
            if let Some(control) = &self.control {
                fds.extend(control.poll_fds());
            }
            if let Some(admin) = &self.admin {
                fds.extend(admin.poll_fds());
            }
            let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            // Errors (EINTR cannot happen: handled signals are blocked) just mean "look now".
            let _ = poll(&mut fds, PollTimeout::from(millis));
        }
        self.signals.drain()
    }

    fn handle_signals(&mut self, signals: &[Signal]) {
        for signal in signals {
            match signal {
                Signal::SIGTERM | Signal::SIGQUIT => {
                    let again = matches!(self.phase, Phase::Stopping { .. });
                    self.begin_stop(&format!("{signal} received"), again && *signal == Signal::SIGTERM);
                }
                Signal::SIGINT => self.begin_stop("SIGINT received", true),
                Signal::SIGHUP => {
                    self.reload();
                }
                Signal::SIGUSR1 => self.reopen_logs(),
                Signal::SIGUSR2 => {
                    self.start_upgrade();
                }
                Signal::SIGTTIN => self.scale_up(),
                Signal::SIGTTOU => self.scale_down(),
                _ => {}
            }
        }
    }

    /// Tells systemd when every worker serves (after start or a reload), and pets its watchdog.
    fn notify_service_manager(&mut self) {
        let now = Instant::now();
        if let Some(every) = self.notifier.watchdog_every {
            if now >= self.next_watchdog {
                self.notifier.notify("WATCHDOG=1");
                self.next_watchdog = now + every;
            }
        }
        let settled = self.previous.is_none()
            && self
                .slots
                .iter()
                .filter(|s| s.role == slots::Role::Active)
                .all(|s| s.current.as_ref().is_some_and(|w| w.life == slots::Life::Serving));
        if self.readiness != Readiness::Ready && settled && self.phase == Phase::Running {
            let workers = self
                .slots
                .iter()
                .filter(|s| s.role == slots::Role::Active)
                .count();
            self.notifier
                .notify(&format!("READY=1\nSTATUS=serving with {workers} workers"));
            self.readiness = Readiness::Ready;
        }
    }

    /// Writes the pid file and takes over the control socket (after an upgrade handoff,
    /// when this master takes over).
    fn write_pid_file(&mut self) {
        if let Some(path) = &self.config.pid_file {
            match PidFile::write(path) {
                Ok(file) => self.pid_file = Some(file),
                Err(e) => log::error!("{e}"),
            }
            match ControlSocket::bind(path) {
                Ok(control) => self.control = Some(control),
                Err(e) => log::error!("cannot bind the control socket beside {}: {e}", path.display()),
            }
        }
    }

    /// Answers `shoal status` (and, with `[admin]`, metrics and health) without blocking;
    /// starts the reloads and upgrades asked on the control socket (their askers wait for
    /// the verdict, given by `deliver_verdicts`).
    fn answer_operators(&mut self) {
        let now = Instant::now();
        if let Some(mut control) = self.control.take() {
            control.serve(now, |request| match request {
                Request::Status => Reply::Status(Box::new(self.status())),
                Request::Reload => {
                    info!("reload asked on the control socket");
                    Reply::Await(self.reload())
                }
                Request::Upgrade => {
                    info!("binary upgrade asked on the control socket");
                    Reply::Await(self.start_upgrade())
                }
                Request::Purge(prefix) => match self.start_purge(prefix) {
                    Ok(attempt) => Reply::Await(attempt),
                    Err(refused) => Reply::Line(refused.to_line()),
                },
            });
            self.control = Some(control);
        }
        if let Some(mut admin) = self.admin.take() {
            admin.serve(now, self);
            self.admin = Some(admin);
        }
    }

    /// A new reload or upgrade attempt.
    fn next_attempt(&mut self) -> Attempt {
        self.attempts += 1;
        Attempt(self.attempts)
    }

    /// Records the verdict of `attempt`, for whoever waits for it.
    fn decide(&mut self, attempt: Attempt, outcome: Outcome, message: impl fmt::Display) {
        self.verdicts.push((attempt, Verdict::new(outcome, message)));
    }

    /// Decides every reload attempt under way.
    fn decide_reloads(&mut self, outcome: Outcome, message: impl fmt::Display) {
        let message = message.to_string();
        for attempt in std::mem::take(&mut self.reloading) {
            self.decide(attempt, outcome, &message);
        }
    }

    /// Gives each verdict reached to the operators waiting for it on the control socket.
    fn deliver_verdicts(&mut self) {
        for (attempt, verdict) in std::mem::take(&mut self.verdicts) {
            if let Some(control) = &mut self.control {
                control.settle(attempt, &verdict.to_line());
            }
        }
    }

    /// What `/healthz` says: serving while running with a worker that beats.
    fn health(&self) -> admin::Health {
        let serving = self
            .slots
            .iter()
            .filter_map(|s| s.current.as_ref())
            .any(|w| w.life == slots::Life::Serving);
        match self.phase {
            Phase::Stopping { .. } => admin::Health::Stopping,
            Phase::Running if serving => admin::Health::Serving,
            Phase::Running => admin::Health::Starting,
        }
    }

    /// True once stopping and every worker has exited.
    fn finished(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
            && self.slots.iter().all(|s| s.workers().next().is_none())
    }
}
