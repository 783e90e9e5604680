//! One client connection: reads requests, has the pipeline answer them in order, and decides
//! when to close.
//!
//! The connection is a state machine over [`Phase`], changed only by [`Conn::set_phase`];
//! each phase determines its own deadline ([`Conn::deadline`]), and while output is pending
//! the client must keep taking it within `send_timeout`. [`Conn::drive`] runs the machine as
//! far as the transport allows (edge-triggered: until reads or writes would block) within a
//! bounded number of rounds, so no single client can hold the worker.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;

use super::access_log::{AccessLog, Entry};
use super::clock::Clock;
use super::proxy_protocol;
use crate::config::{Address, Limits};
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::{self, Framing, HeadLimits, RequestHead};
use crate::http::response::{format_into, Persistence, ResponseHead};
use crate::io::{Buffers, Client, Filled, Flush, Input, Output, ReadSide, Transport};
use crate::pipeline::request_id::RequestId;
use crate::pipeline::respond::{Reply, Response};
use crate::pipeline::{Outcome, Pipeline, Request, Routed, Standing, Wait, Waited};
use crate::proxy::{Exchange, Failure, Step};
use crate::stats::{Counters, TlsFailure, NO_ROUTE};

/// Rounds of read/process/write per readiness event before yielding to other connections.
const ROUNDS_PER_EVENT: usize = 16;
/// How often a request waiting for another's fetch of its cache entry asks again.
const CACHE_RETRY: Duration = Duration::from_millis(20);
/// Stop parsing pipelined requests while this much output is waiting.
const OUTPUT_HIGH_WATER_BYTES: usize = 64 * 1024;
/// How long a closing connection keeps reading (and discarding) what the client still sends,
/// so the kernel does not answer those bytes with a reset that destroys our response.
const LINGER: Duration = Duration::from_secs(2);

/// Where the connection is in its request cycle.
enum Phase {
    /// On a `proxy_protocol` address: the load balancer's PROXY header must come first.
    ProxyHeader,
    /// Between requests (its keep-alive timer runs once the output is sent).
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// The answered request's body is still arriving; it is read and discarded.
    Body(BodyLeft),
    /// An upstream is answering the request.
    Proxying(Box<Proxying>),
    /// The request (still in the input) waits, for another request's fetch of the cache
    /// entry it wants or for its turn under a rate limit; it is handed to the pipeline
    /// again at `retry_at`.
    Waiting { started: Instant, retry_at: Instant },
    /// Send what is pending, then close.
    Closing(Close),
    /// Our side is shut; discarding input until the client closes or the linger ends.
    Lingering,
}

/// How a connection closes once its output is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// At once if the client's side is proven quiet (ended, or read empty), else lingering:
    /// closing on unread bytes would reset the connection and lose the last response.
    Now,
    /// Lingering: the client may still be sending.
    Linger,
    /// Lingering, after refusing a request that could not be read; the client gets less time
    /// to take the answer (the shorter of the send and header timeouts).
    Refused,
    /// At once, whatever the client still sends: it is flooding (a body over the limit or
    /// malformed), and reading on would take it all.
    Cut,
}

/// A request handed to an upstream, and what its response and log line need until it ends.
struct Proxying {
    exchange: Exchange,
    response: Response,
    routed: Routed,
    log: Option<LogCopy>,
}

/// What an access log line needs of a request.
struct LogLine<'l> {
    request_line: &'l [u8],
    referer: Option<&'l [u8]>,
    user_agent: Option<&'l [u8]>,
    request_id: Option<&'l [u8]>,
    /// When the request's first bytes were processed.
    started: Instant,
}

impl<'l> LogLine<'l> {
    fn of(head: &RequestHead, buf: &'l [u8], request_id: Option<&'l RequestId>, started: Instant) -> Self {
        LogLine {
            request_line: head.request_line(buf),
            referer: head.field(buf, "referer"),
            user_agent: head.field(buf, "user-agent"),
            request_id: request_id.map(RequestId::as_bytes),
            started,
        }
    }
}

/// The parts of a request head its access log line needs, kept after the head is consumed.
struct LogCopy {
    request_line: Vec<u8>,
    referer: Option<Vec<u8>>,
    user_agent: Option<Vec<u8>>,
    request_id: Option<RequestId>,
    started: Instant,
}

impl LogCopy {
    fn of(line: &LogLine, request_id: Option<RequestId>) -> LogCopy {
        LogCopy {
            request_line: line.request_line.to_vec(),
            referer: line.referer.map(<[u8]>::to_vec),
            user_agent: line.user_agent.map(<[u8]>::to_vec),
            request_id,
            started: line.started,
        }
    }

    fn line(&self) -> LogLine<'_> {
        LogLine {
            request_line: &self.request_line,
            referer: self.referer.as_deref(),
            user_agent: self.user_agent.as_deref(),
            request_id: self.request_id.as_ref().map(RequestId::as_bytes),
            started: self.started,
        }
    }
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

/// The worker state every connection uses: limits, the pipeline, clock, log, counters. The
/// worker owns it and lends it to one connection at a time.
pub struct Ctx<'a> {
    pub limits: &'a Limits,
    pub head_limits: HeadLimits,
    pub pipeline: Pipeline<'a>,
    pub clock: Clock,
    pub log: AccessLog,
    /// The worker is shutting down: answer what is in flight, keep nothing alive.
    pub draining: bool,
    /// The worker's counters for its heartbeat.
    pub counters: Counters,
    /// Spare I/O buffers, lent to connections and exchanges while they hold bytes.
    pub buffers: Buffers,
    /// The head every response is built in, one at a time.
    pub head: ResponseHead,
    /// The head every request is parsed into, one at a time.
    pub request: RequestHead,
}

/// A client connection over a transport (a TCP or unix socket, or TLS on one, by default).
pub struct Conn<T: Transport = Client> {
    /// Slab key: the client socket's token is `2 * key` (an upstream socket's is its own,
    /// see `proxy::socket_token`).
    key: usize,
    transport: T,
    peer: SocketAddr,
    /// Index of the worker's listener it came in on.
    listener: usize,
    phase: Phase,
    input: Input,
    output: Output,
    /// When the current phase began.
    since: Instant,
    /// When the client last took output bytes (or connected).
    last_sent: Instant,
    /// When bytes last came from the client (or it connected): the timer of a request body.
    last_received: Instant,
    served: u32,
    /// When the request waiting for a cache entry stops waiting and goes upstream itself.
    awaiting_until: Option<Instant>,
    /// What the limits keep of the connection: its count under `limit_connections` (given
    /// back when it is dropped), and whether its waiting request took its turn.
    standing: Standing,
    /// When the worker must hand the waiting request over again to the pipeline, before
    /// its next sweep (a turn under a rate limit comes to the millisecond; a request waiting
    /// for a cache entry asks again every 20 ms), until taken.
    wake: Option<Instant>,
}

impl<T: Transport> Conn<T> {
    /// A freshly accepted connection on listener `listener`.
    pub fn new(key: usize, transport: T, peer: SocketAddr, listener: usize, now: Instant) -> Conn<T> {
        Conn {
            key,
            transport,
            peer,
            listener,
            phase: Phase::Idle,
            input: Input::default(),
            output: Output::default(),
            since: now,
            last_sent: now,
            last_received: now,
            served: 0,
            awaiting_until: None,
            standing: Standing::default(),
            wake: None,
        }
    }

    /// Takes a PROXY protocol header before anything else: its source address becomes the
    /// client's (a connection without one is closed).
    pub fn await_proxy_header(&mut self) {
        self.phase = Phase::ProxyHeader;
    }

    /// Waits for a request head from the start (its timer runs from now: a TLS handshake
    /// counts against `header_timeout`).
    pub fn await_head(&mut self) {
        self.phase = Phase::Head;
    }

    /// The client's transport (tests put requests in and take responses out).
    #[cfg(test)]
    pub fn client(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The one way the phase changes; the new phase's timer starts now.
    fn set_phase(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.since = now;
    }

    /// When the connection's wait runs out: the client's send timer while output is pending,
    /// and the phase's own timer (head, body, keep-alive, upstream, linger).
    pub fn deadline(&self, ctx: &Ctx) -> Instant {
        let limits = ctx.limits;
        let send = (!self.output.is_empty()).then(|| self.last_sent + limits.send_timeout);
        let phase = match &self.phase {
            // Idle only once the last response is out.
            Phase::Idle => send
                .is_none()
                .then(|| self.since.max(self.last_sent) + limits.keepalive_timeout),
            Phase::ProxyHeader | Phase::Head => Some(self.since + limits.header_timeout),
            Phase::Body(_) => Some(self.last_received + limits.header_timeout),
            Phase::Proxying(proxying) => {
                let body = (proxying.exchange.awaits_client_body())
                    .then(|| self.last_received + limits.header_timeout);
                let upstream = proxying.exchange.deadline(&ctx.pipeline.upstreams);
                body.into_iter().chain(upstream).min()
            }
            Phase::Closing(Close::Refused) => {
                Some(self.since + limits.send_timeout.min(limits.header_timeout))
            }
            Phase::Closing(_) => None,
            Phase::Waiting { retry_at, .. } => Some(*retry_at),
            Phase::Lingering => return self.since + LINGER,
        };
        match (send, phase) {
            (Some(send), Some(phase)) => send.min(phase),
            (Some(only), None) | (None, Some(only)) => only,
            // Nothing to wait for (it closes on its next drive); a bound all the same.
            (None, None) => self.since + limits.send_timeout,
        }
    }

    /// When the worker must hand its waiting request over again, if that is sooner than the
    /// worker's sweep would (once per wait).
    pub fn take_wake(&mut self) -> Option<Instant> {
        self.wake.take()
    }

    /// Hands the waiting request over again if its time came (`None` if it does not wait,
    /// or not until later).
    pub fn resume(&mut self, ctx: &mut Ctx) -> Option<Verdict> {
        match self.phase {
            Phase::Waiting { started, retry_at } if retry_at <= ctx.clock.now => {
                // The head phase resumes with the request's start.
                self.set_phase(Phase::Head, started);
                Some(self.drive(ctx))
            }
            _ => None,
        }
    }

    /// True while an upstream answers the connection's request.
    #[cfg(test)]
    pub fn is_proxying(&self) -> bool {
        matches!(self.phase, Phase::Proxying(_))
    }

    /// True when the connection waits between requests with nothing pending.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && self.input.is_empty() && self.output.is_empty()
    }

    /// How long the connection has been idle, if it is.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        self.is_idle()
            .then(|| now.saturating_duration_since(self.since.max(self.last_sent)))
    }

    /// Closes an idle connection with a lingering close: our FIN goes out, and whatever the
    /// client still sends is read and dropped until it closes too.
    pub fn linger_out(&mut self, now: Instant) {
        let _ = self.transport.shutdown_write();
        self.set_phase(Phase::Lingering, now);
    }

    /// Notes an event on the upstream socket (see [`Exchange::mark_upstream`]).
    pub fn mark_upstream_ready(&mut self, event: &Event) {
        if let Phase::Proxying(proxying) = &mut self.phase {
            proxying.exchange.mark_upstream(event);
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

    /// Gives back everything the connection holds of the worker's (it is being closed), and
    /// logs a proxied request it cuts short.
    pub fn release(&mut self, ctx: &mut Ctx) {
        if let Phase::Proxying(mut proxying) = std::mem::replace(&mut self.phase, Phase::Lingering) {
            // nginx's 499: the client went away before the response started.
            self.end_proxying(&mut proxying, 499, ctx);
        }
        self.input.discard(&mut ctx.buffers.input);
        self.output.discard(&mut ctx.buffers.output);
    }

    fn run(&mut self, ctx: &mut Ctx) -> Verdict {
        for _ in 0..ROUNDS_PER_EVENT {
            let mut progress = match self.read(ctx) {
                Ok(progress) => progress,
                Err(()) => return Verdict::Close,
            };
            progress |= self.process(ctx);
            let sent_before = self.output.sent_bytes;
            let fin_follows = matches!(self.phase, Phase::Closing(_));
            let flushed = self.output.flush(&mut self.transport, fin_follows);
            if self.output.sent_bytes > sent_before {
                ctx.counters.bytes_out += self.output.sent_bytes - sent_before;
                self.last_sent = ctx.clock.now;
                progress = true;
            }
            match flushed {
                Ok(Flush::Done) => {
                    if let Some(verdict) = self.after_flush(ctx.clock.now) {
                        return verdict;
                    }
                }
                Ok(Flush::Blocked) => {}
                Ok(Flush::Yielded) => return Verdict::Again,
                Err(_) => return Verdict::Close,
            }
            if !progress {
                return Verdict::Wait;
            }
        }
        Verdict::Again
    }

    /// Handles a passed deadline: a late head gets 408; an upstream's passed deadline is
    /// retried, answered or cut; anything else (a client too slow to send or take) is closed.
    pub fn time_out(&mut self, ctx: &mut Ctx) -> Verdict {
        let now = ctx.clock.now;
        let client_late = !self.output.is_empty() && self.last_sent + ctx.limits.send_timeout <= now;
        let body_late = self.last_received + ctx.limits.header_timeout <= now;
        match &mut self.phase {
            // A handshake not done in time: nothing to answer it in.
            Phase::Head if self.transport.handshaking() => {
                ctx.counters.tls_failures[TlsFailure::Timeout as usize] += 1;
                Verdict::Close
            }
            Phase::Head if self.output.is_empty() => {
                self.refuse(408, None, ctx);
                self.drive(ctx)
            }
            // The client stopped sending the body the upstream waits for: its fault, not the
            // upstream's (which is neither counted nor held against).
            Phase::Proxying(proxying)
                if !client_late && body_late && proxying.exchange.awaits_client_body() =>
            {
                let step = if proxying.response.started() {
                    Step::Abort
                } else {
                    Step::Failed {
                        failure: Failure::ClientTimeout,
                        request_read: false,
                    }
                };
                self.after_step(step, ctx);
                self.drive(ctx)
            }
            // Time to ask the cache again, or the request's turn (the head phase resumes with
            // the request's start).
            Phase::Waiting { started, .. } => {
                let started = *started;
                self.set_phase(Phase::Head, started);
                self.drive(ctx)
            }
            // The client takes its bytes: the deadline that passed is the upstream's.
            Phase::Proxying(proxying) if !client_late => {
                let step = ctx
                    .pipeline
                    .time_out(&mut proxying.exchange, now, &mut ctx.buffers);
                self.after_step(step, ctx);
                self.drive(ctx)
            }
            _ => Verdict::Close,
        }
    }

    fn read(&mut self, ctx: &mut Ctx) -> Result<bool, ()> {
        let limit = ctx.limits.max_header_bytes.max(16 * 1024);
        match self.input.fill(&mut self.transport, limit) {
            Ok(Filled::Bytes(n)) => {
                ctx.counters.bytes_in += n as u64;
                self.last_received = ctx.clock.now;
                Ok(true)
            }
            Ok(Filled::Eof) => Ok(true),
            Ok(Filled::Nothing | Filled::Full) => Ok(false),
            Err(e) => {
                if let Some(kind) = tls_failure(&e) {
                    log::debug!("TLS connection from {} refused: {e}", self.peer);
                    ctx.counters.tls_failures[kind as usize] += 1;
                }
                Err(())
            }
        }
    }

    /// Consumes input: request heads, bodies, or bytes to discard. Returns true on progress.
    fn process(&mut self, ctx: &mut Ctx) -> bool {
        let now = ctx.clock.now;
        let mut progress = false;
        loop {
            match &mut self.phase {
                Phase::ProxyHeader => {
                    match proxy_protocol::parse(self.input.data()) {
                        Ok(None) => break,
                        Ok(Some(header)) => {
                            self.input.consume(header.len);
                            self.peer = header.source.unwrap_or(self.peer);
                            // On a TLS address the handshake follows (within header_timeout).
                            match self.transport.begin_tls(self.input.data()) {
                                Ok(false) => self.set_phase(Phase::Idle, now),
                                Ok(true) => {
                                    self.input.clear();
                                    self.set_phase(Phase::Head, now);
                                }
                                Err(e) => {
                                    if let Some(kind) = tls_failure(&e) {
                                        ctx.counters.tls_failures[kind as usize] += 1;
                                    }
                                    self.input.clear();
                                    self.set_phase(Phase::Closing(Close::Cut), now);
                                }
                            }
                        }
                        Err(refusal) => {
                            proxy_protocol::log_refusal(refusal, self.peer);
                            self.input.clear();
                            self.set_phase(Phase::Closing(Close::Cut), now);
                        }
                    }
                    progress = true;
                }
                Phase::Idle | Phase::Head => {
                    if self.input.is_empty() || self.output.backlog_bytes() > OUTPUT_HIGH_WATER_BYTES {
                        break;
                    }
                    if matches!(self.phase, Phase::Idle) {
                        self.set_phase(Phase::Head, now);
                    }
                    // The worker's one request head, lent for this parse (its index keeps
                    // its capacity: no allocation per request).
                    let mut head = std::mem::take(&mut ctx.request);
                    let parsed = request::parse_into(self.input.data(), &ctx.head_limits, &mut head);
                    match parsed {
                        Ok(true) => self.answer(&head, ctx),
                        Ok(false) if self.input.len() >= ctx.limits.max_header_bytes => {
                            self.refuse(request::incomplete_error(self.input.data()).status(), None, ctx)
                        }
                        Ok(false) => {}
                        Err(rejected) => {
                            let indexed = rejected.indexed.then_some(&head);
                            self.refuse(rejected.error.status(), indexed, ctx)
                        }
                    }
                    ctx.request = head;
                    if parsed == Ok(false) && !matches!(self.phase, Phase::Closing(_)) {
                        break;
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
                            if done {
                                self.set_phase(Phase::Idle, now);
                            }
                        }
                        Err(()) => self.set_phase(Phase::Closing(Close::Cut), now),
                    }
                }
                Phase::Proxying(proxying)
                    if self.input.is_ended() && self.input.is_empty() && left(proxying) =>
                {
                    self.cancel(ctx);
                    progress = true;
                }
                Phase::Proxying(proxying) => {
                    let reply = Reply {
                        response: &mut proxying.response,
                        output: &mut self.output,
                        head: &mut ctx.head,
                        date: &ctx.clock.http_date,
                    };
                    let step = (ctx.pipeline).pump(
                        &mut proxying.exchange,
                        &mut proxying.routed,
                        &mut self.input,
                        reply,
                        now,
                        &mut ctx.buffers,
                    );
                    let pumping = step == Step::Progress;
                    if !self.after_step(step, ctx) {
                        break;
                    }
                    progress = true;
                    // One pump per round: an upstream that never runs dry must not keep the
                    // worker from its other connections (`run` bounds the rounds).
                    if pumping {
                        break;
                    }
                }
                Phase::Waiting { .. } => break,
                Phase::Closing(_) | Phase::Lingering => {
                    self.input.clear();
                    break;
                }
            }
        }
        // The client is done sending: close once what it sent is answered (complete
        // requests still in the buffer wait for the output to drain); a head or a body it
        // left unfinished never will be.
        let finished = match self.phase {
            Phase::Idle => self.input.is_empty(),
            Phase::ProxyHeader | Phase::Head | Phase::Body(_) => true,
            _ => false,
        };
        if self.input.is_ended() && finished {
            self.set_phase(Phase::Closing(Close::Now), now);
        }
        progress
    }

    /// Has the pipeline answer one complete request head, and moves to the phase after it.
    fn answer(&mut self, head: &RequestHead, ctx: &mut Ctx) {
        let now = ctx.clock.now;
        let persistence = if !head.wants_keep_alive()
            || ctx.draining
            || self.served + 1 >= ctx.limits.max_requests_per_connection
        {
            Persistence::Close
        } else if head.version == request::Version::Http10 {
            Persistence::KeepAliveEcho
        } else {
            Persistence::KeepAlive
        };
        // The head phase began with the request's first bytes.
        let started = self.since;
        let buf = self.input.data();
        let request = Request {
            head,
            buf,
            peer: self.peer,
            listener: self.listener,
            conn: self.key,
            secure: self.transport.secure(),
            sni: self.transport.server_name(),
            waited: match self.awaiting_until {
                None => Waited::No,
                Some(until) if now < until => Waited::Within,
                Some(_) => Waited::Out,
            },
        };
        let mut response = Response::to(head, persistence);
        let reply = Reply {
            response: &mut response,
            output: &mut self.output,
            head: &mut ctx.head,
            date: &ctx.clock.http_date,
        };
        let outcome = (ctx.pipeline).handle(&request, &mut self.standing, reply, now, &mut ctx.buffers);
        if !matches!(outcome, Outcome::Wait(_)) {
            self.awaiting_until = None;
            self.standing.next_request();
            self.served += 1;
            ctx.counters.requests += 1;
        }
        match outcome {
            Outcome::Wait(Wait::Entry(lock_timeout)) => {
                let until = *self.awaiting_until.get_or_insert(now + lock_timeout);
                let retry_at = (now + CACHE_RETRY).min(until);
                self.wake = Some(retry_at);
                self.set_phase(Phase::Waiting { started, retry_at }, now);
            }
            Outcome::Wait(Wait::Turn(turn)) => {
                self.wake = Some(turn);
                self.set_phase(
                    Phase::Waiting {
                        started,
                        retry_at: turn,
                    },
                    now,
                );
            }
            Outcome::Answered(mut routed) => {
                if routed.request_id.is_none() && ctx.log.wants_id(routed.server) {
                    routed.request_id = Some(ctx.pipeline.ids.pick(head.field(buf, "x-request-id")));
                }
                let line = LogLine::of(head, buf, routed.request_id.as_ref(), started);
                let status = response.status().unwrap_or(500);
                self.log(&line, &routed, status, &response, None, ctx);
                ctx.counters.count_response(routed.counted_as, status);
                self.input.consume(head.len);
                self.after_answer(head.framing, &response, now);
            }
            Outcome::Proxying(routed, exchange) => {
                let log = ctx.log.is_on().then(|| {
                    let line = LogLine::of(head, buf, routed.request_id.as_ref(), started);
                    LogCopy::of(&line, routed.request_id)
                });
                self.input.consume(head.len);
                let proxying = Proxying {
                    exchange,
                    response,
                    routed,
                    log,
                };
                self.set_phase(Phase::Proxying(Box::new(proxying)), now);
            }
        }
    }

    /// Moves to the phase after a response: discard the request body, idle, or close.
    fn after_answer(&mut self, framing: Framing, response: &Response, now: Instant) {
        let left = match framing {
            Framing::Empty => None,
            Framing::Length(n) => Some(BodyLeft::Length(n)),
            Framing::Chunked => Some(BodyLeft::Chunked(Box::default())),
        };
        let next = if response.keeps_alive() {
            match left {
                Some(left) => Phase::Body(left),
                None => Phase::Idle,
            }
        } else if left.is_some() || !self.input.is_empty() {
            // The client may still be sending: linger so it does not reset our answer.
            Phase::Closing(Close::Linger)
        } else {
            Phase::Closing(Close::Now)
        };
        self.set_phase(next, now);
    }

    /// Acts on what a pump or timeout of the exchange said. Returns true on progress.
    fn after_step(&mut self, step: Step, ctx: &mut Ctx) -> bool {
        if matches!(step, Step::Wait | Step::Progress) {
            return step == Step::Progress;
        }
        let Phase::Proxying(mut proxying) = std::mem::replace(&mut self.phase, Phase::Closing(Close::Now))
        else {
            return false;
        };
        let response = &mut proxying.response;
        let next = match step {
            Step::Done { request_read } if request_read && response.keeps_alive() => Phase::Idle,
            Step::Done { request_read } if request_read && self.input.is_empty() => {
                Phase::Closing(Close::Now)
            }
            Step::Done { .. } => Phase::Closing(Close::Linger),
            Step::Failed {
                failure,
                request_read,
            } => {
                if !request_read {
                    response.close_after();
                }
                let reply = Reply {
                    response,
                    output: &mut self.output,
                    head: &mut ctx.head,
                    date: &ctx.clock.http_date,
                };
                let mut digits = [0u8; 20];
                let retry_after = (failure.retry_after_secs())
                    .map(|secs| ("Retry-After", format_into(&mut digits, format_args!("{secs}"))));
                let routed = &mut proxying.routed;
                ctx.pipeline
                    .answer_failure(routed, reply, failure.status(), retry_after.as_slice());
                if response.keeps_alive() {
                    Phase::Idle
                } else {
                    Phase::Closing(Close::Linger)
                }
            }
            // (The pipeline answers an offload itself and says Done.)
            Step::Abort | Step::Wait | Step::Progress | Step::Offloaded { .. } => Phase::Closing(Close::Now),
        };
        self.end_proxying(&mut proxying, 502, ctx);
        self.set_phase(next, ctx.clock.now);
        true
    }

    /// The client left before its response started: the upstream request is cancelled (its
    /// connection closed, the upstream freed) and logged as nginx does, 499.
    fn cancel(&mut self, ctx: &mut Ctx) {
        if let Phase::Proxying(mut proxying) = std::mem::replace(&mut self.phase, Phase::Closing(Close::Now))
        {
            self.end_proxying(&mut proxying, 499, ctx);
        }
        self.set_phase(Phase::Closing(Close::Now), ctx.clock.now);
    }

    /// Ends an exchange: its buffers go back, its response is counted and logged (with
    /// `unanswered` as the status when no head went out).
    fn end_proxying(&self, proxying: &mut Proxying, unanswered: u16, ctx: &mut Ctx) {
        proxying
            .exchange
            .release(&mut ctx.buffers, &mut ctx.pipeline.upstreams);
        let upstream = proxying.exchange.server_addr(&ctx.pipeline.upstreams);
        let status = proxying.response.status().unwrap_or(unanswered);
        if let Some(copy) = &proxying.log {
            self.log(
                &copy.line(),
                &proxying.routed,
                status,
                &proxying.response,
                upstream,
                ctx,
            );
        }
        ctx.counters.count_response(proxying.routed.counted_as, status);
    }

    /// Writes the access log line of a finished request.
    fn log(
        &self,
        line: &LogLine,
        routed: &Routed,
        status: u16,
        response: &Response,
        upstream: Option<&Address>,
        ctx: &mut Ctx,
    ) {
        let entry = Entry {
            client: routed.client,
            server: routed.server,
            request_line: line.request_line,
            status,
            body_bytes: response.body_bytes(),
            referer: line.referer,
            user_agent: line.user_agent,
            request_id: line.request_id,
            duration: ctx.clock.now.saturating_duration_since(line.started),
            upstream,
            tls: self.transport.tls_session(),
        };
        ctx.log.record(&entry, &ctx.clock);
    }

    /// Answers a request that cannot be read (or came too slowly) with `status`, then closes.
    /// `head`: the request's head when it was complete (refused for what it says), whose
    /// headers its log line carries; else the log has the first line received.
    fn refuse(&mut self, status: u16, head: Option<&RequestHead>, ctx: &mut Ctx) {
        let mut response = Response::to_unreadable();
        let reply = Reply {
            response: &mut response,
            output: &mut self.output,
            head: &mut ctx.head,
            date: &ctx.clock.http_date,
        };
        let server = ctx.pipeline.sites.default_for(self.listener);
        ctx.pipeline.answer_unreadable(server, reply, status);
        let request_id = ctx.log.wants_id(server).then(|| ctx.pipeline.ids.make());
        let buf = self.input.data();
        let line = match head {
            Some(head) => LogLine::of(head, buf, request_id.as_ref(), self.since),
            None => {
                let first_line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
                let first_line = first_line.strip_suffix(b"\r").unwrap_or(first_line);
                LogLine {
                    request_line: &first_line[..first_line.len().min(1024)],
                    referer: None,
                    user_agent: None,
                    request_id: request_id.as_ref().map(RequestId::as_bytes),
                    started: self.since,
                }
            }
        };
        let routed = Routed {
            server,
            client: self.peer.ip(),
            counted_as: NO_ROUTE,
            request_id,
            ignore_client_abort: false,
            replay: None,
            parts: None,
            fill: None,
        };
        self.log(&line, &routed, status, &response, None, ctx);
        ctx.counters.count_response(NO_ROUTE, status);
        self.set_phase(Phase::Closing(Close::Refused), ctx.clock.now);
    }

    /// Called when all output is sent: closes or starts lingering if the phase says so.
    fn after_flush(&mut self, now: Instant) -> Option<Verdict> {
        match self.phase {
            Phase::Closing(close) if self.lingers(close) => {
                let _ = self.transport.shutdown_write();
                self.set_phase(Phase::Lingering, now);
                None
            }
            Phase::Closing(_) => Some(Verdict::Close),
            Phase::Lingering if self.input.is_ended() => Some(Verdict::Close),
            _ => None,
        }
    }

    /// Whether closing as `close` says waits for the client's FIN (see [`Close`]).
    fn lingers(&self, close: Close) -> bool {
        if self.input.is_ended() {
            return false;
        }
        match close {
            // Unread bytes may be waiting unless the last read proved the socket empty.
            Close::Now => self.input.side() == ReadSide::Ready,
            Close::Linger | Close::Refused => true,
            Close::Cut => false,
        }
    }
}

/// What kind of TLS failure `e` is, if it is one (rustls' error inside an I/O error).
fn tls_failure(e: &std::io::Error) -> Option<TlsFailure> {
    let error = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match error {
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => TlsFailure::NotTls,
        rustls::Error::PeerIncompatible(_) => TlsFailure::Incompatible,
        rustls::Error::AlertReceived(_) => TlsFailure::Rejected,
        rustls::Error::PeerMisbehaved(_) => TlsFailure::Misbehaved,
        _ => TlsFailure::Other,
    })
}

/// Whether a client that closed its side has left `proxying`'s request, rather than only
/// ended it: its request was read whole and its response has not started, and it asked to keep
/// the connection (a FIN then cannot be a half-close that still waits for the answer, as from
/// an HTTP/1.0 tool or a `Connection: close` request), unless the route ignores client aborts.
fn left(proxying: &Proxying) -> bool {
    !proxying.routed.ignore_client_abort
        && proxying.exchange.request_read()
        && !proxying.response.started()
        && proxying.response.keeps_alive()
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

#[cfg(test)]
mod tests;
