//! A connection's pending output: response bytes and file ranges, sent strictly in order.
//!
//! Bytes accumulate in one buffer (so a burst of pipelined responses goes out in one
//! write); a file range becomes its own chunk, sent with sendfile(2) when the transport
//! allows it (else read and written), and a large cached body its own chunk pointing into
//! the cache's bytes (never copied per connection). Bytes appended past a memory bound may
//! spill into a temporary file ([`Output::append`]), so a producer faster than the peer
//! (an upstream) is not held to the peer's pace.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::mem;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use super::buffers::BufferPool;
use super::spill::{Spill, SpillDir};
use super::transport::Transport;

/// Largest sendfile call, so one big file cannot monopolize the worker.
const SENDFILE_STEP: usize = 1 << 20;
/// Largest read of a file for a transport that cannot take sendfile.
const FILE_READ_BYTES: usize = 64 * 1024;
/// Bytes held in memory before appended ones spill to a temporary file (when allowed): while
/// spilling, the memory backlog stays below this. A producer that waits while the backlog is
/// at its own high water must not set that any lower, or the two would wait on each other.
pub const SPILL_AFTER_BYTES: usize = 64 * 1024;

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
    Spill(Spill),
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
        if matches!(
            self.rest.back(),
            Some(Chunk::File(_) | Chunk::Shared(_) | Chunk::Spill(_))
        ) {
            self.rest.push_back(Chunk::Bytes(Vec::new()));
        }
        match self.rest.back_mut() {
            Some(Chunk::Bytes(bytes)) => bytes,
            _ => &mut self.head,
        }
    }

    /// Appends `bytes`; with `spill`, at [`SPILL_AFTER_BYTES`] in memory they go to a
    /// temporary file instead (one at a time per connection: once it is full, or cannot be
    /// made or written, bytes stay in memory and the backlog grows, which tells the producer
    /// to wait).
    pub fn append(&mut self, bytes: &[u8], spill: Option<&SpillDir>) {
        if let (Some(_), Some(Chunk::Spill(open))) = (spill, self.rest.back_mut()) {
            let was_full = open.full;
            match open.write(bytes) {
                Ok(()) => return,
                Err(e) if !was_full => log::warn!(
                    "a temporary file stopped taking a response at {} bytes ({e}); the upstream waits for the client for the rest",
                    open.written
                ),
                Err(_) => {}
            }
        }
        let spilling = self.rest.iter().any(|chunk| matches!(chunk, Chunk::Spill(_)));
        if let Some(dir) =
            spill.filter(|_| !spilling && self.memory_bytes() + bytes.len() >= SPILL_AFTER_BYTES)
        {
            match Spill::create(dir).and_then(|mut new| new.write(bytes).map(|()| new)) {
                Ok(new) => return self.rest.push_back(Chunk::Spill(new)),
                Err(e) => log::warn!(
                    "cannot spill a response to a temporary file ({e}); the upstream waits for the client"
                ),
            }
        }
        self.buffer().extend_from_slice(bytes);
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

    /// Bytes waiting to be sent, as far as they weigh on the producer: file chunks count as a
    /// full buffer (they are large); a spill that still takes bytes counts nothing (it grows
    /// on disk), a full one its pending bytes.
    pub fn backlog_bytes(&self) -> usize {
        let waiting = |chunk: &Chunk| match chunk {
            Chunk::Bytes(bytes) => bytes.len(),
            Chunk::File(_) => 1 << 20,
            Chunk::Shared(shared) => shared.end - shared.start,
            Chunk::Spill(spill) if spill.full => spill.pending() as usize,
            Chunk::Spill(_) => 0,
        };
        self.head.len() - self.head_sent + self.rest.iter().map(waiting).sum::<usize>()
    }

    /// Bytes waiting in memory.
    fn memory_bytes(&self) -> usize {
        let in_memory = |chunk: &Chunk| match chunk {
            Chunk::Bytes(bytes) => bytes.len(),
            Chunk::File(_) | Chunk::Shared(_) | Chunk::Spill(_) => 0,
        };
        self.head.len() - self.head_sent + self.rest.iter().map(in_memory).sum::<usize>()
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
                // Done once the transport's own records are out too (TLS).
                return match transport.flush_pending() {
                    Ok(()) => Ok(Flush::Done),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Flush::Blocked),
                    Err(e) => Err(e),
                };
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
                Chunk::Spill(spill) => self.send_spill(transport, spill, budget),
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

    /// Sends from a spill what is pending of it (or, for a transport that cannot take
    /// sendfile, reads a piece into bytes queued before it). A spill sent to its end goes,
    /// and its file with it: bytes appended later start in memory again.
    fn send_spill(
        &mut self,
        transport: &mut impl Transport,
        mut spill: Spill,
        budget: usize,
    ) -> io::Result<usize> {
        let step = (spill.pending() as usize).min(SENDFILE_STEP).min(budget);
        let sent = if transport.can_sendfile() {
            transport.sendfile(&spill.file, spill.sent, step)
        } else {
            let mut piece = vec![0; step.min(FILE_READ_BYTES)];
            spill
                .file
                .read_at(&mut piece, spill.sent)
                .map(|n| {
                    piece.truncate(n);
                    piece
                })
                .map(|piece| {
                    let n = piece.len();
                    self.rest.push_front(Chunk::Bytes(piece));
                    n
                })
        };
        let advanced = match &sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "spill file shorter than written",
                ))
            }
            Ok(n) => *n as u64,
            Err(_) => 0,
        };
        if transport.can_sendfile() {
            self.sent_bytes += advanced;
        }
        spill.sent += advanced;
        if spill.pending() > 0 {
            // Behind the piece read for a transport without sendfile, if any.
            let at = usize::from(!transport.can_sendfile() && advanced > 0);
            self.rest.insert(at, Chunk::Spill(spill));
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

    /// A spill directory under a fresh temporary directory (so a test can see it stays empty).
    fn spill_dir(max_file_bytes: u64) -> (tempfile::TempDir, SpillDir) {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillDir::open(dir.path(), max_file_bytes).unwrap();
        (dir, spill)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn bytes_past_the_memory_bound_spill_and_come_back_in_order() {
        let (dir, spill) = spill_dir(1 << 30);
        let body = pattern(1 << 20);
        for can_sendfile in [false, true] {
            let mut output = Output::default();
            output.buffer().extend_from_slice(b"head:");
            for piece in body.chunks(10_000) {
                output.append(piece, Some(&spill));
                assert!(
                    output.backlog_bytes() <= SPILL_AFTER_BYTES + 10_000,
                    "memory stays bounded"
                );
            }
            output.append(b":tail", Some(&spill));
            let mut expected = b"head:".to_vec();
            expected.extend_from_slice(&body);
            expected.extend_from_slice(b":tail");
            let received = if can_sendfile {
                let (mut server, mut client) = connected_pair();
                let reader = std::thread::spawn(move || {
                    let mut got = Vec::new();
                    client.read_to_end(&mut got).unwrap();
                    got
                });
                while output.flush(&mut server, false).unwrap() != Flush::Done {
                    std::thread::yield_now();
                }
                Transport::shutdown_write(&mut server).unwrap();
                reader.join().unwrap()
            } else {
                let mut transport = MemoryTransport::default();
                while output.flush(&mut transport, false).unwrap() != Flush::Done {}
                transport.take_written()
            };
            assert!(received == expected, "bytes differ (sendfile: {can_sendfile})");
            assert_eq!(output.sent_bytes, expected.len() as u64);
            assert!(output.is_empty());
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no file is ever named"
        );
    }

    /// Found when a slow client stalled an upstream: pieces that filled memory to exactly the
    /// bound left it there, and the exchange waited for the client below the spill's trigger.
    #[test]
    fn while_spilling_the_memory_backlog_stays_below_the_bound() {
        let (_dir, spill) = spill_dir(1 << 30);
        let mut output = Output::default();
        for piece in pattern(SPILL_AFTER_BYTES * 4).chunks(4096) {
            output.append(piece, Some(&spill));
            assert!(output.backlog_bytes() < SPILL_AFTER_BYTES);
        }
    }

    #[test]
    fn a_full_spill_sends_the_rest_through_memory_and_weighs_on_the_producer() {
        let (_dir, spill) = spill_dir(256 * 1024);
        let body = pattern(1 << 20);
        let mut output = Output::default();
        for piece in body.chunks(16 * 1024) {
            output.append(piece, Some(&spill));
        }
        assert!(
            output.backlog_bytes() > 512 * 1024,
            "the full spill and the memory after it count"
        );
        let mut transport = MemoryTransport::default();
        while output.flush(&mut transport, false).unwrap() != Flush::Done {}
        assert!(transport.take_written() == body);
        // Without a spill directory nothing spills.
        let mut output = Output::default();
        output.append(&body, None);
        assert_eq!(output.backlog_bytes(), body.len());
    }
}
