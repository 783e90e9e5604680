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

/// Raises the soft open-files limit to the hard limit, so `max_connections` is reachable
/// without the operator remembering `ulimit -n`. Returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}
