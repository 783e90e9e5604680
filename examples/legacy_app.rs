//! The demo upstream for `make demo`: a small "legacy application" that shoal proxies to.
//!
//! `cargo run --release --example legacy_app -- 127.0.0.1:3000` (the default address).
//! examples/shoal.toml mounts it under `/api/` (prefix stripped), and uses it as the fallback for
//! paths the static site does not have.
//!
//! Deliberately old-fashioned, like the applications shoal sits in front of: std only, blocking
//! I/O, one thread per connection, HTTP/1.1 keep-alive with honest framing (`Content-Length` on
//! every response except `/slow`, which is chunked), request bodies read by `Content-Length` or
//! chunked, one line per request on stdout. Routes:
//!
//! - `GET /users` (JSON list), `GET /users/N` (one user, or 404 with a JSON error)
//! - `POST /users` → 201 `{"id":4,"received":<the request body>}`
//! - `GET /health` → `ok`
//! - `GET /slow` → five lines, one every 200 ms, chunked (to watch streaming through shoal)
//! - `GET /headers` → the request line and headers as received (X-Forwarded-For and friends)
//! - anything else → 404

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const MAX_LINE: u64 = 8 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 1024 * 1024;
const CHUNKED: &str = "Transfer-Encoding: chunked\r\n\r\n";
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

const USERS: [(u32, &str, &str); 3] = [
    (1, "Ada Lovelace", "ada@example.com"),
    (2, "Grace Hopper", "grace@example.com"),
    (3, "Ken Thompson", "ken@example.com"),
];

fn main() {
    let addr = std::env::args().nth(1);
    let addr = addr.as_deref().unwrap_or(DEFAULT_ADDR);
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("legacy_app: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    println!("legacy_app listening on http://{addr}/");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => drop(thread::spawn(move || serve(stream))),
            Err(e) => eprintln!("legacy_app: accept: {e}"),
        }
    }
}

struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        let mut matching = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        matching.next().map(|(_, value)| value.as_str())
    }

    fn wants_keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or_default().to_ascii_lowercase();
        match self.version.as_str() {
            "HTTP/1.0" => connection.contains("keep-alive"),
            _ => !connection.contains("close"),
        }
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// `Some`: send the body chunked, one line per chunk, pausing this long between lines.
    pace: Option<Duration>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            pace: None,
        }
    }
}

/// One connection: requests in a loop until the client closes, asks to close, or goes idle.
fn serve(mut stream: TcpStream) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(clone) = stream.try_clone() else { return };
    let mut reader = BufReader::new(clone);
    loop {
        let request = match read_request(&mut reader, &mut stream) {
            Ok(Some(request)) => request,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let response = Response::new(400, "text/plain", format!("bad request: {e}\n"));
                let _ = write_response(&mut stream, &response, "HTTP/1.1", false);
                return println!("{peer} \"-\" 400 ({e})");
            }
            _ => return, // closed between requests, idle timeout, reset, or EOF mid-request
        };
        let started = Instant::now();
        let response = route(&request);
        // Chunked needs HTTP/1.1; for 1.0 the streamed body is delimited by closing instead.
        let keep_alive =
            request.wants_keep_alive() && (response.pace.is_none() || request.version == "HTTP/1.1");
        let written = write_response(&mut stream, &response, &request.version, keep_alive);
        let outcome = if written.is_ok() { "sent" } else { "aborted" };
        let (method, target, version) = (&request.method, &request.target, &request.version);
        let (status, bytes) = (response.status, response.body.len());
        let ms = started.elapsed().as_secs_f64() * 1e3;
        println!("{peer} \"{method} {target} {version}\" {status} {bytes} {outcome} {ms:.1}ms");
        if written.is_err() || !keep_alive {
            return;
        }
    }
}

fn route(request: &Request) -> Response {
    let path = request.target.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path) {
        ("GET", "/users") => list_users(),
        ("POST", "/users") => create_user(&request.body),
        ("GET", "/health") => health(),
        ("GET", "/slow") => slow(),
        ("GET", "/headers") => headers(request),
        ("GET", _) if path.starts_with("/users/") => get_user(&path["/users/".len()..]),
        _ => not_found(),
    }
}

// --- routes -------------------------------------------------------------------------------------

fn user_json((id, name, email): (u32, &str, &str)) -> String {
    format!(r#"{{"id":{id},"name":"{name}","email":"{email}"}}"#)
}

fn list_users() -> Response {
    let users: Vec<String> = USERS.into_iter().map(user_json).collect();
    Response::new(200, "application/json", format!("[{}]\n", users.join(",")))
}

fn get_user(id: &str) -> Response {
    match USERS.into_iter().find(|user| id.parse() == Ok(user.0)) {
        Some(user) => Response::new(200, "application/json", user_json(user) + "\n"),
        None => Response::new(404, "application/json", "{\"error\":\"no such user\"}\n"),
    }
}

fn create_user(body: &[u8]) -> Response {
    let body = body.trim_ascii();
    let received = if body.is_empty() {
        "null".into()
    } else {
        String::from_utf8_lossy(body)
    };
    let json = format!("{{\"id\":4,\"received\":{received}}}\n");
    Response::new(201, "application/json", json)
}

fn health() -> Response {
    Response::new(200, "text/plain", "ok\n")
}

fn slow() -> Response {
    let lines: String = (1..=5).map(|i| format!("line {i} of 5\n")).collect();
    Response {
        pace: Some(Duration::from_millis(200)),
        ..Response::new(200, "text/plain", lines)
    }
}

fn headers(request: &Request) -> Response {
    let mut text = format!("{} {} {}\n", request.method, request.target, request.version);
    for (name, value) in &request.headers {
        text += &format!("{name}: {value}\n");
    }
    Response::new(200, "text/plain", text)
}

fn not_found() -> Response {
    Response::new(404, "text/plain", "not found\n")
}

// --- HTTP/1.1 -----------------------------------------------------------------------------------

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// One line without its CRLF; `None` at a clean end of stream.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if reader.take(MAX_LINE).read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(invalid("line too long or cut short"));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// A line that must be there (a header, a chunk size, a trailer).
fn expect_line(reader: &mut impl BufRead) -> io::Result<String> {
    read_line(reader)?.ok_or_else(|| invalid("connection closed in the middle of a request"))
}

/// The next request, body included; `None` if the client closed the connection between requests.
fn read_request(reader: &mut impl BufRead, out: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut line = String::new();
    while line.is_empty() {
        // Empty lines before a request line are skipped (RFC 9112 section 2.2).
        let Some(next) = read_line(reader)? else {
            return Ok(None);
        };
        line = next;
    }
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [method, target, version @ ("HTTP/1.1" | "HTTP/1.0")] = parts[..] else {
        return Err(invalid("malformed request line"));
    };
    let mut headers = Vec::new();
    loop {
        let line = expect_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("header without a colon"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
        if headers.len() > MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
    }
    let (method, target, version) = (method.to_string(), target.to_string(), version.to_string());
    let mut request = Request {
        method,
        target,
        version,
        headers,
        body: Vec::new(),
    };
    if request.header("expect") == Some("100-continue") {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    request.body = read_body(reader, &request)?;
    Ok(Some(request))
}

fn read_body(reader: &mut impl BufRead, request: &Request) -> io::Result<Vec<u8>> {
    let length = request.header("content-length");
    match (request.header("transfer-encoding"), length) {
        (Some("chunked"), _) => read_chunked(reader),
        (Some(_), _) => Err(invalid("unsupported Transfer-Encoding")),
        (None, None) => Ok(Vec::new()),
        (None, Some(length)) => match length.parse::<usize>() {
            Ok(length) if length <= MAX_BODY => read_exactly(reader, Vec::new(), length),
            _ => Err(invalid("bad or too large Content-Length")),
        },
    }
}

fn read_exactly(reader: &mut impl BufRead, mut body: Vec<u8>, length: usize) -> io::Result<Vec<u8>> {
    let start = body.len();
    body.resize(start + length, 0);
    reader.read_exact(&mut body[start..])?;
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = expect_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim(); // chunk extensions ignored
        match usize::from_str_radix(size, 16) {
            Ok(0) => break,
            Ok(size) if size <= MAX_BODY - body.len() => body = read_exactly(reader, body, size)?,
            _ => return Err(invalid("bad or too large chunk size")),
        }
        if !expect_line(reader)?.is_empty() {
            return Err(invalid("chunk data not followed by CRLF"));
        }
    }
    while !expect_line(reader)?.is_empty() {} // trailer fields are ignored
    Ok(body)
}

fn write_response(
    out: &mut TcpStream,
    response: &Response,
    version: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let (status, body) = (response.status, &response.body);
    let reason = match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        _ => "Not Found",
    };
    let (content_type, connection) = (
        response.content_type,
        if keep_alive { "keep-alive" } else { "close" },
    );
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nServer: legacy-app\r\n");
    head += &format!("Content-Type: {content_type}\r\nConnection: {connection}\r\n");
    let Some(pace) = response.pace else {
        head += &format!("Content-Length: {}\r\n\r\n", body.len());
        return out.write_all(&[head.as_bytes(), body].concat());
    };
    let chunked = version == "HTTP/1.1"; // else the caller closes the connection after the body
    head += if chunked { CHUNKED } else { "\r\n" };
    out.write_all(head.as_bytes())?;
    for (i, line) in body.split_inclusive(|&byte| byte == b'\n').enumerate() {
        if i > 0 {
            thread::sleep(pace);
        }
        if chunked {
            out.write_all(&[format!("{:x}\r\n", line.len()).as_bytes(), line, b"\r\n"].concat())?;
        } else {
            out.write_all(line)?;
        }
    }
    if chunked {
        out.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}
