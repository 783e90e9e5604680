//! The listening sockets a worker accepts on: TCP (one SO_REUSEPORT socket per slot and
//! address), or a unix socket (one for every slot). The master binds them and hands each
//! worker its own fds as [`ListenSocket`]s.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::io::Stream;

/// A bound, listening socket, as the master keeps it.
#[derive(Debug)]
pub enum ListenSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl ListenSocket {
    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(socket) => socket.set_nonblocking(true),
            ListenSocket::Unix(socket) => socket.set_nonblocking(true),
        }
    }

    pub fn try_clone(&self) -> io::Result<ListenSocket> {
        match self {
            ListenSocket::Tcp(socket) => socket.try_clone().map(ListenSocket::Tcp),
            ListenSocket::Unix(socket) => socket.try_clone().map(ListenSocket::Unix),
        }
    }
}

impl AsFd for ListenSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            ListenSocket::Tcp(socket) => socket.as_fd(),
            ListenSocket::Unix(socket) => socket.as_fd(),
        }
    }
}

impl AsRawFd for ListenSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A client on a unix socket has no address of its own: it is on this machine, and stands
/// as the loopback address in logs and forwarded headers (a PROXY header may name another).
pub const UNIX_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A listening socket in a worker's poll.
pub enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl Listener {
    /// The worker's side of `socket` (the master made it non-blocking). Accepted TCP
    /// sockets inherit TCP_NODELAY from their listener (Linux), which saves a setsockopt per
    /// connection.
    pub fn of(socket: ListenSocket) -> io::Result<Listener> {
        match socket {
            ListenSocket::Tcp(socket) => {
                socket2::SockRef::from(&socket).set_nodelay(true)?;
                Ok(Listener::Tcp(mio::net::TcpListener::from_std(socket)))
            }
            ListenSocket::Unix(socket) => Ok(Listener::Unix(mio::net::UnixListener::from_std(socket))),
        }
    }

    /// A connection waiting in the queue, with its peer's address.
    pub fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tcp(listener) => listener
                .accept()
                .map(|(stream, peer)| (Stream::Tcp(stream), peer)),
            Listener::Unix(listener) => listener
                .accept()
                .map(|(stream, _)| (Stream::Unix(stream), UNIX_PEER)),
        }
    }
}

impl Source for Listener {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(listener) => listener.register(registry, token, interests),
            Listener::Unix(listener) => listener.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(listener) => listener.reregister(registry, token, interests),
            Listener::Unix(listener) => listener.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(listener) => listener.deregister(registry),
            Listener::Unix(listener) => listener.deregister(registry),
        }
    }
}
