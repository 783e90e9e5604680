//! Files an app offloads: its answer carries `X-Accel-Redirect: /uri` (or `X-Sendfile:
//! /path` where the route allows it) and shoal sends the file from an internal route, with
//! ranges, conditionals and the app's type, name and cookies; clients never reach an internal
//! route themselves, and no offload leaves its internal root.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{read_response, request, Launch, Response, Server, Site};

/// What every offloaded file holds.
const REPORT: &[u8] = b"%PDF-1.4 the quarterly report, 42 bytes..";

/// An app that answers every request with the offload header its `X-Offload-Header` request
/// header names (`X-Accel-Redirect` or `X-Sendfile`), valued as its `X-Offload` header says,
/// and a body that must never reach the client.
struct Offloader {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Offloader {
    fn start() -> Offloader {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => handlers.push(std::thread::spawn(move || answer_all(stream))),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
            drop(handlers);
        });
        Offloader {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Offloader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers the requests of one connection until it closes (or stays quiet for 5 s).
fn answer_all(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let header = |name: &str| {
            text.lines()
                .find_map(|line| line.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let body = "the app's own body, never sent";
        let answer = format!(
            "HTTP/1.1 200 OK\r\n{}: {}\r\nContent-Type: application/pdf\r\n\
             Content-Disposition: attachment; filename=\"report.pdf\"\r\nSet-Cookie: seen=1\r\n\
             X-App: yes\r\nContent-Length: {}\r\n\r\n{body}",
            header("x-offload-header"),
            header("x-offload"),
            body.len()
        );
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A shoal where `/dl/` proxies to the app (X-Accel-Redirect only), `/sf/` too with
/// `x_sendfile = true`, and `/protected/` is the internal route over `<base>/private`.
fn start() -> (Site, Server, Offloader) {
    let app = Offloader::start();
    let site = Site::new();
    site.outside("private/report.pdf", REPORT);
    site.outside("private/docs/notes.txt", "notes");
    site.outside("secret.txt", "not for clients");
    site.file("index.html", "public");
    let text = format!(
        "access_log = \"off\"\n[upstream.app]\nservers = [\"{}\"]\n\
         [[server]]\nlisten = [\"{{listen}}\"]\n\
           [[server.route]]\n  prefix = \"/protected/\"\n  root = \"private\"\n  strip_prefix = true\n  internal = true\n\
           [[server.route]]\n  prefix = \"/dl/\"\n  upstream = \"app\"\n\
           [[server.route]]\n  prefix = \"/sf/\"\n  upstream = \"app\"\n  x_sendfile = true\n\
           [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n",
        app.addr
    );
    let server = Launch::config_file(&site, &text).start();
    (site, server, app)
}

/// `GET path` through the app, which offloads with `header: value`, plus `extra` headers.
fn offload(server: &Server, path: &str, header: &str, value: &str, extra: &[&str]) -> Response {
    offload_with(server, "GET", path, header, value, extra)
}

fn offload_with(
    server: &Server,
    method: &str,
    path: &str,
    header: &str,
    value: &str,
    extra: &[&str],
) -> Response {
    let mut headers = vec![
        format!("X-Offload-Header: {header}"),
        format!("X-Offload: {value}"),
    ];
    headers.extend(extra.iter().map(|h| h.to_string()));
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut stream = server.connect();
    stream
        .write_all(request(method, path, &headers).as_bytes())
        .expect("send");
    if method == "HEAD" {
        return crate::harness::read_head_response(&mut stream);
    }
    read_response(&mut stream)
}

const ACCEL: &str = "X-Accel-Redirect";

#[test]
fn an_offloaded_file_is_served_with_the_apps_type_name_and_cookies() {
    let (_site, server, _app) = start();
    let response = offload(&server, "/dl/report", ACCEL, "/protected/report.pdf", &[]);
    response.assert_status(200);
    assert_eq!(response.body, REPORT, "the file, not the app's body");
    assert_eq!(response.header("Content-Type"), Some("application/pdf"));
    assert_eq!(
        response.header("Content-Disposition"),
        Some("attachment; filename=\"report.pdf\"")
    );
    assert_eq!(response.header("Set-Cookie"), Some("seen=1"));
    assert_eq!(
        response.header("Content-Length"),
        Some(REPORT.len().to_string().as_str())
    );
    assert!(response.header("ETag").is_some() && response.header("Last-Modified").is_some());
    assert_eq!(
        response.header(ACCEL),
        None,
        "the internal path never reaches the client"
    );
    assert_eq!(
        response.header("X-App"),
        None,
        "only the app's kept headers go along"
    );
    let head = offload_with(&server, "HEAD", "/dl/report", ACCEL, "/protected/report.pdf", &[]);
    head.assert_status(200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("Content-Length"),
        Some(REPORT.len().to_string().as_str())
    );
}

#[test]
fn ranges_and_conditionals_apply_to_the_offloaded_file() {
    let (_site, server, _app) = start();
    let target = "/protected/report.pdf";
    let partial = offload(&server, "/dl/r", ACCEL, target, &["Range: bytes=0-3"]);
    partial.assert_status(206);
    assert_eq!(partial.body, &REPORT[..4]);
    assert_eq!(
        partial.header("Content-Range"),
        Some(format!("bytes 0-3/{}", REPORT.len()).as_str())
    );
    assert_eq!(partial.header("Content-Type"), Some("application/pdf"));
    let etag = offload(&server, "/dl/r", ACCEL, target, &[])
        .expect_header("ETag")
        .to_string();
    let cached = offload(
        &server,
        "/dl/r",
        ACCEL,
        target,
        &[&format!("If-None-Match: {etag}")],
    );
    cached.assert_status(304);
    assert!(cached.body.is_empty());
    let unsatisfiable = offload(&server, "/dl/r", ACCEL, target, &["Range: bytes=9999-"]);
    unsatisfiable.assert_status(416);
}

#[test]
fn a_missing_or_escaping_offload_is_a_404_and_reveals_nothing() {
    let (_site, server, _app) = start();
    for target in [
        "/protected/missing.pdf",
        "/protected/../secret.txt",
        "/protected/%2e%2e/secret.txt",
        "/protected/..%2fsecret.txt",
        "/index.html",
        "/elsewhere/report.pdf",
    ] {
        let response = offload(&server, "/dl/x", ACCEL, target, &[]);
        assert_eq!(response.status, 404, "{target}: {response:?}");
        assert!(!response.text().contains("not for clients"), "{target}");
        assert_eq!(response.header("Content-Disposition"), None, "{target}");
    }
}

#[test]
fn clients_cannot_reach_an_internal_route() {
    let (_site, server, _app) = start();
    for path in [
        "/protected/report.pdf",
        "/protected/",
        "/protected/docs/notes.txt",
    ] {
        let response = server.get(path);
        assert_eq!(response.status, 404, "{path}: {response:?}");
    }
    server.get("/index.html").assert_status(200);
}

#[test]
fn x_sendfile_is_served_only_where_the_route_allows_it_and_only_beneath_an_internal_root() {
    let (site, server, _app) = start();
    let file = site.base().join("private/docs/notes.txt");
    let file = std::fs::canonicalize(file).expect("canonical path");
    let file = file.to_str().expect("utf-8 path");
    let allowed = offload(&server, "/sf/notes", "X-Sendfile", file, &[]);
    allowed.assert_status(200);
    assert_eq!(allowed.text(), "notes");
    assert_eq!(
        allowed.header("Content-Type"),
        Some("application/pdf"),
        "the app's type"
    );
    // Without x_sendfile on the route, the app's answer goes through as it is.
    let relayed = offload(&server, "/dl/notes", "X-Sendfile", file, &[]);
    relayed.assert_status(200);
    assert_eq!(relayed.text(), "the app's own body, never sent");
    let base = std::fs::canonicalize(site.base()).expect("canonical base");
    let outside = format!("{}/secret.txt", base.display());
    let escaping = format!("{}/private/../secret.txt", base.display());
    for path in [
        outside.as_str(),
        escaping.as_str(),
        "/etc/passwd",
        "relative/notes.txt",
    ] {
        let refused = offload(&server, "/sf/x", "X-Sendfile", path, &[]);
        assert_eq!(refused.status, 404, "{path}: {refused:?}");
        assert!(!refused.text().contains("not for clients"));
    }
}
