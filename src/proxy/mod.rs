//! The reverse proxy: per-worker upstream state (balancers, keep-alive pools) and the
//! exchange that carries one request to an upstream and its response back.

mod balance;
mod exchange;
pub mod forward;
pub mod health;
mod pool;
pub mod response;

use std::time::Instant;

use mio::net::TcpStream;
use mio::Token;

use crate::config::Upstream;
use crate::stats::UpstreamCounters;
pub use balance::Balancer;
pub use exchange::{Env, Exchange, Failure, Start, Step};
use pool::{Idle, Pool};

/// One upstream as a worker runs it.
pub struct UpstreamState<'a> {
    pub config: &'a Upstream,
    pub balancer: Balancer,
    pool: Pool,
    /// Latencies and failures, for the heartbeat.
    pub counters: UpstreamCounters,
}

/// Every upstream of the config, as this worker runs them.
pub struct Upstreams<'a> {
    pub list: Vec<UpstreamState<'a>>,
}

impl<'a> Upstreams<'a> {
    pub fn new(configs: &'a [Upstream], now: Instant) -> Upstreams<'a> {
        let list = configs
            .iter()
            .map(|config| UpstreamState {
                config,
                balancer: Balancer::new(config, now),
                pool: Pool::default(),
                counters: UpstreamCounters::default(),
            })
            .collect();
        Upstreams { list }
    }

    /// An idle connection to `server` of `upstream`, if one is pooled and still open;
    /// preferably one registered under `token`.
    pub fn checkout(&mut self, upstream: usize, server: usize, token: Token, now: Instant) -> Option<Idle> {
        let state = &mut self.list[upstream];
        state
            .pool
            .checkout(server, token, now, state.config.keepalive_timeout)
    }

    /// Returns a connection whose last exchange ended cleanly (still registered under `token`).
    pub fn checkin(&mut self, upstream: usize, server: usize, stream: TcpStream, token: Token, now: Instant) {
        let state = &mut self.list[upstream];
        state
            .pool
            .checkin(server, stream, token, now, state.config.keepalive);
    }

    /// Notes a poll event under an upstream token, which may come from an idle connection.
    pub fn note_event(&mut self, token: Token) {
        for state in &mut self.list {
            state.pool.suspect(token);
        }
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
