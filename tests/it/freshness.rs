//! Freshness: a cached small file replaced on disk (write a new file, rename it over the
//! old one) is served new within a bounded time, and no response along the way mixes the
//! two versions or disagrees with its own Content-Length.

use std::time::Duration;

use crate::harness::{read_response, request, wait_until, Server, Site};

const OLD: &str = "old content, version one";
const NEW: &str = "the new content of the page, version two";

/// Fetches `/page.txt` on a connection the server closes, so every byte it sent is seen.
fn fetch_page(server: &Server) -> String {
    let wire = server.send(request("GET", "/page.txt", &["Connection: close"]).as_bytes());
    let mut rest = wire.as_slice();
    let response = read_response(&mut rest);
    response.assert_status(200);
    assert!(
        rest.is_empty(),
        "{} bytes after a body of Content-Length {}: {response}",
        rest.len(),
        response.body.len()
    );
    let body = response.text();
    assert!(
        body == OLD || body == NEW,
        "neither old nor new content: {response}"
    );
    body
}

#[test]
fn a_replaced_file_is_served_new_and_never_mixed() {
    let site = Site::new();
    site.file("page.txt", OLD);
    let server = Server::quick(&site);
    assert_eq!(fetch_page(&server), OLD);
    assert_eq!(fetch_page(&server), OLD);
    let staged = site.base().join("page.txt.new");
    std::fs::write(&staged, NEW).expect("write the new version");
    std::fs::rename(&staged, site.root().join("page.txt")).expect("rename over the old version");
    wait_until("the new content to be served", Duration::from_secs(5), || {
        (fetch_page(&server) == NEW).then_some(())
    });
}
