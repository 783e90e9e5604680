//! `Exchange` driven in process: real upstream sockets on loopback, a client input fed from
//! memory, and a sink that records what the client would be sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::*;
use crate::config::Config;
use crate::http::request::{self, HeadLimits};
use crate::http::response::{Length, ResponseHead};
use crate::io::loopback::Listener;
use crate::io::memory::MemoryTransport;
use crate::io::SpillDir;

/// What a client would be sent, as the handler gave it.
#[derive(Default)]
struct Recorder {
    head: ResponseHead,
    sent: Option<(u16, Length)>,
    body: Vec<u8>,
    ended: bool,
    continued: bool,
    /// What `backlog_bytes` says: a big number plays a client that takes nothing.
    backlog: usize,
}

impl Respond for Recorder {
    fn head(&mut self) -> &mut ResponseHead {
        &mut self.head
    }
    fn send_head(&mut self) {
        self.sent = Some((self.head.status, self.head.length));
    }
    fn body(&mut self, part: BodyPart<'_>) {
        if let BodyPart::Bytes(bytes) = part {
            self.body.extend_from_slice(bytes);
        }
    }
    fn end(&mut self) {
        self.ended = true;
    }
    fn send_continue(&mut self) {
        self.continued = true;
    }
    fn backlog_bytes(&self) -> usize {
        self.backlog
    }
}

static NO_RULES: crate::config::HeaderRules = crate::config::HeaderRules {
    set: Vec::new(),
    add: Vec::new(),
    remove: Vec::new(),
};

/// The key of the client connection the exchange works for.
const CONN: usize = 0;

/// An upstream named `app` with `servers`, and what an exchange with it needs.
struct Bench {
    poll: Poll,
    events: Events,
    upstreams: Upstreams<'static>,
    buffers: Buffers,
    client: MemoryTransport,
    client_in: Input,
    now: Instant,
    spill_dir: tempfile::TempDir,
    spill: SpillDir,
}

impl Bench {
    fn new(servers: &[SocketAddr], keys: &str) -> Bench {
        let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        let text = format!(
            "[[server]]\nlisten = [\"127.0.0.1:1\"]\n[[server.route]]\nprefix = \"/\"\nupstream = \"app\"\n\
             [upstream.app]\nservers = [{}]\n{keys}\n",
            list.join(", ")
        );
        let config = crate::config::load_text(std::path::Path::new("t.toml"), &text).unwrap();
        let config: &'static Config = Box::leak(Box::new(config));
        let now = Instant::now();
        let spill_dir = tempfile::tempdir().unwrap();
        Bench {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(16),
            upstreams: Upstreams::new(
                &config.upstreams,
                now,
                Some(super::super::shared_for_tests(&config.upstreams)),
            )
            .unwrap(),
            buffers: Buffers::default(),
            client: MemoryTransport::default(),
            client_in: Input::default(),
            now,
            spill: SpillDir::open(spill_dir.path(), 1 << 30).unwrap(),
            spill_dir,
        }
    }

    fn env(&mut self) -> Env<'_, 'static> {
        Env {
            upstreams: &mut self.upstreams,
            registry: self.poll.registry(),
            buffers: &mut self.buffers,
            spill: Some(&self.spill),
            now: self.now,
        }
    }

    /// Starts the exchange for `request` (its head; any body bytes after it are what the
    /// client has sent so far), streaming its body.
    fn begin(&mut self, request: &[u8]) -> Exchange {
        self.start(request, false)
    }

    /// The same, collecting the body whole before picking an upstream.
    fn begin_collecting(&mut self, request: &[u8]) -> Exchange {
        self.start(request, true)
    }

    fn start(&mut self, request: &[u8], collect_body: bool) -> Exchange {
        let head = request::parse(request, &HeadLimits::default()).unwrap().unwrap();
        self.client.receive(&request[head.len..]);
        self.client_in.lend(&mut self.buffers.input);
        let start = Start {
            head: &head,
            buf: request,
            request_id: b"rid",
            peer: "10.0.0.9:4000".parse().unwrap(),
            client: "10.0.0.9".parse().unwrap(),
            trusted_peer: false,
            upstream: 0,
            target_start: 0,
            conn: CONN,
            max_body_bytes: 4 << 20,
            collect_body,
            offloads: Offloads::default(),
            upgrade: head.upgrade,
            underscores_in_headers: false,
            request_headers: &NO_RULES,
            parts: None,
            preconditions: Default::default(),
        };
        Exchange::begin(&start, &mut self.env()).unwrap()
    }

    /// One pump, with what the client sent so far.
    fn pump(&mut self, exchange: &mut Exchange, sink: &mut Recorder) -> Step {
        let _ = self.client_in.fill(&mut self.client, 1 << 16);
        let mut env = Env {
            upstreams: &mut self.upstreams,
            registry: self.poll.registry(),
            buffers: &mut self.buffers,
            spill: Some(&self.spill),
            now: self.now,
        };
        exchange.pump(&mut self.client_in, sink, &mut env)
    }

    /// Pumps, passing upstream events on, until the exchange ends or `done` holds.
    fn pump_until(
        &mut self,
        exchange: &mut Exchange,
        sink: &mut Recorder,
        mut done: impl FnMut(&Exchange, &Recorder) -> bool,
    ) -> Step {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            let step = self.pump(exchange, sink);
            if matches!(step, Step::Done { .. } | Step::Failed { .. } | Step::Abort) || done(exchange, sink) {
                return step;
            }
            assert!(Instant::now() < give_up, "the exchange made no headway: {step:?}");
            if step == Step::Wait {
                self.poll
                    .poll(&mut self.events, Some(Duration::from_millis(20)))
                    .unwrap();
                for event in self.events.iter() {
                    exchange.mark_upstream(event);
                }
            }
        }
    }
}

fn listener() -> (Listener, SocketAddr) {
    let listener = Listener::bind();
    let addr = listener.addr();
    (listener, addr)
}

#[test]
fn an_upstream_that_answers_early_leaves_the_request_unread() {
    let (upstream, addr) = listener();
    let mut bench = Bench::new(&[addr], "");
    let mut exchange = bench.begin(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789");
    let mut sink = Recorder::default();
    let mut conn = upstream.accept();
    bench.pump_until(&mut exchange, &mut sink, |_, sink| sink.continued);
    assert!(conn.read_until("0123456789").ends_with("\r\n\r\n0123456789"));
    conn.send(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n");
    let step = bench.pump_until(&mut exchange, &mut sink, |_, _| false);
    assert_eq!(step, Step::Done { request_read: false });
    assert_eq!(sink.sent, Some((413, Length::Known(0))));
    assert!(sink.ended);
}

/// A connect to a local server completes at once, yet the request waits for the socket's
/// first event (see the `Link::Connecting` arm of `pump`).
#[test]
fn a_fresh_connection_gets_its_request_on_its_first_event() {
    let (upstream, addr) = listener();
    let mut bench = Bench::new(&[addr], "");
    let mut exchange = bench.begin(b"GET /f HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut sink = Recorder::default();
    let mut conn = upstream.accept();
    assert_eq!(bench.pump(&mut exchange, &mut sink), Step::Wait);
    assert_eq!(exchange.sent, 0, "sent before the first event");
    bench.pump_until(&mut exchange, &mut sink, |exchange, _| exchange.request_out());
    assert!(conn.read_until("\r\n\r\n").starts_with("GET /f HTTP/1.1\r\n"));
}

#[test]
fn a_chunked_response_is_decoded_and_its_connection_pooled() {
    let (upstream, addr) = listener();
    let mut bench = Bench::new(&[addr], "");
    let mut exchange = bench.begin(b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut sink = Recorder::default();
    let mut conn = upstream.accept();
    bench.pump_until(&mut exchange, &mut sink, |exchange, _| exchange.request_out());
    assert!(conn.read_until("\r\n\r\n").starts_with("GET /c HTTP/1.1\r\n"));
    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let step = bench.pump_until(&mut exchange, &mut sink, |_, _| false);
    assert_eq!(step, Step::Done { request_read: true });
    assert_eq!(sink.sent, Some((200, Length::Unknown)));
    assert_eq!(sink.body, b"hello world");
    assert!(sink.ended && !sink.continued);
    let now = bench.now;
    assert!(
        bench.upstreams.checkout(0, 0, CONN, now).is_some(),
        "pooled for the next request"
    );
    exchange.release(&mut bench.buffers, &mut bench.upstreams);
}

#[test]
fn a_refused_server_is_skipped_for_the_next() {
    let closed = listener().1;
    let (upstream, addr) = listener();
    let mut bench = Bench::new(&[closed, addr], "max_fails = 1");
    let mut exchange = bench.begin(b"GET /r HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut sink = Recorder::default();
    bench.pump_until(&mut exchange, &mut sink, |exchange, _| {
        exchange.tried.contains(1) && exchange.request_out()
    });
    let mut conn = upstream.accept();
    conn.read_until("\r\n\r\n");
    conn.send(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        bench.pump_until(&mut exchange, &mut sink, |_, _| false),
        Step::Done { request_read: true }
    );
    assert_eq!(sink.sent, Some((204, Length::None)));
    let counters = bench.upstreams.counters(bench.now);
    let refused = UpstreamError::ALL
        .iter()
        .position(|e| *e == UpstreamError::ConnectRefused)
        .unwrap();
    assert_eq!(counters[0].errors[refused], 1);
    assert_eq!(
        counters[0].servers_up,
        [false, true],
        "passive health holds it against server 0"
    );
}

#[test]
fn the_deadline_follows_what_the_exchange_waits_for() {
    let (upstream, addr) = listener();
    let keys = "connect_timeout = \"2s\"\nread_timeout = \"4s\"";
    let mut bench = Bench::new(&[addr], keys);
    let mut exchange = bench.begin(b"POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234");
    let deadline = |bench: &Bench, exchange: &Exchange| {
        exchange
            .deadline(&bench.upstreams)
            .map(|d| d.duration_since(bench.now))
    };
    assert_eq!(
        deadline(&bench, &exchange),
        Some(Duration::from_secs(2)),
        "connecting"
    );
    let mut sink = Recorder::default();
    let mut conn = upstream.accept();
    bench.pump_until(&mut exchange, &mut sink, |exchange, _| {
        matches!(exchange.link, Link::Open { .. })
    });
    conn.read_until("01234");
    assert!(exchange.awaits_client_body());
    assert_eq!(
        deadline(&bench, &exchange),
        None,
        "the client's body timer runs, not the upstream's"
    );
    bench.client.receive(b"56789");
    bench.client_in.mark_readable(false);
    bench.pump_until(&mut exchange, &mut sink, |exchange, _| exchange.request_out());
    conn.read_until("56789");
    assert_eq!(
        deadline(&bench, &exchange),
        Some(Duration::from_secs(4)),
        "awaiting the answer"
    );
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nabcd");
    bench.pump_until(&mut exchange, &mut sink, |_, sink| sink.body.len() == 4);
    sink.backlog = 1 << 20;
    conn.send(b"efgh");
    bench.pump_until(&mut exchange, &mut sink, |exchange, _| {
        exchange.waiting == Waiting::Client
    });
    assert_eq!(
        deadline(&bench, &exchange),
        None,
        "the client's turn: its own timer runs"
    );
    sink.backlog = 0;
    assert_eq!(
        bench.pump_until(&mut exchange, &mut sink, |_, _| false),
        Step::Done { request_read: true }
    );
    assert_eq!(sink.body, b"abcdefgh");
    assert_eq!(deadline(&bench, &exchange), None, "done");
}

#[test]
fn a_collected_body_reaches_no_upstream_until_it_is_whole() {
    let (upstream, addr) = listener();
    let mut bench = Bench::new(&[addr], "");
    let mut exchange =
        bench.begin_collecting(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234");
    let mut sink = Recorder::default();
    assert_eq!(
        bench.pump_until(&mut exchange, &mut sink, |_, sink| sink.continued),
        Step::Wait
    );
    assert!(exchange.awaits_client_body() && exchange.deadline(&bench.upstreams).is_none());
    assert!(
        upstream.try_accept().is_none(),
        "no upstream is picked before the body is whole"
    );
    bench.client.receive(b"56789");
    bench.client_in.mark_readable(false);
    bench.pump_until(&mut exchange, &mut sink, |exchange, _| exchange.request_out());
    let mut conn = upstream.accept();
    let request = conn.read_until("56789");
    assert!(
        request.contains("\r\nContent-Length: 10\r\n\r\n0123456789"),
        "{request}"
    );
    conn.send(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        bench.pump_until(&mut exchange, &mut sink, |_, _| false),
        Step::Done { request_read: true }
    );
}

#[test]
fn a_collected_chunked_body_goes_up_with_its_length_from_memory_and_a_file() {
    let (upstream, addr) = listener();
    let mut bench = Bench::new(&[addr], "");
    let body: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut request = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(7_000) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\nX-Trailer: dropped\r\n\r\n");
    let mut exchange = bench.begin_collecting(&request);
    let mut sink = Recorder::default();
    bench.pump_until(&mut exchange, &mut sink, |exchange, _| exchange.request_out());
    let mut conn = upstream.accept();
    let head = conn.read_until("\r\n\r\n");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
    assert!(
        !head.contains("Transfer-Encoding") && !head.contains("X-Trailer"),
        "{head}"
    );
    let mut received = head.split_once("\r\n\r\n").unwrap().1.as_bytes().to_vec();
    while received.len() < body.len() {
        let mut more = vec![0u8; 65536];
        let n = std::io::Read::read(&mut conn.0, &mut more).unwrap();
        assert!(
            n > 0,
            "the upstream got {} of {} bytes",
            received.len(),
            body.len()
        );
        received.extend_from_slice(&more[..n]);
    }
    assert!(received == body, "the body arrived changed");
    assert_eq!(std::fs::read_dir(bench.spill_dir.path()).unwrap().count(), 0);
}
