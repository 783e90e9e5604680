//! A scriptable test upstream: a threaded raw-socket HTTP/1.1 server on its own free port.
//!
//! The test picks a [`Behaviour`]; the upstream records every request it parsed (raw bytes,
//! decoded body, the connection it came on) and every byte it read looking for requests
//! (parsed or not), and counts accepted connections and notable events, all readable from the
//! test while it runs. Dropping it stops the accept loop, shuts every open connection down and
//! joins every thread it started.
//!
//! Also here: [`Refusing`] and [`Blackhole`], addresses that refuse or never answer a connect.
//!
//! Echoed and fixed replies carry `X-Upstream: <addr>` and `X-Upstream-Conn: <n>` (the
//! 1-based number of the accepted connection) so a test can tell who answered and on which
//! connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::{wait_until, IO_TIMEOUT};

/// Longest request head the upstream accepts.
const MAX_HEAD: usize = 1024 * 1024;
/// How long an upstream connection may wait for bytes before giving up on its own.
const CONN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a thread blocked on the test (trickle, gate) checks whether to stop.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// What the upstream does with each request.
pub enum Behaviour {
    /// 200 whose body is the raw request bytes as received (head and framed body). A
    /// connection the peer closes between requests counts as event "peer-closed".
    Echo,
    /// The same reply to every request (no body to HEAD).
    Reply(Reply),
    /// 200 with `Transfer-Encoding: chunked`, one chunk per piece.
    Chunked(Vec<Vec<u8>>),
    /// 200 with neither length nor chunking: the body, then close.
    CloseDelimited(Vec<u8>),
    /// 200 with `Content-Length: length`; the body is written as the test sends pieces.
    Trickle {
        length: usize,
        pieces: Arc<Mutex<Receiver<Vec<u8>>>>,
    },
    /// Waits until the request's bytes arrived, then closes without reading them (RST).
    Reset,
    /// Reads the request and never answers (holds the connection until the peer closes).
    Stall,
    /// Reads a request head, then neither reads its body nor answers until stopped.
    IgnoreBody,
    /// Reads the request, writes these bytes, then holds the connection until the peer closes.
    Raw(Vec<u8>),
    /// Reads the request, writes these bytes, then closes.
    RawThenClose(Vec<u8>),
    /// Announces `Content-Length: announced`, sends `sent` bytes, closes.
    CloseMidBody { announced: usize, sent: usize },
    /// Reads the request and closes without answering.
    CloseBeforeAnswer,
    /// Reads the request, writes `head`, then `repeat` over and over until the peer goes away
    /// (an endless header section, a flood of interim responses).
    Endless { head: Vec<u8>, repeat: Vec<u8> },
    /// Echo; a connection idle this long after a response is closed (event "idle-close").
    CloseIdleAfter(Duration),
    /// Echo to the first request on a connection; any later request on it is read, recorded
    /// and answered by closing the connection (a keep-alive race lost by the proxy).
    DropSecondRequest,
    /// 101 to an upgrade request, then echoes bytes until the peer closes (event
    /// "tunnel-closed") or until it receives `bye`, after which it closes itself.
    WebSocketEcho,
    /// `path` answers `status` (changeable while running); everything else is echoed.
    Health { path: String, status: Arc<AtomicU16> },
    /// Requests to `path` wait until the gate opens, then are echoed; others echoed at once.
    Gate { path: String, gate: Gate },
    /// The reply the test holds (changeable while running); a request whose If-None-Match
    /// names the reply's ETag gets a 304 with the reply's headers instead; with a gate, each
    /// request waits for it to open.
    Validating(Arc<Mutex<Reply>>, Option<Gate>),
}

impl Behaviour {
    /// A trickling 200 (text/plain) of `length` bytes and the sender that feeds it.
    pub fn trickle(length: usize) -> (Sender<Vec<u8>>, Behaviour) {
        let (sender, receiver) = channel();
        let behaviour = Behaviour::Trickle {
            length,
            pieces: Arc::new(Mutex::new(receiver)),
        };
        (sender, behaviour)
    }

    /// Health at `path`, starting at `status`; the returned handle changes it.
    pub fn health(path: &str, status: u16) -> (Arc<AtomicU16>, Behaviour) {
        let status = Arc::new(AtomicU16::new(status));
        let behaviour = Behaviour::Health {
            path: path.to_string(),
            status: status.clone(),
        };
        (status, behaviour)
    }

    /// Holds requests to `path` until the returned gate opens.
    pub fn gate(path: &str) -> (Gate, Behaviour) {
        let gate = Gate::default();
        let behaviour = Behaviour::Gate {
            path: path.to_string(),
            gate: gate.clone(),
        };
        (gate, behaviour)
    }

    /// Answers with `reply`, or a 304 to a request that names its ETag; the returned handle
    /// changes the reply.
    pub fn validating(reply: Reply) -> (Arc<Mutex<Reply>>, Behaviour) {
        let reply = Arc::new(Mutex::new(reply));
        (reply.clone(), Behaviour::Validating(reply, None))
    }

    /// [`Behaviour::validating`], each request held until `gate` is open.
    pub fn validating_gated(reply: Reply, gate: &Gate) -> (Arc<Mutex<Reply>>, Behaviour) {
        let reply = Arc::new(Mutex::new(reply));
        (reply.clone(), Behaviour::Validating(reply, Some(gate.clone())))
    }

    /// Not HTTP at all.
    pub fn garbage() -> Behaviour {
        Behaviour::Raw(b"SSH-2.0-OpenSSH_9.6 not http at all\r\n\r\n".to_vec())
    }

    /// A status line that is not one.
    pub fn bad_status_line() -> Behaviour {
        Behaviour::Raw(b"HTTP/1.1 OK 200\r\nContent-Length: 2\r\n\r\nok".to_vec())
    }

    /// A header line without a colon.
    pub fn malformed_header() -> Behaviour {
        Behaviour::Raw(b"HTTP/1.1 200 OK\r\nThis line has no colon\r\nContent-Length: 2\r\n\r\nok".to_vec())
    }

    /// Two different Content-Length values.
    pub fn conflicting_length() -> Behaviour {
        Behaviour::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 4\r\n\r\nokok".to_vec())
    }

    /// A head that never ends: header lines forever.
    pub fn endless_head() -> Behaviour {
        Behaviour::Endless {
            head: b"HTTP/1.1 200 OK\r\n".to_vec(),
            repeat: b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".to_vec(),
        }
    }

    /// `100 Continue` forever, never a final response.
    pub fn endless_interim() -> Behaviour {
        Behaviour::Endless {
            head: Vec::new(),
            repeat: b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        }
    }

    /// A complete head with `bytes` of header value in it.
    pub fn huge_headers(bytes: usize) -> Behaviour {
        let mut raw = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
        raw.extend(std::iter::repeat_n(b'h', bytes));
        raw.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
        Behaviour::Raw(raw)
    }
}

/// A fixed response.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// `status` with no headers and no body.
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header line (repeats kept).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Reply {
        self.body = body.as_ref().to_vec();
        self
    }

    /// The response bytes; `Content-Length` is added unless the status forbids a body or a
    /// framing header was given explicitly.
    fn render(&self, to_head: bool, extra: &[(String, String)]) -> Vec<u8> {
        let bodiless = (100..200).contains(&self.status) || self.status == 204 || self.status == 304;
        let framed = self.headers.iter().any(|(n, _)| {
            n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
        });
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in self.headers.iter().chain(extra) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !bodiless && !framed {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !to_head && !bodiless {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        404 => "Not Found",
        418 => "I'm a teapot",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// A latch the test opens to release held requests.
#[derive(Clone, Default)]
pub struct Gate {
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    /// Releases every held and future request.
    pub fn open(&self) {
        let (open, changed) = &*self.state;
        *open.lock().expect("gate lock") = true;
        changed.notify_all();
    }

    /// Holds requests again (those arriving from now on).
    pub fn close(&self) {
        *self.state.0.lock().expect("gate lock") = false;
    }

    /// Waits until open; false if `stopping` was raised first.
    fn wait(&self, stopping: &AtomicBool) -> bool {
        let (open, changed) = &*self.state;
        let mut is_open = open.lock().expect("gate lock");
        while !*is_open {
            if stopping.load(Ordering::SeqCst) {
                return false;
            }
            is_open = changed.wait_timeout(is_open, STOP_CHECK).expect("gate wait").0;
        }
        true
    }
}

/// One request as the upstream parsed it.
#[derive(Clone, Debug)]
pub struct Request {
    /// Request line and header lines, CRLF-separated, without the final blank line.
    pub head: String,
    /// Every byte of the request as it came off the wire (head, blank line, framed body).
    pub raw: Vec<u8>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
    /// The 1-based number of the connection it arrived on.
    pub conn: usize,
    /// When its head was complete.
    pub at: Instant,
}

impl Request {
    fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    pub fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or_default()
    }

    /// The request target exactly as sent.
    pub fn target(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or_default()
    }

    /// Header lines in order, repeats kept, values trimmed.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name, value.trim()))
            .collect()
    }

    /// Every value of header `name` (case-insensitive), one per line.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    fn wants_close(&self) -> bool {
        let connection = self.header_values("connection").join(",").to_ascii_lowercase();
        let tokens: Vec<&str> = connection.split(',').map(str::trim).collect();
        tokens.contains(&"close")
            || (self.request_line().ends_with("HTTP/1.0") && !tokens.contains(&"keep-alive"))
    }

    fn is_upgrade(&self) -> bool {
        self.header_values("upgrade")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("websocket"))
    }
}

/// State shared by the accept loop, the connection threads and the test.
struct Shared {
    behaviour: Behaviour,
    addr: SocketAddr,
    stopping: AtomicBool,
    accepts: AtomicUsize,
    requests: Mutex<Vec<Request>>,
    /// Every byte read from any connection, in the order read.
    wire: Mutex<Vec<u8>>,
    events: Mutex<Vec<String>>,
    /// Clones of the open connections (by number), shut down when the upstream stops.
    open: Mutex<Vec<(usize, TcpStream)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn event(&self, what: impl Into<String>) {
        self.events.lock().expect("events lock").push(what.into());
    }
}

/// A running test upstream; stops on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream with `behaviour` on a free 127.0.0.1 port.
    pub fn start(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test upstream");
        Upstream::serve(listener, behaviour)
    }

    /// Starts an upstream whose behaviour depends on its own address (an app that names
    /// itself in its redirects).
    pub fn start_at(behaviour: impl FnOnce(SocketAddr) -> Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test upstream");
        let addr = listener.local_addr().expect("upstream local_addr");
        Upstream::serve(listener, behaviour(addr))
    }

    /// Serves `behaviour` on an existing listener.
    fn serve(listener: TcpListener, behaviour: Behaviour) -> Upstream {
        let addr = listener.local_addr().expect("upstream local_addr");
        let shared = Arc::new(Shared {
            behaviour,
            addr,
            stopping: AtomicBool::new(false),
            accepts: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            wire: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            open: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let for_loop = shared.clone();
        let accept_thread = std::thread::spawn(move || accept_loop(listener, for_loop));
        Upstream {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.shared.accepts.load(Ordering::SeqCst)
    }

    /// Every request parsed so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// The request targets received so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.requests().iter().map(|r| r.target().to_string()).collect()
    }

    /// Every byte received so far, over all connections, whether or not it parsed.
    pub fn wire(&self) -> Vec<u8> {
        self.shared.wire.lock().expect("wire lock").clone()
    }

    /// Requests whose target is `target` exactly.
    pub fn requests_to(&self, target: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.target() == target)
            .collect()
    }

    /// The only request received, failing the test if there is not exactly one.
    pub fn only_request(&self) -> Request {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "the upstream should have seen exactly one request, saw:\n{}",
            describe(&requests)
        );
        requests.into_iter().next().expect("one request")
    }

    /// Waits (bounded) until at least `count` requests were parsed, and returns them all.
    pub fn wait_for_requests(&self, count: usize) -> Vec<Request> {
        wait_until(&format!("{count} requests at the upstream"), IO_TIMEOUT, || {
            Some(self.requests()).filter(|all| all.len() >= count)
        })
    }

    /// How many times `event` happened ("idle-close", "tunnel-closed", "sent-100", ...).
    pub fn events(&self, event: &str) -> usize {
        self.shared
            .events
            .lock()
            .expect("events lock")
            .iter()
            .filter(|e| *e == event)
            .count()
    }

    /// Waits (bounded) until `event` happened at least `count` times.
    pub fn wait_for_event(&self, event: &str, count: usize) {
        wait_until(
            &format!("{count} x {event:?} at the upstream"),
            IO_TIMEOUT,
            || (self.events(event) >= count).then_some(()),
        );
    }
}

/// A 127.0.0.1 address where nothing listens, so a connect is refused, and that no other
/// test can bind while this lives (unlike a port from a closed listener): its port is the
/// local end of a connection held open.
pub struct Refusing {
    pub addr: SocketAddr,
    _client: TcpStream,
    _server: TcpStream,
}

impl Refusing {
    pub fn new() -> Refusing {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        Refusing {
            addr: client.local_addr().expect("local addr"),
            _client: client,
            _server: server,
        }
    }
}

/// A listener that never accepts, its backlog filled: a connect to it hangs (the SYNs are
/// dropped), the loopback way to get a connect timeout.
pub struct Blackhole {
    pub addr: SocketAddr,
    listener: TcpListener,
    queued: Vec<TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind blackhole");
        let addr = listener.local_addr().expect("blackhole addr");
        let mut queued = Vec::new();
        // Fill the accept queue until a connect times out: that is the observable proof.
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => queued.push(stream),
                Err(e) if e.kind() == ErrorKind::TimedOut => break,
                Err(e) => panic!("filling the blackhole's backlog: {e}"),
            }
            assert!(queued.len() < 10_000, "the blackhole's backlog never filled");
        }
        Blackhole {
            addr,
            listener,
            queued,
        }
    }

    /// Starts serving `behaviour` on the same address. The connections that filled the
    /// backlog are closed first; the upstream still accepts them (they count in
    /// [`Upstream::accepts`]) but they carry no request.
    pub fn revive(self, behaviour: Behaviour) -> Upstream {
        drop(self.queued);
        Upstream::serve(self.listener, behaviour)
    }
}

/// Requests one per line, for failure messages.
pub fn describe(requests: &[Request]) -> String {
    requests
        .iter()
        .map(|r| format!("[conn {}] {:?}\n", r.conn, String::from_utf8_lossy(&r.raw)))
        .collect()
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the loop sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        for (_, stream) in self.shared.open.lock().expect("open lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self
            .shared
            .threads
            .lock()
            .expect("threads lock")
            .drain(..)
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let number = shared.accepts.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(CONN_TIMEOUT));
        let _ = stream.set_write_timeout(Some(CONN_TIMEOUT));
        if let Ok(clone) = stream.try_clone() {
            shared.open.lock().expect("open lock").push((number, clone));
        }
        let for_conn = shared.clone();
        let thread = std::thread::spawn(move || {
            let mut conn = Conn {
                stream,
                buffer: Vec::new(),
                number,
                shared: for_conn,
            };
            conn.serve();
            // Drop the clone too, so returning from a behaviour really closes the socket.
            let shared = conn.shared.clone();
            shared
                .open
                .lock()
                .expect("open lock")
                .retain(|(n, _)| *n != number);
        });
        shared.threads.lock().expect("threads lock").push(thread);
    }
}

/// One accepted connection and the bytes read from it but not yet parsed.
struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
    number: usize,
    shared: Arc<Shared>,
}

/// Why no request could be read.
#[derive(Debug)]
enum ReadError {
    /// The peer closed (or the connection was shut down) before a new request began.
    Closed,
    /// Anything else: timeout, reset, bad framing (recorded as an "error: ..." event).
    Failed,
}

impl Conn {
    fn serve(&mut self) {
        let shared = self.shared.clone();
        match &shared.behaviour {
            Behaviour::Echo => self.echo_loop(None),
            Behaviour::Reply(reply) => self.reply_loop(reply),
            Behaviour::Chunked(pieces) => self.chunked(pieces),
            Behaviour::CloseDelimited(body) => self.close_delimited(body),
            Behaviour::Trickle { length, pieces } => self.trickle(*length, pieces),
            Behaviour::Reset => self.reset(),
            Behaviour::Stall => self.stall(),
            Behaviour::IgnoreBody => self.ignore_body(),
            Behaviour::Raw(bytes) => self.raw(bytes),
            Behaviour::RawThenClose(bytes) => self.raw_then_close(bytes),
            Behaviour::CloseMidBody { announced, sent } => self.close_mid_body(*announced, *sent),
            Behaviour::CloseBeforeAnswer => self.close_before_answer(),
            Behaviour::Endless { head, repeat } => self.endless(head, repeat),
            Behaviour::CloseIdleAfter(idle) => self.echo_loop(Some(*idle)),
            Behaviour::DropSecondRequest => self.drop_second_request(),
            Behaviour::WebSocketEcho => self.websocket_echo(),
            Behaviour::Health { path, status } => self.health(path, status),
            Behaviour::Gate { path, gate } => self.gate(path, gate),
            Behaviour::Validating(reply, gate) => self.validating(reply, gate.as_ref()),
        }
    }

    // ---- behaviours, one function each ----

    /// Echo every request; with `idle`, close a connection idle that long between requests.
    fn echo_loop(&mut self, idle: Option<Duration>) {
        loop {
            if let Some(idle) = idle {
                if self.buffer.is_empty() && !self.readable_within(idle) {
                    self.shared.event("idle-close");
                    return;
                }
            }
            let request = match self.read_request() {
                Ok(request) => request,
                Err(ReadError::Closed) => return self.shared.event("peer-closed"),
                Err(ReadError::Failed) => return,
            };
            if !self.answer_echo(&request) || request.wants_close() {
                return;
            }
        }
    }

    /// The fixed reply to every request; closes after it when it says `Connection: close`.
    fn reply_loop(&mut self, reply: &Reply) {
        let closes = reply
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        while let Ok(request) = self.read_request() {
            let bytes = reply.render(request.method() == "HEAD", &self.identity());
            if self.write(&bytes).is_err() || request.wants_close() || closes {
                return;
            }
        }
    }

    fn validating(&mut self, reply: &Mutex<Reply>, gate: Option<&Gate>) {
        while let Ok(request) = self.read_request() {
            if gate.is_some_and(|gate| !gate.wait(&self.shared.stopping)) {
                return;
            }
            let current = reply.lock().expect("the reply").clone();
            let etag = current
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
                .map(|(_, v)| v);
            let matched =
                etag.is_some_and(|etag| request.header_values("if-none-match").contains(&etag.as_str()));
            let answer = match matched {
                true => Reply {
                    status: 304,
                    body: Vec::new(),
                    ..current
                },
                false => current,
            };
            if self
                .write(&answer.render(request.method() == "HEAD", &self.identity()))
                .is_err()
            {
                return;
            }
        }
    }

    fn chunked(&mut self, pieces: &[Vec<u8>]) {
        while let Ok(request) = self.read_request() {
            let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n".to_vec();
            bytes.extend(self.identity_lines().into_bytes());
            bytes.extend_from_slice(b"\r\n");
            for piece in pieces {
                bytes.extend(format!("{:x}\r\n", piece.len()).into_bytes());
                bytes.extend_from_slice(piece);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
            if self.write(&bytes).is_err() || request.wants_close() {
                return;
            }
        }
    }

    fn close_delimited(&mut self, body: &[u8]) {
        if self.read_request().is_ok() {
            let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: close\r\n".to_vec();
            bytes.extend(self.identity_lines().into_bytes());
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(body);
            let _ = self.write(&bytes);
        }
    }

    fn trickle(&mut self, length: usize, pieces: &Mutex<Receiver<Vec<u8>>>) {
        if self.read_request().is_err() {
            return;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n{}\r\n",
            self.identity_lines()
        );
        if self.write(head.as_bytes()).is_err() {
            return;
        }
        let pieces = pieces.lock().expect("trickle lock");
        let mut sent = 0;
        while sent < length {
            match pieces.recv_timeout(STOP_CHECK) {
                Ok(piece) => {
                    sent += piece.len();
                    if self.write(&piece).is_err() {
                        return;
                    }
                    self.shared.event("trickled");
                }
                Err(RecvTimeoutError::Timeout) if !self.shared.stopping.load(Ordering::SeqCst) => {}
                Err(_) => return,
            }
        }
        self.hold_until_closed();
    }

    fn reset(&mut self) {
        let mut byte = [0u8; 1];
        // Bytes waiting unread in the receive buffer turn the close into a RST.
        if matches!(self.stream.peek(&mut byte), Ok(1)) {
            self.shared.event("reset");
        }
    }

    fn stall(&mut self) {
        if self.read_request().is_ok() {
            self.hold_until_closed();
        }
    }

    fn ignore_body(&mut self) {
        if self.read_head_only().is_ok() {
            // A gate nobody opens: wait, reading nothing, until the upstream stops.
            Gate::default().wait(&self.shared.stopping);
        }
    }

    fn raw(&mut self, bytes: &[u8]) {
        if self.read_request().is_ok() && self.write(bytes).is_ok() {
            self.hold_until_closed();
        }
    }

    fn raw_then_close(&mut self, bytes: &[u8]) {
        if self.read_request().is_ok() {
            let _ = self.write(bytes);
        }
    }

    fn close_mid_body(&mut self, announced: usize, sent: usize) {
        if self.read_request().is_ok() {
            let mut bytes = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n{}\r\n",
                self.identity_lines()
            )
            .into_bytes();
            bytes.extend(std::iter::repeat_n(b'm', sent));
            let _ = self.write(&bytes);
        }
    }

    fn endless(&mut self, head: &[u8], repeat: &[u8]) {
        if self.read_request().is_err() || self.write(head).is_err() {
            return;
        }
        let batch = repeat.repeat((16 * 1024 / repeat.len().max(1)).max(1));
        // Blocking writes: each waits until the peer reads; a closed peer ends the loop.
        while !self.shared.stopping.load(Ordering::SeqCst) {
            if self.write(&batch).is_err() {
                return;
            }
        }
    }

    fn close_before_answer(&mut self) {
        let _ = self.read_request();
    }

    fn drop_second_request(&mut self) {
        let Ok(first) = self.read_request() else { return };
        if !self.answer_echo(&first) || first.wants_close() {
            return;
        }
        if self.read_request().is_ok() {
            self.shared.event("dropped");
        }
    }

    fn websocket_echo(&mut self) {
        let Ok(request) = self.read_request() else { return };
        if !request.is_upgrade() {
            self.answer_echo(&request);
            return;
        }
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{}\r\n",
            self.identity_lines()
        );
        if self.write(head.as_bytes()).is_err() {
            return;
        }
        let mut pending = std::mem::take(&mut self.buffer);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if !pending.is_empty() {
                if self.write(&pending).is_err() {
                    return;
                }
                if pending.windows(3).any(|w| w == b"bye") {
                    self.shared.event("tunnel-bye");
                    return;
                }
                pending.clear();
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.shared.event("tunnel-closed");
                    return;
                }
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.shared.event("tunnel-closed");
                    return;
                }
            }
        }
    }

    fn health(&mut self, path: &str, status: &AtomicU16) {
        while let Ok(request) = self.read_request() {
            let answered = if request.target() == path {
                let reply = Reply::new(status.load(Ordering::SeqCst)).body("health");
                self.write(&reply.render(request.method() == "HEAD", &self.identity()))
                    .is_ok()
            } else {
                self.answer_echo(&request)
            };
            if !answered || request.wants_close() {
                return;
            }
        }
    }

    fn gate(&mut self, path: &str, gate: &Gate) {
        while let Ok(request) = self.read_request() {
            if request.target() == path && !gate.wait(&self.shared.stopping) {
                return;
            }
            if !self.answer_echo(&request) || request.wants_close() {
                return;
            }
        }
    }

    // ---- plumbing ----

    fn identity(&self) -> Vec<(String, String)> {
        vec![
            ("X-Upstream".to_string(), self.shared.addr.to_string()),
            ("X-Upstream-Conn".to_string(), self.number.to_string()),
        ]
    }

    fn identity_lines(&self) -> String {
        self.identity()
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect()
    }

    /// 200 with the raw request as body; false when the write failed.
    fn answer_echo(&mut self, request: &Request) -> bool {
        let reply = Reply::new(200)
            .header("Content-Type", "application/octet-stream")
            .body(&request.raw);
        let bytes = reply.render(request.method() == "HEAD", &self.identity());
        self.write(&bytes).is_ok()
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Blocks until the peer closes (or the upstream is stopped).
    /// Reads (and drops) until the peer closes (event "held-closed") or the read fails.
    fn hold_until_closed(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return self.shared.event("held-closed"),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// True if a byte (or EOF) can be read within `idle`; false if it stayed silent.
    fn readable_within(&mut self, idle: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(idle));
        let mut byte = [0u8; 1];
        let readable = match self.stream.peek(&mut byte) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        let _ = self.stream.set_read_timeout(Some(CONN_TIMEOUT));
        readable
    }

    /// Reads more bytes into the buffer; Err(Closed) at EOF.
    fn fill(&mut self) -> Result<(), ReadError> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    let mut wire = self.shared.wire.lock().expect("wire lock");
                    wire.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failed(format!("read: {e}"))),
            }
        }
    }

    /// Reads a request head and records it, leaving any body unread.
    fn read_head_only(&mut self) -> Result<Request, ReadError> {
        let request = self.read_head()?;
        self.shared
            .requests
            .lock()
            .expect("requests lock")
            .push(request.clone());
        Ok(request)
    }

    /// Reads a request head; `raw` holds the head's bytes.
    fn read_head(&mut self) -> Result<Request, ReadError> {
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at;
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(self.failed("request head over the upstream's limit".into()));
            }
            match self.fill() {
                Err(ReadError::Closed) if !self.buffer.is_empty() => {
                    return Err(self.failed("closed in the middle of a request head".into()))
                }
                other => other?,
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        Ok(Request {
            head,
            raw: self.buffer.drain(..head_end + 4).collect(),
            body: Vec::new(),
            conn: self.number,
            at: Instant::now(),
        })
    }

    /// Reads one whole request (head and body) and records it.
    fn read_request(&mut self) -> Result<Request, ReadError> {
        let mut request = self.read_head()?;
        let mut raw = std::mem::take(&mut request.raw);
        let chunked = request
            .header_values("transfer-encoding")
            .last()
            .is_some_and(|v| v.to_ascii_lowercase().trim_end().ends_with("chunked"));
        let length = request
            .header_values("content-length")
            .first()
            .map(|v| v.parse::<usize>());
        let expects_body = chunked || matches!(length, Some(Ok(n)) if n > 0);
        let expect_continue = request
            .header_values("expect")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("100-continue"));
        if expect_continue && expects_body && self.buffer.is_empty() {
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|e| self.failed(format!("writing 100 Continue: {e}")))?;
            self.shared.event("sent-100");
        }
        if chunked {
            self.read_chunked(&mut raw, &mut request.body)?;
        } else if let Some(length) = length {
            let length = length.map_err(|_| self.failed("bad Content-Length".into()))?;
            while self.buffer.len() < length {
                match self.fill() {
                    Err(ReadError::Closed) => {
                        return Err(self.failed("closed in the middle of a body".into()))
                    }
                    other => other?,
                }
            }
            request.body = self.buffer.drain(..length).collect();
            raw.extend_from_slice(&request.body);
        }
        request.raw = raw;
        self.shared
            .requests
            .lock()
            .expect("requests lock")
            .push(request.clone());
        Ok(request)
    }

    /// Decodes a chunked body (and its trailers), appending its framed bytes to `raw`.
    fn read_chunked(&mut self, raw: &mut Vec<u8>, body: &mut Vec<u8>) -> Result<(), ReadError> {
        loop {
            let line = self.read_line(raw)?;
            let size_text = line.split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| self.failed(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailer section: lines until an empty one.
                while !self.read_line(raw)?.is_empty() {}
                return Ok(());
            }
            while self.buffer.len() < size + 2 {
                self.fill()
                    .map_err(|_| self.failed("closed in the middle of a chunk".into()))?;
            }
            if &self.buffer[size..size + 2] != b"\r\n" {
                return Err(self.failed("chunk data not followed by CRLF".into()));
            }
            body.extend_from_slice(&self.buffer[..size]);
            raw.extend(self.buffer.drain(..size + 2));
        }
    }

    fn read_line(&mut self, raw: &mut Vec<u8>) -> Result<String, ReadError> {
        loop {
            if let Some(at) = find(&self.buffer, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buffer[..at]).into_owned();
                raw.extend(self.buffer.drain(..at + 2));
                return Ok(line);
            }
            self.fill()
                .map_err(|_| self.failed("closed in the middle of chunked framing".into()))?;
        }
    }

    fn failed(&self, why: String) -> ReadError {
        self.shared.event(format!("error: {why}"));
        ReadError::Failed
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

mod self_test {
    //! The upstream checked on its own, with a raw client.

    use super::*;
    use crate::harness::{read_head_response, read_response, read_to_close};

    fn connect(upstream: &Upstream) -> TcpStream {
        let stream = TcpStream::connect(upstream.addr).expect("connect to the test upstream");
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        stream
    }

    #[test]
    fn upstream_echoes_raw_requests_and_keeps_connections_alive() {
        let upstream = Upstream::start(Behaviour::Echo);
        let mut stream = connect(&upstream);
        let first = b"GET /a%2Fb?x=%20y HTTP/1.1\r\nHost: h\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n";
        stream.write_all(first).expect("write");
        let response = read_response(&mut stream);
        assert_eq!(response.body, first);
        assert_eq!(response.header("X-Upstream-Conn"), Some("1"));
        let second = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n";
        stream.write_all(second).expect("write");
        let response = read_response(&mut stream);
        assert_eq!(response.body, second);
        let requests = upstream.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].target(), "/a%2Fb?x=%20y");
        assert_eq!(requests[0].header_values("x-multi"), ["1", "2"]);
        assert_eq!(requests[1].body, b"abc");
        assert_eq!(upstream.accepts(), 1);
    }

    #[test]
    fn upstream_sends_100_continue_and_chunked_and_close_delimited_replies() {
        let upstream = Upstream::start(Behaviour::Chunked(vec![b"ab".to_vec(), b"cd".to_vec()]));
        let mut stream = connect(&upstream);
        stream
            .write_all(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .expect("write");
        let interim = read_head_response(&mut stream);
        assert_eq!(interim.status, 100);
        stream.write_all(b"xy").expect("write body");
        let head = read_head_response(&mut stream);
        assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
        let mut rest = [0u8; 19];
        stream.read_exact(&mut rest).expect("read chunks");
        assert_eq!(&rest, b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n");
        assert_eq!(upstream.only_request().body, b"xy");

        let upstream = Upstream::start(Behaviour::CloseDelimited(b"all of it".to_vec()));
        let mut stream = connect(&upstream);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("write");
        let response = read_response(&mut stream);
        assert_eq!(response.body, b"all of it");
    }

    #[test]
    fn upstream_trickles_on_command_and_stops_while_blocked() {
        let (pieces, behaviour) = Behaviour::trickle(2);
        let upstream = Upstream::start(behaviour);
        let mut stream = connect(&upstream);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("write");
        let head = read_head_response(&mut stream);
        assert_eq!(head.header("Content-Length"), Some("2"));
        pieces.send(b"a".to_vec()).expect("send a");
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).expect("first byte");
        assert_eq!(&byte, b"a");
        drop(upstream); // blocked waiting for the second piece: must still stop
        drop(pieces);
    }

    #[test]
    fn upstream_misbehaves_on_request() {
        let upstream = Upstream::start(Behaviour::CloseMidBody {
            announced: 10,
            sent: 3,
        });
        let mut stream = connect(&upstream);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("write");
        let bytes = read_to_close(&mut stream);
        assert!(
            bytes.ends_with(b"\r\n\r\nmmm"),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );

        let upstream = Upstream::start(Behaviour::DropSecondRequest);
        let mut stream = connect(&upstream);
        stream
            .write_all(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("write");
        read_response(&mut stream).assert_status(200);
        stream
            .write_all(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("write");
        assert!(read_to_close(&mut stream).is_empty());
        assert_eq!(upstream.events("dropped"), 1);

        let upstream = Upstream::start(Behaviour::CloseIdleAfter(Duration::from_millis(100)));
        let mut stream = connect(&upstream);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("write");
        read_response(&mut stream).assert_status(200);
        upstream.wait_for_event("idle-close", 1);
        assert!(read_to_close(&mut stream).is_empty());

        let upstream = Upstream::start(Behaviour::Stall);
        let mut stream = connect(&upstream);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("write");
        upstream.wait_for_requests(1);
        drop(upstream); // a stalled connection must not keep the upstream from stopping
        assert!(read_to_close(&mut stream).is_empty());
    }

    #[test]
    fn upstream_tunnels_after_101() {
        let upstream = Upstream::start(Behaviour::WebSocketEcho);
        let mut stream = connect(&upstream);
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .expect("write");
        assert_eq!(read_head_response(&mut stream).status, 101);
        stream.write_all(b"ping").expect("write");
        let mut echo = [0u8; 4];
        stream.read_exact(&mut echo).expect("echo");
        assert_eq!(&echo, b"ping");
        stream.shutdown(Shutdown::Write).expect("shutdown");
        upstream.wait_for_event("tunnel-closed", 1);
    }
}
