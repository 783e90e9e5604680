//! `shoal status` and `shoal top`: the master answers over its control socket beside the pid
//! file; the table and the JSON show every worker with its requests and restarts.
//!
//! Counters reach the master with each heartbeat, so tests wait (bounded) for the status to
//! show what they did, never for a fixed time.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{run_shoal, signal, wait_until, Exited, Launch, Server, Site};

/// Bound on every wait for the status to change.
const WAIT: Duration = Duration::from_secs(10);

/// A config with a pid file (so a control socket), a fast heartbeat and no access log.
pub const TOP: &str =
    "access_log = \"off\"\npid_file = \"shoal.pid\"\n[supervisor]\nheartbeat_interval = \"200ms\"\n";

/// A shoal with [`TOP`] and `workers` workers serving `a.txt`.
pub fn start(workers: u16) -> (Site, Server) {
    let site = Site::new();
    site.file("a.txt", "alpha");
    let server = Launch::config(&site, TOP, "").workers(workers).start();
    (site, server)
}

fn pid_file(site: &Site) -> PathBuf {
    site.base().join("shoal.pid")
}

/// `shoal status --pid-file FILE EXTRA...`.
fn status_command(pid_file: &Path, extra: &[&str]) -> Exited {
    let mut args: Vec<&OsStr> = vec!["status".as_ref(), "--pid-file".as_ref(), pid_file.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    run_shoal(&args)
}

/// The status as JSON, failing the test if the command fails.
pub fn status_json(site: &Site) -> Value {
    let run = status_command(&pid_file(site), &["--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {run:?}"))
}

/// Polls the JSON status until `check` accepts it; returns that status.
pub fn wait_for_status(site: &Site, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_until(what, WAIT, || Some(status_json(site)).filter(|s| check(s)))
}

fn slot(status: &Value, index: usize) -> &Value {
    &status["workers"][index]
}

fn requests(status: &Value) -> u64 {
    status["workers"]
        .as_array()
        .expect("workers array")
        .iter()
        .map(|w| w["requests"].as_u64().expect("requests"))
        .sum()
}

#[test]
fn status_shows_the_master_and_every_worker_with_the_requests_served() {
    let (site, server) = start(2);
    let workers = server.wait_for_workers(2);
    for _ in 0..10 {
        server.get("/a.txt").assert_status(200);
    }
    // The harness's readiness probe is a request too.
    let status = wait_for_status(&site, "10 requests counted, every worker running", |s| {
        requests(s) >= 11 && (0..2).all(|i| slot(s, i)["state"] == "running")
    });
    let master = &status["master"];
    assert_eq!(
        master["pid"].as_u64(),
        Some(u64::from(server.pid())),
        "{status:#}"
    );
    assert_eq!(master["state"], "running");
    assert_eq!(master["generation"], 0);
    let config = std::fs::canonicalize(site.base().join("shoal.toml")).unwrap();
    assert_eq!(master["config"].as_str(), Some(config.to_str().unwrap()));
    let listed = status["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{status:#}");
    for (index, worker) in listed.iter().enumerate() {
        assert_eq!(worker["slot"].as_u64(), Some(index as u64));
        let pid = worker["pid"].as_u64().unwrap() as u32;
        assert!(workers.contains(&pid), "pid {pid} is not one of {workers:?}");
        assert_eq!(worker["state"], "running", "{worker:#}");
        assert!(worker["rss_bytes"].as_u64().unwrap() > 0, "{worker:#}");
        assert_eq!(worker["restarts"], 0);
        assert_eq!(worker["last_restart"], Value::Null);
        assert_eq!(worker["active_connections"], 0);
    }
    assert_eq!(requests(&status), 11, "{status:#}");

    let table = status_command(&pid_file(&site), &[]);
    assert_eq!(table.code, Some(0), "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!("master {}  running  up ", server.pid())),
        "{}",
        table.stdout
    );
    assert!(lines[0].ends_with("generation 0"), "{}", table.stdout);
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        ["slot", "pid", "state", "uptime", "rss", "requests", "active", "restarts", "last", "restart"]
    );
    for (index, line) in lines[2..].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], index.to_string(), "{line}");
        assert!(workers.contains(&cells[1].parse().unwrap()), "{line}");
        assert_eq!(cells[2], "running", "{line}");
        assert_eq!(cells[cells.len() - 2..], ["0", "-"], "{line}");
    }
    assert_eq!(lines.len(), 4, "{}", table.stdout);
}

#[test]
fn a_killed_worker_is_a_crash_restart_and_a_reload_bumps_the_generation() {
    let (site, server) = start(2);
    let before = status_json(&site);
    let victim = slot(&before, 0)["pid"].as_u64().unwrap() as u32;
    assert!(signal(victim, "KILL"), "kill -KILL {victim}");
    let after = wait_for_status(&site, "slot 0 restarted after a crash", |s| {
        slot(s, 0)["restarts"] == 1 && slot(s, 0)["state"] == "running"
    });
    assert_eq!(slot(&after, 0)["last_restart"], "crash", "{after:#}");
    assert_ne!(slot(&after, 0)["pid"].as_u64(), Some(u64::from(victim)));
    assert_eq!(slot(&after, 1)["restarts"], 0, "{after:#}");

    server.send_signal("HUP");
    let reloaded = wait_for_status(&site, "generation 1 with every worker replaced", |s| {
        s["master"]["generation"] == 1 && slot(s, 0)["restarts"] == 2 && slot(s, 1)["restarts"] == 1
    });
    for index in 0..2 {
        assert_eq!(slot(&reloaded, index)["last_restart"], "reload", "{reloaded:#}");
    }
}

#[test]
fn the_control_socket_is_owner_only_and_removed_at_exit() {
    let (site, mut server) = start(1);
    let socket = site.base().join("shoal.sock");
    let mode = std::fs::metadata(&socket)
        .expect("shoal.sock exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert_eq!(server.stop().code(), Some(0));
    assert!(!socket.exists(), "the master left its control socket behind");
}

#[test]
fn status_without_a_running_master_fails_and_says_why() {
    let site = Site::new();
    let missing = status_command(&site.base().join("shoal.pid"), &[]);
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("cannot reach the master's control socket")
            && missing.stderr.contains("shoal.sock")
            && missing.stderr.contains("is shoal running"),
        "{missing:?}"
    );
    assert!(missing.stdout.is_empty(), "{missing:?}");
    // A socket file whose master died without removing it.
    drop(std::os::unix::net::UnixListener::bind(site.base().join("stale.sock")).unwrap());
    let stale = status_command(&site.base().join("stale.pid"), &["--json"]);
    assert_eq!(stale.code, Some(1), "{stale:?}");
    assert!(stale.stderr.contains("stale socket"), "{stale:?}");
}

#[test]
fn top_redraws_the_table_each_second() {
    let (site, server) = start(1);
    let pid_file = pid_file(&site);
    let run = run_shoal(&[
        "top".as_ref(),
        "-n".as_ref(),
        "2".as_ref(),
        "--pid-file".as_ref(),
        pid_file.as_os_str(),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let frames: Vec<&str> = run
        .stdout
        .split("\x1b[H\x1b[2J")
        .filter(|f| !f.is_empty())
        .collect();
    assert_eq!(frames.len(), 2, "{:?}", run.stdout);
    for frame in frames {
        assert!(
            frame.starts_with(&format!("master {}", server.pid())),
            "{frame:?}"
        );
        assert!(frame.contains("\nslot  pid"), "{frame:?}");
    }
}
