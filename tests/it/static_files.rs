//! Static files: Content-Type, validators and length; HEAD and other methods; conditional
//! requests (ETag, dates; 304 and 412 in RFC 9110's order); byte ranges and If-Range; directories, index files and redirects;
//! large files sent with sendfile; precompressed `.gz`/`.br` siblings; `cache_control`.

use std::io::Write;

use crate::harness::{read_head_response, read_response, request, serve_files, Response, Server, Site};

const DIGITS: &str = "0123456789";

fn digits_server() -> (Site, Server) {
    serve_files(&[("digits.txt", DIGITS)])
}

/// `len` bytes that repeat no short pattern, so a misplaced chunk is caught.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

#[test]
fn content_type_follows_the_extension() {
    let site = Site::new();
    site.file("page.html", "<p>hi</p>")
        .file("style.css", "p {}")
        .file("image.png", [0x89, b'P', b'N', b'G'])
        .file("blob.unknownext", "?");
    let server = Server::quick(&site);
    let cases = [
        ("/page.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/image.png", "image/png"),
        ("/blob.unknownext", "application/octet-stream"),
    ];
    for (path, content_type) in cases {
        let response = server.get(path);
        assert_eq!(
            response.assert_status(200).header("Content-Type"),
            Some(content_type),
            "{path}"
        );
    }
}

#[test]
fn a_file_comes_with_length_last_modified_strong_etag_and_accept_ranges() {
    let (_site, server) = digits_server();
    let response = server.get("/digits.txt");
    assert_eq!(response.assert_status(200).text(), DIGITS);
    assert_eq!(response.header("Content-Length"), Some("10"));
    assert!(
        response.expect_header("Last-Modified").ends_with(" GMT"),
        "{response}"
    );
    let etag = response.expect_header("ETag");
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "ETag {etag:?} is not a quoted strong tag"
    );
    assert_eq!(response.header("Accept-Ranges"), Some("bytes"));
}

#[test]
fn head_has_the_get_headers_and_no_body() {
    let (_site, server) = digits_server();
    let full = server.get("/digits.txt");
    let mut stream = server.connect();
    let head_then_get = format!(
        "{}{}",
        request("HEAD", "/digits.txt", &[]),
        request("GET", "/digits.txt", &[])
    );
    stream.write_all(head_then_get.as_bytes()).expect("write");
    let head = read_head_response(&mut stream);
    let without_date = |r: &Response| {
        let mut headers = r.headers.clone();
        headers.retain(|(name, _)| name != "Date");
        headers
    };
    assert_eq!(
        without_date(&head),
        without_date(&full),
        "HEAD:\n{head}\nGET:\n{full}"
    );
    let next = read_response(&mut stream);
    assert_eq!(
        next.assert_status(200).text(),
        DIGITS,
        "bytes after the HEAD response"
    );
}

#[test]
fn post_is_405_with_allow() {
    let (_site, server) = digits_server();
    let response = server.request(request("POST", "/digits.txt", &["Content-Length: 0"]).as_bytes());
    assert_eq!(response.assert_status(405).header("Allow"), Some("GET, HEAD"));
}

#[test]
fn if_none_match_with_the_etag_or_star_is_304_without_body() {
    let (_site, server) = digits_server();
    let etag = server.get("/digits.txt").expect_header("ETag").to_string();
    for tag in [etag.as_str(), "*"] {
        let mut stream = server.connect();
        let conditional = request("GET", "/digits.txt", &[&format!("If-None-Match: {tag}")]);
        stream
            .write_all(format!("{conditional}{}", request("GET", "/digits.txt", &[])).as_bytes())
            .expect("write");
        read_response(&mut stream).assert_status(304);
        let next = read_response(&mut stream);
        assert_eq!(
            next.assert_status(200).text(),
            DIGITS,
            "bytes after the 304 for {tag}"
        );
    }
}

#[test]
fn if_modified_since_last_modified_is_304_and_an_older_date_is_200() {
    let (_site, server) = digits_server();
    let last_modified = server
        .get("/digits.txt")
        .expect_header("Last-Modified")
        .to_string();
    let same = server.get_with("/digits.txt", &[&format!("If-Modified-Since: {last_modified}")]);
    same.assert_status(304);
    assert!(same.body.is_empty());
    let older = server.get_with(
        "/digits.txt",
        &["If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT"],
    );
    assert_eq!(older.assert_status(200).text(), DIGITS);
}

#[test]
fn if_match_without_the_current_etag_is_412_and_with_it_the_file() {
    let (_site, server) = digits_server();
    let etag = server.get("/digits.txt").expect_header("ETag").to_string();
    for tag in ["\"not-it\"".to_string(), format!("W/{etag}")] {
        // A 412 keeps the connection in step: the next request on it gets its own answer.
        let mut stream = server.connect();
        let conditional = request("GET", "/digits.txt", &[&format!("If-Match: {tag}")]);
        stream
            .write_all(format!("{conditional}{}", request("GET", "/digits.txt", &[])).as_bytes())
            .expect("write");
        let failed = read_response(&mut stream);
        failed.assert_status(412);
        assert_eq!(failed.status_line, "HTTP/1.1 412 Precondition Failed");
        assert_eq!(failed.header("ETag"), None, "{failed}");
        assert_eq!(read_response(&mut stream).assert_status(200).text(), DIGITS);
    }
    for tag in [etag.as_str(), "*", &format!("\"x\", {etag}")] {
        let response = server.get_with("/digits.txt", &[&format!("If-Match: {tag}")]);
        assert_eq!(response.assert_status(200).text(), DIGITS, "If-Match: {tag}");
    }
    let mut stream = server.connect();
    stream
        .write_all(request("HEAD", "/digits.txt", &["If-Match: \"not-it\""]).as_bytes())
        .expect("write");
    read_head_response(&mut stream).assert_status(412);
}

#[test]
fn if_unmodified_since_before_the_last_change_is_412_and_if_match_takes_precedence() {
    let (_site, server) = digits_server();
    let first = server.get("/digits.txt");
    let (etag, last_modified) = (first.expect_header("ETag"), first.expect_header("Last-Modified"));
    let old = "If-Unmodified-Since: Sat, 01 Jan 2000 00:00:00 GMT";
    server.get_with("/digits.txt", &[old]).assert_status(412);
    let unchanged = server.get_with("/digits.txt", &[&format!("If-Unmodified-Since: {last_modified}")]);
    assert_eq!(unchanged.assert_status(200).text(), DIGITS);
    server
        .get_with("/digits.txt", &["If-Unmodified-Since: yesterday"])
        .assert_status(200);
    // With If-Match present, If-Unmodified-Since is not evaluated (RFC 9110 §13.2.2).
    let matched = server.get_with("/digits.txt", &[&format!("If-Match: {etag}"), old]);
    assert_eq!(matched.assert_status(200).text(), DIGITS);
    // A precondition that fails wins over a range and over If-None-Match.
    server
        .get_with("/digits.txt", &[old, "Range: bytes=0-4"])
        .assert_status(412);
    server
        .get_with(
            "/digits.txt",
            &["If-Match: \"not-it\"", &format!("If-None-Match: {etag}")],
        )
        .assert_status(412);
}

#[test]
fn a_first_bytes_range_is_206_with_content_range() {
    let (_site, server) = digits_server();
    let response = server.get_with("/digits.txt", &["Range: bytes=0-4"]);
    assert_eq!(response.assert_status(206).text(), "01234");
    assert_eq!(response.header("Content-Range"), Some("bytes 0-4/10"));
    assert_eq!(response.header("Content-Length"), Some("5"));
}

#[test]
fn a_suffix_range_gives_the_last_bytes() {
    let (_site, server) = digits_server();
    let response = server.get_with("/digits.txt", &["Range: bytes=-3"]);
    assert_eq!(response.assert_status(206).text(), "789");
    assert_eq!(response.header("Content-Range"), Some("bytes 7-9/10"));
}

#[test]
fn an_open_ended_range_runs_to_the_end() {
    let (_site, server) = digits_server();
    let response = server.get_with("/digits.txt", &["Range: bytes=5-"]);
    assert_eq!(response.assert_status(206).text(), "56789");
    assert_eq!(response.header("Content-Range"), Some("bytes 5-9/10"));
}

#[test]
fn an_unsatisfiable_range_is_416_with_the_size() {
    let (_site, server) = digits_server();
    let response = server.get_with("/digits.txt", &["Range: bytes=999999-"]);
    assert_eq!(
        response.assert_status(416).header("Content-Range"),
        Some("bytes */10")
    );
}

#[test]
fn if_range_with_the_current_etag_honours_the_range() {
    let (_site, server) = digits_server();
    let etag = server.get("/digits.txt").expect_header("ETag").to_string();
    let response = server.get_with("/digits.txt", &["Range: bytes=0-4", &format!("If-Range: {etag}")]);
    assert_eq!(response.assert_status(206).text(), "01234");
}

#[test]
fn if_range_with_another_etag_sends_the_whole_file() {
    let (_site, server) = digits_server();
    let response = server.get_with("/digits.txt", &["Range: bytes=0-4", "If-Range: \"not-it\""]);
    assert_eq!(response.assert_status(200).text(), DIGITS);
    assert_eq!(response.header("Content-Range"), None);
}

#[test]
fn multiple_ranges_get_the_whole_file_with_200() {
    let (_site, server) = digits_server();
    let response = server.get_with("/digits.txt", &["Range: bytes=0-1,4-5"]);
    assert_eq!(response.assert_status(200).text(), DIGITS);
    assert_eq!(response.header("Content-Range"), None);
}

#[test]
fn a_directory_with_an_index_serves_the_index() {
    let (_site, server) = serve_files(&[("docs/index.html", "docs home")]);
    let response = server.get("/docs/");
    assert_eq!(response.assert_status(200).text(), "docs home");
    assert_eq!(response.header("Content-Type"), Some("text/html; charset=utf-8"));
}

#[test]
fn a_directory_without_trailing_slash_redirects_keeping_the_query() {
    let (_site, server) = serve_files(&[("docs/index.html", "docs home")]);
    let plain = server.get("/docs");
    assert_eq!(plain.assert_status(301).header("Location"), Some("/docs/"));
    let with_query = server.get("/docs?x=1");
    assert_eq!(
        with_query.assert_status(301).header("Location"),
        Some("/docs/?x=1")
    );
}

#[test]
fn a_directory_without_an_index_is_404() {
    let (_site, server) = serve_files(&[("empty/readme.txt", "not an index")]);
    server.get("/empty/").assert_status(404);
}

#[test]
fn a_missing_file_is_404() {
    let (_site, server) = digits_server();
    server.get("/nope.txt").assert_status(404);
}

#[test]
fn a_large_file_arrives_byte_exact_and_so_does_a_range_from_its_middle() {
    let bytes = pattern(3 * 1024 * 1024);
    let site = Site::new();
    site.file("big.bin", &bytes);
    let server = Server::quick(&site);
    let full = server.get("/big.bin");
    assert_eq!(full.assert_status(200).body.len(), bytes.len());
    assert!(full.body == bytes, "the 3 MiB body differs from the file");
    let (start, end) = (1_500_000, 1_600_000);
    let part = server.get_with("/big.bin", &[&format!("Range: bytes={start}-{end}")]);
    part.assert_status(206);
    assert_eq!(
        part.header("Content-Range"),
        Some(format!("bytes {start}-{end}/{}", bytes.len()).as_str())
    );
    assert!(
        part.body == bytes[start..=end],
        "the range body differs from the file"
    );
}

/// The last response on a connection goes out with the FIN in its final segment (MSG_MORE);
/// when the client's small receive buffer makes the writes partial, the held-back tail still
/// follows the client's ACKs and the close. Cached (shared) and sendfile bodies alike.
#[test]
fn the_last_response_arrives_whole_through_a_small_receive_buffer() {
    use socket2::{Domain, Socket, Type};
    let cached = pattern(200 * 1024);
    let large = pattern(600 * 1024);
    let site = Site::new();
    site.file("cached.bin", &cached).file("large.bin", &large);
    let server = Server::quick(&site);
    for (target, bytes) in [("/cached.bin", &cached), ("/large.bin", &large)] {
        for linger in ["", "X-Extra: pipelined request follows\r\n"] {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            socket.connect(&server.addr.into()).expect("connect");
            let mut stream: std::net::TcpStream = socket.into();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .expect("read timeout");
            // A second request behind the first makes the close a lingering one.
            let second = if linger.is_empty() {
                ""
            } else {
                "GET /cached.bin HTTP/1.0\r\n\r\n"
            };
            let text = format!("GET {target} HTTP/1.0\r\n{linger}\r\n{second}");
            stream.write_all(text.as_bytes()).expect("write request");
            let all = crate::harness::read_to_close(&mut stream);
            let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
            assert!(
                all.starts_with(b"HTTP/1.1 200 "),
                "{target}: {:?}",
                String::from_utf8_lossy(&all[..split])
            );
            assert!(
                all[split..] == bytes[..],
                "{target}: {} body bytes, want {}",
                all.len() - split,
                bytes.len()
            );
        }
    }
}

fn assert_precompressed(suffix: &str, token: &str) {
    let site = Site::new();
    let compressed = format!("pretend {token} bytes");
    site.file("a.js", "plain javascript")
        .file(&format!("a.js{suffix}"), &compressed);
    let server = Server::quick(&site);
    let encoded = server.get_with("/a.js", &[&format!("Accept-Encoding: {token}")]);
    assert_eq!(encoded.assert_status(200).text(), compressed);
    assert_eq!(encoded.header("Content-Encoding"), Some(token), "{encoded}");
    assert_eq!(encoded.header("Vary"), Some("Accept-Encoding"), "{encoded}");
    let plain = server.get("/a.js");
    assert_eq!(plain.assert_status(200).text(), "plain javascript");
    assert_eq!(plain.header("Content-Encoding"), None, "{plain}");
    assert_eq!(plain.header("Vary"), Some("Accept-Encoding"), "{plain}");
}

#[test]
fn a_gzip_sibling_is_served_to_clients_accepting_gzip() {
    assert_precompressed(".gz", "gzip");
}

#[test]
fn a_brotli_sibling_is_served_to_clients_accepting_br() {
    assert_precompressed(".br", "br");
}

#[test]
fn cache_control_from_the_config_is_added() {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let server = Server::with_config(&site, "", "  cache_control = \"max-age=60\"");
    let response = server.get("/a.txt");
    assert_eq!(
        response.assert_status(200).header("Cache-Control"),
        Some("max-age=60")
    );
}
