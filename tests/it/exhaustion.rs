//! Exhaustion: a worker out of file descriptors idles (no spinning), keeps its pid and serves
//! again as soon as descriptors free up; huge request lines, header sections and bodies are
//! refused (414, 431, 413) at a bounded memory cost, on static and proxied routes alike.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{get, read_response, wait_until, Launch, Response, Server, Site};
use crate::procfs::{cpu_ticks, mib, open_fds, rss_bytes, ticks_per_second, Sampler};
use crate::proxy::support::{launch, read_final};
use crate::upstream::{Behaviour, Upstream};

/// Upper bound on every wait here.
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_worker_out_of_descriptors_idles_and_serves_again_once_they_free_up() {
    /// RLIMIT_NOFILE of the whole shoal process tree.
    const LIMIT: usize = 64;
    /// How long the worker's CPU time is watched while it sits at the limit.
    const WATCH: Duration = Duration::from_secs(3);
    let site = Site::new();
    site.file("small.txt", "still here\n");
    // Idle connections must stay open for the whole test: long head and keep-alive timers.
    // max_connections is set, far above what 64 descriptors allow, so that descriptors run
    // out first (the default would be fitted to the limit).
    let top = "access_log = \"off\"\n[limits]\nheader_timeout = \"5m\"\nkeepalive_timeout = \"5m\"\n\
               max_connections = 1000";
    let server = Launch::config(&site, top, "")
        .open_files_limit(LIMIT as u32)
        .start();
    let master = server.pid();
    let worker = server.wait_for_workers(1)[0];
    // A keep-alive connection from before the exhaustion, with the file cached by now.
    let mut survivor = server.connect();
    survivor.write_all(get("/small.txt").as_bytes()).expect("write");
    read_response(&mut survivor).assert_status(200);

    // More connections than the worker has descriptors left: the rest wait in the queue.
    let hogs: Vec<TcpStream> = (0..LIMIT + 16).map(|_| server.connect()).collect();
    wait_until("the worker to use every descriptor it may", WAIT, || {
        (open_fds(worker) >= LIMIT).then_some(())
    });
    server.wait_for_log("Too many open files", WAIT);

    // At the limit, with connections queued that it cannot accept, the worker must sleep:
    // it retries accept() every 100-250 ms, a few microseconds each. A worker that spins on
    // its readiness uses the whole window (100%); 10% of one CPU leaves room for a slow,
    // busy machine and debug builds, and still fails any spin.
    let before = cpu_ticks(worker);
    std::thread::sleep(WATCH);
    let used = cpu_ticks(worker) - before;
    let allowed = ticks_per_second() * WATCH.as_secs() / 10;
    eprintln!("at the fd limit: the worker used {used} CPU ticks in {WATCH:?} (allowed {allowed})");
    assert!(
        used <= allowed,
        "the worker used {used} CPU ticks in {WATCH:?} at the descriptor limit (allowed {allowed})"
    );
    let pauses = server.stderr().matches("pausing accepts").count();
    assert!(
        pauses <= 2,
        "{pauses} 'pausing accepts' lines: one per exhaustion is enough"
    );

    // A connection it already holds still gets an answer: opening the file (to revalidate
    // the cached copy) fails for want of a descriptor, which is a 503, not a 500.
    survivor.write_all(get("/small.txt").as_bytes()).expect("write");
    read_response(&mut survivor).assert_status(503);

    // Descriptors free up: service is back at once, by the same processes.
    drop(hogs);
    let response = server.get("/small.txt");
    assert_eq!((response.status, response.text().as_str()), (200, "still here\n"));
    assert_eq!(
        server.workers(),
        vec![worker],
        "the worker must not have been replaced"
    );
    assert_eq!(server.pid(), master);
    server.wait_for_log("accepting again", WAIT);
}

/// A request sent in a thread: `head`, then `filler` repeated until `total` bytes in all
/// went out or shoal stopped taking them. Returns the bytes written.
fn flood(mut stream: TcpStream, head: Vec<u8>, filler: Vec<u8>, total: u64) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("set_write_timeout");
        let mut written = 0u64;
        if stream.write_all(&head).is_err() {
            return written;
        }
        written += head.len() as u64;
        while written < total {
            match stream.write(&filler) {
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Reset, broken pipe, or shoal stopped reading (timeout): it is over.
                Err(_) => break,
            }
        }
        written
    })
}

/// One huge request and what it must get.
struct Huge {
    what: &'static str,
    head: String,
    filler: Vec<u8>,
    total: u64,
    status: u16,
    /// Shoal must close the connection before the input ends (a refused head or body is
    /// otherwise read and dropped for the 2 s linger, which may swallow it all).
    cut: bool,
}

const HUNDRED_MIB: u64 = 100 << 20;
const ONE_GIB: u64 = 1 << 30;

/// The same huge inputs for any path: a request line, a header value, header lines, a
/// Content-Length body and a chunked body (an HTTP/1.1 GET may carry one), all far over
/// the limits.
fn huge_inputs(path: &str, chunked_status: u16, chunked_cut: bool) -> Vec<Huge> {
    let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
    chunk.extend(std::iter::repeat_n(b'b', 64 * 1024));
    chunk.extend_from_slice(b"\r\n");
    vec![
        Huge {
            what: "100 MiB request line",
            head: format!("GET {path}?"),
            filler: vec![b'q'; 64 * 1024],
            total: HUNDRED_MIB,
            status: 414,
            cut: false,
        },
        Huge {
            what: "100 MiB header value",
            head: format!("GET {path} HTTP/1.1\r\nHost: test\r\nX-Huge: "),
            filler: vec![b'h'; 64 * 1024],
            total: HUNDRED_MIB,
            status: 431,
            cut: false,
        },
        Huge {
            what: "100 MiB of header lines",
            head: format!("GET {path} HTTP/1.1\r\nHost: test\r\n"),
            filler: "X-Filler: fill\r\n".repeat(4096).into_bytes(),
            total: HUNDRED_MIB,
            status: 431,
            cut: false,
        },
        Huge {
            what: "1 GiB Content-Length body",
            head: format!("POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {ONE_GIB}\r\n\r\n"),
            filler: vec![b'b'; 64 * 1024],
            total: ONE_GIB,
            status: 413,
            cut: false,
        },
        Huge {
            what: "1 GiB chunked body",
            head: format!("GET {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"),
            filler: chunk,
            total: ONE_GIB,
            status: chunked_status,
            cut: chunked_cut,
        },
    ]
}

/// Sends each huge input on its own connection; checks the answer, that shoal cut what it
/// must cut, and that the worker's memory stayed bounded.
fn refuse_all(server: &Server, inputs: Vec<Huge>) {
    /// Worker memory one huge request may add: its input is capped at the 16 KiB head limit
    /// (bodies are streamed or discarded in 64 KiB steps), so 16 MiB is ample and still far
    /// below what buffering any of these inputs would take.
    const GROWTH_BOUND: u64 = 16 << 20;
    let worker = server.wait_for_workers(1)[0];
    let base_rss = rss_bytes(worker);
    let sampler = Sampler::start(worker);
    for huge in inputs {
        let stream = server.connect();
        let reader = stream.try_clone().expect("clone");
        let writer = flood(stream, huge.head.into_bytes(), huge.filler, huge.total);
        let response = read_status(reader);
        let written = writer.join().expect("flood thread panicked");
        assert_eq!(response.status, huge.status, "{}: {response}", huge.what);
        assert!(
            !huge.cut || written < huge.total,
            "{}: shoal took all {written} bytes instead of closing",
            huge.what
        );
    }
    let peaks = sampler.stop();
    eprintln!(
        "huge inputs: worker peak RSS {:.1} MiB (base {:.1} MiB)",
        mib(peaks.rss_bytes),
        mib(base_rss)
    );
    assert!(
        peaks.rss_bytes <= base_rss + GROWTH_BOUND,
        "worker RSS peaked at {:.1} MiB (base {:.1} MiB)",
        mib(peaks.rss_bytes),
        mib(base_rss)
    );
}

/// The final response on `stream` in any framing (the chunked-body case gets the file).
fn read_status(mut stream: TcpStream) -> Response {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set_read_timeout");
    read_final(&mut stream).1
}

const LIMITS: &str = "access_log = \"off\"\n[limits]\nmax_body_bytes = \"1MiB\"";

#[test]
fn huge_heads_and_bodies_to_a_static_route_are_refused_at_a_bounded_cost() {
    let site = Site::new();
    site.file("small.txt", "small\n");
    let server = Server::with_config(&site, LIMITS, "");
    // A static route answers a GET before its body; the body is then discarded up to
    // max_body_bytes and the connection closed.
    refuse_all(&server, huge_inputs("/small.txt", 200, true));
}

#[test]
fn huge_heads_and_bodies_to_a_proxied_route_are_refused_at_a_bounded_cost() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let routes = "  [[server.route]]\n  prefix = \"/app/\"\n  upstream = \"app\"\n";
    let server = launch(&site, LIMITS, &[upstream.addr.to_string()], "", routes).start();
    refuse_all(&server, huge_inputs("/app/echo", 413, false));
    assert!(
        upstream.requests().is_empty(),
        "the upstream must never see a whole oversized request: {:?}",
        upstream.requests().len()
    );
}
