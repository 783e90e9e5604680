//! The listening sockets a worker accepts on: TCP (one SO_REUSEPORT socket per slot and
//! address), or a unix socket (one for every slot). The master binds them and hands each
//! worker its own fds as [`ListenSocket`]s.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::io::Stream;
use crate::sys;

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

/// How long a silent new connection waits in the kernel before it is accepted anyway: long
/// enough for any client's first bytes, short enough that a preconnecting browser's socket
/// is soon in a worker's hands (and under its header timeout).
const DEFER_ACCEPT_SECONDS: u32 = 1;

/// A listening socket in a worker's poll.
pub enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl Listener {
    /// The worker's side of `socket` (the master made it non-blocking). Accepted TCP
    /// sockets inherit TCP_NODELAY from their listener (Linux), which saves a setsockopt per
    /// connection. New connections come with their first bytes (`sys::defer_accept`): a
    /// connection per request then costs one wakeup fewer (about a third of the server's
    /// CPU per connection, docs/performance.md).
    pub fn of(socket: ListenSocket) -> io::Result<Listener> {
        match socket {
            ListenSocket::Tcp(socket) => {
                socket2::SockRef::from(&socket).set_nodelay(true)?;
                sys::defer_accept(socket.as_fd(), DEFER_ACCEPT_SECONDS)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// A worker's TCP listener defers accept: of two new connections, the one whose request
    /// has arrived is handed over first, the silent one only later.
    #[test]
    fn a_worker_listener_accepts_the_client_that_spoke_first() {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let listener = Listener::of(ListenSocket::Tcp(socket)).unwrap();
        let _silent = TcpStream::connect(addr).unwrap();
        let mut speaking = TcpStream::connect(addr).unwrap();
        speaking.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let peer = (0..500)
            .find_map(|_| match listener.accept() {
                Ok((_, peer)) => Some(peer),
                Err(_) => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    None
                }
            })
            .expect("no connection accepted");
        assert_eq!(peer, speaking.local_addr().unwrap());
    }
}
