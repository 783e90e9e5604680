//! Opening files under a root directory without ever leaving it.
//!
//! `openat2(RESOLVE_BENEATH)` makes the kernel refuse any resolution that escapes the root,
//! whether through `..` or a symlink, in one system call and without races.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `struct open_how` from linux/openat2.h (libc's is non-exhaustive, so we mirror it).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// How symlinks under a root are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Symlinks are followed only while the result stays beneath the root.
    Beneath,
    /// Symlinks are followed wherever they point (the operator asked for it).
    FollowAll,
}

/// Opens a directory to serve as the anchor of later [`open_beneath`] calls.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

/// What an open under a root is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `O_PATH`: only to look at the file's type and metadata. Nothing is opened for real,
    /// so a device node's driver never sees an open (a watchdog is not armed, a tape not
    /// rewound) and a FIFO never gains a reader.
    Probe,
    /// Read-only. `O_NONBLOCK` keeps a FIFO swapped in after the probe from blocking the
    /// worker; callers check the file type with `fstat` again before reading.
    Read,
}

/// Opens `relative` (no leading '/', already normalized) under `root` for `access`.
pub fn open_beneath(root: &OwnedFd, relative: &str, mode: OpenMode, access: Access) -> io::Result<File> {
    let path = CString::new(if relative.is_empty() { "." } else { relative })
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // openat2 refuses O_PATH together with flags that only matter to a real open.
    let flags = match access {
        Access::Probe => libc::O_PATH | libc::O_CLOEXEC,
        Access::Read => libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
    };
    let resolve = match mode {
        OpenMode::Beneath => libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        OpenMode::FollowAll => 0,
    };
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: `path` is a valid NUL-terminated string, `how` a fully initialised open_how
    // whose size we pass; the kernel reads both and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}
