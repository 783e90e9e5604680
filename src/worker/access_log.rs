//! The access log, in nginx's combined format, buffered per worker.
//!
//! Lines collect in memory and go out in one write per flush: at least once a second, when
//! the buffer is large, and on exit. With the log off, recording costs one branch.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;

use crate::config::AccessLog as Destination;

/// Flush early when this much is buffered.
const FLUSH_BYTES: usize = 64 * 1024;

/// What one access log line records.
pub struct Entry<'a> {
    pub peer: SocketAddr,
    pub request_line: &'a [u8],
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
}

/// A worker's access log writer.
pub struct AccessLog {
    sink: Option<File>,
    buffer: Vec<u8>,
}

impl AccessLog {
    /// Opens the destination (append mode for files).
    pub fn open(destination: &Destination) -> io::Result<AccessLog> {
        let sink = match destination {
            Destination::Off => None,
            Destination::Stdout => Some(File::from(io::stdout().as_fd().try_clone_to_owned()?)),
            Destination::File(path) => Some(OpenOptions::new().create(true).append(true).open(path)?),
        };
        Ok(AccessLog {
            sink,
            buffer: Vec::new(),
        })
    }

    /// Flushes, then opens the destination again (after logrotate renamed the file).
    pub fn reopen(&mut self, destination: &Destination) -> io::Result<()> {
        self.flush();
        *self = AccessLog::open(destination)?;
        Ok(())
    }

    /// True when lines are written somewhere (callers skip preparing entries otherwise).
    pub fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    /// Appends one line (if the log is on).
    pub fn record(&mut self, entry: &Entry, date: &[u8]) {
        if self.sink.is_none() {
            return;
        }
        let line = &mut self.buffer;
        let _ = write!(line, "{} - - ", entry.peer.ip());
        line.extend_from_slice(date);
        line.extend_from_slice(b" \"");
        escape_into(line, entry.request_line);
        let _ = write!(line, "\" {} {} \"", entry.status, entry.body_bytes);
        escape_into(line, entry.referer.unwrap_or(b"-"));
        line.extend_from_slice(b"\" \"");
        escape_into(line, entry.user_agent.unwrap_or(b"-"));
        line.extend_from_slice(b"\"\n");
        if self.buffer.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Writes out everything buffered, in one write.
    pub fn flush(&mut self) {
        if let (Some(sink), false) = (&mut self.sink, self.buffer.is_empty()) {
            if let Err(e) = sink.write_all(&self.buffer) {
                log::warn!("write() failed while flushing the access log: {e}");
            }
            self.buffer.clear();
        }
    }
}

use std::os::fd::AsFd;

/// Copies `bytes`, escaping `"`, `\` and non-printable bytes as `\xHH`, as nginx does.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format_line() {
        let mut log = AccessLog {
            sink: Some(tempfile::tempfile().unwrap()),
            buffer: Vec::new(),
        };
        let entry = Entry {
            peer: "127.0.0.1:5000".parse().unwrap(),
            request_line: b"GET /a\"b HTTP/1.1",
            status: 200,
            body_bytes: 1024,
            referer: None,
            user_agent: Some(b"curl/8"),
        };
        log.record(&entry, b"[21/Nov/2026:20:00:00 +0000]");
        assert_eq!(
            String::from_utf8(log.buffer.clone()).unwrap(),
            "127.0.0.1 - - [21/Nov/2026:20:00:00 +0000] \"GET /a\\x22b HTTP/1.1\" 200 1024 \"-\" \"curl/8\"\n"
        );
    }
}
