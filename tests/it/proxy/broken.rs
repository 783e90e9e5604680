//! Broken upstreams, all behind one shoal: reset, stall, an endless head, garbage, invalid
//! chunked, a close mid-body, interim-response floods, a 101 nobody asked for. Each gets the
//! right answer, and 10,000 of them in a row neither crash the worker nor leak a descriptor.

use std::io::Write;
use std::time::Duration;

use super::support::{body_complete, read_until_end, route_each, Framing};
use crate::harness::{wait_until, Server, Site};
use crate::procfs::open_fds;
use crate::upstream::{Behaviour, Upstream};

/// What the client must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A complete response with this status.
    Status(u16),
    /// A response that visibly does not complete (or a clean 502), then a close.
    Cut,
}

use Answer::{Cut, Status};

/// Every upstream response below ends with this, so a relayed one would show.
const INTERIM: &str = "HTTP/1.1 100 Continue\r\n\r\n";

fn broken_upstreams() -> Vec<(&'static str, Behaviour, Answer)> {
    let raw = |text: &str| Behaviour::RawThenClose(text.as_bytes().to_vec());
    vec![
        ("reset", Behaviour::Reset, Status(502)),
        ("stall", Behaviour::Stall, Status(504)),
        ("endless head", Behaviour::endless_head(), Status(502)),
        ("garbage", Behaviour::garbage(), Status(502)),
        (
            "invalid chunk size",
            raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            Cut,
        ),
        (
            "chunk data longer than its size",
            raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello, world\r\n0\r\n\r\n"),
            Cut,
        ),
        (
            "close mid-body",
            Behaviour::CloseMidBody {
                announced: 100,
                sent: 10,
            },
            Cut,
        ),
        ("close before answering", Behaviour::CloseBeforeAnswer, Status(502)),
        (
            "ten 100 Continue, then a 200",
            raw(&format!(
                "{}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                INTERIM.repeat(10)
            )),
            Status(200),
        ),
        ("100 Continue forever", Behaviour::endless_interim(), Status(502)),
        (
            "101 without an upgrade request",
            Behaviour::Raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\ntunnel".to_vec()),
            Status(502),
        ),
        ("conflicting lengths", Behaviour::conflicting_length(), Status(502)),
    ]
}

/// Each broken upstream at `/u{i}/` of one shoal; the stalling one with a short read_timeout
/// (the others keep the default, so a busy machine cannot turn their answers into 504s).
fn start() -> (Site, Vec<(&'static str, Answer)>, Vec<Upstream>, Server) {
    let site = Site::new();
    let mut expected = Vec::new();
    let mut upstreams = Vec::new();
    let mut lines = Vec::new();
    for (name, behaviour, answer) in broken_upstreams() {
        expected.push((name, answer));
        upstreams.push(Upstream::start(behaviour));
        lines.push(if answer == Status(504) {
            "read_timeout = \"300ms\""
        } else {
            ""
        });
    }
    let server = route_each(&site, &upstreams, &lines).start();
    (site, expected, upstreams, server)
}

/// One request to upstream `index` on a fresh connection; what went wrong, if anything.
fn check(server: &Server, index: usize, expected: Answer) -> Result<(), String> {
    let mut stream = server.connect();
    let request = format!("GET /u{index}/x HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write request");
    let (bytes, _) = read_until_end(&mut stream);
    let shown = || String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(format!("no response head: {:?}", shown()));
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = &bytes[head_end + 4..];
    let framing = if head.contains("\r\ntransfer-encoding: chunked") {
        Framing::Chunked
    } else if let Some(at) = head.find("\r\ncontent-length: ") {
        let digits: String = head[at + 18..].chars().take_while(char::is_ascii_digit).collect();
        Framing::Length(digits.parse().unwrap_or(0))
    } else {
        Framing::Close
    };
    let complete = framing == Framing::Close || body_complete(framing, body);
    let ok = match expected {
        Status(want) => status == want && complete,
        Cut => status == 502 || (status == 200 && !complete),
    };
    if ok && !bytes.windows(8).any(|w| w == b"100 Cont") {
        Ok(())
    } else {
        Err(format!("{:?}", shown()))
    }
}

#[test]
fn each_broken_upstream_gets_the_right_answer() {
    let (_site, expected, _upstreams, server) = start();
    let failures: Vec<String> = expected
        .iter()
        .enumerate()
        .filter_map(|(i, (name, answer))| {
            check(&server, i, *answer)
                .err()
                .map(|why| format!("{name} (expected {answer:?}): {why}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ten_thousand_broken_exchanges_crash_no_worker_and_leak_no_descriptor() {
    const REQUESTS: usize = 10_000;
    /// One stall (300 ms each) every this many requests; the rest cycle through the others.
    const STALL_EVERY: usize = 500;
    let (_site, expected, _upstreams, server) = start();
    let worker = server.wait_for_workers(1)[0];
    let stall = expected
        .iter()
        .position(|(name, _)| *name == "stall")
        .expect("a stall");
    let others: Vec<usize> = (0..expected.len()).filter(|&i| i != stall).collect();
    // Warm up once through every upstream, then take the baseline.
    for (i, (name, answer)) in expected.iter().enumerate() {
        check(&server, i, *answer).unwrap_or_else(|why| panic!("{name}: {why}"));
    }
    let baseline = open_fds(worker);
    let mut failures = Vec::new();
    for n in 0..REQUESTS {
        let index = if n % STALL_EVERY == 0 {
            stall
        } else {
            others[n % others.len()]
        };
        if let Err(why) = check(&server, index, expected[index].1) {
            failures.push(format!("request {n} to {}: {why}", expected[index].0));
            if failures.len() > 10 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(server.workers(), [worker], "the worker was replaced");
    let settled = wait_until(
        &format!("the worker's fd count back to its baseline of {baseline}"),
        Duration::from_secs(10),
        || {
            let now = open_fds(worker);
            (now <= baseline).then_some(now)
        },
    );
    assert!(settled <= baseline);
}
