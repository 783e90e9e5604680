//! Active health checks: a failing server stops receiving traffic in every worker and comes
//! back after `rise` good probes; probes run once per shoal instance, not once per worker.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::support::{addrs, exchange, launch, served_by, PROXY_ALL};
use crate::harness::{request, wait_until, Server, Site};
use crate::upstream::{Behaviour, Upstream};

const CHECK: &str =
    "health_check = { path = \"/health\", interval = \"200ms\", timeout = \"1s\", rise = 2, fall = 3 }";

/// Who answered each of `count` GETs, each on a new client connection (so both workers
/// take some).
fn spread(server: &Server, count: usize) -> Vec<SocketAddr> {
    (0..count)
        .map(|i| {
            let response = exchange(server, request("GET", &format!("/work/{i}"), &[]).as_bytes());
            response.assert_status(200);
            served_by(&response)
        })
        .collect()
}

/// Requests (not probes) an upstream received.
fn traffic(upstream: &Upstream) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.target() != "/health")
        .count()
}

#[test]
fn a_server_failing_its_health_check_stops_receiving_traffic_and_comes_back() {
    let (_, good_behaviour) = Behaviour::health("/health", 200);
    let (sick_status, sick_behaviour) = Behaviour::health("/health", 500);
    let good = Upstream::start(good_behaviour);
    let sick = Upstream::start(sick_behaviour);
    let site = Site::new();
    let server = launch(
        &site,
        "access_log = \"off\"",
        &addrs(&[&good, &sick]),
        CHECK,
        PROXY_ALL,
    )
    .workers(2)
    .start();
    server.wait_for_workers(2);
    wait_until(
        "3 failed probes of the sick server",
        Duration::from_secs(10),
        || (sick.requests_to("/health").len() >= 3).then_some(()),
    );
    wait_until(
        "every worker to skip the sick server",
        Duration::from_secs(10),
        || {
            spread(&server, 10)
                .iter()
                .all(|addr| *addr == good.addr)
                .then_some(())
        },
    );
    let before = traffic(&sick);
    let answered = spread(&server, 20);
    assert!(
        answered.iter().all(|addr| *addr == good.addr),
        "the sick server still got requests: {answered:?}"
    );
    assert_eq!(traffic(&sick), before, "the sick server still got requests");

    sick_status.store(200, Ordering::SeqCst);
    wait_until(
        "the recovered server to get traffic again",
        Duration::from_secs(10),
        || spread(&server, 10).contains(&sick.addr).then_some(()),
    );
}

#[test]
fn health_is_probed_once_per_instance_not_once_per_worker() {
    let (_, behaviour) = Behaviour::health("/health", 200);
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let _server = launch(
        &site,
        "access_log = \"off\"",
        &addrs(&[&upstream]),
        CHECK,
        PROXY_ALL,
    )
    .workers(2)
    .start();
    let window = Duration::from_secs(2);
    // Wait until the probes themselves span the window, then count the ones inside it.
    let probes = wait_until("health probes spanning 2 s", Duration::from_secs(10), || {
        let probes = upstream.requests_to("/health");
        let first = probes.first()?.at;
        (probes.last()?.at.duration_since(first) >= window).then_some(probes)
    });
    let first = probes[0].at;
    let inside = probes
        .iter()
        .filter(|p| p.at.duration_since(first) <= window)
        .count();
    // One prober every 200 ms: about 11 in a closed 2 s window; one per worker: about 22.
    let single = (window.as_millis() / 200 + 1) as usize;
    assert!(
        inside * 2 < single * 3,
        "{inside} probes in {window:?} at a 200 ms interval: more than 1.5 x {single}, probing is per worker"
    );
    assert!(inside >= 2, "only {inside} probes in {window:?}");
}

#[test]
fn a_backup_takes_over_while_the_primary_is_down_and_gives_back() {
    let (primary_status, primary_behaviour) = Behaviour::health("/health", 200);
    let (_, backup_behaviour) = Behaviour::health("/health", 200);
    let primary = Upstream::start(primary_behaviour);
    let backup = Upstream::start(backup_behaviour);
    let site = Site::new();
    let servers = [primary.addr.to_string(), format!("{} backup", backup.addr)];
    let server = launch(&site, "access_log = \"off\"", &servers, CHECK, PROXY_ALL)
        .workers(2)
        .start();
    server.wait_for_workers(2);
    let answered = spread(&server, 10);
    assert!(answered.iter().all(|addr| *addr == primary.addr), "{answered:?}");
    assert_eq!(
        traffic(&backup),
        0,
        "the backup got requests while the primary was up"
    );

    primary_status.store(503, Ordering::SeqCst);
    wait_until(
        "every worker to send to the backup",
        Duration::from_secs(10),
        || {
            spread(&server, 10)
                .iter()
                .all(|addr| *addr == backup.addr)
                .then_some(())
        },
    );
    primary_status.store(200, Ordering::SeqCst);
    wait_until(
        "every worker to give back to the primary",
        Duration::from_secs(10),
        || {
            spread(&server, 10)
                .iter()
                .all(|addr| *addr == primary.addr)
                .then_some(())
        },
    );
}
