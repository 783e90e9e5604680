//! Hostile clients against one worker: connections that trickle a request head and never
//! finish it, connections that send requests and never read the answers, and a client that
//! pipelines requests without reading. Throughout, a normal client must get every answer
//! right, the hostile connections must be closed by shoal's own timeouts, and the worker's
//! memory must stay bounded: a hostile connection may cost a few KiB, never a response body.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Socket, Type};

use crate::harness::{read_response, wait_until, Server, Site, IO_TIMEOUT};
use crate::procfs::{mib, open_fds, raise_open_files_limit, rss_bytes, Sampler};
use crate::proxy::support::{read_until_end, End};

const TRICKLERS: usize = 2000;
const NON_READERS: usize = 2000;
/// `header_timeout` and `send_timeout` of the slow-client test: long enough that all 4,000
/// hostile connections are open at the same time even on a slow, busy machine.
const HOSTILE_TIMEOUTS: &str = "header_timeout = \"10s\"\nsend_timeout = \"10s\"\n";
/// How often each trickler sends one more byte of its endless head.
const TRICKLE_EVERY: Duration = Duration::from_millis(250);
/// Upper bound on every wait of these tests (they normally take a fraction of it).
const WAIT: Duration = Duration::from_secs(60);
/// Worker memory one hostile connection may cost: its connection state, a 4 KiB input
/// buffer and a response head come to about 5 KiB. A copy of a response body per
/// connection (the 200 KiB file here) is far over it.
const PER_CONN_BYTES: u64 = 16 * 1024;
/// A normal client waits this long for an answer before it counts as a failure.
const NORMAL_TIMEOUT: Duration = Duration::from_secs(15);

/// A small file, one kept in memory by the cache (under its 256 KiB limit), and one sent
/// with sendfile; each with distinct bytes so a mixed-up answer shows.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    let pattern =
        |len: usize, seed: usize| -> Vec<u8> { (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect() };
    vec![
        ("/small.txt", b"hello, normal client\n".to_vec()),
        ("/mid.bin", pattern(200 * 1024, 1)),
        ("/big.bin", pattern(1024 * 1024, 2)),
    ]
}

fn site_with(files: &[(&str, Vec<u8>)]) -> Site {
    let site = Site::new();
    for (path, body) in files {
        site.file(path.trim_start_matches('/'), body);
    }
    site
}

/// Requests each file once (filling the cache) and checks the answer.
fn warm_up(server: &Server, files: &[(&str, Vec<u8>)]) {
    for (path, body) in files {
        let response = server.get(path);
        assert_eq!(response.status, 200, "{path}: {response}");
        assert!(response.body == *body, "{path}: wrong body");
    }
}

#[test]
fn slow_and_greedy_clients_are_timed_out_while_a_normal_client_is_served() {
    raise_open_files_limit((TRICKLERS + NON_READERS + 1000) as u64);
    let files = files();
    let site = site_with(&files);
    let top = format!(
        "access_log = \"off\"\n[limits]\n{HOSTILE_TIMEOUTS}send_buffer_bytes = \"16KiB\"\nmax_connections = {}\n",
        TRICKLERS + NON_READERS + 100
    );
    let server = Server::with_config(&site, &top, "");
    let worker = server.wait_for_workers(1)[0];
    warm_up(&server, &files);
    let base_fds = open_fds(worker);
    let base_rss = rss_bytes(worker);
    let sampler = Sampler::start(worker);

    let normal = NormalClient::start(server.addr, files[..2].to_vec());
    let tricklers: Vec<TcpStream> = (0..TRICKLERS).map(|_| start_trickling(server.addr)).collect();
    let trickling = std::thread::spawn(move || trickle(tricklers, Instant::now() + WAIT));
    let non_readers: Vec<(TcpStream, usize)> = (0..NON_READERS)
        .map(|i| {
            let (path, body) = &files[1 + i % 2];
            (request_and_never_read(server.addr, path), body.len())
        })
        .collect();

    let hostile = TRICKLERS + NON_READERS;
    wait_until(
        "the worker to hold every hostile connection at once",
        WAIT,
        || (open_fds(worker) >= base_fds + hostile).then_some(()),
    );
    let served_at_peak = normal.served();
    wait_until("the normal client to be served meanwhile", WAIT, || {
        (normal.served() >= served_at_peak + 20).then_some(())
    });
    // Closed by shoal: the clients themselves never give up (the tricklers close only after
    // shoal's 408 and FIN; the non-readers do nothing at all).
    wait_until("the worker to close every hostile connection", WAIT, || {
        (open_fds(worker) <= base_fds + 1).then_some(())
    });
    let served = normal.stop();
    let peaks = sampler.stop();

    let trickled = trickling.join().expect("trickle thread panicked");
    for (i, (bytes, end)) in trickled.iter().enumerate() {
        assert!(
            bytes.starts_with(b"HTTP/1.1 408 "),
            "trickler {i} ended ({end:?}) with {:?}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(*end, End::Closed, "trickler {i}");
    }
    for (i, (mut stream, body_len)) in non_readers.into_iter().enumerate() {
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        let (bytes, end) = read_until_end(&mut stream);
        assert!(
            bytes.starts_with(b"HTTP/1.1 200 "),
            "non-reader {i}: {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        );
        assert!(
            end != End::StillOpen && bytes.len() < body_len,
            "non-reader {i} was not cut: {} bytes of a {body_len}-byte body, then {end:?}",
            bytes.len()
        );
    }
    let bound = base_rss + hostile as u64 * PER_CONN_BYTES;
    eprintln!(
        "slow clients: normal client served {served} requests; worker peak {} fds (base {base_fds}), \
         peak RSS {:.1} MiB (base {:.1} MiB, bound {:.1} MiB)",
        peaks.open_fds,
        mib(peaks.rss_bytes),
        mib(base_rss),
        mib(bound)
    );
    assert!(
        peaks.rss_bytes <= bound,
        "worker RSS peaked at {:.1} MiB with {hostile} hostile connections: over the {:.1} MiB bound \
         (base {:.1} MiB + {} KiB per connection)",
        mib(peaks.rss_bytes),
        mib(bound),
        mib(base_rss),
        PER_CONN_BYTES / 1024
    );
    assert_eq!(
        server.workers(),
        vec![worker],
        "the worker must not have been replaced"
    );
}

#[test]
fn a_client_that_pipelines_without_reading_is_not_read_without_limit() {
    /// Accepted request bytes that would show shoal reads on without bound. Legitimately the
    /// client's socket takes what fits in the kernel buffers both ways plus what shoal
    /// answered before its output filled: a few MiB.
    const ACCEPTED_BOUND: usize = 64 << 20;
    /// Worker memory the flood may add: 16 KiB of input and one 16 KiB response over the
    /// 64 KiB output high-water mark come to about 100 KiB; the rest waits in the kernel.
    const RSS_GROWTH_BOUND: u64 = 16 << 20;
    let body: Vec<u8> = (0..16 * 1024).map(|i| (i % 251) as u8).collect();
    let site = Site::new();
    site.file("page.bin", &body);
    let top = "access_log = \"off\"\n[limits]\nmax_requests_per_connection = 1000000";
    let server = Server::with_config(&site, top, "");
    let worker = server.wait_for_workers(1)[0];
    warm_up(&server, &[("/page.bin", body.clone())]);
    let base_rss = rss_bytes(worker);
    let sampler = Sampler::start(worker);

    let padding = "p".repeat(4000);
    let request = format!("GET /page.bin HTTP/1.1\r\nHost: test\r\nX-Pad: {padding}\r\n\r\n");
    let mut stream = server.connect();
    stream.set_nonblocking(true).expect("set_nonblocking");
    let mut accepted = 0;
    loop {
        match stream.write(&request.as_bytes()[accepted % request.len()..]) {
            Ok(n) => accepted += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Shoal stopped reading if the socket stays full for a while; if it is merely
                // slow, it drains and the flood goes on.
                if !writable_within(&stream, Duration::from_secs(2)) {
                    break;
                }
            }
            Err(e) => panic!("writing the flood failed after {accepted} bytes: {e}"),
        }
        assert!(
            accepted <= ACCEPTED_BOUND,
            "shoal took {accepted} bytes of pipelined requests from a client that reads nothing"
        );
    }
    let stalled_rss = rss_bytes(worker);
    let peaks = sampler.stop();
    eprintln!(
        "pipelining flood: {accepted} bytes ({} requests) accepted before the socket stayed full; \
         worker RSS {:.1} MiB, peak {:.1} MiB (base {:.1} MiB)",
        accepted / request.len(),
        mib(stalled_rss),
        mib(peaks.rss_bytes),
        mib(base_rss)
    );
    assert!(
        peaks.rss_bytes <= base_rss + RSS_GROWTH_BOUND,
        "worker RSS peaked at {:.1} MiB (base {:.1} MiB) under a pipelining flood",
        mib(peaks.rss_bytes),
        mib(base_rss)
    );

    // Every request taken is answered, in order, once the client reads: finish the last
    // partial request, add one that closes, and count the answers.
    let requests = accepted.div_ceil(request.len()) + 1;
    let mut tail = request.as_bytes()[accepted % request.len()..].to_vec();
    if accepted % request.len() == 0 {
        tail.clear();
    }
    tail.extend_from_slice(b"GET /page.bin HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.set_nonblocking(false).expect("set_nonblocking");
    let mut writer = stream.try_clone().expect("clone the stream");
    let finishing = std::thread::spawn(move || writer.write_all(&tail));
    let mut reader = BufReader::new(stream);
    for i in 0..requests {
        let response = read_response(&mut reader);
        assert_eq!(response.status, 200, "answer {i} of {requests}: {response}");
        assert!(response.body == body, "answer {i} of {requests}: wrong body");
    }
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "bytes after the last answer: {} bytes",
        rest.len()
    );
    finishing
        .join()
        .expect("writer thread panicked")
        .expect("write the last requests");
    assert_eq!(
        server.workers(),
        vec![worker],
        "the worker must not have been replaced"
    );
}

/// True when `stream` can take more bytes within `timeout`.
fn writable_within(stream: &TcpStream, timeout: Duration) -> bool {
    let millis = u16::try_from(timeout.as_millis()).expect("timeout under 65 s");
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::from(millis)) {
        Ok(ready) => ready > 0,
        Err(e) => panic!("poll() failed: {e}"),
    }
}

/// A connection that has sent the start of a request head, non-blocking.
fn start_trickling(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .write_all(b"GET /small.txt HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .expect("write the start of a head");
    stream.set_nonblocking(true).expect("set_nonblocking");
    stream
}

/// Sends one more head byte on every open connection each [`TRICKLE_EVERY`], reading what
/// shoal answers, until every connection ended or `until`. Returns what each received and
/// how it ended.
fn trickle(conns: Vec<TcpStream>, until: Instant) -> Vec<(Vec<u8>, End)> {
    let mut state: Vec<(TcpStream, Vec<u8>, End)> = conns
        .into_iter()
        .map(|stream| (stream, Vec::new(), End::StillOpen))
        .collect();
    while Instant::now() < until && state.iter().any(|(_, _, end)| *end == End::StillOpen) {
        for (stream, got, end) in state.iter_mut().filter(|(_, _, end)| *end == End::StillOpen) {
            *end = drain_nonblocking(stream, got);
            if *end == End::StillOpen {
                match stream.write(b"s") {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => *end = End::Reset,
                }
            }
        }
        std::thread::sleep(TRICKLE_EVERY);
    }
    state.into_iter().map(|(_, got, end)| (got, end)).collect()
}

/// Reads whatever is there without blocking; says whether the connection ended.
fn drain_nonblocking(stream: &mut TcpStream, got: &mut Vec<u8>) -> End {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return End::Closed,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return End::StillOpen,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return End::Reset,
        }
    }
}

/// A connection with a 4 KiB receive buffer that sends `GET path` and then reads nothing.
fn request_and_never_read(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket()");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut stream: TcpStream = socket.into();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .expect("write a request");
    stream
}

/// A well-behaved client in a thread: keep-alive connections of ten requests each,
/// every answer checked byte for byte, until stopped.
struct NormalClient {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl NormalClient {
    fn start(addr: SocketAddr, files: Vec<(&'static str, Vec<u8>)>) -> NormalClient {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (stopping, counter) = (Arc::clone(&stop), Arc::clone(&served));
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !stopping.load(Ordering::SeqCst) {
                let mut stream = TcpStream::connect_timeout(&addr, NORMAL_TIMEOUT)
                    .unwrap_or_else(|e| panic!("normal client: connect: {e}"));
                stream
                    .set_read_timeout(Some(NORMAL_TIMEOUT))
                    .expect("set_read_timeout");
                stream
                    .set_write_timeout(Some(NORMAL_TIMEOUT))
                    .expect("set_write_timeout");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                for _ in 0..10 {
                    let (path, body) = &files[n % files.len()];
                    n += 1;
                    stream
                        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
                        .unwrap_or_else(|e| panic!("normal client: write request {n}: {e}"));
                    let response = read_response(&mut reader);
                    assert_eq!(
                        response.status, 200,
                        "normal client, request {n} ({path}): {response}"
                    );
                    assert!(
                        response.body == *body,
                        "normal client, request {n} ({path}): wrong body"
                    );
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        NormalClient { stop, served, thread }
    }

    fn served(&self) -> usize {
        assert!(
            !self.thread.is_finished(),
            "the normal client failed (see its panic above)"
        );
        self.served.load(Ordering::SeqCst)
    }

    /// Stops the loop; fails the test if any answer was wrong. Returns how many were right.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .expect("the normal client got a wrong or no answer");
        self.served.load(Ordering::SeqCst)
    }
}
