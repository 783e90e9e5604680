//! Request ids: `X-Request-Id` from the client when sane, else made by the worker; sent
//! upstream exactly once, and logged (JSON access log) with the upstream that answered.

use std::collections::HashSet;
use std::time::Duration;

use crate::harness::{request, wait_until, Site};
use crate::proxy::support::{addrs, exchange, launch, proxy, PROXY_ALL};
use crate::upstream::{describe, Behaviour, Upstream};

/// The one `X-Request-Id` the upstream received with each request, in order.
fn forwarded_ids(upstream: &Upstream) -> Vec<String> {
    upstream
        .requests()
        .iter()
        .map(|seen| {
            let ids = seen.header_values("X-Request-Id");
            assert_eq!(ids.len(), 1, "exactly one X-Request-Id upstream:\n{}", seen.head);
            ids[0].to_string()
        })
        .collect()
}

#[test]
fn a_request_without_an_id_gets_a_fresh_one_upstream() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let top = "access_log = \"off\"";
    let server = launch(&site, top, &addrs(&[&upstream]), "", PROXY_ALL)
        .workers(2)
        .start();
    let count = 40;
    for i in 0..count {
        exchange(&server, request("GET", &format!("/r{i}"), &[]).as_bytes()).assert_status(200);
    }
    let ids = forwarded_ids(&upstream);
    assert_eq!(ids.len(), count, "{}", describe(&upstream.requests()));
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), count, "ids repeat: {ids:?}");
    for id in &ids {
        let sane = !id.is_empty() && id.bytes().all(|b| (0x21..=0x7e).contains(&b));
        assert!(sane && id.len() <= 128, "{id:?}");
    }
}

#[test]
fn a_sane_client_id_is_passed_through_and_a_bad_one_replaced() {
    let upstream = Upstream::start(Behaviour::Echo);
    let (_site, server) = proxy(&upstream);
    let uuid = "3f2b1c9e-8d4a-4f6b-9c1e-2a7d5e8f0b13";
    let too_long = "x".repeat(129);
    let cases = [
        format!("X-Request-Id: {uuid}"),
        format!("X-Request-Id: {too_long}"),
        "X-Request-Id: has space".to_string(),
        "X-Request-Id: \"quoted\"\tand-tab".to_string(),
    ];
    for header in &cases {
        exchange(&server, request("GET", "/", &[header]).as_bytes()).assert_status(200);
    }
    // Two ids from one client: the upstream still sees exactly one (the last, being sane).
    let twice = request("GET", "/", &["X-Request-Id: first", "X-Request-Id: second"]);
    exchange(&server, twice.as_bytes()).assert_status(200);
    let ids = forwarded_ids(&upstream);
    assert_eq!(ids[0], uuid);
    assert_eq!(ids[4], "second");
    for (replaced, header) in ids[1..4].iter().zip(&cases[1..]) {
        assert!(
            !header.contains(replaced.as_str()),
            "{header:?} reached the upstream as {replaced:?}"
        );
        assert!(
            replaced.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "{replaced:?}"
        );
    }
}

#[test]
fn the_json_log_names_the_request_id_and_the_upstream() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let top = "access_log = \"access.log\"\naccess_log_format = \"json\"";
    let mut server = launch(&site, top, &addrs(&[&upstream]), "", PROXY_ALL).start();
    let given = request("GET", "/given?q=1", &["X-Request-Id: from-client-7"]);
    exchange(&server, given.as_bytes()).assert_status(200);
    exchange(
        &server,
        request("POST", "/made", &["Content-Length: 0"]).as_bytes(),
    )
    .assert_status(200);
    assert!(server.stop().success());
    let log = std::fs::read_to_string(site.base().join("access.log")).expect("read access.log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| !line.contains("harness-ready-probe"))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    let ids = forwarded_ids(&upstream);
    let upstream_addr = upstream.addr.to_string();
    assert_eq!(lines[0]["target"], "/given?q=1");
    assert_eq!(lines[0]["request_id"], "from-client-7");
    assert_eq!(lines[1]["method"], "POST");
    assert_eq!(lines[1]["request_id"], ids[1].as_str(), "{log}");
    for line in &lines {
        assert_eq!(line["upstream"], upstream_addr.as_str(), "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert!(line["bytes_sent"].as_u64().is_some_and(|n| n > 0), "{line}");
        assert!(line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
    }
}

#[test]
fn a_static_request_is_logged_with_a_made_id_when_the_format_is_json() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let top = "access_log = \"access.log\"\naccess_log_format = \"json\"";
    let mut server = crate::harness::Server::with_config(&site, top, "");
    server.get("/a.txt").assert_status(200);
    server.get("/a.txt").assert_status(200);
    let path = site.base().join("access.log");
    let ids: Vec<String> = wait_until("two lines for /a.txt", Duration::from_secs(5), || {
        let log = std::fs::read_to_string(&path).ok()?;
        let ids: Vec<String> = log
            .lines()
            .filter(|line| line.contains("/a.txt"))
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                value["request_id"].as_str().expect("a request id").to_string()
            })
            .collect();
        (ids.len() == 2).then_some(ids)
    });
    assert_ne!(ids[0], ids[1]);
    assert!(server.stop().success());
}
