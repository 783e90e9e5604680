//! The control socket `shoal status` talks to: a unix stream socket beside the pid file
//! (`shoal.pid` → `shoal.sock`), mode 0600, answering `status\n` with the status as JSON.
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

use super::endpoint::{Bounds, Endpoint};
use crate::status::{self, Status, STATUS_REQUEST};

/// Operator requests are tiny, rare and local.
const BOUNDS: Bounds = Bounds {
    max_request_bytes: 64,
    max_clients: 8,
    deadline: Duration::from_secs(2),
};

/// The bound control socket.
pub struct ControlSocket {
    endpoint: Endpoint<UnixListener>,
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

    /// Answers whatever requests can be answered now; `status` is called per request.
    pub fn serve(&mut self, now: Instant, mut status: impl FnMut() -> Status) {
        self.endpoint.serve(now, |request| {
            if request == STATUS_REQUEST {
                let mut json = serde_json::to_vec(&status()).unwrap_or_default();
                json.push(b'\n');
                json
            } else {
                b"unknown request; the only one is `status`\n".to_vec()
            }
        });
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
