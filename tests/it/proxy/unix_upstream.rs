//! Upstream servers on unix sockets (`servers = ["unix:/run/app/app.sock"]`): requests reach
//! the app over the socket, connections are pooled, a missing socket is a 502, and reloads
//! keep them working.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::support::exchange;
use crate::harness::{request, wait_until, Launch, Server, Site};

/// A keep-alive HTTP app on a unix socket: each answer's body is the request line and its
/// X-Real-IP. Counts the connections it accepted.
struct UnixApp {
    path: PathBuf,
    accepted: Arc<AtomicUsize>,
}

impl UnixApp {
    fn start(dir: &Path) -> UnixApp {
        let path = dir.join("app.sock");
        let listener = UnixListener::bind(&path).expect("bind the app's socket");
        // The workers run as another user when the tests run as root.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve(stream));
            }
        });
        UnixApp { path, accepted }
    }
}

fn serve(stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut real_ip = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("x-real-ip:") {
                real_ip = value.trim().to_string();
            }
        }
        let body = format!("{} from {real_ip}", request_line.trim_end());
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A shoal proxying `/app/` to `socket`.
fn start(site: &Site, socket: &Path) -> Server {
    let text = format!(
        "access_log = \"off\"\n[upstream.app]\nservers = [\"unix:{}\"]\n\n[[server]]\nlisten = [\"{{listen}}\"]\n  \
         [[server.route]]\n  prefix = \"/harness-ready-probe\"\n  root = \"site\"\n  \
         [[server.route]]\n  prefix = \"/app/\"\n  upstream = \"app\"\n",
        socket.display()
    );
    Launch::config_file(site, &text).start()
}

/// A directory anyone may enter (the workers' user must reach the socket in it).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn requests_reach_an_app_on_a_unix_socket_over_pooled_connections() {
    let dir = open_dir();
    let app = UnixApp::start(dir.path());
    let site = Site::new();
    let server = start(&site, &app.path);
    for i in 0..3 {
        let response = exchange(&server, request("GET", &format!("/app/{i}"), &[]).as_bytes());
        response.assert_status(200);
        assert_eq!(response.text(), format!("GET /app/{i} HTTP/1.1 from 127.0.0.1"));
    }
    assert_eq!(app.accepted.load(Ordering::SeqCst), 1, "one pooled connection");

    let workers = server.wait_for_workers(1);
    server.send_signal("HUP");
    wait_until("new workers", Duration::from_secs(10), || {
        let now = server.workers();
        (now.len() == 1 && now != workers).then_some(())
    });
    let after = exchange(&server, request("GET", "/app/again", &[]).as_bytes());
    after.assert_status(200);
    assert_eq!(after.text(), "GET /app/again HTTP/1.1 from 127.0.0.1");
}

#[test]
fn a_missing_socket_is_502_and_a_relative_path_a_config_error() {
    let dir = open_dir();
    let site = Site::new();
    let server = start(&site, &dir.path().join("nobody-listens.sock"));
    exchange(&server, request("GET", "/app/x", &[]).as_bytes()).assert_status(502);

    let path = site.base().join("relative.toml");
    std::fs::write(
        &path,
        "[upstream.app]\nservers = [\"unix:run/app.sock\"]\n[[server]]\nlisten = [\"127.0.0.1:8080\"]\n  \
         [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n",
    )
    .unwrap();
    let checked = crate::harness::check_config(&path);
    assert!(
        checked.stderr.contains("relative.toml:2:12: ")
            && checked.stderr.contains("a unix socket's path is absolute"),
        "{}",
        checked.stderr
    );
}
