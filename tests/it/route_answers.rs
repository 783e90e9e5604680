//! Routes that answer by themselves: redirects with every placeholder, and fixed responses.

use std::io::Write;

use crate::harness::{read_to_close, Launch, Site};

fn start() -> (Site, crate::harness::Server) {
    let site = Site::new();
    let text = "access_log = \"off\"\n[[server]]\nlisten = [\"{listen}\"]\n\
        [[server.route]]\nprefix = \"/old/\"\nredirect = { to = \"https://{host}/new{path}?{query}&s={scheme}\", status = 301 }\n\
        [[server.route]]\nprefix = \"/u/\"\nredirect = { to = \"https://x.test{uri}\" }\n\
        [[server.route]]\nprefix = \"/health\"\nrespond = { body = \"ok\\n\" }\n\
        [[server.route]]\nprefix = \"/robots.txt\"\nrespond = { body = \"User-agent: *\\nDisallow: /\\n\", content_type = \"text/plain\" }\n\
        [[server.route]]\nprefix = \"/admin/\"\nrespond = { status = 403, body = \"no\" }\n\
        [[server.route]]\nprefix = \"/\"\nroot = \"site\"\n";
    let server = Launch::config_file(&site, text).start();
    (site, server)
}

#[test]
fn a_redirect_fills_in_every_placeholder() {
    let (_site, server) = start();
    let moved = server.request(b"GET /old/a%20b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n");
    moved.assert_status(301);
    assert_eq!(
        moved.header("Location"),
        Some("https://Example.com/new/old/a%20b?x=1&s=http"),
        "{moved}"
    );
    let found = server.request(b"GET /u/p?q=1&r HTTP/1.1\r\nHost: test\r\n\r\n");
    found.assert_status(302);
    assert_eq!(
        found.header("Location"),
        Some("https://x.test/u/p?q=1&r"),
        "{found}"
    );
    let bare = server.request(b"GET http://other.test/u/x HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(bare.header("Location"), Some("https://x.test/u/x"), "{bare}");
    let mut stream = server.connect();
    stream
        .write_all(b"HEAD /u/ HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .expect("write");
    let head = String::from_utf8(read_to_close(&mut stream)).expect("text");
    assert!(
        head.starts_with("HTTP/1.1 302 Found\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
}

#[test]
fn a_fixed_response_has_its_status_body_and_type() {
    let (_site, server) = start();
    let health = server.get("/health");
    health.assert_status(200);
    assert_eq!(health.text(), "ok\n");
    assert_eq!(health.header("Content-Type"), Some("text/plain; charset=utf-8"));
    let robots = server.get("/robots.txt");
    assert_eq!(
        (robots.text().as_str(), robots.header("Content-Type")),
        ("User-agent: *\nDisallow: /\n", Some("text/plain"))
    );
    let admin = server.get("/admin/panel");
    admin.assert_status(403);
    assert_eq!(admin.text(), "no");
}

/// Exact and regex routes beside prefixes, with nginx's precedence.
#[test]
fn exact_and_regex_routes_take_precedence_over_prefixes() {
    let site = Site::new();
    site.file("x.txt", "file x").file("favicon.ico", "icon");
    let text = "access_log = \"off\"\n[[server]]\nlisten = [\"{listen}\"]\n\
        [[server.route]]\nprefix = \"/\"\nroot = \"site\"\n\
        [[server.route]]\nregex = '\\.php$'\nrespond = { body = \"php\" }\n\
        [[server.route]]\nexact = \"/favicon.ico\"\nrespond = { status = 204 }\n";
    let server = Launch::config_file(&site, text).start();
    assert_eq!(server.get("/a/b.php").text(), "php");
    server.get("/favicon.ico").assert_status(204);
    assert_eq!(server.get("/x.txt").text(), "file x");
    server.get("/a/b.phps").assert_status(404);
}
