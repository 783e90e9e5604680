//! Idle keep-alive connections to upstream servers, per worker.
//!
//! A pooled connection may have been closed by the upstream while it idled; a peek before
//! reuse catches most of those, and the exchange retries idempotent requests for the rest.

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

/// An idle upstream connection.
pub struct Idle {
    pub server: usize,
    pub stream: TcpStream,
    since: Instant,
}

/// One upstream's idle connections, most recently used last.
#[derive(Default)]
pub struct Pool {
    idle: Vec<Idle>,
}

impl Pool {
    /// A live idle connection to `server`, if there is one.
    pub fn checkout(&mut self, server: usize, now: Instant, max_idle: Duration) -> Option<TcpStream> {
        while let Some(at) = self.idle.iter().rposition(|c| c.server == server) {
            let conn = self.idle.remove(at);
            if now.duration_since(conn.since) < max_idle && still_open(&conn.stream) {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Keeps `stream` for reuse, dropping the oldest beyond `capacity`.
    pub fn checkin(&mut self, server: usize, stream: TcpStream, now: Instant, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if self.idle.len() >= capacity {
            self.idle.remove(0);
        }
        self.idle.push(Idle {
            server,
            stream,
            since: now,
        });
    }

    /// Closes connections idle longer than `max_idle`.
    pub fn expire(&mut self, now: Instant, max_idle: Duration) {
        self.idle.retain(|c| now.duration_since(c.since) < max_idle);
    }
}

/// True unless the upstream closed (or sent something unasked on) an idle connection.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
