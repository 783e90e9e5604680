//! The request pipeline: effective host → server → route → request filters → handler →
//! response filters → the client's output. [`Pipeline::handle`] is the whole of it.
//!
//! Handlers (`files/`, `proxy/`) answer through a [`Respond`](crate::http::respond::Respond)
//! sink with a head value and body parts; [`respond::Responder`] is that sink for the
//! client: the response filters, then the framing this client gets, then its output queue.
//! The connection (`worker/conn.rs`) owns the lifecycle around it: reading heads, keep-alive,
//! deadlines, logging, and what the limits keep of it between requests ([`Standing`]).

mod answer;
mod auth;
mod client;
mod compress;
mod filter;
pub mod guard;
mod names;
mod offload;
pub mod request_id;
pub mod respond;
pub mod sites;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::Registry;

pub use crate::cache::Waited;
use crate::cache::{self, Cache, Fill, Lookup};
use crate::config::answer::Parts;
use crate::config::cidr::Cidr;
use crate::config::{Address, Config, Server};
use crate::files::{Answer, FileRequest, StaticFiles};
use crate::http::encoding;
use crate::http::request::{self, Method, RequestHead};
use crate::http::respond::respond_simple;
use crate::http::target;
use crate::io::{Buffers, Input, SpillDir};
use crate::proxy::{Env, Exchange, Offloads, Preconditions, Start, Step, Upstreams};
use crate::shared::Shared;
use crate::stats::{CacheEvent, GuardEvent, NO_ROUTE};
use filter::{Check, FilterState, RequestFilter, Subject};
pub use guard::Standing;
use guard::{Admission, ConnectionLimit, Guards};
use offload::Replay;
use request_id::{RequestId, RequestIds};
use respond::{Reply, Responder};
use sites::{Handler, Route, Site, Sites};

/// One request as the connection hands it over.
pub struct Request<'a> {
    pub head: &'a RequestHead,
    /// The buffer the head's slices point into.
    pub buf: &'a [u8],
    pub peer: SocketAddr,
    /// Index of the worker's listener the connection came in on.
    pub listener: usize,
    /// The connection's key in its worker (an upstream socket's events drive it).
    pub conn: usize,
    /// It came over TLS.
    pub secure: bool,
    /// The name the client asked for in its TLS handshake (SNI), if any.
    pub sni: Option<&'a str>,
    /// Whether it waited for another request's fetch of its cache key.
    pub waited: Waited,
}

/// Where a request went: what its access log line and counters need.
#[derive(Debug)]
pub struct Routed {
    /// The server (index in the config) that took the request.
    pub server: usize,
    /// The client's address: the peer's, or the one a trusted proxy forwarded for.
    pub client: IpAddr,
    /// The route's index in the response counters ([`NO_ROUTE`] when none matched).
    pub counted_as: usize,
    /// The request's id, when one was needed on the way (it goes upstream).
    pub request_id: Option<RequestId>,
    /// A proxied request whose client leaves before the response starts is still answered
    /// by its upstream (the route's `ignore_client_abort`).
    pub ignore_client_abort: bool,
    /// What an upstream's offloaded file needs of the request, kept on servers with internal
    /// routes.
    pub replay: Option<Box<Replay>>,
    /// The request's host and target, kept for a proxied response on servers whose header
    /// rules name them.
    pub parts: Option<Box<KeptParts>>,
    /// The upstream's answer may be stored in the cache (a caching route's miss).
    pub fill: Option<Box<Fill>>,
}

/// The parts of a request placeholders name, kept beyond the request's buffer.
#[derive(Debug, Clone)]
pub struct KeptParts {
    host: Option<Vec<u8>>,
    target: Vec<u8>,
    secure: bool,
}

impl Routed {
    /// What the placeholders of the response's header rules are filled from (on servers
    /// that have any).
    fn parts<'s>(&'s self, sites: &'s Sites) -> Option<Parts<'s>> {
        self.parts
            .as_deref()
            .map(|kept| kept.parts(sites.site(self.server).config))
    }
}

/// Answers from the cache's stale entry, if it may stand in for an upstream that failed with
/// `status`: true if it did. (The fill alone: the rest of `Routed` may be borrowed.)
fn answer_stale(fill: &mut Option<Box<Fill>>, status: u16, respond: &mut Responder) -> bool {
    fill.as_deref_mut()
        .is_some_and(|fill| fill.answer_stale_on_error(status, respond))
}

impl KeptParts {
    fn parts<'s>(&'s self, server: &'s Server) -> Parts<'s> {
        Parts {
            host: self.host.as_deref(),
            target: &self.target,
            server,
            secure: self.secure,
        }
    }
}

/// What a request's trip through the pipeline came to.
// Short-lived: the exchange moves straight into the connection's boxed phase (one
// allocation per proxied request, not two).
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The response is whole in the client's output.
    Answered(Routed),
    /// An upstream answers: the connection pumps the exchange until it ends.
    Proxying(Routed, Exchange),
    /// The request waits: the connection keeps it (in its input) and hands it over again
    /// as the [`Wait`] says. Nothing was answered or counted.
    Wait(Wait),
}

/// What a request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Another request is fetching the cache entry this one wants: it is handed over again
    /// shortly, for at most this long (its lock timeout), then with `waited_out`.
    Entry(Duration),
    /// Its turn under its route's `limit_requests` (`delay = true`), which comes at this
    /// instant: it is handed over again then. Its bucket counted it already; the
    /// connection's [`Standing`] says so, and it is not counted again.
    Turn(Instant),
}

/// A worker's handlers and what they need: servers and routes, static roots, upstreams.
pub struct Pipeline<'c> {
    pub sites: Sites<'c>,
    pub files: StaticFiles,
    pub upstreams: Upstreams<'c>,
    /// Where upstream sockets are registered (they drive their client's connection).
    pub registry: Registry,
    /// Makes the ids of requests that come without a usable `X-Request-Id`.
    pub ids: RequestIds,
    /// Where responses spill for routes that buffer them (none: the directory is unusable,
    /// and every response waits for its client, as with `response_buffering = false`).
    spill: Option<SpillDir>,
    max_body_bytes: u64,
    /// Peers whose forwarded client address is believed.
    trusted_proxies: &'c [Cidr],
    /// The response cache (`[cache]`), for routes with `cache = true`.
    cache: Option<Cache>,
    /// What request filters keep between requests (verified credentials), and what the
    /// limits on clients did.
    filter_state: FilterState,
}

impl<'c> Pipeline<'c> {
    /// The pipeline of `config` for worker `slot`, whose listener `i` listens on
    /// `listeners[i]`; `shared`: the instance's shared state and this worker's seat in it,
    /// which capped upstreams need; `instance`: the shared state the cache keeps its counts
    /// and the limits their tables in (a config with limits and no instance gets one of its
    /// own: tests).
    pub fn new(
        config: &'c Config,
        listeners: &[Address],
        registry: Registry,
        slot: usize,
        shared: Option<(&'static Shared, usize)>,
        instance: Option<&'static Shared>,
        now: Instant,
    ) -> std::io::Result<Pipeline<'c>> {
        let guards = match instance {
            Some(shared) => shared,
            None => Shared::create()?,
        };
        let (sites, roots) =
            Sites::new(config, listeners, &Guards::new(guards)).map_err(std::io::Error::other)?;
        let buffering = &config.buffering;
        let spill = match SpillDir::open(&buffering.temp_dir, buffering.max_temp_file_bytes) {
            Ok(dir) => Some(dir),
            Err(e) => {
                log::warn!(
                    "worker {slot} cannot make temporary files in {} ({e}): proxied responses \
                     wait for their clients instead of spilling",
                    buffering.temp_dir.display()
                );
                None
            }
        };
        Ok(Pipeline {
            sites,
            files: StaticFiles::open(&roots)?,
            upstreams: Upstreams::new(&config.upstreams, now, shared).map_err(std::io::Error::other)?,
            registry,
            ids: RequestIds::new(slot),
            spill,
            max_body_bytes: config.limits.max_body_bytes,
            trusted_proxies: &config.trusted_proxies,
            cache: config
                .cache
                .as_ref()
                .map(|store| Cache::new(store, instance.map(cache_counts))),
            filter_state: FilterState::default(),
        })
    }

    /// What the limits on clients did in this worker, in `stats::GuardEvent::ALL` order.
    pub fn guard_events(&self) -> [u64; GuardEvent::ALL.len()] {
        self.filter_state.limit_events
    }

    /// What the response cache did in this worker, in `stats::CacheEvent::ALL` order.
    pub fn cache_events(&self) -> [u64; CacheEvent::ALL.len()] {
        self.cache
            .as_ref()
            .map_or([0; CacheEvent::ALL.len()], Cache::events)
    }

    /// Takes `request` from its host to its handler, which answers through `reply`;
    /// `standing`: what the limits keep of its connection.
    pub fn handle(
        &mut self,
        request: &Request,
        standing: &mut Standing,
        reply: Reply,
        now: Instant,
        buffers: &mut Buffers,
    ) -> Outcome {
        let (head, buf) = (request.head, request.buf);
        let host = sites::effective_host(head, buf);
        let site = self.sites.server_for(request.listener, host);
        let mut routed = Routed {
            server: site.index,
            client: client::client_ip(request.peer.ip(), head, buf, self.trusted_proxies),
            counted_as: NO_ROUTE,
            request_id: None,
            ignore_client_abort: false,
            replay: None,
            parts: None,
            fill: None,
        };
        let target = head.target.of(buf);
        let url = target::resolve_target(target);
        let route = url.as_ref().ok().and_then(|url| site.route(&url.path));
        let parts = Parts {
            host,
            target,
            server: site.config,
            secure: request.secure,
        };
        let spill = self.spill.as_ref();
        let mut respond = responder(reply, site, route, spill, Some(parts));
        let admission = match &site.connection_limit {
            Some(limit) => limit.admit(routed.client, standing),
            None => {
                ConnectionLimit::forget(standing);
                Admission::Counted
            }
        };
        match admission {
            Admission::Counted => {}
            Admission::Uncounted => self.filter_state.count(GuardEvent::ConnectionUncounted),
            Admission::Over => {
                self.filter_state.count(GuardEvent::ConnectionRefused);
                respond.close_after();
                return refuse(503, &mut respond, routed);
            }
        }
        if self.answered_before_routes(request, site, url.as_ref().ok(), &parts, &mut respond) {
            return Outcome::Answered(routed);
        }
        let (Ok(url), Some(route)) = (&url, route) else {
            // A body over `[limits]` is refused as the parser used to (a route may allow more).
            let too_large = body_over(head, self.max_body_bytes);
            // The server's guards hold for paths it has no route for: a refused client learns
            // nothing of which exist.
            if !too_large && url.is_ok() {
                let subject = Subject {
                    request,
                    client: routed.client,
                    now,
                };
                let state = &mut self.filter_state;
                match run(&site.request_filters, &subject, state, standing, &mut respond) {
                    Check::Pass => {}
                    check => return stopped(check, routed),
                }
            }
            let status = match (too_large, url.is_err()) {
                (true, _) => 413,
                (false, true) => 400,
                (false, false) => 404,
            };
            return refuse(status, &mut respond, routed);
        };
        routed.counted_as = route.counted_as;
        routed.ignore_client_abort = route.config.ignore_client_abort;
        let max_body_bytes = route.config.max_body_bytes.unwrap_or(self.max_body_bytes);
        if body_over(head, max_body_bytes) {
            return refuse(413, &mut respond, routed);
        }
        let subject = Subject {
            request,
            client: routed.client,
            now,
        };
        let state = &mut self.filter_state;
        match run(&route.request_filters, &subject, state, standing, &mut respond) {
            Check::Pass => {}
            check => return stopped(check, routed),
        }
        let collect_body = route.buffers_requests && self.spill.is_some();
        let (upstream, target_start) = match &route.handler {
            Handler::Redirect(redirect) => {
                answer::redirect(redirect, &parts, &mut respond);
                return Outcome::Answered(routed);
            }
            Handler::Fixed(fixed) => {
                answer::fixed(fixed, &mut respond);
                return Outcome::Answered(routed);
            }
            Handler::Files { root, options } => {
                let file = FileRequest {
                    head,
                    buf,
                    path: &url.path,
                    relative: route.config.beneath(&url.path),
                    root: *root,
                    options,
                };
                match self.files.serve(&file, &mut respond, now) {
                    Answer::Served => return Outcome::Answered(routed),
                    // The path goes as sent; an absolute-form target loses its scheme and
                    // authority (it routed, so it has an origin form).
                    Answer::Fallback(upstream) => (upstream, target::origin_start(target).unwrap_or(0)),
                }
            }
            Handler::Proxy { upstream } => match route.upstream_target_start(target, &url.path) {
                Some(start) => (*upstream, start),
                None => return refuse(400, &mut respond, routed),
            },
        };
        // The upstream's answer, or the cache's, is compressed if the client accepts it.
        if route.config.compress.is_some() {
            let accepted = head.field(buf, "accept-encoding");
            respond.offer_compression(encoding::choose(accepted, &encoding::CODINGS));
        }
        let caching = route.config.cache.as_ref().zip(self.cache.as_ref());
        if let Some((rules, cache)) = caching.filter(|_| matches!(head.method, Method::Get | Method::Head)) {
            match cache.lookup(rules, head, buf, (request.secure, host), request.waited) {
                Lookup::Hit(found, status) => {
                    cache::answer(found, head, buf, status, &mut respond);
                    return Outcome::Answered(routed);
                }
                Lookup::Wait(lock_timeout) => return Outcome::Wait(Wait::Entry(lock_timeout)),
                Lookup::Forward(fill) => routed.fill = Some(fill),
                // Answered now; the exchange that follows only refreshes the entry.
                Lookup::Refresh(found, status, fill) => {
                    cache::answer(found, head, buf, status, &mut respond);
                    routed.fill = Some(fill);
                }
            }
        }
        routed.request_id = Some(self.ids.pick(head.field(buf, "x-request-id")));
        let offloads = Offloads {
            accel_redirect: route.config.x_accel_redirect,
            sendfile: route.config.x_sendfile,
        };
        if offloads != Offloads::default() && site.has_internal_routes() {
            routed.replay = Some(Box::new(Replay::of(head, buf)));
        }
        if site.response_rules_fill {
            routed.parts = Some(Box::new(KeptParts {
                host: host.map(<[u8]>::to_vec),
                target: target.to_vec(),
                secure: request.secure,
            }));
        }
        let start = Start {
            head,
            buf,
            request_id: routed.request_id.as_ref().map_or(b"", RequestId::as_bytes),
            peer: request.peer,
            client: routed.client,
            trusted_peer: client::is_trusted(request.peer.ip(), self.trusted_proxies),
            upstream,
            target_start,
            conn: request.conn,
            max_body_bytes,
            collect_body,
            offloads,
            upgrade: head.upgrade && route.config.allows_upgrade(head.fields_named(buf, "upgrade")),
            underscores_in_headers: site.config.underscores_in_headers,
            request_headers: &route.config.request_headers,
            parts: Some(parts),
            preconditions: routed
                .fill
                .as_deref()
                .map_or(Preconditions::Client, preconditions),
        };
        let mut env = Env {
            upstreams: &mut self.upstreams,
            registry: &self.registry,
            buffers,
            spill: self.spill.as_ref(),
            now,
        };
        match Exchange::begin(&start, &mut env) {
            Ok(exchange) => Outcome::Proxying(routed, exchange),
            Err(failure) if answer_stale(&mut routed.fill, failure.status(), &mut respond) => {
                Outcome::Answered(routed)
            }
            Err(failure) => refuse(failure.status(), &mut respond, routed),
        }
    }

    /// Answers what a server answers before its routes, and says whether it did: a 421 to a
    /// request whose Host names another server than its TLS handshake did; the redirect of
    /// `redirect_https` (but to ACME challenges).
    fn answered_before_routes(
        &self,
        request: &Request,
        site: &Site,
        url: Option<&target::UrlPath>,
        parts: &Parts,
        respond: &mut Responder,
    ) -> bool {
        let sni_server =
            (request.sni).map(|sni| self.sites.server_for(request.listener, Some(sni.as_bytes())));
        if parts.host.is_some() && sni_server.is_some_and(|sni| sni.index != site.index) {
            respond_simple(respond, 421, &[]);
            return true;
        }
        let challenge = url.is_some_and(|url| url.path.starts_with("/.well-known/acme-challenge/"));
        match &site.https_redirect {
            Some(redirect) if !challenge => {
                answer::redirect(redirect, parts, respond);
                true
            }
            _ => false,
        }
    }

    /// Moves the exchange of the request `routed` along; its response goes through `reply`.
    pub fn pump(
        &mut self,
        exchange: &mut Exchange,
        routed: &mut Routed,
        client_in: &mut Input,
        reply: Reply,
        now: Instant,
        buffers: &mut Buffers,
    ) -> Step {
        let site = self.sites.site(routed.server);
        let route = self.sites.counted_as(routed.counted_as);
        // Field by field: the fill is borrowed apart from the parts.
        let parts = routed.parts.as_deref().map(|kept| kept.parts(site.config));
        let mut respond = responder(reply, site, route, self.spill.as_ref(), parts);
        let mut env = Env {
            upstreams: &mut self.upstreams,
            registry: &self.registry,
            buffers,
            spill: self.spill.as_ref(),
            now,
        };
        let step = match routed.fill.as_deref_mut() {
            Some(fill) => exchange.pump(client_in, &mut fill.tee(&mut respond), &mut env),
            None => exchange.pump(client_in, &mut respond, &mut env),
        };
        match step {
            // The app asked for a file to be sent in its place: its answer is that file's
            // (unless the client has its answer already, from the cache).
            Step::Offloaded { request_read } => {
                let answered = routed.fill.as_ref().is_some_and(|fill| fill.in_background());
                if let Some(offload) = exchange.take_offload().filter(|_| !answered) {
                    offload::serve(
                        &self.sites,
                        &mut self.files,
                        routed,
                        &offload,
                        respond.into_reply(),
                        now,
                    );
                }
                Step::Done { request_read }
            }
            step => step,
        }
    }

    /// Answers the request `routed` with `status` (its exchange failed), through its route's
    /// filters and error pages.
    pub fn answer_failure(&self, routed: &mut Routed, reply: Reply, status: u16, extra: &[(&str, &[u8])]) {
        let site = self.sites.site(routed.server);
        let route = self.sites.counted_as(routed.counted_as);
        let parts = routed.parts.as_deref().map(|kept| kept.parts(site.config));
        let mut respond = responder(reply, site, route, None, parts);
        if !answer_stale(&mut routed.fill, status, &mut respond) {
            respond_simple(&mut respond, status, extra);
        }
    }

    /// Answers a request that could not be read with `status`, as its address's default
    /// server `server` would (its header rules and error pages).
    pub fn answer_unreadable(&self, server: usize, reply: Reply, status: u16) {
        let mut respond = responder(reply, self.sites.site(server), None, None, None);
        respond_simple(&mut respond, status, &[]);
    }

    /// Acts on an exchange's passed deadline: retry, fail or cut.
    pub fn time_out(&mut self, exchange: &mut Exchange, now: Instant, buffers: &mut Buffers) -> Step {
        let mut env = Env {
            upstreams: &mut self.upstreams,
            registry: &self.registry,
            buffers,
            spill: self.spill.as_ref(),
            now,
        };
        exchange.time_out(&mut env)
    }
}

/// The way to the client for a response of `route`, or of `site` when no route took the
/// request: the filters, error pages, spilling (routes that buffer) and placeholders' parts.
fn responder<'r>(
    reply: Reply<'r>,
    site: &'r Site<'r>,
    route: Option<&'r Route<'r>>,
    spill: Option<&'r SpillDir>,
    parts: Option<Parts<'r>>,
) -> Responder<'r> {
    let filters = route.map_or(&site.response_filters[..], |r| &r.response_filters);
    let spill = route.filter(|r| r.buffers_responses).and(spill);
    let pages = route.map_or(&site.config.error_pages, |r| &r.config.error_pages);
    let intercept = route.is_some_and(|r| r.config.intercept_errors);
    Responder::new(reply, filters, spill)
        .with_parts(parts)
        .with_pages(pages, intercept)
        .with_compress(route.and_then(|r| r.config.compress.as_ref()))
}

/// What goes upstream for a request whose answer the cache may store: a GET asks for the
/// whole response, or revalidates the stale entry the cache holds; a HEAD goes as it is.
fn preconditions(fill: &Fill) -> Preconditions<'_> {
    match fill.validators() {
        _ if !fill.stores() => Preconditions::Client,
        Some(stored) => Preconditions::Revalidate {
            etag: stored.etag,
            last_modified: stored.last_modified,
        },
        None => Preconditions::Whole,
    }
}

/// The cache's counts in the instance's shared state.
fn cache_counts(instance: &'static Shared) -> cache::Counts {
    cache::Counts {
        bytes: instance.cache_bytes(),
        purges: instance.cache_purges(),
    }
}

/// Whether `head` announces a body longer than `limit`.
fn body_over(head: &RequestHead, limit: u64) -> bool {
    matches!(head.framing, request::Framing::Length(n) if n > limit)
}

/// Runs `filters` on the request in `subject` until one answers it or has it wait.
fn run(
    filters: &[RequestFilter],
    subject: &Subject,
    state: &mut FilterState,
    standing: &mut Standing,
    respond: &mut Responder,
) -> Check {
    (filters.iter())
        .map(|filter| filter.check(subject, state, standing, respond))
        .find(|check| *check != Check::Pass)
        .unwrap_or(Check::Pass)
}

/// The outcome of a request a filter stopped: answered, or waiting for its turn.
fn stopped(check: Check, routed: Routed) -> Outcome {
    match check {
        Check::Wait(turn) => Outcome::Wait(Wait::Turn(turn)),
        Check::Pass | Check::Answered => Outcome::Answered(routed),
    }
}

/// Answers with an error status before any handler did.
fn refuse(status: u16, respond: &mut Responder, routed: Routed) -> Outcome {
    respond_simple(respond, status, &[]);
    Outcome::Answered(routed)
}
