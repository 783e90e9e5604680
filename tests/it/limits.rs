//! Connection limits: a worker at `max_connections` stops accepting (new connections wait
//! in the kernel's queue) and resumes as soon as one of its connections closes.

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use crate::harness::{get, read_response, Server, Site, IO_TIMEOUT};

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
