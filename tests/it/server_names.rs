//! Servers chosen by name among those sharing an address: exact names, `*.` and `.*`
//! wildcards, case, a trailing dot and the port ignored, the default server for everything
//! else and for HTTP/1.0 without Host, and an absolute-form target's authority.

use std::time::Duration;

use crate::harness::{wait_until, Launch, Site};

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
    let log = site.base().join("access.log");
    let text = [
        format!(
            "access_log = \"{}\"\naccess_log_format = \"json\"\n",
            log.display()
        ),
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
    // Each JSON line names the server that answered (its first name; null for none).
    let servers = wait_until("the access log to have 8 lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.contains("harness-ready-probe"))
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (lines.len() == 8).then(|| {
            lines
                .iter()
                .map(|l| l["server"].as_str().map(String::from))
                .collect::<Vec<_>>()
        })
    });
    let a = Some("a.test".to_string());
    let expected = [
        a.clone(),
        a,
        Some("b.test".into()),
        Some("www.*".into()),
        None,
        None,
        None,
    ];
    assert_eq!(servers[..7], expected);
    assert_eq!(servers[7].as_deref(), Some("b.test"));
}

/// A reload may add a named server on an address already served (no new socket), and one
/// that claims a name twice is refused while the running config keeps serving.
#[test]
fn a_reload_adds_a_named_server_on_a_served_address() {
    let site = Site::new();
    site.file("a/index.html", "site a").file("b/index.html", "site b");
    let server_block = |names: &str, root: &str| {
        format!("[[server]]\nlisten = [\"{{listen}}\"]\n{names}  [[server.route]]\n  prefix = \"/\"\n  root = \"site/{root}\"\n")
    };
    let first = format!("access_log = \"off\"\n{}", server_block("", "a"));
    let server = Launch::config_file(&site, &first).start();
    let get_b = || server.request(b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n").text();
    assert_eq!(get_b(), "site a");
    let write = |text: &str| {
        let text = text.replace("{listen}", &server.addr.to_string());
        std::fs::write(site.base().join("shoal.toml"), text).expect("rewrite shoal.toml");
    };
    let both = format!("{first}{}", server_block("names = [\"b.test\"]\n", "b"));
    write(&both);
    server.send_signal("HUP");
    wait_until("b.test to pick the new server", Duration::from_secs(20), || {
        (get_b() == "site b").then_some(())
    });
    assert_eq!(
        server.request(b"GET / HTTP/1.1\r\nHost: c.test\r\n\r\n").text(),
        "site a"
    );
    write(&format!("{both}{}", server_block("names = [\"B.test\"]\n", "a")));
    server.send_signal("HUP");
    let refused = server.wait_for_log("is claimed by the server at line", Duration::from_secs(20));
    assert!(refused.contains("shoal.toml:"), "{refused}");
    assert_eq!(get_b(), "site b", "the running config keeps serving");
}
