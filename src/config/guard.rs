//! The guards' settings: `limit_requests` (a server's or a route's) and `limit_connections`
//! (a server's), as the file writes them and as they are checked.
//!
//! Each limit carries its scope: a text naming where it is declared (the server's addresses
//! and names, and the route's path), which names its buckets in the instance's shared
//! memory. A reload that keeps the server and route keeps the scope, so clients keep their
//! buckets.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::http::request::is_token_byte;

/// `limit_requests`: a leaky bucket per key, for the whole instance (nginx's `limit_req`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimit {
    /// One request per this long: the rate's inverse (`10/s` is 100 ms).
    pub interval: Duration,
    /// Requests over the rate let through at once (or, with `delay`, queued).
    pub burst: u32,
    /// What the buckets are kept per.
    pub key: LimitKey,
    /// Requests within the burst wait for their turn at the rate instead of going at once
    /// (nginx's `limit_req` without `nodelay`).
    pub delay: bool,
    /// Where it is declared (`server 127.0.0.1:80 names a.example route /api/`).
    pub scope: String,
}

/// What a request limit keeps a bucket per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's address (the peer's, the PROXY protocol's source, or a trusted
    /// proxy's `X-Forwarded-For`).
    Client,
    /// The value of this request header (lowercase name). A request without it, or with
    /// it empty, is not limited (as nginx does not limit an empty key).
    Header(String),
}

/// `limit_connections`: connections per client address a server holds, in every worker
/// together (nginx's `limit_conn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimit {
    pub max: u32,
    /// Where it is declared (`server 127.0.0.1:80 names a.example`).
    pub scope: String,
}

/// The highest `N` of `rate = "N/s"` (or `N/m`).
pub const MAX_RATE: u64 = 1_000_000;
/// The highest `burst`.
pub const MAX_BURST: i64 = 1_000_000;

/// `limit_requests = { rate = "10/s", burst = 20, key = "client", delay = false }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequestLimit {
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<i64>>,
    pub key: Option<Spanned<String>>,
    #[serde(default)]
    pub delay: bool,
}

/// A rate as `N/s` or `N/m` (nginx's `Nr/s` too): the time between two requests.
pub(super) fn parse_rate(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "rate `{text}` is not a rate like \"10/s\" or \"30/m\" (1 to {MAX_RATE} per second or minute)"
        )
    };
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count = count.trim().strip_suffix('r').unwrap_or(count.trim());
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return Err(bad()),
    };
    let count: u64 = count.parse().map_err(|_| bad())?;
    if !(1..=MAX_RATE).contains(&count) {
        return Err(bad());
    }
    Ok(Duration::from_nanos(per.as_nanos() as u64 / count))
}

/// `client` or `header:NAME`.
pub(super) fn parse_key(text: &str) -> Result<LimitKey, String> {
    if text == "client" {
        return Ok(LimitKey::Client);
    }
    match text.strip_prefix("header:") {
        Some(name) if !name.is_empty() && name.bytes().all(is_token_byte) => {
            Ok(LimitKey::Header(name.to_ascii_lowercase()))
        }
        _ => Err(format!(
            "key `{text}` is neither \"client\" nor \"header:NAME\" (a header name)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_or_minute() {
        assert_eq!(parse_rate("10/s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_rate("10r/s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_rate("30/m"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_rate("3/s"), Ok(Duration::from_nanos(333_333_333)));
        assert_eq!(parse_rate("1000000/s"), Ok(Duration::from_micros(1)));
        for bad in ["10", "0/s", "10/h", "ten/s", "-1/s", "1000001/s", "10/ s/"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_the_client_or_a_header() {
        assert_eq!(parse_key("client"), Ok(LimitKey::Client));
        assert_eq!(
            parse_key("header:X-Api-Key"),
            Ok(LimitKey::Header("x-api-key".to_string()))
        );
        for bad in ["Client", "header:", "header:a b", "cookie:session", "ip"] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
    }
}
