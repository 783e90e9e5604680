//! The limits on clients, for the whole instance (their tables are in `src/shared`):
//! `limit_requests` as a route's request filter ([`RateLimit`]), `limit_connections` as a
//! server's count of each client's connections ([`ConnectionLimit`]), and what a connection
//! keeps of them from one request to the next ([`Standing`]).
//!
//! A connection counts against the server and client of its latest request on a server
//! with `limit_connections`, from that request until it closes (or a later request on it
//! names another server or client): the server is known only once a request's host picks
//! it, and the client only once the PROXY header or a trusted proxy's `X-Forwarded-For`
//! said who it is. A connection over the limit has that request answered 503 and closes.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{LimitKey, RequestLimit};
use crate::http::respond::{respond_simple, Respond};
use crate::http::response::format_into;
use crate::shared::{limit_key, Conns, Hold, LimitClock, Rate, Rates, Shared, Taken, Verdict};
use crate::stats::GuardEvent;

use super::filter::{Check, FilterState, Subject};

/// What a connection keeps of the limits between its requests.
#[derive(Debug, Default)]
pub struct Standing {
    /// Where it is counted under its server's `limit_connections`, if it is.
    counted: Option<Counted>,
    /// The request at the front of its input waited for its turn under its route's
    /// `limit_requests`, which counted it then: it goes when handed over again.
    turn_taken: bool,
}

impl Standing {
    /// The request at the front of the input is answered (or being answered): the next
    /// one has taken no turn yet.
    pub fn next_request(&mut self) {
        self.turn_taken = false;
    }
}

/// A connection's cell in the shared table, given back when dropped (the connection closed,
/// or now counts elsewhere). A worker that dies has its cells given back by the master.
#[derive(Debug)]
struct Counted {
    conns: Conns,
    hold: Hold,
    key: u64,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.conns.give_back(self.hold);
    }
}

/// The limits' view of the shared state: the tables, this worker's pid (which its counted
/// connections carry) and the clock the buckets read.
#[derive(Debug, Clone, Copy)]
pub struct Guards {
    shared: &'static Shared,
    pid: u32,
    clock: LimitClock,
}

impl Guards {
    /// The limits of this process (a worker) over `shared`.
    pub fn new(shared: &'static Shared) -> Guards {
        Guards {
            shared,
            pid: std::process::id(),
            clock: LimitClock::new(),
        }
    }
}

/// Limits over a shared state of their own (for tests of the pipeline's parts).
#[cfg(test)]
pub fn for_tests() -> Guards {
    Guards::new(Shared::create().expect("shared state"))
}

/// A server's `limit_connections`.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: u32,
    scope: u64,
    conns: Conns,
    pid: u32,
}

impl ConnectionLimit {
    pub fn new(limit: &crate::config::ConnectionLimit, guards: &Guards) -> ConnectionLimit {
        ConnectionLimit {
            max: limit.max,
            scope: guards.shared.limit_scope(&limit.scope),
            conns: guards.shared.conns(),
            pid: guards.pid,
        }
    }

    /// Counts the connection of `standing` for `client` (unless it is already), and says
    /// what came of it.
    pub fn admit(&self, client: IpAddr, standing: &mut Standing) -> Admission {
        let (address, len) = address_bytes(client);
        let key = limit_key(self.scope, &address[..len]);
        if standing
            .counted
            .as_ref()
            .is_some_and(|counted| counted.key == key)
        {
            return Admission::Counted;
        }
        // Counted for another server or client before: that count ends here.
        standing.counted = None;
        match self.conns.take(key, self.max, self.pid) {
            Taken::Held(hold) => {
                standing.counted = Some(Counted {
                    conns: self.conns,
                    hold,
                    key,
                });
                Admission::Counted
            }
            Taken::Over => Admission::Over,
            Taken::Full => Admission::Uncounted,
        }
    }

    /// The connection of `standing` now has a request on a server without the limit: it
    /// no longer counts against any.
    pub fn forget(standing: &mut Standing) {
        standing.counted = None;
    }
}

/// What [`ConnectionLimit::admit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The connection counts against the client (it did already, or does now).
    Counted,
    /// The client holds the server's limit already: the request is answered 503.
    Over,
    /// The table had no room for it: it goes uncounted.
    Uncounted,
}

/// A route's `limit_requests`: a request filter.
#[derive(Debug)]
pub struct RateLimit<'c> {
    limit: &'c RequestLimit,
    rate: Rate,
    scope: u64,
    rates: Rates,
    clock: LimitClock,
}

impl<'c> RateLimit<'c> {
    pub fn new(limit: &'c RequestLimit, guards: &Guards) -> RateLimit<'c> {
        RateLimit {
            limit,
            rate: Rate {
                interval_nanos: limit.interval.as_nanos() as u64,
                burst: limit.burst,
            },
            scope: guards.shared.limit_scope(&limit.scope),
            rates: guards.shared.rates(),
            clock: guards.clock,
        }
    }

    /// Counts the request in its key's bucket: it goes on, waits for its turn (`delay`), or
    /// is answered 429 with `Retry-After` (whole seconds, rounded up). What it did is
    /// counted in `state`.
    pub fn check(
        &self,
        subject: &Subject,
        standing: &mut Standing,
        respond: &mut impl Respond,
        state: &mut FilterState,
    ) -> Check {
        if standing.turn_taken {
            return Check::Pass;
        }
        let address;
        let value = match &self.limit.key {
            LimitKey::Client => {
                address = address_bytes(subject.client);
                &address.0[..address.1]
            }
            LimitKey::Header(name) => match subject.request.head.field(subject.request.buf, name) {
                Some(value) if !value.is_empty() => value,
                // Not limited, as nginx does not limit an empty key.
                _ => return Check::Pass,
            },
        };
        let key = limit_key(self.scope, value);
        let now = subject.now;
        match self.rates.take(key, self.rate, self.clock.nanos(now)) {
            Verdict::Within { ahead_nanos } if ahead_nanos == 0 || !self.limit.delay => Check::Pass,
            Verdict::Within { ahead_nanos } => {
                state.count(GuardEvent::RequestDelayed);
                standing.turn_taken = true;
                Check::Wait(now + Duration::from_nanos(ahead_nanos))
            }
            Verdict::Over { retry_nanos } => {
                state.count(GuardEvent::RequestRefused);
                let seconds = retry_nanos.div_ceil(1_000_000_000).max(1);
                let mut digits = [0u8; 20];
                let retry_after = format_into(&mut digits, format_args!("{seconds}"));
                respond_simple(respond, 429, &[("Retry-After", retry_after)]);
                Check::Answered
            }
        }
    }
}

/// An address as the limits key it (its first `len` bytes): an IPv4-mapped IPv6 address as
/// the IPv4 one.
fn address_bytes(ip: IpAddr) -> ([u8; 16], usize) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: u32) -> ConnectionLimit {
        let config = crate::config::ConnectionLimit {
            max,
            scope: "server test".to_string(),
        };
        ConnectionLimit::new(&config, &for_tests())
    }

    #[test]
    fn a_connection_counts_once_for_its_client_and_gives_its_place_back_when_dropped() {
        let limit = limit(1);
        let (v4, mapped): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "::ffff:192.0.2.1".parse().unwrap());
        let mut first = Standing::default();
        assert_eq!(limit.admit(v4, &mut first), Admission::Counted);
        assert_eq!(
            limit.admit(v4, &mut first),
            Admission::Counted,
            "its next request"
        );
        let mut second = Standing::default();
        assert_eq!(
            limit.admit(mapped, &mut second),
            Admission::Over,
            "an IPv4-mapped address is the IPv4 client"
        );
        drop(first);
        assert_eq!(limit.admit(mapped, &mut second), Admission::Counted);
    }

    #[test]
    fn a_connection_whose_client_changes_counts_for_the_new_one_only() {
        let limit = limit(1);
        let (a, b): (IpAddr, IpAddr) = ("2001:db8::a".parse().unwrap(), "2001:db8::b".parse().unwrap());
        let mut proxied = Standing::default();
        assert_eq!(limit.admit(a, &mut proxied), Admission::Counted);
        assert_eq!(limit.admit(b, &mut proxied), Admission::Counted);
        assert_eq!(
            limit.admit(a, &mut Standing::default()),
            Admission::Counted,
            "a's place is free"
        );
        ConnectionLimit::forget(&mut proxied);
        assert_eq!(
            limit.admit(b, &mut Standing::default()),
            Admission::Counted,
            "b's too"
        );
    }
}
