//! `basic_auth`: who passes with which `Authorization`, what the app sees of it, and the users
//! file's life: refused at load when a line is of a kind shoal does not take, read again by
//! a reload.

use std::io::Write;
use std::time::Duration;

use crate::harness::{check_config, read_response, read_to_close, request, wait_until, Launch, Server, Site};
use crate::upstream::{Behaviour, Upstream};

/// `htpasswd -nbB -C 4 alice 'wonder land'`.
const ALICE: &str = "alice:$2y$04$ZJOz5P1u2KWqTHQjzNCluut5vUIt9..hG2p91.MhIBsnU97jjnwOu\n";
/// `openssl passwd -6 -salt saltsalt secret`.
const BOB: &str = "bob:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n";
/// `openssl passwd -5 -salt Gq7u3oJkVh2 'ümlaut pass'`.
const UMIT: &str = "ümit:$5$Gq7u3oJkVh2$w9eUQ.Cs9RliV5ZUUhAxZJuvPP47.uIc7XKgKWSBSr8\n";
/// `htpasswd -nbm carol x`: Apache's MD5, which shoal refuses.
const CAROL_MD5: &str = "carol:$apr1$e9FCtnVR$RxGPqAQEPNfQj7NWEMpdt1\n";

const CHALLENGE: &str = "Basic realm=\"staging\", charset=\"UTF-8\"";

/// `Authorization: Basic BASE64(user:password)`.
fn basic(credentials: &[u8]) -> String {
    format!("Authorization: Basic {}", base64(credentials))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// A shoal whose server asks for the users in `users` (a file beside the config): `/` and
/// `/fwd/` (with `forward_auth`) proxy to `upstream`; `/public/` turns auth off.
fn start(site: &Site, upstream: &Upstream, users: &str) -> Server {
    site.outside("users", users);
    let text = format!(
        "access_log = \"off\"\n[upstream.app]\nservers = [\"{}\"]\n\
         [[server]]\nlisten = [\"{{listen}}\"]\nbasic_auth = {{ realm = \"staging\", users = \"users\" }}\n\
         [[server.route]]\nprefix = \"/\"\nupstream = \"app\"\n\
         [[server.route]]\nprefix = \"/fwd/\"\nupstream = \"app\"\nforward_auth = true\n\
         [[server.route]]\nprefix = \"/public/\"\nbasic_auth = false\nrespond = {{ body = \"public\" }}\n",
        upstream.addr
    );
    Launch::config_file(site, &text).start()
}

#[test]
fn good_credentials_pass_and_only_forward_auth_hands_them_to_the_app() {
    let site = Site::new();
    let upstream = Upstream::start(Behaviour::Echo);
    let server = start(&site, &upstream, &[ALICE, BOB, UMIT].concat());
    let alice = basic(b"alice:wonder land");
    for credentials in [
        alice.clone(),
        basic(b"bob:secret"),
        basic("ümit:ümlaut pass".as_bytes()),
        // Verified once, remembered by the worker: the same answer again.
        alice.clone(),
    ] {
        let response = server.get_with("/page", &[&credentials]);
        response.assert_status(200);
        assert!(response.header("WWW-Authenticate").is_none(), "{response}");
    }
    for seen in upstream.requests() {
        assert_eq!(
            seen.header_values("authorization"),
            Vec::<&str>::new(),
            "{}",
            seen.head
        );
    }
    server.get_with("/fwd/x", &[&alice]).assert_status(200);
    let forwarded = upstream.requests_to("/fwd/x");
    let value = alice.trim_start_matches("Authorization: ");
    assert_eq!(forwarded[0].header_values("authorization"), [value]);
    let public = server.get("/public/page");
    assert_eq!(public.assert_status(200).text(), "public");
    assert_eq!(upstream.requests().len(), 5);
}

#[test]
fn missing_wrong_and_malformed_credentials_get_401_and_the_challenge() {
    let site = Site::new();
    let upstream = Upstream::start(Behaviour::Echo);
    let server = start(&site, &upstream, &[ALICE, BOB].concat());
    let alice = basic(b"alice:wonder land");
    let refused: Vec<Vec<String>> = vec![
        vec![],
        vec![basic(b"alice:wonder lan")],
        vec![basic(b"alice:")],
        vec![basic(b"mallory:wonder land")],
        vec![basic(b"mallory:secret")],
        vec![basic(b"alice")],
        vec![basic(b"alice:wonder\xa0land")],
        vec![alice.replace("Basic", "Bearer")],
        vec!["Authorization: Basic".to_string()],
        vec!["Authorization: Basic !!!!".to_string()],
        vec![format!("{alice}x")],
        vec!["Authorization: Digest username=\"alice\", realm=\"staging\"".to_string()],
        vec![alice.clone(), alice.clone()],
    ];
    for lines in &refused {
        let headers: Vec<&str> = lines.iter().map(String::as_str).collect();
        let response = server.get_with("/page", &headers);
        response.assert_status(401);
        assert_eq!(response.header("WWW-Authenticate"), Some(CHALLENGE), "{lines:?}");
    }
    // Bytes that are not even text in the header, and a 401 that keeps the connection.
    let mut stream = server.connect();
    let mut raw = b"GET /page HTTP/1.1\r\nHost: test\r\nAuthorization: Basic \xff\xfe\x80\r\n\r\n".to_vec();
    raw.extend_from_slice(request("GET", "/page", &[&alice, "Connection: close"]).as_bytes());
    stream.write_all(&raw).expect("write");
    read_response(&mut stream).assert_status(401);
    read_response(&mut stream).assert_status(200);
    // HEAD: the same head, no body.
    let mut stream = server.connect();
    stream
        .write_all(request("HEAD", "/page", &["Connection: close"]).as_bytes())
        .expect("write");
    let head = String::from_utf8(read_to_close(&mut stream)).expect("text");
    assert!(
        head.starts_with("HTTP/1.1 401 ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("WWW-Authenticate: {CHALLENGE}\r\n")),
        "{head}"
    );
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the good request reached the app"
    );
}

#[test]
fn a_users_file_with_a_refused_hash_fails_check_and_start_naming_its_line() {
    let site = Site::new();
    site.outside("users", [ALICE, CAROL_MD5].concat());
    let text = "[[server]]\nlisten = [\"{listen}\"]\n\
        [[server.route]]\nprefix = \"/\"\nroot = \"site\"\n\
        basic_auth = { realm = \"staging\", users = \"users\" }\n";
    let config = site.base().join("shoal.toml");
    std::fs::write(&config, text.replace("{listen}", "127.0.0.1:1")).expect("write config");
    let checked = check_config(&config);
    assert_eq!(checked.code, Some(2), "{checked:?}");
    let users = site.base().join("users");
    let want = format!(
        "{}:6:14: basic_auth: users: {}:2: user \"carol\": Apache's MD5 (`$apr1$`) is refused",
        config.display(),
        users.display()
    );
    assert!(checked.stderr.contains(&want), "want {want:?} in {checked:?}");
    let started = Launch::config_file(&site, text).exit();
    assert_eq!(started.code, Some(2), "{started:?}");
    assert!(started.stderr.contains(":2: user \"carol\""), "{started:?}");
}

#[test]
fn a_reload_reads_the_users_file_again_and_refuses_a_broken_one() {
    let site = Site::new();
    let upstream = Upstream::start(Behaviour::Echo);
    let server = start(&site, &upstream, ALICE);
    let (alice, bob) = (basic(b"alice:wonder land"), basic(b"bob:secret"));
    server.get_with("/page", &[&bob]).assert_status(401);
    // A broken file: the reload is refused and the running config keeps serving.
    site.outside("users", [ALICE, BOB, CAROL_MD5].concat());
    server.send_signal("HUP");
    let refusal = server.wait_for_log("reload failed", Duration::from_secs(10));
    assert!(refusal.contains("users:3: user \"carol\""), "{refusal}");
    server.get_with("/page", &[&alice]).assert_status(200);
    server.get_with("/page", &[&bob]).assert_status(401);
    // Fixed: bob gets in once the new workers serve.
    site.outside("users", [ALICE, BOB].concat());
    server.send_signal("HUP");
    wait_until("bob let in by the new config", Duration::from_secs(10), || {
        (server.get_with("/page", &[&bob]).status == 200).then_some(())
    });
    server.get_with("/page", &[&alice]).assert_status(200);
}
