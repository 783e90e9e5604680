//! Worker counters summed by what they mean rather than by index: per server name and route
//! prefix, and per upstream name. A worker's counters are indexed by its own config's routes and upstreams;
//! after a reload the same index may mean something else, so each worker carries the
//! [`Labels`] of the config it was started with, and sums are kept by label.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::stats::{
    add_each, CacheEvent, Counters, GuardEvent, TlsFailure, UpstreamCounters, NO_ROUTE, STATUS_CLASSES,
};

/// The route label of responses that reached no route.
pub const NO_ROUTE_LABEL: &str = "none";

/// A route as the metrics name it: its server's first name (empty for a server without
/// names) and its prefix.
pub type RouteLabel = (String, String);

/// What a worker's counter indices name, from the config it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// Routes by counter index ([`NO_ROUTE`] is [`NO_ROUTE_LABEL`], on no server).
    pub routes: Vec<RouteLabel>,
    /// Upstream names with their servers' addresses, in config order.
    pub upstreams: Vec<(String, Vec<String>)>,
}

impl Labels {
    /// The labels of `config`, in the order workers count.
    pub fn of(config: &Config) -> Labels {
        let mut routes = vec![RouteLabel::default(); NO_ROUTE + 1];
        routes[NO_ROUTE].1 = NO_ROUTE_LABEL.to_string();
        let names = config.server_labels();
        routes.extend(config.servers.iter().zip(names).flat_map(|(server, name)| {
            let name = name.unwrap_or_default();
            server.routes.iter().map(move |r| (name.clone(), r.label()))
        }));
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    u.servers.iter().map(|s| s.addr.to_string()).collect(),
                )
            })
            .collect();
        Labels { routes, upstreams }
    }
}

/// Counters summed by label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Responses by route and status class.
    pub responses: BTreeMap<RouteLabel, [u64; STATUS_CLASSES]>,
    /// By upstream name.
    pub upstreams: BTreeMap<String, UpstreamTally>,
    /// TLS connections refused, by kind.
    pub tls_failures: [u64; TlsFailure::ALL.len()],
    /// What the response cache did, by event.
    pub cache: [u64; CacheEvent::ALL.len()],
    /// What the limits on clients did, by event.
    pub guards: [u64; GuardEvent::ALL.len()],
}

/// One upstream's histograms and failures, summed (its `servers_up` stays empty).
pub type UpstreamTally = UpstreamCounters;

impl Tally {
    /// A tally with a zero for every route and upstream of `labels` (so every series
    /// exists from the start).
    pub fn zero(labels: &Labels) -> Tally {
        let mut tally = Tally::default();
        for route in &labels.routes {
            tally.responses.entry(route.clone()).or_default();
        }
        for (name, _) in &labels.upstreams {
            tally.upstreams.entry(name.clone()).or_default();
        }
        tally
    }

    /// Adds a worker's counters, named by the labels of its config.
    pub fn add(&mut self, counters: &Counters, labels: &Labels) {
        self.add_totals(counters.requests, counters.bytes_in, counters.bytes_out);
        add_each(&mut self.tls_failures, &counters.tls_failures);
        add_each(&mut self.cache, &counters.cache);
        add_each(&mut self.guards, &counters.guards);
        for (row, route) in counters.responses.iter().zip(&labels.routes) {
            self.add_responses(route, row);
        }
        for (upstream, (name, _)) in counters.upstreams.iter().zip(&labels.upstreams) {
            self.upstreams.entry(name.clone()).or_default().add(upstream);
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Tally) {
        self.add_totals(other.requests, other.bytes_in, other.bytes_out);
        add_each(&mut self.tls_failures, &other.tls_failures);
        add_each(&mut self.cache, &other.cache);
        add_each(&mut self.guards, &other.guards);
        for (route, row) in &other.responses {
            self.add_responses(route, row);
        }
        for (name, upstream) in &other.upstreams {
            self.upstreams.entry(name.clone()).or_default().add(upstream);
        }
    }

    fn add_totals(&mut self, requests: u64, bytes_in: u64, bytes_out: u64) {
        self.requests += requests;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
    }

    fn add_responses(&mut self, route: &RouteLabel, row: &[u64; STATUS_CLASSES]) {
        add_each(self.responses.entry(route.clone()).or_default(), row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::UpstreamError;

    /// A route of a server without names.
    fn route(prefix: &str) -> RouteLabel {
        (String::new(), prefix.to_string())
    }

    fn labels(routes: &[&str], upstreams: &[&str]) -> Labels {
        let mut all = vec![route(NO_ROUTE_LABEL)];
        all.extend(routes.iter().map(|r| route(r)));
        Labels {
            routes: all,
            upstreams: upstreams.iter().map(|u| (u.to_string(), Vec::new())).collect(),
        }
    }

    #[test]
    fn workers_of_different_configs_add_up_by_name() {
        // Before a reload `/api/` was route 1; after it, route 2.
        let old = labels(&["/api/", "/"], &["app"]);
        let new = labels(&["/static/", "/api/", "/"], &["app"]);
        let mut before = Counters::new(2);
        before.count_response(1, 200);
        before.requests = 1;
        before.upstreams = vec![UpstreamCounters::default()];
        before.upstreams[0].count_error(UpstreamError::Reset);
        let mut after = Counters::new(3);
        after.count_response(2, 502);
        after.count_response(NO_ROUTE, 404);
        after.requests = 2;
        let mut tally = Tally::zero(&new);
        tally.add(&before, &old);
        tally.add(&after, &new);
        assert_eq!(tally.requests, 3);
        assert_eq!(tally.responses[&route("/api/")], [0, 1, 0, 0, 1]);
        assert_eq!(tally.responses[&route("none")], [0, 0, 0, 1, 0]);
        assert_eq!(tally.responses[&route("/static/")], [0; 5]);
        assert_eq!(tally.upstreams["app"].errors[UpstreamError::Reset as usize], 1);
        let mut doubled = tally.clone();
        doubled.merge(&tally);
        assert_eq!(doubled.responses[&route("/api/")], [0, 2, 0, 0, 2]);
        assert_eq!(doubled.requests, 6);
    }
}
