//! Upgrades: after the app's 101 the bytes tunnel both ways; either side closing closes the
//! other; an idle tunnel is closed after tunnel_timeout.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use super::support::{addrs, launch, proxy, proxy_with, read_message, read_until_end, End};
use crate::harness::{read_head_response, read_to_close, Response, Server, Site};
use crate::upstream::{Behaviour, Reply, Upstream};

const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Opens a tunnel through `server`: the client's upgrade, the app's 101.
fn open_tunnel(server: &Server, upstream: &Upstream) -> TcpStream {
    let mut stream = server.connect();
    stream
        .write_all(UPGRADE.as_bytes())
        .expect("write upgrade request");
    let response = read_head_response(&mut stream);
    assert_eq!(response.status, 101, "{response}");
    assert!(
        response
            .header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{response}"
    );
    let connection = response
        .header("Connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        connection.split(',').any(|t| t.trim() == "upgrade"),
        "a 101 without Connection: Upgrade fails the client's handshake: {response}"
    );
    let seen = upstream.only_request();
    assert_eq!(seen.header_values("Upgrade"), ["websocket"], "{}", seen.head);
    let connection = seen.header_values("Connection").join(",").to_ascii_lowercase();
    assert!(
        connection.split(',').any(|t| t.trim() == "upgrade"),
        "the app must see Connection: Upgrade:\n{}",
        seen.head
    );
    assert_eq!(
        seen.header_values("Sec-WebSocket-Key"),
        ["dGhlIHNhbXBsZSBub25jZQ=="]
    );
    stream
}

fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).expect("write into the tunnel");
    let mut echo = vec![0u8; message.len()];
    stream
        .read_exact(&mut echo)
        .expect("read the echo from the tunnel");
    assert_eq!(echo, message);
}

#[test]
fn bytes_tunnel_both_ways_after_101() {
    let upstream = Upstream::start(Behaviour::WebSocketEcho);
    let (_site, server) = proxy(&upstream);
    let mut stream = open_tunnel(&server, &upstream);
    round_trip(&mut stream, b"ping");
    round_trip(&mut stream, &[0x81, 0x05, b'h', b'e', b'l', b'l', b'o']);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    let mut writer = stream.try_clone().expect("clone client stream");
    let sender = std::thread::spawn(move || writer.write_all(&big).map(|_| big));
    let mut echo = vec![0u8; 300_000];
    stream.read_exact(&mut echo).expect("read the big echo");
    let big = sender
        .join()
        .expect("writer thread")
        .expect("write the big message");
    assert!(echo == big, "the tunnel altered bytes");
}

#[test]
fn an_upgrade_the_app_declines_is_an_ordinary_response() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let mut stream = server.connect();
    stream
        .write_all(UPGRADE.as_bytes())
        .expect("write upgrade request");
    let (response, _) = read_message(&mut stream, false);
    response.assert_status(200);
    stream
        .write_all(b"GET /next HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("write the next request");
    let (next, _) = read_message(&mut stream, false);
    next.assert_status(200);
    assert_eq!(upstream.targets(), ["/chat", "/next"]);
}

#[test]
fn the_client_closing_closes_the_app_side() {
    let upstream = Upstream::start(Behaviour::WebSocketEcho);
    let (_site, server) = proxy(&upstream);
    let mut stream = open_tunnel(&server, &upstream);
    round_trip(&mut stream, b"ping");
    stream.shutdown(Shutdown::Write).expect("shut the client side");
    upstream.wait_for_event("tunnel-closed", 1);
    assert!(read_to_close(&mut stream).is_empty(), "bytes after the close");
}

#[test]
fn the_app_closing_closes_the_client_side() {
    let upstream = Upstream::start(Behaviour::WebSocketEcho);
    let (_site, server) = proxy(&upstream);
    let mut stream = open_tunnel(&server, &upstream);
    stream.write_all(b"bye").expect("write bye");
    let (rest, end) = read_until_end(&mut stream);
    assert_eq!(rest, b"bye", "the echo before the close");
    assert_ne!(
        end,
        End::StillOpen,
        "the client side stays open after the app closed"
    );
}

#[test]
fn an_idle_tunnel_is_closed_after_tunnel_timeout() {
    let upstream = Upstream::start(Behaviour::WebSocketEcho);
    let (_site, server) = proxy_with(&upstream, "", "tunnel_timeout = \"1s\"");
    let mut stream = open_tunnel(&server, &upstream);
    round_trip(&mut stream, b"ping");
    let (rest, end) = read_until_end(&mut stream);
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    assert_ne!(end, End::StillOpen, "the idle tunnel was not closed");
    upstream.wait_for_event("tunnel-closed", 1);
}

/// An h2c upgrade (the "h2c smuggling" bypass when it reaches an app that answers 101).
const H2C: &str =
    "GET /admin HTTP/1.1\r\nHost: test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
                   HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";

/// A shoal before `upstream` whose one route allows the upgrades `upgrade` (TOML), or the
/// default when it is empty.
fn with_upgrades(upstream: &Upstream, upgrade: &str) -> (Site, Server) {
    let site = Site::new();
    let routes = format!("  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n{upgrade}");
    let server = launch(&site, "access_log = \"off\"", &addrs(&[upstream]), "", &routes).start();
    (site, server)
}

fn send(server: &Server, request: &str) -> Response {
    let mut stream = server.connect();
    stream.write_all(request.as_bytes()).expect("write request");
    read_head_response(&mut stream)
}

#[test]
fn an_upgrade_the_route_does_not_allow_goes_upstream_as_a_plain_request() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = with_upgrades(&upstream, "");
    send(&server, H2C).assert_status(200);
    let seen = upstream.only_request();
    assert!(seen.header_values("Upgrade").is_empty(), "{}", seen.head);
    assert!(seen.header_values("HTTP2-Settings").is_empty(), "{}", seen.head);
    let connection = seen.header_values("Connection").join(",").to_ascii_lowercase();
    assert!(!connection.contains("upgrade"), "{}", seen.head);
}

#[test]
fn an_app_switching_protocols_for_an_upgrade_not_allowed_is_a_502() {
    let app = Reply::new(101)
        .header("Upgrade", "h2c")
        .header("Connection", "Upgrade");
    let upstream = Upstream::start(Behaviour::Reply(app));
    let (_site, server) = with_upgrades(&upstream, "");
    send(&server, H2C).assert_status(502);
    // The same with WebSocket on a route that allows no upgrade at all.
    let websocket = Upstream::start(Behaviour::WebSocketEcho);
    let (_site, server) = with_upgrades(&websocket, "  upgrade = []\n");
    send(&server, UPGRADE).assert_status(200);
    assert!(websocket.only_request().header_values("Upgrade").is_empty());
}

#[test]
fn a_route_may_allow_h2c_with_its_settings() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = with_upgrades(&upstream, "  upgrade = [\"websocket\", \"H2C\"]\n");
    send(&server, H2C).assert_status(200);
    let seen = upstream.only_request();
    assert_eq!(seen.header_values("Upgrade"), ["h2c"], "{}", seen.head);
    assert_eq!(seen.header_values("HTTP2-Settings"), ["AAMAAABkAARAAAAAAAIAAAAA"]);
    let connection = seen.header_values("Connection").join(",").to_ascii_lowercase();
    assert!(
        connection.contains("upgrade") && connection.contains("http2-settings"),
        "{}",
        seen.head
    );
}
