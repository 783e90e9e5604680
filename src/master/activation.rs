//! Socket activation: listening sockets handed to us already bound, by systemd
//! (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`; fds from 3) or by the master we replace in a
//! binary upgrade ([`SHARED_FDS_VAR`]).
//!
//! Such a socket is one per address and every slot shares it (each slot holds a duplicate
//! fd), so the kernel's SO_REUSEPORT spreading and the master's steering do not apply to it:
//! the workers compete for one accept queue. Every variable is removed from the environment
//! once read, so workers and upgraded masters never read them again.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};

use crate::config::Address;
use crate::sys;
use crate::worker::ListenSocket;

/// Environment variable carrying shared sockets to an upgraded master: `fd@addr,fd@addr`.
pub const SHARED_FDS_VAR: &str = "SHOAL_SHARED_FDS";
/// systemd passes its sockets from this fd on (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// Why the sockets we were handed cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationError {
    /// `LISTEN_FDS` (or `LISTEN_PID`) is not a number.
    BadVariable { name: &'static str, value: String },
    /// The fd is not an open listening TCP or unix socket.
    NotAListener { fd: RawFd, name: String },
    /// The socket's address (getsockname) is not a configured listen address.
    NotConfigured { fd: RawFd, name: String, addr: Address },
    /// Two sockets are bound to the same address.
    Duplicate { fd: RawFd, addr: Address },
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationError::BadVariable { name, value } => {
                write!(f, "socket activation: {name}={value:?} is not a number")
            }
            ActivationError::NotAListener { fd, name } => {
                write!(
                    f,
                    "socket activation: fd {fd}{name} is not a listening TCP or unix socket"
                )
            }
            ActivationError::NotConfigured { fd, name, addr } => write!(
                f,
                "socket activation: fd {fd}{name} listens on {addr}, which no [[server]] listen names"
            ),
            ActivationError::Duplicate { fd, addr } => {
                write!(
                    f,
                    "socket activation: fd {fd} listens on {addr} like an earlier fd"
                )
            }
        }
    }
}

impl std::error::Error for ActivationError {}

/// The shared sockets, by address: those handed over, and the unix sockets the master binds.
#[derive(Debug, Default)]
pub struct Shared {
    by_addr: HashMap<Address, ListenSocket>,
}

impl Shared {
    /// True when `addr` is served from a shared socket (no steering, no binding).
    pub fn contains(&self, addr: &Address) -> bool {
        self.by_addr.contains_key(addr)
    }

    /// A new fd for the shared socket of `addr`, if there is one.
    pub fn duplicate(&self, addr: &Address) -> Option<std::io::Result<ListenSocket>> {
        self.by_addr.get(addr).map(ListenSocket::try_clone)
    }

    /// Keeps `socket`, bound to `addr`, for every slot.
    pub fn insert(&mut self, addr: Address, socket: ListenSocket) {
        self.by_addr.insert(addr, socket);
    }

    /// Closes the master's fd of the socket for `addr` (workers' duplicates stay open).
    pub fn remove(&mut self, addr: &Address) {
        self.by_addr.remove(addr);
    }

    /// Every shared socket with its address.
    pub fn iter(&self) -> impl Iterator<Item = (&Address, &ListenSocket)> {
        self.by_addr.iter()
    }

    /// The [`SHARED_FDS_VAR`] value describing these sockets.
    pub fn describe_for_upgrade(&self) -> String {
        let entries: Vec<String> = self
            .by_addr
            .iter()
            .map(|(addr, socket)| format!("{}@{addr}", socket.as_raw_fd()))
            .collect();
        entries.join(",")
    }
}

/// Takes the sockets we were handed, if any, checking each against the configured listen
/// `addresses`. Removes the variables from the environment whatever they say.
pub fn take_from_env(addresses: &[(Address, usize)]) -> Result<Shared, ActivationError> {
    let read = |name| std::env::var(name).ok();
    let systemd = SystemdVars {
        pid: read("LISTEN_PID"),
        fds: read("LISTEN_FDS"),
        names: read("LISTEN_FDNAMES"),
    };
    let upgrade = read(SHARED_FDS_VAR);
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", SHARED_FDS_VAR] {
        std::env::remove_var(name);
    }
    let mut handed = systemd.fds_for(std::process::id())?;
    if let Some(value) = upgrade {
        handed.extend(from_upgrade(&value));
    }
    let mut shared = Shared::default();
    for Handed { fd, name } in handed {
        let shown = if name.is_empty() {
            name
        } else {
            format!(" ({name})")
        };
        let adopted = match sys::adopt_listener(fd, None) {
            Some(socket) => socket
                .local_addr()
                .ok()
                .map(|addr| (Address::Tcp(addr), ListenSocket::Tcp(socket))),
            None => sys::adopt_unix_listener(fd)
                .map(|(socket, path)| (Address::Unix(path), ListenSocket::Unix(socket))),
        };
        let Some((addr, socket)) = adopted.filter(|(_, socket)| socket.set_nonblocking().is_ok()) else {
            return Err(ActivationError::NotAListener { fd, name: shown });
        };
        if !addresses.iter().any(|(configured, _)| *configured == addr) {
            return Err(ActivationError::NotConfigured {
                fd,
                name: shown,
                addr,
            });
        }
        if shared.by_addr.contains_key(&addr) {
            return Err(ActivationError::Duplicate { fd, addr });
        }
        shared.by_addr.insert(addr, socket);
    }
    Ok(shared)
}

/// One fd handed to us, with its `LISTEN_FDNAMES` name (empty when unnamed).
#[derive(Debug, PartialEq, Eq)]
struct Handed {
    fd: RawFd,
    name: String,
}

/// systemd's variables as found.
struct SystemdVars {
    pid: Option<String>,
    fds: Option<String>,
    names: Option<String>,
}

impl SystemdVars {
    /// The fds meant for the process `our_pid`: none unless `LISTEN_PID` names it.
    fn fds_for(&self, our_pid: u32) -> Result<Vec<Handed>, ActivationError> {
        let (Some(pid), Some(fds)) = (&self.pid, &self.fds) else {
            return Ok(Vec::new());
        };
        let pid: u32 = pid.trim().parse().map_err(|_| ActivationError::BadVariable {
            name: "LISTEN_PID",
            value: pid.clone(),
        })?;
        if pid != our_pid {
            return Ok(Vec::new());
        }
        let count: RawFd = fds
            .trim()
            .parse()
            .ok()
            .filter(|n| (0..=4096).contains(n))
            .ok_or_else(|| ActivationError::BadVariable {
                name: "LISTEN_FDS",
                value: fds.clone(),
            })?;
        let mut names = self.names.as_deref().unwrap_or_default().split(':');
        Ok((0..count)
            .map(|i| Handed {
                fd: FIRST_FD + i,
                name: names.next().unwrap_or_default().to_string(),
            })
            .collect())
    }
}

/// The fds in a [`SHARED_FDS_VAR`] value (malformed entries are skipped, like
/// `SHOAL_LISTEN_FDS`: the address is read back from the socket itself anyway).
fn from_upgrade(value: &str) -> Vec<Handed> {
    value
        .split(',')
        .filter_map(|entry| entry.split_once('@')?.0.parse().ok())
        .map(|fd| Handed {
            fd,
            name: String::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> SystemdVars {
        SystemdVars {
            pid: pid.map(str::to_string),
            fds: fds.map(str::to_string),
            names: names.map(str::to_string),
        }
    }

    #[test]
    fn systemd_fds_start_at_3_and_carry_their_names() {
        let handed = vars(Some("42"), Some("2"), Some("http:admin"))
            .fds_for(42)
            .unwrap();
        assert_eq!(
            handed,
            [
                Handed {
                    fd: 3,
                    name: "http".into()
                },
                Handed {
                    fd: 4,
                    name: "admin".into()
                }
            ]
        );
        let unnamed = vars(Some("42"), Some("1"), None).fds_for(42).unwrap();
        assert_eq!(
            unnamed,
            [Handed {
                fd: 3,
                name: "".into()
            }]
        );
    }

    #[test]
    fn fds_for_another_process_or_none_are_ignored() {
        assert!(vars(Some("41"), Some("1"), None).fds_for(42).unwrap().is_empty());
        assert!(vars(None, Some("1"), None).fds_for(42).unwrap().is_empty());
        assert!(vars(None, None, None).fds_for(42).unwrap().is_empty());
    }

    #[test]
    fn garbage_in_the_variables_is_an_error() {
        let bad = vars(Some("42"), Some("x"), None).fds_for(42).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "socket activation: LISTEN_FDS=\"x\" is not a number"
        );
        assert!(vars(Some("me"), Some("1"), None).fds_for(42).is_err());
        assert!(vars(Some("42"), Some("-1"), None).fds_for(42).is_err());
    }

    #[test]
    fn upgrade_entries_give_fds() {
        let fds: Vec<RawFd> = from_upgrade("7@127.0.0.1:80,x@y,9@[::1]:81")
            .into_iter()
            .map(|h| h.fd)
            .collect();
        assert_eq!(fds, [7, 9]);
    }
}
