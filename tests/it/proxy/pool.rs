//! The keep-alive pool: reuse, an app-closed idle connection, the retry of an idempotent
//! request on a stale pooled connection, and the rule that a POST is never sent twice.

use std::io::Write;
use std::time::Duration;

use super::support::{exchange, proxy, proxy_with};
use crate::harness::{request, Response, Server};
use crate::upstream::{describe, Behaviour, Reply, Upstream};

fn get(server: &Server, path: &str) -> Response {
    exchange(server, request("GET", path, &[]).as_bytes())
}

fn post(server: &Server, path: &str, body: &str) -> Response {
    let mut raw = request("POST", path, &[&format!("Content-Length: {}", body.len())]).into_bytes();
    raw.extend_from_slice(body.as_bytes());
    exchange(server, &raw)
}

#[test]
fn sequential_requests_reuse_one_upstream_connection() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    for path in ["/one", "/two", "/three"] {
        // A new client connection each time: the pool belongs to the worker, not the client.
        let response = get(&server, path);
        response.assert_status(200);
        assert_eq!(response.header("X-Upstream-Conn"), Some("1"), "{response}");
    }
    let mut client = server.connect();
    for path in ["/four", "/five"] {
        client
            .write_all(request("GET", path, &[]).as_bytes())
            .expect("write request");
        let (_, response, _) = super::support::read_final(&mut client);
        assert_eq!(response.header("X-Upstream-Conn"), Some("1"), "{response}");
    }
    assert_eq!(upstream.accepts(), 1, "{}", describe(&upstream.requests()));
}

#[test]
fn an_app_that_says_connection_close_is_not_pooled() {
    let upstream = Upstream::start(Behaviour::Reply(
        Reply::new(200).header("Connection", "close").body("bye"),
    ));
    let (_site, server) = proxy(&upstream);
    for path in ["/one", "/two"] {
        let response = get(&server, path);
        response.assert_status(200);
        assert_eq!(response.text(), "bye");
    }
    assert_eq!(upstream.accepts(), 2);
}

/// shoal closes such a connection itself (after the answer went out), even when the app
/// leaves it open.
#[test]
fn a_connection_the_app_said_close_on_is_closed_by_shoal() {
    let upstream = Upstream::start(Behaviour::Raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye".to_vec(),
    ));
    let (_site, server) = proxy(&upstream);
    let response = get(&server, "/one");
    response.assert_status(200);
    assert_eq!(response.text(), "bye");
    upstream.wait_for_event("held-closed", 1);
}

#[test]
fn an_idle_connection_closed_by_the_app_is_replaced() {
    let upstream = Upstream::start(Behaviour::CloseIdleAfter(Duration::from_millis(200)));
    let (_site, server) = proxy(&upstream);
    get(&server, "/before").assert_status(200);
    upstream.wait_for_event("idle-close", 1);
    let response = get(&server, "/after");
    response.assert_status(200);
    assert_eq!(response.header("X-Upstream-Conn"), Some("2"), "{response}");
    assert_eq!(
        upstream.requests_to("/after").len(),
        1,
        "{}",
        describe(&upstream.requests())
    );
}

/// An app that closes right after a keep-alive response: its FIN may come in the response's
/// own event, and such a connection must not be pooled, or the next POST (which is never
/// retried) would fail on it.
#[test]
fn a_connection_whose_fin_came_with_the_response_is_not_reused() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
    let upstream = Upstream::start(Behaviour::RawThenClose(answer));
    let (_site, server) = proxy(&upstream);
    for round in 0..20 {
        get(&server, "/first").assert_status(200);
        // The FIN has arrived long before the POST is read, whichever event carried it.
        std::thread::sleep(Duration::from_millis(20));
        let response = post(&server, "/pay", "amount=100");
        assert_eq!(response.status, 200, "round {round}: {response}");
    }
}

#[test]
fn an_idle_pooled_connection_is_closed_after_keepalive_timeout() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy_with(&upstream, "", "keepalive_timeout = \"300ms\"");
    let first = get(&server, "/first");
    assert_eq!(first.header("X-Upstream-Conn"), Some("1"), "{first}");
    upstream.wait_for_event("peer-closed", 1);
    let second = get(&server, "/second");
    second.assert_status(200);
    assert_eq!(second.header("X-Upstream-Conn"), Some("2"), "{second}");
}

#[test]
fn keepalive_zero_keeps_no_idle_connection() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy_with(&upstream, "", "keepalive = 0");
    for (path, conn) in [("/one", "1"), ("/two", "2")] {
        let response = get(&server, path);
        response.assert_status(200);
        assert_eq!(response.header("X-Upstream-Conn"), Some(conn), "{response}");
    }
    assert_eq!(upstream.accepts(), 2);
}

/// The pooled connection takes the GET and closes without a byte of answer (the race of a
/// keep-alive timeout at the app): shoal retries it on a fresh connection.
#[test]
fn a_get_lost_on_a_stale_pooled_connection_is_retried_on_a_fresh_one() {
    let upstream = Upstream::start(Behaviour::DropSecondRequest);
    let (_site, server) = proxy(&upstream);
    let first = get(&server, "/first");
    first.assert_status(200);
    assert_eq!(first.header("X-Upstream-Conn"), Some("1"), "{first}");
    let second = get(&server, "/second");
    second.assert_status(200);
    assert_eq!(second.header("X-Upstream-Conn"), Some("2"), "{second}");
    let tries: Vec<usize> = upstream.requests_to("/second").iter().map(|r| r.conn).collect();
    assert!(
        tries == [2] || tries == [1, 2],
        "GET /second went to connections {tries:?}:\n{}",
        describe(&upstream.requests())
    );
}

/// The same race with a POST: shoal may answer 502 or use a fresh connection, but the app
/// must never receive the POST twice.
#[test]
fn a_post_on_a_stale_pooled_connection_is_never_sent_twice() {
    let upstream = Upstream::start(Behaviour::DropSecondRequest);
    let (_site, server) = proxy(&upstream);
    get(&server, "/first").assert_status(200);
    let response = post(&server, "/pay", "amount=100");
    assert!(
        response.status == 200 || response.status == 502,
        "POST on a stale connection: {response}"
    );
    let posts = upstream.requests_to("/pay");
    assert!(
        posts.len() <= 1,
        "the app received the POST {} times:\n{}",
        posts.len(),
        describe(&upstream.requests())
    );
    if response.status == 200 {
        assert_eq!(posts.len(), 1, "a 200 for a POST the app never saw");
    }
}

#[test]
fn a_post_after_the_app_closed_the_idle_connection_is_sent_at_most_once() {
    let upstream = Upstream::start(Behaviour::CloseIdleAfter(Duration::from_millis(200)));
    let (_site, server) = proxy(&upstream);
    get(&server, "/first").assert_status(200);
    upstream.wait_for_event("idle-close", 1);
    let response = post(&server, "/pay", "amount=100");
    assert!(
        response.status == 200 || response.status == 502,
        "POST after an idle close: {response}"
    );
    let posts = upstream.requests_to("/pay");
    assert!(
        posts.len() <= 1,
        "the app received the POST {} times:\n{}",
        posts.len(),
        describe(&upstream.requests())
    );
}
