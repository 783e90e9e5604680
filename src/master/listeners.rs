//! Binding the listening sockets: one SO_REUSEPORT socket per worker slot and address.
//!
//! The master binds them once and keeps them open for the life of the slot: a socket's
//! accept queue dies with its last fd, so a worker that dies must never own the only one.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel accept-queue length requested for every listening socket (capped by somaxconn).
pub const BACKLOG: i32 = 4096;

/// One bound listening socket and the server it feeds.
#[derive(Debug)]
pub struct Listener {
    /// The socket, non-blocking, bound and listening.
    pub socket: TcpListener,
    /// Index of the virtual server in `Config::servers`.
    pub server: usize,
}

/// A bind failure, naming the address.
#[derive(Debug)]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot listen on {}: {}", self.addr, self.source)
    }
}

/// Binds the sockets of one slot: one per `(address, server)` pair.
pub fn bind_slot(addresses: &[(SocketAddr, usize)]) -> Result<Vec<Listener>, BindError> {
    addresses
        .iter()
        .map(|&(addr, server)| {
            bind(addr)
                .map(|socket| Listener { socket, server })
                .map_err(|source| BindError { addr, source })
        })
        .collect()
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
