//! The admin HTTP endpoint (`[admin] listen`): `/metrics` in the Prometheus text format and
//! `/healthz` for load balancers and readiness probes.
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
use crate::prometheus;
use crate::sys;

/// Environment variable carrying the admin socket to a new master: `fd@addr`.
pub const INHERITED_ADMIN_VAR: &str = "SHOAL_ADMIN_FD";

const BOUNDS: Bounds = Bounds {
    max_request_bytes: 8 * 1024,
    max_clients: 16,
    deadline: Duration::from_secs(5),
    // Every request is answered at once.
    await_deadline: Duration::ZERO,
};

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
    endpoint: Endpoint<TcpListener>,
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

    /// Answers what can be answered now; `metrics` renders the exposition when asked.
    pub fn serve(&mut self, now: Instant, health: Health, mut metrics: impl FnMut() -> String) {
        self.endpoint
            .serve(now, |request| Answer::Now(answer(request, health, &mut metrics)));
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

/// The whole HTTP response to one request.
fn answer(request: &[u8], health: Health, metrics: &mut impl FnMut() -> String) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let (method, path) = match parsed.parse(request) {
        Ok(httparse::Status::Complete(_)) => (parsed.method.unwrap_or(""), parsed.path.unwrap_or("")),
        Err(httparse::Error::TooManyHeaders) => {
            return response(431, "text/plain", "too many headers\n", true)
        }
        _ => return response(400, "text/plain", "bad request\n", true),
    };
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return response(405, "text/plain", "only GET and HEAD\n", true);
    }
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    match (path, health) {
        ("/metrics", _) => response(200, prometheus::CONTENT_TYPE, &metrics(), with_body),
        ("/healthz", Health::Serving) => response(200, "text/plain", "ok\n", with_body),
        ("/healthz", Health::Starting) => response(503, "text/plain", "starting\n", with_body),
        ("/healthz", Health::Stopping) => response(503, "text/plain", "stopping\n", with_body),
        _ => response(
            404,
            "text/plain",
            "not found: try /metrics or /healthz\n",
            with_body,
        ),
    }
}

fn response(status: u16, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
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

    fn ask(request: &str, health: Health) -> String {
        String::from_utf8(answer(request.as_bytes(), health, &mut || "m 1\n".to_string())).unwrap()
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
