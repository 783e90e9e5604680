//! Servers listening on unix sockets (`listen = ["unix:/run/shoal.sock mode=0660"]`): one
//! socket every worker shares, its mode set, a stale file replaced, a live one refused, and
//! the socket kept through a worker's respawn, a reload and a binary upgrade.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{signal, wait_until, Launch, Site};
use crate::supervision::{dead, read_pid_file, Leftovers};

/// `GET path` over the unix socket at `socket`; the whole answer.
fn get(socket: &Path, path: &str) -> String {
    send(
        socket,
        format!("GET {path} HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn send(socket: &Path, bytes: &[u8]) -> String {
    let mut stream =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// A shoal on `{listen}` and on the unix socket `socket` (with `options` after its path),
/// two workers, serving `site` with its pid file at `site/shoal.pid`.
fn launch(site: &Site, socket: &Path, options: &str) -> Launch {
    site.file("a.txt", "alpha");
    let text = format!(
        "pid_file = \"{}\"\naccess_log = \"off\"\n[[server]]\nlisten = [\"{{listen}}\", \"unix:{} {options}\"]\n  \
         [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n",
        site.base().join("shoal.pid").display(),
        socket.display()
    );
    Launch::config_file(site, &text).workers(2)
}

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("shoal.sock")
}

#[test]
fn a_unix_socket_serves_every_worker_with_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let site = Site::new();
    let server = launch(&site, &socket, "mode=0666").start();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    for _ in 0..20 {
        let answer = get(&socket, "/a.txt");
        assert!(
            answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("alpha"),
            "{answer}"
        );
    }
    // Keep-alive over the socket: two requests on one connection.
    let two = "GET /a.txt HTTP/1.1\r\nHost: local\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n";
    assert_eq!(send(&socket, two.as_bytes()).matches("alpha").count(), 2);
    assert_eq!(server.get("/a.txt").assert_status(200).text(), "alpha");
}

#[test]
fn the_unix_socket_outlives_a_worker_a_reload_and_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let site = Site::new();
    let mut server = launch(&site, &socket, "").start();
    let mut leftovers = Leftovers(vec![server.pid()]);
    let workers = server.wait_for_workers(2);
    assert!(signal(workers[0], "KILL"));
    wait_until("a respawned worker", Duration::from_secs(10), || {
        let now = server.workers();
        (now.len() == 2 && !now.contains(&workers[0])).then_some(())
    });
    for _ in 0..10 {
        assert!(get(&socket, "/a.txt").ends_with("alpha"));
    }
    // The reload also changes the socket's mode, on the socket kept open.
    let config = site.base().join("shoal.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(".sock \"]", ".sock mode=0600\"]")).unwrap();
    let before = server.workers();
    server.send_signal("HUP");
    wait_until("reloaded workers", Duration::from_secs(10), || {
        let now = server.workers();
        (now.len() == 2 && now.iter().all(|w| !before.contains(w))).then_some(())
    });
    assert!(get(&socket, "/a.txt").ends_with("alpha"));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let pid_file = site.base().join("shoal.pid");
    let old_master = server.pid();
    server.send_signal("USR2");
    let new_master = wait_until("a new pid in the pid file", Duration::from_secs(20), || {
        read_pid_file(&pid_file).filter(|pid| *pid != old_master)
    });
    leftovers.0.push(new_master);
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    for _ in 0..10 {
        assert!(
            get(&socket, "/a.txt").ends_with("alpha"),
            "served by the new master"
        );
    }
    assert!(signal(new_master, "TERM"));
    wait_until("the new master to exit", Duration::from_secs(10), || {
        dead(new_master).then_some(())
    });
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists(), "a stale socket file");
    let site = Site::new();
    let server = launch(&site, &socket, "").start();
    assert!(get(&socket, "/a.txt").ends_with("alpha"));
    drop(server);

    let live = tempfile::tempdir().unwrap();
    let taken = socket_in(&live);
    let _other = UnixListener::bind(&taken).unwrap();
    let exited = launch(&Site::new(), &taken, "").exit();
    assert_eq!(exited.code, Some(2), "an environment error: {}", exited.stderr);
    assert!(exited.stderr.contains("is already in use"), "{}", exited.stderr);
}

#[test]
fn listen_options_are_checked() {
    let site = Site::new();
    let path = site.base().join("shoal.toml");
    for (listen, error) in [
        ("unix:run/shoal.sock", "a unix socket's path is absolute"),
        ("unix:/run/shoal.sock mode=999", "mode `999` is not an octal mode"),
        (
            "127.0.0.1:8080 mode=0660",
            "`mode=0660` is not an option of an address",
        ),
        (
            "unix:/run/shoal.sock owner=no-such-user-here",
            "owner: no user `no-such-user-here`",
        ),
    ] {
        let text = format!(
            "[[server]]\nlisten = [\"{listen}\"]\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n"
        );
        std::fs::write(&path, text).unwrap();
        let checked = crate::harness::check_config(&path);
        assert!(
            checked.stderr.contains("shoal.toml:2:11: listen: ") && checked.stderr.contains(error),
            "{listen}: {}",
            checked.stderr
        );
    }
}

#[test]
fn a_proxy_in_front_of_a_unix_socket_names_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let upstream = crate::upstream::Upstream::start(crate::upstream::Behaviour::Echo);
    let site = Site::new();
    let text = format!(
        "access_log = \"off\"\n[upstream.app]\nservers = [\"{}\"]\n[[server]]\n\
         listen = [\"{{listen}}\", \"unix:{} proxy_protocol\"]\n  \
         [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n",
        upstream.addr,
        socket.display()
    );
    let _server = Launch::config_file(&site, &text).start();
    let before = upstream.requests().len();
    let answer = send(
        &socket,
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.header_values("X-Real-IP"), ["192.0.2.1"], "{}", seen.head);
    assert_eq!(
        send(&socket, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
        "",
        "no header: closed"
    );
    assert_eq!(upstream.requests().len(), before + 1);
}
