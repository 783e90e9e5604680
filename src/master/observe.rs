//! What the master tells operators about itself: the snapshot behind `shoal status`, and the
//! metrics behind `/metrics`.

use std::collections::BTreeMap;
use std::time::Instant;

use super::slots::{self, Life, Role, WorkerProc};
use super::tally::{Labels, Tally};
use super::{Master, Phase};
use crate::config::UpstreamServer;
use crate::prometheus::{Exposition, Kind};
use crate::shared::RowKey;
use std::sync::atomic::Ordering;

use crate::stats::{CacheEvent, GuardEvent, TlsFailure, UpstreamError, LATENCY_BOUNDS_SECONDS};
use crate::status::{
    MasterStatus, RestartReason, RetiringWorker, ServerStatus, SlotStatus, Status, UpstreamStatus,
    WorkerState,
};

impl Master {
    /// The master and every slot as they are now (reads each worker's RSS from /proc).
    pub(super) fn status(&self) -> Status {
        let now = Instant::now();
        let config = self.source.file.as_ref().map(|path| {
            std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string()
        });
        let state = match self.phase {
            Phase::Running => "running",
            Phase::Stopping { .. } => "stopping",
        };
        Status {
            master: MasterStatus {
                pid: std::process::id(),
                uptime_seconds: now.duration_since(self.started).as_secs(),
                config,
                generation: self.generation,
                state: state.to_string(),
            },
            workers: self
                .slots
                .iter()
                .map(|slot| self.slot_status(slot, now))
                .collect(),
            upstreams: self.upstream_status(&self.tallies().1),
        }
    }

    /// The current config's upstreams: queues and waits (from the shared state and the
    /// workers' counters), and each server's requests in flight when it has a cap.
    fn upstream_status(&self, total: &Tally) -> Vec<UpstreamStatus> {
        let shared = self.shared_state;
        let in_flight = |name: &str, server: &UpstreamServer| {
            let row = shared
                .find(RowKey::cap(name, &server.addr))
                .filter(|_| server.max_conns > 0)?;
            Some(shared.cap(row).in_flight())
        };
        (self.config.upstreams.iter())
            .map(|upstream| {
                let counted = total.upstreams.get(&upstream.name).cloned().unwrap_or_default();
                let line = shared.find(RowKey::line(&upstream.name));
                UpstreamStatus {
                    name: upstream.name.clone(),
                    queued: line.map_or(0, |row| shared.line(row).queued()),
                    queue_wait_bounds_seconds: LATENCY_BOUNDS_SECONDS.to_vec(),
                    queue_waits: counted.queue_wait.buckets.to_vec(),
                    queue_timeouts: counted.queue_timeouts,
                    servers: (upstream.servers.iter())
                        .map(|server| ServerStatus {
                            addr: server.addr.to_string(),
                            max_conns: server.max_conns,
                            in_flight: in_flight(&upstream.name, server),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Permits under `max_conns` that `worker`'s requests hold now.
    fn upstream_permits(&self, worker: &WorkerProc) -> u32 {
        self.shared_state.held_by(worker.pid.as_raw() as u32)
    }

    fn slot_status(&self, slot: &slots::Slot, now: Instant) -> SlotStatus {
        let ledger = self.ledgers.get(slot.index);
        let current = slot.current.as_ref();
        let empty = if slot.role == Role::Removing {
            WorkerState::Draining
        } else {
            WorkerState::Starting
        };
        SlotStatus {
            slot: slot.index,
            pid: current.map(|w| w.pid.as_raw() as u32),
            state: current.map_or(empty, state_of),
            uptime_seconds: current.map_or(0, |w| now.duration_since(w.started).as_secs()),
            rss_bytes: current.map_or(0, |w| slots::rss_bytes(w.pid)),
            requests: current.map_or(0, |w| w.counters.requests),
            active_connections: current.map_or(0, |w| w.counters.active),
            restarts: ledger.map_or(0, |l| l.restart_count()),
            last_restart: ledger.and_then(|l| l.last_restart),
            upstream_permits: current.map_or(0, |w| self.upstream_permits(w)),
            retiring: slot
                .retiring
                .iter()
                .map(|w| RetiringWorker {
                    pid: w.pid.as_raw() as u32,
                    state: state_of(w),
                    uptime_seconds: now.duration_since(w.started).as_secs(),
                    rss_bytes: slots::rss_bytes(w.pid),
                    requests: w.counters.requests,
                    active_connections: w.counters.active,
                    upstream_permits: self.upstream_permits(w),
                })
                .collect(),
        }
    }
}

/// A worker's life as `status` names it.
fn state_of(worker: &WorkerProc) -> WorkerState {
    match worker.life {
        Life::Booting => WorkerState::Starting,
        Life::Serving | Life::Replaced => WorkerState::Running,
        Life::Draining { .. } => WorkerState::Draining,
        Life::Aborting { .. } => WorkerState::Hung,
        Life::Killed if worker.exit_reason == Some(RestartReason::Hung) => WorkerState::Hung,
        Life::Killed => WorkerState::Draining,
    }
}

/// The samples of one metric family: label pairs and a value.
type Series = Vec<(Vec<(&'static str, String)>, u64)>;

impl Master {
    /// Every metric in the Prometheus text format: instance totals (`shoal_*`), then the same
    /// per worker slot (`shoal_worker_*`, label `worker`). Totals are separate families so
    /// that summing a family never counts a request twice. Counters include what exited
    /// workers had counted, so they never go backwards.
    pub(super) fn metrics(&self) -> String {
        let labels = Labels::of(&self.config);
        let (per_slot, total) = self.tallies();
        let mut out = Exposition::default();
        let counter = Kind::Counter;
        let help = "Responses sent, by server name (none for a server without names), route prefix (\"none\": no route matched) and status class.";
        both(
            &mut out,
            "requests_total",
            counter,
            help,
            &total,
            &per_slot,
            responses,
        );
        let help = "Bytes read from clients.";
        both(
            &mut out,
            "received_bytes_total",
            counter,
            help,
            &total,
            &per_slot,
            |t| one(t.bytes_in),
        );
        let help = "Bytes written to clients.";
        both(
            &mut out,
            "sent_bytes_total",
            counter,
            help,
            &total,
            &per_slot,
            |t| one(t.bytes_out),
        );
        self.connection_gauges(&mut out);
        let help = "Time from routing a request to an upstream until its response head arrived.";
        out.family("shoal_upstream_response_seconds", Kind::Histogram, help);
        latency(&mut out, "shoal_upstream_response_seconds", &total, None);
        let help = format!("{help} Per worker slot.");
        out.family("shoal_worker_upstream_response_seconds", Kind::Histogram, &help);
        for (slot, tally) in &per_slot {
            latency(
                &mut out,
                "shoal_worker_upstream_response_seconds",
                tally,
                Some(*slot),
            );
        }
        let help = "Failed attempts to get a response from an upstream server, by kind.";
        both(
            &mut out,
            "upstream_errors_total",
            counter,
            help,
            &total,
            &per_slot,
            errors,
        );
        let help = "TLS connections refused, by kind (mostly during their handshake).";
        both(
            &mut out,
            "tls_failures_total",
            counter,
            help,
            &total,
            &per_slot,
            tls_failures,
        );
        let help =
            "What the response cache did, by event (hit, miss, stale, collapsed, revalidated, stored).";
        both(
            &mut out,
            "cache_events_total",
            counter,
            help,
            &total,
            &per_slot,
            cache_events,
        );
        self.cache_metrics(&mut out);
        let help = "What the limits on clients did, by event (request_refused: 429 over \
                    limit_requests; request_delayed: waited for its turn; connection_refused: 503 \
                    over limit_connections; connection_uncounted: no room in the table).";
        both(
            &mut out,
            "limit_events_total",
            counter,
            help,
            &total,
            &per_slot,
            guard_events,
        );
        self.server_gauges(&mut out, &labels);
        self.queue_metrics(&mut out, &total);
        self.restart_counters(&mut out);
        out.family("shoal_reloads_total", Kind::Counter, "Reloads (HUP), by result.");
        out.sample("shoal_reloads_total", &[("result", "ok")], self.reloads.ok);
        out.sample(
            "shoal_reloads_total",
            &[("result", "failed")],
            self.reloads.failed,
        );
        out.finish()
    }

    /// What every worker counted (the living and the exited), per slot and in total.
    fn tallies(&self) -> (BTreeMap<usize, Tally>, Tally) {
        let labels = Labels::of(&self.config);
        let mut per_slot: BTreeMap<usize, Tally> = BTreeMap::new();
        for (index, ledger) in self.ledgers.iter() {
            let tally = per_slot.entry(index).or_insert_with(|| Tally::zero(&labels));
            tally.merge(&ledger.counted);
        }
        for slot in &self.slots {
            let tally = per_slot.entry(slot.index).or_insert_with(|| Tally::zero(&labels));
            for worker in slot.workers() {
                tally.add(&worker.counters, &worker.labels);
            }
        }
        let mut total = Tally::zero(&labels);
        per_slot.values().for_each(|t| total.merge(t));
        (per_slot, total)
    }

    /// Per capped server: requests in flight and the cap; per upstream: requests queued, how
    /// long they waited, and how many waited in vain.
    fn queue_metrics(&self, out: &mut Exposition, total: &Tally) {
        let upstreams = self.upstream_status(total);
        // (labels, in flight, cap) of every capped server.
        type Capped<'s> = ([(&'static str, &'s str); 2], u32, u32);
        let capped: Vec<Capped> = (upstreams.iter())
            .flat_map(|u| {
                (u.servers.iter()).filter_map(|s| {
                    let pairs = [("upstream", u.name.as_str()), ("server", s.addr.as_str())];
                    Some((pairs, s.in_flight?, s.max_conns))
                })
            })
            .collect();
        let help = "Requests in flight to the server from the whole instance (servers with max_conns).";
        out.family("shoal_upstream_server_in_flight", Kind::Gauge, help);
        for (pairs, in_flight, _) in &capped {
            out.sample("shoal_upstream_server_in_flight", pairs, u64::from(*in_flight));
        }
        out.family(
            "shoal_upstream_server_max_conns",
            Kind::Gauge,
            "The server's max_conns.",
        );
        for (pairs, _, max_conns) in &capped {
            out.sample("shoal_upstream_server_max_conns", pairs, u64::from(*max_conns));
        }
        out.family(
            "shoal_upstream_queued",
            Kind::Gauge,
            "Requests waiting for a permit under the upstream's max_conns, in every worker.",
        );
        for upstream in &upstreams {
            out.sample(
                "shoal_upstream_queued",
                &[("upstream", &upstream.name)],
                upstream.queued,
            );
        }
        let help = "Time requests waited in the queue for a permit under max_conns.";
        out.family("shoal_upstream_queue_wait_seconds", Kind::Histogram, help);
        for (name, sums) in &total.upstreams {
            let sum = sums.queue_wait.sum_micros as f64 / 1e6;
            let buckets = &sums.queue_wait.buckets;
            out.histogram(
                "shoal_upstream_queue_wait_seconds",
                &[("upstream", name)],
                &LATENCY_BOUNDS_SECONDS,
                buckets,
                sum,
            );
        }
        out.family(
            "shoal_upstream_queue_timeouts_total",
            Kind::Counter,
            "Requests answered 503 after waiting queue_timeout for a slot.",
        );
        for (name, sums) in &total.upstreams {
            out.sample(
                "shoal_upstream_queue_timeouts_total",
                &[("upstream", name)],
                sums.queue_timeouts,
            );
        }
    }

    fn connection_gauges(&self, out: &mut Exposition) {
        let active = |slot: &slots::Slot| slot.workers().map(|w| u64::from(w.counters.active)).sum::<u64>();
        out.family(
            "shoal_connections_active",
            Kind::Gauge,
            "Client connections open (as of each worker's last heartbeat).",
        );
        out.sample(
            "shoal_connections_active",
            &[],
            self.slots.iter().map(active).sum(),
        );
        out.family(
            "shoal_worker_connections_active",
            Kind::Gauge,
            "Client connections open, per worker slot.",
        );
        for slot in &self.slots {
            let worker = slot.index.to_string();
            out.sample(
                "shoal_worker_connections_active",
                &[("worker", &worker)],
                active(slot),
            );
        }
    }

    /// 1 while a server gets requests: per worker, its own view (health checks and passive
    /// health); for the instance, 1 only when every serving worker sends it requests.
    /// The cache's bytes on disk and the entries its keeper removed (when it has one).
    fn cache_metrics(&self, out: &mut Exposition) {
        if self.config.cache.is_none() {
            return;
        }
        out.family(
            "shoal_cache_bytes",
            Kind::Gauge,
            "Bytes of cache entries on disk, as counted.",
        );
        out.sample(
            "shoal_cache_bytes",
            &[],
            self.shared_state.cache_bytes().load(Ordering::Relaxed),
        );
        let help = "Cache entries the keeper removed to stay within max_size.";
        out.family("shoal_cache_evictions_total", Kind::Counter, help);
        out.sample("shoal_cache_evictions_total", &[], self.cache_keeper.evictions());
    }

    fn server_gauges(&self, out: &mut Exposition, labels: &Labels) {
        let serving: Vec<(usize, &WorkerProc)> = self
            .slots
            .iter()
            .filter_map(|s| Some((s.index, s.current.as_ref()?)))
            .filter(|(_, w)| w.life == Life::Serving)
            .collect();
        out.family(
            "shoal_upstream_server_up",
            Kind::Gauge,
            "1 when every serving worker sends requests to the server, else 0.",
        );
        for (u, (name, servers)) in labels.upstreams.iter().enumerate() {
            for (s, server) in servers.iter().enumerate() {
                let views: Vec<bool> = serving
                    .iter()
                    .filter(|(_, w)| *w.labels == *labels)
                    .filter_map(|(_, w)| w.counters.upstreams.get(u)?.servers_up.get(s).copied())
                    .collect();
                let up = if views.is_empty() {
                    let key = (u as u32, s as u32);
                    self.health.get(&key).copied().unwrap_or(true)
                } else {
                    views.iter().all(|&up| up)
                };
                let pairs = [("upstream", name.as_str()), ("server", server.as_str())];
                out.sample("shoal_upstream_server_up", &pairs, u64::from(up));
            }
        }
        out.family(
            "shoal_worker_upstream_server_up",
            Kind::Gauge,
            "1 when the worker sends requests to the server (health checks and passive health).",
        );
        for (slot, worker) in &serving {
            let slot = slot.to_string();
            let names = worker.labels.upstreams.iter();
            for ((name, servers), counters) in names.zip(&worker.counters.upstreams) {
                for (server, up) in servers.iter().zip(&counters.servers_up) {
                    let pairs = [("worker", slot.as_str()), ("upstream", name), ("server", server)];
                    out.sample("shoal_worker_upstream_server_up", &pairs, u64::from(*up));
                }
            }
        }
    }

    fn restart_counters(&self, out: &mut Exposition) {
        let mut slots: BTreeMap<usize, [u64; RestartReason::ALL.len()]> = BTreeMap::new();
        for slot in &self.slots {
            slots.insert(slot.index, Default::default());
        }
        for (index, ledger) in self.ledgers.iter() {
            slots.insert(index, ledger.restarts);
        }
        let help = "Workers replaced, by reason (crash, hung, rss, age, requests, reload).";
        out.family("shoal_restarts_total", Kind::Counter, help);
        for reason in RestartReason::ALL {
            let sum = slots.values().map(|r| r[reason as usize]).sum();
            out.sample("shoal_restarts_total", &[("reason", reason.name())], sum);
        }
        out.family(
            "shoal_worker_restarts_total",
            Kind::Counter,
            "Workers replaced, per slot and reason.",
        );
        for (index, restarts) in &slots {
            let worker = index.to_string();
            for reason in RestartReason::ALL {
                let pairs = [("worker", worker.as_str()), ("reason", reason.name())];
                out.sample("shoal_worker_restarts_total", &pairs, restarts[reason as usize]);
            }
        }
    }
}

/// Writes family `shoal_NAME` from `total`, then `shoal_worker_NAME` from each slot's tally.
fn both(
    out: &mut Exposition,
    name: &str,
    kind: Kind,
    help: &str,
    total: &Tally,
    per_slot: &BTreeMap<usize, Tally>,
    series: fn(&Tally) -> Series,
) {
    let name_total = format!("shoal_{name}");
    out.family(&name_total, kind, help);
    for (pairs, value) in series(total) {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        out.sample(&name_total, &pairs, value);
    }
    let name_worker = format!("shoal_worker_{name}");
    out.family(&name_worker, kind, &format!("{help} Per worker slot."));
    for (slot, tally) in per_slot {
        let slot = slot.to_string();
        for (pairs, value) in series(tally) {
            let pairs: Vec<(&str, &str)> = std::iter::once(("worker", slot.as_str()))
                .chain(pairs.iter().map(|(k, v)| (*k, v.as_str())))
                .collect();
            out.sample(&name_worker, &pairs, value);
        }
    }
}

fn one(value: u64) -> Series {
    vec![(Vec::new(), value)]
}

fn responses(tally: &Tally) -> Series {
    let mut series = Vec::new();
    for ((server, route), row) in &tally.responses {
        for (class, &count) in row.iter().enumerate() {
            let code = format!("{}xx", class + 1);
            // A server without names has no `server` label (as an empty one would read).
            let server = (!server.is_empty()).then(|| ("server", server.clone()));
            let labels = server
                .into_iter()
                .chain([("route", route.clone()), ("code", code)]);
            series.push((labels.collect(), count));
        }
    }
    series
}

fn cache_events(tally: &Tally) -> Series {
    event_series(CacheEvent::ALL.iter().map(|event| event.name()), &tally.cache)
}

fn guard_events(tally: &Tally) -> Series {
    event_series(GuardEvent::ALL.iter().map(|event| event.name()), &tally.guards)
}

/// One series per event, labelled with its name, in the order of `counts`.
fn event_series<'n>(names: impl Iterator<Item = &'n str>, counts: &[u64]) -> Series {
    (names.zip(counts))
        .map(|(name, &count)| (vec![("event", name.to_string())], count))
        .collect()
}

fn tls_failures(tally: &Tally) -> Series {
    (TlsFailure::ALL.iter())
        .map(|&kind| {
            (
                vec![("kind", kind.name().to_string())],
                tally.tls_failures[kind as usize],
            )
        })
        .collect()
}

fn errors(tally: &Tally) -> Series {
    let mut series = Vec::new();
    for (name, upstream) in &tally.upstreams {
        for kind in UpstreamError::ALL {
            let pairs = vec![("upstream", name.clone()), ("kind", kind.name().to_string())];
            series.push((pairs, upstream.errors[kind as usize]));
        }
    }
    series
}

/// The samples of latency histogram `name`, one per upstream (with `worker` when `slot` is
/// set).
fn latency(out: &mut Exposition, name: &str, tally: &Tally, slot: Option<usize>) {
    let worker = slot.map(|s| s.to_string());
    for (upstream, sums) in &tally.upstreams {
        let mut pairs = Vec::new();
        if let Some(worker) = &worker {
            pairs.push(("worker", worker.as_str()));
        }
        pairs.push(("upstream", upstream.as_str()));
        let sum = sums.latency.sum_micros as f64 / 1e6;
        out.histogram(name, &pairs, &LATENCY_BOUNDS_SECONDS, &sums.latency.buckets, sum);
    }
}
