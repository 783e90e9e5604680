//! Failures mapped exactly: refused → 502, connect timeout → 504, read timeout → 504,
//! anything unparsable from the upstream → 502 and never relayed, an upstream closing or
//! stalling mid-body → the client's response is cut (not completed, not hung), closing or
//! resetting before answering → 502.

use std::io::Write;
use std::net::TcpStream;

use super::support::{
    body_complete, exchange, framing, launch, proxy, proxy_with, read_message, read_until_end, served_by,
    End, PROXY_ALL,
};
use crate::harness::{read_head_response, request, Response, Site};
use crate::upstream::{Behaviour, Blackhole, Refusing, Upstream};

fn get(server: &crate::harness::Server, path: &str) -> Response {
    exchange(server, request("GET", path, &[]).as_bytes())
}

#[test]
fn nothing_listening_is_502() {
    let site = Site::new();
    let dead = Refusing::new();
    let server = launch(
        &site,
        "access_log = \"off\"",
        &[dead.addr.to_string()],
        "",
        PROXY_ALL,
    )
    .start();
    get(&server, "/").assert_status(502);
}

#[test]
fn every_server_refusing_is_502() {
    let site = Site::new();
    let dead = [Refusing::new(), Refusing::new()];
    let addrs = [dead[0].addr.to_string(), dead[1].addr.to_string()];
    let server = launch(&site, "access_log = \"off\"", &addrs, "", PROXY_ALL).start();
    for _ in 0..3 {
        get(&server, "/").assert_status(502);
    }
}

#[test]
fn connect_timeout_is_504() {
    let hole = Blackhole::new();
    let site = Site::new();
    let server = launch(
        &site,
        "access_log = \"off\"",
        &[hole.addr.to_string()],
        "connect_timeout = \"500ms\"",
        PROXY_ALL,
    )
    .start();
    get(&server, "/").assert_status(504);
}

#[test]
fn connect_timeout_moves_on_to_the_next_server() {
    let hole = Blackhole::new();
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let servers = [hole.addr.to_string(), upstream.addr.to_string()];
    let server = launch(
        &site,
        "access_log = \"off\"",
        &servers,
        "connect_timeout = \"500ms\"",
        PROXY_ALL,
    )
    .start();
    for _ in 0..3 {
        let response = get(&server, "/");
        response.assert_status(200);
        assert_eq!(served_by(&response), upstream.addr);
    }
}

#[test]
fn no_answer_within_read_timeout_is_504() {
    let upstream = Upstream::start(Behaviour::Stall);
    let (_site, server) = proxy_with(&upstream, "", "read_timeout = \"1s\"");
    get(&server, "/").assert_status(504);
    assert_eq!(
        upstream.requests().len(),
        1,
        "the request reached the upstream once"
    );
}

/// The app reads the head and then no body byte: once every buffer on the way is full,
/// nothing moves for send_timeout and the client gets a 504.
#[test]
fn an_upstream_taking_no_body_bytes_is_504_after_send_timeout() {
    let upstream = Upstream::start(Behaviour::IgnoreBody);
    // A streamed body: a collected one would be taken whole before the upstream is asked.
    let site = Site::new();
    let streamed = format!("{PROXY_ALL}  request_buffering = false\n");
    let server = launch(
        &site,
        "access_log = \"off\"\n[limits]\nmax_body_bytes = \"1GiB\"",
        &[upstream.addr.to_string()],
        "send_timeout = \"1s\"",
        &streamed,
    )
    .start();
    let mut stream = server.connect();
    let total = 256 * 1024 * 1024;
    let head = request("PUT", "/upload", &[&format!("Content-Length: {total}")]);
    stream.write_all(head.as_bytes()).expect("write head");
    let mut writer = stream.try_clone().expect("clone client stream");
    // Writes until shoal stops taking bytes for good (a write error or timeout ends it).
    let uploader = std::thread::spawn(move || {
        let piece = vec![b'u'; 64 * 1024];
        let mut sent = 0;
        while sent < total && writer.write_all(&piece).is_ok() {
            sent += piece.len();
        }
        sent
    });
    let (answer, end) = read_until_end(&mut stream);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = uploader.join().expect("uploader thread");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 504 "),
        "expected a 504; the client wrote {sent} body bytes, then got ({end:?}) {answer:?}"
    );
    assert!(
        sent < total,
        "the whole body was taken by a proxy whose upstream reads none"
    );
}

/// The upstream answers with `behaviour`'s bytes; the client must get a 502 of shoal's own,
/// with none of the upstream's bytes in it.
fn assert_502_not_relayed(behaviour: Behaviour, marker: &str) {
    let upstream = Upstream::start(behaviour);
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/", &[]).as_bytes())
        .expect("write request");
    let (response, _) = read_message(&mut stream, false);
    response.assert_status(502);
    assert!(
        !response.to_string().contains(marker),
        "the upstream's bytes were relayed: {response}"
    );
}

#[test]
fn garbage_from_the_upstream_is_502() {
    assert_502_not_relayed(Behaviour::garbage(), "SSH-2.0");
}

#[test]
fn a_malformed_status_line_is_502() {
    assert_502_not_relayed(Behaviour::bad_status_line(), "OK 200");
}

#[test]
fn a_malformed_header_line_is_502() {
    assert_502_not_relayed(Behaviour::malformed_header(), "no colon");
}

#[test]
fn upstream_headers_over_the_limit_are_502() {
    assert_502_not_relayed(Behaviour::huge_headers(256 * 1024), "hhhhhhhh");
}

#[test]
fn conflicting_content_length_from_the_upstream_is_502() {
    assert_502_not_relayed(Behaviour::conflicting_length(), "okok");
}

#[test]
fn the_upstream_closing_before_answering_is_502() {
    let upstream = Upstream::start(Behaviour::CloseBeforeAnswer);
    let (_site, server) = proxy(&upstream);
    get(&server, "/").assert_status(502);
}

#[test]
fn the_upstream_resetting_is_502() {
    let upstream = Upstream::start(Behaviour::Reset);
    let (_site, server) = proxy(&upstream);
    get(&server, "/").assert_status(502);
}

/// The client's response must not complete, and the connection must end (not hang).
fn assert_cut(stream: &mut TcpStream) {
    let head = read_head_response(stream);
    if head.status == 502 {
        return; // cut before the head was relayed: a clean 502 is fine too
    }
    assert_eq!(head.status, 200, "{head}");
    let framing = framing(&head, false);
    let (rest, end) = read_until_end(stream);
    assert!(
        !body_complete(framing, &rest),
        "the cut response looks complete to the client ({framing:?}): {head}\n{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_ne!(
        end,
        End::StillOpen,
        "the client connection hangs after a cut response: {head}\n{:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn the_upstream_closing_mid_body_cuts_the_client_response() {
    let upstream = Upstream::start(Behaviour::CloseMidBody {
        announced: 100,
        sent: 10,
    });
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/", &[]).as_bytes())
        .expect("write request");
    assert_cut(&mut stream);
}

#[test]
fn the_upstream_closing_mid_chunked_body_cuts_the_client_response() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec();
    let upstream = Upstream::start(Behaviour::RawThenClose(raw));
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/", &[]).as_bytes())
        .expect("write request");
    assert_cut(&mut stream);
}

/// Content-Length and chunked from the app: the client gets a 502 or one framing, never both.
#[test]
fn a_response_with_both_framings_reaches_the_client_with_one_or_not_at_all() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n0\r\n\r\n"
        .to_vec();
    let upstream = Upstream::start(Behaviour::Raw(raw));
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/", &[]).as_bytes())
        .expect("write request");
    let (response, _) = read_message(&mut stream, false);
    if response.status != 502 {
        response.assert_status(200);
        assert_eq!(response.text(), "hello", "{response}");
    }
}

#[test]
fn the_upstream_stalling_mid_body_cuts_the_client_response_after_read_timeout() {
    let (pieces, behaviour) = Behaviour::trickle(10);
    let upstream = Upstream::start(behaviour);
    let (_site, server) = proxy_with(&upstream, "", "read_timeout = \"1s\"");
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/", &[]).as_bytes())
        .expect("write request");
    pieces.send(b"x".to_vec()).expect("feed one byte, then stall");
    assert_cut(&mut stream);
    drop(pieces);
}
