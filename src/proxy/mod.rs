//! The reverse proxy: per-worker upstream state (balancers, keep-alive pools) and the
//! exchange that carries one request to an upstream and its response back.

mod balance;
mod exchange;
pub mod forward;
mod gate;
pub mod health;
mod pool;
pub mod response;

use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::io::Stream;
use mio::Token;

use crate::config::Upstream;
use crate::shared::Shared;
use crate::stats::UpstreamCounters;
pub use balance::Balancer;
use balance::Tried;
pub use exchange::{Env, Exchange, Failure, Offload, OffloadKind, Offloads, Start, Step, KEPT_ON_OFFLOAD};
pub use forward::Preconditions;
use gate::{Gate, Permit};
use pool::Pool;

/// One upstream as a worker runs it.
pub struct UpstreamState<'a> {
    pub config: &'a Upstream,
    pub balancer: Balancer,
    pool: Pool,
    /// The shared caps and this worker's queue, when a server of it has `max_conns`.
    gate: Option<Gate>,
    /// Latencies and failures, for the heartbeat.
    pub counters: UpstreamCounters,
}

/// What admission decided for a request.
enum Admission {
    /// To `server`, holding `permit` when the server is capped.
    Go { server: usize, permit: Option<Permit> },
    /// Every server it may use is at its cap, or older requests wait: it waits too.
    Queue,
    /// No server it has not tried is left.
    NoServer,
}

impl UpstreamState<'_> {
    /// Picks a server for a request and takes a permit for it when it is capped: servers at
    /// their cap are skipped, and a request takes a permit only in its turn (see `gate`).
    /// `ticket`: the request's place in the queue, if it waits; `held`: the permit it holds
    /// from an attempt that failed (kept when the same server is picked again).
    fn admit(
        &mut self,
        key: u64,
        tried: &Tried,
        ticket: Option<u64>,
        held: Option<Permit>,
        now: Instant,
    ) -> Admission {
        let Some(gate) = &mut self.gate else {
            return match self.balancer.pick(key, tried, now) {
                Some(server) => Admission::Go { server, permit: None },
                None => Admission::NoServer,
            };
        };
        if !gate.turn(ticket, now) {
            return Admission::Queue;
        }
        let mut full = Tried::default();
        loop {
            // Servers that are up first; when none is, the one back soonest, as without caps.
            let server = match self.balancer.pick_up(key, tried, &full, now) {
                Some(server) => server,
                None if !full.is_empty() => return Admission::Queue,
                None => match self.balancer.soonest_back(tried) {
                    Some(server) => server,
                    None => return Admission::NoServer,
                },
            };
            if held.as_ref().is_some_and(|permit| permit.server() == server) {
                return Admission::Go { server, permit: held };
            }
            match gate.take(server) {
                Ok(permit) => return Admission::Go { server, permit },
                Err(()) => full.insert(server),
            }
        }
    }
}

/// Every upstream of the config, as this worker runs them.
pub struct Upstreams<'a> {
    pub list: Vec<UpstreamState<'a>>,
    /// The client connection each open upstream socket works for, by descriptor; `None`
    /// while the socket idles in a pool.
    owners: Vec<Option<usize>>,
    /// Connections whose exchange ended without reuse, closed once the client's answer is
    /// written (see [`Upstreams::retire`]).
    retired: Vec<Stream>,
}

/// The poll token of an upstream socket: odd (clients' are even, see `worker`) and made of
/// its descriptor, which no other open socket has. A socket keeps it for its whole life, so
/// handing a pooled one to another client costs no `epoll_ctl`, and an event on an idle
/// socket reaches only that socket.
pub fn socket_token(stream: &Stream) -> Token {
    Token(2 * stream.as_raw_fd() as usize + 1)
}

impl<'a> Upstreams<'a> {
    /// The worker's upstreams; `shared` (with this process's `seat` in it) holds the caps of
    /// capped ones. Fails when an upstream is capped and there is no shared state for it.
    pub fn new(
        configs: &'a [Upstream],
        now: Instant,
        shared: Option<(&'static Shared, usize)>,
    ) -> Result<Upstreams<'a>, String> {
        let mut list = Vec::with_capacity(configs.len());
        for config in configs {
            let gate = match shared {
                Some((shared, seat)) => Gate::open(config, shared, std::process::id(), seat)?,
                None if config.is_capped() => {
                    return Err(format!(
                        "upstream {} has max_conns but no shared state",
                        config.name
                    ))
                }
                None => None,
            };
            list.push(UpstreamState {
                config,
                balancer: Balancer::new(config, now),
                pool: Pool::default(),
                gate,
                counters: UpstreamCounters::default(),
            });
        }
        Ok(Upstreams {
            list,
            owners: Vec::new(),
            retired: Vec::new(),
        })
    }

    /// Notes that `stream` works for client connection `conn` (`None`: it idles in a pool).
    fn own(&mut self, stream: &Stream, conn: Option<usize>) {
        let fd = stream.as_raw_fd() as usize;
        if self.owners.len() <= fd {
            self.owners.resize(fd + 1, None);
        }
        self.owners[fd] = conn;
    }

    /// The client connection an event on the upstream socket with token `token` is for.
    /// None for a pooled socket, which the event marks suspect (typically the upstream's FIN).
    pub fn event_for(&mut self, token: Token) -> Option<usize> {
        let fd = token.0 / 2;
        let owner = self.owners.get(fd).copied().flatten();
        if owner.is_none() {
            for state in &mut self.list {
                state.pool.suspect(fd);
            }
        }
        owner
    }

    /// The connection whose request is next in `upstream`'s queue here, when it is its turn
    /// and a server has room (its pump then takes the permit, or queues on).
    pub fn next_admitted(&mut self, upstream: usize, now: Instant) -> Option<usize> {
        let state = &mut self.list[upstream];
        let gate = state.gate.as_mut()?;
        let (conn, ticket) = gate.first_waiting()?;
        let room = (0..state.config.servers.len()).any(|s| gate.has_room(s));
        (room && gate.turn(Some(ticket), now)).then_some(conn)
    }

    /// Ends a loop turn: permits given back during it and not taken by this worker's own
    /// waiting requests wake the other workers' (see `gate`).
    pub fn pass_on_permits(&self) {
        for gate in self.list.iter().filter_map(|u| u.gate.as_ref()) {
            gate.pass_on();
        }
    }

    /// True when a request waits here for a permit.
    pub fn any_waiting(&self) -> bool {
        self.list
            .iter()
            .any(|u| u.gate.as_ref().is_some_and(|g| g.waiting() > 0))
    }

    /// An idle connection to `server` of `upstream`, if one is pooled and still open; it works
    /// for client connection `conn` from now on.
    pub fn checkout(&mut self, upstream: usize, server: usize, conn: usize, now: Instant) -> Option<Stream> {
        let state = &mut self.list[upstream];
        let stream = state.pool.checkout(server, now, state.config.keepalive_timeout)?;
        self.own(&stream, Some(conn));
        Some(stream)
    }

    /// Notes a new connection to an upstream server, working for client connection `conn`.
    pub fn opened(&mut self, stream: &Stream, conn: usize) {
        self.own(stream, Some(conn));
    }

    /// Returns a connection whose last exchange ended cleanly.
    pub fn checkin(&mut self, upstream: usize, server: usize, stream: Stream, now: Instant) {
        self.own(&stream, None);
        let state = &mut self.list[upstream];
        state.pool.checkin(server, stream, now, state.config.keepalive);
    }

    /// Takes a connection that will not be reused, to close after the response it carried
    /// went to the client: a TCP close (its FIN, the peer's processing of it on loopback)
    /// then does not delay the answer.
    pub fn retire(&mut self, stream: Stream) {
        self.retired.push(stream);
    }

    /// Closes the connections retired since the last call.
    pub fn close_retired(&mut self) {
        self.retired.clear();
    }

    /// Closes pooled connections idle past their upstream's keepalive_timeout.
    pub fn expire_idle(&mut self, now: Instant) {
        for state in &mut self.list {
            state.pool.expire(now, state.config.keepalive_timeout);
        }
    }

    /// Every upstream's counters, with which servers this worker would use at `now`.
    pub fn counters(&self, now: Instant) -> Vec<UpstreamCounters> {
        self.list
            .iter()
            .map(|state| UpstreamCounters {
                servers_up: (0..state.balancer.servers.len())
                    .map(|i| state.balancer.usable(i, now))
                    .collect(),
                ..state.counters.clone()
            })
            .collect()
    }

    /// Applies an active health check verdict.
    pub fn set_health(&mut self, upstream: usize, server: usize, healthy: bool) {
        if let Some(state) = self
            .list
            .get_mut(upstream)
            .and_then(|u| u.balancer.servers.get_mut(server))
        {
            state.healthy = healthy;
        }
    }
}

/// Shared state with the rows the capped ones of `upstreams` need (as the master makes them),
/// and a seat for this process.
#[cfg(test)]
pub fn shared_for_tests(upstreams: &[Upstream]) -> (&'static Shared, usize) {
    crate::shared::for_tests(upstreams.iter().filter(|u| u.is_capped()).flat_map(|u| {
        u.servers
            .iter()
            .map(|s| (u.name.as_str(), s.addr.to_string(), s.max_conns))
    }))
}
