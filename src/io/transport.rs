//! The byte stream under a connection, client or upstream: a plain socket, or TLS on one.
//!
//! Everything above reads, writes and shuts down through [`Transport`], and asks it the two
//! questions a TLS stream answers differently from a TCP socket: may a file go to it with
//! `sendfile(2)` (TCP: yes; TLS: no, unless kTLS), and does it hold bytes already taken off
//! the socket that no readiness event will announce (TCP: never; TLS: decrypted records).

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};

use mio::net::TcpStream;

use crate::sys;

/// A non-blocking byte stream. Every call returns `WouldBlock` instead of waiting.
pub trait Transport {
    /// Reads into `buf`; `Ok(0)` is the end of the stream. Contract for edge-triggered
    /// polling: a read that returns fewer bytes than `buf` holds, while [`holds_input`] is
    /// false, proves nothing more is readable until the next readable event.
    ///
    /// [`holds_input`]: Transport::holds_input
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes `bytes`. `fin_follows`: these are the last bytes before our FIN, so a
    /// transport may hold a partial segment back for the FIN to ride in.
    fn write(&mut self, bytes: &[u8], fin_follows: bool) -> io::Result<usize>;

    /// Writes several buffers in order, as far as they go, in one call where it can.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Ends our sending side (FIN); reading goes on.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// True when files may be sent to this transport with [`sendfile`](Transport::sendfile).
    fn can_sendfile(&self) -> bool {
        false
    }

    /// Sends up to `len` bytes of `file` from `offset` with `sendfile(2)`. Only called when
    /// [`can_sendfile`](Transport::can_sendfile) said yes.
    fn sendfile(&mut self, _file: &File, _offset: u64, _len: usize) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// True when bytes were already taken off the socket (and decrypted) that no readiness
    /// event will announce: the owner must read again without waiting for one.
    fn holds_input(&self) -> bool {
        false
    }

    /// True for TLS: the request came over HTTPS.
    fn secure(&self) -> bool {
        false
    }

    /// The TLS protocol version and cipher suite (`TLSv1_3`, `TLS13_AES_128_GCM_SHA256`),
    /// once a handshake is done.
    fn tls_session(&self) -> Option<(&'static str, &'static str)> {
        None
    }

    /// Starts TLS on a transport that waited for a PROXY protocol header first, with the
    /// bytes already `received` after the header (the start of the handshake). False when
    /// the transport does not begin TLS.
    fn begin_tls(&mut self, _received: &[u8]) -> io::Result<bool> {
        Ok(false)
    }

    /// True while a TLS handshake is under way.
    fn handshaking(&self) -> bool {
        false
    }

    /// The name the client asked for in its TLS handshake (SNI), if any.
    fn server_name(&self) -> Option<&str> {
        None
    }

    /// Sends what the transport holds of its own (TLS records made by a handshake or by
    /// earlier writes): `WouldBlock` while some remain. A plain socket holds nothing.
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn write(&mut self, bytes: &[u8], fin_follows: bool) -> io::Result<usize> {
        if fin_follows {
            sys::send_more(self.as_fd(), bytes)
        } else {
            Write::write(self, bytes)
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Write::write_vectored(self, bufs)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        TcpStream::shutdown(self, Shutdown::Write)
    }

    fn can_sendfile(&self) -> bool {
        true
    }

    fn sendfile(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        sendfile(self.as_fd(), file, offset, len)
    }
}

/// `sendfile(2)`: up to `len` bytes of `file` from `offset` to `socket`.
pub fn sendfile(socket: BorrowedFd<'_>, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut offset = offset as libc::off_t;
    nix::sys::sendfile::sendfile(socket, file.as_fd(), Some(&mut offset), len).map_err(io::Error::from)
}
