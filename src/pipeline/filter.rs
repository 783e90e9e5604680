//! Filters: request filters run after routing and may answer instead of the handler (access
//! rules, rate limits, auth); response filters see every response's head and body on the
//! way to the client (header rules, compression).
//!
//! Request filters are a route's (and, for requests no route takes, a server's):
//! `limit_requests` first (as nginx's `limit_req` comes before its access phase, so a
//! password guesser is slowed before any password is checked), then `allow` / `deny`, so a
//! refused address never costs a password check, then `basic_auth`. What they keep from one
//! request to the next lives in the worker's [`FilterState`], and in the connection's
//! [`Standing`] (a request that waited for its turn). Response filters are a route's: they
//! see each head before it goes out (body filters, such as compression, come with their
//! per-response state).

use std::net::IpAddr;
use std::time::Instant;

use crate::config::access::{AccessRules, BasicAuth};
use crate::config::answer::Parts;
use crate::config::{Address, HeaderRules, UpstreamServer};
use crate::http::respond::{respond_simple, Respond};
use crate::http::response::ResponseHead;
use crate::http::target;
use crate::stats::GuardEvent;

use super::auth::{self, Verified};
use super::guard::{RateLimit, Standing};
use super::Request;

/// What a request filter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The request goes on to the next filter, then the handler.
    Pass,
    /// The filter answered the request itself.
    Answered,
    /// The request waits (in the connection's input) until this instant, then goes on
    /// without being checked again (see [`Standing`]).
    Wait(Instant),
}

/// What request filters look at: the request, who sent it, and when.
pub struct Subject<'r> {
    pub request: &'r Request<'r>,
    /// The client's address (the address a trusted proxy or the PROXY protocol gave, else
    /// the peer's).
    pub client: IpAddr,
    pub now: Instant,
}

/// A check a route runs on its requests before the handler.
pub enum RequestFilter<'c> {
    /// `limit_requests`: a bucket per client (or header value) for the whole instance.
    Rate(RateLimit<'c>),
    /// `allow` / `deny`: a client address the rules refuse gets 403.
    Access(&'c AccessRules),
    /// `basic_auth`: a request without credentials the users file holds gets 401, with
    /// `challenge` as its `WWW-Authenticate`.
    BasicAuth { auth: &'c BasicAuth, challenge: Vec<u8> },
}

/// What request filters keep in a worker from one request to the next.
#[derive(Default)]
pub struct FilterState {
    /// Credentials that verified (`basic_auth`).
    pub verified: Verified,
    /// What the limits on clients did, in [`GuardEvent::ALL`] order.
    pub limit_events: [u64; GuardEvent::ALL.len()],
}

impl FilterState {
    /// Counts one `event` of the limits.
    pub fn count(&mut self, event: GuardEvent) {
        self.limit_events[event as usize] += 1;
    }
}

impl<'c> RequestFilter<'c> {
    /// The filters of a route or server with these guards, in the order they run: the rate,
    /// the address, then the credentials. Rules that refuse nobody (`deny = []`) make none.
    pub fn guards(
        rate: Option<RateLimit<'c>>,
        access: Option<&'c AccessRules>,
        basic_auth: Option<&'c BasicAuth>,
    ) -> Vec<RequestFilter<'c>> {
        let access = access.filter(|rules| rules.allow.is_some() || !rules.deny.is_empty());
        let basic_auth = basic_auth.map(|auth| RequestFilter::BasicAuth {
            auth,
            challenge: auth.challenge().into_bytes(),
        });
        (rate.map(RequestFilter::Rate).into_iter())
            .chain(access.map(RequestFilter::Access))
            .chain(basic_auth)
            .collect()
    }
}

impl RequestFilter<'_> {
    /// Lets the request of `subject` through, has it wait, or answers it through `respond`;
    /// what the connection keeps between requests is in `standing`.
    pub fn check(
        &self,
        subject: &Subject,
        state: &mut FilterState,
        standing: &mut Standing,
        respond: &mut impl Respond,
    ) -> Check {
        let request = subject.request;
        match self {
            RequestFilter::Rate(limit) => limit.check(subject, standing, respond, state),
            RequestFilter::Access(rules) if rules.permits(subject.client) => Check::Pass,
            RequestFilter::Access(_) => {
                respond_simple(respond, 403, &[]);
                Check::Answered
            }
            RequestFilter::BasicAuth { auth, challenge } => {
                if auth::authorized(auth, request.head, request.buf, &mut state.verified) {
                    return Check::Pass;
                }
                respond_simple(respond, 401, &[("WWW-Authenticate", challenge)]);
                Check::Answered
            }
        }
    }
}

/// A change a route makes to its responses' heads on their way out.
#[derive(Debug)]
pub enum ResponseFilter<'c> {
    /// nginx's `proxy_redirect default`: a `Location` naming one of the upstream's servers
    /// (`http://127.0.0.1:4010/login`, as an app that knows its own address writes it)
    /// becomes a path on the host the client asked (`/login`), with the route's prefix in
    /// front when the route strips it (`/api/login`).
    RewriteLocation {
        /// How a `Location` may name the upstream's servers (`127.0.0.1:4010`; also
        /// `10.0.0.2` for a server on port 80).
        authorities: Vec<String>,
        prefix: Option<&'c str>,
    },
    /// `response_headers`: lines removed, set (replacing any of the name) and added.
    Headers(&'c HeaderRules),
}

impl<'c> ResponseFilter<'c> {
    /// Rewrites `Location`s naming one of `servers` (see [`ResponseFilter::RewriteLocation`]).
    pub fn rewrite_location(servers: &[UpstreamServer], prefix: Option<&'c str>) -> ResponseFilter<'c> {
        let authorities = (servers.iter())
            .filter_map(|server| match server.addr {
                Address::Tcp(addr) => Some(addr),
                Address::Unix(_) => None,
            })
            .flat_map(|addr| {
                let bare = (addr.port() == 80).then(|| addr.ip().to_string());
                [Some(addr.to_string()), bare].into_iter().flatten()
            })
            .collect();
        ResponseFilter::RewriteLocation { authorities, prefix }
    }
}

impl ResponseFilter<'_> {
    /// Sees (and may change) the head before it is sent; `parts` fill the placeholders of
    /// header rules (only rules without any go without them).
    pub fn head(&self, head: &mut ResponseHead, parts: Option<&Parts>) {
        match self {
            ResponseFilter::Headers(rules) => {
                for name in rules
                    .remove
                    .iter()
                    .map(String::as_str)
                    .chain(rules.set.iter().map(|(n, _)| n.as_str()))
                {
                    head.remove(name);
                }
                for (name, value) in rules.set.iter().chain(&rules.add) {
                    match value.literal() {
                        Some(text) => head.add(name.as_bytes(), text.as_bytes()),
                        None => {
                            let mut filled = Vec::new();
                            value.write(parts, &mut filled);
                            head.add(name.as_bytes(), &filled);
                        }
                    }
                }
            }
            // Location means something in a 201 and a redirect only: other heads are not read.
            ResponseFilter::RewriteLocation { .. }
                if head.status != 201 && !(300..400).contains(&head.status) => {}
            ResponseFilter::RewriteLocation { authorities, prefix } => {
                let rewritten =
                    (head.get("location")).and_then(|v| relative_location(v, authorities, *prefix));
                if let Some(location) = rewritten {
                    head.remove("location");
                    head.add(b"Location", &location);
                }
            }
        }
    }
}

/// `location` as a path on the client's host, when it is an absolute http(s) URL whose
/// authority is one of `authorities`; `prefix` goes back in front.
fn relative_location(location: &[u8], authorities: &[String], prefix: Option<&str>) -> Option<Vec<u8>> {
    let authority = target::authority(location)?;
    if !authorities
        .iter()
        .any(|ours| authority.eq_ignore_ascii_case(ours.as_bytes()))
    {
        return None;
    }
    let rest = &location[target::origin_start(location)?..];
    let mut relative = prefix.unwrap_or("").trim_end_matches('/').as_bytes().to_vec();
    if !rest.starts_with(b"/") {
        relative.push(b'/');
    }
    relative.extend_from_slice(rest);
    Some(relative)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn servers(addrs: &[&str]) -> Vec<UpstreamServer> {
        (addrs.iter())
            .map(|a| UpstreamServer::new(a.parse::<SocketAddr>().unwrap()))
            .collect()
    }

    fn rewritten(location: &str, prefix: Option<&str>) -> Option<String> {
        let servers = servers(&["127.0.0.1:4010", "[::1]:4011", "10.0.0.2:80"]);
        let ResponseFilter::RewriteLocation { authorities, .. } =
            ResponseFilter::rewrite_location(&servers, prefix)
        else {
            unreachable!("rewrite_location makes a RewriteLocation");
        };
        relative_location(location.as_bytes(), &authorities, prefix).map(|l| String::from_utf8(l).unwrap())
    }

    #[test]
    fn a_location_naming_an_upstream_server_becomes_relative() {
        assert_eq!(
            rewritten("http://127.0.0.1:4010/login?next=/a", None).as_deref(),
            Some("/login?next=/a")
        );
        assert_eq!(rewritten("HTTPS://[::1]:4011", None).as_deref(), Some("/"));
        assert_eq!(rewritten("http://10.0.0.2/x", None).as_deref(), Some("/x"));
        assert_eq!(rewritten("http://10.0.0.2:80/x", None).as_deref(), Some("/x"));
        assert_eq!(
            rewritten("http://127.0.0.1:4010/login", Some("/api/")).as_deref(),
            Some("/api/login")
        );
        assert_eq!(
            rewritten("http://127.0.0.1:4010?q", Some("/api")).as_deref(),
            Some("/api/?q")
        );
    }

    #[test]
    fn other_locations_are_left_alone() {
        for location in [
            "http://example.com/login",
            "/login",
            "http://127.0.0.1:4012/",
            "http://127.0.0.1/",
            "ftp://127.0.0.1:4010/",
        ] {
            assert_eq!(rewritten(location, None), None, "{location}");
        }
        let mut head = ResponseHead::default();
        head.relayed(302, b"Found");
        head.add(b"Location", b"http://127.0.0.1:4010/in");
        head.add(b"X-Other", b"1");
        let servers = servers(&["127.0.0.1:4010"]);
        let filter = ResponseFilter::rewrite_location(&servers, Some("/app/"));
        filter.head(&mut head, None);
        assert_eq!(head.get("location"), Some(&b"/app/in"[..]));
        assert_eq!(head.lines().count(), 2);
    }
}
