//! The response cache (issue 16): what is stored and answered from storage, what goes
//! upstream every time, `Cache-Status` and `Age`, variants by `Vary`, and entries that
//! outlive the process and serve every worker.

use std::io::Write;
use std::time::Duration;

use crate::harness::{read_head_response, request, wait_until, Launch, Response, Server, Site};
use crate::proxy::support::{addrs, config};
use crate::upstream::{Behaviour, Reply, Upstream};

/// `/` proxied to `upstream` with caching on (`route_lines` added to the route), entries in
/// the site's `cache` directory.
fn cached_config(upstream: &Upstream, route_lines: &str) -> String {
    let routes = format!(
        "  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n  cache = true\n{route_lines}\n"
    );
    config(
        "access_log = \"off\"\n[cache]\npath = \"cache\"",
        &addrs(&[upstream]),
        "",
        &routes,
    )
}

fn start(site: &Site, upstream: &Upstream, route_lines: &str) -> Server {
    Launch::config_file(site, &cached_config(upstream, route_lines)).start()
}

fn status(response: &Response) -> &str {
    response.expect_header("cache-status")
}

fn fixed(cache_control: &str) -> Upstream {
    Upstream::start(Behaviour::Reply(
        Reply::new(200)
            .header("Cache-Control", cache_control)
            .header("Content-Type", "text/plain")
            .body("hello from the app"),
    ))
}

#[test]
fn a_stored_response_answers_the_next_requests_with_its_age() {
    let upstream = fixed("max-age=60");
    let site = Site::new();
    let server = start(&site, &upstream, "");
    let first = server.get("/page?x=1");
    first.assert_status(200);
    assert_eq!(status(&first), "shoal; fwd=miss; stored");
    assert_eq!(first.text(), "hello from the app");
    for _ in 0..3 {
        let hit = server.get("/page?x=1");
        hit.assert_status(200);
        assert_eq!(status(&hit), "shoal; hit");
        assert_eq!(hit.text(), "hello from the app");
        assert_eq!(hit.header("content-type"), Some("text/plain"));
        assert_eq!(hit.header("cache-control"), Some("max-age=60"));
        let age: u64 = hit.expect_header("age").parse().expect("Age is a number");
        assert!(age <= 60, "age {age}");
    }
    let mut stream = server.connect();
    stream
        .write_all(request("HEAD", "/page?x=1", &[]).as_bytes())
        .expect("a HEAD request");
    let head = read_head_response(&mut stream);
    assert_eq!(
        status(&head),
        "shoal; hit",
        "HEAD is answered from the stored GET"
    );
    assert_eq!(head.header("content-length"), Some("18"));
    assert!(head.body.is_empty());
    assert_eq!(
        upstream.requests_to("/page?x=1").len(),
        1,
        "the app saw one request"
    );
    let other = server.get("/page?x=2");
    assert_eq!(
        status(&other),
        "shoal; fwd=miss; stored",
        "the query is part of the key"
    );
    assert_eq!(upstream.requests().len(), 2);
}

#[test]
fn what_may_not_be_stored_goes_upstream_every_time() {
    let cases = [
        (fixed("no-store"), "", "no-store"),
        (fixed("private, max-age=60"), "", "private"),
        (
            Upstream::start(Behaviour::Reply(
                Reply::new(200)
                    .header("Cache-Control", "max-age=60")
                    .header("Set-Cookie", "s=1")
                    .body("x"),
            )),
            "",
            "set-cookie",
        ),
        (Upstream::start(Behaviour::Echo), "", "no-freshness"),
    ];
    for (upstream, route_lines, detail) in cases {
        let site = Site::new();
        let server = start(&site, &upstream, route_lines);
        for _ in 0..2 {
            let response = server.get("/");
            assert_eq!(status(&response), format!("shoal; fwd=miss; detail={detail}"));
        }
        assert_eq!(upstream.requests().len(), 2, "{detail}: both reached the app");
    }
}

#[test]
fn cache_ttl_stores_answers_that_state_no_freshness() {
    let upstream = Upstream::start(Behaviour::Echo);
    let site = Site::new();
    let server = start(&site, &upstream, "  cache_ttl = \"60s\"");
    let first = server.get_with("/", &["X-Seen: first"]);
    assert_eq!(status(&first), "shoal; fwd=miss; stored");
    let second = server.get_with("/", &["X-Seen: second"]);
    assert_eq!(status(&second), "shoal; hit");
    assert!(
        second.text().contains("X-Seen: first"),
        "the stored echo: {}",
        second.text()
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn authorization_keeps_a_response_out_unless_it_says_public() {
    let private = fixed("max-age=60");
    let site = Site::new();
    let server = start(&site, &private, "");
    let response = server.get_with("/", &["Authorization: Basic dTpw"]);
    assert_eq!(status(&response), "shoal; fwd=miss; detail=authorization");
    let public = fixed("public, max-age=60");
    let site = Site::new();
    let server = start(&site, &public, "");
    let response = server.get_with("/", &["Authorization: Basic dTpw"]);
    assert_eq!(status(&response), "shoal; fwd=miss; stored");
}

#[test]
fn vary_keeps_each_variant_a_request_asked_for() {
    let upstream = Upstream::start(Behaviour::Reply(
        Reply::new(200)
            .header("Cache-Control", "max-age=60")
            .header("Vary", "Accept-Language")
            .body("localised"),
    ));
    let site = Site::new();
    let server = start(&site, &upstream, "");
    let german = ["Accept-Language: de"];
    assert_eq!(status(&server.get_with("/", &german)), "shoal; fwd=miss; stored");
    assert_eq!(status(&server.get_with("/", &german)), "shoal; hit");
    let english = server.get_with("/", &["Accept-Language: en"]);
    assert_eq!(status(&english), "shoal; fwd=vary-miss; stored");
    let none = server.get("/");
    assert_eq!(
        status(&none),
        "shoal; fwd=vary-miss; stored",
        "no header is a variant too"
    );
    // Each variant keeps its own entry: none replaced another.
    for language in [
        "Accept-Language: en",
        "Accept-Language: de",
        "Accept-Language: en",
    ] {
        assert_eq!(
            status(&server.get_with("/", &[language])),
            "shoal; hit",
            "{language}"
        );
    }
    assert_eq!(status(&server.get("/")), "shoal; hit");
    assert_eq!(upstream.requests().len(), 3);
    let asked: Vec<_> = (upstream.requests().iter())
        .map(|r| r.header_values("accept-language").join(""))
        .collect();
    assert_eq!(
        asked,
        ["de", "en", ""],
        "each variant asked the app with its own value"
    );
}

#[test]
fn entries_serve_every_worker_and_outlive_a_restart() {
    let upstream = fixed("max-age=600");
    let site = Site::new();
    let text = cached_config(&upstream, "");
    let mut server = Launch::config_file(&site, &text).workers(2).start();
    assert_eq!(status(&server.get("/shared")), "shoal; fwd=miss; stored");
    // New connections spread over both workers (one listening socket each).
    for _ in 0..8 {
        assert_eq!(status(&server.get("/shared")), "shoal; hit");
    }
    server.stop();
    let restarted = Launch::config_file(&site, &text).workers(2).start();
    assert_eq!(
        status(&restarted.get("/shared")),
        "shoal; hit",
        "the entry outlived the process"
    );
    assert_eq!(upstream.requests().len(), 1);
}

/// A 200 with an entity-tag whose freshness is `cache_control`.
fn tagged(cache_control: &str, etag: &str, body: &str) -> Reply {
    Reply::new(200)
        .header("Cache-Control", cache_control)
        .header("ETag", etag)
        .header("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")
        .body(body)
}

#[test]
fn a_stale_entry_is_revalidated_and_a_304_freshens_it() {
    // max-age=0: stale at once, so every request revalidates until the app says otherwise.
    let (reply, behaviour) = Behaviour::validating(tagged("max-age=0", "\"v1\"", "version one"));
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let server = start(&site, &upstream, "");
    assert_eq!(status(&server.get("/doc")), "shoal; fwd=miss; stored");
    let revalidated = server.get_with("/doc", &["If-None-Match: \"client-copy\""]);
    assert_eq!(status(&revalidated), "shoal; fwd=stale; fwd-status=304");
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "version one", "the stored body answers");
    let asked = upstream.requests_to("/doc");
    assert_eq!(
        asked[1].header_values("if-none-match"),
        ["\"v1\""],
        "the entry's tag, not the client's"
    );
    assert_eq!(
        asked[1].header_values("if-modified-since"),
        ["Sun, 06 Nov 1994 08:49:37 GMT"]
    );

    // The app's 304 now says max-age=60: the entry is fresh again and answers alone.
    *reply.lock().unwrap() = tagged("max-age=60", "\"v1\"", "version one");
    assert_eq!(status(&server.get("/doc")), "shoal; fwd=stale; fwd-status=304");
    let hit = server.get("/doc");
    assert_eq!(status(&hit), "shoal; hit");
    assert_eq!(
        hit.header("cache-control"),
        Some("max-age=60"),
        "the 304's headers were kept"
    );
    assert_eq!(upstream.requests_to("/doc").len(), 3);
}

#[test]
fn a_changed_answer_replaces_the_stale_entry() {
    let (reply, behaviour) = Behaviour::validating(tagged("max-age=0", "\"v1\"", "version one"));
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let server = start(&site, &upstream, "");
    server.get("/doc");
    *reply.lock().unwrap() = tagged("max-age=60", "\"v2\"", "version two");
    let changed = server.get("/doc");
    assert_eq!(status(&changed), "shoal; fwd=stale; stored");
    assert_eq!(changed.text(), "version two");
    let hit = server.get("/doc");
    assert_eq!((status(&hit), hit.text().as_str()), ("shoal; hit", "version two"));
}

#[test]
fn stale_if_error_answers_for_an_app_that_fails_or_is_gone() {
    let (reply, behaviour) = Behaviour::validating(tagged("max-age=0", "\"v1\"", "kept answer"));
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let server = start(&site, &upstream, "  stale_if_error = \"10m\"");
    server.get("/status");
    *reply.lock().unwrap() = Reply::new(503).body("down for maintenance");
    let failed = server.get("/status");
    assert_eq!(failed.status, 200);
    assert_eq!(status(&failed), "shoal; hit; detail=stale-if-error");
    assert_eq!(failed.text(), "kept answer");
    *reply.lock().unwrap() = Reply::new(404).body("gone");
    let not_found = server.get("/status");
    assert_eq!(
        not_found.status, 404,
        "only 500, 502, 503 and 504 are errors the entry hides"
    );
    assert_eq!(status(&not_found), "shoal; fwd=stale; detail=no-freshness");
    drop(upstream); // nothing listens there any more: shoal's connect is refused
    let refused = server.get("/status");
    assert_eq!(refused.status, 200);
    assert_eq!(status(&refused), "shoal; hit; detail=stale-if-error");
    assert_eq!(refused.text(), "kept answer");
}

#[test]
fn without_a_window_or_under_must_revalidate_the_failure_goes_to_the_client() {
    for (cache_control, route_lines) in [
        ("max-age=0", ""),
        ("max-age=0, must-revalidate", "  stale_if_error = \"10m\""),
    ] {
        let (reply, behaviour) = Behaviour::validating(tagged(cache_control, "\"v1\"", "kept answer"));
        let upstream = Upstream::start(behaviour);
        let site = Site::new();
        let server = start(&site, &upstream, route_lines);
        assert_eq!(status(&server.get("/status")), "shoal; fwd=miss; stored");
        *reply.lock().unwrap() = Reply::new(503).body("down");
        let failed = server.get("/status");
        assert_eq!(
            (failed.status, failed.text().as_str()),
            (503, "down"),
            "{cache_control}"
        );
    }
}

#[test]
fn a_hit_answers_the_client_s_preconditions_and_ranges() {
    let upstream = Upstream::start(Behaviour::Reply(tagged("max-age=60", "\"abc\"", "0123456789")));
    let site = Site::new();
    let server = start(&site, &upstream, "");
    server.get("/file");
    let not_modified = server.get_with("/file", &["If-None-Match: \"abc\""]);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some("\"abc\""));
    assert_eq!(status(&not_modified), "shoal; hit");
    let since = server.get_with("/file", &["If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT"]);
    assert_eq!(since.status, 304);
    let part = server.get_with("/file", &["Range: bytes=2-5"]);
    assert_eq!(part.status, 206);
    assert_eq!(part.text(), "2345");
    assert_eq!(part.header("content-range"), Some("bytes 2-5/10"));
    let stale_tag = server.get_with("/file", &["Range: bytes=2-5", "If-Range: \"old\""]);
    assert_eq!((stale_tag.status, stale_tag.text().as_str()), (200, "0123456789"));
    let outside = server.get_with("/file", &["Range: bytes=50-"]);
    assert_eq!(outside.status, 416);
    assert_eq!(outside.header("content-range"), Some("bytes */10"));
    let failed = server.get_with("/file", &["If-Match: \"other\""]);
    assert_eq!((failed.status, status(&failed)), (412, "shoal; hit"));
    assert_eq!(upstream.requests().len(), 1);
}

/// Bytes of the files in the cache directory's subdirectories.
fn cache_bytes(site: &Site) -> u64 {
    let dir = site.base().join("cache");
    let subs = (std::fs::read_dir(dir).expect("the cache directory"))
        .map(|sub| sub.expect("listed").path())
        .filter(|sub| sub.is_dir());
    subs.flat_map(|sub| std::fs::read_dir(sub).expect("listed"))
        .map(|file| file.expect("a file").metadata().expect("stat").len())
        .sum()
}

#[test]
fn the_keeper_holds_the_cache_within_max_size_dropping_the_least_recently_used() {
    let upstream = Upstream::start(Behaviour::Reply(
        Reply::new(200)
            .header("Cache-Control", "max-age=600")
            .body(vec![b'x'; 1024]),
    ));
    let site = Site::new();
    let routes = "  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n  cache = true\n";
    let text = config(
        "access_log = \"off\"\n[cache]\npath = \"cache\"\nmax_size = \"4KiB\"",
        &addrs(&[&upstream]),
        "",
        routes,
    );
    let server = Launch::config_file(&site, &text).start();
    let made = std::fs::read_dir(site.base().join("cache")).expect("made by the master");
    assert_eq!(
        made.filter(|sub| sub.as_ref().expect("listed").path().is_dir())
            .count(),
        256
    );
    for i in 0..10 {
        assert_eq!(status(&server.get(&format!("/{i}"))), "shoal; fwd=miss; stored");
        // Apart in time: file times move in the kernel's coarse ticks (a few ms), and
        // entries made within one tick are of equal age to the keeper.
        std::thread::sleep(Duration::from_millis(20));
    }
    // The keeper looks every second: wait for it to bring the directory under the limit,
    // with a tenth free.
    let swept = || (cache_bytes(&site) <= 4096 - 409).then_some(());
    wait_until("the keeper to sweep", Duration::from_secs(10), swept);
    server.wait_for_log("least recently used entries", Duration::from_secs(10));
    assert_eq!(status(&server.get("/9")), "shoal; hit", "the newest entry stays");
    assert_eq!(
        status(&server.get("/0")),
        "shoal; fwd=miss; stored",
        "the oldest went"
    );
}

/// Sends `GET path` on `count` new connections at once; the responses, in any order.
fn concurrent_gets(server: &Server, path: &str, count: usize) -> Vec<std::thread::JoinHandle<Response>> {
    (0..count)
        .map(|_| {
            let mut stream = server.connect();
            stream
                .write_all(request("GET", path, &[]).as_bytes())
                .expect("a request");
            std::thread::spawn(move || crate::harness::read_response(&mut stream))
        })
        .collect()
}

#[test]
fn a_hundred_requests_for_a_key_being_fetched_reach_the_app_once_over_two_workers() {
    let (gate, behaviour) = Behaviour::gate("/slow");
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let text = cached_config(&upstream, "  cache_ttl = \"60s\"");
    let server = Launch::config_file(&site, &text).workers(2).start();
    let first = concurrent_gets(&server, "/slow", 1);
    upstream.wait_for_requests(1);
    // 99 more on new connections (over both workers) while the first is fetched.
    let followers = concurrent_gets(&server, "/slow", 99);
    std::thread::sleep(Duration::from_millis(300));
    gate.open();
    let first = first
        .into_iter()
        .next()
        .unwrap()
        .join()
        .expect("the first response");
    assert_eq!(status(&first), "shoal; fwd=miss; stored");
    for follower in followers {
        let response = follower.join().expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, first.body, "the one fetch's answer");
        assert!(
            status(&response).starts_with("shoal; hit"),
            "{}",
            status(&response)
        );
    }
    assert_eq!(
        upstream.requests_to("/slow").len(),
        1,
        "one request reached the app"
    );
}

#[test]
fn a_request_that_waited_out_the_lock_timeout_goes_upstream_itself() {
    let (gate, behaviour) = Behaviour::gate("/slow");
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let server = start(
        &site,
        &upstream,
        "  cache_ttl = \"60s\"\n  cache_lock_timeout = \"200ms\"",
    );
    let first = concurrent_gets(&server, "/slow", 1);
    upstream.wait_for_requests(1);
    let second = concurrent_gets(&server, "/slow", 1);
    // Past its lock timeout the second goes upstream too (where the gate holds it as well).
    upstream.wait_for_requests(2);
    gate.open();
    for handle in first.into_iter().chain(second) {
        assert_eq!(handle.join().expect("a response").status, 200);
    }
}

#[test]
fn a_worker_killed_while_it_fills_an_entry_leaves_none_and_the_next_request_fetches_again() {
    const LENGTH: usize = 50 << 20;
    const PIECE: usize = 1 << 20;
    let (pieces, behaviour) = Behaviour::trickle(LENGTH);
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let server = start(&site, &upstream, "  cache_ttl = \"60s\"");
    let mut stream = server.connect();
    stream
        .write_all(request("GET", "/big", &[]).as_bytes())
        .expect("a request");
    for _ in 0..10 {
        pieces.send(vec![b'a'; PIECE]).expect("a piece");
    }
    // A few MiB relayed to the client: the same went into the entry being written.
    let mut got = vec![0u8; 4 * PIECE];
    std::io::Read::read_exact(&mut stream, &mut got).expect("part of the response");
    let worker = server.wait_for_workers(1)[0];
    assert!(crate::harness::signal(worker, "KILL"));
    let respawned = wait_until("a new worker", Duration::from_secs(10), || {
        Some(server.workers()).filter(|pids| pids.len() == 1 && pids[0] != worker)
    });
    assert_eq!(respawned.len(), 1);
    assert_eq!(cache_bytes(&site), 0, "no entry, whole or partial, was left");

    let again = concurrent_gets(&server, "/big", 1);
    upstream.wait_for_requests(2);
    // More than it needs: the killed fetch's upstream connection, which notices its peer is
    // gone only when it writes, takes one piece first.
    for _ in 0..LENGTH / PIECE + 2 {
        pieces.send(vec![b'b'; PIECE]).expect("a piece");
    }
    let fetched = again.into_iter().next().unwrap().join().expect("the response");
    assert_eq!(status(&fetched), "shoal; fwd=miss; stored");
    assert_eq!(fetched.body.len(), LENGTH);
    let hit = server.get("/big");
    assert_eq!(status(&hit), "shoal; hit");
    // (Pieces the killed fetch left unread in the upstream's feed went to this one.)
    assert!(hit.body == fetched.body, "the whole entry of the second fetch");
}

#[test]
fn past_the_stale_if_error_window_a_gone_app_is_a_502() {
    let upstream = Upstream::start(Behaviour::Reply(tagged("max-age=0", "\"v1\"", "kept answer")));
    let site = Site::new();
    let server = start(&site, &upstream, "  stale_if_error = \"2s\"");
    assert_eq!(status(&server.get("/status")), "shoal; fwd=miss; stored");
    drop(upstream);
    assert_eq!(
        status(&server.get("/status")),
        "shoal; hit; detail=stale-if-error"
    );
    let failed = wait_until("the window to pass", Duration::from_secs(10), || {
        Some(server.get("/status")).filter(|response| response.status == 502)
    });
    assert!(failed.header("cache-status").is_none(), "shoal's own 502");
}

#[test]
fn a_head_s_own_304_leaves_the_stale_entry_alone() {
    let (_reply, behaviour) = Behaviour::validating(tagged("max-age=0", "\"v1\"", "version one"));
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let server = start(&site, &upstream, "");
    assert_eq!(status(&server.get("/doc")), "shoal; fwd=miss; stored");
    let mut stream = server.connect();
    let head = request("HEAD", "/doc", &["If-None-Match: \"v1\""]);
    stream.write_all(head.as_bytes()).expect("a HEAD");
    let not_modified = read_head_response(&mut stream);
    assert_eq!(
        not_modified.status, 304,
        "the client's own precondition went upstream"
    );
    let revalidated = server.get("/doc");
    assert_eq!(
        status(&revalidated),
        "shoal; fwd=stale; fwd-status=304",
        "the entry is still there"
    );
    assert_eq!(revalidated.text(), "version one");
}

/// `method target` on the admin endpoint `admin`.
fn admin_request(admin: std::net::SocketAddr, method: &str, target: &str) -> Response {
    let mut stream = std::net::TcpStream::connect(admin).expect("connect to the admin endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {target} HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    crate::harness::read_response(&mut stream)
}

#[test]
fn a_purge_removes_entries_from_disk_and_from_every_worker_s_memory() {
    let (reply, behaviour) = Behaviour::validating(tagged("max-age=600", "\"v1\"", "version 1"));
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let admin = crate::harness::free_addr();
    let routes = "  [[server.route]]\n  prefix = \"/\"\n  upstream = \"app\"\n  cache = true\n";
    let top = format!(
        "access_log = \"off\"\npid_file = \"shoal.pid\"\n[admin]\nlisten = \"{admin}\"\n[cache]\npath = \"cache\""
    );
    let text = config(&top, &addrs(&[&upstream]), "", routes);
    let server = Launch::config_file(&site, &text).workers(2).start();
    for path in ["/img/a", "/img/b", "/css/c"] {
        assert_eq!(status(&server.get(path)), "shoal; fwd=miss; stored");
    }
    // New connections spread over both workers: each keeps small entries in memory.
    for _ in 0..8 {
        assert_eq!(server.get("/img/a").text(), "version 1");
    }
    *reply.lock().unwrap() = tagged("max-age=600", "\"v2\"", "version 2");
    let pid_file = site.base().join("shoal.pid");
    let purge = |prefix: &str| {
        let args = ["cache", "purge", "--pid-file", pid_file.to_str().unwrap(), prefix];
        crate::harness::run_shoal(&args.map(std::ffi::OsStr::new))
    };
    let purged = purge("/img/");
    assert_eq!(purged.code, Some(0), "{purged:?}");
    assert!(purged.stdout.contains("removed 2 entries"), "{purged:?}");
    for _ in 0..8 {
        assert_eq!(
            server.get("/img/a").text(),
            "version 2",
            "no worker kept the old one"
        );
    }
    assert_eq!(upstream.requests_to("/img/a").len(), 2);
    assert_eq!(server.get("/css/c").text(), "version 1", "outside the prefix");

    let deleted = admin_request(admin, "DELETE", "/cache?prefix=%2Fcss%2F");
    deleted.assert_status(200);
    assert!(
        deleted
            .text()
            .starts_with("{\"outcome\":\"purged\",\"removed\":1,\"bytes\":"),
        "{}",
        deleted.text()
    );
    assert_eq!(status(&server.get("/css/c")), "shoal; fwd=miss; stored");
    let host_prefix = "http://TEST/img/";
    let by_url = admin_request(admin, "DELETE", &format!("/cache?prefix={host_prefix}"));
    assert!(
        by_url
            .text()
            .starts_with("{\"outcome\":\"purged\",\"removed\":1,"),
        "{}",
        by_url.text()
    );

    let refused = purge("img/");
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("purge refused"), "{refused:?}");
    admin_request(admin, "DELETE", "/cache?prefix=img").assert_status(400);
}

#[test]
fn within_stale_while_revalidate_one_refresh_runs_behind_the_stale_answers() {
    let gate = crate::upstream::Gate::default();
    gate.open();
    let first_answer = tagged("max-age=0, stale-while-revalidate=600", "\"v1\"", "version one");
    let (reply, behaviour) = Behaviour::validating_gated(first_answer, &gate);
    let upstream = Upstream::start(behaviour);
    let site = Site::new();
    let server = Launch::config_file(&site, &cached_config(&upstream, ""))
        .workers(2)
        .start();
    assert_eq!(status(&server.get("/news")), "shoal; fwd=miss; stored");
    *reply.lock().unwrap() = tagged("max-age=600", "\"v2\"", "version two");
    // The app now holds every request: a refresh in the foreground would hold its client.
    gate.close();
    let first = server.get("/news");
    assert_eq!(status(&first), "shoal; hit; detail=stale-while-revalidate");
    assert_eq!(first.text(), "version one");
    let refresh = upstream.wait_for_requests(2);
    assert_eq!(
        refresh[1].header_values("if-none-match"),
        ["\"v1\""],
        "the refresh revalidates"
    );
    // While it runs, every worker answers from the stale entry and starts no other refresh.
    for _ in 0..10 {
        let stale = server.get("/news");
        assert_eq!(status(&stale), "shoal; hit; detail=stale-while-revalidate");
        assert_eq!(stale.text(), "version one");
    }
    gate.open();
    wait_until("the refreshed entry answers", Duration::from_secs(10), || {
        let answer = server.get("/news");
        (answer.text() == "version two").then(|| assert_eq!(status(&answer), "shoal; hit"))
    });
    assert_eq!(upstream.requests_to("/news").len(), 2, "one refresh in all");
}

#[test]
fn a_one_second_micro_cache_costs_the_app_about_one_request_a_second_under_load() {
    let upstream = Upstream::start(Behaviour::Reply(Reply::new(200).body("micro-cached")));
    let site = Site::new();
    let text = cached_config(&upstream, "  cache_ttl = \"1s\"");
    let server = Launch::config_file(&site, &text).workers(2).start();
    const RUN: Duration = Duration::from_secs(10);
    let until = std::time::Instant::now() + RUN;
    // Four keep-alive clients as fast as they go, reconnecting when told to close (wrk's
    // way), over both workers.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut answered = 0u64;
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                while std::time::Instant::now() < until {
                    stream.write_all(request("GET", "/hot", &[]).as_bytes()).unwrap();
                    let response = crate::harness::read_response(&mut stream);
                    assert_eq!(response.text(), "micro-cached");
                    answered += 1;
                    if response.header("connection") == Some("close") {
                        stream = std::net::TcpStream::connect(addr).unwrap();
                    }
                }
                answered
            })
        })
        .collect();
    let answered: u64 = clients.into_iter().map(|c| c.join().expect("a client")).sum();
    let upstream_requests = upstream.requests_to("/hot").len();
    // One at the start and one each time the entry turns stale (whole seconds), give or take
    // a second in which the machine served nobody.
    assert!(
        (5..=12).contains(&upstream_requests),
        "{upstream_requests} upstream requests for {answered} answers in {RUN:?}"
    );
    assert!(answered > 100 * upstream_requests as u64, "{answered} answers");
}
