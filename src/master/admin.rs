//! The admin HTTP endpoint (`[admin] listen`): `/metrics` in the Prometheus text format,
//! `/healthz` for load balancers and readiness probes, and `DELETE /cache?prefix=PREFIX` to
//! purge response cache entries (answered once the purge is done, with the same JSON as
//! `shoal cache purge`).
//!
//! The master serves it from its loop (it is operator traffic: tiny and rare): one request
//! per connection, answered with `Connection: close`, through the same bounded non-blocking
//! [`Endpoint`] as the control socket. On a binary upgrade the listening socket is passed to
//! the new master like the traffic sockets, so scrapes never see a refused connection.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use nix::poll::PollFd;

use super::endpoint::{Answer, Bounds, Endpoint};
use super::Attempt;
use crate::control::PurgeVerdict;
use crate::prometheus;
use crate::sys;

/// Environment variable carrying the admin socket to a new master: `fd@addr`.
pub const INHERITED_ADMIN_VAR: &str = "SHOAL_ADMIN_FD";

const BOUNDS: Bounds = Bounds {
    max_request_bytes: 8 * 1024,
    max_clients: 16,
    deadline: Duration::from_secs(5),
    // A purge of a large cache takes a while.
    await_deadline: Duration::from_secs(600),
};

/// What the admin endpoint asks of the master.
pub trait Operator {
    fn health(&self) -> Health;
    /// The Prometheus exposition.
    fn metrics(&self) -> String;
    /// Starts a purge of the entries whose keys start with `prefix`, or says why not.
    fn purge(&mut self, prefix: &str) -> Result<Attempt, PurgeVerdict>;
}

/// Whether the instance takes traffic, as `/healthz` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// 200: running with at least one worker serving.
    Serving,
    /// 503: no worker serves yet.
    Starting,
    /// 503: stopping (draining what is in flight).
    Stopping,
}

/// The bound admin endpoint.
pub struct Admin {
    endpoint: Endpoint<TcpListener, Attempt>,
    pub addr: SocketAddr,
}

impl Admin {
    /// Binds `addr`, or takes the socket an upgrading master passed for it.
    pub fn open(addr: SocketAddr, inherited: Option<(TcpListener, SocketAddr)>) -> io::Result<Admin> {
        let listener = match inherited {
            Some((listener, passed)) if passed == addr => listener,
            _ => TcpListener::bind(addr)?,
        };
        listener.set_nonblocking(true)?;
        Ok(Admin {
            endpoint: Endpoint::new(listener, BOUNDS, head_complete),
            addr,
        })
    }

    /// What the master's poll waits on.
    pub fn poll_fds(&self) -> impl Iterator<Item = PollFd<'_>> {
        self.endpoint.poll_fds()
    }

    /// The listening socket (to pass it on in a binary upgrade).
    pub fn listener(&self) -> &TcpListener {
        self.endpoint.listener()
    }

    /// Answers what can be answered now, and starts the purges asked.
    pub fn serve(&mut self, now: Instant, operator: &mut impl Operator) {
        self.endpoint.serve(now, |request| answer(request, operator));
    }

    /// Answers the clients waiting for the purge `attempt`.
    pub fn settle(&mut self, attempt: Attempt, verdict: &PurgeVerdict) {
        self.endpoint.settle(attempt, &purge_response(verdict));
    }
}

/// The admin socket an upgrading master passed in [`INHERITED_ADMIN_VAR`], if any.
pub fn inherited() -> Option<(TcpListener, SocketAddr)> {
    let value = std::env::var(INHERITED_ADMIN_VAR).ok()?;
    std::env::remove_var(INHERITED_ADMIN_VAR);
    let (fd, addr) = value.split_once('@')?;
    let addr: SocketAddr = addr.parse().ok()?;
    let listener = sys::adopt_listener(fd.parse().ok()?, Some(addr))?;
    Some((listener, addr))
}

fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// The answer to one request: the whole HTTP response, or (a purge) later.
fn answer(request: &[u8], operator: &mut impl Operator) -> Answer<Attempt> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let (method, target) = match parsed.parse(request) {
        Ok(httparse::Status::Complete(_)) => (parsed.method.unwrap_or(""), parsed.path.unwrap_or("")),
        Err(httparse::Error::TooManyHeaders) => {
            return Answer::Now(response(431, "text/plain", "too many headers\n", true))
        }
        _ => return Answer::Now(response(400, "text/plain", "bad request\n", true)),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let allowed = if path == "/cache" { "DELETE" } else { "GET, HEAD" };
    if !allowed.split(", ").any(|m| m == method) {
        let body = format!("{path} takes {allowed}\n");
        return Answer::Now(response(405, "text/plain", &body, true));
    }
    let with_body = method != "HEAD";
    Answer::Now(match (path, operator.health()) {
        ("/cache", _) => {
            let prefix = query_value(query, "prefix").unwrap_or_default();
            match operator.purge(&prefix) {
                Ok(attempt) => return Answer::Later(attempt),
                Err(refused) => purge_response(&refused),
            }
        }
        ("/metrics", _) => response(200, prometheus::CONTENT_TYPE, &operator.metrics(), with_body),
        ("/healthz", Health::Serving) => response(200, "text/plain", "ok\n", with_body),
        ("/healthz", Health::Starting) => response(503, "text/plain", "starting\n", with_body),
        ("/healthz", Health::Stopping) => response(503, "text/plain", "stopping\n", with_body),
        _ => response(
            404,
            "text/plain",
            "not found: try /metrics, /healthz or DELETE /cache?prefix=\n",
            with_body,
        ),
    })
}

/// The percent-decoded value of `name` in a query string.
fn query_value(query: &str, name: &str) -> Option<String> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || u8::from_str_radix(value.get(i + 1..i + 3)?, 16).ok();
        match (bytes[i], hex()) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// A purge's verdict as an HTTP response: its JSON line as the body.
fn purge_response(verdict: &PurgeVerdict) -> Vec<u8> {
    let status = match verdict {
        PurgeVerdict::Purged { .. } => 200,
        PurgeVerdict::Refused { .. } => 400,
        PurgeVerdict::Failed { .. } => 500,
    };
    let line = String::from_utf8(verdict.to_line()).unwrap_or_default();
    response(status, "application/json", &line, true)
}

fn response(status: u16, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let allow = match status {
        405 if body.starts_with("/cache ") => "Allow: DELETE\r\n",
        405 => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A master in `health` with metrics `m 1` and a cache: it starts purges as attempt 7.
    struct Fake {
        health: Health,
        purges: Vec<String>,
    }

    impl Operator for Fake {
        fn health(&self) -> Health {
            self.health
        }
        fn metrics(&self) -> String {
            "m 1\n".to_string()
        }
        fn purge(&mut self, prefix: &str) -> Result<Attempt, PurgeVerdict> {
            self.purges.push(prefix.to_string());
            match prefix.starts_with('/') {
                true => Ok(Attempt(7)),
                false => Err(PurgeVerdict::Refused {
                    message: "bad prefix".into(),
                }),
            }
        }
    }

    fn ask(request: &str, health: Health) -> String {
        let mut fake = Fake {
            health,
            purges: Vec::new(),
        };
        match answer(request.as_bytes(), &mut fake) {
            Answer::Now(bytes) => String::from_utf8(bytes).unwrap(),
            Answer::Later(attempt) => format!("later {attempt:?}"),
        }
    }

    #[test]
    fn delete_cache_starts_a_purge_of_the_decoded_prefix() {
        let mut fake = Fake {
            health: Health::Serving,
            purges: Vec::new(),
        };
        let request = "DELETE /cache?x=1&prefix=%2Fimg%2Fa%20b%zz HTTP/1.1\r\n\r\n";
        assert!(matches!(
            answer(request.as_bytes(), &mut fake),
            Answer::Later(Attempt(7))
        ));
        assert_eq!(fake.purges, ["/img/a b%zz"]);
        let refused = ask("DELETE /cache?prefix=img HTTP/1.1\r\n\r\n", Health::Serving);
        assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
        assert!(refused.ends_with("{\"outcome\":\"refused\",\"message\":\"bad prefix\"}\n"));
        let get = ask("GET /cache?prefix=/ HTTP/1.1\r\n\r\n", Health::Serving);
        assert!(
            get.starts_with("HTTP/1.1 405 ") && get.contains("Allow: DELETE\r\n"),
            "{get}"
        );
        let done = String::from_utf8(purge_response(&PurgeVerdict::Purged {
            removed: 2,
            bytes: 10,
        }))
        .unwrap();
        assert!(done.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"));
        assert!(done.ends_with("\r\n\r\n{\"outcome\":\"purged\",\"removed\":2,\"bytes\":10}\n"));
    }

    #[test]
    fn paths_methods_and_health() {
        let metrics = ask("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Health::Stopping);
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(metrics.ends_with("\r\n\r\nm 1\n"), "{metrics}");
        assert!(ask("GET /healthz?probe=1 HTTP/1.0\r\n\r\n", Health::Serving).ends_with("\r\n\r\nok\n"));
        let head = ask("HEAD /healthz HTTP/1.1\r\n\r\n", Health::Serving);
        assert!(
            head.contains("Content-Length: 3\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(ask("GET /healthz HTTP/1.1\n\n", Health::Stopping).starts_with("HTTP/1.1 503 "));
        assert!(ask("GET /healthz HTTP/1.1\r\n\r\n", Health::Starting).starts_with("HTTP/1.1 503 "));
        assert!(ask("GET / HTTP/1.1\r\n\r\n", Health::Serving).starts_with("HTTP/1.1 404 "));
        let post = ask("POST /metrics HTTP/1.1\r\n\r\n", Health::Serving);
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD\r\n"));
        assert!(ask("\x16\x03\x01 not http", Health::Serving).starts_with("HTTP/1.1 400 "));
        assert!(ask("GET /metrics HTTP/1.1\r\nHost: x", Health::Serving).starts_with("HTTP/1.1 400 "));
    }
}
