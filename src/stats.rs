//! What a worker counts and reports with each heartbeat: requests, bytes, connections,
//! responses per route and status class, and per upstream a latency histogram, errors by
//! kind, and which servers it would send requests to.
//!
//! Counting is plain integer arithmetic on the worker's own structs: no lock, no allocation
//! per request. A worker starts from zero; the master keeps what dead workers had counted, so
//! its totals never go backwards.
//!
//! On the channel, counters are a flat run of LEB128 varints (small numbers take one byte),
//! each list preceded by its length. There is no version: master and workers are always the
//! same binary. Decoding checks every length against the bytes left and that none are left
//! over, so a damaged message is refused whole.

use std::time::Duration;

/// Status classes counted per route: 1xx to 5xx.
pub const STATUS_CLASSES: usize = 5;
/// Route index of responses to requests that reached no route (unparsable, or no prefix
/// matched); the config's routes follow, server by server, in match order.
pub const NO_ROUTE: usize = 0;
/// Upper bounds of the upstream latency buckets, in seconds (Prometheus' defaults). A last
/// bucket takes what is above them all.
pub const LATENCY_BOUNDS_SECONDS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets in a latency histogram: one per bound, plus the overflow.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_SECONDS.len() + 1;

/// The same bounds in microseconds, for comparing without floating point.
const LATENCY_BOUNDS_MICROS: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A worker's counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests answered (complete request heads).
    pub requests: u64,
    /// Client connections open now.
    pub active: u32,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Responses per route (see [`NO_ROUTE`]) and status class.
    pub responses: Vec<[u64; STATUS_CLASSES]>,
    /// Per upstream, in config order. The worker keeps these with its upstreams and fills
    /// them in only when it sends a beat.
    pub upstreams: Vec<UpstreamCounters>,
    /// TLS connections refused, by kind, in [`TlsFailure::ALL`] order.
    pub tls_failures: [u64; TlsFailure::ALL.len()],
    /// What the response cache did, in [`CacheEvent::ALL`] order.
    pub cache: [u64; CacheEvent::ALL.len()],
    /// What the limits on clients did, in [`GuardEvent::ALL`] order.
    pub guards: [u64; GuardEvent::ALL.len()],
}

/// What a worker saw of one upstream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpstreamCounters {
    /// Time from routing a request until its response head arrived.
    pub latency: Histogram,
    /// Time requests waited in the queue for a slot under `max_conns`.
    pub queue_wait: Histogram,
    /// Failures by kind, in [`UpstreamError::ALL`] order.
    pub errors: [u64; UpstreamError::ALL.len()],
    /// Requests answered 503 after waiting `queue_timeout`.
    pub queue_timeouts: u64,
    /// Per server: whether this worker would send it requests now (health checks and
    /// passive health agree it is up).
    pub servers_up: Vec<bool>,
}

/// Durations counted by bucket (not cumulative): bucket `i` counts those up to bound `i` of
/// [`LATENCY_BOUNDS_SECONDS`] and above bound `i - 1`; the last one, those above every bound.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of every duration counted, in microseconds.
    pub sum_micros: u64,
}

impl Histogram {
    /// Counts one duration.
    #[inline]
    pub fn observe(&mut self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BOUNDS_MICROS.len());
        self.buckets[bucket] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Adds another histogram's counts.
    pub fn add(&mut self, other: &Histogram) {
        add_each(&mut self.buckets, &other.buckets);
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_array(out, &self.buckets);
        put(out, self.sum_micros);
    }

    fn decode(r: &mut Reader) -> Option<Histogram> {
        Some(Histogram {
            buckets: r.array()?,
            sum_micros: r.number()?,
        })
    }
}

/// Adds `more` to `sum`, item by item.
pub fn add_each<const N: usize>(sum: &mut [u64; N], more: &[u64; N]) {
    for (s, m) in sum.iter_mut().zip(more) {
        *s += m;
    }
}

/// What the response cache did, as counted ([`Counters::cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// A fresh entry answered (after waiting for another request's fetch or not).
    Hit,
    /// The request went upstream: no entry, another variant, or a stale one.
    Miss,
    /// A stale entry answered: within stale-while-revalidate, or for a failed upstream.
    Stale,
    /// A request waited for another's fetch of its key (counted once per request).
    Collapsed,
    /// The upstream's 304 confirmed a stale entry.
    Revalidated,
    /// An entry was put in place.
    Stored,
}

impl CacheEvent {
    pub const ALL: [CacheEvent; 6] = [
        CacheEvent::Hit,
        CacheEvent::Miss,
        CacheEvent::Stale,
        CacheEvent::Collapsed,
        CacheEvent::Revalidated,
        CacheEvent::Stored,
    ];

    /// The metric label value.
    pub fn name(self) -> &'static str {
        match self {
            CacheEvent::Hit => "hit",
            CacheEvent::Miss => "miss",
            CacheEvent::Stale => "stale",
            CacheEvent::Collapsed => "collapsed",
            CacheEvent::Revalidated => "revalidated",
            CacheEvent::Stored => "stored",
        }
    }
}

/// What the limits on clients did, as counted ([`Counters::guards`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardEvent {
    /// A request over its route's `limit_requests` was answered 429.
    RequestRefused,
    /// A request within the burst waited for its turn (`delay = true`).
    RequestDelayed,
    /// A connection over its server's `limit_connections` was answered 503 and closed.
    ConnectionRefused,
    /// The connections table had no room in the client's region: a connection went
    /// uncounted.
    ConnectionUncounted,
}

impl GuardEvent {
    pub const ALL: [GuardEvent; 4] = [
        GuardEvent::RequestRefused,
        GuardEvent::RequestDelayed,
        GuardEvent::ConnectionRefused,
        GuardEvent::ConnectionUncounted,
    ];

    /// The metric label value.
    pub fn name(self) -> &'static str {
        match self {
            GuardEvent::RequestRefused => "request_refused",
            GuardEvent::RequestDelayed => "request_delayed",
            GuardEvent::ConnectionRefused => "connection_refused",
            GuardEvent::ConnectionUncounted => "connection_uncounted",
        }
    }
}

/// Why a TLS connection was refused (mostly during its handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// What came was not TLS (plain HTTP to an HTTPS port, a scanner's garbage).
    NotTls,
    /// No protocol version, cipher suite or other parameter in common (an old client).
    Incompatible,
    /// The client ended the handshake with an alert (it does not trust the certificate).
    Rejected,
    /// The client broke the protocol otherwise.
    Misbehaved,
    /// The handshake was not done within `header_timeout`.
    Timeout,
    /// Anything else.
    Other,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 6] = [
        TlsFailure::NotTls,
        TlsFailure::Incompatible,
        TlsFailure::Rejected,
        TlsFailure::Misbehaved,
        TlsFailure::Timeout,
        TlsFailure::Other,
    ];

    /// The metric label value.
    pub fn name(self) -> &'static str {
        match self {
            TlsFailure::NotTls => "not_tls",
            TlsFailure::Incompatible => "incompatible",
            TlsFailure::Rejected => "rejected",
            TlsFailure::Misbehaved => "misbehaved",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Other => "other",
        }
    }
}

/// Why an attempt to get a response from an upstream server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The server refused the connection (nothing listens).
    ConnectRefused,
    /// Connecting failed otherwise (unreachable, no route, ...).
    ConnectError,
    /// No connection within connect_timeout.
    ConnectTimeout,
    /// The server took no request byte for send_timeout.
    SendTimeout,
    /// No response byte for read_timeout.
    ReadTimeout,
    /// The response could not be parsed (or was a 101 nobody asked for).
    BadResponse,
    /// The connection was reset or closed before the response was complete.
    Reset,
}

impl UpstreamError {
    pub const ALL: [UpstreamError; 7] = [
        UpstreamError::ConnectRefused,
        UpstreamError::ConnectError,
        UpstreamError::ConnectTimeout,
        UpstreamError::SendTimeout,
        UpstreamError::ReadTimeout,
        UpstreamError::BadResponse,
        UpstreamError::Reset,
    ];

    /// The metric label value.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamError::ConnectRefused => "connect_refused",
            UpstreamError::ConnectError => "connect_error",
            UpstreamError::ConnectTimeout => "connect_timeout",
            UpstreamError::SendTimeout => "send_timeout",
            UpstreamError::ReadTimeout => "read_timeout",
            UpstreamError::BadResponse => "bad_response",
            UpstreamError::Reset => "reset",
        }
    }
}

impl Counters {
    /// Zeroed counters for a config with `routes` routes in all.
    pub fn new(routes: usize) -> Counters {
        Counters {
            responses: vec![[0; STATUS_CLASSES]; routes + 1],
            ..Counters::default()
        }
    }

    /// Counts a response with `status` on route `route`.
    #[inline]
    pub fn count_response(&mut self, route: usize, status: u16) {
        if let Some(row) = self.responses.get_mut(route) {
            row[status_class(status)] += 1;
        }
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put(out, self.requests);
        put(out, u64::from(self.active));
        put(out, self.bytes_in);
        put(out, self.bytes_out);
        put(out, self.responses.len() as u64);
        for row in &self.responses {
            put_array(out, row);
        }
        put(out, self.upstreams.len() as u64);
        for upstream in &self.upstreams {
            upstream.latency.encode(out);
            upstream.queue_wait.encode(out);
            put_array(out, &upstream.errors);
            put(out, upstream.queue_timeouts);
            put(out, upstream.servers_up.len() as u64);
            out.extend(upstream.servers_up.iter().map(|&up| u8::from(up)));
        }
        put_array(out, &self.tls_failures);
        put_array(out, &self.cache);
        put_array(out, &self.guards);
    }

    /// The counters in `bytes` (as [`Counters::encode`] wrote them), or `None` if they are
    /// not exactly that.
    pub fn decode(bytes: &[u8]) -> Option<Counters> {
        let mut r = Reader { bytes };
        let mut counters = Counters {
            requests: r.number()?,
            active: u32::try_from(r.number()?).ok()?,
            bytes_in: r.number()?,
            bytes_out: r.number()?,
            ..Counters::default()
        };
        let routes = r.length(STATUS_CLASSES + 1)?;
        for _ in 0..routes {
            counters.responses.push(r.array()?);
        }
        let upstreams = r.length(2 * LATENCY_BUCKETS + UpstreamError::ALL.len() + 7)?;
        for _ in 0..upstreams {
            let latency = Histogram::decode(&mut r)?;
            let queue_wait = Histogram::decode(&mut r)?;
            let errors = r.array()?;
            let queue_timeouts = r.number()?;
            let servers = r.length(1)?;
            let mut servers_up = Vec::with_capacity(servers);
            for _ in 0..servers {
                servers_up.push(match r.byte()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                });
            }
            counters.upstreams.push(UpstreamCounters {
                latency,
                queue_wait,
                errors,
                queue_timeouts,
                servers_up,
            });
        }
        counters.tls_failures = r.array()?;
        counters.cache = r.array()?;
        counters.guards = r.array()?;
        r.bytes.is_empty().then_some(counters)
    }

    /// These counters without the per-route and per-upstream detail (for a beat that would
    /// not fit in one message otherwise: the heartbeat itself must always get through).
    pub fn summary(&self) -> Counters {
        Counters {
            responses: Vec::new(),
            upstreams: Vec::new(),
            ..self.clone()
        }
    }
}

impl UpstreamCounters {
    /// Counts one response whose head arrived `latency` after the request was routed.
    #[inline]
    pub fn observe(&mut self, latency: Duration) {
        self.latency.observe(latency);
    }

    /// Counts one request that waited `waited` in the queue before it got a slot.
    pub fn observe_queue_wait(&mut self, waited: Duration) {
        self.queue_wait.observe(waited);
    }

    /// Adds another's sums (every counter but `servers_up`, which is a view, not a sum).
    pub fn add(&mut self, other: &UpstreamCounters) {
        self.latency.add(&other.latency);
        self.queue_wait.add(&other.queue_wait);
        add_each(&mut self.errors, &other.errors);
        self.queue_timeouts += other.queue_timeouts;
    }

    /// Counts one failure.
    #[inline]
    pub fn count_error(&mut self, error: UpstreamError) {
        self.errors[error as usize] += 1;
    }
}

/// 0 for 1xx ... 4 for 5xx; anything outside 100..=599 counts with the nearest class.
#[inline]
pub fn status_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, STATUS_CLASSES) - 1
}

/// Appends `n` as an unsigned LEB128 varint.
fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends a fixed-size list: its length, then its items.
fn put_array(out: &mut Vec<u8>, items: &[u64]) {
    put(out, items.len() as u64);
    items.iter().for_each(|&n| put(out, n));
}

/// Reads varints and bytes off the front of a message.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn number(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may carry only the top bit.
            if shift == 63 && bits > 1 {
                return None;
            }
            n |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    /// A list length, refused when the bytes left cannot hold that many items of at least
    /// `min_item_bytes` each (so a damaged length never allocates much).
    fn length(&mut self, min_item_bytes: usize) -> Option<usize> {
        let n = usize::try_from(self.number()?).ok()?;
        (n <= self.bytes.len() / min_item_bytes).then_some(n)
    }

    /// A fixed-size list, which must say it has exactly `N` items.
    fn array<const N: usize>(&mut self) -> Option<[u64; N]> {
        if self.number()? != N as u64 {
            return None;
        }
        let mut items = [0u64; N];
        for item in &mut items {
            *item = self.number()?;
        }
        Some(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Counters {
        let mut counters = Counters::new(3);
        counters.requests = 1 << 40;
        counters.active = 7;
        counters.bytes_in = u64::MAX;
        counters.bytes_out = 300;
        counters.count_response(2, 200);
        counters.count_response(2, 404);
        counters.count_response(NO_ROUTE, 400);
        let mut upstream = UpstreamCounters::default();
        upstream.observe(Duration::from_millis(3));
        upstream.observe(Duration::from_secs(60));
        upstream.count_error(UpstreamError::Reset);
        upstream.observe_queue_wait(Duration::from_millis(20));
        upstream.queue_timeouts = 3;
        upstream.servers_up = vec![true, false];
        counters.upstreams = vec![upstream, UpstreamCounters::default()];
        counters.tls_failures[TlsFailure::Timeout as usize] = 5;
        counters.cache[CacheEvent::Collapsed as usize] = 7;
        counters.guards[GuardEvent::RequestDelayed as usize] = 8;
        counters
    }

    #[test]
    fn counters_round_trip_through_the_encoding() {
        let mut wire = Vec::new();
        sample().encode(&mut wire);
        assert_eq!(Counters::decode(&wire), Some(sample()));
        let mut wire = Vec::new();
        Counters::default().encode(&mut wire);
        let tls_failures = [6, 0, 0, 0, 0, 0, 0];
        let cache = [6, 0, 0, 0, 0, 0, 0];
        let guards = [4, 0, 0, 0, 0];
        assert_eq!(
            wire,
            [&[0; 6][..], &tls_failures, &cache, &guards].concat(),
            "empty counters: zeros, six TLS kinds, six cache events, four guard events"
        );
        assert_eq!(Counters::decode(&wire), Some(Counters::default()));
    }

    #[test]
    fn damaged_messages_are_refused_whole() {
        let mut wire = Vec::new();
        sample().encode(&mut wire);
        for cut in 0..wire.len() {
            assert_eq!(Counters::decode(&wire[..cut]), None, "cut at {cut}");
        }
        let mut longer = wire.clone();
        longer.push(0);
        assert_eq!(Counters::decode(&longer), None, "a trailing byte");
        // A route list claiming more rows than the message could hold.
        let lying = [0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x01, 5, 0, 0, 0, 0, 0, 0];
        assert_eq!(Counters::decode(&lying), None);
        // A varint longer than 64 bits.
        assert_eq!(Counters::decode(&[0xff; 11]), None);
    }

    #[test]
    fn varints_cover_the_whole_range() {
        for n in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let mut wire = Vec::new();
            put(&mut wire, n);
            let mut reader = Reader { bytes: &wire };
            assert_eq!(reader.number(), Some(n));
            assert!(reader.bytes.is_empty());
        }
    }

    #[test]
    fn responses_count_by_class_and_latencies_by_bucket() {
        let counters = sample();
        assert_eq!(counters.responses[2], [0, 1, 0, 1, 0]);
        assert_eq!(counters.responses[NO_ROUTE], [0, 0, 0, 1, 0]);
        assert_eq!(status_class(101), 0);
        assert_eq!(status_class(999), 4);
        let upstream = &counters.upstreams[0];
        assert_eq!(
            upstream.latency.buckets[0], 1,
            "3 ms is in the first bucket (<= 5 ms)"
        );
        assert_eq!(
            upstream.latency.buckets[LATENCY_BUCKETS - 1],
            1,
            "60 s is above every bound"
        );
        assert_eq!(upstream.latency.sum_micros, 60_003_000);
        let mut edge = UpstreamCounters::default();
        edge.observe(Duration::from_millis(5));
        assert_eq!(
            edge.latency.buckets[0], 1,
            "a bound is inclusive (Prometheus' `le`)"
        );
        assert_eq!(
            LATENCY_BOUNDS_MICROS.map(|m| m as f64 / 1e6),
            LATENCY_BOUNDS_SECONDS
        );
    }
}
