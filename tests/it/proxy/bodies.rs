//! Bodies both ways: Content-Length and chunked requests (re-framed once), a 5 MiB upload,
//! `Expect: 100-continue`, the body limit; Content-Length, chunked and close-delimited
//! responses, bodiless responses, 1xx, and a trickling response relayed byte by byte.

use std::io::Write;

use super::support::{exchange, proxy, proxy_with, read_final, read_message, Body, Framing};
use crate::harness::{read_head_response, request, Response};
use crate::upstream::{describe, Behaviour, Reply, Request, Upstream};

/// The upstream saw exactly one framing: a Content-Length or `Transfer-Encoding: chunked`.
fn assert_one_framing(seen: &Request) {
    let lengths = seen.header_values("Content-Length");
    let codings = seen.header_values("Transfer-Encoding");
    assert!(
        (lengths.len() == 1 && codings.is_empty()) || (lengths.is_empty() && codings == ["chunked"]),
        "the upstream must see one framing, Content-Length xor chunked:\n{}",
        seen.head
    );
    if let [length] = lengths.as_slice() {
        assert_eq!(
            length.parse::<usize>().ok(),
            Some(seen.body.len()),
            "{}",
            seen.head
        );
    }
}

#[test]
fn a_content_length_body_is_forwarded() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let mut raw = request(
        "POST",
        "/form",
        &["Content-Length: 11", "Content-Type: text/plain"],
    )
    .into_bytes();
    raw.extend_from_slice(b"hello world");
    exchange(&server, &raw).assert_status(200);
    let seen = upstream.only_request();
    assert_eq!(seen.body, b"hello world");
    assert_eq!(seen.header_values("Content-Length"), ["11"], "{}", seen.head);
    assert!(
        seen.header_values("Transfer-Encoding").is_empty(),
        "{}",
        seen.head
    );
}

#[test]
fn a_chunked_body_reaches_the_upstream_with_exactly_one_valid_framing() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let mut raw = request("POST", "/upload", &["Transfer-Encoding: chunked"]).into_bytes();
    raw.extend_from_slice(b"5;name=value\r\nhello\r\n1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\n\r\n");
    exchange(&server, &raw).assert_status(200);
    let seen = upstream.only_request();
    assert_eq!(
        seen.body,
        b"hello 0123456789abcdef",
        "{}",
        describe(std::slice::from_ref(&seen))
    );
    assert_one_framing(&seen);
}

#[test]
fn an_empty_chunked_body_is_forwarded_as_empty() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let mut raw = request("POST", "/empty", &["Transfer-Encoding: chunked"]).into_bytes();
    raw.extend_from_slice(b"0\r\n\r\n");
    exchange(&server, &raw).assert_status(200);
    let seen = upstream.only_request();
    assert!(seen.body.is_empty(), "{}", describe(std::slice::from_ref(&seen)));
    assert_one_framing(&seen);
}

/// A 5 MiB upload arrives intact and the response comes back.
#[test]
fn a_five_mib_upload_streams_through_intact() {
    let upstream = Upstream::start(Behaviour::Reply(Reply::new(201).body("stored")));
    let (_site, server) = proxy(&upstream);
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let mut stream = server.connect();
    let head = request("PUT", "/big", &[&format!("Content-Length: {}", body.len())]);
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(&body).expect("write the 5 MiB body");
    let (_, response, _) = read_final(&mut stream);
    assert_eq!(response.status, 201, "{response}");
    assert_eq!(response.text(), "stored");
    let seen = upstream.only_request();
    assert_eq!(seen.body.len(), body.len(), "bytes that reached the upstream");
    assert!(seen.body == body, "the upload's bytes were altered on the way");
    assert_one_framing(&seen);
}

#[test]
fn a_five_mib_chunked_upload_streams_through_intact() {
    let upstream = Upstream::start(Behaviour::Reply(Reply::new(201).body("stored")));
    let (_site, server) = proxy(&upstream);
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i: u32| (i % 253) as u8).collect();
    let mut stream = server.connect();
    let head = request("PUT", "/big", &["Transfer-Encoding: chunked"]);
    stream.write_all(head.as_bytes()).expect("write head");
    for piece in body.chunks(100_000) {
        stream
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .expect("write chunk size");
        stream.write_all(piece).expect("write chunk");
        stream.write_all(b"\r\n").expect("write chunk end");
    }
    stream.write_all(b"0\r\n\r\n").expect("write last chunk");
    let (_, response, _) = read_final(&mut stream);
    assert_eq!(response.status, 201, "{response}");
    let seen = upstream.only_request();
    assert_eq!(seen.body.len(), body.len(), "bytes that reached the upstream");
    assert!(seen.body == body, "the upload's bytes were altered on the way");
    assert_one_framing(&seen);
}

#[test]
fn expect_100_continue_works_through_the_proxy() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    let head = request("POST", "/expect", &["Content-Length: 5", "Expect: 100-continue"]);
    stream.write_all(head.as_bytes()).expect("write head");
    // Nothing of the body is sent until the client hears 100 Continue.
    let interim = read_head_response(&mut stream);
    assert_eq!(
        interim.status_line, "HTTP/1.1 100 Continue",
        "before the body: {interim}"
    );
    stream.write_all(b"hello").expect("write body");
    let (_, response, _) = read_final(&mut stream);
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(upstream.only_request().body, b"hello");
}

#[test]
fn content_length_over_max_body_bytes_is_413_and_the_upstream_is_never_contacted() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy_with(&upstream, "[limits]\nmax_body_bytes = \"1KiB\"", "");
    let response = exchange(
        &server,
        request("POST", "/too-big", &["Content-Length: 4096"]).as_bytes(),
    );
    response.assert_status(413);
    assert_eq!(upstream.accepts(), 0, "the upstream got a connection");
}

/// `max_body_bytes` on a route overrides `[limits]` for its requests, both ways: uploads
/// allowed on `/upload/` only.
#[test]
fn a_routes_max_body_bytes_overrides_the_limit() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = crate::harness::Site::new();
    let routes = format!(
        "  [[server.route]]\n  prefix = \"/upload/\"\n  upstream = \"app\"\n  max_body_bytes = \"64KiB\"\n{}",
        super::support::PROXY_ALL
    );
    let top = "access_log = \"off\"\n[limits]\nmax_body_bytes = \"1KiB\"";
    let server =
        super::support::launch(&site, top, &super::support::addrs(&[&upstream]), "", &routes).start();
    let post = |path: &str, length: usize| {
        let mut raw = request("POST", path, &[&format!("Content-Length: {length}")]).into_bytes();
        raw.extend(std::iter::repeat_n(b'x', length));
        exchange(&server, &raw)
    };
    post("/upload/a", 10 * 1024).assert_status(200);
    post("/elsewhere", 10 * 1024).assert_status(413);
    post("/upload/b", 100 * 1024).assert_status(413);
    post("/elsewhere", 512).assert_status(200);
    assert_eq!(
        upstream.targets(),
        ["/upload/a", "/elsewhere"],
        "{}",
        describe(&upstream.requests())
    );
}

#[test]
fn a_chunked_body_over_max_body_bytes_never_reaches_the_upstream_whole() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy_with(&upstream, "[limits]\nmax_body_bytes = \"1KiB\"", "");
    let mut stream = server.connect();
    let head = request("POST", "/too-big", &["Transfer-Encoding: chunked"]);
    stream.write_all(head.as_bytes()).expect("write head");
    let mut chunks = Vec::new();
    for _ in 0..4 {
        chunks.extend_from_slice(b"400\r\n");
        chunks.extend(std::iter::repeat_n(b'x', 1024));
        chunks.extend_from_slice(b"\r\n");
    }
    chunks.extend_from_slice(b"0\r\n\r\n");
    // shoal answers 413 once over the limit and stops reading: write errors are fine.
    let _ = stream.write_all(&chunks);
    let (bytes, _) = super::support::read_until_end(&mut stream);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "over-limit chunked body: expected 413 (the upstream had not answered), got {text:?}"
    );
    let whole = upstream.requests().iter().filter(|r| r.body.len() > 1024).count();
    assert_eq!(whole, 0, "{}", describe(&upstream.requests()));
}

#[test]
fn a_content_length_response_is_relayed() {
    let upstream = Upstream::start(Behaviour::Reply(Reply::new(200).body("fixed length body")));
    let (_site, server) = proxy(&upstream);
    let response = exchange(&server, request("GET", "/", &[]).as_bytes());
    response.assert_status(200);
    assert_eq!(response.text(), "fixed length body");
}

#[test]
fn a_large_response_is_relayed_intact() {
    let body: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    let upstream = Upstream::start(Behaviour::Reply(Reply::new(200).body(&body)));
    let (_site, server) = proxy(&upstream);
    let response = exchange(&server, request("GET", "/large", &[]).as_bytes());
    response.assert_status(200);
    assert_eq!(response.body.len(), body.len());
    assert!(
        response.body == body,
        "the response's bytes were altered on the way"
    );
}

/// A client that leaves after the head must not leave a half-read upstream connection in
/// the pool: the next response is whole and right.
#[test]
fn a_client_leaving_mid_response_does_not_poison_the_pool() {
    let body: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 239) as u8).collect();
    let upstream = Upstream::start(Behaviour::Reply(Reply::new(200).body(&body)));
    let (_site, server) = proxy(&upstream);
    let mut leaver = server.connect();
    leaver
        .write_all(request("GET", "/leave", &[]).as_bytes())
        .expect("write request");
    read_head_response(&mut leaver).assert_status(200);
    drop(leaver);
    for path in ["/next", "/again"] {
        let response = exchange(&server, request("GET", path, &[]).as_bytes());
        response.assert_status(200);
        assert_eq!(response.body.len(), body.len(), "GET {path}");
        assert!(response.body == body, "GET {path}: the body is not the app's");
    }
}

#[test]
fn a_chunked_response_is_relayed() {
    let pieces = vec![b"first ".to_vec(), b"second ".to_vec(), b"third".to_vec()];
    let upstream = Upstream::start(Behaviour::Chunked(pieces));
    let (_site, server) = proxy(&upstream);
    let response = exchange(&server, request("GET", "/", &[]).as_bytes());
    response.assert_status(200);
    assert_eq!(response.text(), "first second third");
}

#[test]
fn a_close_delimited_response_reaches_an_http11_client_chunked_and_whole() {
    let body: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let upstream = Upstream::start(Behaviour::CloseDelimited(body.clone()));
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/", &[]).as_bytes())
        .expect("write request");
    let (response, framing) = read_message(&mut stream, false);
    response.assert_status(200);
    assert_eq!(framing, Framing::Chunked, "framing of {response}");
    assert_eq!(response.body.len(), body.len());
    assert!(response.body == body, "the body was altered");
}

#[test]
fn a_close_delimited_response_reaches_an_http10_client_whole_without_chunking() {
    let body: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let upstream = Upstream::start(Behaviour::CloseDelimited(body.clone()));
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .expect("write request");
    let (response, framing) = read_message(&mut stream, false);
    response.assert_status(200);
    assert_ne!(
        framing,
        Framing::Chunked,
        "chunked sent to an HTTP/1.0 client: {response}"
    );
    assert_eq!(response.body.len(), body.len());
    assert!(response.body == body, "the body was altered");
}

/// Sends `first` then a GET on the same connection; the GET's answer must parse, so the
/// first response carried no stray body bytes and shoal did not wait for any.
fn assert_bodiless_then_next(upstream: &Upstream, first: &str, to_head: bool, status: u16) -> Response {
    let (_site, server) = proxy(upstream);
    let mut stream = server.connect();
    stream.write_all(first.as_bytes()).expect("write first request");
    let (response, framing) = read_message(&mut stream, to_head);
    assert_eq!(response.status, status, "{response}");
    assert_eq!(framing, Framing::Empty);
    assert!(
        response.header("Transfer-Encoding").is_none() || to_head,
        "a bodiless response announced chunking: {response}"
    );
    stream
        .write_all(request("GET", "/next", &[]).as_bytes())
        .expect("write second request");
    let (next, _) = read_message(&mut stream, false);
    assert!(
        next.status_line.starts_with("HTTP/1.1 "),
        "the next response on the connection: {next}"
    );
    response
}

#[test]
fn a_head_response_carries_no_body() {
    let upstream = Upstream::start(Behaviour::Echo);
    let response = assert_bodiless_then_next(&upstream, &request("HEAD", "/head", &[]), true, 200);
    assert!(
        response.header("Content-Length").is_some() || response.header("Transfer-Encoding").is_some(),
        "HEAD keeps the GET's framing headers: {response}"
    );
    let methods: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.method().to_string())
        .collect();
    assert_eq!(methods, ["HEAD", "GET"], "{}", describe(&upstream.requests()));
}

#[test]
fn a_204_response_carries_no_body() {
    let upstream = Upstream::start(Behaviour::Reply(Reply::new(204).header("X-Done", "1")));
    assert_bodiless_then_next(&upstream, &request("DELETE", "/thing", &[]), false, 204);
}

#[test]
fn a_304_response_carries_no_body() {
    let reply = Reply::new(304).header("ETag", "\"v1\"");
    let upstream = Upstream::start(Behaviour::Reply(reply));
    let first = request("GET", "/cached", &["If-None-Match: \"v1\""]);
    let response = assert_bodiless_then_next(&upstream, &first, false, 304);
    assert_eq!(response.header("ETag"), Some("\"v1\""), "{response}");
}

#[test]
fn an_informational_103_before_the_final_response_is_handled() {
    let raw = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
        .to_vec();
    let upstream = Upstream::start(Behaviour::Raw(raw));
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/hints", &[]).as_bytes())
        .expect("write request");
    let (interim, response, _) = read_final(&mut stream);
    assert!(
        interim.iter().all(|r| r.status == 103),
        "unexpected interim responses: {interim:?}"
    );
    response.assert_status(200);
    assert_eq!(response.text(), "final");
}

#[test]
fn a_trickling_response_reaches_the_client_byte_by_byte() {
    let (pieces, behaviour) = Behaviour::trickle(3);
    let upstream = Upstream::start(behaviour);
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/slow", &[]).as_bytes())
        .expect("write request");
    pieces.send(b"a".to_vec()).expect("feed the upstream");
    let head = read_head_response(&mut stream);
    assert_eq!(head.status, 200, "{head}");
    let mut body = Body::new(super::support::framing(&head, false));
    assert_eq!(body.read_exact(&mut stream, 1), b"a", "first trickled byte");
    for byte in [b"b", b"c"] {
        // Each byte is only sent once the one before it reached the client.
        pieces.send(byte.to_vec()).expect("feed the upstream");
        assert_eq!(body.read_exact(&mut stream, 1), byte, "trickled byte");
    }
    assert!(
        body.read_all(&mut stream).is_empty(),
        "bytes after the announced body"
    );
}

#[test]
fn a_client_that_pauses_reading_is_not_cut_by_the_upstream_read_timeout() {
    const BODY_BYTES: usize = 1 << 20;
    let body: Vec<u8> = (0..BODY_BYTES).map(|i| (i % 251) as u8).collect();
    let upstream = Upstream::start(Behaviour::Reply(Reply::new(200).body(&body)));
    // Small socket buffers on both sides of the client connection, so that shoal's own
    // backlog fills and it has to wait for the client.
    let (_site, server) = proxy_with(
        &upstream,
        "[limits]\nsend_buffer_bytes = \"16KiB\"\nsend_timeout = \"10s\"",
        "read_timeout = \"500ms\"",
    );
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(request("GET", "/big", &[]).as_bytes())
        .expect("write request");
    let head = read_head_response(&mut stream);
    assert_eq!(head.status, 200, "{head}");
    // The client stops reading for three read timeouts of the upstream: the upstream has
    // sent everything and is not at fault; only the client's send_timeout (10 s) may cut.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let received = Body::new(Framing::Length(BODY_BYTES)).read_all(&mut stream);
    assert_eq!(received.len(), BODY_BYTES, "the response was cut");
    assert!(received == body, "the body arrived changed");
}
