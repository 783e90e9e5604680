//! `shoal check -c FILE`: a good config passes with `FILE: ok`; each bad one exits 2 with a
//! single `FILE:LINE:COL: message` line pointing at the offending line. Beyond the file, check
//! sees what start-up would refuse: root without `user` (in start-up's words), a taken address
//! (unless this config's own instance holds it), a pid file or log file that cannot be
//! created, a root the workers' user cannot open; and whatever check accepts, start-up starts.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::{check_config, config_text, free_addr, run_shoal, Exited, Launch, Site};

/// A valid config; tests break one line of it (line numbers below are 1-based).
const GOOD: &str = "workers = 2
[limits]
max_body_bytes = \"10MiB\"
[[server]]
listen = [\"127.0.0.1:8080\"]
[[server.route]]
prefix = \"/\"
root = \"site\"
";

/// Writes `text` as `<base>/shoal.toml` beside a `site` directory and checks it.
fn check(text: &str) -> (String, Exited) {
    let site = Site::new();
    let path = site.base().join("shoal.toml");
    std::fs::write(&path, text).expect("write config");
    let exited = check_config(&path);
    (path.display().to_string(), exited)
}

/// Checks `text` and expects exit 2 with one stderr line starting `FILE:LINE:` and
/// containing `needle`.
fn assert_error_at(text: &str, line: usize, needle: &str) {
    let (file, exited) = check(text);
    assert_eq!(exited.code, Some(2), "{exited:?}");
    let lines: Vec<&str> = exited.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one stderr line: {:?}", exited.stderr);
    let location = format!("{file}:{line}:");
    assert!(
        lines[0].starts_with(&location) && lines[0].contains(needle),
        "want `{location}COL: ...{needle}...`, got {:?}",
        lines[0]
    );
}

#[test]
fn a_good_config_is_ok() {
    let (file, exited) = check(GOOD);
    assert_eq!(exited.code, Some(0), "{exited:?}");
    assert_eq!(exited.stdout.trim_end(), format!("{file}: ok"));
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_column() {
    let text = GOOD.replacen("[limits]", "wrokers = 3\n[limits]", 1);
    let (file, exited) = check(&text);
    assert_eq!(exited.code, Some(2), "{exited:?}");
    let want = format!("{file}:2:1: unknown field `wrokers`");
    assert!(
        exited.stderr.starts_with(&want),
        "want {want:?}..., got {:?}",
        exited.stderr
    );
    assert_eq!(exited.stderr.lines().count(), 1, "{:?}", exited.stderr);
}

#[test]
fn a_bad_size_unit_names_its_line() {
    assert_error_at(&GOOD.replace("10MiB", "10XiB"), 3, "10XiB");
}

#[test]
fn a_missing_root_names_the_root_line() {
    assert_error_at(&GOOD.replace("\"site\"", "\"missing\""), 8, "root");
}

#[test]
fn a_bad_listen_address_names_its_line() {
    assert_error_at(&GOOD.replace("127.0.0.1:8080", "127.0.0.1:http"), 5, "listen");
}

#[test]
fn a_top_level_key_below_a_table_gets_a_hint() {
    // `user` after `[limits]` is, in TOML, a key of [limits].
    let text = GOOD.replacen(
        "max_body_bytes = \"10MiB\"\n",
        "max_body_bytes = \"10MiB\"\npid_file = \"shoal.pid\"\n",
        1,
    );
    assert_error_at(
        &text,
        4,
        "`pid_file` is a top-level key, but here it falls into [limits]: top-level keys must come before the first [table]",
    );
}

#[test]
fn compound_durations_and_every_spelling_of_a_size_unit_are_accepted() {
    for (duration, size) in [("1m30s", "10m"), ("1h 30m", "10M"), ("1s500ms", "10MB")] {
        let text = GOOD.replacen(
            "max_body_bytes = \"10MiB\"\n",
            &format!("max_body_bytes = \"{size}\"\nheader_timeout = \"{duration}\"\n"),
            1,
        );
        let (_, exited) = check(&text);
        assert_eq!(exited.code, Some(0), "{duration}, {size}: {exited:?}");
    }
    let fraction = GOOD.replacen(
        "max_body_bytes = \"10MiB\"\n",
        "max_body_bytes = \"10MiB\"\nheader_timeout = \"1.5s\"\n",
        1,
    );
    assert_error_at(
        &fraction,
        4,
        "whole numbers only (`1.5s` is `1s500ms` or `1500ms`)",
    );
    let backwards = GOOD.replacen(
        "max_body_bytes = \"10MiB\"\n",
        "max_body_bytes = \"10MiB\"\nheader_timeout = \"30s1m\"\n",
        1,
    );
    assert_error_at(&backwards, 4, "from the largest down (like `1h30m` or `1m30s`)");
}

/// Checks `text` written as `<base>/shoal.toml`, expecting exit 2 and one stderr line
/// `FILE: ...needle...`.
fn assert_refused(site: &Site, text: &str, needle: &str) -> String {
    let path = site.base().join("shoal.toml");
    std::fs::write(&path, text).expect("write config");
    let exited = check_config(&path);
    assert_eq!(exited.code, Some(2), "{exited:?}");
    let lines: Vec<&str> = exited.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {exited:?}");
    let want = format!("{}: ", path.display());
    assert!(
        lines[0].starts_with(&want) && lines[0].contains(needle),
        "want `{want}...{needle}...`, got {:?}",
        lines[0]
    );
    lines[0].to_string()
}

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: this test needs root");
    }
    root
}

#[test]
fn as_root_without_a_user_check_fails_with_the_words_start_up_uses() {
    if !is_root() {
        return;
    }
    let site = Site::new();
    let path = site.base().join("shoal.toml");
    std::fs::write(&path, GOOD).expect("write config");
    let checked = run_shoal(&["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
    assert_eq!(checked.code, Some(2), "{checked:?}");
    let started = Launch::config(&site, "", "").user_flag(None).exit();
    assert_eq!(started.code, Some(2), "{started:?}");
    let start_words = started.stderr.trim().strip_prefix("shoal: ").expect("shoal: ...");
    let check_words = checked
        .stderr
        .trim()
        .strip_prefix(&format!("{}: ", path.display()))
        .expect("FILE: ...");
    assert!(
        check_words.starts_with("refusing to run workers as root"),
        "{checked:?}"
    );
    assert_eq!(check_words, start_words, "the same message");
    // With -U, as start-up would be given, it passes.
    assert_eq!(check_config(&path).code, Some(0));
}

#[test]
fn a_root_the_workers_user_cannot_open_is_reported_and_start_up_agrees() {
    if !is_root() {
        return;
    }
    let site = Site::new();
    site.file("index.html", "hi");
    // The root is root's alone: nobody cannot open it.
    std::fs::set_permissions(site.root(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let text = config_text(free_addr(), "user = \"nobody\"", "");
    let path = site.base().join("shoal.toml");
    std::fs::write(&path, &text).expect("write config");
    let checked = run_shoal(&["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
    assert_eq!(checked.code, Some(2), "{checked:?}");
    let want = format!(
        "the workers, running as user nobody (65534:65534), cannot open root {} (route /): Permission denied",
        site.root().canonicalize().unwrap().display()
    );
    assert!(checked.stderr.contains(&want), "want {want:?}: {checked:?}");
    let top = "user = \"nobody\"";
    let started = Launch::config(&site, top, "").user_flag(None).exit();
    assert_eq!(started.code, Some(2), "start-up fails too: {started:?}");
    assert!(started.stderr.contains("cannot open root"), "{started:?}");
    // Readable by nobody: both pass.
    for dir in [site.base(), &site.root()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let checked = run_shoal(&["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
    assert_eq!(checked.code, Some(0), "{checked:?}");
    Launch::config(&site, top, "").user_flag(None).start();
}

#[test]
fn log_and_pid_files_that_cannot_be_created_are_reported() {
    let site = Site::new();
    let cases = [
        ("access_log = \"missing/access.log\"", "cannot open access_log "),
        ("error_log = \"missing/error.log\"", "error_log "),
        ("pid_file = \"missing/shoal.pid\"", "pid_file "),
    ];
    for (top, needle) in cases {
        let line = assert_refused(&site, &config_text(free_addr(), top, ""), needle);
        assert!(
            line.contains("missing") && line.contains("No such file or directory"),
            "{line}"
        );
    }
    let long = format!("pid_file = \"{}.pid\"", "p".repeat(120));
    assert_refused(
        &site,
        &config_text(free_addr(), &long, ""),
        "is longer than a unix socket path may be (107 bytes)",
    );
}

#[test]
fn a_log_directory_check_rejects_start_up_rejects_too() {
    let site = Site::new();
    let top = "access_log = \"missing/access.log\"";
    assert_refused(&site, &config_text(free_addr(), top, ""), "cannot create it in ");
    let started = Launch::config(&site, top, "").exit();
    assert_eq!(started.code, Some(2), "{started:?}");
}

#[test]
fn an_address_in_use_is_reported_unless_this_config_already_runs_there() {
    let site = Site::new();
    let holder = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let addr = holder.local_addr().unwrap();
    let want = format!(
        "listen: {addr} is already in use (by pid {}, ",
        std::process::id()
    );
    assert_refused(&site, &config_text(addr, "", ""), &want);
    let admin = format!("[admin]\nlisten = \"{addr}\"");
    assert_refused(
        &site,
        &config_text(free_addr(), &admin, ""),
        &format!("[admin] listen: {addr} is already in use"),
    );
    drop(holder);
    // The running instance of this very config holds its address: fine (check before reload).
    let top = "access_log = \"off\"\npid_file = \"shoal.pid\"";
    let server = Launch::config(&site, top, "").start();
    let path = site.base().join("shoal.toml");
    let checked = check_config(&path);
    assert_eq!(checked.code, Some(0), "{checked:?}");
    // Another config on the same address, with another pid file: start-up would fail.
    let other = site.base().join("other.toml");
    std::fs::write(&other, config_text(server.addr, "pid_file = \"other.pid\"", "")).unwrap();
    let checked = check_config(&other);
    assert_eq!(checked.code, Some(2), "{checked:?}");
    assert!(
        checked.stderr.contains(&format!(
            "{} is already in use (by pid {}, shoal: master)",
            server.addr,
            server.pid()
        )),
        "{checked:?}"
    );
    assert!(
        !Path::new(&site.base().join("other.pid")).exists(),
        "check creates nothing"
    );
}
