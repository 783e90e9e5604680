//! Supervision: the master replaces killed, hung, bloated and worn workers without failing
//! requests that live workers accepted; gives up on crash loops and on workers that cannot
//! boot; and obeys the operator's signals (stop, reload, reopen logs, binary upgrade, scale)
//! and the `shoal reload|stop ... --pid-file` commands that send them.
//!
//! Load comes from [`Traffic`]: client threads that GET one file in a loop and count every
//! request that did not end in a complete 200. Waiting is on observable state only: the
//! master's log lines, its children in /proc, the pid file, the access log.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::{
    assert_closed, children_of, config_text, get, read_response, run_shoal, signal, wait_until, Launch,
    Server, Site, IO_TIMEOUT,
};

/// Bound on every wait for a supervision event (a respawn, a log line, an exit).
const WAIT: Duration = Duration::from_secs(10);
/// The file every load loop fetches, and its contents.
const PATH: &str = "/a.txt";
const BODY: &str = "alpha";
/// Top-level keys most tests use: no access log (load loops would fill stdout).
const QUIET: &str = "access_log = \"off\"";

/// A site serving [`PATH`] with [`BODY`].
fn site() -> Site {
    let site = Site::new();
    site.file(&PATH[1..], BODY);
    site
}

/// Config text before `[[server]]`: top-level `keys`, then a `[supervisor]` section with a
/// fast heartbeat plus `supervisor` lines.
fn top(keys: &str, supervisor: &str) -> String {
    format!("{keys}\n[supervisor]\nheartbeat_interval = \"200ms\"\n{supervisor}\n")
}

/// Starts shoal with `-w workers` on the site's config built from `keys` and `supervisor`.
fn start(site: &Site, keys: &str, supervisor: &str, workers: u16) -> Server {
    Launch::config(site, &top(keys, supervisor), "")
        .workers(workers)
        .start()
}

/// Rewrites the config file the server was started with (for a reload).
fn rewrite_config(site: &Site, server: &Server, top: &str, route: &str) {
    std::fs::write(
        site.base().join("shoal.toml"),
        config_text(server.addr, top, route),
    )
    .expect("rewrite shoal.toml");
}

/// `(slot, pid)` of every `worker N started (pid P)` line, in order.
fn started(log: &str) -> Vec<(usize, u32)> {
    log.lines()
        .filter_map(|line| {
            let (slot, rest) = line.split_once("worker ")?.1.split_once(" started (pid ")?;
            Some((slot.parse().ok()?, rest.strip_suffix(')')?.parse().ok()?))
        })
        .collect()
}

/// The pid of the last worker started in `slot`, from the master's log.
fn started_in_slot(server: &Server, slot: usize) -> u32 {
    let what = format!("a `worker {slot} started` line");
    wait_until(&what, WAIT, || {
        started(&server.stderr())
            .into_iter()
            .filter(|(s, _)| *s == slot)
            .map(|(_, pid)| pid)
            .next_back()
    })
}

/// The one-letter state of `pid` from /proc (R, S, T, Z, ...); None once it is reaped.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// True when `pid` no longer runs: reaped, or a zombie nobody reaps (orphans here are
/// re-parented to a pid 1 that does not reap).
pub(crate) fn dead(pid: u32) -> bool {
    matches!(process_state(pid), None | Some('Z'))
}

/// The process name of `pid` (at most 15 bytes), if it exists.
fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim_end().to_string())
}

/// The pid in a pid file, if it holds one.
pub(crate) fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn sorted(mut pids: Vec<u32>) -> Vec<u32> {
    pids.sort_unstable();
    pids
}

/// Shoal processes a test may leave behind when it fails half-way (a stopped worker, a
/// master that is not our child, orphaned workers): when dropped during a panic, each listed
/// pid and its children still named `shoal...` get SIGCONT then SIGKILL.
pub(crate) struct Leftovers(pub(crate) Vec<u32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut pids = self.0.clone();
        for pid in &self.0 {
            pids.extend(children_of(*pid));
        }
        for pid in pids {
            if !dead(pid) && comm(pid).is_some_and(|name| name.starts_with("shoal")) {
                signal(pid, "CONT");
                signal(pid, "KILL");
            }
        }
    }
}

/// One response as the load client saw it.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads a response head: status and headers. Errors describe what arrived.
fn read_reply_head(conn: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>), String> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        let n = conn
            .read_until(b'\n', &mut head)
            .map_err(|e| format!("reading the head: {e}; got {:?}", String::from_utf8_lossy(&head)))?;
        if n == 0 {
            return Err(format!(
                "connection closed before a complete head; got {:?}",
                String::from_utf8_lossy(&head)
            ));
        }
        if head[start..] == *b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line in {text:?}"))?;
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (name.to_string(), value.trim().to_string())
        })
        .collect();
    Ok((status, headers))
}

/// Reads one complete response (heads without Content-Length are errors here).
fn read_reply(conn: &mut impl BufRead) -> Result<Reply, String> {
    let (status, headers) = read_reply_head(conn)?;
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let length: usize = reply
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{status} response without a valid Content-Length"))?;
    reply.body = vec![0; length];
    conn.read_exact(&mut reply.body)
        .map_err(|e| format!("{status} response: reading its {length}-byte body: {e}"))?;
    Ok(reply)
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// True when the server has closed (or reset) an idle connection, or sent something
/// unasked: such a connection is not reused.
fn closed_by_server(conn: &BufReader<TcpStream>) -> bool {
    if !conn.buffer().is_empty() {
        return true;
    }
    let stream = conn.get_ref();
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let peeked = stream.peek(&mut [0u8; 1]);
    let reusable = stream.set_nonblocking(false).is_ok();
    !(reusable && matches!(peeked, Err(ref e) if e.kind() == ErrorKind::WouldBlock))
}

/// An HTTP/1.1 client like a browser's: it keeps its connection alive between requests and
/// opens a new one when the server said `Connection: close` or closed it between requests.
/// With `fresh`, every request gets a new connection.
struct Client {
    addr: SocketAddr,
    fresh: bool,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(addr: SocketAddr, fresh: bool) -> Client {
        Client {
            addr,
            fresh,
            conn: None,
        }
    }

    /// GET `path`: the complete response, or why there was none.
    fn get(&mut self, path: &str) -> Result<Reply, String> {
        if self.conn.as_ref().is_some_and(closed_by_server) {
            self.conn = None;
        }
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => BufReader::new(connect(self.addr)?),
        };
        conn.get_mut()
            .write_all(get(path).as_bytes())
            .map_err(|e| format!("writing the request: {e}"))?;
        let reply = read_reply(&mut conn)?;
        if !self.fresh && !reply.closes() {
            self.conn = Some(conn);
        }
        Ok(reply)
    }

    /// GET [`PATH`], failing unless it is a complete 200 with [`BODY`].
    fn fetch(&mut self) -> Result<(), String> {
        let reply = self.get(PATH)?;
        if reply.status == 200 && reply.body == BODY.as_bytes() {
            Ok(())
        } else {
            Err(format!(
                "status {} with body {:?}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ))
        }
    }
}

/// Longest a load loop runs if the test never stops it.
const TRAFFIC_LIMIT: Duration = Duration::from_secs(60);

/// What the load loops saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: u64,
    /// The first few failures, described.
    failures: Vec<String>,
}

/// Client threads fetching [`PATH`] back to back until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Tally>>,
}

impl Traffic {
    /// `keep_alive` clients reusing connections and `fresh` clients opening one per request.
    fn start(server: &Server, keep_alive: usize, fresh: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..keep_alive + fresh)
            .map(|i| {
                let (stop, ok) = (stop.clone(), ok.clone());
                let mut client = Client::new(server.addr, i >= keep_alive);
                std::thread::spawn(move || {
                    let deadline = Instant::now() + TRAFFIC_LIMIT;
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match client.fetch() {
                            Ok(()) => {
                                tally.ok += 1;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(why) => {
                                tally.failed += 1;
                                if tally.failures.len() < 10 {
                                    let n = tally.ok + tally.failed;
                                    tally.failures.push(format!("client {i}, request {n}: {why}"));
                                }
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        Traffic { stop, ok, threads }
    }

    /// Waits until `more` further requests have succeeded: the server is serving now.
    fn wait_for_more(&self, more: u64) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        wait_until(&format!("{more} more successful requests"), WAIT, || {
            (self.ok.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    /// Stops the loops and adds up what they saw.
    fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::default();
        for thread in std::mem::take(&mut self.threads) {
            let tally = thread.join().expect("a load thread panicked");
            all.ok += tally.ok;
            all.failed += tally.failed;
            all.failures.extend(tally.failures);
        }
        all
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
    }
}

fn assert_no_failures(tally: &Tally) {
    assert!(
        tally.failed == 0,
        "{} of {} requests failed; first failures: {:#?}",
        tally.failed,
        tally.ok + tally.failed,
        tally.failures
    );
    assert!(tally.ok > 0, "the load loop made no request at all");
}

#[test]
fn a_worker_killed_under_load_is_replaced_and_only_its_in_flight_requests_fail() {
    let site = site();
    let server = start(&site, QUIET, "", 2);
    let before = server.wait_for_workers(2);
    let clients = 2;
    let traffic = Traffic::start(&server, 0, clients);
    traffic.wait_for_more(50);
    let victim = before[0];
    assert!(signal(victim, "KILL"), "kill -KILL {victim}");
    let after = wait_until("a new worker in place of the killed one", WAIT, || {
        Some(server.workers()).filter(|pids| pids.len() == 2 && !pids.contains(&victim))
    });
    assert!(
        after.iter().any(|pid| !before.contains(pid)),
        "no new worker pid: before {before:?}, after {after:?}"
    );
    traffic.wait_for_more(200);
    let tally = traffic.finish();
    assert!(
        tally.failed <= clients as u64,
        "{} of {} requests failed, more than the {clients} that can be in flight on the killed worker: {:#?}",
        tally.failed,
        tally.ok + tally.failed,
        tally.failures
    );
    let mut client = Client::new(server.addr, true);
    for i in 0..50 {
        if let Err(why) = client.fetch() {
            panic!("request {i} after the respawn failed: {why}");
        }
    }
}

#[test]
fn a_stopped_worker_misses_its_heartbeats_and_is_aborted_and_replaced() {
    let site = site();
    let server = start(&site, QUIET, "heartbeat_timeout = \"1s\"", 1);
    let hung = server.wait_for_workers(1)[0];
    let _leftovers = Leftovers(vec![hung]);
    assert!(signal(hung, "STOP"), "kill -STOP {hung}");
    server.wait_for_log(&format!("(pid {hung}) sent no heartbeat for 1s: SIGABRT"), WAIT);
    let replacement = wait_until("a different worker in the children list", WAIT, || {
        Some(server.workers()).filter(|pids| pids.len() == 1 && pids[0] != hung)
    })[0];
    wait_until(&format!("the hung worker {hung} to be reaped"), WAIT, || {
        process_state(hung).is_none().then_some(())
    });
    assert_eq!(server.get(PATH).assert_status(200).text(), BODY);
    assert_eq!(
        server.workers(),
        vec![replacement],
        "workers after the replacement"
    );
}

#[test]
fn a_bloated_worker_is_recycled_without_failing_a_request() {
    let site = site();
    let server = start(&site, QUIET, "max_worker_rss = \"1MiB\"", 1);
    let first = started_in_slot(&server, 0);
    let traffic = Traffic::start(&server, 2, 1);
    traffic.wait_for_more(50);
    server.wait_for_log("worker 0 recycling (Bloated", WAIT);
    let log = wait_until("two more workers started in slot 0", WAIT, || {
        let log = server.stderr();
        (started(&log).len() >= 3).then_some(log)
    });
    wait_until(&format!("the first worker {first} to exit"), WAIT, || {
        process_state(first).is_none().then_some(())
    });
    traffic.wait_for_more(50);
    let tally = traffic.finish();
    assert_no_failures(&tally);
    assert!(
        started(&log).iter().all(|(slot, _)| *slot == 0),
        "only slot 0 exists: {:?}",
        started(&log)
    );
}

#[test]
fn a_worn_worker_is_recycled_after_max_requests_without_failing_a_request() {
    let site = site();
    let server = start(&site, QUIET, "max_requests = 20", 1);
    let first = server.wait_for_workers(1)[0];
    let mut client = Client::new(server.addr, false);
    let mut sent = 0;
    let mut failures = Vec::new();
    wait_until("`recycling (Worn)` and a new worker", WAIT, || {
        sent += 1;
        if let Err(why) = client.fetch() {
            failures.push(format!("request {sent}: {why}"));
        }
        let recycled = server.stderr().contains("worker 0 recycling (Worn)");
        let workers = server.workers();
        (recycled && !workers.is_empty() && !workers.contains(&first)).then_some(())
    });
    for _ in 0..20 {
        sent += 1;
        if let Err(why) = client.fetch() {
            failures.push(format!("request {sent}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:#?}",
        failures.len()
    );
    assert!(
        sent >= 20,
        "recycled after only {sent} requests (max_requests = 20)"
    );
}

#[test]
fn a_worker_that_cannot_boot_makes_the_master_exit_2_with_the_reason() {
    let site = site();
    let exited = Launch::config(&site, &top("access_log = \"/nonexistent-dir/x.log\"", ""), "").exit();
    assert_eq!(exited.code, Some(2), "{exited:?}");
    assert!(
        exited.stderr.contains("cannot start") && exited.stderr.contains("access log"),
        "stderr should say the worker cannot start and why: {:?}",
        exited.stderr
    );
}

#[test]
fn a_crash_loop_makes_the_master_give_up_with_exit_1() {
    let site = site();
    let mut server = start(&site, QUIET, "restart_limit = 2\nrestart_window = \"60s\"", 1);
    let mut victim = server.wait_for_workers(1)[0];
    for death in 1..=3 {
        assert!(signal(victim, "KILL"), "kill -KILL {victim} (death {death})");
        if death < 3 {
            victim = wait_until(&format!("a worker after death {death}"), WAIT, || {
                Some(server.workers())
                    .filter(|pids| pids.len() == 1 && pids[0] != victim)
                    .map(|pids| pids[0])
            });
        }
    }
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "master exit status {status}");
    let stderr = server.stderr();
    assert!(
        stderr.contains("giving up: 3 unexpected worker deaths within 60s (restart_limit)"),
        "stderr: {stderr}"
    );
}

#[test]
fn sighup_with_a_changed_config_switches_workers_without_failing_a_request() {
    let site = site();
    let pid_file = site.base().join("shoal.pid");
    let keys = format!("{QUIET}\npid_file = \"shoal.pid\"");
    let server = start(&site, &keys, "", 2);
    let old = server.wait_for_workers(2);
    assert!(server.get(PATH).header("Cache-Control").is_none());
    let traffic = Traffic::start(&server, 2, 1);
    traffic.wait_for_more(50);
    rewrite_config(&site, &server, &top(&keys, ""), "  cache_control = \"max-age=7\"");
    server.send_signal("HUP");
    let line = server.wait_for_log("reloading: 2 workers with the new config (was 2)", WAIT);
    assert!(
        line.contains(&format!("shoal[{}]", server.pid())),
        "logged by the master: {line}"
    );
    wait_until("responses with Cache-Control: max-age=7", WAIT, || {
        let response = server.get(PATH);
        (response.header("Cache-Control") == Some("max-age=7")).then_some(())
    });
    server.wait_for_log("reload complete: every worker runs the new config", WAIT);
    let new = wait_until("two workers, none of the old ones", WAIT, || {
        Some(server.workers()).filter(|pids| pids.len() == 2 && pids.iter().all(|p| !old.contains(p)))
    });
    traffic.wait_for_more(50);
    let tally = traffic.finish();
    assert_no_failures(&tally);
    assert_eq!(
        read_pid_file(&pid_file),
        Some(server.pid()),
        "the pid file names the same master"
    );
    for _ in 0..10 {
        let response = server.get(PATH);
        assert_eq!(response.header("Cache-Control"), Some("max-age=7"), "{response}");
    }
    assert_eq!(sorted(server.workers()), sorted(new), "workers after the reload");
}

#[test]
fn sighup_with_a_broken_config_is_logged_and_the_old_config_keeps_serving() {
    let site = site();
    let server = start(&site, QUIET, "", 2);
    let workers = sorted(server.wait_for_workers(2));
    // Line 2 of the file holds a key that does not exist.
    let broken = format!("{QUIET}\nno_such_key = 1\n{}", top("", ""));
    rewrite_config(&site, &server, &broken, "  cache_control = \"max-age=7\"");
    server.send_signal("HUP");
    let line = server.wait_for_log("reload failed, keeping the running config", WAIT);
    assert!(
        line.contains("shoal.toml:2:") && line.contains("no_such_key"),
        "the log line should name the file, the line and the key: {line}"
    );
    for _ in 0..10 {
        let response = server.get(PATH);
        response.assert_status(200);
        assert_eq!(response.text(), BODY);
        assert_eq!(response.header("Cache-Control"), None, "{response}");
    }
    assert_eq!(
        sorted(server.workers()),
        workers,
        "worker pids after a failed reload"
    );
    assert!(
        !server.stderr().contains("reloading:"),
        "a broken config must not start a reload:\n{}",
        server.stderr()
    );
}

#[test]
fn sigusr1_reopens_the_access_log_after_it_was_renamed() {
    let site = site();
    std::fs::create_dir(site.base().join("logs")).expect("create logs dir");
    let server = start(&site, "access_log = \"logs/access.log\"", "", 1);
    let log = site.base().join("logs/access.log");
    let rotated = site.base().join("logs/access.log.1");
    let contains =
        |path: &Path, text: &str| std::fs::read_to_string(path).is_ok_and(|log| log.contains(text));
    server.get("/a.txt?before").assert_status(200);
    wait_until("the first request in access.log", WAIT, || {
        contains(&log, "\"GET /a.txt?before HTTP/1.1\" 200").then_some(())
    });
    std::fs::rename(&log, &rotated).expect("rename access.log to access.log.1");
    server.send_signal("USR1");
    wait_until("the worker to create a new access.log", WAIT, || {
        log.exists().then_some(())
    });
    server.get("/a.txt?after").assert_status(200);
    wait_until("the second request in the new access.log", WAIT, || {
        contains(&log, "\"GET /a.txt?after HTTP/1.1\" 200").then_some(())
    });
    let old = std::fs::read_to_string(&rotated).expect("read access.log.1");
    assert!(
        old.contains("/a.txt?before") && !old.contains("/a.txt?after"),
        "access.log.1:\n{old}"
    );
    let new = std::fs::read_to_string(&log).expect("read access.log");
    assert!(!new.contains("/a.txt?before"), "access.log:\n{new}");
}

#[test]
fn sigusr1_reopens_the_error_log_after_it_was_renamed() {
    let site = site();
    std::fs::create_dir(site.base().join("logs")).expect("create logs dir");
    let keys = format!("{QUIET}\nerror_log = \"logs/error.log\"");
    let server = start(&site, &keys, "", 1);
    let log = site.base().join("logs/error.log");
    let rotated = site.base().join("logs/error.log.1");
    let contains =
        |path: &Path, text: &str| std::fs::read_to_string(path).is_ok_and(|log| log.contains(text));
    wait_until("`worker 0 started` in error.log", WAIT, || {
        contains(&log, "worker 0 started").then_some(())
    });
    std::fs::rename(&log, &rotated).expect("rename error.log to error.log.1");
    server.send_signal("USR1");
    wait_until("`reopening log files` in a new error.log", WAIT, || {
        contains(&log, "reopening log files").then_some(())
    });
    server.send_signal("HUP");
    wait_until("`reloading` in the new error.log", WAIT, || {
        contains(&log, "reloading:").then_some(())
    });
    let old = std::fs::read_to_string(&rotated).expect("read error.log.1");
    assert!(!old.contains("reloading:"), "error.log.1:\n{old}");
}

#[test]
fn sigusr2_upgrades_the_binary_without_failing_a_request() {
    let site = site();
    let pid_file = site.base().join("shoal.pid");
    let admin = crate::harness::free_addr();
    let keys = format!("{QUIET}\npid_file = \"shoal.pid\"\n[admin]\nlisten = \"{admin}\"");
    let mut server = start(&site, &keys, "", 2);
    let old_master = server.pid();
    let old_workers = server.wait_for_workers(2);
    assert_eq!(
        read_pid_file(&pid_file),
        Some(old_master),
        "pid file before the upgrade"
    );
    // If the test fails half-way, the new master (not our child) must not outlive it.
    let mut leftovers = Leftovers(vec![old_master]);
    let traffic = Traffic::start(&server, 2, 1);
    traffic.wait_for_more(50);
    server.send_signal("USR2");
    let new_master = wait_until("a new pid in the pid file", Duration::from_secs(20), || {
        read_pid_file(&pid_file).filter(|pid| *pid != old_master)
    });
    leftovers.0.push(new_master);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "old master exit status {status}");
    let stderr = server.stderr();
    assert!(
        stderr.contains(&format!(
            "binary upgrade: new master (pid {new_master}) is serving; draining the old workers"
        )),
        "stderr:\n{stderr}"
    );
    traffic.wait_for_more(100);
    let tally = traffic.finish();
    assert_no_failures(&tally);
    assert_eq!(comm(new_master).as_deref(), Some("shoal: master"));
    let new_workers = wait_until("two workers under the new master", WAIT, || {
        Some(children_of(new_master)).filter(|pids| pids.len() == 2)
    });
    assert!(
        new_workers.iter().all(|pid| !old_workers.contains(pid)),
        "old {old_workers:?}, new {new_workers:?}"
    );
    for pid in old_workers {
        assert!(dead(pid), "old worker {pid} outlived the old master");
    }
    assert_eq!(server.get(PATH).assert_status(200).text(), BODY);
    // The admin endpoint's socket went to the new master with the others.
    let mut probe = TcpStream::connect(admin).expect("the admin endpoint after the upgrade");
    probe.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut probe).assert_status(200).text(), "ok\n");
    // The control socket changed hands with the pid file, and the old master left it alone.
    let status = run_shoal(&["status".as_ref(), "--pid-file".as_ref(), pid_file.as_os_str()]);
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(
        status.stdout.starts_with(&format!("master {new_master} ")),
        "{status:?}"
    );
    assert!(signal(new_master, "TERM"), "kill -TERM {new_master}");
    wait_until(&format!("the new master {new_master} to exit"), WAIT, || {
        dead(new_master).then_some(())
    });
    for pid in new_workers {
        wait_until(&format!("new worker {pid} to exit"), WAIT, || {
            dead(pid).then_some(())
        });
    }
    assert!(!pid_file.exists(), "the new master left its pid file behind");
    assert!(
        !site.base().join("shoal.sock").exists(),
        "the new master left its control socket behind"
    );
}

#[test]
fn ttin_adds_a_worker_and_ttou_removes_it_without_failing_a_request() {
    let site = site();
    let server = start(&site, QUIET, "", 2);
    server.wait_for_workers(2);
    let traffic = Traffic::start(&server, 2, 2);
    traffic.wait_for_more(50);
    server.send_signal("TTIN");
    server.wait_for_log("scaling up: slot 2 added", WAIT);
    server.wait_for_workers(3);
    let third = started_in_slot(&server, 2);
    traffic.wait_for_more(100);
    server.send_signal("TTOU");
    server.wait_for_log("scaling down: slot 2 drains and goes away", WAIT);
    server.wait_for_log("slot 2 removed; its sockets are closed", WAIT);
    let left = server.wait_for_workers(2);
    assert!(
        !left.contains(&third),
        "the slot 2 worker {third} is still a child: {left:?}"
    );
    traffic.wait_for_more(100);
    let tally = traffic.finish();
    assert_no_failures(&tally);
}

#[test]
fn ttou_serves_the_connections_queued_in_the_removed_slot() {
    let site = site();
    // A long heartbeat timeout: the stopped worker must not be aborted during the test.
    let server = start(&site, QUIET, "heartbeat_timeout = \"30s\"", 2);
    server.wait_for_workers(2);
    let last = started_in_slot(&server, 1);
    let _leftovers = Leftovers(vec![last]);
    assert!(signal(last, "STOP"), "kill -STOP {last}");
    wait_until(&format!("worker {last} to be stopped"), WAIT, || {
        (process_state(last) == Some('T')).then_some(())
    });
    let streams: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut stream = server.connect();
            stream
                .write_all(get(&format!("{PATH}?n={i}")).as_bytes())
                .expect("write a request");
            stream
        })
        .collect();
    server.send_signal("TTOU");
    server.wait_for_log("scaling down: slot 1 drains and goes away", WAIT);
    assert!(signal(last, "CONT"), "kill -CONT {last}");
    for (i, mut stream) in streams.into_iter().enumerate() {
        stream.set_read_timeout(Some(WAIT)).expect("set_read_timeout");
        let response = read_response(&mut stream);
        assert_eq!(response.status, 200, "connection {i}: {response}");
        assert_eq!(response.text(), BODY, "connection {i}");
    }
    server.wait_for_log("slot 1 removed; its sockets are closed", WAIT);
    let left = server.wait_for_workers(1);
    assert!(
        !left.contains(&last),
        "the slot 1 worker is still there: {left:?}"
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_0() {
    const BIG: usize = 16 << 20;
    let site = site();
    let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    site.file("big.bin", &big);
    let mut server = start(&site, QUIET, "", 1);
    // An idle keep-alive connection: the worker closes it only once it drains, so its
    // close shows that the drain has begun.
    let mut idle = server.connect();
    idle.write_all(get(PATH).as_bytes()).expect("write a request");
    read_response(&mut idle).assert_status(200);
    // A large response the client has not read yet (more than the socket buffers hold).
    let mut download = BufReader::new(server.connect());
    download
        .get_mut()
        .write_all(get("/big.bin").as_bytes())
        .expect("write the big request");
    let (status, headers) = read_reply_head(&mut download).expect("the big response's head");
    assert_eq!(status, 200, "{headers:?}");
    // A request whose head lacks its final CRLF.
    let mut half = server.connect();
    half.write_all(b"GET /a.txt HTTP/1.1\r\nHost: test\r\n")
        .expect("write half a head");
    server.send_signal("TERM");
    server.wait_for_log("SIGTERM received: graceful stop", WAIT);
    assert_closed(&mut idle);
    half.write_all(b"\r\n").expect("finish the head");
    let response = read_response(&mut half);
    response.assert_status(200);
    assert_eq!(response.text(), BODY);
    assert_eq!(response.header("Connection"), Some("close"), "{response}");
    let mut body = vec![0; BIG];
    download
        .read_exact(&mut body)
        .expect("read the rest of the big body");
    assert!(body == big, "the big body arrived with wrong bytes");
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "master exit status {status}");
}

#[test]
fn workers_exit_by_themselves_when_the_master_is_killed() {
    let site = site();
    let mut server = start(&site, QUIET, "", 2);
    let workers = server.wait_for_workers(2);
    let _leftovers = Leftovers(workers.clone());
    assert!(signal(server.pid(), "KILL"), "kill -KILL {}", server.pid());
    server.wait_exit(WAIT);
    for pid in workers {
        wait_until(&format!("orphaned worker {pid} to exit"), WAIT, || {
            dead(pid).then_some(())
        });
    }
}

#[test]
fn shoal_reload_and_stop_reach_the_master_through_the_pid_file() {
    let site = site();
    let pid_file = site.base().join("shoal.pid");
    let server = start(&site, &format!("{QUIET}\npid_file = \"shoal.pid\""), "", 1);
    let reload = run_shoal(&["reload".as_ref(), "--pid-file".as_ref(), pid_file.as_os_str()]);
    assert_eq!(reload.code, Some(0), "{reload:?}");
    assert_eq!(
        reload.stdout.trim(),
        format!(
            "reload: generation 1 serves with 1 worker (master {})",
            server.pid()
        ),
        "{reload:?}"
    );
    let line = server.wait_for_log("reloading: 1 workers with the new config", WAIT);
    assert!(line.contains(&format!("shoal[{}]", server.pid())), "{line}");
    let missing = site.base().join("missing.pid");
    let stop = run_shoal(&["stop".as_ref(), "--pid-file".as_ref(), missing.as_os_str()]);
    assert_eq!(stop.code, Some(1), "{stop:?}");
    assert!(stop.stderr.contains("missing.pid"), "{stop:?}");
    assert_eq!(server.get(PATH).assert_status(200).text(), BODY);
}
