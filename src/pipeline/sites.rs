//! The servers and routes of the config, as a worker runs them: which server a request's
//! host picks on its address, which route its path picks on that server, and what handles
//! the route.
//!
//! Built once per worker from the config; each route knows its place in the response
//! counters, so nothing about routing is recomputed per request.

use std::collections::HashMap;

use regex::RegexSet;

use crate::config::answer::{Fixed, Redirect, Template};
use crate::config::{Address, Config, FileOptions, Matching, Route as RouteConfig, Serve};
use crate::http::request::RequestHead;
use crate::http::target;
use crate::stats::NO_ROUTE;

use super::filter::{RequestFilter, ResponseFilter};
use super::guard::{ConnectionLimit, Guards, RateLimit};
use super::names::Names;

/// What answers a route's requests.
pub enum Handler<'c> {
    /// A redirect, answered at once.
    Redirect(&'c Redirect),
    /// A fixed response.
    Fixed(&'c Fixed),
    /// Static files beneath a root (`root`: its index in the worker's `StaticFiles`).
    Files { root: usize, options: &'c FileOptions },
    /// The upstream at this index in the config.
    Proxy { upstream: usize },
}

/// One route as the worker runs it.
pub struct Route<'c> {
    pub config: &'c RouteConfig,
    /// The route's index in the response counters.
    pub counted_as: usize,
    pub handler: Handler<'c>,
    /// Run after routing, before the handler (access rules, limits, auth).
    pub request_filters: Vec<RequestFilter<'c>>,
    /// Run on every response's head before it goes out (header rules).
    pub response_filters: Vec<ResponseFilter<'c>>,
    /// Its upstream's responses are read at the upstream's pace, what the client has not
    /// taken spilling to a temporary file.
    pub buffers_responses: bool,
    /// Its requests' bodies are read whole before an upstream is picked.
    pub buffers_requests: bool,
}

impl Route<'_> {
    /// Where the target sent upstream starts in the raw `target` (routed as `path`): past an
    /// absolute-form target's authority and, when the route strips its prefix, past the raw
    /// bytes that spell it. None when no cut of the raw bytes is faithful (400).
    pub fn upstream_target_start(&self, target: &[u8], path: &str) -> Option<usize> {
        let strip = self.config.strip_prefix.then_some(self.config.prefix.as_str());
        target::upstream_target_start(target, path, strip)
    }
}

/// One server: its index in the config and its routes in precedence order (exact, regex in
/// file order, longest prefix first: the first that matches is the one).
pub struct Site<'c> {
    pub index: usize,
    pub config: &'c crate::config::Server,
    pub routes: Vec<Route<'c>>,
    /// What a request no route takes passes before its 404: the server's own guards.
    pub request_filters: Vec<RequestFilter<'c>>,
    /// What a response no route made (a 404) goes through: the server's header rules.
    pub response_filters: Vec<ResponseFilter<'c>>,
    /// Some route's `response_headers` name parts of the request: a proxied response, whose
    /// head comes after the request's buffer moved on, needs them kept.
    pub response_rules_fill: bool,
    /// `redirect_https`: the redirect every request gets (but ACME challenges).
    pub https_redirect: Option<Redirect>,
    /// `limit_connections`: each client's connections counted, for the whole instance.
    pub connection_limit: Option<ConnectionLimit>,
    /// Lookup tables, for servers with more routes than a scan handles well.
    index_of: Option<RouteIndex>,
}

/// Routes up to this many are scanned in order (a few string compares beat hashing).
const SCANNED_ROUTES: usize = 16;

/// A server's routes by kind, so that lookup costs a hash per prefix length and one pass of
/// a `RegexSet`, however many routes there are.
struct RouteIndex {
    exact: HashMap<String, usize>,
    /// All regex routes as one automaton, and their positions (in file order).
    regexes: Option<(RegexSet, Vec<usize>)>,
    /// Prefix routes by prefix, grouped by length, longest first.
    prefixes: Vec<(usize, HashMap<String, usize>)>,
}

impl RouteIndex {
    /// The index of `routes`, whose regex routes' patterns make `patterns` (in route order).
    fn new(routes: &[Route], patterns: Option<&RegexSet>) -> RouteIndex {
        let mut index = RouteIndex {
            exact: HashMap::new(),
            regexes: None,
            prefixes: Vec::new(),
        };
        let mut positions = Vec::new();
        for (position, route) in routes.iter().enumerate() {
            let prefix = route.config.prefix.clone();
            match route.config.matching {
                Matching::Exact => {
                    index.exact.insert(prefix, position);
                }
                Matching::Regex(_) => positions.push(position),
                Matching::Prefix => match index.prefixes.iter_mut().find(|(len, _)| *len == prefix.len()) {
                    Some((_, by_prefix)) => drop(by_prefix.insert(prefix, position)),
                    None => index
                        .prefixes
                        .push((prefix.len(), HashMap::from([(prefix, position)]))),
                },
            }
        }
        index.prefixes.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        index.regexes = patterns.map(|set| (set.clone(), positions));
        index
    }

    /// The position of the route `path` takes, among those `usable`.
    fn route(&self, path: &str, routes: &[Route], usable: impl Fn(&Route) -> bool) -> Option<usize> {
        let usable_at = |position: &usize| usable(&routes[*position]);
        if let Some(position) = self.exact.get(path).copied().filter(usable_at) {
            return Some(position);
        }
        if let Some((set, positions)) = &self.regexes {
            let found = set
                .matches(path)
                .into_iter()
                .map(|i| positions[i])
                .find(usable_at);
            if found.is_some() {
                return found;
            }
        }
        self.prefixes.iter().find_map(|(len, by_prefix)| {
            let candidate = path.get(..*len)?;
            by_prefix
                .get(candidate)
                .filter(|&&position| usable_at(&position) && routes[position].config.matches(path))
                .copied()
        })
    }
}

impl<'c> Site<'c> {
    /// The route a client's request for a normalized path takes: an exact one, else the
    /// first regex one that matches, else the longest prefix, internal routes aside.
    pub fn route(&self, path: &str) -> Option<&Route<'c>> {
        let client_route = |route: &Route| !route.config.internal;
        match &self.index_of {
            None => (self.routes.iter()).find(|route| client_route(route) && route.config.matches(path)),
            Some(index) => index
                .route(path, &self.routes, client_route)
                .map(|p| &self.routes[p]),
        }
    }

    /// The internal route for a normalized path an upstream offloaded (`X-Accel-Redirect`).
    pub fn internal_route(&self, path: &str) -> Option<&Route<'c>> {
        (self.routes.iter()).find(|route| route.config.internal && route.config.matches(path))
    }

    /// The internal route whose root holds the absolute `file` an upstream offloaded
    /// (`X-Sendfile`), and the file's path beneath that root. `None` for a path with `.`,
    /// `..` or empty segments, or beneath no internal root.
    pub fn internal_root_of<'f>(&self, file: &'f str) -> Option<(&Route<'c>, &'f str)> {
        self.routes
            .iter()
            .filter(|route| route.config.internal)
            .find_map(|route| {
                let Handler::Files { options, .. } = &route.handler else {
                    return None;
                };
                let root = options.root.to_str()?.trim_end_matches('/');
                let relative = file.strip_prefix(root)?.strip_prefix('/')?;
                let plain = relative
                    .split('/')
                    .all(|segment| !matches!(segment, "" | "." | ".."));
                plain.then_some((route, relative))
            })
    }

    /// True when an upstream's offload can land somewhere on this server.
    pub fn has_internal_routes(&self) -> bool {
        self.routes.iter().any(|route| route.config.internal)
    }
}

/// Every server, and the servers each listening socket of the worker feeds.
pub struct Sites<'c> {
    sites: Vec<Site<'c>>,
    /// Per listener (in the order of `Config::listeners`): the servers sharing its address.
    by_listener: Vec<Names>,
    /// Each route's (server, position), in the order of its `counted_as`.
    by_count: Vec<(usize, usize)>,
}

impl<'c> Sites<'c> {
    /// Compiles `config`'s servers for a worker whose listener `i` listens on `listeners[i]`;
    /// their limits count in `guards`' tables. Static routes get root ids in order (the
    /// order `roots` lists their options, for `StaticFiles::open`). Fails for an address no
    /// server of `config` listens on.
    pub fn new(
        config: &'c Config,
        listeners: &[Address],
        guards: &Guards,
    ) -> Result<(Sites<'c>, Vec<&'c FileOptions>), String> {
        let mut roots = Vec::new();
        let mut by_count = Vec::new();
        let sites = (config.servers.iter().enumerate())
            .map(|(index, server)| Site {
                index,
                config: server,
                index_of: None,
                response_rules_fill: (server.routes.iter())
                    .any(|route| route.response_headers.has_placeholders()),
                https_redirect: server.redirect_https.then(|| Redirect {
                    to: Template::parse_target("https://{host}{uri}").expect("a valid target"),
                    status: 301,
                }),
                connection_limit: (server.limit_connections.as_ref())
                    .map(|limit| ConnectionLimit::new(limit, guards)),
                request_filters: RequestFilter::guards(
                    (server.limit_requests.as_ref()).map(|limit| RateLimit::new(limit, guards)),
                    server.access.as_ref(),
                    server.basic_auth.as_ref(),
                ),
                response_filters: (!server.response_headers.is_empty())
                    .then_some(ResponseFilter::Headers(&server.response_headers))
                    .into_iter()
                    .collect(),
                routes: (server.routes.iter().enumerate())
                    .map(|(position, route)| {
                        by_count.push((index, position));
                        let counted_as = NO_ROUTE + by_count.len();
                        let rules = (!route.response_headers.is_empty())
                            .then_some(ResponseFilter::Headers(&route.response_headers));
                        let response_filters =
                            location_rewrite(config, route).into_iter().chain(rules).collect();
                        let has_upstream = match &route.serve {
                            Serve::Proxy(_) => true,
                            Serve::Files(options) => options.fallback.is_some(),
                            Serve::Redirect(_) | Serve::Fixed(_) => false,
                        };
                        let handler = match &route.serve {
                            Serve::Files(options) => {
                                roots.push(options);
                                Handler::Files {
                                    root: roots.len() - 1,
                                    options,
                                }
                            }
                            Serve::Proxy(upstream) => Handler::Proxy { upstream: *upstream },
                            Serve::Redirect(redirect) => Handler::Redirect(redirect),
                            Serve::Fixed(fixed) => Handler::Fixed(fixed),
                        };
                        Route {
                            config: route,
                            counted_as,
                            handler,
                            request_filters: RequestFilter::guards(
                                (route.limit_requests.as_ref()).map(|limit| RateLimit::new(limit, guards)),
                                route.access.as_ref(),
                                route.basic_auth.as_ref(),
                            ),
                            response_filters,
                            buffers_responses: has_upstream && route.response_buffering,
                            buffers_requests: has_upstream && route.request_buffering,
                        }
                    })
                    .collect(),
            })
            .map(|mut site: Site<'c>| {
                site.index_of = (site.routes.len() > SCANNED_ROUTES)
                    .then(|| RouteIndex::new(&site.routes, site.config.patterns.as_ref()));
                site
            })
            .collect();
        let mut by_listener = Vec::with_capacity(listeners.len());
        for addr in listeners {
            let servers = config.servers_on(addr);
            if servers.is_empty() {
                return Err(format!("no server of the config listens on {addr}"));
            }
            by_listener.push(Names::new(config, &servers));
        }
        let sites = Sites {
            sites,
            by_listener,
            by_count,
        };
        Ok((sites, roots))
    }

    /// Server `index` of the config.
    pub fn site(&self, index: usize) -> &Site<'c> {
        &self.sites[index]
    }

    /// The route counted as `counted_as` in the response counters.
    pub fn counted_as(&self, counted_as: usize) -> Option<&Route<'c>> {
        let &(site, position) = self.by_count.get(counted_as.checked_sub(NO_ROUTE + 1)?)?;
        Some(&self.sites[site].routes[position])
    }

    /// The server for a request that came in on `listener` naming `host` (its effective
    /// host, if any): the address's default server unless a name picks another.
    pub fn server_for(&self, listener: usize, host: Option<&[u8]>) -> &Site<'c> {
        &self.sites[self.by_listener[listener].server_for(host)]
    }

    /// The default server of `listener`'s address (for requests that never got a head).
    pub fn default_for(&self, listener: usize) -> usize {
        self.by_listener[listener].server_for(None)
    }
}

/// A route's `rewrite_location` as a filter, when the route has an upstream (its own, or a
/// static route's fallback, which gets the path as sent).
fn location_rewrite<'c>(config: &'c Config, route: &'c RouteConfig) -> Option<ResponseFilter<'c>> {
    let (upstream, prefix) = match &route.serve {
        Serve::Proxy(upstream) => (*upstream, route.strip_prefix.then_some(route.prefix.as_str())),
        Serve::Files(options) => (options.fallback?, None),
        Serve::Redirect(_) | Serve::Fixed(_) => return None,
    };
    (route.rewrite_location)
        .then(|| ResponseFilter::rewrite_location(&config.upstreams[upstream].servers, prefix))
}

/// The host a request names: the authority of an absolute-form target, which takes
/// precedence (RFC 9112 §3.2.2), else the Host header; without its port.
pub fn effective_host<'b>(head: &RequestHead, buf: &'b [u8]) -> Option<&'b [u8]> {
    let target = head.target.of(buf);
    let host = target::authority(target).or_else(|| head.host.map(|h| h.of(buf)))?;
    Some(without_port(host))
}

/// `host` without a `:port` suffix (an IPv6 literal keeps its brackets).
fn without_port(host: &[u8]) -> &[u8] {
    let colon = match host.iter().rposition(|&b| b == b':') {
        Some(at) if !host[at..].contains(&b']') => at,
        _ => return host,
    };
    &host[..colon]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{self, HeadLimits};

    fn host_of(text: &str) -> Option<String> {
        let head = request::parse(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        effective_host(&head, text.as_bytes()).map(|h| String::from_utf8(h.to_vec()).unwrap())
    }

    #[test]
    fn the_effective_host_comes_from_the_target_then_the_host_header() {
        assert_eq!(
            host_of("GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n").as_deref(),
            Some("a.example")
        );
        assert_eq!(
            host_of("GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n").as_deref(),
            Some("b.example")
        );
        assert_eq!(
            host_of("GET / HTTP/1.1\r\nHost: [::1]:81\r\n\r\n").as_deref(),
            Some("[::1]")
        );
        assert_eq!(
            host_of("GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n").as_deref(),
            Some("[::1]")
        );
        assert_eq!(host_of("GET / HTTP/1.0\r\n\r\n"), None);
    }

    /// nginx's precedence: exact, then the first regex in file order, then the longest
    /// prefix; the same whether the routes are scanned or looked up in the index.
    #[test]
    fn exact_then_regex_in_file_order_then_longest_prefix() {
        let routes = [
            ("prefix", "/"),
            ("regex", "\\\\.php$"),
            ("prefix", "/api/"),
            ("exact", "/favicon.ico"),
            ("regex", "^/api/v[0-9]+/"),
            ("prefix", "/static/"),
            ("prefix", "/static/img/"),
            ("exact", "/api/"),
        ];
        let table = [
            ("/favicon.ico", "= /favicon.ico"),
            ("/api/", "= /api/"),
            ("/index.php", "~ \\.php$"),
            ("/api/v2/x.php", "~ \\.php$"),
            ("/api/v2/users", "~ ^/api/v[0-9]+/"),
            ("/api/users", "/api/"),
            ("/static/img/a.png", "/static/img/"),
            ("/static/a.css", "/static/"),
            ("/favicon.ico.bak", "/"),
            ("/other", "/"),
        ];
        // The same routes alone (scanned) and among 40 more (indexed).
        for filler in [0, 40] {
            let mut text = String::from("[[server]]\nlisten = [\"127.0.0.1:1\"]\n");
            for (key, path) in routes {
                text.push_str(&format!(
                    "[[server.route]]\n{key} = \"{path}\"\nupstream = \"a\"\n"
                ));
            }
            for i in 0..filler {
                text.push_str(&format!(
                    "[[server.route]]\nprefix = \"/filler/{i}/\"\nupstream = \"a\"\n"
                ));
            }
            text.push_str("[upstream.a]\nservers = [\"127.0.0.1:3\"]\n");
            let config = crate::config::load_text(std::path::Path::new("t.toml"), &text).unwrap();
            let (sites, _) = Sites::new(
                &config,
                &config.listen_addresses(),
                &crate::pipeline::guard::for_tests(),
            )
            .unwrap();
            let site = sites.site(0);
            assert_eq!(site.index_of.is_some(), filler > 0);
            for (path, expected) in table {
                let route = site.route(path).map(|r| r.config.label());
                assert_eq!(
                    route.as_deref(),
                    Some(expected),
                    "{path} with {filler} more routes"
                );
            }
            let filler_route = site.route("/filler/7/x").map(|r| r.config.label());
            assert_eq!(
                filler_route.as_deref(),
                Some(if filler > 7 { "/filler/7/" } else { "/" })
            );
        }
    }

    #[test]
    fn routes_are_counted_after_no_route_server_by_server() {
        let text = "[[server]]\nlisten = [\"127.0.0.1:1\"]\n[[server.route]]\nprefix = \"/\"\nupstream = \"a\"\n[[server.route]]\nprefix = \"/api/\"\nupstream = \"a\"\n[[server]]\nlisten = [\"127.0.0.1:2\"]\n[[server.route]]\nprefix = \"/\"\nupstream = \"a\"\n[upstream.a]\nservers = [\"127.0.0.1:3\"]\n";
        let config = crate::config::load_text(std::path::Path::new("t.toml"), text).unwrap();
        let (sites, roots) = Sites::new(
            &config,
            &config.listen_addresses(),
            &crate::pipeline::guard::for_tests(),
        )
        .unwrap();
        assert!(roots.is_empty());
        let first = sites.server_for(0, None);
        assert_eq!(first.index, 0);
        assert_eq!(first.route("/api/x").unwrap().counted_as, NO_ROUTE + 1);
        assert_eq!(first.route("/x").unwrap().counted_as, NO_ROUTE + 2);
        assert_eq!(
            sites.server_for(1, Some(b"any")).route("/").unwrap().counted_as,
            NO_ROUTE + 3
        );
        assert_eq!(sites.default_for(1), 1);
    }
}
