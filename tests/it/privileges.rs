//! Privileges: started as root, the master keeps root (it binds, reloads, signals) and the
//! workers switch to `user`/`group` (or `-U`) with no supplementary groups; without a user,
//! root refuses to run workers as root; not root, shoal cannot switch users. Log files are
//! handed to the workers' user so they can reopen them after rotation. The default
//! max_connections is fitted to the open-files limit; an explicit one it cannot cover is
//! reported.
//!
//! These tests run as root (they switch users); elsewhere they say so and pass.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::harness::{run_shoal, wait_until, Launch, Site};
use crate::procfs::credentials;

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// A supplementary group the master is started with; no worker may keep it.
const EXTRA_GROUP: u32 = 4_000_789;
const WAIT: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: this test switches users and needs root");
    }
    root
}

/// A site that `nobody` can read (temp dirs are 0700), with `index.html` and a `logs/` dir.
fn world_readable_site() -> Site {
    let site = Site::new();
    site.file("index.html", "hello from nobody");
    std::fs::create_dir(site.base().join("logs")).expect("create logs/");
    for dir in [site.base(), &site.root(), &site.base().join("logs")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
    }
    site
}

/// Asserts every id of `pid` is `uid`/`gid` and it has no supplementary group.
fn assert_runs_as(pid: u32, uid: u32, gid: u32) {
    let (uids, gids, groups) = credentials(pid);
    assert_eq!(uids, [uid; 4], "Uid of {pid}");
    assert_eq!(gids, [gid; 4], "Gid of {pid}");
    assert!(groups.is_empty(), "supplementary groups of {pid}: {groups:?}");
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid())
}

#[test]
fn root_without_a_user_refuses_to_start() {
    if !is_root() {
        return;
    }
    let site = world_readable_site();
    let exited = Launch::quick(&site).user_flag(None).exit();
    assert_eq!(exited.code, Some(2), "{exited:?}");
    let lines: Vec<&str> = exited.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{exited:?}");
    assert!(
        lines[0].contains("refusing to run workers as root") && lines[0].contains("user = \"nobody\""),
        "{exited:?}"
    );
}

#[test]
fn user_nobody_runs_the_workers_as_nobody_and_hands_them_the_logs() {
    if !is_root() {
        return;
    }
    let site = world_readable_site();
    let top = "user = \"nobody\"\naccess_log = \"logs/access.log\"\nerror_log = \"logs/error.log\"";
    let server = Launch::config(&site, top, "")
        .user_flag(None)
        .started_as(0, 0, &[EXTRA_GROUP])
        .workers(2)
        .start();
    assert_eq!(
        credentials(server.pid()).2,
        [EXTRA_GROUP],
        "the master keeps its groups"
    );
    for worker in server.wait_for_workers(2) {
        assert_runs_as(worker, NOBODY, NOGROUP);
    }
    assert_eq!(
        server.get("/index.html").assert_status(200).text(),
        "hello from nobody"
    );
    let access = site.base().join("logs/access.log");
    let error = site.base().join("logs/error.log");
    assert_eq!(owner(&access), (NOBODY, NOGROUP));
    assert_eq!(owner(&error), (NOBODY, NOGROUP));

    // logrotate moves the file away; USR1 makes a new one the workers can open.
    std::fs::rename(&access, site.base().join("logs/access.log.1")).expect("rotate");
    server.send_signal("USR1");
    wait_until("a new access.log owned by nobody", WAIT, || {
        (access.exists() && owner(&access) == (NOBODY, NOGROUP)).then_some(())
    });
    wait_until("the workers to log into the new access.log", WAIT, || {
        server.get("/index.html?after-rotation").assert_status(200);
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        text.contains("after-rotation").then_some(())
    });
}

#[test]
fn the_user_flag_takes_a_group_and_overrides_the_config() {
    if !is_root() {
        return;
    }
    let site = world_readable_site();
    let server = Launch::config(&site, "user = \"root\"", "")
        .user_flag(Some("nobody:nogroup"))
        .start();
    let worker = server.wait_for_workers(1)[0];
    assert_runs_as(worker, NOBODY, NOGROUP);
    server.get("/index.html").assert_status(200);
}

#[test]
fn user_root_must_be_explicit_and_still_drops_supplementary_groups() {
    if !is_root() {
        return;
    }
    let site = world_readable_site();
    let server = Launch::config(&site, "user = \"root\"", "")
        .user_flag(None)
        .started_as(0, 0, &[EXTRA_GROUP])
        .start();
    assert_eq!(
        credentials(server.pid()).2,
        [EXTRA_GROUP],
        "the master keeps its groups"
    );
    let worker = server.wait_for_workers(1)[0];
    assert_runs_as(worker, 0, 0);
    server.get("/index.html").assert_status(200);
}

#[test]
fn numeric_ids_work_without_the_user_database() {
    if !is_root() {
        return;
    }
    let site = world_readable_site();
    let server = Launch::config(&site, "user = \"4000123\"\ngroup = \"4000456\"", "")
        .user_flag(None)
        .start();
    let worker = server.wait_for_workers(1)[0];
    assert_runs_as(worker, 4_000_123, 4_000_456);
    server.get("/index.html").assert_status(200);
}

#[test]
fn unknown_users_and_groups_are_config_errors() {
    let site = Site::new();
    let cases = [
        (
            "user = \"no-such-user-shoal\"",
            "shoal.toml:1:8: no user `no-such-user-shoal`",
        ),
        (
            "user = \"nobody\"\ngroup = \"no-such-group-shoal\"",
            "shoal.toml:2:9: no group `no-such-group-shoal`",
        ),
        ("group = \"nogroup\"", "shoal.toml:1:9: group goes with user"),
        (
            "user = \"4000123\"",
            "shoal.toml:1:8: user `4000123` is not in the user database",
        ),
    ];
    for (top, wanted) in cases {
        let path = site.base().join("shoal.toml");
        std::fs::write(
            &path,
            crate::harness::config_text(crate::harness::free_addr(), top, ""),
        )
        .unwrap();
        let exited = run_shoal(&["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
        assert_eq!(exited.code, Some(2), "{top}: {exited:?}");
        assert!(exited.stderr.contains(wanted), "{top}: {exited:?}");
    }
}

#[test]
fn not_root_shoal_runs_as_itself_and_cannot_switch_users() {
    if !is_root() {
        return;
    }
    let site = world_readable_site();
    let server = Launch::quick(&site)
        .user_flag(None)
        .started_as(NOBODY, NOGROUP, &[])
        .start();
    assert_runs_as(server.pid(), NOBODY, NOGROUP);
    assert_runs_as(server.wait_for_workers(1)[0], NOBODY, NOGROUP);
    server.get("/index.html").assert_status(200);
    drop(server);

    let exited = Launch::quick(&site)
        .user_flag(Some("root"))
        .started_as(NOBODY, NOGROUP, &[])
        .exit();
    assert_eq!(exited.code, Some(2), "{exited:?}");
    assert!(
        exited
            .stderr
            .contains("user = \"root\" (0:0) needs shoal to start as root; it runs as 65534:65534"),
        "{exited:?}"
    );
}

#[test]
fn an_open_files_limit_below_max_connections_is_reported_at_start() {
    let site = world_readable_site();
    let top = "[limits]\nmax_connections = 1000";
    let server = Launch::config(&site, top, "").open_files_limit(512).start();
    let line = server.wait_for_log("open files:", WAIT);
    assert!(
        line.contains("each worker may have 512") && line.contains("max_connections = 1000 needs about 2"),
        "{line}"
    );
    server.get("/index.html").assert_status(200);
}

#[test]
fn the_default_max_connections_fits_the_open_files_limit_without_a_warning() {
    let site = world_readable_site();
    // 20,000 files cover (20000 - 256) / 2 = 9,872 connections, not the ceiling of 10,000.
    let server = Launch::quick(&site).open_files_limit(20_000).start();
    let line = server.wait_for_log("max_connections defaults to", WAIT);
    assert!(
        line.contains("max_connections defaults to 9872 per worker") && line.contains("(20000)"),
        "{line}"
    );
    assert!(!line.contains("WARN"), "{line}");
    assert!(
        !server.stderr().contains("open files:"),
        "no warning for the default:\n{}",
        server.stderr()
    );
    server.get("/index.html").assert_status(200);
}
