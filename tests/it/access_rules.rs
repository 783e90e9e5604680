//! `allow` / `deny`: who gets 403, decided on the real client address: IPv4 and IPv6 peers
//! (127.0.0.1, 127.0.0.2 and ::1 are all this machine), IPv4 clients of a dual-stack
//! listener (`::ffff:127.0.0.1`), and the client a trusted proxy names in X-Forwarded-For.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::harness::{
    free_addr, read_response, request, wait_until, Launch, Response, Server, Site, IO_TIMEOUT,
};

const V4: &str = "127.0.0.1";
const OTHER_V4: &str = "127.0.0.2";
const V6: &str = "::1";

/// A connection from `from` (any local address) to `to`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: IpAddr = from.parse().expect("an address");
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect_timeout(&to.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    stream
}

/// `GET path` (with `headers`) from `from` to `to`, one response.
fn get_from(from: &str, to: SocketAddr, path: &str, headers: &[&str]) -> Response {
    let mut stream = connect_from(from, to);
    stream
        .write_all(request("GET", path, headers).as_bytes())
        .expect("write request");
    read_response(&mut stream)
}

/// A `[::1]` address with a port nothing listens on now.
fn free_v6_addr() -> SocketAddr {
    let probe = TcpListener::bind("[::1]:0").expect("bind [::1]:0");
    probe.local_addr().expect("local_addr")
}

/// The server of [`routes_replace_their_server_s_rules`]: on 127.0.0.1 and on [::1].
fn start_guarded(site: &Site, v6: SocketAddr) -> Server {
    site.file("403.html", "<h1>not from there</h1>");
    let text = format!(
        "access_log = \"off\"\n[[server]]\nlisten = [\"{{listen}}\", \"{v6}\"]\n\
         allow = [\"127.0.0.0/8\", \"::1\"]\ndeny = [\"127.0.0.2\"]\n\
         error_pages = {{ 403 = \"site/403.html\" }}\n\
         [[server.route]]\nexact = \"/\"\nrespond = {{ body = \"root\" }}\n\
         [[server.route]]\nprefix = \"/harness-ready-probe\"\nrespond = {{ body = \"up\" }}\n\
         [[server.route]]\nprefix = \"/v6-only/\"\nallow = [\"::1\"]\nrespond = {{ body = \"v6\" }}\n\
         [[server.route]]\nprefix = \"/open/\"\ndeny = []\nrespond = {{ body = \"open\" }}\n\
         [[server.route]]\nprefix = \"/no-v6/\"\ndeny = [\"::/0\"]\nrespond = {{ body = \"v4\" }}\n"
    );
    Launch::config_file(site, &text).start()
}

#[test]
fn routes_replace_their_server_s_rules_for_ipv4_and_ipv6_clients() {
    let site = Site::new();
    let v6 = free_v6_addr();
    let server = start_guarded(&site, v6);
    // (path, status for 127.0.0.1, 127.0.0.2, ::1)
    let table = [
        ("/", [200, 403, 200]),
        ("/v6-only/x", [403, 403, 200]),
        ("/open/x", [200, 200, 200]),
        ("/no-v6/x", [200, 200, 403]),
        // No route: the server's own rules come before the 404.
        ("/missing", [404, 403, 404]),
    ];
    for (path, statuses) in table {
        for (client, status) in [V4, OTHER_V4, V6].into_iter().zip(statuses) {
            let to = if client == V6 { v6 } else { server.addr };
            let response = get_from(client, to, path, &[]);
            assert_eq!(response.status, status, "{path} from {client}: {response}");
            if status == 403 {
                assert_eq!(response.text(), "<h1>not from there</h1>", "the 403 page");
            }
        }
    }
}

#[test]
fn a_dual_stack_listener_s_ipv4_clients_match_ipv4_and_mapped_rules() {
    let site = Site::new();
    // A socket handed over as systemd would: bound to [::] without IPV6_V6ONLY, so IPv4
    // clients arrive as ::ffff:127.0.0.1 (shoal binds its own IPv6 sockets v6-only).
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_only_v6(false).expect("dual-stack");
    socket
        .bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
        .expect("bind [::]:0");
    socket.listen(128).expect("listen");
    let listener: TcpListener = socket.into();
    let port = listener.local_addr().expect("local_addr").port();
    let text = "access_log = \"stdout\"\n[[server]]\nlisten = [\"{listen}\"]\n\
        [[server.route]]\nprefix = \"/\"\nrespond = { body = \"any\" }\n\
        [[server.route]]\nprefix = \"/v4/\"\nallow = [\"127.0.0.1\"]\nrespond = { body = \"v4\" }\n\
        [[server.route]]\nprefix = \"/mapped/\"\nallow = [\"::ffff:127.0.0.0/104\"]\nrespond = { body = \"mapped\" }\n\
        [[server.route]]\nprefix = \"/v6/\"\nallow = [\"::1\"]\nrespond = { body = \"v6\" }\n\
        [[server.route]]\nprefix = \"/not-v4/\"\ndeny = [\"0.0.0.0/0\"]\nrespond = { body = \"not v4\" }\n";
    let server = Launch::config_file(&site, text)
        .socket_activated(listener, "http")
        .start();
    let over_v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let over_v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    // (path, status over IPv4, status over IPv6)
    let table = [
        ("/v4/", 200, 403),
        ("/mapped/", 200, 403),
        ("/v6/", 403, 200),
        ("/not-v4/", 403, 200),
    ];
    for (path, v4_status, v6_status) in table {
        let response = get_from(V4, over_v4, path, &[]);
        assert_eq!(response.status, v4_status, "{path} over IPv4: {response}");
        let response = get_from(V6, over_v6, path, &[]);
        assert_eq!(response.status, v6_status, "{path} over IPv6: {response}");
    }
    // The peer really was a mapped address: the access log writes the client as it came.
    wait_until("the access log line", Duration::from_secs(5), || {
        let log = server.stdout();
        let mapped = |line: &&str| line.starts_with("::ffff:127.0.0.1 - - ") && line.contains("/v4/");
        log.lines().find(mapped).map(str::to_string)
    });
}

#[test]
fn a_trusted_proxy_s_x_forwarded_for_names_the_client_that_is_checked() {
    let site = Site::new();
    let text =
        "access_log = \"off\"\ntrusted_proxies = [\"127.0.0.1\"]\n[[server]]\nlisten = [\"{listen}\"]\n\
        allow = [\"203.0.113.0/24\"]\ndeny = [\"203.0.113.66\"]\n\
        [[server.route]]\nprefix = \"/\"\nrespond = { body = \"in\" }\n";
    let server = Launch::config_file(&site, text).start();
    let xff = |value: &str| format!("X-Forwarded-For: {value}");
    // (peer, X-Forwarded-For, status)
    let cases = [
        (V4, Some("203.0.113.9"), 200),
        (V4, Some("198.51.100.1, 203.0.113.9"), 200),
        (V4, Some("203.0.113.9, 198.51.100.1"), 403),
        (V4, Some("203.0.113.66"), 403),
        (V4, None, 403),
        // An untrusted peer's header is not believed: the peer is the client.
        (OTHER_V4, Some("203.0.113.9"), 403),
    ];
    for (peer, forwarded, status) in cases {
        let header = forwarded.map(xff);
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        let response = get_from(peer, server.addr, "/page", &headers);
        assert_eq!(
            response.status, status,
            "from {peer} for {forwarded:?}: {response}"
        );
    }
}

#[test]
fn a_proxy_protocol_source_is_the_client_that_is_checked() {
    let site = Site::new();
    let behind = free_addr();
    let text = format!(
        "access_log = \"off\"\n[[server]]\nlisten = [\"{{listen}}\", \"{behind} proxy_protocol\"]\n\
         allow = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n\
         [[server.route]]\nprefix = \"/\"\nrespond = {{ body = \"in\" }}\n"
    );
    let _server = Launch::config_file(&site, &text).start();
    // (PROXY header, status): the peer is 127.0.0.1 every time; the header's source decides.
    let cases = [
        ("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", 200),
        ("PROXY TCP4 198.51.100.9 198.51.100.2 56324 443\r\n", 403),
        ("PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n", 200),
        ("PROXY TCP6 2001:db9::1 2001:db8::2 56324 443\r\n", 403),
        // No source given: the connection's own address (127.0.0.1), not allowed.
        ("PROXY UNKNOWN\r\n", 403),
    ];
    for (header, status) in cases {
        let mut stream = connect_from(V4, behind);
        let raw = format!("{header}{}", request("GET", "/", &["Connection: close"]));
        stream.write_all(raw.as_bytes()).expect("write");
        let response = read_response(&mut stream);
        assert_eq!(response.status, status, "{header:?}: {response}");
    }
}
