//! A connection's pending output: response bytes and file ranges, sent strictly in order.
//!
//! Bytes accumulate in one buffer (so a burst of pipelined responses goes out in one
//! write); a file range becomes its own chunk, sent with sendfile(2) when the transport
//! allows it (else read and written), and a large cached body its own chunk pointing into
//! the cache's bytes (never copied per connection).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::mem;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use super::buffers::BufferPool;
use super::transport::Transport;

/// Largest sendfile call, so one big file cannot monopolize the worker.
const SENDFILE_STEP: usize = 1 << 20;
/// Largest read of a file for a transport that cannot take sendfile.
const FILE_READ_BYTES: usize = 64 * 1024;

/// A byte range of an open file still to be sent.
#[derive(Debug, Clone)]
pub struct FileBody {
    pub file: Rc<File>,
    pub offset: u64,
    pub len: u64,
}

/// A byte range of bytes shared with a cache rather than copied.
#[derive(Debug, Clone)]
pub struct SharedBody {
    pub bytes: Rc<[u8]>,
    pub start: usize,
    pub end: usize,
}

impl SharedBody {
    /// The bytes still to be sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }
}

enum Chunk {
    Bytes(Vec<u8>),
    File(FileBody),
    Shared(SharedBody),
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything pending was sent.
    Done,
    /// The transport is full; wait for writability.
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
    /// Total bytes written to the transport so far.
    pub sent_bytes: u64,
}

impl Output {
    /// The buffer new bytes are appended to (always the last in order).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        if matches!(self.rest.back(), Some(Chunk::File(_) | Chunk::Shared(_))) {
            self.rest.push_back(Chunk::Bytes(Vec::new()));
        }
        match self.rest.back_mut() {
            Some(Chunk::Bytes(bytes)) => bytes,
            _ => &mut self.head,
        }
    }

    /// Queues a file range after everything already pending.
    pub fn push_file(&mut self, file: FileBody) {
        if file.len > 0 {
            self.rest.push_back(Chunk::File(file));
        }
    }

    /// Queues shared bytes after everything already pending.
    pub fn push_shared(&mut self, shared: SharedBody) {
        if shared.start < shared.end {
            self.rest.push_back(Chunk::Shared(shared));
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

    /// Drops everything pending and gives the buffer back (the connection is closing).
    pub fn discard(&mut self, pool: &mut BufferPool) {
        self.rest.clear();
        self.head.clear();
        self.head_sent = 0;
        pool.give(mem::take(&mut self.head));
    }

    /// Sends as much as the transport takes, up to a bounded amount per call. `fin_follows`:
    /// the connection is closed (or shut for writing) as soon as everything is sent.
    pub fn flush(&mut self, transport: &mut impl Transport, fin_follows: bool) -> io::Result<Flush> {
        let mut budget = 4 * SENDFILE_STEP;
        loop {
            if self.head_sent < self.head.len() {
                let last = fin_follows && self.rest.is_empty();
                match transport.write(&self.head[self.head_sent..], last) {
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
            let Some(chunk) = self.rest.pop_front() else {
                return Ok(Flush::Done);
            };
            let sent = match chunk {
                Chunk::Bytes(bytes) => {
                    self.head = bytes;
                    continue;
                }
                Chunk::Shared(shared) => self.send_shared(transport, shared, fin_follows),
                Chunk::File(body) if transport.can_sendfile() => {
                    let step = (body.len as usize).min(SENDFILE_STEP).min(budget);
                    self.send_file(transport, body, step)
                }
                Chunk::File(body) => self.read_file(body),
            };
            match sent {
                Ok(n) => budget -= n.min(budget),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends from shared bytes; what is left goes back to the front.
    fn send_shared(
        &mut self,
        transport: &mut impl Transport,
        mut shared: SharedBody,
        fin_follows: bool,
    ) -> io::Result<usize> {
        let last = fin_follows && self.rest.is_empty();
        let sent = transport.write(shared.as_bytes(), last);
        if let Ok(n) = sent {
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent_bytes += n as u64;
            shared.start += n;
        }
        if shared.start < shared.end {
            self.rest.push_front(Chunk::Shared(shared));
        }
        sent
    }

    /// Sends up to `step` bytes of a file range with sendfile; what is left goes back.
    fn send_file(
        &mut self,
        transport: &mut impl Transport,
        mut body: FileBody,
        step: usize,
    ) -> io::Result<usize> {
        let sent = transport.sendfile(&body.file, body.offset, step);
        if let Ok(n) = sent {
            // The file shrank under us: the promised length cannot be delivered.
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file truncated while sending",
                ));
            }
            self.sent_bytes += n as u64;
            body.offset += n as u64;
            body.len -= n as u64;
        }
        if body.len > 0 {
            self.rest.push_front(Chunk::File(body));
        }
        sent
    }

    /// For a transport that cannot take sendfile: reads the next piece of a file range into
    /// bytes queued in its place (the loop then writes them).
    fn read_file(&mut self, mut body: FileBody) -> io::Result<usize> {
        let mut bytes = vec![0; (body.len as usize).min(FILE_READ_BYTES)];
        let n = body.file.read_at(&mut bytes, body.offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file truncated while sending",
            ));
        }
        bytes.truncate(n);
        body.offset += n as u64;
        body.len -= n as u64;
        if body.len > 0 {
            self.rest.push_front(Chunk::File(body));
        }
        self.rest.push_front(Chunk::Bytes(bytes));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::memory::MemoryTransport;
    use crate::sys;
    use mio::net::TcpStream;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::fd::AsFd;

    fn connected_pair() -> (TcpStream, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nodelay(true).unwrap();
        (TcpStream::from_std(server), client)
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
        assert_eq!(sys::unsent_bytes(server.as_fd()).unwrap(), 0);
    }

    #[test]
    fn the_last_response_waits_for_the_fin_to_share_its_segment() {
        let (mut server, mut client) = connected_pair();
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        flushed(&mut server, response, true);
        assert_eq!(sys::unsent_bytes(server.as_fd()).unwrap(), response.len());
        Transport::shutdown_write(&mut server).unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        assert_eq!(received, response);
    }

    #[test]
    fn files_are_read_and_written_in_order_where_sendfile_cannot_go() {
        let mut file = tempfile::tempfile().unwrap();
        let contents: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&contents).unwrap();
        let mut output = Output::default();
        output.buffer().extend_from_slice(b"head:");
        output.push_file(FileBody {
            file: Rc::new(file),
            offset: 10,
            len: 150_000,
        });
        output.buffer().extend_from_slice(b":tail");
        let mut transport = MemoryTransport::default();
        while output.flush(&mut transport, false).unwrap() != Flush::Done {}
        let mut expected = b"head:".to_vec();
        expected.extend_from_slice(&contents[10..150_010]);
        expected.extend_from_slice(b":tail");
        assert!(transport.take_written() == expected, "bytes differ");
        assert_eq!(output.sent_bytes, expected.len() as u64);
    }
}
