//! try_files: a route with `root` and `fallback` serves what exists on disk and proxies the
//! rest with the path unchanged; the example config and its quick-mode equivalent.

use super::support::{api_and_files, exchange};
use crate::harness::{request, Launch, Server, Site};
use crate::upstream::{describe, Behaviour, Upstream};

fn site_with_a_file() -> Site {
    let site = Site::new();
    site.file("existing.txt", "from disk");
    site
}

fn assert_try_files(server: &Server, upstream: &Upstream) {
    let response = exchange(server, request("GET", "/existing.txt", &[]).as_bytes());
    response.assert_status(200);
    assert_eq!(response.text(), "from disk");
    assert_eq!(response.header("X-Upstream"), None, "{response}");
    assert!(
        upstream.requests_to("/existing.txt").is_empty(),
        "{}",
        describe(&upstream.requests())
    );

    let response = exchange(server, request("GET", "/missing/page?q=1", &[]).as_bytes());
    response.assert_status(200);
    assert_eq!(
        response.header("X-Upstream"),
        Some(upstream.addr.to_string().as_str()),
        "{response}"
    );
    assert_eq!(
        upstream.requests_to("/missing/page?q=1").len(),
        1,
        "{}",
        describe(&upstream.requests())
    );
}

#[test]
fn existing_files_are_served_and_missing_ones_proxied_with_the_path_unchanged() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = site_with_a_file();
    let server = api_and_files(&site, &upstream);
    assert_try_files(&server, &upstream);
    let response = exchange(&server, request("GET", "/api/users?id=1", &[]).as_bytes());
    response.assert_status(200);
    assert_eq!(
        upstream.requests_to("/users?id=1").len(),
        1,
        "{}",
        describe(&upstream.requests())
    );
}

#[test]
fn a_post_to_a_missing_file_is_proxied_with_its_body() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = site_with_a_file();
    let server = api_and_files(&site, &upstream);
    let mut raw = request("POST", "/form", &["Content-Length: 4"]).into_bytes();
    raw.extend_from_slice(b"a=1&");
    exchange(&server, &raw).assert_status(200);
    let seen = upstream.requests_to("/form");
    assert_eq!(seen.len(), 1, "{}", describe(&upstream.requests()));
    assert_eq!(seen[0].body, b"a=1&");
}

#[test]
fn quick_mode_with_root_and_upstream_falls_back_to_the_upstream() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = site_with_a_file();
    let server = Launch::quick(&site)
        .arg("-u")
        .arg(upstream.addr.to_string())
        .start();
    assert_try_files(&server, &upstream);
}
