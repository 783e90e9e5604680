//! The control socket `shoal status`, `shoal reload`, `shoal upgrade` and `shoal cache purge`
//! talk to: a unix stream socket beside the pid file (`shoal.pid` → `shoal.sock`), mode 0600.
//! It answers `status\n` at once with the status as JSON; `reload\n`, `upgrade\n` and
//! `purge PREFIX\n` start the action and park the client until the master settles the
//! attempt, then answer with its verdict (`crate::control`).
//!
//! The name is taken over atomically (bound under a temporary name, then renamed), so a stale
//! socket left by a killed master, or the old master's during a binary upgrade, is replaced
//! with no moment without one. At exit the file is removed only if it is still ours: after an
//! upgrade it belongs to the new master.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::PollFd;
use nix::sys::stat::{umask, Mode};

use super::endpoint::{Answer, Bounds, Endpoint};
use super::Attempt;
use crate::cache::purge::MAX_PREFIX_BYTES;
use crate::control::{PURGE_REQUEST, RELOAD_REQUEST, UPGRADE_REQUEST};
use crate::status::{self, Status, STATUS_REQUEST};

/// Operator requests are tiny, rare and local.
const BOUNDS: Bounds = Bounds {
    max_request_bytes: PURGE_REQUEST.len() + MAX_PREFIX_BYTES + 1,
    max_clients: 8,
    deadline: Duration::from_secs(2),
    // Longer than `--timeout` is sensibly set: the master does not hang up on a client still
    // waiting (one that gives up is dropped as soon as it hangs up).
    await_deadline: Duration::from_secs(3600),
};

/// What an operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'r> {
    Status,
    Reload,
    Upgrade,
    /// Purge the cache entries whose keys start with this.
    Purge(&'r str),
}

/// How the master takes a request.
pub enum Reply {
    /// The status, answered at once.
    Status(Box<Status>),
    /// This line, answered at once.
    Line(Vec<u8>),
    /// The client waits for this attempt's verdict ([`ControlSocket::settle`]).
    Await(Attempt),
}

/// The bound control socket.
pub struct ControlSocket {
    endpoint: Endpoint<UnixListener, Attempt>,
    path: PathBuf,
    /// Device and inode of the socket file we bound, to recognise it at exit.
    identity: (u64, u64),
}

impl ControlSocket {
    /// Binds the control socket of `pid_file`, replacing whatever has its name.
    pub fn bind(pid_file: &Path) -> io::Result<ControlSocket> {
        let path = status::socket_path(pid_file);
        let mut temporary = path.clone().into_os_string();
        temporary.push(format!(".{}", std::process::id()));
        let temporary = PathBuf::from(temporary);
        let _ = std::fs::remove_file(&temporary);
        // The master is single-threaded, so the umask change races nobody; it makes the
        // socket owner-only from its first moment.
        let previous = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(&temporary);
        umask(previous);
        let listener = bound?;
        let placed = place(&listener, &temporary, &path);
        if placed.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        let identity = placed?;
        Ok(ControlSocket {
            endpoint: Endpoint::new(listener, BOUNDS, |request| request.ends_with(b"\n")),
            path,
            identity,
        })
    }

    /// What the master's poll waits on for this socket.
    pub fn poll_fds(&self) -> impl Iterator<Item = PollFd<'_>> {
        self.endpoint.poll_fds()
    }

    /// Moves every client along; `handle` is called per whole request.
    pub fn serve(&mut self, now: Instant, mut handle: impl FnMut(Request) -> Reply) {
        self.endpoint.serve(now, |bytes| {
            let purge = (bytes.strip_prefix(PURGE_REQUEST))
                .and_then(|rest| std::str::from_utf8(rest.strip_suffix(b"\n")?).ok());
            let request = match (bytes, purge) {
                (_, Some(prefix)) => Request::Purge(prefix),
                (STATUS_REQUEST, _) => Request::Status,
                (RELOAD_REQUEST, _) => Request::Reload,
                (UPGRADE_REQUEST, _) => Request::Upgrade,
                _ => return Answer::Now(
                    b"unknown request; the requests are `status`, `reload`, `upgrade` and `purge PREFIX`\n"
                        .to_vec(),
                ),
            };
            match handle(request) {
                Reply::Status(status) => {
                    let mut json = serde_json::to_vec(&status).unwrap_or_default();
                    json.push(b'\n');
                    Answer::Now(json)
                }
                Reply::Line(line) => Answer::Now(line),
                Reply::Await(attempt) => Answer::Later(attempt),
            }
        });
    }

    /// Answers the clients waiting for `attempt` with its verdict, one JSON `line`.
    pub fn settle(&mut self, attempt: Attempt, line: &[u8]) {
        self.endpoint.settle(attempt, line);
    }
}

/// Renames the bound socket to its final name; returns its identity. Nothing here follows a
/// symlink (the mode came from the umask at bind), so a link planted under either name in a
/// writable directory changes no other file.
fn place(listener: &UnixListener, temporary: &Path, path: &Path) -> io::Result<(u64, u64)> {
    listener.set_nonblocking(true)?;
    let meta = std::fs::symlink_metadata(temporary)?;
    if !meta.file_type().is_socket() || meta.permissions().mode() & 0o777 != 0o600 {
        return Err(io::Error::other(format!(
            "{} is not the socket just bound",
            temporary.display()
        )));
    }
    std::fs::rename(temporary, path)?;
    Ok((meta.dev(), meta.ino()))
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
