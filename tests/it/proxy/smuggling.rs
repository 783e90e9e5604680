//! Request smuggling: every request with ambiguous framing is refused before the upstream
//! sees a connection, and a body that looks like a request stays a body.

use std::io::Write;

use super::support::{proxy, read_message, read_until_end, End};
use crate::harness::request;
use crate::upstream::{describe, Behaviour, Upstream};

/// Framings a proxy must refuse, each with the body bytes that follow the head.
const AMBIGUOUS: &[(&str, &[&str], &str)] = &[
    (
        "Content-Length and chunked",
        &["Content-Length: 5", "Transfer-Encoding: chunked"],
        "0\r\n\r\n",
    ),
    (
        "chunked and Content-Length",
        &["Transfer-Encoding: chunked", "Content-Length: 5"],
        "0\r\n\r\n",
    ),
    (
        "two different Content-Lengths",
        &["Content-Length: 5", "Content-Length: 6"],
        "hello!",
    ),
    ("a Content-Length list", &["Content-Length: 5, 6"], "hello!"),
    ("a signed Content-Length", &["Content-Length: +5"], "hello"),
    ("a hex Content-Length", &["Content-Length: 0x5"], "hello"),
    (
        "chunked, identity",
        &["Transfer-Encoding: chunked, identity"],
        "0\r\n\r\n",
    ),
    ("identity", &["Transfer-Encoding: identity"], "0\r\n\r\n"),
    (
        "chunked twice",
        &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        "0\r\n\r\n",
    ),
    ("an unknown coding", &["Transfer-Encoding: xchunked"], "0\r\n\r\n"),
    (
        "whitespace before the colon",
        &["Transfer-Encoding : chunked"],
        "0\r\n\r\n",
    ),
];

#[test]
fn ambiguous_framings_are_refused_before_the_upstream_sees_a_connection() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let mut failures = Vec::new();
    for (name, headers, body) in AMBIGUOUS {
        let mut raw = request("POST", &format!("/{}", name.replace(' ', "-")), headers).into_bytes();
        raw.extend_from_slice(body.as_bytes());
        let mut stream = server.connect();
        stream.write_all(&raw).expect("write request");
        let (bytes, end) = read_until_end(&mut stream);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let status: u16 = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let refused = (400..500).contains(&status) || status == 501;
        if !refused || end == End::StillOpen {
            failures.push(format!("{name}: {text:?} (connection {end:?})"));
        }
        let accepts = upstream.accepts();
        if accepts > 0 {
            failures.push(format!(
                "{name}: the upstream got a connection:\n{}",
                describe(&upstream.requests())
            ));
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "ambiguous requests not refused (a 4xx or 501, then close):\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_content_length_body_that_looks_like_a_request_stays_a_body() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let inner = "GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n";
    let mut raw = request("POST", "/outer", &[&format!("Content-Length: {}", inner.len())]).into_bytes();
    raw.extend_from_slice(inner.as_bytes());
    raw.extend_from_slice(request("GET", "/after", &[]).as_bytes());
    let mut stream = server.connect();
    stream.write_all(&raw).expect("write the requests");
    for expected in ["/outer", "/after"] {
        let (response, _) = read_message(&mut stream, false);
        assert_eq!(response.status, 200, "{expected}: {response}");
    }
    let requests = upstream.requests();
    let targets: Vec<&str> = requests.iter().map(|r| r.target()).collect();
    assert_eq!(targets, ["/outer", "/after"], "{}", describe(&requests));
    assert_eq!(requests[0].body, inner.as_bytes());
}

#[test]
fn a_chunked_body_that_looks_like_a_request_stays_a_body() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let inner = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n";
    let mut raw = request("POST", "/outer", &["Transfer-Encoding: chunked"]).into_bytes();
    raw.extend_from_slice(format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len()).as_bytes());
    raw.extend_from_slice(request("GET", "/after", &[]).as_bytes());
    let mut stream = server.connect();
    stream.write_all(&raw).expect("write the requests");
    for expected in ["/outer", "/after"] {
        let (response, _) = read_message(&mut stream, false);
        assert_eq!(response.status, 200, "{expected}: {response}");
    }
    let requests = upstream.requests();
    let targets: Vec<&str> = requests.iter().map(|r| r.target()).collect();
    assert_eq!(targets, ["/outer", "/after"], "{}", describe(&requests));
    assert_eq!(requests[0].body, inner.as_bytes());
}
