//! Micro-benchmarks of the per-request hot paths: request parsing, response head writing,
//! and the proxy's relay (request rewrite, upstream head parse and relay, chunk decoding).
//!
//! `cargo bench --bench hot_paths`; `cargo test --all-targets` runs each once as a smoke test.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use shoal::http::chunked::ChunkedDecoder;
use shoal::http::request::{self, HeadLimits};
use shoal::http::response::{self, ConnectionHeader, LengthHeader, ResponseHead};
use shoal::proxy::{forward, response as upstream};

const DATE: &[u8] = b"Sat, 21 Nov 2026 12:00:00 GMT";

/// What wrk sends.
const WRK_REQUEST: &[u8] = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

/// What a browser sends.
const BROWSER_REQUEST: &[u8] = b"GET /assets/app.js?v=3 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\
If-None-Match: \"5f2a-1a2b3c\"\r\n\r\n";

/// What a typical app answers.
const UPSTREAM_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.22.1\r\n\
Date: Sat, 21 Nov 2026 12:00:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 1024\r\n\
Connection: keep-alive\r\n\
Set-Cookie: a=1; Path=/\r\n\
Set-Cookie: b=2; Path=/\r\n\
Cache-Control: no-store\r\n\r\n";

fn parse_requests(c: &mut Criterion) {
    let limits = HeadLimits::default();
    let mut group = c.benchmark_group("request::parse");
    for (name, bytes) in [("wrk", WRK_REQUEST), ("browser", BROWSER_REQUEST)] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| request::parse(black_box(bytes), &limits).unwrap().unwrap())
        });
    }
    group.finish();
}

fn write_responses(c: &mut Criterion) {
    let mut out = Vec::with_capacity(4096);
    let mut head = ResponseHead::default();
    c.bench_function("response::write_head 404", |b| {
        b.iter(|| {
            out.clear();
            head.local(404).add(b"Content-Type", b"text/plain; charset=utf-8");
            response::write_head(
                &mut out,
                black_box(&head),
                DATE,
                LengthHeader::ContentLength(14),
                ConnectionHeader::Absent,
            );
        })
    });
}

fn relay(c: &mut Criterion) {
    let limits = HeadLimits::default();
    let head = request::parse(BROWSER_REQUEST, &limits).unwrap().unwrap();
    let mut out = Vec::with_capacity(4096);
    c.bench_function("forward::write_head browser", |b| {
        let forward = forward::Forward {
            head: &head,
            buf: BROWSER_REQUEST,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            peer_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            trusted_peer: false,
            target_start: "/assets".len(),
            upgrade: false,
            underscores_in_headers: false,
            rules: &shoal::config::HeaderRules::default(),
            parts: None,
            request_id: b"0f3a9c2e-17-1-42",
            framing: head.framing,
            preconditions: forward::Preconditions::Client,
        };
        b.iter(|| {
            out.clear();
            forward::write_head(black_box(&forward), &mut out);
        })
    });

    let mut relayed = ResponseHead::default();
    c.bench_function("upstream::parse + relay_head + write_head", |b| {
        b.iter(|| {
            let mut slots = upstream::header_slots();
            let parsed = upstream::parse(black_box(UPSTREAM_RESPONSE), false, &mut slots)
                .unwrap()
                .unwrap();
            upstream::relay_head(&parsed, &mut relayed);
            out.clear();
            response::write_head(
                &mut out,
                &relayed,
                DATE,
                LengthHeader::ContentLength(1024),
                ConnectionHeader::Absent,
            );
        })
    });

    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'x'; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(chunked.len() as u64));
    group.bench_function("decode 64 x 1 KiB", |b| {
        b.iter(|| {
            let mut decoder = ChunkedDecoder::new();
            let mut body = 0;
            let feed = decoder
                .feed(black_box(&chunked), |run| body += run.len())
                .unwrap();
            assert!(feed.done);
            body
        })
    });
    group.finish();
}

/// Route lookup with 1,000 prefix routes, 20 exact and 20 regex ones (the index), against a
/// three-route server (the scan): a prefix hit, an exact hit, a regex hit, a miss to `/`.
fn route_lookup(c: &mut Criterion) {
    let config = |prefixes: usize, others: usize| {
        let mut text = String::from("[[server]]\nlisten = [\"127.0.0.1:1\"]\n");
        let mut route = |key: &str, path: String| {
            text.push_str(&format!("[[server.route]]\n{key} = '{path}'\nupstream = \"a\"\n"));
        };
        route("prefix", "/".into());
        for i in 0..prefixes {
            route("prefix", format!("/section/{i}/"));
        }
        for i in 0..others {
            route("exact", format!("/exact/{i}.txt"));
            route("regex", format!("^/legacy/{i}/.*\\.php$"));
        }
        text.push_str("[upstream.a]\nservers = [\"127.0.0.1:3\"]\n");
        shoal::config::load_text(std::path::Path::new("bench.toml"), &text).expect("bench config")
    };
    for (name, config) in [("1000 routes", config(1000, 20)), ("3 routes", config(1, 1))] {
        let guards = shoal::pipeline::guard::Guards::new(shoal::shared::Shared::create().unwrap());
        let (sites, _) =
            shoal::pipeline::sites::Sites::new(&config, &config.listen_addresses(), &guards).unwrap();
        let site = sites.site(0);
        for path in [
            "/section/0/page.html",
            "/exact/0.txt",
            "/legacy/0/index.php",
            "/elsewhere",
        ] {
            assert!(site.route(path).is_some(), "{path}");
            c.bench_function(&format!("route lookup, {name}: {path}"), |b| {
                b.iter(|| site.route(black_box(path)).map(|r| r.counted_as))
            });
        }
    }
}

criterion_group!(benches, parse_requests, write_responses, relay, route_lookup);
criterion_main!(benches);
