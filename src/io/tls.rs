//! TLS over a client's socket: rustls' `ServerConnection` (sans-I/O) between the socket and
//! the connection's input and output. [`Client`] is what a worker's connections run over:
//! a plain socket, or TLS on one.
//!
//! Reads take records off the socket until it would block, decrypt them, and answer the
//! handshake as it goes; writes encrypt into rustls' buffer (bounded, see
//! [`PENDING_LIMIT`]) and push records to the socket as far as it takes them. Records left
//! over go out on the next write, read or [`Transport::flush_pending`], so nothing waits
//! on a readiness event that will not come.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use super::transport::Transport;
use super::Stream;

/// Plaintext rustls holds encrypted but not yet on the socket, at most: past it, writes
/// would block (a client that does not read cannot grow it).
const PENDING_LIMIT: usize = 64 * 1024;

/// TLS on a socket.
pub struct Tls {
    socket: Stream,
    tls: ServerConnection,
    /// The last read of the socket would have blocked: nothing more to read until an event.
    drained: bool,
    /// The peer closed its side (or the socket failed): no more records will come.
    ended: bool,
    /// Bytes pass as they are until [`Transport::begin_tls`]: a PROXY protocol header
    /// comes first.
    raw: bool,
}

impl Tls {
    pub fn new(socket: Stream, config: Arc<ServerConfig>) -> io::Result<Tls> {
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(PENDING_LIMIT));
        Ok(Tls {
            socket,
            tls,
            drained: false,
            ended: false,
            raw: false,
        })
    }

    /// TLS begins only after a PROXY protocol header, which passes as it is.
    pub fn after_proxy_header(mut self) -> Tls {
        self.raw = true;
        self
    }

    /// Takes `received`, bytes of the handshake already read off the socket, as if they came
    /// now.
    fn take_received(&mut self, mut received: &[u8]) -> io::Result<()> {
        while !received.is_empty() {
            if self.tls.read_tls(&mut received)? == 0 {
                return Err(io::ErrorKind::InvalidData.into());
            }
            if let Err(e) = self.tls.process_new_packets() {
                let _ = self.push_records();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        match self.push_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Puts records rustls has ready on the socket, as far as it takes them.
    fn push_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes records off the socket and decrypts them; answers what the handshake asks.
    /// `Ok(false)`: the socket has nothing more now.
    fn pull_records(&mut self) -> io::Result<bool> {
        match self.tls.read_tls(&mut self.socket) {
            Ok(0) => self.ended = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.drained = true;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => {
                self.ended = true;
                return Err(e);
            }
        }
        self.drained = false;
        if let Err(e) = self.tls.process_new_packets() {
            // The alert rustls queued tells the client why (plain HTTP, a bad record).
            let _ = self.push_records();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        match self.push_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(true),
        }
    }
}

impl Transport for Tls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.raw {
            return Transport::read(&mut self.socket, buf);
        }
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                // Closed without close_notify: the end all the same (HTTP frames its bodies).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                Err(_) if self.ended => return Ok(0),
                Err(_) => {}
            }
            if !self.pull_records()? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    fn write(&mut self, bytes: &[u8], _fin_follows: bool) -> io::Result<usize> {
        self.flush_pending()?;
        let taken = self.tls.writer().write(bytes)?;
        if taken == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.push_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let first = bufs.iter().find(|buf| !buf.is_empty());
        first.map_or(Ok(0), |buf| Transport::write(self, buf, false))
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        let _ = self.push_records();
        self.socket.shutdown_write()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.push_records()?;
        match self.tls.wants_write() {
            true => Err(io::ErrorKind::WouldBlock.into()),
            false => Ok(()),
        }
    }

    fn holds_input(&self) -> bool {
        !self.raw && !self.drained && !self.ended
    }

    fn begin_tls(&mut self, received: &[u8]) -> io::Result<bool> {
        if !self.raw {
            return Ok(false);
        }
        self.raw = false;
        self.take_received(received)?;
        Ok(true)
    }
}

/// A client's connection: a plain socket, or TLS on one.
pub enum Client {
    Plain(Stream),
    Tls(Box<Tls>),
}

impl Transport for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Client::Plain(socket) => Transport::read(socket, buf),
            Client::Tls(tls) => tls.read(buf),
        }
    }

    fn write(&mut self, bytes: &[u8], fin_follows: bool) -> io::Result<usize> {
        match self {
            Client::Plain(socket) => Transport::write(socket, bytes, fin_follows),
            Client::Tls(tls) => tls.write(bytes, fin_follows),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Client::Plain(socket) => Transport::write_vectored(socket, bufs),
            Client::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Client::Plain(socket) => socket.shutdown_write(),
            Client::Tls(tls) => tls.shutdown_write(),
        }
    }

    fn can_sendfile(&self) -> bool {
        matches!(self, Client::Plain(_))
    }

    fn sendfile(&mut self, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
        match self {
            Client::Plain(socket) => Transport::sendfile(socket, file, offset, len),
            Client::Tls(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    fn holds_input(&self) -> bool {
        match self {
            Client::Plain(_) => false,
            Client::Tls(tls) => tls.holds_input(),
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Client::Plain(_) => Ok(()),
            Client::Tls(tls) => tls.flush_pending(),
        }
    }

    fn begin_tls(&mut self, received: &[u8]) -> io::Result<bool> {
        match self {
            Client::Plain(_) => Ok(false),
            Client::Tls(tls) => tls.begin_tls(received),
        }
    }

    fn secure(&self) -> bool {
        matches!(self, Client::Tls(_))
    }

    fn tls_session(&self) -> Option<(&'static str, &'static str)> {
        let Client::Tls(tls) = self else {
            return None;
        };
        let version = tls.tls.protocol_version()?.as_str()?;
        let suite = tls.tls.negotiated_cipher_suite()?.suite().as_str()?;
        Some((version, suite))
    }

    fn handshaking(&self) -> bool {
        matches!(self, Client::Tls(tls) if tls.tls.is_handshaking())
    }

    fn server_name(&self) -> Option<&str> {
        match self {
            Client::Plain(_) => None,
            Client::Tls(tls) => tls.tls.server_name(),
        }
    }
}

impl mio::event::Source for Client {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.socket().deregister(registry)
    }
}

impl Client {
    fn socket(&mut self) -> &mut Stream {
        match self {
            Client::Plain(socket) => socket,
            Client::Tls(tls) => &mut tls.socket,
        }
    }
}
