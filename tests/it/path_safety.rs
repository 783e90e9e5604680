//! Path safety: traversal and encoding tricks never reach `secret.txt` beside the root;
//! the dotfiles policy; symlinks inside and out of the root; a FIFO cannot hang a worker.
//! Targets go out as raw bytes, exactly as written here.

use crate::harness::{read_response, request, Server, Site};

const SECRET: &str = "TOP-SECRET-6f1d2c";

/// A server whose root has `a/page.txt` and whose root's parent holds the secret.
fn guarded_site() -> (Site, Server) {
    let site = Site::new();
    site.outside("secret.txt", SECRET).file("a/page.txt", "page");
    let server = Server::quick(&site);
    (site, server)
}

/// Sends `target` raw and checks the answer is 400, 403 or 404 and never holds the secret;
/// returns the status.
fn assert_refused(target: &str) -> u16 {
    let (_site, server) = guarded_site();
    let raw = request("GET", target, &["Connection: close"]);
    let wire = server.send(raw.as_bytes());
    let text = String::from_utf8_lossy(&wire);
    assert!(!text.contains(SECRET), "{target} leaked the secret:\n{text}");
    let status = read_response(&mut wire.as_slice()).status;
    assert!(
        matches!(status, 400 | 403 | 404),
        "{target} got {status}, want 400, 403 or 404:\n{text}"
    );
    status
}

#[test]
fn plain_dot_dot_is_refused() {
    assert_refused("/../secret.txt");
}

#[test]
fn encoded_dot_dot_is_refused() {
    assert_refused("/%2e%2e/secret.txt");
}

#[test]
fn encoded_dot_dot_with_encoded_slash_is_refused() {
    assert_refused("/%2E%2E%2Fsecret.txt");
}

#[test]
fn dot_dot_with_encoded_slash_is_refused() {
    assert_refused("/..%2fsecret.txt");
}

#[test]
fn climbing_out_through_a_subdirectory_is_refused() {
    assert_refused("/a/../../secret.txt");
}

#[test]
fn double_encoded_dot_dot_is_a_plain_404() {
    assert_eq!(assert_refused("/%252e%252e/secret.txt"), 404);
}

#[test]
fn encoded_backslash_is_refused() {
    assert_refused("/..%5csecret.txt");
}

#[test]
fn raw_backslash_is_refused() {
    assert_refused("/a\\b");
}

#[test]
fn encoded_nul_is_refused() {
    assert_refused("/%00");
}

#[test]
fn overlong_utf8_dots_are_refused() {
    assert_refused("/%c0%ae%c0%ae/secret.txt");
}

#[test]
fn a_bad_percent_escape_is_refused() {
    assert_refused("/%zz");
}

fn dotfile_site(route: &str) -> (Site, Server) {
    let site = Site::new();
    site.file(".env", "PASSWORD=hunter2")
        .file(".git/config", "[core]");
    let server = Server::with_config(&site, "", route);
    (site, server)
}

#[test]
fn dotfiles_are_forbidden_by_default() {
    let (_site, server) = dotfile_site("");
    server.get("/.env").assert_status(403);
    server.get("/.git/config").assert_status(403);
}

#[test]
fn dotfiles_ignore_answers_404() {
    let (_site, server) = dotfile_site("  dotfiles = \"ignore\"");
    server.get("/.env").assert_status(404);
}

#[test]
fn dotfiles_allow_serves_them() {
    let (_site, server) = dotfile_site("  dotfiles = \"allow\"");
    assert_eq!(server.get("/.env").assert_status(200).text(), "PASSWORD=hunter2");
}

#[test]
fn a_symlink_out_of_the_root_is_not_followed_by_default() {
    let site = Site::new();
    site.outside("secret.txt", SECRET)
        .symlink("escape.txt", &site.base().join("secret.txt"));
    let server = Server::quick(&site);
    let response = server.get("/escape.txt");
    assert!(matches!(response.status, 403 | 404), "{response}");
    assert!(!response.text().contains(SECRET), "{response}");
}

#[test]
fn a_symlink_out_of_the_root_is_followed_only_when_configured() {
    let site = Site::new();
    site.outside("secret.txt", SECRET)
        .symlink("escape.txt", &site.base().join("secret.txt"));
    let server = Server::with_config(&site, "", "  follow_symlinks = true");
    assert_eq!(server.get("/escape.txt").assert_status(200).text(), SECRET);
}

#[test]
fn a_symlink_within_the_root_is_served() {
    let site = Site::new();
    site.file("real.txt", "real content")
        .symlink("alias.txt", std::path::Path::new("real.txt"));
    let server = Server::quick(&site);
    assert_eq!(server.get("/alias.txt").assert_status(200).text(), "real content");
}

#[test]
fn a_fifo_is_403_and_the_worker_keeps_serving() {
    let site = Site::new();
    site.file("a.txt", "alpha").fifo("pipe");
    let server = Server::quick(&site);
    server.get("/pipe").assert_status(403);
    assert_eq!(server.get("/a.txt").assert_status(200).text(), "alpha");
}
