//! The admin endpoint: `/metrics` parses as the Prometheus text format (checked by a strict
//! parser here) and counts what the test sent, static and proxied, with upstream errors;
//! totals never go backwards when a worker dies; `/healthz` turns 503 while draining.
//!
//! Counters reach the master with each heartbeat, so tests wait (bounded) for the metrics
//! to show what they did, never for a fixed time.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{free_addr, read_response, signal, wait_until, Launch, Response, Server, Site};
use crate::upstream::{Behaviour, Refusing, Reply, Upstream};

/// Bound on every wait for the metrics to change.
const WAIT: Duration = Duration::from_secs(10);

/// One sample: its name, labels (sorted) and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
struct Metrics {
    /// Family name → type.
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses `text` strictly, failing the test on anything the 0.0.4 text format does not
    /// allow or that shoal promises: HELP then TYPE before a family's samples, each family
    /// once, samples only of the current family, unique series, counters named `_total`,
    /// histograms cumulative, ending in +Inf, with `_count` equal to the +Inf bucket.
    fn parse(text: &str) -> Metrics {
        assert!(text.ends_with('\n'), "the exposition must end with a newline");
        let mut metrics = Metrics::default();
        let mut current: Option<(String, String)> = None;
        let mut pending_help: Option<String> = None;
        let mut series = HashSet::new();
        for (number, line) in text.lines().enumerate() {
            let at = format!("line {}: {line:?}", number + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{at}: HELP without text"));
                assert!(valid_name(name), "{at}: bad metric name");
                assert!(pending_help.is_none(), "{at}: HELP twice without TYPE");
                assert!(
                    !metrics.types.contains_key(name),
                    "{at}: family {name} appears twice"
                );
                pending_help = Some(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{at}: TYPE without kind"));
                assert_eq!(
                    pending_help.take().as_deref(),
                    Some(name),
                    "{at}: TYPE must follow its HELP"
                );
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "{at}: kind {kind}"
                );
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{at}: a counter is named _total");
                }
                metrics.types.insert(name.to_string(), kind.to_string());
                current = Some((name.to_string(), kind.to_string()));
            } else {
                assert!(
                    !line.starts_with('#'),
                    "{at}: a comment that is neither HELP nor TYPE"
                );
                assert!(pending_help.is_none(), "{at}: a sample between HELP and TYPE");
                let sample = parse_sample(line).unwrap_or_else(|why| panic!("{at}: {why}"));
                let (family, kind) = current
                    .as_ref()
                    .unwrap_or_else(|| panic!("{at}: sample before any TYPE"));
                let belongs = match kind.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| sample.name == format!("{family}{suffix}")),
                    _ => &sample.name == family,
                };
                assert!(belongs, "{at}: sample of another family than {family}");
                let key = format!("{}{:?}", sample.name, sample.labels);
                assert!(series.insert(key), "{at}: the same series twice");
                metrics.samples.push(sample);
            }
        }
        assert!(pending_help.is_none(), "HELP without TYPE at the end");
        metrics.check_histograms();
        metrics
    }

    fn check_histograms(&self) {
        for (family, _) in self.types.iter().filter(|(_, kind)| *kind == "histogram") {
            let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for sample in self
                .samples
                .iter()
                .filter(|s| s.name == format!("{family}_bucket"))
            {
                let mut labels = sample.labels.clone();
                let le = labels.remove("le").expect("a bucket has le");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le is a number")
                };
                buckets
                    .entry(format!("{labels:?}"))
                    .or_default()
                    .push((le, sample.value));
            }
            for (labels, buckets) in buckets {
                let what = format!("{family}{labels}");
                assert!(
                    buckets.windows(2).all(|w| w[0].0 < w[1].0),
                    "{what}: le ascending"
                );
                assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{what}: cumulative");
                let (last_le, inf) = *buckets.last().unwrap();
                assert_eq!(last_le, f64::INFINITY, "{what}: ends in +Inf");
                let find = |suffix: &str| {
                    self.samples
                        .iter()
                        .find(|s| {
                            s.name == format!("{family}{suffix}") && format!("{:?}", s.labels) == labels
                        })
                        .unwrap_or_else(|| panic!("{what}: no {suffix}"))
                        .value
                };
                assert_eq!(find("_count"), inf, "{what}: _count equals the +Inf bucket");
                assert!(find("_sum") >= 0.0, "{what}: _sum");
            }
        }
    }

    /// The value of the one series `name{labels}` (labels given must match exactly).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .unwrap_or_else(|| panic!("no series {name}{wanted:?}"))
            .value
    }

    /// The sum of every series of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{label="value",...} value` or `name value`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("bad name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            let eq = inner[start..].find('=').ok_or("label without =")? + start;
            let label = &inner[start..eq];
            if !valid_name(label) || label.contains(':') {
                return Err(format!("bad label name {label:?}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value must be quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("bad escape \\{other}")),
                    },
                    '\n' => return Err("raw newline in a label value".into()),
                    c => value.push(c),
                }
            }
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    rest = &inner[i + 1..];
                    break;
                }
                _ => return Err("expected , or } after a label".into()),
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        text => text.parse().map_err(|_| format!("bad value {text:?}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `GET path` on the admin endpoint.
fn admin_get(admin: SocketAddr, path: &str) -> Response {
    let mut stream = std::net::TcpStream::connect(admin).expect("connect to the admin endpoint");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    read_response(&mut stream)
}

fn scrape(admin: SocketAddr) -> Metrics {
    let response = admin_get(admin, "/metrics");
    response.assert_status(200);
    assert_eq!(
        response.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Metrics::parse(&response.text())
}

/// Scrapes until `check` accepts the metrics.
fn wait_for_metrics(admin: SocketAddr, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    wait_until(what, WAIT, || Some(scrape(admin)).filter(|m| check(m)))
}

/// A shoal with `workers` workers and the admin endpoint: `/api/` proxied to `app`,
/// `/dead/` to `dead`, everything else from the site.
fn start(site: &Site, app: SocketAddr, dead: SocketAddr, workers: u16, top: &str) -> (Server, SocketAddr) {
    start_with(site, &app.to_string(), dead, workers, top)
}

/// Like [`start`], with `app` the whole server line of `[upstream.app]` (`ADDR OPTIONS`).
fn start_with(site: &Site, app: &str, dead: SocketAddr, workers: u16, top: &str) -> (Server, SocketAddr) {
    let admin = free_addr();
    let text = format!(
        "access_log = \"off\"\n{top}\n[supervisor]\nheartbeat_interval = \"200ms\"\n[admin]\nlisten = \"{admin}\"\n\
         [upstream.app]\nservers = [\"{app}\"]\n[upstream.dead]\nservers = [\"{dead}\"]\n\
         [[server]]\nlisten = [\"{{listen}}\"]\n  [[server.route]]\n  prefix = \"/api/\"\n  upstream = \"app\"\n  \
         [[server.route]]\n  prefix = \"/dead/\"\n  upstream = \"dead\"\n  [[server.route]]\n  prefix = \"/\"\n  \
         root = \"site\"\n"
    );
    let server = Launch::config_file(site, &text).workers(workers).start();
    (server, admin)
}

fn site() -> Site {
    let site = Site::new();
    site.file("a.txt", "alpha");
    site
}

#[test]
fn metrics_parse_and_count_static_and_proxied_requests_and_upstream_errors() {
    let site = site();
    let app = Upstream::start(Behaviour::Echo);
    let dead = Refusing::new();
    let (server, admin) = start(&site, app.addr, dead.addr, 2, "");
    for _ in 0..3 {
        server.get("/a.txt").assert_status(200);
    }
    for _ in 0..2 {
        server.get("/missing.txt").assert_status(404);
        server.get("/api/x").assert_status(200);
    }
    server.get("/dead/x").assert_status(502);
    // 8 requests and the harness's readiness probe (a 404 on `/`).
    let metrics = wait_for_metrics(admin, "9 requests counted", |m| {
        m.sum("shoal_requests_total", &[]) == 9.0
    });
    let requests =
        |route: &str, code: &str| metrics.value("shoal_requests_total", &[("route", route), ("code", code)]);
    assert_eq!(requests("/", "2xx"), 3.0);
    assert_eq!(requests("/", "4xx"), 3.0);
    assert_eq!(requests("/api/", "2xx"), 2.0);
    assert_eq!(requests("/dead/", "5xx"), 1.0);
    assert_eq!(requests("none", "4xx"), 0.0);
    let errors = |upstream: &str, kind: &str| {
        metrics.value(
            "shoal_upstream_errors_total",
            &[("upstream", upstream), ("kind", kind)],
        )
    };
    assert_eq!(errors("dead", "connect_refused"), 1.0);
    assert_eq!(
        metrics.sum("shoal_upstream_errors_total", &[("upstream", "app")]),
        0.0
    );
    let count =
        |upstream: &str| metrics.value("shoal_upstream_response_seconds_count", &[("upstream", upstream)]);
    assert_eq!(count("app"), 2.0);
    assert_eq!(count("dead"), 0.0);
    assert!(metrics.value("shoal_received_bytes_total", &[]) > 0.0);
    assert!(metrics.value("shoal_sent_bytes_total", &[]) > 3.0 * 5.0);
    let app_server = app.addr.to_string();
    assert_eq!(
        metrics.value(
            "shoal_upstream_server_up",
            &[("upstream", "app"), ("server", &app_server)]
        ),
        1.0
    );
    assert_eq!(metrics.value("shoal_reloads_total", &[("result", "ok")]), 0.0);
    assert_eq!(metrics.sum("shoal_restarts_total", &[]), 0.0);
    // The per-worker families add up to the totals, and every slot has its series.
    for (total, per_worker) in [
        ("shoal_requests_total", "shoal_worker_requests_total"),
        ("shoal_sent_bytes_total", "shoal_worker_sent_bytes_total"),
        (
            "shoal_upstream_errors_total",
            "shoal_worker_upstream_errors_total",
        ),
        (
            "shoal_upstream_response_seconds_count",
            "shoal_worker_upstream_response_seconds_count",
        ),
    ] {
        assert_eq!(
            metrics.sum(total, &[]),
            metrics.sum(per_worker, &[]),
            "{per_worker}"
        );
    }
    for worker in ["0", "1"] {
        metrics.value("shoal_worker_connections_active", &[("worker", worker)]);
        metrics.value("shoal_worker_received_bytes_total", &[("worker", worker)]);
    }
    assert_eq!(metrics.types["shoal_upstream_response_seconds"], "histogram");
    assert_eq!(metrics.types["shoal_connections_active"], "gauge");
}

#[test]
fn totals_never_go_backwards_across_a_crash_and_reloads() {
    let site = site();
    let app = Upstream::start(Behaviour::Echo);
    let dead = Refusing::new();
    let (server, admin) = start(&site, app.addr, dead.addr, 2, "pid_file = \"shoal.pid\"");
    for _ in 0..6 {
        server.get("/api/x").assert_status(200);
    }
    let before = wait_for_metrics(admin, "7 requests counted", |m| {
        m.sum("shoal_requests_total", &[]) == 7.0
    });
    let latency_before = before.value("shoal_upstream_response_seconds_count", &[("upstream", "app")]);
    assert_eq!(latency_before, 6.0);
    // Whatever the killed worker counted must stay in the totals.
    let workers = server.wait_for_workers(2);
    let victim = workers[0];
    assert!(signal(victim, "KILL"), "kill -KILL {victim}");
    let after = wait_for_metrics(admin, "a crash restart", |m| {
        m.value("shoal_restarts_total", &[("reason", "crash")]) == 1.0
    });
    assert_eq!(
        after.sum("shoal_requests_total", &[]),
        7.0,
        "requests went backwards"
    );
    assert_eq!(
        after.value("shoal_upstream_response_seconds_count", &[("upstream", "app")]),
        6.0
    );
    assert_eq!(after.sum("shoal_worker_requests_total", &[]), 7.0);

    // The crashed slot may be backing off (its worker died young): reload once both run.
    wait_until("the crashed worker's successor", WAIT, || {
        Some(server.workers()).filter(|pids| pids.len() == 2 && !pids.contains(&victim))
    });
    server.send_signal("HUP");
    let reloaded = wait_for_metrics(admin, "a completed reload", |m| {
        m.value("shoal_reloads_total", &[("result", "ok")]) == 1.0
    });
    assert_eq!(
        reloaded.value("shoal_restarts_total", &[("reason", "reload")]),
        2.0
    );
    assert!(
        reloaded.sum("shoal_requests_total", &[]) >= 7.0,
        "requests went backwards"
    );
    std::fs::write(site.base().join("shoal.toml"), "workers = \"two\"\n").unwrap();
    server.send_signal("HUP");
    let refused = wait_for_metrics(admin, "a failed reload", |m| {
        m.value("shoal_reloads_total", &[("result", "failed")]) == 1.0
    });
    assert_eq!(refused.value("shoal_reloads_total", &[("result", "ok")]), 1.0);
}

#[test]
fn queue_metrics_show_each_capped_server_and_the_waits() {
    let site = site();
    let (gate, behaviour) = Behaviour::gate("/api/slow");
    let app = Upstream::start(behaviour);
    let dead = Refusing::new();
    let (server, admin) = start_with(&site, &format!("{} max_conns=1", app.addr), dead.addr, 1, "");
    let mut first = server.connect();
    first
        .write_all(b"GET /api/slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    app.wait_for_requests(1);
    let mut second = server.connect();
    second
        .write_all(b"GET /api/x HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let app_server = app.addr.to_string();
    let server_labels = [("upstream", "app"), ("server", app_server.as_str())];
    let metrics = wait_for_metrics(admin, "one request queued", |m| {
        m.value("shoal_upstream_queued", &[("upstream", "app")]) == 1.0
    });
    assert_eq!(
        metrics.value("shoal_upstream_server_in_flight", &server_labels),
        1.0
    );
    assert_eq!(
        metrics.value("shoal_upstream_server_max_conns", &server_labels),
        1.0
    );
    gate.open();
    read_response(&mut first).assert_status(200);
    read_response(&mut second).assert_status(200);
    let metrics = wait_for_metrics(admin, "the wait counted", |m| {
        m.value("shoal_upstream_queue_wait_seconds_count", &[("upstream", "app")]) == 1.0
    });
    assert_eq!(
        metrics.value("shoal_upstream_server_in_flight", &server_labels),
        0.0
    );
    assert_eq!(
        metrics.value("shoal_upstream_queued", &[("upstream", "app")]),
        0.0
    );
    assert_eq!(
        metrics.value("shoal_upstream_queue_timeouts_total", &[("upstream", "app")]),
        0.0
    );
    assert_eq!(metrics.types["shoal_upstream_queue_wait_seconds"], "histogram");
}

#[test]
fn healthz_is_200_while_serving_and_503_while_draining() {
    let site = site();
    let (gate, behaviour) = Behaviour::gate("/api/slow");
    let app = Upstream::start(behaviour);
    let dead = Refusing::new();
    let (mut server, admin) = start(&site, app.addr, dead.addr, 1, "");
    // 503 "starting" until the master has heard the worker's first beat.
    let healthy = wait_until("/healthz to say 200", WAIT, || {
        Some(admin_get(admin, "/healthz")).filter(|r| r.status == 200)
    });
    assert_eq!(healthy.text(), "ok\n");
    // A slow proxied request keeps the instance draining after TERM.
    let mut slow = server.connect();
    slow.write_all(b"GET /api/slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    app.wait_for_requests(1);
    server.send_signal("TERM");
    let draining = wait_until("/healthz to say 503", WAIT, || {
        Some(admin_get(admin, "/healthz")).filter(|r| r.status == 503)
    });
    assert_eq!(draining.text(), "stopping\n");
    gate.open();
    read_response(&mut slow).assert_status(200);
    assert_eq!(server.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn clients_that_send_one_byte_and_wait_cannot_starve_the_admin_endpoint() {
    let site = site();
    let app = Upstream::start(Behaviour::Echo);
    let dead = Refusing::new();
    let (_server, admin) = start(&site, app.addr, dead.addr, 1, "");
    wait_until("/healthz to say 200", WAIT, || {
        Some(admin_get(admin, "/healthz")).filter(|r| r.status == 200)
    });
    // Far more than the endpoint serves at once, each one byte into a request, then silent.
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut stream =
            std::net::TcpStream::connect_timeout(&admin, WAIT).expect("connect a stalled client");
        stream.write_all(b"G").expect("send one byte");
        stalled.push(stream);
    }
    for round in 0..5 {
        let health = admin_get(admin, "/healthz");
        assert_eq!(health.status, 200, "round {round}: {health}");
        assert_eq!(health.text(), "ok\n");
        let metrics = admin_get(admin, "/metrics");
        assert_eq!(metrics.status, 200, "round {round}: {metrics}");
        // More stalled clients between the probes.
        for _ in 0..20 {
            let mut stream =
                std::net::TcpStream::connect_timeout(&admin, WAIT).expect("connect a stalled client");
            stream.write_all(b"G").expect("send one byte");
            stalled.push(stream);
        }
    }
}

/// Servers sharing an address are told apart by a `server` label (their first name); a
/// server without names has none.
#[test]
fn responses_are_counted_per_server_name() {
    let site = site();
    let admin = free_addr();
    let text = format!(
        "access_log = \"off\"\n[supervisor]\nheartbeat_interval = \"200ms\"\n[admin]\nlisten = \"{admin}\"\n\
         [[server]]\nlisten = [\"{{listen}}\"]\nnames = [\"a.test\"]\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n\
         [[server]]\nlisten = [\"{{listen}}\"]\ndefault = true\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n"
    );
    let server = Launch::config_file(&site, &text).start();
    for _ in 0..2 {
        server
            .request(b"GET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .assert_status(200);
    }
    // Two requests to the default server: this one and the harness's readiness probe (404).
    server.get("/a.txt").assert_status(200);
    let metrics = wait_for_metrics(admin, "4 requests counted", |m| {
        m.sum("shoal_requests_total", &[]) == 4.0
    });
    let named = &[("server", "a.test"), ("route", "/"), ("code", "2xx")];
    assert_eq!(metrics.value("shoal_requests_total", named), 2.0);
    assert_eq!(
        metrics.value("shoal_requests_total", &[("route", "/"), ("code", "2xx")]),
        1.0
    );
    assert_eq!(
        metrics.value("shoal_requests_total", &[("route", "/"), ("code", "4xx")]),
        1.0
    );
}

#[test]
fn the_cache_counts_its_events_and_bytes() {
    let site = site();
    let app = Upstream::start(Behaviour::Reply(
        Reply::new(200)
            .header("Cache-Control", "max-age=60")
            .body("cached"),
    ));
    let admin = free_addr();
    let text = format!(
        "access_log = \"off\"\n[supervisor]\nheartbeat_interval = \"200ms\"\n[admin]\nlisten = \"{admin}\"\n\
         [cache]\npath = \"cache\"\n[upstream.app]\nservers = [\"{}\"]\n\
         [[server]]\nlisten = [\"{{listen}}\"]\n  [[server.route]]\n  prefix = \"/harness-ready-probe\"\n  \
         root = \"site\"\n  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n  cache = true\n",
        app.addr
    );
    let server = Launch::config_file(&site, &text).start();
    server.get("/one").assert_status(200);
    server.get("/one").assert_status(200);
    server.get("/one").assert_status(200);
    let event = |m: &Metrics, name: &str| m.value("shoal_cache_events_total", &[("event", name)]);
    let metrics = wait_for_metrics(admin, "two hits counted", |m| event(m, "hit") == 2.0);
    assert_eq!(event(&metrics, "miss"), 1.0);
    assert_eq!(event(&metrics, "stored"), 1.0);
    assert_eq!(event(&metrics, "stale"), 0.0);
    assert!(metrics.value("shoal_cache_bytes", &[]) > "cached".len() as f64);
    assert_eq!(metrics.value("shoal_cache_evictions_total", &[]), 0.0);
}
