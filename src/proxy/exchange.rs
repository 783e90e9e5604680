//! One proxied request: connect (or reuse), send the head and stream the body upstream,
//! read the response head, stream the body back, then pool the connection.
//!
//! Both directions run at once with bounded buffers: the client's input buffer feeds the
//! upstream at most `UPLOAD_BUFFER_BYTES` ahead, and the upstream is read only while the
//! client's output backlog is small, so a slow side slows the other instead of filling memory.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::balance::{hash_key, InFlight, Tried};
use super::forward::{self, Forward};
use super::response::{self, ClientBody, UpstreamBody, UpstreamHead};
use super::Upstreams;
use crate::config::{Balance, HashKey};
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::{Framing, Method, RequestHead, Version};
use crate::http::response::Persistence;
use crate::io::{Buffers, Filled, Input, Output, Transport};
use crate::stats::UpstreamError;

/// Request bytes buffered toward the upstream before the client is read further.
const UPLOAD_BUFFER_BYTES: usize = 64 * 1024;
/// Upstream bytes not yet sent to the client before the upstream is read further.
const DOWNLOAD_HIGH_WATER_BYTES: usize = 64 * 1024;
/// The upstream input buffer's size.
const UPSTREAM_INPUT_BYTES: usize = response::MAX_HEAD_BYTES + 16 * 1024;
/// Interim (1xx) responses accepted before the final one; an upstream sending more is a 502
/// (each one resets the read timeout, so an endless flood would hold the client forever).
const MAX_INTERIM_RESPONSES: u32 = 32;

/// What the client connection hands over to start an exchange.
pub struct Start<'a> {
    pub head: &'a RequestHead,
    pub buf: &'a [u8],
    /// Sent upstream as `X-Request-Id` (the client's own, if sane, or one made by the worker).
    pub request_id: &'a [u8],
    pub peer: SocketAddr,
    pub upstream: usize,
    /// Where the target the upstream sees starts in the raw target (see `Forward`).
    pub target_start: usize,
    pub persistence: Persistence,
    /// Token the upstream socket is registered under (it drives the client connection).
    pub token: Token,
    /// A chunked request body over this is cut off (Content-Length was checked already).
    pub max_body_bytes: u64,
}

/// The worker services an exchange uses.
pub struct Env<'e, 'a> {
    pub upstreams: &'e mut Upstreams<'a>,
    pub registry: &'e Registry,
    /// The worker's spare buffers: an exchange borrows two and gives them back when it ends.
    pub buffers: &'e mut Buffers,
    pub now: Instant,
    pub date: &'e [u8],
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
}

impl Failure {
    pub fn status(self) -> u16 {
        match self {
            Failure::BadGateway => 502,
            Failure::Timeout => 504,
            Failure::BodyTooLarge => 413,
        }
    }
}

/// What one pump achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more can happen until a socket is ready.
    Wait,
    /// Something moved; pump again.
    Progress,
    /// The response went out whole; the client connection continues as `persistence` says.
    Done {
        persistence: Persistence,
        status: u16,
        body_bytes: u64,
    },
    /// Failed before the response started: answer the client with this, then continue
    /// (keep-alive only when the client's request body was fully read).
    Failed { failure: Failure, request_read: bool },
    /// The response was cut (upstream died mid-body, or the client vanished): close the client.
    Abort,
}

/// Where the upstream socket is.
enum Link {
    Connecting(TcpStream),
    Open {
        stream: TcpStream,
        pooled: bool,
    },
    /// Handed back to the pool, or dropped.
    Closed,
}

impl Link {
    /// The upstream socket. Exchanges stop pumping once the link is closed, so the closed
    /// case is never reached; an empty read or write there would only end the exchange.
    fn stream(&mut self) -> &mut TcpStream {
        match self {
            Link::Connecting(stream) | Link::Open { stream, .. } => stream,
            Link::Closed => unreachable!("pumped after the exchange ended"),
        }
    }
}

/// What is left of the request body to move upstream.
enum Upload {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    Done,
}

/// Where the response is.
enum Download {
    Head,
    Body {
        upstream: UpstreamBody,
        client: ClientBody,
        decoder: Option<Box<ChunkedDecoder>>,
        left: u64,
    },
    Tunnel {
        client_closed: bool,
        upstream_closed: bool,
    },
    Done,
}

/// One request in flight to an upstream.
pub struct Exchange {
    upstream: usize,
    server: usize,
    /// Counts this request against `server` for least_conn until the exchange ends.
    in_flight: Option<InFlight>,
    tried: Tried,
    token: Token,
    link: Link,
    method: Method,
    idempotent: bool,
    upgrade: bool,
    client_http11: bool,
    persistence: Persistence,
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
    head: Option<UpstreamHead>,
    /// Interim (1xx) responses dropped so far.
    interim: u32,
    body_bytes: u64,
    pub deadline: Instant,
    /// When the request was routed here (its latency runs until the response head).
    started: Instant,
}

impl Exchange {
    /// Builds the upstream request and starts connecting (or reuses a pooled connection).
    pub fn begin(start: &Start, env: &mut Env) -> Result<Exchange, Failure> {
        let head = start.head;
        let upgrade = head.upgrade;
        let mut to_upstream = env.buffers.output.take();
        to_upstream.clear();
        let forward = Forward {
            head,
            buf: start.buf,
            client_ip: start.peer.ip(),
            target_start: start.target_start,
            upgrade,
            request_id: start.request_id,
        };
        forward::write_head(&forward, &mut to_upstream);
        let config = env.upstreams.list[start.upstream].config;
        let hash_key = match &config.balance {
            Balance::Hash(HashKey::Header(name)) => hash_key(head.field(start.buf, name).unwrap_or_default()),
            Balance::Hash(HashKey::ClientIp) => {
                hash_key(forward::client_ip_text(start.peer.ip(), &mut [0; 48]))
            }
            Balance::RoundRobin | Balance::LeastConn => 0,
        };
        let mut exchange = Exchange {
            upstream: start.upstream,
            server: 0,
            in_flight: None,
            tried: Tried::default(),
            token: start.token,
            link: Link::Closed,
            method: head.method,
            idempotent: matches!(
                head.method,
                Method::Get | Method::Head | Method::Options | Method::Put | Method::Delete
            ),
            upgrade,
            client_http11: head.version == Version::Http11,
            persistence: start.persistence,
            hash_key,
            max_body_bytes: start.max_body_bytes,
            to_upstream,
            sent: 0,
            trimmed: false,
            upload: match head.framing {
                Framing::Empty => Upload::Done,
                Framing::Length(n) => Upload::Length(n),
                Framing::Chunked => Upload::Chunked(Box::default()),
            },
            from_upstream: Input::default(),
            download: Download::Head,
            head: None,
            interim: 0,
            body_bytes: 0,
            deadline: env.now + config.connect_timeout,
            started: env.now,
        };
        exchange.from_upstream.lend(&mut env.buffers.input);
        exchange.connect_next(env)?;
        Ok(exchange)
    }

    /// Gives the exchange's buffers back to the worker's pools; called once it has ended.
    pub fn release(&mut self, buffers: &mut Buffers) {
        self.from_upstream.give_back(&mut buffers.input);
        self.to_upstream.clear();
        buffers.output.give(std::mem::take(&mut self.to_upstream));
    }

    /// Notes a readiness event on the upstream socket (`read_closed`: it carried the FIN).
    pub fn mark_readable(&mut self, read_closed: bool) {
        self.from_upstream.mark_readable(read_closed);
    }

    /// How the client connection continues after this exchange.
    pub fn persistence(&self) -> Persistence {
        self.persistence
    }

    /// The request's method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The address of the server this exchange went to last, once it picked one.
    pub fn server_addr(&self, upstreams: &Upstreams) -> Option<SocketAddr> {
        (!self.tried.is_empty()).then(|| upstreams.list[self.upstream].config.servers[self.server].addr)
    }

    /// The upstream's status, once its head arrived.
    pub fn status(&self) -> Option<u16> {
        self.head.map(|h| h.status)
    }

    /// Picks the next untried server and connects to it (or takes a pooled connection).
    fn connect_next(&mut self, env: &mut Env) -> Result<(), Failure> {
        loop {
            let state = &mut env.upstreams.list[self.upstream];
            let server = state
                .balancer
                .pick(self.hash_key, &self.tried, env.now)
                .ok_or(Failure::BadGateway)?;
            self.tried.insert(server);
            self.server = server;
            self.in_flight = Some(state.balancer.occupy(server));
            self.sent = 0;
            if let Some(idle) = env.upstreams.checkout(self.upstream, server, self.token, env.now) {
                let mut stream = idle.stream;
                let interest = Interest::READABLE | Interest::WRITABLE;
                if idle.token == self.token
                    || env.registry.reregister(&mut stream, self.token, interest).is_ok()
                {
                    self.from_upstream.await_event();
                    self.link = Link::Open { stream, pooled: true };
                    self.deadline = env.now + env.upstreams.list[self.upstream].config.send_timeout;
                    return Ok(());
                }
            }
            let addr = env.upstreams.list[self.upstream].config.servers[server].addr;
            match self.open(addr, env) {
                Ok(stream) => {
                    self.from_upstream.await_event();
                    self.link = Link::Connecting(stream);
                    self.deadline = env.now + env.upstreams.list[self.upstream].config.connect_timeout;
                    return Ok(());
                }
                Err(e) => self.fail_server(env, server, connect_error(&e)),
            }
        }
    }

    fn open(&self, addr: SocketAddr, env: &Env) -> io::Result<TcpStream> {
        let mut stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        env.registry
            .register(&mut stream, self.token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(stream)
    }

    /// Moves everything that can move now, in both directions.
    pub fn pump(
        &mut self,
        client_in: &mut Input,
        client_eof: bool,
        client_out: &mut Output,
        env: &mut Env,
    ) -> Step {
        match &self.link {
            Link::Connecting(stream) => match connect_state(stream) {
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
        let mut progress = match self.take_request_body(client_in) {
            Ok(moved) => moved,
            Err(step) => return step,
        };
        if !matches!(self.upload, Upload::Done) && client_eof && client_in.is_empty() {
            return Step::Abort;
        }
        match self.send(env) {
            Ok(moved) => progress |= moved,
            Err(()) => return self.lost_upstream(env),
        }
        if matches!(self.download, Download::Tunnel { .. }) {
            return self.tunnel(client_in, client_eof, client_out, env, progress);
        }
        if client_out.backlog_bytes() < DOWNLOAD_HIGH_WATER_BYTES {
            match self.from_upstream.fill(self.link.stream(), UPSTREAM_INPUT_BYTES) {
                Ok(Filled::Bytes(_)) => {
                    progress = true;
                    self.deadline = env.now + self.config(env).read_timeout;
                }
                Ok(Filled::Eof) => return self.upstream_ended(client_out, env),
                Ok(Filled::Nothing | Filled::Full) => {}
                Err(_) => return self.lost_upstream(env),
            }
        }
        match self.relay(client_out, env) {
            Ok(moved) => progress |= moved,
            Err(step) => return step,
        }
        if let (Download::Done, Upload::Done) = (&self.download, &self.upload) {
            return self.finish(env);
        }
        if matches!(self.download, Download::Done) {
            // The upstream answered before taking the whole body: the client's remaining body
            // cannot be told from its next request, so its connection closes.
            self.persistence = Persistence::Close;
            self.upload = Upload::Done;
            return self.finish_without_reuse();
        }
        if progress {
            Step::Progress
        } else {
            Step::Wait
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

    fn config<'c>(&self, env: &'c Env) -> &'c crate::config::Upstream {
        env.upstreams.list[self.upstream].config
    }

    fn promote(&mut self) {
        if let Link::Connecting(stream) = std::mem::replace(&mut self.link, Link::Closed) {
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
        let data = client_in.data();
        let used = match &mut self.upload {
            Upload::Done => return Ok(false),
            Upload::Length(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                self.to_upstream.extend_from_slice(&data[..n]);
                *left -= n as u64;
                if *left == 0 {
                    self.upload = Upload::Done;
                }
                n
            }
            Upload::Chunked(decoder) => {
                let out = &mut self.to_upstream;
                let fed = decoder.feed(data, |run| {
                    push_chunk(out, run);
                });
                let feed = fed.map_err(|_| Step::Abort)?;
                if decoder.body_bytes() > self.max_body_bytes {
                    return Err(self.fail_or_abort(Failure::BodyTooLarge));
                }
                if feed.done {
                    self.to_upstream.extend_from_slice(b"0\r\n\r\n");
                    self.upload = Upload::Done;
                }
                feed.consumed
            }
        };
        client_in.consume(used);
        Ok(used > 0)
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
        if moved {
            // Until the whole request is out, the upstream must keep taking it; then answer it.
            let config = self.config(env);
            let request_out = self.sent == self.to_upstream.len() && matches!(self.upload, Upload::Done);
            let wait = if request_out {
                config.read_timeout
            } else {
                config.send_timeout
            };
            self.deadline = env.now + wait;
        }
        // Body bytes that went out need not be kept; a request without a body keeps its head
        // so a stale pooled connection can be retried with it.
        if self.sent == self.to_upstream.len() && !matches!(self.upload, Upload::Done) {
            self.to_upstream.clear();
            self.sent = 0;
            self.trimmed = true;
        }
        Ok(moved)
    }

    /// Parses the response head and relays body bytes to the client.
    fn relay(&mut self, client_out: &mut Output, env: &mut Env) -> Result<bool, Step> {
        let mut moved = false;
        loop {
            match &mut self.download {
                Download::Head => {
                    let was_head = self.method == Method::Head;
                    let head = match response::parse(self.from_upstream.data(), was_head) {
                        Ok(Some(head)) => head,
                        Ok(None) => return Ok(moved),
                        Err(_) => {
                            self.fail_server(env, self.server, UpstreamError::BadResponse);
                            return Err(self.fail_or_abort(Failure::BadGateway));
                        }
                    };
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
                    self.start_response(head, client_out, env);
                }
                Download::Body {
                    upstream,
                    client,
                    decoder,
                    left,
                } => {
                    let data = self.from_upstream.data();
                    if data.is_empty() {
                        return Ok(moved);
                    }
                    let out = client_out.buffer();
                    // (bytes used from the upstream, body bytes relayed, body complete)
                    let (used, relayed, done) = match upstream {
                        UpstreamBody::Length(_) => {
                            let n = (*left).min(data.len() as u64) as usize;
                            out.extend_from_slice(&data[..n]);
                            *left -= n as u64;
                            (n, n, *left == 0)
                        }
                        UpstreamBody::Chunked => {
                            let reframe = *client == ClientBody::Chunked;
                            let decoder = decoder.as_mut().expect("chunked has a decoder");
                            let mut relayed = 0;
                            let fed = decoder.feed(data, |run| {
                                relayed += run.len();
                                if reframe {
                                    push_chunk(out, run);
                                } else {
                                    out.extend_from_slice(run);
                                }
                            });
                            match fed {
                                Ok(feed) => (feed.consumed, relayed, feed.done),
                                Err(_) => {
                                    let counters = &mut env.upstreams.list[self.upstream].counters;
                                    counters.count_error(UpstreamError::BadResponse);
                                    return Err(Step::Abort);
                                }
                            }
                        }
                        UpstreamBody::UntilClose => {
                            if *client == ClientBody::Chunked {
                                push_chunk(out, data);
                            } else {
                                out.extend_from_slice(data);
                            }
                            (data.len(), data.len(), false)
                        }
                        UpstreamBody::None => (0, 0, true),
                    };
                    self.body_bytes += relayed as u64;
                    self.from_upstream.consume(used);
                    moved |= used > 0;
                    if done {
                        if *client == ClientBody::Chunked {
                            client_out.buffer().extend_from_slice(b"0\r\n\r\n");
                        }
                        self.download = Download::Done;
                    }
                }
                Download::Tunnel { .. } | Download::Done => return Ok(moved),
            }
        }
    }

    /// Writes the client's response head and sets up the body relay.
    fn start_response(&mut self, head: UpstreamHead, client_out: &mut Output, env: &mut Env) {
        let state = &mut env.upstreams.list[self.upstream];
        state.balancer.note_success(self.server);
        state
            .counters
            .observe(env.now.saturating_duration_since(self.started));
        if head.status == 101 {
            response::write_client_head(
                self.from_upstream.data(),
                &head,
                ClientBody::None,
                Persistence::Close,
                env.date,
                client_out.buffer(),
            );
            self.from_upstream.consume(head.len);
            self.head = Some(head);
            self.download = Download::Tunnel {
                client_closed: false,
                upstream_closed: false,
            };
            self.deadline = env.now + self.config(env).tunnel_timeout;
            return;
        }
        let client = response::client_body(head.body, self.client_http11);
        if client == ClientBody::UntilClose {
            self.persistence = Persistence::Close;
        }
        response::write_client_head(
            self.from_upstream.data(),
            &head,
            client,
            self.persistence,
            env.date,
            client_out.buffer(),
        );
        self.from_upstream.consume(head.len);
        self.head = Some(head);
        self.download = match head.body {
            UpstreamBody::None => Download::Done,
            UpstreamBody::Length(0) => Download::Done,
            body => Download::Body {
                upstream: body,
                client,
                decoder: (body == UpstreamBody::Chunked).then(Box::default),
                left: if let UpstreamBody::Length(n) = body { n } else { 0 },
            },
        };
    }

    /// The upstream closed its side.
    fn upstream_ended(&mut self, client_out: &mut Output, env: &mut Env) -> Step {
        match &self.download {
            Download::Head if self.from_upstream.is_empty() => self.lost_upstream(env),
            Download::Head => {
                self.count(env, UpstreamError::BadResponse);
                self.fail_or_abort(Failure::BadGateway)
            }
            // Every byte read so far was relayed in the pump that read it.
            Download::Body {
                upstream: UpstreamBody::UntilClose,
                client,
                ..
            } => {
                if *client == ClientBody::Chunked {
                    client_out.buffer().extend_from_slice(b"0\r\n\r\n");
                }
                self.download = Download::Done;
                self.upload = Upload::Done;
                self.finish_without_reuse()
            }
            Download::Body { .. } => {
                self.count(env, UpstreamError::Reset);
                Step::Abort
            }
            Download::Tunnel { .. } | Download::Done => self.finish_without_reuse(),
        }
    }

    /// The upstream connection failed (reset, closed, write error) before a response.
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
            request_read: matches!(self.upload, Upload::Done),
        }
    }

    /// Tries another server (or, for a stale pooled connection, a fresh one to the same).
    fn retry(&mut self, failure: Failure, count_failure: bool, env: &mut Env) -> Step {
        if count_failure {
            env.upstreams.list[self.upstream]
                .balancer
                .note_failure(self.server, env.now);
        }
        if let Link::Connecting(stream) | Link::Open { stream, .. } = &mut self.link {
            let _ = env.registry.deregister(stream);
        }
        self.link = Link::Closed;
        if self.trimmed {
            return Step::Failed {
                failure,
                request_read: matches!(self.upload, Upload::Done),
            };
        }
        match self.connect_next(env) {
            Ok(()) => Step::Progress,
            Err(_) => Step::Failed {
                failure,
                request_read: matches!(self.upload, Upload::Done),
            },
        }
    }

    /// A deadline passed.
    pub fn time_out(&mut self, env: &mut Env) -> Step {
        match (&self.link, &self.download) {
            (Link::Connecting(_), _) => {
                self.count(env, UpstreamError::ConnectTimeout);
                self.retry(Failure::Timeout, true, env)
            }
            (_, Download::Head) => {
                let request_out = self.sent == self.to_upstream.len() && matches!(self.upload, Upload::Done);
                let error = if request_out {
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
        if self.head.is_some() {
            return Step::Abort;
        }
        Step::Failed {
            failure,
            request_read: matches!(self.upload, Upload::Done),
        }
    }

    /// Bytes both ways after a 101, until both sides have closed.
    fn tunnel(
        &mut self,
        client_in: &mut Input,
        client_eof: bool,
        client_out: &mut Output,
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
        if client_eof && client_in.is_empty() && !client_closed && self.sent == self.to_upstream.len() {
            client_closed = true;
            let _ = self.link.stream().shutdown_write();
        }
        if client_out.backlog_bytes() < DOWNLOAD_HIGH_WATER_BYTES && !upstream_closed {
            match self.from_upstream.fill(self.link.stream(), UPSTREAM_INPUT_BYTES) {
                Ok(Filled::Bytes(_)) => progress = true,
                Ok(Filled::Eof) | Err(_) => upstream_closed = true,
                Ok(Filled::Nothing | Filled::Full) => {}
            }
            let data = self.from_upstream.data();
            if !data.is_empty() {
                client_out.buffer().extend_from_slice(data);
                self.body_bytes += data.len() as u64;
                let n = data.len();
                self.from_upstream.consume(n);
            }
        }
        self.download = Download::Tunnel {
            client_closed,
            upstream_closed,
        };
        if progress {
            self.deadline = env.now + self.config(env).tunnel_timeout;
        }
        match (client_closed, upstream_closed) {
            (true, true) => self.finish_without_reuse(),
            // The upstream is done talking: the client gets what is buffered, then EOF.
            (_, true) => Step::Done {
                persistence: Persistence::Close,
                status: 101,
                body_bytes: self.body_bytes,
            },
            _ if progress => Step::Progress,
            _ => Step::Wait,
        }
    }

    /// The exchange ended cleanly: pool the upstream connection if it can carry another.
    fn finish(&mut self, env: &mut Env) -> Step {
        let reusable = self.head.is_some_and(|h| h.keep_alive) && self.from_upstream.is_empty();
        if let (true, Link::Open { stream, .. }) = (reusable, std::mem::replace(&mut self.link, Link::Closed))
        {
            env.upstreams
                .checkin(self.upstream, self.server, stream, self.token, env.now);
        }
        self.finish_without_reuse()
    }

    fn finish_without_reuse(&self) -> Step {
        Step::Done {
            persistence: self.persistence,
            status: self.head.map_or(502, |h| h.status),
            body_bytes: self.body_bytes,
        }
    }
}

/// What a non-blocking connect has come to.
enum Connect {
    Pending,
    Done,
    Failed(UpstreamError),
}

fn connect_state(stream: &TcpStream) -> Connect {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Connect::Failed(connect_error(&e)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Connect::Done,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Connect::Pending,
        Err(e) => Connect::Failed(connect_error(&e)),
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

/// Appends `data` as one chunk of the chunked transfer coding.
fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = data.len();
    loop {
        at -= 1;
        digits[at] = HEX[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_carry_their_length_in_hex() {
        for (data, framed) in [(&b"hello"[..], &b"5\r\nhello\r\n"[..]), (&[7u8; 26][..], &[])] {
            let mut out = Vec::new();
            push_chunk(&mut out, data);
            if framed.is_empty() {
                assert!(out.starts_with(b"1a\r\n") && out.ends_with(b"\r\n") && out.len() == 4 + 26 + 2);
            } else {
                assert_eq!(out, framed);
            }
        }
    }
}
