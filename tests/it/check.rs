//! `shoal check -c FILE`: a good config passes with `FILE: ok`; each bad one exits 2 with a
//! single `FILE:LINE:COL: message` line pointing at the offending line.

use crate::harness::{run_shoal, Exited, Site};

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
    let exited = run_shoal(&["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
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
