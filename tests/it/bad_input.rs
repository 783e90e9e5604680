//! Requests shoal must refuse, each answered with one status and the connection closed:
//! malformed heads, Host rules, size and count limits, unsupported versions, framing
//! ambiguities, expectations, and the header, keep-alive and per-connection request limits.

use std::io::Write;

use crate::harness::{assert_closed, get, read_response, request, Server, Site};

/// Sends `raw` on a fresh connection to a default quick-mode server and checks that the
/// answer is `status` with `Connection: close`, and that the server then closes.
fn assert_rejected(raw: impl AsRef<[u8]>, status: u16) {
    let site = Site::new();
    site.file("index.html", "home");
    let server = Server::quick(&site);
    assert_rejected_by(&server, raw.as_ref(), status);
}

fn assert_rejected_by(server: &Server, raw: &[u8], status: u16) {
    let mut stream = server.connect();
    stream.write_all(raw).expect("write request");
    let response = read_response(&mut stream);
    response.assert_status(status);
    assert_eq!(response.header("Connection"), Some("close"), "{response}");
    assert_closed(&mut stream);
}

fn with_header(header: &str) -> String {
    request("GET", "/", &[header])
}

#[test]
fn malformed_request_line_is_400() {
    assert_rejected("this is not http\r\n\r\n", 400);
}

#[test]
fn header_line_without_colon_is_400() {
    assert_rejected(with_header("NoColonHere"), 400);
}

#[test]
fn http11_without_host_is_400() {
    assert_rejected("GET / HTTP/1.1\r\n\r\n", 400);
}

#[test]
fn duplicate_host_is_400() {
    assert_rejected(with_header("Host: other"), 400);
}

/// RFC 9112 §3.2: a Host that is not `uri-host[:port]` is a 400, as is an absolute-form
/// target whose authority is not (it is the request's host).
#[test]
fn an_invalid_host_is_400_and_valid_ones_are_served() {
    let site = Site::new();
    site.file("index.html", "home");
    let server = Server::quick(&site);
    for host in ["x y", "a@b/c", "a..b", "a/b", "[::1", "h:80x", "h:123456", "a%zz"] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_rejected_by(&server, raw.as_bytes(), 400);
    }
    for target in ["http://user@test/", "http://a..b/", "http://h:123456/"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n");
        assert_rejected_by(&server, raw.as_bytes(), 400);
    }
    for host in [
        "test",
        "Test.Example:8080",
        "[::1]:80",
        "192.0.2.7",
        "example.com.",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        server.request(raw.as_bytes()).assert_status(200);
    }
}

#[test]
fn header_section_over_max_header_bytes_is_431() {
    assert_rejected(with_header(&format!("X-Big: {}", "a".repeat(20 * 1024))), 431);
}

#[test]
fn request_line_over_max_header_bytes_is_414() {
    assert_rejected(get(&format!("/{}", "a".repeat(20 * 1024))), 414);
}

#[test]
fn more_headers_than_max_headers_is_431() {
    let headers: Vec<String> = (0..100).map(|i| format!("X-H{i}: v")).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    assert_rejected(request("GET", "/", &headers), 431);
}

#[test]
fn http2_version_is_505() {
    assert_rejected("GET / HTTP/2.0\r\nHost: test\r\n\r\n", 505);
}

#[test]
fn content_length_over_max_body_bytes_is_413_before_the_body_is_sent() {
    assert_rejected(
        request("POST", "/", &[&format!("Content-Length: {}", 20 * 1024 * 1024)]),
        413,
    );
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    assert_rejected(
        request("POST", "/", &["Content-Length: 5", "Transfer-Encoding: chunked"]),
        400,
    );
}

#[test]
fn differing_duplicate_content_length_is_400() {
    assert_rejected(
        request("POST", "/", &["Content-Length: 5", "Content-Length: 6"]),
        400,
    );
}

#[test]
fn transfer_coding_other_than_chunked_is_501() {
    assert_rejected(request("POST", "/", &["Transfer-Encoding: gzip, chunked"]), 501);
}

#[test]
fn unknown_expectation_is_417() {
    assert_rejected(with_header("Expect: foo"), 417);
}

#[test]
fn head_incomplete_past_header_timeout_is_408() {
    let site = Site::new();
    let server = Server::with_config(&site, "[limits]\nheader_timeout = \"1s\"", "");
    assert_rejected_by(&server, b"GET / HTTP/1.1\r\nHost: test\r\n", 408);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let server = Server::with_config(&site, "[limits]\nkeepalive_timeout = \"1s\"", "");
    let mut stream = server.connect();
    stream.write_all(get("/a.txt").as_bytes()).expect("write");
    let response = read_response(&mut stream);
    assert_eq!(
        response.assert_status(200).header("Connection"),
        None,
        "{response}"
    );
    assert_closed(&mut stream);
}

#[test]
fn the_last_allowed_request_on_a_connection_says_close_and_closes() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let server = Server::with_config(&site, "[limits]\nmax_requests_per_connection = 3", "");
    let mut stream = server.connect();
    for n in 1..=3 {
        stream.write_all(get("/a.txt").as_bytes()).expect("write");
        let response = read_response(&mut stream);
        let expected = (n == 3).then_some("close");
        assert_eq!(
            response.header("Connection"),
            expected,
            "response {n}: {response}"
        );
    }
    assert_closed(&mut stream);
}
