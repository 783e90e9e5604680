//! The access log: a file named in the config receives one combined-format line per
//! request, written out by the time the server has stopped on SIGTERM.

use crate::harness::{Server, Site};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `[dd/Mon/yyyy:hh:mm:ss +0000]`
fn is_log_date(text: &str) -> bool {
    let digits = |range: std::ops::Range<usize>| text[range].bytes().all(|b| b.is_ascii_digit());
    text.len() == 28
        && text.starts_with('[')
        && text.ends_with(" +0000]")
        && digits(1..3)
        && &text[3..4] == "/"
        && MONTHS.contains(&&text[4..7])
        && &text[7..8] == "/"
        && digits(8..12)
        && &text[12..13] == ":"
        && digits(13..15)
        && &text[15..16] == ":"
        && digits(16..18)
        && &text[18..19] == ":"
        && digits(19..21)
}

#[test]
fn a_request_is_logged_in_combined_format_to_the_configured_file() {
    let site = Site::new();
    site.file("x", "hello");
    std::fs::create_dir(site.base().join("logs")).expect("create logs dir");
    let mut server = Server::with_config(&site, "access_log = \"logs/access.log\"", "");
    server.get_with("/x", &["User-Agent: UA"]).assert_status(200);
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let log = std::fs::read_to_string(site.base().join("logs/access.log")).expect("read access log");
    let line = log
        .lines()
        .find(|line| line.contains("\"GET /x HTTP/1.1\""))
        .unwrap_or_else(|| panic!("no line for GET /x in the access log:\n{log}"));
    let (prefix, rest) = line.split_at(line.find('[').expect("a [date] in the line"));
    let (date, request) = rest.split_at(rest.find(']').expect("a closing ]") + 1);
    assert_eq!(prefix, "127.0.0.1 - - ", "line {line:?}");
    assert!(is_log_date(date), "date {date:?} in line {line:?}");
    assert_eq!(
        request, " \"GET /x HTTP/1.1\" 200 5 \"-\" \"UA\"",
        "line {line:?}"
    );
}

/// The access log's lines, each parsed as JSON, the harness's probes left out.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(path).expect("read access log");
    log.lines()
        .filter(|line| !line.contains("harness-ready-probe"))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
        .collect()
}

#[test]
fn json_lines_carry_every_field() {
    let site = Site::new();
    site.file("x", "hello");
    let top = "access_log = \"access.log\"\naccess_log_format = \"json\"";
    let mut server = Server::with_config(&site, top, "");
    let headers = ["User-Agent: UA/1", "Referer: http://ref/", "X-Request-Id: req-42"];
    server.get_with("/x?a=1", &headers).assert_status(200);
    assert!(server.stop().success());
    let lines = json_lines(&site.base().join("access.log"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    let fields: Vec<&str> = line
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "time",
        "remote_addr",
        "method",
        "target",
        "protocol",
        "status",
        "bytes_sent",
        "referer",
        "user_agent",
        "request_id",
        "duration_ms",
        "upstream",
        "server",
        "tls_version",
        "tls_cipher",
    ];
    expected.sort_unstable();
    let mut sorted = fields.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "{line}");
    let time = line["time"].as_str().expect("time is a string");
    let rfc3339 = time.len() == 20
        && time.ends_with('Z')
        && time.as_bytes()[10] == b'T'
        && time.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    assert!(rfc3339, "time {time:?}");
    assert_eq!(line["remote_addr"], "127.0.0.1");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["target"], "/x?a=1");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_sent"], 5);
    assert_eq!(line["referer"], "http://ref/");
    assert_eq!(line["user_agent"], "UA/1");
    assert_eq!(line["request_id"], "req-42");
    assert!(line["duration_ms"].is_f64(), "{line}");
    assert!(line["upstream"].is_null(), "{line}");
    assert!(line["server"].is_null(), "a server without names: {line}");
}

#[test]
fn hostile_bytes_cannot_break_a_json_line() {
    let site = Site::new();
    site.file("x", "hello");
    let top = "access_log = \"access.log\"\naccess_log_format = \"json\"";
    let mut server = Server::with_config(&site, top, "");
    // Header values may carry quotes, backslashes, tabs and bytes that are not UTF-8.
    let mut valid =
        b"GET /x HTTP/1.1\r\nHost: t\r\nUser-Agent: a\"b\\c\td\xff\xfe\"}, \"status\": 1\r\n".to_vec();
    valid.extend_from_slice(b"Connection: close\r\n\r\n");
    let response = server.send(&valid);
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    // A request line the parser rejects is logged raw: control bytes, escapes, newline tricks.
    let garbage = b"G\x1b[2J\"ET\\ /\x00\x7f\xc3\x28 HTTP/1.1\r\n\r\n";
    let response = server.send(garbage);
    assert!(
        response.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    assert!(server.stop().success());
    let lines = json_lines(&site.base().join("access.log"));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["user_agent"], "a\"b\\c\td\\xFF\\xFE\"}, \"status\": 1");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[1]["status"], 400);
    assert_eq!(lines[1]["method"], "G\u{1b}[2J\"ET\\");
    assert_eq!(lines[1]["target"], "/\u{0}\u{7f}\\xC3(");
    assert_eq!(lines[1]["protocol"], "HTTP/1.1");
}

#[test]
fn a_request_refused_for_its_headers_is_logged_with_its_referer_and_user_agent() {
    let site = Site::new();
    std::fs::create_dir(site.base().join("logs")).expect("create logs dir");
    let mut server = Server::with_config(
        &site,
        "access_log = \"logs/access.log\"\n[limits]\nmax_body_bytes = \"1KiB\"",
        "",
    );
    let mut stream = server.connect();
    std::io::Write::write_all(
        &mut stream,
        b"POST /up HTTP/1.1\r\nHost: test\r\nReferer: http://ref/\r\nUser-Agent: UA-413\r\nContent-Length: 4096\r\n\r\n",
    )
    .expect("write request");
    crate::harness::read_response(&mut stream).assert_status(413);
    server.stop();
    let log = std::fs::read_to_string(site.base().join("logs/access.log")).expect("read access log");
    let line = log
        .lines()
        .find(|line| line.contains("\"POST /up HTTP/1.1\""))
        .unwrap_or_else(|| panic!("no line for the 413 in the access log:\n{log}"));
    assert!(
        line.ends_with(" 413 22 \"http://ref/\" \"UA-413\""),
        "line {line:?}"
    );
}

/// Behind a trusted proxy the logged address is the client it forwarded for.
#[test]
fn a_trusted_proxys_client_is_the_logged_address() {
    let site = Site::new();
    site.file("x", "hello");
    let top = "access_log = \"access.log\"\naccess_log_format = \"json\"\ntrusted_proxies = [\"127.0.0.1\"]";
    let mut server = Server::with_config(&site, top, "");
    server
        .get_with("/x", &["X-Forwarded-For: 198.51.100.7"])
        .assert_status(200);
    server.get("/x").assert_status(200);
    assert!(server.stop().success());
    let lines = json_lines(&site.base().join("access.log"));
    let addresses: Vec<&str> = lines.iter().filter_map(|l| l["remote_addr"].as_str()).collect();
    assert_eq!(addresses, ["198.51.100.7", "127.0.0.1"], "{lines:?}");
}
