//! What start-up will check, checked without starting anything: `shoal check` runs this after
//! loading the config, so that nothing it accepts makes start-up exit 2 for a reason it could
//! have seen.
//!
//! Each step asks the same question start-up asks, with the same code where there is code to
//! share: who the workers run as (`privileges::worker_identity`, so the same message), whether
//! the master can create its pid file, control socket and log files, whether every address is
//! free (the same probe as `listeners`), and whether the workers, as their own user, can open
//! every root and the access log (a child process drops privileges exactly as a worker does
//! and tries). Nothing is created: files are judged with `access(2)` and `open` without
//! `O_CREAT`, and the probe socket is closed at once.
//!
//! What belongs to a running instance is not an error here, since `check` also runs before a
//! reload: a pid file naming a live master, or an address that master (or systemd, for it)
//! already listens on.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use super::listeners::{self, BindError};
use super::pidfile::{self, Occupant};
use super::{owner, privileges};
use crate::config::{AccessLog, Address, Config, RunAs, Serve};
use crate::sys::{self, Forked};

/// Why start-up would fail.
#[derive(Debug)]
pub enum PreflightError {
    /// Root without `user`, or a `user` this process cannot switch to: start-up's own words.
    Identity(String),
    /// The master cannot create or open a file it writes (`pid_file`, `error_log`, an
    /// `access_log` it hands over).
    MasterFile {
        key: &'static str,
        path: PathBuf,
        why: String,
    },
    /// A listen address (or `[admin] listen`) is taken or cannot be bound.
    Address { key: &'static str, error: BindError },
    /// The workers, as their user, cannot open a root or the access log, or cannot become
    /// that user at all.
    Workers { user: String, why: String },
    /// The child process that checks as the workers' user could not run.
    Child(String),
}

impl fmt::Display for PreflightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreflightError::Identity(why) => write!(f, "{why}"),
            PreflightError::MasterFile { key, path, why } => {
                write!(f, "{key} {}: {why}", path.display())
            }
            PreflightError::Address { key, error } => write!(f, "{key}: {error}"),
            PreflightError::Workers { user, why } => write!(f, "the workers, running as {user}, {why}"),
            PreflightError::Child(why) => write!(f, "cannot check as the workers' user: {why}"),
        }
    }
}

impl std::error::Error for PreflightError {}

/// Checks `config` the way start-up would, as this process (start shoal as the same user,
/// with the same `-U`). Settles `config.user` as start-up does.
pub fn preflight(config: &mut Config) -> Result<(), PreflightError> {
    privileges::adopt_worker_identity(config).map_err(PreflightError::Identity)?;
    check_master_files(config)?;
    check_addresses(config)?;
    let user = match &config.user {
        Some(run_as) => format!("user {} ({}:{})", run_as.user, run_as.uid, run_as.gid),
        None => {
            let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
            format!("{uid}:{gid} like this process")
        }
    };
    let worker_files = worker_files(config);
    as_workers(config.user.as_ref(), || check_worker_files(&worker_files))?
        .map_err(|why| PreflightError::Workers { user, why })
}

/// The files the master creates itself: the pid file (and the control socket beside it), the
/// error log, and the log files it hands over to the workers' user.
fn check_master_files(config: &Config) -> Result<(), PreflightError> {
    let mut files: Vec<(&'static str, &Path)> = Vec::new();
    if let Some(path) = &config.pid_file {
        files.push(("pid_file", path));
    }
    if let Some(path) = &config.error_log {
        files.push(("error_log", path));
    }
    if let (AccessLog::File(path), true) = (&config.access_log, hands_over(config)) {
        files.push(("access_log", path));
    }
    for (key, path) in files {
        can_write(path).map_err(|why| PreflightError::MasterFile {
            key,
            path: path.to_path_buf(),
            why,
        })?;
    }
    if let Some(path) = &config.pid_file {
        // The control socket beside it must fit in `sockaddr_un.sun_path` (108 bytes with NUL).
        let socket = crate::status::socket_path(path);
        if socket.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return Err(PreflightError::MasterFile {
                key: "pid_file",
                path: path.clone(),
                why: format!(
                    "the control socket beside it, {}, is longer than a unix socket path may be \
                     ({MAX_SOCKET_PATH_BYTES} bytes)",
                    socket.display()
                ),
            });
        }
    }
    Ok(())
}

/// Longest path a unix socket can be bound to on Linux.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// True when the master creates the log files and gives them to the workers' user.
fn hands_over(config: &Config) -> bool {
    config.user.as_ref().is_some_and(|run_as| run_as.uid != 0)
}

/// Every listen address and `[admin] listen` must be free, or be held by the instance this
/// config already runs (its master named by the pid file, or systemd on its behalf).
fn check_addresses(config: &Config) -> Result<(), PreflightError> {
    let running = config
        .pid_file
        .as_deref()
        .and_then(|path| match pidfile::occupant(path) {
            Occupant::Master(pid) | Occupant::Hidden(pid) => Some(pid as u32),
            _ => None,
        });
    let addresses = config.listeners().into_iter().map(|(addr, _)| ("listen", addr));
    let admin = config.admin.map(|addr| ("[admin] listen", Address::Tcp(addr)));
    for (key, addr) in addresses.chain(admin) {
        match listeners::refuse_taken([addr.clone()]) {
            Ok(()) => {}
            Err(BindError::Taken { .. }) if held_by(&addr, running) => {}
            Err(error) => return Err(PreflightError::Address { key, error }),
        }
    }
    Ok(())
}

/// True when `addr` is held by the running `master` (one of the socket's holders), or when
/// /proc shows us no holder at all while that master runs (another user's processes), or by
/// systemd (a socket unit that hands it to shoal at start).
fn held_by(addr: &Address, master: Option<u32>) -> bool {
    // A unix socket's holders are not looked up: one that answers is the running master's
    // when the pid file names one.
    let Address::Tcp(addr) = *addr else {
        return master.is_some();
    };
    let holders = owner::holders(addr);
    let systemd = holders.iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == "systemd")
    });
    systemd || master.is_some_and(|master| holders.is_empty() || holders.contains(&master))
}

/// What a worker opens by path when it boots.
struct WorkerFiles {
    /// `(route prefix, root)` of every static route.
    roots: Vec<(String, PathBuf)>,
    /// The access log file, and whether the master creates it first (hand-over).
    access_log: Option<(PathBuf, bool)>,
}

fn worker_files(config: &Config) -> WorkerFiles {
    let roots = config
        .servers
        .iter()
        .flat_map(|server| &server.routes)
        .filter_map(|route| match &route.serve {
            Serve::Files(options) => Some((route.prefix.clone(), options.root.clone())),
            Serve::Proxy(_) | Serve::Redirect(_) | Serve::Fixed(_) => None,
        })
        .collect();
    let access_log = match &config.access_log {
        AccessLog::File(path) => Some((path.clone(), hands_over(config))),
        _ => None,
    };
    WorkerFiles { roots, access_log }
}

/// Run as the workers' user: opens every root as the worker's boot does (`sys::open_dir`),
/// and the access log without creating it.
fn check_worker_files(files: &WorkerFiles) -> Result<(), String> {
    for (prefix, root) in &files.roots {
        sys::open_dir(root)
            .map_err(|e| format!("cannot open root {} (route {prefix}): {e}", root.display()))?;
    }
    if let Some((path, created_by_master)) = &files.access_log {
        let opened = if *created_by_master {
            // The master creates it; the workers must reach it through its directories.
            let dir = parent(path);
            access(dir, AccessFlags::X_OK).map_err(|e| format!("cannot reach {}: {e}", dir.display()))
        } else {
            can_write(path)
        };
        opened.map_err(|why| format!("cannot open access_log {}: {why}", path.display()))?;
    }
    Ok(())
}

/// Whether this process could open `path` for appending, creating it if missing, without
/// doing so.
fn can_write(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err("is a directory".to_string()),
        Ok(_) => access(path, AccessFlags::W_OK).map_err(|e| format!("cannot write to it: {e}")),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            let dir = parent(path);
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
                    .map_err(|e| format!("cannot create it in {}: {e}", dir.display())),
                Ok(_) => Err(format!("{} is not a directory", dir.display())),
                Err(e) => Err(format!("cannot create it in {}: {e}", dir.display())),
            }
        }
        Err(e) => Err(format!("cannot open it: {e}")),
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Runs `check` as the workers run: in a child process that drops privileges to `run_as`
/// exactly as a worker does (`sys::drop_privileges`), or here when they do not switch. The
/// child reports over a pipe and exits. Only for a single-threaded caller (`shoal check`).
fn as_workers(
    run_as: Option<&RunAs>,
    check: impl FnOnce() -> Result<(), String>,
) -> Result<Result<(), String>, PreflightError> {
    let Some(run_as) = run_as else {
        return Ok(check());
    };
    let child = |e: &dyn fmt::Display| PreflightError::Child(e.to_string());
    let (read, write) = nix::unistd::pipe().map_err(|e| child(&e))?;
    match sys::fork().map_err(|e| child(&e))? {
        Forked::Child => {
            drop(read);
            let verdict = sys::drop_privileges(run_as.uid, run_as.gid)
                .map_err(|e| format!("cannot run as user {}: {e}", run_as.user))
                .and_then(|()| check());
            let mut pipe = std::fs::File::from(write);
            let code = match verdict {
                Ok(()) => 0,
                Err(why) => {
                    let _ = pipe.write_all(why.as_bytes());
                    1
                }
            };
            std::process::exit(code)
        }
        Forked::Parent(pid) => {
            drop(write);
            let mut why = String::new();
            let _ = std::fs::File::from(read).read_to_string(&mut why);
            let status = nix::sys::wait::waitpid(pid, None).map_err(|e| child(&e))?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(Ok(())),
                _ if !why.is_empty() => Ok(Err(why)),
                other => Err(child(&format!("the checking process ended with {other:?}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_can_be_written_when_it_or_its_directory_allows_it() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("existing.log");
        std::fs::write(&existing, "").unwrap();
        assert_eq!(can_write(&existing), Ok(()));
        assert_eq!(can_write(&dir.path().join("new.log")), Ok(()));
        assert!(!dir.path().join("new.log").exists(), "nothing is created");
        assert_eq!(can_write(dir.path()), Err("is a directory".into()));
        let missing = can_write(&dir.path().join("missing/x.log")).unwrap_err();
        assert!(missing.starts_with("cannot create it in "), "{missing}");
        let under_a_file = can_write(&existing.join("x.log")).unwrap_err();
        assert!(
            under_a_file.ends_with("existing.log is not a directory"),
            "{under_a_file}"
        );
    }

    #[test]
    fn roots_and_access_log_are_opened_as_a_worker_would() {
        let dir = tempfile::tempdir().unwrap();
        let files = WorkerFiles {
            roots: vec![("/".into(), dir.path().to_path_buf())],
            access_log: Some((dir.path().join("access.log"), false)),
        };
        assert_eq!(check_worker_files(&files), Ok(()));
        let missing = WorkerFiles {
            roots: vec![("/static/".into(), dir.path().join("gone"))],
            access_log: None,
        };
        let why = check_worker_files(&missing).unwrap_err();
        assert!(
            why.starts_with("cannot open root ") && why.contains("(route /static/)"),
            "{why}"
        );
    }
}
