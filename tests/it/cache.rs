//! The response cache (issue 16): what is stored and answered from storage, what goes
//! upstream every time, `Cache-Status` and `Age`, variants by `Vary`, and entries that
//! outlive the process and serve every worker.

use std::io::Write;

use crate::harness::{read_head_response, request, Launch, Response, Server, Site};
use crate::proxy::support::{addrs, config};
use crate::upstream::{Behaviour, Reply, Upstream};

/// `/` proxied to `upstream` with caching on (`route_lines` added to the route), entries in
/// the site's `cache` directory.
fn cached_config(upstream: &Upstream, route_lines: &str) -> String {
    let routes = format!(
        "  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n  cache = true\n{route_lines}\n"
    );
    config(
        "access_log = \"off\"\n[cache]\npath = \"cache\"",
        &addrs(&[upstream]),
        "",
        &routes,
    )
}

fn start(site: &Site, upstream: &Upstream, route_lines: &str) -> Server {
    Launch::config_file(site, &cached_config(upstream, route_lines)).start()
}

fn status(response: &Response) -> &str {
    response.expect_header("cache-status")
}

fn fixed(cache_control: &str) -> Upstream {
    Upstream::start(Behaviour::Reply(
        Reply::new(200)
            .header("Cache-Control", cache_control)
            .header("Content-Type", "text/plain")
            .body("hello from the app"),
    ))
}

#[test]
fn a_stored_response_answers_the_next_requests_with_its_age() {
    let upstream = fixed("max-age=60");
    let site = Site::new();
    let server = start(&site, &upstream, "");
    let first = server.get("/page?x=1");
    first.assert_status(200);
    assert_eq!(status(&first), "shoal; fwd=miss; stored");
    assert_eq!(first.text(), "hello from the app");
    for _ in 0..3 {
        let hit = server.get("/page?x=1");
        hit.assert_status(200);
        assert_eq!(status(&hit), "shoal; hit");
        assert_eq!(hit.text(), "hello from the app");
        assert_eq!(hit.header("content-type"), Some("text/plain"));
        assert_eq!(hit.header("cache-control"), Some("max-age=60"));
        let age: u64 = hit.expect_header("age").parse().expect("Age is a number");
        assert!(age <= 60, "age {age}");
    }
    let mut stream = server.connect();
    stream
        .write_all(request("HEAD", "/page?x=1", &[]).as_bytes())
        .expect("a HEAD request");
    let head = read_head_response(&mut stream);
    assert_eq!(
        status(&head),
        "shoal; hit",
        "HEAD is answered from the stored GET"
    );
    assert_eq!(head.header("content-length"), Some("18"));
    assert!(head.body.is_empty());
    assert_eq!(
        upstream.requests_to("/page?x=1").len(),
        1,
        "the app saw one request"
    );
    let other = server.get("/page?x=2");
    assert_eq!(
        status(&other),
        "shoal; fwd=miss; stored",
        "the query is part of the key"
    );
    assert_eq!(upstream.requests().len(), 2);
}

#[test]
fn what_may_not_be_stored_goes_upstream_every_time() {
    let cases = [
        (fixed("no-store"), "", "no-store"),
        (fixed("private, max-age=60"), "", "private"),
        (
            Upstream::start(Behaviour::Reply(
                Reply::new(200)
                    .header("Cache-Control", "max-age=60")
                    .header("Set-Cookie", "s=1")
                    .body("x"),
            )),
            "",
            "set-cookie",
        ),
        (Upstream::start(Behaviour::Echo), "", "no-freshness"),
    ];
    for (upstream, route_lines, detail) in cases {
        let site = Site::new();
        let server = start(&site, &upstream, route_lines);
        for _ in 0..2 {
            let response = server.get("/");
            assert_eq!(status(&response), format!("shoal; fwd=miss; detail={detail}"));
        }
        assert_eq!(upstream.requests().len(), 2, "{detail}: both reached the app");
    }
}

#[test]
fn cache_ttl_stores_answers_that_state_no_freshness() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let server = start(&site, &upstream, "  cache_ttl = \"60s\"");
    let first = server.get_with("/", &["X-Seen: first"]);
    assert_eq!(status(&first), "shoal; fwd=miss; stored");
    let second = server.get_with("/", &["X-Seen: second"]);
    assert_eq!(status(&second), "shoal; hit");
    assert!(
        second.text().contains("X-Seen: first"),
        "the stored echo: {}",
        second.text()
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn authorization_keeps_a_response_out_unless_it_says_public() {
    let private = fixed("max-age=60");
    let site = Site::new();
    let server = start(&site, &private, "");
    let response = server.get_with("/", &["Authorization: Basic dTpw"]);
    assert_eq!(status(&response), "shoal; fwd=miss; detail=authorization");
    let public = fixed("public, max-age=60");
    let site = Site::new();
    let server = start(&site, &public, "");
    let response = server.get_with("/", &["Authorization: Basic dTpw"]);
    assert_eq!(status(&response), "shoal; fwd=miss; stored");
}

#[test]
fn vary_keeps_the_variant_a_request_asked_for() {
    let upstream = Upstream::start(Behaviour::Reply(
        Reply::new(200)
            .header("Cache-Control", "max-age=60")
            .header("Vary", "Accept-Language")
            .body("localised"),
    ));
    let site = Site::new();
    let server = start(&site, &upstream, "");
    let german = ["Accept-Language: de"];
    assert_eq!(status(&server.get_with("/", &german)), "shoal; fwd=miss; stored");
    assert_eq!(status(&server.get_with("/", &german)), "shoal; hit");
    let english = server.get_with("/", &["Accept-Language: en"]);
    assert_eq!(status(&english), "shoal; fwd=vary-miss; stored");
    assert_eq!(
        status(&server.get_with("/", &["Accept-Language: en"])),
        "shoal; hit"
    );
    assert_eq!(upstream.requests().len(), 2);
}

#[test]
fn entries_serve_every_worker_and_outlive_a_restart() {
    let upstream = fixed("max-age=600");
    let site = Site::new();
    let text = cached_config(&upstream, "");
    let mut server = Launch::config_file(&site, &text).workers(2).start();
    assert_eq!(status(&server.get("/shared")), "shoal; fwd=miss; stored");
    // New connections spread over both workers (one listening socket each).
    for _ in 0..8 {
        assert_eq!(status(&server.get("/shared")), "shoal; hit");
    }
    server.stop();
    let restarted = Launch::config_file(&site, &text).workers(2).start();
    assert_eq!(
        status(&restarted.get("/shared")),
        "shoal; hit",
        "the entry outlived the process"
    );
    assert_eq!(upstream.requests().len(), 1);
}
