//! An in-memory [`Transport`] for unit tests: the test puts bytes in, takes what was written
//! out, and decides how much the peer reads, so a slow client is one number.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use super::transport::Transport;

/// Both directions of a connection, held in memory.
pub struct MemoryTransport {
    incoming: VecDeque<u8>,
    /// The peer closed its side: reads return 0 once `incoming` is empty.
    closed: bool,
    written: Vec<u8>,
    /// Bytes the peer will still take before writes would block (`usize::MAX`: unbounded).
    room: usize,
    /// Our side was shut for writing.
    pub write_shut: bool,
}

impl Default for MemoryTransport {
    fn default() -> MemoryTransport {
        MemoryTransport {
            incoming: VecDeque::new(),
            closed: false,
            written: Vec::new(),
            room: usize::MAX,
            write_shut: false,
        }
    }
}

impl MemoryTransport {
    /// Bytes the peer sends us.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.incoming.extend(bytes);
    }

    /// The peer closes its sending side.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// From now on the peer takes `bytes` more before writes would block.
    pub fn set_room(&mut self, bytes: usize) {
        self.room = bytes;
    }

    /// Everything written so far, taken out.
    pub fn take_written(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.written)
    }

    fn take_room(&mut self, wanted: usize) -> io::Result<usize> {
        if self.write_shut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = wanted.min(self.room);
        if n == 0 && wanted > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.room != usize::MAX {
            self.room -= n;
        }
        Ok(n)
    }
}

impl Transport for MemoryTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() {
            return if self.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.incoming.len());
        for (slot, byte) in buf.iter_mut().zip(self.incoming.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }

    fn write(&mut self, bytes: &[u8], _fin_follows: bool) -> io::Result<usize> {
        let n = self.take_room(bytes.len())?;
        self.written.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for buf in bufs {
            match self.write(buf, false) {
                Ok(n) => {
                    total += n;
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.write_shut = true;
        Ok(())
    }
}
