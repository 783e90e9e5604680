//! A socket to an upstream server: TCP, or a unix socket for an app on the same box
//! (`unix:/run/app/app.sock`: gunicorn, puma, PHP behind an HTTP server). Both are byte
//! streams the exchange reads and writes alike; only connecting differs.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use mio::net::{TcpStream, UnixStream};
use mio::{event, Interest, Registry, Token};

use crate::config::UpstreamAddr;
use crate::io::{transport, Transport};
use crate::sys;

/// An upstream socket, non-blocking.
#[derive(Debug)]
pub enum UpstreamStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl UpstreamStream {
    /// Starts connecting to `addr` (a TCP connect completes later; a unix one at once,
    /// or fails with `WouldBlock` when the app's backlog is full).
    pub fn connect(addr: &UpstreamAddr) -> io::Result<UpstreamStream> {
        match addr {
            UpstreamAddr::Tcp(addr) => {
                let stream = TcpStream::connect(*addr)?;
                let _ = stream.set_nodelay(true);
                Ok(UpstreamStream::Tcp(stream))
            }
            UpstreamAddr::Unix(path) => UnixStream::connect(path).map(UpstreamStream::Unix),
        }
    }

    /// Whether a connect that was started has come to something: `Ok(true)` once connected,
    /// `Ok(false)` while pending, the error it failed with otherwise.
    pub fn connected(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            UpstreamStream::Tcp(stream) => (stream.take_error(), stream.peer_addr().map(drop)),
            UpstreamStream::Unix(stream) => (stream.take_error(), stream.peer_addr().map(drop)),
        };
        if let Some(e) = error? {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True unless the server closed (or sent something unasked on) an idle connection.
    pub fn still_open(&self) -> bool {
        sys::nothing_to_read(self.as_fd())
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            UpstreamStream::Tcp(stream) => stream,
            UpstreamStream::Unix(stream) => stream,
        }
    }
}

/// What both kinds of stream are, for delegating to either.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Read for UpstreamStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.io().read(buf)
    }
}

impl Write for UpstreamStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.io().write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.io().write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for UpstreamStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn write(&mut self, bytes: &[u8], _fin_follows: bool) -> io::Result<usize> {
        Write::write(self, bytes)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Write::write_vectored(self, bufs)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            UpstreamStream::Tcp(stream) => stream.shutdown(Shutdown::Write),
            UpstreamStream::Unix(stream) => stream.shutdown(Shutdown::Write),
        }
    }

    // A spilled request body goes up from its file (sendfile takes any socket).
    fn can_sendfile(&self) -> bool {
        true
    }

    fn sendfile(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        transport::sendfile(self.as_fd(), file, offset, len)
    }
}

impl AsFd for UpstreamStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            UpstreamStream::Tcp(stream) => stream.as_fd(),
            UpstreamStream::Unix(stream) => stream.as_fd(),
        }
    }
}

impl AsRawFd for UpstreamStream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl event::Source for UpstreamStream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            UpstreamStream::Tcp(stream) => stream.register(registry, token, interests),
            UpstreamStream::Unix(stream) => stream.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            UpstreamStream::Tcp(stream) => stream.reregister(registry, token, interests),
            UpstreamStream::Unix(stream) => stream.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            UpstreamStream::Tcp(stream) => stream.deregister(registry),
            UpstreamStream::Unix(stream) => stream.deregister(registry),
        }
    }
}
