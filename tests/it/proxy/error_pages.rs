//! Error pages: a server's and a route's `error_pages` answer shoal's own errors (a 404 no
//! route made, a missing file, an unreadable request, a failed upstream) with their file and
//! the original status; `intercept_errors` does the same for an upstream's error answers.

use std::time::Duration;

use super::support::{addrs, config, exchange};
use crate::harness::{request, Launch, Server, Site};
use crate::upstream::{Behaviour, Refusing, Reply, Upstream};

/// A shoal whose server has pages for 400 and 404, with routes: `/app/` to `upstream`
/// (pages for 502 and 500 of its own, errors intercepted), `/raw/` to `upstream` as is,
/// `/dead/` to nothing, and `/` from files.
fn start(site: &Site, upstream: &Upstream, dead: &Refusing) -> Server {
    site.file("errors/404.html", "<h1>not here</h1>")
        .file("errors/400.txt", "bad, bad request")
        .file("errors/500.html", "<h1>app trouble</h1>")
        .file("errors/502.html", "<h1>app down</h1>")
        .file("public/a.txt", "alpha");
    let routes =
        "  [[server.route]]\n  prefix = \"/app/\"\n  upstream = \"app\"\n  intercept_errors = true\n  \
        error_pages = { 500 = \"site/errors/500.html\", 502 = \"site/errors/502.html\" }\n  \
        [[server.route]]\n  prefix = \"/raw/\"\n  upstream = \"app\"\n  \
        [[server.route]]\n  prefix = \"/dead/\"\n  upstream = \"dead\"\n  \
        error_pages = { 502 = \"site/errors/502.html\" }\n  \
        response_headers = { set = { \"X-Route\" = \"dead\" } }\n  \
        [[server.route]]\n  prefix = \"/\"\n  root = \"site/public\"\n";
    let upstreams = format!("[upstream.dead]\nservers = [\"{}\"]\n", dead.addr);
    let text = config("access_log = \"off\"", &addrs(&[upstream]), &upstreams, routes).replace(
        "[[server]]\nlisten = [\"{listen}\"]\n",
        "[[server]]\nlisten = [\"{listen}\"]\n\
         error_pages = { 404 = \"site/errors/404.html\", 400 = \"site/errors/400.txt\" }\n",
    );
    Launch::config_file(site, &text).start()
}

#[test]
fn shoal_s_own_errors_are_answered_with_the_pages() {
    let site = Site::new();
    let upstream = Upstream::start(Behaviour::Echo);
    let dead = Refusing::new();
    let server = start(&site, &upstream, &dead);

    let missing = exchange(&server, request("GET", "/nothing.txt", &[]).as_bytes());
    missing.assert_status(404);
    assert_eq!(missing.text(), "<h1>not here</h1>", "{missing}");
    assert_eq!(missing.header("Content-Type"), Some("text/html; charset=utf-8"));
    let head = server.send(b"HEAD /nothing.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 404 ") && head.contains("Content-Length: 17\r\n"),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"), "a HEAD answer has no body: {head}");

    let failed = exchange(&server, request("GET", "/dead/x", &[]).as_bytes());
    failed.assert_status(502);
    assert_eq!(failed.text(), "<h1>app down</h1>", "{failed}");
    assert_eq!(
        failed.header("X-Route"),
        Some("dead"),
        "a failed upstream's answer gets the route's header rules: {failed}"
    );

    let unreadable = server.send(b"GET /a HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n");
    let unreadable = String::from_utf8_lossy(&unreadable);
    assert!(unreadable.starts_with("HTTP/1.1 400 "), "{unreadable}");
    assert!(unreadable.ends_with("bad, bad request"), "{unreadable}");
    assert!(unreadable.contains("Content-Type: text/plain"), "{unreadable}");

    let fine = exchange(&server, request("GET", "/a.txt", &[]).as_bytes());
    fine.assert_status(200);
    assert_eq!(fine.text(), "alpha");
}

#[test]
fn intercepted_upstream_errors_get_the_page_and_others_pass() {
    let site = Site::new();
    let upstream = Upstream::start(Behaviour::Reply(
        Reply::new(500)
            .header("X-Trace", "secret")
            .body("Traceback (most recent call last): ..."),
    ));
    let dead = Refusing::new();
    let server = start(&site, &upstream, &dead);
    for _ in 0..3 {
        let caught = exchange(&server, request("GET", "/app/x", &[]).as_bytes());
        caught.assert_status(500);
        assert_eq!(caught.text(), "<h1>app trouble</h1>", "{caught}");
        assert_eq!(caught.header("X-Trace"), None, "{caught}");
    }
    let relayed = exchange(&server, request("GET", "/raw/x", &[]).as_bytes());
    relayed.assert_status(500);
    assert!(relayed.text().starts_with("Traceback"), "{relayed}");
    assert_eq!(upstream.requests().len(), 4, "every request reached the app");
}

#[test]
fn pages_are_read_again_on_reload() {
    let site = Site::new();
    let upstream = Upstream::start(Behaviour::Echo);
    let dead = Refusing::new();
    let server = start(&site, &upstream, &dead);
    let workers = server.wait_for_workers(1);
    site.file("errors/404.html", "<h1>gone fishing</h1>");
    server.send_signal("HUP");
    crate::harness::wait_until("the new page", Duration::from_secs(10), || {
        let page = exchange(&server, request("GET", "/nothing", &[]).as_bytes());
        (page.text() == "<h1>gone fishing</h1>").then_some(())
    });
    assert_ne!(server.workers(), workers, "new workers serve the new page");
}

#[test]
fn a_timed_out_upstream_gets_the_504_page_and_a_full_queue_the_503_one() {
    let site = Site::new();
    site.file("errors/50x.html", "<h1>try again soon</h1>");
    let stalled = Upstream::start(Behaviour::Stall);
    let pages = "error_pages = { 503 = \"site/errors/50x.html\", 504 = \"site/errors/50x.html\" }";
    let routes = format!("  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n  {pages}\n");
    let upstream = "read_timeout = \"3s\"\nqueue_timeout = \"1s\"";
    let servers = [format!("{} max_conns=1", stalled.addr)];
    let text = config("access_log = \"off\"", &servers, upstream, &routes);
    let server = Launch::config_file(&site, &text).start();
    // The first request holds the only permit until its read timeout (3s); the second waits
    // in the queue meanwhile and gives up first (1s).
    let first = std::thread::spawn({
        let raw = request("GET", "/a", &[]);
        let addr = server.addr;
        move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
            crate::harness::read_response(&mut stream)
        }
    });
    wait_until_requested(&stalled);
    let queued = exchange(&server, request("GET", "/b", &[]).as_bytes());
    queued.assert_status(503);
    assert_eq!(queued.text(), "<h1>try again soon</h1>", "{queued}");
    assert!(queued.header("Retry-After").is_some(), "{queued}");
    let timed_out = first.join().unwrap();
    timed_out.assert_status(504);
    assert_eq!(timed_out.text(), "<h1>try again soon</h1>", "{timed_out}");
}

fn wait_until_requested(upstream: &Upstream) {
    crate::harness::wait_until("the upstream to get the request", Duration::from_secs(10), || {
        (!upstream.requests().is_empty()).then_some(())
    });
}
