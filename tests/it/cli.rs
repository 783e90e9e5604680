//! `shoal --help` is complete (examples, signals, environment, exit codes) and every
//! subcommand's help shows an example of itself.

use std::ffi::OsStr;

use crate::harness::run_shoal;

fn help(args: &[&str]) -> String {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let exited = run_shoal(&args);
    assert_eq!(exited.code, Some(0), "shoal {args:?}: {exited:?}");
    exited.stdout
}

/// The subcommands `shoal --help` lists (between `Commands:` and the next blank line).
fn subcommands(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect()
}

#[test]
fn help_covers_examples_signals_environment_and_exit_codes() {
    let text = help(&["--help"]);
    for wanted in [
        "Examples:",
        "shoal -c ",
        "TERM, QUIT",
        "HUP",
        "USR1",
        "USR2",
        "TTIN, TTOU",
        "RUST_LOG",
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "Exit codes: 0 clean stop, 1 runtime failure",
        "docs/operations.md",
    ] {
        assert!(text.contains(wanted), "`shoal --help` lacks {wanted:?}:\n{text}");
    }
    let short = help(&["-h"]);
    assert!(
        short.contains("Examples:") && short.contains("shoal --help"),
        "{short}"
    );
}

#[test]
fn every_subcommand_shows_an_example_of_itself() {
    let names = subcommands(&help(&["--help"]));
    for expected in [
        "stop", "quit", "reload", "reopen", "upgrade", "status", "top", "cache", "check",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for name in &names {
        let text = help(&[name, "--help"]);
        assert!(
            text.contains("Example") && text.contains(&format!("shoal {name} ")),
            "`shoal {name} --help` shows no example of itself:\n{text}"
        );
    }
}
