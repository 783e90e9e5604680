//! The pid file: a second instance on the pid file of a live master refuses to start (exit 2)
//! and leaves that master's pid file and control socket alone; a stale file (dead pid, a pid
//! reused by another program) is replaced with a log line; a symlink planted at the pid path
//! is replaced, never written through.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{run_shoal, Launch, Site};
use crate::supervision::read_pid_file;

const WAIT: Duration = Duration::from_secs(10);
const TOP: &str = "access_log = \"off\"\npid_file = \"shoal.pid\"";

fn site() -> Site {
    let site = Site::new();
    site.file("a.txt", "alpha");
    site
}

/// `shoal status --pid-file FILE` names master `pid`.
fn assert_status_names(pid_file: &Path, pid: u32) {
    let status = run_shoal(&["status".as_ref(), "--pid-file".as_ref(), pid_file.as_os_str()]);
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(status.stdout.starts_with(&format!("master {pid} ")), "{status:?}");
}

#[test]
fn the_same_config_started_twice_refuses_the_second_and_keeps_the_first_intact() {
    let site = site();
    let pid_file = site.base().join("shoal.pid");
    let first = Launch::config(&site, TOP, "").start();
    assert_eq!(read_pid_file(&pid_file), Some(first.pid()));
    let second = Launch::config(&site, TOP, "").listen_on(first.addr).exit();
    assert_eq!(second.code, Some(2), "{second:?}");
    let lines: Vec<&str> = second.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {second:?}");
    assert!(
        lines[0].contains(&format!(
            "shoal.pid names a running shoal master (pid {})",
            first.pid()
        )),
        "{second:?}"
    );
    assert_eq!(
        read_pid_file(&pid_file),
        Some(first.pid()),
        "the first master's pid file"
    );
    assert_status_names(&pid_file, first.pid());
    first.get("/a.txt").assert_status(200);
}

#[test]
fn a_stale_pid_file_is_replaced_with_a_log_line() {
    let site = site();
    let pid_file = site.base().join("shoal.pid");
    // A pid that was just alive and is no longer.
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let dead = gone.id();
    gone.wait().expect("wait for true");
    // A live pid of another program: this test process.
    let reused = std::process::id();
    for (pid, why) in [
        (dead, format!("pid {dead} is not running")),
        (reused, format!("pid {reused} is `")),
    ] {
        std::fs::write(&pid_file, format!("{pid}\n")).expect("plant the pid file");
        let mut server = Launch::config(&site, TOP, "").start();
        let line = server.wait_for_log("replacing it", WAIT);
        assert!(
            line.contains("shoal.pid is stale") && line.contains(&why),
            "{line}"
        );
        assert_eq!(read_pid_file(&pid_file), Some(server.pid()));
        assert_status_names(&pid_file, server.pid());
        assert_eq!(server.stop().code(), Some(0));
        assert!(!pid_file.exists(), "removed at exit");
    }
}

#[test]
fn a_symlink_at_the_pid_path_is_replaced_not_written_through() {
    let site = site();
    let pid_file = site.base().join("shoal.pid");
    let victim = site.base().join("victim.conf");
    std::fs::write(&victim, "precious\n").expect("write the victim");
    std::os::unix::fs::symlink(&victim, &pid_file).expect("plant a symlink at the pid path");
    let mut server = Launch::config(&site, TOP, "").start();
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read the victim"),
        "precious\n"
    );
    let meta = std::fs::symlink_metadata(&pid_file).expect("the pid file");
    assert!(meta.file_type().is_file(), "a regular file now: {meta:?}");
    assert_eq!(read_pid_file(&pid_file), Some(server.pid()));
    assert_eq!(server.stop().code(), Some(0));
    assert!(!pid_file.exists(), "removed at exit");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read the victim"),
        "precious\n"
    );
}
