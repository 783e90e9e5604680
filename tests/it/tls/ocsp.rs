//! OCSP stapling: `tls = { ..., ocsp = "FILE" }`, or `CERT.ocsp` beside the certificate. The
//! responses are real ones the test CA signs with `openssl ocsp`; `openssl s_client -status`
//! asks for the staple, as browsers do.

use std::net::SocketAddr;

use super::{s_client_to, start, Ca};
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
