//! Connection limits: a worker at `max_connections` stops accepting (new connections wait
//! in the kernel's queue) and resumes as soon as one of its connections closes.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{get, read_response, wait_until, Server, Site, IO_TIMEOUT};
use crate::procfs::{open_fds, Sampler};

#[test]
fn a_full_worker_resumes_accepting_when_a_connection_closes() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let server = Server::with_config(&site, "access_log = \"off\"\n[limits]\nmax_connections = 2", "");
    let worker = server.wait_for_workers(1)[0];
    let mut open: Vec<_> = (0..2)
        .map(|i| {
            let mut stream = server.connect();
            stream
                .write_all(get(&format!("/a.txt?keep={i}")).as_bytes())
                .expect("write a request");
            let response = read_response(&mut stream);
            assert_eq!(response.status, 200, "keep-alive connection {i}: {response}");
            assert_eq!(response.header("Connection"), None, "{response}");
            stream
        })
        .collect();
    let mut third = server.connect();
    third
        .write_all(get("/a.txt?third").as_bytes())
        .expect("write the third request");
    // The one timeout-based check: nothing may arrive while the worker is full.
    third
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("set_read_timeout");
    let mut byte = [0u8; 1];
    match third.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the third connection got {other:?} while two were open (max_connections = 2)"),
    }
    drop(open.pop());
    third
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set_read_timeout");
    let response = read_response(&mut third);
    assert_eq!(response.status, 200, "third connection: {response}");
    assert_eq!(response.text(), "alpha");
    assert_eq!(
        server.workers(),
        vec![worker],
        "the worker must not have been replaced"
    );
}

#[test]
fn a_burst_never_opens_more_than_max_connections() {
    const MAX: usize = 10;
    let site = Site::new();
    site.file("a.txt", "alpha");
    let top = format!("access_log = \"off\"\n[limits]\nmax_connections = {MAX}\nheader_timeout = \"5m\"");
    let server = Server::with_config(&site, &top, "");
    let worker = server.wait_for_workers(1)[0];
    let base_fds = open_fds(worker);
    let sampler = Sampler::start(worker);
    // Idle connections, four times the limit: the rest wait in the kernel's queue.
    let burst: Vec<TcpStream> = (0..4 * MAX).map(|_| server.connect()).collect();
    // (Less one: the harness's readiness probe may still have been open for the baseline.)
    wait_until("the worker to fill up", IO_TIMEOUT, || {
        (open_fds(worker) + 1 >= base_fds + MAX).then_some(())
    });
    // A request queued behind the burst is served once the burst goes away.
    let mut queued = server.connect();
    queued.write_all(get("/a.txt").as_bytes()).expect("write");
    let peaks = sampler.stop();
    assert!(
        peaks.open_fds <= base_fds + MAX,
        "the worker held {} descriptors over its {base_fds} at rest: more than max_connections = {MAX}",
        peaks.open_fds - base_fds
    );
    drop(burst);
    let response = read_response(&mut queued);
    assert_eq!((response.status, response.text().as_str()), (200, "alpha"));
    assert_eq!(
        server.workers(),
        vec![worker],
        "the worker must not have been replaced"
    );
}
