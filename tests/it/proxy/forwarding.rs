//! Forwarding, faithfully: the target's bytes, the client's Host, the X-Forwarded-* family,
//! hop-by-hop headers dropped both ways, repeated headers never merged; quick mode; the
//! access log.

use std::io::Write;

use super::support::{
    addrs, api_and_files, exchange, launch, proxy, read_final, read_message, values, API_AND_FILES, PROXY_ALL,
};
use crate::harness::{request, Launch, Site};
use crate::upstream::{describe, Behaviour, Reply, Upstream};

#[test]
fn forwarded_headers_are_added_and_the_client_host_is_kept() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let raw = "GET /who HTTP/1.1\r\nHost: shop.example:8080\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
    exchange(&server, raw.as_bytes()).assert_status(200);
    let seen = upstream.only_request();
    assert_eq!(seen.header_values("Host"), ["shop.example:8080"], "{}", seen.head);
    assert_eq!(
        seen.header_values("X-Forwarded-For"),
        ["1.2.3.4, 127.0.0.1"],
        "{}",
        seen.head
    );
    assert_eq!(seen.header_values("X-Forwarded-Proto"), ["http"], "{}", seen.head);
    assert_eq!(
        seen.header_values("X-Forwarded-Host"),
        ["shop.example:8080"],
        "{}",
        seen.head
    );
    assert_eq!(seen.header_values("X-Real-IP"), ["127.0.0.1"], "{}", seen.head);
}

/// nginx's `underscores_in_headers off`: CGI-style apps read `X_Real_IP` as `X-Real-IP`, so
/// a client could pass its own next to shoal's. With the switch on, only headers that do not
/// read as one shoal sets pass.
#[test]
fn underscored_header_names_are_dropped_unless_the_server_allows_them() {
    let upstream = Upstream::start(Behaviour::Echo);
    let raw = "GET /u HTTP/1.1\r\nHost: test\r\nX_Custom: 1\r\nX_Real_IP: 6.6.6.6\r\n\
               X_Forwarded_For: 6.6.6.6\r\n\r\n";
    for allow in [false, true] {
        let site = Site::new();
        let text = format!(
            "access_log = \"off\"\n[upstream.app]\nservers = [\"{}\"]\n[[server]]\nlisten = [\"{{listen}}\"]\n\
             underscores_in_headers = {allow}\n  [[server.route]]\n  prefix = \"/harness-ready-probe\"\n  \
             root = \"site\"\n{PROXY_ALL}",
            upstream.addr
        );
        let server = Launch::config_file(&site, &text).start();
        exchange(&server, raw.as_bytes()).assert_status(200);
        let seen = upstream.requests().pop().expect("a request");
        let custom = if allow { vec!["1"] } else { vec![] };
        assert_eq!(seen.header_values("X_Custom"), custom, "{}", seen.head);
        assert!(seen.header_values("X_Real_IP").is_empty(), "{}", seen.head);
        assert!(!seen.head.contains("6.6.6.6"), "{}", seen.head);
        assert_eq!(seen.header_values("X-Real-IP"), ["127.0.0.1"], "{}", seen.head);
    }
}

/// Behind a trusted load balancer the client is the rightmost untrusted X-Forwarded-For
/// entry, and the balancer's X-Forwarded-Proto and -Host are kept (Rails' `force_ssl` would
/// loop on redirects if `https` became `http`); from any other peer they are replaced.
#[test]
fn a_trusted_proxys_forwarded_headers_are_believed_and_no_one_elses() {
    let upstream = Upstream::start(Behaviour::Echo);
    // The client's own lines come first; the balancer adds its own last.
    let raw =
        "GET /t HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-Proto: gopher\r\nX-Forwarded-Host: evil\r\n\
               X-Forwarded-For: 6.6.6.6, 198.51.100.7\r\nX-Forwarded-Proto: https\r\n\
               X-Forwarded-Host: www.shop.example\r\n\r\n";
    for (trusted, client, proto, host) in [
        ("[\"10.0.0.0/8\"]", "127.0.0.1", "http", "shop.example"),
        (
            "[\"10.0.0.0/8\", \"127.0.0.1\"]",
            "198.51.100.7",
            "https",
            "www.shop.example",
        ),
    ] {
        let site = Site::new();
        let top = format!("access_log = \"off\"\ntrusted_proxies = {trusted}");
        let server = launch(&site, &top, &addrs(&[&upstream]), "", PROXY_ALL).start();
        exchange(&server, raw.as_bytes()).assert_status(200);
        let seen = upstream.requests().pop().expect("a request");
        assert_eq!(seen.header_values("X-Real-IP"), [client], "{}", seen.head);
        assert_eq!(seen.header_values("X-Forwarded-Proto"), [proto], "{}", seen.head);
        assert_eq!(seen.header_values("X-Forwarded-Host"), [host], "{}", seen.head);
        assert_eq!(
            seen.header_values("X-Forwarded-For"),
            ["6.6.6.6, 198.51.100.7, 127.0.0.1"],
            "{}",
            seen.head
        );
    }
}

#[test]
fn x_forwarded_for_is_created_when_the_client_sent_none() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    exchange(&server, request("GET", "/", &[]).as_bytes()).assert_status(200);
    let seen = upstream.only_request();
    assert_eq!(
        seen.header_values("X-Forwarded-For"),
        ["127.0.0.1"],
        "{}",
        seen.head
    );
}

#[test]
fn hop_by_hop_request_headers_are_removed() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let headers = [
        "Connection: keep-alive, X-Secret-Hop",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "TE: trailers",
        "Trailer: X-Checksum",
        "Upgrade: h2c",
        "Proxy-Authorization: Basic Zm9vOmJhcg==",
        "X-Secret-Hop: for the proxy only",
        "X-End-To-End: kept",
    ];
    exchange(&server, request("GET", "/hop", &headers).as_bytes()).assert_status(200);
    let seen = upstream.only_request();
    for name in [
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Authorization",
        "X-Secret-Hop",
        "Transfer-Encoding",
    ] {
        assert!(
            seen.header_values(name).is_empty(),
            "hop-by-hop {name} reached the upstream:\n{}",
            seen.head
        );
    }
    // shoal may speak its own Connection header to the upstream, never the client's.
    for value in seen.header_values("Connection") {
        assert!(
            value.eq_ignore_ascii_case("keep-alive") || value.eq_ignore_ascii_case("close"),
            "the client's Connection header leaked to the upstream:\n{}",
            seen.head
        );
    }
    assert_eq!(seen.header_values("X-End-To-End"), ["kept"], "{}", seen.head);
}

/// RFC 9110 §7.6.1 applies to responses as well: the app's hop-by-hop headers, and those it
/// names in its Connection header, are the app's business with shoal only.
#[test]
fn hop_by_hop_response_headers_are_removed() {
    let reply = Reply::new(200)
        .header("Connection", "X-App-Hop")
        .header("Keep-Alive", "timeout=5, max=100")
        .header("X-App-Hop", "for shoal only")
        .header("X-App-Kept", "yes")
        .body("ok");
    let upstream = Upstream::start(Behaviour::Reply(reply));
    let (_site, server) = proxy(&upstream);
    let response = exchange(&server, request("GET", "/", &[]).as_bytes());
    response.assert_status(200);
    assert_eq!(response.text(), "ok");
    assert_eq!(response.header("X-App-Hop"), None, "{response}");
    assert_eq!(response.header("Keep-Alive"), None, "{response}");
    assert_eq!(response.header("X-App-Kept"), Some("yes"), "{response}");
    for value in values(&response, "Connection") {
        assert!(
            value.eq_ignore_ascii_case("keep-alive") || value.eq_ignore_ascii_case("close"),
            "the app's Connection header reached the client:\n{response}"
        );
    }
}

#[test]
fn repeated_response_headers_stay_separate_lines() {
    let reply = Reply::new(200)
        .header("Set-Cookie", "a=1; Path=/")
        .header("Set-Cookie", "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT")
        .body("cookies");
    let upstream = Upstream::start(Behaviour::Reply(reply));
    let (_site, server) = proxy(&upstream);
    let response = exchange(&server, request("GET", "/", &[]).as_bytes());
    response.assert_status(200);
    assert_eq!(
        values(&response, "Set-Cookie"),
        ["a=1; Path=/", "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT"],
        "{response}"
    );
}

#[test]
fn repeated_request_headers_stay_separate_lines() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let raw = request(
        "GET",
        "/",
        &["X-Multi: one", "X-Other: between", "X-Multi: two, three"],
    );
    exchange(&server, raw.as_bytes()).assert_status(200);
    let seen = upstream.only_request();
    assert_eq!(
        seen.header_values("X-Multi"),
        ["one", "two, three"],
        "{}",
        seen.head
    );
}

#[test]
fn the_target_reaches_the_upstream_byte_for_byte_apart_from_the_stripped_prefix() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let server = api_and_files(&site, &upstream);
    let cases = [
        ("/api/a%2Fb?x=%20y", "/a%2Fb?x=%20y"),
        ("/api/users?id=1", "/users?id=1"),
        ("/api/?q=1", "/?q=1"),
        (
            "/api/%7Euser;v=1/x?a=b&c=%2F&d=%25",
            "/%7Euser;v=1/x?a=b&c=%2F&d=%25",
        ),
    ];
    let mut stream = server.connect();
    for (sent, _) in cases {
        stream
            .write_all(request("GET", sent, &[]).as_bytes())
            .expect("write request");
        let (response, _) = read_message(&mut stream, false);
        assert_eq!(response.status, 200, "GET {sent}: {response}");
    }
    let seen = upstream.targets();
    let expected: Vec<&str> = cases.iter().map(|(_, forwarded)| *forwarded).collect();
    assert_eq!(seen, expected, "targets seen by the upstream");
}

/// Raw targets that only normalize to `/api/...` lose exactly the bytes that spell the
/// prefix; targets no upstream should have to interpret are refused before it is contacted.
#[test]
fn a_prefix_spelled_unusually_is_still_stripped_and_ambiguous_targets_never_leave() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let server = api_and_files(&site, &upstream);
    let stripped = [
        ("//api/x", "/x"),
        ("/%61pi/a%2Fb?q=/api/", "/a%2Fb?q=/api/"),
        ("/static/../api/x", "/x"),
        ("/api/../api/y/../z", "/z"),
    ];
    for (sent, _) in stripped {
        exchange(&server, request("GET", sent, &[]).as_bytes()).assert_status(200);
    }
    for refused in ["/api/..;/admin", "/api/.;/x", "/api%2Fx", "/api/..%2Fapi%2Fy"] {
        exchange(&server, request("GET", refused, &[]).as_bytes()).assert_status(400);
    }
    let seen = upstream.targets();
    let expected: Vec<&str> = stripped.iter().map(|(_, forwarded)| *forwarded).collect();
    assert_eq!(seen, expected, "targets seen by the upstream");
}

#[test]
fn without_strip_prefix_the_target_is_forwarded_untouched() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let target = "/a%2Fb//c?x=%20y&empty=&x=2";
    exchange(&server, request("GET", target, &[]).as_bytes()).assert_status(200);
    assert_eq!(upstream.only_request().target(), target);
}

#[test]
fn quick_mode_upstream_flag_proxies_everything() {
    let upstream = Upstream::start(Behaviour::Echo);
    let server = Launch::listen_only()
        .workers(1)
        .arg("-u")
        .arg(upstream.addr.to_string())
        .start();
    let response = exchange(&server, request("GET", "/any/path?q=1", &[]).as_bytes());
    response.assert_status(200);
    assert_eq!(
        response.header("X-Upstream"),
        Some(upstream.addr.to_string().as_str())
    );
    assert_eq!(
        upstream.requests_to("/any/path?q=1").len(),
        1,
        "{}",
        describe(&upstream.requests())
    );
}

#[test]
fn the_access_log_records_proxied_requests_with_the_upstream_status() {
    let upstream = Upstream::start(Behaviour::Reply(Reply::new(418).body("short and stout")));
    let site = Site::new();
    std::fs::create_dir(site.base().join("logs")).expect("create logs dir");
    let mut server = launch(
        &site,
        "access_log = \"logs/access.log\"",
        &addrs(&[&upstream]),
        "",
        PROXY_ALL,
    )
    .start();
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/teapot", &["User-Agent: UA"]).as_bytes())
        .expect("write request");
    let (_, response, _) = read_final(&mut stream);
    response.assert_status(418);
    drop(stream);
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let log = std::fs::read_to_string(site.base().join("logs/access.log")).expect("read access log");
    let line = log
        .lines()
        .find(|line| line.contains("\"GET /teapot HTTP/1.1\""))
        .unwrap_or_else(|| panic!("no line for GET /teapot in the access log:\n{log}"));
    assert!(
        line.contains("\"GET /teapot HTTP/1.1\" 418 "),
        "the upstream's status is not in {line:?}"
    );
}

#[test]
fn a_location_naming_the_upstream_is_made_relative_to_the_client_unless_the_route_opts_out() {
    let redirect = |addr| {
        Behaviour::Reply(
            Reply::new(302)
                .header("Location", &format!("http://{addr}/login?next=%2F"))
                .header("Content-Location", &format!("http://{addr}/kept")),
        )
    };
    let upstream = Upstream::start_at(redirect);
    let elsewhere = Upstream::start(Behaviour::Reply(
        Reply::new(301).header("Location", "http://example.com/moved"),
    ));
    let site = Site::new();
    let routes = format!(
        "{API_AND_FILES}  [[server.route]]\n  prefix = \"/raw/\"\n  upstream = \"app\"\n  rewrite_location = false\n\
         [[server.route]]\n  prefix = \"/other/\"\n  upstream = \"other\"\n"
    );
    let other = format!("[upstream.other]\nservers = [\"{}\"]", elsewhere.addr);
    let server = launch(
        &site,
        &format!("access_log = \"off\"\n{other}"),
        &addrs(&[&upstream]),
        "",
        &routes,
    )
    .start();
    let location = |path: &str| {
        let response = exchange(&server, request("GET", path, &[]).as_bytes());
        values(&response, "Location").join(",")
    };
    assert_eq!(
        location("/api/x"),
        "/api/login?next=%2F",
        "stripped prefix restored"
    );
    assert_eq!(
        location("/missing"),
        "/login?next=%2F",
        "a static route's fallback"
    );
    assert_eq!(
        location("/raw/x"),
        format!("http://{}/login?next=%2F", upstream.addr)
    );
    assert_eq!(
        location("/other/x"),
        "http://example.com/moved",
        "not the upstream's own"
    );
    let response = exchange(&server, request("GET", "/api/x", &[]).as_bytes());
    assert_eq!(
        values(&response, "Content-Location"),
        [format!("http://{}/kept", upstream.addr)]
    );
}
