//! Test harness: a site builder, a `Server` guard that runs the real `shoal` binary, and a
//! raw HTTP/1.1 client that reads responses byte-exactly off the wire.
//!
//! Every server gets its own free port on 127.0.0.1 and its own temp dir for captured
//! stdout/stderr, which are printed when the test panics. Waiting is always a bounded poll
//! on observable state ([`wait_until`]), never a sleep.

use std::ffi::OsString;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Read and write timeout of every client socket: a stuck server fails the test, not CI.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a process may take to boot, or to exit once stopped or failing.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guard waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two looks at a polled condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `probe` until it returns `Some`, failing with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A 127.0.0.1 port nobody listens on right now, and never handed out before in this run:
/// two addresses a test asks for one after the other must not be the same port (the kernel
/// may give a port back as soon as its listener is dropped).
pub fn free_addr() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&addr.port()) {
            handed_out.push(addr.port());
            return addr;
        }
    }
}

/// Sends `signal` (a name like "TERM") to `pid`; false if `kill` failed (no such process).
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Child pids of `pid`, as the kernel lists them.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|n| n.parse().expect("pid in /proc children"))
        .collect()
}

/// A temp dir holding the served root (`<base>/site`) and whatever lives beside it.
pub struct Site {
    base: TempDir,
}

impl Site {
    /// An empty site.
    pub fn new() -> Site {
        let base = tempfile::tempdir().expect("create temp dir");
        std::fs::create_dir(base.path().join("site")).expect("create site root");
        Site { base }
    }

    /// The directory the site's root lives in (config files, logs, outside secrets).
    pub fn base(&self) -> &Path {
        self.base.path()
    }

    /// The served directory.
    pub fn root(&self) -> PathBuf {
        self.base().join("site")
    }

    /// Writes `contents` at `path` under the root, creating parent directories.
    pub fn file(&self, path: &str, contents: impl AsRef<[u8]>) -> &Site {
        write_creating_dirs(&self.root().join(path), contents.as_ref());
        self
    }

    /// Writes `contents` at `path` under the base, outside the root.
    pub fn outside(&self, path: &str, contents: impl AsRef<[u8]>) -> &Site {
        write_creating_dirs(&self.base().join(path), contents.as_ref());
        self
    }

    /// Creates a symlink at `link` under the root pointing to `target`.
    pub fn symlink(&self, link: &str, target: &Path) -> &Site {
        std::os::unix::fs::symlink(target, self.root().join(link)).expect("create symlink");
        self
    }

    /// Creates a FIFO at `path` under the root.
    pub fn fifo(&self, path: &str) -> &Site {
        let status = Command::new("mkfifo")
            .arg(self.root().join(path))
            .status()
            .expect("run mkfifo");
        assert!(status.success(), "mkfifo failed: {status}");
        self
    }
}

/// A site holding `files` (path, contents) and a quick-mode server on it.
pub fn serve_files(files: &[(&str, &str)]) -> (Site, Server) {
    let site = Site::new();
    for (path, contents) in files {
        site.file(path, contents);
    }
    let server = Server::quick(&site);
    (site, server)
}

fn write_creating_dirs(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent dirs");
    }
    std::fs::write(path, contents).expect("write file");
}

/// Config file text serving the site's root at `/` on `addr`; `top` goes before the
/// `[[server]]` table (top-level keys, `[limits]`), `route` into the route table.
pub fn config_text(addr: SocketAddr, top: &str, route: &str) -> String {
    format!(
        "{top}\n[[server]]\nlisten = [\"{addr}\"]\n\n  [[server.route]]\n  prefix = \"/\"\n  root = \"site\"\n{route}\n"
    )
}

/// What the command line says about where the content comes from.
enum Mode {
    /// `-l ADDR`, plus `-r ROOT` when a root is given.
    Quick { root: Option<PathBuf> },
    /// `-c FILE`, the file written from [`config_text`] just before the start.
    Config {
        path: PathBuf,
        top: String,
        route: String,
    },
    /// `-c FILE`: a whole config file, `{listen}` in `text` replaced by the address.
    ConfigFile { path: PathBuf, text: String },
    /// Exactly the given arguments.
    Args,
}

/// How a `shoal` process is started: quick flags or a config file, plus extra flags.
pub struct Launch {
    addr: SocketAddr,
    mode: Mode,
    args: Vec<OsString>,
    workers: Option<u16>,
    current_dir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    /// A listening socket passed as fd 3 the way systemd does (LISTEN_FDS, LISTEN_PID).
    activated: Option<TcpListener>,
    /// RLIMIT_NOFILE (soft and hard) the process starts with, through prlimit(1).
    open_files_limit: Option<u32>,
    /// `-U USER[:GROUP]`. By default `-U root` when the tests run as root (shoal refuses to
    /// keep its workers root unless told so; the temp dirs are readable by root only).
    user_flag: Option<String>,
    /// Start shoal as this uid:gid with these supplementary groups, through setpriv(1).
    started_as: Option<(u32, u32, Vec<u32>)>,
}

impl Launch {
    /// Quick mode: `-r ROOT -l ADDR`.
    pub fn quick(site: &Site) -> Launch {
        Launch::new(Mode::Quick {
            root: Some(site.root()),
        })
    }

    /// Quick mode without `-r` and without `-w`: only `-l ADDR`.
    pub fn listen_only() -> Launch {
        let mut launch = Launch::new(Mode::Quick { root: None });
        launch.workers = None;
        launch
    }

    /// Config mode: `-c <base>/shoal.toml`, written from [`config_text`].
    pub fn config(site: &Site, top: &str, route: &str) -> Launch {
        Launch::new(Mode::Config {
            path: site.base().join("shoal.toml"),
            top: top.to_string(),
            route: route.to_string(),
        })
    }

    /// Config mode with a whole file: `-c <base>/shoal.toml` holding `text`, where every
    /// `{listen}` becomes the listen address.
    pub fn config_file(site: &Site, text: &str) -> Launch {
        Launch::new(Mode::ConfigFile {
            path: site.base().join("shoal.toml"),
            text: text.to_string(),
        })
    }

    fn new(mode: Mode) -> Launch {
        Launch {
            addr: free_addr(),
            mode,
            args: Vec::new(),
            workers: Some(1),
            current_dir: None,
            env: Vec::new(),
            activated: None,
            open_files_limit: None,
            user_flag: nix::unistd::geteuid().is_root().then(|| "root".to_string()),
            started_as: None,
        }
    }

    /// Starts shoal itself as `uid`:`gid` with supplementary `groups` (`setpriv` execs it,
    /// so the pid stays shoal's); the tests must run as root.
    pub fn started_as(mut self, uid: u32, gid: u32, groups: &[u32]) -> Launch {
        self.started_as = Some((uid, gid, groups.to_vec()));
        self
    }

    /// `-U spec` instead of the default, or no `-U` at all (`None`).
    pub fn user_flag(mut self, spec: Option<&str>) -> Launch {
        self.user_flag = spec.map(str::to_string);
        self
    }

    /// Starts the process with at most `limit` open files (soft and hard, so shoal cannot
    /// raise it): `prlimit --nofile=N:N` execs shoal, so the pid stays shoal's.
    pub fn open_files_limit(mut self, limit: u32) -> Launch {
        self.open_files_limit = Some(limit);
        self
    }

    /// Socket activation: `socket` reaches shoal as fd 3 with `LISTEN_FDS=1`,
    /// `LISTEN_FDNAMES=name` and `LISTEN_PID` set to shoal's own pid, like systemd does it.
    /// The listen address becomes the socket's.
    pub fn socket_activated(mut self, socket: TcpListener, name: &str) -> Launch {
        self.addr = socket.local_addr().expect("local_addr of the activated socket");
        self.activated = Some(socket);
        self.env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", name)
    }

    /// Listens on `addr` instead of a fresh free port.
    pub fn listen_on(mut self, addr: SocketAddr) -> Launch {
        self.addr = addr;
        self
    }

    /// `-w N` (the default is `-w 1`).
    pub fn workers(mut self, workers: u16) -> Launch {
        self.workers = Some(workers);
        self
    }

    /// One more command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Launch {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the process.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Launch {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs the process in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Launch {
        self.current_dir = Some(dir.to_path_buf());
        self
    }

    fn spawn(&self, logs: &Path) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
        let mut stdin = Stdio::null();
        if let Some(socket) = &self.activated {
            // The socket arrives as sh's stdin; sh moves it to fd 3 and becomes shoal, so
            // `$$` is shoal's pid. No unsafe pre_exec hook needed.
            command = Command::new("sh");
            command
                .arg("-c")
                .arg("exec 3<&0 0</dev/null; LISTEN_PID=$$ exec \"$0\" \"$@\"")
                .arg(env!("CARGO_BIN_EXE_shoal"));
            let socket = socket.try_clone().expect("clone the activated socket");
            stdin = Stdio::from(std::os::fd::OwnedFd::from(socket));
        }
        if let Some(limit) = self.open_files_limit {
            assert!(
                self.activated.is_none(),
                "open_files_limit with socket activation"
            );
            command = Command::new("prlimit");
            command
                .arg(format!("--nofile={limit}:{limit}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_shoal"));
        }
        if let Some((uid, gid, groups)) = &self.started_as {
            assert!(
                self.activated.is_none() && self.open_files_limit.is_none(),
                "started_as with another wrapper"
            );
            command = Command::new("setpriv");
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"));
            if groups.is_empty() {
                command.arg("--clear-groups");
            } else {
                let list: Vec<String> = groups.iter().map(u32::to_string).collect();
                command.arg(format!("--groups={}", list.join(",")));
            }
            command.arg("--").arg(env!("CARGO_BIN_EXE_shoal"));
        }
        match &self.mode {
            Mode::Quick { root } => {
                if let Some(root) = root {
                    command.arg("-r").arg(root);
                }
                command.arg("-l").arg(self.addr.to_string());
            }
            Mode::Config { path, top, route } => {
                std::fs::write(path, config_text(self.addr, top, route)).expect("write config");
                command.arg("-c").arg(path);
            }
            Mode::ConfigFile { path, text } => {
                std::fs::write(path, text.replace("{listen}", &self.addr.to_string())).expect("write config");
                command.arg("-c").arg(path);
            }
            Mode::Args => {}
        }
        if let (Some(spec), false) = (&self.user_flag, matches!(self.mode, Mode::Args)) {
            command.arg("-U").arg(spec);
        }
        command.args(&self.args);
        if let Some(workers) = self.workers {
            command.arg("-w").arg(workers.to_string());
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
            .env_remove("RUST_LOG")
            .stdin(stdin)
            .stdout(File::create(logs.join("stdout.log")).expect("create stdout.log"))
            .stderr(File::create(logs.join("stderr.log")).expect("create stderr.log"))
            .spawn()
            .expect("spawn shoal")
    }

    /// Starts the server and waits until it answers a GET.
    pub fn start(self) -> Server {
        let logs = tempfile::tempdir().expect("create log dir");
        let child = self.spawn(logs.path());
        let mut server = Server {
            child,
            addr: self.addr,
            logs,
        };
        server.wait_ready();
        server
    }

    /// Runs a process that is expected to exit by itself (bad flags, busy port).
    pub fn exit(self) -> Exited {
        let logs = tempfile::tempdir().expect("create log dir");
        let mut child = self.spawn(logs.path());
        let status = wait_exit(&mut child, PROCESS_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shoal {:?} did not exit within {PROCESS_TIMEOUT:?}", self.args);
        });
        Exited {
            code: status.code(),
            stdout: read_lossy(&logs.path().join("stdout.log")),
            stderr: read_lossy(&logs.path().join("stderr.log")),
        }
    }
}

/// A process that ran to its end.
#[derive(Debug)]
pub struct Exited {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `shoal check -c PATH`, plus `-U root` when the tests run as root, as [`Launch`] adds it
/// to servers (started as root, shoal needs a user, and check says so like start-up does).
pub fn check_config(path: &Path) -> Exited {
    let mut args: Vec<&std::ffi::OsStr> = vec!["check".as_ref(), "-c".as_ref(), path.as_os_str()];
    if nix::unistd::geteuid().is_root() {
        args.extend([std::ffi::OsStr::new("-U"), std::ffi::OsStr::new("root")]);
    }
    run_shoal(&args)
}

/// Runs `shoal ARGS...` (nothing added) to completion.
pub fn run_shoal(args: &[&std::ffi::OsStr]) -> Exited {
    let mut launch = Launch::new(Mode::Args);
    launch.workers = None;
    launch.args = args.iter().map(|a| a.to_os_string()).collect();
    launch.exit()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// A running `shoal` master: SIGTERM (then SIGKILL) on drop, logs printed if the test fails.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: TempDir,
}

impl Server {
    /// Quick mode on the site's root with one worker.
    pub fn quick(site: &Site) -> Server {
        Launch::quick(site).start()
    }

    /// Config mode with one worker (see [`config_text`] for `top` and `route`).
    pub fn with_config(site: &Site, top: &str, route: &str) -> Server {
        Launch::config(site, top, route).start()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "shoal exited while booting ({status})\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            if self.answers_get() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "shoal did not answer a GET on {} within {PROCESS_TIMEOUT:?}\n--- stderr ---\n{}",
                self.addr,
                self.stderr()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn answers_get(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let probe = b"GET /harness-ready-probe HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
        let mut start = [0u8; 5];
        stream.write_all(probe).is_ok() && stream.read_exact(&mut start).is_ok() && &start == b"HTTP/"
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Current worker pids (children of the master).
    pub fn workers(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// Waits until exactly `count` workers run, and returns their pids.
    pub fn wait_for_workers(&self, count: usize) -> Vec<u32> {
        wait_until(&format!("{count} worker processes"), PROCESS_TIMEOUT, || {
            Some(self.workers()).filter(|pids| pids.len() == count)
        })
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.logs.path().join("stderr.log"))
    }

    /// Everything the server wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.logs.path().join("stdout.log"))
    }

    /// Sends `name` (e.g. "HUP") to the master, failing the test if `kill` fails.
    pub fn send_signal(&self, name: &str) {
        assert!(signal(self.pid(), name), "kill -{name} {} failed", self.pid());
    }

    /// Waits (bounded) for the master to exit by itself and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_exit(&mut self.child, timeout)
            .unwrap_or_else(|| panic!("shoal (pid {}) did not exit within {timeout:?}", self.pid()))
    }

    /// Waits until a line of stderr contains `needle`, and returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let what = format!("a log line containing {needle:?}");
        wait_until(&what, timeout, || {
            self.stderr()
                .lines()
                .find(|line| line.contains(needle))
                .map(str::to_string)
        })
    }

    /// Sends SIGTERM and waits (bounded) for the master to exit.
    pub fn stop(&mut self) -> ExitStatus {
        assert!(signal(self.pid(), "TERM"), "kill -TERM {} failed", self.pid());
        wait_exit(&mut self.child, PROCESS_TIMEOUT)
            .unwrap_or_else(|| panic!("shoal did not exit within {PROCESS_TIMEOUT:?} of SIGTERM"))
    }

    /// A new client connection with timeouts set.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set_write_timeout");
        stream.set_nodelay(true).expect("set_nodelay");
        stream
    }

    /// Sends `raw` on a new connection and returns every byte until the server closes it.
    pub fn send(&self, raw: &[u8]) -> Vec<u8> {
        let mut stream = self.connect();
        stream.write_all(raw).expect("write request");
        read_to_close(&mut stream)
    }

    /// Sends `raw` on a new connection and reads one response to a non-HEAD request.
    pub fn request(&self, raw: &[u8]) -> Response {
        let mut stream = self.connect();
        stream.write_all(raw).expect("write request");
        read_response(&mut stream)
    }

    /// `GET path` on a new connection.
    pub fn get(&self, path: &str) -> Response {
        self.request(get(path).as_bytes())
    }

    /// `GET path` with extra header lines on a new connection.
    pub fn get_with(&self, path: &str, headers: &[&str]) -> Response {
        self.request(request("GET", path, headers).as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let workers = self.workers();
            signal(self.pid(), "TERM");
            if wait_exit(&mut self.child, STOP_TIMEOUT).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                for pid in workers {
                    signal(pid, "KILL");
                }
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- shoal on {} stdout ---\n{}--- shoal stderr ---\n{}--- end ---",
                self.addr,
                self.stdout(),
                self.stderr()
            );
        }
    }
}

/// `GET path HTTP/1.1` with a Host header.
pub fn get(path: &str) -> String {
    request("GET", path, &[])
}

/// An HTTP/1.1 request head with a Host header and `headers` (each "Name: value").
pub fn request(method: &str, path: &str, headers: &[&str]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// One HTTP response as it came off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status line without its CRLF, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    pub status: u16,
    /// Every header line in order, repeats kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name`, failing the test if it is missing.
    pub fn expect_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {self}"))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Fails unless the status is `status`.
    pub fn assert_status(&self, status: u16) -> &Response {
        assert_eq!(self.status, status, "unexpected status in {self}");
        self
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.status_line)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        let shown = &self.body[..self.body.len().min(300)];
        write!(f, "\n{}", String::from_utf8_lossy(shown))?;
        if self.body.len() > shown.len() {
            write!(f, "... ({} bytes in all)", self.body.len())?;
        }
        Ok(())
    }
}

/// Reads one response to a GET (or any request but HEAD).
pub fn read_response(source: &mut impl Read) -> Response {
    read_one(source, false)
}

/// Reads one response to a HEAD request (never a body).
pub fn read_head_response(source: &mut impl Read) -> Response {
    read_one(source, true)
}

fn read_one(source: &mut impl Read, to_head: bool) -> Response {
    let head = read_head(source);
    let text = String::from_utf8(head.clone())
        .unwrap_or_else(|_| panic!("response head is not UTF-8: {}", String::from_utf8_lossy(&head)));
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?} in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("header line without colon {line:?} in {text:?}"));
            (name.to_string(), value.trim().to_string())
        })
        .collect();
    let mut response = Response {
        status_line,
        status,
        headers,
        body: Vec::new(),
    };
    let bodiless = to_head || (100..200).contains(&status) || status == 204 || status == 304;
    if bodiless {
        return response;
    }
    if let Some(length) = response.header("Content-Length") {
        let length: usize = length
            .parse()
            .unwrap_or_else(|_| panic!("bad Content-Length in {response}"));
        response.body = vec![0; length];
        if let Err(e) = source.read_exact(&mut response.body) {
            panic!("reading a {length}-byte body failed ({e}) after head:\n{text}");
        }
    } else {
        let closes = response.status_line.starts_with("HTTP/1.0")
            || response
                .header("Connection")
                .is_some_and(|value| value.eq_ignore_ascii_case("close"));
        assert!(
            closes && response.header("Transfer-Encoding").is_none(),
            "response without Content-Length must be delimited by close: {response}"
        );
        response.body = read_to_close(source);
    }
    response
}

/// Reads a response head up to and including the blank line, one byte at a time so no byte
/// of a following response is consumed.
fn read_head(source: &mut impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match source.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => panic!(
                "connection closed before a complete response head; got {:?}",
                String::from_utf8_lossy(&head)
            ),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "no complete response head ({e}); got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    head
}

/// Reads until the peer closes; a timeout fails the test.
pub fn read_to_close(source: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match source.read(&mut chunk) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return all,
            Err(e) => panic!(
                "the server did not close the connection before the read timeout ({e}); got {} bytes: {:?}",
                all.len(),
                String::from_utf8_lossy(&all[..all.len().min(300)])
            ),
        }
    }
}

/// Fails unless the server closes the connection without sending anything more.
pub fn assert_closed(stream: &mut TcpStream) {
    let rest = read_to_close(stream);
    assert!(
        rest.is_empty(),
        "expected the connection to close, got more bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
}
