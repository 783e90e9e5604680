//! Compression on the fly (issue 17): which responses are compressed and how the client is
//! told, gzip and brotli by Accept-Encoding, what is left alone, a trickling body that still
//! trickles, and bodies that decode to exactly what the app (or the disk) had.

use std::io::{Read, Write};

use crate::harness::{Launch, Response, Server, Site};
use crate::proxy::support::{addrs, config, exchange, framing, read_message, Body, Framing};
use crate::upstream::{Behaviour, Reply, Upstream};

/// Text that compresses well, `bytes` long.
fn page(bytes: usize) -> Vec<u8> {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < bytes {
        i += 1;
        text.push_str(&format!(
            "<tr><td>order {i}</td><td>{} EUR</td></tr>\n",
            i * 37 % 1000
        ));
    }
    text.truncate(bytes);
    text.into_bytes()
}

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out),
        other => panic!("unexpected coding {other}"),
    }
    .expect("a whole stream");
    out
}

/// `/` proxied to `upstream` with `route_lines` added (compress = true unless they say).
fn start(upstream: &Upstream, route_lines: &str) -> (Site, Server) {
    let site = Site::new();
    let routes = format!("  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n{route_lines}\n");
    let text = config("access_log = \"off\"", &addrs(&[upstream]), "", &routes);
    let server = Launch::config_file(&site, &text).start();
    (site, server)
}

fn reply(content_type: &str, body: &[u8]) -> Reply {
    Reply::new(200)
        .header("Content-Type", content_type)
        .header("ETag", "\"v1\"")
        .body(body)
}

fn get(server: &Server, path: &str, headers: &[&str]) -> Response {
    exchange(server, crate::harness::request("GET", path, headers).as_bytes())
}

#[test]
fn a_proxied_page_is_compressed_with_the_coding_the_client_prefers() {
    let body = page(20_000);
    let upstream = Upstream::start(Behaviour::Reply(reply("text/html; charset=utf-8", &body)));
    let (_site, server) = start(&upstream, "  compress = true");
    let cases = [
        ("gzip, deflate, br", Some("br")),
        ("gzip", Some("gzip")),
        ("br;q=0.5, gzip;q=0.8", Some("gzip")),
        ("br;q=0, *", Some("gzip")),
        ("x-gzip", Some("gzip")),
        ("*", Some("br")),
        ("identity", None),
        ("br;q=0, gzip;q=0", None),
        ("deflate", None),
    ];
    for (accept, coding) in cases {
        let response = get(&server, "/page", &[&format!("Accept-Encoding: {accept}")]);
        response.assert_status(200);
        assert_eq!(response.header("content-encoding"), coding, "{accept}");
        match coding {
            Some(coding) => {
                assert_eq!(framing(&response, false), Framing::Chunked, "{accept}");
                assert_eq!(response.header("vary"), Some("Accept-Encoding"));
                assert_eq!(response.header("etag"), Some("W/\"v1\""), "no longer byte-equal");
                assert!(
                    response.body.len() < body.len() / 4,
                    "{accept}: {}",
                    response.body.len()
                );
                assert_eq!(decode(coding, &response.body), body, "{accept}");
            }
            None => {
                assert_eq!(response.header("content-length"), Some("20000"), "{accept}");
                assert_eq!(response.header("etag"), Some("\"v1\""));
                assert_eq!(response.body, body);
            }
        }
    }
    let none = get(&server, "/page", &[]);
    assert_eq!(
        (none.header("content-encoding"), none.body.len()),
        (None, 20_000),
        "no Accept-Encoding"
    );
}

#[test]
fn types_sizes_and_the_route_decide_what_is_compressed() {
    let cases: [(&str, &str, usize, Option<&str>); 8] = [
        ("compress = true", "application/json", 5_000, Some("gzip")),
        ("compress = true", "image/svg+xml", 5_000, Some("gzip")),
        ("compress = true", "image/png", 5_000, None),
        ("compress = true", "text/html", 1_000, None),
        (
            "compress = true\n  compress_min_bytes = \"100\"",
            "text/html",
            1_000,
            Some("gzip"),
        ),
        (
            "compress = true\n  compress_types = [\"application/x-report\"]",
            "application/x-report",
            5_000,
            Some("gzip"),
        ),
        (
            "compress = true\n  compress_types = [\"application/x-report\"]",
            "text/html",
            5_000,
            None,
        ),
        ("", "text/html", 5_000, None),
    ];
    for (lines, content_type, size, coding) in cases {
        let upstream = Upstream::start(Behaviour::Reply(reply(content_type, &page(size))));
        let (_site, server) = start(&upstream, &format!("  {lines}"));
        let response = get(&server, "/", &["Accept-Encoding: gzip"]);
        assert_eq!(
            response.header("content-encoding"),
            coding,
            "{lines} {content_type} {size}"
        );
        if coding.is_some() {
            // Up to 4 KiB gzipped whole, over it streamed: both decode to the app's bytes.
            assert_eq!(
                decode("gzip", &response.body),
                page(size),
                "{lines} {content_type} {size}"
            );
        }
        let refused = get(&server, "/", &["Accept-Encoding: gzip, identity;q=0"]);
        let small_html = content_type == "text/html" && size < 5_000 && !lines.is_empty();
        if small_html {
            assert_eq!(
                refused.header("content-encoding"),
                Some("gzip"),
                "identity;q=0: any size"
            );
        }
    }
}

#[test]
fn encoded_untransformable_partial_and_bodiless_answers_are_left_alone() {
    let body = page(5_000);
    let cases = [
        reply("text/html", &body).header("Content-Encoding", "gzip"),
        reply("text/html", &body).header("Cache-Control", "public, no-transform"),
        Reply::new(206)
            .header("Content-Type", "text/html")
            .header("Content-Range", "bytes 0-4999/9000")
            .body(&body),
    ];
    for answer in cases {
        let upstream = Upstream::start(Behaviour::Reply(answer));
        let (_site, server) = start(&upstream, "  compress = true");
        let response = get(&server, "/", &["Accept-Encoding: br"]);
        assert_eq!(response.header("content-length"), Some("5000"), "{response}");
        assert_eq!(response.body, body);
        assert_ne!(response.header("content-encoding"), Some("br"));
    }
    // The app answers ranges and conditionals itself (Echo-like validating upstream).
    let (_tag, behaviour) = Behaviour::validating(reply("text/html", &body));
    let upstream = Upstream::start(behaviour);
    let (_site, server) = start(&upstream, "  compress = true");
    let not_modified = get(&server, "/", &["Accept-Encoding: br", "If-None-Match: \"v1\""]);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("content-encoding"), None);
    let mut stream = server.connect();
    stream
        .write_all(crate::harness::request("HEAD", "/", &["Accept-Encoding: br"]).as_bytes())
        .unwrap();
    let (head, _) = read_message(&mut stream, true);
    assert_eq!(head.header("content-encoding"), None, "HEAD: {head}");
}

#[test]
fn a_trickling_answer_still_trickles_when_compressed() {
    let first = page(3_000);
    let second = b"<p>the rest, much later</p>\n".repeat(50);
    let (pieces, behaviour) = Behaviour::trickle(first.len() + second.len());
    let upstream = Upstream::start(behaviour);
    let (_site, server) = start(&upstream, "  compress = true");
    let mut stream = server.connect();
    stream
        .write_all(crate::harness::request("GET", "/", &["Accept-Encoding: gzip"]).as_bytes())
        .unwrap();
    pieces.send(first.clone()).unwrap();
    let (head, _) = read_message(&mut stream, true);
    assert_eq!(head.header("content-encoding"), Some("gzip"), "{head}");
    // The first piece decodes whole before the app sends the second: nothing waits for
    // more input in the compressor (the read times out otherwise).
    let mut body = Body::new(Framing::Chunked);
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    while decoder.get_ref().len() < first.len() {
        let bytes = body.read_some(&mut stream, 64 * 1024);
        assert!(!bytes.is_empty(), "the body ended early");
        decoder.write_all(&bytes).unwrap();
        decoder.flush().unwrap();
    }
    assert_eq!(decoder.get_ref(), &first);
    pieces.send(second.clone()).unwrap();
    decoder.write_all(&body.read_all(&mut stream)).unwrap();
    let whole = decoder.finish().unwrap();
    assert_eq!(whole, [first, second].concat());
}

#[test]
fn a_50_mib_answer_decodes_to_the_app_s_bytes() {
    let body = page(50 << 20);
    let upstream = Upstream::start(Behaviour::Reply(reply("application/json", &body)));
    let (_site, server) = start(&upstream, "  compress = true");
    for coding in ["gzip", "br"] {
        let response = get(&server, "/big", &[&format!("Accept-Encoding: {coding}")]);
        assert_eq!(response.header("content-encoding"), Some(coding));
        assert!(response.body.len() < body.len() / 5);
        assert!(
            decode(coding, &response.body) == body,
            "{coding}: decoded bytes differ"
        );
    }
}

/// A shoal serving `site` with `compress = true` on its one static route.
fn serve_files(site: &Site) -> Server {
    let text = "access_log = \"off\"\n[[server]]\nlisten = [\"{listen}\"]\n  [[server.route]]\n  \
                prefix = \"/\"\n  root = \"site\"\n  compress = true\n";
    Launch::config_file(site, text).start()
}

#[test]
fn a_small_static_file_is_compressed_once_and_a_large_one_goes_as_it_is() {
    let small = page(40_000);
    let large = page(50 << 20);
    let site = Site::new();
    site.file("orders.html", &small)
        .file("big.json", &large)
        .file("logo.png", page(40_000));
    let server = serve_files(&site);
    let identity = get(&server, "/orders.html", &[]);
    assert_eq!(
        identity.header("vary"),
        Some("Accept-Encoding"),
        "it varies: {identity}"
    );
    assert_eq!(identity.body, small);
    let tag = identity.header("etag").unwrap().to_string();
    for coding in ["br", "gzip"] {
        let first = get(&server, "/orders.html", &[&format!("Accept-Encoding: {coding}")]);
        assert_eq!(first.header("content-encoding"), Some(coding));
        assert_eq!(first.header("vary"), Some("Accept-Encoding"));
        let length: usize = first.header("content-length").unwrap().parse().unwrap();
        assert!(length < small.len() / 4 && length == first.body.len(), "{first}");
        assert_eq!(decode(coding, &first.body), small);
        let own_tag = first.header("etag").unwrap();
        assert_eq!(own_tag, format!("{}-{coding}\"", tag.trim_end_matches('"')));
        // Kept: the same bytes again, its validators and ranges answered like a file's.
        let again = get(&server, "/orders.html", &[&format!("Accept-Encoding: {coding}")]);
        assert_eq!(again.body, first.body);
        let not_modified = get(
            &server,
            "/orders.html",
            &[
                &format!("Accept-Encoding: {coding}"),
                &format!("If-None-Match: {own_tag}"),
            ],
        );
        assert_eq!(not_modified.status, 304);
        let range = get(
            &server,
            "/orders.html",
            &[&format!("Accept-Encoding: {coding}"), "Range: bytes=0-9"],
        );
        assert_eq!((range.status, &range.body[..]), (206, &first.body[..10]));
    }
    let png = get(&server, "/logo.png", &["Accept-Encoding: br"]);
    assert_eq!((png.header("content-encoding"), png.header("vary")), (None, None));
    let big = get(&server, "/big.json", &["Accept-Encoding: br, gzip"]);
    assert_eq!(
        big.header("content-encoding"),
        None,
        "sent with sendfile as it is"
    );
    assert!(big.body == large, "the 50 MiB file arrived whole");
}

#[test]
fn a_precompressed_sibling_wins_and_a_changed_file_is_compressed_anew() {
    let site = Site::new();
    let first = page(10_000);
    site.file("app.js", &first).file("app.js.gz", b"sibling bytes");
    site.file("style.css", &first);
    let server = serve_files(&site);
    let sibling = get(&server, "/app.js", &["Accept-Encoding: gzip"]);
    assert_eq!(sibling.body, b"sibling bytes", "the operator's file");
    let made = get(&server, "/app.js", &["Accept-Encoding: br"]);
    assert_eq!(decode("br", &made.body), first, "no .br sibling: shoal makes one");
    assert_eq!(
        decode("br", &get(&server, "/style.css", &["Accept-Encoding: br"]).body),
        first
    );
    let second = page(12_000);
    site.file("style.css", &second);
    crate::harness::wait_until(
        "the new file compressed",
        std::time::Duration::from_secs(10),
        || {
            let response = get(&server, "/style.css", &["Accept-Encoding: br"]);
            (decode("br", &response.body) == second).then_some(())
        },
    );
}

#[test]
fn the_cache_keeps_the_app_s_bytes_and_its_answers_are_compressed_too() {
    let body = page(20_000);
    let upstream = Upstream::start(Behaviour::Reply(
        reply("text/html", &body).header("Cache-Control", "max-age=60"),
    ));
    let site = Site::new();
    let routes =
        "  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n  cache = true\n  compress = true\n";
    let text = config(
        "access_log = \"off\"\n[cache]\npath = \"cache\"",
        &addrs(&[&upstream]),
        "",
        routes,
    );
    let server = Launch::config_file(&site, &text).start();
    let miss = get(&server, "/", &["Accept-Encoding: br"]);
    assert_eq!(miss.header("cache-status"), Some("shoal; fwd=miss; stored"));
    assert_eq!(decode("br", &miss.body), body);
    let hit = get(&server, "/", &["Accept-Encoding: gzip"]);
    assert_eq!(hit.header("cache-status"), Some("shoal; hit"));
    assert_eq!(hit.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &hit.body), body);
    let plain = get(&server, "/", &[]);
    assert_eq!(
        (plain.header("content-encoding"), &plain.body),
        (None, &body),
        "stored as the app sent it"
    );
    assert_eq!(upstream.requests().len(), 1);
}
