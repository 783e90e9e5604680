//! `limit_requests` and `limit_connections` through the real binary with two workers: a
//! client over the rate gets 429s at the rate whichever worker it reaches, clients keep
//! their own buckets, the bucket table stays bounded under 100,000 keys, a killed worker
//! wedges nothing, `delay = true` queues instead of refusing, and a client's connections
//! are counted for the whole instance and given back when a worker dies.
//!
//! Every client here is 127.0.0.1: a `header:X-Client` key stands for several clients.
//! Counts are taken over windows of seconds with margins; the only timing asserted is that
//! a delayed request was never answered before its turn.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::{free_addr, read_response, read_to_close, signal, wait_until, Launch, Server, Site};

/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(15);
/// Read and write timeout of the clients here.
const IO: Duration = Duration::from_secs(10);

/// A site with `a.txt`, and the page the limited route answers 429 with.
fn site() -> Site {
    let site = Site::new();
    site.file("a.txt", "alpha").file("busy.html", "<p>slow down</p>");
    site
}

/// Two workers, beating often, with the admin endpoint: `/` is open (the harness's probe
/// goes there), `/limited/` serves the same files with `limit_requests = { LIMIT }` and a
/// page for 429. Returns the server and the admin address.
fn rate_limited(site: &Site, limit: &str) -> (Server, SocketAddr) {
    let admin = free_addr();
    let text = format!(
        "access_log = \"off\"\n[supervisor]\nheartbeat_interval = \"200ms\"\n[admin]\nlisten = \"{admin}\"\n\
         [[server]]\nlisten = [\"{{listen}}\"]\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n  \
         [[server.route]]\n  prefix = \"/limited/\"\n  root = \"site\"\n  strip_prefix = true\n  \
         error_pages = {{ 429 = \"site/busy.html\" }}\n  limit_requests = {{ {limit} }}\n"
    );
    let server = Launch::config_file(site, &text).workers(2).start();
    server.wait_for_workers(2);
    (server, admin)
}

/// What one request on a new connection got: its status and `Retry-After`; `None` when
/// the connection failed (a worker killed under it).
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

/// `GET path` with `headers` on a new connection that closes after the answer.
fn one_shot(addr: SocketAddr, path: &str, headers: &[&str]) -> Option<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, IO).ok()?;
    stream.set_read_timeout(Some(IO)).ok()?;
    stream.set_write_timeout(Some(IO)).ok()?;
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).ok()?;
    let mut all = Vec::new();
    stream.read_to_end(&mut all).ok()?;
    let all = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = all.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let retry_after = head
        .lines()
        .find_map(|line| line.strip_prefix("Retry-After: "))
        .map(str::to_string);
    Some(Answer {
        status,
        retry_after,
        body: body.to_string(),
    })
}

/// One request of a flood: when it was sent and what it got.
type Sent = (Instant, Option<Answer>);

/// `threads` clients sending `GET path` on new connections, one after the other, until
/// `until`.
fn flood(addr: SocketAddr, path: &str, threads: usize, until: Instant) -> Vec<Sent> {
    let stop = Arc::new(AtomicBool::new(false));
    let flow = flow(addr, path, threads, Arc::clone(&stop));
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::SeqCst);
    flow.join().expect("clients")
}

/// `threads` clients sending `GET path` on new connections, one after the other, until
/// `stop` is set; joined, what they sent.
fn flow(addr: SocketAddr, path: &str, threads: usize, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Sent>> {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (path, stop) = (path.to_string(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    sent.push((at, one_shot(addr, &path, &[])));
                }
                sent
            })
        })
        .collect();
    std::thread::spawn(move || {
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client"))
            .collect()
    })
}

/// Requests sent within `[from, to)` that got `status`.
fn answered(sent: &[Sent], from: Instant, to: Instant, status: u16) -> usize {
    sent.iter()
        .filter(|(at, answer)| *at >= from && *at < to && answer.as_ref().is_some_and(|a| a.status == status))
        .count()
}

/// The value of the sample `name{labels}` in the admin endpoint's `/metrics` (0 if absent).
fn metric(admin: SocketAddr, name: &str, labels: &str) -> u64 {
    let Ok(mut stream) = TcpStream::connect(admin) else {
        return 0;
    };
    stream.set_read_timeout(Some(IO)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    let text = read_response(&mut stream).text();
    let wanted = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .map_or(0, |value| value.parse().expect("a count"))
}

#[test]
fn a_client_over_the_rate_gets_429s_at_the_rate_across_two_workers() {
    let site = site();
    let (server, admin) = rate_limited(&site, "rate = \"20/s\", burst = 5");
    let window = Duration::from_secs(3);
    let start = Instant::now();
    let sent = flood(server.addr, "/limited/a.txt", 4, start + window);
    assert!(
        sent.iter().all(|(_, answer)| answer.is_some()),
        "every request is answered"
    );
    let let_through = answered(&sent, start, start + window, 200);
    let refused = answered(&sent, start, start + window, 429);
    // The requests sent within the window reached shoal within it and a little after; a
    // bucket per worker would have let through about twice as many.
    let most = 20.0 * (window.as_secs_f64() + 0.5) + 5.0 + 1.0;
    let least = 20.0 * window.as_secs_f64() / 2.0;
    assert!(
        (let_through as f64) <= most && (let_through as f64) >= least,
        "{let_through} let through in {window:?} at 20/s with a burst of 5 ({refused} refused)"
    );
    assert!(refused > let_through, "the clients sent far more than the rate");
    for (_, answer) in &sent {
        let answer = answer.as_ref().unwrap();
        if answer.status == 429 {
            assert_eq!(answer.retry_after.as_deref(), Some("1"), "{answer:?}");
            assert_eq!(answer.body, "<p>slow down</p>", "the route's page for 429");
        } else {
            assert_eq!((answer.status, answer.body.as_str()), (200, "alpha"));
        }
    }
    // Both workers refused some (the bucket is the same for both), and /metrics counts
    // every refusal once the workers' beats have come in.
    let name = "shoal_worker_limit_events_total";
    for worker in ["0", "1"] {
        let labels = format!("worker=\"{worker}\",event=\"request_refused\"");
        wait_until(&format!("worker {worker}'s refusals"), WAIT, || {
            (metric(admin, name, &labels) > 0).then_some(())
        });
    }
    let all_refused = sent
        .iter()
        .filter(|(_, answer)| answer.as_ref().is_some_and(|a| a.status == 429))
        .count();
    wait_until("every refusal in /metrics", WAIT, || {
        let counted = metric(admin, "shoal_limit_events_total", "event=\"request_refused\"");
        (counted == all_refused as u64).then_some(())
    });
    // The open route is not limited.
    for _ in 0..10 {
        assert_eq!(one_shot(server.addr, "/a.txt", &[]).unwrap().status, 200);
    }
}

#[test]
fn two_clients_keep_separate_buckets_and_a_request_without_the_key_is_not_limited() {
    let site = site();
    let (server, _admin) = rate_limited(&site, "rate = \"1/m\", burst = 2, key = \"header:X-Client\"");
    let status = |client: Option<&str>| {
        let header = client.map(|c| format!("X-Client: {c}"));
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        one_shot(server.addr, "/limited/a.txt", &headers).expect("an answer")
    };
    for client in ["alice", "bob"] {
        let statuses: Vec<u16> = (0..4).map(|_| status(Some(client)).status).collect();
        // The third request is exactly at the burst's edge: a worker whose loop turn read
        // the time before the other worker counted the second may refuse it (decision 0007:
        // the limits count at the loop's time). A shared bucket would refuse bob's first.
        assert_eq!(statuses[..2], [200, 200], "{client}: {statuses:?}");
        assert_eq!(statuses[3], 429, "{client}: {statuses:?}");
    }
    // (The first that the bucket refuses once it holds its three.)
    let refused = (0..3)
        .map(|_| status(Some("alice")))
        .find(|answer| answer.status == 429)
        .expect("alice over her burst");
    // Three counted at 1/m with a burst of 2: the next one goes about a minute from now (a
    // second more when the worker that refused read the time at the start of a busy loop
    // turn, before the other counted the first request).
    let retry: u64 = refused.retry_after.expect("Retry-After").parse().unwrap();
    assert!((50..=62).contains(&retry), "Retry-After: {retry}");
    assert_eq!(
        status(Some("carol")).status,
        200,
        "a third client, a third bucket"
    );
    for _ in 0..5 {
        assert_eq!(status(None).status, 200, "no key, no limit");
    }
}

#[test]
fn a_reload_keeps_every_client_s_bucket() {
    let site = site();
    let (server, _admin) = rate_limited(&site, "rate = \"1/m\", key = \"header:X-Client\"");
    let status = || {
        one_shot(server.addr, "/limited/a.txt", &["X-Client: kept"])
            .expect("an answer")
            .status
    };
    assert_eq!(status(), 200);
    assert_eq!(status(), 429);
    let old = server.workers();
    server.send_signal("HUP");
    wait_until("new workers only", WAIT, || {
        let now = server.workers();
        (now.len() == 2 && now.iter().all(|pid| !old.contains(pid))).then_some(())
    });
    assert_eq!(status(), 429, "the new workers see the old workers' bucket");
}

/// The size of the shared memory mapping of process `pid`, from its maps.
fn shared_mapping_bytes(pid: u32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|line| line.contains("memfd:shoal-shared"))
        .expect("the shared memory is mapped");
    let range = line.split_whitespace().next().unwrap();
    let (from, to) = range.split_once('-').unwrap();
    u64::from_str_radix(to, 16).unwrap() - u64::from_str_radix(from, 16).unwrap()
}

/// Resident shared memory of process `pid`, in bytes.
fn resident_shared_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("RssShmem:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse().unwrap())
        .expect("RssShmem");
    kib * 1024
}

/// Sends `GET path` with `X-Client: {prefix}{i}` for each `i` in `keys`, pipelined on one
/// connection (written by another thread while this one reads); returns the statuses.
fn pipelined(addr: SocketAddr, path: &str, prefix: &str, keys: std::ops::Range<u32>) -> Vec<u16> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let (path, prefix) = (path.to_string(), prefix.to_string());
    let last = keys.end - 1;
    let writing = std::thread::spawn(move || {
        let mut text = String::new();
        for i in keys {
            let close = if i == last { "Connection: close\r\n" } else { "" };
            text.push_str(&format!(
                "GET {path} HTTP/1.1\r\nHost: test\r\nX-Client: {prefix}{i}\r\n{close}\r\n"
            ));
            if text.len() > 32 * 1024 || i == last {
                writer.write_all(text.as_bytes()).expect("write");
                text.clear();
            }
        }
    });
    let all = read_to_close(&mut stream);
    writing.join().unwrap();
    let all = String::from_utf8_lossy(&all);
    all.match_indices("HTTP/1.1 ")
        .map(|(at, _)| all[at + 9..at + 12].parse().unwrap())
        .collect()
}

#[test]
fn the_bucket_table_stays_bounded_under_100_000_keys_and_still_limits() {
    let site = site();
    let (server, _admin) = rate_limited(&site, "rate = \"1/m\", key = \"header:X-Client\"");
    let workers = server.wait_for_workers(2);
    let mapped: Vec<u64> = workers.iter().map(|&pid| shared_mapping_bytes(pid)).collect();
    let real = |server: &Server| {
        one_shot(server.addr, "/limited/a.txt", &["X-Client: real"])
            .expect("an answer")
            .status
    };
    assert_eq!(real(&server), 200);
    assert_eq!(real(&server), 429);
    // 100,000 other keys, once each: every one is let through (each its own bucket). A
    // thousand per connection (`max_requests_per_connection`).
    let clients: Vec<_> = (0..4u32)
        .map(|t| {
            let addr = server.addr;
            std::thread::spawn(move || {
                (0..25u32)
                    .flat_map(|c| {
                        let from = t * 25_000 + c * 1000;
                        pipelined(addr, "/limited/a.txt", "k", from..from + 1000)
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(statuses.len(), 100_000);
    assert!(
        statuses.iter().all(|&s| s == 200),
        "a key of its own is never refused"
    );
    // The table is the same size (fixed by construction), and no more than its pages (and
    // the first rows) became resident in either worker.
    for (pid, before) in workers.iter().zip(mapped) {
        assert_eq!(shared_mapping_bytes(*pid), before);
        let resident = resident_shared_bytes(*pid);
        assert!(
            resident <= 4 << 20,
            "worker {pid}: {resident} bytes of shared memory resident"
        );
    }
    // The real key may have been evicted (it then starts over, as nginx's oldest node);
    // either way it is limited again at once.
    let after: Vec<u16> = (0..2).map(|_| real(&server)).collect();
    assert_eq!(after[1], 429, "{after:?}");
}

#[test]
fn a_worker_killed_while_requests_flow_leaves_the_limit_working() {
    let site = site();
    let (server, _admin) = rate_limited(&site, "rate = \"20/s\", burst = 5");
    let victim = server.wait_for_workers(2)[0];
    let stop = Arc::new(AtomicBool::new(false));
    let clients = flow(server.addr, "/limited/a.txt", 3, Arc::clone(&stop));
    std::thread::sleep(Duration::from_secs(1));
    assert!(signal(victim, "KILL"));
    wait_until("a new worker in the dead one's place", WAIT, || {
        let workers = server.workers();
        (workers.len() == 2 && !workers.contains(&victim)).then_some(())
    });
    // Counted from a moment after the new worker started, for three seconds.
    std::thread::sleep(Duration::from_millis(500));
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let to = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let sent = clients.join().unwrap();
    let window = to.duration_since(from).as_secs_f64();
    let let_through = answered(&sent, from, to, 200);
    let refused = answered(&sent, from, to, 429);
    let most = 20.0 * (window + 0.5) + 5.0 + 1.0;
    let least = 20.0 * window / 2.0;
    assert!(
        (let_through as f64) <= most && (let_through as f64) >= least,
        "{let_through} let through in {window:.1} s after the kill ({refused} refused)"
    );
    assert!(refused > 0, "still limited");
}

#[test]
fn with_delay_requests_within_the_burst_wait_their_turn_and_the_rest_get_429() {
    let site = site();
    let (server, _admin) = rate_limited(
        &site,
        "rate = \"2/s\", burst = 4, delay = true, key = \"header:X-Client\"",
    );
    // `count` clients at once with key `client`: when each answer came, after an instant
    // before any of them sent, and what it was; in the order they came.
    let at_once = |client: &str, count: usize| {
        let start = Arc::new(Barrier::new(count + 1));
        let handles: Vec<_> = (0..count)
            .map(|_| {
                let (start, addr) = (Arc::clone(&start), server.addr);
                let header = format!("X-Client: {client}");
                std::thread::spawn(move || {
                    start.wait();
                    let answer = one_shot(addr, "/limited/a.txt", &[&header]).expect("an answer");
                    (Instant::now(), answer.status)
                })
            })
            .collect();
        let began = Instant::now();
        start.wait();
        let mut answers: Vec<(Duration, u16)> = handles
            .into_iter()
            .map(|h| {
                let (at, status) = h.join().unwrap();
                (at.duration_since(began), status)
            })
            .collect();
        answers.sort();
        answers
    };
    // Within the burst (four of the five it holds, so that the requests racing in from two
    // workers stay clear of its edge): none refused, each answered no sooner than its turn,
    // 500 ms apart (the first at once).
    let answers = at_once("within", 4);
    assert!(answers.iter().all(|(_, status)| *status == 200), "{answers:?}");
    for (turn, (after, _)) in answers.iter().enumerate() {
        assert!(
            *after >= Duration::from_millis(500) * turn as u32,
            "answer {turn} came after {after:?}: {answers:?}"
        );
    }
    // Twice that many at once: past the burst, some are refused at once.
    let answers = at_once("over", 8);
    let delayed: Vec<Duration> = answers
        .iter()
        .filter(|(_, status)| *status == 200)
        .map(|(after, _)| *after)
        .collect();
    let refused = answers.iter().filter(|(_, status)| *status == 429).count();
    assert!(delayed.len() >= 4 && refused >= 1, "{answers:?}");
    assert_eq!(delayed.len() + refused, 8, "{answers:?}");
    for (turn, after) in delayed.iter().enumerate() {
        assert!(
            *after >= Duration::from_millis(500) * turn as u32,
            "answer {turn} came after {after:?}: {answers:?}"
        );
    }
}

/// Two servers on one address: the default one (the harness's probe) and `limited.test`,
/// with `limit_connections = 3`.
fn connection_limited(site: &Site) -> Server {
    let text = "access_log = \"off\"\n\
         [[server]]\nlisten = [\"{listen}\"]\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n\
         [[server]]\nlisten = [\"{listen}\"]\nnames = [\"limited.test\"]\nlimit_connections = 3\n  \
         [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n";
    let server = Launch::config_file(site, text).workers(2).start();
    server.wait_for_workers(2);
    server
}

const LIMITED_GET: &[u8] = b"GET /a.txt HTTP/1.1\r\nHost: limited.test\r\n\r\n";

/// A new connection to `limited.test` and the status of its first request; the connection
/// is kept (open) when the answer was 200.
fn open(server: &Server) -> (u16, Option<TcpStream>) {
    let mut stream = server.connect();
    stream.write_all(LIMITED_GET).expect("send");
    let response = read_response(&mut stream);
    if response.status == 503 {
        assert_eq!(response.header("Connection"), Some("close"), "{response}");
        assert!(read_to_close(&mut stream).is_empty(), "closed after the 503");
        return (503, None);
    }
    (response.status, Some(stream))
}

/// Whether `stream` still answers a request with 200 (its worker is alive), the whole
/// answer read.
fn answers(stream: &mut TcpStream) -> bool {
    if stream.write_all(LIMITED_GET).is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = (head.lines())
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    head.starts_with("HTTP/1.1 200") && stream.read_exact(&mut body).is_ok()
}

#[test]
fn a_client_s_connections_are_counted_across_workers_and_given_back_when_closed_or_killed() {
    let site = site();
    let server = connection_limited(&site);
    let mut held: Vec<TcpStream> = (0..3)
        .map(|i| match open(&server) {
            (200, Some(stream)) => stream,
            (status, _) => panic!("connection {i} got {status}"),
        })
        .collect();
    assert_eq!(open(&server).0, 503, "a fourth connection from the same client");
    // The default server on the same address has no limit.
    let mut free = server.connect();
    for _ in 0..2 {
        free.write_all(b"GET /a.txt HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        read_response(&mut free).assert_status(200);
    }
    // A closed connection no longer counts once its worker has seen it go.
    drop(held.pop());
    let stream = wait_until("a place freed by a closed connection", WAIT, || {
        match open(&server) {
            (200, stream) => stream,
            _ => None,
        }
    });
    held.push(stream);
    assert_eq!(open(&server).0, 503);
    // A killed worker's connections no longer count once the master has reaped it. (If the
    // first worker held none of them, the second holds them all.)
    let mut workers = server.workers();
    let mut lost = 0;
    while lost == 0 {
        let victim = workers.pop().expect("a worker holding a connection");
        assert!(signal(victim, "KILL"));
        wait_until("the killed worker's replacement", WAIT, || {
            let now = server.workers();
            (now.len() == 2 && !now.contains(&victim)).then_some(())
        });
        held.retain_mut(answers);
        lost = 3 - held.len();
    }
    server.wait_for_log("counted under limit_connections; they no longer count", WAIT);
    for i in 0..lost {
        let (status, stream) = open(&server);
        assert_eq!(status, 200, "place {i} of the {lost} the dead worker held");
        held.push(stream.unwrap());
    }
    assert_eq!(open(&server).0, 503, "the limit holds again");
}
