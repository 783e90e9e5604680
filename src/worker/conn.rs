//! One client connection: reads requests, answers them in order, and decides when to close.
//!
//! The connection is a state machine over [`Phase`]; [`Conn::drive`] runs it as far as
//! the socket allows (edge-triggered: until reads or writes would block) within a bounded
//! number of rounds, so no single client can hold the worker.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Registry, Token};

use super::access_log::{AccessLog, Entry};
use super::clock::Clock;
use super::request_id::{RequestId, RequestIds};
use crate::config::{FileOptions, Limits, Route, Serve};
use crate::files::{Answer, Body, FileRequest, Reply, Served, StaticFiles};
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::{self, Framing, Method, RequestHead};
use crate::http::response::{self, Persistence};
use crate::http::target;
use crate::io::{Buffers, Filled, Flush, Input, Output, Transport};
use crate::proxy::{Env, Exchange, Start, Step, Upstreams};
use crate::stats::{Counters, NO_ROUTE};

/// Rounds of read/process/write per readiness event before yielding to other connections.
const ROUNDS_PER_EVENT: usize = 16;
/// Stop parsing pipelined requests while this much output is waiting.
const OUTPUT_HIGH_WATER_BYTES: usize = 64 * 1024;
/// How long a closing connection keeps reading (and discarding) what the client still sends,
/// so the kernel does not answer those bytes with a reset that destroys our response.
const LINGER: Duration = Duration::from_secs(2);

/// Where the connection is in its request cycle.
enum Phase {
    /// Between requests.
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// The answered request's body is still arriving; it is read and discarded.
    Body(BodyLeft),
    /// An upstream is answering the request.
    Proxying(Box<Proxying>),
    /// Send what is pending, then close; `linger` if the client may still be sending.
    Closing { linger: bool },
    /// Our side is shut; discarding input until the client closes or the linger ends.
    Lingering,
}

/// A request handed to an upstream, and what its log line and counters need once it ends.
struct Proxying {
    exchange: Exchange,
    log: Option<LogCopy>,
    /// The route's index in the response counters.
    route: usize,
}

/// The parts of a request head its access log line needs, kept after the head is consumed.
struct LogCopy {
    request_line: Vec<u8>,
    referer: Option<Vec<u8>>,
    user_agent: Option<Vec<u8>>,
    request_id: RequestId,
    started: Instant,
}

impl LogCopy {
    fn of(head: &RequestHead, buf: &[u8], request_id: RequestId, started: Instant) -> LogCopy {
        LogCopy {
            request_line: head.request_line(buf).to_vec(),
            referer: head.field(buf, "referer").map(<[u8]>::to_vec),
            user_agent: head.field(buf, "user-agent").map(<[u8]>::to_vec),
            request_id,
            started,
        }
    }
}

/// Where a finished proxied response is counted and logged.
struct Proxied<'l> {
    /// What its access log line needs (none when the log is off).
    log: Option<&'l LogCopy>,
    /// The route's index in the response counters.
    route: usize,
    /// The upstream server that answered, if one was reached.
    upstream: Option<SocketAddr>,
}

/// What remains of a request body.
enum BodyLeft {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

/// What the worker should do with the connection after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wait for the next readiness event.
    Wait,
    /// It has more to do now: drive it again after other connections had their turn.
    Again,
    /// Close it.
    Close,
}

/// The worker state every connection uses: limits, routes, files, clock, log, counters.
/// The worker owns it and lends it to one connection at a time.
pub struct Ctx<'a> {
    pub limits: &'a Limits,
    /// Each server's routes (longest prefix first) with their ids in `files`.
    pub routes: Vec<Vec<(usize, &'a Route)>>,
    pub files: StaticFiles,
    pub clock: Clock,
    pub log: AccessLog,
    /// The worker is shutting down: answer what is in flight, keep nothing alive.
    pub draining: bool,
    /// The worker's counters for its heartbeat.
    pub counters: Counters,
    /// Per server: the index of its first route in `counters.responses`.
    pub first_route: Vec<usize>,
    /// Upstream balancers and keep-alive pools.
    pub upstreams: Upstreams<'a>,
    /// Where upstream sockets are registered (they drive their client's connection).
    pub registry: Registry,
    /// Spare I/O buffers, lent to connections and exchanges while they hold bytes.
    pub buffers: Buffers,
    /// Makes the ids of requests that come without a usable `X-Request-Id`.
    pub ids: RequestIds,
}

impl<'a> Ctx<'a> {
    fn env(&mut self) -> Env<'_, 'a> {
        Env {
            upstreams: &mut self.upstreams,
            registry: &self.registry,
            buffers: &mut self.buffers,
            now: self.clock.now,
            date: &self.clock.http_date,
        }
    }
}

/// A client connection.
pub struct Conn {
    /// Slab key: the client socket's token is `2 * key`, its upstream's `2 * key + 1`.
    key: usize,
    pub stream: TcpStream,
    peer: SocketAddr,
    server: usize,
    phase: Phase,
    input: Input,
    output: Output,
    /// When the current wait (idle, head, body, send, linger) runs out.
    pub deadline: Instant,
    /// When the connection last became idle.
    idle_since: Instant,
    /// When the current request's first bytes were processed (for the access log).
    started: Instant,
    served: u32,
}

impl Conn {
    /// A freshly accepted connection for virtual server `server`.
    pub fn new(
        key: usize,
        stream: TcpStream,
        peer: SocketAddr,
        server: usize,
        now: Instant,
        limits: &Limits,
    ) -> Conn {
        Conn {
            key,
            stream,
            peer,
            server,
            phase: Phase::Idle,
            input: Input::default(),
            output: Output::default(),
            deadline: now + limits.header_timeout,
            idle_since: now,
            started: now,
            served: 0,
        }
    }

    /// True when the connection waits between requests with nothing pending.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && self.input.is_empty() && self.output.is_empty()
    }

    /// How long the connection has been idle, if it is.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        self.is_idle()
            .then(|| now.saturating_duration_since(self.idle_since))
    }

    /// Closes an idle connection with a lingering close: our FIN goes out, and whatever the
    /// client still sends is read and dropped until it closes too.
    pub fn linger_out(&mut self, now: Instant) {
        let _ = self.stream.shutdown_write();
        self.phase = Phase::Lingering;
        self.deadline = now + LINGER;
    }

    /// Notes an event on the upstream socket (`read_closed`: it carried the FIN).
    pub fn mark_upstream_ready(&mut self, read_closed: bool) {
        if let Phase::Proxying(proxying) = &mut self.phase {
            proxying.exchange.mark_readable(read_closed);
        }
    }

    /// Notes an event on the client socket (`read_closed`: it carried the FIN).
    pub fn mark_readable(&mut self, read_closed: bool) {
        self.input.mark_readable(read_closed);
    }

    /// Runs the connection as far as it can go now, with buffers borrowed from the worker's
    /// pools for the duration (kept only while they hold bytes).
    pub fn drive(&mut self, ctx: &mut Ctx) -> Verdict {
        self.input.lend(&mut ctx.buffers.input);
        self.output.lend(&mut ctx.buffers.output);
        let verdict = self.run(ctx);
        self.input.give_back(&mut ctx.buffers.input);
        self.output.give_back(&mut ctx.buffers.output);
        verdict
    }

    fn run(&mut self, ctx: &mut Ctx) -> Verdict {
        for _ in 0..ROUNDS_PER_EVENT {
            let mut progress = match self.read(ctx) {
                Ok(progress) => progress,
                Err(()) => return Verdict::Close,
            };
            progress |= self.process(ctx);
            let sent_before = self.output.sent_bytes;
            let fin_follows = matches!(self.phase, Phase::Closing { .. });
            match self.output.flush(&mut self.stream, fin_follows) {
                Ok(Flush::Done) => {
                    if let Some(verdict) = self.after_flush(ctx.clock.now) {
                        return verdict;
                    }
                }
                Ok(Flush::Blocked) => {}
                Ok(Flush::Yielded) => return Verdict::Again,
                Err(_) => return Verdict::Close,
            }
            if self.output.sent_bytes > sent_before {
                ctx.counters.bytes_out += self.output.sent_bytes - sent_before;
                progress = true;
                self.after_write(ctx);
            }
            if !progress {
                return Verdict::Wait;
            }
        }
        Verdict::Again
    }

    /// Handles a passed deadline: a late head gets 408, anything else is closed.
    pub fn time_out(&mut self, ctx: &mut Ctx) -> Verdict {
        match &mut self.phase {
            Phase::Head if self.output.is_empty() => {
                self.fail(408, ctx);
                self.drive(ctx)
            }
            // Connect, send and read timeouts of the upstream: retry, 504, or cut.
            Phase::Proxying(proxying)
                if self.output.is_empty() || proxying.exchange.deadline <= ctx.clock.now =>
            {
                let step = proxying.exchange.time_out(&mut ctx.env());
                self.proxy_step(step, ctx);
                self.drive(ctx)
            }
            _ => Verdict::Close,
        }
    }

    fn read(&mut self, ctx: &mut Ctx) -> Result<bool, ()> {
        let limit = ctx.limits.max_header_bytes.max(16 * 1024);
        match self.input.fill(&mut self.stream, limit) {
            Ok(Filled::Bytes(n)) => {
                ctx.counters.bytes_in += n as u64;
                Ok(true)
            }
            Ok(Filled::Eof) => Ok(true),
            Ok(Filled::Nothing | Filled::Full) => Ok(false),
            Err(_) => Err(()),
        }
    }

    /// Consumes input: request heads, bodies, or bytes to discard. Returns true on progress.
    fn process(&mut self, ctx: &mut Ctx) -> bool {
        let mut progress = false;
        loop {
            match &mut self.phase {
                Phase::Idle | Phase::Head => {
                    if self.input.is_empty() || self.output.backlog_bytes() > OUTPUT_HIGH_WATER_BYTES {
                        break;
                    }
                    if matches!(self.phase, Phase::Idle) {
                        self.phase = Phase::Head;
                        self.started = ctx.clock.now;
                        self.deadline = ctx.clock.now + ctx.limits.header_timeout;
                    }
                    match request::parse(self.input.data(), &ctx.limits.head()) {
                        Ok(Some(head)) => self.answer(&head, ctx),
                        Ok(None) if self.input.len() >= ctx.limits.max_header_bytes => {
                            self.fail(request::incomplete_error(self.input.data()).status(), ctx)
                        }
                        Ok(None) => break,
                        Err(e) => self.fail(e.status(), ctx),
                    }
                    progress = true;
                }
                Phase::Body(left) => {
                    if self.input.is_empty() {
                        break;
                    }
                    progress = true;
                    match discard_body(left, self.input.data(), ctx.limits.max_body_bytes) {
                        Ok((used, done)) => {
                            self.input.consume(used);
                            self.deadline = ctx.clock.now + ctx.limits.header_timeout;
                            if done {
                                self.enter_idle(ctx);
                            }
                        }
                        Err(()) => self.phase = Phase::Closing { linger: false },
                    }
                }
                Phase::Proxying(proxying) => {
                    let client_eof = self.input.is_ended();
                    let step =
                        proxying
                            .exchange
                            .pump(&mut self.input, client_eof, &mut self.output, &mut ctx.env());
                    if !self.proxy_step(step, ctx) {
                        break;
                    }
                    progress = true;
                }
                Phase::Closing { .. } | Phase::Lingering => {
                    self.input.clear();
                    break;
                }
            }
        }
        if self.input.is_ended() && matches!(self.phase, Phase::Idle | Phase::Head | Phase::Body(_)) {
            self.phase = Phase::Closing { linger: false };
        }
        progress
    }

    /// Answers one complete request head and moves to the phase that follows it.
    fn answer(&mut self, head: &RequestHead, ctx: &mut Ctx) {
        self.served += 1;
        ctx.counters.requests += 1;
        let persistence = if !head.wants_keep_alive()
            || ctx.draining
            || self.served >= ctx.limits.max_requests_per_connection
        {
            Persistence::Close
        } else if head.version == request::Version::Http10 {
            Persistence::KeepAliveEcho
        } else {
            Persistence::KeepAlive
        };
        let buf = self.input.data();
        let with_body = head.method != Method::Head;
        let date = &ctx.clock.http_date;
        let first_route = ctx.first_route[self.server];
        let (served, counted_as) = match destination(head, buf, &ctx.routes[self.server], first_route) {
            Destination::Status(status) => {
                let n =
                    response::write_simple(self.output.buffer(), status, date, persistence, &[], with_body);
                (Served::written(status, n), NO_ROUTE)
            }
            Destination::Proxy {
                upstream,
                target_start,
                counted_as,
            } => return self.start_proxy(head, upstream, target_start, counted_as, persistence, ctx),
            Destination::Files {
                id,
                route,
                options,
                path,
                counted_as,
            } => {
                let out = self.output.buffer();
                if head.expect_continue && persistence.keeps_alive() {
                    out.extend_from_slice(response::CONTINUE);
                }
                let request = FileRequest {
                    head,
                    buf,
                    path: &path,
                    route_id: id,
                    route,
                    options,
                };
                match ctx.files.serve(
                    &request,
                    Reply {
                        out,
                        date,
                        persistence,
                    },
                    ctx.clock.now,
                ) {
                    Answer::Served(served) => (served, counted_as),
                    Answer::Fallback(upstream) => {
                        // The path goes as sent; an absolute-form target loses its scheme and
                        // authority (it routed, so it has an origin form).
                        let target_start = target::origin_start(head.target.of(buf)).unwrap_or(0);
                        return self.start_proxy(head, upstream, target_start, counted_as, persistence, ctx);
                    }
                }
            }
        };
        let request_id = ctx
            .log
            .wants_id(self.server)
            .then(|| ctx.ids.pick(head.field(buf, "x-request-id")));
        ctx.counters.count_response(counted_as, served.status);
        let entry = Entry {
            peer: self.peer,
            server: self.server,
            request_line: head.request_line(buf),
            status: served.status,
            body_bytes: served.body_bytes,
            referer: head.field(buf, "referer"),
            user_agent: head.field(buf, "user-agent"),
            request_id: request_id.as_ref().map(RequestId::as_bytes),
            duration: ctx.clock.now.saturating_duration_since(self.started),
            upstream: None,
        };
        ctx.log.record(&entry, &ctx.clock);
        match served.body {
            Some(Body::File(file)) => self.output.push_file(file),
            Some(Body::Shared(shared)) => self.output.push_shared(shared),
            None => {}
        }
        self.input.consume(head.len);
        self.after_answer(head.framing, persistence, ctx);
    }

    /// Moves to the phase after a response: discard the request body, idle, or close.
    fn after_answer(&mut self, framing: Framing, persistence: Persistence, ctx: &Ctx) {
        let body = match framing {
            Framing::Empty => None,
            Framing::Length(n) => Some(BodyLeft::Length(n)),
            Framing::Chunked => Some(BodyLeft::Chunked(Box::default())),
        };
        match (persistence, body) {
            (Persistence::Close, body) => {
                self.phase = Phase::Closing {
                    linger: body.is_some() || !self.input.is_empty(),
                };
            }
            (_, Some(body)) => {
                self.phase = Phase::Body(body);
                self.deadline = ctx.clock.now + ctx.limits.header_timeout;
            }
            (_, None) => self.enter_idle(ctx),
        }
    }

    /// Hands the request to `upstream`; answers 502 at once if no server can be tried.
    /// `route` is the route's index in the response counters.
    fn start_proxy(
        &mut self,
        head: &RequestHead,
        upstream: usize,
        target_start: usize,
        route: usize,
        persistence: Persistence,
        ctx: &mut Ctx,
    ) {
        let buf = self.input.data();
        if head.expect_continue {
            self.output.buffer().extend_from_slice(response::CONTINUE);
        }
        let request_id = ctx.ids.pick(head.field(buf, "x-request-id"));
        let log = ctx
            .log
            .is_on()
            .then(|| LogCopy::of(head, buf, request_id, self.started));
        let start = Start {
            head,
            buf,
            request_id: request_id.as_bytes(),
            peer: self.peer,
            upstream,
            target_start,
            persistence,
            token: Token(self.key * 2 + 1),
            max_body_bytes: ctx.limits.max_body_bytes,
        };
        match Exchange::begin(&start, &mut ctx.env()) {
            Ok(exchange) => {
                self.input.consume(head.len);
                self.deadline = exchange.deadline;
                self.phase = Phase::Proxying(Box::new(Proxying { exchange, log, route }));
            }
            Err(failure) => {
                let with_body = head.method != Method::Head;
                let status = failure.status();
                let what = Proxied {
                    log: log.as_ref(),
                    route,
                    upstream: None,
                };
                self.answer_failure(status, with_body, persistence, what, ctx);
                self.input.consume(head.len);
                self.after_answer(head.framing, persistence, ctx);
            }
        }
    }

    /// Acts on what a pump or timeout of the exchange said. Returns true on progress.
    fn proxy_step(&mut self, step: Step, ctx: &mut Ctx) -> bool {
        let Phase::Proxying(proxying) = &mut self.phase else {
            return false;
        };
        let mut upstream = None;
        if matches!(step, Step::Done { .. } | Step::Failed { .. } | Step::Abort) {
            proxying.exchange.release(&mut ctx.buffers);
            upstream = proxying.exchange.server_addr(&ctx.upstreams);
        }
        match step {
            Step::Wait => {
                self.deadline = proxying.exchange.deadline;
                false
            }
            Step::Progress => {
                self.deadline = proxying.exchange.deadline;
                true
            }
            Step::Done {
                persistence,
                status,
                body_bytes,
            } => {
                let (log, route) = (proxying.log.take(), proxying.route);
                let what = Proxied {
                    log: log.as_ref(),
                    route,
                    upstream,
                };
                self.record_proxied(what, status, body_bytes, ctx);
                match persistence {
                    Persistence::Close => {
                        self.phase = Phase::Closing {
                            linger: !self.input.is_empty(),
                        }
                    }
                    _ => self.enter_idle(ctx),
                }
                true
            }
            Step::Failed {
                failure,
                request_read,
            } => {
                let persistence = if request_read {
                    proxying.exchange.persistence()
                } else {
                    Persistence::Close
                };
                let with_body = proxying.exchange.method() != Method::Head;
                let (log, route) = (proxying.log.take(), proxying.route);
                let status = failure.status();
                let what = Proxied {
                    log: log.as_ref(),
                    route,
                    upstream,
                };
                self.answer_failure(status, with_body, persistence, what, ctx);
                match persistence {
                    Persistence::Close => self.phase = Phase::Closing { linger: true },
                    _ => self.enter_idle(ctx),
                }
                true
            }
            Step::Abort => {
                let (log, route) = (proxying.log.take(), proxying.route);
                let status = proxying.exchange.status().unwrap_or(502);
                let what = Proxied {
                    log: log.as_ref(),
                    route,
                    upstream,
                };
                self.record_proxied(what, status, 0, ctx);
                self.phase = Phase::Closing { linger: false };
                true
            }
        }
    }

    /// Answers a request the upstream could not (502/504), and logs it.
    fn answer_failure(
        &mut self,
        status: u16,
        with_body: bool,
        persistence: Persistence,
        what: Proxied,
        ctx: &mut Ctx,
    ) {
        let out = self.output.buffer();
        let n = response::write_simple(out, status, &ctx.clock.http_date, persistence, &[], with_body);
        self.record_proxied(what, status, n, ctx);
    }

    /// Counts a proxied response on its route and logs it.
    fn record_proxied(&self, what: Proxied, status: u16, body_bytes: u64, ctx: &mut Ctx) {
        let Proxied { log, route, upstream } = what;
        ctx.counters.count_response(route, status);
        if let Some(copy) = log {
            let entry = Entry {
                peer: self.peer,
                server: self.server,
                request_line: &copy.request_line,
                status,
                body_bytes,
                referer: copy.referer.as_deref(),
                user_agent: copy.user_agent.as_deref(),
                request_id: Some(copy.request_id.as_bytes()),
                duration: ctx.clock.now.saturating_duration_since(copy.started),
                upstream,
            };
            ctx.log.record(&entry, &ctx.clock);
        }
    }

    /// Sends an error for a request that cannot be parsed, then closes.
    fn fail(&mut self, status: u16, ctx: &mut Ctx) {
        let out = self.output.buffer();
        response::write_simple(out, status, &ctx.clock.http_date, Persistence::Close, &[], true);
        let line = self
            .input
            .data()
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = &line[..line.len().min(1024)];
        let request_id = ctx.log.wants_id(self.server).then(|| ctx.ids.make());
        let entry = Entry {
            peer: self.peer,
            server: self.server,
            request_line: line,
            status,
            body_bytes: 0,
            referer: None,
            user_agent: None,
            request_id: request_id.as_ref().map(RequestId::as_bytes),
            duration: ctx.clock.now.saturating_duration_since(self.started),
            upstream: None,
        };
        ctx.log.record(&entry, &ctx.clock);
        ctx.counters.count_response(NO_ROUTE, status);
        self.phase = Phase::Closing { linger: true };
        self.deadline = ctx.clock.now + ctx.limits.send_timeout.min(ctx.limits.header_timeout);
    }

    /// Re-arms the deadline after bytes went out: a slow reader gets the send timeout while
    /// output is pending; once it is all sent, an idle connection's keep-alive timer starts.
    fn after_write(&mut self, ctx: &Ctx) {
        if !self.output.is_empty() {
            let send_by = ctx.clock.now + ctx.limits.send_timeout;
            // An exchange keeps its own (upstream) deadline, which may be later. Elsewhere the
            // send timeout alone decides: a longer keep-alive timer must not extend it.
            self.deadline = match self.phase {
                Phase::Proxying(_) => self.deadline.max(send_by),
                _ => send_by,
            };
        } else if matches!(self.phase, Phase::Idle) {
            self.enter_idle(ctx);
        }
    }

    fn enter_idle(&mut self, ctx: &Ctx) {
        self.phase = Phase::Idle;
        self.idle_since = ctx.clock.now;
        self.deadline = ctx.clock.now + ctx.limits.keepalive_timeout;
    }

    /// Called when all output is sent: closes or starts lingering if the phase says so.
    fn after_flush(&mut self, now: Instant) -> Option<Verdict> {
        match self.phase {
            Phase::Closing { linger: true } if !self.input.is_ended() => {
                let _ = self.stream.shutdown_write();
                self.phase = Phase::Lingering;
                self.deadline = now + LINGER;
                None
            }
            Phase::Closing { .. } => Some(Verdict::Close),
            Phase::Lingering if self.input.is_ended() => Some(Verdict::Close),
            _ => None,
        }
    }
}

/// Where a request goes.
enum Destination<'r, 'b> {
    /// Answered before any route: the target is unusable (400) or no route matches (404).
    Status(u16),
    /// A static route; `id` is the route's root in `StaticFiles`.
    Files {
        id: usize,
        route: &'r Route,
        options: &'r FileOptions,
        path: Cow<'b, str>,
        /// The route's index in the response counters.
        counted_as: usize,
    },
    /// An upstream; the target it is sent starts at `target_start` in the raw target.
    Proxy {
        upstream: usize,
        target_start: usize,
        counted_as: usize,
    },
}

/// Matches the request's normalized path against the server's routes (whose first one is
/// `first_route` in the response counters).
fn destination<'r, 'b>(
    head: &RequestHead,
    buf: &'b [u8],
    routes: &[(usize, &'r Route)],
    first_route: usize,
) -> Destination<'r, 'b> {
    let target = head.target.of(buf);
    let Ok(path) = target::resolve_target(target) else {
        return Destination::Status(400);
    };
    let Some(at) = routes.iter().position(|(_, r)| r.matches(&path.path)) else {
        return Destination::Status(404);
    };
    let (id, route) = routes[at];
    let counted_as = first_route + at;
    match &route.serve {
        Serve::Files(options) => Destination::Files {
            id,
            route,
            options,
            path: path.path,
            counted_as,
        },
        Serve::Proxy(upstream) => {
            let strip = route.strip_prefix.then_some(route.prefix.as_str());
            match target::upstream_target_start(target, &path.path, strip) {
                Some(target_start) => Destination::Proxy {
                    upstream: *upstream,
                    target_start,
                    counted_as,
                },
                None => Destination::Status(400),
            }
        }
    }
}

/// Consumes body bytes from `data`; returns how many were used and whether the body ended.
fn discard_body(left: &mut BodyLeft, data: &[u8], max_body_bytes: u64) -> Result<(usize, bool), ()> {
    match left {
        BodyLeft::Length(remaining) => {
            let used = (*remaining).min(data.len() as u64);
            *remaining -= used;
            Ok((used as usize, *remaining == 0))
        }
        BodyLeft::Chunked(decoder) => {
            let feed = decoder.feed(data, |_| {}).map_err(|_| ())?;
            if decoder.body_bytes() > max_body_bytes {
                return Err(());
            }
            Ok((feed.consumed, feed.done))
        }
    }
}
