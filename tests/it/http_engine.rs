//! The HTTP/1.1 engine: persistence (keep-alive, `Connection: close`, HTTP/1.0), pipelining,
//! requests split into single bytes, common headers, `Expect: 100-continue`, and request
//! bodies on GET being skipped so the next request on the connection is still read right.

use std::io::Write;
use std::net::TcpStream;

use crate::harness::{assert_closed, get, read_response, request, serve_files, Server, Site};

fn write(stream: &mut TcpStream, bytes: impl AsRef<[u8]>) {
    stream.write_all(bytes.as_ref()).expect("write to server");
}

#[test]
fn http11_keeps_the_connection_alive_for_a_second_request() {
    let (_site, server) = serve_files(&[("a.txt", "first"), ("b.txt", "second")]);
    let mut stream = server.connect();
    write(&mut stream, get("/a.txt"));
    let first = read_response(&mut stream);
    assert_eq!(first.assert_status(200).text(), "first");
    assert_eq!(first.header("Connection"), None, "{first}");
    write(&mut stream, get("/b.txt"));
    assert_eq!(read_response(&mut stream).assert_status(200).text(), "second");
}

#[test]
fn connection_close_is_honoured() {
    let (_site, server) = serve_files(&[("a.txt", "alpha")]);
    let mut stream = server.connect();
    write(&mut stream, request("GET", "/a.txt", &["Connection: close"]));
    let response = read_response(&mut stream);
    assert_eq!(response.assert_status(200).text(), "alpha");
    assert_eq!(response.header("Connection"), Some("close"), "{response}");
    assert_closed(&mut stream);
}

#[test]
fn http10_without_keep_alive_closes() {
    let (_site, server) = serve_files(&[("a.txt", "alpha")]);
    let mut stream = server.connect();
    write(&mut stream, "GET /a.txt HTTP/1.0\r\n\r\n");
    assert_eq!(read_response(&mut stream).assert_status(200).text(), "alpha");
    assert_closed(&mut stream);
}

#[test]
fn http10_keep_alive_is_echoed_and_the_connection_stays_open() {
    let (_site, server) = serve_files(&[("a.txt", "alpha"), ("b.txt", "beta")]);
    let mut stream = server.connect();
    for (path, body) in [("/a.txt", "alpha"), ("/b.txt", "beta")] {
        write(
            &mut stream,
            format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        );
        let response = read_response(&mut stream);
        assert_eq!(response.assert_status(200).text(), body);
        assert_eq!(response.header("Connection"), Some("keep-alive"), "{response}");
    }
}

#[test]
fn ten_pipelined_requests_are_answered_in_order() {
    let site = Site::new();
    for i in 0..10 {
        site.file(&format!("f{i}.txt"), format!("file number {i}"));
    }
    let server = Server::quick(&site);
    let mut stream = server.connect();
    let all: String = (0..10).map(|i| get(&format!("/f{i}.txt"))).collect();
    write(&mut stream, all);
    for i in 0..10 {
        let response = read_response(&mut stream);
        assert_eq!(response.assert_status(200).text(), format!("file number {i}"));
    }
}

#[test]
fn a_request_sent_one_byte_per_write_is_answered() {
    let (_site, server) = serve_files(&[("a.txt", "slowly")]);
    let mut stream = server.connect();
    for byte in get("/a.txt").bytes() {
        stream.write_all(&[byte]).expect("write one byte");
        stream.flush().expect("flush");
    }
    assert_eq!(read_response(&mut stream).assert_status(200).text(), "slowly");
}

#[test]
fn responses_carry_date_and_server_headers() {
    let (_site, server) = serve_files(&[("a.txt", "alpha")]);
    for response in [server.get("/a.txt"), server.get("/missing")] {
        assert_eq!(response.header("Server"), Some("shoal"), "{response}");
        let date = response.expect_header("Date");
        assert!(is_http_date(date), "Date {date:?} is not an IMF-fixdate");
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn is_http_date(text: &str) -> bool {
    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    text.len() == 29
        && days.contains(&&text[..3])
        && text[3..5] == *", "
        && text.ends_with(" GMT")
        && text[5..7].bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn expect_100_continue_gets_an_interim_response_then_the_final_one() {
    let (_site, server) = serve_files(&[("a.txt", "alpha"), ("b.txt", "beta")]);
    let mut stream = server.connect();
    write(
        &mut stream,
        request("GET", "/a.txt", &["Content-Length: 5", "Expect: 100-continue"]),
    );
    let interim = read_response(&mut stream);
    assert_eq!(interim.status_line, "HTTP/1.1 100 Continue", "{interim}");
    assert_eq!(read_response(&mut stream).assert_status(200).text(), "alpha");
    write(&mut stream, format!("hello{}", get("/b.txt")));
    assert_eq!(read_response(&mut stream).assert_status(200).text(), "beta");
}

#[test]
fn a_content_length_body_on_get_is_skipped_before_the_next_pipelined_request() {
    let (_site, server) = serve_files(&[("a.txt", "alpha"), ("b.txt", "beta")]);
    let mut stream = server.connect();
    let body = "NOT A REQUEST\r\n\r\n";
    let first = request("GET", "/a.txt", &[&format!("Content-Length: {}", body.len())]);
    write(&mut stream, format!("{first}{body}{}", get("/b.txt")));
    assert_eq!(read_response(&mut stream).assert_status(200).text(), "alpha");
    assert_eq!(read_response(&mut stream).assert_status(200).text(), "beta");
}

#[test]
fn a_chunked_body_on_get_is_skipped_before_the_next_pipelined_request() {
    let (_site, server) = serve_files(&[("a.txt", "alpha"), ("b.txt", "beta")]);
    let mut stream = server.connect();
    let first = request("GET", "/a.txt", &["Transfer-Encoding: chunked"]);
    let body = "5\r\nhello\r\n11\r\nNOT A REQUEST\r\n\r\n\r\n0\r\n\r\n";
    write(&mut stream, format!("{first}{body}{}", get("/b.txt")));
    assert_eq!(read_response(&mut stream).assert_status(200).text(), "alpha");
    assert_eq!(read_response(&mut stream).assert_status(200).text(), "beta");
}
