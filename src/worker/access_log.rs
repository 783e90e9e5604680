//! The access log, buffered per worker: nginx's combined format, or one JSON object per line
//! (`access_log_format`, per server).
//!
//! Lines collect in memory and go out in one write per flush: at least once a second, when
//! the buffer is large, and on exit. With the log off, recording costs one branch. Whatever
//! bytes a client sent, a line stays one line and its fields stay apart: combined escapes
//! quotes, backslashes and every byte outside printable ASCII as `\xHH`; JSON escapes quotes,
//! backslashes and control bytes, keeps valid UTF-8, and writes each byte of invalid UTF-8 as
//! the four characters `\xHH`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use super::clock::Clock;
use crate::config::{AccessLog as Destination, Address, LogFormat};

/// Flush early when this much is buffered.
const FLUSH_BYTES: usize = 64 * 1024;

/// What one access log line records.
pub struct Entry<'a> {
    /// The client's address (behind trusted proxies, the one they forwarded for).
    pub client: IpAddr,
    /// Index of the virtual server (it decides the format).
    pub server: usize,
    pub request_line: &'a [u8],
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// The request id; `None` where the format does not log one ([`AccessLog::wants_id`]).
    pub request_id: Option<&'a [u8]>,
    /// From the loop turn that read the head's first bytes to the one that logs the line.
    pub duration: Duration,
    /// The upstream server that answered, when proxied.
    pub upstream: Option<&'a Address>,
    /// The TLS protocol version and cipher suite, over HTTPS.
    pub tls: Option<(&'static str, &'static str)>,
}

/// How one virtual server's requests are logged.
#[derive(Debug, Clone)]
pub struct ServerLog {
    pub format: LogFormat,
    /// Its `server` in JSON lines (`Config::server_labels`).
    pub name: Option<String>,
}

impl ServerLog {
    /// How each server of `config` is logged.
    pub fn of_each(config: &crate::config::Config) -> Vec<ServerLog> {
        (config.servers.iter().zip(config.server_labels()))
            .map(|(server, name)| ServerLog {
                format: server.access_log_format,
                name,
            })
            .collect()
    }
}

/// A worker's access log writer.
pub struct AccessLog {
    sink: Option<File>,
    /// Each virtual server's format and name, by index.
    servers: Vec<ServerLog>,
    buffer: Vec<u8>,
}

impl AccessLog {
    /// Opens the destination (append mode for files) for the lines of `servers`.
    pub fn open(destination: &Destination, servers: Vec<ServerLog>) -> io::Result<AccessLog> {
        let sink = match destination {
            Destination::Off => None,
            Destination::Stdout => Some(File::from(io::stdout().as_fd().try_clone_to_owned()?)),
            Destination::File(path) => Some(OpenOptions::new().create(true).append(true).open(path)?),
        };
        Ok(AccessLog {
            sink,
            servers,
            buffer: Vec::new(),
        })
    }

    /// Flushes, then opens the destination again (after logrotate renamed the file).
    pub fn reopen(&mut self, destination: &Destination) -> io::Result<()> {
        self.flush();
        *self = AccessLog::open(destination, std::mem::take(&mut self.servers))?;
        Ok(())
    }

    /// True when lines are written somewhere (callers skip preparing entries otherwise).
    pub fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    /// True when `server`'s lines carry a request id (so a static request needs one).
    pub fn wants_id(&self, server: usize) -> bool {
        self.sink.is_some()
            && self
                .servers
                .get(server)
                .is_some_and(|s| s.format == LogFormat::Json)
    }

    /// Appends one line (if the log is on).
    pub fn record(&mut self, entry: &Entry, clock: &Clock) {
        if self.sink.is_none() {
            return;
        }
        let server = self.servers.get(entry.server);
        match server.map(|s| s.format).unwrap_or_default() {
            LogFormat::Combined => combined(&mut self.buffer, entry, &clock.log_date),
            LogFormat::Json => {
                let name = server.and_then(|s| s.name.as_deref());
                json(&mut self.buffer, entry, name, &clock.rfc3339)
            }
        }
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

/// `ADDR - - [DATE] "REQUEST" STATUS BYTES "REFERER" "USER-AGENT"`: nginx's combined, exactly
/// (log tools parse it), so without the request id.
fn combined(line: &mut Vec<u8>, entry: &Entry, date: &[u8]) {
    let _ = write!(line, "{} - - ", entry.client);
    line.extend_from_slice(date);
    line.extend_from_slice(b" \"");
    escape_into(line, entry.request_line);
    let _ = write!(line, "\" {} {} \"", entry.status, entry.body_bytes);
    escape_into(line, entry.referer.unwrap_or(b"-"));
    line.extend_from_slice(b"\" \"");
    escape_into(line, entry.user_agent.unwrap_or(b"-"));
    line.extend_from_slice(b"\"\n");
}

/// One JSON object: every field always present, `null` when unknown.
/// One JSON line; `server`: the name of the server that answered, if it has one.
fn json(line: &mut Vec<u8>, entry: &Entry, server: Option<&str>, time: &[u8]) {
    let (method, target, protocol) = split_request_line(entry.request_line);
    line.extend_from_slice(b"{\"time\":\"");
    line.extend_from_slice(time);
    let _ = write!(line, "\",\"remote_addr\":\"{}\",\"method\":", entry.client);
    json_string(line, Some(method));
    line.extend_from_slice(b",\"target\":");
    json_string(line, Some(target));
    line.extend_from_slice(b",\"protocol\":");
    json_string(line, Some(protocol));
    let _ = write!(
        line,
        ",\"status\":{},\"bytes_sent\":{},\"referer\":",
        entry.status, entry.body_bytes
    );
    json_string(line, entry.referer);
    line.extend_from_slice(b",\"user_agent\":");
    json_string(line, entry.user_agent);
    line.extend_from_slice(b",\"request_id\":");
    json_string(line, entry.request_id);
    let micros = entry.duration.as_micros();
    let _ = write!(
        line,
        ",\"duration_ms\":{}.{:03},\"upstream\":",
        micros / 1000,
        micros % 1000
    );
    match entry.upstream {
        Some(Address::Tcp(addr)) => {
            let _ = write!(line, "\"{addr}\"");
        }
        Some(unix) => json_string(line, Some(unix.to_string().as_bytes())),
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"server\":");
    json_string(line, server.map(str::as_bytes));
    line.extend_from_slice(b",\"tls_version\":");
    json_string(line, entry.tls.map(|(version, _)| version.as_bytes()));
    line.extend_from_slice(b",\"tls_cipher\":");
    json_string(line, entry.tls.map(|(_, cipher)| cipher.as_bytes()));
    line.extend_from_slice(b"}\n");
}

/// `METHOD TARGET PROTOCOL` into its three parts; a malformed line (logged after a 400)
/// gives what it has: the text before the first space, the middle, the part after the last.
fn split_request_line(line: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let Some(first) = line.iter().position(|&b| b == b' ') else {
        return (line, b"", b"");
    };
    let (method, rest) = (&line[..first], &line[first + 1..]);
    match rest.iter().rposition(|&b| b == b' ') {
        Some(last) => (method, &rest[..last], &rest[last + 1..]),
        None => (method, rest, b""),
    }
}

/// A JSON string of `bytes` (or `null`): valid UTF-8 kept, `"` `\` and control characters
/// escaped, each byte of invalid UTF-8 written as the text `\xHH`.
fn json_string(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    let Some(bytes) = bytes else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0..=0x1f | 0x7f => {
                    let _ = write!(out, "\\u{b:04x}");
                }
                _ => out.push(b),
            }
        }
        for &b in chunk.invalid() {
            let _ = write!(out, "\\\\x{b:02X}");
        }
    }
    out.push(b'"');
}

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

    fn entry<'a>(request_line: &'a [u8], user_agent: Option<&'a [u8]>) -> Entry<'a> {
        Entry {
            client: "127.0.0.1".parse().unwrap(),
            server: 0,
            request_line,
            status: 200,
            body_bytes: 1024,
            referer: None,
            user_agent,
            request_id: Some(b"abc-1"),
            duration: Duration::from_micros(12_345),
            upstream: None,
            tls: None,
        }
    }

    #[test]
    fn combined_format_line() {
        let mut line = Vec::new();
        let entry = entry(b"GET /a\"b HTTP/1.1", Some(b"curl/8"));
        combined(&mut line, &entry, b"[21/Nov/2026:20:00:00 +0000]");
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "127.0.0.1 - - [21/Nov/2026:20:00:00 +0000] \"GET /a\\x22b HTTP/1.1\" 200 1024 \"-\" \"curl/8\"\n"
        );
    }

    #[test]
    fn json_line_has_every_field() {
        let mut line = Vec::new();
        let mut proxied = entry(b"POST /api/x?y=1 HTTP/1.1", Some(b"curl/8"));
        let upstream = Address::Tcp("10.0.0.2:3000".parse().unwrap());
        proxied.upstream = Some(&upstream);
        proxied.tls = Some(("TLSv1_3", "TLS13_AES_128_GCM_SHA256"));
        json(&mut line, &proxied, Some("shop.example"), b"2026-11-21T20:00:00Z");
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"time\":\"2026-11-21T20:00:00Z\",\"remote_addr\":\"127.0.0.1\",\"method\":\"POST\",\
             \"target\":\"/api/x?y=1\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes_sent\":1024,\
             \"referer\":null,\"user_agent\":\"curl/8\",\"request_id\":\"abc-1\",\"duration_ms\":12.345,\
             \"upstream\":\"10.0.0.2:3000\",\"server\":\"shop.example\",\"tls_version\":\"TLSv1_3\",\
             \"tls_cipher\":\"TLS13_AES_128_GCM_SHA256\"}\n"
        );
    }

    #[test]
    fn hostile_bytes_stay_inside_their_json_string() {
        let hostile: &[u8] = b"a\"b\\c\x00\x1b[31m\x7f\n\r\t\xff\xc3\xa9 \xe2\x80\xa8}";
        let mut line = Vec::new();
        json(
            &mut line,
            &entry(hostile, Some(hostile)),
            None,
            b"2026-11-21T20:00:00Z",
        );
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let text = String::from_utf8(line).expect("valid UTF-8");
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let expected = "a\"b\\c\u{0}\u{1b}[31m\u{7f}\n\r\t\\xFFé \u{2028}}";
        assert_eq!(value["user_agent"], expected);
        assert_eq!(value["method"], "a\"b\\c\u{0}\u{1b}[31m\u{7f}\n\r\t\\xFFé");
        assert_eq!(value["target"], "\u{2028}}");
        assert_eq!(value["protocol"], "");
    }

    #[test]
    fn malformed_request_lines_split_as_far_as_they_go() {
        assert_eq!(
            split_request_line(b"GET / HTTP/1.1"),
            (&b"GET"[..], &b"/"[..], &b"HTTP/1.1"[..])
        );
        assert_eq!(
            split_request_line(b"GET /a b HTTP/1.1"),
            (&b"GET"[..], &b"/a b"[..], &b"HTTP/1.1"[..])
        );
        assert_eq!(split_request_line(b"GET /"), (&b"GET"[..], &b"/"[..], &b""[..]));
        assert_eq!(
            split_request_line(b"\x16\x03\x01"),
            (&b"\x16\x03\x01"[..], &b""[..], &b""[..])
        );
    }
}
