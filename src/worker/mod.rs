//! A worker: one process, one edge-triggered mio loop, the sockets of one slot.
//!
//! The loop accepts until the listener would block, drives each ready connection until its
//! socket would block (bounded per turn), sweeps deadlines a few times a second and beats to
//! the master from the loop itself (so a stuck loop stops beating). A panic ends the
//! process; the master respawns it into the same slot.

mod access_log;
mod clock;
mod conn;
#[cfg(test)]
mod driver;
mod listen;
mod proxy_protocol;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use slab::Slab;

use crate::channel::{self, Command, Received, Report};
use crate::config::{Address, Config};
use crate::http::request::RequestHead;
use crate::http::response::ResponseHead;
use crate::io::{Client, Stream, Tls};
use crate::pipeline::Pipeline;
use crate::proxy::health;
use crate::shared::Shared;
use crate::stats::Counters;
use crate::sys::SignalReader;
use access_log::{AccessLog, ServerLog};
use clock::Clock;
use conn::{Conn, Ctx, Verdict};
pub use listen::ListenSocket;
use listen::Listener;

/// Token of the signalfd.
const SIGNALS: Token = Token(usize::MAX);
/// Token of the channel to the master.
const CHANNEL: Token = Token(usize::MAX - 1);
/// Token of the bell another worker rings when it frees a permit a request here may wait for.
const BELL: Token = Token(usize::MAX - 2);
/// Listener `i` has token `LISTENER_BASE + i`. Below it, connection `k` (its slab key) has
/// token `2k` for its client socket; odd tokens are upstream sockets' (`proxy::socket_token`).
const LISTENER_BASE: usize = usize::MAX - 4096;
/// How often deadlines are checked (the precision of every timeout).
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// How long accepting pauses after the process ran out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Connections accepted from one listener per loop turn. A flood of connects must not keep
/// the loop (and so the heartbeat and every other connection) waiting; the rest of the queue
/// is taken next turn.
const ACCEPTS_PER_TURN: usize = 64;
/// While draining, a connection idle this long is closed (lingering); busier ones are told
/// `Connection: close` on their next response instead, which cannot race a new request.
const DRAIN_IDLE_CLOSE: Duration = Duration::from_secs(1);

/// Exit code for a worker that cannot start: the master must not respawn it.
pub const EXIT_FATAL: i32 = 2;

/// What an event's token refers to.
enum Source {
    Signals,
    Channel,
    Bell,
    Listener(usize),
    /// The client socket of connection `k`.
    Client(usize),
    /// An upstream socket, working for a connection or idle in a pool.
    Upstream(Token),
}

fn source(token: Token) -> Source {
    match token.0 {
        usize::MAX => Source::Signals,
        n if n == CHANNEL.0 => Source::Channel,
        n if n == BELL.0 => Source::Bell,
        n if n >= LISTENER_BASE => Source::Listener(n - LISTENER_BASE),
        n if n % 2 == 0 => Source::Client(n / 2),
        _ => Source::Upstream(token),
    }
}

/// Whether new connections are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    Open,
    /// `max_connections` reached: resume when one closes.
    Full,
    /// Out of file descriptors: retry at `until`.
    Paused {
        until: Instant,
    },
    /// Stopping: never again.
    Stopped,
}

/// Runs worker `slot` on its listeners until told to stop, with the instance's `shared`
/// state. Returns the exit code.
pub fn run(
    slot: usize,
    listeners: Vec<(ListenSocket, Address)>,
    channel: channel::End,
    config: &Config,
    shared: &'static Shared,
) -> i32 {
    if let Some(path) = &config.error_log {
        let _ = crate::sys::redirect_stderr(path);
    }
    match Worker::boot(slot, listeners, channel, config, shared) {
        Ok(mut worker) => match worker.serve() {
            Ok(()) => 0,
            Err(e) => {
                error!("epoll_wait() failed in worker {slot}: {e}");
                1
            }
        },
        Err((e, channel)) => {
            let _ = channel.report(&Report::BootFailed(e.to_string()));
            error!("worker {slot} cannot start: {e}");
            EXIT_FATAL
        }
    }
}

struct Worker<'a> {
    slot: usize,
    config: &'a Config,
    poll: Poll,
    signals: SignalReader,
    channel: channel::End,
    listeners: Vec<Listener>,
    /// Per listener: how its connections begin.
    entrances: Vec<Entrance>,
    accepting: Accepting,
    /// When accept() last started failing for want of descriptors (memory, fds), until one
    /// succeeds again: the episode is logged once at each end, not at every retry.
    exhausted_since: Option<Instant>,
    conns: Slab<Conn>,
    /// Connections to drive again this turn (they yielded with work left).
    again: Vec<usize>,
    /// Listeners that may still hold queued connections after a turn's accepts ran out.
    backlogged: Vec<usize>,
    /// Requests waiting for their turn under a rate limit: when, and their connection's key
    /// (an entry whose connection closed or waits no more is dropped when due).
    wakes: BinaryHeap<Reverse<(Instant, usize)>>,
    /// What the connections share.
    ctx: Ctx<'a>,
    next_sweep: Instant,
    next_beat: Instant,
    drain_until: Option<Instant>,
    /// Tells worker 0's health prober thread to stop (when draining).
    prober_stop: Arc<AtomicBool>,
}

impl<'a> Worker<'a> {
    fn boot(
        slot: usize,
        sockets: Vec<(ListenSocket, Address)>,
        channel: channel::End,
        config: &'a Config,
        shared: &'static Shared,
    ) -> Result<Worker<'a>, (io::Error, channel::End)> {
        let parts = match Worker::prepare(slot, sockets, &channel, config, shared) {
            Ok(parts) => parts,
            Err(e) => return Err((e, channel)),
        };
        let worker = Worker::assemble(slot, parts, channel, config);
        // Health checks run once per instance: in worker 0's prober thread.
        if slot == 0 {
            let reporter = match worker.channel.try_clone() {
                Ok(reporter) => reporter,
                Err(e) => return Err((e, worker.channel)),
            };
            if let Err(e) = health::spawn_prober(&config.upstreams, reporter, Arc::clone(&worker.prober_stop))
            {
                return Err((e, worker.channel));
            }
        }
        Ok(worker)
    }

    fn prepare(
        slot: usize,
        sockets: Vec<(ListenSocket, Address)>,
        channel: &channel::End,
        config: &'a Config,
        shared: &'static Shared,
    ) -> io::Result<Parts<'a>> {
        let poll = Poll::new()?;
        // Requests to capped upstreams may queue: this worker takes a seat in the queues,
        // and listens for the bell other workers ring when they free a permit.
        let seat = match config.upstreams.iter().any(|u| u.is_capped()) {
            true => {
                let seat = shared.take_seat(std::process::id()).ok_or_else(|| {
                    io::Error::other(format!(
                        "no free seat in the shared queues ({} workers)",
                        crate::shared::SEATS
                    ))
                })?;
                let bell = shared.bell.as_fd().as_raw_fd();
                poll.registry()
                    .register(&mut SourceFd(&bell), BELL, Interest::READABLE)?;
                Some((shared, seat))
            }
            false => None,
        };
        let signals = SignalReader::open().map_err(io::Error::from)?;
        poll.registry()
            .register(&mut SourceFd(&signals.as_raw_fd()), SIGNALS, Interest::READABLE)?;
        poll.registry()
            .register(&mut SourceFd(&channel.as_raw_fd()), CHANNEL, Interest::READABLE)?;
        let mut listeners = Vec::new();
        // Each socket comes with the address it was bound for: the pipeline picks among the
        // servers listening there.
        let addresses: Vec<Address> = sockets.iter().map(|(_, addr)| addr.clone()).collect();
        for (i, (socket, _)) in sockets.into_iter().enumerate() {
            let mut listener = Listener::of(socket)?;
            poll.registry()
                .register(&mut listener, Token(LISTENER_BASE + i), Interest::READABLE)?;
            listeners.push(listener);
        }
        let registry = poll.registry().try_clone()?;
        let pipeline = Pipeline::new(
            config,
            &addresses,
            registry,
            slot,
            seat,
            Some(shared),
            Instant::now(),
        )?;
        let servers = ServerLog::of_each(config);
        let log = AccessLog::open(&config.access_log, servers)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open access log: {e}")))?;
        Ok(Parts {
            poll,
            signals,
            listeners,
            entrances: Entrance::of_each(config, &addresses, shared)?,
            pipeline,
            log,
        })
    }

    fn assemble(slot: usize, parts: Parts<'a>, channel: channel::End, config: &'a Config) -> Worker<'a> {
        let clock = Clock::new();
        Worker {
            slot,
            config,
            poll: parts.poll,
            signals: parts.signals,
            channel,
            listeners: parts.listeners,
            entrances: parts.entrances,
            accepting: Accepting::Open,
            exhausted_since: None,
            conns: Slab::with_capacity(1024),
            again: Vec::new(),
            backlogged: Vec::new(),
            wakes: BinaryHeap::new(),
            next_sweep: clock.now + SWEEP_EVERY,
            // The first beat goes out at once: it tells the master this worker is serving.
            next_beat: clock.now,
            ctx: Ctx {
                limits: &config.limits,
                head_limits: config.head_limits(),
                pipeline: parts.pipeline,
                clock,
                log: parts.log,
                draining: false,
                counters: Counters::new(config.servers.iter().map(|s| s.routes.len()).sum()),
                buffers: Default::default(),
                head: ResponseHead::default(),
                request: RequestHead::default(),
            },
            drain_until: None,
            prober_stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.again.is_empty() && self.backlogged.is_empty() {
                let wake = self.wakes.peek().map(|Reverse((at, _))| *at);
                (self.next_sweep.min(self.next_beat))
                    .min(wake.unwrap_or(self.next_sweep))
                    .saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.ctx.clock.tick();
            for event in events.iter() {
                match source(event.token()) {
                    Source::Signals => {
                        if self.handle_signals() == Stop::Now {
                            self.ctx.log.flush();
                            self.beat();
                            return Ok(());
                        }
                    }
                    Source::Channel => self.handle_commands(),
                    // Another worker freed a permit: `admit_waiting` below looks.
                    Source::Bell => {}
                    Source::Listener(i) => self.accept_from(i),
                    Source::Client(key) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.mark_readable(event.is_read_closed() || event.is_error());
                            self.drive(key);
                        }
                    }
                    // A stale event from a socket closed since is harmless: a drive with
                    // nothing to do does nothing.
                    Source::Upstream(token) => {
                        let Some(key) = self.ctx.pipeline.upstreams.event_for(token) else {
                            continue;
                        };
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.mark_upstream_ready(event);
                            self.drive(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.again) {
                self.drive(key);
            }
            self.wake_due();
            if self.ctx.clock.now >= self.next_sweep {
                self.sweep();
            }
            // Permits given back this turn (timeouts in the sweep included) go to this
            // worker's queue first, then to the others'.
            self.admit_waiting();
            self.ctx.pipeline.upstreams.pass_on_permits();
            for index in std::mem::take(&mut self.backlogged) {
                self.accept_from(index);
            }
            if self.ctx.clock.now >= self.next_beat {
                self.beat();
            }
            self.resume_accepting();
            if let Some(until) = self.drain_until {
                if self.conns.is_empty() || self.ctx.clock.now >= until {
                    self.ctx.log.flush();
                    // A last beat, so the master's totals hold everything this worker counted.
                    self.beat();
                    info!("worker {} stopped", self.slot);
                    return Ok(());
                }
            }
        }
    }

    fn handle_signals(&mut self) -> Stop {
        for signal in self.signals.drain() {
            match signal {
                Signal::SIGTERM | Signal::SIGQUIT => self.begin_drain(),
                // Fast stop (the master's SIGINT, or Ctrl-C reaching the process group).
                Signal::SIGINT => return Stop::Now,
                _ => {}
            }
        }
        Stop::Later
    }

    fn handle_commands(&mut self) {
        loop {
            match self.channel.next_command() {
                Ok(Received::Message(Command::Drain)) => self.begin_drain(),
                Ok(Received::Message(Command::ReopenLogs)) => self.reopen_logs(),
                Ok(Received::Message(Command::Health { upstream, server, up })) => {
                    self.ctx
                        .pipeline
                        .upstreams
                        .set_health(upstream as usize, server as usize, up);
                }
                Ok(Received::Empty) => return,
                // The master is gone: finish up rather than serve unsupervised.
                Ok(Received::Closed) | Err(_) => {
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&self.channel.as_raw_fd()));
                    self.begin_drain();
                    return;
                }
            }
        }
    }

    fn reopen_logs(&mut self) {
        if let Err(e) = self.ctx.log.reopen(&self.config.access_log) {
            error!("worker {} cannot reopen the access log: {e}", self.slot);
        }
        if let Some(path) = &self.config.error_log {
            let _ = crate::sys::redirect_stderr(path);
        }
    }

    fn beat(&mut self) {
        self.next_beat = self.ctx.clock.now + self.config.supervisor.heartbeat_interval;
        self.ctx.counters.active = self.conns.len() as u32;
        let mut counters = Box::new(self.ctx.counters.clone());
        counters.upstreams = self.ctx.pipeline.upstreams.counters(self.ctx.clock.now);
        counters.cache = self.ctx.pipeline.cache_events();
        counters.guards = self.ctx.pipeline.guard_events();
        let _ = self.channel.report(&Report::Beat(counters));
    }

    /// Stops accepting (after taking what is already queued on our sockets), lets busy
    /// connections finish with `Connection: close`, and closes idle ones as they go quiet.
    fn begin_drain(&mut self) {
        if self.drain_until.is_some() {
            return;
        }
        self.drain_until = Some(self.ctx.clock.now + self.config.supervisor.shutdown_timeout);
        self.ctx.draining = true;
        self.prober_stop.store(true, Ordering::Relaxed);
        // What is queued is taken even past max_connections (it is bounded by the backlog):
        // a removed slot's socket closes after this, and its queue with it.
        if self.accepting == Accepting::Full {
            self.accepting = Accepting::Open;
        }
        for index in 0..self.listeners.len() {
            self.accept_from(index);
        }
        self.accepting = Accepting::Stopped;
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(listener);
        }
        self.close_quiet_connections();
    }

    /// While draining: idle connections that have been quiet a while get a lingering close.
    fn close_quiet_connections(&mut self) {
        let now = self.ctx.clock.now;
        for (_, conn) in self.conns.iter_mut() {
            if conn.idle_for(now).is_some_and(|idle| idle >= DRAIN_IDLE_CLOSE) {
                conn.linger_out(now);
            }
        }
    }

    fn accept_from(&mut self, index: usize) {
        for _ in 0..ACCEPTS_PER_TURN {
            if self.accepting != Accepting::Open {
                return;
            }
            if self.conns.len() >= self.config.limits.max_connections && self.drain_until.is_none() {
                self.accepting = Accepting::Full;
                return;
            }
            match self.listeners[index].accept() {
                Ok((stream, peer)) => {
                    if let Some(since) = self.exhausted_since.take() {
                        let paused = self.ctx.clock.now.saturating_duration_since(since);
                        info!("worker {} accepting again after {paused:?}", self.slot);
                    }
                    self.admit(stream, peer, index)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_resource_exhaustion(&e) => {
                    if self.exhausted_since.is_none() {
                        self.exhausted_since = Some(self.ctx.clock.now);
                        warn!(
                            "accept() failed in worker {}: {e}; pausing accepts, retrying every {ACCEPT_PAUSE:?}",
                            self.slot
                        );
                    }
                    self.accepting = Accepting::Paused {
                        until: self.ctx.clock.now + ACCEPT_PAUSE,
                    };
                }
                // The client gave up before we accepted (ECONNABORTED and the like).
                Err(_) => {}
            }
        }
        // Edge-triggered: no new event comes for what is already queued, so come back to it.
        if !self.backlogged.contains(&index) {
            self.backlogged.push(index);
        }
    }

    fn admit(&mut self, mut stream: Stream, peer: std::net::SocketAddr, listener: usize) {
        if self.config.limits.send_buffer_bytes > 0 {
            let _ =
                socket2::SockRef::from(&stream).set_send_buffer_size(self.config.limits.send_buffer_bytes);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key >= LISTENER_BASE / 2 {
            return;
        }
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(2 * key), interest)
        {
            warn!("epoll_ctl() failed while admitting a connection: {e}");
            return;
        }
        let entrance = &self.entrances[listener];
        let client = match &entrance.tls {
            Some(tls) => match Tls::new(stream, Arc::clone(tls)) {
                Ok(tls) if entrance.proxy_protocol => Client::Tls(Box::new(tls.after_proxy_header())),
                Ok(tls) => Client::Tls(Box::new(tls)),
                Err(e) => return warn!("cannot start TLS on a connection: {e}"),
            },
            None => Client::Plain(stream),
        };
        let conn = entry.insert(Conn::new(key, client, peer, listener, self.ctx.clock.now));
        if entrance.proxy_protocol {
            conn.await_proxy_header();
        } else if entrance.tls.is_some() {
            // The handshake counts against header_timeout, as the request head after it.
            conn.await_head();
        }
        // The request often arrives with the handshake: read it now, saving a poll round.
        self.drive(key);
    }

    fn resume_accepting(&mut self) {
        let resume = match self.accepting {
            Accepting::Full => self.conns.len() < self.config.limits.max_connections,
            Accepting::Paused { until } => self.ctx.clock.now >= until,
            Accepting::Open | Accepting::Stopped => false,
        };
        if resume {
            self.accepting = Accepting::Open;
            for index in 0..self.listeners.len() {
                self.accept_from(index);
            }
        }
    }

    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let verdict = conn.drive(&mut self.ctx);
        self.settle(key, verdict);
    }

    /// Acts on what driving connection `key` came to, and notes when a request it holds
    /// waits for its turn.
    fn settle(&mut self, key: usize, verdict: Verdict) {
        // The answer the connection had is written by now.
        self.ctx.pipeline.upstreams.close_retired();
        match verdict {
            Verdict::Wait => {}
            Verdict::Again => self.again.push(key),
            Verdict::Close => return self.close(key),
        }
        if let Some(at) = self.conns.get_mut(key).and_then(Conn::take_wake) {
            self.wakes.push(Reverse((at, key)));
        }
    }

    /// Hands the requests whose turn came over to the pipeline again.
    fn wake_due(&mut self) {
        let now = self.ctx.clock.now;
        while let Some(&Reverse((at, key))) = self.wakes.peek() {
            if at > now {
                return;
            }
            self.wakes.pop();
            let resumed = (self.conns.get_mut(key)).and_then(|conn| conn.resume(&mut self.ctx));
            if let Some(verdict) = resumed {
                self.settle(key, verdict);
            }
        }
    }

    /// Lets queued requests take the permits freed since the last turn, oldest first per
    /// upstream, for as long as it is their turn and a server has room.
    fn admit_waiting(&mut self) {
        if !self.ctx.pipeline.upstreams.any_waiting() {
            return;
        }
        for upstream in 0..self.ctx.pipeline.upstreams.list.len() {
            while let Some(key) = self
                .ctx
                .pipeline
                .upstreams
                .next_admitted(upstream, self.ctx.clock.now)
            {
                self.drive(key);
                // Still first: it found no permit after all (another worker was quicker).
                if self
                    .ctx
                    .pipeline
                    .upstreams
                    .next_admitted(upstream, self.ctx.clock.now)
                    == Some(key)
                {
                    break;
                }
            }
        }
    }

    fn sweep(&mut self) {
        self.next_sweep = self.ctx.clock.now + SWEEP_EVERY;
        self.ctx.log.flush();
        let now = self.ctx.clock.now;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline(&self.ctx) <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            let verdict = self.conns[key].time_out(&mut self.ctx);
            self.settle(key, verdict);
        }
        self.ctx.pipeline.upstreams.expire_idle(now);
        if self.drain_until.is_some() {
            self.close_quiet_connections();
        }
    }

    fn close(&mut self, key: usize) {
        // Dropping the stream closes the fd, which also removes it from the epoll set.
        let mut conn = self.conns.remove(key);
        conn.release(&mut self.ctx);
    }
}

/// Whether a signal ends the loop at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Now,
    Later,
}

/// What booting prepares before the worker exists.
struct Parts<'a> {
    poll: Poll,
    signals: SignalReader,
    listeners: Vec<Listener>,
    entrances: Vec<Entrance>,
    pipeline: Pipeline<'a>,
    log: AccessLog,
}

/// How a listener's connections begin: with a PROXY protocol header, with a TLS handshake.
struct Entrance {
    proxy_protocol: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Entrance {
    fn of_each(config: &Config, addresses: &[Address], shared: &Shared) -> io::Result<Vec<Entrance>> {
        let tls = crate::pipeline::tls::server_configs(config, addresses, shared.tickets())
            .map_err(io::Error::other)?;
        Ok((addresses.iter().zip(tls))
            .map(|(addr, tls)| Entrance {
                proxy_protocol: config.takes_proxy_protocol(addr),
                tls,
            })
            .collect())
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    /// The worker relies on this instead of a setsockopt per accepted connection.
    #[test]
    fn accepted_sockets_inherit_nodelay_from_their_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&listener).set_nodelay(true).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
