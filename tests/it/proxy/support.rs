//! Shared pieces of the proxy tests: config text, starting shoal in front of test upstreams,
//! and a client side that reads responses in any framing (Content-Length, chunked, close),
//! byte by byte when needed, and tolerates aborted responses.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::harness::{read_head_response, read_to_close, Launch, Response, Server, Site};
use crate::upstream::Upstream;

/// Every path to the upstream `app`.
pub const PROXY_ALL: &str = "  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n";

/// The example: `/api/` proxied with the prefix stripped, files with fallback.
pub const API_AND_FILES: &str = "  [[server.route]]\n  prefix = \"/api/\"\n  upstream = \"app\"\n  \
                                 strip_prefix = true\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n  \
                                 fallback = \"app\"\n";

/// A whole config file: `top` (top-level keys, then any `[limits]`), an `[upstream.app]`
/// with `servers` (each `"ADDR[ weight=N]"`) and the extra `upstream` lines, and one server
/// on `{listen}` with `routes`.
///
/// A static route answers the harness's readiness probe, so it never reaches an upstream
/// and never shows in an upstream's counts.
pub fn config(top: &str, servers: &[String], upstream: &str, routes: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "{top}\n\n[upstream.app]\nservers = [{}]\n{upstream}\n\n[[server]]\nlisten = [\"{{listen}}\"]\n  \
         [[server.route]]\n  prefix = \"/harness-ready-probe\"\n  root = \"site\"\n{routes}",
        servers.join(", ")
    )
}

/// The launch (one worker unless changed) of a shoal on `site` with [`config`]'s file.
pub fn launch(site: &Site, top: &str, servers: &[String], upstream: &str, routes: &str) -> Launch {
    Launch::config_file(site, &config(top, servers, upstream, routes))
}

/// A shoal (one worker, access log off) where `/u{i}/` proxies to `upstreams[i]`, each an
/// `[upstream.u{i}]` with `upstream_lines[i]` (if any) added; `/` serves the site.
pub fn route_each(site: &Site, upstreams: &[Upstream], upstream_lines: &[&str]) -> Launch {
    let mut text = String::from("access_log = \"off\"\n");
    for (i, upstream) in upstreams.iter().enumerate() {
        let lines = upstream_lines.get(i).copied().unwrap_or_default();
        text.push_str(&format!(
            "[upstream.u{i}]\nservers = [\"{}\"]\n{lines}\n",
            upstream.addr
        ));
    }
    text.push_str(
        "[[server]]\nlisten = [\"{listen}\"]\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n",
    );
    for i in 0..upstreams.len() {
        text.push_str(&format!(
            "  [[server.route]]\n  prefix = \"/u{i}/\"\n  upstream = \"u{i}\"\n"
        ));
    }
    Launch::config_file(site, &text)
}

/// `ADDR` of each upstream, weight 1.
pub fn addrs(upstreams: &[&Upstream]) -> Vec<String> {
    upstreams.iter().map(|u| u.addr.to_string()).collect()
}

/// A shoal (access log off) with the routes: `/api/` to `upstream` with the prefix
/// stripped, everything else from `site` with `upstream` as the fallback.
pub fn api_and_files(site: &Site, upstream: &Upstream) -> Server {
    launch(
        site,
        "access_log = \"off\"",
        &addrs(&[upstream]),
        "",
        API_AND_FILES,
    )
    .start()
}

/// A shoal (one worker, access log off) proxying every path to `upstream`.
pub fn proxy(upstream: &Upstream) -> (Site, Server) {
    proxy_with(upstream, "", "")
}

/// Like [`proxy`] with extra top-level lines and extra `[upstream.app]` lines.
pub fn proxy_with(upstream: &Upstream, top: &str, upstream_lines: &str) -> (Site, Server) {
    let site = Site::new();
    let top = format!("access_log = \"off\"\n{top}");
    let server = launch(&site, &top, &addrs(&[upstream]), upstream_lines, PROXY_ALL).start();
    (site, server)
}

/// How a response's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304).
    Empty,
    Length(usize),
    Chunked,
    Close,
}

/// The framing of `response`, failing the test on an ambiguous or invalid one.
pub fn framing(response: &Response, to_head: bool) -> Framing {
    let lengths: Vec<&str> = values(response, "Content-Length");
    let codings: Vec<&str> = values(response, "Transfer-Encoding");
    assert!(
        lengths.is_empty() || codings.is_empty(),
        "a response with both Content-Length and Transfer-Encoding:\n{response}"
    );
    assert!(lengths.len() <= 1, "more than one Content-Length:\n{response}");
    let status = response.status;
    if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::Empty;
    }
    if !codings.is_empty() {
        assert_eq!(
            codings,
            ["chunked"],
            "the only transfer coding must be chunked:\n{response}"
        );
        return Framing::Chunked;
    }
    if let Some(length) = lengths.first() {
        let length = length
            .parse()
            .unwrap_or_else(|_| panic!("bad Content-Length in {response}"));
        return Framing::Length(length);
    }
    Framing::Close
}

/// Every value of header `name` in `response`, one per line.
pub fn values<'a>(response: &'a Response, name: &str) -> Vec<&'a str> {
    response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Reads one response whatever its framing, the body decoded; returns it with its framing.
pub fn read_message(stream: &mut TcpStream, to_head: bool) -> (Response, Framing) {
    let mut response = read_head_response(stream);
    let framing = framing(&response, to_head);
    let mut body = Body::new(framing);
    response.body = body.read_all(stream);
    (response, framing)
}

/// Reads responses until a final (non-1xx) one; returns the interim ones and the final one.
pub fn read_final(stream: &mut TcpStream) -> (Vec<Response>, Response, Framing) {
    let mut interim = Vec::new();
    loop {
        let (response, framing) = read_message(stream, false);
        if (100..200).contains(&response.status) {
            interim.push(response);
        } else {
            return (interim, response, framing);
        }
    }
}

/// Sends `raw` on a new connection and reads the final response in any framing.
pub fn exchange(server: &Server, raw: &[u8]) -> Response {
    let mut stream = server.connect();
    stream.write_all(raw).expect("write request");
    read_final(&mut stream).1
}

/// A response body being read off the wire, decoded as it arrives.
pub struct Body {
    framing: Framing,
    /// Body bytes still expected (Length), or left in the current chunk (Chunked).
    left: usize,
    /// The last chunk (or the whole body) has been read.
    done: bool,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        let (left, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(n) => (n, n == 0),
            Framing::Chunked | Framing::Close => (0, false),
        };
        Body { framing, left, done }
    }

    /// Reads exactly `n` more body bytes (blocking, bounded by the socket's timeout).
    pub fn read_exact(&mut self, stream: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let more = self.read_some(stream, n - out.len());
            assert!(
                !more.is_empty(),
                "the body ended after {} of the {n} bytes waited for: {:?}",
                out.len(),
                String::from_utf8_lossy(&out)
            );
            out.extend(more);
        }
        out
    }

    /// Reads the rest of the body.
    pub fn read_all(&mut self, stream: &mut TcpStream) -> Vec<u8> {
        if self.framing == Framing::Close {
            self.done = true;
            return read_to_close(stream);
        }
        let mut out = Vec::new();
        loop {
            let more = self.read_some(stream, 64 * 1024);
            if more.is_empty() {
                return out;
            }
            out.extend(more);
        }
    }

    /// Up to `max` body bytes; empty once the body is complete.
    pub fn read_some(&mut self, stream: &mut TcpStream, max: usize) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        match self.framing {
            Framing::Empty => Vec::new(),
            Framing::Close => {
                let mut buf = vec![0u8; max];
                let n = read_or_fail(stream, &mut buf);
                if n == 0 {
                    self.done = true;
                }
                buf.truncate(n);
                buf
            }
            Framing::Length(_) => {
                let mut buf = vec![0u8; max.min(self.left)];
                let n = read_or_fail(stream, &mut buf);
                assert!(
                    n > 0,
                    "connection closed with {} body bytes still announced",
                    self.left
                );
                self.left -= n;
                self.done = self.left == 0;
                buf.truncate(n);
                buf
            }
            Framing::Chunked => {
                if self.left == 0 {
                    let line = read_line(stream);
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size, 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    if size == 0 {
                        while !read_line(stream).is_empty() {}
                        self.done = true;
                        return Vec::new();
                    }
                    self.left = size;
                }
                let mut buf = vec![0u8; max.min(self.left)];
                let n = read_or_fail(stream, &mut buf);
                assert!(
                    n > 0,
                    "connection closed inside a chunk ({} bytes left)",
                    self.left
                );
                self.left -= n;
                buf.truncate(n);
                if self.left == 0 {
                    let mut crlf = [0u8; 2];
                    stream
                        .read_exact(&mut crlf)
                        .expect("read the CRLF after chunk data");
                    assert_eq!(&crlf, b"\r\n", "chunk data not followed by CRLF");
                }
                buf
            }
        }
    }
}

fn read_or_fail(stream: &mut TcpStream, buf: &mut [u8]) -> usize {
    loop {
        match stream.read(buf) {
            Ok(n) => return n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the response body failed: {e}"),
        }
    }
}

/// One CRLF-terminated line, read byte by byte, without the CRLF.
fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            Ok(_) => panic!("connection closed inside chunked framing after {line:?}"),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading chunked framing failed ({e}) after {line:?}"),
        }
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).expect("chunked framing is ASCII")
}

/// How a connection ended for [`read_until_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Orderly close (FIN).
    Closed,
    /// Reset by the server.
    Reset,
    /// Still open when the read timeout expired.
    StillOpen,
}

/// Every byte until the connection ends, and how it ended; never panics on reset or timeout.
pub fn read_until_end(stream: &mut TcpStream) -> (Vec<u8>, End) {
    let mut all = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (all, End::Closed),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (all, End::StillOpen)
            }
            Err(_) => return (all, End::Reset),
        }
    }
}

/// Whether `bytes` (everything after a response head with `framing`) hold a complete body.
pub fn body_complete(framing: Framing, bytes: &[u8]) -> bool {
    match framing {
        Framing::Empty => true,
        Framing::Length(n) => bytes.len() >= n,
        Framing::Close => false,
        Framing::Chunked => {
            let mut rest = bytes;
            loop {
                let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return false;
                };
                let line = String::from_utf8_lossy(&rest[..end]);
                let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16) else {
                    return false;
                };
                rest = &rest[end + 2..];
                if size == 0 {
                    return rest.windows(2).any(|w| w == b"\r\n");
                }
                if rest.len() < size + 2 {
                    return false;
                }
                rest = &rest[size + 2..];
            }
        }
    }
}

/// The X-Upstream header: which test upstream answered.
pub fn served_by(response: &Response) -> SocketAddr {
    response
        .expect_header("X-Upstream")
        .parse()
        .unwrap_or_else(|_| panic!("bad X-Upstream in {response}"))
}
