//! The validated, typed configuration every other module reads.
//!
//! A `Config` is built either from a TOML file ([`load_file`]) or from command-line flags
//! ([`Config::quick`]); once built it is complete: every path is absolute, every root exists,
//! every limit has a value. Nothing downstream re-validates.

pub mod access;
pub mod answer;
pub mod cidr;
mod der;
mod file;
pub mod guard;
pub mod htpasswd;
mod ocsp;
mod run_as;
pub mod tls;
pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::http::request::{tokens, HeadLimits};
use crate::http::respond::ErrorPage;
use answer::Template;
pub use file::{load_file, load_text, ConfigError};
pub use guard::{ConnectionLimit, LimitKey, RequestLimit};
pub use run_as::RunAs;

/// Everything one shoal instance needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of worker processes (and of listening sockets per address).
    pub workers: usize,
    /// Where the master writes its pid, removed on exit.
    pub pid_file: Option<PathBuf>,
    /// Where each worker appends its access log.
    pub access_log: AccessLog,
    /// Where the master and workers write their own log (stderr unless a file is named).
    pub error_log: Option<PathBuf>,
    /// Per-connection and per-request bounds.
    pub limits: Limits,
    /// How the master watches, recycles and restarts workers.
    pub supervisor: Supervisor,
    /// Virtual servers, each with its own listen addresses and routes.
    pub servers: Vec<Server>,
    /// Upstreams that routes proxy to.
    pub upstreams: Vec<Upstream>,
    /// Where the master serves `/metrics` and `/healthz` (`[admin] listen`); off when `None`.
    pub admin: Option<SocketAddr>,
    /// `user` / `group` (or `-U`): who the workers run as; `None`: as the master.
    pub user: Option<RunAs>,
    /// Where and how much proxied bodies spill to disk (`[buffering]`).
    pub buffering: Buffering,
    /// Peers whose `X-Forwarded-For`, `-Proto` and `-Host` are believed (load balancers).
    pub trusted_proxies: Vec<cidr::Cidr>,
    /// How long a TLS session ticket key seals new tickets (`tls_ticket_rotation`); it opens
    /// them for as long again, so a ticket lives at most twice this.
    pub tls_ticket_rotation: Duration,
    /// The response cache every worker shares (`[cache]`); none without the section.
    pub cache: Option<CacheStore>,
}

/// Where the response cache keeps its entries, and how much it may keep (`[cache]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStore {
    /// The directory of the entries; the master makes it (and its 256 subdirectories) and
    /// gives it to the workers' user.
    pub path: PathBuf,
    /// Bytes of entries on disk, at most; the least recently used go first.
    pub max_size_bytes: u64,
}

/// `[cache] max_size` when the config does not set it.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 1 << 30;

/// A route's caching of its upstream's responses (`cache = true` and its companions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    /// Freshness for responses that state none (`cache_ttl`, micro-caching); without it they
    /// are not stored.
    pub ttl: Option<Duration>,
    /// How long past its freshness a stored response may answer while one refresh runs, and
    /// when the upstream fails, unless the response says otherwise.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// How long a request waits for another's fetch of the same key before it goes
    /// upstream itself (`cache_lock_timeout`; nginx's `proxy_cache_lock_timeout`).
    pub lock_timeout: Duration,
}

/// A route's compression of its responses on the fly (`compress = true` and its
/// companions, a route's own over its server's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// The media types compressed (`compress_types`; `http::encoding::DEFAULT_TYPES`).
    pub types: Vec<String>,
    /// Bodies shorter than this go as they are (`compress_min_bytes`), unless the client
    /// refuses `identity`.
    pub min_bytes: u64,
}

/// `compress_min_bytes` when neither the route nor its server sets it.
pub const DEFAULT_COMPRESS_MIN_BYTES: u64 = 1024;

/// `cache_lock_timeout` when the route does not set it.
pub const DEFAULT_CACHE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// `tls_ticket_rotation` when the config does not set it.
pub const DEFAULT_TICKET_ROTATION: Duration = Duration::from_secs(12 * 3600);

/// Spilling proxied bodies to temporary files (the `[buffering]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffering {
    /// Directory of the temporary files (unlinked from birth: `O_TMPFILE`); the workers'
    /// user must be able to write there.
    pub temp_dir: PathBuf,
    /// Most bytes one temporary file holds; past it, the upstream waits for the client.
    pub max_temp_file_bytes: u64,
}

impl Default for Buffering {
    fn default() -> Buffering {
        Buffering {
            temp_dir: std::env::temp_dir(),
            max_temp_file_bytes: 1 << 30,
        }
    }
}

/// Access log destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// No log at all (and no cost).
    Off,
    /// The process's standard output.
    Stdout,
    /// A file opened in append mode.
    File(PathBuf),
}

/// How access log lines are written (per server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// nginx's `combined`: `ADDR - - [DATE] "REQUEST" STATUS BYTES "REFERER" "USER-AGENT"`.
    #[default]
    Combined,
    /// One JSON object per line, with the request id, duration and upstream.
    Json,
}

/// Bounds on what a client may send and how long it may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line plus headers; over it: 431 (414 if the request line alone is over).
    pub max_header_bytes: usize,
    /// Header lines per request; over it: 431.
    pub max_headers: usize,
    /// Request body bytes; over it: 413.
    pub max_body_bytes: u64,
    /// Time to receive a complete request head (and between body reads).
    pub header_timeout: Duration,
    /// Idle time allowed between requests on a persistent connection.
    pub keepalive_timeout: Duration,
    /// A client that takes none of its pending response for this long is dropped.
    pub send_timeout: Duration,
    /// SO_SNDBUF of each client socket (bounds the kernel memory a slow reader pins);
    /// 0 leaves the kernel's autotuning alone.
    pub send_buffer_bytes: usize,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: u32,
    /// Open client connections per worker; when reached the worker stops accepting.
    pub max_connections: usize,
    /// True when the config sets `max_connections`; otherwise the master fits the default to
    /// the open-files limit (at most [`DEFAULT_MAX_CONNECTIONS`]) before the workers start.
    pub max_connections_explicit: bool,
}

pub use crate::http::request::MAX_HEADERS_CEILING;

/// `max_connections` when the config does not set it and the open-files limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Limits {
    /// What the request parser needs of these limits.
    pub fn head(&self) -> HeadLimits {
        HeadLimits {
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            send_buffer_bytes: 0,
            max_requests_per_connection: 1000,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_explicit: false,
        }
    }
}

/// Supervision policy (the `[supervisor]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervisor {
    /// How often a worker's loop reports to the master.
    pub heartbeat_interval: Duration,
    /// No report for this long: the worker is hung (SIGABRT, then SIGKILL).
    pub heartbeat_timeout: Duration,
    /// Resident memory over this recycles the worker; 0 = off.
    pub max_worker_rss_bytes: u64,
    /// Recycle workers older than this (jittered); zero = off.
    pub max_worker_age: Duration,
    /// Recycle after this many requests (jittered); 0 = off.
    pub max_requests: u64,
    /// Drain deadline for stopping or recycled workers, then SIGKILL.
    pub shutdown_timeout: Duration,
    /// Unexpected deaths within `restart_window` tolerated before the master gives up.
    pub restart_limit: u32,
    pub restart_window: Duration,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            max_worker_rss_bytes: 1 << 30,
            max_worker_age: Duration::ZERO,
            max_requests: 0,
            shutdown_timeout: Duration::from_secs(30),
            restart_limit: 10,
            restart_window: Duration::from_secs(60),
        }
    }
}

/// One virtual server: the addresses it listens on and its routes.
#[derive(Debug, Clone)]
pub struct Server {
    /// Addresses bound for this server (one socket per worker slot each; a unix socket is
    /// one for all).
    pub listen: Vec<Address>,
    /// How its requests are written to the access log.
    pub access_log_format: LogFormat,
    /// Routes in precedence order (exact, regex in file order, longest prefix first), so
    /// the first that matches is the one.
    pub routes: Vec<Route>,
    /// Its regex routes' patterns as one set, in route order (none without regex routes).
    pub patterns: Option<regex::RegexSet>,
    /// Host names it answers to on its addresses (none: only as an address's default).
    pub names: Vec<ServerName>,
    /// Takes its addresses' requests whose host no server names (else the first server
    /// listed on the address does).
    pub default: bool,
    /// Header rules for its requests going upstream and its responses (a route's add to and
    /// override these; these alone apply to a response no route made, such as a 404).
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// Request headers whose names hold `_` reach the upstream (nginx's
    /// `underscores_in_headers`). Off by default: CGI-style apps read `X_Real_IP` as the
    /// `X-Real-IP` shoal sets. Never for one that reads as a header shoal sets itself.
    pub underscores_in_headers: bool,
    /// Pages for its error answers (a route's take the place of these for their statuses;
    /// these alone answer requests no route took, and requests that could not be read).
    pub error_pages: ErrorPages,
    /// Its listen addresses where every connection starts with a PROXY protocol header
    /// (`"0.0.0.0:80 proxy_protocol"`; every server sharing the address says so).
    pub proxy_protocol: Vec<Address>,
    /// The mode and owner its unix listen sockets get, where it sets them.
    pub unix_access: Vec<(PathBuf, UnixAccess)>,
    /// `tls`: its addresses speak HTTPS with this certificate (every server sharing them
    /// has one; the client's SNI name picks among them).
    pub tls: Option<tls::Identity>,
    /// `redirect_https` (plain servers): every request is answered with a 301 to the same
    /// host and URI over https, but ACME HTTP-01 challenges, which route as usual.
    pub redirect_https: bool,
    /// `limit_connections`: a client address holding this many connections to the server
    /// (in every worker together) has its next connection's first request answered 503.
    pub limit_connections: Option<ConnectionLimit>,
    /// Its own `limit_requests`: its routes' unless they have their own (sharing its
    /// buckets), and what counts requests no route takes (before their 404).
    pub limit_requests: Option<RequestLimit>,
    /// Its own `allow` / `deny`: its routes' unless they have their own, and what a request
    /// no route takes is checked against (before its 404).
    pub access: Option<access::AccessRules>,
    /// Its own `basic_auth`: its routes' unless they have their own (or `basic_auth = false`),
    /// and what a request no route takes must pass (before its 404).
    pub basic_auth: Option<access::BasicAuth>,
}

/// `error_pages`: the pages that answer error statuses in place of shoal's short text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages {
    pages: Vec<(u16, Arc<ErrorPage>)>,
}

impl ErrorPages {
    pub fn new(pages: Vec<(u16, Arc<ErrorPage>)>) -> ErrorPages {
        ErrorPages { pages }
    }

    pub fn get(&self, status: u16) -> Option<&Arc<ErrorPage>> {
        (self.pages.iter()).find_map(|(of, page)| (*of == status).then_some(page))
    }

    /// These pages with `over`'s in place of any for the same status (a route's over its
    /// server's).
    pub fn with(&self, over: &ErrorPages) -> ErrorPages {
        let mut pages = over.pages.clone();
        pages.extend(
            (self.pages.iter())
                .filter(|(status, _)| over.get(*status).is_none())
                .cloned(),
        );
        ErrorPages { pages }
    }
}

/// `request_headers` / `response_headers`: header lines set (replacing any of that name),
/// added, or removed (`remove` holds lowercase names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub set: Vec<(String, Template)>,
    pub add: Vec<(String, Template)>,
    pub remove: Vec<String>,
}

impl HeaderRules {
    /// These rules with `over`'s on top (a route's over its server's): its `set` replaces a
    /// `set` of the same name; its `add` and `remove` come in addition.
    pub fn with(&self, over: &HeaderRules) -> HeaderRules {
        let mut rules = self.clone();
        for (name, value) in &over.set {
            rules.set.retain(|(kept, _)| !kept.eq_ignore_ascii_case(name));
            rules.set.push((name.clone(), value.clone()));
        }
        rules.add.extend(over.add.iter().cloned());
        rules.remove.extend(
            over.remove
                .iter()
                .filter(|n| !rules.remove.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        rules
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Whether a value names a part of the request (it is filled per request).
    pub fn has_placeholders(&self) -> bool {
        (self.set.iter().chain(&self.add)).any(|(_, value)| value.literal().is_none())
    }

    /// Whether lines named `name` go (they are removed, or `set` replaces them).
    pub fn drops(&self, name: &[u8]) -> bool {
        self.remove
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
            || self
                .set
                .iter()
                .any(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
    }
}

/// A host name a server answers to, lowercase and without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    /// `example.com`: that name.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (held as `example.com`).
    Suffix(String),
    /// `www.example.*`: any name starting with `www.example.` (held as `www.example`).
    Prefix(String),
}

impl ServerName {
    /// Reads a name as written in `names`; None unless it is a host name, optionally with
    /// one `*` label at its start or end.
    pub fn parse(text: &str) -> Option<ServerName> {
        let lower = text.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let plain = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && !s.ends_with('.')
                && !s.contains("..")
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        if let Some(rest) = name.strip_prefix("*.") {
            plain(rest).then(|| ServerName::Suffix(rest.to_string()))
        } else if let Some(rest) = name.strip_suffix(".*") {
            plain(rest).then(|| ServerName::Prefix(rest.to_string()))
        } else {
            plain(name).then(|| ServerName::Exact(name.to_string()))
        }
    }
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerName::Exact(name) => f.write_str(name),
            ServerName::Suffix(rest) => write!(f, "*.{rest}"),
            ServerName::Prefix(rest) => write!(f, "{rest}.*"),
        }
    }
}

/// How a route matches a path: precedence is exact, then regex in file order, then the
/// longest prefix (as nginx's `location =`, `~`, and prefix locations).
#[derive(Debug, Clone)]
pub enum Matching {
    /// `prefix = "/api/"`: paths that start with it.
    Prefix,
    /// `exact = "/favicon.ico"`: that path only.
    Exact,
    /// `regex = "\\.php$"`: paths the pattern finds.
    Regex(regex::Regex),
}

impl Matching {
    /// Which kind of matching it is (two routes of one kind may not share a path).
    pub fn key(&self) -> &'static str {
        match self {
            Matching::Prefix => "prefix",
            Matching::Exact => "exact",
            Matching::Regex(_) => "regex",
        }
    }
}

/// A path (prefix, exact path or pattern) and what serves it.
#[derive(Debug, Clone)]
pub struct Route {
    /// The prefix or exact path this route matches (starts with '/'), or its pattern; its
    /// label in the metrics either way.
    pub prefix: String,
    /// How `prefix` matches.
    pub matching: Matching,
    /// Remove `prefix` from the path before serving it (like nginx's `alias`, or a proxied
    /// `/api/users` reaching the upstream as `/users`).
    pub strip_prefix: bool,
    /// An upstream's `Location` naming the upstream's own address is made relative to the
    /// client's (nginx's `proxy_redirect default`).
    pub rewrite_location: bool,
    /// An upstream's response is read at the upstream's pace, spilling to a temporary file
    /// what a slow client has not taken yet (nginx's `proxy_buffering on`).
    pub response_buffering: bool,
    /// A request body is read whole (memory, then a temporary file) before an upstream is
    /// picked, and sent with a Content-Length (nginx's `proxy_request_buffering on`).
    pub request_buffering: bool,
    /// A client that leaves before its response starts does not cancel the upstream request
    /// (nginx's `proxy_ignore_client_abort`): for requests whose side effects must complete.
    pub ignore_client_abort: bool,
    /// Reached only by an upstream's `X-Accel-Redirect` or `X-Sendfile`, never by a client
    /// (nginx's `internal`).
    pub internal: bool,
    /// An upstream's `X-Accel-Redirect: /path` is served from an internal route.
    pub x_accel_redirect: bool,
    /// An upstream's `X-Sendfile: /absolute/file` is served from the internal route whose
    /// root holds it.
    pub x_sendfile: bool,
    /// The protocols a client may switch to through this route (lowercase; WebSocket by
    /// default). Any other upgrade goes upstream as a plain request.
    pub upgrades: Vec<String>,
    /// The largest request body this route takes, in place of `[limits] max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Its server's header rules with its own on top.
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// Pages for shoal's error answers on this route (its server's included).
    pub error_pages: ErrorPages,
    /// An upstream's error answer that has a page in `error_pages` is answered with that
    /// page instead, with the upstream's status (nginx's `proxy_intercept_errors`).
    pub intercept_errors: bool,
    /// Upstream responses are stored in and answered from the cache (`cache = true`).
    pub cache: Option<RouteCache>,
    /// `limit_requests`: its own, else its server's.
    pub limit_requests: Option<RequestLimit>,
    /// Responses are compressed for clients that accept it (`compress = true`).
    pub compress: Option<Compress>,
    /// `allow` / `deny`: the route's own, else its server's.
    pub access: Option<access::AccessRules>,
    /// `basic_auth`: the route's own, else its server's (none after `basic_auth = false`).
    /// Unless `forward_auth` is on, `request_headers` then removes `Authorization`.
    pub basic_auth: Option<access::BasicAuth>,
    /// What answers requests on this route.
    pub serve: Serve,
}

impl Route {
    /// A route for `prefix` served by `serve`, with every option at its default.
    pub fn new(prefix: &str, serve: Serve) -> Route {
        Route {
            prefix: prefix.to_string(),
            matching: Matching::Prefix,
            strip_prefix: false,
            rewrite_location: true,
            response_buffering: true,
            request_buffering: true,
            ignore_client_abort: false,
            internal: false,
            x_accel_redirect: true,
            x_sendfile: false,
            upgrades: vec!["websocket".to_string()],
            max_body_bytes: None,
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            error_pages: ErrorPages::default(),
            intercept_errors: false,
            cache: None,
            limit_requests: None,
            compress: None,
            access: None,
            basic_auth: None,
            serve,
        }
    }

    /// Whether the values of a request's `Upgrade` header lines name only protocols this
    /// route lets through (a version, as in `websocket/13`, aside), and at least one.
    pub fn allows_upgrade<'a>(&self, values: impl Iterator<Item = &'a [u8]>) -> bool {
        let mut named = values.flat_map(tokens).peekable();
        named.peek().is_some()
            && named.all(|protocol| {
                let name = protocol.split(|&b| b == b'/').next().unwrap_or_default();
                (self.upgrades.iter()).any(|allowed| name.eq_ignore_ascii_case(allowed.as_bytes()))
            })
    }
}

/// What answers a route's requests.
#[derive(Debug, Clone)]
pub enum Serve {
    /// Static files from a directory.
    Files(FileOptions),
    /// The upstream at this index in `Config::upstreams`.
    Proxy(usize),
    /// A redirect, answered at once.
    Redirect(answer::Redirect),
    /// A fixed response.
    Fixed(answer::Fixed),
}

/// How a route serves static files.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Directory whose files are served (absolute).
    pub root: PathBuf,
    /// Files tried, in order, for a directory request.
    pub index: Vec<String>,
    /// `Cache-Control` value added to file responses.
    pub cache_control: Option<String>,
    /// How names starting with '.' are treated.
    pub dotfiles: Dotfiles,
    /// Follow symlinks that point outside the root (off by default).
    pub follow_symlinks: bool,
    /// Upstream (index in `Config::upstreams`) that answers when no file matches (try_files).
    pub fallback: Option<usize>,
    /// Small files without a precompressed sibling are compressed once, as the route's
    /// `compress` says.
    pub compress: Option<Compress>,
}

impl FileOptions {
    /// Serving `root` with default options.
    pub fn new(root: PathBuf) -> FileOptions {
        FileOptions {
            root,
            index: vec!["index.html".to_string()],
            cache_control: None,
            dotfiles: Dotfiles::Deny,
            follow_symlinks: false,
            fallback: None,
            compress: None,
        }
    }
}

/// An upstream: application servers shoal proxies to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its name in the config (`[upstream.NAME]`).
    pub name: String,
    pub servers: Vec<UpstreamServer>,
    pub balance: Balance,
    /// Idle connections kept per worker (all servers together).
    pub keepalive: usize,
    /// An idle pooled connection older than this is closed, not reused.
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    /// No byte from the upstream for this long: 504 (or the response is cut).
    pub read_timeout: Duration,
    /// The upstream accepts no byte for this long: 504.
    pub send_timeout: Duration,
    /// A WebSocket (upgraded) connection idle this long in both directions is closed.
    pub tunnel_timeout: Duration,
    /// Passive health: this many failures within `fail_timeout` mark a server down for
    /// `fail_timeout`.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Active health checks, run once per shoal instance.
    pub health_check: Option<HealthCheck>,
    /// How long a request waits for a server under its `max_conns` before a 503.
    pub queue_timeout: Duration,
}

/// One server of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    pub addr: Address,
    /// Share of requests relative to the other servers (round robin).
    pub weight: u32,
    /// Requests in flight to it from the whole instance, at most (0: no cap).
    pub max_conns: u32,
    /// Gets requests only while no other (primary) server is up.
    pub backup: bool,
}

impl UpstreamServer {
    /// A primary server with weight 1 and no cap.
    pub fn new(addr: impl Into<Address>) -> UpstreamServer {
        UpstreamServer {
            addr: addr.into(),
            weight: 1,
            max_conns: 0,
            backup: false,
        }
    }
}

/// A socket address: TCP, or a unix socket's path (`unix:/run/shoal.sock`), where a server
/// listens or an upstream server answers (an app on the same box: gunicorn, puma).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Address {
    /// Reads `127.0.0.1:8080`, `[::1]:8080` or `unix:/absolute/path`.
    pub fn parse(text: &str) -> Result<Address, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return file::unix_socket_path(path).map(Address::Unix);
        }
        (text.parse().map(Address::Tcp))
            .map_err(|_| format!("`{text}` is not an address like 127.0.0.1:8080 or unix:/run/shoal.sock"))
    }
}

impl std::str::FromStr for Address {
    type Err = String;

    fn from_str(text: &str) -> Result<Address, String> {
        Address::parse(text)
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Who may connect to a unix listen socket: `mode=0660 owner=www-data:www-data` after its
/// path (unset: as created, by the master's umask and user).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnixAccess {
    pub mode: Option<u32>,
    /// uid and gid.
    pub owner: Option<(u32, u32)>,
}

/// How an upstream's server is chosen for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    /// The server with the fewest requests in flight from this worker.
    LeastConn,
    /// A hash of the client address, or of a request header's value, picks the server.
    Hash(HashKey),
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(String),
}

/// Active health checking of an upstream's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path requested with GET; any 2xx or 3xx is healthy.
    pub path: String,
    pub interval: Duration,
    /// A probe that takes longer fails.
    pub timeout: Duration,
    /// Consecutive successes that bring a down server back.
    pub rise: u32,
    /// Consecutive failures that take a server down.
    pub fall: u32,
}

impl Upstream {
    /// An upstream with production defaults for `servers`.
    pub fn new(name: &str, servers: Vec<UpstreamServer>) -> Upstream {
        Upstream {
            name: name.to_string(),
            servers,
            balance: Balance::RoundRobin,
            keepalive: 32,
            keepalive_timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            tunnel_timeout: Duration::from_secs(600),
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            health_check: None,
            queue_timeout: Duration::from_secs(30),
        }
    }

    /// True when a server of it has a `max_conns`: its requests may queue.
    pub fn is_capped(&self) -> bool {
        self.servers.iter().any(|s| s.max_conns > 0)
    }
}

/// Policy for dotfiles (any path segment starting with '.').
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dotfiles {
    /// 403 Forbidden.
    Deny,
    /// 404 Not Found, as if they did not exist.
    Ignore,
    /// Served like any other file.
    Allow,
}

impl Route {
    /// True when `path` (normalized, starting with '/') falls under this route. A route that
    /// strips its prefix matches only at a segment boundary: `/img` takes `/img` and `/img/a`
    /// but not `/img../secret`, which would leave `../secret` (nginx's `alias` traversal).
    pub fn matches(&self, path: &str) -> bool {
        match &self.matching {
            Matching::Prefix => {}
            Matching::Exact => return path == self.prefix,
            Matching::Regex(pattern) => return pattern.is_match(path),
        }
        let Some(rest) = path.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        !self.strip_prefix || self.prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
    }

    /// How the metrics name this route: its prefix, `= PATH` for an exact route, `~ PATTERN`
    /// for a regex one (as nginx writes its locations).
    pub fn label(&self) -> String {
        match self.matching {
            Matching::Prefix => self.prefix.clone(),
            Matching::Exact => format!("= {}", self.prefix),
            Matching::Regex(_) => format!("~ {}", self.prefix),
        }
    }

    /// The part of `path` (normalized, matched by this route) a handler works beneath: the
    /// whole path, or what follows the prefix when the route strips it; no leading '/'.
    pub fn beneath<'a>(&self, path: &'a str) -> &'a str {
        let path = if self.strip_prefix {
            &path[self.prefix.len().min(path.len())..]
        } else {
            path
        };
        path.trim_start_matches('/')
    }
}

/// Default listen address for quick mode and for a server without `listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Worker count when none is configured: one per CPU.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Command-line settings that make up a config without a file (quick mode).
#[derive(Debug, Default, Clone)]
pub struct QuickOptions {
    /// `-l`: addresses; empty means [`DEFAULT_LISTEN`].
    pub listen: Vec<String>,
    /// `-r`: static root; `None` means the current directory.
    pub root: Option<PathBuf>,
    /// `-u`: upstream servers (the reverse proxy issue implements them).
    pub upstreams: Vec<String>,
}

impl Config {
    /// Builds a config from flags alone: one server with one route `/`, serving `root`
    /// (default: the current directory) or proxying to the `-u` servers, or both (a missing
    /// file falls back to the upstream).
    pub fn quick(options: &QuickOptions) -> Result<Config, ConfigError> {
        let listen = if options.listen.is_empty() {
            vec![Address::Tcp(
                DEFAULT_LISTEN.parse().expect("default address parses"),
            )]
        } else {
            options
                .listen
                .iter()
                .map(|text| Address::parse(text).map_err(|why| ConfigError::flag("--listen", &why)))
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut servers = Vec::new();
        for text in &options.upstreams {
            let resolved =
                file::resolve_server(text, 0).map_err(|why| ConfigError::flag("--upstream", &why))?;
            servers.extend(resolved);
        }
        let upstreams = if servers.is_empty() {
            Vec::new()
        } else {
            vec![Upstream::new("default", servers)]
        };
        let serve = match (&options.root, upstreams.is_empty()) {
            (None, false) => Serve::Proxy(0),
            (root, no_upstream) => {
                let root = root.clone().unwrap_or_else(|| PathBuf::from("."));
                let root = file::existing_dir(&root).map_err(|why| ConfigError::flag("--root", &why))?;
                let mut options = FileOptions::new(root);
                options.fallback = (!no_upstream).then_some(0);
                Serve::Files(options)
            }
        };
        Ok(Config {
            workers: default_workers(),
            pid_file: None,
            access_log: AccessLog::Stdout,
            error_log: None,
            limits: Limits::default(),
            supervisor: Supervisor::default(),
            servers: vec![Server {
                listen,
                access_log_format: LogFormat::Combined,
                routes: vec![Route::new("/", serve)],
                patterns: None,
                names: Vec::new(),
                default: false,
                request_headers: HeaderRules::default(),
                response_headers: HeaderRules::default(),
                underscores_in_headers: false,
                error_pages: ErrorPages::default(),
                proxy_protocol: Vec::new(),
                unix_access: Vec::new(),
                tls: None,
                redirect_https: false,
                limit_connections: None,
                limit_requests: None,
                access: None,
                basic_auth: None,
            }],
            upstreams,
            admin: None,
            user: None,
            buffering: Buffering::default(),
            cache: None,
            trusted_proxies: Vec::new(),
            tls_ticket_rotation: DEFAULT_TICKET_ROTATION,
        })
    }

    /// What the request parser needs: `[limits]`, with the largest body any route takes
    /// (each route holds its requests to its own limit once routed).
    pub fn head_limits(&self) -> HeadLimits {
        let routes = self.servers.iter().flat_map(|s| &s.routes);
        HeadLimits {
            max_body_bytes: (routes.filter_map(|r| r.max_body_bytes))
                .fold(self.limits.max_body_bytes, u64::max),
            ..self.limits.head()
        }
    }

    /// Every listen address, once, with the index of its default server: the one marked
    /// `default`, else the first listed on it.
    pub fn listeners(&self) -> Vec<(Address, usize)> {
        let mut listeners: Vec<(Address, usize)> = Vec::new();
        for (index, server) in self.servers.iter().enumerate() {
            for addr in &server.listen {
                match listeners.iter_mut().find(|(seen, _)| seen == addr) {
                    Some(entry) if server.default => entry.1 = index,
                    Some(_) => {}
                    None => listeners.push((addr.clone(), index)),
                }
            }
        }
        listeners
    }

    /// Every listen address, once, in the order the master binds them.
    pub fn listen_addresses(&self) -> Vec<Address> {
        self.listeners().into_iter().map(|(addr, _)| addr).collect()
    }

    /// How logs and metrics name each server, one per server: its first name, with `@` and
    /// its first address when another server's first name is the same (`example.com` on
    /// ports 80 and 8080); none for a server without names, unless another server has none
    /// either (then its first address).
    pub fn server_labels(&self) -> Vec<Option<String>> {
        let first_name = |server: &Server| server.names.first().map(ToString::to_string);
        let named = |name: &str| {
            (self.servers.iter())
                .filter(|s| first_name(s).as_deref() == Some(name))
                .count()
        };
        let unnamed = self.servers.iter().filter(|s| s.names.is_empty()).count();
        (self.servers.iter())
            .map(|server| match first_name(server) {
                Some(name) if named(&name) > 1 => Some(format!("{name}@{}", server.listen[0])),
                Some(name) => Some(name),
                None if unnamed > 1 => Some(server.listen[0].to_string()),
                None => None,
            })
            .collect()
    }

    /// Whether connections to `addr` start with a PROXY protocol header.
    pub fn takes_proxy_protocol(&self, addr: &Address) -> bool {
        (self.servers.iter()).any(|server| server.proxy_protocol.contains(addr))
    }

    /// The mode and owner the unix socket at `path` gets.
    pub fn unix_access(&self, path: &Path) -> UnixAccess {
        (self.servers.iter().flat_map(|server| &server.unix_access))
            .find_map(|(of, access)| (of == path).then_some(*access))
            .unwrap_or_default()
    }

    /// The servers listening on `addr`, its default first.
    pub fn servers_on(&self, addr: &Address) -> Vec<usize> {
        let default = self
            .listeners()
            .into_iter()
            .find(|(seen, _)| seen == addr)
            .map(|(_, s)| s);
        let others =
            (0..self.servers.len()).filter(|&i| Some(i) != default && self.servers[i].listen.contains(addr));
        default.into_iter().chain(others).collect()
    }
}

/// Where a config comes from, kept so the master can build it again on reload.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `-c FILE`, or quick mode from flags.
    pub file: Option<PathBuf>,
    /// Flags for quick mode.
    pub quick: QuickOptions,
    /// `-w`, overriding the file.
    pub workers: Option<usize>,
    /// `--pid-file`, overriding the file.
    pub pid_file: Option<PathBuf>,
    /// `-U USER[:GROUP]`, overriding the file's `user` and `group`.
    pub user: Option<String>,
}

impl Source {
    /// Reads and validates the config from its source, applying flag overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.file {
            Some(path) => {
                let quick = &self.quick;
                if !quick.listen.is_empty() || quick.root.is_some() || !quick.upstreams.is_empty() {
                    return Err(ConfigError::flag(
                        "-c",
                        "-l, -r and -u build a config of their own; put them in the file instead",
                    ));
                }
                load_file(path)?
            }
            None => Config::quick(&self.quick)?,
        };
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        if let Some(pid_file) = &self.pid_file {
            config.pid_file = Some(pid_file.clone());
        }
        if let Some(spec) = &self.user {
            config.user = Some(RunAs::from_flag(spec).map_err(|why| ConfigError::flag("--user", &why))?);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripping_a_prefix_never_leaves_a_parent_segment() {
        let route = |prefix: &str, strip_prefix: bool| Route {
            strip_prefix,
            ..Route::new(prefix, Serve::Proxy(0))
        };
        // (prefix, strip, path, what is opened beneath the root, or None: the route does not match)
        let cases: &[(&str, bool, &str, Option<&str>)] = &[
            ("/", false, "/a/b", Some("a/b")),
            ("/static/", true, "/static/a.css", Some("a.css")),
            ("/static/", true, "/static/", Some("")),
            ("/img", true, "/img", Some("")),
            ("/img", true, "/img/", Some("")),
            ("/img", true, "/img/a.png", Some("a.png")),
            // Found by fuzzing: a stripped "/img" left "../secret" to open beneath the root.
            ("/img", true, "/img../secret", None),
            ("/img", true, "/imgx/a", None),
            ("/img", false, "/img../secret", Some("img../secret")),
        ];
        for &(prefix, strip, path, expected) in cases {
            let route = route(prefix, strip);
            let got = route.matches(path).then(|| route.beneath(path));
            assert_eq!(got, expected, "{prefix} strip={strip} {path}");
        }
    }
}
