//! Session resumption: tickets are sealed with keys the master keeps in the instance's shared
//! memory, so every worker opens them, after reloads too; a new key every
//! `tls_ticket_rotation`, the previous one still opening its tickets.

use std::net::SocketAddr;
use std::time::Duration;

use super::{fixture, s_client, start, Fixture};
use crate::harness::{free_addr, wait_until, Launch};

/// What the master logs as it makes a new key.
const ROTATED: &str = "made a new TLS session ticket key";

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

#[test]
fn a_ticket_resumes_until_its_key_is_two_rotations_old() {
    let Fixture {
        dir,
        ca: _ca,
        site,
        cert,
        key,
    } = fixture("localhost");
    let body = format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n");
    let (server, secure) = start(&site, &[body], "tls_ticket_rotation = \"2s\"");
    let rotations = || server.stderr().matches(ROTATED).count();
    let reach = |count: usize| {
        wait_until(&format!("{count} key rotations"), Duration::from_secs(10), || {
            Some(rotations()).filter(|&now| now >= count)
        })
    };
    // TLS 1.2: s_client offers a ticket whatever its age (a TLS 1.3 client drops one older
    // than its lifetime hint), so a full handshake means the server could not open it.
    let session = dir.path().join("session");
    let take = || s_client(secure, "-tls1_2", &session, true);
    let resume = || s_client(secure, "-tls1_2", &session, false);
    // Each step waits for the log line of a rotation; a rotation that comes while a step
    // runs (only on a machine stalled for most of a period) makes the attempt tell nothing.
    for _attempt in 0..3 {
        // Just after a rotation: the next is a period away.
        let n = reach(rotations() + 1);
        let first = take();
        assert!(
            first.contains("New, TLSv1.2") && first.contains("alpha"),
            "{first}"
        );
        assert!(
            first.contains("TLS session ticket lifetime hint: 4 (seconds)"),
            "two periods: {first}"
        );
        let at_once = resume();
        if rotations() != n {
            continue;
        }
        assert!(at_once.contains("Reused, TLSv1.2"), "{at_once}");
        if reach(n + 1) != n + 1 {
            continue;
        }
        let once = resume();
        if rotations() != n + 1 {
            continue;
        }
        assert!(once.contains("Reused, TLSv1.2"), "one rotation on: {once}");
        reach(n + 2);
        let twice = resume();
        assert!(
            twice.contains("New, TLSv1.2") && twice.contains("alpha"),
            "two rotations on: {twice}"
        );
        // Not because resumption stopped altogether: a new ticket resumes.
        take();
        let again = resume();
        assert!(again.contains("Reused, TLSv1.2"), "a new ticket: {again}");
        return;
    }
    panic!(
        "keys rotated while each attempt's steps ran: no attempt could tell\n{}",
        server.stderr()
    );
}
