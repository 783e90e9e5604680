//! Process-level calls: fork, naming, resource limits.

use std::ffi::CString;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{ForkResult, Pid};

/// Which side of a fork we are on.
pub enum Forked {
    /// In the parent; the child's pid.
    Parent(Pid),
    /// In the new child process.
    Child,
}

/// Forks the calling process.
///
/// Callers must be single-threaded (the master never starts threads), so the child inherits
/// no lock held by another thread.
pub fn fork() -> nix::Result<Forked> {
    // SAFETY: the master is single-threaded by design (see master/mod.rs), which is the
    // condition under which everything, including allocation, stays usable in the child.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// Sets the name shown by `ps -o comm` and `top` (the kernel keeps at most 15 bytes).
pub fn name_process(name: &str) {
    let short: String = name.chars().take(15).collect();
    if let Ok(cname) = CString::new(short) {
        // Naming is cosmetic; a failure changes nothing else.
        let _ = nix::sys::prctl::set_name(&cname);
    }
}

/// The open-files limit after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-files limit to the hard limit, so `max_connections` is reachable
/// without the operator remembering `ulimit -n`. The hard limit is left alone even as root:
/// it is the operator's cap (`LimitNOFILE=`, `ulimit -Hn`, `prlimit`).
pub fn raise_nofile_limit() -> NofileLimit {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => NofileLimit { soft: hard, hard },
            Err(_) => NofileLimit { soft, hard },
        },
        Ok((soft, hard)) => NofileLimit { soft, hard },
        Err(_) => NofileLimit {
            soft: 1024,
            hard: 1024,
        },
    }
}

/// Why the process could not switch to the workers' user.
#[derive(Debug)]
pub struct DropError {
    /// The call that failed, with its arguments (`setuid(65534)`).
    pub call: String,
    pub errno: nix::Error,
}

impl std::fmt::Display for DropError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.call, self.errno)
    }
}

/// Switches this process to `uid` and `gid` for good: supplementary groups dropped, then the
/// group, then the user (in this order: after setuid nothing may change groups any more).
/// As root, setgid and setuid set the real, effective and saved ids alike, so there is no
/// way back; that is checked too.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), DropError> {
    use nix::unistd::{getgroups, getuid, setgid, setgroups, setuid, Gid, Uid};
    let failed = |call: String| move |errno| DropError { call, errno };
    setgroups(&[]).map_err(failed("setgroups([])".into()))?;
    setgid(Gid::from_raw(gid)).map_err(failed(format!("setgid({gid})")))?;
    setuid(Uid::from_raw(uid)).map_err(failed(format!("setuid({uid})")))?;
    let groups = getgroups().map_err(failed("getgroups()".into()))?;
    let still_root = uid != 0 && setuid(Uid::from_raw(0)).is_ok();
    if getuid().as_raw() != uid || !groups.is_empty() || still_root {
        return Err(DropError {
            call: format!("checking the switch to {uid}:{gid}"),
            errno: nix::Error::EPERM,
        });
    }
    Ok(())
}

/// Makes `file` belong to `uid`:`gid` (a log file the workers reopen after dropping root).
pub fn hand_over(file: &std::fs::File, uid: u32, gid: u32) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let (uid, gid) = (nix::unistd::Uid::from_raw(uid), nix::unistd::Gid::from_raw(gid));
    nix::unistd::fchown(file.as_raw_fd(), Some(uid), Some(gid))
}

/// Closes every file descriptor above stderr except those in `keep` (in a freshly forked
/// child, so it holds nothing of the parent's by accident).
pub fn close_fds_except(keep: &[std::os::fd::RawFd]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // The directory's own fd is among them; closing it after reading is harmless.
        let _ = nix::unistd::close(fd);
    }
}

/// Takes ownership of a listening socket fd inherited from an upgrading master or systemd.
///
/// Returns `None` unless `fd` is above stderr and an open, listening TCP socket over IPv4 or
/// IPv6, bound to `expected` when one is given (so a wrong number in the environment can
/// never capture stdio, a unix socket, or some other file or socket).
pub fn adopt_listener(
    fd: std::os::fd::RawFd,
    expected: Option<std::net::SocketAddr>,
) -> Option<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    // Only IPv4 and IPv6 addresses convert (a unix socket's does not).
    let bound = listening_stream(fd)?.as_socket()?;
    if expected.is_some_and(|addr| addr != bound) {
        return None;
    }
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).ok()?;
    // SAFETY: the fd is open, a listening TCP socket, and was handed to this process to own.
    Some(unsafe { std::net::TcpListener::from_raw_fd(fd) })
}

/// Takes ownership of a listening unix socket fd inherited from an upgrading master or
/// systemd, with the path it is bound to; `None` unless `fd` is above stderr and an open,
/// listening stream socket bound to a path.
pub fn adopt_unix_listener(
    fd: std::os::fd::RawFd,
) -> Option<(std::os::unix::net::UnixListener, std::path::PathBuf)> {
    use std::os::fd::FromRawFd;
    let path = listening_stream(fd)?.as_pathname()?.to_path_buf();
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).ok()?;
    // SAFETY: the fd is open, a listening unix stream socket, and was handed to us to own.
    Some((unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) }, path))
}

/// The address `fd` listens on, if it is above stderr and an open, listening stream socket.
fn listening_stream(fd: std::os::fd::RawFd) -> Option<socket2::SockAddr> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    use std::os::fd::BorrowedFd;
    if fd <= 2 {
        return None;
    }
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).ok()?;
    // SAFETY: borrowed only for the checks below, while the fd is known to be open (fcntl).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if getsockopt(&borrowed, sockopt::SockType).ok()? != SockType::Stream
        || !getsockopt(&borrowed, sockopt::AcceptConn).ok()?
    {
        return None;
    }
    socket2::SockRef::from(&borrowed).local_addr().ok()
}

/// Takes ownership of the pipe end an upgrading master passed by number; `None` unless
/// `fd` is above stderr and an open pipe.
pub fn adopt_pipe(fd: std::os::fd::RawFd) -> Option<std::fs::File> {
    use nix::sys::stat::{fstat, SFlag};
    use std::os::fd::FromRawFd;
    if fd <= 2 {
        return None;
    }
    let stat = fstat(fd).ok()?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFIFO {
        return None;
    }
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).ok()?;
    // SAFETY: the fd is an open pipe the old master created for this process alone.
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Clears or sets close-on-exec on `fd` (for passing sockets to a new executable).
pub fn set_cloexec(fd: &impl std::os::fd::AsRawFd, on: bool) -> nix::Result<()> {
    let flags = if on {
        nix::fcntl::FdFlag::FD_CLOEXEC
    } else {
        nix::fcntl::FdFlag::empty()
    };
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(flags)).map(|_| ())
}

/// Points this process's stderr at `path` (opened for appending), for the error log and
/// its reopening after rotation.
pub fn redirect_stderr(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    nix::unistd::dup2(file.as_raw_fd(), 2)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn only_listening_tcp_sockets_named_right_are_adopted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.into_raw_fd();
        let elsewhere = "127.0.0.1:1".parse().unwrap();
        assert!(adopt_listener(fd, Some(elsewhere)).is_none(), "another address");
        let adopted = adopt_listener(fd, Some(addr)).expect("still open after the refusal");
        assert_eq!(adopted.local_addr().unwrap(), addr);
        for stdio in 0..=2 {
            assert!(adopt_listener(stdio, None).is_none(), "fd {stdio}");
        }
        let dir = tempfile::tempdir().unwrap();
        let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        assert!(adopt_listener(unix.as_raw_fd(), None).is_none(), "a unix socket");
        let connected = std::net::TcpStream::connect(addr).unwrap();
        assert!(
            adopt_listener(connected.as_raw_fd(), None).is_none(),
            "not listening"
        );
        let (pipe, _) = nix::unistd::pipe().unwrap();
        assert!(adopt_listener(pipe.as_raw_fd(), None).is_none(), "a pipe");
        assert!(adopt_pipe(adopted.as_raw_fd()).is_none(), "a socket is no pipe");
        assert!(adopt_pipe(pipe.into_raw_fd()).is_some());
    }
}
