//! Servers chosen by name among those sharing an address: exact names, `*.` and `.*`
//! wildcards, case, a trailing dot and the port ignored, the default server for everything
//! else and for HTTP/1.0 without Host, and an absolute-form target's authority.

use crate::harness::{Launch, Site};

#[test]
fn the_host_picks_the_server_on_a_shared_address() {
    let site = Site::new();
    for (dir, body) in [
        ("a", "site a"),
        ("b", "site b"),
        ("www", "site www"),
        ("d", "the default"),
    ] {
        site.file(&format!("{dir}/index.html"), body);
    }
    let server = |names: &str, root: &str, extra: &str| {
        format!(
            "[[server]]\nlisten = [\"{{listen}}\"]\nnames = [{names}]\n{extra}  [[server.route]]\n  prefix = \"/\"\n  root = \"site/{root}\"\n"
        )
    };
    let text = [
        "access_log = \"off\"\n".to_string(),
        server("\"a.test\", \"*.a.test\"", "a", ""),
        server("\"b.test\"", "b", ""),
        server("\"www.*\"", "www", ""),
        server("", "d", "default = true\n"),
    ]
    .concat();
    let server = Launch::config_file(&site, &text).start();
    let body = |raw: &str| {
        let response = server.request(raw.as_bytes());
        response.assert_status(200);
        response.text()
    };
    let host = |host: &str| body(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
    assert_eq!(host("a.test"), "site a");
    assert_eq!(
        host("X.A.Test."),
        "site a",
        "a wildcard, whatever the case and a trailing dot"
    );
    assert_eq!(host("b.test:8080"), "site b", "the port does not count");
    assert_eq!(host("www.example.org"), "site www");
    assert_eq!(host("other.example"), "the default");
    assert_eq!(host("[::1]"), "the default");
    assert_eq!(
        body("GET / HTTP/1.0\r\n\r\n"),
        "the default",
        "HTTP/1.0 without Host"
    );
    assert_eq!(
        body("GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        "site b",
        "an absolute-form target's authority picks the server"
    );
}
