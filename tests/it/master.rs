//! The master process: worker start-up, respawn after a crash, connections queued in a
//! slot's socket surviving the death of its worker, clean stop on SIGTERM with the pid
//! file, and boot failures (busy port, unsupported upstream) exiting 2 with one clear line.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::harness::{get, read_response, signal, wait_until, Launch, Site};

fn site_with(path: &str, contents: &str) -> Site {
    let site = Site::new();
    site.file(path, contents);
    site
}

/// Pids from the master's `worker N started (pid P)` lines, in order.
fn started_pids(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|line| {
            line.split_once("worker ")?
                .1
                .split_once(" started (pid ")?
                .1
                .strip_suffix(')')
        })
        .map(|pid| pid.parse().expect("pid in a started line"))
        .collect()
}

/// The one-letter state of `pid` from /proc (R, S, T, ...).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn non_empty_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|line| !line.trim().is_empty()).collect()
}

#[test]
fn two_workers_run_as_children_of_the_master() {
    let site = site_with("a.txt", "alpha");
    let server = Launch::quick(&site).workers(2).start();
    let mut children = server.wait_for_workers(2);
    let mut logged = wait_until("two `worker N started` lines", Duration::from_secs(5), || {
        Some(started_pids(&server.stderr())).filter(|pids| pids.len() == 2)
    });
    children.sort_unstable();
    logged.sort_unstable();
    assert_eq!(children, logged, "children of the master vs. logged worker pids");
}

#[test]
fn a_killed_worker_is_replaced_and_requests_keep_succeeding() {
    let site = site_with("a.txt", "alpha");
    let server = Launch::quick(&site).workers(2).start();
    let before = server.wait_for_workers(2);
    let victim = before[0];
    assert!(signal(victim, "KILL"), "kill -KILL {victim}");
    let after = wait_until("a replacement worker", Duration::from_secs(10), || {
        Some(server.workers()).filter(|pids| pids.len() == 2 && !pids.contains(&victim))
    });
    let replacement = after.iter().find(|pid| !before.contains(pid));
    assert!(
        replacement.is_some(),
        "no new pid: before {before:?}, after {after:?}"
    );
    for _ in 0..20 {
        assert_eq!(server.get("/a.txt").assert_status(200).text(), "alpha");
    }
}

#[test]
fn connections_queued_behind_a_stopped_worker_are_served_after_it_is_killed() {
    let site = site_with("a.txt", "alpha");
    let server = Launch::quick(&site).workers(1).start();
    let worker = server.wait_for_workers(1)[0];
    assert!(signal(worker, "STOP"), "kill -STOP {worker}");
    wait_until("the worker to be stopped", Duration::from_secs(5), || {
        (process_state(worker) == Some('T')).then_some(())
    });
    let streams: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut stream = server.connect();
            stream
                .write_all(get(&format!("/a.txt?n={i}")).as_bytes())
                .expect("write a queued request");
            stream
        })
        .collect();
    assert!(signal(worker, "KILL"), "kill -KILL {worker}");
    for (i, mut stream) in streams.into_iter().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set_read_timeout");
        let response = read_response(&mut stream);
        assert_eq!(response.status, 200, "queued connection {i}: {response}");
        assert_eq!(response.text(), "alpha", "queued connection {i}");
    }
}

#[test]
fn sigterm_stops_everything_with_exit_0_and_removes_the_pid_file() {
    let site = site_with("a.txt", "alpha");
    let pid_file = site.base().join("shoal.pid");
    let mut server = Launch::quick(&site)
        .workers(2)
        .arg("--pid-file")
        .arg(&pid_file)
        .start();
    let written = std::fs::read_to_string(&pid_file).expect("pid file written while running");
    assert_eq!(written.trim(), server.pid().to_string(), "pid file content");
    let workers = server.wait_for_workers(2);
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "master exit status {status}");
    assert!(!pid_file.exists(), "pid file still present after exit");
    for pid in workers {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} outlived the master"
        );
    }
}

#[test]
fn a_port_already_in_use_exits_2_with_one_line() {
    let site = site_with("a.txt", "alpha");
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let addr = holder.local_addr().expect("local_addr");
    let exited = Launch::quick(&site).listen_on(addr).exit();
    assert_eq!(exited.code, Some(2), "{exited:?}");
    let lines = non_empty_lines(&exited.stderr);
    assert_eq!(lines.len(), 1, "stderr: {:?}", exited.stderr);
    assert!(
        lines[0].contains(&format!(
            "{addr} is already in use (by pid {}, ",
            std::process::id()
        )),
        "stderr: {:?}",
        exited.stderr
    );
}

#[test]
fn a_second_shoal_on_a_served_address_exits_2_instead_of_joining_its_reuseport_group() {
    let first_site = site_with("a.txt", "first");
    let first = Launch::quick(&first_site).workers(2).start();
    first.wait_for_workers(2);
    let second_site = site_with("a.txt", "second");
    let top = "access_log = \"off\"";
    let exited = Launch::config(&second_site, top, "").listen_on(first.addr).exit();
    assert_eq!(exited.code, Some(2), "{exited:?}");
    let lines = non_empty_lines(&exited.stderr);
    assert_eq!(lines.len(), 1, "stderr: {:?}", exited.stderr);
    let want = format!(
        "{} is already in use (by pid {}, shoal: master)",
        first.addr,
        first.pid()
    );
    assert!(lines[0].contains(&want), "want {want:?} in {:?}", exited.stderr);
    assert!(!exited.stderr.contains("listening on"), "{:?}", exited.stderr);
    for _ in 0..20 {
        assert_eq!(first.get("/a.txt").assert_status(200).text(), "first");
    }
}

#[test]
fn quick_mode_upstream_that_refuses_gets_a_502_and_a_missing_file_falls_back_to_it() {
    let site = site_with("a.txt", "alpha");
    let server = Launch::quick(&site).arg("-u").arg("127.0.0.1:1").start();
    assert_eq!(
        server.get("/a.txt").text(),
        "alpha",
        "files are still served with -r"
    );
    let missing = server.get("/missing.txt");
    assert_eq!(missing.status, 502, "{missing}");
}

#[test]
fn a_reload_that_adds_an_address_another_shoal_serves_is_refused_and_the_old_config_stays() {
    let other_site = site_with("a.txt", "other");
    let other = Launch::quick(&other_site).start();
    let site = site_with("a.txt", "ours");
    let top = "access_log = \"off\"";
    let server = Launch::config(&site, top, "").start();
    let workers = server.wait_for_workers(1);
    let config = site.base().join("shoal.toml");
    let text = std::fs::read_to_string(&config).expect("read shoal.toml");
    let both = format!("listen = [\"{}\", \"{}\"]", server.addr, other.addr);
    let added = text.replace(&format!("listen = [\"{}\"]", server.addr), &both);
    assert_ne!(added, text, "the listen line was rewritten");
    std::fs::write(&config, added).expect("rewrite shoal.toml");
    server.send_signal("HUP");
    let line = server.wait_for_log("reload failed", Duration::from_secs(10));
    let want = format!(
        "{} is already in use (by pid {}, shoal: master)",
        other.addr,
        other.pid()
    );
    assert!(line.contains(&want), "want {want:?} in {line}");
    assert_eq!(server.workers(), workers, "the old workers keep serving");
    for _ in 0..20 {
        assert_eq!(server.get("/a.txt").assert_status(200).text(), "ours");
        assert_eq!(other.get("/a.txt").assert_status(200).text(), "other");
    }
}
