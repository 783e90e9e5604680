//! A connection's input: bytes received and not yet consumed, and what the transport's read
//! side last told us.
//!
//! The buffer starts small and grows, up to the limit its owner gives each read (a client's:
//! the head limit, at least 16 KiB). It is borrowed from the worker's pool and given back
//! whenever it is empty, so idle connections own none. Reads follow edge-triggered polling: once a read proves the socket
//! empty, the next one waits for a readable event ([`Input::mark_readable`]).

use std::io;
use std::mem;

use super::buffers::BufferPool;
use super::transport::Transport;

/// Initial allocation when a connection first receives bytes.
const INITIAL_BYTES: usize = 4096;

/// What the transport's read side last told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSide {
    /// There may be bytes to read.
    Ready,
    /// The last read proved the transport empty: wait for a readable event.
    Drained,
    /// The peer closed its side (a read returned 0).
    Ended,
}

/// What one [`Input::fill`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// This many bytes arrived.
    Bytes(usize),
    /// Nothing to read now: wait for a readable event.
    Nothing,
    /// The peer closed its side; nothing more will come.
    Eof,
    /// No room left below the limit; consume something first.
    Full,
}

/// Received bytes at `buf[start..end]`, and the read side's state.
pub struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    side: ReadSide,
    /// An event carried the peer's FIN: read on until EOF, a short read proves nothing
    /// (no new event will announce the EOF).
    fin_signalled: bool,
}

impl Default for Input {
    fn default() -> Input {
        Input {
            buf: Vec::new(),
            start: 0,
            end: 0,
            side: ReadSide::Ready,
            fin_signalled: false,
        }
    }
}

impl Input {
    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Marks `n` bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops all unconsumed bytes.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// What the read side last told us.
    pub fn side(&self) -> ReadSide {
        self.side
    }

    /// True once the peer closed its side.
    pub fn is_ended(&self) -> bool {
        self.side == ReadSide::Ended
    }

    /// True once the peer's FIN was read or announced by an event.
    pub fn fin_seen(&self) -> bool {
        self.fin_signalled || self.is_ended()
    }

    /// Notes a readable event (`fin`: it carried the peer's FIN, or an error).
    pub fn mark_readable(&mut self, fin: bool) {
        self.fin_signalled |= fin;
        if self.side == ReadSide::Drained {
            self.side = ReadSide::Ready;
        }
    }

    /// Starts over on a new transport (a fresh or pooled upstream connection): nothing is
    /// readable until an event says so.
    pub fn await_event(&mut self) {
        self.side = ReadSide::Drained;
        self.fin_signalled = false;
    }

    /// Borrows a buffer from `pool` if this input has none.
    pub fn lend(&mut self, pool: &mut BufferPool) {
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
            // Pooled input buffers are initialised to their capacity; only a new one is zeroed.
            self.buf.resize(self.buf.capacity(), 0);
        }
    }

    /// Gives the buffer back to `pool` if it holds nothing.
    pub fn give_back(&mut self, pool: &mut BufferPool) {
        if self.is_empty() && self.buf.capacity() > 0 {
            pool.give(mem::take(&mut self.buf));
        }
    }

    /// Drops what is unconsumed and gives the buffer back (the connection is closing).
    pub fn discard(&mut self, pool: &mut BufferPool) {
        self.clear();
        self.give_back(pool);
    }

    /// One read from `transport` if its read side may have bytes, holding at most `limit`
    /// unconsumed bytes.
    pub fn fill(&mut self, transport: &mut impl Transport, limit: usize) -> io::Result<Filled> {
        if self.side != ReadSide::Ready {
            return Ok(Filled::Nothing);
        }
        if !self.make_room(limit) {
            return Ok(Filled::Full);
        }
        loop {
            match transport.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.side = ReadSide::Ended;
                    return Ok(Filled::Eof);
                }
                Ok(n) => {
                    // A short read proves the transport empty, unless a FIN is pending (no
                    // event will announce it) or the transport holds bytes of its own.
                    let short = self.end + n < self.buf.len();
                    if short && !self.fin_signalled && !transport.holds_input() {
                        self.side = ReadSide::Drained;
                    }
                    self.end += n;
                    return Ok(Filled::Bytes(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.side = ReadSide::Drained;
                    return Ok(Filled::Nothing);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Ensures free space after `end`: compacts, then grows up to `limit` bytes in total.
    fn make_room(&mut self, limit: usize) -> bool {
        if self.end < self.buf.len() {
            return true;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        let size = self.buf.len();
        if size >= limit {
            return false;
        }
        let grown = (size * 2).clamp(INITIAL_BYTES, limit.max(INITIAL_BYTES));
        self.buf.resize(grown, 0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::memory::MemoryTransport;

    #[test]
    fn grows_to_the_limit_then_reports_full() {
        let mut input = Input::default();
        let mut source = MemoryTransport::default();
        source.receive(&[7u8; 20_000]);
        let mut total = 0;
        loop {
            match input.fill(&mut source, 10_000).unwrap() {
                Filled::Bytes(n) => total += n,
                Filled::Full => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(total, 10_000);
        input.consume(6_000);
        assert_eq!(input.fill(&mut source, 10_000).unwrap(), Filled::Bytes(6_000));
        assert_eq!(input.len(), 10_000);
    }

    #[test]
    fn a_short_read_waits_for_an_event_unless_a_fin_was_signalled() {
        let mut input = Input::default();
        let mut source = MemoryTransport::default();
        source.receive(b"abc");
        assert_eq!(input.fill(&mut source, 100).unwrap(), Filled::Bytes(3));
        assert_eq!(input.side(), ReadSide::Drained);
        source.receive(b"def");
        assert_eq!(input.fill(&mut source, 100).unwrap(), Filled::Nothing);
        source.close();
        input.mark_readable(true);
        assert_eq!(input.fill(&mut source, 100).unwrap(), Filled::Bytes(3));
        assert_eq!(input.side(), ReadSide::Ready, "the FIN is still to be read");
        assert_eq!(input.fill(&mut source, 100).unwrap(), Filled::Eof);
        assert!(input.is_ended());
        assert_eq!(input.data(), b"abcdef");
    }
}
