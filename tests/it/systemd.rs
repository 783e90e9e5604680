//! systemd integration: sd_notify messages on a fake NOTIFY_SOCKET (READY once the workers
//! serve, RELOADING and READY around a reload, STOPPING, WATCHDOG pings), and socket
//! activation with a listening socket the test binds and passes as fd 3.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use std::time::{Duration, Instant};

use crate::harness::{free_addr, signal, wait_until, Launch, Site, IO_TIMEOUT};
use crate::supervision::{dead, read_pid_file, Leftovers};

/// A fake service manager's notification socket. Like systemd it asks the kernel for each
/// sender's credentials (SO_PASSCRED), so a test can tell which process said what.
struct NotifySocket {
    socket: UnixDatagram,
    dir: tempfile::TempDir,
}

/// One sd_notify datagram and the pid that sent it.
struct Message {
    text: String,
    sender: u32,
}

fn texts(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = UnixDatagram::bind(dir.path().join("notify")).expect("bind notify socket");
        socket
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        setsockopt(&socket, sockopt::PassCred, &true).expect("setsockopt(SO_PASSCRED)");
        NotifySocket { socket, dir }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("notify")
    }

    fn receive(&self) -> Result<Message, nix::Error> {
        let mut buf = [0u8; 512];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut control = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let message = recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::empty(),
        )?;
        let sender = message
            .cmsgs()?
            .find_map(|cmsg| match cmsg {
                ControlMessageOwned::ScmCredentials(credentials) => Some(credentials.pid() as u32),
                _ => None,
            })
            .expect("SCM_CREDENTIALS with every message");
        let n = message.bytes;
        Ok(Message {
            text: String::from_utf8_lossy(&buf[..n]).into_owned(),
            sender,
        })
    }

    /// Every message up to and including the first one `wanted` accepts.
    fn messages_until(&self, what: &str, wanted: impl Fn(&Message) -> bool) -> Vec<Message> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.receive() {
                Ok(message) => {
                    let done = wanted(&message);
                    seen.push(message);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("no sd_notify message {what} ({e}); saw {:?}", texts(&seen)),
            }
        }
        panic!("no sd_notify message {what} within 10 s; saw {:?}", texts(&seen))
    }

    /// The next message that contains `wanted`, skipping others (e.g. watchdog pings).
    fn expect_message(&self, wanted: &str) -> Message {
        let what = format!("with {wanted:?}");
        let mut seen = self.messages_until(&what, |m| m.text.contains(wanted));
        seen.pop().expect("the wanted message")
    }

    /// The text of the next message that contains `wanted`.
    fn expect(&self, wanted: &str) -> String {
        self.expect_message(wanted).text
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

#[test]
fn after_a_binary_upgrade_systemd_hears_the_new_main_pid() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let notify = NotifySocket::new();
    let pid_file = site.base().join("shoal.pid");
    let mut server = Launch::quick(&site)
        .arg("--pid-file")
        .arg(&pid_file)
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "400000")
        .start();
    let old_master = server.pid();
    let mut leftovers = Leftovers(vec![old_master]);
    assert_eq!(notify.expect_message("READY=1").sender, old_master);
    server.send_signal("USR2");
    // Under NotifyAccess=main only the current main process is heard: the old master says it.
    let handover = notify.expect_message("MAINPID=");
    let new_master = read_pid_file(&pid_file).expect("the new master's pid file");
    leftovers.0.push(new_master);
    assert_ne!(new_master, old_master);
    assert_eq!(handover.text, format!("MAINPID={new_master}"));
    assert_eq!(
        handover.sender, old_master,
        "MAINPID must come from the old main process"
    );
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    // The new master got the notify socket and the watchdog period from the old one.
    let after_handover = notify.messages_until("WATCHDOG=1 from the new master", |m| {
        m.text.contains("WATCHDOG=1") && m.sender == new_master
    });
    // The old master stops without a word: its STOPPING=1 would stop the service.
    let old_words: Vec<&str> = after_handover
        .iter()
        .filter(|m| m.sender == old_master)
        .map(|m| m.text.as_str())
        .collect();
    assert!(
        old_words.is_empty(),
        "the old master spoke after MAINPID: {old_words:?}"
    );
    assert_eq!(server.get("/a.txt").assert_status(200).text(), "alpha");
    assert!(signal(new_master, "TERM"), "kill -TERM {new_master}");
    let stopping = notify.expect_message("STOPPING=1");
    assert_eq!(stopping.sender, new_master);
    wait_until("the new master to exit", Duration::from_secs(10), || {
        dead(new_master).then_some(())
    });
}

/// Sockets in LISTEN state on `addr`'s port (IPv4), from /proc/net/tcp.
fn listening_sockets(addr: SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = format!(":{:04X}", addr.port());
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == "0A"
        })
        .count()
}

/// A listening socket as systemd would pass it. std binds without SO_REUSEPORT, so shoal
/// could not bind the same address itself: serving at all proves it used this one.
fn activation_socket() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind the activation socket")
}

#[test]
fn a_socket_from_systemd_is_served_and_nothing_is_bound() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let socket = activation_socket();
    let addr = socket.local_addr().expect("local_addr");
    let server = Launch::quick(&site)
        .workers(2)
        .socket_activated(socket, "http")
        .start();
    for _ in 0..4 {
        assert_eq!(server.get("/a.txt").assert_status(200).text(), "alpha");
    }
    let line = server.wait_for_log("listening on", IO_TIMEOUT);
    assert!(
        line.contains(&format!("http://{addr}/ with 2 workers (socket activation")),
        "{line}"
    );
    assert_eq!(listening_sockets(addr), 1, "shoal bound a socket of its own");
}

#[test]
fn a_passed_socket_that_no_server_listens_on_is_refused() {
    let site = Site::new();
    let socket = activation_socket();
    let passed = socket.local_addr().expect("local_addr");
    let exited = Launch::quick(&site)
        .socket_activated(socket, "web")
        .listen_on(free_addr())
        .exit();
    assert_eq!(exited.code, Some(2), "{exited:?}");
    let want = format!("socket activation: fd 3 (web) listens on {passed}, which no [[server]] listen names");
    assert!(exited.stderr.contains(&want), "{exited:?}");
}

#[test]
fn a_binary_upgrade_keeps_serving_the_activated_socket() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let socket = activation_socket();
    let addr = socket.local_addr().expect("local_addr");
    let pid_file = site.base().join("shoal.pid");
    let mut server = Launch::quick(&site)
        .workers(2)
        .arg("--pid-file")
        .arg(&pid_file)
        .socket_activated(socket, "http")
        .start();
    let old_master = server.pid();
    let mut leftovers = Leftovers(vec![old_master]);
    server.send_signal("USR2");
    let new_master = wait_until("a new pid in the pid file", Duration::from_secs(20), || {
        read_pid_file(&pid_file).filter(|pid| *pid != old_master)
    });
    leftovers.0.push(new_master);
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    assert_eq!(server.get("/a.txt").assert_status(200).text(), "alpha");
    assert_eq!(
        listening_sockets(addr),
        1,
        "the new master bound a socket of its own"
    );
    // The new master was exec'd with the environment we left: no systemd variables in it.
    let environ = std::fs::read(format!("/proc/{new_master}/environ")).expect("read environ");
    let names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter_map(|entry| Some(String::from_utf8_lossy(entry.split(|&b| b == b'=').next()?).into_owned()))
        .collect();
    for systemd in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        assert!(!names.iter().any(|n| n == systemd), "{systemd} in {names:?}");
    }
    assert!(signal(new_master, "TERM"), "kill -TERM {new_master}");
    wait_until("the new master to exit", Duration::from_secs(10), || {
        dead(new_master).then_some(())
    });
}
