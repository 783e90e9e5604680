//! Session resumption: tickets are sealed with keys the master keeps in the instance's shared
//! memory, so every worker opens them, after reloads too.

use std::net::SocketAddr;
use std::time::Duration;

use super::{fixture, s_client, Fixture};
use crate::harness::{free_addr, Launch};

#[test]
fn sessions_resume_on_every_worker_and_after_a_reload() {
    let Fixture {
        dir,
        ca: _ca,
        site,
        cert,
        key,
    } = fixture("localhost");
    let server = format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n");
    let text = format!(
        "access_log = \"off\"\n[[server]]\nlisten = [\"{{listen}}\"]\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n\
         [[server]]\nlisten = [\"{}\"]\n{server}",
        free_addr()
    );
    let secure: SocketAddr = text
        .split("listen = [\"")
        .nth(2)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server = Launch::config_file(&site, &text).workers(2).start();
    server.wait_for_workers(2);
    for version in ["-tls1_2", "-tls1_3"] {
        let session = dir.path().join(format!("session{version}"));
        let first = s_client(secure, version, &session, true);
        assert!(
            first.contains("alpha") && first.contains("New, TLSv1."),
            "{version}: {first}"
        );
        // Each new connection lands on either worker: every one resumes.
        for attempt in 0..6 {
            let again = s_client(secure, version, &session, false);
            assert!(
                again.contains("Reused, TLSv1."),
                "{version}, attempt {attempt}: {again}"
            );
        }
    }
    let workers = server.workers();
    server.send_signal("HUP");
    crate::harness::wait_until("reloaded workers", Duration::from_secs(10), || {
        let now = server.workers();
        (now.len() == 2 && now.iter().all(|w| !workers.contains(w))).then_some(())
    });
    let session = dir.path().join("session-tls1_2");
    let after = s_client(secure, "-tls1_2", &session, false);
    assert!(after.contains("Reused, TLSv1.2"), "after the reload: {after}");
}
