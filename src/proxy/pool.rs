//! Idle keep-alive connections to upstream servers, per worker.
//!
//! A pooled connection may have been closed by the upstream while it idled. Any poll event
//! on an idle connection marks it suspect, and a suspect one is peeked before reuse; the
//! exchange retries idempotent requests for the rare close that races the reuse.
//! Connections stay registered with the poll under their own token (`socket_token`).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::io::Stream;

/// An idle upstream connection.
struct Idle {
    server: usize,
    stream: Stream,
    since: Instant,
    /// An event arrived while it idled (typically the upstream's FIN).
    suspect: bool,
}

/// One upstream's idle connections.
#[derive(Default)]
pub struct Pool {
    idle: Vec<Idle>,
}

impl Pool {
    /// A live idle connection to `server`, the one pooled last (its cache is warmest).
    pub fn checkout(&mut self, server: usize, now: Instant, max_idle: Duration) -> Option<Stream> {
        loop {
            let at = self.idle.iter().rposition(|c| c.server == server)?;
            let conn = self.idle.swap_remove(at);
            if now.duration_since(conn.since) < max_idle
                && (!conn.suspect || Stream::still_open(&conn.stream))
            {
                return Some(conn.stream);
            }
        }
    }

    /// Keeps `stream` for reuse, dropping the oldest beyond `capacity`.
    pub fn checkin(&mut self, server: usize, stream: Stream, now: Instant, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if self.idle.len() >= capacity {
            if let Some(oldest) = (0..self.idle.len()).min_by_key(|&i| self.idle[i].since) {
                self.idle.swap_remove(oldest);
            }
        }
        self.idle.push(Idle {
            server,
            stream,
            since: now,
            suspect: false,
        });
    }

    /// Notes a poll event on the socket with descriptor `fd`: if it idles here, it is suspect.
    pub fn suspect(&mut self, fd: usize) {
        if let Some(conn) = self.idle.iter_mut().find(|c| c.stream.as_raw_fd() as usize == fd) {
            conn.suspect = true;
        }
    }

    /// Closes connections idle longer than `max_idle`.
    pub fn expire(&mut self, now: Instant, max_idle: Duration) {
        self.idle.retain(|c| now.duration_since(c.since) < max_idle);
    }
}
