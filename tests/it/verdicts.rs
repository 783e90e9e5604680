//! `shoal reload` and `shoal upgrade` report the master's verdict: exit 0 once the new
//! generation serves, 2 with the master's message (`FILE:LINE:COL: message` for a config)
//! when it refused or rolled back, 1 with a clear message when no verdict comes in time.
//! SIGHUP from other tools keeps working.

use std::ffi::OsStr;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use crate::harness::{run_shoal, signal, wait_until, Exited, Server, Site};
use crate::status::{start, TOP};
use crate::supervision::{dead, read_pid_file, Leftovers};

const WAIT: Duration = Duration::from_secs(20);

/// `shoal ACTION --pid-file <base>/shoal.pid EXTRA...`.
fn command(site: &Site, action: &str, extra: &[&str]) -> Exited {
    let pid_file = site.base().join("shoal.pid");
    let mut args: Vec<&OsStr> = vec![action.as_ref(), "--pid-file".as_ref(), pid_file.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    run_shoal(&args)
}

/// Rewrites the config with `top` before `[[server]]` and `route` in the route table.
fn rewrite(site: &Site, server: &Server, top: &str, route: &str) {
    let text = crate::harness::config_text(server.addr, top, route);
    std::fs::write(site.base().join("shoal.toml"), text).expect("rewrite shoal.toml");
}

#[test]
fn reload_exits_0_once_the_new_generation_serves() {
    let (site, server) = start(2);
    let old = server.wait_for_workers(2);
    rewrite(&site, &server, TOP, "  cache_control = \"max-age=7\"");
    let reload = command(&site, "reload", &[]);
    assert_eq!(reload.code, Some(0), "{reload:?}");
    assert_eq!(
        reload.stdout.trim(),
        format!(
            "reload: generation 1 serves with 2 workers (master {})",
            server.pid()
        ),
        "{reload:?}"
    );
    // The verdict came once every new worker beats (the old ones are told to drain then).
    let line = server.wait_for_log("reload complete", Duration::ZERO);
    wait_until("responses from the new config", WAIT, || {
        (server.get("/a.txt").header("Cache-Control") == Some("max-age=7")).then_some(())
    });
    assert!(line.contains(&format!("shoal[{}]", server.pid())), "{line}");
    wait_until("the old workers to go", WAIT, || {
        old.iter().all(|pid| dead(*pid)).then_some(())
    });
}

#[test]
fn reload_of_a_broken_config_exits_2_with_the_file_line_and_column() {
    let (site, server) = start(1);
    let workers = server.wait_for_workers(1);
    rewrite(&site, &server, &format!("no_such_key = 1\n{TOP}"), "");
    let reload = command(&site, "reload", &[]);
    assert_eq!(reload.code, Some(2), "{reload:?}");
    let lines: Vec<&str> = reload.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{reload:?}");
    let config = site.base().join("shoal.toml");
    let want = format!("{}:1:1: unknown field `no_such_key`", config.display());
    assert!(
        lines[0].starts_with("shoal: reload refused, still serving as before: ") && lines[0].contains(&want),
        "want {want:?} in {reload:?}"
    );
    assert!(reload.stdout.is_empty(), "{reload:?}");
    assert_eq!(server.workers(), workers, "the old workers keep serving");
    server.get("/a.txt").assert_status(200);
}

#[test]
fn reload_whose_workers_cannot_boot_is_rolled_back_and_exits_2() {
    let (site, server) = start(1);
    let workers = server.wait_for_workers(1);
    let top = TOP.replace("access_log = \"off\"", "access_log = \"/nonexistent-dir/x.log\"");
    rewrite(&site, &server, &top, "  cache_control = \"max-age=7\"");
    let reload = command(&site, "reload", &[]);
    assert_eq!(reload.code, Some(2), "{reload:?}");
    assert!(
        reload.stderr.contains(
            "shoal: reload rolled back, still serving as before: worker 0 cannot start with the new config"
        ) && reload.stderr.contains("access log"),
        "{reload:?}"
    );
    assert_eq!(server.workers(), workers, "the old workers keep serving");
    let response = server.get("/a.txt");
    assert_eq!(response.header("Cache-Control"), None, "{response}");
}

#[test]
fn sighup_from_other_tools_still_reloads() {
    let (site, server) = start(1);
    rewrite(&site, &server, TOP, "  cache_control = \"max-age=7\"");
    server.send_signal("HUP");
    server.wait_for_log("reload complete", WAIT);
    // An old worker told to drain may still take a connection already in its queue.
    wait_until("responses from the new config", WAIT, || {
        (server.get("/a.txt").header("Cache-Control") == Some("max-age=7")).then_some(())
    });
}

#[test]
fn a_master_that_does_not_answer_times_out_with_a_clear_message() {
    let site = Site::new();
    // A live pid (this test) and a control socket that accepts and never answers.
    std::fs::write(site.base().join("shoal.pid"), format!("{}\n", std::process::id())).unwrap();
    let _mute = UnixListener::bind(site.base().join("shoal.sock")).expect("bind a mute socket");
    let reload = command(&site, "reload", &["--timeout", "300ms"]);
    assert_eq!(reload.code, Some(1), "{reload:?}");
    assert!(
        reload.stderr.contains(&format!(
            "no verdict from shoal master {} on ",
            std::process::id()
        )) && reload.stderr.contains("within 300ms; it may still be under way"),
        "{reload:?}"
    );
}

/// Runs `shoal upgrade` and returns what it printed and the new master's pid, if the pid
/// file names one.
fn upgrade(site: &Site, server: &Server, leftovers: &mut Leftovers) -> (Exited, Option<u32>) {
    let upgrade = command(site, "upgrade", &[]);
    let pid_file = site.base().join("shoal.pid");
    let new = read_pid_file(&pid_file).filter(|pid| *pid != server.pid());
    leftovers.0.extend(new);
    (upgrade, new)
}

#[test]
fn upgrade_exits_0_once_the_new_master_serves() {
    let (site, mut server) = start(1);
    let old = server.pid();
    let mut leftovers = Leftovers(vec![old]);
    let (exited, new) = upgrade(&site, &server, &mut leftovers);
    assert_eq!(exited.code, Some(0), "{exited:?}");
    let new = new.expect("the pid file names the new master once the verdict came");
    assert_eq!(
        exited.stdout.trim(),
        format!("upgrade: the new master (pid {new}) serves; the old one drains and exits (master {old})"),
        "{exited:?}"
    );
    assert_eq!(server.wait_exit(WAIT).code(), Some(0));
    server.get("/a.txt").assert_status(200);
    assert!(signal(new, "TERM"), "kill -TERM {new}");
    wait_until("the new master to exit", WAIT, || dead(new).then_some(()));
}

#[test]
fn upgrade_whose_new_master_fails_exits_2_and_the_old_one_keeps_serving() {
    let (site, server) = start(1);
    let old = server.pid();
    let mut leftovers = Leftovers(vec![old]);
    // The new master re-reads the config, which is now broken.
    rewrite(&site, &server, &format!("no_such_key = 1\n{TOP}"), "");
    let (exited, new) = upgrade(&site, &server, &mut leftovers);
    assert_eq!(exited.code, Some(2), "{exited:?}");
    assert!(
        exited
            .stderr
            .contains("shoal: upgrade rolled back, still serving as before: the new master (pid ")
            && exited.stderr.contains("exited before it was ready (exit code 2"),
        "{exited:?}"
    );
    assert_eq!(new, None, "the pid file still names the old master");
    assert_eq!(
        read_pid_file(Path::new(&site.base().join("shoal.pid"))),
        Some(old)
    );
    server.get("/a.txt").assert_status(200);
}
