//! Memory that every process of one instance shares, and the eventfd they ring each other on.
//!
//! The memory is a memfd mapped `MAP_SHARED`: workers forked after the mapping see the same
//! pages, and a new master in a binary upgrade maps the same file from its inherited fd. A
//! mapping is never unmapped, so the atomics it hands out live as long as the process.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// A shared mapping, alive for the rest of the process.
#[derive(Debug)]
pub struct SharedMemory {
    /// The memfd, kept to hand to a new master in a binary upgrade.
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
}

impl SharedMemory {
    /// A new zeroed shared mapping of `len` bytes (pages are only allocated when touched).
    pub fn create(name: &str, len: usize) -> io::Result<&'static SharedMemory> {
        let name = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: memfd_create reads a NUL-terminated string and returns a new fd or -1.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new fd this process owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        nix::unistd::ftruncate(&fd, len as libc::off_t)?;
        SharedMemory::map(fd, len)
    }

    /// Maps the memfd an upgrading master passed by number; `None` unless `fd` is above
    /// stderr and an open regular file (a memfd) of exactly `len` bytes, or of one of the
    /// `older` sizes (an older layout that `len` extends at its end): that one is grown to
    /// `len` first, its new bytes zero (the processes mapping it still see their part).
    pub fn adopt(fd: RawFd, len: usize, older: &[usize]) -> Option<&'static SharedMemory> {
        use nix::sys::stat::{fstat, SFlag};
        if fd <= 2 {
            return None;
        }
        let stat = fstat(fd).ok()?;
        let regular = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        let size = usize::try_from(stat.st_size).ok()?;
        if !regular || (size != len && !older.contains(&size)) {
            return None;
        }
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).ok()?;
        // SAFETY: the fd is open and was handed to this process to own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if size != len {
            nix::unistd::ftruncate(&fd, len as libc::off_t).ok()?;
        }
        SharedMemory::map(fd, len).ok()
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<&'static SharedMemory> {
        // SAFETY: a fresh shared mapping of the whole file; the kernel picks the address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Box::leak(Box::new(SharedMemory {
            fd,
            base: base.cast(),
            len,
        })))
    }

    /// The memfd (for passing to a new master).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// `count` atomic u32s from byte `offset`. Panics when they fall outside the mapping or
    /// are misaligned (a layout bug, never data).
    pub fn u32s(&'static self, offset: usize, count: usize) -> &'static [AtomicU32] {
        self.check(offset, count, std::mem::size_of::<u32>());
        // SAFETY: in bounds and aligned (checked); AtomicU32 has u32's layout; the mapping
        // is never unmapped, so the slice lives as long as the process; every access to the
        // shared pages, from any process, goes through atomics.
        unsafe { std::slice::from_raw_parts(self.base.add(offset).cast::<AtomicU32>(), count) }
    }

    /// `count` atomic u64s from byte `offset` (as [`SharedMemory::u32s`]).
    pub fn u64s(&'static self, offset: usize, count: usize) -> &'static [AtomicU64] {
        self.check(offset, count, std::mem::size_of::<u64>());
        // SAFETY: as in `u32s`.
        unsafe { std::slice::from_raw_parts(self.base.add(offset).cast::<AtomicU64>(), count) }
    }

    fn check(&self, offset: usize, count: usize, size: usize) {
        let end = count
            .checked_mul(size)
            .and_then(|bytes| bytes.checked_add(offset));
        assert!(
            end.is_some_and(|end| end <= self.len) && offset % size == 0,
            "shared memory access out of layout: {count} x {size} bytes at {offset} of {}",
            self.len
        );
    }
}

/// A new non-blocking eventfd (close-on-exec).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes plain integers and returns a new fd or -1.
    let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new fd this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Takes ownership of the eventfd an upgrading master passed by number; `None` unless `fd`
/// is above stderr and an eventfd.
pub fn adopt_eventfd(fd: RawFd) -> Option<OwnedFd> {
    if fd <= 2 {
        return None;
    }
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    if target.as_os_str() != "anon_inode:[eventfd]" {
        return None;
    }
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).ok()?;
    // SAFETY: the fd is an open eventfd handed to this process to own.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_mapping_is_shared_with_a_second_mapping_of_its_fd() {
        let first = SharedMemory::create("shoal-test", 8192).unwrap();
        first.u32s(4096, 2)[1].store(7, Ordering::SeqCst);
        let dup = nix::unistd::dup(first.fd().as_raw_fd()).unwrap();
        let second = SharedMemory::adopt(dup, 8192, &[]).expect("adopted");
        assert_eq!(second.u32s(4096, 2)[1].load(Ordering::SeqCst), 7);
        second.u64s(0, 1)[0].store(9, Ordering::SeqCst);
        assert_eq!(first.u64s(0, 1)[0].load(Ordering::SeqCst), 9);
        let wrong_size = nix::unistd::dup(first.fd().as_raw_fd()).unwrap();
        assert!(SharedMemory::adopt(wrong_size, 4096, &[]).is_none());
    }

    #[test]
    fn a_mapping_of_an_older_size_is_grown_and_keeps_its_bytes() {
        let old = SharedMemory::create("shoal-test", 4096).unwrap();
        old.u64s(8, 1)[0].store(5, Ordering::SeqCst);
        let dup = nix::unistd::dup(old.fd().as_raw_fd()).unwrap();
        assert!(
            SharedMemory::adopt(dup, 3 * 4096, &[8192]).is_none(),
            "not an older size"
        );
        let dup = nix::unistd::dup(old.fd().as_raw_fd()).unwrap();
        let grown = SharedMemory::adopt(dup, 3 * 4096, &[4096]).expect("grown");
        assert_eq!(grown.u64s(8, 1)[0].load(Ordering::SeqCst), 5);
        assert_eq!(grown.u64s(2 * 4096, 1)[0].load(Ordering::SeqCst), 0);
        grown.u64s(16, 1)[0].store(6, Ordering::SeqCst);
        assert_eq!(old.u64s(16, 1)[0].load(Ordering::SeqCst), 6);
    }

    #[test]
    #[should_panic(expected = "out of layout")]
    fn access_past_the_end_panics() {
        SharedMemory::create("shoal-test", 4096).unwrap().u32s(4092, 2);
    }

    #[test]
    fn only_an_eventfd_is_adopted_as_one() {
        let bell = eventfd().unwrap();
        let dup = nix::unistd::dup(bell.as_raw_fd()).unwrap();
        assert!(adopt_eventfd(dup).is_some());
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(adopt_eventfd(file.as_raw_fd()).is_none());
        assert!(adopt_eventfd(1).is_none());
    }
}
