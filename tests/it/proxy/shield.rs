//! Shielding a legacy upstream that serves one request at a time (a gunicorn sync worker, a
//! single PHP-FPM child): a slow client must not hold it. shoal reads a request body whole
//! before it picks the upstream, and takes the response at the upstream's pace, keeping what
//! the client has not taken in memory and then in a temporary file, so the upstream is free
//! for the next request at once; a client that leaves cancels its request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{read_head_response, request, signal, wait_until, Launch, Server, Site};

/// An upstream with one worker: it accepts a connection, reads one request (and its
/// Content-Length body), writes the whole response (blocking while its reader is slow),
/// closes, and only then accepts the next. `/big` answers `big_bytes` of a pattern; anything
/// else answers `ok`. It records each request's target and body, in the order served.
struct SyncWorker {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    served: Arc<Mutex<Vec<Served>>>,
    thread: Option<JoinHandle<()>>,
}

impl SyncWorker {
    fn start(big_bytes: usize, requests: usize) -> SyncWorker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answered = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (answered.clone(), served.clone());
        let thread = std::thread::spawn(move || {
            for _ in 0..requests {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let (target, body) = read_request(&mut stream);
                record.lock().expect("served").push((target.clone(), body));
                let answer = if target == "/big" {
                    pattern(big_bytes)
                } else {
                    b"ok".to_vec()
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&answer);
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        SyncWorker {
            addr,
            answered,
            served,
            thread: Some(thread),
        }
    }
}

/// A request the upstream served: its target and its body.
type Served = (String, Vec<u8>);

/// One request's target and its Content-Length body (a chunked one is not read).
fn read_request(stream: &mut TcpStream) -> Served {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    let length = (head.lines())
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, value)| value.trim().parse().unwrap_or(0));
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body);
    (target, body)
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

/// A shoal proxying everything to `upstream`, its temporary files in `<base>/spill`.
fn shield(site: &Site, upstream: SocketAddr) -> Server {
    let text = format!(
        "access_log = \"off\"\n[buffering]\ntemp_dir = \"spill\"\n[upstream.app]\nservers = [\"{upstream}\"]\n\
         [[server]]\nlisten = [\"{{listen}}\"]\n  [[server.route]]\n  prefix = \"/harness-ready-probe\"\n  \
         root = \"site\"\n  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n"
    );
    Launch::config_file(site, &text).start()
}

/// A tmpfs mounted on a directory for as long as it lives: a disk that can fill up, and
/// whose use shows every temporary file, named or not.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`256k`) on `dir`; `None` where this process may not mount
    /// (it needs root with CAP_SYS_ADMIN).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0777"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    fn used_bytes(&self) -> u64 {
        let stats = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        (stats.blocks() - stats.blocks_free()) as u64 * stats.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Mounts a tmpfs of `size` on `<base>/spill`, or says why the test is skipped.
fn spill_tmpfs(site: &Site, size: &str) -> Option<Tmpfs> {
    let dir = site.base().join("spill");
    std::fs::create_dir(&dir).expect("spill dir");
    let tmpfs = Tmpfs::mount(&dir, size);
    if tmpfs.is_none() {
        eprintln!("skipped: mounting a tmpfs needs root with CAP_SYS_ADMIN");
    }
    tmpfs
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
    let server = shield(&site, worker.addr);

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

#[test]
fn a_slow_uploader_does_not_hold_a_one_request_upstream() {
    const BODY_BYTES: usize = 512 * 1024;
    let worker = SyncWorker::start(0, 2);
    let site = Site::new();
    std::fs::create_dir(site.base().join("spill")).expect("spill dir");
    let server = shield(&site, worker.addr);
    let body = pattern(BODY_BYTES);
    let send_chunk = |stream: &mut TcpStream, piece: &[u8]| {
        stream
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .expect("size line");
        stream.write_all(piece).expect("chunk");
        stream.write_all(b"\r\n").expect("chunk end");
    };

    // The uploader sends half its body, chunked, and pauses.
    let mut uploader = server.connect();
    uploader
        .write_all(request("POST", "/upload", &["Transfer-Encoding: chunked"]).as_bytes())
        .expect("write head");
    send_chunk(&mut uploader, &body[..BODY_BYTES / 2]);
    // Meanwhile another client is answered: the upstream is not held by the upload.
    let mut other = server.connect();
    other
        .write_all(request("GET", "/small", &[]).as_bytes())
        .expect("write");
    let answer = crate::proxy::support::read_message(&mut other, false).0;
    assert_eq!(answer.status, 200, "{answer}");
    // The rest: the upstream gets the body whole, with a length, after the other request.
    send_chunk(&mut uploader, &body[BODY_BYTES / 2..]);
    uploader.write_all(b"0\r\n\r\n").expect("last chunk");
    let answer = crate::proxy::support::read_message(&mut uploader, false).0;
    assert_eq!(answer.status, 200, "{answer}");
    let served = worker.served.lock().expect("served").clone();
    let targets: Vec<&str> = served.iter().map(|(target, _)| target.as_str()).collect();
    assert_eq!(targets, ["/small", "/upload"]);
    assert!(
        served[1].1 == body,
        "the upstream got {} bytes, not the body",
        served[1].1.len()
    );
    let left = std::fs::read_dir(site.base().join("spill"))
        .expect("spill dir")
        .count();
    assert_eq!(left, 0, "a temporary file was left with a name");
}

#[test]
fn a_full_temp_directory_degrades_to_backpressure_not_to_an_error() {
    const BIG_BYTES: usize = 8 << 20;
    let site = Site::new();
    let Some(tmpfs) = spill_tmpfs(&site, "256k") else {
        return;
    };
    let worker = SyncWorker::start(BIG_BYTES, 2);
    let server = shield(&site, worker.addr);
    let mut slow = server.connect();
    slow.write_all(request("GET", "/big", &[]).as_bytes())
        .expect("write");
    assert_eq!(read_head_response(&mut slow).status, 200);
    let mut body = vec![0u8; BIG_BYTES];
    slow.read_exact(&mut body[..64 * 1024]).expect("read a little");
    server.wait_for_log(
        "a temporary file stopped taking a response",
        Duration::from_secs(20),
    );
    // The upstream now waits for the client, which still gets every byte.
    slow.read_exact(&mut body[64 * 1024..]).expect("read the rest");
    assert!(body == pattern(BIG_BYTES), "the body arrived changed");
    wait_until("the temporary file to go", Duration::from_secs(10), || {
        (tmpfs.used_bytes() == 0).then_some(())
    });
    let mut next = server.connect();
    next.write_all(request("GET", "/small", &[]).as_bytes())
        .expect("write");
    assert_eq!(
        crate::proxy::support::read_message(&mut next, false).0.text(),
        "ok"
    );
}

#[test]
fn a_worker_killed_mid_response_leaves_no_temporary_file() {
    const BIG_BYTES: usize = 24 << 20;
    let site = Site::new();
    let Some(tmpfs) = spill_tmpfs(&site, "64m") else {
        return;
    };
    let worker = SyncWorker::start(BIG_BYTES, 1);
    let server = shield(&site, worker.addr);
    let mut slow = server.connect();
    slow.write_all(request("GET", "/big", &[]).as_bytes())
        .expect("write");
    assert_eq!(read_head_response(&mut slow).status, 200);
    wait_until(
        "the upstream to finish the big response",
        Duration::from_secs(20),
        || (worker.answered.load(Ordering::SeqCst) == 1).then_some(()),
    );
    assert!(
        tmpfs.used_bytes() >= (BIG_BYTES / 2) as u64,
        "the response spilled"
    );
    for pid in server.workers() {
        assert!(signal(pid, "KILL"));
    }
    wait_until(
        "the dead worker's temporary file to go",
        Duration::from_secs(10),
        || (tmpfs.used_bytes() == 0).then_some(()),
    );
    let named = std::fs::read_dir(site.base().join("spill"))
        .expect("spill dir")
        .count();
    assert_eq!(named, 0);
}

/// An upstream that answers every request, on any number of connections at once, with the
/// same `body` (then keeps the connection for the next request).
struct Fast {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
}

impl Fast {
    fn start(body: Arc<Vec<u8>>) -> Fast {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        // Detached: it ends with the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (body, count) = (body.clone(), count.clone());
                std::thread::spawn(move || {
                    while !read_request(&mut stream).0.is_empty() {
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                        if stream
                            .write_all(head.as_bytes())
                            .and_then(|()| stream.write_all(&body))
                            .is_err()
                        {
                            return;
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Fast { addr, answered }
    }
}

/// Resident memory of `pid`, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = (status.lines())
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[test]
fn a_thousand_slow_readers_keep_their_bodies_on_disk_not_in_memory() {
    const READERS: usize = 1000;
    const BODY_BYTES: usize = 4 << 20;
    // A worker's memory for them all: each slow client holds at most 64 KiB of its
    // response in memory (the rest spills), plus its buffers: 160 MiB, against the 4 GiB
    // the bodies take.
    const BOUND_BYTES: u64 = 160 << 20;
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("setrlimit");
    let body = Arc::new(pattern(BODY_BYTES));
    let app = Fast::start(body.clone());
    let site = Site::new();
    std::fs::create_dir(site.base().join("spill")).expect("spill dir");
    let text = format!(
        "access_log = \"off\"\n[limits]\nsend_buffer_bytes = \"16KiB\"\n[buffering]\ntemp_dir = \"spill\"\n\
         [upstream.app]\nservers = [\"{}\"]\nkeepalive = 0\n\
         [[server]]\nlisten = [\"{{listen}}\"]\n  [[server.route]]\n  prefix = \"/harness-ready-probe\"\n  \
         root = \"site\"\n  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n",
        app.addr
    );
    let server = Launch::config_file(&site, &text).start();
    let worker = server.wait_for_workers(1)[0];
    let before = rss_bytes(worker);
    let readers: Vec<TcpStream> = (0..READERS)
        .map(|i| {
            // A small receive buffer: the kernel holds little of the response for it.
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
            socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            socket.connect(&server.addr.into()).expect("connect");
            let mut stream: TcpStream = socket.into();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            stream
                .write_all(request("GET", &format!("/report/{i}"), &[]).as_bytes())
                .expect("write");
            stream
        })
        .collect();
    wait_until("the app to answer every reader", Duration::from_secs(120), || {
        (app.answered.load(Ordering::SeqCst) == READERS).then_some(())
    });
    let during = rss_bytes(worker);
    assert!(
        during < before + BOUND_BYTES,
        "worker RSS {} MiB with {READERS} slow readers of {} MiB (was {} MiB)",
        during >> 20,
        BODY_BYTES >> 20,
        before >> 20
    );
    eprintln!(
        "worker RSS: {} MiB before, {} MiB with {READERS} slow readers of {} MiB each",
        before >> 20,
        during >> 20,
        BODY_BYTES >> 20
    );
    // Some readers take their whole response now: every byte, in order.
    for mut reader in readers.into_iter().step_by(100) {
        assert_eq!(read_head_response(&mut reader).status, 200);
        let mut got = vec![0u8; BODY_BYTES];
        reader.read_exact(&mut got).expect("read the body");
        assert!(got == *body, "a body arrived changed");
    }
}
