//! `Conn` driven in process (`worker::driver`): a client in memory, real upstream sockets on
//! loopback, a clock the test moves.

use std::time::Duration;

use super::Verdict;
use crate::io::loopback::Listener as Upstream;
use crate::stats::UpstreamError;
use crate::worker::driver::{site_and_api, Driver};

const FILES: &[(&str, &[u8])] = &[("site/a.txt", b"alpha"), ("site/b.txt", b"bravo")];

fn driver(upstream: &Upstream, limits: &str, upstream_keys: &str) -> Driver {
    Driver::new(&site_and_api(upstream.addr(), limits, upstream_keys), FILES)
}

/// Splits what a client received into responses by their status lines.
fn statuses(received: &str) -> Vec<&str> {
    received
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &received[at + 9..at + 12])
        .collect()
}

#[test]
fn keep_alive_serves_requests_in_turn_then_times_out_when_idle() {
    let up = Upstream::bind();
    let mut d = driver(&up, "keepalive_timeout = \"5s\"", "");
    for _ in 0..2 {
        assert_eq!(d.send(b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\n"), Verdict::Wait);
        let response = d.received();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("Content-Length: 5\r\n\r\nalpha"), "{response}");
        assert!(!response.contains("Connection:"), "{response}");
    }
    assert_eq!(d.time_left(), Duration::from_secs(5));
    assert_eq!(d.advance(Duration::from_secs(4)), None);
    assert_eq!(d.advance(Duration::from_secs(1)), Some(Verdict::Close));
}

#[test]
fn pipelined_requests_are_answered_in_order_in_any_split() {
    let up = Upstream::bind();
    let requests = b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\nGET /nope HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b.txt HTTP/1.1\r\nHost: h\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let mut whole = driver(&up, "", "");
    assert_eq!(whole.send(requests), Verdict::Close);
    let expected = whole.received();
    assert_eq!(statuses(&expected), ["200", "404", "200", "200"]);
    let alpha = expected.find("alpha").unwrap();
    let missing = expected.find("404 Not Found\n").unwrap();
    let bravo = expected.find("bravo").unwrap();
    assert!(alpha < missing && missing < bravo, "{expected}");
    assert_eq!(
        expected.matches("bravo").count(),
        1,
        "HEAD sends no body: {expected}"
    );
    assert!(expected.ends_with("Connection: close\r\n\r\nbravo"), "{expected}");
    let mut bytewise = driver(&up, "", "");
    let mut received = String::new();
    for (i, byte) in requests.iter().enumerate() {
        let verdict = bytewise.send(&[*byte]);
        received.push_str(&bytewise.received());
        let last = i == requests.len() - 1;
        assert_eq!(
            verdict,
            if last { Verdict::Close } else { Verdict::Wait },
            "at byte {i}"
        );
    }
    // The same responses, aside from dates and validators (each driver wrote its own files).
    let steady = |text: &str| -> String {
        let varies = ["Date:", "ETag:", "Last-Modified:"];
        text.lines()
            .filter(|l| !varies.iter().any(|v| l.starts_with(v)))
            .collect()
    };
    assert_eq!(steady(&received), steady(&expected));
}

#[test]
fn continue_is_sent_once_where_the_body_will_be_read() {
    let up = Upstream::bind();
    let mut d = driver(&up, "", "");
    // Proxied: the upstream needs the body (collected whole before an upstream is picked).
    d.send(b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let (interim, _) = d.run_until("100 Continue", |_, r| r.contains("\r\n\r\n"));
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    d.send(b"hello");
    let mut upstream = up.accept();
    let request = upstream.read_until("hello");
    assert!(
        request.starts_with("POST /x HTTP/1.1\r\n") && !request.contains("Expect"),
        "{request}"
    );
    assert!(request.ends_with("Content-Length: 5\r\n\r\nhello"), "{request}");
    upstream.send(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    let (response, verdict) = d.run_until("the 201", |_, r| r.ends_with("ok"));
    assert!(response.starts_with("HTTP/1.1 201 Created\r\n"), "{response}");
    assert_eq!(verdict, Verdict::Wait);
    // Static, kept alive: the body must be read (and is discarded) to find the next request.
    d.send(b"POST /a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let refused = d.received();
    assert!(
        refused.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 405 "),
        "{refused}"
    );
    d.send(b"hello");
    d.send(b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(d.received().ends_with("alpha"));
    // Static, closing: the body is not asked for.
    assert_eq!(
        d.send(b"POST /a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"),
        Verdict::Wait,
        "lingers for the body it did not ask for"
    );
    let closing = d.received();
    assert!(
        closing.starts_with("HTTP/1.1 405 ") && closing.contains("Connection: close"),
        "{closing}"
    );
}

#[test]
fn an_upstream_that_ends_mid_body_cuts_the_client() {
    let up = Upstream::bind();
    let mut d = driver(&up, "", "");
    d.send(b"GET /api/big HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n\r\n");
    let mut upstream = up.accept();
    upstream.read_until("\r\n\r\n");
    upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    drop(upstream);
    let (received, verdict) = d.run_until("the cut", |_, _| false);
    assert_eq!(verdict, Verdict::Close);
    assert!(received.starts_with("HTTP/1.1 200 OK\r\n") && received.ends_with("\r\n\r\n0123456789"));
    assert_eq!(d.upstream_errors(UpstreamError::Reset), 1);
    let log = d.log_lines();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].contains("\"status\":200,\"bytes_sent\":10,"), "{}", log[0]);
}

/// On a route that does not buffer responses the upstream waits for a slow client; the
/// client's timer, not the upstream's, decides.
#[test]
fn a_slow_client_is_timed_by_its_send_timeout_not_by_the_upstream() {
    let up = Upstream::bind();
    let mut d = driver(&up, "send_timeout = \"5s\"", "read_timeout = \"1s\"");
    d.conn.client().set_room(0);
    d.send(b"GET /stream/big HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut upstream = up.accept();
    upstream.read_until("\r\n\r\n");
    const BODY_BYTES: usize = 512 * 1024;
    let writer = std::thread::spawn(move || {
        upstream.send(format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_BYTES}\r\n\r\n").as_bytes());
        upstream.send(&vec![b'x'; BODY_BYTES]);
        upstream
    });
    // Waiting for the upstream, its read timeout runs; once the client's backlog is full,
    // only the client's send timer does.
    let full = |d: &Driver, _: &str| d.time_left() == Duration::from_secs(5);
    let mut received = d.run_until("the exchange to wait for the client", full).0;
    for _ in 0..3 {
        assert_eq!(
            d.advance(Duration::from_secs(2)),
            None,
            "cut while the client reads"
        );
        // The client takes a little; the exchange refills the backlog and waits again.
        d.conn.client().set_room(40 * 1024);
        received += &d.run_until("the backlog to refill", full).0;
    }
    d.conn.client().set_room(usize::MAX);
    let head_bytes = received.find("\r\n\r\n").unwrap() + 4;
    let so_far = received.len();
    received += &d
        .run_until("the whole body", |_, r| {
            so_far + r.len() == head_bytes + BODY_BYTES
        })
        .0;
    assert!(received[head_bytes..].bytes().all(|b| b == b'x'));
    assert_eq!(d.upstream_errors(UpstreamError::ReadTimeout), 0);
    let _upstream = writer.join().unwrap();

    // A client that stops taking bytes is cut after its send timeout, as its own fault.
    let mut d = driver(&up, "send_timeout = \"5s\"", "read_timeout = \"1s\"");
    d.conn.client().set_room(0);
    d.send(b"GET /stream/big HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut upstream = up.accept();
    upstream.read_until("\r\n\r\n");
    let writer = std::thread::spawn(move || {
        upstream.send(format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_BYTES}\r\n\r\n").as_bytes());
        let _ = std::io::Write::write_all(&mut upstream.0, &vec![b'x'; BODY_BYTES]);
    });
    d.run_until("the backlog to fill", |d, _| {
        d.time_left() == Duration::from_secs(5)
    });
    assert_eq!(d.advance(Duration::from_secs(4)), None);
    assert_eq!(d.advance(Duration::from_secs(1)), Some(Verdict::Close));
    d.conn.release(&mut d.ctx);
    assert_eq!(d.upstream_errors(UpstreamError::ReadTimeout), 0);
    let log = d.log_lines();
    assert!(log.len() == 1 && log[0].contains("\"status\":200,"), "{log:?}");
    drop(d);
    writer.join().unwrap();
}

#[test]
fn each_phase_times_out_after_its_own_timer() {
    let up = Upstream::bind();
    // A head that does not complete: 408, then a lingering close.
    let mut d = driver(&up, "header_timeout = \"3s\"", "read_timeout = \"7s\"");
    d.send(b"GET /a.txt HTTP/1.1\r\nHo");
    assert_eq!(d.time_left(), Duration::from_secs(3));
    assert_eq!(d.advance(Duration::from_secs(3)), Some(Verdict::Wait));
    let refused = d.received();
    assert!(
        refused.starts_with("HTTP/1.1 408 ") && refused.contains("Connection: close"),
        "{refused}"
    );
    assert_eq!(
        d.advance(Duration::from_secs(2)),
        Some(Verdict::Close),
        "linger ends"
    );

    // A body the static route does not want, arriving too slowly.
    let mut d = driver(&up, "header_timeout = \"3s\"", "read_timeout = \"7s\"");
    d.send(b"POST /a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello");
    assert!(d.received().starts_with("HTTP/1.1 405 "));
    assert_eq!(d.advance(Duration::from_secs(2)), None);
    d.send(b"wor");
    assert_eq!(
        d.advance(Duration::from_secs(2)),
        None,
        "each body read re-arms it"
    );
    assert_eq!(d.advance(Duration::from_secs(1)), Some(Verdict::Close));

    // An upstream that does not answer: 504, and the connection goes on.
    let mut d = driver(&up, "header_timeout = \"3s\"", "read_timeout = \"7s\"");
    d.send(b"GET /api/slow HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut upstream = up.accept();
    upstream.read_until("\r\n\r\n");
    d.run_until("the request to be out", |d, _| {
        d.time_left() == Duration::from_secs(7)
    });
    assert_eq!(d.advance(Duration::from_secs(6)), None);
    assert_eq!(d.advance(Duration::from_secs(1)), Some(Verdict::Wait));
    assert!(d.received().starts_with("HTTP/1.1 504 Gateway Timeout\r\n"));
    assert_eq!(d.upstream_errors(UpstreamError::ReadTimeout), 1);
    d.send(b"GET /b.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(d.received().ends_with("bravo"));
}

#[test]
fn a_connection_closed_mid_exchange_gives_its_buffers_back_and_logs_the_request() {
    let up = Upstream::bind();
    let mut d = driver(&up, "", "");
    // Warm the pools: a proxied request that completes leaves its buffers there.
    d.send(b"GET /api/warm HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut upstream = up.accept();
    upstream.read_until("\r\n\r\n");
    upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    d.run_until("the warm-up", |_, r| r.ends_with("ok"));
    let spare = (d.ctx.buffers.input.spare(), d.ctx.buffers.output.spare());
    assert!(spare.0 >= 1 && spare.1 >= 1, "{spare:?}");
    // The next one is cut before its answer: the exchange holds two buffers, the connection
    // its input; closing gives every one back.
    d.send(b"GET /api/cut HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut upstream = up.accept();
    d.run_until("the request to be out", |d, _| {
        d.time_left() > std::time::Duration::from_secs(30)
    });
    upstream.read_until("\r\n\r\n");
    assert!(d.ctx.buffers.input.spare() < spare.0, "the exchange borrowed one");
    d.conn.release(&mut d.ctx);
    assert_eq!((d.ctx.buffers.input.spare(), d.ctx.buffers.output.spare()), spare);
    let log = d.log_lines();
    assert!(
        log[1].contains("\"target\":\"/api/cut\"") && log[1].contains("\"status\":499,"),
        "{log:?}"
    );
}

#[test]
fn a_client_that_stops_sending_a_proxied_body_is_timed_out_as_its_own_fault() {
    let up = Upstream::bind();
    let mut d = driver(&up, "header_timeout = \"3s\"", "send_timeout = \"60s\"");
    // Streamed: the first half is upstream already.
    d.send(b"POST /stream/up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234");
    let mut upstream = up.accept();
    d.run_until("the first half upstream", |d, _| {
        d.time_left() == Duration::from_secs(3)
    });
    assert!(upstream.read_until("01234").ends_with("\r\n\r\n01234"));
    assert_eq!(d.advance(Duration::from_secs(2)), None);
    assert_eq!(
        d.advance(Duration::from_secs(1)),
        Some(Verdict::Wait),
        "lingers for the rest"
    );
    let answer = d.received();
    assert!(
        answer.starts_with("HTTP/1.1 408 ") && answer.contains("Connection: close"),
        "{answer}"
    );
    assert_eq!(d.upstream_errors(UpstreamError::SendTimeout), 0);
    let up_now = d.ctx.pipeline.upstreams.counters(d.ctx.clock.now);
    assert_eq!(up_now[0].servers_up, [true], "not held against the upstream");

    // Collected (request buffering): no upstream was even picked.
    let mut d = driver(&up, "header_timeout = \"3s\"", "");
    d.send(b"POST /api/up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234");
    assert_eq!(d.time_left(), Duration::from_secs(3));
    assert_eq!(d.advance(Duration::from_secs(3)), Some(Verdict::Wait));
    assert!(d.received().starts_with("HTTP/1.1 408 "));
    assert!(up.try_accept().is_none(), "the upstream never heard of it");
}

#[test]
fn pipelined_requests_before_a_half_close_are_all_answered() {
    let up = Upstream::bind();
    let big = vec![b'z'; 100 * 1024];
    let files: &[(&str, &[u8])] = &[("site/a.txt", b"alpha"), ("site/big.bin", &big)];
    let mut d = Driver::new(&site_and_api(up.addr(), "", ""), files);
    d.conn.client().set_room(0);
    let mut requests = b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
    for _ in 0..3 {
        requests.extend_from_slice(b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    }
    d.send(&requests);
    assert_eq!(d.close_client(), Verdict::Wait, "answers are owed");
    d.conn.client().set_room(usize::MAX);
    assert_eq!(d.drive(), Verdict::Close);
    let received = d.received();
    assert_eq!(statuses(&received), ["200"; 4]);
    assert!(received.ends_with("alpha"));
}

#[test]
fn a_buffered_response_is_taken_off_the_upstream_whatever_the_client_takes() {
    let up = Upstream::bind();
    let mut d = driver(&up, "send_timeout = \"5s\"", "read_timeout = \"1s\"");
    d.conn.client().set_room(0);
    d.send(b"GET /api/big HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut upstream = up.accept();
    upstream.read_until("\r\n\r\n");
    const BODY_BYTES: usize = 2 << 20;
    let body: Vec<u8> = (0..BODY_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    let sent = body.clone();
    let writer = std::thread::spawn(move || {
        upstream.send(format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_BYTES}\r\n\r\n").as_bytes());
        upstream.send(&sent);
        upstream
    });
    // The client takes nothing, yet the whole response leaves the upstream: the exchange ends
    // and its connection is pooled, the body waiting in memory and a temporary file.
    d.run_until("the exchange to end", |d, _| d.exchange_done());
    let _upstream = writer.join().unwrap();
    let now = d.ctx.clock.now;
    assert!(
        d.ctx.pipeline.upstreams.checkout(0, 0, 0, now).is_some(),
        "pooled at once"
    );
    d.conn.client().set_room(usize::MAX);
    let (received, _) = d.run_until("the whole body", |_, r| r.len() >= BODY_BYTES);
    let head_end = received.find("\r\n\r\n").unwrap() + 4;
    assert!(
        received.as_bytes()[head_end..] == body[..],
        "the body arrived changed"
    );
    assert_eq!(
        std::fs::read_dir(d.spill_dir()).unwrap().count(),
        0,
        "no file is left named"
    );
}

#[test]
fn a_client_that_leaves_before_its_answer_cancels_the_upstream_request() {
    let up = Upstream::bind();
    let mut d = driver(&up, "", "");
    d.send(b"GET /api/slow HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut upstream = up.accept();
    upstream.read_until("\r\n\r\n");
    assert_eq!(d.close_client(), Verdict::Close);
    // The upstream sees its connection closed: the request no longer holds it.
    assert_eq!(upstream.read_until("never sent"), "");
    let log = d.log_lines();
    assert!(log[0].contains("\"status\":499,"), "{log:?}");
}

#[test]
fn a_client_that_only_ended_its_request_or_a_patient_route_is_still_answered() {
    let up = Upstream::bind();
    for request in [
        &b"GET /api/close HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"[..],
        b"GET /api/old HTTP/1.0\r\n\r\n",
        b"GET /patient/x HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        let mut d = driver(&up, "", "");
        d.send(request);
        let mut upstream = up.accept();
        upstream.read_until("\r\n\r\n");
        assert_eq!(
            d.close_client(),
            Verdict::Wait,
            "{}",
            String::from_utf8_lossy(request)
        );
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let (answer, verdict) = d.run_until("the answer", |_, r| r.ends_with("ok"));
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(verdict, Verdict::Close, "then the connection closes");
    }
}

/// A config whose one static route has `limit_requests = { LIMIT }`.
fn limited(limit: &str) -> Driver {
    let config = format!(
        "access_log = \"off\"\n[[server]]\nlisten = [\"127.0.0.1:1\"]\n\
         [[server.route]]\nprefix = \"/\"\nroot = \"{{dir}}/site\"\nlimit_requests = {{ {limit} }}\n"
    );
    Driver::new(&config, FILES)
}

const GET_A: &[u8] = b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\n";

#[test]
fn requests_over_the_rate_and_burst_get_429_with_retry_after_until_the_bucket_drains() {
    let mut d = limited("rate = \"1/s\", burst = 1");
    assert_eq!(d.send(&GET_A.repeat(3)), Verdict::Wait);
    let received = d.received();
    assert_eq!(statuses(&received), ["200", "200", "429"], "{received}");
    let refused = &received[received.rfind("HTTP/1.1 429").unwrap()..];
    assert!(refused.contains("\r\nRetry-After: 1\r\n"), "{refused}");
    assert!(refused.ends_with("429 Too Many Requests\n"), "{refused}");
    // The refused request cost nothing: a second later one more goes, not two.
    d.advance(Duration::from_millis(999));
    d.send(GET_A);
    assert_eq!(statuses(&d.received()), ["429"]);
    d.advance(Duration::from_millis(1));
    d.send(&GET_A.repeat(2));
    assert_eq!(statuses(&d.received()), ["200", "429"]);
}

#[test]
fn with_delay_requests_within_the_burst_wait_their_turn_and_are_counted_once() {
    let mut d = limited("rate = \"10/s\", burst = 2, delay = true");
    // Four pipelined requests: the first at once, each next one 100 ms after the one before.
    assert_eq!(d.send(&GET_A.repeat(4)), Verdict::Wait);
    assert_eq!(statuses(&d.received()), ["200"]);
    for turn in 1..4 {
        assert_eq!(d.time_left(), Duration::from_millis(100), "turn {turn}");
        assert_eq!(d.advance(Duration::from_millis(99)), None);
        assert!(d.received().is_empty());
        assert_eq!(d.advance(Duration::from_millis(1)), Some(Verdict::Wait));
        assert_eq!(statuses(&d.received()), ["200"], "turn {turn}");
    }
    // Four counted, once each: the bucket is 100 ms ahead, so the next one waits 100 ms (a
    // waited request counted again would have pushed it further).
    d.send(GET_A);
    assert!(d.received().is_empty());
    assert_eq!(d.time_left(), Duration::from_millis(100));
    assert_eq!(d.advance(Duration::from_millis(100)), Some(Verdict::Wait));
    assert_eq!(statuses(&d.received()), ["200"]);
}

#[test]
fn a_header_key_limits_each_value_apart_and_leaves_requests_without_it_alone() {
    let mut d = limited("rate = \"1/m\", key = \"header:X-Client\"");
    let get = |client: &str| format!("GET /a.txt HTTP/1.1\r\nHost: h\r\nX-Client: {client}\r\n\r\n");
    let requests = [get("a"), get("b"), get("a"), get("b"), get(""), get("")].concat();
    d.send(requests.as_bytes());
    d.send(&GET_A.repeat(2));
    assert_eq!(
        statuses(&d.received()),
        ["200", "200", "429", "429", "200", "200", "200", "200"]
    );
}

#[test]
fn a_server_s_limit_counts_its_routes_and_the_paths_no_route_takes_in_one_bucket() {
    let config = "access_log = \"off\"\n[[server]]\nlisten = [\"127.0.0.1:1\"]\n\
                  limit_requests = { rate = \"1/m\", burst = 1 }\n\
                  [[server.route]]\nexact = \"/a.txt\"\nroot = \"{dir}/site\"\n";
    let mut d = Driver::new(config, FILES);
    d.send(b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
    d.send(GET_A);
    d.send(GET_A);
    d.send(b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(statuses(&d.received()), ["404", "200", "429", "429"]);
}
