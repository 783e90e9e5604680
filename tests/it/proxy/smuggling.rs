//! Request smuggling, as a table: every framing attack is sent to shoal in front of a raw-byte
//! upstream, with a pipelined `GET /next` behind it on the same connection. shoal must refuse it
//! (a 4xx/5xx, then close, nothing of it at the upstream), cut it (a malformed chunked body ends
//! the connection before the upstream saw a whole request), or forward it unambiguously (one
//! request with the body shoal decided on, then `/next`). A smuggled request
//! (`GET /smuggled`) may reach the upstream only as body bytes of a request it parsed.
//!
//! The second table does the same for responses: an upstream that frames its response
//! ambiguously gets a 502, and none of its bytes are relayed.

use std::io::Write;
use std::net::TcpStream;

use super::support::{read_message, read_until_end, route_each, End};
use crate::harness::{Server, Site};
use crate::upstream::{describe, Behaviour, Upstream};

/// The request hidden in every attack, 38 (0x26) bytes long.
macro_rules! smuggled {
    () => {
        "GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"
    };
}
const SMUGGLED: &str = smuggled!();

/// The request pipelined behind every attack.
const NEXT: &str = "GET /next HTTP/1.1\r\nHost: test\r\n\r\n";

/// What shoal must do with an attack.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Answer this status, then close; not one byte reaches the upstream.
    Refused(u16),
    /// The body turns out malformed: a 400 or a bare close, and the upstream never parses
    /// the request (it may have seen its head).
    Cut,
    /// One request to `/t` with this body at the upstream, then `/next`, both answered.
    Forwarded(&'static str),
    /// A well-framed request shoal answers itself with this status; `/next` follows normally.
    Answered(u16),
}

use Expect::{Answered, Cut, Forwarded, Refused};

/// (name, the raw attack, what shoal must do). Bodies hide [`SMUGGLED`] where a parser that
/// framed the message differently would see it as a second request.
const ATTACKS: &[(&str, &str, Expect)] = &[
    // CL.TE and TE.CL
    (
        "CL.TE",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: 43\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "TE.CL",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n26\r\n",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Refused(400),
    ),
    // TE.TE: obfuscated Transfer-Encoding
    (
        "TE with a space before the colon",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "TE with a tab before the colon",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "TE with a tab before the value, and CL",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "TE with a vertical tab",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "TE with a form feed",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: \x0cchunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "TE xchunked",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(501),
    ),
    (
        "TE chunked, identity",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(501),
    ),
    (
        "TE identity, chunked",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(501),
    ),
    (
        "two TE lines: chunked, identity",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(501),
    ),
    (
        "two TE lines: chunked twice",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(501),
    ),
    (
        "TE chunked with a parameter",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(501),
    ),
    (
        "TE quoted",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(501),
    ),
    (
        "TE in upper case",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n26\r\n",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Forwarded(SMUGGLED),
    ),
    (
        "TE with padding and an empty list member",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding:   chunked ,  \r\n\r\n26\r\n",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Forwarded(SMUGGLED),
    ),
    (
        "HTTP/1.0 with TE",
        concat!(
            "POST /t HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    // Content-Length tricks
    (
        "CL with a plus sign",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: +38\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    (
        "CL negative",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: -1\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    (
        "CL with leading zeros",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: 0038\r\n\r\n", smuggled!()),
        Forwarded(SMUGGLED),
    ),
    (
        "CL as a list of equal values",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: 38, 38\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    (
        "CL twice, equal",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: 38\r\nContent-Length: 38\r\n\r\n",
            smuggled!()
        ),
        Forwarded(SMUGGLED),
    ),
    (
        "CL twice, different",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "CL in hex",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: 0x26\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    (
        "CL with a space inside",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: 3 8\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    (
        "CL over u64",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: 99999999999999999999\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "CL with a space before the colon",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent-Length : 38\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    (
        "a CL body that is a request",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent-Length: 38\r\n\r\n", smuggled!()),
        Forwarded(SMUGGLED),
    ),
    // Line structure: obs-fold, bare CR, bare LF, control bytes
    (
        "obs-fold hiding TE",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nX-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 38\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "obs-fold inside TE",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "bare CR hiding TE",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nX-A: a\rTransfer-Encoding: chunked\r\nContent-Length: 38\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "bare LF hiding TE",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nX-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 38\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "bare LF line endings throughout",
        concat!("POST /t HTTP/1.1\nHost: test\nContent-Length: 38\n\n", smuggled!()),
        Forwarded(SMUGGLED),
    ),
    (
        "NUL in the TE value",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\0\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "NUL in a header name",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent\0Length: 38\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    (
        "a control byte in a header name",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer\x01Encoding: chunked\r\n\r\n0\r\n\r\n",
            smuggled!()
        ),
        Refused(400),
    ),
    (
        "DEL in a header value",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nX-A: a\x7fb\r\nContent-Length: 38\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    (
        "a space inside a header name",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nContent Length: 38\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    // Chunked bodies
    (
        "chunk size over u64",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000026\r\n",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Cut,
    ),
    (
        "chunk size negative",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n-26\r\n",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Cut,
    ),
    (
        "chunk size with 0x",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n0x26\r\n",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Cut,
    ),
    (
        "chunk size with a space inside",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n2 6\r\n",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Cut,
    ),
    (
        "chunk extensions",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n26;name=\"a value\";flag\r\n",
            smuggled!(),
            "\r\n0;last\r\n\r\n"
        ),
        Forwarded(SMUGGLED),
    ),
    (
        "a control byte in a chunk extension",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n26;\x01\r\n",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Cut,
    ),
    (
        "chunk data longer than its size",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Cut,
    ),
    (
        "chunks with bare LF",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n26\n",
            smuggled!(),
            "\n0\n\n"
        ),
        Cut,
    ),
    (
        "no final CRLF after the last chunk",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            smuggled!()
        ),
        Cut,
    ),
    (
        "obs-fold in a trailer",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n",
            smuggled!()
        ),
        Cut,
    ),
    (
        "a chunked body that is a request",
        concat!(
            "POST /t HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n26\r\n",
            smuggled!(),
            "\r\n0\r\n\r\n"
        ),
        Forwarded(SMUGGLED),
    ),
    // Request lines
    (
        "absolute-form target",
        "GET http://elsewhere.example/t HTTP/1.1\r\nHost: test\r\n\r\n",
        Forwarded(""),
    ),
    (
        "absolute-form target with a CL body",
        concat!("POST HTTP://test/t HTTP/1.1\r\nHost: test\r\nContent-Length: 38\r\n\r\n", smuggled!()),
        Forwarded(SMUGGLED),
    ),
    (
        "absolute-form target of another scheme",
        "GET ftp://test/t HTTP/1.1\r\nHost: test\r\n\r\n",
        Answered(400),
    ),
    (
        "two spaces in the request line",
        concat!("POST  /t HTTP/1.1\r\nHost: test\r\nContent-Length: 38\r\n\r\n", smuggled!()),
        Refused(400),
    ),
    (
        "Host twice",
        concat!("POST /t HTTP/1.1\r\nHost: test\r\nHost: other\r\nContent-Length: 38\r\n\r\n", smuggled!()),
        Refused(400),
    ),
];

/// How often `needle` occurs in `haystack`.
fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The status of the response at the start of `bytes`, or 0.
fn status_of(bytes: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(bytes);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Runs one attack (plus the pipelined `/next`) and returns what went wrong, if anything.
fn attack(server: &Server, upstream: &Upstream, raw: &str, expect: Expect) -> Option<String> {
    let parsed_before = upstream.requests().len();
    let wire_before = upstream.wire().len();
    let mut stream = server.connect();
    let mut bytes = raw.as_bytes().to_vec();
    bytes.extend_from_slice(NEXT.as_bytes());
    stream.write_all(&bytes).expect("write the attack");
    let (first_status, body) = match expect {
        Forwarded(body) => (200, Some(body)),
        Answered(status) => (status, None),
        Refused(_) | Cut => return refused_or_cut(stream, upstream, expect, parsed_before, wire_before),
    };
    for (target, status) in [("/t", first_status), ("/next", 200)] {
        let (response, _) = read_message(&mut stream, false);
        if response.status != status {
            return Some(format!("{target}: {response}"));
        }
    }
    let requests = upstream.wait_for_requests(parsed_before + 1);
    let new = &requests[parsed_before..];
    let targets: Vec<&str> = new.iter().map(|r| r.target()).collect();
    let expected: &[&str] = if body.is_some() {
        &["/t", "/next"]
    } else {
        &["/next"]
    };
    if targets != expected {
        return Some(format!("the upstream parsed:\n{}", describe(new)));
    }
    match body {
        Some(body) if new[0].body != body.as_bytes() => {
            Some(format!("body {:?}", String::from_utf8_lossy(&new[0].body)))
        }
        _ => None,
    }
}

/// A refused or cut attack: one answer at most, then the connection closes (/next is never
/// read) and the upstream parsed nothing; a refused one never sent it a byte.
fn refused_or_cut(
    mut stream: TcpStream,
    upstream: &Upstream,
    expect: Expect,
    parsed_before: usize,
    wire_before: usize,
) -> Option<String> {
    let (answer, end) = read_until_end(&mut stream);
    let status_ok = match expect {
        Refused(status) => status_of(&answer) == status,
        _ => status_of(&answer) == 400 || answer.is_empty(),
    };
    if !status_ok || occurrences(&answer, b"HTTP/1.1 ") > 1 || end == End::StillOpen {
        let answer = String::from_utf8_lossy(&answer);
        return Some(format!("answer {answer:?} (connection {end:?})"));
    }
    let parsed = upstream.requests().len() - parsed_before;
    if parsed > 0 {
        let all = upstream.requests();
        return Some(format!(
            "the upstream parsed:\n{}",
            describe(&all[parsed_before..])
        ));
    }
    if matches!(expect, Refused(_)) && upstream.wire().len() != wire_before {
        return Some("bytes of a refused request reached the upstream".into());
    }
    None
}

#[test]
fn framing_attacks_are_refused_cut_or_forwarded_unambiguously_and_never_smuggle() {
    assert!(ATTACKS.len() >= 30);
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = super::support::proxy(&upstream);
    let mut failures = Vec::new();
    for (name, raw, expect) in ATTACKS {
        if let Some(why) = attack(&server, &upstream, raw, *expect) {
            failures.push(format!("{name} (expected {expect:?}): {why}"));
        }
    }
    let requests = upstream.requests();
    let smuggled: Vec<_> = requests.iter().filter(|r| r.target() == "/smuggled").collect();
    assert!(smuggled.is_empty(), "smuggled through:\n{}", describe(&requests));
    // Every copy of the hidden request that reached the upstream is body data of a request
    // it parsed: counted on the wire and in the bodies, the numbers agree.
    let on_wire = occurrences(&upstream.wire(), SMUGGLED.as_bytes());
    let in_bodies: usize = requests
        .iter()
        .map(|r| occurrences(&r.body, SMUGGLED.as_bytes()))
        .sum();
    assert_eq!(
        on_wire, in_bodies,
        "a hidden request reached the upstream outside a body"
    );
    assert!(
        failures.is_empty(),
        "{} of {} attacks mishandled:\n{}",
        failures.len(),
        ATTACKS.len(),
        failures.join("\n")
    );
}

/// (name, the upstream's whole answer). Each must be a 502 with none of these bytes.
const AMBIGUOUS_RESPONSES: &[(&str, &str)] = &[
    (
        "CL and TE",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nLEAKED",
    ),
    (
        "TE and CL",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nLEAKED",
    ),
    (
        "two different CLs",
        "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Length: 9\r\n\r\nLEAKED...",
    ),
    ("a CL list", "HTTP/1.1 200 OK\r\nContent-Length: 6, 6\r\n\r\nLEAKED"),
    ("a signed CL", "HTTP/1.1 200 OK\r\nContent-Length: +6\r\n\r\nLEAKED"),
    ("a hex CL", "HTTP/1.1 200 OK\r\nContent-Length: 0x6\r\n\r\nLEAKED"),
    ("TE gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nLEAKED"),
    (
        "TE gzip, chunked",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n6\r\nLEAKED\r\n0\r\n\r\n",
    ),
    (
        "TE chunked, gzip",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nLEAKED",
    ),
    (
        "TE chunked twice",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nLEAKED\r\n0\r\n\r\n",
    ),
    (
        "TE with a space before the colon",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n6\r\nLEAKED\r\n0\r\n\r\n",
    ),
    (
        "obs-fold",
        "HTTP/1.1 200 OK\r\nX-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\nLEAKED",
    ),
    (
        "bare LF hiding TE",
        "HTTP/1.1 200 OK\r\nX-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\nLEAKED",
    ),
    (
        "bare CR in a header",
        "HTTP/1.1 200 OK\r\nX-A: a\rTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\nLEAKED",
    ),
    (
        "NUL in a header value",
        "HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 6\r\n\r\nLEAKED",
    ),
    (
        "a control byte in a header name",
        "HTTP/1.1 200 OK\r\nContent\x01Length: 6\r\n\r\nLEAKED",
    ),
    ("a status outside 100-599", "HTTP/1.1 099 Odd\r\nContent-Length: 6\r\n\r\nLEAKED"),
    ("a two-digit status", "HTTP/1.1 20 OK\r\nContent-Length: 6\r\n\r\nLEAKED"),
    ("garbage instead of a head", "LEAKED garbage\r\n\r\n"),
    ("HTTP/2 status line", "HTTP/2 200\r\nContent-Length: 6\r\n\r\nLEAKED"),
];

#[test]
fn ambiguous_upstream_framing_is_a_502_never_relayed() {
    let site = Site::new();
    let upstreams: Vec<Upstream> = AMBIGUOUS_RESPONSES
        .iter()
        .map(|(_, raw)| Upstream::start(Behaviour::RawThenClose(raw.as_bytes().to_vec())))
        .collect();
    let server = route_each(&site, &upstreams, &[]).start();
    let mut failures = Vec::new();
    for (i, (name, _)) in AMBIGUOUS_RESPONSES.iter().enumerate() {
        let mut stream = server.connect();
        let request = format!("GET /u{i}/x HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("write request");
        let (answer, _) = read_until_end(&mut stream);
        if status_of(&answer) != 502 || occurrences(&answer, b"LEAKED") > 0 {
            failures.push(format!("{name}: {:?}", String::from_utf8_lossy(&answer)));
        }
        if upstreams[i].requests().len() != 1 {
            failures.push(format!("{name}: the upstream was not asked exactly once"));
        }
    }
    assert!(
        failures.is_empty(),
        "ambiguous upstream responses relayed:\n{}",
        failures.join("\n")
    );
}
