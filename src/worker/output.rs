//! A connection's pending output: response bytes and file ranges, sent strictly in order.
//!
//! Bytes accumulate in one buffer (so a burst of pipelined responses goes out in one
//! write); a file range becomes its own chunk sent with sendfile(2), and a large cached
//! body its own chunk pointing into the cache's bytes (never copied per connection).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::mem;
use std::os::fd::{AsFd, AsRawFd};

use super::buffers::BufferPool;

use crate::files::{Body, FileBody, SharedBody};

/// Largest sendfile call, so one big file cannot monopolize the worker.
const SENDFILE_STEP: usize = 1 << 20;

enum Chunk {
    Bytes(Vec<u8>),
    File(FileBody),
    Shared(SharedBody),
}

/// Writes `bytes` to `socket`. When they are the `last` before our FIN, MSG_MORE holds
/// a partial segment back so that the FIN sent by close or shutdown rides in it: the
/// client then gets the response and the end in one segment, as nginx's TCP_CORK gives.
fn send<S: Write + AsFd>(socket: &mut S, bytes: &[u8], last: bool) -> io::Result<usize> {
    if !last {
        return socket.write(bytes);
    }
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `bytes` is valid for reads of its length, and `fd` is borrowed from `socket`.
    let n = unsafe {
        libc::send(
            fd,
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

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything pending was sent.
    Done,
    /// The socket is full; wait for writability.
    Blocked,
    /// Sent a bounded amount and there is more: come back soon.
    Yielded,
}

/// Output waiting to be sent on one connection.
#[derive(Default)]
pub struct Output {
    /// Bytes not yet sent, and how many of them at the front are already gone.
    head: Vec<u8>,
    head_sent: usize,
    /// Chunks after `head`, in order.
    rest: VecDeque<Chunk>,
    /// Total bytes written to the socket so far.
    pub sent_bytes: u64,
}

impl Output {
    /// The buffer new response bytes are appended to (always the last in order).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        if matches!(self.rest.back(), Some(Chunk::File(_) | Chunk::Shared(_))) {
            self.rest.push_back(Chunk::Bytes(Vec::new()));
        }
        match self.rest.back_mut() {
            Some(Chunk::Bytes(bytes)) => bytes,
            _ => &mut self.head,
        }
    }

    /// Queues a response body after everything already pending.
    pub fn push_body(&mut self, body: Body) {
        match body {
            Body::File(file) if file.len > 0 => self.rest.push_back(Chunk::File(file)),
            Body::Shared(shared) if shared.start < shared.end => self.rest.push_back(Chunk::Shared(shared)),
            Body::File(_) | Body::Shared(_) => {}
        }
    }

    /// True when nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.head_sent == self.head.len() && self.rest.is_empty()
    }

    /// Bytes waiting to be sent (file chunks count as a full buffer: they are large).
    pub fn backlog_bytes(&self) -> usize {
        let waiting = |chunk: &Chunk| match chunk {
            Chunk::Bytes(bytes) => bytes.len(),
            Chunk::File(_) => 1 << 20,
            Chunk::Shared(shared) => shared.end - shared.start,
        };
        self.head.len() - self.head_sent + self.rest.iter().map(waiting).sum::<usize>()
    }

    /// Borrows a buffer from `pool` if nothing is pending and this output has none.
    pub fn lend(&mut self, pool: &mut BufferPool) {
        if self.head.capacity() == 0 && self.rest.is_empty() {
            self.head = pool.take();
            self.head.clear();
            self.head_sent = 0;
        }
    }

    /// Gives the buffer back to `pool` once everything in it was sent.
    pub fn give_back(&mut self, pool: &mut BufferPool) {
        if self.is_empty() && self.head.capacity() > 0 {
            self.head_sent = 0;
            pool.give(mem::take(&mut self.head));
        }
    }

    /// Sends as much as the socket takes, up to a bounded amount per call. `fin_follows`:
    /// the connection is closed (or shut for writing) as soon as everything is sent.
    pub fn flush<S: Write + AsFd>(&mut self, socket: &mut S, fin_follows: bool) -> io::Result<Flush> {
        let mut budget = 4 * SENDFILE_STEP;
        loop {
            if self.head_sent < self.head.len() {
                let last = fin_follows && self.rest.is_empty();
                match send(socket, &self.head[self.head_sent..], last) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.head_sent += n;
                        self.sent_bytes += n as u64;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            self.head.clear();
            self.head_sent = 0;
            if budget == 0 {
                return Ok(if self.is_empty() {
                    Flush::Done
                } else {
                    Flush::Yielded
                });
            }
            match self.rest.pop_front() {
                None => return Ok(Flush::Done),
                Some(Chunk::Bytes(bytes)) => self.head = bytes,
                Some(Chunk::Shared(mut shared)) => {
                    let last = fin_follows && self.rest.is_empty();
                    match send(socket, &shared.bytes[shared.start..shared.end], last) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            budget -= n.min(budget);
                            self.sent_bytes += n as u64;
                            shared.start += n;
                            if shared.start < shared.end {
                                self.rest.push_front(Chunk::Shared(shared));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.rest.push_front(Chunk::Shared(shared));
                            return Ok(Flush::Blocked);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                            self.rest.push_front(Chunk::Shared(shared))
                        }
                        Err(e) => return Err(e),
                    }
                }
                Some(Chunk::File(mut body)) => {
                    let step = (body.len as usize).min(SENDFILE_STEP).min(budget);
                    let mut offset = body.offset as libc::off_t;
                    match nix::sys::sendfile::sendfile(
                        socket.as_fd(),
                        body.file.as_fd(),
                        Some(&mut offset),
                        step,
                    ) {
                        // The file shrank under us: the promised length cannot be delivered.
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "file truncated while sending",
                            ))
                        }
                        Ok(n) => {
                            budget -= n.min(budget);
                            self.sent_bytes += n as u64;
                            body.offset += n as u64;
                            body.len -= n as u64;
                            if body.len > 0 {
                                self.rest.push_front(Chunk::File(body));
                            }
                        }
                        Err(nix::errno::Errno::EAGAIN) => {
                            self.rest.push_front(Chunk::File(body));
                            return Ok(Flush::Blocked);
                        }
                        Err(nix::errno::Errno::EINTR) => self.rest.push_front(Chunk::File(body)),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{Shutdown, TcpListener, TcpStream};

    fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nodelay(true).unwrap();
        (server, client)
    }

    /// Bytes queued in the kernel that no segment has carried yet.
    fn unsent_bytes(socket: &TcpStream) -> i32 {
        let mut unsent: libc::c_int = 0;
        // SAFETY: SIOCOUTQNSD writes one int through the pointer.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCOUTQNSD, &mut unsent) };
        assert_eq!(rc, 0, "SIOCOUTQNSD: {}", io::Error::last_os_error());
        unsent
    }

    fn flushed(server: &mut TcpStream, bytes: &[u8], fin_follows: bool) {
        let mut output = Output::default();
        output.buffer().extend_from_slice(bytes);
        assert_eq!(output.flush(server, fin_follows).unwrap(), Flush::Done);
        assert_eq!(output.sent_bytes, bytes.len() as u64);
    }

    #[test]
    fn a_response_that_stays_open_leaves_at_once() {
        let (mut server, _client) = connected_pair();
        flushed(&mut server, b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(unsent_bytes(&server), 0);
    }

    #[test]
    fn the_last_response_waits_for_the_fin_to_share_its_segment() {
        let (mut server, mut client) = connected_pair();
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        flushed(&mut server, response, true);
        assert_eq!(unsent_bytes(&server), response.len() as i32);
        server.shutdown(Shutdown::Write).unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        assert_eq!(received, response);
    }
}
