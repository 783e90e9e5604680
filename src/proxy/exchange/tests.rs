//! `Exchange` driven in process: real upstream sockets on loopback, a client input fed from
//! memory, and a sink that records what the client would be sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::*;
use crate::config::Config;
use crate::http::request::{self, HeadLimits};
use crate::http::response::{Length, ResponseHead};
use crate::io::loopback::Listener;
use crate::io::memory::MemoryTransport;

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

const TOKEN: Token = Token(1);

/// An upstream named `app` with `servers`, and what an exchange with it needs.
struct Bench {
    poll: Poll,
    events: Events,
    upstreams: Upstreams<'static>,
    buffers: Buffers,
    client: MemoryTransport,
    client_in: Input,
    now: Instant,
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
        Bench {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(16),
            upstreams: Upstreams::new(&config.upstreams, now),
            buffers: Buffers::default(),
            client: MemoryTransport::default(),
            client_in: Input::default(),
            now,
        }
    }

    fn env(&mut self) -> Env<'_, 'static> {
        Env {
            upstreams: &mut self.upstreams,
            registry: self.poll.registry(),
            buffers: &mut self.buffers,
            now: self.now,
        }
    }

    /// Starts the exchange for `request` (its head; any body bytes after it are what the
    /// client has sent so far).
    fn begin(&mut self, request: &[u8]) -> Exchange {
        let head = request::parse(request, &HeadLimits::default()).unwrap().unwrap();
        self.client.receive(&request[head.len..]);
        self.client_in.lend(&mut self.buffers.input);
        let start = Start {
            head: &head,
            buf: request,
            request_id: b"rid",
            peer: "10.0.0.9:4000".parse().unwrap(),
            upstream: 0,
            target_start: 0,
            token: TOKEN,
            max_body_bytes: 1 << 20,
        };
        Exchange::begin(&start, &mut self.env()).unwrap()
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
            let _ = self.client_in.fill(&mut self.client, 1 << 16);
            let step = {
                let mut env = Env {
                    upstreams: &mut self.upstreams,
                    registry: self.poll.registry(),
                    buffers: &mut self.buffers,
                    now: self.now,
                };
                exchange.pump(&mut self.client_in, sink, &mut env)
            };
            if matches!(step, Step::Done { .. } | Step::Failed { .. } | Step::Abort) || done(exchange, sink) {
                return step;
            }
            assert!(Instant::now() < give_up, "the exchange made no headway: {step:?}");
            if step == Step::Wait {
                self.poll
                    .poll(&mut self.events, Some(Duration::from_millis(20)))
                    .unwrap();
                for event in self.events.iter() {
                    exchange.mark_readable(event.is_read_closed() || event.is_error());
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
        bench.upstreams.checkout(0, 0, TOKEN, now).is_some(),
        "pooled for the next request"
    );
    exchange.release(&mut bench.buffers);
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
