//! Socket calls `std` lacks: a send that holds a partial segment back for the FIN, a peek
//! that works on any socket, deferred accept on a listener, and (for tests of the first) the
//! count of queued bytes no segment has carried yet.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Writes `bytes` with `MSG_MORE`, so a partial segment waits for what follows; when what
/// follows is our FIN (close or shutdown), both leave in one segment, as nginx gets from
/// `TCP_CORK`. `MSG_NOSIGNAL`: a peer that reset gives `EPIPE`, never `SIGPIPE`.
pub fn send_more(socket: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of its length, and the fd is borrowed for the call.
    let n = unsafe {
        libc::send(
            socket.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_MORE,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Has the kernel hand a connection to `accept` only once its first bytes have arrived
/// (`TCP_DEFER_ACCEPT`, nginx's `listen ... deferred`, HAProxy's `defer-accept`): a client
/// speaks first in HTTP, TLS and the PROXY protocol, so the worker wakes once per new
/// connection, with its request ready to read, instead of once for the handshake and again
/// for the request. A connection that stays silent is handed over anyway after `seconds`
/// (the SYN-ACK is sent again, and its acknowledgement completes the accept).
pub fn defer_accept(listener: BorrowedFd<'_>, seconds: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    set_int_option(
        listener.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        value,
    )
}

/// `setsockopt` of an option whose value is an int (socket2 and nix lack some of them).
pub(super) fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: plain setsockopt with an int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`, which blocks only before
/// the pool is first seeded, at boot).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is valid for writes of its length for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

/// Whether a non-blocking socket has nothing to read yet (its peer neither sent bytes nor
/// closed): `recv` with `MSG_PEEK` would block.
pub fn nothing_to_read(socket: BorrowedFd<'_>) -> bool {
    let mut byte = 0u8;
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    // SAFETY: one byte is writable through the pointer; the fd is borrowed for the call.
    let n = unsafe { libc::recv(socket.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, flags) };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// Bytes queued on a TCP socket that no segment has carried yet (`SIOCOUTQNSD`), for tests
/// of what `send_more` holds back.
#[cfg(test)]
pub fn unsent_bytes(socket: BorrowedFd<'_>) -> io::Result<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCOUTQNSD as _, &mut unsent) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(unsent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn held_bytes_leave_with_the_fin() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nodelay(true).unwrap();
        assert_eq!(send_more(server.as_fd(), b"partial").unwrap(), 7);
        assert_eq!(unsent_bytes(server.as_fd()).unwrap(), 7);
        server.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"partial");
    }

    #[test]
    fn a_deferred_listener_hands_over_the_connection_that_spoke_first() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        defer_accept(listener.as_fd(), 30).unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = TcpStream::connect(addr).unwrap();
        let mut speaking = TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut speaking, b"GET / HTTP/1.1\r\n").unwrap();
        // Without deferral the silent client, first in the queue, would be accepted here.
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, speaking.local_addr().unwrap());
    }
}
