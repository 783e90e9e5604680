//! Thin wrappers over the system calls the rest of shoal needs and `std` does not offer.
//!
//! This is the only module allowed to contain `unsafe`; every block states why it is sound.

mod fs;
mod net;
mod notify;
mod process;
mod shm;
mod signals;
mod steer;

pub use fs::{open_beneath, open_dir, Access, OpenMode};
#[cfg(test)]
pub use net::unsent_bytes;
pub use net::{defer_accept, nothing_to_read, random_bytes, send_more};
pub use notify::Notifier;
pub use process::{
    adopt_listener, adopt_pipe, adopt_unix_listener, close_fds_except, drop_privileges, fork, hand_over,
    name_process, raise_nofile_limit, redirect_stderr, set_cloexec, DropError, Forked, NofileLimit,
};
pub use shm::{adopt_eventfd, eventfd, SharedMemory};
pub use signals::{SignalReader, HANDLED};
pub use steer::steer;
