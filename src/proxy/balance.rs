//! Choosing an upstream server for a request, and passive health.
//!
//! Each worker keeps its own view (no shared state across processes): round-robin position,
//! requests in flight, recent failures. Active health verdicts, decided once per instance,
//! arrive from the master and override "up" here.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{Balance, Upstream};

/// One server as this worker sees it.
#[derive(Debug, Clone)]
pub struct ServerState {
    weight: i64,
    /// Smooth weighted round robin (nginx's algorithm) running weight.
    current: i64,
    /// Requests this worker has in flight on the server (held by [`InFlight`] guards).
    in_flight: Rc<Cell<u32>>,
    /// Failures in the current fail_timeout window and when that window started.
    fails: u32,
    window_start: Instant,
    /// Passive health: not chosen until then.
    down_until: Option<Instant>,
    /// Active health verdict (true until a health check says otherwise).
    pub healthy: bool,
    /// Chosen only while no primary server the request may try is up.
    backup: bool,
}

/// The servers of one upstream and how to pick among them.
#[derive(Debug, Clone)]
pub struct Balancer {
    policy: Balance,
    max_fails: u32,
    fail_timeout: Duration,
    pub servers: Vec<ServerState>,
    /// Scratch list of the servers a pick may choose, kept so that picking never allocates.
    live: Vec<usize>,
}

/// The servers one request has tried: a bit for each of the first 64, a list for the rest
/// (only pools that large ever allocate for it).
#[derive(Debug, Default, Clone)]
pub struct Tried {
    first: u64,
    more: Vec<usize>,
}

impl Tried {
    pub fn contains(&self, server: usize) -> bool {
        match Tried::bit(server) {
            Some(bit) => self.first & bit != 0,
            None => self.more.contains(&server),
        }
    }

    pub fn insert(&mut self, server: usize) {
        match Tried::bit(server) {
            Some(bit) => self.first |= bit,
            None if !self.more.contains(&server) => self.more.push(server),
            None => {}
        }
    }

    pub fn remove(&mut self, server: usize) {
        match Tried::bit(server) {
            Some(bit) => self.first &= !bit,
            None => self.more.retain(|&s| s != server),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first == 0 && self.more.is_empty()
    }

    fn bit(server: usize) -> Option<u64> {
        u32::try_from(server)
            .ok()
            .and_then(|shift| 1u64.checked_shl(shift))
    }
}

/// The hash policy's value of a request's key (client address text or header value):
/// FNV-1a, stable across workers and restarts, so a key always lands on one server.
pub fn hash_key(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Balancer {
    pub fn new(upstream: &Upstream, now: Instant) -> Balancer {
        let servers = upstream
            .servers
            .iter()
            .map(|s| ServerState {
                weight: i64::from(s.weight),
                current: 0,
                in_flight: Rc::default(),
                fails: 0,
                window_start: now,
                down_until: None,
                healthy: true,
                backup: s.backup,
            })
            .collect();
        Balancer {
            policy: upstream.balance.clone(),
            max_fails: upstream.max_fails,
            fail_timeout: upstream.fail_timeout,
            live: Vec::with_capacity(upstream.servers.len()),
            servers,
        }
    }

    /// Whether server `index` may be chosen at `now` (health checks and passive health both
    /// say it is up).
    pub fn usable(&self, index: usize, now: Instant) -> bool {
        let server = &self.servers[index];
        server.healthy && server.down_until.is_none_or(|until| now >= until)
    }

    /// Picks a server not in `tried`; `key` ([`hash_key`] of the request's key) feeds the
    /// hash policy. When every untried server is down, the one that comes back soonest is
    /// tried rather than none.
    pub fn pick(&mut self, key: u64, tried: &Tried, now: Instant) -> Option<usize> {
        self.pick_up(key, tried, &Tried::default(), now)
            .or_else(|| self.soonest_back(tried))
    }

    /// Picks, by the policy, a server that is up and in neither `tried` nor `full` (those at
    /// their cap). Backup servers are candidates only while no primary one not in `tried` is
    /// up (a primary at its cap is up: its requests wait rather than go to a backup).
    pub fn pick_up(&mut self, key: u64, tried: &Tried, full: &Tried, now: Instant) -> Option<usize> {
        let mut live = std::mem::take(&mut self.live);
        live.clear();
        let up = |i: usize| !tried.contains(i) && self.usable(i, now);
        let backup = !(0..self.servers.len()).any(|i| !self.servers[i].backup && up(i));
        live.extend(
            (0..self.servers.len())
                .filter(|&i| self.servers[i].backup == backup && up(i) && !full.contains(i)),
        );
        let picked = (!live.is_empty()).then(|| match &self.policy {
            Balance::RoundRobin => self.round_robin(&live),
            Balance::LeastConn => self.least_conn(&mut live),
            Balance::Hash(_) => self.hashed(key, &live, backup),
        });
        self.live = live;
        picked
    }

    /// The server not in `tried` that comes back up soonest.
    pub fn soonest_back(&self, tried: &Tried) -> Option<usize> {
        (0..self.servers.len())
            .filter(|&i| !tried.contains(i))
            .min_by_key(|&i| self.servers[i].down_until)
    }

    fn round_robin(&mut self, live: &[usize]) -> usize {
        let total: i64 = live.iter().map(|&i| self.servers[i].weight).sum();
        for &i in live {
            self.servers[i].current += self.servers[i].weight;
        }
        let best = *live
            .iter()
            .max_by_key(|&&i| (self.servers[i].current, std::cmp::Reverse(i)))
            .expect("non-empty");
        self.servers[best].current -= total;
        best
    }

    /// Round robin among the least loaded of `live` (which keeps only those).
    fn least_conn(&mut self, live: &mut Vec<usize>) -> usize {
        let load =
            |i: usize| u64::from(self.servers[i].in_flight.get()) * 1000 / self.servers[i].weight as u64;
        let least = live.iter().map(|&i| load(i)).min().expect("non-empty");
        live.retain(|&i| load(i) == least);
        self.round_robin(live)
    }

    /// The server `hash` lands on among the primaries (or the backups), or when that one
    /// cannot be used, one of `live` by the hash.
    fn hashed(&self, hash: u64, live: &[usize], backup: bool) -> usize {
        let group = || (0..self.servers.len()).filter(|&i| self.servers[i].backup == backup);
        let total: u64 = group().map(|i| self.servers[i].weight as u64).sum();
        let mut point = hash % total.max(1);
        let chosen = group()
            .find(|&i| {
                let weight = self.servers[i].weight as u64;
                let hit = point < weight;
                point = point.saturating_sub(weight);
                hit
            })
            .unwrap_or(0);
        if live.contains(&chosen) {
            chosen
        } else {
            live[(hash % live.len() as u64) as usize]
        }
    }

    /// Counts a request in flight on `index` for as long as the returned guard lives.
    pub fn occupy(&self, index: usize) -> InFlight {
        let counter = Rc::clone(&self.servers[index].in_flight);
        counter.set(counter.get() + 1);
        InFlight(counter)
    }

    /// Records a failed attempt; enough of them within fail_timeout take the server down.
    /// A lone server is never taken down (there is nothing else to try, as in nginx).
    pub fn note_failure(&mut self, index: usize, now: Instant) {
        if self.servers.len() == 1 || self.max_fails == 0 {
            return;
        }
        let fail_timeout = self.fail_timeout;
        let server = &mut self.servers[index];
        if now.duration_since(server.window_start) > fail_timeout {
            server.fails = 0;
            server.window_start = now;
        }
        server.fails += 1;
        if server.fails >= self.max_fails {
            server.down_until = Some(now + fail_timeout);
            server.fails = 0;
            server.window_start = now;
        }
    }

    /// Records a success: the server is up again.
    pub fn note_success(&mut self, index: usize) {
        let server = &mut self.servers[index];
        server.down_until = None;
        server.fails = 0;
    }
}

/// One request in flight on a server; dropping it (however the exchange ends) uncounts it.
#[derive(Debug)]
pub struct InFlight(Rc<Cell<u32>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HashKey, UpstreamServer};

    fn balancer(weights: &[u32], policy: Balance) -> Balancer {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| UpstreamServer {
                weight,
                ..UpstreamServer::new(std::net::SocketAddr::from(([127, 0, 0, 1], 3000 + i as u16)))
            })
            .collect();
        let mut upstream = Upstream::new("app", servers);
        upstream.balance = policy;
        upstream.max_fails = 2;
        Balancer::new(&upstream, Instant::now())
    }

    fn none() -> Tried {
        Tried::default()
    }

    #[test]
    fn tried_holds_any_index() {
        let mut tried = none();
        for server in [0, 5, 63, 64, 1000] {
            assert!(!tried.contains(server));
            tried.insert(server);
            tried.insert(server);
            assert!(tried.contains(server));
        }
        for server in [0, 5, 63, 64, 1000] {
            tried.remove(server);
            assert!(!tried.contains(server), "{server}");
        }
        assert!(tried.is_empty());
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        let mut b = balancer(&[1, 2], Balance::RoundRobin);
        let now = Instant::now();
        let picks: Vec<usize> = (0..6).map(|_| b.pick(0, &none(), now).unwrap()).collect();
        assert_eq!(picks, [1, 0, 1, 1, 0, 1]);
    }

    #[test]
    fn failures_take_a_server_down_for_fail_timeout() {
        let mut b = balancer(&[1, 1], Balance::RoundRobin);
        let now = Instant::now();
        b.note_failure(0, now);
        assert!(b.usable(0, now), "one failure of max_fails = 2");
        b.note_failure(0, now);
        assert!(!b.usable(0, now));
        assert!((0..4).all(|_| b.pick(0, &none(), now) == Some(1)));
        assert!(b.usable(0, now + Duration::from_secs(11)));
        let mut tried = none();
        tried.insert(1);
        assert_eq!(
            b.pick(0, &tried, now),
            Some(0),
            "all down: the soonest back is tried"
        );
    }

    #[test]
    fn least_conn_prefers_the_idle_server() {
        let mut b = balancer(&[1, 1], Balance::LeastConn);
        let busy = b.occupy(0);
        assert_eq!(b.pick(0, &none(), Instant::now()), Some(1));
        drop(busy);
        let _busy = b.occupy(1);
        assert_eq!(b.pick(0, &none(), Instant::now()), Some(0));
    }

    #[test]
    fn backups_take_over_only_while_no_primary_is_up() {
        let mut b = balancer(&[1, 1, 1], Balance::RoundRobin);
        b.servers[2].backup = true;
        let now = Instant::now();
        assert!((0..6).all(|_| b.pick(0, &none(), now) != Some(2)));
        let mut full = none();
        full.insert(0);
        full.insert(1);
        assert_eq!(
            b.pick_up(0, &none(), &full, now),
            None,
            "primaries at their cap: wait, no backup"
        );
        b.servers[0].healthy = false;
        let mut tried = none();
        tried.insert(1);
        assert_eq!(
            b.pick(0, &tried, now),
            Some(2),
            "one primary down, the other tried"
        );
        b.servers[1].healthy = false;
        assert!((0..4).all(|_| b.pick(0, &none(), now) == Some(2)));
        b.servers[1].healthy = true;
        assert!((0..4).all(|_| b.pick(0, &none(), now) == Some(1)), "given back");
    }

    #[test]
    fn hash_is_stable_per_key() {
        let mut b = balancer(&[1, 1, 1], Balance::Hash(HashKey::ClientIp));
        let now = Instant::now();
        for key in [b"alice".as_slice(), b"bob", b"carol"] {
            let first = b.pick(hash_key(key), &none(), now);
            assert!((0..5).all(|_| b.pick(hash_key(key), &none(), now) == first));
        }
    }
}
