//! The examples in `deploy/` are real: the config inside deploy/kubernetes.yaml passes
//! `shoal check`, and run as the pod would run it (addresses moved to loopback, the app to a
//! test upstream), its `/healthz` says 200 while serving and 503 once SIGTERM arrived, while
//! the request in flight still completes (the drain the Deployment relies on).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::{check_config, free_addr, request, wait_until, Launch, Site, IO_TIMEOUT};
use crate::proxy::support::exchange;
use crate::upstream::{Behaviour, Upstream};

const KUBERNETES: &str = include_str!("../../deploy/kubernetes.yaml");

/// The `shoal.toml: |` block of the ConfigMap, dedented.
fn pod_config() -> String {
    let mut lines = KUBERNETES
        .lines()
        .skip_while(|line| line.trim() != "shoal.toml: |");
    assert!(
        lines.next().is_some(),
        "no `shoal.toml: |` in deploy/kubernetes.yaml"
    );
    let mut text = String::new();
    for line in lines {
        if !line.trim().is_empty() && !line.starts_with("    ") {
            break;
        }
        text.push_str(line.get(4..).unwrap_or_default());
        text.push('\n');
    }
    text
}

/// The pod's config with its addresses, root and app moved to this test's.
fn local_config(site: &Site, admin: SocketAddr, app: SocketAddr) -> String {
    let config = pod_config();
    for expected in [
        "0.0.0.0:8080",
        "0.0.0.0:9090",
        "/srv/www",
        "app.default.svc.cluster.local:3000",
    ] {
        assert!(
            config.contains(expected),
            "{expected} not in the pod config:\n{config}"
        );
    }
    config
        .replace("0.0.0.0:8080", "{listen}")
        .replace("0.0.0.0:9090", &admin.to_string())
        .replace("/srv/www", &site.root().display().to_string())
        .replace("app.default.svc.cluster.local:3000", &app.to_string())
}

fn healthz(admin: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&admin, IO_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.get(9..12)?.parse().ok()
}

#[test]
fn the_kubernetes_config_passes_check() {
    let site = Site::new();
    let text = local_config(&site, free_addr(), free_addr()).replace("{listen}", &free_addr().to_string());
    let path = site.base().join("pod.toml");
    std::fs::write(&path, text).expect("write pod.toml");
    let exited = check_config(&path);
    assert_eq!(exited.code, Some(0), "{exited:?}");
}

#[test]
fn the_pod_config_serves_and_drains_on_sigterm_with_healthz_turning_503() {
    let site = Site::new();
    site.file("index.html", "<p>Served by shoal.</p>");
    let (gate, behaviour) = Behaviour::gate("/slow");
    let app = Upstream::start(behaviour);
    let admin = free_addr();
    let mut server = Launch::config_file(&site, &local_config(&site, admin, app.addr))
        .workers(2)
        .start();
    wait_until("/healthz to say 200", Duration::from_secs(10), || {
        (healthz(admin) == Some(200)).then_some(())
    });
    assert_eq!(
        server.get("/").assert_status(200).text(),
        "<p>Served by shoal.</p>"
    );
    exchange(&server, request("GET", "/api/fast", &[]).as_bytes()).assert_status(200);
    let addr = server.addr;
    let in_flight = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream
            .write_all(request("GET", "/api/slow", &["Connection: close"]).as_bytes())
            .expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    });
    // The readiness probe, /api/fast, then the slow one: in flight at the app.
    let slow_at_app = app.wait_for_requests(3);
    assert!(slow_at_app[2].head.contains("/slow"), "{:?}", slow_at_app[2].head);
    server.send_signal("TERM");
    wait_until(
        "/healthz to say 503 while draining",
        Duration::from_secs(10),
        || (healthz(admin) == Some(503)).then_some(()),
    );
    gate.open();
    let answer = in_flight.join().expect("the in-flight client");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "the in-flight request was not finished: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(server.wait_exit(Duration::from_secs(25)).code(), Some(0));
}
