//! Header rules: a server's and a route's `request_headers` reach the upstream, their
//! `response_headers` every kind of response (static, proxied, redirect, a 404 no route made).

use super::support::{addrs, config, exchange};
use crate::harness::{request, Site};
use crate::upstream::{Behaviour, Upstream};

#[test]
fn header_rules_change_requests_upstream_and_every_response() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    site.file("static/a.txt", "alpha");
    let routes = "  [[server.route]]\n  prefix = \"/api/\"\n  upstream = \"app\"\n  \
        request_headers = { set = { \"X-App\" = \"shop\" }, remove = [\"Cookie\"] }\n  \
        response_headers = { set = { \"X-Frame-Options\" = \"SAMEORIGIN\" }, add = { \"X-Route\" = \"api\" } }\n  \
        [[server.route]]\n  prefix = \"/static/\"\n  root = \"site/static\"\n  strip_prefix = true\n  \
        [[server.route]]\n  exact = \"/old\"\n  redirect = { to = \"/static/a.txt\", status = 301 }\n";
    let text = config("access_log = \"off\"", &addrs(&[&upstream]), "", routes).replace(
        "[[server]]\nlisten = [\"{listen}\"]\n",
        "[[server]]\nlisten = [\"{listen}\"]\nresponse_headers = { set = { \"X-Frame-Options\" = \"DENY\" }, remove = [\"Server\"] }\n",
    );
    let server = crate::harness::Launch::config_file(&site, &text).start();
    let proxied = exchange(
        &server,
        request("GET", "/api/x", &["Cookie: secret=1", "X-App: client"]).as_bytes(),
    );
    proxied.assert_status(200);
    assert_eq!(
        proxied.header("X-Frame-Options"),
        Some("SAMEORIGIN"),
        "the route's set wins: {proxied}"
    );
    assert_eq!(proxied.header("X-Route"), Some("api"), "{proxied}");
    assert_eq!(
        proxied.header("Server"),
        None,
        "the server's remove holds on the route: {proxied}"
    );
    let seen = upstream.only_request();
    assert_eq!(seen.header_values("X-App"), ["shop"], "{}", seen.head);
    assert!(seen.header_values("Cookie").is_empty(), "{}", seen.head);
    for (path, status) in [("/static/a.txt", 200), ("/old", 301), ("/nothing", 404)] {
        let response = exchange(&server, request("GET", path, &[]).as_bytes());
        response.assert_status(status);
        assert_eq!(
            response.header("X-Frame-Options"),
            Some("DENY"),
            "{path}: {response}"
        );
        assert_eq!(response.header("Server"), None, "{path}: {response}");
        assert_eq!(response.header("X-Route"), None, "{path}: {response}");
    }
}

#[test]
fn header_rule_values_fill_in_the_request_parts() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    site.file("static/a.txt", "alpha");
    let report_to = r#"{"group":"csp","url":"https://{host}/report"}"#;
    let routes = format!(
        "  [[server.route]]\n  prefix = \"/api/\"\n  upstream = \"app\"\n  \
        request_headers = {{ set = {{ \"X-Original-URI\" = \"{{uri}}\", \"X-Origin\" = \"{{scheme}}://{{host}}\" }} }}\n  \
        response_headers = {{ set = {{ \"Link\" = \"<{{scheme}}://{{host}}{{path}}>; rel=canonical\", \"Report-To\" = {report_to:?} }} }}\n  \
        [[server.route]]\n  prefix = \"/\"\n  root = \"site/static\"\n  \
        response_headers = {{ add = {{ \"X-Query\" = \"q={{query}}\" }} }}\n"
    );
    let text = config("access_log = \"off\"", &addrs(&[&upstream]), "", &routes);
    let server = crate::harness::Launch::config_file(&site, &text).start();
    let proxied = exchange(
        &server,
        b"GET /api/x?y=1 HTTP/1.1\r\nHost: Shop.Example:8080\r\nConnection: close\r\n\r\n",
    );
    proxied.assert_status(200);
    assert_eq!(
        proxied.header("Link"),
        Some("<http://Shop.Example/api/x>; rel=canonical"),
        "{proxied}"
    );
    assert_eq!(
        proxied.header("Report-To"),
        Some(r#"{"group":"csp","url":"https://Shop.Example/report"}"#),
        "braces that open no placeholder stay: {proxied}"
    );
    let seen = upstream.only_request();
    assert_eq!(
        seen.header_values("X-Original-URI"),
        ["/api/x?y=1"],
        "{}",
        seen.head
    );
    assert_eq!(
        seen.header_values("X-Origin"),
        ["http://Shop.Example"],
        "{}",
        seen.head
    );
    let file = exchange(&server, request("GET", "/a.txt?v=2", &[]).as_bytes());
    file.assert_status(200);
    assert_eq!(file.header("X-Query"), Some("q=v=2"), "{file}");
}
