//! `max_conns`: each upstream server's requests in flight, capped for the whole instance (all
//! workers together, across reloads and worker deaths), with the requests beyond the cap
//! waiting in shoal, in arrival order, for at most `queue_timeout`.
//!
//! The upstream here counts the requests it is answering, and notices when shoal closes
//! one (as an app sees its client go), so its peak is what shoal had in flight.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{launch, PROXY_ALL};
use crate::harness::{read_response, request, signal, wait_until, Response, Server, Site};
use crate::status::{status_json, wait_for_status};
use crate::supervision::{dead, read_pid_file, Leftovers};

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(15);

/// What the counting upstream shares with the test.
#[derive(Default)]
struct Counts {
    /// Requests being answered now, and the most ever at once.
    current: AtomicUsize,
    peak: AtomicUsize,
    /// The connections of the requests being answered (with a number each), so that a new
    /// arrival is counted against those still open, however late their threads run.
    held: Mutex<Vec<(usize, TcpStream)>>,
    next: AtomicUsize,
    /// Tags (`?tag`) of the requests, in the order they arrived.
    arrivals: Mutex<Vec<String>>,
    stopping: AtomicBool,
}

/// An app that answers `GET /hold/MS[?tag]` after MS milliseconds (an unrecognised path at
/// once), one thread per connection. A request whose connection shoal closes meanwhile stops
/// counting at once.
struct Counting {
    addr: SocketAddr,
    counts: Arc<Counts>,
    thread: Option<JoinHandle<()>>,
}

impl Counting {
    fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let thread = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            while !shared.stopping.load(SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let counts = shared.clone();
                        handlers.push(std::thread::spawn(move || serve(stream, &counts)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
            handlers.into_iter().for_each(|h| drop(h.join()));
        });
        Counting {
            addr,
            counts,
            thread: Some(thread),
        }
    }

    fn current(&self) -> usize {
        self.counts.current.load(SeqCst)
    }

    fn peak(&self) -> usize {
        self.counts.peak.load(SeqCst)
    }

    fn arrivals(&self) -> Vec<String> {
        self.counts.arrivals.lock().expect("arrivals").clone()
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.counts.stopping.store(true, SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Counts {
    /// Counts a request arriving on `stream` beside those whose connections are still open
    /// (a connection shoal closed, as a killed worker's are, no longer counts even if its
    /// thread has not run since); returns its number for `release`.
    fn hold(&self, stream: &TcpStream) -> usize {
        let id = self.next.fetch_add(1, SeqCst);
        let mut held = self.held.lock().expect("held");
        held.retain(|(_, s)| !closed(s));
        held.push((id, stream.try_clone().expect("clone")));
        self.current.store(held.len(), SeqCst);
        self.peak.fetch_max(held.len(), SeqCst);
        id
    }

    fn release(&self, id: usize) {
        let mut held = self.held.lock().expect("held");
        held.retain(|(n, _)| *n != id);
        self.current.store(held.len(), SeqCst);
    }
}

/// Whether the peer closed `stream`, without waiting.
fn closed(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::new(0u8)];
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    matches!(
        socket2::SockRef::from(stream).recv_with_flags(&mut byte, flags),
        Ok(0)
    )
}

/// Answers the requests of one connection until it closes.
fn serve(mut stream: TcpStream, counts: &Counts) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    loop {
        let Some(target) = read_target(&mut stream, counts) else {
            return;
        };
        let (hold, tag) = match target.strip_prefix("/hold/") {
            Some(rest) => {
                let (ms, tag) = rest.split_once('?').unwrap_or((rest, ""));
                (Duration::from_millis(ms.parse().unwrap_or(0)), tag.to_string())
            }
            None => (Duration::ZERO, String::new()),
        };
        counts.arrivals.lock().expect("arrivals").push(tag);
        let id = counts.hold(&stream);
        let until = Instant::now() + hold;
        let mut open = true;
        while open && Instant::now() < until && !counts.stopping.load(SeqCst) {
            // shoal cancelling (or dying) closes the connection: the request ends here.
            let mut byte = [0u8; 1];
            open = !matches!(stream.peek(&mut byte), Ok(0));
        }
        // Uncounted before the answer leaves: shoal may send the next request as soon as it
        // has read this answer, before this thread would get to count down after writing.
        counts.release(id);
        let answered = open
            && stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_ok();
        if !answered {
            return;
        }
    }
}

/// The target of the next request head on `stream`; `None` once it closes or the upstream
/// stops.
fn read_target(stream: &mut TcpStream, counts: &Counts) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if counts.stopping.load(SeqCst) {
                    return None;
                }
            }
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    Some(text.split(' ').nth(1).unwrap_or("").to_string())
}

/// A shoal with a pid file (for `status`) and fast heartbeats, proxying everything to an
/// upstream `app` of `servers` with the `upstream` lines added.
fn shoal(workers: u16, servers: &[String], upstream: &str) -> (Site, Server) {
    let site = Site::new();
    let top =
        "access_log = \"off\"\npid_file = \"shoal.pid\"\n[supervisor]\nheartbeat_interval = \"200ms\"\n";
    let server = launch(&site, top, servers, upstream, PROXY_ALL)
        .workers(workers)
        .start();
    server.wait_for_workers(usize::from(workers));
    (site, server)
}

/// Sends `GET path` on a new connection and returns it, the response still to come.
fn send(server: &Server, path: &str) -> TcpStream {
    let mut stream = server.connect();
    stream
        .write_all(request("GET", path, &[]).as_bytes())
        .expect("send");
    stream
}

fn answer(mut stream: TcpStream) -> Response {
    read_response(&mut stream)
}

/// The `[upstream.app]` part of a status.
fn upstream(status: &Value) -> &Value {
    &status["upstreams"][0]
}

/// Requests in flight on the app's first server, by the status.
fn in_flight(status: &Value) -> u64 {
    upstream(status)["servers"][0]["in_flight"]
        .as_u64()
        .expect("in_flight")
}

fn queued(status: &Value) -> u64 {
    upstream(status)["queued"].as_u64().expect("queued")
}

#[test]
fn fifty_clients_get_their_answers_with_never_more_than_the_cap_in_flight() {
    let app = Counting::start();
    let (site, server) = shoal(2, &[format!("{} max_conns=2", app.addr)], "");
    let start = Arc::new(Barrier::new(50));
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let (start, addr) = (start.clone(), server.addr);
            std::thread::spawn(move || {
                start.wait();
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_read_timeout(Some(WAIT)).expect("timeout");
                let path = format!("/hold/20?{i}");
                stream
                    .write_all(request("GET", &path, &[]).as_bytes())
                    .expect("send");
                read_response(&mut stream).status
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().expect("client")).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(app.arrivals().len(), 50);
    assert!(app.peak() <= 2, "the app saw {} requests at once", app.peak());
    let status = wait_for_status(&site, "the beats to count the queue waits", |s| {
        upstream(s)["queue_waits"]
            .as_array()
            .is_some_and(|w| w.iter().filter_map(Value::as_u64).sum::<u64>() > 0)
    });
    assert_eq!((in_flight(&status), queued(&status)), (0, 0), "{status}");
    assert_eq!(upstream(&status)["servers"][0]["max_conns"], 2);
}

#[test]
fn a_request_waiting_past_queue_timeout_gets_503_with_retry_after() {
    let app = Counting::start();
    let (_site, server) = shoal(
        1,
        &[format!("{} max_conns=1", app.addr)],
        "queue_timeout = \"300ms\"",
    );
    let holder = send(&server, "/hold/30000?holder");
    wait_until("the holder reaches the app", WAIT, || {
        (app.current() == 1).then_some(())
    });
    let late = answer(send(&server, "/hold/0?late"));
    assert_eq!(late.status, 503, "{late:?}");
    assert_eq!(late.header("Retry-After"), Some("1"), "{late:?}");
    assert_eq!(
        app.arrivals(),
        ["holder"],
        "the late request never reached the app"
    );
    // The holder leaves: its permit is free again for the next request.
    drop(holder);
    wait_until("the app sees the holder go", WAIT, || {
        (app.current() == 0).then_some(())
    });
    assert_eq!(answer(send(&server, "/hold/0?next")).status, 200);
}

#[test]
fn a_client_that_leaves_the_queue_gives_up_its_place() {
    let app = Counting::start();
    let (site, server) = shoal(1, &[format!("{} max_conns=1", app.addr)], "");
    let holder = send(&server, "/hold/30000?holder");
    wait_until("the holder reaches the app", WAIT, || {
        (app.current() == 1).then_some(())
    });
    let leaver = send(&server, "/hold/0?leaver");
    wait_for_status(&site, "the leaver to queue", |s| queued(s) == 1);
    drop(leaver);
    wait_for_status(&site, "the leaver to leave the queue", |s| queued(s) == 0);
    drop(holder);
    assert_eq!(answer(send(&server, "/hold/0?next")).status, 200);
    assert_eq!(
        app.arrivals(),
        ["holder", "next"],
        "the leaver never reached the app"
    );
}

#[test]
fn waiting_requests_are_served_in_arrival_order_across_workers() {
    let app = Counting::start();
    let (site, server) = shoal(2, &[format!("{} max_conns=1", app.addr)], "");
    let holder = send(&server, "/hold/30000?holder");
    wait_until("the holder reaches the app", WAIT, || {
        (app.current() == 1).then_some(())
    });
    // Each new connection lands on either worker; each waits until the one before it queued.
    let waiting: Vec<TcpStream> = (0..6)
        .map(|i| {
            let stream = send(&server, &format!("/hold/10?{i}"));
            wait_for_status(&site, "the request to queue", |s| queued(s) == i + 1);
            stream
        })
        .collect();
    drop(holder);
    for stream in waiting {
        assert_eq!(answer(stream).status, 200);
    }
    assert_eq!(app.arrivals(), ["holder", "0", "1", "2", "3", "4", "5"]);
    assert!(app.peak() <= 1);
}

#[test]
fn a_full_server_is_skipped_while_another_has_room() {
    let (first, second) = (Counting::start(), Counting::start());
    // A hash on a header the requests do not send: every request maps to one server.
    let servers = [
        format!("{} max_conns=1", first.addr),
        format!("{} max_conns=1", second.addr),
    ];
    let (_site, server) = shoal(1, &servers, "balance = \"hash\"\nhash_key = \"header:X-None\"");
    let holder = send(&server, "/hold/30000?holder");
    wait_until("the holder reaches an app", WAIT, || {
        (first.current() + second.current() == 1).then_some(())
    });
    let other = answer(send(&server, "/hold/0?other"));
    assert_eq!(other.status, 200);
    assert_eq!(first.arrivals().len() + second.arrivals().len(), 2);
    assert!(first.peak() <= 1 && second.peak() <= 1, "each got one request");
    drop(holder);
}

#[test]
fn a_killed_worker_gives_its_permits_back_and_the_cap_holds() {
    let app = Counting::start();
    let (site, server) = shoal(2, &[format!("{} max_conns=2", app.addr)], "");
    let holders: Vec<TcpStream> = (0..4)
        .map(|i| send(&server, &format!("/hold/30000?h{i}")))
        .collect();
    wait_until("two requests reach the app", WAIT, || {
        (app.current() == 2).then_some(())
    });
    let status = wait_for_status(&site, "the others to queue", |s| queued(s) == 2);
    let holding = status["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["upstream_permits"].as_u64() > Some(0))
        .expect("a worker holds permits");
    let pid = holding["pid"].as_u64().expect("pid") as u32;
    assert!(signal(pid, "KILL"));
    // Its permits come back: the requests queued in the other worker (if any) take them, and
    // once every client is gone nothing is held.
    wait_for_status(&site, "a new worker, and the permits of the dead one back", |s| {
        let pids: Vec<u64> = s["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .filter_map(|w| w["pid"].as_u64())
            .collect();
        pids.len() == 2 && !pids.contains(&u64::from(pid)) && in_flight(s) <= 2
    });
    drop(holders);
    wait_for_status(&site, "every permit free", |s| {
        in_flight(s) == 0 && queued(s) == 0
    });
    let fresh: Vec<TcpStream> = (0..3).map(|i| send(&server, &format!("/hold/50?f{i}"))).collect();
    for stream in fresh {
        assert_eq!(answer(stream).status, 200);
    }
    assert!(app.peak() <= 2, "the app saw {} requests at once", app.peak());
}

#[test]
fn old_and_new_workers_count_together_through_a_reload() {
    let app = Counting::start();
    let (site, server) = shoal(1, &[format!("{} max_conns=1", app.addr)], "");
    let holder = send(&server, "/hold/30000?holder");
    wait_until("the holder reaches the app", WAIT, || {
        (app.current() == 1).then_some(())
    });
    let old = server.workers();
    server.send_signal("HUP");
    wait_until("a new worker serves", WAIT, || {
        let now = server.workers();
        (now.iter().any(|pid| !old.contains(pid))).then_some(())
    });
    // The new worker's request waits for the old worker's permit.
    let next = send(&server, "/hold/0?next");
    wait_for_status(&site, "the new request to queue", |s| {
        queued(s) == 1 && in_flight(s) == 1
    });
    assert_eq!(app.arrivals(), ["holder"]);
    drop(holder);
    assert_eq!(answer(next).status, 200);
    assert!(app.peak() <= 1, "the app saw {} requests at once", app.peak());
    let status = status_json(&site);
    assert_eq!(in_flight(&status), 0, "{status}");
}

#[test]
fn old_and_new_workers_count_together_through_a_binary_upgrade() {
    let app = Counting::start();
    let (site, mut server) = shoal(1, &[format!("{} max_conns=1", app.addr)], "");
    let holder = send(&server, "/hold/30000?holder");
    wait_until("the holder reaches the app", WAIT, || {
        (app.current() == 1).then_some(())
    });
    let old_master = server.pid();
    let mut leftovers = Leftovers(vec![old_master]);
    server.send_signal("USR2");
    let pid_file = site.base().join("shoal.pid");
    let new_master = wait_until("a new master in the pid file", WAIT, || {
        read_pid_file(&pid_file).filter(|pid| *pid != old_master)
    });
    leftovers.0.push(new_master);
    server.wait_for_log("draining the old workers", WAIT);
    // The old worker keeps the holder's request and its permit while it drains; the new
    // master's worker takes the next request, which waits for that permit.
    let next = send(&server, "/hold/0?next");
    let status = wait_for_status(&site, "the next request to queue", |s| queued(s) == 1);
    assert_eq!(in_flight(&status), 1, "{status}");
    assert_eq!(
        status["master"]["pid"], new_master,
        "the new master counts the old worker's permit"
    );
    assert_eq!(app.arrivals(), ["holder"]);
    drop(holder);
    assert_eq!(answer(next).status, 200);
    assert!(app.peak() <= 1, "the app saw {} requests at once", app.peak());
    let status = wait_for_status(&site, "the new worker's request counted", |s| {
        s["workers"][0]["requests"].as_u64() > Some(0)
    });
    assert_eq!(in_flight(&status), 0, "{status}");
    assert_eq!(server.wait_exit(WAIT).code(), Some(0));
    assert!(signal(new_master, "TERM"));
    wait_until("the new master to exit", WAIT, || dead(new_master).then_some(()));
}
