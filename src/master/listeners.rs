//! The listening sockets: one SO_REUSEPORT socket per worker slot and TCP address, one unix
//! socket per path for every slot.
//!
//! The master binds them once and keeps them open for the life of the slot: a socket's
//! accept queue dies with its last fd, so a worker that dies must never own the only one.
//! On a binary upgrade they are passed to the new executable instead of being bound again.
//! An address none of our sockets is on yet is probed first: SO_REUSEPORT would let us join
//! another process's group on it silently, so a taken address is refused instead. A unix
//! socket's path is probed by connecting: a file nothing answers on is a stale socket left
//! by a stopped server, and is replaced.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use super::activation::Shared;
use super::owner::{self, Owner};
use crate::config::{Address, UnixAccess};
use crate::sys;
use crate::worker::ListenSocket;

/// Kernel accept-queue length requested for every listening socket (capped by somaxconn).
pub const BACKLOG: i32 = 4096;
/// Environment variable carrying inherited sockets: `slot;slot;...`, each `fd@addr,fd@addr`.
pub const INHERITED_FDS_VAR: &str = "SHOAL_LISTEN_FDS";

/// One bound listening socket and the server it feeds.
#[derive(Debug)]
pub struct Listener {
    /// The socket, non-blocking, bound and listening.
    pub socket: ListenSocket,
    /// The address it is bound to.
    pub addr: Address,
    /// Index of the virtual server in `Config::servers`.
    pub server: usize,
}

/// Why an address could not be listened on.
#[derive(Debug)]
pub enum BindError {
    /// The probe found another socket listening there: SO_REUSEPORT would have quietly put
    /// us in its group (when both run as the same user) and split its traffic with us.
    Taken { addr: Address, owner: Option<Owner> },
    /// Creating, binding or listening failed (EACCES below port 1024, EADDRNOTAVAIL...).
    Bind { addr: Address, source: io::Error },
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::Taken {
                addr,
                owner: Some(owner),
            } => {
                write!(f, "{addr} is already in use (by {owner})")
            }
            BindError::Taken { addr, owner: None } => write!(f, "{addr} is already in use"),
            BindError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
        }
    }
}

impl BindError {
    /// The error for a failed bind of `addr`: `Taken` (with its owner) for EADDRINUSE.
    pub fn of(addr: impl Into<Address>, source: io::Error) -> BindError {
        let addr = addr.into();
        if source.kind() == io::ErrorKind::AddrInUse {
            let owner = match addr {
                Address::Tcp(tcp) => owner::owner_of(tcp),
                Address::Unix(_) => None,
            };
            BindError::Taken { addr, owner }
        } else {
            BindError::Bind { addr, source }
        }
    }
}

/// Refuses any of `fresh` (addresses none of our sockets is on yet) that another socket
/// listens on. Each is probed with a bind *without* SO_REUSEPORT, which the kernel refuses
/// while anything listens there, whoever owns it; the probe socket is closed at once. Our own
/// sockets (kept on reload, inherited on upgrade, passed by systemd) are never probed.
pub fn refuse_taken(fresh: impl IntoIterator<Item = Address>) -> Result<(), BindError> {
    for addr in fresh {
        let probed = match &addr {
            Address::Tcp(tcp) => probe(*tcp),
            Address::Unix(path) => probe_unix(path),
        };
        probed.map_err(|source| BindError::of(addr, source))?;
    }
    Ok(())
}

/// A path is free when nothing is there, or a socket nothing answers on (left by a server
/// that stopped); taken when a connect succeeds.
fn probe_unix(path: &Path) -> io::Result<()> {
    match UnixStream::connect(path) {
        Ok(_) => Err(io::ErrorKind::AddrInUse.into()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn probe(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR: a port with only TIME_WAIT connections left is free, as for the real bind.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())
}

/// Sockets available for reuse, by address, in slot order (from a previous config or an
/// upgrading master).
#[derive(Default)]
pub struct Spare {
    by_addr: HashMap<Address, Vec<ListenSocket>>,
}

impl Spare {
    /// Sockets passed by an upgrading master in [`INHERITED_FDS_VAR`], if any.
    pub fn inherited() -> Spare {
        let mut spare = Spare::default();
        let Ok(value) = std::env::var(INHERITED_FDS_VAR) else {
            return spare;
        };
        for entry in value.split(';').flat_map(|slot| slot.split(',')) {
            let Some((fd, addr)) = entry.split_once('@') else {
                continue;
            };
            let (Ok(fd), Ok(addr)) = (fd.parse(), addr.parse::<SocketAddr>()) else {
                continue;
            };
            if let Some(socket) = sys::adopt_listener(fd, Some(addr)) {
                (spare.by_addr.entry(Address::Tcp(addr)).or_default()).push(ListenSocket::Tcp(socket));
            }
        }
        spare
    }

    /// Keeps `socket` for reuse.
    pub fn put(&mut self, listener: Listener) {
        self.by_addr
            .entry(listener.addr)
            .or_default()
            .push(listener.socket);
    }

    /// True when a socket for `addr` is kept here.
    pub fn holds(&self, addr: &Address) -> bool {
        self.by_addr.get(addr).is_some_and(|sockets| !sockets.is_empty())
    }

    fn take(&mut self, addr: &Address) -> Option<ListenSocket> {
        let sockets = self.by_addr.get_mut(addr)?;
        (!sockets.is_empty()).then(|| sockets.remove(0))
    }

    /// Sockets nobody reused.
    pub fn into_leftovers(self) -> Vec<ListenSocket> {
        self.by_addr.into_values().flatten().collect()
    }
}

/// The sockets of one slot: one per `(address, server)` pair: a duplicate of the `shared`
/// socket for the address if there is one (socket-activated, or a unix socket), else one
/// reused from `spare` when an open socket for the address is there, else bound anew.
pub fn slot_sockets(
    addresses: &[(Address, usize)],
    spare: &mut Spare,
    shared: &Shared,
) -> Result<Vec<Listener>, BindError> {
    addresses
        .iter()
        .map(|(addr, server)| {
            let failed = |source| BindError::of(addr.clone(), source);
            let socket = match (shared.duplicate(addr), spare.take(addr), addr) {
                (Some(duplicate), _, _) => duplicate.map_err(failed)?,
                (None, Some(socket), _) => socket,
                (None, None, Address::Tcp(tcp)) => ListenSocket::Tcp(bind(*tcp).map_err(failed)?),
                // Unix sockets are bound once for all slots, into `shared` (`bind_unix`).
                (None, None, Address::Unix(_)) => return Err(failed(io::ErrorKind::NotFound.into())),
            };
            Ok(Listener {
                socket,
                addr: addr.clone(),
                server: *server,
            })
        })
        .collect()
}

/// Binds the unix sockets among `addresses` that `shared` does not hold yet, into it (one
/// socket every slot shares), and gives every one the mode and owner `access` says. A stale
/// socket file (`refuse_taken` found nothing answering there) is replaced.
pub fn bind_unix(
    addresses: &[(Address, usize)],
    shared: &mut Shared,
    access: impl Fn(&Path) -> UnixAccess,
) -> Result<(), BindError> {
    for (addr, _) in addresses {
        let Address::Unix(path) = addr else {
            continue;
        };
        let failed = |source| BindError::of(addr.clone(), source);
        if !shared.contains(addr) {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(failed(e)),
                _ => {}
            }
            let socket = bind_unix_path(path).map_err(failed)?;
            shared.insert(addr.clone(), ListenSocket::Unix(socket));
        }
        // Every time: a reload may change them on a socket kept open.
        let UnixAccess { mode, owner } = access(path);
        if let Some(mode) = mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(failed)?;
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(failed)?;
        }
    }
    Ok(())
}

/// The [`INHERITED_FDS_VAR`] value describing these slots' own sockets (the `shared` ones
/// go once, in their own variable).
pub fn describe_for_upgrade<'a>(slots: impl Iterator<Item = &'a [Listener]>, shared: &Shared) -> String {
    slots
        .map(|listeners| {
            (listeners.iter())
                .filter(|l| !shared.contains(&l.addr))
                .map(|l| format!("{}@{}", l.socket.as_raw_fd(), l.addr))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn bind_unix_path(path: &Path) -> io::Result<UnixListener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
