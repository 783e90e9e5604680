//! The master ⇄ worker channel: one SOCK_SEQPACKET socketpair per worker.
//!
//! Every message is one datagram (so never split or merged): a tag byte, then the fields,
//! fixed little-endian ones, or for a beat the counters' own length-checked encoding
//! (`stats.rs`). Both ends are non-blocking: a worker whose master is not reading drops a
//! beat rather than stall its event loop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

pub use crate::stats::Counters;

/// Largest report on the wire (a beat with its counters; a bigger one is sent without the
/// per-route and per-upstream detail).
const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Largest command, and the longest boot failure text.
const MAX_COMMAND_BYTES: usize = 256;

/// Worker → master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// "My loop is turning", with counters.
    Beat(Box<Counters>),
    /// The worker cannot start; it exits with code 2 right after.
    BootFailed(String),
    /// An active health check changed its verdict on an upstream server.
    Health { upstream: u32, server: u32, up: bool },
}

/// Master → worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop accepting, finish in-flight requests, exit.
    Drain,
    /// Reopen log files (after logrotate moved them).
    ReopenLogs,
    /// The health verdict on an upstream server (from the instance's one prober).
    Health { upstream: u32, server: u32, up: bool },
}

const BEAT: u8 = 1;
const BOOT_FAILED: u8 = 2;
const HEALTH_REPORT: u8 = 3;
const DRAIN: u8 = 11;
const REOPEN_LOGS: u8 = 12;
const HEALTH: u8 = 13;

fn encode_health(tag: u8, upstream: u32, server: u32, up: bool) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&upstream.to_le_bytes());
    m.extend_from_slice(&server.to_le_bytes());
    m.push(u8::from(up));
    m
}

fn decode_health(m: &[u8]) -> Option<(u32, u32, bool)> {
    if m.len() != 10 {
        return None;
    }
    let upstream = u32::from_le_bytes(m[1..5].try_into().ok()?);
    let server = u32::from_le_bytes(m[5..9].try_into().ok()?);
    Some((upstream, server, m[9] == 1))
}

impl Report {
    fn encode(&self) -> Vec<u8> {
        match self {
            Report::Beat(counters) => {
                let mut m = vec![BEAT];
                counters.encode(&mut m);
                if m.len() > MAX_REPORT_BYTES {
                    m.truncate(1);
                    counters.summary().encode(&mut m);
                }
                m
            }
            Report::BootFailed(text) => {
                let mut m = vec![BOOT_FAILED];
                let end = floor_char_boundary(text, MAX_COMMAND_BYTES - 1);
                m.extend_from_slice(&text.as_bytes()[..end]);
                m
            }
            Report::Health { upstream, server, up } => encode_health(HEALTH_REPORT, *upstream, *server, *up),
        }
    }

    fn decode(m: &[u8]) -> Option<Report> {
        match *m.first()? {
            BEAT => Counters::decode(&m[1..]).map(|c| Report::Beat(Box::new(c))),
            BOOT_FAILED => Some(Report::BootFailed(String::from_utf8_lossy(&m[1..]).into_owned())),
            HEALTH_REPORT => {
                decode_health(m).map(|(upstream, server, up)| Report::Health { upstream, server, up })
            }
            _ => None,
        }
    }
}

impl Command {
    fn encode(self) -> Vec<u8> {
        match self {
            Command::Drain => vec![DRAIN],
            Command::ReopenLogs => vec![REOPEN_LOGS],
            Command::Health { upstream, server, up } => encode_health(HEALTH, upstream, server, up),
        }
    }

    fn decode(m: &[u8]) -> Option<Command> {
        match *m.first()? {
            DRAIN => Some(Command::Drain),
            REOPEN_LOGS => Some(Command::ReopenLogs),
            HEALTH => decode_health(m).map(|(upstream, server, up)| Command::Health { upstream, server, up }),
            _ => None,
        }
    }
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    (0..=max.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// What reading a channel end found.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<T> {
    Message(T),
    /// Nothing more for now.
    Empty,
    /// The other end is closed (the process exited).
    Closed,
}

/// One end of a channel.
#[derive(Debug)]
pub struct End {
    fd: OwnedFd,
}

/// Creates a channel: (master's end, worker's end), both close-on-exec and non-blocking.
pub fn pair() -> io::Result<(End, End)> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags)?;
    Ok((End { fd: a }, End { fd: b }))
}

impl End {
    /// Another handle on the same end (for a worker thread that reports on its own).
    pub fn try_clone(&self) -> io::Result<End> {
        Ok(End {
            fd: self.fd.try_clone()?,
        })
    }

    /// Sends a report to the master; a full channel drops it (a beat is resent next tick).
    pub fn report(&self, report: &Report) -> io::Result<()> {
        self.send(&report.encode())
    }

    /// Sends a command to the worker.
    pub fn command(&self, command: Command) -> io::Result<()> {
        self.send(&command.encode())
    }

    /// Reads the next report (master side).
    pub fn next_report(&self) -> io::Result<Received<Report>> {
        self.receive(&mut [0u8; MAX_REPORT_BYTES], Report::decode)
    }

    /// Reads the next command (worker side).
    pub fn next_command(&self) -> io::Result<Received<Command>> {
        self.receive(&mut [0u8; MAX_COMMAND_BYTES], Command::decode)
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        match send(
            self.fd.as_raw_fd(),
            message,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn receive<T>(&self, buf: &mut [u8], decode: fn(&[u8]) -> Option<T>) -> io::Result<Received<T>> {
        loop {
            match recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Ok(Received::Closed),
                // Unknown messages (from a newer peer during an upgrade) are skipped.
                Ok(n) => match decode(&buf[..n]) {
                    Some(message) => return Ok(Received::Message(message)),
                    None => continue,
                },
                Err(Errno::EAGAIN) => return Ok(Received::Empty),
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Ok(Received::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for End {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for End {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_commands_cross_the_channel() {
        let (master, worker) = pair().unwrap();
        let mut counters = Counters::new(2);
        counters.requests = 7;
        counters.active = 3;
        counters.bytes_in = 1 << 40;
        counters.count_response(1, 200);
        let counters = Box::new(counters);
        worker.report(&Report::Beat(counters.clone())).unwrap();
        worker
            .report(&Report::BootFailed("cannot open root /x: é".into()))
            .unwrap();
        assert_eq!(
            master.next_report().unwrap(),
            Received::Message(Report::Beat(counters))
        );
        assert_eq!(
            master.next_report().unwrap(),
            Received::Message(Report::BootFailed("cannot open root /x: é".into()))
        );
        assert_eq!(master.next_report().unwrap(), Received::Empty);
        for command in [
            Command::Drain,
            Command::ReopenLogs,
            Command::Health {
                upstream: 1,
                server: 7,
                up: false,
            },
        ] {
            master.command(command).unwrap();
            assert_eq!(worker.next_command().unwrap(), Received::Message(command));
        }
        drop(worker);
        assert_eq!(master.next_report().unwrap(), Received::Closed);
    }

    #[test]
    fn long_failure_text_is_cut_on_a_char_boundary() {
        let text = "é".repeat(300);
        match Report::decode(&Report::BootFailed(text).encode()) {
            Some(Report::BootFailed(cut)) => {
                assert!(cut.len() < MAX_COMMAND_BYTES && cut.chars().all(|c| c == 'é'))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_beat_too_big_for_one_message_still_beats_without_the_detail() {
        let (master, worker) = pair().unwrap();
        let mut counters = Counters::new(20_000);
        counters.requests = 5;
        for route in 0..20_000 {
            counters.count_response(route, 200);
        }
        worker.report(&Report::Beat(Box::new(counters.clone()))).unwrap();
        assert_eq!(
            master.next_report().unwrap(),
            Received::Message(Report::Beat(Box::new(counters.summary())))
        );
    }
}
