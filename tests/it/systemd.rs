//! systemd integration: sd_notify messages on a fake NOTIFY_SOCKET (READY once the workers
//! serve, RELOADING and READY around a reload, STOPPING, WATCHDOG pings).

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::{Launch, Site, IO_TIMEOUT};

/// A fake service manager's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = UnixDatagram::bind(dir.path().join("notify")).expect("bind notify socket");
        socket
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        NotifySocket { socket, dir }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("notify")
    }

    /// The next message that contains `wanted`, skipping others (e.g. watchdog pings).
    fn expect(&self, wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let mut buf = [0u8; 512];
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if message.contains(wanted) {
                        return message;
                    }
                    seen.push(message);
                }
                Err(e) => panic!("no sd_notify message with {wanted:?} ({e}); saw {seen:?}"),
            }
        }
        panic!("no sd_notify message with {wanted:?} within 10 s; saw {seen:?}")
    }
}

#[test]
fn ready_reloading_and_stopping_reach_the_service_manager() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let notify = NotifySocket::new();
    let mut server = Launch::config(&site, "access_log = \"off\"", "")
        .workers(2)
        .env("NOTIFY_SOCKET", notify.path())
        .start();
    let ready = notify.expect("READY=1");
    assert!(ready.contains("STATUS=serving with 2 workers"), "{ready}");
    server.send_signal("HUP");
    let reloading = notify.expect("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notify.expect("READY=1");
    assert_eq!(server.get("/a.txt").text(), "alpha");
    server.send_signal("TERM");
    notify.expect("STOPPING=1");
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn the_watchdog_is_petted_when_systemd_asks() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let notify = NotifySocket::new();
    let _server = Launch::quick(&site)
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "400000")
        .start();
    notify.expect("WATCHDOG=1");
    notify.expect("WATCHDOG=1");
}
