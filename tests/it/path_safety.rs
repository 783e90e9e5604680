//! Path safety, as tables: a traversal corpus (encoded, double-encoded, overlong UTF-8,
//! backslashes, `..;`, NUL, very long paths, symlink chains, absolute-form targets, nginx's
//! alias traversal) never yields a byte of the canary beside the root, and special files under
//! the root (FIFOs, a unix socket, device nodes, links to /dev/zero and /dev/urandom) are
//! refused without blocking the worker (a normal request answers right after each) and
//! without ever being opened (inotify sees no open). Also the
//! dotfiles policy and symlinks inside the root. Targets go out as raw bytes, exactly as written.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

use crate::harness::{read_response, request, Server, Site};

/// The canary beside the root (`<base>/secret.txt`); no response may ever hold it.
const SECRET: &str = "TOP-SECRET-6f1d2c";

/// A root with `a/page.txt`, symlink chains that leave it, and the canary beside it; `/img`
/// serves the same root with its prefix stripped (no trailing '/') and symlinks followed
/// anywhere, the riskiest route there is.
fn guarded_site() -> (Site, Server) {
    let site = Site::new();
    site.outside("secret.txt", SECRET)
        .file("a/page.txt", "page")
        .symlink("up", Path::new(".."))
        .symlink("chain1", Path::new("a/chain2"))
        .symlink("a/chain2", Path::new("../up/secret.txt"))
        .symlink("absolute", &site.base().join("secret.txt"))
        .symlink("passwd", Path::new("/etc/passwd"));
    let route = "  [[server.route]]\n  prefix = \"/img\"\n  root = \"site\"\n  strip_prefix = true\n  \
                 follow_symlinks = true\n";
    let server = Server::with_config(&site, "", route);
    (site, server)
}

/// (target, the status it must get). None may ever show the canary or /etc/passwd.
fn traversal_corpus() -> Vec<(String, u16)> {
    let fixed: &[(&str, u16)] = &[
        ("/../secret.txt", 400),
        ("/..", 400),
        ("/../", 400),
        ("/a/../../secret.txt", 400),
        ("/a/./.././../secret.txt", 400),
        ("//../secret.txt", 400),
        ("/%2e%2e/secret.txt", 400),
        ("/%2E%2E/secret.txt", 400),
        ("/.%2e/secret.txt", 400),
        ("/%2e./secret.txt", 400),
        ("/%2e%2e%2fsecret.txt", 400),
        ("/..%2fsecret.txt", 400),
        ("/a/%2e%2e/%2e%2e/secret.txt", 400),
        // Decoded once only: these name files called "%2e%2e" and the like.
        ("/%252e%252e/secret.txt", 404),
        ("/%252e%252e%252fsecret.txt", 404),
        ("/%25%32%65%25%32%65/secret.txt", 404),
        // Overlong UTF-8 for '.' and '/'.
        ("/%c0%ae%c0%ae/secret.txt", 400),
        ("/%c0%2e%c0%2e/secret.txt", 400),
        ("/%e0%80%ae%e0%80%ae/secret.txt", 400),
        ("/..%c0%afsecret.txt", 400),
        ("/%c1%9c", 400),
        // Backslashes, raw and encoded.
        ("/..%5csecret.txt", 400),
        ("/..\\secret.txt", 400),
        ("/a\\..\\..\\secret.txt", 400),
        // `..;` (Tomcat's path parameter): refused, since an upstream may read it as `..`.
        ("/..;/secret.txt", 400),
        ("/a/..;/..;/secret.txt", 400),
        ("/%2e%2e;x/secret.txt", 400),
        // NUL and other control bytes.
        ("/%00", 400),
        ("/secret.txt%00.html", 400),
        ("/a/page.txt%00", 400),
        ("/a/page.txt%0a", 400),
        // Symlinks leaving the root: a parent link, a chain, an absolute link, /etc/passwd.
        ("/up/secret.txt", 403),
        ("/chain1", 403),
        ("/absolute", 403),
        ("/passwd", 403),
        // Absolute-form targets.
        ("http://test/../secret.txt", 400),
        ("http://test/%2e%2e/secret.txt", 400),
        ("HTTP://test/a/..%2f..%2fsecret.txt", 400),
        // ".." is the authority here, and no valid host (RFC 9112 §3.2).
        ("http://../secret.txt", 400),
        ("file:///etc/passwd", 400),
        ("*", 400),
        // nginx's alias traversal: /img strips its prefix and follows symlinks anywhere.
        ("/img../secret.txt", 404),
        ("/img../site/a/page.txt", 404),
        ("/img..%2fsecret.txt", 404),
        ("/img/../secret.txt", 404),
        ("/img/..%2f..%2fsecret.txt", 400),
        ("/img/%2e%2e/%2e%2e/secret.txt", 400),
    ];
    let mut corpus: Vec<(String, u16)> = fixed.iter().map(|(t, s)| (t.to_string(), *s)).collect();
    corpus.push((format!("/{}secret.txt", "../".repeat(100)), 400));
    corpus.push((format!("/{}../../secret.txt", "a/".repeat(1000)), 404));
    corpus.push((format!("/{}", "a".repeat(300)), 404));
    corpus.push((format!("/{}", "%2e%2e/".repeat(500)), 400));
    corpus.push((format!("/{}", "x".repeat(20_000)), 414));
    corpus
}

#[test]
fn the_traversal_corpus_never_leaves_the_root() {
    let (_site, server) = guarded_site();
    let mut failures = Vec::new();
    for (target, expected) in traversal_corpus() {
        let raw = request("GET", &target, &["Connection: close"]);
        let wire = server.send(raw.as_bytes());
        let text = String::from_utf8_lossy(&wire);
        let shown: String = target.chars().take(60).collect();
        if text.contains(SECRET) || text.contains("root:x:0:0") {
            failures.push(format!("{shown}: LEAKED\n{text}"));
            continue;
        }
        let status = read_response(&mut wire.as_slice()).status;
        if status != expected {
            failures.push(format!("{shown}: {status}, want {expected}"));
        }
    }
    server.get("/a/page.txt").assert_status(200);
    assert_eq!(server.get("/img/a/page.txt").assert_status(200).text(), "page");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `mknod PATH c MAJOR MINOR` (the tests run as root).
fn mknod(path: &Path, major: u32, minor: u32) {
    let status = Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .expect("run mknod");
    assert!(status.success(), "mknod {} failed", path.display());
}

#[test]
fn special_files_are_refused_without_blocking_the_worker() {
    let site = Site::new();
    site.file("a.txt", "alpha")
        .fifo("pipe")
        .file("fifodir/keep", "")
        .fifo("fifodir/index.html")
        .symlink("zero", Path::new("/dev/zero"))
        .symlink("random", Path::new("/dev/urandom"))
        .file("follow/real.txt", "real")
        .symlink("follow/zero", Path::new("/dev/zero"))
        .symlink("follow/random", Path::new("/dev/urandom"))
        .symlink("follow/pipe", &site.root().join("pipe"));
    mknod(&site.root().join("null"), 1, 3);
    mknod(&site.root().join("devzero"), 1, 5);
    let _socket = UnixListener::bind(site.root().join("sock")).expect("bind a unix socket");
    let route = "  [[server.route]]\n  prefix = \"/follow/\"\n  root = \"site/follow\"\n  \
                 strip_prefix = true\n  follow_symlinks = true\n";
    let server = Server::with_config(&site, "", route);
    let cases: &[(&str, u16)] = &[
        ("/pipe", 403),
        ("/fifodir/", 403),
        ("/zero", 403),
        ("/random", 403),
        ("/null", 403),
        ("/devzero", 403),
        ("/sock", 403),
        ("/follow/zero", 403),
        ("/follow/random", 403),
        ("/follow/pipe", 403),
    ];
    let mut failures = Vec::new();
    for (target, expected) in cases {
        let response = server.get(target);
        if response.status != *expected {
            failures.push(format!("{target}: {response}"));
        }
        // The worker is not stuck reading a device or waiting on a FIFO.
        let after = server.get("/a.txt");
        if after.status != 200 || after.text() != "alpha" {
            failures.push(format!("after {target}: {after}"));
        }
    }
    assert_eq!(server.get("/follow/real.txt").assert_status(200).text(), "real");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Watches files for opens (inotify IN_OPEN), to prove that shoal never opens them.
struct OpenWatch(std::fs::File);

impl OpenWatch {
    fn new(paths: &[std::path::PathBuf]) -> OpenWatch {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: a plain syscall; the fd it returns is owned by the File from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
        let watch = OpenWatch(unsafe { std::fs::File::from_raw_fd(fd) });
        for path in paths {
            let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: `name` is a NUL-terminated path that outlives the call.
            let wd = unsafe { libc::inotify_add_watch(fd, name.as_ptr(), libc::IN_OPEN) };
            assert!(
                wd >= 0,
                "watch {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        watch
    }

    /// Bytes of events queued so far (0: nothing was opened).
    fn events(&self) -> usize {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        match (&self.0).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("read inotify: {e}"),
        }
    }
}

#[test]
fn special_files_are_refused_without_being_opened() {
    let site = Site::new();
    site.file("a.txt", "alpha").fifo("pipe");
    let null = site.root().join("null");
    mknod(&null, 1, 3);
    let server = Server::quick(&site);
    let watch = OpenWatch::new(&[site.root().join("pipe"), null.clone()]);
    for target in ["/pipe", "/null", "/pipe", "/null"] {
        server.get(target).assert_status(403);
    }
    server.get("/a.txt").assert_status(200);
    assert_eq!(watch.events(), 0, "shoal opened a FIFO or a device node");
    // The watch does see a real open, so the check above can fail.
    drop(std::fs::File::open(&null).unwrap());
    assert!(
        watch.events() > 0,
        "inotify reported no open of {}",
        null.display()
    );
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
