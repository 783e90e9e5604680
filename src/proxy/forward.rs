//! The request head sent upstream: the client's head with hop-by-hop headers removed,
//! `X-Forwarded-*` added, the route prefix stripped, and one unambiguous body framing.
//!
//! Invariant: the upstream sees exactly one framing header (or none for no body), whatever
//! the client sent, and never a header the client's `Connection` header named.

use std::net::IpAddr;

use crate::config::answer::Parts;
use crate::config::HeaderRules;
use crate::http::hop::{self, ConnectionOptions};
use crate::http::request::{Framing, RequestHead};
use crate::http::response::{content_length, format_into, header};
use crate::http::target;

/// Besides the hop-by-hop headers (`hop::is_dropped`), what the upstream never gets as the
/// client sent it: Proxy-Authorization (meant for a proxy) and the headers shoal writes
/// itself (framing, Expect, X-Forwarded-*, X-Real-IP, X-Request-Id).
const REWRITTEN: &[&str] = &[
    "proxy-authorization",
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
    // Meaningful only with an upgrade to h2c; kept with an allowed one (`Forward::upgrade`).
    "http2-settings",
];

/// The request headers that ask for part of a response or make it conditional: a cache
/// filling an entry drops the client's (it wants the whole response) and may send its own.
const VALIDATING: &[&[u8]] = &[
    b"if-match",
    b"if-none-match",
    b"if-modified-since",
    b"if-unmodified-since",
    b"if-range",
    b"range",
];

/// Whose preconditions go upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Preconditions<'a> {
    /// The client's, as sent.
    #[default]
    Client,
    /// None: the cache wants the whole response to store it.
    Whole,
    /// The cache's, to revalidate a stored response: its entity-tag (`If-None-Match`) and
    /// Last-Modified (`If-Modified-Since`), where it has them.
    Revalidate {
        etag: Option<&'a [u8]>,
        last_modified: Option<&'a [u8]>,
    },
}

/// The headers an allowed upgrade keeps although they are dropped otherwise.
fn kept_by_upgrade(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"http2-settings")
}

/// What the forwarded head needs besides the client's head.
pub struct Forward<'a> {
    pub head: &'a RequestHead,
    /// The buffer the head was parsed from.
    pub buf: &'a [u8],
    /// The client's address (`X-Real-IP`): the peer's, or the one a trusted proxy forwarded.
    pub client_ip: IpAddr,
    /// The connection's peer, appended to `X-Forwarded-For`.
    pub peer_ip: IpAddr,
    /// The peer is a trusted proxy: the X-Forwarded-Proto and -Host it sent are kept.
    pub trusted_peer: bool,
    /// Where the target the upstream sees starts in the raw target: past an absolute-form
    /// target's scheme and authority, and past the route prefix when the route strips it
    /// (`http::target::upstream_target_start`).
    pub target_start: usize,
    /// The client asked to switch to a protocol its route allows: its Upgrade (and h2c's
    /// HTTP2-Settings) header is kept. Otherwise neither ever reaches the upstream.
    pub upgrade: bool,
    /// Headers whose names hold `_` go upstream (those that read as one of the headers
    /// dropped or rewritten here never do, see `hop::is_dropped`).
    pub underscores_in_headers: bool,
    /// The route's `request_headers`: lines set (replacing the client's) and removed.
    pub rules: &'a HeaderRules,
    /// The request's parts: what placeholders in `rules` are filled from, and its scheme
    /// (`X-Forwarded-Proto: https` over TLS). Only tests go without.
    pub parts: Option<Parts<'a>>,
    /// The request's id, sent as `X-Request-Id` (the client's own one is dropped: this is
    /// either a copy of it, when sane, or a replacement).
    pub request_id: &'a [u8],
    /// The body framing the upstream is told: the client's, or `Empty` for a body collected
    /// first, whose length [`seal_with_length`] adds once it is known.
    pub framing: Framing,
    /// Whose `If-*` and `Range` headers go upstream.
    pub preconditions: Preconditions<'a>,
}

/// Writes the upstream request head (through the empty line) into `out`.
pub fn write_head(forward: &Forward, out: &mut Vec<u8>) {
    let head = forward.head;
    let buf = forward.buf;
    out.extend_from_slice(head.method_name.of(buf));
    out.push(b' ');
    write_target(&head.target.of(buf)[forward.target_start..], out);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection = ConnectionOptions::of(head.fields_named(buf, "connection"));
    // An absolute-form target's authority is the host (RFC 9112 §3.2.2): it replaces Host.
    let authority = target::authority(head.target.of(buf));
    let host = authority.or(head.host.map(|h| h.of(buf)));
    let mut settings_kept = false;
    let drops_validators = forward.preconditions != Preconditions::Client;
    for field in head.fields() {
        let name = field.name.of(buf);
        let keep_upgrade = forward.upgrade && kept_by_upgrade(name);
        if !keep_upgrade && (hop::is_dropped(name, REWRITTEN) || connection.name(name)) {
            continue;
        }
        if (!forward.underscores_in_headers && name.contains(&b'_')) || forward.rules.drops(name) {
            continue;
        }
        if authority.is_some() && name.eq_ignore_ascii_case(b"host") {
            continue;
        }
        if drops_validators && VALIDATING.iter().any(|v| name.eq_ignore_ascii_case(v)) {
            continue;
        }
        settings_kept |= keep_upgrade && name.eq_ignore_ascii_case(b"http2-settings");
        header(out, name, field.value.of(buf));
    }
    if let Preconditions::Revalidate { etag, last_modified } = forward.preconditions {
        etag.into_iter()
            .for_each(|etag| header(out, b"If-None-Match", etag));
        last_modified
            .into_iter()
            .for_each(|date| header(out, b"If-Modified-Since", date));
    }
    for (name, value) in &forward.rules.set {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        value.write(forward.parts.as_ref(), out);
        out.extend_from_slice(b"\r\n");
    }
    match (authority, head.host) {
        (Some(authority), _) => header(out, b"Host", authority),
        (None, Some(_)) => {}
        // An HTTP/1.0 client may omit Host; HTTP/1.1 upstreams require one.
        (None, None) => header(out, b"Host", b"localhost"),
    }
    let mut ip_text = [0u8; 48];
    let peer = format_ip(forward.peer_ip, &mut ip_text);
    // Every X-Forwarded-For line the client sent, in order, then the client itself.
    out.extend_from_slice(b"X-Forwarded-For: ");
    for earlier in head
        .fields_named(buf, "x-forwarded-for")
        .filter(|v| !v.is_empty())
    {
        out.extend_from_slice(earlier);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer);
    out.extend_from_slice(b"\r\n");
    // A trusted load balancer knows how the client reached it (TLS, its host name): its
    // line is the last one (one a client sent comes before it).
    let from_proxy = |name| {
        forward
            .trusted_peer
            .then(|| head.fields_named(buf, name).last())
            .flatten()
    };
    header(
        out,
        b"X-Forwarded-Proto",
        from_proxy("x-forwarded-proto").unwrap_or(match forward.parts.is_some_and(|p| p.secure) {
            true => b"https",
            false => b"http",
        }),
    );
    if let Some(host) = from_proxy("x-forwarded-host").or(host) {
        header(out, b"X-Forwarded-Host", host);
    }
    let mut client_text = [0u8; 48];
    header(out, b"X-Real-IP", format_ip(forward.client_ip, &mut client_text));
    header(out, b"X-Request-Id", forward.request_id);
    match (forward.upgrade, settings_kept) {
        (true, false) => out.extend_from_slice(b"Connection: upgrade\r\n"),
        // HTTP2-Settings is hop-by-hop: h2c names it in Connection (RFC 7540 §3.2.1).
        (true, true) => out.extend_from_slice(b"Connection: upgrade, HTTP2-Settings\r\n"),
        (false, _) => {}
    }
    match forward.framing {
        Framing::Empty => {}
        Framing::Length(n) => content_length(out, n),
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Adds `Content-Length: length` to a head [`write_head`] wrote without framing (the body was
/// collected first: its length is known now).
pub fn seal_with_length(head: &mut Vec<u8>, length: u64) {
    debug_assert!(head.ends_with(b"\r\n\r\n"));
    head.truncate(head.len() - 2);
    content_length(head, length);
    head.extend_from_slice(b"\r\n");
}

/// Formats an IP address without allocating (for X-Forwarded-For, and the hash of a client).
/// IPv4, the usual client, is written by hand: the formatting machinery costs about a
/// thousand instructions per request.
pub fn format_ip(ip: IpAddr, into: &mut [u8; 48]) -> &[u8] {
    let IpAddr::V4(v4) = ip else {
        return format_into(into, format_args!("{ip}"));
    };
    let mut at = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            into[at] = b'.';
            at += 1;
        }
        for (digit, place) in [100, 10, 1].into_iter().enumerate() {
            if octet >= place || digit == 2 {
                into[at] = b'0' + octet / place % 10;
                at += 1;
            }
        }
    }
    &into[..at]
}

/// Writes what the upstream gets of the target (origin-form, bytes untouched), with a '/'
/// in front when stripping a prefix or an authority left none.
fn write_target(rest: &[u8], out: &mut Vec<u8>) {
    if !rest.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request;
    use crate::http::request::HeadLimits;
    use crate::http::target;

    static NO_RULES: HeaderRules = HeaderRules {
        set: Vec::new(),
        add: Vec::new(),
        remove: Vec::new(),
    };

    /// A forward of `head` (parsed from `buf`) for a client at 10.0.0.9, every option off.
    fn plain<'a>(head: &'a RequestHead, buf: &'a [u8]) -> Forward<'a> {
        Forward {
            head,
            buf,
            client_ip: "10.0.0.9".parse().unwrap(),
            peer_ip: "10.0.0.9".parse().unwrap(),
            trusted_peer: false,
            target_start: 0,
            upgrade: false,
            underscores_in_headers: false,
            rules: &NO_RULES,
            parts: None,
            request_id: b"rid-1",
            framing: head.framing,
            preconditions: Preconditions::Client,
        }
    }

    /// The head sent upstream for the request `text` on a route that strips `strip`.
    fn forwarded(text: &str, strip: Option<&str>) -> String {
        let head = request::parse(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        let target = head.target.of(text.as_bytes());
        let routed = target::resolve_target(target).unwrap().path;
        let target_start = target::upstream_target_start(target, &routed, strip).unwrap();
        let forward = Forward {
            target_start,
            upgrade: head.upgrade,
            ..plain(&head, text.as_bytes())
        };
        let mut out = Vec::new();
        write_head(&forward, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarding_headers_come() {
        let text = "GET /a%2Fb?x=%20y HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\nX-Secret: s\r\nTE: trailers\r\nProxy-Authorization: p\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 6.6.6.6\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n";
        assert_eq!(
            forwarded(text, None),
            "GET /a%2Fb?x=%20y HTTP/1.1\r\nHost: example.com\r\nCookie: a=1\r\nCookie: b=2\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\nX-Real-IP: 10.0.0.9\r\nX-Request-Id: rid-1\r\n\r\n"
        );
    }

    #[test]
    fn prefix_is_stripped_from_the_raw_target_only() {
        let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        let line = |text: String| text.lines().next().unwrap().to_string();
        assert_eq!(
            line(forwarded(&get("/api/users?id=1"), Some("/api/"))),
            "GET /users?id=1 HTTP/1.1"
        );
        assert_eq!(line(forwarded(&get("/api/"), Some("/api/"))), "GET / HTTP/1.1");
        assert_eq!(line(forwarded(&get("/api"), Some("/api"))), "GET / HTTP/1.1");
        assert_eq!(
            line(forwarded(&get("/api/a%2Fb"), Some("/api"))),
            "GET /a%2Fb HTTP/1.1"
        );
        assert_eq!(
            line(forwarded(&get("http://h/api/x?q"), Some("/api/"))),
            "GET /x?q HTTP/1.1"
        );
        assert_eq!(line(forwarded(&get("http://h"), None)), "GET / HTTP/1.1");
        assert_eq!(line(forwarded(&get("http://h?q"), None)), "GET /?q HTTP/1.1");
    }

    #[test]
    fn the_prefix_is_found_in_raw_bytes_that_only_normalize_to_it() {
        let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        let cases = [
            ("//api/x", "/api/", "/x"),
            ("/api//x", "/api/", "/x"),
            ("/./api/x?a=/api/", "/api/", "/x?a=/api/"),
            ("/%61pi/a%2Fb", "/api/", "/a%2Fb"),
            ("/static/../api/x", "/api/", "/x"),
            ("/api/../api/x", "/api/", "/x"),
            ("/api/x/../y", "/api/", "/y"),
            ("/api/x/..", "/api/", "/"),
            ("//img", "/img", "/"),
            ("/a//b/c", "/a/b", "/c"),
            ("http://h//api/x", "/api/", "/x"),
        ];
        for (target, prefix, upstream_sees) in cases {
            let text = forwarded(&get(target), Some(prefix));
            let line = text.lines().next().unwrap();
            assert_eq!(
                line,
                format!("GET {upstream_sees} HTTP/1.1"),
                "{target} on {prefix}"
            );
        }
    }

    #[test]
    fn framing_is_rewritten_once() {
        let chunked =
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
        let out = forwarded(chunked, None);
        assert!(
            out.ends_with("X-Request-Id: rid-1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "{out}"
        );
        assert!(!out.contains("Expect"));
        let sized = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(forwarded(sized, None).matches("Content-Length: 5\r\n").count(), 1);
    }

    #[test]
    fn underscored_names_pass_only_when_allowed_and_never_as_a_header_shoal_sets() {
        let text = "GET / HTTP/1.1\r\nHost: h\r\nX_Custom: 1\r\nX_Real_IP: 6.6.6.6\r\n\
                    x_forwarded_for: 6.6.6.6\r\nTransfer_Encoding: chunked\r\n\r\n";
        let head = request::parse(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        let forwarded = |underscores_in_headers| {
            let forward = Forward {
                underscores_in_headers,
                ..plain(&head, text.as_bytes())
            };
            let mut out = Vec::new();
            write_head(&forward, &mut out);
            String::from_utf8(out).unwrap()
        };
        let (strict, allowing) = (forwarded(false), forwarded(true));
        assert!(!strict.contains('_'), "{strict}");
        assert!(allowing.contains("\r\nX_Custom: 1\r\n"), "{allowing}");
        for out in [&strict, &allowing] {
            assert!(
                !out.contains("6.6.6.6") && !out.contains("Transfer_Encoding"),
                "{out}"
            );
            assert!(out.contains("\r\nX-Real-IP: 10.0.0.9\r\n"), "{out}");
        }
    }

    #[test]
    fn an_absolute_form_targets_authority_is_the_host_upstream() {
        let out = forwarded(
            "GET http://b.example:81/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
            None,
        );
        assert!(out.starts_with("GET /x HTTP/1.1\r\n"), "{out}");
        assert!(
            out.contains("\r\nHost: b.example:81\r\n") && !out.contains("a.example"),
            "{out}"
        );
        assert!(out.contains("\r\nX-Forwarded-Host: b.example:81\r\n"), "{out}");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let ws = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";
        let out = forwarded(ws, None);
        assert!(
            out.contains("Upgrade: websocket\r\n") && out.contains("Connection: upgrade\r\n"),
            "{out}"
        );
        let plain = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
        assert!(!forwarded(plain, None).contains("Upgrade"));
    }

    #[test]
    fn every_forwarded_for_line_is_kept_in_order() {
        let text = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nX-Forwarded-For: 3.3.3.3\r\nx-forwarded-for:\r\n\r\n";
        let out = forwarded(text, None);
        assert_eq!(out.matches("X-Forwarded-For").count(), 1, "{out}");
        assert!(
            out.contains("X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\n"),
            "{out}"
        );
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.9",
            "127.0.0.1",
            "192.168.100.255",
            "1.20.3.40",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(format_ip(ip, &mut [0; 48]), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn a_cache_sends_its_own_preconditions_or_none() {
        let text = "GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"client\"\r\nRange: bytes=0-1\r\n\
                    If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\nAccept: */*\r\n\r\n";
        let head = request::parse(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        let forwarded = |preconditions| {
            let mut out = Vec::new();
            write_head(
                &Forward {
                    preconditions,
                    ..plain(&head, text.as_bytes())
                },
                &mut out,
            );
            String::from_utf8(out).unwrap()
        };
        let client = forwarded(Preconditions::Client);
        assert!(
            client.contains("If-None-Match: \"client\"\r\nRange: bytes=0-1\r\n"),
            "{client}"
        );
        let whole = forwarded(Preconditions::Whole);
        assert!(
            !whole.contains("If-") && !whole.contains("Range") && whole.contains("Accept: */*"),
            "{whole}"
        );
        let ours = forwarded(Preconditions::Revalidate {
            etag: Some(b"\"stored\""),
            last_modified: None,
        });
        assert!(
            ours.contains("If-None-Match: \"stored\"\r\n") && !ours.contains("client"),
            "{ours}"
        );
        assert!(
            !ours.contains("If-Modified-Since") && !ours.contains("Range"),
            "{ours}"
        );
    }

    #[test]
    fn a_collected_body_is_announced_by_its_length() {
        let text = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = request::parse(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        let forward = Forward {
            framing: Framing::Empty,
            ..plain(&head, text.as_bytes())
        };
        let mut out = Vec::new();
        write_head(&forward, &mut out);
        seal_with_length(&mut out, 42);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.ends_with("X-Request-Id: rid-1\r\nContent-Length: 42\r\n\r\n"),
            "{out}"
        );
        assert!(!out.contains("Transfer-Encoding"), "{out}");
    }

    #[test]
    fn http10_without_host_gets_one() {
        assert!(forwarded("GET / HTTP/1.0\r\n\r\n", None).contains("\r\nHost: localhost\r\n"));
    }
}
