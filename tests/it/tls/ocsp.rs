//! OCSP stapling: `tls = { ..., ocsp = "FILE" }`, or `CERT.ocsp` beside the certificate. The
//! responses are real ones the test CA signs with `openssl ocsp`; `openssl s_client -status`
//! asks for the staple, as browsers do.

use std::net::SocketAddr;
use std::time::Duration;

use super::{check_tls, check_tls_table, fixture, s_client_to, start, Ca, Fixture};
use crate::harness::Site;

/// What `openssl s_client -status` printed connecting to `addr` for `name` with TLS
/// `version`, verifying the chain against the test CA.
fn stapled(ca: &Ca, addr: SocketAddr, name: &str, version: &str) -> String {
    let cafile = ca.path("ca.pem");
    s_client_to(addr, name, &["-status", "-CAfile", &cafile, version])
}

/// True when `shown` has a good staple for a verified chain.
fn good_staple(shown: &str) -> bool {
    shown.contains("OCSP Response Status: successful")
        && shown.contains("Cert Status: good")
        && shown.contains("Verify return code: 0 (ok)")
}

fn tls_server(name: &str, tls: &str) -> String {
    format!(
        "names = [\"{name}\"]\ntls = {{ {tls} }}\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n"
    )
}

#[test]
fn a_response_is_stapled_from_its_file_or_beside_the_certificate_and_none_without() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let site = Site::new();
    site.file("a.txt", "alpha");
    // a.test names its file; b.test's lies beside its certificate; c.test has none.
    let (a_cert, a_key) = ca.leaf("a", &["a.test"], false);
    let named = ca.path("a-staple.der");
    ca.ocsp("a", false, 1, &named);
    let (b_cert, b_key) = ca.leaf("b", &["b.test"], true);
    ca.ocsp("b", false, 1, &format!("{b_cert}.ocsp"));
    let (c_cert, c_key) = ca.leaf("c", &["c.test"], false);
    let servers = [
        tls_server(
            "a.test",
            &format!("cert = \"{a_cert}\", key = \"{a_key}\", ocsp = \"{named}\""),
        ),
        tls_server("b.test", &format!("cert = \"{b_cert}\", key = \"{b_key}\"")),
        tls_server("c.test", &format!("cert = \"{c_cert}\", key = \"{c_key}\"")),
    ];
    let (_server, secure) = start(&site, &servers, "");
    // TLS 1.2 sends it in a message of its own, 1.3 inside the Certificate message.
    for version in ["-tls1_2", "-tls1_3"] {
        for name in ["a.test", "b.test"] {
            let shown = stapled(&ca, secure, name, version);
            assert!(good_staple(&shown), "{name} {version}: {shown}");
            assert!(shown.contains("alpha"), "{name} {version}: {shown}");
        }
        let none = stapled(&ca, secure, "c.test", version);
        assert!(
            none.contains("OCSP response: no response sent") && none.contains("alpha"),
            "c.test {version}: {none}"
        );
    }
}

#[test]
fn an_ocsp_file_that_cannot_be_stapled_is_a_check_error() {
    let Fixture {
        dir: _dir,
        ca,
        site,
        cert,
        key,
    } = fixture("localhost");
    let beside = format!("{cert}.ocsp");
    let good = check_tls(&site, &cert, &key);
    assert_eq!(good.code, Some(0), "no staple at all: {}", good.stderr);
    ca.ocsp("localhost", false, 1, &beside);
    let good = check_tls(&site, &cert, &key);
    assert_eq!(good.code, Some(0), "a good staple: {}", good.stderr);

    let response = |name: &str, revoked: bool| {
        let out = ca.path(&format!("{name}-{revoked}.der"));
        ca.ocsp(name, revoked, 1, &out);
        std::fs::read(out).unwrap()
    };
    ca.leaf("previous", &["localhost"], false);
    let cases = [
        // An empty staple made rustls panic in the handshake of every client asking for one.
        ("is empty", Vec::new()),
        ("is not a DER OCSP response", b"garbage\n".to_vec()),
        ("is PEM; staple the DER form", std::fs::read(&cert).unwrap()),
        ("says the certificate is revoked", response("localhost", true)),
        (
            "answers for another certificate, not serial ",
            response("previous", false),
        ),
    ];
    for (error, contents) in cases {
        std::fs::write(&beside, contents).unwrap();
        let checked = check_tls(&site, &cert, &key);
        let want = format!("shoal.toml:3:7: tls: ocsp `{beside}` {error}");
        assert_eq!(checked.code, Some(2), "{error}: {}", checked.stderr);
        assert!(checked.stderr.contains(&want), "{want}: {}", checked.stderr);
    }
    // A named file is checked the same way, and must exist.
    let named = format!("{cert}.der");
    std::fs::write(&named, b"").unwrap();
    for (file, error) in [(named.as_str(), " is empty"), ("/nonexistent.der", ": ")] {
        let checked = check_tls_table(
            &site,
            &format!("cert = \"{cert}\", key = \"{key}\", ocsp = \"{file}\""),
        );
        let want = format!("shoal.toml:3:7: tls: ocsp `{file}`{error}");
        assert!(checked.stderr.contains(&want), "{want}: {}", checked.stderr);
    }
}

#[test]
fn a_reload_serves_a_refreshed_staple_and_refuses_a_bad_one() {
    let Fixture {
        dir: _dir,
        ca,
        site,
        cert,
        key,
    } = fixture("localhost");
    let beside = format!("{cert}.ocsp");
    ca.ocsp("localhost", false, 1, &beside);
    let (server, secure) = start(
        &site,
        &[tls_server(
            "localhost",
            &format!("cert = \"{cert}\", key = \"{key}\""),
        )],
        "",
    );
    let next_update = || {
        let shown = stapled(&ca, secure, "localhost", "-tls1_3");
        assert!(good_staple(&shown), "{shown}");
        let line = shown.lines().find(|l| l.contains("Next Update:"));
        line.unwrap_or_default().trim().to_string()
    };
    let first = next_update();
    // A fresh response (valid for longer, so it reads apart) and a HUP: stapled at once.
    ca.ocsp("localhost", false, 2, &beside);
    let workers = server.wait_for_workers(1);
    server.send_signal("HUP");
    crate::harness::wait_until("new workers", Duration::from_secs(10), || {
        let now = server.workers();
        (now.len() == 1 && now != workers).then_some(())
    });
    let refreshed = next_update();
    assert_ne!(refreshed, first, "the refreshed response is stapled");
    // A fetch that failed and left the file empty: the reload is refused, the workers keep
    // stapling what they had.
    std::fs::write(&beside, b"").unwrap();
    let workers = server.workers();
    server.send_signal("HUP");
    let refused = server.wait_for_log("reload failed", Duration::from_secs(10));
    assert!(
        refused.contains(&format!("ocsp `{beside}` is empty")),
        "{refused}"
    );
    assert_eq!(server.workers(), workers, "the old workers keep serving");
    assert_eq!(next_update(), refreshed);
}
