//! Loading a TOML config file into a [`Config`], with errors that name file, line and column.
//!
//! The raw structs mirror the file exactly (unknown keys are rejected by serde); `build`
//! turns them into the typed config, resolving relative paths against the file's directory.

use std::cmp::Reverse;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::access::{AccessRules, BasicAuth};
use super::answer::{Fixed, Redirect, Template, REDIRECT_STATUSES};
use super::cidr::Cidr;
use super::guard::{self, ConnectionLimit, RawRequestLimit, RequestLimit};
use super::htpasswd::Htpasswd;
use super::run_as::{self, RunAs};
use super::tls::Identity;
use super::units::{Size, Span};
use super::{
    default_workers, AccessLog, Address, Balance, Buffering, CacheStore, Compress, Config, Dotfiles,
    ErrorPages, FileOptions, HashKey, HeaderRules, HealthCheck, Limits, LogFormat, Matching, Route,
    RouteCache, Serve, Server, ServerName, Supervisor, UnixAccess, Upstream, UpstreamServer,
    DEFAULT_CACHE_LOCK_TIMEOUT, DEFAULT_CACHE_MAX_SIZE, DEFAULT_COMPRESS_MIN_BYTES, DEFAULT_TICKET_ROTATION,
    MAX_HEADERS_CEILING,
};
use crate::http::encoding;
use crate::http::request::is_token_byte;
use crate::http::respond::ErrorPage;
use crate::shared::{MAX_CONNECTIONS_PER_CLIENT, MAX_CONNS};

/// A config that cannot be used, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `FILE:LINE:COL`, or the flag or file name when there is no position.
    pub location: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl ConfigError {
    /// An error in a command-line flag.
    pub fn flag(flag: &str, message: &str) -> ConfigError {
        ConfigError {
            location: flag.to_string(),
            message: message.to_string(),
        }
    }

    fn at(path: &Path, text: &str, span: Option<Range<usize>>, message: String) -> ConfigError {
        let location = match span {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!("{}:{line}:{col}", path.display())
            }
            None => path.display().to_string(),
        };
        // toml says nothing at all for some syntax errors (`key =` at the end of the file).
        let message = match message.lines().map(str::trim).find(|line| !line.is_empty()) {
            Some(line) => line.to_string(),
            None => "invalid TOML syntax".to_string(),
        };
        ConfigError { location, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workers: Option<Spanned<i64>>,
    pid_file: Option<String>,
    access_log: Option<String>,
    /// Default for every server's `access_log_format`.
    access_log_format: Option<LogFormat>,
    error_log: Option<String>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    supervisor: RawSupervisor,
    #[serde(default)]
    server: Vec<Spanned<RawServer>>,
    #[serde(default)]
    upstream: std::collections::BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    buffering: RawBuffering,
    trusted_proxies: Option<Vec<Spanned<String>>>,
    tls_ticket_rotation: Option<Spanned<Span>>,
    cache: Option<Spanned<RawCache>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    path: Option<Spanned<String>>,
    max_size: Option<Spanned<Size>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBuffering {
    temp_dir: Option<Spanned<String>>,
    max_temp_file_bytes: Option<Spanned<Size>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    servers: Vec<Spanned<String>>,
    balance: Option<Spanned<String>>,
    hash_key: Option<Spanned<String>>,
    keepalive: Option<Spanned<i64>>,
    keepalive_timeout: Option<Span>,
    connect_timeout: Option<Spanned<Span>>,
    read_timeout: Option<Spanned<Span>>,
    send_timeout: Option<Spanned<Span>>,
    tunnel_timeout: Option<Spanned<Span>>,
    max_fails: Option<Spanned<i64>>,
    fail_timeout: Option<Span>,
    health_check: Option<Spanned<RawHealthCheck>>,
    max_conns: Option<Spanned<i64>>,
    queue_timeout: Option<Spanned<Span>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    path: Spanned<String>,
    interval: Option<Spanned<Span>>,
    timeout: Option<Spanned<Span>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Option<Spanned<Size>>,
    max_headers: Option<Spanned<i64>>,
    max_body_bytes: Option<Size>,
    header_timeout: Option<Spanned<Span>>,
    keepalive_timeout: Option<Span>,
    send_timeout: Option<Spanned<Span>>,
    send_buffer_bytes: Option<Spanned<Size>>,
    max_requests_per_connection: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    heartbeat_interval: Option<Spanned<Span>>,
    heartbeat_timeout: Option<Spanned<Span>>,
    max_worker_rss: Option<Size>,
    max_worker_age: Option<Span>,
    max_requests: Option<Spanned<i64>>,
    shutdown_timeout: Option<Span>,
    restart_limit: Option<Spanned<i64>>,
    restart_window: Option<Spanned<Span>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Vec<Spanned<String>>>,
    names: Option<Vec<Spanned<String>>>,
    default: Option<Spanned<bool>>,
    access_log_format: Option<LogFormat>,
    #[serde(default)]
    underscores_in_headers: bool,
    request_headers: Option<Spanned<RawHeaderRules>>,
    response_headers: Option<Spanned<RawHeaderRules>>,
    error_pages: Option<RawErrorPages>,
    tls: Option<Spanned<RawTls>>,
    redirect_https: Option<Spanned<bool>>,
    hsts: Option<Spanned<String>>,
    limit_requests: Option<Spanned<RawRequestLimit>>,
    limit_connections: Option<Spanned<i64>>,
    compress: Option<bool>,
    compress_types: Option<Vec<Spanned<String>>>,
    compress_min_bytes: Option<Size>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    deny: Option<Vec<Spanned<String>>>,
    basic_auth: Option<Spanned<toml::Value>>,
    forward_auth: Option<Spanned<bool>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

/// `compress = true` and its companions, on a server (for its routes) or a route.
struct RawCompress<'r> {
    compress: Option<bool>,
    types: Option<&'r Vec<Spanned<String>>>,
    min_bytes: Option<Size>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
    ocsp: Option<Spanned<String>>,
}

/// `error_pages = { 502 = "errors/502.html" }`: status to file.
type RawErrorPages = std::collections::BTreeMap<String, Spanned<String>>;

/// Bounds of `tls_ticket_rotation`.
const MIN_TICKET_ROTATION: Duration = Duration::from_secs(1);
const MAX_TICKET_ROTATION: Duration = Duration::from_secs(84 * 3600);

/// The largest error page read: a page is held in memory and sent whole.
const MAX_ERROR_PAGE_BYTES: u64 = 1 << 20;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHeaderRules {
    #[serde(default)]
    set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    add: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Which way header rules go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Toward {
    Upstream,
    Client,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Option<Spanned<String>>,
    exact: Option<Spanned<String>>,
    regex: Option<Spanned<String>>,
    root: Option<Spanned<String>>,
    upstream: Option<Spanned<String>>,
    fallback: Option<Spanned<String>>,
    #[serde(default)]
    strip_prefix: bool,
    rewrite_location: Option<bool>,
    response_buffering: Option<bool>,
    request_buffering: Option<bool>,
    #[serde(default)]
    ignore_client_abort: bool,
    internal: Option<Spanned<bool>>,
    x_accel_redirect: Option<bool>,
    #[serde(default)]
    x_sendfile: bool,
    upgrade: Option<Vec<Spanned<String>>>,
    redirect: Option<Spanned<RawRedirect>>,
    respond: Option<Spanned<RawRespond>>,
    max_body_bytes: Option<Size>,
    request_headers: Option<Spanned<RawHeaderRules>>,
    response_headers: Option<Spanned<RawHeaderRules>>,
    error_pages: Option<RawErrorPages>,
    intercept_errors: Option<Spanned<bool>>,
    cache: Option<Spanned<bool>>,
    cache_ttl: Option<Spanned<Span>>,
    stale_while_revalidate: Option<Spanned<Span>>,
    stale_if_error: Option<Spanned<Span>>,
    cache_lock_timeout: Option<Spanned<Span>>,
    limit_requests: Option<Spanned<RawRequestLimit>>,
    index: Option<Vec<Spanned<String>>>,
    cache_control: Option<String>,
    dotfiles: Option<Dotfiles>,
    #[serde(default)]
    follow_symlinks: bool,
    compress: Option<bool>,
    compress_types: Option<Vec<Spanned<String>>>,
    compress_min_bytes: Option<Size>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    deny: Option<Vec<Spanned<String>>>,
    basic_auth: Option<Spanned<toml::Value>>,
    forward_auth: Option<Spanned<bool>>,
}

impl RawRoute {
    /// Which of `prefix`, `exact` and `regex` the route has, and its text; when not exactly
    /// one, the keys it has.
    fn path(&self) -> Result<(&'static str, &Spanned<String>), String> {
        let keys = [
            ("prefix", &self.prefix),
            ("exact", &self.exact),
            ("regex", &self.regex),
        ];
        let given: Vec<(&'static str, &Spanned<String>)> = keys
            .iter()
            .filter_map(|(key, text)| text.as_ref().map(|t| (*key, t)))
            .collect();
        match given.as_slice() {
            [one] => Ok(*one),
            [] => Err("none".to_string()),
            many => Err(many
                .iter()
                .map(|(key, _)| format!("`{key}`"))
                .collect::<Vec<_>>()
                .join(" and ")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    to: Spanned<String>,
    status: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRespond {
    status: Option<Spanned<i64>>,
    #[serde(default)]
    body: String,
    content_type: Option<Spanned<String>>,
}

/// Reads, parses and validates the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        location: path.display().to_string(),
        message: format!("cannot read config: {e}"),
    })?;
    load_text(path, &text)
}

/// Parses and validates `text` as if read from the file at `path` (which locates errors and
/// anchors relative paths); the file itself is not read.
pub fn load_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let message = hint_misplaced_key(text, e.span(), e.message());
        ConfigError::at(path, text, e.span(), message)
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let users_files = std::cell::RefCell::default();
    Builder {
        path,
        text,
        base,
        users_files,
    }
    .build(raw)
}

/// Keys that exist only at the top level of the file.
const TOP_LEVEL_KEYS: [&str; 9] = [
    "workers",
    "trusted_proxies",
    "tls_ticket_rotation",
    "pid_file",
    "access_log",
    "access_log_format",
    "error_log",
    "user",
    "group",
];

/// TOML puts every key after a `[table]` header into that table, so a top-level key written
/// below `[limits]` is an unknown field of `[limits]`: say so, and where it belongs.
fn hint_misplaced_key(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key);
    let (Some(key), Some(span)) = (unknown, span) else {
        return message.to_string();
    };
    if !TOP_LEVEL_KEYS.contains(&key) {
        return message.to_string();
    }
    let before = &text[..span.start.min(text.len())];
    let table = before
        .lines()
        .map(str::trim)
        .rfind(|line| line.starts_with('['))
        .map(|header| header.split('#').next().unwrap_or(header).trim())
        .unwrap_or("a table");
    format!(
        "`{key}` is a top-level key, but here it falls into {table}: top-level keys must come \
         before the first [table] (move it above)"
    )
}

/// Converts raw values into a [`Config`], locating each error in the file.
struct Builder<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
    /// The users files `basic_auth` read, each once per load (so every route naming a file
    /// sees one version of it).
    users_files: std::cell::RefCell<Vec<Arc<Htpasswd>>>,
}

impl Builder<'_> {
    fn fail<T>(&self, span: Range<usize>, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError::at(self.path, self.text, Some(span), message.into()))
    }

    fn count(&self, value: &Spanned<i64>, key: &str, range: Range<i64>) -> Result<i64, ConfigError> {
        let n = *value.get_ref();
        if range.contains(&n) {
            Ok(n)
        } else {
            self.fail(
                value.span(),
                format!(
                    "{key} must be between {} and {}, not {n}",
                    range.start,
                    range.end - 1
                ),
            )
        }
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let workers = match &raw.workers {
            Some(w) => self.count(w, "workers", 1..1025)? as usize,
            None => default_workers(),
        };
        let access_log = match raw.access_log.as_deref() {
            None | Some("stdout") => AccessLog::Stdout,
            Some("off") => AccessLog::Off,
            Some(path) => AccessLog::File(self.base.join(path)),
        };
        let error_log = match raw.error_log.as_deref() {
            None | Some("stderr") => None,
            Some(path) => Some(self.base.join(path)),
        };
        let limits = self.limits(raw.limits)?;
        let supervisor = self.supervisor(raw.supervisor)?;
        if raw.server.is_empty() {
            return Err(ConfigError::at(
                self.path,
                self.text,
                None,
                "no [[server]] section: at least one is required".into(),
            ));
        }
        let mut upstreams = Vec::new();
        for (name, upstream) in &raw.upstream {
            upstreams.push(self.upstream(name, upstream)?);
        }
        let mut servers = Vec::new();
        let mut seen: Vec<Address> = Vec::new();
        for server in &raw.server {
            let mut built = self.server(server, &mut seen, &upstreams)?;
            built.access_log_format = server
                .get_ref()
                .access_log_format
                .or(raw.access_log_format)
                .unwrap_or_default();
            servers.push(built);
        }
        self.check_shared_addresses(&raw.server, &servers)?;
        let admin = raw
            .admin
            .listen
            .as_ref()
            .map(|text| self.admin(text, &seen))
            .transpose()?;
        let user = self.run_as(raw.user.as_ref(), raw.group.as_ref())?;
        let buffering = self.buffering(&raw.buffering)?;
        let mut trusted_proxies = Vec::new();
        for text in raw.trusted_proxies.iter().flatten() {
            let cidr = Cidr::parse(text.get_ref())
                .or_else(|why| self.fail(text.span(), format!("trusted_proxies: {why}")))?;
            trusted_proxies.push(cidr);
        }
        let tls_ticket_rotation = match &raw.tls_ticket_rotation {
            Some(span) => self.ticket_rotation(span)?,
            None => DEFAULT_TICKET_ROTATION,
        };
        let cache = raw
            .cache
            .as_ref()
            .map(|cache| self.cache_store(cache))
            .transpose()?;
        if cache.is_none() {
            let caching = raw
                .server
                .iter()
                .flat_map(|s| &s.get_ref().route)
                .find_map(|r| r.get_ref().cache.as_ref());
            if let Some(on) = caching.filter(|on| *on.get_ref()) {
                return self.fail(
                    on.span(),
                    "cache = true needs a `[cache]` section with its `path`",
                );
            }
        }
        Ok(Config {
            workers,
            pid_file: raw.pid_file.map(|p| self.base.join(p)),
            access_log,
            error_log,
            limits,
            supervisor,
            servers,
            upstreams,
            admin,
            user,
            buffering,
            trusted_proxies,
            tls_ticket_rotation,
            cache,
        })
    }

    /// `[cache]`: `path` is required; the master makes the directory if it is not there, so
    /// only its parent must exist.
    fn cache_store(&self, raw: &Spanned<RawCache>) -> Result<CacheStore, ConfigError> {
        let Some(path) = &raw.get_ref().path else {
            return self.fail(raw.span(), "[cache] needs `path`, the directory of its entries");
        };
        let full = self.base.join(path.get_ref());
        let parent = full.parent().unwrap_or(Path::new("/"));
        let parent = existing_dir(parent).or_else(|why| self.fail(path.span(), format!("path: {why}")))?;
        if full.exists() && !full.is_dir() {
            return self.fail(
                path.span(),
                format!("path: `{}` is not a directory", full.display()),
            );
        }
        let name = full.file_name().map(|name| parent.join(name)).unwrap_or(parent);
        let max_size_bytes = raw
            .get_ref()
            .max_size
            .as_ref()
            .map_or(DEFAULT_CACHE_MAX_SIZE, |size| size.get_ref().0);
        if max_size_bytes == 0 {
            let span = raw.get_ref().max_size.as_ref().map_or(raw.span(), Spanned::span);
            return self.fail(
                span,
                "max_size must be more than 0 (leave `cache` off the routes instead)",
            );
        }
        Ok(CacheStore {
            path: name,
            max_size_bytes,
        })
    }

    /// `tls_ticket_rotation`: at least a second; at most 84 hours, since a ticket lives up
    /// to twice the period and TLS 1.3 allows a ticket 7 days at most (RFC 8446, 4.6.1).
    fn ticket_rotation(&self, span: &Spanned<Span>) -> Result<Duration, ConfigError> {
        let period = span.get_ref().0;
        if !(MIN_TICKET_ROTATION..=MAX_TICKET_ROTATION).contains(&period) {
            return self.fail(
                span.span(),
                "tls_ticket_rotation must be between 1s and 84h (a ticket lives up to twice it, \
                 and TLS 1.3 allows 7 days)",
            );
        }
        Ok(period)
    }

    /// `[buffering]`: the temporary directory must exist (whether the workers may write
    /// there, `shoal check` and the workers themselves tell).
    fn buffering(&self, raw: &RawBuffering) -> Result<Buffering, ConfigError> {
        let mut buffering = Buffering::default();
        if let Some(dir) = &raw.temp_dir {
            buffering.temp_dir = existing_dir(&self.base.join(dir.get_ref()))
                .or_else(|why| self.fail(dir.span(), format!("temp_dir: {why}")))?;
        }
        if let Some(size) = &raw.max_temp_file_bytes {
            buffering.max_temp_file_bytes = size.get_ref().0;
        }
        Ok(buffering)
    }

    /// `user` and `group`: resolved to ids now, so a typo fails `shoal check`.
    fn run_as(
        &self,
        user: Option<&Spanned<String>>,
        group: Option<&Spanned<String>>,
    ) -> Result<Option<RunAs>, ConfigError> {
        let Some(user) = user else {
            return match group {
                Some(group) => self.fail(group.span(), "group goes with user"),
                None => Ok(None),
            };
        };
        if let Some(group) = group {
            run_as::lookup_group(group.get_ref()).or_else(|why| self.fail(group.span(), why))?;
        }
        let group = group.map(|g| g.get_ref().as_str());
        RunAs::resolve(user.get_ref(), group)
            .map(Some)
            .or_else(|why| self.fail(user.span(), why))
    }

    /// `[admin] listen`: an address no server listens on.
    fn admin(&self, text: &Spanned<String>, servers: &[Address]) -> Result<SocketAddr, ConfigError> {
        let Ok(addr) = text.get_ref().parse::<SocketAddr>() else {
            let why = format!(
                "[admin] listen: `{}` is not an address like 127.0.0.1:9090",
                text.get_ref()
            );
            return self.fail(text.span(), why);
        };
        if servers.contains(&Address::Tcp(addr)) {
            return self.fail(
                text.span(),
                format!("[admin] listen: {addr} is already used by a server"),
            );
        }
        Ok(addr)
    }

    fn limits(&self, raw: RawLimits) -> Result<Limits, ConfigError> {
        let mut limits = Limits::default();
        if let Some(size) = raw.max_header_bytes {
            if !(1024..=1 << 20).contains(&size.get_ref().0) {
                return self.fail(size.span(), "max_header_bytes must be between 1KiB and 1MiB");
            }
            limits.max_header_bytes = size.get_ref().0 as usize;
        }
        if let Some(n) = &raw.max_headers {
            limits.max_headers = self.count(n, "max_headers", 1..MAX_HEADERS_CEILING as i64 + 1)? as usize;
        }
        if let Some(size) = raw.max_body_bytes {
            limits.max_body_bytes = size.0;
        }
        if let Some(span) = raw.header_timeout {
            if span.get_ref().0.is_zero() {
                return self.fail(span.span(), "header_timeout must be more than 0");
            }
            limits.header_timeout = span.get_ref().0;
        }
        if let Some(span) = raw.keepalive_timeout {
            limits.keepalive_timeout = span.0;
        }
        if let Some(span) = raw.send_timeout {
            if span.get_ref().0.is_zero() {
                return self.fail(span.span(), "send_timeout must be more than 0");
            }
            limits.send_timeout = span.get_ref().0;
        }
        if let Some(size) = raw.send_buffer_bytes {
            let bytes = size.get_ref().0;
            if bytes != 0 && !(4096..=1 << 30).contains(&bytes) {
                return self.fail(
                    size.span(),
                    "send_buffer_bytes must be 0 (kernel default) or between 4KiB and 1GiB",
                );
            }
            limits.send_buffer_bytes = bytes as usize;
        }
        if let Some(n) = &raw.max_requests_per_connection {
            limits.max_requests_per_connection =
                self.count(n, "max_requests_per_connection", 1..u32::MAX as i64)? as u32;
        }
        if let Some(n) = &raw.max_connections {
            limits.max_connections = self.count(n, "max_connections", 1..1_000_001)? as usize;
            limits.max_connections_explicit = true;
        }
        Ok(limits)
    }

    fn supervisor(&self, raw: RawSupervisor) -> Result<Supervisor, ConfigError> {
        let mut sup = Supervisor::default();
        let positive = |value: &Spanned<Span>, key: &str| {
            if value.get_ref().0.is_zero() {
                self.fail(value.span(), format!("{key} must be more than 0"))
            } else {
                Ok(value.get_ref().0)
            }
        };
        if let Some(v) = &raw.heartbeat_interval {
            sup.heartbeat_interval = positive(v, "heartbeat_interval")?;
        }
        if let Some(v) = &raw.heartbeat_timeout {
            sup.heartbeat_timeout = positive(v, "heartbeat_timeout")?;
            if sup.heartbeat_timeout < sup.heartbeat_interval * 2 {
                return self.fail(
                    v.span(),
                    "heartbeat_timeout must be at least twice heartbeat_interval",
                );
            }
        }
        if let Some(size) = raw.max_worker_rss {
            sup.max_worker_rss_bytes = size.0;
        }
        if let Some(span) = raw.max_worker_age {
            sup.max_worker_age = span.0;
        }
        if let Some(n) = &raw.max_requests {
            sup.max_requests = self.count(n, "max_requests", 0..i64::MAX)? as u64;
        }
        if let Some(span) = raw.shutdown_timeout {
            sup.shutdown_timeout = span.0;
        }
        if let Some(n) = &raw.restart_limit {
            sup.restart_limit = self.count(n, "restart_limit", 0..1_000_001)? as u32;
        }
        if let Some(v) = &raw.restart_window {
            sup.restart_window = positive(v, "restart_window")?;
        }
        Ok(sup)
    }

    fn server(
        &self,
        raw: &Spanned<RawServer>,
        seen: &mut Vec<Address>,
        upstreams: &[Upstream],
    ) -> Result<Server, ConfigError> {
        let server = raw.get_ref();
        let request_headers = self.header_rules(server.request_headers.as_ref(), Toward::Upstream)?;
        let mut response_headers = self.header_rules(server.response_headers.as_ref(), Toward::Client)?;
        let error_pages = self.error_pages(server.error_pages.as_ref())?;
        let redirect_https = server.redirect_https.as_ref().is_some_and(|r| *r.get_ref());
        if let (Some(_), true, Some(key)) = (&server.tls, redirect_https, &server.redirect_https) {
            return self.fail(
                key.span(),
                "redirect_https goes on a plain server (this one has `tls`)",
            );
        }
        if let Some(hsts) = &server.hsts {
            if server.tls.is_none() {
                return self.fail(
                    hsts.span(),
                    "hsts goes with `tls` (browsers ignore it over plain HTTP)",
                );
            }
            let value = hsts.get_ref();
            let odd = |b: u8| b.is_ascii_control() || b == b'{';
            if !value.to_ascii_lowercase().starts_with("max-age=") || value.bytes().any(odd) {
                let why = format!("hsts: `{value}` is not a Strict-Transport-Security value (max-age=SECONDS; includeSubDomains)");
                return self.fail(hsts.span(), why);
            }
            (response_headers.set).push(("Strict-Transport-Security".to_string(), Template::text(value)));
        }
        let mut listen = Vec::new();
        let mut proxy_protocol = Vec::new();
        let mut unix_access = Vec::new();
        for text in server.listen.iter().flatten() {
            let mut words = text.get_ref().split_whitespace();
            let addr = Address::parse(words.next().unwrap_or_default())
                .or_else(|why| self.fail(text.span(), format!("listen: {why}")))?;
            let mut access = UnixAccess::default();
            for option in words {
                let unix = matches!(addr, Address::Unix(_));
                match option.split_once('=') {
                    None if option == "proxy_protocol" => proxy_protocol.push(addr.clone()),
                    Some(("mode", mode)) if unix => match u32::from_str_radix(mode, 8) {
                        Ok(mode) if mode <= 0o777 => access.mode = Some(mode),
                        _ => {
                            let why = format!("listen: mode `{mode}` is not an octal mode like 0660");
                            return self.fail(text.span(), why);
                        }
                    },
                    Some(("owner", owner)) if unix => match RunAs::from_flag(owner) {
                        Ok(owner) => access.owner = Some((owner.uid, owner.gid)),
                        Err(why) => return self.fail(text.span(), format!("listen: owner: {why}")),
                    },
                    _ => {
                        let why = format!(
                            "listen: `{option}` is not an option of an address (proxy_protocol; \
                             on a unix socket also mode=0660 and owner=USER[:GROUP])"
                        );
                        return self.fail(text.span(), why);
                    }
                }
            }
            if listen.contains(&addr) {
                return self.fail(text.span(), format!("listen: {addr} is listed twice"));
            }
            if !seen.contains(&addr) {
                seen.push(addr.clone());
            }
            if let (Address::Unix(path), true) = (&addr, access != UnixAccess::default()) {
                unix_access.push((path.clone(), access));
            }
            listen.push(addr);
        }
        if listen.is_empty() {
            return self.fail(raw.span(), "server has no listen address");
        }
        if server.route.is_empty() {
            return self.fail(raw.span(), "server has no [[server.route]]");
        }
        let access = self.access(server.allow.as_ref(), server.deny.as_ref())?;
        let basic_auth = match &server.basic_auth {
            Some(raw) => self.basic_auth(raw, false)?,
            None => None,
        };
        let mut routes: Vec<Route> = Vec::new();
        for route in &server.route {
            let mut built = self.route(route, upstreams)?;
            built.request_headers = request_headers.with(&built.request_headers);
            built.response_headers = response_headers.with(&built.response_headers);
            built.error_pages = error_pages.with(&built.error_pages);
            let raw = route.get_ref();
            let compress = [
                (
                    server.compress,
                    server.compress_types.as_ref(),
                    server.compress_min_bytes,
                ),
                (raw.compress, raw.compress_types.as_ref(), raw.compress_min_bytes),
            ]
            .map(|(compress, types, min_bytes)| RawCompress {
                compress,
                types,
                min_bytes,
            });
            built.compress = self.compress(&compress[0], &compress[1])?;
            if let Serve::Files(options) = &mut built.serve {
                options.compress = built.compress.clone();
            }
            self.guards(route.get_ref(), server, &mut built, (&access, &basic_auth))?;
            let same = |r: &Route| r.prefix == built.prefix && r.matching.key() == built.matching.key();
            if routes.iter().any(same) {
                let (key, path) = route.get_ref().path().expect("a built route has its path");
                return self.fail(path.span(), format!("{key} `{}` is routed twice", built.prefix));
            }
            routes.push(built);
        }
        // Exact routes, then regexes in file order (a stable sort), then the longest prefix
        // first: the first route that matches is the one to take.
        routes.sort_by_key(|route| match route.matching {
            Matching::Exact => (0, Reverse(0)),
            Matching::Regex(_) => (1, Reverse(0)),
            Matching::Prefix => (2, Reverse(route.prefix.len())),
        });
        // Workers match a server's patterns together: they must fit one RegexSet.
        let patterns: Vec<&str> = (routes.iter())
            .filter(|r| matches!(r.matching, Matching::Regex(_)))
            .map(|r| r.prefix.as_str())
            .collect();
        let patterns = match patterns.is_empty() {
            true => None,
            false => Some(regex::RegexSet::new(patterns).or_else(|e| {
                let why = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                self.fail(raw.span(), format!("this server's regex routes together: {why}"))
            })?),
        };
        let mut names = Vec::new();
        for text in server.names.iter().flatten() {
            let Some(name) = ServerName::parse(text.get_ref()) else {
                let why = format!(
                    "names: `{}` is not a host name (example.com, *.example.com or www.example.*)",
                    text.get_ref()
                );
                return self.fail(text.span(), why);
            };
            if names.contains(&name) {
                return self.fail(text.span(), format!("names: `{name}` is listed twice"));
            }
            names.push(name);
        }
        // What names the server's limits in the shared memory, the same at every reload
        // that keeps its addresses and names.
        let scope = format!(
            "server {} names {}",
            (listen.iter().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join(","),
            (names.iter().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join(",")
        );
        let server_limit = (server.limit_requests.as_ref())
            .map(|raw| self.request_limit(raw, scope.clone()))
            .transpose()?;
        for route in &mut routes {
            let label = route.label();
            match &mut route.limit_requests {
                Some(own) => own.scope = format!("{scope} route {label}"),
                None if route.internal => {}
                None => route.limit_requests.clone_from(&server_limit),
            }
        }
        let limit_connections = match &server.limit_connections {
            Some(max) => Some(ConnectionLimit {
                max: self.count(
                    max,
                    "limit_connections",
                    1..i64::from(MAX_CONNECTIONS_PER_CLIENT) + 1,
                )? as u32,
                scope,
            }),
            None => None,
        };
        Ok(Server {
            listen,
            access_log_format: LogFormat::default(),
            routes,
            patterns,
            names,
            default: server.default.as_ref().is_some_and(|d| *d.get_ref()),
            request_headers,
            response_headers,
            underscores_in_headers: server.underscores_in_headers,
            error_pages,
            proxy_protocol,
            unix_access,
            tls: server.tls.as_ref().map(|tls| self.tls(tls)).transpose()?,
            redirect_https,
            limit_connections,
            limit_requests: server_limit,
            access,
            basic_auth,
        })
    }

    /// A route's `allow` / `deny` and `basic_auth`: its own in place of its server's
    /// (`server_guards`), and `Authorization` kept from its upstream unless `forward_auth`.
    fn guards(
        &self,
        raw: &RawRoute,
        server: &RawServer,
        route: &mut Route,
        server_guards: (&Option<AccessRules>, &Option<BasicAuth>),
    ) -> Result<(), ConfigError> {
        let (server_access, server_auth) = server_guards;
        route.access = match self.access(raw.allow.as_ref(), raw.deny.as_ref())? {
            Some(own) => Some(own),
            None => server_access.clone(),
        };
        route.basic_auth = match &raw.basic_auth {
            Some(own) => self.basic_auth(own, true)?,
            None => server_auth.clone(),
        };
        let forward = raw.forward_auth.as_ref().or(server.forward_auth.as_ref());
        if let (Some(forward), None) = (forward, &route.basic_auth) {
            let on_route = raw.forward_auth.is_some();
            let own_table = |r: &Spanned<RawRoute>| {
                (r.get_ref().basic_auth.as_ref()).is_some_and(|a| a.get_ref().is_table())
            };
            let any_route_auth = server.route.iter().any(own_table);
            if on_route || (server_auth.is_none() && !any_route_auth) {
                let why = "forward_auth goes with basic_auth (on the route or its server)";
                return self.fail(forward.span(), why);
            }
        }
        let forwarded = forward.is_some_and(|f| *f.get_ref());
        let rules = &mut route.request_headers;
        if route.basic_auth.is_some() && !forwarded && !rules.drops(b"authorization") {
            rules.remove.push("authorization".to_string());
        }
        Ok(())
    }

    /// `allow` and `deny` (CIDR ranges or addresses), when either is given. An empty
    /// `allow` would refuse everyone: it is refused, saying what to write instead.
    fn access(
        &self,
        allow: Option<&Spanned<Vec<Spanned<String>>>>,
        deny: Option<&Vec<Spanned<String>>>,
    ) -> Result<Option<AccessRules>, ConfigError> {
        if allow.is_none() && deny.is_none() {
            return Ok(None);
        }
        let ranges = |key: &str, list: &[Spanned<String>]| {
            let mut ranges = Vec::with_capacity(list.len());
            for text in list {
                let cidr = Cidr::parse(text.get_ref())
                    .or_else(|why| self.fail(text.span(), format!("{key}: {why}")))?;
                ranges.push(cidr);
            }
            Ok(ranges)
        };
        let allow = match allow {
            Some(list) if list.get_ref().is_empty() => {
                let why = "allow = [] would refuse every client: write deny = [\"0.0.0.0/0\", \"::/0\"] \
                           for that, or deny = [] to lift a server's rules on a route";
                return self.fail(list.span(), why);
            }
            Some(list) => Some(ranges("allow", list.get_ref())?),
            None => None,
        };
        let deny = ranges("deny", deny.map_or(&[][..], Vec::as_slice))?;
        Ok(Some(AccessRules { allow, deny }))
    }

    /// `basic_auth = { realm = "staging", users = "htpasswd" }` (the users file read now,
    /// relative to the config's directory), or on a route `basic_auth = false` (`None`: its
    /// server's is off there).
    fn basic_auth(
        &self,
        raw: &Spanned<toml::Value>,
        on_route: bool,
    ) -> Result<Option<BasicAuth>, ConfigError> {
        let span = raw.span();
        let table = match raw.get_ref() {
            toml::Value::Boolean(false) if on_route => return Ok(None),
            toml::Value::Table(table) => table,
            toml::Value::Boolean(true) => return self.fail(
                span,
                "basic_auth = true: say whose, as basic_auth = { realm = \"staging\", users = \"htpasswd\" }",
            ),
            _ if on_route => {
                return self.fail(
                    span,
                    "basic_auth is { realm = \"...\", users = \"FILE\" }, or false to turn the server's off",
                )
            }
            _ => return self.fail(span, "basic_auth is { realm = \"...\", users = \"FILE\" }"),
        };
        if let Some(key) = table
            .keys()
            .find(|key| !["realm", "users"].contains(&key.as_str()))
        {
            return self.fail(
                span,
                format!("basic_auth: unknown key `{key}` (it has `realm` and `users`)"),
            );
        }
        let text = |key: &str| match table.get(key) {
            Some(toml::Value::String(text)) => Ok(text.as_str()),
            Some(_) => self.fail(span.clone(), format!("basic_auth: `{key}` is a string")),
            None => self.fail(span.clone(), format!("basic_auth needs `{key}`")),
        };
        let realm = text("realm")?;
        if realm.is_empty() || realm.chars().any(char::is_control) {
            return self.fail(
                span,
                "basic_auth: `realm` is a non-empty text without control characters",
            );
        }
        let path = self.base.join(text("users")?);
        let loaded = self
            .users_files
            .borrow()
            .iter()
            .find(|f| f.path() == path)
            .cloned();
        let users = match loaded {
            Some(users) => users,
            None => {
                let users = Htpasswd::load(&path)
                    .map(Arc::new)
                    .or_else(|why| self.fail(span.clone(), format!("basic_auth: users: {why}")))?;
                self.users_files.borrow_mut().push(Arc::clone(&users));
                users
            }
        };
        Ok(Some(BasicAuth {
            realm: realm.to_string(),
            users,
        }))
    }

    /// Servers sharing an address: one `default` at most, no name claimed twice, and none
    /// that could get no request (no names, and not the default).
    fn check_shared_addresses(
        &self,
        raw: &[Spanned<RawServer>],
        servers: &[Server],
    ) -> Result<(), ConfigError> {
        for (i, server) in servers.iter().enumerate() {
            for (j, earlier) in servers[..i].iter().enumerate() {
                let line = line_col(self.text, raw[j].span().start).0;
                let shared = server.listen.iter().filter(|a| earlier.listen.contains(a));
                // What the options on a listen entry say: the PROXY protocol, a socket's
                // access; and whether the servers on it speak TLS.
                let options = |s: &Server, addr: &Address| {
                    let access = match addr {
                        Address::Unix(path) => s.unix_access.iter().find(|(p, _)| p == path).map(|a| a.1),
                        Address::Tcp(_) => None,
                    };
                    (s.proxy_protocol.contains(addr), access, s.tls.is_some())
                };
                if let Some(addr) = shared.clone().find(|a| options(server, a) != options(earlier, a)) {
                    let why = format!(
                        "listen: {addr} is shared with the server at line {line}: both give it \
                         the same options (proxy_protocol, mode, owner) and both have `tls` or neither"
                    );
                    let names_it = |text: &&Spanned<String>| {
                        let first = text.get_ref().split_whitespace().next().unwrap_or_default();
                        Address::parse(first).as_ref() == Ok(addr)
                    };
                    let listed = raw[i].get_ref().listen.iter().flatten().find(names_it);
                    return self.fail(listed.map_or(raw[i].span(), Spanned::span), why);
                }
                let Some(addr) = shared.clone().next() else {
                    continue;
                };
                if server.names.is_empty() && !server.default {
                    let why = format!(
                        "{addr} is shared with the server at line {line}: this one needs `names` (or `default = true`)"
                    );
                    return self.fail(raw[i].span(), why);
                }
                if let (true, Some(default)) = (server.default, &raw[i].get_ref().default) {
                    if earlier.default {
                        let why = format!("default: {addr} has a default server already, at line {line}");
                        return self.fail(default.span(), why);
                    }
                    if earlier.names.is_empty() {
                        let why = format!(
                            "default: the server at line {line} on {addr} has no names: it would get nothing"
                        );
                        return self.fail(default.span(), why);
                    }
                }
                let spans = raw[i].get_ref().names.iter().flatten().map(Spanned::span);
                let mut named = server.names.iter().zip(spans);
                if let Some((name, span)) = named.find(|(n, _)| earlier.names.contains(n)) {
                    let why =
                        format!("names: `{name}` on {addr} is claimed by the server at line {line} too");
                    return self.fail(span, why);
                }
            }
        }
        Ok(())
    }

    fn route(&self, raw: &Spanned<RawRoute>, upstreams: &[Upstream]) -> Result<Route, ConfigError> {
        let route = raw.get_ref();
        let (key, text) = match route.path() {
            Ok(found) => found,
            Err(keys) => {
                let why = format!("a route has one of `prefix`, `exact` and `regex` (it has {keys})");
                return self.fail(raw.span(), why);
            }
        };
        let prefix = text.get_ref();
        let matching = match key {
            "regex" => Matching::Regex(regex::Regex::new(prefix).or_else(|e| {
                let why = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                self.fail(text.span(), format!("regex `{prefix}`: {why}"))
            })?),
            _ if !prefix.starts_with('/') => {
                return self.fail(text.span(), format!("{key} `{prefix}` must start with '/'"));
            }
            "exact" => Matching::Exact,
            _ => Matching::Prefix,
        };
        if let (true, false) = (route.strip_prefix, matches!(matching, Matching::Prefix)) {
            return self.fail(
                text.span(),
                format!("strip_prefix goes with `prefix`, not `{key}`"),
            );
        }
        let upstream_index =
            |name: &Spanned<String>| match upstreams.iter().position(|u| &u.name == name.get_ref()) {
                Some(index) => Ok(index),
                None => self.fail(
                    name.span(),
                    format!("no [upstream.{}] is defined", name.get_ref()),
                ),
            };
        let answers = [
            route.redirect.as_ref().map(Spanned::span),
            route.respond.as_ref().map(Spanned::span),
        ];
        let handlers = [&route.root, &route.upstream]
            .iter()
            .filter(|h| h.is_some())
            .count()
            + answers.iter().flatten().count();
        if handlers > 1 {
            let span = answers.into_iter().flatten().next().unwrap_or(raw.span());
            return self.fail(
                span,
                "a route has one of `root`, `upstream`, `redirect` or `respond`",
            );
        }
        let serve = match (&route.root, &route.upstream) {
            (None, None) if route.redirect.is_some() || route.respond.is_some() => self.answer(route)?,
            (Some(_), Some(upstream)) => {
                return self.fail(
                    upstream.span(),
                    "a route has either `root` or `upstream`, not both",
                );
            }
            (None, Some(upstream)) => {
                if let Some(fallback) = &route.fallback {
                    return self.fail(
                        fallback.span(),
                        "`fallback` goes with `root` (try_files), not `upstream`",
                    );
                }
                Serve::Proxy(upstream_index(upstream)?)
            }
            (Some(root), None) => {
                let root_path = existing_dir(&self.base.join(root.get_ref()))
                    .or_else(|why| self.fail(root.span(), format!("root: {why}")))?;
                let mut options = FileOptions::new(root_path);
                options.fallback = route.fallback.as_ref().map(upstream_index).transpose()?;
                self.file_options(route, &mut options)?;
                Serve::Files(options)
            }
            (None, None) => return self.fail(raw.span(), "route needs `root` (files) or `upstream` (proxy)"),
        };
        let internal = route.internal.as_ref().is_some_and(|i| *i.get_ref());
        if let (true, Some(span)) = (internal, route.internal.as_ref().map(Spanned::span)) {
            match &serve {
                Serve::Files(options) if options.fallback.is_none() => {}
                Serve::Files(_) => return self.fail(span, "an internal route cannot have a `fallback`"),
                Serve::Proxy(_) | Serve::Redirect(_) | Serve::Fixed(_) => {
                    return self.fail(span, "an internal route serves files: it needs `root`")
                }
            }
            if !matches!(matching, Matching::Prefix) {
                return self.fail(span, "an internal route is a `prefix` route");
            }
        }
        let intercept_errors = route.intercept_errors.as_ref();
        if let Some(intercept) = intercept_errors.filter(|i| *i.get_ref()) {
            let has_upstream = match &serve {
                Serve::Proxy(_) => true,
                Serve::Files(options) => options.fallback.is_some(),
                Serve::Redirect(_) | Serve::Fixed(_) => false,
            };
            if !has_upstream {
                let why = "intercept_errors goes with `upstream` or `fallback` (an upstream's errors)";
                return self.fail(intercept.span(), why);
            }
        }
        let cache = self.route_cache(route, &serve)?;
        if let (true, Some(limit)) = (internal, &route.limit_requests) {
            let why = "limit_requests goes on the route that proxies (an internal route's requests \
                       are offloaded answers of requests already limited there)";
            return self.fail(limit.span(), why);
        }
        // (Its scope is completed by its server, which knows its own.)
        let limit_requests = (route.limit_requests.as_ref())
            .map(|raw| self.request_limit(raw, String::new()))
            .transpose()?;
        let upgrades = route
            .upgrade
            .as_ref()
            .map(|list| self.protocols(list))
            .transpose()?;
        let built = Route {
            strip_prefix: route.strip_prefix,
            rewrite_location: route.rewrite_location.unwrap_or(true),
            response_buffering: route.response_buffering.unwrap_or(true),
            request_buffering: route.request_buffering.unwrap_or(true),
            ignore_client_abort: route.ignore_client_abort,
            internal,
            x_accel_redirect: route.x_accel_redirect.unwrap_or(true),
            x_sendfile: route.x_sendfile,
            ..Route::new(prefix, serve)
        };
        Ok(Route {
            upgrades: upgrades.unwrap_or(built.upgrades),
            max_body_bytes: route.max_body_bytes.map(|size| size.0),
            request_headers: self.header_rules(route.request_headers.as_ref(), Toward::Upstream)?,
            response_headers: self.header_rules(route.response_headers.as_ref(), Toward::Client)?,
            error_pages: self.error_pages(route.error_pages.as_ref())?,
            intercept_errors: intercept_errors.is_some_and(|i| *i.get_ref()),
            cache,
            limit_requests,
            matching,
            ..built
        })
    }

    /// `compress = true` and its companions: the route's own, else its server's.
    fn compress(&self, server: &RawCompress, route: &RawCompress) -> Result<Option<Compress>, ConfigError> {
        if !route.compress.or(server.compress).unwrap_or(false) {
            return Ok(None);
        }
        let types = match route.types.or(server.types) {
            Some(types) => (types.iter())
                .map(|text| self.media_type_pattern(text))
                .collect::<Result<_, _>>()?,
            None => encoding::DEFAULT_TYPES.map(String::from).to_vec(),
        };
        let min_bytes =
            (route.min_bytes.or(server.min_bytes)).map_or(DEFAULT_COMPRESS_MIN_BYTES, |size| size.0);
        Ok(Some(Compress { types, min_bytes }))
    }

    /// One of `compress_types`: `type/subtype`, `type/*` or `type/*+suffix`.
    fn media_type_pattern(&self, text: &Spanned<String>) -> Result<String, ConfigError> {
        let pattern = text.get_ref().trim().to_ascii_lowercase();
        let token = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        let well_formed = match pattern.split_once('/') {
            Some((kind, "*")) => token(kind),
            Some((kind, sub)) => token(kind) && token(sub.strip_prefix("*+").unwrap_or(sub)),
            None => false,
        };
        if !well_formed {
            let why = format!(
                "compress_types: `{}` is not a media type (text/html, text/*, application/*+json)",
                text.get_ref()
            );
            return self.fail(text.span(), why);
        }
        Ok(pattern)
    }

    /// `cache = true` and its companions, on a route whose upstream answers (`upstream` or
    /// `fallback`).
    fn route_cache(&self, route: &RawRoute, serve: &Serve) -> Result<Option<RouteCache>, ConfigError> {
        let on = route.cache.as_ref().filter(|on| *on.get_ref());
        let Some(on) = on else {
            let companions = [
                ("cache_ttl", &route.cache_ttl),
                ("stale_while_revalidate", &route.stale_while_revalidate),
                ("stale_if_error", &route.stale_if_error),
                ("cache_lock_timeout", &route.cache_lock_timeout),
            ];
            if let Some((key, span)) = companions
                .iter()
                .find_map(|(key, span)| Some((key, span.as_ref()?)))
            {
                return self.fail(span.span(), format!("{key} goes with `cache = true`"));
            }
            return Ok(None);
        };
        let has_upstream = match serve {
            Serve::Proxy(_) => true,
            Serve::Files(options) => options.fallback.is_some(),
            Serve::Redirect(_) | Serve::Fixed(_) => false,
        };
        if !has_upstream {
            return self.fail(
                on.span(),
                "cache goes with `upstream` or `fallback` (it stores an upstream's answers)",
            );
        }
        Ok(Some(RouteCache {
            ttl: route.cache_ttl.as_ref().map(|ttl| ttl.get_ref().0),
            stale_while_revalidate: route
                .stale_while_revalidate
                .as_ref()
                .map_or(Duration::ZERO, |s| s.get_ref().0),
            stale_if_error: route
                .stale_if_error
                .as_ref()
                .map_or(Duration::ZERO, |s| s.get_ref().0),
            lock_timeout: (route.cache_lock_timeout.as_ref())
                .map_or(DEFAULT_CACHE_LOCK_TIMEOUT, |span| span.get_ref().0),
        }))
    }

    /// `limit_requests`, declared at `scope`: a rate, a burst, a key.
    fn request_limit(
        &self,
        raw: &Spanned<RawRequestLimit>,
        scope: String,
    ) -> Result<RequestLimit, ConfigError> {
        let limit = raw.get_ref();
        let interval = guard::parse_rate(limit.rate.get_ref())
            .or_else(|why| self.fail(limit.rate.span(), format!("limit_requests: {why}")))?;
        let burst = match &limit.burst {
            Some(burst) => self.count(burst, "limit_requests: burst", 0..guard::MAX_BURST + 1)? as u32,
            None => 0,
        };
        let key = match &limit.key {
            Some(key) => guard::parse_key(key.get_ref())
                .or_else(|why| self.fail(key.span(), format!("limit_requests: {why}")))?,
            None => guard::LimitKey::Client,
        };
        Ok(RequestLimit {
            interval,
            burst,
            key,
            delay: limit.delay,
            scope,
        })
    }

    /// `request_headers` (toward the upstream) or `response_headers` (toward the client):
    /// names that are tokens and not shoal's to write, values without control characters.
    fn header_rules(
        &self,
        raw: Option<&Spanned<RawHeaderRules>>,
        toward: Toward,
    ) -> Result<HeaderRules, ConfigError> {
        let Some(raw) = raw else {
            return Ok(HeaderRules::default());
        };
        let key = if toward == Toward::Upstream {
            "request_headers"
        } else {
            "response_headers"
        };
        let rules = raw.get_ref();
        if toward == Toward::Upstream && !rules.add.is_empty() {
            return self.fail(
                raw.span(),
                format!("{key} has `set` and `remove` (a request header is set, not added)"),
            );
        }
        // Framing and hop-by-hop headers are shoal's to write, and so are the forwarding
        // headers on requests and the Host a request names.
        let reserved: &[&str] = match toward {
            Toward::Upstream => &[
                "content-length",
                "expect",
                "host",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-real-ip",
                "x-request-id",
            ],
            Toward::Client => &["content-length"],
        };
        let names = rules.set.keys().chain(rules.add.keys()).chain(&rules.remove);
        for name in names {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return self.fail(raw.span(), format!("{key}: `{name}` is not a header name"));
            }
            if crate::http::hop::is_dropped(name.as_bytes(), reserved) {
                return self.fail(
                    raw.span(),
                    format!("{key}: `{name}` is shoal's to write (framing, hop-by-hop or forwarding)"),
                );
            }
        }
        let templates = |map: &std::collections::BTreeMap<String, String>| {
            let mut pairs = Vec::new();
            for (name, value) in map {
                if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                    let why = format!("{key}: the value of `{name}` holds a control character");
                    return self.fail(raw.span(), why);
                }
                match Template::parse(value) {
                    Ok(template) => pairs.push((name.clone(), template)),
                    Err(why) => return self.fail(raw.span(), format!("{key}: `{name}`: {why}")),
                }
            }
            Ok(pairs)
        };
        Ok(HeaderRules {
            set: templates(&rules.set)?,
            add: templates(&rules.add)?,
            remove: rules.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
        })
    }

    /// `tls`: the certificate chain and key, read and matched now (paths from the config's
    /// directory).
    fn tls(&self, raw: &Spanned<RawTls>) -> Result<Identity, ConfigError> {
        let tls = raw.get_ref();
        let (cert, key) = (
            self.base.join(tls.cert.get_ref()),
            self.base.join(tls.key.get_ref()),
        );
        let ocsp = tls.ocsp.as_ref().map(|path| self.base.join(path.get_ref()));
        Identity::load(&cert, &key, ocsp.as_deref())
            .or_else(|why| self.fail(raw.span(), format!("tls: {why}")))
    }

    /// `error_pages`: error statuses (400 to 599) and their files, read now (relative paths
    /// from the config's directory).
    fn error_pages(&self, raw: Option<&RawErrorPages>) -> Result<ErrorPages, ConfigError> {
        let mut pages = Vec::new();
        for (status, file) in raw.into_iter().flatten() {
            let read = match status.parse::<u16>() {
                Ok(code) if (400..600).contains(&code) => {
                    read_page(&self.base.join(file.get_ref())).map(|body| (code, body))
                }
                _ => Err(format!("`{status}` is not an error status (400 to 599)")),
            };
            let (status, body) = read.or_else(|why| self.fail(file.span(), format!("error_pages: {why}")))?;
            let content_type = crate::http::mime::content_type_for(file.get_ref()).into_owned();
            pages.push((status, Arc::new(ErrorPage { body, content_type })));
        }
        Ok(ErrorPages::new(pages))
    }

    /// A `redirect` or `respond` route's answer.
    fn answer(&self, route: &RawRoute) -> Result<Serve, ConfigError> {
        if let Some(redirect) = &route.redirect {
            let redirect = redirect.get_ref();
            let to = Template::parse_target(redirect.to.get_ref())
                .or_else(|why| self.fail(redirect.to.span(), format!("redirect: {why}")))?;
            let status = match &redirect.status {
                Some(status)
                    if !u16::try_from(*status.get_ref()).is_ok_and(|s| REDIRECT_STATUSES.contains(&s)) =>
                {
                    let why = format!(
                        "redirect: status {} is not one of 301, 302, 303, 307, 308",
                        status.get_ref()
                    );
                    return self.fail(status.span(), why);
                }
                Some(status) => *status.get_ref() as u16,
                None => 302,
            };
            return Ok(Serve::Redirect(Redirect { to, status }));
        }
        let respond = route.respond.as_ref().expect("a respond route").get_ref();
        let status = match &respond.status {
            Some(status) => self.count(status, "respond: status", 200..600)? as u16,
            None => 200,
        };
        if matches!(status, 204 | 304) && !respond.body.is_empty() {
            let span = respond.status.as_ref().expect("a status").span();
            return self.fail(span, format!("respond: a {status} has no body"));
        }
        let content_type = match &respond.content_type {
            Some(value) if value.get_ref().bytes().any(|b| b.is_ascii_control()) => {
                return self.fail(value.span(), "respond: content_type holds a control character");
            }
            Some(value) => value.get_ref().clone(),
            None => "text/plain; charset=utf-8".to_string(),
        };
        Ok(Serve::Fixed(Fixed {
            status,
            body: respond.body.clone(),
            content_type,
        }))
    }

    /// A route's `upgrade` list: protocol names, lowercased.
    fn protocols(&self, list: &[Spanned<String>]) -> Result<Vec<String>, ConfigError> {
        let mut protocols = Vec::with_capacity(list.len());
        for protocol in list {
            let name = protocol.get_ref();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                let why = format!("upgrade: `{name}` is not a protocol name (e.g. \"websocket\")");
                return self.fail(protocol.span(), why);
            }
            protocols.push(name.to_ascii_lowercase());
        }
        Ok(protocols)
    }

    fn file_options(&self, route: &RawRoute, options: &mut FileOptions) -> Result<(), ConfigError> {
        options.cache_control = route.cache_control.clone();
        options.follow_symlinks = route.follow_symlinks;
        if let Some(dotfiles) = route.dotfiles {
            options.dotfiles = dotfiles;
        }
        if let Some(index) = &route.index {
            options.index.clear();
            for name in index {
                let text = name.get_ref();
                if text.is_empty() || text.contains('/') || text.starts_with('.') {
                    return self.fail(name.span(), format!("index: `{text}` must be a plain file name"));
                }
                options.index.push(text.clone());
            }
        }
        Ok(())
    }

    fn upstream(&self, name: &str, raw: &Spanned<RawUpstream>) -> Result<Upstream, ConfigError> {
        let spec = raw.get_ref();
        let max_conns = match &spec.max_conns {
            Some(n) => self.count(n, "max_conns", 0..i64::from(MAX_CONNS) + 1)? as u32,
            None => 0,
        };
        let mut servers = Vec::new();
        for text in &spec.servers {
            let resolved =
                resolve_server(text.get_ref(), max_conns).or_else(|why| self.fail(text.span(), why))?;
            servers.extend(resolved);
        }
        if servers.is_empty() {
            return self.fail(raw.span(), format!("[upstream.{name}] has no servers"));
        }
        if servers.iter().all(|s| s.backup) {
            return self.fail(raw.span(), format!("[upstream.{name}] has only backup servers"));
        }
        let mut upstream = Upstream::new(name, servers);
        if let Some(balance) = &spec.balance {
            upstream.balance = match balance.get_ref().as_str() {
                "round_robin" => Balance::RoundRobin,
                "least_conn" => Balance::LeastConn,
                "hash" => Balance::Hash(self.hash_key(spec.hash_key.as_ref())?),
                other => {
                    let why = format!("balance `{other}`: use round_robin, least_conn or hash");
                    return self.fail(balance.span(), why);
                }
            };
        } else if let Some(key) = &spec.hash_key {
            return self.fail(key.span(), "hash_key goes with balance = \"hash\"");
        }
        upstream.keepalive = match &spec.keepalive {
            Some(n) => self.count(n, "keepalive", 0..100_001)? as usize,
            // One worker may hold every permit of the capped servers: it keeps their connections.
            None => (upstream.servers.iter())
                .map(|s| s.max_conns as usize)
                .sum::<usize>()
                .max(upstream.keepalive),
        };
        if let Some(span) = spec.keepalive_timeout {
            upstream.keepalive_timeout = span.0;
        }
        let positive = |value: &Spanned<Span>, key: &str| {
            if value.get_ref().0.is_zero() {
                self.fail(value.span(), format!("{key} must be more than 0"))
            } else {
                Ok(value.get_ref().0)
            }
        };
        for (raw, key, slot) in [
            (
                &spec.connect_timeout,
                "connect_timeout",
                &mut upstream.connect_timeout,
            ),
            (&spec.read_timeout, "read_timeout", &mut upstream.read_timeout),
            (&spec.send_timeout, "send_timeout", &mut upstream.send_timeout),
            (
                &spec.tunnel_timeout,
                "tunnel_timeout",
                &mut upstream.tunnel_timeout,
            ),
            (&spec.queue_timeout, "queue_timeout", &mut upstream.queue_timeout),
        ] {
            if let Some(value) = raw {
                *slot = positive(value, key)?;
            }
        }
        if let Some(n) = &spec.max_fails {
            upstream.max_fails = self.count(n, "max_fails", 0..1_000_001)? as u32;
        }
        if let Some(span) = spec.fail_timeout {
            upstream.fail_timeout = span.0;
        }
        if let Some(check) = &spec.health_check {
            upstream.health_check = Some(self.health_check(check)?);
        }
        Ok(upstream)
    }

    fn hash_key(&self, raw: Option<&Spanned<String>>) -> Result<HashKey, ConfigError> {
        let Some(raw) = raw else {
            return Ok(HashKey::ClientIp);
        };
        match raw.get_ref().split_once(':') {
            None if raw.get_ref() == "client" => Ok(HashKey::ClientIp),
            Some(("header", name)) if !name.trim().is_empty() => Ok(HashKey::Header(name.trim().to_string())),
            _ => self.fail(raw.span(), "hash_key: use \"client\" or \"header:NAME\""),
        }
    }

    fn health_check(&self, raw: &Spanned<RawHealthCheck>) -> Result<HealthCheck, ConfigError> {
        let spec = raw.get_ref();
        if !spec.path.get_ref().starts_with('/') {
            return self.fail(spec.path.span(), "health_check path must start with '/'");
        }
        let mut check = HealthCheck {
            path: spec.path.get_ref().clone(),
            interval: std::time::Duration::from_secs(2),
            timeout: std::time::Duration::from_secs(1),
            rise: 2,
            fall: 3,
        };
        for (value, key, slot) in [
            (&spec.interval, "interval", &mut check.interval),
            (&spec.timeout, "timeout", &mut check.timeout),
        ] {
            if let Some(value) = value {
                if value.get_ref().0.is_zero() {
                    return self.fail(value.span(), format!("health_check {key} must be more than 0"));
                }
                *slot = value.get_ref().0;
            }
        }
        if let Some(n) = &spec.rise {
            check.rise = self.count(n, "rise", 1..1001)? as u32;
        }
        if let Some(n) = &spec.fall {
            check.fall = self.count(n, "fall", 1..1001)? as u32;
        }
        Ok(check)
    }
}

/// Reads `host:port [weight=N] [max_conns=N] [backup]` into servers (a host name may resolve
/// to several addresses); `max_conns` is the upstream's unless the line says otherwise.
pub(super) fn resolve_server(text: &str, max_conns: u32) -> Result<Vec<UpstreamServer>, String> {
    let mut words = text.split_whitespace();
    let address = words
        .next()
        .ok_or_else(|| "an upstream server cannot be empty".to_string())?;
    let mut server = UpstreamServer {
        max_conns,
        ..UpstreamServer::new(SocketAddr::from(([0, 0, 0, 0], 0)))
    };
    let unix = address.strip_prefix("unix:").map(unix_socket_path).transpose()?;
    for option in words {
        let (name, value) = option.split_once('=').unwrap_or((option, ""));
        match (name, value.parse::<u32>()) {
            ("weight", Ok(n)) if (1..=1000).contains(&n) => server.weight = n,
            ("max_conns", Ok(n)) if n <= MAX_CONNS => server.max_conns = n,
            ("backup", _) if value.is_empty() => server.backup = true,
            _ => {
                return Err(format!(
                    "`{option}`: server options are weight=1..1000, max_conns=0..{MAX_CONNS} and backup"
                ))
            }
        }
    }
    if let Some(path) = unix {
        return Ok(vec![UpstreamServer {
            addr: Address::Unix(path),
            ..server
        }]);
    }
    let addrs = lookup(address).map_err(|e| format!("`{address}` is not a reachable host:port ({e})"))?;
    if addrs.is_empty() {
        return Err(format!("`{address}` resolves to no address"));
    }
    Ok(addrs
        .into_iter()
        .map(|addr| UpstreamServer {
            addr: Address::Tcp(addr),
            ..server.clone()
        })
        .collect())
}

/// The path of `unix:PATH`: absolute, and short enough for a socket address (108 bytes with
/// its terminating zero). It need not exist yet: the app may start after shoal.
pub(super) fn unix_socket_path(path: &str) -> Result<PathBuf, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "`unix:{path}`: a unix socket's path is absolute (unix:/run/app.sock)"
        ));
    }
    if path.len() > 107 {
        return Err(format!(
            "`unix:{path}`: a unix socket's path is at most 107 bytes"
        ));
    }
    Ok(PathBuf::from(path))
}

/// The addresses `host:port` names (a DNS lookup for a host name).
#[cfg(not(fuzzing))]
fn lookup(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok(address.to_socket_addrs()?.collect())
}

/// Under the fuzzer only literal addresses resolve: no DNS query per generated input.
#[cfg(fuzzing)]
fn lookup(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    let addr = address
        .parse()
        .map_err(|_| std::io::Error::other("no DNS while fuzzing"))?;
    Ok(vec![addr])
}

/// An error page's bytes: a file of at most [`MAX_ERROR_PAGE_BYTES`].
fn read_page(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(format!("`{shown}` is not a file")),
        Ok(meta) if meta.len() > MAX_ERROR_PAGE_BYTES => Err(format!("`{shown}` is over 1 MiB")),
        Ok(_) => std::fs::read(path).map_err(|e| format!("`{shown}`: {e}")),
        Err(e) => Err(format!("`{shown}`: {e}")),
    }
}

/// Canonical absolute path of an existing directory, or why it cannot be served.
pub(super) fn existing_dir(path: &Path) -> Result<PathBuf, String> {
    match std::fs::canonicalize(path) {
        Ok(abs) if abs.is_dir() => Ok(abs),
        Ok(_) => Err(format!("`{}` is not a directory", path.display())),
        Err(e) => Err(format!("`{}`: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, HashKey, Serve};

    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("public")).unwrap();
        let path = dir.path().join("shoal.toml");
        std::fs::write(&path, text).unwrap();
        load_file(&path).map_err(|e| {
            let shown = e.to_string();
            shown.replace(&path.display().to_string(), "FILE")
        })
    }

    const MINIMAL: &str =
        "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n[[server.route]]\nprefix = \"/\"\nroot = \"public\"\n";

    #[test]
    fn minimal_config_gets_production_defaults() {
        let config = load(MINIMAL).unwrap();
        assert_eq!(config.workers, default_workers());
        assert_eq!(config.limits.max_header_bytes, 16 * 1024);
        assert_eq!(config.access_log, AccessLog::Stdout);
        let Serve::Files(files) = &config.servers[0].routes[0].serve else {
            panic!("a file route")
        };
        assert!(files.root.is_absolute() && files.root.ends_with("public"));
        assert_eq!(files.dotfiles, Dotfiles::Deny);
        assert_eq!(files.fallback, None);
    }

    #[test]
    fn full_example_parses() {
        let text = format!(
            "workers = 2\npid_file = \"shoal.pid\"\naccess_log = \"off\"\n[limits]\nmax_header_bytes = \"8KiB\"\nmax_headers = 50\nmax_body_bytes = \"1MiB\"\nheader_timeout = \"500ms\"\nkeepalive_timeout = \"1m\"\nsend_timeout = \"20s\"\nsend_buffer_bytes = \"64KiB\"\nmax_requests_per_connection = 10\nmax_connections = 100\n{MINIMAL}  index = [\"home.html\"]\n  cache_control = \"max-age=60\"\n  dotfiles = \"ignore\"\n  strip_prefix = true\n"
        );
        let config = load(&text).unwrap();
        assert_eq!(config.workers, 2);
        assert_eq!(config.access_log, AccessLog::Off);
        assert_eq!(config.limits.max_header_bytes, 8192);
        assert_eq!(config.limits.header_timeout.as_millis(), 500);
        assert_eq!(config.limits.keepalive_timeout.as_secs(), 60);
        assert_eq!(config.limits.send_timeout.as_secs(), 20);
        assert_eq!(config.limits.send_buffer_bytes, 64 * 1024);
        let route = &config.servers[0].routes[0];
        let Serve::Files(files) = &route.serve else {
            panic!("a file route")
        };
        assert_eq!(files.index, ["home.html"]);
        assert_eq!(files.dotfiles, Dotfiles::Ignore);
        assert!(route.strip_prefix);
    }

    #[test]
    fn access_log_format_defaults_to_combined_and_servers_override_the_top_level() {
        assert_eq!(
            load(MINIMAL).unwrap().servers[0].access_log_format,
            LogFormat::Combined
        );
        let second = MINIMAL.replace("8080", "8081");
        let text = format!(
            "access_log_format = \"json\"\n{MINIMAL}{}",
            second.replace("[[server]]\n", "[[server]]\naccess_log_format = \"combined\"\n")
        );
        let config = load(&text).unwrap();
        assert_eq!(config.servers[0].access_log_format, LogFormat::Json);
        assert_eq!(config.servers[1].access_log_format, LogFormat::Combined);
        let bad = load(&format!("access_log_format = \"xml\"\n{MINIMAL}")).unwrap_err();
        assert!(bad.starts_with("FILE:1:21: unknown variant `xml`"), "{bad}");
    }

    const PROXIED: &str = "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n[[server.route]]\nprefix = \"/api/\"\nupstream = \"app\"\nstrip_prefix = true\n[[server.route]]\nprefix = \"/\"\nroot = \"public\"\nfallback = \"app\"\n";

    #[test]
    fn upstreams_and_proxy_routes() {
        let text = format!(
            "{PROXIED}[upstream.app]\nservers = [\"127.0.0.1:3000\", \"127.0.0.1:3001 weight=2\"]\nbalance = \"hash\"\nhash_key = \"header:X-User\"\nkeepalive = 8\nread_timeout = \"5s\"\nhealth_check = {{ path = \"/health\", interval = \"1s\", rise = 1, fall = 2 }}\n"
        );
        let config = load(&text).unwrap();
        let app = &config.upstreams[0];
        assert_eq!(app.servers[1].weight, 2);
        assert_eq!(app.balance, Balance::Hash(HashKey::Header("X-User".into())));
        assert_eq!(app.keepalive, 8);
        assert_eq!(app.read_timeout.as_secs(), 5);
        assert_eq!(app.health_check.as_ref().unwrap().fall, 2);
        assert_eq!((app.servers[0].max_conns, app.queue_timeout.as_secs()), (0, 30));
        let routes = &config.servers[0].routes;
        assert!(matches!(routes[0].serve, Serve::Proxy(0)) && routes[0].strip_prefix);
        assert!(matches!(&routes[1].serve, Serve::Files(f) if f.fallback == Some(0)));
    }

    #[test]
    fn servers_share_an_address_by_name_with_one_default() {
        let server = |extra: &str| {
            format!("[[server]]\nlisten = [\"127.0.0.1:8080\"]\n{extra}[[server.route]]\nprefix = \"/\"\nroot = \"public\"\n")
        };
        let a = server("names = [\"A.example.com.\", \"*.example.com\"]\n");
        let b = server("names = [\"www.example.*\"]\ndefault = true\n");
        let config = load(&format!("{a}{b}")).unwrap();
        assert_eq!(config.listeners(), [("127.0.0.1:8080".parse().unwrap(), 1)]);
        assert_eq!(config.servers_on(&"127.0.0.1:8080".parse().unwrap()), [1, 0]);
        let names: Vec<String> = config.servers[0].names.iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["a.example.com", "*.example.com"]);
        let twice = load(&format!(
            "{a}{}",
            server("names = [\"b.test\", \"*.EXAMPLE.com\"]\n")
        ))
        .unwrap_err();
        assert!(
            twice.starts_with(
                "FILE:9:20: names: `*.example.com` on 127.0.0.1:8080 is claimed by the server at line 1 too"
            ),
            "{twice}"
        );
        let defaults = load(&format!("{b}{b}")).unwrap_err();
        assert!(
            defaults
                .starts_with("FILE:11:11: default: 127.0.0.1:8080 has a default server already, at line 1"),
            "{defaults}"
        );
        let shadowed = load(&format!("{}{b}", server(""))).unwrap_err();
        assert!(
            shadowed.contains("the server at line 1 on 127.0.0.1:8080 has no names"),
            "{shadowed}"
        );
        for bad in ["a b", "*.*.x", "a*.b", "x..y", "*", ".x", "a/b"] {
            let error = load(&server(&format!("names = [\"{bad}\"]\n"))).unwrap_err();
            assert!(
                error.contains(&format!("names: `{bad}` is not a host name")),
                "{error}"
            );
        }
    }

    /// Each config text `load` makes of `cases`' first halves is refused with an error that
    /// starts with the second.
    fn assert_refused(load: impl Fn(&str) -> Result<Config, String>, cases: &[(&str, &str)]) {
        for (text, expected) in cases {
            let error = load(text).unwrap_err();
            assert!(error.starts_with(expected), "{text}: {error}");
        }
    }

    /// A config of one static route `/` with `line` added to the route.
    fn route(line: &str) -> Result<Config, String> {
        load(&format!(
            "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n[[server.route]]\nprefix = \"/\"\nroot = \"public\"\n{line}\n"
        ))
    }

    #[test]
    fn header_rules_refuse_what_shoal_writes_itself() {
        let errors = [
            (
                "response_headers = { set = { Connection = \"close\" } }",
                "FILE:6:20: response_headers: `Connection` is shoal's to write",
            ),
            (
                "response_headers = { add = { Link = \"<https://{hots}/>\" } }",
                "FILE:6:20: response_headers: `Link`: `{hots}` is not one of {scheme}",
            ),
            (
                "response_headers = { remove = [\"Content-Length\"] }",
                "FILE:6:20: response_headers: `Content-Length` is shoal's",
            ),
            (
                "request_headers = { set = { \"X-Real-IP\" = \"1.2.3.4\" } }",
                "FILE:6:19: request_headers: `X-Real-IP` is shoal's",
            ),
            (
                "request_headers = { set = { \"X_Forwarded_For\" = \"1.2.3.4\" } }",
                "FILE:6:19: request_headers: `X_Forwarded_For` is shoal's",
            ),
            (
                "request_headers = { add = { \"X-A\" = \"1\" } }",
                "FILE:6:19: request_headers has `set` and `remove`",
            ),
            (
                "response_headers = { set = { \"X-A\" = \"a\\nb\" } }",
                "FILE:6:20: response_headers: the value of `X-A` holds a control character",
            ),
            (
                "response_headers = { set = { \"X A\" = \"1\" } }",
                "FILE:6:20: response_headers: `X A` is not a header name",
            ),
        ];
        assert_refused(route, &errors);
    }

    #[test]
    fn servers_are_labelled_apart_in_logs_and_metrics() {
        let server = |listen: &str, extra: &str| {
            format!("[[server]]\nlisten = [\"{listen}\"]\n{extra}[[server.route]]\nprefix = \"/\"\nroot = \"public\"\n")
        };
        let text = [
            server("127.0.0.1:80", "names = [\"example.com\", \"www.example.com\"]\n"),
            server("127.0.0.1:8080", "names = [\"example.com\"]\n"),
            server("127.0.0.1:81", "names = [\"admin.example.com\"]\n"),
            server("127.0.0.1:80", "default = true\n"),
        ]
        .concat();
        let labels = load(&text).unwrap().server_labels();
        let some = |label: &str| Some(label.to_string());
        assert_eq!(
            labels,
            [
                some("example.com@127.0.0.1:80"),
                some("example.com@127.0.0.1:8080"),
                some("admin.example.com"),
                None
            ]
        );
        let unnamed = [text, server("127.0.0.1:82", "")].concat();
        let labels = load(&unnamed).unwrap().server_labels();
        assert_eq!(labels[3..], [some("127.0.0.1:80"), some("127.0.0.1:82")]);
    }

    #[test]
    fn hsts_and_redirect_https_go_with_and_without_tls() {
        let server = |lines: &str| {
            load(&format!(
                "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n{lines}\n[[server.route]]\nprefix = \"/\"\nroot = \"public\"\n"
            ))
        };
        let errors = [
            ("hsts = \"max-age=60\"", "FILE:3:8: hsts goes with `tls`"),
            (
                "redirect_https = true\ntls = { cert = \"c.pem\", key = \"k.pem\" }",
                "FILE:3:18: redirect_https goes on a plain server",
            ),
            ("tls = { cert = \"c.pem\" }", "FILE:3:7: missing field `key`"),
        ];
        assert_refused(server, &errors);
        assert!(server("redirect_https = true").unwrap().servers[0].redirect_https);
    }

    #[test]
    fn error_pages_are_error_statuses_with_readable_files() {
        let errors = [
            (
                "error_pages = { 302 = \"public\" }",
                "FILE:6:23: error_pages: `302` is not an error status (400 to 599)",
            ),
            (
                "error_pages = { oops = \"public\" }",
                "FILE:6:24: error_pages: `oops` is not an error status",
            ),
            (
                "error_pages = { 404 = \"missing.html\" }",
                "FILE:6:23: error_pages: `",
            ),
            ("error_pages = { 404 = \"public\" }", "FILE:6:23: error_pages: `"),
            (
                "intercept_errors = true",
                "FILE:6:20: intercept_errors goes with `upstream` or `fallback`",
            ),
        ];
        assert_refused(route, &errors);
        let missing = route("error_pages = { 404 = \"missing.html\" }").unwrap_err();
        assert!(missing.contains("missing.html`: No such file"), "{missing}");
        let directory = route("error_pages = { 404 = \"public\" }").unwrap_err();
        assert!(directory.ends_with("public` is not a file"), "{directory}");
    }

    /// A config whose one route proxies to `app` with `route_lines`, after `top` (top-level
    /// keys and sections).
    fn caching(top: &str, route_lines: &str) -> Result<Config, String> {
        load(&format!(
            "{top}\n[[server]]\nlisten = [\"127.0.0.1:8080\"]\n[[server.route]]\nprefix = \"/\"\n\
             upstream = \"app\"\n{route_lines}\n[upstream.app]\nservers = [\"127.0.0.1:9000\"]\n"
        ))
    }

    #[test]
    fn cache_section_and_route_keys() {
        let config = caching(
            "[cache]\npath = \"cache\"",
            "cache = true\ncache_ttl = \"1s\"\nstale_if_error = \"10m\"",
        )
        .unwrap();
        let store = config.cache.as_ref().expect("a cache");
        assert!(
            store.path.ends_with("cache") && store.path.is_absolute(),
            "{store:?}"
        );
        assert!(!store.path.exists(), "the master makes it, not the config");
        assert_eq!(store.max_size_bytes, DEFAULT_CACHE_MAX_SIZE);
        let route = &config.servers[0].routes[0];
        let expected = RouteCache {
            ttl: Some(Duration::from_secs(1)),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::from_secs(600),
            lock_timeout: DEFAULT_CACHE_LOCK_TIMEOUT,
        };
        assert_eq!(route.cache, Some(expected));
        let sized = caching("[cache]\npath = \"cache\"\nmax_size = \"2MiB\"", "cache = true").unwrap();
        assert_eq!(sized.cache.unwrap().max_size_bytes, 2 << 20);
        assert_eq!(caching("", "").unwrap().cache, None);
    }

    #[test]
    fn cache_keys_are_checked_where_they_are() {
        let errors = [
            (
                "",
                "cache = true",
                "FILE:7:9: cache = true needs a `[cache]` section with its `path`",
            ),
            (
                "[cache]\nmax_size = \"1GiB\"",
                "cache = true",
                "FILE:1:1: [cache] needs `path`",
            ),
            (
                "[cache]\npath = \"no/such/dir\"",
                "cache = true",
                "FILE:2:8: path: `",
            ),
            (
                "[cache]\npath = \"shoal.toml\"",
                "cache = true",
                "FILE:2:8: path: `",
            ),
            (
                "[cache]\npath = \"c\"\nmax_size = 0",
                "cache = true",
                "FILE:3:12: max_size must be more than 0",
            ),
            (
                "",
                "cache_ttl = \"1s\"",
                "FILE:7:13: cache_ttl goes with `cache = true`",
            ),
            (
                "",
                "stale_if_error = \"1s\"",
                "FILE:7:18: stale_if_error goes with `cache = true`",
            ),
        ];
        for (top, route_lines, expected) in errors {
            let error = caching(top, route_lines).expect_err(route_lines);
            assert!(error.starts_with(expected), "{top} / {route_lines}: {error}");
        }
        let on_files = route("cache = true").unwrap_err();
        assert!(
            on_files.contains("cache goes with `upstream` or `fallback`"),
            "{on_files}"
        );
    }

    #[test]
    fn exact_and_regex_routes_are_checked_at_their_values() {
        let route = |lines: &str| {
            load(&format!(
                "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n[[server.route]]\n{lines}\nroot = \"public\"\n"
            ))
        };
        let config = route("regex = \"\\\\.php$\"").unwrap();
        assert!(config.servers[0].routes[0].matches("/a/b.php"));
        assert!(!config.servers[0].routes[0].matches("/a/b.phps"));
        let errors = [
            (
                "regex = \"(unclosed\"",
                "FILE:4:9: regex `(unclosed`: error: unclosed group",
            ),
            (
                "exact = \"favicon.ico\"",
                "FILE:4:9: exact `favicon.ico` must start with '/'",
            ),
            (
                "prefix = \"/\"\nexact = \"/x\"",
                "FILE:3:1: a route has one of `prefix`, `exact` and `regex` (it has `prefix` and `exact`)",
            ),
            (
                "index = [\"i.html\"]",
                "FILE:3:1: a route has one of `prefix`, `exact` and `regex` (it has none)",
            ),
            (
                "exact = \"/x\"\nstrip_prefix = true",
                "FILE:4:9: strip_prefix goes with `prefix`, not `exact`",
            ),
        ];
        assert_refused(route, &errors);
        let twice = load(
            "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n[[server.route]]\nexact = \"/a\"\nroot = \"public\"\n\
             [[server.route]]\nprefix = \"/a\"\nroot = \"public\"\n[[server.route]]\nexact = \"/a\"\nroot = \"public\"\n",
        )
        .unwrap_err();
        assert!(
            twice.starts_with("FILE:10:9: exact `/a` is routed twice"),
            "{twice}"
        );
    }

    #[test]
    fn redirect_and_respond_routes_are_checked_at_their_values() {
        let route = |line: &str| {
            load(&format!(
                "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n[[server.route]]\nprefix = \"/\"\n{line}\n"
            ))
        };
        let config = route("redirect = { to = \"https://{host}{uri}\", status = 308 }").unwrap();
        assert!(
            matches!(&config.servers[0].routes[0].serve, Serve::Redirect(r) if r.status == 308 && r.to.pieces().len() == 3)
        );
        let config = route("respond = { status = 204 }").unwrap();
        assert!(
            matches!(&config.servers[0].routes[0].serve, Serve::Fixed(f) if f.status == 204 && f.body.is_empty())
        );
        let errors = [
            (
                "redirect = { to = \"https://{hots}/\" }",
                "FILE:5:19: redirect: `{hots}` is not one of",
            ),
            (
                "redirect = { to = \"/x\", status = 200 }",
                "FILE:5:34: redirect: status 200 is not one of 301",
            ),
            (
                "redirect = { to = \"/x\", status = -65235 }",
                "FILE:5:34: redirect: status -65235 is not one of 301",
            ),
            (
                "respond = { status = 99 }",
                "FILE:5:22: respond: status must be between 200 and 599",
            ),
            (
                "respond = { status = 304, body = \"x\" }",
                "FILE:5:22: respond: a 304 has no body",
            ),
            (
                "respond = { body = \"x\", content_type = \"a\\nb\" }",
                "FILE:5:40: respond: content_type",
            ),
            (
                "root = \"public\"\nrespond = { body = \"x\" }",
                "FILE:6:11: a route has one of `root`, `upstream`",
            ),
        ];
        assert_refused(route, &errors);
    }

    #[test]
    fn a_route_lets_through_the_upgrades_it_names() {
        let with = |extra: &str| {
            let text = PROXIED.replacen(
                "strip_prefix = true\n",
                &format!("strip_prefix = true\n{extra}"),
                1,
            );
            load(&format!("{text}[upstream.app]\nservers = [\"127.0.0.1:3000\"]\n"))
        };
        let allows = |extra: &str, upgrade: &[&str]| {
            let config = with(extra).unwrap();
            config.servers[0].routes[0].allows_upgrade(upgrade.iter().map(|v| v.as_bytes()))
        };
        assert!(allows("", &["websocket"]) && allows("", &["WebSocket/13"]));
        assert!(!allows("", &["h2c"]) && !allows("", &["websocket, h2c"]) && !allows("", &[]));
        assert!(!allows("", &["websocket", "h2c"]), "every Upgrade line counts");
        assert!(!allows("upgrade = []\n", &["websocket"]));
        assert!(allows(
            "upgrade = [\"h2c\", \"WebSocket\"]\n",
            &["h2c", "websocket"]
        ));
        let bad = with("upgrade = [\"web socket\"]\n").unwrap_err();
        assert!(
            bad.starts_with("FILE:7:12: upgrade: `web socket` is not a protocol name"),
            "{bad}"
        );
    }

    #[test]
    fn keepalive_defaults_to_what_the_caps_let_one_worker_use() {
        let keepalive = |lines: &str| {
            let text = format!("{PROXIED}[upstream.app]\n{lines}\n");
            load(&text).unwrap().upstreams[0].keepalive
        };
        assert_eq!(keepalive("servers = [\"127.0.0.1:3000\"]"), 32);
        assert_eq!(keepalive("servers = [\"127.0.0.1:3000 max_conns=4\"]"), 32);
        let two_caps = "servers = [\"127.0.0.1:3000\", \"127.0.0.1:3001\"]\nmax_conns = 40";
        assert_eq!(keepalive(two_caps), 80);
        assert_eq!(keepalive(&format!("{two_caps}\nkeepalive = 8")), 8);
    }

    #[test]
    fn max_conns_per_upstream_is_each_servers_default() {
        let text = format!(
            "{PROXIED}[upstream.app]\nservers = [\"127.0.0.1:3000\", \"127.0.0.1:3001 max_conns=2\", \"127.0.0.1:3002 max_conns=0\"]\nmax_conns = 8\nqueue_timeout = \"5s\"\n"
        );
        let config = load(&text).unwrap();
        let app = &config.upstreams[0];
        let caps: Vec<u32> = app.servers.iter().map(|s| s.max_conns).collect();
        assert_eq!(caps, [8, 2, 0]);
        assert!(app.servers.iter().all(|s| !s.backup));
        assert_eq!(app.queue_timeout.as_secs(), 5);
        assert!(app.is_capped());
        let zero = load(&format!(
            "{PROXIED}[upstream.app]\nservers = [\"127.0.0.1:3000\"]\nqueue_timeout = \"0s\"\n"
        ))
        .unwrap_err();
        assert!(zero.contains("queue_timeout must be more than 0"), "{zero}");
        let over = load(&format!(
            "{PROXIED}[upstream.app]\nservers = [\"127.0.0.1:3000\"]\nmax_conns = 4097\n"
        ))
        .unwrap_err();
        assert!(
            over.contains("max_conns must be between 0 and 4096, not 4097"),
            "{over}"
        );
    }

    #[test]
    fn internal_routes_serve_files_only() {
        let text = format!("{PROXIED}[upstream.app]\nservers = [\"127.0.0.1:3000\"]\n");
        let with = |route: &str| {
            text.replace(
                "strip_prefix = true\n",
                &format!("strip_prefix = true\n{route}\n"),
            )
        };
        let on_proxy = load(&with("internal = true")).unwrap_err();
        assert!(
            on_proxy.contains("an internal route serves files: it needs `root`"),
            "{on_proxy}"
        );
        let files = text.replace("fallback = \"app\"\n", "internal = true\n");
        let config = load(&files).unwrap();
        let internal = config.servers[0]
            .routes
            .iter()
            .find(|r| r.internal)
            .expect("an internal route");
        assert!(internal.x_accel_redirect && !internal.x_sendfile);
        let with_fallback = text.replace("fallback = \"app\"\n", "fallback = \"app\"\ninternal = true\n");
        let refused = load(&with_fallback).unwrap_err();
        assert!(
            refused.contains("an internal route cannot have a `fallback`"),
            "{refused}"
        );
    }

    #[test]
    fn upstream_errors_point_at_the_value() {
        let missing = load(PROXIED).unwrap_err();
        assert!(
            missing.starts_with("FILE:5:12: no [upstream.app] is defined"),
            "{missing}"
        );
        let servers = |list: &str| format!("{PROXIED}[upstream.app]\nservers = [{list}]\n");
        let bad_weight = load(&servers("\"127.0.0.1:3000 weight=0\"")).unwrap_err();
        assert!(bad_weight.starts_with("FILE:12:12: `weight=0`"), "{bad_weight}");
        let backups = load(&servers("\"127.0.0.1:3000\", \"127.0.0.1:3001 backup weight=3\"")).unwrap();
        let second = &backups.upstreams[0].servers[1];
        assert!(second.backup && second.weight == 3 && !backups.upstreams[0].servers[0].backup);
        let only_backups = load(&servers("\"127.0.0.1:3001 backup\"")).unwrap_err();
        assert!(
            only_backups.contains("[upstream.app] has only backup servers"),
            "{only_backups}"
        );
        let bad_backup = load(&servers("\"127.0.0.1:3001 backup=yes\"")).unwrap_err();
        assert!(
            bad_backup.contains("`backup=yes`: server options are"),
            "{bad_backup}"
        );
        let bad_cap = load(&servers("\"127.0.0.1:3000 max_conns=5000\"")).unwrap_err();
        assert!(
            bad_cap.starts_with("FILE:12:12: `max_conns=5000`: server options are"),
            "{bad_cap}"
        );
        let bad_addr = load(&servers("\"127.0.0.1:port\"")).unwrap_err();
        assert!(
            bad_addr.starts_with("FILE:12:12: `127.0.0.1:port` is not a reachable"),
            "{bad_addr}"
        );
        let bad_balance = load(&format!("{}balance = \"random\"\n", servers("\"127.0.0.1:1\""))).unwrap_err();
        assert!(
            bad_balance.starts_with("FILE:13:11: balance `random`"),
            "{bad_balance}"
        );
    }

    #[test]
    fn errors_name_line_column_and_key() {
        let cases: &[(&str, &str)] = &[
            ("workers = 2\nwrokers = 3\n", "FILE:2:1: unknown field `wrokers`"),
            (
                "[limits]\nmax_body_bytes = \"10XiB\"\n",
                "FILE:2:18: `10XiB` has an unknown size unit",
            ),
            (
                "[limits]\nheader_timeout = \"10\"\n",
                "FILE:2:18: `10` needs a unit",
            ),
            ("workers = 0\n", "FILE:1:11: workers must be between 1 and 1024"),
            ("[limits]\nbogus = 1\n", "FILE:2:1: unknown field `bogus`"),
            (
                "[limits]\nmax_connections = 100\nuser = \"root\"\n",
                "FILE:3:1: `user` is a top-level key, but here it falls into [limits]: top-level keys \
                 must come before the first [table] (move it above)",
            ),
            (
                "[supervisor] # watchdog\nmax_requests = 5\n\nworkers = 2\n",
                "FILE:4:1: `workers` is a top-level key, but here it falls into [supervisor]: ",
            ),
            ("workers = \"two\"\n", "FILE:1:11: invalid type"),
            ("", "FILE: no [[server]] section"),
            // Found by fuzzing: toml gives no message for a key without a value at the end.
            (
                "workers = 2
pid_file =",
                "FILE:2:11: invalid TOML syntax",
            ),
        ];
        for (text, want) in cases {
            let got = load(text).unwrap_err();
            assert!(got.starts_with(want), "{text:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn tls_ticket_rotation_is_twelve_hours_unless_set_between_a_second_and_84_hours() {
        assert_eq!(
            load(MINIMAL).unwrap().tls_ticket_rotation,
            DEFAULT_TICKET_ROTATION
        );
        for (text, secs) in [("\"30m\"", 1800), ("\"1s\"", 1), ("\"84h\"", 84 * 3600)] {
            let config = load(&format!("tls_ticket_rotation = {text}\n{MINIMAL}")).unwrap();
            assert_eq!(config.tls_ticket_rotation, Duration::from_secs(secs), "{text}");
        }
        let cases: &[(&str, &str)] = &[
            (
                "tls_ticket_rotation = \"999ms\"\n",
                "FILE:1:23: tls_ticket_rotation must be between 1s and 84h",
            ),
            (
                "tls_ticket_rotation = \"85h\"\n",
                "FILE:1:23: tls_ticket_rotation must be",
            ),
            (
                "tls_ticket_rotation = 0\n",
                "FILE:1:23: tls_ticket_rotation must be",
            ),
            ("tls_ticket_rotation = \"12\"\n", "FILE:1:23: `12` needs a unit"),
            (
                "[limits]\ntls_ticket_rotation = \"1h\"\n",
                "FILE:2:1: `tls_ticket_rotation` is a top-level key, but here it falls into [limits]",
            ),
        ];
        for (top, want) in cases {
            let got = load(&format!("{top}{MINIMAL}")).unwrap_err();
            assert!(got.starts_with(want), "{top:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn admin_listen_is_off_by_default_and_checked() {
        assert_eq!(load(MINIMAL).unwrap().admin, None);
        let on = load(&format!("{MINIMAL}[admin]\nlisten = \"127.0.0.1:9090\"\n")).unwrap();
        assert_eq!(on.admin, Some("127.0.0.1:9090".parse().unwrap()));
        let cases: &[(&str, &str)] = &[
            (
                "[admin]\nlisten = \"localhost\"\n",
                "FILE:7:10: [admin] listen: `localhost` is not an address",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:8080\"\n",
                "FILE:7:10: [admin] listen: 127.0.0.1:8080 is already used by a server",
            ),
            ("[admin]\nport = 9090\n", "FILE:7:1: unknown field `port`"),
        ];
        for (admin, want) in cases {
            let got = load(&format!("{MINIMAL}{admin}")).unwrap_err();
            assert!(got.starts_with(want), "{admin:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn route_errors_point_at_the_value() {
        let bad_root = MINIMAL.replace("\"public\"", "\"missing\"");
        assert!(load(&bad_root).unwrap_err().starts_with("FILE:5:8: root: "));
        let bad_listen = MINIMAL.replace("127.0.0.1:8080", "localhost");
        assert!(load(&bad_listen)
            .unwrap_err()
            .starts_with("FILE:2:11: listen: `localhost`"));
        let bad_prefix = MINIMAL.replace("prefix = \"/\"", "prefix = \"api\"");
        assert!(load(&bad_prefix)
            .unwrap_err()
            .starts_with("FILE:4:10: prefix `api`"));
        let unknown_route_key = format!("{MINIMAL}  colour = \"red\"\n");
        assert!(load(&unknown_route_key)
            .unwrap_err()
            .starts_with("FILE:6:3: unknown field `colour`"));
        let misplaced = load(&format!("{MINIMAL}pid_file = \"shoal.pid\"\n")).unwrap_err();
        assert!(
            misplaced.starts_with(
                "FILE:6:1: `pid_file` is a top-level key, but here it falls into [[server.route]]"
            ),
            "{misplaced}"
        );
        let two_servers_one_port = format!("{MINIMAL}{MINIMAL}");
        let nameless = load(&two_servers_one_port).unwrap_err();
        assert!(
            nameless.contains("127.0.0.1:8080 is shared with the server at line 1: this one needs `names`"),
            "{nameless}"
        );
    }

    #[test]
    fn a_route_has_its_own_request_limit_or_its_servers() {
        let text = "[[server]]\nlisten = [\"127.0.0.1:8080\"]\nnames = [\"a.test\"]\n\
                    limit_requests = { rate = \"10/s\", burst = 20 }\nlimit_connections = 20\n\
                    [[server.route]]\nprefix = \"/\"\nroot = \"public\"\n\
                    [[server.route]]\nexact = \"/login\"\nroot = \"public\"\n\
                    limit_requests = { rate = \"30/m\", key = \"header:X-Api-Key\", delay = true }\n";
        let config = load(text).unwrap();
        let server = &config.servers[0];
        let scope = "server 127.0.0.1:8080 names a.test";
        assert_eq!(
            server.limit_connections,
            Some(ConnectionLimit {
                max: 20,
                scope: scope.to_string()
            })
        );
        let limit_of = |label: &str| {
            let route = server.routes.iter().find(|r| r.label() == label).unwrap();
            route.limit_requests.clone().expect("a limit")
        };
        assert_eq!(
            limit_of("/"),
            RequestLimit {
                interval: Duration::from_millis(100),
                burst: 20,
                key: guard::LimitKey::Client,
                delay: false,
                scope: scope.to_string(),
            }
        );
        assert_eq!(
            limit_of("= /login"),
            RequestLimit {
                interval: Duration::from_secs(2),
                burst: 0,
                key: guard::LimitKey::Header("x-api-key".to_string()),
                delay: true,
                scope: format!("{scope} route = /login"),
            }
        );
        let plain = load(MINIMAL).unwrap();
        assert_eq!(plain.servers[0].limit_connections, None);
        assert_eq!(plain.servers[0].routes[0].limit_requests, None);
    }

    #[test]
    fn limits_are_checked_at_their_values() {
        assert_refused(
            route,
            &[
                (
                    "limit_requests = { rate = \"10/h\" }",
                    "FILE:6:27: limit_requests: rate `10/h` is not a rate like \"10/s\"",
                ),
                (
                    "limit_requests = { rate = \"10/s\", burst = -1 }",
                    "FILE:6:43: limit_requests: burst must be between 0 and 1000000, not -1",
                ),
                (
                    "limit_requests = { rate = \"10/s\", key = \"ip\" }",
                    "FILE:6:41: limit_requests: key `ip` is neither \"client\" nor \"header:NAME\"",
                ),
                (
                    "limit_requests = { burst = 5 }",
                    "FILE:6:18: missing field `rate`",
                ),
                (
                    "limit_requests = { rate = \"1/s\", nodelay = true }",
                    "FILE:6:34: unknown field `nodelay`",
                ),
                (
                    "internal = true\nlimit_requests = { rate = \"1/s\" }",
                    "FILE:7:18: limit_requests goes on the route that proxies",
                ),
            ],
        );
        let server = |line: &str| {
            load(&format!(
                "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n{line}\n[[server.route]]\nprefix = \"/\"\nroot = \"public\"\n"
            ))
        };
        assert_refused(
            server,
            &[
                (
                    "limit_connections = 0",
                    "FILE:3:21: limit_connections must be between 1 and 256, not 0",
                ),
                (
                    "limit_connections = 257",
                    "FILE:3:21: limit_connections must be between 1 and 256, not 257",
                ),
            ],
        );
        assert!(server("limit_connections = 256").is_ok());
    }

    /// `text` loaded from a directory holding `public/` and `files` (name, contents);
    /// errors with the config's path as `FILE` and the directory as `DIR`.
    fn load_beside(files: &[(&str, &str)], text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("public")).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let path = dir.path().join("shoal.toml");
        std::fs::write(&path, text).unwrap();
        load_file(&path).map_err(|e| {
            let shown = e.to_string().replace(&path.display().to_string(), "FILE");
            shown.replace(&dir.path().display().to_string(), "DIR")
        })
    }

    /// `htpasswd -nbB -C 4 alice 'wonder land'`.
    const ALICE: &str = "alice:$2y$04$ZJOz5P1u2KWqTHQjzNCluut5vUIt9..hG2p91.MhIBsnU97jjnwOu\n";

    /// A server with `server` lines and two routes, `/` (with `root_lines`) and `/admin/`
    /// (with `admin_lines`), both proxied.
    fn guarded(server: &str, root_lines: &str, admin_lines: &str) -> String {
        format!(
            "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n{server}\n[[server.route]]\nprefix = \"/\"\nupstream = \"app\"\n{root_lines}\n[[server.route]]\nprefix = \"/admin/\"\nupstream = \"app\"\n{admin_lines}\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n"
        )
    }

    #[test]
    fn allow_and_deny_are_ranges_and_a_route_s_own_replace_its_server_s() {
        let text = guarded(
            "allow = [\"10.0.0.0/8\", \"::1\"]\ndeny = [\"10.0.0.7\"]",
            "",
            "deny = [\"10.1.0.0/16\"]",
        );
        let config = load(&text).unwrap();
        let server = &config.servers[0];
        let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
        let rules = server.access.as_ref().unwrap();
        assert!(rules.permits(ip("10.9.9.9")) && rules.permits(ip("::1")));
        assert!(!rules.permits(ip("10.0.0.7")) && !rules.permits(ip("192.0.2.1")));
        let route = |prefix: &str| (server.routes.iter()).find(|r| r.prefix == prefix).unwrap();
        assert_eq!(route("/").access.as_ref(), Some(rules), "inherited");
        let own = route("/admin/").access.as_ref().unwrap();
        assert!(
            own.allow.is_none(),
            "the route's rules replace the server's, allow too"
        );
        assert!(!own.permits(ip("10.1.2.3")) && own.permits(ip("192.0.2.1")));
        let lifted = load(&guarded("deny = [\"0.0.0.0/0\", \"::/0\"]", "deny = []", "")).unwrap();
        let lifted = &lifted.servers[0];
        let root = lifted.routes.iter().find(|r| r.prefix == "/").unwrap();
        assert!(root.access.as_ref().unwrap().permits(ip("192.0.2.1")));
        let admin = lifted.routes.iter().find(|r| r.prefix == "/admin/").unwrap();
        assert!(!admin.access.as_ref().unwrap().permits(ip("192.0.2.1")));
        assert!(load(MINIMAL).unwrap().servers[0].routes[0].access.is_none());
    }

    #[test]
    fn bad_access_entries_are_located_and_named() {
        let errors = [
            (
                "allow = [\"10.0.0.1/8\"]",
                "FILE:6:10: allow: `10.0.0.1/8` has host bits set (the range starts at 10.0.0.0)",
            ),
            (
                "deny = [\"::1\", \"2001:db8::/129\"]",
                "FILE:6:16: deny: `2001:db8::/129`: the prefix length must be 0 to 128",
            ),
            (
                "deny = [\"localhost\"]",
                "FILE:6:9: deny: `localhost` is not an address",
            ),
            ("allow = []", "FILE:6:9: allow = [] would refuse every client"),
            ("allow = \"10.0.0.0/8\"", "FILE:6:9: invalid type"),
        ];
        assert_refused(route, &errors);
        let on_server = load(&guarded("deny = [\"10.0.0.0/33\"]", "", "")).unwrap_err();
        assert!(
            on_server.starts_with("FILE:3:9: deny: `10.0.0.0/33`"),
            "{on_server}"
        );
    }

    #[test]
    fn basic_auth_reads_its_users_file_beside_the_config() {
        let files = [("users", ALICE), ("admins", ALICE)];
        let text = guarded(
            "basic_auth = { realm = \"staging\", users = \"users\" }",
            "",
            "basic_auth = { realm = \"admins\", users = \"admins\" }\nforward_auth = true",
        );
        let config = load_beside(&files, &text).unwrap();
        let server = &config.servers[0];
        let auth = server.basic_auth.as_ref().unwrap();
        assert_eq!(auth.realm, "staging");
        assert!(auth.users.path().ends_with("users") && auth.users.verify("alice", b"wonder land"));
        let route = |prefix: &str| (server.routes.iter()).find(|r| r.prefix == prefix).unwrap();
        let root = route("/");
        assert_eq!(root.basic_auth.as_ref().unwrap().realm, "staging");
        assert!(
            Arc::ptr_eq(&root.basic_auth.as_ref().unwrap().users, &auth.users),
            "inherited, not read again"
        );
        assert!(root.request_headers.drops(b"Authorization"), "kept from the app");
        let admin = route("/admin/");
        assert_eq!(admin.basic_auth.as_ref().unwrap().realm, "admins");
        assert!(!admin.request_headers.drops(b"authorization"), "forward_auth");
        // Turned off on a route; forward_auth on the server reaches the routes.
        let text = guarded(
            "basic_auth = { realm = \"staging\", users = \"users\" }\nforward_auth = true",
            "",
            "basic_auth = false",
        );
        let config = load_beside(&files, &text).unwrap();
        let routes = &config.servers[0].routes;
        let admin = routes.iter().find(|r| r.prefix == "/admin/").unwrap();
        assert!(admin.basic_auth.is_none() && !admin.request_headers.drops(b"authorization"));
        let root = routes.iter().find(|r| r.prefix == "/").unwrap();
        assert!(root.basic_auth.is_some() && !root.request_headers.drops(b"authorization"));
        // A route without basic_auth forwards Authorization as any header.
        let plain = load(&guarded("", "", "")).unwrap();
        assert!(!plain.servers[0].routes[0].request_headers.drops(b"authorization"));
    }

    #[test]
    fn basic_auth_errors_name_the_key_and_the_users_file_s_line() {
        let files = [
            ("users", ALICE),
            ("md5", "# legacy\ncarol:$apr1$e9FCtnVR$RxGPqAQEPNfQj7NWEMpdt1\n"),
        ];
        let errors = [
            (
                "basic_auth = { realm = \"x\", users = \"md5\" }",
                "FILE:6:14: basic_auth: users: DIR/md5:2: user \"carol\": Apache's MD5 (`$apr1$`) is refused",
            ),
            (
                "basic_auth = { realm = \"x\", users = \"missing\" }",
                "FILE:6:14: basic_auth: users: DIR/missing: No such file",
            ),
            (
                "basic_auth = { realm = \"x\", users = \"public\" }",
                "FILE:6:14: basic_auth: users: DIR/public: not a file",
            ),
            (
                "basic_auth = { users = \"users\" }",
                "FILE:6:14: basic_auth needs `realm`",
            ),
            (
                "basic_auth = { realm = \"x\" }",
                "FILE:6:14: basic_auth needs `users`",
            ),
            (
                "basic_auth = { realm = \"x\", users = \"users\", cost = 10 }",
                "FILE:6:14: basic_auth: unknown key `cost`",
            ),
            (
                "basic_auth = { realm = \"a\\nb\", users = \"users\" }",
                "FILE:6:14: basic_auth: `realm` is a non-empty text",
            ),
            ("basic_auth = true", "FILE:6:14: basic_auth = true: say whose"),
            ("basic_auth = \"users\"", "FILE:6:14: basic_auth is {"),
            (
                "forward_auth = true",
                "FILE:6:16: forward_auth goes with basic_auth",
            ),
        ];
        for (line, expected) in errors {
            let text = format!(
                "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n[[server.route]]\nprefix = \"/\"\nroot = \"public\"\n{line}\n"
            );
            let error = load_beside(&files, &text).unwrap_err();
            assert!(error.starts_with(expected), "{line}: {error}");
        }
        let on_server = guarded("basic_auth = false", "", "");
        let error = load_beside(&files, &on_server).unwrap_err();
        assert!(error.starts_with("FILE:3:14: basic_auth is {"), "{error}");
        let forward_alone = guarded("forward_auth = true", "", "");
        let error = load_beside(&files, &forward_alone).unwrap_err();
        assert!(
            error.starts_with("FILE:3:16: forward_auth goes with basic_auth"),
            "{error}"
        );
        let forward_for_one_route = guarded(
            "forward_auth = true",
            "",
            "basic_auth = { realm = \"x\", users = \"users\" }",
        );
        assert!(load_beside(&files, &forward_for_one_route).is_ok());
        let forward_for_none = guarded("forward_auth = true", "", "basic_auth = false");
        let error = load_beside(&files, &forward_for_none).unwrap_err();
        assert!(
            error.starts_with("FILE:3:16: forward_auth goes with basic_auth"),
            "{error}"
        );
    }
}
