//! Choosing a server: weighted round robin, least connections, hashing on a header or the
//! client, and passive health skipping a dead server.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use super::support::{addrs, exchange, launch, read_final, served_by, PROXY_ALL};
use crate::harness::{request, wait_until, Server, Site};
use crate::upstream::{Behaviour, Blackhole, Refusing, Upstream};

fn get_with(server: &Server, path: &str, headers: &[&str]) -> SocketAddr {
    let response = exchange(server, request("GET", path, headers).as_bytes());
    response.assert_status(200);
    served_by(&response)
}

fn start(site: &Site, servers: &[String], upstream_lines: &str) -> Server {
    launch(site, "access_log = \"off\"", servers, upstream_lines, PROXY_ALL).start()
}

#[test]
fn a_dead_server_is_skipped_and_every_request_succeeds() {
    let live = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let dead = Refusing::new();
    let servers = [dead.addr.to_string(), live.addr.to_string()];
    let server = start(&site, &servers, "max_fails = 1\nfail_timeout = \"10s\"");
    for i in 0..6 {
        assert_eq!(get_with(&server, &format!("/{i}"), &[]), live.addr, "request {i}");
    }
    assert_eq!(live.requests().len(), 6);
}

#[test]
fn a_backup_answers_when_the_primaries_refuse() {
    let (first, second) = (Refusing::new(), Refusing::new());
    let backup = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let servers = [
        first.addr.to_string(),
        format!("{} backup", backup.addr),
        second.addr.to_string(),
    ];
    let server = start(&site, &servers, "max_fails = 1\nfail_timeout = \"10s\"");
    for i in 0..4 {
        assert_eq!(
            get_with(&server, &format!("/{i}"), &[]),
            backup.addr,
            "request {i}"
        );
    }
    assert_eq!(backup.requests().len(), 4);
}

/// Round robin over [blackhole, live] twice, so the blackhole fails exactly once (a connect
/// timeout, then the live server answers); then the blackhole starts serving.
fn fail_once_then_revive(fail_timeout: &str) -> (Site, Server, Upstream, Upstream) {
    let live = Upstream::start(Behaviour::Echo);
    let hole = Blackhole::new();
    let site = Site::new();
    let servers = [hole.addr.to_string(), live.addr.to_string()];
    let lines = format!("max_fails = 1\nfail_timeout = \"{fail_timeout}\"\nconnect_timeout = \"200ms\"");
    let server = start(&site, &servers, &lines);
    for i in 0..2 {
        assert_eq!(get_with(&server, &format!("/before/{i}"), &[]), live.addr);
    }
    let revived = hole.revive(Behaviour::Echo);
    (site, server, live, revived)
}

#[test]
fn a_failed_server_is_skipped_until_fail_timeout_passes() {
    let (_site, server, live, revived) = fail_once_then_revive("60s");
    for i in 0..6 {
        assert_eq!(
            get_with(&server, &format!("/after/{i}"), &[]),
            live.addr,
            "request {i}"
        );
    }
    assert_eq!(
        revived.requests().len(),
        0,
        "the failed server was tried within fail_timeout"
    );
}

#[test]
fn a_failed_server_gets_traffic_again_after_fail_timeout() {
    let (_site, server, _live, revived) = fail_once_then_revive("1s");
    wait_until(
        "the revived server to get requests",
        Duration::from_secs(10),
        || (get_with(&server, "/after", &[]) == revived.addr).then_some(()),
    );
}

#[test]
fn round_robin_follows_the_weights() {
    let light = Upstream::start(Behaviour::Echo);
    let heavy = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let servers = [light.addr.to_string(), format!("{} weight=2", heavy.addr)];
    let server = start(&site, &servers, "balance = \"round_robin\"");
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for i in 0..30 {
        *counts
            .entry(get_with(&server, &format!("/{i}"), &[]))
            .or_default() += 1;
    }
    assert_eq!(counts.get(&light.addr), Some(&10), "counts {counts:?}");
    assert_eq!(counts.get(&heavy.addr), Some(&20), "counts {counts:?}");
}

#[test]
fn round_robin_alternates_between_equal_servers() {
    let a = Upstream::start(Behaviour::Echo);
    let b = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let server = start(&site, &addrs(&[&a, &b]), "");
    let order: Vec<SocketAddr> = (0..6).map(|i| get_with(&server, &format!("/{i}"), &[])).collect();
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin repeated a server: {order:?}");
    }
}

#[test]
fn least_conn_sends_new_requests_to_the_idle_server() {
    let (gate_a, behaviour_a) = Behaviour::gate("/hold");
    let (gate_b, behaviour_b) = Behaviour::gate("/hold");
    let a = Upstream::start(behaviour_a);
    let b = Upstream::start(behaviour_b);
    let site = Site::new();
    let server = start(&site, &addrs(&[&a, &b]), "balance = \"least_conn\"");
    let mut held = server.connect();
    held.write_all(request("GET", "/hold", &[]).as_bytes())
        .expect("write the held request");
    let busy = crate::harness::wait_until(
        "the held request at an upstream",
        crate::harness::IO_TIMEOUT,
        || {
            if !a.requests_to("/hold").is_empty() {
                Some(a.addr)
            } else if !b.requests_to("/hold").is_empty() {
                Some(b.addr)
            } else {
                None
            }
        },
    );
    let idle = if busy == a.addr { b.addr } else { a.addr };
    for i in 0..4 {
        assert_eq!(
            get_with(&server, &format!("/quick/{i}"), &[]),
            idle,
            "request {i} while {busy} holds one"
        );
    }
    gate_a.open();
    gate_b.open();
    let (_, response, _) = read_final(&mut held);
    response.assert_status(200);
}

#[test]
fn hash_on_a_header_sends_each_value_to_one_server() {
    let a = Upstream::start(Behaviour::Echo);
    let b = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let server = start(
        &site,
        &addrs(&[&a, &b]),
        "balance = \"hash\"\nhash_key = \"header:X-User\"",
    );
    let mut homes: HashMap<String, SocketAddr> = HashMap::new();
    for round in 0..3 {
        for user in 0..20 {
            let name = format!("user-{user}");
            let header = format!("X-User: {name}");
            let got = get_with(&server, &format!("/r{round}"), &[&header]);
            let home = *homes.entry(name.clone()).or_insert(got);
            assert_eq!(got, home, "{name} moved servers in round {round}");
        }
    }
    let used: std::collections::HashSet<_> = homes.values().collect();
    assert_eq!(used.len(), 2, "20 users all hashed to one server: {homes:?}");
}

/// `hash_key` defaults to the client address.
#[test]
fn hash_on_the_client_address_is_sticky() {
    let a = Upstream::start(Behaviour::Echo);
    let b = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let server = start(&site, &addrs(&[&a, &b]), "balance = \"hash\"");
    let first = get_with(&server, "/0", &[]);
    for i in 1..10 {
        assert_eq!(get_with(&server, &format!("/{i}"), &[]), first, "request {i}");
    }
}
