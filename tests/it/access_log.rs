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
