//! HTTPS: `tls = { cert, key }` on a server. Certificates are made at test time with the
//! openssl tool (a CA, and leaf certificates it signs); curl and openssl s_client are the
//! clients, as a user would run them.

mod ocsp;
mod tickets;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::{free_addr, Launch, Server, Site};
use crate::upstream::{Behaviour, Upstream};

/// Runs `program` with `args`, failing the test if it cannot start.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// A test CA in `dir` and leaf certificates it signs.
struct Ca {
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path) -> Ca {
        let ca = Ca {
            dir: dir.to_path_buf(),
        };
        let (key, cert) = (ca.path("ca.key"), ca.path("ca.pem"));
        let made = run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "30",
            ]
            .into_iter()
            .chain(["-subj", "/CN=shoal test CA", "-keyout", &key, "-out", &cert])
            .collect::<Vec<_>>(),
        );
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        ca
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `NAME.pem` and `NAME.key` for the DNS `names` (the first is the subject), signed by
    /// the CA; `rsa` picks an RSA 2048 key instead of ECDSA P-256.
    fn leaf(&self, name: &str, names: &[&str], rsa: bool) -> (String, String) {
        self.leaf_for_days(name, names, rsa, 30)
    }

    /// [`Ca::leaf`], valid for `days` from now (0: expired at once).
    fn leaf_for_days(&self, name: &str, names: &[&str], rsa: bool, days: u32) -> (String, String) {
        let (key, csr, cert) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.csr")),
            self.path(&format!("{name}.pem")),
        );
        let new_key = if rsa { "rsa:2048" } else { "ec" };
        let mut args = vec!["req", "-newkey", new_key, "-nodes", "-keyout", &key, "-out", &csr];
        if !rsa {
            args.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
        let subject = format!("/CN={}", names[0]);
        args.extend(["-subj", &subject]);
        let made = run("openssl", &args);
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        let ext = self.path(&format!("{name}.ext"));
        std::fs::write(&ext, format!("subjectAltName={}\n", sans.join(","))).unwrap();
        let (ca_cert, ca_key) = (self.path("ca.pem"), self.path("ca.key"));
        let days = days.to_string();
        let signed = run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                &days,
            ]
            .into_iter()
            .chain(["-extfile", &ext, "-out", &cert])
            .collect::<Vec<_>>(),
        );
        assert!(
            signed.status.success(),
            "{}",
            String::from_utf8_lossy(&signed.stderr)
        );
        (cert, key)
    }

    /// A DER OCSP response the CA signs for its certificate `NAME.pem`, saying good (or
    /// revoked), valid for `days`; written to `out`, as a CA's responder answers a server
    /// fetching its staple.
    fn ocsp(&self, name: &str, revoked: bool, days: u32, out: &str) {
        let cert = self.path(&format!("{name}.pem"));
        let shown = run("openssl", &["x509", "-in", &cert, "-noout", "-serial"]);
        let serial = String::from_utf8_lossy(&shown.stdout);
        let serial = serial.trim().trim_start_matches("serial=");
        // openssl's CA database: status, expiry, revocation date, serial, file, subject (the
        // responder finds the line by serial).
        let (status, revoked_on) = if revoked {
            ("R", "260101000000Z")
        } else {
            ("V", "")
        };
        let index = self.path(&format!("{name}.index"));
        let line = format!("{status}\t491231235959Z\t{revoked_on}\t{serial}\tunknown\t/CN={name}\n");
        std::fs::write(&index, line).unwrap();
        let (ca_cert, ca_key, days) = (self.path("ca.pem"), self.path("ca.key"), days.to_string());
        let made = run(
            "openssl",
            &[
                "ocsp",
                "-index",
                &index,
                "-rsigner",
                &ca_cert,
                "-rkey",
                &ca_key,
                "-CA",
                &ca_cert,
                "-issuer",
                &ca_cert,
                "-cert",
                &cert,
                "-no_nonce",
                "-ndays",
                &days,
                "-respout",
                out,
            ],
        );
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }
}

/// What most tests here start from: a test CA in a temporary directory, a certificate for
/// `localhost` it signed (`NAME.pem`, `NAME.key`), and a site with `a.txt`.
struct Fixture {
    dir: tempfile::TempDir,
    ca: Ca,
    site: Site,
    cert: String,
    key: String,
}

fn fixture(name: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let (cert, key) = ca.leaf(name, &["localhost"], false);
    let site = Site::new();
    site.file("a.txt", "alpha");
    Fixture {
        dir,
        ca,
        site,
        cert,
        key,
    }
}

/// `shoal check` on a config (written in `site`) whose one server has `tls` with `cert` and
/// `key`; its line 3 is the `tls` key.
fn check_tls(site: &Site, cert: &str, key: &str) -> crate::harness::Exited {
    check_tls_table(site, &format!("cert = \"{cert}\", key = \"{key}\""))
}

/// [`check_tls`] with `tls = { KEYS }`.
fn check_tls_table(site: &Site, keys: &str) -> crate::harness::Exited {
    let path = site.base().join("shoal.toml");
    let text = format!(
        "[[server]]\nlisten = [\"127.0.0.1:8443\"]\ntls = {{ {keys} }}\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n"
    );
    std::fs::write(&path, text).unwrap();
    crate::harness::check_config(&path)
}

/// `curl` over HTTPS to `addr` for each of `paths` (one connection when it can), trusting
/// the test CA, with `host` resolving to the address.
fn curl(ca: &Ca, host: &str, addr: SocketAddr, paths: &[&str], extra: &[&str]) -> Output {
    let resolve = format!("{host}:{}:127.0.0.1", addr.port());
    let cacert = ca.path("ca.pem");
    let mut args = vec![
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        &cacert,
        "--resolve",
        &resolve,
    ];
    args.extend(extra);
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("https://{host}:{}{p}", addr.port()))
        .collect();
    args.extend(urls.iter().map(String::as_str));
    run("curl", &args)
}

fn text(output: &Output) -> String {
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A shoal serving `site` on `{listen}` (plain, for the harness) and on the returned address
/// over TLS, with `servers` (each a `[[server]]` body after its listen line) sharing it.
fn start(site: &Site, servers: &[String], top: &str) -> (Server, SocketAddr) {
    start_with(site, "", servers, top)
}

/// [`start`], with `plain` added to the plain server's keys.
fn start_with(site: &Site, plain: &str, servers: &[String], top: &str) -> (Server, SocketAddr) {
    let secure = free_addr();
    let log = if top.contains("access_log") {
        ""
    } else {
        "access_log = \"off\"\n"
    };
    let mut text = format!(
        "{log}{top}\n[[server]]\nlisten = [\"{{listen}}\"]\n{plain}  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n"
    );
    for body in servers {
        text.push_str(&format!("[[server]]\nlisten = [\"{secure}\"]\n{body}"));
    }
    (Launch::config_file(site, &text).start(), secure)
}

#[test]
fn static_and_proxied_requests_over_https() {
    let Fixture {
        dir,
        ca,
        site,
        cert,
        key,
    } = fixture("localhost");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    site.file("big.bin", &big);
    let upstream = Upstream::start(Behaviour::Echo);
    let server = format!(
        "tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n  [[server.route]]\n  prefix = \"/app/\"\n  upstream = \"app\"\n  \
         [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n"
    );
    let log = site.base().join("access.log");
    let top = format!(
        "access_log = \"{}\"\naccess_log_format = \"json\"\n[upstream.app]\nservers = [\"{}\"]",
        log.display(),
        upstream.addr
    );
    let (_server, secure) = start(&site, &[server], &top);

    // Two requests on one connection (keep-alive), and a 3 MB file through TLS.
    let both = curl(
        &ca,
        "localhost",
        secure,
        &["/a.txt", "/a.txt"],
        &["-w", " %{num_connects}\\n"],
    );
    assert_eq!(
        text(&both),
        "alpha 1\nalpha 0\n",
        "the second request reused the connection"
    );
    let file = dir.path().join("big.out");
    let file_arg = file.display().to_string();
    text(&curl(&ca, "localhost", secure, &["/big.bin"], &["-o", &file_arg]));
    assert!(
        std::fs::read(&file).unwrap() == big,
        "the large file arrived whole"
    );

    let proxied = text(&curl(&ca, "localhost", secure, &["/app/x?q=1"], &[]));
    assert!(proxied.starts_with("GET /app/x?q=1 HTTP/1.1\r\n"), "{proxied}");
    assert!(proxied.contains("\r\nX-Forwarded-Proto: https\r\n"), "{proxied}");
    let logged = crate::harness::wait_until("the proxied request's log line", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .find(|line| line.contains("/app/x?q=1"))
            .map(str::to_string)
    });
    assert!(
        logged.contains("\"tls_version\":\"TLSv1_3\",\"tls_cipher\":\"TLS13_"),
        "{logged}"
    );
}

#[test]
fn the_sni_name_picks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let (a_cert, a_key) = ca.leaf("a", &["a.test"], false);
    let (b_cert, b_key) = ca.leaf("b", &["b.test", "*.b.test"], true);
    let site = Site::new();
    site.file("a/who.txt", "site a").file("b/who.txt", "site b");
    let server = |names: &str, cert: &str, key: &str, root: &str| {
        format!(
            "names = [{names}]\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site/{root}\"\n"
        )
    };
    let servers = [
        server("\"a.test\"", &a_cert, &a_key, "a"),
        server("\"b.test\", \"*.b.test\"", &b_cert, &b_key, "b"),
    ];
    let (_server, secure) = start(&site, &servers, "");
    assert_eq!(text(&curl(&ca, "a.test", secure, &["/who.txt"], &[])), "site a");
    assert_eq!(text(&curl(&ca, "b.test", secure, &["/who.txt"], &[])), "site b");
    assert_eq!(
        text(&curl(&ca, "www.b.test", secure, &["/who.txt"], &[])),
        "site b"
    );
    // No SNI (an address for a name): the default server's certificate, the first listed.
    let connect = format!("127.0.0.1:{}", secure.port());
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-noservername"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let shown = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("subject=CN = a.test"), "{shown}");
}

#[test]
fn old_protocols_and_plain_http_are_refused() {
    let Fixture {
        dir: _dir,
        ca,
        site,
        cert,
        key,
    } = fixture("localhost");
    let server = format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n");
    let (_server, secure) = start(&site, &[server], "");
    for (flag, accepted) in [("--tlsv1.2", true), ("--tlsv1.3", true)] {
        let max = flag.replace("--tlsv", "--tls-max ");
        let mut extra = vec![flag];
        extra.extend(max.split(' '));
        let output = curl(&ca, "localhost", secure, &["/a.txt"], &extra);
        assert_eq!(
            output.status.success(),
            accepted,
            "{flag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let connect = format!("127.0.0.1:{}", secure.port());
    for old in ["-tls1", "-tls1_1"] {
        let args = [
            "s_client",
            "-connect",
            &connect,
            old,
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ];
        let refused = run("openssl", &args);
        assert!(!refused.status.success(), "{old} was accepted");
    }
    // Plain HTTP to the TLS port: an alert and a close, never a hang.
    let mut stream = TcpStream::connect(secure).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"GET /a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    assert!(read.is_ok() || answer.len() < 100, "closed, not hung: {read:?}");
    assert!(!String::from_utf8_lossy(&answer).contains("alpha"));
}

#[test]
fn a_key_that_does_not_match_is_a_check_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let (cert, _) = ca.leaf("one", &["localhost"], false);
    let (_, other_key) = ca.leaf("two", &["localhost"], false);
    let site = Site::new();
    for (cert, key, error) in [
        (cert.as_str(), other_key.as_str(), "does not go with cert"),
        (cert.as_str(), "/nonexistent.key", "key `/nonexistent.key`: "),
        (other_key.as_str(), other_key.as_str(), "holds no certificate"),
    ] {
        let checked = check_tls(&site, cert, key);
        assert!(
            checked.stderr.contains("shoal.toml:3:7: tls: ") && checked.stderr.contains(error),
            "{error}: {}",
            checked.stderr
        );
    }
}

#[test]
fn redirect_https_hsts_and_a_host_that_is_not_the_sni_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let (a_cert, a_key) = ca.leaf("a", &["a.test"], false);
    let (b_cert, b_key) = ca.leaf("b", &["b.test"], false);
    let site = Site::new();
    site.file("a.txt", "alpha")
        .file(".well-known/acme-challenge/token", "proof");
    let tls_server = |name: &str, cert: &str, key: &str| {
        format!(
            "names = [\"{name}\"]\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\
             hsts = \"max-age=63072000; includeSubDomains\"\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n"
        )
    };
    let servers = [
        tls_server("a.test", &a_cert, &a_key),
        tls_server("b.test", &b_cert, &b_key),
    ];
    // certbot's webroot, routed as nginx users do.
    let acme = "redirect_https = true\n  [[server.route]]\n  prefix = \"/.well-known/acme-challenge/\"\n  \
                root = \"site/.well-known/acme-challenge\"\n  strip_prefix = true\n  dotfiles = \"allow\"\n";
    let (server, secure) = start_with(&site, acme, &servers, "");
    let headers = text(&curl(
        &ca,
        "a.test",
        secure,
        &["/a.txt"],
        &["-D", "-", "-o", "/dev/null"],
    ));
    assert!(
        headers.contains("strict-transport-security: max-age=63072000; includeSubDomains\r\n")
            || headers.contains("Strict-Transport-Security: max-age=63072000; includeSubDomains\r\n"),
        "{headers}"
    );
    // SNI a.test, Host b.test: 421.
    let misdirected = curl(
        &ca,
        "a.test",
        secure,
        &["/a.txt"],
        &["-H", "Host: b.test", "-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert_eq!(text(&misdirected), "421");
    // The plain server sends everything to https, ACME challenges aside.
    let moved = server.request(b"GET /a.txt?x=1 HTTP/1.1\r\nHost: www.test:8080\r\n\r\n");
    moved.assert_status(301);
    assert_eq!(
        moved.header("Location"),
        Some("https://www.test/a.txt?x=1"),
        "{moved}"
    );
    let challenge =
        server.request(b"GET /.well-known/acme-challenge/token HTTP/1.1\r\nHost: www.test\r\n\r\n");
    challenge.assert_status(200);
    assert_eq!(challenge.text(), "proof");
}

#[test]
fn a_renewed_certificate_is_served_after_a_reload() {
    let Fixture {
        dir: _dir,
        ca,
        site,
        cert,
        key,
    } = fixture("live");
    let server = format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n");
    let (server, secure) = start(&site, &[server], "");
    let serial = || {
        let connect = format!("127.0.0.1:{}", secure.port());
        let shown = run("sh", &["-c", &format!("openssl s_client -connect {connect} -servername localhost < /dev/null 2>/dev/null | openssl x509 -noout -serial")]);
        String::from_utf8_lossy(&shown.stdout).trim().to_string()
    };
    let before = serial();
    assert!(before.starts_with("serial="), "{before}");
    // certbot-style: new files moved over the old ones, then HUP.
    let (new_cert, new_key) = ca.leaf("renewed", &["localhost"], false);
    std::fs::rename(&new_cert, &cert).unwrap();
    std::fs::rename(&new_key, &key).unwrap();
    let workers = server.wait_for_workers(1);
    server.send_signal("HUP");
    crate::harness::wait_until("new workers", Duration::from_secs(10), || {
        let now = server.workers();
        (now.len() == 1 && now != workers).then_some(())
    });
    let after = serial();
    assert!(
        after.starts_with("serial=") && after != before,
        "{before} then {after}"
    );
    assert_eq!(text(&curl(&ca, "localhost", secure, &["/a.txt"], &[])), "alpha");
    // A key that does not go with the certificate: the reload is refused, the renewed
    // certificate keeps serving.
    let (_, stray_key) = ca.leaf("stray", &["localhost"], false);
    std::fs::rename(&stray_key, &key).unwrap();
    let workers = server.workers();
    server.send_signal("HUP");
    server.wait_for_log("reload failed", Duration::from_secs(10));
    assert_eq!(server.workers(), workers, "the old workers keep serving");
    assert_eq!(serial(), after);
    assert_eq!(text(&curl(&ca, "localhost", secure, &["/a.txt"], &[])), "alpha");
}

#[test]
fn an_expired_certificate_is_refused_and_one_about_to_expire_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let site = Site::new();
    let (cert, key) = ca.leaf_for_days("old", &["localhost"], false, 0);
    let expired = check_tls(&site, &cert, &key);
    assert_eq!(expired.code, Some(2));
    assert!(
        expired.stderr.contains("old.pem` expired on "),
        "{}",
        expired.stderr
    );
    let (cert, key) = ca.leaf_for_days("soon", &["localhost"], false, 5);
    let soon = check_tls(&site, &cert, &key);
    assert_eq!(soon.code, Some(0), "{}", soon.stderr);
    assert!(
        soon.stderr.contains("soon.pem` expires on ") && soon.stderr.contains(", in 4 days"),
        "{}",
        soon.stderr
    );
}

/// `openssl s_client` to `addr` with one request on stdin, saving or reusing the session in
/// `session`; what it printed.
fn s_client(addr: SocketAddr, version: &str, session: &Path, save: bool) -> String {
    let file = session.display().to_string();
    let mode = if save { "-sess_out" } else { "-sess_in" };
    s_client_to(addr, "localhost", &[version, mode, &file])
}

/// `openssl s_client` to `addr` for the SNI name (and Host) `name`, with `args`, sending one
/// request for `/a.txt`; what it printed (stdout and stderr).
fn s_client_to(addr: SocketAddr, name: &str, args: &[&str]) -> String {
    let connect = format!("127.0.0.1:{}", addr.port());
    let script = format!(
        "printf 'GET /a.txt HTTP/1.1\\r\\nHost: {name}\\r\\nConnection: close\\r\\n\\r\\n' | \\
         openssl s_client -connect {connect} -servername {name} {} -ign_eof 2>&1",
        args.join(" ")
    );
    String::from_utf8_lossy(&run("sh", &["-c", &script]).stdout).into_owned()
}

#[test]
fn pipelined_requests_and_a_websocket_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let (cert, key) = ca.leaf("localhost", &["localhost"], false);
    let site = Site::new();
    site.file("a.txt", "alpha").file("b.txt", "bravo");
    let upstream = Upstream::start(Behaviour::WebSocketEcho);
    let server = format!(
        "tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n  [[server.route]]\n  prefix = \"/ws\"\n  upstream = \"app\"\n  \
         [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n"
    );
    let top = format!("[upstream.app]\nservers = [\"{}\"]", upstream.addr);
    let (_server, secure) = start(&site, &[server], &top);
    let talk = |input: &str| {
        let connect = format!("127.0.0.1:{}", secure.port());
        let script = format!(
            "printf '{input}' | openssl s_client -connect {connect} -servername localhost -quiet -ign_eof 2>/dev/null"
        );
        String::from_utf8_lossy(&run("sh", &["-c", &script]).stdout).into_owned()
    };
    let pipelined = talk(
        "GET /a.txt HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\nGET /b.txt HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n",
    );
    let (a, b) = (pipelined.find("alpha"), pipelined.find("bravo"));
    assert!(a.is_some() && a < b, "both answers, in order: {pipelined}");
    let tunnel = talk(
        "GET /ws HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n\\r\\nping over tls bye",
    );
    assert!(tunnel.starts_with("HTTP/1.1 101 "), "{tunnel}");
    assert!(
        tunnel.contains("ping over tls"),
        "the upstream's echo came back: {tunnel}"
    );
}

#[test]
fn refused_tls_connections_are_counted_by_kind() {
    let Fixture {
        dir: _dir,
        ca: _ca,
        site,
        cert,
        key,
    } = fixture("localhost");
    let admin = free_addr();
    let top = format!(
        "[limits]\nheader_timeout = \"1s\"\n[supervisor]\nheartbeat_interval = \"200ms\"\n[admin]\nlisten = \"{admin}\""
    );
    let server = format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n");
    let (_server, secure) = start(&site, &[server], &top);
    // Plain HTTP to the TLS port, and a handshake begun and never finished.
    let mut plain = TcpStream::connect(secure).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut silent = TcpStream::connect(secure).unwrap();
    silent.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let metrics = || {
        let mut stream = TcpStream::connect(admin).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    };
    let counted = |kind: &str| format!("shoal_tls_failures_total{{kind=\"{kind}\"}} 1\n");
    crate::harness::wait_until("both failures counted", Duration::from_secs(10), || {
        let text = metrics();
        (text.contains(&counted("not_tls")) && text.contains(&counted("timeout"))).then_some(())
    });
}

#[test]
fn a_proxy_protocol_header_may_come_before_the_handshake() {
    let Fixture {
        dir: _dir,
        ca: _ca,
        site,
        cert,
        key,
    } = fixture("localhost");
    let upstream = Upstream::start(Behaviour::Echo);
    let secure = free_addr();
    let text = format!(
        "access_log = \"off\"\n[upstream.app]\nservers = [\"{}\"]\n[[server]]\nlisten = [\"{{listen}}\"]\n  \
         [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n\
         [[server]]\nlisten = [\"{secure} proxy_protocol\"]\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n  \
         [[server.route]]\n  prefix = \"/app\"\n  upstream = \"app\"\n",
        upstream.addr
    );
    let _server = Launch::config_file(&site, &text).start();
    // Python's ssl module: the PROXY line on the bare socket, then TLS on the same socket.
    let client = |proxy_line: &str| {
        let script = format!(
            "import socket, ssl\n\
             s = socket.create_connection(('127.0.0.1', {port}), timeout=10)\n\
             s.sendall(b'{proxy_line}')\n\
             c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
             try:\n    t = c.wrap_socket(s, server_hostname='localhost')\n\
             except Exception as e:\n    print('refused:', type(e).__name__); raise SystemExit\n\
             t.sendall(b'GET /app HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n')\n\
             out = b''\n\
             while True:\n    d = t.recv(65536)\n    if not d: break\n    out += d\n\
             print(out.decode('latin-1'))\n",
            port = secure.port()
        );
        String::from_utf8_lossy(&run("python3", &["-c", &script]).stdout).into_owned()
    };
    let answer = client("PROXY TCP4 192.0.2.7 198.51.100.2 40000 443\\r\\n");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("\r\nX-Real-IP: 192.0.2.7\r\n"), "{answer}");
    assert!(answer.contains("\r\nX-Forwarded-Proto: https\r\n"), "{answer}");
    let refused = client("");
    assert!(
        refused.starts_with("refused:"),
        "no PROXY header, no handshake: {refused}"
    );
}

#[test]
fn keys_in_pkcs8_sec1_and_pkcs1_pem_all_load() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let site = Site::new();
    let (ec_cert, ec_key) = ca.leaf("ec", &["localhost"], false);
    let (rsa_cert, rsa_key) = ca.leaf("rsa", &["localhost"], true);
    let sec1 = dir.path().join("sec1.key").display().to_string();
    let pkcs1 = dir.path().join("pkcs1.key").display().to_string();
    assert!(run("openssl", &["ec", "-in", &ec_key, "-out", &sec1])
        .status
        .success());
    assert!(run(
        "openssl",
        &["rsa", "-in", &rsa_key, "-traditional", "-out", &pkcs1]
    )
    .status
    .success());
    let heads = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(heads(&ec_key), "-----BEGIN PRIVATE KEY-----");
    assert_eq!(heads(&sec1), "-----BEGIN EC PRIVATE KEY-----");
    assert_eq!(heads(&pkcs1), "-----BEGIN RSA PRIVATE KEY-----");
    for (cert, key) in [
        (&ec_cert, &ec_key),
        (&ec_cert, &sec1),
        (&rsa_cert, &rsa_key),
        (&rsa_cert, &pkcs1),
    ] {
        let checked = check_tls(&site, cert, key);
        assert_eq!(checked.code, Some(0), "{key}: {}", checked.stderr);
    }
}
