//! A connection's input buffer: bytes received and not yet consumed.
//!
//! It starts small and grows only while a request head needs room (up to the head limit).
//! The buffer is borrowed from the worker's pool and given back whenever it is empty, so idle
//! connections own none.

use std::io::{self, Read};
use std::mem;

use super::buffers::BufferPool;

/// Initial allocation when a connection first receives bytes.
const INITIAL_BYTES: usize = 4096;

/// What one read achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// Bytes arrived; `drained` when the read was short, which proves the socket held no more
    /// at that moment (under edge-triggered polling a later arrival raises a new event).
    Bytes {
        n: usize,
        drained: bool,
    },
    WouldBlock,
    Eof,
    /// No room left below the limit; consume something first.
    Full,
}

/// Received bytes at `buf[start..end]`.
#[derive(Default)]
pub struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
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

    /// One read from `source`, holding at most `limit` unconsumed bytes.
    pub fn fill(&mut self, source: &mut impl Read, limit: usize) -> io::Result<Filled> {
        if !self.make_room(limit) {
            return Ok(Filled::Full);
        }
        loop {
            match source.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(Filled::Eof),
                Ok(n) => {
                    let drained = self.end + n < self.buf.len();
                    self.end += n;
                    return Ok(Filled::Bytes { n, drained });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Filled::WouldBlock),
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

    #[test]
    fn grows_to_the_limit_then_reports_full() {
        let mut input = Input::default();
        let mut source: &[u8] = &[7u8; 20_000];
        let mut total = 0;
        loop {
            match input.fill(&mut source, 10_000).unwrap() {
                Filled::Bytes { n, .. } => total += n,
                Filled::Full => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(total, 10_000);
        input.consume(6_000);
        assert_eq!(
            input.fill(&mut source, 10_000).unwrap(),
            Filled::Bytes {
                n: 6_000,
                drained: false
            }
        );
        assert_eq!(input.len(), 10_000);
    }
}
