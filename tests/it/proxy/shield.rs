//! Shielding a legacy upstream that serves one request at a time (a gunicorn sync worker, a
//! single PHP-FPM child): a slow client must not hold it. shoal takes the response at the
//! upstream's pace, keeping what the client has not taken in memory and then in a temporary
//! file, so the upstream is free for the next request at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{read_head_response, request, Launch, Site};

/// An upstream with one worker: it accepts a connection, reads one request, writes the whole
/// response (blocking while its reader is slow), closes, and only then accepts the next.
/// `/big` answers `big_bytes` of a pattern; anything else answers `ok`.
struct SyncWorker {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl SyncWorker {
    fn start(big_bytes: usize, requests: usize) -> SyncWorker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        let thread = std::thread::spawn(move || {
            for _ in 0..requests {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let target = String::from_utf8_lossy(&head)
                    .split(' ')
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let body = if target == "/big" {
                    pattern(big_bytes)
                } else {
                    b"ok".to_vec()
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
                let _ = stream.write_all(&body);
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        SyncWorker {
            addr,
            answered,
            thread: Some(thread),
        }
    }
}

impl Drop for SyncWorker {
    fn drop(&mut self) {
        // Wake a worker still waiting in accept, then let it end.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8).collect()
}

#[test]
fn a_slow_reader_does_not_hold_a_one_request_upstream() {
    // Far more than the kernel's socket buffers on both sides and shoal's memory bound.
    const BIG_BYTES: usize = 24 << 20;
    let worker = SyncWorker::start(BIG_BYTES, 2);
    let site = Site::new();
    std::fs::create_dir(site.base().join("spill")).expect("spill dir");
    let text = format!(
        "access_log = \"off\"\n[buffering]\ntemp_dir = \"spill\"\n[upstream.app]\nservers = [\"{}\"]\n\
         [[server]]\nlisten = [\"{{listen}}\"]\n  [[server.route]]\n  prefix = \"/harness-ready-probe\"\n  \
         root = \"site\"\n  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n",
        worker.addr
    );
    let server = Launch::config_file(&site, &text).start();

    let mut slow = server.connect();
    slow.write_all(request("GET", "/big", &[]).as_bytes())
        .expect("write");
    let head = read_head_response(&mut slow);
    assert_eq!(head.status, 200, "{head}");
    // The slow client takes a little, then stops; the upstream must be free meanwhile.
    let mut taken = vec![0u8; 64 * 1024];
    slow.read_exact(&mut taken).expect("read a little");
    crate::harness::wait_until(
        "the upstream to finish the big response",
        Duration::from_secs(20),
        || (worker.answered.load(Ordering::SeqCst) == 1).then_some(()),
    );
    let mut fast = server.connect();
    fast.write_all(request("GET", "/small", &[]).as_bytes())
        .expect("write");
    let answer = crate::proxy::support::read_message(&mut fast, false).0;
    assert_eq!(answer.status, 200, "{answer}");
    assert_eq!(answer.text(), "ok");

    // Every byte still reaches the slow client, in order.
    let mut body = taken;
    body.resize(BIG_BYTES, 0);
    slow.read_exact(&mut body[64 * 1024..]).expect("read the rest");
    assert!(body == pattern(BIG_BYTES), "the body arrived changed");
    let left = std::fs::read_dir(site.base().join("spill"))
        .expect("spill dir")
        .count();
    assert_eq!(left, 0, "a temporary file was left with a name");
}

#[test]
fn clients_that_leave_before_their_answer_free_the_upstream() {
    const CLIENTS: usize = 50;
    let upstream = crate::upstream::Upstream::start(crate::upstream::Behaviour::Stall);
    let (_site, server) = crate::proxy::support::proxy(&upstream);
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| {
            let mut stream = server.connect();
            stream
                .write_all(request("GET", &format!("/wait/{i}"), &[]).as_bytes())
                .expect("write");
            stream
        })
        .collect();
    upstream.wait_for_requests(CLIENTS);
    drop(clients);
    // Every upstream connection is closed by shoal (the stalling upstream would otherwise
    // hold each until read_timeout, a minute).
    upstream.wait_for_event("held-closed", CLIENTS);
}
