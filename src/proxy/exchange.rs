//! One proxied request: connect (or reuse), send the head and stream the body upstream,
//! read the response head, stream the body back, then pool the connection.
//!
//! Both directions run at once with bounded buffers: the client's input buffer feeds the
//! upstream at most `UPLOAD_BUFFER_BYTES` ahead, and the upstream is read only while the
//! client's backlog is small, so a slow side slows the other instead of filling memory.
//! The response leaves as a head value and body parts through a [`Respond`] sink; how the
//! client gets them framed is not the exchange's business.
//!
//! A request body is either streamed as it comes or, with request buffering, read whole
//! first (memory, then a temporary file) and only then sent, with a Content-Length, to an
//! upstream picked once it is complete: a slow uploader never holds an app's worker, and the
//! app never sees a partial or chunked body.
//!
//! The link, the upload and the download move independently (an upstream may answer before
//! it read the whole body). The deadline follows from where they are and from when bytes
//! last moved ([`Exchange::deadline`]); while the exchange waits for the client to take its
//! backlog it has none: the client's own send timer applies.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use mio::event::Event;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry};

use super::balance::{hash_key, InFlight, Tried};
use super::forward::{self, Forward, Preconditions};
use super::gate::Permit;
use super::response::{self, UpstreamBody, UpstreamHead};
use super::{socket_token, Admission, Upstreams};
use crate::config::answer::Parts;
use crate::config::{Address, Balance, HashKey, HeaderRules};
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::{Framing, Method, RequestHead};
use crate::http::respond::{respond_simple, BodyPart, Respond};
use crate::http::response::{header as push_header, push_chunk, ResponseHead};
use crate::io::spill::Spill;
use crate::io::{Buffers, Filled, Input, SpillDir, Stream, Transport};
use crate::stats::UpstreamError;

/// Request bytes buffered toward the upstream before the client is read further; also what a
/// collected request body keeps in memory before the rest goes to a temporary file.
const UPLOAD_BUFFER_BYTES: usize = 64 * 1024;
/// Bytes not yet taken by the client before the upstream is read further (a response that
/// spills keeps its memory backlog below this: `io::output::SPILL_AFTER_BYTES`).
const DOWNLOAD_HIGH_WATER_BYTES: usize = 64 * 1024;
/// The upstream input buffer's size.
const UPSTREAM_INPUT_BYTES: usize = response::MAX_HEAD_BYTES + 16 * 1024;
/// Interim (1xx) responses accepted before the final one; an upstream sending more is a 502
/// (each one resets the read timeout, so an endless flood would hold the client forever).
const MAX_INTERIM_RESPONSES: u32 = 32;

/// What the pipeline hands over to start an exchange.
pub struct Start<'a> {
    pub head: &'a RequestHead,
    pub buf: &'a [u8],
    /// Sent upstream as `X-Request-Id` (the client's own, if sane, or one made by the worker).
    pub request_id: &'a [u8],
    pub peer: SocketAddr,
    /// The client's address (the peer's, or the one a trusted proxy forwarded for).
    pub client: IpAddr,
    /// The peer is a trusted proxy: its X-Forwarded-Proto and -Host are kept.
    pub trusted_peer: bool,
    pub upstream: usize,
    /// Where the target the upstream sees starts in the raw target (see `Forward`).
    pub target_start: usize,
    /// The client connection's key: events on its upstream socket drive it, and it is the
    /// one admitted when its queued request's turn comes.
    pub conn: usize,
    /// A chunked request body over this is cut off (Content-Length was checked already).
    pub max_body_bytes: u64,
    /// Read the request body whole before picking an upstream (the route buffers requests
    /// and temporary files can be made).
    pub collect_body: bool,
    /// Which of the upstream's offload headers the route honors.
    pub offloads: Offloads,
    /// The client asked to switch to a protocol its route allows: the upgrade goes upstream
    /// (otherwise the request goes as a plain one, and an upstream's 101 is a 502).
    pub upgrade: bool,
    /// Headers whose names hold `_` may go upstream (see `Forward`).
    pub underscores_in_headers: bool,
    /// The route's `request_headers`.
    pub request_headers: &'a HeaderRules,
    /// What the placeholders in `request_headers` are filled from.
    pub parts: Option<Parts<'a>>,
    /// Whose `If-*` and `Range` headers go upstream (a cache's own, or none, when it fills).
    pub preconditions: Preconditions<'a>,
}

/// Which offload headers a route honors: an app's answer that carries one is not relayed;
/// shoal sends the file it names instead (see `pipeline::offload`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// `X-Accel-Redirect: /uri`, served by an internal route.
    pub accel_redirect: bool,
    /// `X-Sendfile: /absolute/path`, served by the internal route whose root holds it.
    pub sendfile: bool,
}

/// A file the app asked shoal to send in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offload {
    pub kind: OffloadKind,
    /// The header's value: a URI, or an absolute file path.
    pub target: Vec<u8>,
    /// The app's header lines the client still gets (`Name: value\r\n` each), for the
    /// names in [`KEPT_ON_OFFLOAD`].
    pub headers: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadKind {
    AccelRedirect,
    Sendfile,
}

/// What of the app's head survives an offload (as nginx keeps them): the type and name it
/// gives the file, its caching, its cookies.
pub const KEPT_ON_OFFLOAD: [&str; 5] = [
    "content-type",
    "content-disposition",
    "cache-control",
    "expires",
    "set-cookie",
];

/// The worker services an exchange uses.
pub struct Env<'e, 'a> {
    pub upstreams: &'e mut Upstreams<'a>,
    pub registry: &'e Registry,
    /// The worker's spare buffers: an exchange borrows two and gives them back when it ends.
    pub buffers: &'e mut Buffers,
    /// Where a collected request body spills past its memory part.
    pub spill: Option<&'e SpillDir>,
    pub now: Instant,
}

/// How a failed exchange is answered, when nothing was sent to the client yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No server could be reached (refused, reset, closed before answering, bad response).
    BadGateway,
    /// A connect, send or read timed out.
    Timeout,
    /// The client's chunked body grew past `max_body_bytes` (the client's fault).
    BodyTooLarge,
    /// The client stopped sending the request body (the client's fault).
    ClientTimeout,
    /// A collected request body could not be written to its temporary file.
    Storage,
    /// Every server was at its `max_conns` for the whole `queue_timeout`.
    QueueTimeout { retry_after_secs: u64 },
}

impl Failure {
    pub fn status(self) -> u16 {
        match self {
            Failure::BadGateway => 502,
            Failure::Timeout => 504,
            Failure::BodyTooLarge => 413,
            Failure::ClientTimeout => 408,
            Failure::Storage => 500,
            Failure::QueueTimeout { .. } => 503,
        }
    }

    /// The seconds a client is told to wait before it tries again (`Retry-After`).
    pub fn retry_after_secs(self) -> Option<u64> {
        match self {
            Failure::QueueTimeout { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        }
    }
}

/// What one pump or timeout achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more can happen until a socket is ready.
    Wait,
    /// Something moved; pump again.
    Progress,
    /// The response went out whole. `request_read`: the client's request body was read to
    /// its end (otherwise the client connection cannot carry another request).
    Done { request_read: bool },
    /// The upstream is done, and asked for a file to be sent in its place
    /// ([`Exchange::take_offload`]); nothing went to the client yet.
    Offloaded { request_read: bool },
    /// Failed before the response started: answer the client with this, then continue
    /// (keep-alive only when the client's request body was fully read).
    Failed { failure: Failure, request_read: bool },
    /// The response was cut (upstream died mid-body, or the client vanished): close the client.
    Abort,
}

/// Where the upstream socket is.
enum Link {
    /// None yet: the request waits for a permit for a capped server, with its place in the queue.
    Queued {
        ticket: u64,
        since: Instant,
    },
    /// A connect started; `signalled` once the socket had an event since.
    Connecting {
        stream: Stream,
        signalled: bool,
    },
    Open {
        stream: Stream,
        pooled: bool,
    },
    /// Handed back to the pool, or dropped.
    Closed,
}

impl Link {
    /// The upstream socket. Exchanges use it only once connecting started and stop pumping
    /// once the link is closed, so the other cases are never reached.
    fn stream(&mut self) -> &mut Stream {
        match self {
            Link::Connecting { stream, .. } | Link::Open { stream, .. } => stream,
            Link::Queued { .. } | Link::Closed => unreachable!("no upstream socket to use"),
        }
    }
}

/// What is left of a request body to read from the client.
enum BodyLeft {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

/// A request body read whole before it goes upstream: its first bytes in memory, the rest
/// in a temporary file.
struct Collected {
    memory: Vec<u8>,
    spill: Option<Spill>,
}

impl Collected {
    fn len(&self) -> u64 {
        self.memory.len() as u64 + self.spill.as_ref().map_or(0, |s| s.written)
    }

    /// Keeps `bytes`: in memory up to [`UPLOAD_BUFFER_BYTES`], then in the spill.
    fn push(&mut self, bytes: &[u8], dir: Option<&SpillDir>) -> io::Result<()> {
        if self.spill.is_none() && self.memory.len() + bytes.len() <= UPLOAD_BUFFER_BYTES {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        }
        if self.spill.is_none() {
            let dir = dir.ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
            self.spill = Some(Spill::create(dir)?);
        }
        self.spill.as_mut().map_or(Ok(()), |spill| spill.write(bytes))
    }
}

/// Where the request body is.
enum Upload {
    /// Being read whole before any upstream is picked.
    Collecting {
        left: BodyLeft,
        body: Collected,
    },
    /// Streamed upstream as it comes.
    Streaming(BodyLeft),
    /// Read whole; its spilled part still goes upstream after the head and the memory part.
    Spilled(Spill),
    Done,
}

/// How the rest of the upstream's response body is delimited.
enum Incoming {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    UntilClose,
}

/// Where the response is.
enum Download {
    Head,
    Body {
        incoming: Incoming,
        /// The upstream will keep the connection open after this response.
        keep_alive: bool,
    },
    Tunnel {
        client_closed: bool,
        upstream_closed: bool,
    },
    Done {
        keep_alive: bool,
    },
}

/// Whose move the exchange waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Upstream,
    /// The client's backlog is too big to read the upstream further.
    Client,
}

/// One request in flight to an upstream.
pub struct Exchange {
    upstream: usize,
    server: usize,
    /// Counts this request against `server` for least_conn until the exchange ends.
    in_flight: Option<InFlight>,
    /// Its permit for `server`, when the server is capped.
    permit: Option<Permit>,
    offloads: Offloads,
    /// What the upstream asked to send in its place, once its head said so.
    offload: Option<Box<Offload>>,
    tried: Tried,
    conn: usize,
    link: Link,
    method: Method,
    idempotent: bool,
    upgrade: bool,
    /// The hash policy's value of this request's key.
    hash_key: u64,
    max_body_bytes: u64,
    /// Bytes for the upstream (head, then re-framed body) and how many went out.
    to_upstream: Vec<u8>,
    sent: usize,
    /// Sent bytes were dropped from `to_upstream`, so a retry could not replay the request.
    trimmed: bool,
    upload: Upload,
    from_upstream: Input,
    download: Download,
    /// Interim (1xx) responses dropped so far.
    interim: u32,
    waiting: Waiting,
    /// When bytes last moved with the upstream (or the current connection began).
    since: Instant,
    /// When the request was routed here (its latency runs until the response head).
    started: Instant,
}

impl Exchange {
    /// Builds the upstream request and starts connecting (or reuses a pooled connection).
    pub fn begin(start: &Start, env: &mut Env) -> Result<Exchange, Failure> {
        let head = start.head;
        let mut to_upstream = env.buffers.output.take();
        to_upstream.clear();
        let collect = start.collect_body && head.framing != Framing::Empty;
        let forward = Forward {
            head,
            buf: start.buf,
            client_ip: start.client,
            peer_ip: start.peer.ip(),
            trusted_peer: start.trusted_peer,
            target_start: start.target_start,
            upgrade: start.upgrade,
            underscores_in_headers: start.underscores_in_headers,
            rules: start.request_headers,
            parts: start.parts,
            request_id: start.request_id,
            // A collected body's length is known once it is whole (see `seal`).
            framing: if collect { Framing::Empty } else { head.framing },
            preconditions: start.preconditions,
        };
        forward::write_head(&forward, &mut to_upstream);
        let hash_key = match &env.upstreams.list[start.upstream].config.balance {
            Balance::Hash(HashKey::Header(name)) => hash_key(head.field(start.buf, name).unwrap_or_default()),
            Balance::Hash(HashKey::ClientIp) => hash_key(forward::format_ip(start.client, &mut [0; 48])),
            Balance::RoundRobin | Balance::LeastConn => 0,
        };
        let mut exchange = Exchange {
            upstream: start.upstream,
            server: 0,
            in_flight: None,
            permit: None,
            offloads: start.offloads,
            offload: None,
            tried: Tried::default(),
            conn: start.conn,
            link: Link::Closed,
            method: head.method,
            idempotent: matches!(
                head.method,
                Method::Get | Method::Head | Method::Options | Method::Put | Method::Delete
            ),
            upgrade: start.upgrade,
            hash_key,
            max_body_bytes: start.max_body_bytes,
            to_upstream,
            sent: 0,
            trimmed: false,
            upload: match head.framing {
                Framing::Empty => Upload::Done,
                framing => {
                    let left = match framing {
                        Framing::Length(n) => BodyLeft::Length(n),
                        _ => BodyLeft::Chunked(Box::default()),
                    };
                    if collect {
                        let memory = env.buffers.output.take();
                        let body = Collected { memory, spill: None };
                        Upload::Collecting { left, body }
                    } else {
                        Upload::Streaming(left)
                    }
                }
            },
            from_upstream: Input::default(),
            download: Download::Head,
            interim: 0,
            waiting: Waiting::Upstream,
            since: env.now,
            started: env.now,
        };
        exchange.from_upstream.lend(&mut env.buffers.input);
        // A body to collect comes first; the upstream is picked once it is whole.
        if !collect {
            if let Err(failure) = exchange.connect_next(env) {
                exchange.release(env.buffers, env.upstreams);
                return Err(failure);
            }
        }
        Ok(exchange)
    }

    /// Gives the exchange's buffers back to the worker's pools and its place in a queue up
    /// (when it ended, or its client connection is closing).
    pub fn release(&mut self, buffers: &mut Buffers, upstreams: &mut Upstreams) {
        self.leave_queue(upstreams);
        self.from_upstream.discard(&mut buffers.input);
        self.to_upstream.clear();
        buffers.output.give(std::mem::take(&mut self.to_upstream));
        if let Upload::Collecting { body, .. } = &mut self.upload {
            body.memory.clear();
            buffers.output.give(std::mem::take(&mut body.memory));
        }
    }

    /// Notes an event on the upstream socket. Only one with something to read (data, the
    /// FIN, an error) makes the next pump read: a write-only one would find nothing.
    pub fn mark_upstream(&mut self, event: &Event) {
        if let Link::Connecting { signalled, .. } = &mut self.link {
            *signalled = true;
        }
        let read_closed = event.is_read_closed() || event.is_error();
        if event.is_readable() || read_closed {
            self.from_upstream.mark_readable(read_closed);
        }
    }

    /// The address of the server this exchange went to last, once it picked one.
    pub fn server_addr<'u>(&self, upstreams: &Upstreams<'u>) -> Option<&'u Address> {
        (!self.tried.is_empty()).then(|| &upstreams.list[self.upstream].config.servers[self.server].addr)
    }

    /// When the exchange gives up waiting for its upstream; None while it waits for the client
    /// (to take its backlog) or has nothing left to wait for.
    pub fn deadline(&self, upstreams: &Upstreams) -> Option<Instant> {
        let config = upstreams.list[self.upstream].config;
        let timeout = match (&self.link, &self.download) {
            (Link::Queued { since, .. }, _) => return Some(*since + config.queue_timeout),
            (Link::Closed, _) | (_, Download::Done { .. }) => return None,
            (Link::Connecting { .. }, _) => config.connect_timeout,
            _ if self.waiting == Waiting::Client => return None,
            // Nothing for the upstream to take: the client's body timer runs instead.
            (_, Download::Head) if self.awaits_client_body() => return None,
            (_, Download::Head) if !self.request_out() => config.send_timeout,
            (_, Download::Head | Download::Body { .. }) => config.read_timeout,
            (_, Download::Tunnel { .. }) => config.tunnel_timeout,
        };
        Some(self.since + timeout)
    }

    /// True when everything the client sent went upstream and more of its body is due: the
    /// exchange waits for the client, whose body timer runs (not the upstream's).
    pub fn awaits_client_body(&self) -> bool {
        match self.upload {
            Upload::Collecting { .. } => true,
            Upload::Streaming(_) => {
                self.sent == self.to_upstream.len() && matches!(self.link, Link::Open { .. })
            }
            Upload::Spilled(_) | Upload::Done => false,
        }
    }

    /// The whole request went out (head and body).
    fn request_out(&self) -> bool {
        self.sent == self.to_upstream.len() && matches!(self.upload, Upload::Done)
    }

    /// Whether the client's request body was read to its end.
    pub fn request_read(&self) -> bool {
        matches!(self.upload, Upload::Spilled(_) | Upload::Done)
    }

    /// Picks the next untried server and connects to it (or takes a pooled connection). When
    /// every server it may use is at its cap, a first attempt waits in the queue instead
    /// (the link is then [`Link::Queued`]); a retry does not, and fails.
    fn connect_next(&mut self, env: &mut Env) -> Result<(), Failure> {
        loop {
            let queued = match self.link {
                Link::Queued { ticket, since } => Some((ticket, since)),
                _ => None,
            };
            let state = &mut env.upstreams.list[self.upstream];
            let held = self.permit.take();
            let admission = state.admit(self.hash_key, &self.tried, queued.map(|q| q.0), held, env.now);
            let (server, permit) = match admission {
                Admission::Go { server, permit } => (server, permit),
                Admission::Queue if self.tried.is_empty() => {
                    if queued.is_none() {
                        let gate = state.gate.as_mut().expect("only a capped upstream queues");
                        let ticket = gate.join(self.conn);
                        self.link = Link::Queued {
                            ticket,
                            since: env.now,
                        };
                    }
                    return Ok(());
                }
                Admission::Queue | Admission::NoServer => {
                    self.leave_queue(env.upstreams);
                    return Err(Failure::BadGateway);
                }
            };
            if let Some((_, since)) = queued {
                self.leave_queue(env.upstreams);
                let waited = env.now.saturating_duration_since(since);
                env.upstreams.list[self.upstream]
                    .counters
                    .observe_queue_wait(waited);
                self.link = Link::Closed;
            }
            let state = &mut env.upstreams.list[self.upstream];
            self.tried.insert(server);
            self.server = server;
            self.permit = permit;
            self.in_flight = Some(state.balancer.occupy(server));
            self.sent = 0;
            self.since = env.now;
            if let Some(stream) = env.upstreams.checkout(self.upstream, server, self.conn, env.now) {
                self.from_upstream.await_event();
                self.link = Link::Open { stream, pooled: true };
                return Ok(());
            }
            let addr = &env.upstreams.list[self.upstream].config.servers[server].addr;
            match self.open(addr, env) {
                Ok(stream) => {
                    self.from_upstream.await_event();
                    self.link = Link::Connecting {
                        stream,
                        signalled: false,
                    };
                    return Ok(());
                }
                Err(e) => self.fail_server(env, server, connect_error(&e)),
            }
        }
    }

    /// True while the request waits for a permit.
    fn is_queued(&self) -> bool {
        matches!(self.link, Link::Queued { .. })
    }

    /// Takes the request out of its upstream's queue, if it waits there.
    fn leave_queue(&mut self, upstreams: &mut Upstreams) {
        if let Link::Queued { ticket, .. } = self.link {
            if let Some(gate) = upstreams.list[self.upstream].gate.as_mut() {
                gate.leave(ticket);
            }
            self.link = Link::Closed;
        }
    }

    fn open(&self, addr: &Address, env: &mut Env) -> io::Result<Stream> {
        let mut stream = connect(addr)?;
        let token = socket_token(&stream);
        env.registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        env.upstreams.opened(&stream, self.conn);
        Ok(stream)
    }

    /// Moves everything that can move now, in both directions.
    pub fn pump(&mut self, client_in: &mut Input, respond: &mut impl Respond, env: &mut Env) -> Step {
        if let Upload::Collecting { .. } = self.upload {
            respond.send_continue();
            match self.collect(client_in, env) {
                Err(step) => return step,
                Ok(false) if client_in.is_ended() && client_in.is_empty() => return Step::Abort,
                Ok(false) => return Step::Wait,
                Ok(true) => {
                    if let Err(failure) = self.connect_next(env) {
                        return Step::Failed {
                            failure,
                            request_read: true,
                        };
                    }
                    if self.is_queued() {
                        return Step::Wait;
                    }
                }
            }
        }
        match &self.link {
            // The worker pumps a queued request when a permit may be free for it.
            Link::Queued { .. } => {
                if let Err(failure) = self.connect_next(env) {
                    return Step::Failed {
                        failure,
                        request_read: self.request_read(),
                    };
                }
                return if self.is_queued() {
                    Step::Wait
                } else {
                    Step::Progress
                };
            }
            // Not before the socket's first event, even when a connect to a local app completed
            // at once: the app worker that the connect woke would take the request straight
            // away, preempting this worker before it connects its other requests, and the app
            // would wait in accept for each one (docs/performance.md, "S8's p99").
            Link::Connecting { signalled: false, .. } => return Step::Wait,
            Link::Connecting { .. } => match self.send_first(env) {
                Connect::Pending => return Step::Wait,
                Connect::Failed(error) => {
                    self.count(env, error);
                    return self.retry(Failure::BadGateway, true, env);
                }
                Connect::Done => self.promote(),
            },
            Link::Open { .. } => {}
            Link::Closed => return Step::Abort,
        }
        if !self.request_read() {
            respond.send_continue();
        }
        let mut progress = match self.take_request_body(client_in) {
            Ok(moved) => moved,
            Err(step) => return step,
        };
        if !self.request_read() && client_in.is_ended() && client_in.is_empty() {
            return Step::Abort;
        }
        match self.send(env) {
            Ok(moved) => progress |= moved,
            Err(()) => return self.lost_upstream(env),
        }
        if matches!(self.download, Download::Tunnel { .. }) {
            return self.tunnel(client_in, respond, env, progress);
        }
        if respond.backlog_bytes() < DOWNLOAD_HIGH_WATER_BYTES {
            self.waiting = Waiting::Upstream;
            match self.from_upstream.fill(self.link.stream(), UPSTREAM_INPUT_BYTES) {
                Ok(Filled::Bytes(_)) => {
                    progress = true;
                    self.since = env.now;
                }
                Ok(Filled::Eof) => return self.upstream_ended(respond, env),
                Ok(Filled::Nothing | Filled::Full) => {}
                Err(_) => return self.lost_upstream(env),
            }
        } else {
            self.waiting = Waiting::Client;
        }
        match self.relay(respond, env) {
            Ok(moved) => progress |= moved,
            Err(step) => return step,
        }
        match self.download {
            Download::Done { keep_alive } if self.request_read() => self.finish(keep_alive, env),
            // The upstream answered before taking the whole body: the client's remaining body
            // cannot be told from its next request, so its connection closes.
            Download::Done { .. } => self.finish_without_reuse(),
            _ if progress => Step::Progress,
            _ => Step::Wait,
        }
    }

    /// Counts a failure of this exchange's upstream (for the metrics).
    fn count(&self, env: &mut Env, error: UpstreamError) {
        env.upstreams.list[self.upstream].counters.count_error(error);
    }

    /// Counts `error` and holds it against `server` (passive health).
    fn fail_server(&self, env: &mut Env, server: usize, error: UpstreamError) {
        self.count(env, error);
        env.upstreams.list[self.upstream]
            .balancer
            .note_failure(server, env.now);
    }

    /// Learns whether the connect has completed by sending the request's first bytes: a
    /// socket still connecting takes none (`WouldBlock`), one whose connect failed answers
    /// with that error. Asking the socket instead (`SO_ERROR`, then `getpeername`) costs two
    /// system calls more per connection, for apps that take one connection per request.
    fn send_first(&mut self, env: &Env) -> Connect {
        match Transport::write(self.link.stream(), &self.to_upstream[self.sent..], false) {
            Ok(n) => {
                self.sent += n;
                self.since = env.now;
                Connect::Done
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Connect::Pending,
            Err(e) => Connect::Failed(connect_error(&e)),
        }
    }

    fn promote(&mut self) {
        if let Link::Connecting { stream, .. } = std::mem::replace(&mut self.link, Link::Closed) {
            self.link = Link::Open {
                stream,
                pooled: false,
            };
        }
    }

    /// Re-frames client body bytes into `to_upstream`, staying under the upload buffer.
    /// A malformed chunked body cuts the exchange; an oversized one is answered 413 while
    /// the response has not started (the upstream connection, holding a truncated body, is
    /// dropped with the exchange).
    fn take_request_body(&mut self, client_in: &mut Input) -> Result<bool, Step> {
        if self.to_upstream.len() - self.sent >= UPLOAD_BUFFER_BYTES || client_in.is_empty() {
            return Ok(false);
        }
        let Upload::Streaming(left) = &mut self.upload else {
            return Ok(false);
        };
        let data = client_in.data();
        let out = &mut self.to_upstream;
        let (used, done) = match left {
            BodyLeft::Length(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                out.extend_from_slice(&data[..n]);
                *left -= n as u64;
                (n, *left == 0)
            }
            BodyLeft::Chunked(decoder) => {
                let feed = decoder
                    .feed(data, |run| push_chunk(out, run))
                    .map_err(|_| Step::Abort)?;
                if decoder.body_bytes() > self.max_body_bytes {
                    return Err(self.fail_or_abort(Failure::BodyTooLarge));
                }
                if feed.done {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                (feed.consumed, feed.done)
            }
        };
        if done {
            self.upload = Upload::Done;
        }
        client_in.consume(used);
        Ok(used > 0)
    }

    /// Reads what the client sent of a body to collect; true once it is whole and sealed into
    /// the request (a Content-Length, the memory part after the head, the spilled part to
    /// follow). A malformed chunked body cuts the exchange; an oversized one is a 413, one
    /// that cannot be stored a 500.
    fn collect(&mut self, client_in: &mut Input, env: &mut Env) -> Result<bool, Step> {
        let Upload::Collecting { left, body } = &mut self.upload else {
            return Ok(true);
        };
        let data = client_in.data();
        let mut stored = Ok(());
        let (used, done) = match left {
            BodyLeft::Length(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                stored = body.push(&data[..n], env.spill);
                *left -= n as u64;
                (n, *left == 0)
            }
            BodyLeft::Chunked(decoder) => {
                let feed = decoder
                    .feed(data, |run| {
                        if stored.is_ok() {
                            stored = body.push(run, env.spill);
                        }
                    })
                    .map_err(|_| Step::Abort)?;
                if decoder.body_bytes() > self.max_body_bytes {
                    return Err(Step::Failed {
                        failure: Failure::BodyTooLarge,
                        request_read: false,
                    });
                }
                (feed.consumed, feed.done)
            }
        };
        client_in.consume(used);
        if let Err(e) = stored {
            log::warn!("cannot store a request body in a temporary file ({e}): answered 500");
            return Err(Step::Failed {
                failure: Failure::Storage,
                request_read: false,
            });
        }
        if done {
            self.seal(env);
        }
        Ok(done)
    }

    /// The collected body is whole: its length goes into the head, its memory part after it.
    fn seal(&mut self, env: &mut Env) {
        let Upload::Collecting { body, .. } = std::mem::replace(&mut self.upload, Upload::Done) else {
            return;
        };
        forward::seal_with_length(&mut self.to_upstream, body.len());
        self.to_upstream.extend_from_slice(&body.memory);
        let mut memory = body.memory;
        memory.clear();
        env.buffers.output.give(memory);
        if let Some(spill) = body.spill {
            self.upload = Upload::Spilled(spill);
        }
    }

    /// Writes pending request bytes to the upstream.
    fn send(&mut self, env: &Env) -> Result<bool, ()> {
        let mut moved = false;
        while self.sent < self.to_upstream.len() {
            match Transport::write(self.link.stream(), &self.to_upstream[self.sent..], false) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    self.sent += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(()),
            }
        }
        // Then the spilled part of a collected body, file to socket.
        if let (true, Upload::Spilled(spill)) = (self.sent == self.to_upstream.len(), &mut self.upload) {
            while spill.pending() > 0 {
                let step = spill.pending().min(1 << 20) as usize;
                match self.link.stream().sendfile(&spill.file, spill.sent, step) {
                    Ok(0) => return Err(()),
                    Ok(n) => {
                        spill.sent += n as u64;
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(()),
                }
            }
            if spill.pending() == 0 {
                // The file goes: a retry could no longer replay the request.
                self.upload = Upload::Done;
                self.trimmed = true;
            }
        }
        if moved {
            self.since = env.now;
        }
        // Streamed body bytes that went out need not be kept; a request without a body (or
        // with a collected one) keeps its bytes so a stale pooled connection can be retried.
        if self.sent == self.to_upstream.len() && !self.request_read() {
            self.to_upstream.clear();
            self.sent = 0;
            self.trimmed = true;
        }
        Ok(moved)
    }

    /// Parses the response head and relays body bytes to the client.
    fn relay(&mut self, respond: &mut impl Respond, env: &mut Env) -> Result<bool, Step> {
        let mut moved = false;
        loop {
            match &mut self.download {
                Download::Head => {
                    let was_head = self.method == Method::Head;
                    let mut slots = response::header_slots();
                    let parsed = match response::parse(self.from_upstream.data(), was_head, &mut slots) {
                        Ok(Some(parsed)) => parsed,
                        Ok(None) => return Ok(moved),
                        Err(_) => {
                            self.fail_server(env, self.server, UpstreamError::BadResponse);
                            return Err(self.fail_or_abort(Failure::BadGateway));
                        }
                    };
                    let head = parsed.head;
                    moved = true;
                    if (100..200).contains(&head.status) && head.status != 101 {
                        self.interim += 1;
                        if self.interim > MAX_INTERIM_RESPONSES {
                            return Err(self.fail_or_abort(Failure::BadGateway));
                        }
                        self.from_upstream.consume(head.len);
                        continue;
                    }
                    if head.status == 101 && !self.upgrade {
                        self.count(env, UpstreamError::BadResponse);
                        return Err(self.fail_or_abort(Failure::BadGateway));
                    }
                    // The client's head is written from this parse; an intercepted error is
                    // answered with the route's page instead.
                    if !intercepted(&head, respond) {
                        response::relay_head(&parsed, respond.head());
                    }
                    self.start_response(head, respond, env);
                }
                Download::Body { incoming, keep_alive } => {
                    let keep_alive = *keep_alive;
                    let data = self.from_upstream.data();
                    if data.is_empty() {
                        return Ok(moved);
                    }
                    // (bytes used from the upstream, body complete)
                    let (used, done) = match incoming {
                        Incoming::Length(left) => {
                            let n = (*left).min(data.len() as u64) as usize;
                            respond.body(BodyPart::Bytes(&data[..n]));
                            *left -= n as u64;
                            (n, *left == 0)
                        }
                        Incoming::Chunked(decoder) => {
                            match decoder.feed(data, |run| respond.body(BodyPart::Bytes(run))) {
                                Ok(feed) => (feed.consumed, feed.done),
                                Err(_) => {
                                    let counters = &mut env.upstreams.list[self.upstream].counters;
                                    counters.count_error(UpstreamError::BadResponse);
                                    return Err(Step::Abort);
                                }
                            }
                        }
                        Incoming::UntilClose => {
                            respond.body(BodyPart::Bytes(data));
                            (data.len(), false)
                        }
                    };
                    self.from_upstream.consume(used);
                    moved |= used > 0;
                    if done {
                        respond.end();
                        self.download = Download::Done { keep_alive };
                    }
                }
                Download::Tunnel { .. } | Download::Done { .. } => return Ok(moved),
            }
        }
    }

    /// Sends the client's response head (relayed into `respond.head()` by the caller) and
    /// sets up the body relay; or, for a head that offloads a file, takes what the client
    /// will need of it and drops the body.
    fn start_response(&mut self, head: UpstreamHead, respond: &mut impl Respond, env: &mut Env) {
        let state = &mut env.upstreams.list[self.upstream];
        state.balancer.note_success(self.server);
        state
            .counters
            .observe(env.now.saturating_duration_since(self.started));
        // An error the route has a page for is answered with the page; the upstream's body
        // is not read, and its connection goes unless it sent none.
        let no_body = matches!(head.body, UpstreamBody::None | UpstreamBody::Length(0));
        if intercepted(&head, respond) {
            self.from_upstream.consume(head.len);
            self.download = Download::Done {
                keep_alive: head.keep_alive && no_body,
            };
            respond_simple(respond, head.status, &[]);
            return;
        }
        if let Some(offload) = self.offload_of(&head, respond.head()) {
            self.offload = Some(Box::new(offload));
            self.from_upstream.consume(head.len);
            // A body the app sent along is not read: the connection goes with it.
            self.download = Download::Done {
                keep_alive: head.keep_alive && no_body,
            };
            return;
        }
        respond.send_head();
        self.from_upstream.consume(head.len);
        let keep_alive = head.keep_alive;
        self.download = match head.body {
            _ if head.status == 101 => {
                self.since = env.now;
                Download::Tunnel {
                    client_closed: false,
                    upstream_closed: false,
                }
            }
            UpstreamBody::None | UpstreamBody::Length(0) => {
                respond.end();
                Download::Done { keep_alive }
            }
            UpstreamBody::Length(n) => Download::Body {
                incoming: Incoming::Length(n),
                keep_alive,
            },
            UpstreamBody::Chunked => Download::Body {
                incoming: Incoming::Chunked(Box::default()),
                keep_alive,
            },
            UpstreamBody::UntilClose => Download::Body {
                incoming: Incoming::UntilClose,
                keep_alive,
            },
        };
    }

    /// The offload `head` asks for, if the route honors it; `relayed`: the head as the client
    /// would have got it, whose kept lines go along.
    fn offload_of(&self, head: &UpstreamHead, relayed: &ResponseHead) -> Option<Offload> {
        let (kind, (start, end)) = match (head.accel_redirect, head.sendfile) {
            (Some(place), _) if self.offloads.accel_redirect => (OffloadKind::AccelRedirect, place),
            (_, Some(place)) if self.offloads.sendfile => (OffloadKind::Sendfile, place),
            _ => return None,
        };
        let mut headers = Vec::new();
        for (name, value) in relayed.lines() {
            if KEPT_ON_OFFLOAD
                .iter()
                .any(|kept| name.eq_ignore_ascii_case(kept.as_bytes()))
            {
                push_header(&mut headers, name, value);
            }
        }
        Some(Offload {
            kind,
            target: self.from_upstream.data()[start..end].trim_ascii().to_vec(),
            headers,
        })
    }

    /// What the upstream asked to send in its place, after [`Step::Offloaded`].
    pub fn take_offload(&mut self) -> Option<Offload> {
        self.offload.take().map(|offload| *offload)
    }

    /// The upstream closed its side.
    fn upstream_ended(&mut self, respond: &mut impl Respond, env: &mut Env) -> Step {
        match &self.download {
            Download::Head if self.from_upstream.is_empty() => self.lost_upstream(env),
            Download::Head => {
                self.count(env, UpstreamError::BadResponse);
                self.fail_or_abort(Failure::BadGateway)
            }
            // Every byte read so far was relayed in the pump that read it.
            Download::Body {
                incoming: Incoming::UntilClose,
                ..
            } => {
                respond.end();
                self.download = Download::Done { keep_alive: false };
                self.finish_without_reuse()
            }
            Download::Body { .. } => {
                self.count(env, UpstreamError::Reset);
                Step::Abort
            }
            Download::Tunnel { .. } | Download::Done { .. } => self.finish_without_reuse(),
        }
    }

    /// The upstream connection failed (reset, closed, write error).
    fn lost_upstream(&mut self, env: &mut Env) -> Step {
        let pooled = matches!(self.link, Link::Open { pooled: true, .. });
        if !matches!(self.download, Download::Head) || !self.from_upstream.is_empty() {
            if !matches!(self.download, Download::Tunnel { .. }) {
                self.count(env, UpstreamError::Reset);
            }
            return Step::Abort;
        }
        // A pooled connection the upstream closed while it idled: try a fresh one when that
        // cannot send a non-idempotent request twice. (Not an error: keep-alive's known race.)
        if pooled && self.idempotent && !self.trimmed {
            self.tried.remove(self.server);
            return self.retry(Failure::BadGateway, false, env);
        }
        self.fail_server(env, self.server, UpstreamError::Reset);
        Step::Failed {
            failure: Failure::BadGateway,
            request_read: self.request_read(),
        }
    }

    /// Tries another server (or, for a stale pooled connection, a fresh one to the same).
    fn retry(&mut self, failure: Failure, count_failure: bool, env: &mut Env) -> Step {
        if count_failure {
            env.upstreams.list[self.upstream]
                .balancer
                .note_failure(self.server, env.now);
        }
        if let Link::Connecting { stream, .. } | Link::Open { stream, .. } = &mut self.link {
            let _ = env.registry.deregister(stream);
        }
        self.link = Link::Closed;
        if self.trimmed || self.connect_next(env).is_err() {
            return Step::Failed {
                failure,
                request_read: self.request_read(),
            };
        }
        Step::Progress
    }

    /// A deadline passed (the one [`Exchange::deadline`] gave).
    pub fn time_out(&mut self, env: &mut Env) -> Step {
        match (&self.link, &self.download) {
            (Link::Queued { .. }, _) => {
                self.leave_queue(env.upstreams);
                let state = &mut env.upstreams.list[self.upstream];
                state.counters.queue_timeouts += 1;
                // Permits freed no sooner than this while it waited: ask for at least as long.
                let retry_after_secs = state.config.queue_timeout.as_secs().clamp(1, 60);
                Step::Failed {
                    failure: Failure::QueueTimeout { retry_after_secs },
                    request_read: self.request_read(),
                }
            }
            (Link::Connecting { .. }, _) => {
                self.count(env, UpstreamError::ConnectTimeout);
                self.retry(Failure::Timeout, true, env)
            }
            (_, Download::Head) => {
                let error = if self.request_out() {
                    UpstreamError::ReadTimeout
                } else {
                    UpstreamError::SendTimeout
                };
                self.fail_server(env, self.server, error);
                self.fail_or_abort(Failure::Timeout)
            }
            (_, Download::Body { .. }) => {
                self.count(env, UpstreamError::ReadTimeout);
                Step::Abort
            }
            _ => Step::Abort,
        }
    }

    /// Before the client's response started, a failure is answered; after, the response is cut.
    fn fail_or_abort(&self, failure: Failure) -> Step {
        if !matches!(self.download, Download::Head) {
            return Step::Abort;
        }
        Step::Failed {
            failure,
            request_read: self.request_read(),
        }
    }

    /// Bytes both ways after a 101, until both sides have closed.
    fn tunnel(
        &mut self,
        client_in: &mut Input,
        respond: &mut impl Respond,
        env: &mut Env,
        mut progress: bool,
    ) -> Step {
        let Download::Tunnel {
            mut client_closed,
            mut upstream_closed,
        } = self.download
        else {
            return Step::Wait;
        };
        // Client bytes wait in the client's own buffer while the upstream is slow to take them.
        if self.sent == self.to_upstream.len() {
            self.to_upstream.clear();
            self.sent = 0;
        }
        if !client_in.is_empty() && self.to_upstream.len() < UPLOAD_BUFFER_BYTES {
            self.to_upstream.extend_from_slice(client_in.data());
            client_in.consume(client_in.len());
            progress = true;
            if self.send(env).is_err() {
                return Step::Abort;
            }
        }
        if client_in.is_ended()
            && client_in.is_empty()
            && !client_closed
            && self.sent == self.to_upstream.len()
        {
            client_closed = true;
            let _ = self.link.stream().shutdown_write();
        }
        if respond.backlog_bytes() < DOWNLOAD_HIGH_WATER_BYTES && !upstream_closed {
            self.waiting = Waiting::Upstream;
            match self.from_upstream.fill(self.link.stream(), UPSTREAM_INPUT_BYTES) {
                Ok(Filled::Bytes(_)) => progress = true,
                Ok(Filled::Eof) | Err(_) => upstream_closed = true,
                Ok(Filled::Nothing | Filled::Full) => {}
            }
            let data = self.from_upstream.data();
            if !data.is_empty() {
                respond.body(BodyPart::Bytes(data));
                let n = data.len();
                self.from_upstream.consume(n);
            }
        } else if !upstream_closed {
            self.waiting = Waiting::Client;
        }
        self.download = Download::Tunnel {
            client_closed,
            upstream_closed,
        };
        if progress {
            self.since = env.now;
        }
        match (client_closed, upstream_closed) {
            // The upstream is done talking: the client gets what is buffered, then EOF.
            (_, true) => {
                respond.end();
                self.download = Download::Done { keep_alive: false };
                self.finish_without_reuse()
            }
            _ if progress => Step::Progress,
            _ => Step::Wait,
        }
    }

    /// The exchange ended cleanly: pool the upstream connection if it can carry another.
    fn finish(&mut self, keep_alive: bool, env: &mut Env) -> Step {
        // A FIN that came with the response's last bytes announces no later event: a pooled
        // socket would not even be suspect, and a POST sent on it would fail.
        let reusable = keep_alive && self.from_upstream.is_empty() && !self.from_upstream.fin_seen();
        if let Link::Open { stream, .. } = std::mem::replace(&mut self.link, Link::Closed) {
            if reusable {
                env.upstreams.checkin(self.upstream, self.server, stream, env.now);
            } else {
                env.upstreams.retire(stream);
            }
        }
        self.finish_without_reuse()
    }

    fn finish_without_reuse(&self) -> Step {
        let request_read = self.request_read();
        match self.offload {
            Some(_) => Step::Offloaded { request_read },
            None => Step::Done { request_read },
        }
    }
}

/// What a non-blocking connect has come to.
enum Connect {
    Pending,
    Done,
    Failed(UpstreamError),
}

/// Whether the route answers this upstream error with its own page instead of relaying it.
fn intercepted(head: &UpstreamHead, respond: &impl Respond) -> bool {
    head.status >= 400 && respond.intercepts(head.status)
}

/// Starts connecting to `addr` (a TCP connect completes later; a unix one at once, or fails
/// with `WouldBlock` when the app's backlog is full).
fn connect(addr: &Address) -> io::Result<Stream> {
    match addr {
        Address::Tcp(addr) => {
            let stream = TcpStream::connect(*addr)?;
            let _ = stream.set_nodelay(true);
            Ok(Stream::Tcp(stream))
        }
        Address::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
    }
}

/// A refused connection (nothing listens) or another connect failure.
fn connect_error(e: &io::Error) -> UpstreamError {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        UpstreamError::ConnectRefused
    } else {
        UpstreamError::ConnectError
    }
}

#[cfg(test)]
mod tests;
