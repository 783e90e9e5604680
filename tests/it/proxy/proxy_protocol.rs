//! The PROXY protocol on a listen address marked `proxy_protocol`: the header's source
//! address becomes the client's (X-Real-IP, X-Forwarded-For, the access log); a connection
//! without a valid header, whole within its bounds and `header_timeout`, is closed unanswered.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::support::{addrs, config};
use crate::harness::{assert_closed, free_addr, read_response, Launch, Server, Site};
use crate::upstream::{Behaviour, Upstream};

const GET: &[u8] = b"GET /app HTTP/1.1\r\nHost: example.com\r\n\r\n";

/// A shoal whose one server proxies to `upstream`, listening on `{listen}` as usual and on
/// the returned address with `proxy_protocol`.
fn start(upstream: &Upstream) -> (Site, Server, SocketAddr) {
    let site = Site::new();
    let behind = free_addr();
    let routes = "  [[server.route]]\n  prefix = \"/app\"\n  upstream = \"app\"\n";
    let text = config(
        "access_log = \"off\"\n[limits]\nheader_timeout = \"1s\"",
        &addrs(&[upstream]),
        "",
        routes,
    )
    .replace(
        "listen = [\"{listen}\"]",
        &format!("listen = [\"{{listen}}\", \"{behind} proxy_protocol\"]"),
    );
    let server = Launch::config_file(&site, &text).start();
    (site, server, behind)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x20 | command, family]);
    header.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    header.extend_from_slice(addresses);
    header
}

/// Sends `header` then two requests on one connection; the client addresses the upstream saw.
fn clients_seen(addr: SocketAddr, upstream: &Upstream, header: &[u8]) -> Vec<(String, String)> {
    let before = upstream.requests().len();
    let mut stream = connect(addr);
    stream.write_all(header).unwrap();
    for _ in 0..2 {
        stream.write_all(GET).unwrap();
        read_response(&mut stream).assert_status(200);
    }
    (upstream.requests()[before..].iter())
        .map(|seen| {
            let one = |name| seen.header_values(name).join(",");
            (one("X-Real-IP"), one("X-Forwarded-For"))
        })
        .collect()
}

#[test]
fn the_header_s_source_is_the_client_for_every_request_on_the_connection() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, _server, behind) = start(&upstream);
    let from = |ip: &str| (ip.to_string(), ip.to_string());
    let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    assert_eq!(
        clients_seen(behind, &upstream, v1),
        [from("192.0.2.1"), from("192.0.2.1")]
    );
    let v1_six = b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n";
    assert_eq!(clients_seen(behind, &upstream, v1_six)[1], from("2001:db8::1"));
    let tcp4 = v2(
        1,
        0x11,
        &[203, 0, 113, 9, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb],
    );
    assert_eq!(clients_seen(behind, &upstream, &tcp4)[0], from("203.0.113.9"));
    // A health check from the balancer itself, and a v1 UNKNOWN: the peer stands.
    assert_eq!(
        clients_seen(behind, &upstream, &v2(0, 0x00, &[]))[0],
        from("127.0.0.1")
    );
    assert_eq!(
        clients_seen(behind, &upstream, b"PROXY UNKNOWN\r\n")[0],
        from("127.0.0.1")
    );
    // The header and the request in one packet.
    let mut stream = connect(behind);
    stream.write_all(&[&v1[..], GET].concat()).unwrap();
    read_response(&mut stream).assert_status(200);
    let last = upstream.requests().pop().unwrap();
    assert_eq!(last.header_values("X-Real-IP"), ["192.0.2.1"], "{}", last.head);
}

#[test]
fn a_connection_without_a_valid_header_is_closed_unanswered() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server, behind) = start(&upstream);
    let oversized = v2(1, 0x11, &[0; 2048]);
    let cases: [(&str, Vec<u8>); 4] = [
        ("missing", GET.to_vec()),
        ("malformed v1", b"PROXY TCP4 192.0.2.1 nowhere 1 2\r\n".to_vec()),
        (
            "v1 past 107 bytes",
            format!("PROXY TCP4 {}", "1".repeat(200)).into_bytes(),
        ),
        ("oversized v2", oversized),
    ];
    for (what, bytes) in cases {
        let mut stream = connect(behind);
        stream.write_all(&bytes).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(answer.is_empty(), "{what}: {}", String::from_utf8_lossy(&answer));
    }
    // One header only: a second line is the request's first, not HTTP, so a 400.
    let mut stream = connect(behind);
    let twice = [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n",
        GET,
    ]
    .concat();
    stream.write_all(&twice).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Truncated and then silent: closed once header_timeout (1s) runs out.
    for part in [&b"PROXY TCP4 192.0.2.1"[..], &v2(1, 0x11, &[0; 12])[..20]] {
        let mut stream = connect(behind);
        stream.write_all(part).unwrap();
        assert_closed(&mut stream);
    }
    assert!(upstream.requests().is_empty(), "nothing reached the app");
    // The plain address of the same server takes plain HTTP.
    server.get("/harness-ready-probe").assert_status(404);
}

#[test]
fn servers_sharing_an_address_agree_on_the_proxy_protocol() {
    let site = Site::new();
    let text = "[[server]]\nlisten = [\"127.0.0.1:8080 proxy_protocol\"]\nnames = [\"a.example\"]\n  \
        [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n\
        [[server]]\nlisten = [\"127.0.0.1:8080\"]\nnames = [\"b.example\"]\n  \
        [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n";
    let path = site.base().join("shoal.toml");
    std::fs::write(&path, text).unwrap();
    let checked = crate::harness::check_config(&path);
    assert!(
        checked
            .stderr
            .contains("shoal.toml:8:11: listen: 127.0.0.1:8080 is shared with the server at line 1"),
        "{}",
        checked.stderr
    );
    std::fs::write(
        &path,
        text.replace(":8080\"]\nnames = [\"b", ":8080 proxy_protocl\"]\nnames = [\"b"),
    )
    .unwrap();
    let checked = crate::harness::check_config(&path);
    assert!(
        checked
            .stderr
            .contains("`proxy_protocl` is not an option of an address"),
        "{}",
        checked.stderr
    );
}
